"""One open checkout per account and non-stackable group (domain/open_purchases.py), against a
reference model: whatever order checkouts and their outcomes arrive in, a group never holds two
open purchases, a checkout of the same selection gets the open purchase back, and one of another
selection is refused naming it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from catalog_rules.model import CatalogConfig, Group
from entitlement_service.domain.model import Mode, PurchaseState
from entitlement_service.domain.open_purchases import (
    Decision,
    guarded,
    is_open,
    open_checkout,
    selection_of,
)
from entitlement_service.domain.records import PurchaseRecord

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CONFIG = CatalogConfig(groups={"core": Group("core", False), "addons": Group("addons", True)})
PRICE_IDS = {"pro_monthly": "price_pro", "starter_monthly": "price_starter"}


def purchase(purchase_id: str, items: tuple[tuple[str, int], ...], created: datetime, expires: datetime,
             state: PurchaseState = PurchaseState.PENDING) -> PurchaseRecord:
    return PurchaseRecord(purchase_id, "acct_1", state, Mode.SUBSCRIPTION, items, "core", f"cs_{purchase_id}", None,
                          None, "https://ok", "https://no", None, created, None, None, None, None, None, expires,
                          expires, f"https://pay/{purchase_id}")


def test_only_a_subscription_into_a_non_stackable_group_is_guarded() -> None:
    assert guarded(CONFIG, Mode.SUBSCRIPTION, "core")
    assert not guarded(CONFIG, Mode.SUBSCRIPTION, "addons")
    assert not guarded(CONFIG, Mode.PAYMENT, "core")
    assert not guarded(CONFIG, Mode.SUBSCRIPTION, None)
    assert not guarded(CONFIG, Mode.SUBSCRIPTION, "unknown")


def test_a_selection_is_its_price_ids_and_quantities_in_any_order() -> None:
    assert selection_of([("pro_monthly", 2), ("price_starter", 1)], PRICE_IDS) == selection_of(
        [("starter_monthly", 1), ("price_pro", 2)], PRICE_IDS)
    assert selection_of([("pro_monthly", 2)], PRICE_IDS) != selection_of([("pro_monthly", 1)], PRICE_IDS)


def test_an_open_purchase_is_pending_or_returned_with_its_session_not_expired() -> None:
    open_one = purchase("p1", (("pro_monthly", 1),), T0, T0 + timedelta(hours=1))
    assert is_open(open_one, T0) and is_open(replace(open_one, state=PurchaseState.RETURNED), T0)
    assert not is_open(open_one, T0 + timedelta(hours=1))
    for final in (PurchaseState.FINALIZED, PurchaseState.EXPIRED, PurchaseState.FAILED, PurchaseState.CONFLICT):
        assert not is_open(replace(open_one, state=final), T0)


def test_the_purchase_registered_again_is_never_in_its_own_way() -> None:
    own = purchase("p1", (("pro_monthly", 1),), T0, T0 + timedelta(hours=1))
    selection = selection_of(own.items, PRICE_IDS)
    assert open_checkout("p1", selection, [own], {"p1": selection}, T0).decision is Decision.NEW


# A step: a checkout (its selection), an outcome for one of the purchases made so far (paid and
# finalized, expired by the provider, canceled by its session expiring), or time passing.
SELECTIONS = st.sampled_from([(("pro_monthly", 1),), (("price_pro", 1),), (("starter_monthly", 1),),
                              (("pro_monthly", 2),)])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("checkout"), SELECTIONS),
    st.tuples(st.just("finalize"), st.integers(0, 20)),
    st.tuples(st.just("expire"), st.integers(0, 20)),
    st.tuples(st.just("wait"), st.integers(1, 90)),
), max_size=40)


def reference(steps: list[tuple[str, object]]) -> list[tuple[str, str]]:
    """The rule in plain terms: the group's one open purchase, if any (an open purchase is
    pending or returned and not past its expiry), decides each checkout."""
    answers: list[tuple[str, str]] = []
    made: list[dict[str, object]] = []
    now = T0
    for kind, arg in steps:
        if kind == "wait":
            now += timedelta(minutes=int(arg))  # type: ignore[call-overload]
        elif kind in ("finalize", "expire") and made:
            made[int(arg) % len(made)]["state"] = kind  # type: ignore[call-overload]
        elif kind == "checkout":
            wanted = tuple(sorted((PRICE_IDS.get(p, p), n) for p, n in arg))  # type: ignore[attr-defined]
            opened = [m for m in made if m["state"] == "open" and m["expires"] > now]  # type: ignore[operator]
            if not opened:
                made.append({"id": f"p{len(made)}", "selection": wanted, "state": "open",
                             "expires": now + timedelta(hours=1)})
                answers.append(("new", f"p{len(made) - 1}"))
            else:
                answers.append(("reuse" if opened[0]["selection"] == wanted else "refuse", str(opened[0]["id"])))
    return answers


@settings(max_examples=300, deadline=None)
@given(STEPS)
def test_checkouts_into_one_group_follow_the_reference_model(steps: list[tuple[str, object]]) -> None:
    stored: dict[str, PurchaseRecord] = {}
    answers: list[tuple[str, str]] = []
    now = T0
    for kind, arg in steps:
        if kind == "wait":
            now += timedelta(minutes=int(arg))  # type: ignore[call-overload]
        elif kind in ("finalize", "expire") and stored:
            chosen = sorted(stored, key=lambda k: int(k[1:]))[int(arg) % len(stored)]  # type: ignore[call-overload]
            state = PurchaseState.FINALIZED if kind == "finalize" else PurchaseState.EXPIRED
            stored[chosen] = replace(stored[chosen], state=state)
        elif kind == "checkout":
            new_id = f"p{len(stored)}"
            items: tuple[tuple[str, int], ...] = arg  # type: ignore[assignment]
            selections = {p.purchase_id: selection_of(p.items, PRICE_IDS) for p in stored.values()}
            decided = open_checkout(new_id, selection_of(items, PRICE_IDS), stored.values(), selections, now)
            if decided.decision is Decision.NEW:
                stored[new_id] = purchase(new_id, items, now, now + timedelta(hours=1))
                answers.append(("new", new_id))
            else:
                assert decided.open_purchase is not None
                answers.append((decided.decision.value, decided.open_purchase.purchase_id))
        assert sum(is_open(p, now) for p in stored.values()) <= 1
    assert answers == reference(steps)
