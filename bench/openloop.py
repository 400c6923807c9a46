"""Open-loop webhook sender: `python -m bench.openloop URL FILE RATE`.

Sends line i of FILE ("<Stripe-Signature>\\t<body>") at start + i / RATE whatever the answers do,
so a slow answer cannot hold later requests back, and times each from when it was due to when its
answer was read. Prints one JSON object: counts by status and latency percentiles in ms.

The sender shares the machine with the stack it measures, and whatever it spends is taken from the
stack and counted in the latencies. So it is lean: every request's bytes are made before the
start, each is written on an idle keep-alive connection (a new one when none is idle: one request
at a time on a connection, as the provider delivers), and an answer is read only as far as its
status line and `Content-Length`, on uvloop."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import sys
from collections import Counter
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

import uvloop

from bench.report import percentile

# Connections opened before the first request is due, so that the first second is not timed with
# connection set-up the rest of the run does not pay.
WARM_CONNECTIONS = 16
TIMEOUT_S = 30.0


def requests_of(url: str, lines: list[bytes]) -> list[bytes]:
    """Each line as the bytes of its HTTP/1.1 POST to `url`."""
    parts = urlsplit(url)
    head = f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n".encode()
    out = []
    for line in lines:
        signature, _, body = line.partition(b"\t")
        out.append(b"".join((head, b"Stripe-Signature: ", signature, b"\r\nContent-Length: ",
                             str(len(body)).encode(), b"\r\n\r\n", body)))
    return out


class Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time; `answered` is called with the
    status (0 when the connection failed) of each, and the connection is idle again after it."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.due: float | None = None  # the request in flight, by when it was due
        self.status = 0
        self.length = -1  # of the answer's body, once its head is read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's own class, not a subclass

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None and self.due is None
        self.due, self.status, self.length = due, 0, -1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.length < 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            self.status = int(head[0].split(" ", 2)[1])
            lengths = [h.split(":", 1)[1] for h in head[1:] if h.lower().startswith("content-length:")]
            if not lengths:  # every answer of the webhook endpoint has one; without, the end is unknown
                self._fail()
                return
            self.length = int(lengths[0])
            del self.buffer[:end + 4]
        if len(self.buffer) >= self.length:
            del self.buffer[:self.length]
            due, self.due = self.due, None
            assert due is not None
            self.sender.answered(self, self.status, due)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.due is not None:
            due, self.due = self.due, None
            self.sender.answered(None, 0, due)
        self.sender.lost(self)

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Sender:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.loop = asyncio.get_running_loop()
        self.idle: list[Connection] = []
        self.results: list[tuple[int, float]] = []
        self.outstanding = 0
        self.settled = asyncio.Event()
        self.opening: set[asyncio.Task[None]] = set()

    async def open(self) -> Connection:
        _, protocol = await self.loop.create_connection(lambda: Connection(self), self.host, self.port)
        return protocol

    def send(self, request: bytes, due: float) -> None:
        self.outstanding += 1
        if self.idle:
            self.idle.pop().send(request, due)
        else:
            task = self.loop.create_task(self._send_on_new(request, due))
            self.opening.add(task)
            task.add_done_callback(self.opening.discard)

    async def _send_on_new(self, request: bytes, due: float) -> None:
        try:
            connection = await asyncio.wait_for(self.open(), TIMEOUT_S)
        except (OSError, TimeoutError):
            self.answered(None, 0, due)
            return
        connection.send(request, due)

    def answered(self, connection: Connection | None, status: int, due: float) -> None:
        self.results.append((status, (self.loop.time() - due) * 1000))
        if connection is not None and connection.transport is not None:
            self.idle.append(connection)
        self.outstanding -= 1
        if self.outstanding == 0:
            self.settled.set()

    def lost(self, connection: Connection) -> None:
        if connection in self.idle:
            self.idle.remove(connection)


async def run(url: str, lines: list[bytes], rate: float) -> dict[str, object]:
    parts = urlsplit(url)
    requests = requests_of(url, lines)
    sender = Sender(parts.hostname or "127.0.0.1", parts.port or 80)
    sender.idle = list(await asyncio.gather(*(sender.open() for _ in range(WARM_CONNECTIONS))))
    loop = sender.loop
    start = loop.time() + 0.2
    late = 0.0
    for i, request in enumerate(requests):
        due = start + i / rate
        if due > loop.time():
            await asyncio.sleep(due - loop.time())
        late = max(late, loop.time() - due)
        sender.send(request, due)
    if sender.outstanding:
        sender.settled.clear()
        with contextlib.suppress(TimeoutError):  # what is still unanswered is counted as failed below
            await asyncio.wait_for(sender.settled.wait(), TIMEOUT_S)
    elapsed = loop.time() - start
    for connection in sender.idle:
        if connection.transport is not None:
            connection.transport.close()
    results = sender.results + [(0, TIMEOUT_S * 1000)] * sender.outstanding  # never answered
    latencies = [ms for status, ms in results if 200 <= status < 300]
    return {
        "sent": len(requests), "rate": rate, "elapsed_s": round(elapsed, 3),
        "statuses": dict(Counter(str(status) for status, _ in results)), "ok": len(latencies),
        "max_dispatch_lag_ms": round(late * 1000, 2),
        **{f"p{q}_ms": round(percentile(latencies, q), 2) for q in (50, 90, 99)},
        "max_ms": round(max(latencies, default=0.0), 2),
    }


if __name__ == "__main__":
    # A pause of this process would be counted as the service's latency: its garbage is left to the
    # end of this short run. With the collector on, the sender fell up to 24 ms behind its schedule
    # at the half rate; without, 5 ms.
    gc.disable()
    target, path, per_second = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(uvloop.run(run(target, path.read_bytes().splitlines(), per_second))))
