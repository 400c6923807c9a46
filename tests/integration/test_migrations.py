import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from entitlement_service.db import events
from entitlement_service.db.migrate import Migration, MigrationError, load_migrations, migrate
from entitlement_service.domain.records import RecordedEvent
from entitlement_service.grpc.convert_in import provider_event
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import catalog_service
from tests.support.provider import MONTH, invoice_event, subscription_event, ts

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


async def _apply(conn: asyncpg.Connection, migrations: list[Migration], *statements: str) -> None:
    await migrate(conn, migrations)
    for statement in statements:
        await conn.execute(statement, T0)


async def test_keys_led_by_the_account_carry_the_rows_stored_before_them(fresh_database_url: str) -> None:
    """Rows stored before the keys led with the account keep their accounts: an item its
    subscription's, a transition its purchase's; an audit entry or a mismatch about no account
    is stored under ''. The identities held by one account stay unique across accounts."""
    migrations = load_migrations()
    [keyed] = [m for m in migrations if m.name == "lead_keys_with_account"]
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await _apply(
            conn, [m for m in migrations if m.version < keyed.version],
            "INSERT INTO accounts (account_id, created_at) VALUES ('acct_1', $1), ('acct_2', $1)",
            """INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, status,
                   provider_updated_at) VALUES ('sub_1', 'acct_1', 'cus_1', 'active', $1)""",
            """INSERT INTO subscription_items (subscription_id, price_id, item_id, product_id, quantity, effective)
               VALUES ('sub_1', 'price_1', 'si_1', 'prod_1', 1, tstzrange($1, NULL))""",
            """INSERT INTO purchases (purchase_id, account_id, state, mode, items, checkout_session_id, success_url,
                   cancel_url, expires_at, timeout_at)
               VALUES ('pur_1', 'acct_2', 'pending', 'subscription', '[]', 'cs_1', 'https://s', 'https://c', $1, $1)""",
            "INSERT INTO purchase_transitions (purchase_id, to_state, at) VALUES ('pur_1', 'pending', $1)",
            """INSERT INTO audit_log (account_id, cause, cause_id, entity, entity_id, action, at)
               VALUES (NULL, 'provider_event', 'evt_1', 'provider_event', 'evt_1', 'replayed', $1),
                      ('acct_1', 'provider_event', 'evt_2', 'subscription', 'sub_1', 'upsert', $1)""",
            """INSERT INTO mismatches (kind, account_id, fingerprint, diff, opened_at)
               VALUES ('stuck_purchase', NULL, 'stuck_purchase:cs_1', '{}', $1)""",
            """INSERT INTO issued_grants (issue_key, account_id, grant_program_code, cadence, unit, amount, source,
                   price_id, invoice_id, issued_at, provider_event_id)
               VALUES ('in_1:price_1:credits', 'acct_1', 'credits', 'one_time', 'credit', 5, 'price', 'price_1',
                   'in_1', $1, 'evt_3')""",
        )
        assert await migrate(conn) == [m.version for m in migrations if m.version >= keyed.version]
        assert await conn.fetchval("SELECT account_id FROM subscription_items") == "acct_1"
        assert await conn.fetchval("SELECT account_id FROM purchase_transitions") == "acct_2"
        assert [r["account_id"] for r in await conn.fetch("SELECT account_id FROM audit_log ORDER BY id")] == [
            "", "acct_1"]
        assert await conn.fetchval("SELECT account_id FROM mismatches") == ""
        for held_once in (
            """INSERT INTO subscriptions (subscription_id, account_id, provider_customer_id, status,
                   provider_updated_at) VALUES ('sub_1', 'acct_2', 'cus_1', 'active', now())""",
            """INSERT INTO purchases (purchase_id, account_id, state, mode, items, checkout_session_id, success_url,
                   cancel_url, expires_at, timeout_at)
               VALUES ('pur_1', 'acct_1', 'pending', 'subscription', '[]', 'cs_2', 'https://s', 'https://c', now(),
                   now())""",
            """INSERT INTO issued_grants (issue_key, account_id, grant_program_code, cadence, unit, amount, source,
                   price_id, invoice_id, issued_at, provider_event_id)
               VALUES ('in_1:price_1:credits', 'acct_2', 'credits', 'one_time', 'credit', 5, 'price', 'price_1',
                   'in_1', now(), 'evt_4')""",
        ):
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():
                    await conn.execute(held_once)
    finally:
        await conn.close()


async def test_history_recorded_before_its_table_is_copied_and_summarized_by_the_next_derivation(
        fresh_database_url: str) -> None:
    """Events applied before account_history existed join it unsummarized; the account's next
    derivation reads its whole history once, summarizes them, and holds what the same events
    applied today hold."""
    def life(account: str) -> list[pb.ProviderEvent]:
        sub, cus = f"sub_{account}", f"cus_{account}"
        return [
            subscription_event(f"evt_{account}_1", sub, T0, items=[("team_seats_monthly", 2)], account_id=account,
                               customer_id=cus, event_type="customer.subscription.created"),
            invoice_event(f"evt_{account}_2", f"in_{account}", sub, T0, customer_id=cus,
                          lines=[("team_seats_monthly", 2, T0, T0 + MONTH)]),
            subscription_event(f"evt_{account}_3", sub, T0 + MONTH / 2, status="canceled", ended_at=T0 + MONTH / 2,
                               items=[("team_seats_monthly", 2)], account_id=account, customer_id=cus, start=T0,
                               event_type="customer.subscription.deleted"),
        ]

    migrations = load_migrations()
    [history] = [m for m in migrations if m.name == "keep_account_history"]
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await migrate(conn, [m for m in migrations if m.version < history.version])
        await conn.execute("INSERT INTO accounts (account_id, provider_customer_id) "
                           "VALUES ('acct_old', 'cus_acct_old')")
        recorded = [RecordedEvent.of(provider_event(e), "acct_old") for e in life("acct_old")]
        await conn.execute(f"INSERT INTO provider_events ({events.RECORDED.select()}) "
                           f"SELECT * FROM {events.RECORDED.recordset(1)}", *events.RECORDED.parameters(recorded))
        await migrate(conn)
        copied = await conn.fetch("SELECT provider_event_id, invoice, provider_at, summarized FROM account_history "
                                  "ORDER BY provider_event_id")
        assert [tuple(r.values()) for r in copied] == [
            ("evt_acct_old_1", False, T0, False), ("evt_acct_old_2", True, T0, False),
            ("evt_acct_old_3", False, T0 + MONTH / 2, False)]
    finally:
        await conn.close()
    async with catalog_service(fresh_database_url) as client:
        await client.apply(*life("acct_new"))
        later = subscription_event("evt_acct_old_4", "sub_acct_old", T0 + MONTH, status="canceled",
                                   ended_at=T0 + MONTH / 2, items=[("team_seats_monthly", 2)], account_id="acct_old",
                                   customer_id="cus_acct_old", start=T0)
        await client.apply(later, subscription_event(
            "evt_acct_new_4", "sub_acct_new", T0 + MONTH, status="canceled", ended_at=T0 + MONTH / 2,
            items=[("team_seats_monthly", 2)], account_id="acct_new", customer_id="cus_acct_new", start=T0))
        for at in (T0 + MONTH / 4, T0 + MONTH):
            old, new = [await client.entitlements(a, ts(at)) for a in ("acct_old", "acct_new")]
            for entitlements in (old, new):  # how many changes each took to get there differs
                entitlements.ClearField("revision")
            assert str(old).replace("acct_old", "acct") == str(new).replace("acct_new", "acct")
    conn = await asyncpg.connect(fresh_database_url)
    try:
        summarized = await conn.fetch("SELECT provider_event_id, ended_at, reaches FROM account_history "
                                      "WHERE account_id = 'acct_old' AND summarized ORDER BY 1")
        assert [tuple(r.values()) for r in summarized] == [
            ("evt_acct_old_1", None, None), ("evt_acct_old_2", None, T0 + MONTH),
            ("evt_acct_old_3", T0 + MONTH / 2, None), ("evt_acct_old_4", T0 + MONTH / 2, None)]
    finally:
        await conn.close()
