"""The entitlement service as its own process, its catalog and accounts, for the gRPC scenarios."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from selfserve.entitlement.v1 import entitlement_pb2 as pb
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from tests.support.provider import example_catalog_request, price_id

from .procs import ROOT, Child, free_port, python_module, spawn

EXAMPLE_CATALOG = ROOT / "deploy" / "catalog.example.toml"
SERVICE = "selfserve.entitlement.v1.EntitlementService"
TOKENS = {role: f"{role.value}-bench-{secrets.token_hex(12)}" for role in Role}
SERVICE_TOKENS = ",".join(f"{role.value}:{token}" for role, token in TOKENS.items())


def bearer(role: Role) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {TOKENS[role]}"),)


@dataclass
class Entitlement:
    child: Child
    target: str
    metrics_url: str

    def stub(self, channel: grpc.aio.Channel) -> entitlement_pb2_grpc.EntitlementServiceStub:
        return entitlement_pb2_grpc.EntitlementServiceStub(channel)


async def start_entitlement(name: str, database_url: str, log_dir: Path, cpus: str | None = None) -> Entitlement:
    """`python -m entitlement_service` on free ports; returns once `/readyz` says it is migrated and
    listening for change notifications."""
    grpc_port, metrics_port = free_port(), free_port()
    env = {"DATABASE_URL": database_url, "SERVICE_TOKENS": SERVICE_TOKENS,
           "ENTITLEMENT_GRPC_ADDR": f"127.0.0.1:{grpc_port}", "ENTITLEMENT_METRICS_ADDR": f"127.0.0.1:{metrics_port}"}
    child = spawn(name, python_module("entitlement_service"), env, log_dir, cpus)
    try:
        await child.wait_until_ready(f"http://127.0.0.1:{metrics_port}/readyz")
    except BaseException:
        await child.stop()
        raise
    return Entitlement(child, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics")


async def load_example_catalog(channel: grpc.aio.Channel) -> None:
    stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
    await stub.UpsertCatalog(example_catalog_request(datetime(2026, 1, 1, tzinfo=UTC)), metadata=bearer(Role.OPERATOR))


def _ts(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def subscription_created(account_id: str, n: int, lookup_key: str = "pro_monthly",
                         at: datetime | None = None) -> pb.ProviderEvent:
    """A normalized `customer.subscription.created` (active, one item) for a new account."""
    at = at or datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    sub = f"sub_bench_{account_id}_{n}"
    return pb.ProviderEvent(
        provider_event_id=f"evt_bench_{account_id}_{n}", type="customer.subscription.created", created=_ts(at),
        received_at=_ts(at), api_version="2026-08-27", raw_payload=b"{}", account_id=account_id,
        subscription=pb.SubscriptionSnapshot(
            subscription_id=sub, provider_customer_id=f"cus_bench_{account_id}",
            status=pb.SUBSCRIPTION_STATUS_ACTIVE, created=_ts(at), start_date=_ts(at),
            metadata={"account_id": account_id},
            items=[pb.SubscriptionItemSnapshot(
                item_id=f"si_{sub}", quantity=1,
                price=pb.PriceSnapshot(price_id=price_id(lookup_key), product_id=lookup_key.split("_")[0]),
                current_period_start=_ts(at), current_period_end=_ts(at + timedelta(days=30)))]),
    )


async def apply_events(channel: grpc.aio.Channel, events: list[pb.ProviderEvent]) -> list[str]:
    """Applies events one by one as the checkout service does; returns their outcome names."""
    stub = entitlement_pb2_grpc.EntitlementServiceStub(channel)
    outcomes = []
    for event in events:
        reply = await stub.ApplyProviderEvents(pb.ApplyProviderEventsRequest(events=[event]),
                                               metadata=bearer(Role.CHECKOUT))
        outcomes.append(pb.EventOutcome.Name(reply.results[0].outcome))
    return outcomes


async def metric_sum(metrics_url: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus metric's samples whose labels include `labels`."""
    async with aiohttp.ClientSession() as http, http.get(metrics_url) as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{key}="{wanted}"' in head for key, wanted in labels.items()):
            total += float(value)
    return total
