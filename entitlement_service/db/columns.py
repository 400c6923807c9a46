"""Typed records to and from columns. A `Shape` defines a record type's columns once: the list a
statement names, how a row read in that order becomes the record, and how many records become
the per-column arrays an `INSERT ... SELECT FROM unnest(...)` takes (one round trip for any
number of rows)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Generic, TypeVar

import asyncpg

from entitlement_service.domain.windows import Window

T = TypeVar("T")


def to_range(window: Window) -> asyncpg.Range:
    return asyncpg.Range(window.start, window.end, lower_inc=True, upper_inc=False)


def to_window(value: asyncpg.Range) -> Window:
    return Window(value.lower, value.upper)


def optional(convert: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`convert` for a nullable column: NULL stays None."""
    return lambda value: None if value is None else convert(value)


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # the element type of its unnest array
    decode: Callable[[Any], Any] = _same  # the stored value into the record's field
    encode: Callable[[Any], Any] = _same  # the record's field into the value sent
    field: str = ""  # the record's field, when its name is not the column's

    @property
    def attribute(self) -> str:
        return self.field or self.name


def window(name: str, field: str = "", nullable: bool = False) -> Column:
    """A tstzrange column holding a half-open Window."""
    if nullable:
        return Column(name, "tstzrange", optional(to_window), optional(to_range), field)
    return Column(name, "tstzrange", to_window, to_range, field)


class Shape(Generic[T]):
    """The columns of record type `record`, one per field, in field order, unless `values` says
    how a record fills them (a record whose fields are not its columns)."""

    def __init__(self, record: type[T], columns: Sequence[Column],
                 values: Callable[[T], tuple[Any, ...]] | None = None) -> None:
        self.record = record
        self.columns = tuple(columns)
        self.names = tuple(c.name for c in self.columns)
        fields = tuple(f.name for f in dataclasses.fields(record))  # type: ignore[arg-type]
        if values is None and fields != tuple(c.attribute for c in self.columns):
            raise TypeError(f"{record.__name__} has fields {fields}, its shape names {self.names}")
        self._values = values or attrgetter(*fields)
        self._decoding = tuple((i, c.decode) for i, c in enumerate(self.columns) if c.decode is not _same)
        self._encoding = tuple((i, c.encode) for i, c in enumerate(self.columns) if c.encode is not _same)

    def select(self, alias: str = "") -> str:
        """The column list for a SELECT whose rows `read` takes."""
        prefix = f"{alias}." if alias else ""
        return ", ".join(prefix + name for name in self.names)

    def updates(self, *keep: str) -> str:
        """`column = excluded.column` for an upsert, for every column but those in `keep`."""
        return ", ".join(f"{name} = excluded.{name}" for name in self.names if name not in keep)

    def read(self, row: asyncpg.Record, start: int = 0) -> T:
        """The record from a row whose columns, from `start`, are `select()`'s."""
        values = list(row[start:start + len(self.columns)])
        for i, decode in self._decoding:
            values[i] = decode(values[i])
        return self.record(*values)

    def unnest(self, first: int) -> str:
        """`unnest($first::type[], ...)`: one array parameter per column, numbered from `first`."""
        return "unnest({})".format(", ".join(f"${first + i}::{c.sql_type}[]" for i, c in enumerate(self.columns)))

    def placeholders(self) -> str:
        """`$1, $2, ...`: one parameter per column, for a VALUES list that `encoded` fills."""
        return ", ".join(f"${i}" for i in range(1, len(self.columns) + 1))

    def encoded(self, record: T) -> list[Any]:
        """One record's values, in column order, as they are sent."""
        values = list(self._values(record))
        for i, encode in self._encoding:
            values[i] = encode(values[i])
        return values

    def arrays(self, records: Iterable[T]) -> list[list[Any]]:
        """The records as one array per column, for `unnest`."""
        rows = [self._values(record) for record in records]
        arrays = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in self.columns]
        for i, encode in self._encoding:
            arrays[i] = [encode(value) for value in arrays[i]]
        return arrays


class Parameters:
    """Numbers one statement's parameters in the order its text takes them."""

    def __init__(self) -> None:
        self.count = 0

    def unnest(self, shape: Shape[Any]) -> str:
        text = shape.unnest(self.count + 1)
        self.count += len(shape.columns)
        return text

    def next(self) -> str:
        self.count += 1
        return f"${self.count}"
