"""EntitlementService over gRPC: each method converts, calls the service, converts back.
Errors map to status codes in one table (grpc/errors.py); RPCs not overridden here answer
UNIMPLEMENTED through the generated base class."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeAlias

import grpc

from entitlement_service.domain.errors import InvalidRequest
from entitlement_service.grpc import convert_in as cin
from entitlement_service.grpc import convert_out as out
from entitlement_service.service import (
    catalog,
    conflict_actions,
    event_accounts,
    events,
    preview,
    purchases,
    reads,
    reconciliation,
    replay,
    support,
)
from entitlement_service.service.changes import Watchers
from entitlement_service.service.deps import Deps
from entitlement_service.service.gates import GateCache
from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc

Context: TypeAlias = grpc.aio.ServicerContext


def exactly_one(**fields: str) -> tuple[str, str]:
    given = [(name, value) for name, value in fields.items() if value]
    if len(given) != 1:
        raise InvalidRequest(f"exactly one of {', '.join(fields)} is required")
    name, value = given[0]
    return name, cin.identifier(value, name)


class EntitlementServicer(entitlement_pb2_grpc.EntitlementServiceServicer):
    def __init__(self, deps: Deps, gates: GateCache, watchers: Watchers) -> None:
        self.deps, self.gates, self.watchers = deps, gates, watchers

    async def GetEntitlements(self, request: pb.GetEntitlementsRequest, context: Context) -> pb.GetEntitlementsResponse:
        view = await reads.entitlements(self.deps, cin.required(request.account_id, "account_id"),
                                        cin.time_or_none(request, "as_of"))
        return pb.GetEntitlementsResponse(entitlements=out.entitlements(view))

    async def CheckGate(self, request: pb.CheckGateRequest, context: Context) -> pb.CheckGateResponse:
        account_id, gate = cin.required(request.account_id, "account_id"), cin.required(request.gate, "gate")
        # The hot path: a fresh cache entry answers without awaiting anything.
        answer = self.gates.cached(account_id, gate) or await self.gates.check(account_id, gate)
        return pb.CheckGateResponse(allowed=answer.allowed, gate_bundle=answer.gate_bundle or "",
                                    revision=answer.revision)

    async def WatchEntitlements(self, request: pb.WatchEntitlementsRequest,
                                context: Context) -> AsyncIterator[pb.WatchEntitlementsResponse]:
        watched = cin.watch_selection(request)
        async for message in reads.watch_accounts(self.deps, self.watchers, watched.account_ids,
                                                  watched.known_revisions, watched.heartbeat_s):
            yield out.watch_message(message)

    async def ListCatalog(self, request: pb.ListCatalogRequest, context: Context) -> pb.ListCatalogResponse:
        return out.catalog(await catalog.list_catalog(self.deps, cin.optional(request.account_id, "account_id")))

    async def ValidatePurchase(self, request: pb.ValidatePurchaseRequest,
                               context: Context) -> pb.ValidatePurchaseResponse:
        checked = await catalog.validate_purchase(
            self.deps, cin.required(request.account_id, "account_id"), cin.items(request.items))
        reply = out.validation(checked.validation, checked.provider_customer_id)
        if checked.open_purchase is not None:
            reply.open_purchase.CopyFrom(out.purchase(checked.open_purchase))
            reply.open_purchase_same_selection = checked.same_selection
        return reply

    async def PreviewPurchase(self, request: pb.PreviewPurchaseRequest,
                              context: Context) -> pb.PreviewPurchaseResponse:
        return out.preview(await preview.preview_purchase(self.deps, cin.preview_request(request)))

    async def RegisterPurchase(self, request: pb.RegisterPurchaseRequest,
                               context: Context) -> pb.RegisterPurchaseResponse:
        registered = await purchases.register_purchase(self.deps, cin.new_purchase(request))
        return pb.RegisterPurchaseResponse(purchase=out.purchase(registered.view),
                                           open_purchase_reused=registered.reused)

    async def MarkPurchaseReturned(self, request: pb.MarkPurchaseReturnedRequest,
                                   context: Context) -> pb.MarkPurchaseReturnedResponse:
        view = await purchases.mark_returned(self.deps, cin.required(request.purchase_id, "purchase_id"),
                                             cin.optional(request.checkout_session_id, "checkout_session_id"))
        return pb.MarkPurchaseReturnedResponse(purchase=out.purchase(view))

    async def GetPurchase(self, request: pb.GetPurchaseRequest, context: Context) -> pb.GetPurchaseResponse:
        field, value = exactly_one(purchase_id=request.purchase_id, checkout_session_id=request.checkout_session_id)
        view = await purchases.get_purchase(self.deps, value if field == "purchase_id" else None,
                                            value if field == "checkout_session_id" else None)
        return pb.GetPurchaseResponse(purchase=out.purchase(view))

    async def GetAccount(self, request: pb.GetAccountRequest, context: Context) -> pb.GetAccountResponse:
        field, value = exactly_one(account_id=request.account_id, provider_customer_id=request.provider_customer_id)
        account_id, customer_id = await purchases.get_account(
            self.deps, value if field == "account_id" else None, value if field == "provider_customer_id" else None)
        return pb.GetAccountResponse(account_id=account_id, provider_customer_id=customer_id or "")

    async def LinkProviderCustomer(self, request: pb.LinkProviderCustomerRequest,
                                   context: Context) -> pb.LinkProviderCustomerResponse:
        account_id = cin.required(request.account_id, "account_id")
        customer_id = cin.required(request.provider_customer_id, "provider_customer_id")
        count = await event_accounts.link_and_apply(self.deps, account_id, customer_id)
        return pb.LinkProviderCustomerResponse(account_id=account_id, provider_customer_id=customer_id,
                                               events_reapplied=count)

    async def ApplyProviderEvents(self, request: pb.ApplyProviderEventsRequest,
                                  context: Context) -> pb.ApplyProviderEventsResponse:
        if not request.events:
            raise InvalidRequest("events must hold at least one event")
        batch = [cin.provider_event(e, f"events[{i}]") for i, e in enumerate(request.events)]
        results = await events.apply_events(self.deps, batch)
        return pb.ApplyProviderEventsResponse(results=[out.event_result(r) for r in results])

    async def UpsertCatalog(self, request: pb.UpsertCatalogRequest, context: Context) -> pb.UpsertCatalogResponse:
        now = self.deps.clock()
        update = await catalog.upsert_catalog(
            self.deps, cin.catalog_config(request.config),
            [cin.product(p, now, f"products[{i}]") for i, p in enumerate(request.products)],
            [cin.price(p, now, f"prices[{i}]") for i, p in enumerate(request.prices)],
            cin.time_or_none(request, "effective_at"), request.dry_run,
        )
        return pb.UpsertCatalogResponse(entries=[out.entry_result(r) for r in update.entries],
                                        accounts_affected=update.accounts_affected, dry_run=update.dry_run)

    async def ExplainAccount(self, request: pb.ExplainAccountRequest, context: Context) -> pb.ExplainAccountResponse:
        view, found = await reads.explain_account(self.deps, cin.required(request.account_id, "account_id"),
                                                  cin.time_or_none(request, "as_of"))
        return pb.ExplainAccountResponse(entitlements=out.entitlements(view),
                                         explanations=[out.explanation(e, view.config) for e in found],
                                         gate_decision=out.gate_decision(view.decision))

    async def TracePurchase(self, request: pb.TracePurchaseRequest, context: Context) -> pb.TracePurchaseResponse:
        field, value = exactly_one(purchase_id=request.purchase_id, checkout_session_id=request.checkout_session_id,
                                   subscription_id=request.subscription_id)
        found = await support.trace_purchase(self.deps, *(value if f == field else None for f in
                                                          ("purchase_id", "checkout_session_id", "subscription_id")))
        return out.trace(found)

    async def ListMismatches(self, request: pb.ListMismatchesRequest, context: Context) -> pb.ListMismatchesResponse:
        account_id = cin.optional(request.account_id, "account_id")
        found, token = await support.list_mismatches(self.deps, account_id, request.include_closed,
                                                     request.page_size, request.page_token)
        return pb.ListMismatchesResponse(mismatches=[out.mismatch(m) for m in found], next_page_token=token)

    async def GetReconcileState(self, request: pb.GetReconcileStateRequest,
                                context: Context) -> pb.GetReconcileStateResponse:
        account_id = cin.optional(request.account_id, "account_id")
        state = await reconciliation.reconcile_state(self.deps, account_id, request.page_size)
        return pb.GetReconcileStateResponse(
            events_checkpoint=out.ts(state.checkpoint),
            accounts=[pb.ReconcileAccount(account_id=a, provider_customer_id=c) for a, c in state.accounts],
            overdue_purchases=[pb.OverduePurchase(purchase_id=o.purchase_id, checkout_session_id=o.checkout_session_id,
                                                  account_id=o.account_id) for o in state.overdue],
            sweep_position=state.sweep_position, sweep_started_after=state.sweep_started_after,
            conflict_actions=[out.conflict_action(a) for a in state.conflict_actions])

    async def RecordConflictAction(self, request: pb.RecordConflictActionRequest,
                                   context: Context) -> pb.RecordConflictActionResponse:
        recorded = await conflict_actions.record_step(
            self.deps, cin.required(request.subscription_id, "subscription_id"), cin.action_state(request.state),
            request.refund_id or None, request.reason)
        return pb.RecordConflictActionResponse(action=out.conflict_action(recorded.action), changed=recorded.changed)

    async def ApplyReconciliation(self, request: pb.ApplyReconciliationRequest,
                                  context: Context) -> pb.ApplyReconciliationResponse:
        result = await reconciliation.apply_reconciliation(self.deps, cin.reconciliation(request))
        return pb.ApplyReconciliationResponse(
            subscriptions_checked=result.checked, mismatches_found=result.found,
            mismatches_repaired=result.repaired, purchases_resolved=result.resolved,
            open_mismatches=[out.mismatch(m) for m in result.open], accounts_unreadable=result.unreadable)

    async def LeaseReconciler(self, request: pb.LeaseReconcilerRequest,
                              context: Context) -> pb.LeaseReconcilerResponse:
        lease = await reconciliation.lease_reconciler(self.deps, cin.required(request.holder, "holder"),
                                                      cin.lease_ttl(request))
        return pb.LeaseReconcilerResponse(granted=lease.granted, holder=lease.holder or "",
                                          expires_at=out.ts(lease.expires_at))

    async def ReplayEvents(self, request: pb.ReplayEventsRequest, context: Context) -> pb.ReplayEventsResponse:
        found, more = await replay.replay_events(self.deps, cin.replay_selection(request), request.dry_run)
        return pb.ReplayEventsResponse(events=[out.replayed(r) for r in found], more=more)

    async def ReplayUnreadableEvents(self, request: pb.ReplayUnreadableEventsRequest,
                                     context: Context) -> pb.ReplayUnreadableEventsResponse:
        found, more = await replay.replay_events(self.deps, cin.unreadable_selection(request),
                                                 dry_run=not request.renormalized)
        return pb.ReplayUnreadableEventsResponse(events=[out.replayed(r) for r in found], more=more)
