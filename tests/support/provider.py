"""Normalized provider events for tests, priced against the example catalog."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.protobuf.timestamp_pb2 import Timestamp

from catalog_rules.file import CatalogFile, parse_catalog
from catalog_rules.model import Price, Product
from checkout_service.catalog_apply import config_message
from entitlement_service.grpc.convert_out import price_snapshot
from selfserve.entitlement.v1 import entitlement_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_CATALOG = ROOT / "deploy" / "catalog.example.toml"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = timedelta(days=30)

STATUS = {name: getattr(pb, f"SUBSCRIPTION_STATUS_{name.upper()}") for name in
          ("incomplete", "incomplete_expired", "trialing", "active", "past_due", "canceled", "unpaid", "paused")}


def price_id(lookup_key: str) -> str:
    return f"price_{lookup_key}"


def catalog_snapshots(file: CatalogFile, price_ids: dict[str, str], at: datetime
                      ) -> tuple[list[Product], list[Price]]:
    """The file's products and prices as the provider holds them once applied, as of `at`, each
    price under the provider id `price_ids` gives its lookup key."""
    products = [spec.as_product(at) for spec in file.products]
    prices = []
    for product in file.products:
        for spec in product.prices:
            if spec.lookup_key not in price_ids:
                raise KeyError(f"no provider price id for lookup key {spec.lookup_key!r}")
            prices.append(spec.as_price(price_ids[spec.lookup_key], product.product_id, at))
    return products, prices


def example_catalog() -> CatalogFile:
    return parse_catalog(EXAMPLE_CATALOG.read_text(encoding="utf-8"))


def example_catalog_request(at: datetime = T0) -> pb.UpsertCatalogRequest:
    """UpsertCatalog for the example catalog as if applied to a provider that named each price
    `price_<lookup_key>`."""
    file = example_catalog()
    ids = {p.lookup_key: price_id(p.lookup_key) for product in file.products for p in product.prices}
    products, prices = catalog_snapshots(file, ids, at)
    return pb.UpsertCatalogRequest(
        config=config_message(file.config),
        products=[pb.ProductSnapshot(product_id=p.product_id, name=p.name, active=p.active, metadata=p.metadata,
                                     provider_updated_at=ts(p.provider_updated_at)) for p in products],
        prices=[price_snapshot(p) for p in prices])


PRODUCT_OF = {"starter_monthly": "starter", "pro_monthly": "pro", "pro_yearly": "pro",
              "team_seats_monthly": "team_seats", "credit_pack_500": "credit_pack_500"}


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def subscription_event(
    event_id: str, subscription_id: str, at: datetime, *, status: str = "active",
    items: Sequence[tuple[str, int]] = (("pro_monthly", 1),), account_id: str | None = "acct_1",
    customer_id: str = "cus_1", start: datetime | None = None, period_end: datetime | None = None,
    cancel_at: datetime | None = None, cancel_at_period_end: bool = False, ended_at: datetime | None = None,
    event_type: str = "customer.subscription.updated", purchase_id: str | None = None,
    price_ids: dict[str, str] | None = None,
) -> pb.ProviderEvent:
    start = start or at
    metadata = {k: v for k, v in (("account_id", account_id), ("purchase_id", purchase_id)) if v}
    return pb.ProviderEvent(
        provider_event_id=event_id, type=event_type, created=ts(at), received_at=ts(at),
        api_version="2026-08-27", raw_payload=b'{"id": "%s"}' % event_id.encode(), account_id=account_id or "",
        subscription=pb.SubscriptionSnapshot(
            subscription_id=subscription_id, provider_customer_id=customer_id, status=STATUS[status],
            created=ts(start), start_date=ts(start), cancel_at=ts(cancel_at), cancel_at_period_end=cancel_at_period_end,
            ended_at=ts(ended_at), metadata=metadata,
            items=[pb.SubscriptionItemSnapshot(
                item_id=f"si_{subscription_id}_{key}", quantity=quantity,
                price=pb.PriceSnapshot(price_id=(price_ids or {}).get(key) or price_id(key),
                                       product_id=PRODUCT_OF.get(key, key)),
                current_period_start=ts(start), current_period_end=ts(period_end or start + MONTH))
                for key, quantity in items],
        ),
    )


# An invoice line: (lookup key, quantity, period start, period end), or with (proration, amount)
# after them for a line that prorates a change.
InvoiceLineSpec = tuple[str, int, datetime, datetime] | tuple[str, int, datetime, datetime, bool, int]


def invoice_line(spec: InvoiceLineSpec) -> pb.InvoiceLine:
    key, quantity, start, end = spec[:4]
    proration, amount = (spec[4], spec[5]) if len(spec) == 6 else (False, 0)
    return pb.InvoiceLine(price_id=price_id(key), quantity=quantity, period_start=ts(start), period_end=ts(end),
                          proration=bool(proration), amount=int(amount))


def invoice_event(event_id: str, invoice_id: str, subscription_id: str, at: datetime, *,
                  lines: Sequence[InvoiceLineSpec] = (), customer_id: str = "cus_1", paid: bool = True,
                  event_type: str = "invoice.paid", billing_reason: str = "subscription_cycle") -> pb.ProviderEvent:
    return pb.ProviderEvent(
        provider_event_id=event_id, type=event_type, created=ts(at), received_at=ts(at),
        raw_payload=b"{}",
        invoice=pb.InvoiceSnapshot(
            invoice_id=invoice_id, subscription_id=subscription_id, provider_customer_id=customer_id,
            status="paid" if paid else "open", paid=paid, billing_reason=billing_reason,
            created=ts(at), paid_at=ts(at) if paid else None, lines=[invoice_line(spec) for spec in lines]),
    )


def session_event(event_id: str, session_id: str, at: datetime, *, purchase_id: str | None = None,
                  mode: str = "payment", payment_status: str = "paid", status: str = "complete",
                  items: Sequence[tuple[str, int]] = (("credit_pack_500", 1),), account_id: str = "acct_1",
                  customer_id: str = "cus_1", subscription_id: str = "",
                  event_type: str = "checkout.session.completed") -> pb.ProviderEvent:
    return pb.ProviderEvent(
        provider_event_id=event_id, type=event_type, created=ts(at), received_at=ts(at), raw_payload=b"{}",
        account_id=account_id,
        checkout_session=pb.CheckoutSessionSnapshot(
            checkout_session_id=session_id, purchase_id=purchase_id or "", provider_customer_id=customer_id,
            mode=pb.PURCHASE_MODE_PAYMENT if mode == "payment" else pb.PURCHASE_MODE_SUBSCRIPTION,
            status=status, payment_status=payment_status, subscription_id=subscription_id,
            metadata={"account_id": account_id, **({"purchase_id": purchase_id} if purchase_id else {})},
            line_items=[pb.CheckoutLineItem(price=pb.PriceSnapshot(price_id=price_id(k), product_id=PRODUCT_OF[k]),
                                            quantity=n) for k, n in items],
            created=ts(at)),
    )
