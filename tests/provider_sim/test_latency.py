"""The simulator made slow on demand (`/_sim/latency`), for tests of callers' timeouts and retries:
API requests wait, as often as asked; the control API never does; a reset clears it."""

from __future__ import annotations

import time

from tests.provider_sim.harness import SimServer


def timed_list(sim: SimServer) -> float:
    started = time.monotonic()
    sim.stripe_client().v1.products.list()
    return time.monotonic() - started


def test_api_requests_wait_as_long_and_as_often_as_asked(sim: SimServer) -> None:
    assert sim.control("/_sim/latency", {"delay_ms": 400, "times": 1}) == {"delay_ms": 400, "times": 1, "delayed": 0}
    assert timed_list(sim) >= 0.4
    assert timed_list(sim) < 0.4  # only the next one was asked for
    assert sim.control("/_sim/latency", method="GET") == {"delay_ms": 400, "times": 0, "delayed": 1}


def test_the_control_api_is_never_slowed_and_a_reset_clears_the_latency(sim: SimServer) -> None:
    sim.control("/_sim/latency", {"delay_ms": 60_000})
    started = time.monotonic()
    sim.control("/_sim/clock", method="GET")
    sim.control("/_sim/reset")
    assert time.monotonic() - started < 5
    assert sim.control("/_sim/latency", method="GET") == {"delay_ms": 0, "times": None, "delayed": 0}
    assert timed_list(sim) < 5


def test_a_bad_latency_is_refused_in_stripes_error_shape(sim: SimServer) -> None:
    for body in ({}, {"delay_ms": -1}, {"delay_ms": 10, "times": 0}, {"delay_ms": 10, "speed": "slow"}):
        answer = sim.request("POST", "/_sim/latency", key=None, json_body=body)
        assert answer.status == 400 and answer.json()["error"]["type"] == "invalid_request_error", (body, answer.body)
