"""The batching benchmark's fit (bench/batching.py) finds a process's cost per event and per call
from CPU per event measured at several batch sizes."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bench.batching import Level, fit


def _level(events_per_call: float, us_per_event: float) -> Level:
    return Level(connections=0, events_per_s=0.0, events_per_call=events_per_call,
                 us_per_event={"entitlement": us_per_event})


@given(per_event=st.floats(0, 5_000), per_call=st.floats(0, 10_000),
       sizes=st.lists(st.floats(1, 24), min_size=2, max_size=6, unique=True))
def test_exact_costs_are_recovered(per_event: float, per_call: float, sizes: list[float]) -> None:
    assume(max(sizes) - min(sizes) >= 0.5)  # sizes closer tell the two costs apart only to rounding
    levels = [_level(size, per_event + per_call / size) for size in sizes]
    found_event, found_call = fit(levels, "entitlement")
    assert found_event == pytest.approx(per_event, abs=1e-6 * (1 + per_call))
    assert found_call == pytest.approx(per_call, rel=1e-6, abs=1e-6)


def test_one_batch_size_puts_everything_per_event() -> None:
    assert fit([_level(4, 900), _level(4, 1_100)], "entitlement") == (1_000, 0.0)


def test_noise_is_averaged_over_the_levels() -> None:
    levels = [_level(1.5, 1_700), _level(5, 820), _level(15, 450), _level(1.5, 1_780), _level(5, 780),
              _level(15, 470)]
    per_event, per_call = fit(levels, "entitlement")
    assert 300 < per_event < 360
    assert 2_050 < per_call < 2_200
