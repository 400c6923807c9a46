"""A record's columns are defined once, in its Shape: a shape that disagrees with its record is
refused when it is built, and reads, single writes and batch writes all follow the one list."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from entitlement_service.db.columns import Column, Shape, window
from entitlement_service.domain.model import Status
from entitlement_service.domain.windows import Window

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(days=1, microseconds=250)


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
    assert HELD.recordset(4, "h") == (
        "(SELECT (r->>0)::text AS subscription_id, (r->>1)::text AS status, (r->>2)::tstzrange AS effective "
        "FROM ROWS FROM (jsonb_array_elements($4::text::jsonb)) AS rows(r)) AS h")
    assert HELD.placeholders() == "$1, $2, $3"


def test_records_become_one_json_array_of_rows_and_rows_decode_back() -> None:
    records = [Held("sub_1", Status.ACTIVE, Window(T0, None)), Held("sub_2", Status.CANCELED, Window(T0, T1))]
    [rows] = HELD.parameters(records)
    assert json.loads(rows) == [
        ["sub_1", "active", "[2026-01-01T00:00:00+00:00,)"],
        ["sub_2", "canceled", "[2026-01-01T00:00:00+00:00,2026-01-02T00:00:00.000250+00:00)"]]
    assert HELD.parameters([]) == ["[]"]
    naive = Held("sub_3", Status.ACTIVE, Window(T0.replace(tzinfo=None), None))  # taken as UTC, as the driver takes it
    assert json.loads(HELD.parameters([naive])[0]) == [["sub_3", "active", "[2026-01-01T00:00:00+00:00,)"]]
    encoded = HELD.encoded(records[0])[2]
    assert (encoded.lower, encoded.upper, encoded.lower_inc, encoded.upper_inc) == (T0, None, True, False)
    row = ("ignored", "sub_1", "active", encoded)
    assert HELD.read(row, 1) == records[0]  # type: ignore[arg-type]


def test_bytes_go_beside_the_rows_as_binary_arrays_and_integers_beyond_64_bits_are_kept() -> None:
    @dataclass(frozen=True)
    class Blob:
        data: bytes | None
        detail: dict[str, int]
        more: bytes

    shape = Shape(Blob, (Column("data", "bytea"), Column("detail", "jsonb"), Column("more", "bytea")))
    rows, data, more = shape.parameters([Blob(b"\x00\xff", {"n": 2**70}, b""), Blob(None, {}, b"x")])
    assert (json.loads(rows), data, more) == ([[{"n": 2**70}], [{}]], [b"\x00\xff", None], [b"", b"x"])
    assert shape.width == 3
    assert shape.recordset(2) == (
        "(SELECT b0 AS data, r->0 AS detail, b1 AS more FROM ROWS FROM (jsonb_array_elements($2::text::jsonb), "
        "unnest($3::bytea[]), unnest($4::bytea[])) AS rows(r, b0, b1)) AS v")
