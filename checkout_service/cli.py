"""Command-line entry points of the checkout service."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from pathlib import Path

import grpc

from catalog_rules.file import CatalogFile, CatalogFileError, parse_catalog
from checkout_service.catalog_apply import apply
from checkout_service.entitlement_client import open_channel
from checkout_service.settings import Settings
from checkout_service.stripe.gateway import ProviderError, StripeGateway
from selfserve.entitlement.v1 import entitlement_pb2_grpc
from service_runtime.auth import Role
from service_runtime.config import ConfigError


def read_catalog(path: Path) -> CatalogFile:
    """The catalog in the file at `path`; every error line starts with the file name."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogFileError([f"{path}: cannot read the catalog: {exc}"]) from None
    try:
        return parse_catalog(text)
    except CatalogFileError as exc:
        raise CatalogFileError([f"{path}: {line}" for line in exc.errors]) from None


def operator_token(settings: Settings, environ: Mapping[str, str]) -> str:
    """Rewriting the catalog is the operator's: the command presents `ENTITLEMENT_TOKEN` (set to the
    operator's token), else a plain `operator:` entry in `SERVICE_TOKENS`, as a local stack lists
    every role's token; never the checkout service's own token."""
    token = environ.get("ENTITLEMENT_TOKEN", "").strip() or settings.service_tokens.token_for(Role.OPERATOR)
    if not token:
        raise ConfigError("catalog apply presents the operator's token: set ENTITLEMENT_TOKEN to it (or list "
                          "operator:<token> in SERVICE_TOKENS)")
    return token


def catalog_apply(path: str, dry_run: bool = False) -> int:
    try:
        file = read_catalog(Path(path))
    except CatalogFileError as exc:
        print(f"catalog refused, nothing was written:\n{exc}")
        return 2
    settings = Settings.from_env()
    return asyncio.run(_apply(file, settings, operator_token(settings, os.environ), dry_run))


async def _apply(file: CatalogFile, settings: Settings, token: str, dry_run: bool) -> int:
    channel = open_channel(settings.entitlement_target, token, tls=settings.entitlement_tls)
    provider = StripeGateway(settings.stripe_api_key, settings.stripe_api_base, timeout_s=settings.stripe_timeout_s,
                             max_retries=settings.stripe_max_retries, deadline_s=settings.stripe_deadline_s)
    try:
        report, reply = await apply(file, provider, entitlement_pb2_grpc.EntitlementServiceStub(channel),
                                    dry_run=dry_run)
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
    verb = "would change" if reply.dry_run else "changed"
    print(f"entitlement service: {len(changed)} entries {verb}, {len(reply.entries) - len(changed)} unchanged; "
          f"accounts derived again: {reply.accounts_affected}{' (dry run: none was)' if reply.dry_run else ''}")
    for entry in invalid:
        print(f"  invalid {entry.kind} {entry.id}: {entry.invalid_reason}")
    return 1 if invalid else 0
