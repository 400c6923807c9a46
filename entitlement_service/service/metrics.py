"""The entitlement service's Prometheus metrics."""

from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "provider_events_total",
    "Provider events by type and outcome (applied, duplicate, stale, ignored, rejected); duplicate and "
    "out-of-order rates are ratios of these.",
    ["type", "outcome"],
)
LATE_EVENTS = Counter(
    "provider_events_late_total",
    "Provider events that arrived after a later state of their subscription was already held (out of "
    "order), by type and outcome: applied ones (an invoice, history filled in) included. The out-of-order "
    "rate is this over provider_events_total.",
    ["type", "outcome"],
)


# A labelled child found once per label values rather than once per event: `labels()` validates
# and locks each time. Types come from the provider, so the cache is bounded.
@lru_cache(maxsize=1024)
def events_of(kind: str, outcome: str) -> Counter:
    return EVENTS.labels(kind, outcome)


@lru_cache(maxsize=1024)
def late_events_of(kind: str, outcome: str) -> Counter:
    return LATE_EVENTS.labels(kind, outcome)


FINALIZE_SECONDS = Histogram(
    "purchase_finalize_seconds",
    "Checkout success to finalized: from the provider's completion (provider time; whoever finalizes, the "
    "webhook or the reconciler) and from the browser's return (our clock) to the purchase being finalized.",
    ["since"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 1800),
)
MISMATCHES_FOUND = Counter(
    "mismatches_found_total",
    "Differences between the provider's view and internal state found by the reconciler, by kind (the same "
    "difference read again by a later run counts again).",
    ["kind"],
)
MISMATCHES_REPAIRED = Counter(
    "mismatches_repaired_total", "Differences the reconciler repaired by applying the provider's state, by kind.",
    ["kind"],
)
GROUP_CONFLICTS = Counter(
    "group_conflicts_total",
    "Live subscriptions found sharing a non-stackable group: each losing subscription once, when its "
    "duplicate_subscription_in_group mismatch opens, by the group's conflict policy.",
    ["policy"],
)
OPEN_MISMATCHES = Gauge("mismatches_open", "Open differences between the provider's view and internal state.")
PURCHASES_PENDING = Gauge("purchases_pending", "Purchases pending or returned, not yet final.")
PURCHASES_PAST_TIMEOUT = Gauge("purchases_past_timeout", "Pending or returned purchases past their timeout.")
WATCH_STREAMS = Gauge("watch_streams", "WatchEntitlements streams open, however many accounts each watches.")
WATCHED_ACCOUNTS = Gauge("watched_accounts",
                         "Accounts watched by the open WatchEntitlements streams, summed over the streams.")
GATE_CACHE_ACCOUNTS = Gauge("gate_cache_accounts", "Accounts the CheckGate cache keeps an answer or a load for.")
NOTIFICATIONS_PROVEN = Gauge(
    "change_notifications_proven",
    "1 while this replica's change notifications are proven by its heartbeat, else 0 (CheckGate then reads "
    "the database).",
)
NOTIFICATIONS_UNPROVEN = Counter(
    "change_notifications_unproven_total",
    "Times this replica's change notifications stopped being proven (a missed heartbeat or a lost connection).",
)
DERIVATIONS = Counter(
    "account_derivations_total",
    "Account derivations by the history they read: `part` (from the instant the event can change on, "
    "which does not grow with the account's history) or `whole` (a new account or subscription, a late "
    "first snapshot, an account that ever had a group conflict, a catalog change, a replay or link).",
    ["history"],
)
DERIVED_PART, DERIVED_WHOLE = DERIVATIONS.labels("part"), DERIVATIONS.labels("whole")
EVENT_PAYLOADS_PRUNED = Counter(
    "provider_event_payloads_pruned_total",
    "Raw payloads of provider events dropped past EVENT_PAYLOAD_RETENTION_DAYS: with their month's partition, "
    "or in the archive. Everything else about the events is kept, and rejected events keep theirs.",
)
EVENT_PARTITIONS_CHANGED = Counter(
    "provider_event_partitions_changed_total",
    "Month partitions of provider_events made ahead (created) and folded into the archive once past the "
    "retention age (folded).",
    ["change"],
)
EVENT_RETENTION_RUNS = Counter(
    "event_retention_runs_total",
    "Event retention runs: completed, skipped (another replica was running one) and failed (tried again at "
    "the next run).",
    ["result"],
)
