"""Fresh databases for a benchmark run on the local PostgreSQL server, dropped at the end."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

import asyncpg

from devstack.pg import Database, ensure_database, server_url_for
from entitlement_service.db.migrate import migrate

from .procs import ROOT


def _quiet(_: str) -> None:
    """devstack's discovery narrates each step; the benchmark only needs the outcome."""


@dataclass
class Server:
    """The server `make run` would use (see devstack/pg.py), and the databases made on it."""

    first: Database
    created: list[str] = field(default_factory=list)

    @classmethod
    async def find(cls) -> Server:
        """DATABASE_URL's server, else one on 127.0.0.1:5432, else a private cluster (stopped at the end)."""
        return cls(await asyncio.to_thread(ensure_database, ROOT, "postgres", log=_quiet))

    @property
    def admin_url(self) -> str:
        return server_url_for(self.first.url, "postgres")

    def url(self, name: str) -> str:
        return server_url_for(self.first.url, name)

    async def create(self, suffix: str, *, migrated: bool = True) -> str:
        """A new empty database `bench_<pid>_<suffix>` (the project's schema when `migrated`); its URL."""
        name = f"bench_{os.getpid()}_{suffix}"
        conn = await asyncpg.connect(self.admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.created.append(name)
        url = self.url(name)
        if migrated:
            conn = await asyncpg.connect(url)
            try:
                await migrate(conn)
            finally:
                await conn.close()
        return url

    async def drop_all(self) -> None:
        conn = await asyncpg.connect(self.admin_url)
        try:
            for name in reversed(self.created):
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
        self.created.clear()
        await asyncio.to_thread(self.first.stop)


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetchval(url: str, sql: str, *args: object) -> object:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(sql, *args)
    finally:
        await conn.close()
