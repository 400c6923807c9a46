import json
from collections.abc import Iterator

import pytest
import structlog

from service_runtime.logs import configure_logging


@pytest.fixture
def json_logs(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    configure_logging("test", json=True)
    yield
    structlog.reset_defaults()  # the configured logger writes to this test's captured stderr


def test_secrets_bound_to_a_log_line_are_redacted(json_logs: None, capsys: pytest.CaptureFixture[str]) -> None:
    structlog.get_logger().info(
        "call", authorization="Bearer abc", stripe_signature="t=1,v1=ff", api_key="sk_live_x", account_id="acct_1"
    )
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["authorization"] == line["stripe_signature"] == line["api_key"] == "[redacted]"
    assert line["account_id"] == "acct_1"
    assert line["service"] == "test" and line["level"] == "info" and line["timestamp"].endswith("Z")
