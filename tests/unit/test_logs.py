import json
from collections.abc import Iterator

import pytest
import structlog

from service_runtime.logs import configure_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # a logger configured in a test writes to that test's captured stderr


def test_secrets_bound_to_a_log_line_are_redacted(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", json=True)
    structlog.get_logger().info(
        "call", authorization="Bearer abc", stripe_signature="t=1,v1=ff", api_key="sk_live_x", account_id="acct_1"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["authorization"] == line["stripe_signature"] == line["api_key"] == "[redacted]"
    assert line["account_id"] == "acct_1"
    assert line["service"] == "test" and line["level"] == "info" and line["timestamp"].endswith("Z")
