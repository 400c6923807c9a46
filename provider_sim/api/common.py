"""What every API handler shares: parameters, the change context, answers, expansion, pagination."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from aiohttp import web

from provider_sim.dispatch import dumps
from provider_sim.errors import no_such
from provider_sim.events import Ctx, Origin
from provider_sim.forms import decode_body, decode_form, merge
from provider_sim.model import Json
from provider_sim.params import Params
from provider_sim.resources.expand import expand
from provider_sim.resources.lists import list_object
from provider_sim.sim import REQUEST_ID, sim_of
from provider_sim.store import State

T = TypeVar("T")


async def params_of(request: web.Request) -> Params:
    query = decode_form(request.query_string)
    body = decode_body(await request.read(), request.content_type) if request.body_exists else {}
    return Params(merge(query, body))


def ctx_of(request: web.Request) -> Ctx:
    """The change context of an API request: simulated now, and the request as the events' cause."""
    sim = sim_of(request)
    origin = Origin(request.get(REQUEST_ID), request.headers.get("Idempotency-Key"))
    return Ctx(sim.state, sim.clock.now(), origin if request.path.startswith("/v1/") else Origin())


def state_of(request: web.Request) -> State:
    return sim_of(request).state


def respond(obj: Json, status: int = 200) -> web.Response:
    return web.json_response(obj, status=status, dumps=dumps)


def respond_expanded(request: web.Request, obj: Json, paths: Sequence[str]) -> web.Response:
    return respond(expand(state_of(request), obj, paths))


def paginate(params: Params, newest_first: Sequence[T], render: Callable[[T], Json], url: str,
             id_of: Callable[[T], str]) -> Json:
    """A Stripe list page: `limit` (1–100, default 10), `starting_after` or `ending_before` an id."""
    limit = params.integer("limit", minimum=1, maximum=100) or 10
    after, before = params.text("starting_after"), params.text("ending_before")
    ids = [id_of(item) for item in newest_first]
    for param, cursor in (("starting_after", after), ("ending_before", before)):
        if cursor is not None and cursor not in ids:
            raise no_such("object", cursor, param=param)
    if before is not None:
        end = ids.index(before)
        page = newest_first[max(0, end - limit):end]
        has_more = end - limit > 0
    else:
        start = ids.index(after) + 1 if after is not None else 0
        page = newest_first[start:start + limit]
        has_more = start + limit < len(newest_first)
    return list_object([render(item) for item in page], url, has_more=has_more)


def listed(params: Params, newest_first: Sequence[T], render: Callable[[T], Json], url: str,
           id_of: Callable[[T], str], request: web.Request) -> web.Response:
    """Parses the pagination and expansion parameters, rejects unknown ones, answers the page."""
    paths = params.expand()
    page = paginate(params, newest_first, render, url, id_of)
    params.finish()
    return respond_expanded(request, page, paths)


def newest_first(values: Sequence[T]) -> list[T]:
    return list(reversed(values))


def created_filter(params: Params) -> Callable[[int], bool]:
    """`created=<t>` or `created[gt|gte|lt|lte]=<t>`."""
    bounds = params.child("created") if isinstance(params.raw("created"), dict) else None
    if bounds is None:
        exact = params.integer("created")
        return lambda created: exact is None or created == exact
    gt, gte, lt, lte = (bounds.integer(op) for op in ("gt", "gte", "lt", "lte"))
    return lambda created: ((gt is None or created > gt) and (gte is None or created >= gte)
                            and (lt is None or created < lt) and (lte is None or created <= lte))
