"""The preview's pure computation: the provider objects a purchase or change stands for, the
account derived with them, and what differs. Checked against reference models: the provider
simulator's own billing arithmetic for periods, and for a first purchase the grants, gates and
funding the catalog says the items carry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_rules.model import Cadence, ResolvedPrice
from entitlement_service.domain import preview as rules
from entitlement_service.domain.entitlements import bindings_at, decide_gates, effective_at
from entitlement_service.domain.funding import scaled
from entitlement_service.domain.model import Mode, Status
from entitlement_service.domain.price_book import PriceBook
from provider_sim.billing import add_interval
from tests.unit.builders import CONFIG, PACK, PRICES, PRO, PRO_BONUS, SEATS, STARTER, STORAGE, T0, item, snapshot

BOOK = PriceBook.constant(PRICES)
RECURRING = [STARTER, PRO, PRO_BONUS, SEATS, STORAGE]


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)).map(lambda d: d.replace(
    microsecond=0, tzinfo=UTC)), st.sampled_from(["day", "week", "month", "year"]), st.integers(1, 36))
def test_a_period_ends_where_the_providers_billing_ends_it(start: datetime, interval: str, count: int) -> None:
    expected = add_interval(int(start.timestamp()), interval, count)
    assert int(rules.period_end(start, interval, count).timestamp()) == expected


def test_recurring_items_are_a_new_active_subscription_with_its_first_invoice_paid() -> None:
    at = T0 + timedelta(days=40)
    h = rules.new_purchase([(PRO, 1), (STORAGE, 2), (PACK, 3)], "cus_1", at)
    assert h.subscription is not None and h.invoice is not None and h.checkout is None
    sub = h.subscription
    assert (sub.subscription_id, sub.status, sub.at, sub.start_date) == (rules.NEW_SUBSCRIPTION, Status.ACTIVE, at, at)
    assert [(i.price.price_id, i.quantity, i.current_period_start, i.current_period_end) for i in sub.items] == [
        ("price_pro", 1, at, datetime(2026, 3, 10, tzinfo=UTC)), ("price_storage", 2, at, datetime(2026, 3, 10,
                                                                                                    tzinfo=UTC))]
    assert h.invoice.paid and h.invoice.paid_at == at and h.invoice.subscription_id == rules.NEW_SUBSCRIPTION
    assert [(line.price_id, line.quantity, line.period_end, line.amount) for line in h.invoice.lines] == [
        ("price_pro", 1, datetime(2026, 3, 10, tzinfo=UTC), 2000), ("price_storage", 2, datetime(2026, 3, 10,
                                                                                                  tzinfo=UTC), 600),
        ("price_pack", 3, at, 4500)]


def test_one_time_items_alone_are_a_paid_checkout() -> None:
    h = rules.new_purchase([(PACK, 2)], "", T0)
    assert h.subscription is None and h.checkout is not None
    assert h.checkout.paid and h.checkout.mode is Mode.PAYMENT and h.checkout.at == T0
    assert rules.new_purchase([], "cus_1", T0) == rules.Hypothesis()


def test_a_new_price_takes_the_place_of_the_item_it_replaces_and_keeps_its_period() -> None:
    latest = snapshot(item("price_starter", period_start=T0, period_end=T0 + timedelta(days=31)))
    at = T0 + timedelta(days=5)
    h = rules.new_items(latest, [(PRO, 1), (STORAGE, 4)], BOOK, at)
    assert h.invoice is None and h.subscription is not None
    assert [(i.item_id, i.price.price_id, i.quantity, i.current_period_start, i.current_period_end)
            for i in h.subscription.items] == [
        ("si_price_starter", "price_pro", 1, T0, T0 + timedelta(days=31)),
        ("si_preview_1", "price_storage", 4, T0, T0 + timedelta(days=31))]
    assert h.subscription.at == at and h.subscription.event_id == rules.PREVIEW_EVENT


def test_a_new_billing_interval_restarts_the_period_and_is_paid_at_once() -> None:
    latest = snapshot(item("price_pro"))
    at = T0 + timedelta(days=5)
    h = rules.new_items(latest, [(PRO_BONUS, 1)], BOOK, at)
    assert h.subscription is not None and h.invoice is not None
    [changed] = h.subscription.items
    assert (changed.current_period_start, changed.current_period_end) == (at, datetime(2027, 1, 6, tzinfo=UTC))
    assert h.invoice.paid_at == at and h.invoice.subscription_id == "sub_1"


def test_cancellations_end_at_the_period_end_or_at_once() -> None:
    latest = snapshot(item("price_pro", period_end=T0 + timedelta(days=31)))
    at = T0 + timedelta(days=3)
    later = rules.cancel_at_period_end(latest, at).subscription
    assert later is not None and later.cancel_at_period_end and later.cancel_at == T0 + timedelta(days=31)
    now = rules.cancel_now(latest, at).subscription
    assert now is not None and now.status is Status.CANCELED and now.ended_at == at


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([[STARTER, STORAGE], [PRO, STORAGE], [PRO_BONUS], [SEATS], []]).flatmap(
    lambda group: st.lists(st.tuples(st.sampled_from([*group, PACK]), st.integers(1, 5)), min_size=1, max_size=4,
                           unique_by=lambda x: x[0].price_id)),
       st.integers(0, 400))
def test_a_first_purchase_previews_the_grants_gates_and_funding_its_items_carry(
        chosen: list[tuple[ResolvedPrice, int]], day: int) -> None:
    """Reference model: a fresh account buying items (recurring ones of one group and one interval,
    as one checkout takes them, one plan among them) holds, at the purchase instant, each item's
    grants scaled by its quantity; the gates of the highest-priority plan among them (one
    non-stackable group holds one subscription, so the items' own plans all hold); and is funded
    with every per_period grant of a recurring item and every one_time grant, once each."""
    at = T0 + timedelta(days=day)
    h = rules.new_purchase(chosen, "cus_1", at)
    previewed = rules.derive([], h, BOOK, CONFIG, (), "acct_1")
    recurring = [(r, q) for r, q in chosen if r.price.recurring]
    held = recurring or []
    expected_bindings = sorted((g.grant_program_code, r.price_id, scaled(g.amount, g.scale_by_quantity, q))
                               for r, q in held for g in r.grants)
    assert sorted((b.row.grant_program_code, b.row.price_id, b.row.total_amount)
                  for b in bindings_at(previewed.bindings, at)) == expected_bindings
    plans = [r for r, _ in held if r.billing_plan_code]
    top = max(plans, key=lambda r: CONFIG.plans[str(r.billing_plan_code)].priority, default=None)
    bundle = top.gate_bundle if top and top.gate_bundle else None
    decision = decide_gates(effective_at(previewed.assignments, at), CONFIG.gate_bundles)
    assert decision.gate_bundle == bundle
    funded = []
    for r, q in chosen:
        for g in r.grants:
            cadence = CONFIG.grant_programs[g.grant_program_code].cadence
            if cadence is Cadence.ONE_TIME or (cadence is Cadence.PER_PERIOD and r.price.recurring):
                funded.append((g.grant_program_code, scaled(g.amount, g.scale_by_quantity, q)))
    assert sorted((f.grant_program_code, f.amount) for f in previewed.funding) == sorted(funded)
    assert all(f.issued_at == at for f in previewed.funding)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(RECURRING), st.sampled_from(RECURRING), st.integers(1, 30), st.integers(1, 4))
def test_differences_turn_the_standing_before_into_the_standing_after(
        old: ResolvedPrice, new: ResolvedPrice, day: int, quantity: int) -> None:
    history = [snapshot(item(old.price_id, period_end=T0 + timedelta(days=31)))]
    at = T0 + timedelta(days=day)
    before = rules.derive(history, rules.Hypothesis(), BOOK, CONFIG, (), "acct_1")
    after = rules.derive(history, rules.new_items(history[0], [(new, quantity)], BOOK, at), BOOK, CONFIG, (),
                         "acct_1")

    def standing(p: rules.Previewed) -> rules.Standing:
        plans = tuple(effective_at(p.assignments, at))
        decision = decide_gates(plans, CONFIG.gate_bundles)
        return rules.Standing(plans, tuple(bindings_at(p.bindings, at)), p.funding, decision.gate_bundle,
                              decision.gates)

    b, a = standing(before), standing(after)
    changes = rules.differences(b, a)
    assert (b.gates - set(changes.gates_lost)) | set(changes.gates_gained) == a.gates
    kept = [p for p in b.plans if p not in changes.plans_removed]
    assert {(p.row.price_id, p.row.billing_plan_code) for p in [*kept, *changes.plans_added]} == {
        (p.row.price_id, p.row.billing_plan_code) for p in a.plans}
    assert len(b.bindings) - len(changes.bindings_removed) + len(changes.bindings_added) == len(a.bindings)


def test_an_empty_hypothesis_derives_the_account_as_it_is() -> None:
    history = [snapshot(item("price_pro")), snapshot(item("price_pro", 3), at=T0 + timedelta(days=2))]
    previewed = rules.derive(history, rules.Hypothesis(), BOOK, CONFIG, (), "acct_1")
    state = rules.current_state(history, BOOK, CONFIG)
    assert previewed.assignments == state.assignments and previewed.bindings == state.bindings
    assert [s.subscription_id for s in previewed.subscriptions] == ["sub_1"] and previewed.funding == ()
