"""Which roles may call which EntitlementService RPC (docs/contract.md lists them)."""

from __future__ import annotations

from service_runtime.auth import Role

SERVICE = "selfserve.entitlement.v1.EntitlementService"

_P, _C, _S, _O = Role.PRODUCT, Role.CHECKOUT, Role.SUPPORT, Role.OPERATOR

ROLES_BY_RPC: dict[str, frozenset[Role]] = {
    "GetEntitlements": frozenset({_P, _C, _S}),
    "CheckGate": frozenset({_P}),
    "WatchEntitlements": frozenset({_P}),
    "ListCatalog": frozenset({_P, _C}),
    "ValidatePurchase": frozenset({_C}),
    "RegisterPurchase": frozenset({_C}),
    "MarkPurchaseReturned": frozenset({_C}),
    "GetPurchase": frozenset({_C, _P, _S}),
    "GetAccount": frozenset({_C, _S}),
    "LinkProviderCustomer": frozenset({_C}),
    "ApplyProviderEvents": frozenset({_C}),
    "UpsertCatalog": frozenset({_O}),
    "TracePurchase": frozenset({_S, _O}),
    "ExplainAccount": frozenset({_S, _O}),
    "ListMismatches": frozenset({_S, _O}),
    "GetReconcileState": frozenset({_C}),
    "ApplyReconciliation": frozenset({_C}),
    "LeaseReconciler": frozenset({_C}),
    "ReplayEvents": frozenset({_O}),
    "ReplayUnreadableEvents": frozenset({_C}),
    "RecordConflictAction": frozenset({_C, _O}),
    "PreviewPurchase": frozenset({_P, _C, _S}),
}

ROLES_BY_METHOD = {f"/{SERVICE}/{rpc}": roles for rpc, roles in ROLES_BY_RPC.items()}
