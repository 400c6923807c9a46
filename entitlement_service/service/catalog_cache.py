"""The catalog in memory, checked against the database's catalog version once per use: a batch
of events resolves every price and rule without reading the catalog tables again."""

from __future__ import annotations

from dataclasses import dataclass

from catalog_rules.model import CatalogConfig, ResolvedPrice
from entitlement_service.db import catalog as db
from entitlement_service.db.pool import Conn
from entitlement_service.domain.price_book import PriceBook


@dataclass(frozen=True)
class CachedCatalog:
    version: int
    config: CatalogConfig
    prices: dict[str, ResolvedPrice]  # as each price resolves now
    book: PriceBook  # as each resolved over time


class CatalogCache:
    def __init__(self) -> None:
        self._held: CachedCatalog | None = None

    async def view(self, conn: Conn, version: int | None = None) -> CachedCatalog:
        """The catalog as this connection sees it now (its own transaction's writes included);
        `version` when the caller has just read the catalog version in the same transaction."""
        version = await db.catalog_version(conn) if version is None else version
        held = self._held
        if held is None or held.version != version:
            prices = await db.load_prices(conn)
            held = CachedCatalog(version, await db.load_config(conn), prices, await db.load_price_book(conn, prices))
            self._held = held
        return held
