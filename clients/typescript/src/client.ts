/**
 * An example client of the entitlement service for Node.js: gate checks answered from a local cache
 * that WatchEntitlements keeps fresh, with CheckGate and GetEntitlements as the fallback when the
 * cache cannot vouch for an answer.
 *
 * Each account the client is asked about gets one WatchEntitlements stream, opened on first use
 * and kept open: the service sends the account's entitlements at once, then again after every
 * change (a committed event, or a window boundary passing that changes what is in force). All
 * streams share one HTTP/2 connection. A stream that fails with a status worth retrying is opened
 * again after a backoff with jitter; its first message then carries the state now, so a change
 * committed while it was closed is seen once, and a message that holds nothing new is not passed on.
 */

import { randomUUID } from "node:crypto";

import { clone, equals } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type CallOptions, type Client } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";

import {
  EntitlementService,
  EntitlementsSchema,
  type Entitlements,
} from "./gen/selfserve/entitlement/v1/entitlement_pb.js";

export type { Entitlements } from "./gen/selfserve/entitlement/v1/entitlement_pb.js";
export { Code, ConnectError } from "@connectrpc/connect";

export interface EntitlementsClientOptions {
  /** The entitlement service's gRPC address as a URL: `http://127.0.0.1:50051` (plaintext) or `https://...`. */
  target: string;
  /** A token of the `product` role, sent as `authorization: Bearer <token>` on every call. */
  token: string;
  /** The deadline of each CheckGate and GetEntitlements call. Default 2,000 ms. */
  callTimeoutMs?: number;
  /** How long a read about an account not cached yet waits for its stream's first message before
   * it asks the service directly. Default 2,000 ms. */
  firstAnswerTimeoutMs?: number;
  /** How long a cached answer is still used once its stream has lost its connection; past it, reads
   * ask the service directly until the stream is back. Default 5,000 ms. */
  maxStalenessMs?: number;
  /** The first delay before a failed stream is opened again; each further failure doubles it, up to
   * `reconnectMaxMs`, and each delay is drawn between half the bound and the bound. Defaults 200 ms
   * and 10,000 ms. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  /** Accounts cached at most, each with its stream: beyond it, the least recently used account that
   * nobody watches is dropped and its stream closed. Default 1,000. */
  maxAccounts?: number;
  /** HTTP/2 PING frames on a connection with open streams and nothing received for this long, so a
   * connection that went silent is noticed and its streams opened again. gRPC servers answer pings
   * more frequent than one per five minutes without data with GOAWAY (`too_many_pings`), hence the
   * default of 360,000 ms. */
  pingIntervalMs?: number;
  /** How long a PING may go unanswered before the connection is dropped. Default 15,000 ms. */
  pingTimeoutMs?: number;
}

/** What the client has done so far: how often it asked the service directly, and its streams. */
export interface ClientStats {
  /** CheckGate calls made because no fresh cached answer existed. */
  checkGateCalls: number;
  /** GetEntitlements calls made because no fresh cached answer existed. */
  getEntitlementsCalls: number;
  /** WatchEntitlements streams opened, first opens and reopens alike. */
  streamsOpened: number;
  /** Streams that ended with a status worth retrying and were opened again after a backoff. */
  reconnects: number;
  /** Stream messages received, including those that held nothing new. */
  messages: number;
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

/** Whether a stream message replaces the state held and goes to watchers: always when nothing is
 * held; never when its revision is lower (a read through a replica further behind) or when it holds
 * the same as the state held (the first message after a reconnect with nothing changed meanwhile). */
export function admits(held: Entitlements | undefined, incoming: Entitlements): boolean {
  return held === undefined || (incoming.revision >= held.revision && !sameEntitlements(held, incoming));
}

/** Whether a cached state may answer: its stream is live, or was lost at most `maxStalenessMs` ago. */
export function isFresh(live: boolean, lostAt: number, now: number, maxStalenessMs: number): boolean {
  return live || now - lostAt <= maxStalenessMs;
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

/** One account's cached entitlements and the stream that keeps them. */
class Account {
  /** The latest entitlements the stream delivered; undefined before its first message. */
  state: Entitlements | undefined;
  /** True from the first message of the stream's current connection until that stream ends. */
  live = false;
  /** When the stream last stopped being live (Date.now()); meaningful while `live` is false. */
  lostAt = 0;
  /** The status that ended the stream for good, if one did. */
  failure: ConnectError | undefined;
  readonly controller = new AbortController();
  readonly watchers = new Set<Inbox>();
  private firstWaiters: Array<() => void> = [];

  constructor(readonly accountId: string) {}

  /** The state when the cache can vouch for it: its stream is live, or lost less than `maxStalenessMs` ago. */
  fresh(now: number, maxStalenessMs: number): Entitlements | undefined {
    if (this.state === undefined) {
      return undefined;
    }
    return isFresh(this.live, this.lostAt, now, maxStalenessMs) ? this.state : undefined;
  }

  /** Resolves once the first message arrives, the stream ends or is closed, or `timeoutMs` passes. */
  firstMessage(timeoutMs: number): Promise<void> {
    if (this.state !== undefined || this.failure !== undefined || this.controller.signal.aborted) {
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
}

function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

export class EntitlementsClient {
  private readonly rpc: Client<typeof EntitlementService>;
  private readonly session: Http2SessionManager;
  private readonly accounts = new Map<string, Account>();
  private readonly counters: ClientStats = {
    checkGateCalls: 0,
    getEntitlementsCalls: 0,
    streamsOpened: 0,
    reconnects: 0,
    messages: 0,
  };
  private readonly token: string;
  private readonly callTimeoutMs: number;
  private readonly firstAnswerTimeoutMs: number;
  private readonly maxStalenessMs: number;
  private readonly reconnectInitialMs: number;
  private readonly reconnectMaxMs: number;
  private readonly maxAccounts: number;
  private closed = false;

  constructor(options: EntitlementsClientOptions) {
    this.token = options.token;
    this.callTimeoutMs = options.callTimeoutMs ?? 2_000;
    this.firstAnswerTimeoutMs = options.firstAnswerTimeoutMs ?? 2_000;
    this.maxStalenessMs = options.maxStalenessMs ?? 5_000;
    this.reconnectInitialMs = options.reconnectInitialMs ?? 200;
    this.reconnectMaxMs = options.reconnectMaxMs ?? 10_000;
    this.maxAccounts = options.maxAccounts ?? 1_000;
    this.session = new Http2SessionManager(options.target, {
      pingIntervalMs: options.pingIntervalMs ?? 360_000,
      pingTimeoutMs: options.pingTimeoutMs ?? 15_000,
    });
    const transport = createGrpcTransport({ baseUrl: options.target, sessionManager: this.session });
    this.rpc = createClient(EntitlementService, transport);
  }

  /** Is `gate` allowed for the account now. Answered from the cache while it is fresh, else by
   * CheckGate. An account never seen is not an error: its gates are empty, so the answer is false. */
  async check(accountId: string, gate: string): Promise<boolean> {
    if (gate === "") {
      throw new ConnectError("gate is required", Code.InvalidArgument);
    }
    const cached = await this.current(accountId);
    if (cached !== undefined) {
      return cached.gates.includes(gate);
    }
    this.counters.checkGateCalls += 1;
    const reply = await this.rpc.checkGate({ accountId, gate }, this.callOptions());
    return reply.allowed;
  }

  /** The account's entitlements now: from the cache while it is fresh, else by GetEntitlements. */
  async entitlements(accountId: string): Promise<Entitlements> {
    const cached = await this.current(accountId);
    if (cached !== undefined) {
      return cached;
    }
    this.counters.getEntitlementsCalls += 1;
    const reply = await this.rpc.getEntitlements({ accountId }, this.callOptions());
    if (reply.entitlements === undefined) {
      throw new ConnectError("GetEntitlements answered without entitlements", Code.Internal);
    }
    return reply.entitlements;
  }

  /** The account's entitlements as soon as known, then each time what it holds changes: every new
   * state once, none twice, never an older revision after a newer one, across reconnects. Ends
   * when `close` is called; throws the status that ended the account's stream for good. */
  async *watch(accountId: string): AsyncGenerator<Entitlements, void, undefined> {
    const account = this.account(accountId);
    const inbox = new Inbox();
    account.watchers.add(inbox);
    try {
      if (account.state !== undefined) {
        inbox.push(account.state);
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
    return { ...this.counters };
  }

  /** Closes every stream and the connection; watchers end, and the client answers nothing more. */
  close(): void {
    this.closed = true;
    for (const account of this.accounts.values()) {
      this.drop(account);
    }
    this.session.abort();
  }

  private async current(accountId: string): Promise<Entitlements | undefined> {
    const account = this.account(accountId);
    if (account.state === undefined) {
      await account.firstMessage(this.firstAnswerTimeoutMs);
    }
    if (account.failure !== undefined) {
      throw account.failure;
    }
    return account.fresh(Date.now(), this.maxStalenessMs);
  }

  /** The account's cache entry, made and its stream opened on first use; marked most recently used. */
  private account(accountId: string): Account {
    if (this.closed) {
      throw new ConnectError("the client is closed", Code.Canceled);
    }
    if (accountId === "") {
      throw new ConnectError("account_id is required", Code.InvalidArgument);
    }
    let account = this.accounts.get(accountId);
    if (account !== undefined) {
      this.accounts.delete(accountId);
      this.accounts.set(accountId, account);
      return account;
    }
    account = new Account(accountId);
    this.accounts.set(accountId, account);
    void this.follow(account);
    this.evict();
    return account;
  }

  private evict(): void {
    for (const account of this.accounts.values()) {
      if (this.accounts.size <= this.maxAccounts) {
        return;
      }
      if (account.watchers.size === 0) {
        this.drop(account);
      }
    }
  }

  private drop(account: Account, failure?: ConnectError): void {
    if (this.accounts.get(account.accountId) === account) {
      this.accounts.delete(account.accountId);
    }
    account.failure = failure;
    account.controller.abort();
    account.releaseFirstWaiters();
    for (const inbox of account.watchers) {
      inbox.close(failure);
    }
  }

  /** Keeps the account's stream open until the account is dropped: reopens it after a retryable
   * status with backoff, and drops the account on any other. */
  private async follow(account: Account): Promise<void> {
    const signal = account.controller.signal;
    let attempt = 0;
    while (!signal.aborted) {
      this.counters.streamsOpened += 1;
      try {
        const stream = this.rpc.watchEntitlements({ accountId: account.accountId }, { signal, headers: this.headers() });
        for await (const message of stream) {
          this.counters.messages += 1;
          attempt = 0;
          if (message.entitlements !== undefined) {
            this.receive(account, message.entitlements);
          }
        }
      } catch (error) {
        if (signal.aborted) {
          return;
        }
        const failure = ConnectError.from(error);
        if (!isRetryable(failure.code)) {
          this.drop(account, failure);
          return;
        }
      }
      if (account.live) {
        account.live = false;
        account.lostAt = Date.now();
      }
      if (signal.aborted) {
        return;
      }
      this.counters.reconnects += 1;
      await pause(backoffMs(attempt, this.reconnectInitialMs, this.reconnectMaxMs), signal);
      attempt += 1;
    }
  }

  /** Takes one stream message: an older revision than the one held is ignored, the same state again
   * only proves the stream live, anything else replaces the state and goes to every watcher. */
  private receive(account: Account, entitlements: Entitlements): void {
    account.live = true;
    if (!admits(account.state, entitlements)) {
      return;
    }
    account.state = entitlements;
    account.releaseFirstWaiters();
    for (const inbox of account.watchers) {
      inbox.push(entitlements);
    }
  }

  private headers(): Record<string, string> {
    return { authorization: `Bearer ${this.token}`, "x-request-id": `ts-${randomUUID()}` };
  }

  private callOptions(): CallOptions {
    return { headers: this.headers(), timeoutMs: this.callTimeoutMs };
  }
}
