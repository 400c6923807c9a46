"""(b) Signature check and parse alone, against a bare aiohttp POST handler in the same process."""

from __future__ import annotations

import secrets

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
                                                                 "wrk": checked.run.cores}})]
