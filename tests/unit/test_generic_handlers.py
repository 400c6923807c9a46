"""Services are served through their generic handlers alone, so grpc.aio's accept loop waits on one
pending request rather than one per method."""

from typing import Any

import grpc

from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.grpc_server import GenericHandlersOnly

CHECK_GATE = "/selfserve.entitlement.v1.EntitlementService/CheckGate"


class RecordingServer:
    def __init__(self) -> None:
        self.generic: list[grpc.GenericRpcHandler] = []
        self.registered: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        self.generic.extend(handlers)

    def add_registered_method_handlers(self, service: str, handlers: Any) -> None:
        self.registered.append(service)


class Details:
    def __init__(self, method: str) -> None:
        self.method = method
        self.invocation_metadata = ()


def test_the_generated_registration_reaches_the_server_as_a_generic_handler_only() -> None:
    server = RecordingServer()
    entitlement_pb2_grpc.add_EntitlementServiceServicer_to_server(
        entitlement_pb2_grpc.EntitlementServiceServicer(), GenericHandlersOnly(server))  # type: ignore[abstract]
    assert server.registered == []
    [handler] = server.generic
    assert handler.service(Details(CHECK_GATE)) is not None
    assert handler.service(Details("/selfserve.entitlement.v1.EntitlementService/NoSuchMethod")) is None
