"""`product` objects."""

from __future__ import annotations

from provider_sim.model import Json, Product


def render_product(product: Product) -> Json:
    return {
        "id": product.id,
        "object": "product",
        "active": product.active,
        "created": product.created,
        "default_price": product.default_price,
        "description": product.description,
        "images": list(product.images),
        "livemode": False,
        "marketing_features": [],
        "metadata": dict(product.metadata),
        "name": product.name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": product.statement_descriptor,
        "tax_code": product.tax_code,
        "tax_details": {"performance_location": None, "tax_code": product.tax_code} if product.tax_code else None,
        "type": "service",
        "unit_label": product.unit_label,
        "updated": product.updated,
        "url": product.url,
    }
