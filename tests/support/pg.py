"""Statements run on a connection of their own, as tests set databases and roles up and down."""

from __future__ import annotations

import asyncpg


async def execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()
