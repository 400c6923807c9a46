import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from entitlement_service.db.migrate import Migration, MigrationError, load_migrations, migrate

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_migrations_apply_to_an_empty_database_and_a_second_run_changes_nothing(
    fresh_database_url: str,
) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        assert await migrate(conn) == [m.version for m in load_migrations()]
        assert await migrate(conn) == []
        tables = {r["tablename"] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")}
        assert {"provider_events", "subscriptions", "subscription_items", "plan_assignments"} <= tables
    finally:
        await conn.close()


async def test_replicas_migrating_at_once_apply_each_migration_exactly_once(fresh_database_url: str) -> None:
    conns = [await asyncpg.connect(fresh_database_url) for _ in range(4)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        assert sorted(v for versions in applied for v in versions) == [m.version for m in load_migrations()]
        assert await conns[0].fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
    finally:
        await asyncio.gather(*(c.close() for c in conns))


async def test_a_migration_changed_after_it_was_applied_is_refused(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        shipped = Migration(1, "create_thing", "CREATE TABLE thing (id int)")
        await migrate(conn, [shipped])
        with pytest.raises(MigrationError, match="0001_create_thing changed"):
            await migrate(conn, [Migration(1, "create_thing", "CREATE TABLE thing (id bigint)")])
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_applied(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        broken = Migration(1, "create_broken", "CREATE TABLE half (id int); SELECT no_such_function();")
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, [broken])
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == 0
    finally:
        await conn.close()


EVENT_COLUMNS = ("provider_event_id, type, created, received_at, api_version, object_id, subscription_id, "
                 "checkout_session_id, account_id, provider_customer_id, outcome, reason, deliveries, payload, "
                 "snapshot, recorded_at")


async def test_events_recorded_before_the_table_was_partitioned_survive_it_each_in_its_partition(
    fresh_database_url: str,
) -> None:
    shipped = load_migrations()
    partitioning = next(m for m in shipped if m.name == "partition_provider_events")
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("SET TimeZone = 'UTC'")
        await migrate(conn, shipped[:partitioning.version - 1])
        now = await conn.fetchval("SELECT now()")
        this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        times = {"evt_years_ago": now - timedelta(days=1000), "evt_last_month": this_month - timedelta(hours=1),
                 "evt_now": now, "evt_this_month": this_month, "evt_years_ahead": now + timedelta(days=800)}
        for n, (event_id, created) in enumerate(times.items()):
            await conn.execute(
                f"""INSERT INTO provider_events ({EVENT_COLUMNS}) VALUES ($1, 'customer.subscription.updated',
                    $2::timestamptz, $2::timestamptz + interval '1 minute', '2026-08-27', 'sub_1', 'sub_1', NULL,
                    'acct_1', 'cus_1', $3, $4, $5, $6, $7, $2)""", event_id, created,
                "rejected" if n % 2 else "applied", "unknown_price: p" if n % 2 else "", n + 1,
                f'{{"id": "{event_id}"}}'.encode(), bytes([n]) * 40)
        before = await conn.fetch(f"SELECT {EVENT_COLUMNS} FROM provider_events ORDER BY provider_event_id")

        assert await migrate(conn, shipped[:partitioning.version]) == [partitioning.version]
        after = await conn.fetch(f"SELECT {EVENT_COLUMNS}, tableoid::regclass::text AS partition "
                                 "FROM provider_events ORDER BY provider_event_id")
        assert [tuple(r.values())[:-1] for r in after] == [tuple(r.values()) for r in before]
        assert {r["provider_event_id"]: r["partition"] for r in after} == {
            "evt_years_ago": "provider_events_archive", "evt_last_month": "provider_events_archive",
            "evt_now": f"provider_events_{now:%Y_%m}", "evt_this_month": f"provider_events_{now:%Y_%m}",
            "evt_years_ahead": "provider_events_default"}
        assert len(await conn.fetch("SELECT * FROM provider_event_months()")) == 3  # this month, two ahead
        with pytest.raises(asyncpg.UniqueViolationError):  # still recorded once
            await conn.execute(f"INSERT INTO provider_events ({EVENT_COLUMNS}) "
                               f"SELECT {EVENT_COLUMNS} FROM provider_events WHERE provider_event_id = 'evt_years_ago'")
    finally:
        await conn.close()


async def _subscription(conn: asyncpg.Connection, subscription_id: str, account_id: str = "acct_1") -> None:
    await conn.execute("INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING", account_id)
    await conn.execute(
        """INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, status, provider_updated_at)
           VALUES ($1, $2, 'cus_1', 'active', $3)""",
        subscription_id, account_id, T0,
    )


async def _assign(conn: asyncpg.Connection, subscription_id: str, *, stackable: bool, until: datetime | None = None,
                  start: datetime = T0, conflict: bool = False, account_id: str = "acct_1") -> None:
    await conn.execute(
        """INSERT INTO plan_assignments (account_id, subscription_group, stackable, subscription_id, price_id,
               billing_plan_code, priority, started_at, effective, conflict, conflict_with_subscription_id)
           VALUES ($1, 'core', $2, $3, 'price_1', 'pro', 20, $4, tstzrange($4, $5, '[)'), $6, $7)""",
        account_id, stackable, subscription_id, start, until, conflict, "sub_a" if conflict else None,
    )


async def test_the_database_refuses_two_overlapping_subscriptions_in_a_non_stackable_group(
    conn: asyncpg.Connection,
) -> None:
    await _subscription(conn, "sub_a")
    await _subscription(conn, "sub_b")
    await _assign(conn, "sub_a", stackable=False)
    with pytest.raises(asyncpg.ExclusionViolationError):
        async with conn.transaction():
            await _assign(conn, "sub_b", stackable=False, start=datetime(2026, 3, 1, tzinfo=UTC))


async def test_back_to_back_windows_a_conflict_loser_and_stackable_groups_are_allowed(
    conn: asyncpg.Connection,
) -> None:
    for sub in ("sub_a", "sub_b", "sub_c", "sub_d", "sub_e"):
        await _subscription(conn, sub)
    switch = datetime(2026, 2, 1, tzinfo=UTC)
    await _assign(conn, "sub_a", stackable=False, until=switch)
    await _assign(conn, "sub_b", stackable=False, start=switch)  # [a, switch) then [switch, ...)
    await _assign(conn, "sub_c", stackable=False, conflict=True)
    await _assign(conn, "sub_d", stackable=True)
    await _assign(conn, "sub_e", stackable=True)
    assert await conn.fetchval("SELECT count(*) FROM plan_assignments") == 5


async def test_a_provider_event_id_is_recorded_once(conn: asyncpg.Connection) -> None:
    insert = """INSERT INTO provider_events (provider_event_id, type, created, received_at, outcome, payload)
                VALUES ('evt_1', 'customer.subscription.updated', $1, now(), 'applied', '\\x7b7d')"""
    await conn.execute(insert, T0)
    with pytest.raises(asyncpg.UniqueViolationError):
        async with conn.transaction():
            await conn.execute(insert, T0)
