/**
 * An example client of the entitlement service for Node.js: gate checks answered in-process from the
 * gate schedules that one WatchEntitlements stream keeps current, with CheckGate and GetEntitlements
 * as the fallback when what is held cannot vouch for an answer.
 *
 * The client follows the multiplexed form of the watch protocol (docs/contract.md, "WatchEntitlements
 * as a protocol"): one stream watches every account the client holds (`account_ids`, at most 1,000),
 * sends heartbeats (`heartbeat_interval`), and is opened with the revisions already held
 * (`known_revisions`), so a reopened stream sends only the accounts that changed meanwhile. When the
 * set of accounts changes, a new stream is opened for the new set and the old one is cancelled once
 * the new one has caught up (its first heartbeat). A stream silent for two heartbeat intervals is
 * replaced on a new connection, after a backoff with jitter.
 */

import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";

import { clone, create, equals } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import {
  EntitlementService,
  EntitlementsSchema,
  type Entitlements,
  type GateSpan,
  WatchEntitlementsRequestSchema,
  type WatchEntitlementsRequest,
} from "./gen/selfserve/entitlement/v1/entitlement_pb.js";

export type { Entitlements, GateSpan } from "./gen/selfserve/entitlement/v1/entitlement_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

/** The most accounts the service lets one stream watch. */
export const MAX_ACCOUNTS_PER_STREAM = 1_000;
/** The heartbeat intervals the service accepts, and the most this client asks for. */
const MIN_HEARTBEAT_MS = 100;
const MAX_HEARTBEAT_MS = 30_000;
/** The longest account id the service accepts. */
const MAX_ID_CHARS = 255;

export interface EntitlementsClientOptions {
  /** The entitlement service's gRPC address as a URL: `http://127.0.0.1:50051` (plaintext) or `https://...`. */
  target: string;
  /** A token of the `product` role, sent as `authorization: Bearer <token>` on every call. */
  token: string;
  /** The deadline of each CheckGate and GetEntitlements call. Default 2,000 ms. */
  callTimeoutMs?: number;
  /** How long a read about an account not held yet waits for the stream to send it before it asks
   * the service directly. Default 2,000 ms. */
  firstAnswerTimeoutMs?: number;
  /** The oldest an answer from what is held may be, measured from the last sign of life of the
   * stream about the account (a message about it, or any message on the stream covering it); past
   * it, reads ask the service directly. Default 5,000 ms. */
  maxStalenessMs?: number;
  /** How often the service is asked to prove the stream alive. Default a quarter of
   * `maxStalenessMs`, within 100 ms to 30,000 ms. A stream silent for twice this is replaced. */
  heartbeatIntervalMs?: number;
  /** The first delay before a lost or failed stream is opened again; each further failure doubles
   * it, up to `reconnectMaxMs`, and each delay is drawn between half the bound and the bound.
   * Defaults 200 ms and 10,000 ms. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Accounts held at most (1 to 1,000, what one stream may watch): beyond it, the least recently
   * used account that nobody watches is dropped. Default 1,000. */
  maxAccounts?: number;
}

/** What the client has done so far: how often it asked the service directly, and its streams. */
export interface ClientStats {
  /** CheckGate calls made because no fresh answer was held. */
  checkGateCalls: number;
  /** GetEntitlements calls made because no fresh answer was held. */
  getEntitlementsCalls: number;
  /** WatchEntitlements streams opened: for a new set of accounts, or in place of a lost one. */
  streamsOpened: number;
  /** Times the stream in use ended or went silent and a new one was opened in its place. */
  reconnects: number;
  /** Streams opened that failed before they caught up (their first heartbeat). */
  streamFailures: number;
  /** Account messages received on any stream, including those that held nothing new. */
  messages: number;
  /** Heartbeats received on any stream. */
  heartbeats: number;
  /** Accounts the stream in use watches. */
  watching: number;
}

/** Stream statuses after which the stream is opened again; any other ends it for good. */
const RETRYABLE = new Set<Code>([
  Code.Unavailable,
  Code.ResourceExhausted,
  Code.Aborted,
  Code.DeadlineExceeded,
  Code.Internal,
  Code.Unknown,
  Code.Canceled,
]);

export function isRetryable(code: Code): boolean {
  return RETRYABLE.has(code);
}

/** A delay drawn between half of `initial * 2^attempt` (capped at `max`) and that bound. */
export function backoffMs(attempt: number, initialMs: number, maxMs: number, random: () => number = Math.random): number {
  const bound = Math.min(maxMs, initialMs * 2 ** Math.min(attempt, 30));
  return bound / 2 + (random() * bound) / 2;
}

/** The heartbeat interval asked for by default: a quarter of the staleness bound, 100 ms to 30 s. */
export function defaultHeartbeatMs(maxStalenessMs: number): number {
  return Math.min(Math.max(maxStalenessMs / 4, MIN_HEARTBEAT_MS), MAX_HEARTBEAT_MS);
}

/** A protobuf Timestamp in milliseconds since the epoch. */
export function millis(stamp: Timestamp | undefined): number {
  return stamp === undefined ? 0 : Number(stamp.seconds) * 1_000 + stamp.nanos / 1_000_000;
}

/** One span of a gate schedule: the gates in force from `start` (inclusive) until `end`
 * (exclusive; `Infinity` when open), in milliseconds since the epoch. */
export interface Span {
  readonly start: number;
  readonly end: number;
  readonly gateBundle: string;
  readonly gates: ReadonlySet<string>;
}

export function spansOf(schedule: readonly GateSpan[]): Span[] {
  return schedule.map((span) => ({
    start: millis(span.start),
    end: span.end === undefined ? Infinity : millis(span.end),
    gateBundle: span.gateBundle,
    gates: new Set(span.gates),
  }));
}

/** The span in force at `wallMs`: the first whose end lies after it. A time before the first span's
 * start (a clock behind the server's) reads the first span; past the last end, or with no schedule,
 * there is none: nothing held may answer. */
export function spanAt(spans: readonly Span[], wallMs: number): Span | undefined {
  for (const span of spans) {
    if (wallMs < span.end) {
      return span;
    }
  }
  return undefined;
}

/** The staleness rule: an answer from what is held for an account may be given at `nowMs` when the
 * stream sent the account within `maxStalenessMs` (`confirmedAtMs`), or when the stream in use
 * covers the account and was alive within `maxStalenessMs` (`coveredAliveAtMs`, undefined when it
 * does not cover the account). All times on one monotonic clock. */
export function isFresh(confirmedAtMs: number, coveredAliveAtMs: number | undefined, nowMs: number,
  maxStalenessMs: number): boolean {
  const last = coveredAliveAtMs === undefined ? confirmedAtMs : Math.max(confirmedAtMs, coveredAliveAtMs);
  return nowMs - last <= maxStalenessMs;
}

/** Whether a message about an account is newer than the one held: nothing is held, or it has a
 * larger revision, or the same revision computed later (`as_of`). Only a newer message is kept. */
export function isNewer(held: Entitlements | undefined, incoming: Entitlements): boolean {
  if (held === undefined) {
    return true;
  }
  if (incoming.revision !== held.revision) {
    return incoming.revision > held.revision;
  }
  return millis(incoming.asOf) > millis(held.asOf);
}

/** True when two entitlements hold the same: the same revision and the same state, whenever computed. */
export function sameEntitlements(a: Entitlements, b: Entitlements): boolean {
  if (a.revision !== b.revision) {
    return false;
  }
  const left = clone(EntitlementsSchema, a);
  const right = clone(EntitlementsSchema, b);
  left.asOf = undefined;
  right.asOf = undefined;
  return equals(EntitlementsSchema, left, right);
}

/** Whether a stream message goes to watchers: it is newer than the state held (so never one seen
 * before, never an older revision) and holds something else than it (a message that only says the
 * same again, computed later, is kept but not passed on). */
export function admits(held: Entitlements | undefined, incoming: Entitlements): boolean {
  return isNewer(held, incoming) && (held === undefined || !sameEntitlements(held, incoming));
}

/** An account id as the service reads it: without the spaces around it; INVALID_ARGUMENT when it is
 * empty, holds a NUL character or is longer than an id may be. */
export function accountIdOf(value: string): string {
  const id = value.trim();
  if (id === "") {
    throw new ConnectError("account_id is required", Code.InvalidArgument);
  }
  if (id.includes("\u0000")) {
    throw new ConnectError("account_id must not contain a NUL character", Code.InvalidArgument);
  }
  if (id.length > MAX_ID_CHARS) {
    throw new ConnectError(`account_id must be at most ${MAX_ID_CHARS} characters`, Code.InvalidArgument);
  }
  return id;
}

/** A queue of one watcher's messages, read by `watch`. */
class Inbox {
  private readonly queue: Entitlements[] = [];
  private waiter: { resolve: (value: Entitlements | undefined) => void; reject: (error: unknown) => void } | undefined;
  private closed = false;
  private failure: ConnectError | undefined;

  push(entitlements: Entitlements): void {
    if (this.waiter !== undefined) {
      this.waiter.resolve(entitlements);
      this.waiter = undefined;
    } else {
      this.queue.push(entitlements);
    }
  }

  /** No more messages: `take` answers undefined, or throws `failure` when given. */
  close(failure?: ConnectError): void {
    this.closed = true;
    this.failure = failure;
    if (this.waiter !== undefined) {
      if (failure !== undefined) {
        this.waiter.reject(failure);
      } else {
        this.waiter.resolve(undefined);
      }
      this.waiter = undefined;
    }
  }

  take(): Promise<Entitlements | undefined> {
    const next = this.queue.shift();
    if (next !== undefined) {
      return Promise.resolve(next);
    }
    if (this.closed) {
      return this.failure !== undefined ? Promise.reject(this.failure) : Promise.resolve(undefined);
    }
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject };
    });
  }
}

/** What the stream last sent about one account. */
interface Held {
  readonly entitlements: Entitlements;
  readonly spans: readonly Span[];
  /** When (monotonic ms) a stream last sent this account at this revision. */
  confirmedAt: number;
}

/** One account the client holds: what the stream sent about it, and who waits for it. */
class Account {
  held: Held | undefined;
  /** The status that ended the stream for good while it watched this account, if one did. */
  failure: ConnectError | undefined;
  readonly watchers = new Set<Inbox>();
  private firstWaiters: Array<() => void> = [];

  constructor(readonly accountId: string) {}

  /** Resolves once the account is held, it is dropped, or `timeoutMs` passes. */
  firstMessage(timeoutMs: number): Promise<void> {
    if (this.held !== undefined || this.failure !== undefined) {
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.firstWaiters = this.firstWaiters.filter((waiter) => waiter !== done);
        resolve();
      }, timeoutMs);
      this.firstWaiters.push(done);
    });
  }

  releaseFirstWaiters(): void {
    const waiters = this.firstWaiters;
    this.firstWaiters = [];
    for (const waiter of waiters) {
      waiter();
    }
  }

  /** Drops the account: its readers stop waiting and its watchers end, with `failure` when given. */
  drop(failure?: ConnectError): void {
    this.failure = failure;
    this.releaseFirstWaiters();
    for (const inbox of this.watchers) {
      inbox.close(failure);
    }
  }
}

/** One WatchEntitlements stream over a fixed set of accounts. */
class Stream {
  readonly controller = new AbortController();
  /** Synced: its first heartbeat came, so it covers every account it watches. */
  synced = false;
  ended = false;
  /** The status it ended with, when it ended by itself rather than being cancelled. */
  failure: ConnectError | undefined;
  /** Resolves once it is synced or has ended. */
  readonly settled: Promise<void>;
  private settle: () => void = () => undefined;

  constructor(readonly accounts: ReadonlySet<string>, public aliveAt: number) {
    this.settled = new Promise((resolve) => {
      this.settle = resolve;
    });
  }

  markSynced(): void {
    this.synced = true;
    this.settle();
  }

  markEnded(failure: ConnectError | undefined): void {
    this.ended = true;
    this.failure = failure;
    this.settle();
  }

  cancel(): void {
    this.controller.abort();
  }
}

/** A one-shot wake-up for the supervisor: `wait` resolves on the next `notify` or after `timeoutMs`. */
class Wake {
  private pending = false;
  private waiter: (() => void) | undefined;

  notify(): void {
    this.pending = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }

  wait(timeoutMs: number): Promise<void> {
    if (this.pending) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        resolve();
      }, Math.max(timeoutMs, 0));
      this.waiter = () => {
        clearTimeout(timer);
        this.pending = false;
        resolve();
      };
    });
  }
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function sameSet(a: ReadonlySet<string>, b: ReadonlySet<string>): boolean {
  if (a.size !== b.size) {
    return false;
  }
  for (const item of a) {
    if (!b.has(item)) {
      return false;
    }
  }
  return true;
}

type Rpc = Client<typeof EntitlementService>;

export class EntitlementsClient {
  private readonly callSession: Http2SessionManager;
  private readonly rpc: Rpc;
  private watchSession: Http2SessionManager;
  private watchRpc: Rpc;
  /** The accounts held, least recently used first. */
  private readonly accounts = new Map<string, Account>();
  /** The stream in use (synced); undefined before the first one and while a lost one is replaced. */
  private stream: Stream | undefined;
  /** The last stream that was in use: its accounts and last sign of life still vouch for what is
   * held (within the staleness bound) until another stream takes its place. */
  private covering: Stream | undefined;
  /** Streams not cancelled yet: the one in use, one opening, and an old one until it is replaced. */
  private readonly open = new Set<Stream>();
  private readonly wake = new Wake();
  private supervisor: Promise<void> | undefined;
  private readonly counters: Omit<ClientStats, "watching"> = {
    checkGateCalls: 0,
    getEntitlementsCalls: 0,
    streamsOpened: 0,
    reconnects: 0,
    streamFailures: 0,
    messages: 0,
    heartbeats: 0,
  };
  private readonly target: string;
  private readonly token: string;
  private readonly callTimeoutMs: number;
  private readonly firstAnswerTimeoutMs: number;
  private readonly maxStalenessMs: number;
  private readonly heartbeatMs: number;
  private readonly reconnectInitialMs: number;
  private readonly reconnectMaxMs: number;
  private readonly maxAccounts: number;
  private closed = false;

  constructor(options: EntitlementsClientOptions) {
    this.target = options.target;
    this.token = options.token;
    this.callTimeoutMs = options.callTimeoutMs ?? 2_000;
    this.firstAnswerTimeoutMs = options.firstAnswerTimeoutMs ?? 2_000;
    this.maxStalenessMs = options.maxStalenessMs ?? 5_000;
    if (!(this.maxStalenessMs > 0)) {
      throw new RangeError("maxStalenessMs must be positive");
    }
    this.heartbeatMs = options.heartbeatIntervalMs ?? defaultHeartbeatMs(this.maxStalenessMs);
    if (!(this.heartbeatMs >= MIN_HEARTBEAT_MS && this.heartbeatMs <= MAX_HEARTBEAT_MS)) {
      throw new RangeError(`heartbeatIntervalMs must be from ${MIN_HEARTBEAT_MS} to ${MAX_HEARTBEAT_MS}`);
    }
    this.reconnectInitialMs = options.reconnectInitialMs ?? 200;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 10_000;
    this.maxAccounts = options.maxAccounts ?? MAX_ACCOUNTS_PER_STREAM;
    if (!(Number.isInteger(this.maxAccounts) && this.maxAccounts >= 1 && this.maxAccounts <= MAX_ACCOUNTS_PER_STREAM)) {
      throw new RangeError(`maxAccounts must be from 1 to ${MAX_ACCOUNTS_PER_STREAM}`);
    }
    [this.callSession, this.rpc] = this.connection();
    [this.watchSession, this.watchRpc] = this.connection();
  }

  /** Is `gate` allowed for the account now. Answered from the gate schedule held for it while that
   * is fresh, at the current time, with no call; else by CheckGate. The first read about an account
   * adds it to the stream and waits for its first message (`firstAnswerTimeoutMs`). An account never
   * seen is not an error: its gates are empty, so the answer is false. */
  async check(accountId: string, gate: string): Promise<boolean> {
    if (gate === "") {
      throw new ConnectError("gate is required", Code.InvalidArgument);
    }
    const account = await this.ready(accountId);
    const span = this.freshSpan(account);
    if (span !== undefined) {
      return span.gates.has(gate);
    }
    this.counters.checkGateCalls += 1;
    const reply = await this.rpc.checkGate({ accountId: account.accountId, gate }, this.callOptions());
    return reply.allowed;
  }

  /** The answer from what is held, when it is fresh and its schedule covers now; undefined otherwise.
   * Makes no call and does not add the account to the stream. */
  cached(accountId: string, gate: string): boolean | undefined {
    const account = this.accounts.get(accountId.trim());
    return account === undefined ? undefined : this.freshSpan(account)?.gates.has(gate);
  }

  /** The entitlements last received for the account, fresh or not; undefined when none is held. */
  held(accountId: string): Entitlements | undefined {
    return this.accounts.get(accountId.trim())?.held?.entitlements;
  }

  /** The account's entitlements now: the message held while it is fresh and no window boundary in
   * its schedule has passed since it was computed; else GetEntitlements. */
  async entitlements(accountId: string): Promise<Entitlements> {
    const account = await this.ready(accountId);
    const held = account.held;
    const first = held?.spans[0];
    if (held !== undefined && first !== undefined && this.freshSpan(account) === first) {
      return held.entitlements;
    }
    this.counters.getEntitlementsCalls += 1;
    const reply = await this.rpc.getEntitlements({ accountId: account.accountId }, this.callOptions());
    if (reply.entitlements === undefined) {
      throw new ConnectError("GetEntitlements answered without entitlements", Code.Internal);
    }
    return reply.entitlements;
  }

  /** The account's entitlements as soon as known, then each time what it holds changes: every new
   * state once, none twice, never an older revision after a newer one, across reconnects and stream
   * replacements. While watched, the account is never dropped to make room. Ends when `close` is
   * called; throws the status that ended the stream for good. */
  async *watch(accountId: string): AsyncGenerator<Entitlements, void, undefined> {
    const account = this.want(accountIdOf(accountId));
    const inbox = new Inbox();
    account.watchers.add(inbox);
    try {
      if (account.held !== undefined) {
        inbox.push(account.held.entitlements);
      }
      for (;;) {
        const next = await inbox.take();
        if (next === undefined) {
          return;
        }
        yield next;
      }
    } finally {
      account.watchers.delete(inbox);
    }
  }

  /** A copy of the client's counters. */
  stats(): ClientStats {
    return { ...this.counters, watching: this.stream?.accounts.size ?? 0 };
  }

  /** Cancels every stream and closes the connections; watchers end, and the client answers nothing more. */
  close(): void {
    this.closed = true;
    this.wake.notify();
    for (const stream of this.open) {
      stream.cancel();
    }
    this.open.clear();
    for (const account of this.accounts.values()) {
      account.drop();
    }
    this.accounts.clear();
    this.watchSession.abort();
    this.callSession.abort();
  }

  // -- reads ------------------------------------------------------------------------------------

  /** The account, added to the stream if new and waited for until first held. */
  private async ready(accountId: string): Promise<Account> {
    const account = this.want(accountIdOf(accountId));
    if (account.held === undefined) {
      await account.firstMessage(this.firstAnswerTimeoutMs);
    }
    if (account.failure !== undefined) {
      throw account.failure;
    }
    return account;
  }

  /** The span in force now, when what is held for the account is fresh (see isFresh). */
  private freshSpan(account: Account): Span | undefined {
    const held = account.held;
    if (held === undefined) {
      return undefined;
    }
    const stream = this.covering;
    const covered = stream !== undefined && stream.accounts.has(account.accountId) ? stream.aliveAt : undefined;
    if (!isFresh(held.confirmedAt, covered, performance.now(), this.maxStalenessMs)) {
      return undefined;
    }
    return spanAt(held.spans, Date.now());
  }

  /** The account held, made on first use (the stream is told); marked most recently used. */
  private want(accountId: string): Account {
    if (this.closed) {
      throw new ConnectError("the client is closed", Code.Canceled);
    }
    let account = this.accounts.get(accountId);
    if (account !== undefined) {
      this.accounts.delete(accountId);
      this.accounts.set(accountId, account);
      return account;
    }
    account = new Account(accountId);
    this.accounts.set(accountId, account);
    this.evict();
    this.wake.notify();
    this.supervisor ??= this.supervise();
    return account;
  }

  /** Drops least recently used accounts nobody watches until at most `maxAccounts` are held. */
  private evict(): void {
    for (const account of this.accounts.values()) {
      if (this.accounts.size <= this.maxAccounts) {
        return;
      }
      if (account.watchers.size === 0) {
        this.accounts.delete(account.accountId);
        account.drop();
      }
    }
  }

  // -- the stream -------------------------------------------------------------------------------

  private connection(): [Http2SessionManager, Rpc] {
    const session = new Http2SessionManager(this.target);
    return [session, createClient(EntitlementService, createGrpcTransport({ baseUrl: this.target, sessionManager: session }))];
  }

  private healthy(stream: Stream | undefined): stream is Stream {
    return stream !== undefined && !stream.ended && performance.now() - stream.aliveAt <= 2 * this.heartbeatMs;
  }

  /** Keeps one synced stream over the accounts held: opens a new one when the set changes, or when
   * the one in use ends or goes silent (on a new connection, after a backoff with jitter). */
  private async supervise(): Promise<void> {
    let failures = 0;
    while (!this.closed) {
      const wanted = new Set(this.accounts.keys());
      const current = this.stream;
      if (wanted.size === 0) {
        if (current !== undefined) {
          this.retire(current);
          this.stream = undefined;
        }
      } else if (!this.healthy(current) || !sameSet(current.accounts, wanted)) {
        if (current !== undefined && !this.healthy(current)) {
          this.counters.reconnects += 1;
          this.stream = undefined;
          this.retire(current);
          this.replaceWatchConnection();
          await pause(backoffMs(failures, this.reconnectInitialMs, this.reconnectMaxMs));
          continue;  // the set may have changed meanwhile
        }
        const opened = await this.openStream(wanted);
        if (this.closed) {
          return;
        }
        if (opened.synced) {
          failures = 0;
          this.promote(opened);
        } else {
          this.counters.streamFailures += 1;
          this.retire(opened);
          if (opened.failure !== undefined && !isRetryable(opened.failure.code)) {
            this.fail(opened);
            continue;
          }
          if (this.stream === undefined || this.stream.ended) {
            this.replaceWatchConnection();
          }
          await pause(backoffMs(failures, this.reconnectInitialMs, this.reconnectMaxMs));
          failures += 1;
          continue;
        }
      }
      const inUse = this.stream;
      const silentIn = inUse === undefined ? 3_600_000 : inUse.aliveAt + 2 * this.heartbeatMs - performance.now() + 1;
      await this.wake.wait(silentIn);
      if (!this.closed && new Set(this.accounts.keys()).size !== wanted.size) {
        await pause(5);  // a burst of new accounts joins one new stream
      }
    }
  }

  /** Opens a stream over `accounts` with the revisions held and waits until it has caught up
   * (synced), ended, or the catch-up time has passed. */
  private async openStream(accounts: ReadonlySet<string>): Promise<Stream> {
    const stream = new Stream(accounts, performance.now());
    this.open.add(stream);
    this.counters.streamsOpened += 1;
    const request = create(WatchEntitlementsRequestSchema, {
      accountIds: [...accounts].sort(),
      knownRevisions: this.knownRevisions(accounts),
      heartbeatInterval: {
        seconds: BigInt(Math.floor(this.heartbeatMs / 1_000)),
        nanos: Math.round((this.heartbeatMs % 1_000) * 1_000_000),
      },
    });
    void this.read(stream, this.watchRpc, request);
    const catchUpMs = Math.max(this.callTimeoutMs, 2 * this.heartbeatMs) + 5 * accounts.size;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([stream.settled, new Promise<void>((resolve) => {
      timer = setTimeout(resolve, catchUpMs);
    })]);
    clearTimeout(timer);
    return stream;
  }

  /** What a new stream over `accounts` may skip: each account held whose schedule has not run out. */
  private knownRevisions(accounts: ReadonlySet<string>): Record<string, bigint> {
    const known: Record<string, bigint> = {};
    const wall = Date.now();
    for (const accountId of accounts) {
      const held = this.accounts.get(accountId)?.held;
      if (held !== undefined && spanAt(held.spans, wall) !== undefined) {
        known[accountId] = held.entitlements.revision;
      }
    }
    return known;
  }

  private async read(stream: Stream, rpc: Rpc, request: WatchEntitlementsRequest): Promise<void> {
    let failure: ConnectError | undefined;
    try {
      for await (const message of rpc.watchEntitlements(request, { signal: stream.controller.signal, headers: this.headers() })) {
        const now = performance.now();
        stream.aliveAt = now;
        if (message.heartbeatAt !== undefined) {
          this.counters.heartbeats += 1;
          if (!stream.synced) {
            stream.markSynced();
          }
          continue;
        }
        this.counters.messages += 1;
        if (message.entitlements !== undefined) {
          this.receive(message.entitlements, spansOf(message.gateSchedule), now);
        }
      }
      failure = new ConnectError("the stream ended", Code.Unavailable);
    } catch (error) {
      failure = ConnectError.from(error);
    } finally {
      const cancelled = stream.controller.signal.aborted;
      stream.markEnded(cancelled ? undefined : failure);
      this.open.delete(stream);
      if (stream === this.stream) {
        if (!cancelled && failure !== undefined && !isRetryable(failure.code)) {
          this.fail(stream);
        }
        this.wake.notify();
      }
    }
  }

  /** Takes one account message: kept when newer than what is held (see isNewer), and passed to the
   * account's watchers when it also holds something new; the same revision again only confirms
   * what is held. */
  private receive(entitlements: Entitlements, spans: Span[], now: number): void {
    const account = this.accounts.get(entitlements.accountId);
    if (account === undefined) {
      return;  // no longer held
    }
    const held = account.held;
    if (held !== undefined && !isNewer(held.entitlements, entitlements)) {
      if (held.entitlements.revision === entitlements.revision) {
        held.confirmedAt = Math.max(held.confirmedAt, now);
      }
      return;
    }
    account.held = { entitlements, spans, confirmedAt: now };
    account.releaseFirstWaiters();
    if (admits(held?.entitlements, entitlements)) {
      for (const inbox of account.watchers) {
        inbox.push(entitlements);
      }
    }
  }

  /** Makes `stream` the one in use and cancels the one it replaces. */
  private promote(stream: Stream): void {
    const old = this.stream;
    this.stream = stream;
    this.covering = stream;
    if (old !== undefined && old !== stream) {
      this.retire(old);
    }
  }

  private retire(stream: Stream): void {
    stream.cancel();
    this.open.delete(stream);
  }

  /** A stream ended with a status retrying will not help: its accounts are dropped, their pending
   * reads and watchers get the status, and the next read about one of them starts again. */
  private fail(stream: Stream): void {
    const failure = stream.failure ?? new ConnectError("the stream failed", Code.Unknown);
    for (const accountId of stream.accounts) {
      const account = this.accounts.get(accountId);
      if (account !== undefined) {
        this.accounts.delete(accountId);
        account.drop(failure);
      }
    }
    if (this.stream === stream) {
      this.stream = undefined;
    }
    if (this.covering === stream) {
      this.covering = undefined;
    }
  }

  /** A new connection for the next stream: a silent one may be dead without anyone being told. */
  private replaceWatchConnection(): void {
    const old = this.watchSession;
    [this.watchSession, this.watchRpc] = this.connection();
    old.abort();
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, "x-request-id": `ts-${randomUUID()}` };
  }

  private callOptions(): CallOptions {
    return { headers: this.headers(), timeoutMs: this.callTimeoutMs };
  }
}
