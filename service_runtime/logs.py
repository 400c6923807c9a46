"""Structured logging: JSON lines when not on a terminal, one canonical line per request.

Every gRPC call writes a line, so the chain is kept cheap: the timestamp's date and time are
formatted once per second, secret keys are recognized through a cache of key names, and the line is
rendered by orjson. The call line itself skips the chain (`CallLines`)."""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import sys
import time
from collections.abc import MutableMapping
from typing import Any, BinaryIO, TextIO

import orjson
import structlog

# Keys whose values must never reach a log line, whatever a caller binds.
SECRET_KEYS = frozenset(
    {"authorization", "token", "tokens", "service_tokens", "stripe_signature", "signature",
     "api_key", "stripe_api_key", "secret", "webhook_secret", "password", "database_url"}
)
REDACTED = "[redacted]"

# What the standard library's json would do with these: fall back to repr(); the rest orjson
# renders as json would (str and int subclasses, enums, nested dicts and lists).
_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME


@functools.lru_cache(maxsize=4096)
def is_secret_key(key: str) -> bool:
    # Log keys come from code, so this cache stays small; the bound guards against keys made from data.
    return key.lower().replace("-", "_") in SECRET_KEYS


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if is_secret_key(key):
            event[key] = REDACTED  # replacing a value, not adding a key: safe while iterating
    return event


class UtcTimestamper:
    """`timestamp` in ISO 8601 UTC with microseconds (2026-01-02T03:04:05.678901Z), the date and
    time of day formatted once per second rather than once per line."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        second, nanos = divmod(time.time_ns(), 1_000_000_000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        event["timestamp"] = f"{self._prefix}.{nanos // 1000:06d}Z"
        return event


def new_request_id() -> str:
    """An id to follow a request by, not a secret: the module's PRNG is enough and needs no system call."""
    return f"{random.getrandbits(64):016x}"


# What a caller's request id may look like. It is logged, echoed in an HTTP header and passed on as
# gRPC metadata, which refuses non-ASCII values (the call would fail); a bounded, plain alphabet
# also keeps a caller from writing what it likes into every log line.
REQUEST_ID_FORM = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_or_new(given: object) -> str:
    """The caller's request id when it has the allowed form, else a fresh one."""
    if isinstance(given, str) and REQUEST_ID_FORM.fullmatch(given):
        return given
    return new_request_id()


def render_json(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    try:
        return orjson.dumps(event, default=repr, option=_ORJSON_OPTIONS).decode()
    except TypeError:  # an integer beyond 64 bits, say: the line is still written, more slowly
        return json.dumps(event, default=repr)


class CallLines:
    """Writes the line each gRPC call logs. A cached CheckGate answer costs less than structlog's
    processor chain, so where lines are JSON at info level the call line is rendered here, with the
    keys and formats the chain would give it, and written as bytes below the text layer; elsewhere
    it goes through structlog. Its keys are fixed (method, code, duration, the request's ids, all
    strings or numbers), so none needs redacting and orjson renders every one."""

    def __init__(self) -> None:
        self._direct: tuple[str, BinaryIO] | None = None
        self._stamp = UtcTimestamper()

    def configure(self, service: str, file: TextIO | None) -> None:
        """Render here, for `service`, to `file`; or with no file, through structlog. The text layer
        of `file` is flushed after each line structlog writes, so lines keep their order."""
        out = getattr(file, "buffer", None)
        self._direct = None if out is None else (service, out)

    def write(self, logger: Any, request_id: str, fields: dict[str, Any]) -> None:
        """Logs `rpc` with `fields` for the call `request_id`; `logger` is used when not rendering here."""
        if self._direct is None:
            logger.info("rpc", **fields)
            return
        service, out = self._direct
        fields["event"] = "rpc"
        fields["service"] = service
        fields["request_id"] = request_id
        fields["level"] = "info"
        out.write(orjson.dumps(self._stamp(None, "info", fields), option=orjson.OPT_APPEND_NEWLINE))
        out.flush()


CALL_LINES = CallLines()


def reset_logging() -> None:
    """Back to structlog's defaults, for code (tests) that configured logging to a stream it closes."""
    structlog.reset_defaults()
    CALL_LINES.configure("", None)


def configure_logging(service: str, *, level: str = "info", json: bool | None = None) -> None:
    use_json = (not sys.stderr.isatty()) if json is None else json
    level_number = logging.getLevelName(level.upper())
    CALL_LINES.configure(service, sys.stderr if use_json and level_number <= logging.INFO else None)
    renderer: Any = render_json if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            UtcTimestamper(),
            redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level_number),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
