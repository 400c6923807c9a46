"""`expand[]`: replace ids with the objects they name, along dotted paths such as
`items.data.price.product` or, in lists, `data.items.data.price.product`."""

from __future__ import annotations

from collections.abc import Iterable

from provider_sim.errors import StripeError
from provider_sim.model import Json
from provider_sim.resources.registry import render
from provider_sim.store import State

# (object type, field) → the kind of object its id names.
EXPANDABLE = {
    ("checkout.session", "customer"): "customer",
    ("checkout.session", "invoice"): "invoice",
    ("checkout.session", "subscription"): "subscription",
    ("invoice", "customer"): "customer",
    ("invoice", "subscription"): "subscription",
    ("item", "price"): "price",
    ("price", "product"): "product",
    ("product", "default_price"): "price",
    ("subscription", "customer"): "customer",
    ("subscription", "latest_invoice"): "invoice",
    ("subscription_item", "price"): "price",
    ("plan", "product"): "product",
}
# Fields absent unless expanded, rendered from the object's own id.
INCLUDABLE = {("checkout.session", "line_items"): "checkout.session.line_items"}


def cannot(path: str) -> StripeError:
    return StripeError(400, f"This property cannot be expanded ({path}).", param="expand")


def _step(state: State, obj: Json, parts: list[str], done: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    done = [*done, head]
    if obj.get("object") == "list" and head == "data":
        for element in obj["data"]:
            if rest:
                _step(state, element, rest, done)
        return
    kind = str(obj.get("object"))
    if (kind, head) in INCLUDABLE:
        obj[head] = render(state, INCLUDABLE[(kind, head)], str(obj["id"]))
    elif (kind, head) in EXPANDABLE:
        if isinstance(obj.get(head), str):
            obj[head] = render(state, EXPANDABLE[(kind, head)], obj[head])
    elif not (rest and isinstance(obj.get(head), dict)):
        raise cannot(".".join(done))
    value = obj.get(head)
    if rest and isinstance(value, dict):
        _step(state, value, rest, done)
    elif rest and value is not None:
        raise cannot(".".join(done))


def expand(state: State, obj: Json, paths: Iterable[str]) -> Json:
    for path in paths:
        parts = path.split(".")
        if not all(parts):
            raise cannot(path)
        _step(state, obj, parts, [])
    return obj
