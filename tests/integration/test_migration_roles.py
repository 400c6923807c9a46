"""Migrations run as their own command with their own database role: `python -m entitlement_service
migrate` applies them as the owner role and grants the runtime role what the service needs and
nothing more; a service started with MIGRATE_ON_START=false runs as that runtime role, and waits,
not ready, while the schema is behind."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote, urlsplit

import aiohttp
import asyncpg
import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from devstack.pg import server_url_for
from entitlement_service.db.migrate import Migration, grant_runtime_role, load_migrations, migrate
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.integration.conftest import start_service, stop_service
from tests.support.pg import execute
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.provider import (
    ROOT,
    T0,
    example_catalog_request,
    invoice_event,
    session_event,
    subscription_event,
    ts,
)
from tests.support.tokens import SERVICE_TOKENS, bearer

MONTH = timedelta(days=30)
_names = itertools.count()


@dataclass(frozen=True)
class Roles:
    """A database owned by the migration role, and a runtime role with no privileges of its own."""

    database: str
    owner_role: str
    owner_url: str
    runtime_role: str
    runtime_url: str


def with_user(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{host}").geturl()


@pytest.fixture
async def roles(pg_admin_url: str) -> AsyncIterator[Roles]:
    """The two roles and the database as deploy/README.md creates them, dropped afterwards."""
    suffix = f"{os.getpid()}_{next(_names)}"
    database, owner, runtime = f"selfserve_roles_{suffix}", f"selfserve_owner_{suffix}", f"selfserve_app_{suffix}"
    await execute(pg_admin_url, f"CREATE ROLE {owner} LOGIN PASSWORD 'owner-password'",
                  f"CREATE ROLE {runtime} LOGIN PASSWORD 'app-password'",
                  f"CREATE DATABASE {database} OWNER {owner}")
    await execute(server_url_for(pg_admin_url, database), "REVOKE CREATE ON SCHEMA public FROM PUBLIC",
                  f"GRANT CONNECT ON DATABASE {database} TO {runtime}")
    url = server_url_for(pg_admin_url, database)
    try:
        yield Roles(database, owner, with_user(url, owner, "owner-password"), runtime,
                    with_user(url, runtime, "app-password"))
    finally:
        await execute(pg_admin_url, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)",
                      f"DROP ROLE IF EXISTS {runtime}", f"DROP ROLE IF EXISTS {owner}")


async def migrate_command(env: dict[str, str], *args: str) -> tuple[int, str]:
    """Runs `python -m entitlement_service migrate` with `env` over the inherited environment;
    returns its exit code and what it wrote to stderr."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_RUNTIME_ROLE")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "entitlement_service", *(args or ("migrate",)), cwd=ROOT, env={**inherited, **env},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def migrated_as_owner(roles: Roles) -> None:
    code, err = await migrate_command({"DATABASE_URL": roles.owner_url, "DATABASE_RUNTIME_ROLE": roles.runtime_role})
    assert code == 0, err


async def test_the_runtime_role_serves_a_whole_purchase_and_can_change_no_schema(roles: Roles) -> None:
    await migrated_as_owner(roles)
    service = await start_service(roles.runtime_url, env={"MIGRATE_ON_START": "false"})
    try:
        assert (await service.as_role(Role.OPERATOR).UpsertCatalog(example_catalog_request())).entries
        await service.checkout.RegisterPurchase(pb.RegisterPurchaseRequest(
            purchase_id="pur_1", account_id="acct_1", checkout_session_id="cs_1", mode=pb.PURCHASE_MODE_SUBSCRIPTION,
            items=[pb.PurchaseItem(price="pro_monthly", quantity=1)], subscription_group="core",
            success_url="https://app.example/ok", cancel_url="https://app.example/no", expires_at=ts(T0 + MONTH)))
        await service.checkout.MarkPurchaseReturned(pb.MarkPurchaseReturnedRequest(purchase_id="pur_1"))
        await service.apply(
            session_event("evt_cs", "cs_1", T0, purchase_id="pur_1", mode="subscription", subscription_id="sub_1",
                          items=[("pro_monthly", 1)]),
            subscription_event("evt_sub", "sub_1", T0, purchase_id="pur_1"),
            invoice_event("evt_inv", "in_1", "sub_1", T0, lines=[("pro_monthly", 1, T0, T0 + MONTH)],
                          billing_reason="subscription_create"))
        purchase = (await service.checkout.GetPurchase(pb.GetPurchaseRequest(purchase_id="pur_1"))).purchase
        assert purchase.state == pb.PURCHASE_STATE_FINALIZED
        entitlements = await service.entitlements()
        assert [p.billing_plan_code for p in entitlements.plans] == ["pro"]
        assert entitlements.funding
        assert (await service.product.CheckGate(pb.CheckGateRequest(account_id="acct_1", gate="api_access"))).allowed
        lease = await service.checkout.LeaseReconciler(pb.LeaseReconcilerRequest(holder="replica-1",
                                                                                 ttl=Duration(seconds=60)))
        assert lease.granted
        trace = await service.as_role(Role.SUPPORT).TracePurchase(pb.TracePurchaseRequest(purchase_id="pur_1"))
        assert len(trace.events) == 3
    finally:
        await stop_service(service)

    conn = await asyncpg.connect(roles.runtime_url)
    try:
        for refused in ("CREATE TABLE intruder (id int)", "DROP TABLE accounts",
                        "ALTER TABLE accounts ADD COLUMN x int", "TRUNCATE accounts",
                        "CREATE FUNCTION intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
                        "DELETE FROM schema_migrations",
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'forged', 'x')",
                        f"CREATE SCHEMA intruder AUTHORIZATION {roles.runtime_role}"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(refused)
        owned = await conn.fetchval("SELECT count(*) FROM pg_class WHERE relowner = (SELECT oid FROM pg_roles "
                                    "WHERE rolname = current_user)")
        assert owned == 0
    finally:
        await conn.close()


async def test_what_a_later_migration_creates_is_granted_to_the_runtime_role_without_granting_again(
    roles: Roles,
) -> None:
    await migrated_as_owner(roles)
    later = Migration(len(load_migrations()) + 1, "create_later_table",
                      "CREATE TABLE later_table (id bigserial PRIMARY KEY, note text NOT NULL)")
    owner = await asyncpg.connect(roles.owner_url)
    try:
        assert await migrate(owner, [*load_migrations(), later]) == [later.version]
    finally:
        await owner.close()
    conn = await asyncpg.connect(roles.runtime_url)
    try:
        assert await conn.fetchval("INSERT INTO later_table (note) VALUES ('reachable') RETURNING id") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DROP TABLE later_table")
    finally:
        await conn.close()


async def test_the_runtime_role_runs_the_event_retention_through_functions_only_it_and_the_owner_may_call(
    roles: Roles,
) -> None:
    await migrated_as_owner(roles)
    code, err = await migrate_command({"DATABASE_URL": roles.runtime_url}, "prune-events")
    assert code == 0, err
    conn = await asyncpg.connect(roles.runtime_url)
    try:
        assert await conn.fetchval("SELECT provider_events_add_months(now() + interval '8 months')") >= 5
        owners = await conn.fetch(
            "SELECT DISTINCT pg_get_userbyid(c.relowner) AS owner FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'provider_events'::regclass")
        assert [r["owner"] for r in owners] == [roles.owner_role]
        await conn.execute("INSERT INTO provider_events (provider_event_id, type, created, received_at, outcome, "
                           "payload) VALUES ('evt_ahead', 'invoice.created', now() + interval '7 months', now(), "
                           "'ignored', '{}')")
        public = await conn.fetchval("SELECT count(*) FROM pg_proc p, aclexplode(p.proacl) a "
                                     "WHERE starts_with(p.proname, 'provider_events_') AND a.grantee = 0")
        assert public == 0  # they run as their owner: nobody else is granted them
    finally:
        await conn.close()


async def test_a_retention_run_that_cannot_reach_the_database_fails_with_one_line_and_no_password() -> None:
    code, err = await migrate_command({"DATABASE_URL": f"postgresql://app:hunter2-secret@127.0.0.1:{free_port()}/db"},
                                      "prune-events")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("entitlement_service prune-events: ") and "hunter2-secret" not in err


async def readiness(metrics_addr: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"http://{metrics_addr}/readyz") as reply:
        return reply.status


async def health(grpc_addr: str) -> int:
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(reply.status)


async def test_a_service_that_does_not_migrate_waits_not_ready_until_the_migration_command_has_run(
    roles: Roles,
) -> None:
    shipped = load_migrations()
    owner = await asyncpg.connect(roles.owner_url)
    try:  # the database as the previous release left it
        await migrate(owner, shipped[:-1])
        await grant_runtime_role(owner, roles.runtime_role)
    finally:
        await owner.close()
    addresses = {"ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{free_port()}",
                 "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{free_port()}"}
    service = await ServiceProcess("entitlement_service", {
        "DATABASE_URL": roles.runtime_url, "SERVICE_TOKENS": SERVICE_TOKENS, "MIGRATE_ON_START": "false",
        **addresses}).start()
    try:
        behind = await service.wait_for_event("schema_behind")
        assert (behind["schema_version"], behind["expected_version"], behind["pending"]) == (
            shipped[-2].version, shipped[-1].version, [shipped[-1].version])
        assert await readiness(addresses["ENTITLEMENT_METRICS_ADDR"]) == 503
        assert await health(addresses["ENTITLEMENT_GRPC_ADDR"]) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert service.events("ready") == []

        await migrated_as_owner(roles)
        await service.wait_for_event("ready")
        assert await readiness(addresses["ENTITLEMENT_METRICS_ADDR"]) == 200
        async with grpc.aio.insecure_channel(addresses["ENTITLEMENT_GRPC_ADDR"]) as channel:
            stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
            catalog = await stub.ListCatalog(pb.ListCatalogRequest(), metadata=bearer(Role.PRODUCT), timeout=5)
        assert not catalog.prices
        assert len(service.events("schema_behind")) == 1, "the same state is logged once, however long it lasts"
        assert service.events("schema_current")[0]["version"] == shipped[-1].version
        assert await service.terminate() == 0
    finally:
        await service.kill()


async def test_a_database_without_schema_or_grants_keeps_the_service_waiting_rather_than_failing(
    roles: Roles,
) -> None:
    addresses = {"ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{free_port()}",
                 "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{free_port()}"}
    service = await ServiceProcess("entitlement_service", {
        "DATABASE_URL": roles.runtime_url, "SERVICE_TOKENS": SERVICE_TOKENS, "MIGRATE_ON_START": "false",
        **addresses}).start()
    try:
        behind = await service.wait_for_event("schema_behind")
        assert behind["schema_version"] == 0
        owner = await asyncpg.connect(roles.owner_url)
        try:  # migrated, not yet granted: the runtime role cannot read schema_migrations
            await migrate(owner)
        finally:
            await owner.close()
        await service.wait_for_event("schema_unreadable")
        await migrated_as_owner(roles)
        await service.wait_for_event("ready")
        assert await readiness(addresses["ENTITLEMENT_METRICS_ADDR"]) == 200
    finally:
        await service.kill()


async def test_an_unreachable_database_fails_the_command_with_one_line_and_no_password() -> None:
    code, err = await migrate_command({"DATABASE_URL": f"postgresql://owner:hunter2-secret@127.0.0.1:{free_port()}/db"})
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("entitlement_service migrate: cannot connect to DATABASE_URL (postgresql://owner:***@")
    assert "hunter2-secret" not in err


async def test_a_runtime_role_that_cannot_be_confined_is_refused_before_anything_is_applied(roles: Roles) -> None:
    refusals = (("no_such_role_here", "does not exist"), (roles.owner_role, "the role that runs the migrations"))
    for role, reason in refusals:
        code, err = await migrate_command({"DATABASE_URL": roles.owner_url, "DATABASE_RUNTIME_ROLE": role})
        assert code == 1
        assert err.count("\n") == 1 and "Traceback" not in err
        assert "DATABASE_RUNTIME_ROLE" in err and reason in err
    conn = await asyncpg.connect(roles.owner_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
    finally:
        await conn.close()


async def test_an_unknown_argument_prints_the_usage() -> None:
    code, err = await migrate_command({}, "migrat")
    assert code == 1 and err.strip() == "usage: python -m entitlement_service [migrate | prune-events]"
