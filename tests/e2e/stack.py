"""The whole product as separate processes on free loopback ports: the provider simulator,
the entitlement service over its own database, the checkout service, the example catalog."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc

from checkout_service.stripe.gateway import StripeGateway
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.ports import free_port
from tests.support.processes import ServiceProcess
from tests.support.provider import EXAMPLE_CATALOG, ROOT
from tests.support.tokens import SERVICE_TOKENS, TOKENS, bearer
from tests.support.waiting import eventually

SECRET = "whsec_e2e_purchases"




@dataclass
class Stack:
    env: dict[str, str]
    processes: list[ServiceProcess]
    http: aiohttp.ClientSession
    channel: grpc.aio.Channel

    @property
    def sim(self) -> str:
        return self.env["STRIPE_API_BASE"]

    @property
    def checkout(self) -> str:
        return f"http://{self.env['CHECKOUT_HTTP_ADDR']}"

    def stub(self, role: Role = Role.PRODUCT) -> Any:
        stub = entitlement_pb2_grpc.EntitlementServiceStub(self.channel)

        class Authed:
            def __getattr__(self, name: str) -> Any:
                method = getattr(stub, name)
                return lambda request, **kw: method(request, metadata=bearer(role), **kw)

        return Authed()

    async def sim_control(self, path: str, **params: Any) -> Any:
        async with self.http.post(f"{self.sim}/_sim/{path}", json=params) as response:
            body = await response.json()
            assert response.status == 200, body
            return body

    async def delivered(self) -> None:
        body = await self.sim_control("delivery/wait", timeout_ms=20000)
        assert body["idle"], body

    async def buy(self, account_id: str, price: str = "pro_monthly", quantity: int = 1,
                  **extra: Any) -> tuple[int, Any]:
        body = {"account_id": account_id, "items": [{"price": price, "quantity": quantity}],
                "success_url": "https://app.example/welcome", "cancel_url": "https://app.example/pricing", **extra}
        headers = {"Authorization": f"Bearer {TOKENS[Role.PRODUCT]}"}
        async with self.http.post(f"{self.checkout}/v1/checkout/sessions", json=body, headers=headers) as response:
            return response.status, await response.json()

    def provider(self) -> StripeGateway:
        """The provider through the stripe SDK, as a dashboard or another integration reaches it;
        close it when done."""
        return StripeGateway(self.env["STRIPE_API_KEY"], self.sim, timeout_s=10, max_retries=0, deadline_s=20)

    async def outside_checkout(self, account_id: str, lookup_key: str) -> dict[str, Any]:
        """A subscription checkout session made at the provider directly for the account's
        customer, not through the checkout service (no purchase of ours), then paid."""
        account = await self.stub(Role.CHECKOUT).GetAccount(pb.GetAccountRequest(account_id=account_id))
        provider = self.provider()
        try:
            [price] = await provider.prices_by_lookup_keys([lookup_key])
            session = await provider.create_checkout_session({
                "mode": "subscription", "customer": account.provider_customer_id,
                "line_items": [{"price": price["id"], "quantity": 1}],
                "success_url": "https://app.example/elsewhere", "cancel_url": "https://app.example/elsewhere",
                "subscription_data": {"metadata": {"account_id": account_id}},
            }, f"outside-{account_id}-{lookup_key}")
        finally:
            await provider.close()
        await self.sim_control(f"checkout/sessions/{session['id']}/complete")
        return session

    async def purchase(self, purchase_id: str) -> pb.Purchase:
        reply = await self.stub(Role.CHECKOUT).GetPurchase(pb.GetPurchaseRequest(purchase_id=purchase_id))
        return reply.purchase

    async def provider_now(self) -> int:
        """The simulator's clock, in whole seconds as the provider stamps its objects."""
        async with self.http.get(f"{self.sim}/_sim/clock") as response:
            return int((await response.json())["now"])

    async def entitlements(self, account_id: str, at_provider_now: bool = False) -> pb.Entitlements:
        """Now by our clock, or by the simulator's (which tests move ahead of ours)."""
        request = pb.GetEntitlementsRequest(account_id=account_id)
        if at_provider_now:
            request.as_of.FromSeconds(await self.provider_now())
        return (await self.stub().GetEntitlements(request)).entitlements

    async def wait_state(self, purchase_id: str, state: int) -> pb.Purchase:
        async def reached() -> pb.Purchase | None:
            found = await self.purchase(purchase_id)
            return found if found.state == state else None

        return await eventually(reached, timeout_s=20, what=f"purchase {purchase_id} to reach state {state}")

    async def bought(self, account_id: str, price: str = "pro_monthly") -> pb.Purchase:
        """A checkout paid at the provider, finalized, and every webhook it caused delivered."""
        _, created = await self.buy(account_id, price)
        await self.sim_control(f"checkout/sessions/{created['checkout_session_id']}/complete")
        purchase = await self.wait_state(str(created["purchase_id"]), pb.PURCHASE_STATE_FINALIZED)
        await self.delivered()
        return purchase


async def start_stack(database_url: str, extra_env: dict[str, str] | None = None) -> Stack:
    ports = {name: free_port() for name in ("sim", "ent", "ent_metrics", "co", "co_http")}
    env = {
        "DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
        "PROVIDER_SIM_ADDR": f"127.0.0.1:{ports['sim']}", "STRIPE_API_BASE": f"http://127.0.0.1:{ports['sim']}",
        "STRIPE_API_KEY": "sk_test_e2e", "STRIPE_WEBHOOK_SECRETS": SECRET,
        "PROVIDER_SIM_WEBHOOK_URL": f"http://127.0.0.1:{ports['co_http']}/webhooks/stripe",
        "PROVIDER_SIM_WEBHOOK_SECRET": SECRET,
        "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{ports['ent']}", "ENTITLEMENT_TARGET": f"127.0.0.1:{ports['ent']}",
        "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{ports['ent_metrics']}",
        "CHECKOUT_GRPC_ADDR": f"127.0.0.1:{ports['co']}", "CHECKOUT_HTTP_ADDR": f"127.0.0.1:{ports['co_http']}",
        "PURCHASE_RETURN_TIMEOUT_S": "30", **(extra_env or {}),
    }
    processes = [ServiceProcess(m, env) for m in ("provider_sim", "entitlement_service", "checkout_service")]
    try:
        for process in processes:
            await process.start()
            await process.wait_for_event("listening")
        await processes[1].wait_for_event("ready")
        apply = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "checkout_service", "catalog", "apply", str(EXAMPLE_CATALOG), cwd=ROOT,
            env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await apply.communicate()
        assert apply.returncode == 0, out.decode()
    except BaseException:
        for process in processes:  # leave nothing running when the stack cannot start
            await process.kill()
        raise
    stack = Stack(env, processes, aiohttp.ClientSession(), grpc.aio.insecure_channel(env["ENTITLEMENT_TARGET"]))
    await stack.delivered()  # the catalog's product and price events
    return stack


async def stop_stack(stack: Stack) -> None:
    await stack.http.close()
    await stack.channel.close()
    for process in reversed(stack.processes):
        await process.terminate()
