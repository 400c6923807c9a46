"""The TypeScript example client (clients/typescript) against the real entitlement service on a
real socket, through a TCP relay the test can cut.

The client's packages are installed with `npm ci` once per lock file (a stamp in node_modules keeps
the lock file's hash), its code is generated from the protos by `npm run generate` and compiled by
`tsc` with the strict settings of its tsconfig (a type error fails the test). Its cache rules are
checked against reference models (clients/typescript/test/rules.test.ts, `node --test`); then its
script clients/typescript/test/live.ts runs step by step against the service while this test
commits changes, ends a plan at a boundary and cuts the connection between steps, and reads the
service's metrics to see how many streams the client holds and which calls reached the service."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role
from tests.integration.conftest import Client
from tests.support import npm as npm_tools
from tests.support.provider import T0, subscription_event
from tests.support.tcp_proxy import TcpProxy
from tests.support.tokens import TOKENS
from tests.support.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "clients" / "typescript"
ACCOUNT, STEADY, ENDING, GATE = "acct_ts_client", "acct_ts_steady", "acct_ts_ending", "api_access"
STEP_TIMEOUT_S = 30
SERVICE_READS = ("CheckGate", "GetEntitlements")


@pytest.fixture(scope="module")
def compiled_client() -> Path:
    """The client and its test script compiled to clients/typescript/dist; the script's path."""
    node, npm = npm_tools.node_tools("the TypeScript client's test")
    npm_tools.install(PACKAGE, npm)
    npm_tools.run(PACKAGE, npm, "run", "--silent", "generate", timeout_s=120)
    npm_tools.run(PACKAGE, node, str(PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"), "-p", str(PACKAGE),
                  timeout_s=180)
    return PACKAGE / "dist" / "test" / "live.js"


def test_the_typescript_client_cache_rules_hold_against_their_reference_models(compiled_client: Path) -> None:
    node, _ = npm_tools.node_tools("the TypeScript client's test")
    rules = compiled_client.parent / "rules.test.js"
    done = subprocess.run([node, "--test", str(rules)], cwd=PACKAGE, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, f"{rules} failed:\n{done.stdout}\n{done.stderr}"
    assert re.search(r"^# pass [1-9]", done.stdout, re.MULTILINE), done.stdout  # the tests ran
    assert re.search(r"^# fail 0$", done.stdout, re.MULTILINE), done.stdout


class Script:
    """The test script as a process: one JSON line per step it reaches, one command line per step."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.steps: list[dict[str, Any]] = []

    async def step(self, expected: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        try:
            line = await asyncio.wait_for(self.process.stdout.readline(), STEP_TIMEOUT_S)
        except TimeoutError:
            pytest.fail(f"the script did not reach `{expected}` within {STEP_TIMEOUT_S} s; steps so far: {self.steps}")
        if not line:
            await self.process.wait()
            stderr = await self.process.stderr.read() if self.process.stderr is not None else b""
            pytest.fail(f"the script exited {self.process.returncode} before `{expected}`:\n{stderr.decode()}")
        step = json.loads(line)
        self.steps.append(step)
        assert step["step"] == expected, f"expected step {expected}, got: {step}"
        return step

    async def command(self, name: str, *args: object) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(" ".join([name, *map(str, args)]).encode() + b"\n")
        await self.process.stdin.drain()


@pytest.fixture
async def relay(service: Client) -> AsyncIterator[TcpProxy]:
    proxy = await TcpProxy(f"http://127.0.0.1:{service.running.port}").start()
    yield proxy
    await proxy.close()


@pytest.fixture
async def script(compiled_client: Path, relay: TcpProxy) -> AsyncIterator[Script]:
    node, _ = npm_tools.node_tools("the TypeScript client's test")
    process = await asyncio.create_subprocess_exec(
        node, str(compiled_client), cwd=PACKAGE, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"PATH": str(Path(node).parent), "ENTITLEMENT_URL": f"http://127.0.0.1:{relay.port}",
             "PRODUCT_TOKEN": TOKENS[Role.PRODUCT], "ACCOUNT_ID": ACCOUNT, "STEADY_ID": STEADY,
             "BOUNDARY_ID": ENDING, "GATE": GATE})
    yield Script(process)
    if process.returncode is None:
        process.kill()
        await process.wait()


async def metrics(service: Client) -> str:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{service.running.metrics_port}/metrics") as reply:
        return await reply.text()


async def service_reads(service: Client) -> dict[str, float]:
    """CheckGate and GetEntitlements calls the service completed, any status, from its /metrics."""
    text = await metrics(service)
    counts = dict.fromkeys(SERVICE_READS, 0.0)
    for method in SERVICE_READS:
        label = re.escape(f'grpc_method="/selfserve.entitlement.v1.EntitlementService/{method}"')
        pattern = rf"^grpc_server_handled_total\{{[^}}]*{label}[^}}]*\}} (\S+)$"
        counts[method] = sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))
    return counts


async def watching(service: Client) -> tuple[float, float]:
    """The service's `watch_streams` and `watched_accounts` gauges: streams open, accounts they watch."""
    text = await metrics(service)
    found = {name: float(value) for name, value in re.findall(r"^(watch_streams|watched_accounts) (\S+)$", text,
                                                                re.MULTILINE)}
    return found["watch_streams"], found["watched_accounts"]


async def streams_become(service: Client, expected: tuple[float, float]) -> None:
    async def reached() -> bool:
        return await watching(service) == expected

    await eventually(reached, what=f"(watch_streams, watched_accounts) to be {expected}, "
                                   f"now {await watching(service)}")


@pytest.fixture
async def steady(service: Client) -> str:
    """An account that allows the gate before the script starts, and never changes."""
    now = datetime.now(UTC)
    await service.apply(subscription_event("evt_ts_steady", "sub_ts_steady", now - timedelta(minutes=30),
                                           account_id=STEADY, customer_id="cus_ts_steady",
                                           start=now - timedelta(hours=1)))
    return STEADY


async def test_the_typescript_client_is_pushed_each_change_once_across_a_cut_connection(
    service: Client, steady: str, relay: TcpProxy, script: Script
) -> None:
    reads_before = await service_reads(service)

    ready = await script.step("ready")
    assert ready["seen"] == [{"revision": 0, "gates": []}]  # an account never seen: empty, revision 0
    assert ready["stats"]["checkGateCalls"] == 0
    await streams_become(service, (1, 2))  # both accounts on one stream

    await service.apply(subscription_event("evt_ts_1", "sub_ts", T0, account_id=ACCOUNT, customer_id="cus_ts"))
    await script.command("committed")
    pushed = await script.step("pushed")
    assert pushed["stats"]["checkGateCalls"] == 0

    # A plan that ends a few seconds from now: the client's check flips at the edge in-process.
    now = datetime.now(UTC)
    edge = (now + timedelta(seconds=4)).replace(microsecond=0)  # a whole millisecond, as the script reads it
    await service.apply(subscription_event("evt_ts_ending", "sub_ts_ending", now - timedelta(minutes=30),
                                           account_id=ENDING, customer_id="cus_ts_ending",
                                           start=now - timedelta(hours=1), cancel_at=edge))
    reads_at_edge = await service_reads(service)
    await script.command("boundary", int(edge.timestamp() * 1000))
    flipped = await script.step("flipped")
    assert flipped["local"] > 0 and flipped["stats"]["checkGateCalls"] == 0, flipped
    assert await service_reads(service) == reads_at_edge  # no CheckGate, no GetEntitlements
    await streams_become(service, (1, 3))  # the third account joined: a new stream, the old one cancelled

    assert relay.cut() >= 1  # the client's one HTTP/2 connection, carrying the stream
    await script.command("cut")
    stale = await script.step("stale")  # the stream saw the cut; past the bound a check asked the service
    assert stale["stats"]["reconnects"] >= 1 and stale["stats"]["checkGateCalls"] >= 1

    downgrade = subscription_event("evt_ts_2", "sub_ts", T0 + timedelta(hours=1), account_id=ACCOUNT,
                                   customer_id="cus_ts", start=T0, items=[("starter_monthly", 1)])
    await service.apply(downgrade)  # committed while the client cannot reach the service
    relay.restore()
    await script.command("restored")
    resumed = await script.step("resumed")
    assert [s["gates"] for s in resumed["seen"]] == [[], ["api_access", "export", "priority_support"], ["export"]]
    assert resumed["resent"] == 1  # the change made during the cut, once; the unchanged accounts not at all

    assert relay.cut() >= 1  # again, with nothing committed while it lasts
    await script.command("cut")
    await script.step("lost")
    relay.restore()
    await script.command("restored")
    quiet = await script.step("quiet")  # the stream is back: its first message held nothing new
    assert quiet["seen"] == resumed["seen"]

    # The stream's connection goes silent without being closed, and so does each new one it is opened
    # on: the watch request (its body is not compressed) names the steady account, which no call the
    # client makes on its other connection does.
    assert relay.black_hole(STEADY.encode()) >= 1
    await script.command("silenced")
    silent = await script.step("silent")
    fallbacks = silent["stats"]["checkGateCalls"] - quiet["stats"]["checkGateCalls"]
    assert fallbacks >= 1 and silent["stats"]["reconnects"] > quiet["stats"]["reconnects"]
    relay.restore()
    await script.command("restored")
    back = await script.step("back")
    assert back["stats"]["checkGateCalls"] == silent["stats"]["checkGateCalls"]

    upgrade = subscription_event("evt_ts_3", "sub_ts", T0 + timedelta(hours=2), account_id=ACCOUNT,
                                 customer_id="cus_ts", start=T0)
    await service.apply(upgrade)
    await script.command("fenced")
    done = await script.step("done")
    revisions = [s["revision"] for s in done["seen"]]
    assert revisions == sorted(set(revisions)) and len(revisions) == 4, done["seen"]
    assert done["stats"]["streamsOpened"] >= 2
    assert await asyncio.wait_for(script.process.wait(), STEP_TIMEOUT_S) == 0
    # The client closed its stream; the one left on the black-holed connection is still open at the
    # service, which cannot know that its client is gone.
    await streams_become(service, (1, 3))

    reads_after = await service_reads(service)
    # Every answer came from the stream, but for the checks past the staleness bound while the stream
    # was silent: the ones while the connection was cut never reached the service.
    assert reads_after == {**reads_before, "CheckGate": reads_before["CheckGate"] + fallbacks}, (
        reads_before, reads_after, fallbacks)
    await service.product.CheckGate(pb.CheckGateRequest(account_id=ACCOUNT, gate=GATE))
    assert (await service_reads(service))["CheckGate"] == reads_after["CheckGate"] + 1  # the count is read right
