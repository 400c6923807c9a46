"""The return page in real headless Chromium: pending while the provider's webhook is held back,
then the active plan once it is delivered, then on to the caller's success URL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.e2e.stack import Stack, start_stack, stop_stack
from tests.support.browser import Browser, Page, chromium_path
from tests.support.waiting import eventually

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(chromium_path() is None, reason="Chromium is not installed (Debian: chromium)")]


@pytest.fixture
async def stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"PURCHASE_POLL_MS": "100"})
    yield started
    await stop_stack(started)


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    browser = await Browser().start(str(chromium_path()))
    try:
        yield await browser.new_page()
    finally:
        await browser.close()


async def shown(page: Page) -> tuple[str, str]:
    found = await page.evaluate(
        "(() => { const s = document.getElementById('state');"
        " return s ? [s.dataset.state, s.textContent] : [location.href, '']; })()")
    return (str(found[0]), str(found[1])) if found else ("", "")


async def test_the_page_shows_pending_until_the_webhook_is_delivered_then_the_active_plan(
    stack: Stack, page: Page
) -> None:
    await stack.sim_control("delivery", mode="hold")
    status, created = await stack.buy("acct_browser", success_url=f"{stack.checkout}/healthz")
    assert status == 201, created
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    await page.goto(f"{stack.checkout}/checkout/return?purchase_id={created['purchase_id']}"
                    f"&session_id={created['checkout_session_id']}")

    polls = 0

    async def confirming_for_a_while() -> bool:
        nonlocal polls
        state, _ = await shown(page)
        polls = polls + 1 if state == "confirming" else 0
        return polls >= 10  # still pending after several polls of the page

    await eventually(confirming_for_a_while, what="the page to keep showing 'confirming'")
    assert not (await stack.entitlements("acct_browser")).plans

    await stack.sim_control("delivery/release")

    async def active() -> tuple[str, str] | None:
        state, text = await shown(page)
        return (state, text) if state == "finalized" else None

    _, text = await eventually(active, timeout_s=20, what="the page to show the active plan")
    assert "pro" in text

    async def sent_on() -> bool:
        location, _ = await shown(page)
        return location.endswith("/healthz")

    await eventually(sent_on, timeout_s=10, what="the browser to be sent on to success_url")


@pytest.fixture
async def impatient_stack(database_url: str) -> AsyncIterator[Stack]:
    started = await start_stack(database_url, {"PURCHASE_POLL_MS": "100", "PURCHASE_RETURN_TIMEOUT_S": "2"})
    yield started
    await stop_stack(started)


async def test_the_page_says_still_processing_once_the_timeout_passes(impatient_stack: Stack, page: Page) -> None:
    stack = impatient_stack
    await stack.sim_control("delivery", mode="hold")
    _, created = await stack.buy("acct_slow")
    await stack.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
    await page.goto(f"{stack.checkout}/checkout/return?purchase_id={created['purchase_id']}"
                    f"&session_id={created['checkout_session_id']}")

    async def processing() -> str | None:
        state, text = await shown(page)
        return text if state == "processing" else None

    text = await eventually(processing, timeout_s=15, what="the page to give up waiting")
    assert "still processing" in text and "email" in text
