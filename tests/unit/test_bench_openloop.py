"""The open-loop sender (bench/openloop.py): every line is posted once, signed and whole, on its
schedule whatever the answers do, and each answer is counted by its status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bench import openloop
from tests.support.waiting import eventually


class Recorder:
    """A webhook endpoint that answers each body's `status` after its `delay` (seconds, waited on
    an event the test sets), and notes what it saw in order."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, str]] = []  # ("received" or "answered", n, signature)
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        signature = request.headers.get("Stripe-Signature", "")
        self.seen.append(("received", body["n"], signature))
        if body.get("held"):
            await self.release.wait()
        self.seen.append(("answered", body["n"], signature))
        return web.json_response({"n": body["n"]}, status=body.get("status", 200))


@pytest.fixture
async def endpoint() -> AsyncIterator[tuple[str, Recorder]]:
    recorder = Recorder()
    app = web.Application()
    app.router.add_post("/webhooks/stripe", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/webhooks/stripe", recorder
    finally:
        await runner.cleanup()


def _line(n: int, **fields: object) -> bytes:
    return f"t=1,v1=sig{n}\t".encode() + json.dumps({"n": n, **fields}).encode()


async def test_every_line_is_posted_once_with_its_signature_and_counted_by_status(
        endpoint: tuple[str, Recorder]) -> None:
    url, recorder = endpoint
    recorder.release.set()
    lines = [_line(0), _line(1, status=400), _line(2), _line(3, status=503), _line(4)]
    result = await openloop.run(url, lines, rate=200)
    assert result["sent"] == 5
    assert result["statuses"] == {"200": 3, "400": 1, "503": 1}
    assert result["ok"] == 3
    received = sorted((n, signature) for what, n, signature in recorder.seen if what == "received")
    assert received == [(n, f"t=1,v1=sig{n}") for n in range(5)]


async def test_a_held_answer_does_not_hold_back_the_requests_after_it(endpoint: tuple[str, Recorder]) -> None:
    url, recorder = endpoint
    lines = [_line(0, held=True), *(_line(n) for n in range(1, 6))]
    sending = asyncio.create_task(openloop.run(url, lines, rate=100))

    async def all_received() -> bool:
        return sum(1 for what, _, _ in recorder.seen if what == "received") == 6

    await eventually(all_received, what="all six requests received")
    assert ("answered", 0, "t=1,v1=sig0") not in recorder.seen  # all six arrived while the first waited
    recorder.release.set()
    result = await sending
    assert result["statuses"] == {"200": 6}
    assert recorder.seen[-1][:2] == ("answered", 0)


async def test_a_request_whose_answer_never_comes_is_counted_as_failed_not_lost(
        endpoint: tuple[str, Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    url, recorder = endpoint
    monkeypatch.setattr(openloop, "TIMEOUT_S", 0.5)
    result = await openloop.run(url, [_line(0), _line(1, held=True)], rate=100)
    recorder.release.set()
    assert result["sent"] == 2
    assert result["statuses"] == {"200": 1, "0": 1}
    assert result["ok"] == 1
