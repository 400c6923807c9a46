"""The catalog in memory, checked against the database's catalog version once per use: a batch
of events resolves every price and rule without reading the catalog tables again."""

from __future__ import annotations

from dataclasses import dataclass

from catalog_rules.model import CatalogConfig, ResolvedPrice
from entitlement_service.db import queries as q


@dataclass(frozen=True)
class CatalogView:
    version: int
    config: CatalogConfig
    prices: dict[str, ResolvedPrice]

    def prices_for(self, price_ids: set[str] | list[str]) -> dict[str, ResolvedPrice]:
        return {pid: self.prices[pid] for pid in price_ids if pid in self.prices}


class CatalogCache:
    def __init__(self) -> None:
        self._held: CatalogView | None = None

    async def view(self, conn: q.Conn, version: int | None = None) -> CatalogView:
        """The catalog as this connection sees it now (its own transaction's writes included);
        `version` when the caller has just read the catalog version in the same transaction."""
        version = await q.catalog_version(conn) if version is None else version
        held = self._held
        if held is None or held.version != version:
            held = CatalogView(version, await q.load_config(conn), await q.load_prices(conn))
            self._held = held
        return held
