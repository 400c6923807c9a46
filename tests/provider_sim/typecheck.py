"""Type-checking JSON objects against Stripe's published TypeScript types.

Each object becomes one TypeScript file, `export const value: Stripe.<Type> = <literal>;`, the JSON
written inline as an object literal, so `tsc --strict` checks it as an exact type: an unknown field
is an excess property (TS2353, at any depth, arrays included), a missing field a missing required
property, a wrong type a failed assignment. The package in tests/provider_sim/stripe_types pins the
`stripe` package whose types carry the simulator's default API version (`stripe`) and one whose
types carry a version before 2025-03-31 (`stripe-v17`), and TypeScript itself; both are installed
with `npm ci` from its lock file, once per lock file (a stamp in node_modules keeps its hash).

Decimals: the wire carries a decimal as a string; the `stripe` package from 23 on types the fields
below as `Stripe.Decimal` (the SDK parses them), so exactly these paths are written as
`decimal("<the wire string>")`, a declared function answering a `Stripe.Decimal`. Each path is the
field's path inside the nearest enclosing object with an `object` discriminator, which is where the
package's types declare it (`Price.unit_amount_decimal`, `Plan.amount_decimal`,
`InvoiceLineItem.quantity_decimal`, `InvoiceLineItem.Pricing.unit_amount_decimal`). The list is
checked both ways by the type-check itself: a decimal field left out stays a string and fails to
assign to `Decimal`, a field put in that is not a decimal fails to assign a `Decimal` to it.

Added metadata keys: an update event's `previous_attributes.metadata` shows a key the change added
as null (Stripe's own `product.updated` events do: `"previous_attributes": {"metadata": {"tier":
null}}`), while the package types `previous_attributes` as `Partial<Object>`, whose `metadata` holds
strings only. Exactly those nulls (an event's `data.previous_attributes.metadata.<key>`) are written
as `added()`, a declared function answering a string; any other null there still fails."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import npm as npm_tools

PACKAGE = Path(__file__).resolve().parent / "stripe_types"
DECIMAL_FIELDS = frozenset({
    ("price", "unit_amount_decimal"),
    ("plan", "amount_decimal"),
    ("line_item", "quantity_decimal"),
    ("line_item", "pricing.unit_amount_decimal"),
})
WIRE_DECIMAL = re.compile(r"^-?\d+(\.\d{1,12})?$")
ADDED_KEY = re.compile(r"^metadata\.[^.]+$")
Json = dict[str, Any]


@dataclass(frozen=True)
class Program:
    """One set of Stripe types: the package `import type Stripe from 'stripe'` resolves to, and the
    decimal paths its types declare as `Stripe.Decimal`."""

    name: str
    package: str
    decimals: frozenset[tuple[str, str]]
    undeclared: frozenset[tuple[str, str]] = frozenset()


CURRENT = Program("current", "stripe", DECIMAL_FIELDS)
# stripe 17 types decimals as strings. Its types leave out a subscription's `plan` and `quantity`
# (deprecated since subscriptions have items, and left out of the published types), which Stripe
# still sends to older API versions for a subscription of one item and which the simulator's legacy
# shape keeps (tests/provider_sim/test_delivery.py); exactly those two are left out of the literal.
LEGACY = Program("legacy", "stripe-v17", frozenset(), frozenset({("subscription", "plan"),
                                                                  ("subscription", "quantity")}))


@dataclass(frozen=True)
class Sample:
    """One object to check: a name (its file's), the Stripe type it must be, its JSON."""

    name: str
    type: str
    value: Any


def install() -> str:
    """Installs the pinned packages when the lock file changed; answers the node binary."""
    node, npm = npm_tools.node_tools("checking the simulator against Stripe's types")
    npm_tools.install(PACKAGE, npm, "--ignore-scripts")
    return node


def api_version_of(package: str) -> str:
    """The API version a stripe package's types carry, read from the package itself."""
    root = PACKAGE / "node_modules" / package
    for candidate, pattern in ((root / "cjs" / "apiVersion.d.ts", r'ApiVersion = "([^"]+)"'),
                               (root / "types" / "lib.d.ts", r"LatestApiVersion = '([^']+)'")):
        if candidate.exists():
            found = re.search(pattern, candidate.read_text())
            if found:
                return found.group(1)
    raise AssertionError(f"no API version found in {root}")


def event_type_name(event_type: str) -> str:
    """`customer.subscription.created` → `CustomerSubscriptionCreatedEvent`, as the package names it."""
    return "".join(part.capitalize() for part in re.split(r"[._]", event_type)) + "Event"


@dataclass(frozen=True)
class At:
    """Where a value sits: the kind of the nearest object holding it (an event's
    `previous_attributes` count as the kind of the event's object) and its path inside it."""

    kind: str = ""
    path: str = ""
    previous: bool = False
    owner: str = ""  # in an event: the kind of its object

    def child(self, key: str) -> At:
        if self.kind == "event" and self.path == "data" and key == "previous_attributes":
            return At(self.owner, "", previous=True)
        return At(self.kind, f"{self.path}.{key}" if self.path else key, self.previous, self.owner)


def literal(value: Any, program: Program, at: At = At(), indent: int = 0) -> str:
    """The TypeScript literal of a JSON value, one property per line, decimals and the other
    documented differences mapped."""
    pad, inner = "  " * indent, "  " * (indent + 1)
    if isinstance(value, dict):
        if isinstance(value.get("object"), str):
            at = At(value["object"], "", owner=_object_kind(value))
        lines = []
        for key, item in value.items():
            field = at.child(key)
            if (field.kind, field.path) in program.undeclared:
                continue
            if (field.kind, field.path) in program.decimals:
                text = _decimal(item, field.kind, field.path)
            elif field.previous and item is None and ADDED_KEY.match(field.path):
                text = "added()"
            else:
                text = literal(item, program, field, indent + 1)
            lines.append(f"{inner}{json.dumps(key)}: {text}")
        if not lines:
            return "{}"
        return "{\n" + ",\n".join(lines) + f"\n{pad}}}"
    if isinstance(value, list):
        if not value:
            return "[]"
        items = [f"{inner}{literal(item, program, at, indent + 1)}" for item in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value)


def _object_kind(value: Json) -> str:
    """An event's object's kind (what its `previous_attributes` describe); empty for others."""
    data = value.get("data")
    if value.get("object") == "event" and isinstance(data, dict) and isinstance(data.get("object"), dict):
        return str(data["object"].get("object", ""))
    return ""


def _decimal(value: Any, kind: str, field: str) -> str:
    if value is None:
        return "null"
    assert isinstance(value, str) and WIRE_DECIMAL.match(value), (
        f"{kind}.{field} must be a decimal string on the wire, got {value!r}")
    return f"decimal({json.dumps(value)})"


def source(sample: Sample, program: Program) -> str:
    lines = ["import type Stripe from 'stripe';", "declare function added(): string;"]
    if program.decimals:
        lines.append("declare function decimal(wire: string): Stripe.Decimal;")
    lines.append(f"export const value: {sample.type} = {literal(sample.value, program)};")
    return "\n".join(lines) + "\n"


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]+", "_", name).strip("_") + ".ts"


@dataclass(frozen=True)
class Result:
    """tsc's answer: its exit code, and its error lines per file, each with the offending line."""

    returncode: int
    errors: dict[str, list[str]]
    output: str

    def failed(self) -> set[str]:
        return set(self.errors)

    def report(self, names: Iterable[str] | None = None) -> str:
        wanted = set(names) if names is not None else set(self.errors)
        return "\n".join(f"{name}:\n  " + "\n  ".join(lines) for name, lines in sorted(self.errors.items())
                         if name in wanted)


ERROR = re.compile(r"^(?P<file>[^()\s]+\.ts)\((?P<line>\d+),(?P<col>\d+)\): (?P<message>error .*)$")


def check(node: str, program: Program, samples: list[Sample]) -> Result:
    """Runs `tsc --strict --noEmit` over one file per sample against the program's package."""
    names = [file_name(s.name) for s in samples]
    assert len(set(names)) == len(names), "sample names must differ"
    folder = Path(tempfile.mkdtemp(prefix=f"checked-{program.name}-", dir=PACKAGE))
    try:
        for sample, name in zip(samples, names, strict=True):
            (folder / name).write_text(source(sample, program))
        options: dict[str, Any] = {}
        if program.package != "stripe":
            options["paths"] = {"stripe": [f"../node_modules/{program.package}"]}
        config = {"extends": "../tsconfig.json", "compilerOptions": options, "files": names}
        (folder / "tsconfig.json").write_text(json.dumps(config, indent=2))
        tsc = PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
        done = subprocess.run([node, str(tsc), "-p", str(folder / "tsconfig.json"), "--pretty", "false"],
                              cwd=folder, capture_output=True, text=True, timeout=600, check=False)
        errors: dict[str, list[str]] = {}
        sources = {name: (folder / name).read_text().splitlines() for name in names}
        for line in done.stdout.splitlines():
            found = ERROR.match(line)
            if found is None:
                if errors and line.startswith(" "):
                    errors[list(errors)[-1]].append(line.strip())
                continue
            name = Path(found["file"]).name
            text = sources.get(name, [])
            number = int(found["line"])
            at = text[number - 1].strip() if 0 < number <= len(text) else ""
            errors.setdefault(name[:-3], []).append(f"line {number} `{at[:160]}`: {found['message']}")
        if done.returncode != 0 and not errors:
            errors["(tsc)"] = [done.stdout, done.stderr]
        return Result(done.returncode, errors, done.stdout + done.stderr)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
