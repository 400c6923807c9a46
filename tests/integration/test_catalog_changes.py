"""Catalog changes are not retroactive and apply to every account alike: what was issued stays
issued, a period already paid stays funded as it was, and a change takes effect from the moment
it is applied (or its `effective_at`) for every account at once, not at each account's next
event."""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg

from entitlement_service.service.catalog import rederive_queued
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from tests.integration.conftest import Client
from tests.support.provider import MONTH, T0, invoice_event, subscription_event, ts

DAY = timedelta(days=1)
CHANGE = T0 + 3 * MONTH - DAY  # after three paid months


def starter(metadata: dict[str, str], updated: datetime) -> pb.ProductSnapshot:
    return pb.ProductSnapshot(product_id="starter", name="Starter", active=True, provider_updated_at=ts(updated),
                              metadata={"subscription_group": "core", "billing_plan_code": "starter",
                                        "gating.bundle": "starter", **metadata})


async def change_starter(service: Client, metadata: dict[str, str], *, dry_run: bool = False
                         ) -> pb.UpsertCatalogResponse:
    return await service.operator.UpsertCatalog(pb.UpsertCatalogRequest(
        products=[starter(metadata, T0 + 12 * MONTH)], effective_at=ts(CHANGE), dry_run=dry_run))


async def months_paid(service: Client, account: str, months: int) -> None:
    sub, customer = f"sub_{account}", f"cus_{account}"
    await service.apply(subscription_event(f"evt_{account}", sub, T0, items=[("starter_monthly", 1)],
                                           account_id=account, customer_id=customer, period_end=T0 + MONTH))
    for n in range(months):
        start = T0 + n * MONTH
        await service.apply(invoice_event(f"evt_{account}_inv{n}", f"in_{account}_{n}", sub, start,
                                          customer_id=customer, lines=[("starter_monthly", 1, start, start + MONTH)]))


async def plan_at(service: Client, account: str, at: datetime) -> list[str]:
    return [p.billing_plan_code for p in (await service.entitlements(account, ts(at))).plans]


async def test_a_program_added_to_a_plan_funds_only_periods_paid_after_the_change(service: Client) -> None:
    await months_paid(service, "acct_1", 3)
    assert not (await service.entitlements("acct_1")).funding  # Starter grants nothing

    changed = await change_starter(service, {"grants": '[{"grant_program_code": "ai_credits", "amount": 100}]'})
    assert changed.accounts_affected == 1
    later = T0 + 3 * MONTH
    await service.apply(invoice_event("evt_acct_1_inv3", "in_acct_1_3", "sub_acct_1", later,
                                      customer_id="cus_acct_1", lines=[("starter_monthly", 1, later, later + MONTH)]))
    funding = (await service.entitlements("acct_1")).funding
    assert [(f.grant_program_code, f.amount, f.invoice_id) for f in funding] == [("ai_credits", 100, "in_acct_1_3")]


async def test_a_change_takes_effect_from_the_whole_second_it_falls_in_as_provider_times_are_counted(
    service: Client,
) -> None:
    """Provider times are whole seconds: an invoice paid in the second a change was made (0.4 s
    into it) is paid under the change, not under what it replaced."""
    await months_paid(service, "acct_1", 3)
    later = T0 + 3 * MONTH
    await service.operator.UpsertCatalog(pb.UpsertCatalogRequest(
        products=[starter({"grants": '[{"grant_program_code": "ai_credits", "amount": 100}]'}, T0 + 12 * MONTH)],
        effective_at=ts(later + timedelta(milliseconds=400))))
    await service.apply(invoice_event("evt_acct_1_inv3", "in_acct_1_3", "sub_acct_1", later,
                                      customer_id="cus_acct_1", lines=[("starter_monthly", 1, later, later + MONTH)]))
    funding = (await service.entitlements("acct_1")).funding
    assert [(f.grant_program_code, f.amount, f.invoice_id) for f in funding] == [("ai_credits", 100, "in_acct_1_3")]


async def test_a_price_moved_to_another_plan_moves_every_account_at_once_and_keeps_their_past(
    service: Client,
) -> None:
    for account in ("acct_1", "acct_2"):
        await months_paid(service, account, 1)

    preview = await change_starter(service, {"billing_plan_code": "pro"}, dry_run=True)
    assert (preview.accounts_affected, preview.dry_run) == (2, True)
    assert await plan_at(service, "acct_1", CHANGE + DAY) == ["starter"]  # a dry run keeps nothing

    applied = await change_starter(service, {"billing_plan_code": "pro"})
    assert (applied.accounts_affected, applied.dry_run) == (2, False)
    for account in ("acct_1", "acct_2"):  # neither received an event
        assert await plan_at(service, account, CHANGE - DAY) == ["starter"]
        assert await plan_at(service, account, CHANGE + DAY) == ["pro"]
    await service.apply(subscription_event("evt_acct_1_later", "sub_acct_1", T0 + 4 * MONTH,
                                           items=[("starter_monthly", 1)], account_id="acct_1",
                                           customer_id="cus_acct_1", start=T0, period_end=T0 + 5 * MONTH))
    one, two = [(await service.entitlements(a, ts(T0 + DAY))).plans for a in ("acct_1", "acct_2")]
    assert [(p.billing_plan_code, p.effective_until) for p in one] == [
        (p.billing_plan_code, p.effective_until) for p in two]


async def test_a_change_that_changes_no_resolution_touches_no_account(service: Client) -> None:
    await months_paid(service, "acct_1", 1)
    same = await change_starter(service, {})
    assert same.accounts_affected == 0


async def test_accounts_a_change_left_queued_are_derived_again_by_any_replica(service: Client, database_url: str
                                                                              ) -> None:
    await months_paid(service, "acct_1", 1)
    conn = await asyncpg.connect(database_url)
    try:  # as a replica that died after committing its change leaves it
        await conn.execute("INSERT INTO catalog_rederive (account_id, cause_id) VALUES ('acct_1', 'catalog@then')")
        assert await rederive_queued(service.running.runtime.deps) == 1
        assert await conn.fetchval("SELECT count(*) FROM catalog_rederive") == 0
    finally:
        await conn.close()
    assert await rederive_queued(service.running.runtime.deps) == 0
