"""`billing_portal.session` objects."""

from __future__ import annotations

from provider_sim.model import Json, PortalSession


def render_portal_session(session: PortalSession) -> Json:
    return {
        "id": session.id,
        "object": "billing_portal.session",
        "configuration": session.configuration,
        "created": session.created,
        "customer": session.customer,
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": None,
        "on_behalf_of": None,
        "return_url": session.return_url,
        "url": session.url,
    }
