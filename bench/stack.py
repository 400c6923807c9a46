"""The whole product on free loopback ports: the provider simulator (delivering signed webhooks to
the checkout service), the entitlement service, the checkout service and the example catalog."""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from .procs import LOAD_CPU, ROOT, SERVER_CPU, Child, free_port, python_module, spawn
from .services import EXAMPLE_CATALOG, SERVICE_TOKENS

API_KEY = "sk_test_bench"


@dataclass
class Stack:
    env: dict[str, str]
    children: dict[str, Child]
    secret: str

    @property
    def sim(self) -> str:
        return self.env["STRIPE_API_BASE"]

    @property
    def webhook_url(self) -> str:
        return f"http://{self.env['CHECKOUT_HTTP_ADDR']}/webhooks/stripe"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.env['ENTITLEMENT_METRICS_ADDR']}/metrics"

    def placement(self) -> str:
        """Where the services run, for a row's notes."""
        cores = {name: self.children[name].cpus for name in ("entitlement", "checkout")}
        if not any(cores.values()):
            return "services and PostgreSQL unpinned"
        return (f"entitlement service on core {cores['entitlement']}, checkout service on core {cores['checkout']}, "
                "PostgreSQL unpinned")

    def pids(self) -> dict[str, int]:
        return {name: child.pid for name, child in self.children.items()}

    async def stop(self) -> None:
        for child in reversed(list(self.children.values())):
            await child.stop()


async def start_simulator(log_dir: Path, env: dict[str, str] | None = None) -> tuple[Child, str]:
    port = free_port()
    child = spawn("provider_sim", python_module("provider_sim"), {"PROVIDER_SIM_ADDR": f"127.0.0.1:{port}",
                                                                  **(env or {})}, log_dir)
    await child.wait_for_event("listening")
    return child, f"http://127.0.0.1:{port}"


async def start_stack(database_url: str, log_dir: Path) -> Stack:
    """The entitlement service on core SERVER_CPU and the checkout service on LOAD_CPU, beside the
    load generator: each service is one thread on one event loop, and is given a core of its own
    as docs/operations.md advises. PostgreSQL and the simulator are unpinned. Left to the
    scheduler, the two services were often queued on one core while the other sat idle."""
    secret = f"whsec_bench_{secrets.token_hex(8)}"
    ports = {name: free_port() for name in ("ent", "ent_metrics", "co", "co_http")}
    env = {
        "DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
        "STRIPE_API_KEY": API_KEY, "STRIPE_WEBHOOK_SECRETS": secret,
        "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{ports['ent']}", "ENTITLEMENT_TARGET": f"127.0.0.1:{ports['ent']}",
        "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{ports['ent_metrics']}",
        "CHECKOUT_GRPC_ADDR": f"127.0.0.1:{ports['co']}", "CHECKOUT_HTTP_ADDR": f"127.0.0.1:{ports['co_http']}",
        # Retention is maintenance, not the request path: a run that measures it asks for it itself.
        "EVENT_RETENTION_INTERVAL_S": "0",
    }
    sim, sim_url = await start_simulator(log_dir, {
        "PROVIDER_SIM_WEBHOOK_URL": f"http://127.0.0.1:{ports['co_http']}/webhooks/stripe",
        "PROVIDER_SIM_WEBHOOK_SECRET": secret})
    env["STRIPE_API_BASE"] = sim_url
    children = {"provider_sim": sim}
    stack = Stack(env, children, secret)
    try:
        children["entitlement"] = spawn("entitlement_service", python_module("entitlement_service"), env, log_dir,
                                        SERVER_CPU)
        await children["entitlement"].wait_until_ready(f"http://{env['ENTITLEMENT_METRICS_ADDR']}/readyz")
        children["checkout"] = spawn("checkout_service", python_module("checkout_service"), env, log_dir, LOAD_CPU)
        await children["checkout"].wait_until_ready(f"http://{env['CHECKOUT_HTTP_ADDR']}/readyz")
        await apply_catalog(env)
    except BaseException:
        await stack.stop()
        raise
    return stack


async def apply_catalog(env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *python_module("checkout_service", "catalog", "apply", str(EXAMPLE_CATALOG)), cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"catalog apply failed:\n{out.decode(errors='replace')}")
