"""`expand[]`: replace ids with the objects they name, along dotted paths such as
`items.data.price.product` or, in lists, `data.items.data.price.product`. A field inside a nested
hash is named by its path inside the object holding it (`parent.subscription_details.subscription`
of an invoice)."""

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
    ("checkout.session", "payment_intent"): "payment_intent",
    ("charge", "customer"): "customer",
    ("charge", "payment_intent"): "payment_intent",
    ("invoice", "customer"): "customer",
    ("invoice", "parent.subscription_details.subscription"): "subscription",
    ("invoice_payment", "invoice"): "invoice",
    ("item", "price"): "price",
    ("payment_intent", "customer"): "customer",
    ("payment_intent", "latest_charge"): "charge",
    ("price", "product"): "product",
    ("product", "default_price"): "price",
    ("refund", "charge"): "charge",
    ("refund", "payment_intent"): "payment_intent",
    ("subscription", "customer"): "customer",
    ("subscription", "latest_invoice"): "invoice",
    ("subscription_item", "price"): "price",
    ("plan", "product"): "product",
}
# Fields absent unless expanded, rendered from the object's own id.
INCLUDABLE = {("checkout.session", "line_items"): "checkout.session.line_items",
              ("charge", "refunds"): "charge.refunds", ("invoice", "payments"): "invoice.payments"}


def cannot(path: str) -> StripeError:
    return StripeError(400, f"This property cannot be expanded ({path}).", param="expand")


def _step(state: State, obj: Json, parts: list[str], done: list[str], within: tuple[str, str] = ("", "")) -> None:
    """Expands `parts` inside `obj`; `within` is the object holding a nested hash and the hash's path
    in it."""
    head, rest = parts[0], parts[1:]
    done = [*done, head]
    if obj.get("object") == "list" and head == "data":
        for element in obj["data"]:
            if rest:
                _step(state, element, rest, done)
        return
    kind, field = (str(obj["object"]), head) if isinstance(obj.get("object"), str) else (
        within[0], f"{within[1]}.{head}")
    if (kind, field) in INCLUDABLE:
        obj[head] = render(state, INCLUDABLE[(kind, field)], str(obj["id"]))
    elif (kind, field) in EXPANDABLE:
        if isinstance(obj.get(head), str):
            obj[head] = render(state, EXPANDABLE[(kind, field)], obj[head])
    elif not (rest and isinstance(obj.get(head), dict)):
        raise cannot(".".join(done))
    value = obj.get(head)
    if rest and isinstance(value, dict):
        _step(state, value, rest, done, (kind, field))
    elif rest and value is not None:
        raise cannot(".".join(done))


def expand(state: State, obj: Json, paths: Iterable[str]) -> Json:
    for path in paths:
        parts = path.split(".")
        if not all(parts):
            raise cannot(path)
        _step(state, obj, parts, [])
    return obj
