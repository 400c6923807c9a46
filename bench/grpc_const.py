"""The CheckGate baseline: `python -m bench.grpc_const PORT [asyncio|uvloop]` serves a bare grpc.aio server
whose only method, EntitlementService/CheckGate, parses the request and returns a constant answer
(no interceptor, no auth, no logging), so h2load's request is identical to the one the service gets.
It runs on asyncio's own loop, or with `uvloop` on the loop the services run on."""

from __future__ import annotations

import asyncio
import json
import sys

import grpc
import uvloop

from selfserve.entitlement.v1 import entitlement_pb2 as pb

from .services import SERVICE

ANSWER = pb.CheckGateResponse(allowed=True, gate_bundle="pro", revision=1)


async def check_gate(request: pb.CheckGateRequest, context: grpc.aio.ServicerContext) -> pb.CheckGateResponse:
    return ANSWER


async def serve(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(check_gate, request_deserializer=pb.CheckGateRequest.FromString,
                                                  response_serializer=pb.CheckGateResponse.SerializeToString)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, {"CheckGate": handler})])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(json.dumps({"event": "listening", "port": port}), file=sys.stderr, flush=True)
    await server.wait_for_termination()


RUNNERS = {"asyncio": asyncio.run, "uvloop": uvloop.run}

if __name__ == "__main__":
    RUNNERS[sys.argv[2] if len(sys.argv) > 2 else "asyncio"](serve(int(sys.argv[1])))
