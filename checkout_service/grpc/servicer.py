"""CheckoutService over gRPC: each method converts, calls the service, converts back. Errors map to
status codes in one table (grpc/errors.py); a group conflict carries `error-code` and `portal-url`
trailing metadata, a refused selection its problems as rich error details (`google.rpc.Status`)."""

from __future__ import annotations

from typing import TypeAlias

import grpc

from checkout_service import service
from checkout_service.errors import InvalidSelection
from checkout_service.grpc.errors import selection_refusal
from checkout_service.reconcile import reconcile
from checkout_service.service import Deps
from checkout_service.webhooks import WebhookDeps, replay_unreadable
from selfserve.checkout.v1 import checkout_pb2 as pb
from selfserve.checkout.v1 import checkout_pb2_grpc

Context: TypeAlias = grpc.aio.ServicerContext


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, deps: Deps, hooks: WebhookDeps) -> None:
        self.deps, self.hooks = deps, hooks

    async def CreateCheckoutSession(self, request: pb.CreateCheckoutSessionRequest,
                                    context: Context) -> pb.CreateCheckoutSessionResponse:
        try:
            created = await service.create_checkout(
                self.deps, request.account_id, [(i.price, i.quantity) for i in request.items], request.success_url,
                request.cancel_url, request.idempotency_key or None)
        except InvalidSelection as exc:
            code, message, trailing = selection_refusal(exc)
            context.set_trailing_metadata(trailing)
            await context.abort(code, message)
        p = created.purchase
        return pb.CreateCheckoutSessionResponse(purchase_id=p.purchase_id, checkout_session_id=p.checkout_session_id,
                                                url=created.url, expires_at=p.expires_at, status=p.state,
                                                open_purchase_reused=created.reused)

    async def CreatePortalSession(self, request: pb.CreatePortalSessionRequest,
                                  context: Context) -> pb.CreatePortalSessionResponse:
        return pb.CreatePortalSessionResponse(url=await service.create_portal(self.deps, request.account_id,
                                                                              request.return_url))

    async def GetPurchase(self, request: pb.GetPurchaseRequest, context: Context) -> pb.GetPurchaseResponse:
        status = await service.purchase_status(self.deps, request.purchase_id)
        return pb.GetPurchaseResponse(purchase=status.purchase, poll_after_ms=status.poll_after_ms,
                                      timeout_at=status.purchase.timeout_at)

    async def ListCatalog(self, request: pb.ListCatalogRequest, context: Context) -> pb.ListCatalogResponse:
        return pb.ListCatalogResponse(catalog=await service.list_catalog(self.deps, request.account_id or None))

    async def Reconcile(self, request: pb.ReconcileRequest, context: Context) -> pb.ReconcileResponse:
        r = await reconcile(self.hooks, request.account_id or None)
        return pb.ReconcileResponse(
            subscriptions_checked=r.subscriptions_checked, mismatches_found=r.mismatches_found,
            mismatches_repaired=r.mismatches_repaired, events_replayed=r.events_replayed,
            purchases_resolved=r.purchases_resolved, open_mismatches=r.open_mismatches,
            accounts_checked=r.accounts_checked, accounts_unreadable=r.accounts_unreadable,
            events_unreadable=r.events_unreadable, sweep_complete=r.sweep_complete)

    async def ReplayUnreadableEvents(self, request: pb.ReplayUnreadableEventsRequest,
                                     context: Context) -> pb.ReplayUnreadableEventsResponse:
        events, more = await replay_unreadable(self.hooks, list(request.provider_event_ids),
                                               min(max(request.limit, 0) or 100, 1000), request.dry_run)
        return pb.ReplayUnreadableEventsResponse(events=events, more=more)
