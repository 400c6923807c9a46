-- The history each account is derived from: every subscription snapshot and paid invoice applied
-- to it (outcomes applied and stale), kept for as long as the account and never pruned with raw
-- payloads. Deriving an account after one more event reads only the part of this history the
-- event can change: each subscription's snapshots from the last one before the event's provider
-- time, and the invoices whose periods reach past it.
--
-- `provider_at` orders a subscription's snapshots (provider time). `ended_at` is set on a
-- snapshot that ended its subscription, so the earliest end is read without the rest. `reaches`
-- is the latest end of a paid invoice's line periods. A row this migration copies from
-- provider_events is not yet `summarized` (its snapshot alone knows `ended_at` and `reaches`):
-- its account is derived from its whole history once, which fills them in.
CREATE TABLE account_history (
    account_id        text NOT NULL REFERENCES accounts (account_id),
    provider_event_id text NOT NULL,
    subscription_id   text NOT NULL,
    invoice           boolean NOT NULL,
    provider_at       timestamptz NOT NULL,
    ended_at          timestamptz,
    reaches           timestamptz,
    summarized        boolean NOT NULL DEFAULT true,
    snapshot          bytea NOT NULL,
    PRIMARY KEY (account_id, provider_event_id)
);

-- A subscription's snapshots in provider order, read from a point on (and its first one).
CREATE INDEX account_history_snapshots ON account_history (account_id, subscription_id, provider_at)
    WHERE NOT invoice;
-- The snapshots that ended a subscription.
CREATE INDEX account_history_ends ON account_history (account_id, subscription_id, ended_at)
    WHERE ended_at IS NOT NULL;
-- Paid invoices by how far their periods reach.
CREATE INDEX account_history_invoices ON account_history (account_id, reaches) WHERE invoice;
-- Rows not summarized yet.
CREATE INDEX account_history_unsummarized ON account_history (account_id) WHERE NOT summarized;

INSERT INTO account_history (account_id, provider_event_id, subscription_id, invoice, provider_at, summarized,
                             snapshot)
SELECT account_id, provider_event_id, coalesce(subscription_id, ''), type = 'invoice.paid', created, false, snapshot
FROM provider_events
WHERE account_id IS NOT NULL AND snapshot IS NOT NULL AND outcome IN ('applied', 'stale')
  AND type LIKE ANY (ARRAY['customer.subscription.%', 'invoice.paid', 'reconciliation.subscription']);

-- The rows of an account a derivation may still change: those whose window is open or ends at or
-- after the instant it derives from.
CREATE INDEX plan_assignments_open ON plan_assignments (account_id, coalesce(upper(effective), 'infinity'));
CREATE INDEX grant_bindings_open ON grant_bindings (account_id, coalesce(upper(effective), 'infinity'));
-- Issued grants by the end of the period they fund (one-time grants have none).
CREATE INDEX issued_grants_period_end ON issued_grants (account_id, coalesce(upper(period), 'infinity'));
