"""(c) CheckGate throughput and latency at 64 streams in flight, against a bare grpc.aio handler
returning a constant for the same method on asyncio's own loop. The services run on uvloop, so the
same bare handler on uvloop is measured too and reported beside the ratio."""

from __future__ import annotations

import grpc

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role

from .context import Context
from .procs import LOAD_CPU, SERVER_CPU, Child, free_port, meter, python_module, spawn
from .profiling import profiled
from .report import Row, ratio
from .services import SERVICE, TOKENS, apply_events, bearer, load_example_catalog, metric_sum, start_entitlement
from .services import subscription_created as created
from .tools import H2Result, h2load

NAME = "c. CheckGate at 64 in flight"
TARGET = "≥ 0.85 of bare grpc.aio req/s"
METHOD = f"/{SERVICE}/CheckGate"
STREAMS = 64
ACCOUNTS = 100
REQUEST = pb.CheckGateRequest(account_id="acct_gate_7", gate="api_access")


def grpc_frame(message: pb.CheckGateRequest) -> bytes:
    """A length-prefixed gRPC message: no compression flag, 4-byte big-endian length."""
    body = message.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


async def _check_once(target: str) -> pb.CheckGateResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
        reply: pb.CheckGateResponse = await stub.CheckGate(REQUEST, metadata=bearer(Role.PRODUCT), timeout=10)
        return reply


async def _load(ctx: Context, target: str, server: Child, label: str) -> tuple[H2Result, float]:
    body = ctx.path("checkgate.grpc")
    body.write_bytes(grpc_frame(REQUEST))
    headers = {"content-type": "application/grpc", "te": "trailers", "authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}
    async with meter({"server": server.pid}, with_postgres=False) as cpu, profiled(
            ctx.profile, {f"checkgate-{label}": server.pid}):
        result = await h2load(f"http://{target}{METHOD}", body, headers, clients=1, streams=STREAMS,
                              duration_s=ctx.load_s, warmup_s=ctx.warmup_s, log_file=ctx.path(f"h2load-{label}.log"))
    return result, cpu.used["server"]


async def _service(ctx: Context) -> tuple[H2Result, float, dict[str, float]]:
    database_url = await ctx.server.create("checkgate", migrated=False)
    service = await start_entitlement("entitlement_checkgate", database_url, ctx.work, SERVER_CPU)
    try:
        async with grpc.aio.insecure_channel(service.target) as channel:
            await load_example_catalog(channel)
            outcomes = await apply_events(channel, [created(f"acct_gate_{n}", n) for n in range(ACCOUNTS)])
        if set(outcomes) != {"EVENT_OUTCOME_APPLIED"}:
            raise RuntimeError(f"setup events were not all applied: {sorted(set(outcomes))}")
        if not (await _check_once(service.target)).allowed:
            raise RuntimeError(f"CheckGate does not allow {REQUEST.gate} for {REQUEST.account_id}")
        ok_before = await metric_sum(service.metrics_url, "grpc_server_handled_total", grpc_method=METHOD,
                                     grpc_code="OK")
        all_before = await metric_sum(service.metrics_url, "grpc_server_handled_total", grpc_method=METHOD)
        result, cpu = await _load(ctx, service.target, service.child, "entitlement")
        ok = await metric_sum(service.metrics_url, "grpc_server_handled_total", grpc_method=METHOD,
                              grpc_code="OK") - ok_before
        handled = await metric_sum(service.metrics_url, "grpc_server_handled_total", grpc_method=METHOD) - all_before
    finally:
        await service.child.stop()
    return result, cpu, {"grpc_ok": ok, "grpc_not_ok": handled - ok}


async def _baseline(ctx: Context, loop: str) -> tuple[H2Result, float]:
    port = free_port()
    name = f"grpc_const_{loop}"
    server = spawn(name, python_module("bench.grpc_const", str(port), loop), {}, ctx.work, SERVER_CPU)
    try:
        await server.wait_for_event("listening")
        await _check_once(f"127.0.0.1:{port}")
        return await _load(ctx, f"127.0.0.1:{port}", server, "baseline" if loop == "asyncio" else f"baseline-{loop}")
    finally:
        await server.stop()


def _latency(result: H2Result) -> str:
    return f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms"


async def run(ctx: Context) -> list[Row]:
    measured, cpu, codes = await _service(ctx)
    base, base_cpu = await _baseline(ctx, "asyncio")
    on_uvloop, _ = await _baseline(ctx, "uvloop")
    value = ratio(measured.req_per_s, base.req_per_s)
    same_loop = ratio(measured.req_per_s, on_uvloop.req_per_s)
    verified = codes["grpc_not_ok"] == 0 and codes["grpc_ok"] >= measured.succeeded and measured.failed == 0
    return [Row(
        NAME, f"{measured.req_per_s:,.0f} req/s, {_latency(measured)}",
        f"{base.req_per_s:,.0f} req/s, {_latency(base)} (bare grpc.aio, constant reply); the same on uvloop: "
        f"{on_uvloop.req_per_s:,.0f} req/s, {_latency(on_uvloop)}, ratio {same_loop or 0:.2f}",
        value, TARGET, value is not None and value >= 0.85 and verified,
        f"h2load -c1 -m{STREAMS} -D{ctx.load_s:.0f} --warm-up-time={ctx.warmup_s:.0f} (core {LOAD_CPU})",
        f"one cached account (cache hit path); servers on core {SERVER_CPU}; CPU cores used: service {cpu:.2f}, "
        f"baseline {base_cpu:.2f}, h2load {measured.run.cores:.2f}; gRPC status OK per the service's "
        f"grpc_server_handled_total: {codes['grpc_ok']:.0f} (not OK {codes['grpc_not_ok']:.0f}) for "
        f"{measured.succeeded} h2load successes",
        {"service": _raw(measured), "baseline": _raw(base), "baseline_uvloop": _raw(on_uvloop), "grpc_codes": codes,
         "cpu": {"service": cpu, "baseline": base_cpu, "h2load": measured.run.cores}})]


def _raw(result: H2Result) -> dict[str, float]:
    return {"req_per_s": result.req_per_s, "succeeded": result.succeeded, "failed": result.failed,
            "status_2xx": result.status_2xx, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms,
            "samples": len(result.latencies_ms)}

