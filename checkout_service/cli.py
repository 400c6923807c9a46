"""Command-line entry points of the checkout service."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc

from checkout_service.catalog_apply import apply
from checkout_service.entitlement_client import open_channel
from checkout_service.settings import Settings
from checkout_service.stripe.gateway import ProviderError, StripeGateway
from entitlement_service.domain.catalog_file import CatalogFile, CatalogFileError, load_catalog
from selfserve.entitlement.v1 import entitlement_pb2_grpc


def catalog_apply(path: str) -> int:
    try:
        file = load_catalog(Path(path))
    except CatalogFileError as exc:
        print(f"catalog refused, nothing was written:\n{exc}")
        return 2
    settings = Settings.from_env()
    return asyncio.run(_apply(file, settings))


async def _apply(file: CatalogFile, settings: Settings) -> int:
    channel = open_channel(settings.entitlement_target, settings.entitlement_token)
    provider = StripeGateway(settings.stripe_api_key, settings.stripe_api_base)
    try:
        report, reply = await apply(file, provider, entitlement_pb2_grpc.EntitlementServiceStub(channel))
    except ProviderError as exc:
        print(f"the provider refused: {exc}")
        return 1
    except grpc.aio.AioRpcError as exc:
        print(f"the entitlement service refused: {exc.code().name}: {exc.details()}")
        return 1
    finally:
        await provider.close()
        await channel.close()
    print(report.line())
    changed = [e for e in reply.entries if e.changed]
    invalid = [e for e in reply.entries if not e.valid]
    print(f"entitlement service: {len(changed)} entries changed, {len(reply.entries) - len(changed)} unchanged")
    for entry in invalid:
        print(f"  invalid {entry.kind} {entry.id}: {entry.invalid_reason}")
    return 1 if invalid else 0
