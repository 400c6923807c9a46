/**
 * The client's cache rules against reference models, over many random cases drawn from a seeded
 * generator (a failure prints its seed): which stream messages are kept and which reach watchers,
 * which span of a gate schedule answers at a given time, when what is held is fresh enough to
 * answer, and the reconnect backoff's bounds. Run by `node --test` from the project's test suite.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import {
  admits,
  backoffMs,
  defaultHeartbeatMs,
  isFresh,
  isNewer,
  spanAt,
  spansOf,
  type Entitlements,
  type Span,
} from "../src/client.js";
import { EntitlementsSchema, GateSpanSchema } from "../src/gen/selfserve/entitlement/v1/entitlement_pb.js";

const CASES = 500;
const BUNDLES: Array<[string, string[]]> = [["", []], ["starter", ["export"]], ["pro", ["api_access", "export"]]];

/** A small seeded generator (mulberry32), so that a failing case can be drawn again. */
function generator(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)]!;
}

interface State {
  revision: number;
  bundle: number;
}

/** An account's history as the service holds it: each state differs from the one before, by a
 * committed change (the revision moves) or a window boundary passing (the same revision). */
function history(random: () => number): State[] {
  const states: State[] = [{ revision: 0, bundle: 0 }];
  const length = 1 + Math.floor(random() * 8);
  while (states.length < length) {
    const last = states[states.length - 1]!;
    const committed = random() < 0.7 || last.revision === 0;
    const bundle = committed ? Math.floor(random() * BUNDLES.length) : (last.bundle + 1 + Math.floor(random() * 2)) % 3;
    states.push({ revision: committed ? last.revision + 1 : last.revision, bundle });
  }
  return states;
}

function message(state: State, asOfSeconds: number): Entitlements {
  const [gateBundle, gates] = BUNDLES[state.bundle]!;
  return create(EntitlementsSchema, {
    accountId: "acct_1",
    revision: BigInt(state.revision),
    gateBundle,
    gates,
    asOf: { seconds: BigInt(asOfSeconds), nanos: 0 },
  });
}

/** What the streams send while the history unfolds: each state once it is in force; at random, a
 * state from before the latest one with a lower revision (a read through a replica further
 * behind), the state now computed again later (the account sent again with nothing new), or the
 * very message just sent once more (seen on both streams while one replaces the other). Each
 * message is paired with its index in the history. */
function deliveries(random: () => number, states: State[]): Array<[number, Entitlements]> {
  const sent: Array<[number, Entitlements]> = [];
  let clock = 1_000;
  for (let now = 0; now < states.length; now++) {
    sent.push([now, message(states[now]!, clock++)]);  // the change, or a (re)connection's first message
    if (random() < 0.3) {
      const older = states.slice(0, now).map((state, index) => [index, state] as const)
        .filter(([, state]) => state.revision < states[now]!.revision);
      if (older.length > 0) {
        const [index, state] = pick(random, older);
        sent.push([index, message(state, clock++)]);
      }
    }
    if (random() < 0.3) {
      sent.push([now, message(states[now]!, clock++)]);  // sent again with nothing new
    }
    if (random() < 0.3) {
      sent.push(sent[sent.length - 1]!);  // the same message on the other stream
    }
  }
  return sent;
}

test("watchers get each state of the history once, in order, never an older one", () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const random = generator(seed);
    const states = history(random);
    let held: Entitlements | undefined;
    const delivered: number[] = [];
    let reference = -1;
    const expected: number[] = [];
    for (const [index, entitlements] of deliveries(random, states)) {
      if (admits(held, entitlements)) {
        delivered.push(index);
      }
      if (isNewer(held, entitlements)) {
        held = entitlements;
      }
      if (index > reference) {  // the model: a state later in the history than the last one passed on
        reference = index;
        expected.push(index);
      }
    }
    assert.deepEqual(delivered, expected, `seed ${seed}: history ${JSON.stringify(states)}`);
    assert.equal(delivered[delivered.length - 1], states.length - 1, `seed ${seed}: the last state was passed on`);
    assert.ok(held !== undefined && held.revision === BigInt(states[states.length - 1]!.revision)
      && held.gateBundle === BUNDLES[states[states.length - 1]!.bundle]![0], `seed ${seed}: the last state is held`);
  }
});

test("a reconnect delay lies between half its bound and its bound, which doubles up to the maximum", () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const random = generator(seed);
    const initial = 1 + Math.floor(random() * 500);
    const maximum = initial + Math.floor(random() * 20_000);
    let previousBound = 0;
    for (let attempt = 0; attempt < 40; attempt++) {
      const bound = Math.min(maximum, initial * 2 ** attempt);
      const delay = backoffMs(attempt, initial, maximum, random);
      assert.ok(delay >= bound / 2 && delay <= bound, `seed ${seed}, attempt ${attempt}: ${delay} outside [${bound / 2}, ${bound}]`);
      assert.ok(bound >= previousBound);
      previousBound = bound;
    }
  }
});

/** A gate schedule as the service sends one: consecutive spans from `as_of`, the last open or not. */
function schedule(random: () => number): Span[] {
  let at = 1_700_000_000_000 + Math.floor(random() * 1_000_000);
  const count = 1 + Math.floor(random() * 9);
  const open = random() < 0.5;
  const spans = [];
  for (let i = 0; i < count; i++) {
    const start = at;
    at += 1 + Math.floor(random() * 100_000);
    const [gateBundle, gates] = pick(random, BUNDLES);
    spans.push(create(GateSpanSchema, {
      start: { seconds: BigInt(Math.floor(start / 1_000)), nanos: (start % 1_000) * 1_000_000 },
      ...(open && i === count - 1 ? {} : { end: { seconds: BigInt(Math.floor(at / 1_000)), nanos: (at % 1_000) * 1_000_000 } }),
      gateBundle,
      gates,
    }));
  }
  return spansOf(spans);
}

/** The model: the span in force at `t` is the last one that has started by `t` (the first one when
 * none has, the clock reading behind the server's), provided `t` is before its end. */
function spanInForce(spans: readonly Span[], t: number): Span | undefined {
  let found = spans[0];
  for (const span of spans) {
    if (span.start <= t) {
      found = span;
    }
  }
  return found !== undefined && t < found.end ? found : undefined;
}

test("a check is answered from the span of the schedule in force at the current time, and nothing past its end", () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const random = generator(seed);
    const spans = schedule(random);
    const first = spans[0]!;
    const last = spans[spans.length - 1]!;
    const edges = spans.flatMap((span) => [span.start, span.end]).filter(Number.isFinite);
    const times = [first.start - 1_000, ...edges, ...edges.map((edge) => edge - 1), ...edges.map((edge) => edge + 1)];
    for (let i = 0; i < 20; i++) {
      times.push(first.start - 5_000 + random() * (edges[edges.length - 1]! - first.start + 10_000));
    }
    for (const t of times) {
      assert.equal(spanAt(spans, t), spanInForce(spans, t), `seed ${seed}: at ${t}`);
    }
    if (last.end === Infinity) {
      assert.equal(spanAt(spans, 1e15), last, `seed ${seed}: an open schedule always answers`);
    } else {
      assert.equal(spanAt(spans, last.end), undefined, `seed ${seed}: past the last end nothing is held`);
    }
  }
  assert.equal(spanAt([], 0), undefined);
});

/** One thing that happens to the client's streams, for the staleness model. */
type Happening =
  | { kind: "about"; stream: number }  // a message about the account, on a stream
  | { kind: "other"; stream: number }  // a heartbeat, or a message about another account
  | { kind: "promote"; stream: number; covers: boolean };  // a stream becomes the one in use

test("an answer is given only within the staleness bound of the last sign of life about the account", () => {
  for (let seed = 1; seed <= CASES; seed++) {
    const random = generator(seed);
    const maxStalenessMs = 50 + Math.floor(random() * 2_000);
    // The client's state, kept as the client keeps it: the last message about the account, and the
    // stream in use with its accounts and its last message.
    let confirmedAt: number | undefined;
    let covering: { stream: number; covers: boolean; aliveAt: number } | undefined;
    const aliveAt = new Map<number, number>();
    // The model's: every happening, and the rule read off them.
    const log: Array<[number, Happening]> = [];
    let inUse: { stream: number; covers: boolean } | undefined;
    let streams = 1;
    let now = 0;
    for (let step = 0; step < 60; step++) {
      now += Math.floor(random() * maxStalenessMs * 0.6);
      const roll = random();
      const stream = Math.floor(random() * (streams + 1));
      let happening: Happening | undefined;
      if (roll < 0.2) {
        happening = { kind: "about", stream };
      } else if (roll < 0.6) {
        happening = { kind: "other", stream };
      } else if (roll < 0.7) {
        streams += 1;
        happening = { kind: "promote", stream: streams, covers: random() < 0.8 };
      }
      if (happening !== undefined) {
        log.push([now, happening]);
        if (happening.kind === "promote") {
          aliveAt.set(happening.stream, now);  // promoted on its first heartbeat
          covering = { stream: happening.stream, covers: happening.covers, aliveAt: now };
          inUse = { stream: happening.stream, covers: happening.covers };
        } else {
          aliveAt.set(happening.stream, now);
          if (covering?.stream === happening.stream) {
            covering.aliveAt = now;
          }
          if (happening.kind === "about") {
            confirmedAt = now;
          }
        }
      }
      const probe = now + Math.floor(random() * maxStalenessMs * 1.5);
      if (confirmedAt === undefined) {
        continue;  // nothing held: nothing to answer from
      }
      const fresh = isFresh(confirmedAt, covering?.covers === true ? covering.aliveAt : undefined, probe, maxStalenessMs);
      const signs = log.filter(([, h]) => h.kind === "about"
        || (inUse !== undefined && inUse.covers && h.stream === inUse.stream)).map(([at]) => at);
      const expected = signs.length > 0 && probe - Math.max(...signs) <= maxStalenessMs;
      assert.equal(fresh, expected, `seed ${seed}, step ${step}: ${JSON.stringify(log)} probed at ${probe}`);
    }
  }
});

test("the heartbeat asked for is a quarter of the staleness bound, within what the service accepts", () => {
  assert.equal(defaultHeartbeatMs(5_000), 1_250);
  assert.equal(defaultHeartbeatMs(100), 100);
  assert.equal(defaultHeartbeatMs(1_000_000), 30_000);
});

test("a cached state answers within the staleness bound of its last sign of life", () => {
  assert.equal(isFresh(0, 1_000_000, 1_000_000, 5_000), true);
  assert.equal(isFresh(10_000, undefined, 15_000, 5_000), true);
  assert.equal(isFresh(10_000, undefined, 15_001, 5_000), false);
  assert.equal(isFresh(10_000, 12_000, 17_000, 5_000), true);
  assert.equal(isFresh(10_000, 12_000, 17_001, 5_000), false);
  assert.equal(isFresh(10_000, undefined, 10_000, 0), true);
  assert.equal(isFresh(10_000, undefined, 10_001, 0), false);
});
