-- The initial data model: catalog, accounts, purchases, provider events, subscriptions, plan
-- assignments, grant bindings, issued funding, audit trail and reconciliation findings.
-- Windows are half-open tstzrange values [effective_from, effective_until) in provider time.

CREATE EXTENSION IF NOT EXISTS btree_gist;

-- Catalog -------------------------------------------------------------------------------------

CREATE TABLE subscription_groups (
    code        text PRIMARY KEY,
    stackable   boolean NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE plans (
    code        text PRIMARY KEY,
    priority    integer NOT NULL,
    kind        text NOT NULL DEFAULT 'base' CHECK (kind IN ('base', 'addon')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE grant_programs (
    code        text PRIMARY KEY,
    cadence     text NOT NULL CHECK (cadence IN ('per_period', 'while_active', 'one_time')),
    unit        text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gate_bundles (
    code        text PRIMARY KEY,
    gates       text[] NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE catalog_products (
    product_id           text PRIMARY KEY,
    name                 text NOT NULL,
    active               boolean NOT NULL,
    deleted              boolean NOT NULL DEFAULT false,
    metadata             jsonb NOT NULL DEFAULT '{}',
    provider_updated_at  timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- A price with its metadata resolved against the product's: the merged rules a purchase uses.
-- `valid` false keeps the entry visible (with its reason) but unpurchasable.
CREATE TABLE catalog_prices (
    price_id             text PRIMARY KEY,
    product_id           text NOT NULL,
    lookup_key           text,
    active               boolean NOT NULL,
    deleted              boolean NOT NULL DEFAULT false,
    unit_amount          bigint,
    currency             text NOT NULL,
    interval             text CHECK (interval IN ('day', 'week', 'month', 'year')),
    interval_count       integer,
    metadata             jsonb NOT NULL DEFAULT '{}',
    provider_updated_at  timestamptz NOT NULL,
    subscription_group   text,
    billing_plan_code    text,
    gate_bundle          text,
    grant_bindings       jsonb NOT NULL DEFAULT '[]',
    valid                boolean NOT NULL,
    invalid_reason       text,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (valid OR invalid_reason IS NOT NULL)
);
CREATE UNIQUE INDEX catalog_prices_lookup_key ON catalog_prices (lookup_key)
    WHERE lookup_key IS NOT NULL AND NOT deleted;
CREATE INDEX catalog_prices_product ON catalog_prices (product_id);

-- Accounts ------------------------------------------------------------------------------------

-- `revision` increases with every change to the account's entitlements; readers and watchers
-- compare it to detect change, and caches key on it.
CREATE TABLE accounts (
    account_id            text PRIMARY KEY,
    provider_customer_id  text UNIQUE,
    revision              bigint NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Purchases -----------------------------------------------------------------------------------

CREATE TABLE purchases (
    purchase_id           text PRIMARY KEY,
    account_id            text NOT NULL REFERENCES accounts (account_id),
    state                 text NOT NULL
        CHECK (state IN ('pending', 'returned', 'finalized', 'expired', 'failed', 'conflict')),
    mode                  text NOT NULL CHECK (mode IN ('subscription', 'payment')),
    items                 jsonb NOT NULL,
    subscription_group    text,
    checkout_session_id   text NOT NULL UNIQUE,
    subscription_id       text,
    provider_customer_id  text,
    success_url           text NOT NULL,
    cancel_url            text NOT NULL,
    reason                text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    returned_at           timestamptz,
    finalized_at          timestamptz,
    expired_at            timestamptz,
    failed_at             timestamptz,
    conflict_at           timestamptz,
    expires_at            timestamptz NOT NULL,
    timeout_at            timestamptz NOT NULL
);
CREATE INDEX purchases_account ON purchases (account_id, created_at DESC);
CREATE INDEX purchases_subscription ON purchases (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX purchases_open ON purchases (timeout_at) WHERE state IN ('pending', 'returned');

CREATE TABLE purchase_transitions (
    id                 bigserial PRIMARY KEY,
    purchase_id        text NOT NULL REFERENCES purchases (purchase_id),
    from_state         text,
    to_state           text NOT NULL,
    at                 timestamptz NOT NULL DEFAULT now(),
    provider_event_id  text,
    reason             text NOT NULL DEFAULT ''
);
CREATE INDEX purchase_transitions_purchase ON purchase_transitions (purchase_id, id);

-- Provider events -----------------------------------------------------------------------------

-- The primary key is the deduplication: an event id is recorded once, in the same transaction as
-- the state change it causes. The raw payload is kept so any event can be traced and re-applied.
CREATE TABLE provider_events (
    provider_event_id  text PRIMARY KEY,
    type               text NOT NULL,
    created            timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    api_version        text NOT NULL DEFAULT '',
    object_id          text NOT NULL DEFAULT '',
    subscription_id    text,
    checkout_session_id text,
    account_id         text,
    provider_customer_id text,
    outcome            text NOT NULL CHECK (outcome IN ('applied', 'stale', 'ignored', 'rejected')),
    reason             text NOT NULL DEFAULT '',
    deliveries         integer NOT NULL DEFAULT 1,
    payload            bytea NOT NULL,
    snapshot           bytea,
    recorded_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provider_events_object ON provider_events (object_id, created);
CREATE INDEX provider_events_account ON provider_events (account_id, created);
CREATE INDEX provider_events_subscription ON provider_events (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX provider_events_session ON provider_events (checkout_session_id) WHERE checkout_session_id IS NOT NULL;
CREATE INDEX provider_events_rejected_customer ON provider_events (provider_customer_id)
    WHERE outcome = 'rejected';

-- Subscriptions -------------------------------------------------------------------------------

-- `provider_updated_at` and `provider_event_id` are the provider time and event of the state held:
-- an older snapshot never overwrites a newer one.
CREATE TABLE subscriptions (
    subscription_id       text PRIMARY KEY,
    account_id            text NOT NULL REFERENCES accounts (account_id),
    provider_customer_id  text NOT NULL,
    subscription_group    text,
    status                text NOT NULL CHECK (status IN ('incomplete', 'incomplete_expired', 'trialing',
                              'active', 'past_due', 'canceled', 'unpaid', 'paused')),
    provider_updated_at   timestamptz NOT NULL,
    provider_refetched    boolean NOT NULL DEFAULT false,
    provider_event_id     text,
    started_at            timestamptz,
    trial_end             timestamptz,
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    cancel_at             timestamptz,
    cancel_at_period_end  boolean NOT NULL DEFAULT false,
    canceled_at           timestamptz,
    ended_at              timestamptz,
    purchase_id           text,
    metadata              jsonb NOT NULL DEFAULT '{}',
    group_mismatch        text,
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_account ON subscriptions (account_id);

CREATE TABLE subscription_items (
    subscription_id       text NOT NULL REFERENCES subscriptions (subscription_id),
    price_id              text NOT NULL,
    item_id               text NOT NULL,
    product_id            text NOT NULL,
    quantity              bigint NOT NULL CHECK (quantity >= 0),
    effective             tstzrange NOT NULL,
    current_period_start  timestamptz,
    current_period_end    timestamptz,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subscription_id, price_id)
);

-- Plan assignments: which plan an account holds through which subscription, over which window.
-- A non-stackable group holds at most one subscription at any instant for an account, whatever
-- the code does: the exclusion constraint refuses two overlapping windows from different
-- subscriptions. A precedence loser is kept with `conflict` set and takes no part in it.
CREATE TABLE plan_assignments (
    id                             bigserial PRIMARY KEY,
    account_id                     text NOT NULL REFERENCES accounts (account_id),
    subscription_group             text NOT NULL,
    stackable                      boolean NOT NULL,
    subscription_id                text NOT NULL REFERENCES subscriptions (subscription_id),
    price_id                       text NOT NULL,
    billing_plan_code              text NOT NULL,
    priority                       integer NOT NULL,
    gate_bundle                    text,
    started_at                     timestamptz NOT NULL,
    effective                      tstzrange NOT NULL CHECK (NOT isempty(effective)),
    conflict                       boolean NOT NULL DEFAULT false,
    conflict_with_subscription_id  text,
    created_at                     timestamptz NOT NULL DEFAULT now(),
    CHECK (conflict = (conflict_with_subscription_id IS NOT NULL)),
    CONSTRAINT one_subscription_per_non_stackable_group EXCLUDE USING gist (
        account_id WITH =, subscription_group WITH =, subscription_id WITH <>, effective WITH &&
    ) WHERE (NOT stackable AND NOT conflict)
);
CREATE INDEX plan_assignments_account ON plan_assignments USING gist (account_id, effective);
CREATE INDEX plan_assignments_subscription ON plan_assignments (subscription_id);

-- Grant bindings: programs an effective subscription item funds, with where each came from.
-- A binding lost to another subscription in a non-stackable group is kept, marked, and grants
-- nothing. One-time purchases issue funding directly and have no binding.
CREATE TABLE grant_bindings (
    id                  bigserial PRIMARY KEY,
    account_id          text NOT NULL REFERENCES accounts (account_id),
    subscription_id     text NOT NULL REFERENCES subscriptions (subscription_id),
    subscription_group  text NOT NULL,
    price_id            text NOT NULL,
    product_id          text NOT NULL,
    grant_program_code  text NOT NULL,
    amount              bigint NOT NULL CHECK (amount >= 0),
    scale_by_quantity   boolean NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity >= 0),
    source              text NOT NULL CHECK (source IN ('price', 'product')),
    effective           tstzrange NOT NULL CHECK (NOT isempty(effective)),
    conflict_with_subscription_id text,
    created_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grant_bindings_account ON grant_bindings USING gist (account_id, effective);
CREATE INDEX grant_bindings_subscription ON grant_bindings (subscription_id);

-- Issued funding. The key (provider invoice or checkout session, and the binding's program and
-- price) makes issuance idempotent: a replayed event can never issue twice.
CREATE TABLE issued_grants (
    issue_key            text PRIMARY KEY,
    account_id           text NOT NULL REFERENCES accounts (account_id),
    grant_program_code   text NOT NULL,
    cadence              text NOT NULL CHECK (cadence IN ('per_period', 'one_time')),
    unit                 text NOT NULL,
    amount               bigint NOT NULL CHECK (amount >= 0),
    source               text NOT NULL CHECK (source IN ('price', 'product')),
    price_id             text NOT NULL,
    subscription_id      text,
    invoice_id           text,
    checkout_session_id  text,
    period               tstzrange,
    issued_at            timestamptz NOT NULL,
    provider_event_id    text NOT NULL,
    recorded_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (invoice_id IS NOT NULL OR checkout_session_id IS NOT NULL)
);
CREATE INDEX issued_grants_account ON issued_grants (account_id, issued_at);
CREATE INDEX issued_grants_subscription ON issued_grants (subscription_id);

-- Audit trail: every row a provider event, a reconciliation or a purchase step changed.
CREATE TABLE audit_log (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    account_id  text,
    cause       text NOT NULL CHECK (cause IN ('provider_event', 'reconciliation', 'purchase', 'catalog')),
    cause_id    text NOT NULL,
    entity      text NOT NULL,
    entity_id   text NOT NULL,
    action      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_cause ON audit_log (cause, cause_id);
CREATE INDEX audit_log_account ON audit_log (account_id, id);
CREATE INDEX audit_log_entity ON audit_log (entity, entity_id);

-- Reconciliation ------------------------------------------------------------------------------

CREATE TABLE mismatches (
    mismatch_id      bigserial PRIMARY KEY,
    kind             text NOT NULL,
    account_id       text,
    subscription_id  text,
    fingerprint      text NOT NULL,
    diff             jsonb NOT NULL,
    opened_at        timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    closed_at        timestamptz,
    resolution       text
);
-- The same open difference is recorded once.
CREATE UNIQUE INDEX mismatches_open_fingerprint ON mismatches (fingerprint) WHERE closed_at IS NULL;
CREATE INDEX mismatches_account ON mismatches (account_id, opened_at);

CREATE TABLE reconciler_checkpoints (
    name                 text PRIMARY KEY,
    last_event_created   timestamptz,
    last_event_id        text,
    updated_at           timestamptz NOT NULL DEFAULT now()
);
