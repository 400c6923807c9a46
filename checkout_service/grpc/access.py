"""Which roles may call which CheckoutService RPC (docs/contract.md lists them)."""

from __future__ import annotations

from service_runtime.auth import Role

SERVICE = "selfserve.checkout.v1.CheckoutService"

ROLES_BY_RPC: dict[str, frozenset[Role]] = {
    "CreateCheckoutSession": frozenset({Role.PRODUCT}),
    "CreatePortalSession": frozenset({Role.PRODUCT}),
    "GetPurchase": frozenset({Role.PRODUCT}),
    "ListCatalog": frozenset({Role.PRODUCT}),
    "Reconcile": frozenset({Role.OPERATOR}),
    "ReplayUnreadableEvents": frozenset({Role.OPERATOR}),
}

ROLES_BY_METHOD = {f"/{SERVICE}/{rpc}": roles for rpc, roles in ROLES_BY_RPC.items()}
