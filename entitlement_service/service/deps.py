"""What the entitlement use cases need, passed in explicitly."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from entitlement_service.db.listener import Listener
from entitlement_service.db.pool import PoolHandle
from entitlement_service.domain.provider import ProviderEvent
from entitlement_service.service.catalog_cache import CatalogCache


@dataclass(frozen=True)
class Deps:
    pool: PoolHandle
    # Turns a stored normalized event back into its domain form (the transport's format).
    decode_event: Callable[[bytes], ProviderEvent]
    clock: Callable[[], datetime]
    # How long a browser that came back waits for the provider before it is told "still processing".
    return_timeout: timedelta = timedelta(minutes=2)
    catalog: CatalogCache = field(default_factory=CatalogCache)
    # Told each account a write transaction changed, with its new revision, once it commits
    # (service/transactions.py); account "*" (revision 0) after a catalog change.
    committed: Listener = field(default=lambda account_id, revision: None)
