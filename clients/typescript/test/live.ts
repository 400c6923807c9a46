/**
 * The client against a running entitlement service, driven step by step by the project's test
 * suite (tests/integration/test_typescript_client.py), which commits the changes and cuts the
 * connection between steps.
 *
 * Each step it reaches is one JSON line on stdout, `{"step": ..., "stats": ...}`; it then waits for
 * the next command, one line on stdin. Any failed expectation prints `{"step": "failed", "error": ...}`
 * and exits 1.
 *
 * Environment: ENTITLEMENT_URL (the address to reach the service through), PRODUCT_TOKEN,
 * ACCOUNT_ID (an account the service has never seen), GATE (a gate its first change allows).
 */

import assert from "node:assert/strict";
import * as readline from "node:readline";

import { ConnectError, EntitlementsClient, isRetryable, type Entitlements } from "../src/client.js";

const MAX_STALENESS_MS = 1_000;

function setting(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") {
    throw new Error(`${name} is not set`);
  }
  return value;
}

const account = setting("ACCOUNT_ID");
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

async function command(expected: string): Promise<void> {
  const next = await commands.next();
  const got = next.done === true ? "the end of input" : JSON.stringify(next.value);
  assert.equal(next.done !== true && next.value.trim() === expected, true, `expected the command ${expected}, got ${got}`);
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
  // An account never seen: false, answered by the stream's first message, not by CheckGate.
  assert.equal(await client.check(account, gate), false, "an account never seen has no gates");
  assert.equal(client.stats().checkGateCalls, 0, "the first answer came from the stream");

  const seen: Entitlements[] = [];
  let watchFailure: unknown;
  void (async () => {
    try {
      for await (const entitlements of client.watch(account)) {
        seen.push(entitlements);
      }
    } catch (error) {
      watchFailure = error;
    }
  })();
  const watching = (count: number) => (): boolean => {
    if (watchFailure !== undefined) {
      throw watchFailure;
    }
    return seen.length >= count;
  };
  await eventually(watching(1), "the watcher's first message");
  report("ready", { seen: seen.map(summary) });

  // The test commits a change that allows the gate: the stream brings it, no CheckGate is made.
  await command("committed");
  const started = Date.now();
  await eventually(() => client.check(account, gate), `the cached check of ${gate} to turn true`, 5_000);
  assert.equal(client.stats().checkGateCalls, 0, "the change was pushed, not asked for");
  report("pushed", { ms: Date.now() - started });

  // The test cuts the connection and refuses new ones. The stream notices; its cached answer is
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
  report("stale", { code: staleFailure.code });

  // Meanwhile the test commits a change taking the gate away, then lets connections through again.
  await command("restored");
  const beforeResume = client.stats().checkGateCalls;
  await eventually(watching(3), "the change committed during the cut, after the reconnect");
  assert.equal(await client.check(account, gate), false, "the change committed during the cut is in force");
  assert.equal(client.stats().checkGateCalls, beforeResume, "once reconnected, checks are answered from the cache");
  report("resumed", { seen: seen.map(summary) });

  // A second cut, with nothing committed: the stream's first message after the reconnect holds
  // what the client has, and is not passed on.
  await command("cut");
  const reconnects = client.stats().reconnects;
  await eventually(() => client.stats().reconnects > reconnects, "the stream to notice the second cut");
  const messages = client.stats().messages;
  report("lost");
  await command("restored");
  await eventually(() => client.stats().messages > messages, "the stream's first message after the second reconnect");
  assert.equal(await client.check(account, gate), false);
  report("quiet", { seen: seen.map(summary) });

  // One more change: it follows the previous one directly, so nothing was delivered twice.
  await command("fenced");
  await eventually(watching(4), "the change after the reconnect");
  assert.equal(await client.check(account, gate), true);
  assert.equal(seen.length, 4, "the first state, then each of the three changes once");
  const revisions = seen.map((entitlements) => entitlements.revision);
  for (let i = 1; i < revisions.length; i++) {
    assert.ok(revisions[i]! > revisions[i - 1]!, `revisions strictly increase: ${revisions.join(", ")}`);
  }
  report("done", { seen: seen.map(summary) });
  client.close();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stdout.write(`${JSON.stringify({ step: "failed", error: String(error instanceof Error ? error.stack : error) })}\n`);
    process.exit(1);
  },
);
