"""A bare aiohttp app for the signature baseline: `python -m bench.sig_app PORT SECRET`.

`POST /bare` reads the body and answers 200; `POST /verified` also verifies the Stripe-Signature
header, parses the JSON and reads the event envelope, with the webhook route's own function."""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiohttp import web

from checkout_service.errors import BadWebhook
from checkout_service.stripe import normalize
from checkout_service.webhooks import verified_event

TOLERANCE_S = 300


def create_app(secret: str) -> web.Application:
    secrets = (secret,)

    async def bare(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"received": True})

    async def verified(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            event = verified_event(raw, request.headers.get("Stripe-Signature"), secrets, TOLERANCE_S, time.time())
        except BadWebhook as exc:
            return web.json_response({"error": str(exc)}, status=400)
        event_id, _, _, _ = normalize.envelope(event)
        return web.json_response({"received": True, "id": event_id})

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_post("/bare", bare)
    app.router.add_post("/verified", verified)
    return app


async def serve(port: int, secret: str) -> None:
    runner = web.AppRunner(create_app(secret), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(json.dumps({"event": "listening", "port": port}), file=sys.stderr, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
