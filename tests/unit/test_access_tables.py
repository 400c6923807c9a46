from checkout_service.grpc import access as checkout_access
from entitlement_service.grpc import access as entitlement_access
from selfserve.checkout.v1 import checkout_pb2
from selfserve.entitlement.v1 import entitlement_pb2
from service_runtime.auth import Role


def test_every_entitlement_rpc_names_its_roles() -> None:
    rpcs = {m.name for m in entitlement_pb2.DESCRIPTOR.services_by_name["EntitlementService"].methods}
    assert set(entitlement_access.ROLES_BY_RPC) == rpcs


def test_every_checkout_rpc_names_its_roles() -> None:
    rpcs = {m.name for m in checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].methods}
    assert set(checkout_access.ROLES_BY_RPC) == rpcs


def test_support_reads_traces_but_cannot_apply_events() -> None:
    roles = entitlement_access.ROLES_BY_RPC
    assert Role.SUPPORT in roles["TracePurchase"]
    assert Role.SUPPORT not in roles["ApplyProviderEvents"]


def test_product_reads_entitlements_but_not_traces() -> None:
    roles = entitlement_access.ROLES_BY_RPC
    assert Role.PRODUCT in roles["GetEntitlements"]
    assert Role.PRODUCT not in roles["TracePurchase"]
    assert Role.PRODUCT not in roles["ExplainAccount"]
