"""Carries out the conflict actions the entitlement service decided (a subscription that lost a
`cancel_and_refund` group to another live one): cancel it at the provider, refund its latest
paid invoice, and report each step with RecordConflictAction. Every provider call uses the
idempotency key the action carries, derived from the subscription, and a step is reported only
after the provider answered, so a retry, a crash between the call and the report, or a second
replica repeats the same call and gets the same cancellation and the same refund."""

from __future__ import annotations

from typing import Any

import structlog

from checkout_service.errors import CheckoutError
from checkout_service.service import Deps, entitlement_call, provider_call
from checkout_service.stripe.gateway import ProviderError
from selfserve.entitlement.v1 import entitlement_pb2 as pb

log = structlog.get_logger("conflict_actions")


def _ref(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _payment_of(invoice: dict[str, Any]) -> tuple[str, str]:
    """(payment intent, charge) that paid the invoice: from its expanded `payments` (current API),
    else its own `payment_intent` and `charge` (older API versions)."""
    for entry in (invoice.get("payments") or {}).get("data") or []:
        payment = entry.get("payment") or {} if isinstance(entry, dict) else {}
        if entry.get("status") == "paid" and (payment.get("payment_intent") or payment.get("charge")):
            return _ref(payment.get("payment_intent")), _ref(payment.get("charge"))
    return _ref(invoice.get("payment_intent")), _ref(invoice.get("charge"))


async def _report(deps: Deps, action: pb.ConflictAction, state: int, refund_id: str = "", reason: str = "") -> None:
    await entitlement_call(deps.entitlement.RecordConflictAction, pb.RecordConflictActionRequest(
        subscription_id=action.subscription_id, state=state, refund_id=refund_id, reason=reason))  # type: ignore[arg-type]


async def carry_out(deps: Deps, action: pb.ConflictAction) -> None:
    """Cancels (once) and refunds (once) the losing subscription; a refund the provider cannot make
    yet (no paid invoice known) is left for the next run."""
    if action.state == pb.CONFLICT_ACTION_STATE_DECIDED:
        await provider_call(deps.provider.cancel_subscription(action.subscription_id, action.cancel_idempotency_key))
        await _report(deps, action, pb.CONFLICT_ACTION_STATE_CANCELED,
                      reason=f"canceled: lost group {action.subscription_group} to {action.winner_subscription_id}")
    subscription = await provider_call(deps.provider.retrieve_subscription(action.subscription_id))
    invoice_id = _ref(subscription.get("latest_invoice"))
    if not invoice_id:
        await _report(deps, action, pb.CONFLICT_ACTION_STATE_SKIPPED, reason="no invoice: nothing was paid")
        return
    invoice = await provider_call(deps.provider.retrieve_invoice_payments(invoice_id))
    if not invoice.get("amount_paid"):
        await _report(deps, action, pb.CONFLICT_ACTION_STATE_SKIPPED, reason=f"invoice {invoice_id} paid nothing")
        return
    payment_intent, charge = _payment_of(invoice)
    if not (payment_intent or charge):
        log.warning("conflict_refund_waits", subscription_id=action.subscription_id, invoice_id=invoice_id,
                    reason="the invoice names no payment to refund")
        return
    params = {"payment_intent": payment_intent} if payment_intent else {"charge": charge}
    refund = await provider_call(deps.provider.create_refund(
        {**params, "metadata": {"subscription_id": action.subscription_id, "account_id": action.account_id}},
        action.refund_idempotency_key))
    await _report(deps, action, pb.CONFLICT_ACTION_STATE_REFUNDED, refund_id=str(refund["id"]),
                  reason=f"refunded invoice {invoice_id}")


async def carry_out_all(deps: Deps, actions: list[pb.ConflictAction]) -> int:
    """Each action in turn; one that fails is logged and tried again on the next run. Answers how
    many were attempted without error."""
    done = 0
    for action in actions:
        try:
            await carry_out(deps, action)
            done += 1
        except (CheckoutError, ProviderError) as exc:
            log.warning("conflict_action_failed", subscription_id=action.subscription_id, error=str(exc))
    return done
