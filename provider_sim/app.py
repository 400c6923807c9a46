"""The aiohttp application, wired explicitly: `create_app(state, clock, deliverer, options)`."""

from __future__ import annotations

from aiohttp import web

from provider_sim import control, pages
from provider_sim.api import (
    checkout_sessions,
    customers,
    events,
    invoices,
    payments,
    portal_sessions,
    prices,
    products,
    refunds,
    subscriptions,
    webhook_endpoints,
)
from provider_sim.clock import Clock
from provider_sim.delivery import Deliverer
from provider_sim.middleware import MIDDLEWARES
from provider_sim.sim import SIM, Options, Sim
from provider_sim.store import State

ROUTES = (products.routes, prices.routes, customers.routes, checkout_sessions.routes, portal_sessions.routes,
          subscriptions.routes, invoices.routes, payments.routes, refunds.routes, events.routes,
          webhook_endpoints.routes, control.routes, pages.routes)
MAX_BODY_BYTES = 1024 * 1024


def create_app(state: State, clock: Clock, deliverer: Deliverer, options: Options | None = None) -> web.Application:
    sim = Sim(state, clock, deliverer, options or Options())
    sim.install_presets()
    app = web.Application(middlewares=MIDDLEWARES, client_max_size=MAX_BODY_BYTES)
    app[SIM] = sim
    for table in ROUTES:
        app.add_routes(table)

    async def shut_down(_: web.Application) -> None:
        await deliverer.close()
        sim.save()

    app.on_cleanup.append(shut_down)
    return app
