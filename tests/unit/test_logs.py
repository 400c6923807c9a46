import json
from collections.abc import Iterator

import pytest
import structlog

from service_runtime.logs import CALL_LINES, configure_logging, reset_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    reset_logging()  # a logger configured in a test writes to that test's captured stderr


def test_secrets_bound_to_a_log_line_are_redacted(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", json=True)
    structlog.get_logger().info(
        "call", authorization="Bearer abc", stripe_signature="t=1,v1=ff", api_key="sk_live_x", account_id="acct_1"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["authorization"] == line["stripe_signature"] == line["api_key"] == "[redacted]"
    assert line["account_id"] == "acct_1"
    assert line["service"] == "test" and line["level"] == "info" and line["timestamp"].endswith("Z")


def test_the_call_line_rendered_directly_is_the_line_structlog_renders(restore_logging: None,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", json=True)
    fields = {"method": "/pkg.Service/Call", "code": "OK", "duration_ms": 0.25, "account_id": "acct_1"}
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        structlog.get_logger().info("rpc", **fields)
    CALL_LINES.write(None, "req-1", dict(fields))
    chain, direct = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert list(direct)[:5] == list(chain)[:5] == [*fields, "event"]
    assert direct.pop("timestamp") >= chain.pop("timestamp")
    assert direct == chain


@pytest.mark.parametrize(("level", "json_lines", "written"), [("info", False, True), ("warning", True, False)])
def test_the_call_line_otherwise_goes_through_structlog(restore_logging: None, capsys: pytest.CaptureFixture[str],
                                                        level: str, json_lines: bool, written: bool) -> None:
    configure_logging("test", level=level, json=json_lines)
    CALL_LINES.write(structlog.get_logger(), "req-1", {"method": "/pkg.Service/Call", "code": "OK"})
    err = capsys.readouterr().err
    assert ("/pkg.Service/Call" in err) is written
    assert not err.startswith("{")
