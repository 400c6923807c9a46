"""The stack the run drives, every part its own to break: a private PostgreSQL cluster in a
temporary folder (restarted with pg_ctl), the provider simulator, two entitlement replicas (the
second reaching PostgreSQL through a TCP proxy that can go silent), two checkout replicas (each
calling one entitlement replica) behind a round-robin webhook relay, and the example catalog.

The simulator is never killed: it keeps its state in memory (a snapshot is written only on a clean
shutdown), so a SIGKILL would lose the provider's truth the run compares everything with."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import grpc

from chaos.processes import Child
from chaos.relay import Relay
from devstack.pg import Database, find_postgres_binaries, server_url_for, start_private_cluster
from selfserve.checkout.v1 import checkout_pb2_grpc
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.ports import free_port
from tests.support.tcp_proxy import TcpProxy

ROOT = Path(__file__).resolve().parents[1]
CATALOG = ROOT / "deploy" / "catalog.example.toml"
DATABASE = "selfserve"
SECRET = "whsec_chaos_" + "0" * 16
API_KEY = "sk_test_chaos"
# Sent by an entitlement replica's notification connection alone.
LISTENING = b'LISTEN "entitlements_changed"'


@dataclass(frozen=True)
class Tuning:
    """Settings the run gives the services."""

    heartbeat_s: float = 0.5
    heartbeat_deadline_s: float = 1.0
    gate_cache_max_age_s: float = 30.0


@dataclass
class Cluster:
    """The private PostgreSQL cluster: its server URL, the run's database, and what restarts it."""

    database: Database
    data_dir: Path
    bin_dir: Path
    owner: str | None  # the unprivileged user it runs as when the run is root

    @property
    def url(self) -> str:
        return server_url_for(self.database.url, DATABASE)

    async def restart(self) -> None:
        """pg_ctl restart (fast: open transactions are rolled back), on the same port."""
        command = [str(self.bin_dir / "pg_ctl"), "restart", "-w", "-t", "60", "-m", "fast", "-D", str(self.data_dir),
                   "-l", str(self.data_dir.parent / "postgres.log")]
        if self.owner is not None:
            command = [_runuser(), "-u", self.owner, "--", *command]
        proc = await asyncio.create_subprocess_exec(*command, cwd=self.data_dir.parent,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"pg_ctl restart failed: {out.decode(errors='replace')}")

    async def cut_connections(self) -> int:
        """Terminates every backend of the run's database but the one asking; returns how many."""
        conn = await asyncpg.connect(self.database.url, timeout=5)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()", DATABASE))
        finally:
            await conn.close()


def _runuser() -> str:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
    found = shutil.which("runuser", path=search)
    if found is None:
        raise RuntimeError("running as root needs runuser to restart PostgreSQL as its own user")
    return found


async def start_cluster(log: Callable[[str], None]) -> Cluster:
    binaries = find_postgres_binaries()
    if not binaries:
        raise RuntimeError("no PostgreSQL binaries (initdb, pg_ctl, postgres) on PATH or under /usr/lib/postgresql")
    folder = Path(tempfile.mkdtemp(prefix="selfserve-chaos-pg-"))
    database = await asyncio.to_thread(start_private_cluster, folder, binaries[0], log=log, kind="chaos cluster")
    conn = await asyncpg.connect(database.url, timeout=10)
    try:
        data_dir = Path(str(await conn.fetchval("SHOW data_directory")))
        await conn.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await conn.close()
    owner = await asyncio.to_thread(data_dir.owner) if os.geteuid() == 0 else None
    return Cluster(database, data_dir, binaries[0], owner)


@dataclass
class Stack:
    cluster: Cluster
    proxy: TcpProxy
    relay: Relay
    http: aiohttp.ClientSession
    tokens: dict[Role, str]
    sim_url: str
    sim: Child
    entitlements: list[Child]
    checkouts: list[Child]
    checkout_urls: list[str]
    log_dir: Path
    tuning: Tuning
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    entitlement_stubs: list[Any] = field(default_factory=list)
    checkout_stubs: list[Any] = field(default_factory=list)

    @property
    def services(self) -> list[Child]:
        """The processes the run kills: every entitlement and checkout replica."""
        return [*self.entitlements, *self.checkouts]

    def metadata(self, role: Role) -> tuple[tuple[str, str]]:
        return (("authorization", f"Bearer {self.tokens[role]}"),)

    async def sim_control(self, path: str, **params: Any) -> Any:
        async with self.http.post(f"{self.sim_url}/_sim/{path}", json=params) as reply:
            body = await reply.json()
            if reply.status != 200:
                raise RuntimeError(f"/_sim/{path} {params}: {reply.status} {body}")
            return body

    async def provider_list(self, path: str, **params: Any) -> list[dict[str, Any]]:
        """Every object of a provider list, page after page."""
        found: list[dict[str, Any]] = []
        headers = {"Authorization": f"Bearer {API_KEY}"}
        while True:
            query = {"limit": "100", **params, **({"starting_after": found[-1]["id"]} if found else {})}
            async with self.http.get(f"{self.sim_url}{path}", params=query, headers=headers) as reply:
                page = await reply.json()
                if reply.status != 200:
                    raise RuntimeError(f"{path}: {reply.status} {page}")
            found.extend(page["data"])
            if not page["has_more"]:
                return found

    async def wait_delivered(self, timeout_s: float = 600) -> None:
        """Until the simulator has nothing queued, in flight or awaiting a retry."""
        waited = 0.0
        while waited < timeout_s:
            answer = await self.sim_control("delivery/wait", timeout_ms=30_000)
            if answer["idle"]:
                return
            waited += 30
        raise RuntimeError(f"webhook deliveries still pending after {timeout_s:.0f} s")

    async def all_ready(self) -> None:
        await asyncio.gather(*(child.wait_ready() for child in self.services))


def _fresh(log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    for old in log_dir.glob("*.log"):
        old.unlink()


def _tokens() -> dict[Role, str]:
    return {role: f"{role.value}_{secrets.token_hex(12)}" for role in Role}


async def start_stack(log_dir: Path, tuning: Tuning, log: Callable[[str], None]) -> Stack:
    """Everything started and ready, the catalog applied and its events delivered."""
    await asyncio.to_thread(_fresh, log_dir)
    cluster = await start_cluster(log)
    proxy = await TcpProxy(cluster.url).start()
    ports = {name: free_port() for name in ("sim", "relay", "e1", "e1m", "e2", "e2m", "c1", "c1h", "c2", "c2h")}
    checkout_urls = [f"http://127.0.0.1:{ports[p]}" for p in ("c1h", "c2h")]
    relay = Relay([f"{url}/webhooks/stripe" for url in checkout_urls])
    http = aiohttp.ClientSession()
    tokens = _tokens()
    sim_url = f"http://127.0.0.1:{ports['sim']}"
    common = {"SERVICE_TOKENS": ",".join(f"{role.value}:{token}" for role, token in tokens.items()),
              "STRIPE_API_KEY": API_KEY, "STRIPE_API_BASE": sim_url, "STRIPE_WEBHOOK_SECRETS": SECRET,
              "LOG_LEVEL": "info"}
    sim_env = {**common, "PROVIDER_SIM_ADDR": f"127.0.0.1:{ports['sim']}", "PROVIDER_SIM_WEBHOOK_SECRET": SECRET,
               "PROVIDER_SIM_WEBHOOK_URL": await relay.start(ports["relay"])}
    sim = Child("simulator", "provider_sim", sim_env, log_dir, f"{sim_url}/_sim/clock", None, http)
    entitlements = [Child(
        f"entitlement-{n}", "entitlement_service",
        {**common, "DATABASE_URL": url, "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{ports[f'e{n}']}",
         "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{ports[f'e{n}m']}",
         "CHANGE_HEARTBEAT_INTERVAL_S": str(tuning.heartbeat_s),
         "CHANGE_HEARTBEAT_DEADLINE_S": str(tuning.heartbeat_deadline_s),
         "GATE_CACHE_MAX_AGE_S": str(tuning.gate_cache_max_age_s)},
        log_dir, f"http://127.0.0.1:{ports[f'e{n}m']}/readyz", f"http://127.0.0.1:{ports[f'e{n}m']}/metrics", http)
        for n, url in ((1, cluster.url), (2, proxy.url))]
    checkouts = [Child(
        f"checkout-{n}", "checkout_service",
        # The run reconciles when it chooses to: a periodic run would replay held events early.
        # One public address for both, as behind one load balancer: a checkout retried on the other
        # replica sends the provider the same request again, return URL included.
        {**common, "ENTITLEMENT_TARGET": f"127.0.0.1:{ports[f'e{n}']}", "RECONCILE_INTERVAL_S": "0",
         "CHECKOUT_PUBLIC_URL": checkout_urls[0],
         "CHECKOUT_GRPC_ADDR": f"127.0.0.1:{ports[f'c{n}']}", "CHECKOUT_HTTP_ADDR": f"127.0.0.1:{ports[f'c{n}h']}"},
        log_dir, f"{checkout_urls[n - 1]}/readyz", f"{checkout_urls[n - 1]}/metrics", http) for n in (1, 2)]
    stack = Stack(cluster, proxy, relay, http, tokens, sim_url, sim, entitlements, checkouts, checkout_urls,
                  log_dir, tuning)
    try:
        await sim.start()
        await asyncio.gather(*(child.start() for child in entitlements))
        await asyncio.gather(*(child.start() for child in checkouts))
        for n in (1, 2):
            stack.channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{ports[f'e{n}']}"))
            stack.entitlement_stubs.append(entitlement_pb2_grpc.EntitlementServiceStub(stack.channels[-1]))
        for n in (1, 2):
            stack.channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{ports[f'c{n}']}"))
            stack.checkout_stubs.append(checkout_pb2_grpc.CheckoutServiceStub(stack.channels[-1]))
        await apply_catalog(checkouts[0].env)
        await stack.wait_delivered()
    except BaseException:
        await stop_stack(stack)
        raise
    return stack


async def apply_catalog(env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "checkout_service", "catalog", "apply", str(CATALOG), cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"catalog apply failed:\n{out.decode(errors='replace')}")


async def stop_stack(stack: Stack) -> None:
    """Stops everything the run started, newest first, and removes the cluster; each step is
    taken whatever happened to the one before (an interrupted run leaves nothing running)."""
    steps = [*(channel.close for channel in stack.channels),
             *(child.stop for child in [*reversed(stack.checkouts), *reversed(stack.entitlements), stack.sim]),
             stack.relay.close, stack.proxy.close, stack.http.close,
             partial(asyncio.to_thread, stack.cluster.database.stop)]
    for step in steps:
        try:
            await asyncio.shield(step())
        except (Exception, asyncio.CancelledError) as exc:
            print(f"stopping: {type(exc).__name__}: {exc}", file=sys.stderr)
    shutil.rmtree(stack.cluster.data_dir.parent, ignore_errors=True)
