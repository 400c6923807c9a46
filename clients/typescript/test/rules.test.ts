/**
 * The client's cache rules against reference models, over many random cases drawn from a seeded
 * generator (a failure prints its seed): which stream messages reach watchers, and the reconnect
 * backoff's bounds. Run by `node --test` from the project's test suite.
 */

import assert from "node:assert/strict";
import { test } from "node:test";

import { create } from "@bufbuild/protobuf";

import { admits, backoffMs, isFresh, type Entitlements } from "../src/client.js";
import { EntitlementsSchema } from "../src/gen/selfserve/entitlement/v1/entitlement_pb.js";

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

/** What one stream, reconnecting at random, sends while the history unfolds: on each connection
 * the state now (whatever the client holds), then each later state; at random, a state from before
 * the latest one with a lower revision, as a read through a replica further behind sends. Each
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
      sent.push([now, message(states[now]!, clock++)]);  // a reconnect with nothing new
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
        held = entitlements;
        delivered.push(index);
      }
      if (index > reference) {  // the model: a state later in the history than the last one passed on
        reference = index;
        expected.push(index);
      }
    }
    assert.deepEqual(delivered, expected, `seed ${seed}: history ${JSON.stringify(states)}`);
    assert.equal(delivered[delivered.length - 1], states.length - 1, `seed ${seed}: the last state is held`);
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

test("a cached state answers while its stream is live, and up to the staleness bound after it is lost", () => {
  assert.equal(isFresh(true, 0, 1_000_000, 5_000), true);
  assert.equal(isFresh(false, 10_000, 15_000, 5_000), true);
  assert.equal(isFresh(false, 10_000, 15_001, 5_000), false);
  assert.equal(isFresh(false, 10_000, 10_000, 0), true);
  assert.equal(isFresh(false, 10_000, 10_001, 0), false);
});
