"""A batch write's rows reach PostgreSQL exactly as the records hold them, through the form every
batch write sends them in (`Shape.parameters`, read back by `Shape.recordset`): any text, times to
the microsecond, open and closed windows, integers to 64 bits, bytes, jsonb values with integers
past 64 bits, and NULLs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlement_service.db.columns import Column, Shape, window
from entitlement_service.db.pool import init_connection
from entitlement_service.domain.windows import Window


@dataclass(frozen=True)
class Row:
    name: str | None
    amount: int
    flag: bool
    at: datetime | None
    window: Window
    data: bytes | None
    detail: dict[str, Any]
    more: bytes


SHAPE = Shape(Row, (
    Column("name", "text"), Column("amount", "bigint"), Column("flag", "bool"), Column("at", "timestamptz"),
    window("effective", field="window"), Column("data", "bytea"), Column("detail", "jsonb"), Column("more", "bytea"),
))

# What PostgreSQL text and jsonb can hold: no NUL, no lone surrogate (the services refuse both first).
texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9980, 12, 31), timezones=st.just(UTC))
windows = st.builds(lambda start, length: Window(start, None if length is None else start + length), times,
                    st.none() | st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=3650)))
json_values = st.none() | st.booleans() | st.integers(-2**70, 2**70) | texts
rows = st.builds(Row, st.none() | texts, st.integers(-2**63, 2**63 - 1), st.booleans(), st.none() | times, windows,
                 st.none() | st.binary(max_size=64), st.dictionaries(texts, json_values, max_size=4),
                 st.binary(max_size=64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(rows, max_size=6))
async def test_rows_read_back_from_their_parameters_equal_the_records(database_url: str, records: list[Row]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await init_connection(conn)  # jsonb as the pool reads it
        # Numbered after two parameters of the statement's own, as in a statement that writes several kinds.
        found = await conn.fetch(f"SELECT $1::text, $2::text, v.* FROM {SHAPE.recordset(3)}", "a", "b",
                                 *SHAPE.parameters(records))
    finally:
        await conn.close()
    assert [SHAPE.read(r, 2) for r in found] == records
