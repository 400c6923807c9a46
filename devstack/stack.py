"""`make run`: the whole stack on this machine with no configuration.

Finds or starts PostgreSQL, starts the provider simulator when this build has one, starts both
services, waits until they are ready and prints how to reach them. Ctrl-C (or SIGTERM) stops
everything it started, in reverse order, and leaves no process behind."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import secrets
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from grpc import aio

from checkout_service.entitlement_client import is_serving
from devstack.pg import Database, ensure_database

ROLES = ("product", "checkout", "support", "operator")
SIM_ADDR = "127.0.0.1:12111"
READY_TIMEOUT_S = 60.0
CATALOG = "deploy/catalog.example.toml"


@dataclass(frozen=True)
class Endpoints:
    entitlement_grpc: str
    entitlement_metrics: str
    checkout_grpc: str
    checkout_http: str


def endpoints_from_env() -> Endpoints:
    return Endpoints(
        entitlement_grpc=os.environ.get("ENTITLEMENT_GRPC_ADDR", "127.0.0.1:50051"),
        entitlement_metrics=os.environ.get("ENTITLEMENT_METRICS_ADDR", "127.0.0.1:9464"),
        checkout_grpc=os.environ.get("CHECKOUT_GRPC_ADDR", "127.0.0.1:50052"),
        checkout_http=os.environ.get("CHECKOUT_HTTP_ADDR", "127.0.0.1:8080"),
    )


def local_secret(run_dir: Path, name: str, make: str) -> str:
    """A value generated once per checkout and kept under .run/, so printed tokens stay valid."""
    path = run_dir / name
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(make)
        path.chmod(0o600)
    return path.read_text().strip()


def service_env(root: Path, database: Database, ends: Endpoints, simulator: bool) -> dict[str, str]:
    run_dir = root / ".run"
    tokens = os.environ.get("SERVICE_TOKENS") or local_secret(
        run_dir, "service_tokens", ",".join(f"{role}:{role}_{secrets.token_hex(12)}" for role in ROLES)
    )
    env = {
        "DATABASE_URL": database.url,
        "SERVICE_TOKENS": tokens,
        "ENTITLEMENT_GRPC_ADDR": ends.entitlement_grpc,
        "ENTITLEMENT_METRICS_ADDR": ends.entitlement_metrics,
        "ENTITLEMENT_TARGET": os.environ.get("ENTITLEMENT_TARGET", ends.entitlement_grpc),
        "CHECKOUT_GRPC_ADDR": ends.checkout_grpc,
        "CHECKOUT_HTTP_ADDR": ends.checkout_http,
        "STRIPE_API_KEY": os.environ.get("STRIPE_API_KEY", "sk_test_local_simulator"),
        "STRIPE_WEBHOOK_SECRETS": os.environ.get("STRIPE_WEBHOOK_SECRETS")
        or local_secret(run_dir, "webhook_secret", f"whsec_{secrets.token_hex(16)}"),
    }
    if simulator and "STRIPE_API_BASE" not in os.environ:
        sim_addr = os.environ.get("PROVIDER_SIM_ADDR", SIM_ADDR)
        env["STRIPE_API_BASE"] = f"http://{sim_addr}"
        env["PROVIDER_SIM_ADDR"] = sim_addr
        # The simulator delivers to the checkout service, signing with the secret it verifies.
        env["PROVIDER_SIM_WEBHOOK_URL"] = f"http://{ends.checkout_http}/webhooks/stripe"
        env["PROVIDER_SIM_WEBHOOK_SECRET"] = env["STRIPE_WEBHOOK_SECRETS"].split(",")[0]
    return {**os.environ, **env, "PYTHONUNBUFFERED": "1"}


class Children:
    """The processes this command started, stopped newest first."""

    def __init__(self) -> None:
        self.running: list[tuple[str, asyncio.subprocess.Process]] = []

    async def start(self, name: str, env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", name, *args, env=env,
                                                    start_new_session=True)
        self.running.append((name, proc))
        return proc

    def exited(self) -> str | None:
        return next((f"{name} exited with {p.returncode}" for name, p in self.running if p.returncode is not None),
                    None)

    async def stop_all(self, timeout_s: float = 20) -> None:
        for name, proc in reversed(self.running):
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), timeout_s)
                except TimeoutError:
                    print(f"{name} did not stop within {timeout_s} s; killing it", flush=True)
                    proc.kill()
                    await proc.wait()


async def answers(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def wait_ready(children: Children, ends: Endpoints, sim_addr: str | None) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT_S
    async with aio.insecure_channel(ends.entitlement_grpc) as ent, aio.insecure_channel(ends.checkout_grpc) as co:
        while loop.time() < deadline:
            problem = children.exited()
            if problem:
                raise RuntimeError(problem)
            if (await is_serving(ent) and await is_serving(co)
                    and (sim_addr is None or await answers(sim_addr))):
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the services were not ready within {READY_TIMEOUT_S:.0f} s")


async def apply_catalog(root: Path, env: dict[str, str]) -> str:
    """The example catalog, to the provider and the entitlement service (a no-op when unchanged)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "checkout_service", "catalog", "apply", str(root / CATALOG), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"catalog apply failed:\n{out.decode()}")
    return out.decode().strip()


def purchase_lines(token: str, ends: Endpoints) -> list[str]:
    body = ('{"account_id": "acct_demo", "items": [{"price": "pro_monthly", "quantity": 1}], '
            '"success_url": "https://example.com/welcome", "cancel_url": "https://example.com/pricing"}')
    return [
        "",
        "  buy a plan (open the returned url in a browser and press Pay; the simulator plays Stripe):",
        f"    curl -s -X POST http://{ends.checkout_http}/v1/checkout/sessions -H 'Authorization: Bearer {token}' "
        f"-H 'Content-Type: application/json' -d '{body}'",
    ]


def banner(env: dict[str, str], ends: Endpoints, database: Database, simulator: bool) -> str:
    tokens = dict(entry.split(":", 1) for entry in env["SERVICE_TOKENS"].split(","))
    grpcurl = Path(sys.executable).parent / "grpcurl"
    sim = (f"provider simulator  {env['STRIPE_API_BASE']}" if simulator
           else "provider simulator  not in this build; the checkout service starts without it")
    lines = [
        "",
        "The stack is up. Ctrl-C stops everything it started.",
        "",
        f"  database            {database.source}",
        f"  {sim}",
        f"  entitlement gRPC    {ends.entitlement_grpc}   metrics http://{ends.entitlement_metrics}/metrics",
        f"  checkout gRPC       {ends.checkout_grpc}",
        f"  checkout HTTP       http://{ends.checkout_http}   (/healthz /readyz /metrics)",
        "",
        "  tokens (Authorization: Bearer <token>):",
        *(f"    {role:<9} {token}" for role, token in tokens.items()),
        "",
        "  try:",
        f"    {grpcurl} -plaintext {ends.entitlement_grpc} list",
        f"    {grpcurl} -plaintext -d '{{\"service\": \"selfserve.entitlement.v1.EntitlementService\"}}' "
        f"{ends.entitlement_grpc} grpc.health.v1.Health/Check",
        f"    {grpcurl} -plaintext {ends.checkout_grpc} describe selfserve.checkout.v1.CheckoutService",
        *(purchase_lines(tokens["product"], ends) if simulator else []),
        "",
    ]
    return "\n".join(lines)


def run(root: Path) -> int:
    database = ensure_database(root, "selfserve", log=lambda line: print(line, flush=True))
    try:
        return asyncio.run(serve(root, database))
    finally:
        database.stop()
        print("stopped.", flush=True)


async def serve(root: Path, database: Database) -> int:
    children = Children()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        ends = endpoints_from_env()
        simulator = importlib.util.find_spec("provider_sim") is not None
        env = service_env(root, database, ends, simulator)
        if simulator:
            await children.start("provider_sim", env)
        await children.start("entitlement_service", env)
        await children.start("checkout_service", env)
        await wait_ready(children, ends, env.get("PROVIDER_SIM_ADDR") if simulator else None)
        if simulator:
            print(await apply_catalog(root, env), flush=True)
        print(banner(env, ends, database, simulator), flush=True)
        while not stop.is_set() and children.exited() is None:
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                continue
        problem = children.exited()
        if problem and not stop.is_set():
            print(f"stopping: {problem}", flush=True)
            return 1
        return 0
    except RuntimeError as exc:
        print(f"stopping: {exc}", flush=True)
        return 1
    finally:
        print("stopping the stack…", flush=True)
        await children.stop_all()
