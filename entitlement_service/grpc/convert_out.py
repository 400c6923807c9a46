"""Domain values into proto responses."""

from __future__ import annotations

import json
from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp

from catalog_rules.model import (
    Cadence,
    CatalogConfig,
    ChangePolicy,
    ConflictPolicy,
    PlanKind,
    Price,
    ResolvedPrice,
    Source,
)
from entitlement_service.domain.account import PlacedAssignment, PlacedBinding
from entitlement_service.domain.conflict_actions import ActionState, cancel_key, refund_key
from entitlement_service.domain.entitlements import GateDecision
from entitlement_service.domain.model import Mode, Outcome, PurchaseState, Status
from entitlement_service.domain.provider import UNREADABLE
from entitlement_service.domain.purchasability import PriceChoice, Problem, Validation
from entitlement_service.domain.records import (
    AuditEntry,
    ConflictActionRecord,
    EventRecord,
    EventResult,
    IssuedGrantRecord,
    MismatchRecord,
)
from entitlement_service.service.catalog import CatalogListing, EntryResult
from entitlement_service.service.preview import Preview
from entitlement_service.service.purchases import PurchaseView
from entitlement_service.service.reads import (
    EntitlementsView,
    Explanation,
    Heartbeat,
    SubscriptionView,
    WatchMessage,
)
from entitlement_service.service.replay import Replayed
from entitlement_service.service.support import Trace
from selfserve.entitlement.v1 import entitlement_pb2 as pb

STATES = {PurchaseState.PENDING: pb.PURCHASE_STATE_PENDING, PurchaseState.RETURNED: pb.PURCHASE_STATE_RETURNED,
          PurchaseState.FINALIZED: pb.PURCHASE_STATE_FINALIZED, PurchaseState.EXPIRED: pb.PURCHASE_STATE_EXPIRED,
          PurchaseState.FAILED: pb.PURCHASE_STATE_FAILED, PurchaseState.CONFLICT: pb.PURCHASE_STATE_CONFLICT}
MODES = {Mode.SUBSCRIPTION: pb.PURCHASE_MODE_SUBSCRIPTION, Mode.PAYMENT: pb.PURCHASE_MODE_PAYMENT}
OUTCOMES = {Outcome.APPLIED: pb.EVENT_OUTCOME_APPLIED, Outcome.DUPLICATE: pb.EVENT_OUTCOME_DUPLICATE,
            Outcome.STALE: pb.EVENT_OUTCOME_STALE, Outcome.IGNORED: pb.EVENT_OUTCOME_IGNORED,
            Outcome.REJECTED: pb.EVENT_OUTCOME_REJECTED}
CADENCES = {Cadence.PER_PERIOD: pb.GRANT_CADENCE_PER_PERIOD, Cadence.WHILE_ACTIVE: pb.GRANT_CADENCE_WHILE_ACTIVE,
            Cadence.ONE_TIME: pb.GRANT_CADENCE_ONE_TIME}
SOURCES = {Source.PRICE: pb.BINDING_SOURCE_PRICE, Source.PRODUCT: pb.BINDING_SOURCE_PRODUCT}
KINDS = {PlanKind.BASE: pb.PLAN_KIND_BASE, PlanKind.ADDON: pb.PLAN_KIND_ADDON}
CHANGE_POLICIES = {ChangePolicy.NONE: pb.CHANGE_POLICY_NONE, ChangePolicy.DIFFERENCE: pb.CHANGE_POLICY_DIFFERENCE}
CONFLICT_POLICIES = {ConflictPolicy.FLAG: pb.CONFLICT_POLICY_FLAG,
                     ConflictPolicy.CANCEL_AND_REFUND: pb.CONFLICT_POLICY_CANCEL_AND_REFUND}
STATUSES = {Status.INCOMPLETE: pb.SUBSCRIPTION_STATUS_INCOMPLETE,
            Status.INCOMPLETE_EXPIRED: pb.SUBSCRIPTION_STATUS_INCOMPLETE_EXPIRED,
            Status.TRIALING: pb.SUBSCRIPTION_STATUS_TRIALING, Status.ACTIVE: pb.SUBSCRIPTION_STATUS_ACTIVE,
            Status.PAST_DUE: pb.SUBSCRIPTION_STATUS_PAST_DUE, Status.CANCELED: pb.SUBSCRIPTION_STATUS_CANCELED,
            Status.UNPAID: pb.SUBSCRIPTION_STATUS_UNPAID, Status.PAUSED: pb.SUBSCRIPTION_STATUS_PAUSED}
PROBLEMS = {"unknown_price": pb.PURCHASE_PROBLEM_CODE_UNKNOWN_PRICE, "inactive": pb.PURCHASE_PROBLEM_CODE_INACTIVE,
            "invalid_catalog_entry": pb.PURCHASE_PROBLEM_CODE_INVALID_CATALOG_ENTRY,
            "bad_quantity": pb.PURCHASE_PROBLEM_CODE_BAD_QUANTITY,
            "mixed_groups": pb.PURCHASE_PROBLEM_CODE_MIXED_GROUPS,
            "mixed_modes": pb.PURCHASE_PROBLEM_CODE_MIXED_MODES,
            "group_conflict": pb.PURCHASE_PROBLEM_CODE_GROUP_CONFLICT,
            "duplicate_price": pb.PURCHASE_PROBLEM_CODE_DUPLICATE_PRICE, "empty": pb.PURCHASE_PROBLEM_CODE_EMPTY}


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def purchase(v: PurchaseView) -> pb.Purchase:
    p = v.purchase
    return pb.Purchase(
        purchase_id=p.purchase_id, account_id=p.account_id, state=STATES[p.state], mode=MODES[p.mode],
        items=[pb.PurchaseItem(price=price, quantity=n) for price, n in p.items],
        subscription_group=p.subscription_group or "", checkout_session_id=p.checkout_session_id,
        subscription_id=p.subscription_id or "", success_url=p.success_url, cancel_url=p.cancel_url,
        reason=p.reason or "", created_at=ts(p.created_at), returned_at=ts(p.returned_at),
        finalized_at=ts(p.finalized_at), expired_at=ts(p.expired_at), failed_at=ts(p.failed_at),
        conflict_at=ts(p.conflict_at), expires_at=ts(p.expires_at), timeout_at=ts(p.timeout_at),
        transitions=[pb.PurchaseTransition(
            from_state=STATES[t.from_state] if t.from_state else pb.PURCHASE_STATE_UNSPECIFIED,
            to_state=STATES[t.to_state], at=ts(t.at), provider_event_id=t.provider_event_id or "",
            reason=t.reason) for t in v.transitions],
        checkout_url=p.checkout_url or "",
    )


def assignment(p: PlacedAssignment, config: CatalogConfig) -> pb.PlanAssignment:
    plan = config.plans.get(p.row.billing_plan_code)
    return pb.PlanAssignment(
        billing_plan_code=p.row.billing_plan_code, subscription_group=p.row.subscription_group,
        subscription_id=p.row.subscription_id, priority=p.row.priority,
        kind=KINDS[plan.kind] if plan else pb.PLAN_KIND_UNSPECIFIED, effective_from=ts(p.window.start),
        effective_until=ts(p.window.end), conflict=p.conflict, conflict_with_subscription_id=p.conflict_with or "",
    )


def binding(p: PlacedBinding, config: CatalogConfig) -> pb.GrantBinding:
    program = config.grant_programs.get(p.row.grant_program_code)
    return pb.GrantBinding(
        grant_program_code=p.row.grant_program_code,
        cadence=CADENCES[program.cadence] if program else pb.GRANT_CADENCE_UNSPECIFIED,
        unit=program.unit if program else "", amount=p.row.amount, scale_by_quantity=p.row.scale_by_quantity,
        quantity=p.row.quantity, total_amount=p.row.total_amount, source=SOURCES[p.row.source],
        subscription_id=p.row.subscription_id, price_id=p.row.price_id, product_id=p.row.product_id,
        effective_from=ts(p.window.start), effective_until=ts(p.window.end),
    )


def issued(i: IssuedGrantRecord) -> pb.IssuedGrant:
    return pb.IssuedGrant(
        grant_program_code=i.grant_program_code, unit=i.unit, amount=i.amount, cadence=CADENCES[i.cadence],
        issue_key=i.issue_key, invoice_id=i.invoice_id or "", checkout_session_id=i.checkout_session_id or "",
        subscription_id=i.subscription_id or "", period_start=ts(i.period.start) if i.period else None,
        period_end=ts(i.period.end) if i.period else None, issued_at=ts(i.issued_at),
    )


def subscription(v: SubscriptionView) -> pb.Subscription:
    s = v.subscription
    return pb.Subscription(
        subscription_id=s.subscription_id, account_id=s.account_id, provider_customer_id=s.provider_customer_id,
        subscription_group=s.subscription_group or "", status=STATUSES[s.status],
        provider_updated_at=ts(s.provider_updated_at), started_at=ts(s.started_at), trial_end=ts(s.trial_end),
        current_period_start=ts(s.current_period_start), current_period_end=ts(s.current_period_end),
        cancel_at=ts(s.cancel_at), cancel_at_period_end=s.cancel_at_period_end, ended_at=ts(s.ended_at),
        purchase_id=s.purchase_id or "",
        items=[pb.SubscriptionItem(
            item_id=i.item_id, price_id=i.price_id, product_id=i.product_id, quantity=i.quantity,
            effective_from=ts(i.window.start), effective_until=ts(i.window.end),
            current_period_start=ts(i.current_period_start), current_period_end=ts(i.current_period_end))
            for i in v.items],
    )


def entitlements(v: EntitlementsView) -> pb.Entitlements:
    return pb.Entitlements(
        account_id=v.account_id, as_of=ts(v.as_of), revision=v.revision,
        plans=[assignment(p, v.config) for p in v.plans], grant_bindings=[binding(b, v.config) for b in v.bindings],
        funding=[issued(f) for f in v.funding], gate_bundle=v.decision.gate_bundle or "",
        gates=sorted(v.decision.gates), subscriptions=[subscription(s) for s in v.subscriptions],
    )


def watch_message(m: WatchMessage) -> pb.WatchEntitlementsResponse:
    if isinstance(m, Heartbeat):
        return pb.WatchEntitlementsResponse(heartbeat_at=ts(m.at))
    return pb.WatchEntitlementsResponse(
        entitlements=entitlements(m.view), initial=m.initial,
        gate_schedule=[pb.GateSpan(start=ts(s.start), end=ts(s.end), gate_bundle=s.gate_bundle or "",
                                   gates=sorted(s.gates)) for s in m.schedule])


def gate_decision(d: GateDecision) -> pb.GateDecision:
    return pb.GateDecision(
        gate_bundle=d.gate_bundle or "", gates=sorted(d.gates),
        billing_plan_code=d.winner.row.billing_plan_code if d.winner else "",
        subscription_id=d.winner.row.subscription_id if d.winner else "", reason=d.reason,
    )


def explanation(e: Explanation, config: CatalogConfig) -> pb.Explanation:
    return pb.Explanation(
        kind=e.kind, assignment=assignment(e.assignment, config) if e.assignment else None,
        binding=binding(e.binding, config) if e.binding else None, effective=e.effective, reason=e.reason,
    )


def event_result(r: EventResult) -> pb.EventResult:
    return pb.EventResult(provider_event_id=r.provider_event_id, outcome=OUTCOMES[r.outcome], reason=r.reason,
                          account_id=r.account_id or "", conflict_action=r.conflict_action)


def replayed(r: Replayed) -> pb.ReplayedEvent:
    e = r.event
    outcome, reason, account = (r.result.outcome, r.result.reason, r.result.account_id) if r.result else (
        Outcome.REJECTED, e.reason, e.account_id)
    return pb.ReplayedEvent(provider_event_id=e.provider_event_id, type=e.type, created=ts(e.created),
                            previous_reason=e.reason, outcome=OUTCOMES[outcome], reason=reason,
                            account_id=account or "",
                            raw_payload=(e.payload or b"") if e.reason.startswith(UNREADABLE) else b"")


def entry_result(r: EntryResult) -> pb.CatalogEntryResult:
    return pb.CatalogEntryResult(kind=r.kind, id=r.id, changed=r.changed, valid=r.valid,
                                 invalid_reason=r.invalid_reason or "")


def price_snapshot(p: Price) -> pb.PriceSnapshot:
    return pb.PriceSnapshot(
        price_id=p.price_id, product_id=p.product_id, lookup_key=p.lookup_key or "", active=p.active,
        unit_amount=p.unit_amount or 0, currency=p.currency, interval=p.interval or "",
        interval_count=p.interval_count or 0, metadata=p.metadata, provider_updated_at=ts(p.provider_updated_at),
        deleted=p.deleted,
    )


def catalog_price(c: PriceChoice) -> pb.CatalogPrice:
    r: ResolvedPrice = c.resolved
    return pb.CatalogPrice(
        price=price_snapshot(r.price), product_name=r.product_name, subscription_group=r.subscription_group or "",
        billing_plan_code=r.billing_plan_code or "", gate_bundle=r.gate_bundle or "",
        grant_bindings=[pb.GrantBindingSpec(grant_program_code=g.grant_program_code, amount=g.amount,
                                            scale_by_quantity=g.scale_by_quantity, source=SOURCES[g.source])
                        for g in r.grants],
        valid=r.valid, invalid_reason=r.invalid_reason or "",
        purchasability=pb.Purchasability(
            purchasable=c.purchasable, problem=PROBLEMS.get(c.problem or "", pb.PURCHASE_PROBLEM_CODE_UNSPECIFIED),
            message=c.message, requires_portal=c.requires_portal,
            conflicting_subscription_ids=list(c.conflicting_subscription_ids)),
    )


def catalog(v: CatalogListing) -> pb.ListCatalogResponse:
    c = v.config
    return pb.ListCatalogResponse(
        groups=[pb.SubscriptionGroup(code=g.code, stackable=g.stackable,
                                     conflict_policy=CONFLICT_POLICIES[g.conflict_policy]) for g in c.groups.values()],
        plans=[pb.Plan(code=p.code, priority=p.priority, kind=KINDS[p.kind]) for p in c.plans.values()],
        grant_programs=[pb.GrantProgram(code=g.code, cadence=CADENCES[g.cadence], unit=g.unit,
                                        on_change=CHANGE_POLICIES[g.on_change])
                        for g in c.grant_programs.values()],
        gate_bundles=[pb.GateBundle(code=b.code, gates=list(b.gates)) for b in c.gate_bundles.values()],
        prices=[catalog_price(choice) for choice in v.choices],
        owned_groups=[pb.GroupOwnership(subscription_group=g, stackable=c.groups[g].stackable if g in c.groups
                                        else False, subscription_ids=list(subs)) for g, subs in v.owned.items()],
    )


def problem(p: Problem) -> pb.PurchaseProblem:
    return pb.PurchaseProblem(code=PROBLEMS[p.code], item_index=p.item_index, price=p.price, message=p.message)


def preview(p: Preview) -> pb.PreviewPurchaseResponse:
    c, config = p.changes, p.entitlements.config
    return pb.PreviewPurchaseResponse(
        entitlements=entitlements(p.entitlements), problems=[problem(x) for x in p.problems],
        changes=pb.EntitlementChanges(
            gates_gained=c.gates_gained, gates_lost=c.gates_lost,
            plans_added=[assignment(a, config) for a in c.plans_added],
            plans_removed=[assignment(a, config) for a in c.plans_removed],
            plans_changed=[assignment(a, config) for a in c.plans_changed],
            bindings_added=[binding(b, config) for b in c.bindings_added],
            bindings_removed=[binding(b, config) for b in c.bindings_removed],
            funding_added=[issued(f) for f in c.funding_added],
            gate_bundle_before=c.gate_bundle_before or "", gate_bundle_after=c.gate_bundle_after or ""),
    )


def validation(v: Validation, provider_customer_id: str | None) -> pb.ValidatePurchaseResponse:
    return pb.ValidatePurchaseResponse(
        ok=v.ok, subscription_group=v.subscription_group or "",
        mode=MODES[v.mode] if v.mode else pb.PURCHASE_MODE_UNSPECIFIED,
        items=[pb.ResolvedItem(price=ref, price_id=r.price_id, lookup_key=r.price.lookup_key or "", quantity=n)
               for ref, r, n in v.items],
        problems=[problem(p) for p in v.problems],
        conflicting_subscription_ids=list(v.conflicting_subscription_ids),
        provider_customer_id=provider_customer_id or "",
    )


def event_record(r: EventRecord) -> pb.EventRecord:
    return pb.EventRecord(provider_event_id=r.provider_event_id, type=r.type, created=ts(r.created),
                          received_at=ts(r.received_at), outcome=OUTCOMES[r.outcome], reason=r.reason,
                          account_id=r.account_id or "", object_id=r.object_id, deliveries=r.deliveries)


def audit_entry(r: AuditEntry) -> pb.AuditEntry:
    return pb.AuditEntry(at=ts(r.at), cause=r.cause, cause_id=r.cause_id, entity=r.entity, entity_id=r.entity_id,
                         action=r.action, detail=json.dumps(r.detail, sort_keys=True))


ACTION_STATES = {ActionState.DECIDED: pb.CONFLICT_ACTION_STATE_DECIDED,
                 ActionState.CANCELED: pb.CONFLICT_ACTION_STATE_CANCELED,
                 ActionState.REFUNDED: pb.CONFLICT_ACTION_STATE_REFUNDED,
                 ActionState.SKIPPED: pb.CONFLICT_ACTION_STATE_SKIPPED}


def conflict_action(a: ConflictActionRecord) -> pb.ConflictAction:
    return pb.ConflictAction(
        account_id=a.account_id, subscription_id=a.subscription_id, subscription_group=a.subscription_group,
        winner_subscription_id=a.winner_subscription_id, purchase_id=a.purchase_id or "",
        state=ACTION_STATES[ActionState(a.state)], refund_id=a.refund_id or "", reason=a.reason,
        cancel_idempotency_key=cancel_key(a.subscription_id), refund_idempotency_key=refund_key(a.subscription_id),
        decided_at=ts(a.decided_at), updated_at=ts(a.updated_at))


def trace(t: Trace) -> pb.TracePurchaseResponse:
    return pb.TracePurchaseResponse(
        purchase=purchase(t.purchase) if t.purchase else None, events=[event_record(e) for e in t.events],
        subscriptions=[subscription(s) for s in t.subscriptions],
        assignments=[assignment(a, t.config) for a in t.assignments],
        grant_bindings=[binding(b, t.config) for b in t.bindings], funding=[issued(f) for f in t.funding],
        gate_decision=gate_decision(t.decision), audit=[audit_entry(a) for a in t.audit],
        conflict_actions=[conflict_action(a) for a in t.conflict_actions],
    )


def mismatch(r: MismatchRecord) -> pb.Mismatch:
    return pb.Mismatch(mismatch_id=str(r.mismatch_id), kind=r.kind, account_id=r.account_id or "",
                       subscription_id=r.subscription_id or "", fingerprint=r.fingerprint,
                       diff=json.dumps(r.diff, sort_keys=True), opened_at=ts(r.opened_at), closed_at=ts(r.closed_at),
                       resolution=r.resolution or "")
