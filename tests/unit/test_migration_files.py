"""Migrations are numbered, forward-only files that never change once shipped."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from entitlement_service.db.migrate import MigrationError, load_migrations, read_migrations

# Each shipped migration's text, pinned: a database that applied it must never meet a different
# one under its number (the service refuses to start then). Change nothing here; add a migration.
SHIPPED = {
    1: "c286c737ef1b2cd2dabda2c1de21bf593145bc7a84f67099787739a26062cd91",
    2: "76ec81b83cf8aa88def3e05b88a037e0bc9ede77474c657218af244e16e1830e",
    3: "03e8264e669ee9669f908e077a2a17626a5164c7cddae3ec962cec3bf0c4ca77",
    4: "d8e299c2306b944aeb2ca049c8b07c907de7e9078f92c8da095bb11204d4814a",
    5: "47ff05f9504bcbc52b322eab3d5e6142f116a1e15e49c07a30a0a1ccf6da75f5",
    6: "e0b68b7a979a8c1dfc91fdcf1f25a72f45c656a23c7cca33e539f6c12ac28900",
    7: "445ae9c8d527159a700b0b50e81c24b67feca56bde5dc65a77522640c8f6de9c",
    8: "2279055c730fb62675681282a8fa915b24632d648e6abcba311928a72b7f526d",
    9: "fb9add8a4ad070ef72ce2dfc5056801b38fb58fb2e41c216a2b3b6356c1b2f40",
    10: "071cb74db2ed4e987df0d7d7a710d01b50d6448b0881ea29f81404d056a7530e",
    11: "59b7b3f4225bb438d1e783eafc6b4f28e8bed1e1a440a57c5f5a656b5ad62fea",
    12: "f7cb9b167f20fab9390ce22c5e35b990f588237404dd3cbe5cce9059b8998797",
}


def test_a_shipped_migration_keeps_its_text() -> None:
    found = {m.version: hashlib.sha256(m.sql.encode()).hexdigest() for m in load_migrations()}
    assert {version: found.get(version) for version in SHIPPED} == SHIPPED


def write(folder: Path, *names: str) -> list[Path]:
    for name in names:
        (folder / name).write_text(f"-- {name}\nSELECT 1;\n")
    return sorted(folder.iterdir(), reverse=True)


def test_migrations_are_read_in_version_order_and_other_files_are_ignored(tmp_path: Path) -> None:
    entries = write(tmp_path, "0002_add_thing.sql", "0001_create_thing.sql", "README.md", "__init__.py")
    assert [(m.version, m.name) for m in read_migrations(entries)] == [(1, "create_thing"), (2, "add_thing")]


@pytest.mark.parametrize(("names", "problem"), [
    (("0001_create_thing.sql", "0003_add_thing.sql"), "without gaps, found \\[1, 3\\]"),
    (("0001_create_thing.sql", "0001_create_other.sql"), "without gaps, found \\[1, 1\\]"),
    (("0002_add_thing.sql",), "without gaps, found \\[2\\]"),
    (("0001_create_thing.sql", "2_add_thing.sql"), "2_add_thing.sql must be named NNNN_verb_noun.sql"),
    (("0001_Create-Thing.sql",), "must be named NNNN_verb_noun.sql"),
], ids=["a gap", "a number used twice", "not starting at one", "an unpadded number", "not snake case"])
def test_a_badly_numbered_or_named_migration_is_refused(tmp_path: Path, names: tuple[str, ...], problem: str) -> None:
    with pytest.raises(MigrationError, match=problem):
        read_migrations(write(tmp_path, *names))
