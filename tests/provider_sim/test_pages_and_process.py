"""The hosted pages a browser uses, the snapshot file, settings, and `python -m provider_sim`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from provider_sim.delivery import RetryPolicy
from provider_sim.settings import Settings
from provider_sim.sim import Options, PresetEndpoint
from service_runtime.config import ConfigError
from tests.provider_sim.builders import Catalog, checkout, make_catalog, ok
from tests.provider_sim.harness import API_KEY, SimServer

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_page_pays_and_sends_the_browser_to_the_success_url(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    page = sim.request("GET", f"/checkout/{session['id']}", key=None)
    assert page.status == 200 and b"Pay" in page.body and b"Pro" in page.body
    paid = sim.request("POST", f"/checkout/{session['id']}/pay", key=None, raw=b"payment=succeeded")
    assert paid.status == 303
    assert paid.headers["Location"] == f"https://app.example/return?session_id={session['id']}"
    assert ok(sim, "GET", f"/v1/checkout/sessions/{session['id']}")["status"] == "complete"


def test_a_declined_card_stays_on_the_page_and_cancel_expires(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    declined = sim.request("POST", f"/checkout/{session['id']}/pay", key=None, raw=b"payment=failed")
    assert declined.status == 303 and declined.headers["Location"].endswith("?declined=1")
    assert b"declined" in sim.request("GET", declined.headers["Location"], key=None).body
    canceled = sim.request("POST", f"/checkout/{session['id']}/cancel", key=None, raw=b"")
    assert canceled.status == 303 and canceled.headers["Location"] == "https://app.example/cancel"
    assert ok(sim, "GET", f"/v1/checkout/sessions/{session['id']}")["status"] == "expired"


def test_the_portal_page_lists_subscriptions_and_acts_on_them(sim: SimServer, catalog: Catalog) -> None:
    session = checkout(sim, catalog.monthly)
    done = sim.control(f"/_sim/checkout/sessions/{session['id']}/complete")
    portal = ok(sim, "POST", "/v1/billing_portal/sessions", {"customer": done["customer"],
                                                             "return_url": "https://app.example/account"})
    path = portal["url"].removeprefix(sim.url)
    page = sim.request("GET", path, key=None)
    assert page.status == 200 and done["subscription"].encode() in page.body
    acted = sim.request("POST", f"{path}/subscriptions/{done['subscription']}", key=None,
                        raw=b"action=cancel_at_period_end")
    assert acted.status == 303 and acted.headers["Location"] == path
    assert ok(sim, "GET", f"/v1/subscriptions/{done['subscription']}")["cancel_at_period_end"] is True


def test_state_and_clock_survive_a_restart_through_the_snapshot(tmp_path: Path) -> None:
    snapshot = tmp_path / "sim.json"
    first = SimServer(Options(snapshot=snapshot)).start()
    try:
        catalog = make_catalog(first)
        session = checkout(first, catalog.monthly)
        first.control(f"/_sim/checkout/sessions/{session['id']}/complete")
        first.control("/_sim/clock/advance", {"seconds": 3600})
        events = ok(first, "GET", "/v1/events", {"limit": 100})["data"]
    finally:
        first.stop()
    assert snapshot.exists()
    from provider_sim.store import load_snapshot

    loaded = load_snapshot(snapshot)
    assert loaded is not None
    second = SimServer(Options(snapshot=snapshot))
    second.state, second.clock.offset_s = loaded
    second.start()
    try:
        assert ok(second, "GET", "/v1/events", {"limit": 100})["data"] == events
        restored = ok(second, "GET", f"/v1/checkout/sessions/{session['id']}", {"expand": ["subscription"]})
        assert restored["subscription"]["status"] == "active"
        assert second.control("/_sim/clock", method="GET")["offset_seconds"] == 3600
    finally:
        second.stop()


def test_a_preset_endpoint_is_registered_with_its_secret() -> None:
    preset = SimServer(Options(presets=(PresetEndpoint("http://127.0.0.1:9/hooks", "whsec_known"),))).start()
    try:
        [endpoint] = ok(preset, "GET", "/v1/webhook_endpoints")["data"]
        assert endpoint["url"] == "http://127.0.0.1:9/hooks" and endpoint["enabled_events"] == ["*"]
        preset.control("/_sim/reset")
        assert len(ok(preset, "GET", "/v1/webhook_endpoints")["data"]) == 1
    finally:
        preset.stop()


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"PROVIDER_SIM_ADDR": "127.0.0.1:0", "PROVIDER_SIM_API_KEY": "sk_test_a,sk_test_b",
                                  "PROVIDER_SIM_WEBHOOK_URL": "http://127.0.0.1:8080/webhooks/stripe",
                                  "PROVIDER_SIM_WEBHOOK_SECRET": "whsec_x", "PROVIDER_SIM_RETRY_MAX_ATTEMPTS": "3"})
    assert (settings.addr.host, settings.addr.port) == ("127.0.0.1", 0)
    assert settings.options.accepts("sk_test_b") and not settings.options.accepts("sk_test_c")
    assert settings.options.presets[0].secret == "whsec_x" and settings.retry.max_attempts == 3
    defaults = Settings.from_env({})
    assert str(defaults.addr) == "127.0.0.1:12111" and defaults.options.accepts("sk_test_anything")
    assert defaults.retry == RetryPolicy()
    for name, value in (("PROVIDER_SIM_ADDR", "nowhere"), ("PROVIDER_SIM_WEBHOOK_URL", "ftp://x"),
                        ("PROVIDER_SIM_RETRY_MAX_ATTEMPTS", "many")):
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({name: value})


def test_the_retry_backoff_doubles_up_to_its_cap() -> None:
    policy = RetryPolicy(initial_backoff_s=0.05, max_backoff_s=2.0)
    assert [policy.backoff(n) for n in range(1, 9)] == [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]


def test_python_m_provider_sim_serves_and_saves_its_snapshot_on_sigterm(tmp_path: Path) -> None:
    snapshot = tmp_path / "state.json"
    env = {**os.environ, "PROVIDER_SIM_ADDR": "127.0.0.1:0", "PROVIDER_SIM_SNAPSHOT": str(snapshot)}
    proc = subprocess.Popen([sys.executable, "-m", "provider_sim"], cwd=ROOT, env=env, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 15
        url = None
        while url is None and time.monotonic() < deadline:
            found = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stderr.readline())
            url = found.group(0) if found else None
        assert url, "the simulator never said where it listens"
        call = urllib.request.Request(f"{url}/v1/products", data=b"name=Pro", method="POST",
                                      headers={"Authorization": f"Bearer {API_KEY}"})
        with urllib.request.urlopen(call, timeout=5) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert '"name": "Pro"' in snapshot.read_text().replace('"name":"Pro"', '"name": "Pro"')


def test_a_bad_setting_stops_the_process_naming_the_variable() -> None:
    env = {**os.environ, "PROVIDER_SIM_ADDR": "not-an-address"}
    done = subprocess.run([sys.executable, "-m", "provider_sim"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode != 0 and "PROVIDER_SIM_ADDR" in done.stderr
