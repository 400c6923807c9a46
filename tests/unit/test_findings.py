"""Mismatches a derivation or the reconciler finds: one fingerprint per difference, opened while
found, closed by the derivation only for the kinds it opens."""

from __future__ import annotations

import pytest

from entitlement_service.domain.account import rebuild
from entitlement_service.domain.findings import (
    derivation_findings,
    derivation_resolutions,
    provider_difference,
    stuck_purchase,
)
from entitlement_service.domain.reconcile import Difference
from entitlement_service.domain.records import Finding, Resolution
from tests.unit.builders import CONFIG, PRICES, checkout_session, days, item, snapshot


def test_a_subscription_that_lost_its_group_is_one_group_conflict_naming_winner_and_windows() -> None:
    state = rebuild({"sub_0": [snapshot(sub="sub_0")],
                     "sub_1": [snapshot(item("price_starter"), sub="sub_1", at=days(1), start_date=days(1))]},
                    PRICES, CONFIG)
    assert derivation_findings("acct_1", state) == [Finding(
        "group_conflict", "acct_1", "sub_1", "group_conflict:acct_1:core:sub_1",
        {"subscription_group": "core", "lost_to": ["sub_0"], "windows": [[days(1).isoformat(), None]]})]


def test_a_subscription_whose_items_span_groups_is_a_group_mismatch() -> None:
    state = rebuild({"sub_1": [snapshot(item("price_pro"), item("price_seats"))]}, PRICES, CONFIG)
    [found] = derivation_findings("acct_1", state)
    assert (found.kind, found.fingerprint, found.subscription_id) == ("group_mismatch", "group_mismatch:sub_1",
                                                                      "sub_1")
    assert "core" in found.diff["reason"] and "addons" in found.diff["reason"]


def test_an_account_without_conflicts_finds_nothing() -> None:
    assert derivation_findings("acct_1", rebuild({"sub_1": [snapshot()]}, PRICES, CONFIG)) == []


STILL = Finding("group_conflict", "acct_1", "sub_1", "group_conflict:acct_1:core:sub_1", {})


@pytest.mark.parametrize(("open_mismatches", "closed"), [
    ({"group_conflict:acct_1:core:sub_1": "group_conflict"}, []),
    ({"group_conflict:acct_1:core:sub_2": "group_conflict"},
     [Resolution("group_conflict:acct_1:core:sub_2", "no longer conflicting")]),
    ({"group_mismatch:sub_3": "group_mismatch"}, [Resolution("group_mismatch:sub_3", "items in one group again")]),
    ({"status_differs:recon_sub_1_ab": "status_differs", "stuck_purchase:cs_1": "stuck_purchase"}, []),
], ids=["still found: stays open", "no longer found: closed", "a mismatch repaired by the provider",
        "kinds the derivation does not open are left alone"])
def test_a_derivation_closes_only_what_it_opens_and_no_longer_finds(
    open_mismatches: dict[str, str], closed: list[Resolution]
) -> None:
    assert derivation_resolutions(open_mismatches, [STILL]) == closed


def test_the_same_drift_read_twice_is_the_same_finding() -> None:
    drift = Difference("status_differs", {"provider": "canceled", "internal": "active"})
    first = provider_difference("acct_1", "sub_1", drift, "recon_sub_1_abc")
    assert first == provider_difference("acct_1", "sub_1", drift, "recon_sub_1_abc")
    assert first.fingerprint == "status_differs:recon_sub_1_abc"
    assert provider_difference("acct_1", "sub_1", drift, "recon_sub_1_def").fingerprint != first.fingerprint


def test_a_stuck_purchase_is_named_by_its_checkout_session() -> None:
    session = checkout_session(status="open", payment_status="unpaid")
    found = stuck_purchase(session)
    assert (found.kind, found.fingerprint, found.subscription_id) == ("stuck_purchase", "stuck_purchase:cs_1", None)
    assert found.diff == {"purchase_id": "pur_1", "checkout_session": "open", "payment_status": "unpaid"}
