"""A record's columns are defined once, in its Shape: a shape that disagrees with its record is
refused when it is built, and reads, single writes and batch writes all follow the one list."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from entitlement_service.db.columns import Column, Shape, window
from entitlement_service.domain.model import Status
from entitlement_service.domain.windows import Window

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Held:
    subscription_id: str
    status: Status
    window: Window


HELD = Shape(Held, (Column("subscription_id", "text"), Column("status", "text", decode=Status),
                    window("effective", field="window")))


def test_a_shape_naming_other_columns_than_its_records_fields_is_refused() -> None:
    with pytest.raises(TypeError, match="Held has fields"):
        Shape(Held, (Column("subscription_id", "text"), Column("window", "tstzrange"), Column("status", "text")))
    with pytest.raises(TypeError):
        Shape(Held, (Column("subscription_id", "text"), Column("status", "text")))


def test_statements_name_the_columns_in_the_records_order() -> None:
    assert HELD.select() == "subscription_id, status, effective"
    assert HELD.select("h") == "h.subscription_id, h.status, h.effective"
    assert HELD.updates("subscription_id") == "status = excluded.status, effective = excluded.effective"
    assert HELD.unnest(4) == "unnest($4::text[], $5::text[], $6::tstzrange[])"
    assert HELD.placeholders() == "$1, $2, $3"


def test_records_become_one_encoded_array_per_column_and_rows_decode_back() -> None:
    records = [Held("sub_1", Status.ACTIVE, Window(T0, None)), Held("sub_2", Status.CANCELED, Window(T0, T0))]
    ids, statuses, ranges = HELD.arrays(records)
    assert (ids, statuses) == (["sub_1", "sub_2"], [Status.ACTIVE, Status.CANCELED])
    assert [(r.lower, r.upper, r.lower_inc, r.upper_inc) for r in ranges] == [(T0, None, True, False),
                                                                            (T0, T0, True, False)]
    assert HELD.arrays([]) == [[], [], []]
    assert HELD.encoded(records[0])[2] == ranges[0]
    row = ("ignored", "sub_1", "active", ranges[0])
    assert HELD.read(row, 1) == records[0]  # type: ignore[arg-type]
