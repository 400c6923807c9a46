"""EntitlementService over gRPC: each method converts, calls the service, converts back.

RPCs not overridden here answer UNIMPLEMENTED (the generated base class raises
NotImplementedError, which the error table maps)."""

from __future__ import annotations

from selfserve.entitlement.v1 import entitlement_pb2_grpc


class EntitlementServicer(entitlement_pb2_grpc.EntitlementServiceServicer):
    pass
