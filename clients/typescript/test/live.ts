/**
 * The client against a running entitlement service, driven step by step by the project's test
 * suite (tests/integration/test_typescript_client.py), which commits the changes and cuts the
 * connection between steps.
 *
 * Each step it reaches is one JSON line on stdout, `{"step": ..., "stats": ...}`; it then waits for
 * the next command, one line on stdin (a name, and for `boundary` an instant in milliseconds since
 * the epoch). Any failed expectation prints `{"step": "failed", "error": ...}` and exits 1.
 *
 * Environment: ENTITLEMENT_URL (the address to reach the service through), PRODUCT_TOKEN,
 * ACCOUNT_ID (an account the service has never seen), STEADY_ID (an account that already allows
 * GATE and does not change), BOUNDARY_ID (an account whose plan the test makes end at a boundary),
 * GATE (a gate the first change to ACCOUNT_ID allows).
 */

import assert from "node:assert/strict";
import * as readline from "node:readline";

import { ConnectError, EntitlementsClient, isRetryable, millis, type Entitlements } from "../src/client.js";

const MAX_STALENESS_MS = 1_000;

function setting(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const account = setting("ACCOUNT_ID");
const steady = setting("STEADY_ID");
const ending = setting("BOUNDARY_ID");
const gate = setting("GATE");
const client = new EntitlementsClient({
  target: setting("ENTITLEMENT_URL"),
  token: setting("PRODUCT_TOKEN"),
  firstAnswerTimeoutMs: 10_000,
  maxStalenessMs: MAX_STALENESS_MS,
  reconnectInitialMs: 50,
  reconnectMaxMs: 500,
});
const commands = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function report(step: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(`${JSON.stringify({ step, ...fields, stats: client.stats() })}\n`);
}

/** Reads the next command, which must be `expected`; answers its arguments. */
async function command(expected: string): Promise<string[]> {
  const next = await commands.next();
  const got = next.done === true ? "the end of input" : JSON.stringify(next.value);
  const [name, ...args] = next.done === true ? [] : next.value.trim().split(/\s+/);
  assert.equal(name, expected, `expected the command ${expected}, got ${got}`);
  return args;
}

/** Follows one account's watcher: the states it got, and whether it failed. */
function follow(accountId: string): { seen: Entitlements[]; count: (n: number) => () => boolean } {
  const seen: Entitlements[] = [];
  let failure: unknown;
  void (async () => {
    try {
      for await (const entitlements of client.watch(accountId)) {
        seen.push(entitlements);
      }
    } catch (error) {
      failure = error;
    }
  })();
  return {
    seen,
    count: (n: number) => (): boolean => {
      if (failure !== undefined) {
        throw failure;
      }
      return seen.length >= n;
    },
  };
}

/** Awaits `condition()` until it returns true; fails naming `what` after `timeoutMs`. */
async function eventually(condition: () => Promise<boolean> | boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await condition()) {
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

function summary(entitlements: Entitlements): { revision: number; gates: string[] } {
  return { revision: Number(entitlements.revision), gates: [...entitlements.gates] };
}

async function main(): Promise<void> {
  // Two accounts, one never seen (false) and one allowed: both answered by the stream's first
  // messages, not by CheckGate, and watched on one stream.
  const [fresh, allowed] = await Promise.all([client.check(account, gate), client.check(steady, gate)]);
  assert.equal(fresh, false, "an account never seen has no gates");
  assert.equal(allowed, true, "the steady account allows the gate");
  assert.equal(client.stats().checkGateCalls, 0, "the first answers came from the stream");
  const changing = follow(account);
  const unchanged = follow(steady);
  await eventually(changing.count(1), "the watcher's first message");
  await eventually(unchanged.count(1), "the steady watcher's first message");
  await eventually(() => client.stats().watching === 2, "one stream to watch both accounts");
  report("ready", { seen: changing.seen.map(summary) });

  // The test commits a change that allows the gate: the stream brings it, no CheckGate is made.
  await command("committed");
  const started = Date.now();
  await eventually(() => client.check(account, gate), `the cached check of ${gate} to turn true`, 5_000);
  assert.equal(client.stats().checkGateCalls, 0, "the change was pushed, not asked for");
  report("pushed", { ms: Date.now() - started });

  // The test gave a third account a plan that ends at `edge`: the stream's schedule says so, and
  // the check flips at the edge in-process, before the stream says anything more about it.
  const [edgeArgument] = await command("boundary");
  const edge = Number(edgeArgument);
  assert.ok(Number.isFinite(edge), `the boundary's instant, got ${String(edgeArgument)}`);
  assert.equal(await client.check(ending, gate), true, "before its end the plan allows the gate");
  assert.ok(Date.now() < edge, "the plan was held before it ended");
  await eventually(() => client.stats().watching === 3, "the stream to watch the third account too");
  let before = 0;
  let after = 0;
  let local = 0;
  while (Date.now() < edge - 50) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  for (;;) {
    const asked = Date.now();
    const heldAsOf = millis(client.held(ending)?.asOf);
    const answer = client.cached(ending, gate);
    const answered = Date.now();
    if (answered < edge) {
      assert.equal(answer, true, `at ${answered}, before the edge ${edge}`);
      before += 1;
    } else if (asked >= edge) {
      assert.equal(answer, false, `at ${asked}, past the edge ${edge}`);
      after += 1;
      if (heldAsOf < edge) {
        local += 1;  // answered from the schedule held from before the edge
      }
    }
    if (asked > edge + 300) {
      break;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  assert.ok(before > 0 && after > 0, `checks on both sides of the edge: ${before} before, ${after} after`);
  assert.ok(local > 0, "past the edge, the schedule held from before it answered false");
  assert.equal(await client.check(ending, gate), false);
  assert.equal(client.stats().checkGateCalls, 0, "the boundary was honoured without asking the service");
  report("flipped", { before, after, local });

  // The test cuts the connection and refuses new ones. The stream notices; the answers held are
  // used up to the staleness bound, after which a check asks CheckGate, which cannot get through.
  await command("cut");
  await eventually(() => client.stats().reconnects >= 1, "the stream to notice the cut");
  let staleFailure: ConnectError | undefined;
  await eventually(async () => {
    try {
      assert.equal(await client.check(account, gate), true, "within the staleness bound the cached answer holds");
      return false;
    } catch (error) {
      if (!(error instanceof ConnectError)) {
        throw error;
      }
      staleFailure = error;
      return true;
    }
  }, "a check past the staleness bound to ask the service", 10_000);
  assert.ok(staleFailure !== undefined && isRetryable(staleFailure.code), `a retryable status, got ${String(staleFailure)}`);
  assert.ok(client.stats().checkGateCalls >= 1, "past the staleness bound the check asked CheckGate");
  assert.equal(client.cached(steady, gate), undefined, "past the staleness bound nothing held answers");
  const cutStats = client.stats();
  report("stale", { code: staleFailure.code });

  // Meanwhile the test commits a change taking the gate away, then lets connections through again.
  // The stream is opened again with the revisions held: the change arrives once, and the accounts
  // that did not change are not sent again.
  await command("restored");
  const beforeResume = client.stats().checkGateCalls;
  await eventually(changing.count(3), "the change committed during the cut, after the reconnect");
  await eventually(() => client.stats().heartbeats > cutStats.heartbeats, "the new stream to catch up");
  assert.equal(await client.check(account, gate), false, "the change committed during the cut is in force");
  assert.equal(await client.check(steady, gate), true, "the steady account is current again without being sent");
  assert.equal(client.stats().checkGateCalls, beforeResume, "once reconnected, checks are answered from the cache");
  const resent = client.stats().messages - cutStats.messages;
  assert.equal(resent, 1, "only the account that changed was sent again");
  assert.equal(unchanged.seen.length, 1, "the steady account's watcher got nothing more");
  report("resumed", { seen: changing.seen.map(summary), resent });

  // A second cut, with nothing committed: the reopened stream sends no account at all, only its
  // heartbeats.
  await command("cut");
  const reconnects = client.stats().reconnects;
  await eventually(() => client.stats().reconnects > reconnects, "the stream to notice the second cut");
  const lostStats = client.stats();
  report("lost");
  await command("restored");
  await eventually(() => client.stats().heartbeats > lostStats.heartbeats, "the stream's first heartbeat after the second reconnect");
  assert.equal(await client.check(account, gate), false);
  assert.equal(client.stats().messages, lostStats.messages, "nothing was sent again");
  report("quiet", { seen: changing.seen.map(summary) });

  // The test black-holes the stream's connection: it stays open and nothing more comes through it,
  // nor through the new ones the stream is opened on. Two heartbeat intervals of silence replace
  // the stream; past the staleness bound, checks are answered by CheckGate, on a connection of
  // their own.
  await command("silenced");
  const silentStats = client.stats();
  await eventually(() => client.stats().reconnects > silentStats.reconnects, "the silent stream to be replaced");
  await eventually(async () => {
    assert.equal(await client.check(account, gate), false);
    return client.stats().checkGateCalls > silentStats.checkGateCalls;
  }, "a check past the staleness bound to be answered by CheckGate");
  assert.equal(client.stats().messages, silentStats.messages);
  report("silent");
  await command("restored");
  const fallbacks = client.stats().checkGateCalls;
  await eventually(() => client.stats().heartbeats > silentStats.heartbeats && client.stats().watching === 3,
    "a stream on a new connection to catch up");
  assert.equal(await client.check(account, gate), false);
  assert.equal(client.stats().checkGateCalls, fallbacks, "once the stream is back, checks are answered in-process");
  report("back");

  // One more change: it follows the previous one directly, so nothing was delivered twice.
  await command("fenced");
  await eventually(changing.count(4), "the change after the reconnect");
  assert.equal(await client.check(account, gate), true);
  assert.equal(changing.seen.length, 4, "the first state, then each of the three changes once");
  const revisions = changing.seen.map((entitlements) => entitlements.revision);
  for (let i = 1; i < revisions.length; i++) {
    assert.ok(revisions[i]! > revisions[i - 1]!, `revisions strictly increase: ${revisions.join(", ")}`);
  }
  assert.equal(unchanged.seen.length, 1);
  report("done", { seen: changing.seen.map(summary) });
  client.close();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stdout.write(`${JSON.stringify({ step: "failed", error: String(error instanceof Error ? error.stack : error) })}\n`);
    process.exit(1);
  },
);
