"""API versions: which shape an object is rendered in.

Stripe moved billing periods from the subscription to its items (and priced invoice lines through
`pricing`) in 2025-03-31; webhook endpoints pinned to an older version keep receiving the old shape."""

from __future__ import annotations

import re
from enum import Enum

# The version the stripe 16 SDK pins; events carry it unless their endpoint is pinned to another.
DEFAULT_API_VERSION = "2026-10-28.endive"
PERIODS_ON_ITEMS_SINCE = "2025-03-31"
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")


class Shape(Enum):
    CURRENT = "current"
    LEGACY = "legacy"


def shape_for(api_version: str | None) -> Shape:
    if api_version and api_version[:10] < PERIODS_ON_ITEMS_SINCE:
        return Shape.LEGACY
    return Shape.CURRENT


def is_version(text: str) -> bool:
    return bool(VERSION.match(text))
