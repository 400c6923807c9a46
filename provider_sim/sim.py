"""What every route works with: the state, the simulated clock, delivery, and the options the
server was started with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from provider_sim.clock import Clock
from provider_sim.delivery import Deliverer
from provider_sim.latency import Latency
from provider_sim.model import WebhookEndpoint
from provider_sim.store import State, new_id, save_snapshot


@dataclass(frozen=True)
class PresetEndpoint:
    """A webhook endpoint registered at start-up (and again after each reset) with a known secret,
    so a service configured with that secret receives events without registering itself."""

    url: str
    secret: str
    api_version: str | None = None
    enabled_events: tuple[str, ...] = ("*",)


@dataclass(frozen=True)
class Options:
    api_keys: tuple[str, ...] = ()  # empty: any key starting with sk_test_
    public_url: str | None = None  # where browsers reach the hosted pages; default: the request's host
    snapshot: Path | None = None
    presets: tuple[PresetEndpoint, ...] = ()

    def accepts(self, api_key: str) -> bool:
        return api_key in self.api_keys if self.api_keys else api_key.startswith("sk_test_") and len(api_key) > 8


@dataclass
class Sim:
    state: State
    clock: Clock
    deliverer: Deliverer
    options: Options = field(default_factory=Options)
    latency: Latency = field(default_factory=Latency)

    def install_presets(self) -> None:
        for preset in self.options.presets:
            endpoints = self.state.webhook_endpoints.values()
            if not any(e.url == preset.url and e.secret == preset.secret for e in endpoints):
                endpoint = WebhookEndpoint(id=new_id("we_"), url=preset.url, secret=preset.secret,
                                           created=self.clock.now(), enabled_events=list(preset.enabled_events),
                                           api_version=preset.api_version, description="preset")
                self.state.webhook_endpoints[endpoint.id] = endpoint

    def save(self) -> None:
        if self.options.snapshot is not None:
            save_snapshot(self.options.snapshot, self.state, self.clock.offset_s)

    async def reset(self) -> None:
        await self.deliverer.reset()
        fresh = State()
        for name in vars(fresh):
            setattr(self.state, name, getattr(fresh, name))
        self.clock.reset()
        self.latency = Latency()
        self.install_presets()
        self.save()


SIM = web.AppKey("provider_sim", Sim)
REQUEST_ID = web.RequestKey("request_id", str)
API_KEY = web.RequestKey("api_key", str)
REPLAYED = web.RequestKey("replayed", bool)


def sim_of(request: web.Request) -> Sim:
    return request.app[SIM]
