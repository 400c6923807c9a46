"""The entitlement service's Prometheus metrics."""

from prometheus_client import Counter

EVENTS = Counter(
    "provider_events_total",
    "Provider events by type and outcome (applied, duplicate, stale, ignored, rejected); duplicate and "
    "out-of-order rates are ratios of these.",
    ["type", "outcome"],
)
