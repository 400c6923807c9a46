"""Asking: the provider's final state (its list API, as any client reads it), and every replica's
answers for every account, turned into the reference's values so `compare` can set them side by
side."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from catalog_rules.file import parse_catalog
from chaos import compare, reference
from chaos.compare import Difference, Issued
from chaos.reference import Binding, Entitled, Expected, ProviderState
from chaos.stack import CATALOG, Stack
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from service_runtime.auth import Role

CALLS_AT_ONCE = 32
CADENCES = {pb.GRANT_CADENCE_PER_PERIOD: "per_period", pb.GRANT_CADENCE_ONE_TIME: "one_time"}
STATES = {pb.PURCHASE_STATE_PENDING: "pending", pb.PURCHASE_STATE_RETURNED: "pending",
          pb.PURCHASE_STATE_FINALIZED: "finalized", pb.PURCHASE_STATE_EXPIRED: "expired"}
_T = TypeVar("_T")


async def provider_state(stack: Stack) -> ProviderState:
    subscriptions, invoices, sessions = await asyncio.gather(
        stack.provider_list("/v1/subscriptions", status="all"), stack.provider_list("/v1/invoices"),
        stack.provider_list("/v1/checkout/sessions", **{"expand[]": "data.line_items"}))
    return ProviderState(tuple(map(reference.subscription_of, subscriptions)),
                         tuple(map(reference.invoice_of, invoices)), tuple(map(reference.session_of, sessions)))


async def catalog(stack: Stack) -> reference.Catalog:
    prices = await stack.provider_list("/v1/prices")
    ids = {p["lookup_key"]: p["id"] for p in prices if p.get("lookup_key") and p.get("active", True)}
    return reference.catalog_of(parse_catalog(CATALOG.read_text(encoding="utf-8")), ids)


async def provider_now(stack: Stack) -> int:
    async with stack.http.get(f"{stack.sim_url}/_sim/clock") as reply:
        return int((await reply.json())["now"])


def entitled_of(found: pb.Entitlements) -> tuple[Entitled, int]:
    """What a replica says holds, and how many of its plans are in conflict."""
    plans = frozenset((p.subscription_id, p.billing_plan_code) for p in found.plans if not p.conflict)
    bindings = frozenset(Binding(b.subscription_id, b.price_id, b.grant_program_code, b.total_amount)
                         for b in found.grant_bindings)
    return (Entitled(plans, found.gate_bundle, frozenset(found.gates), bindings),
            sum(1 for p in found.plans if p.conflict))


def issued_of(found: pb.Entitlements) -> list[Issued]:
    return [Issued(g.grant_program_code, CADENCES.get(g.cadence, "other"), g.amount, g.issue_key, g.subscription_id,
                   g.invoice_id, g.checkout_session_id, g.period_end.seconds if g.HasField("period_end") else 0)
            for g in found.funding]


async def _retrying(method: Callable[..., Awaitable[_T]], request: object, metadata: object,
                    deadline_s: float = 30) -> _T:
    """A read on a replica that may be settling after a fault: UNAVAILABLE is asked again."""
    started = time.monotonic()
    while True:
        try:
            return await method(request, metadata=metadata, timeout=10)
        except grpc.aio.AioRpcError as exc:
            if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED) \
                    or time.monotonic() - started > deadline_s:
                raise
            await asyncio.sleep(0.2)


async def differences(stack: Stack, state: ProviderState, cat: reference.Catalog) -> list[Difference]:
    """Every account the provider knows, on every replica: plans, gates and bindings at the
    provider's present; CheckGate for every gate at ours; funding and purchase states."""
    at_provider, at_ours = await provider_now(stack), int(time.time())
    expected = reference.expected(state, cat, at_provider)
    at_our_present = reference.entitled_by_account(state.subscriptions, cat, at_ours)
    gates = sorted({gate for bundle in cat.gates.values() for gate in bundle})
    limit = asyncio.Semaphore(CALLS_AT_ONCE)
    metadata = stack.metadata(Role.PRODUCT)  # CheckGate is the product's; it reads the rest too

    async def account(account_id: str, want: Expected) -> list[Difference]:
        async with limit:
            found: list[Difference] = []
            for replica, stub in enumerate(stack.entitlement_stubs):
                where = stack.entitlements[replica].name
                request = pb.GetEntitlementsRequest(account_id=account_id)
                request.as_of.FromSeconds(at_provider)
                reply = await _retrying(stub.GetEntitlements, request, metadata)
                held, conflicts = entitled_of(reply.entitlements)
                found += compare.entitled_differences(account_id, where, want.entitled, held, conflicts)
                if replica == 0:
                    found += compare.funding_differences(account_id, want.funding, issued_of(reply.entitlements))
                answers = {}
                for gate in gates:
                    check = pb.CheckGateRequest(account_id=account_id, gate=gate)
                    answer = await _retrying(stub.CheckGate, check, metadata)
                    answers[gate] = answer.allowed
                now = at_our_present.get(account_id, Entitled())
                found += compare.check_gate_differences(account_id, where, now.gates, answers)
            purchases = {}
            for purchase_id in want.purchases:
                try:
                    got = await _retrying(stack.entitlement_stubs[0].GetPurchase,
                                          pb.GetPurchaseRequest(purchase_id=purchase_id), metadata)
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                    continue  # reported as missing
                purchases[purchase_id] = STATES.get(got.purchase.state, "unspecified")
            return found + compare.purchase_differences(account_id, want.purchases, purchases)

    per_account = await asyncio.gather(*(account(a, want) for a, want in sorted(expected.items())))
    return [d for found in per_account for d in found]
