"""CheckoutService over gRPC: each method converts, calls the service, converts back.

RPCs not overridden here answer UNIMPLEMENTED (the generated base class raises
NotImplementedError, which the error table maps)."""

from __future__ import annotations

from selfserve.checkout.v1 import checkout_pb2_grpc


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    pass
