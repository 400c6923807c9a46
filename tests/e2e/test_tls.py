"""The whole product as processes with mutual TLS on both gRPC ports and between the services,
set up through the environment alone: `catalog apply` loads the catalog over mutual TLS, and a
purchase is paid, finalized and delivered."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.stack import start_stack, stop_stack
from tests.support.pki import channel_env, make_pki, secure_channel, server_env

pytestmark = pytest.mark.e2e


async def test_a_purchase_goes_through_with_mutual_tls_between_the_services(database_url: str,
                                                                             tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    stack = await start_stack(database_url, {**server_env(pki), **channel_env(pki.ca, pki.client)})
    try:
        await stack.channel.close()  # plaintext: the entitlement service no longer answers it
        stack.channel = secure_channel(stack.env["ENTITLEMENT_TARGET"], pki.ca, pki.client)
        purchase = await stack.bought("acct_tls")
        assert purchase.account_id == "acct_tls"
        assert [p.billing_plan_code for p in (await stack.entitlements("acct_tls")).plans] == ["pro"]
    finally:
        await stop_stack(stack)
