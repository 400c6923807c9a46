"""The layering rules, checked over every import in the code (`make lint` runs this file):

- the rules (`entitlement_service/domain/`, and `catalog_rules/` that both services share) import
  only the standard library and the rules themselves;
- the use cases (`entitlement_service/service/`) never import a transport (`grpc`, the generated
  stubs, the servicer's converters);
- the db layer never reaches up into the use cases or the transport;
- `asyncpg` is imported nowhere in the product but `entitlement_service/db/`;
- the checkout service never imports the entitlement service (they share `catalog_rules`,
  `service_runtime` and the wire contract);
- the client for product backends (`selfserve/client/`) imports only grpc, protobuf, the
  generated stubs and the standard library, so it installs without the services' dependencies."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("catalog_rules", "entitlement_service", "checkout_service", "service_runtime", "provider_sim")
STANDARD = frozenset(sys.stdlib_module_names) | {"__future__"}


def imports_of(source: str, module: str) -> Iterator[str]:
    """Every module a source imports, absolute (relative imports resolved against `module`)."""
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).strip(".")
            # `from package import module` imports the module; a name that is not one only
            # lengthens the path it is checked by.
            yield from (base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)


def modules(*packages: str) -> list[tuple[str, str]]:
    found = []
    for package in packages:
        for path in sorted((ROOT / package.replace(".", "/")).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found.append((name, path.read_text(encoding="utf-8")))
    return found


def within(name: str, *prefixes: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def breaches(packages: tuple[str, ...], allowed: tuple[str, ...] = (), forbidden: tuple[str, ...] = ()) -> list[str]:
    """`module imports x` for each import of the packages' modules that is `forbidden`, or, when
    `allowed` is given instead, that is neither allowed nor the standard library."""
    found = []
    for name, source in modules(*packages):
        for imported in imports_of(source, name):
            if forbidden:
                breach = within(imported, *forbidden)
            else:
                breach = not within(imported, *allowed) and imported.split(".")[0] not in STANDARD
            if breach:
                found.append(f"{name} imports {imported}")
    return found


RULES = {
    "the rules import only the standard library and the rules": lambda: breaches(
        ("entitlement_service.domain", "catalog_rules"), allowed=("entitlement_service.domain", "catalog_rules")),
    "the shared catalog rules import only the standard library and themselves": lambda: breaches(
        ("catalog_rules",), allowed=("catalog_rules",)),
    "the use cases import no transport": lambda: breaches(
        ("entitlement_service.service",), forbidden=("grpc", "selfserve", "entitlement_service.grpc", "aiohttp")),
    "the db layer never reaches up into the use cases or the transport": lambda: breaches(
        ("entitlement_service.db",), forbidden=("entitlement_service.service", "entitlement_service.grpc", "grpc",
                                                "selfserve")),
    "asyncpg only in the entitlement service's db layer": lambda: [
        b for b in breaches(PRODUCT, forbidden=("asyncpg",)) if not b.startswith("entitlement_service.db.")],
    "the checkout service never imports the entitlement service": lambda: breaches(
        ("checkout_service",), forbidden=("entitlement_service",)),
    "the client imports only grpc, protobuf, the generated stubs and itself": lambda: breaches(
        ("selfserve.client",), allowed=("grpc", "google.protobuf", "selfserve.entitlement", "selfserve.client")),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_every_import_keeps_the_layering(rule: str) -> None:
    assert RULES[rule]() == []


def test_the_checker_sees_imports_of_every_form() -> None:
    source = ("import asyncpg\nfrom grpc import aio\nfrom . import rows\nfrom ..db import pool\nimport os.path\n"
              "from entitlement_service import grpc\n")
    assert list(imports_of(source, "entitlement_service.service.events")) == [
        "asyncpg", "grpc.aio", "entitlement_service.service.rows", "entitlement_service.db.pool", "os.path",
        "entitlement_service.grpc"]


def test_the_checker_finds_every_package_it_is_given() -> None:
    names = {name for name, _ in modules(*PRODUCT)}
    assert {"entitlement_service.domain.timeline", "entitlement_service.db.derived", "catalog_rules.metadata",
            "checkout_service.stripe.normalize"} <= names
