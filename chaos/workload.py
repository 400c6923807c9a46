"""The customers: what each account does and when (a pure plan from the seed), and doing it
through the checkout service's HTTP API and the simulator's customer and clock controls, with
each round's webhooks shuffled, duplicated, delayed or withheld.

The plan has two phases. In the live phase the simulator's clock is our clock, so every change
(purchases, upgrades and downgrades, seat changes, cancellations) moves what the services answer
for our present, where CheckGate answers and stale answers can be seen. Then the simulator's
clock moves a month at a time: renewals, more cancellations and packs, and a second cohort of
customers who buy and change their plans in the simulator's future. A subscription whose items
change is always one that started in the same phase: the reconciler compares the items a
subscription holds at our present, and a change in the simulator's future would look like drift.
Two changes to one subscription never fall in the same provider second: live rounds last more
than a second, and later rounds move the clock a minute."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from chaos.stack import Stack
from service_runtime.auth import Role

DAY = 86_400
CORE_PRICES = ("starter_monthly", "pro_monthly", "pro_yearly")
CORE_WEIGHTS = (3, 5, 2)
ADDON, PACK_PRICE = "team_seats_monthly", "credit_pack_500"
BEHAVIORS = ("create_prorations", "always_invoice", "none")
CORE, ADDONS = "core", "addons"

BUY, DECLINE, PAY_AGAIN, ABANDON, PACK = "buy", "decline", "pay_again", "abandon", "pack"
CHANGE_PRICE, CHANGE_QUANTITY = "change_price", "change_quantity"
CANCEL_AT_END, RESUME, CANCEL_NOW = "cancel_at_period_end", "resume", "cancel_now"
PORTAL = frozenset({CHANGE_PRICE, CHANGE_QUANTITY, CANCEL_AT_END, RESUME, CANCEL_NOW})
# Actions that can move a gate at our present: the probe watches their accounts.
MOVES_GATES = frozenset({BUY, PAY_AGAIN, CHANGE_PRICE, CANCEL_NOW})
MIN_LIVE_ROUND_S = 1.2


@dataclass(frozen=True)
class Action:
    account: str
    kind: str
    group: str = CORE  # the subscription group a purchase or portal action is about ("" for a one-time pack)
    price: str = ""  # lookup key
    quantity: int = 1
    behavior: str = "create_prorations"


@dataclass(frozen=True)
class Round:
    number: int
    live: bool
    advance_s: int  # the simulated clock moves this much at the start
    actions: tuple[Action, ...]


@dataclass
class _Sub:
    price: str
    quantity: int
    bought: int  # round
    ends: bool = False  # cancel_at_period_end
    ended: bool = False


@dataclass
class _Customer:
    account: str
    live: bool
    buy_round: int
    subs: dict[str, _Sub] = field(default_factory=dict)
    declined: bool = False
    wants_addon: bool = False


def plan(accounts: int, periods: int, live_rounds: int, seed: int) -> list[Round]:
    """Every round's actions. Three in five accounts buy in the live phase, the rest once the
    clock has moved; each buys a base plan (a few abandon a checkout first or are declined once),
    some add team seats, some buy credit packs, then change plans and seats, cancel or resume."""
    rng = random.Random(f"workload:{seed}")
    live_count = accounts * 3 // 5
    buying_rounds = max(1, live_rounds // 2)
    customers = [_Customer(f"acct_{seed}_{n:05d}", n < live_count,
                           rng.randrange(buying_rounds) if n < live_count else live_rounds,
                           wants_addon=rng.random() < 0.45) for n in range(accounts)]
    rounds = [Round(r, True, 0, tuple(a for c in customers for a in _live_turn(c, r, live_rounds, rng)))
              for r in range(live_rounds)]
    number = itertools.count(live_rounds)
    for period in range(periods):
        for c in customers:
            _advance_month(c)
        first = next(number)
        rounds.append(Round(first, False, 31 * DAY, tuple(
            a for c in customers for a in _later_turn(c, first, period == 0, rng))))
        changes = next(number)
        rounds.append(Round(changes, False, 60,
                            tuple(a for c in customers for a in _later_turn(c, changes, False, rng))))
    return rounds


def _core_price(rng: random.Random, other_than: str = "") -> str:
    while (price := rng.choices(CORE_PRICES, CORE_WEIGHTS)[0]) == other_than:
        continue
    return price


def _buy(c: _Customer, r: int, rng: random.Random, allow_decline: bool) -> list[Action]:
    actions = []
    if rng.random() < 0.08:
        actions.append(Action(c.account, ABANDON, CORE, _core_price(rng)))
    price = _core_price(rng)
    if allow_decline and rng.random() < 0.05:
        c.declined = True
        actions.append(Action(c.account, DECLINE, CORE, price))
    else:
        actions.append(Action(c.account, BUY, CORE, price))
    c.subs[CORE] = _Sub(price, 1, r)
    return actions


def _pack(c: _Customer, rng: random.Random, chance: float) -> list[Action]:
    return [Action(c.account, PACK, "", PACK_PRICE, rng.randint(1, 3))] if rng.random() < chance else []


def _live_turn(c: _Customer, r: int, live_rounds: int, rng: random.Random) -> list[Action]:
    if not c.live:
        return []
    if r == c.buy_round:
        return _buy(c, r, rng, allow_decline=r < live_rounds - 1) + _pack(c, rng, 0.15)
    core, addon = c.subs.get(CORE), c.subs.get(ADDONS)
    if core is None:
        return []
    actions = _pack(c, rng, 0.06)
    if c.declined:
        c.declined = False
        return [*actions, Action(c.account, PAY_AGAIN, CORE, core.price)]
    if c.wants_addon and addon is None and r > core.bought:
        quantity = rng.randint(1, 5)
        c.subs[ADDONS] = _Sub(ADDON, quantity, r)
        actions.append(Action(c.account, BUY, ADDONS, ADDON, quantity))
    elif addon is not None and not addon.ended and r > addon.bought and rng.random() < 0.3:
        addon.quantity = rng.choice([q for q in range(1, 7) if q != addon.quantity])
        actions.append(Action(c.account, CHANGE_QUANTITY, ADDONS, quantity=addon.quantity,
                              behavior=rng.choice(BEHAVIORS)))
    if r > core.bought and not core.ended:
        actions += _core_change(c, core, rng, changes=True)
    return actions


def _core_change(c: _Customer, core: _Sub, rng: random.Random, changes: bool) -> list[Action]:
    roll = rng.random()
    if roll < 0.04:
        core.ended = True
        return [Action(c.account, CANCEL_NOW)]
    if roll < 0.10 and not core.ends:
        core.ends = True
        return [Action(c.account, CANCEL_AT_END)]
    if roll < 0.16 and core.ends:
        core.ends = False
        return [Action(c.account, RESUME)]
    if changes and roll < 0.40:
        core.price = _core_price(rng, other_than=core.price)
        return [Action(c.account, CHANGE_PRICE, CORE, core.price, behavior=rng.choice(BEHAVIORS))]
    return []


def _advance_month(c: _Customer) -> None:
    """A month passes: a monthly subscription set to cancel at its period end ends."""
    for sub in c.subs.values():
        if sub.ends and not sub.price.endswith("_yearly"):
            sub.ended = True


def _later_turn(c: _Customer, r: int, buying: bool, rng: random.Random) -> list[Action]:
    """Once the clock has moved: the second cohort buys, then changes like the first did; the first
    cohort only cancels, resumes and buys packs (its subscriptions' items stay as they were)."""
    if buying and not c.live:
        actions = _buy(c, r, rng, allow_decline=False)
        if c.wants_addon:
            quantity = rng.randint(1, 5)
            c.subs[ADDONS] = _Sub(ADDON, quantity, r)
            actions.append(Action(c.account, BUY, ADDONS, ADDON, quantity))
        return actions
    core, addon = c.subs.get(CORE), c.subs.get(ADDONS)
    if core is None or r == core.bought:
        return []
    actions = _pack(c, rng, 0.06)
    if not core.ended:
        actions += _core_change(c, core, rng, changes=not c.live)
    if not c.live and addon is not None and not addon.ended and rng.random() < 0.3:
        addon.quantity = rng.choice([q for q in range(1, 7) if q != addon.quantity])
        actions.append(Action(c.account, CHANGE_QUANTITY, ADDONS, quantity=addon.quantity,
                              behavior=rng.choice(BEHAVIORS)))
    return actions


# Doing it --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shaping:
    """How a round's webhooks are mistreated."""

    lose: float = 0.02  # never delivered: the provider gives up on them
    copies: float = 1 / 3  # delivered two or three times
    delayed: float = 0.1  # of the actions: their webhooks sent seconds later, after later ones


@dataclass
class Tally:
    actions: int = 0
    refused: int = 0  # a portal action the subscription no longer allowed, as at the provider
    failed: list[str] = field(default_factory=list)  # a purchase the checkout service never took
    released: set[str] = field(default_factory=set)  # delivery ids released after being held
    copies: int = 0  # deliveries made again on purpose
    lost: set[str] = field(default_factory=set)  # event ids never delivered on purpose
    retried_purchases: int = 0  # checkout requests that had to be tried again (a replica down)


class Workload:
    def __init__(self, stack: Stack, shaping: Shaping, seed: int, watch: Callable[[str], None]) -> None:
        self.stack, self.shaping, self.seed, self.watch = stack, shaping, seed, watch
        self.subscriptions: dict[tuple[str, str], str] = {}  # (account, group) -> subscription id
        self.pending: dict[str, str] = {}  # account -> checkout session declined once
        self.tally = Tally()
        self._turn = itertools.count()

    async def run_round(self, round_: Round) -> None:
        started = time.monotonic()
        control = self.stack.sim_control
        rng = random.Random(f"round:{self.seed}:{round_.number}")
        await control("delivery", mode="normal")
        await control("delivery", mode="hold")
        if round_.advance_s:
            await control("clock/advance", seconds=round_.advance_s)
        delayed = round(len(round_.actions) * self.shaping.delayed)
        if delayed:
            await control("delivery", mode="delay", delay_ms=rng.randint(2000, 6000))
            await self._act(round_.actions[:delayed])
            await control("delivery", mode="hold")
        await self._act(round_.actions[delayed:])
        await self._release(rng, round_.number)
        if round_.live:  # two rounds' changes to one subscription fall in different provider seconds
            await asyncio.sleep(max(0.0, MIN_LIVE_ROUND_S - (time.monotonic() - started)))

    async def _release(self, rng: random.Random, number: int) -> None:
        """The held webhooks: some never delivered, a third sent again (some twice, some before the
        original), the rest released in a shuffled order."""
        control = self.stack.sim_control
        async with self.stack.http.get(f"{self.stack.sim_url}/_sim/delivery", params={"state": "held"}) as reply:
            held = (await reply.json())["deliveries"]
        events = list(dict.fromkeys(d["event"] for d in held))
        lost = {e for e in events if rng.random() < self.shaping.lose}
        copied = [e for e in events if e not in lost and rng.random() < self.shaping.copies]
        early = copied[: len(copied) // 2]
        twice = [e for e in copied if rng.random() < 1 / 3]
        self.stack.relay.lost |= lost
        self.tally.lost |= lost
        await self._redeliver(early)
        await control("delivery", mode="normal")
        released = await control("delivery/release", order="shuffle", seed=rng.randrange(2**31))
        self.tally.released |= {d["id"] for d in released["released"]}
        await self._redeliver(copied[len(early):] + twice)

    async def _redeliver(self, events: list[str]) -> None:
        limit = asyncio.Semaphore(16)

        async def again(event: str) -> None:
            async with limit:
                await self.stack.sim_control("delivery/redeliver", event=event)

        await asyncio.gather(*(again(e) for e in events))
        self.tally.copies += len(events)

    async def _act(self, actions: tuple[Action, ...]) -> None:
        """Each account's actions in order, accounts side by side."""
        by_account: dict[str, list[Action]] = {}
        for action in actions:
            by_account.setdefault(action.account, []).append(action)
        limit = asyncio.Semaphore(12)

        async def customer(mine: list[Action]) -> None:
            async with limit:
                for action in mine:
                    await self._do(action)

        await asyncio.gather(*(customer(mine) for mine in by_account.values()))

    async def _do(self, action: Action) -> None:
        self.tally.actions += 1
        if action.kind in MOVES_GATES:
            self.watch(action.account)
        if action.kind in PORTAL:
            await self._portal(action)
        elif action.kind == PAY_AGAIN:
            session = self.pending.pop(action.account, None)
            if session is not None:
                paid = await self.stack.sim_control(f"checkout/sessions/{session}/complete")
                self.subscriptions[(action.account, CORE)] = paid["subscription"]
        else:
            await self._purchase(action)

    async def _purchase(self, action: Action) -> None:
        created = await self._checkout(action)
        if created is None:
            return
        session = created["checkout_session_id"]
        if action.kind == ABANDON:
            await self.stack.sim_control(f"checkout/sessions/{session}/expire")
            return
        payment = "failed" if action.kind == DECLINE else "succeeded"
        completed = await self.stack.sim_control(f"checkout/sessions/{session}/complete", payment=payment)
        if action.kind == DECLINE:
            self.pending[action.account] = session
        elif completed.get("subscription"):
            self.subscriptions[(action.account, action.group)] = completed["subscription"]

    async def _checkout(self, action: Action, deadline_s: float = 120) -> Any:
        """POST /v1/checkout/sessions as a product backend does it: on a connection error or a 5xx,
        the same request again (same Idempotency-Key) on the other replica, until it is taken."""
        body = {"account_id": action.account, "items": [{"price": action.price, "quantity": action.quantity}],
                "success_url": "https://app.example/welcome", "cancel_url": "https://app.example/pricing"}
        headers = {"Authorization": f"Bearer {self.stack.tokens[Role.PRODUCT]}",
                   "Idempotency-Key": f"chaos-{self.seed}-{action.account}-{next(self._turn)}"}
        started, turn = time.monotonic(), next(self._turn)
        while True:
            url = self.stack.checkout_urls[turn % len(self.stack.checkout_urls)]
            outcome = await _post(self.stack.http, f"{url}/v1/checkout/sessions", body, headers)
            if outcome is not None and outcome[0] == 201:
                return outcome[1]
            if outcome is not None and outcome[0] < 500:
                self.tally.failed.append(f"{action.account} {action.kind} {action.price}: {outcome}")
                return None
            if time.monotonic() - started > deadline_s:
                self.tally.failed.append(f"{action.account} {action.kind} {action.price}: no answer, last {outcome}")
                return None
            self.tally.retried_purchases += 1
            turn += 1
            await asyncio.sleep(0.2)

    async def _portal(self, action: Action) -> None:
        sub = self.subscriptions.get((action.account, action.group))
        if sub is None:
            self.tally.refused += 1
            return
        params: dict[str, Any] = {"action": action.kind}
        if action.kind == CHANGE_PRICE:
            params.update(price=action.price, proration_behavior=action.behavior)
        elif action.kind == CHANGE_QUANTITY:
            params.update(quantity=action.quantity, proration_behavior=action.behavior)
        async with self.stack.http.post(f"{self.stack.sim_url}/_sim/subscriptions/{sub}/portal",
                                        json=params) as reply:
            if reply.status == 400:  # the subscription ended meanwhile: refused, as at the provider
                self.tally.refused += 1
            elif reply.status != 200:
                raise RuntimeError(f"portal {params} on {sub}: {reply.status} {await reply.text()}")


async def _post(http: aiohttp.ClientSession, url: str, body: Any, headers: dict[str, str]
                ) -> tuple[int, Any] | None:
    try:
        async with http.post(url, json=body, headers=headers, timeout=aiohttp.ClientTimeout(total=30)) as reply:
            return reply.status, await reply.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
