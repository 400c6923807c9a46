"""(b) Signature check and parse alone, against a bare aiohttp POST handler in the same process;
and what the provider library's `verify_header` would cost in that route instead of ours."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

import stripe

from checkout_service.stripe.signature import verify

from .context import Context
from .procs import LOAD_CPU, SERVER_CPU, free_port, meter, python_module, spawn
from .profiling import profiled
from .report import Row, ratio
from .stack import start_simulator
from .tools import WrkResult, wrk
from .webhook_bodies import bodies, create_price, template_event, write_signed

NAME = "b. signature check + parse"
TARGET = "≥ 0.40 of bare POST req/s"
CONNECTIONS = 64
LIBRARY_NAME = "b. signature check: provider library vs ours"
LIBRARY_TARGET = "ours only if the library costs > 10% of the route"
LIBRARY_CALLS = 20_000


async def _load(ctx: Context, url: str, requests_file: str, pid: int, label: str) -> tuple[WrkResult, float]:
    path = ctx.path(requests_file)
    await wrk(url, path, connections=CONNECTIONS, duration_s=ctx.warmup_s)
    async with meter({"server": pid}, with_postgres=False) as cpu, profiled(ctx.profile, {f"signature-{label}": pid}):
        result = await wrk(url, path, connections=CONNECTIONS, duration_s=ctx.load_s)
    return result, cpu.used["server"]


async def run(ctx: Context) -> list[Row]:
    sim, sim_url = await start_simulator(ctx.work)
    try:
        template = await template_event(sim_url, await create_price(sim_url))
    finally:
        await sim.stop()
    secret = f"whsec_bench_{secrets.token_hex(8)}"
    write_signed(ctx.path("signature.requests"), bodies(template, "bench_sig", 1), secret)
    port = free_port()
    app = spawn("sig_app", python_module("bench.sig_app", str(port), secret), {}, ctx.work, SERVER_CPU)
    try:
        await app.wait_for_event("listening")
        base = f"http://127.0.0.1:{port}"
        bare, bare_cpu = await _load(ctx, f"{base}/bare", "signature.requests", app.pid, "bare")
        checked, checked_cpu = await _load(ctx, f"{base}/verified", "signature.requests", app.pid, "verified")
    finally:
        await app.stop()
    library = library_row(ctx.path("signature.requests").read_bytes(), secret, checked_cpu / checked.ok_per_s)
    errors = bare.errors + checked.errors
    value = ratio(checked.ok_per_s, bare.ok_per_s)
    body_size = len(ctx.path("signature.requests").read_bytes().partition(b"\t")[2]) - 1
    return [Row(
        NAME, f"{checked.ok_per_s:,.0f} req/s (p99 {checked.counts['p99_us'] / 1000:.1f} ms)",
        f"{bare.ok_per_s:,.0f} req/s bare aiohttp POST (p99 {bare.counts['p99_us'] / 1000:.1f} ms)",
        value, TARGET, value is not None and value >= 0.40 and errors == 0,
        f"wrk -c{CONNECTIONS} -t1 {ctx.load_s:.0f}s + lua (core {LOAD_CPU})",
        f"{body_size} B subscription event, HMAC-SHA256 + JSON parse + envelope (webhooks.verified_event); "
        f"app on core {SERVER_CPU}; "
        f"CPU cores used: app {checked_cpu:.2f} / {bare_cpu:.2f} (checked / bare), wrk {checked.run.cores:.2f}; "
        f"errors {errors}",
        {"checked": checked.counts, "bare": bare.counts, "cpu": {"checked": checked_cpu, "bare": bare_cpu,
                                                                 "wrk": checked.run.cores}}), library]


def _seconds_per_call(check: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(LIBRARY_CALLS):
        check()
    return (time.perf_counter() - started) / LIBRARY_CALLS


def library_row(requests_file: bytes, secret: str, route_s: float) -> Row:
    """Both checks on the measured body, during a rotation (two secrets, the second one signing),
    timed in this process; the route's cost is the verified route's CPU seconds per request."""
    line = requests_file.split(b"\n", 1)[0]
    header, _, body = line.partition(b"\t")
    signature = header.decode()
    configured = ("whsec_rotated_out_" + secrets.token_hex(8), secret)

    def ours() -> object:
        return verify(body, signature, configured, 1e12, time.time())

    def library() -> object:
        for candidate in configured:
            try:
                return stripe.WebhookSignature.verify_header(body, signature, candidate, tolerance=None)
            except stripe.SignatureVerificationError:
                continue
        raise AssertionError("the benchmark's body is not signed with its secret")

    ours_s, library_s = _seconds_per_call(ours), _seconds_per_call(library)
    share = library_s / route_s
    return Row(
        LIBRARY_NAME, f"library {library_s * 1e6:.1f} µs per webhook = {share:.0%} of the route",
        f"ours {ours_s * 1e6:.1f} µs = {ours_s / route_s:.0%} of the route", share, LIBRARY_TARGET, share > 0.10,
        f"{LIBRARY_CALLS:,} calls each in the benchmark process",
        f"route: {route_s * 1e6:.0f} µs of CPU per verified request (bare aiohttp + check + JSON parse + envelope, "
        f"measured above); {len(body)} B body; two secrets configured, the second signing; the library's "
        "verify_header called once per secret",
        {"library_us": library_s * 1e6, "ours_us": ours_s * 1e6, "route_us": route_s * 1e6})
