"""The client's pure parts, each against a reference model: the span in force at a time, the
staleness rule, and the bounded least-recently-used set of accounts."""

from __future__ import annotations

import math

from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from selfserve.client.cache import Accounts, Entry, Liveness, Span, fresh, spans_of
from selfserve.client.options import RetryPolicy
from selfserve.entitlement.v1 import entitlement_pb2 as pb


def entry(account_id: str = "acct_1", revision: int = 1, spans: tuple[Span, ...] = (), confirmed_at: float = 0.0,
          as_of: int = 0) -> Entry:
    return Entry(pb.Entitlements(account_id=account_id, revision=revision, as_of=Timestamp(seconds=as_of)), spans,
                 confirmed_at)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[Span, ...]:
    cuts = sorted(set(draw(st.lists(st.integers(1, 1000), max_size=6))))
    edges = [0, *cuts]
    ends: list[float] = [*cuts, math.inf if draw(st.booleans()) else 1001.0]
    return tuple(Span(float(start), end, f"b{i}", frozenset({f"g{i}"})) for i, (start, end) in
                 enumerate(zip(edges, ends, strict=True)))


def reference_span(spans: tuple[Span, ...], wall: float) -> Span | None:
    if wall < spans[0].start:
        return spans[0]
    return next((s for s in spans if s.start <= wall < s.end), None)


@settings(max_examples=300)
@given(schedules(), st.lists(st.floats(-10, 1100, allow_nan=False), min_size=1, max_size=20))
def test_the_span_in_force_is_the_one_containing_the_time(spans: tuple[Span, ...], times: list[float]) -> None:
    held = entry(spans=spans)
    for wall in sorted(times):  # time only moves forward
        assert held.span_at(wall) == reference_span(spans, wall)


def test_an_answer_flips_at_the_boundary_with_nothing_else() -> None:
    held = entry(spans=(Span(0, 100, "pro", frozenset({"api_access"})), Span(100, math.inf, "", frozenset())))
    assert "api_access" in held.span_at(99.999).gates  # type: ignore[union-attr]
    assert "api_access" not in held.span_at(100).gates  # type: ignore[union-attr]


@settings(max_examples=500)
@given(st.floats(0, 100), st.floats(0, 100), st.floats(0, 100), st.booleans(), st.floats(0.1, 10))
def test_an_answer_is_fresh_only_within_max_staleness_of_the_last_sign_of_life(
        confirmed_at: float, alive_at: float, mono: float, covered: bool, max_staleness_s: float) -> None:
    live = Liveness(frozenset({"acct_1"}) if covered else frozenset(), alive_at)
    last = max(confirmed_at, alive_at) if covered else confirmed_at
    assert fresh(entry(confirmed_at=confirmed_at), "acct_1", live, mono, max_staleness_s) == (
        mono - last <= max_staleness_s)


operations = st.lists(st.tuples(st.sampled_from(["want", "touch", "pin", "unpin"]), st.integers(0, 9)), max_size=60)


@settings(max_examples=300)
@given(st.integers(1, 5), operations)
def test_the_accounts_held_are_the_most_recently_used_within_the_bound(bound: int,
                                                                       steps: list[tuple[str, int]]) -> None:
    accounts = Accounts(bound)
    order: list[str] = []  # the reference: least recently used first
    pinned: dict[str, int] = {}
    for op, n in steps:
        account_id = f"acct_{n}"
        if op == "want":
            evicted = accounts.want(account_id)
            if account_id in order:
                order.remove(account_id)
            order.append(account_id)
            expected_evicted = []
            for candidate in list(order):
                if len(order) <= bound:
                    break
                if candidate != account_id and candidate not in pinned:
                    order.remove(candidate)
                    expected_evicted.append(candidate)
            assert evicted == expected_evicted
        elif op == "touch" and account_id in order:
            accounts.touch(account_id)
            order.remove(account_id)
            order.append(account_id)
        elif op == "pin":
            pinned[account_id] = pinned.get(account_id, 0) + 1
            accounts.pinned[account_id] = pinned[account_id]
        elif op == "unpin" and account_id in pinned:
            pinned[account_id] -= 1
            if not pinned[account_id]:
                del pinned[account_id]
            if account_id not in pinned:
                del accounts.pinned[account_id]
        assert list(accounts) == order
        assert len(accounts) <= max(bound, len(set(pinned) & set(order)) + 1) or op != "want"


def test_an_older_message_never_replaces_a_newer_one() -> None:
    accounts = Accounts(10)
    accounts.want("acct_1")
    assert accounts.put(entry(revision=2, as_of=10))
    assert not accounts.put(entry(revision=1, as_of=20))
    assert not accounts.put(entry(revision=2, as_of=5))
    assert accounts.put(entry(revision=2, as_of=11))  # the same revision computed later: a boundary passed
    assert not accounts.put(entry("acct_2"))  # not watched
    assert accounts.get("acct_1").as_of == 11  # type: ignore[union-attr]


def test_a_resumed_stream_is_told_only_the_revisions_whose_schedule_still_runs() -> None:
    accounts = Accounts(10)
    for n in range(3):
        accounts.want(f"acct_{n}")
    accounts.put(entry("acct_0", 4, (Span(0, math.inf, "", frozenset()),)))
    accounts.put(entry("acct_1", 7, (Span(0, 50, "", frozenset()),)))
    assert accounts.known_revisions(60) == {"acct_0": 4}


def test_spans_read_from_the_wire_keep_an_open_end_open() -> None:
    spans = spans_of([pb.GateSpan(start=Timestamp(seconds=5), end=Timestamp(seconds=9), gate_bundle="pro",
                                  gates=["export"]), pb.GateSpan(start=Timestamp(seconds=9))])
    assert spans == (Span(5, 9, "pro", frozenset({"export"})), Span(9, math.inf, "", frozenset()))


@given(st.integers(1, 20))
def test_backoff_stays_within_its_growing_ceiling(failures: int) -> None:
    policy = RetryPolicy(initial_backoff_s=0.1, max_backoff_s=3.0, multiplier=2.0)
    for _ in range(20):
        assert 0 <= policy.backoff_s(failures) <= min(3.0, 0.1 * 2 ** (failures - 1))
