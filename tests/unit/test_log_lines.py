"""The log chain's cheaper parts render and redact as the standard ones did."""

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pytest

from service_runtime.logs import REDACTED, UtcTimestamper, redact_secrets, render_json

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


class Kind(StrEnum):
    PLAN = "plan"


@dataclass(frozen=True)
class Point:
    x: int


@pytest.mark.parametrize("key", ["authorization", "Authorization", "stripe-signature", "Stripe_Signature",
                                 "database_url", "API_KEY"])
def test_a_secret_key_is_redacted_whatever_its_case_or_dashes(key: str) -> None:
    assert redact_secrets(None, "info", {key: "s3cret", "account_id": "acct_1"}) == {key: REDACTED,
                                                                                     "account_id": "acct_1"}


def test_timestamps_are_iso_utc_with_microseconds_and_follow_the_clock() -> None:
    stamp = UtcTimestamper()
    before = datetime.now(UTC)
    first = stamp(None, "info", {})["timestamp"]
    second = stamp(None, "info", {})["timestamp"]
    assert ISO_UTC.match(first) and ISO_UTC.match(second)
    assert before.replace(microsecond=0) <= datetime.fromisoformat(first) <= datetime.fromisoformat(second)


def test_rendering_matches_the_standard_json_for_the_values_logs_carry() -> None:
    event = {"event": "rpc", "kind": Kind.PLAN, "count": 3, "ratio": 0.5, "ok": True, "none": None,
             "ids": ["a", "b"], "nested": {"k": 1}, "text": "ünïcode \"quoted\"\n"}
    assert json.loads(render_json(None, "info", event)) == json.loads(json.dumps(event))


@pytest.mark.parametrize("value", [datetime(2026, 1, 2, tzinfo=UTC), Point(1), object()])
def test_values_json_cannot_render_fall_back_to_their_repr(value: object) -> None:
    assert json.loads(render_json(None, "info", {"value": value}))["value"] == repr(value)


def test_what_orjson_refuses_is_still_rendered() -> None:
    huge = 2**70
    assert json.loads(render_json(None, "info", {"huge": huge, 7: "int key"})) == {"huge": huge, "7": "int key"}
