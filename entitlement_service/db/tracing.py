"""A span per SQL statement run while serving a traced request, a child of the request's span.

The pool's connections are of a class made here, whose statement methods each open a span around
the statement when the task's current span is recorded. Statements with no request behind them
(migrations, change heartbeats, gauges) start no traces of their own. The span carries the
statement's text, never its parameters: they hold account, customer and payment data. This is
what OpenTelemetry's asyncpg instrumentation does, but that one patches asyncpg's own class for the
whole process, with one tracer, and traces every statement; a class per pool keeps the wiring
explicit and each service's spans its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer


def traced_connection_class(tracer: Tracer, database: str) -> type[asyncpg.Connection]:
    """An asyncpg connection class whose statements (`execute`, `executemany`, `fetch`, `fetchrow`,
    `fetchval`, `fetchmany`, and so a transaction's BEGIN and COMMIT) are spans of `tracer`."""

    class TracedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped
        __slots__ = ()

        async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, query):
                return await super().execute(query, *args, **kwargs)

        async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, command):
                return await super().executemany(command, args, **kwargs)

        async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, query):
                return await super().fetch(query, *args, **kwargs)

        async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, query):
                return await super().fetchrow(query, *args, **kwargs)

        async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, query):
                return await super().fetchval(query, *args, **kwargs)

        async def fetchmany(self, query: str, args: Any, **kwargs: Any) -> Any:
            with _statement(tracer, database, query):
                return await super().fetchmany(query, args, **kwargs)

    return TracedConnection


def operation_of(query: str) -> str:
    """The statement's first keyword (`SELECT`, `WITH`, `INSERT`, `BEGIN`...), its span's name."""
    words = query.split(None, 1)
    return words[0].rstrip(";").upper() if words else ""


@contextmanager
def _statement(tracer: Tracer, database: str, query: str) -> Iterator[None]:
    if not trace.get_current_span().is_recording():
        yield
        return
    operation = operation_of(query)
    attributes = {"db.system": "postgresql", "db.statement": query, "db.operation": operation}
    if database:
        attributes["db.name"] = database
    span = tracer.start_span(f"{operation} {database}".strip(), kind=SpanKind.CLIENT, attributes=attributes)
    try:
        yield
    except BaseException as exc:
        # The type only: a database error's message can quote the values it refused.
        span.set_attribute("error.type", type(exc).__qualname__)
        span.set_status(Status(StatusCode.ERROR, type(exc).__qualname__))
        raise
    finally:
        span.end()
