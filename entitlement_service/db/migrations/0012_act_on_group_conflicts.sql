-- What is done when two live subscriptions hold one non-stackable group anyway.
ALTER TABLE subscription_groups ADD COLUMN conflict_policy text NOT NULL DEFAULT 'flag'
    CHECK (conflict_policy IN ('flag', 'cancel_and_refund'));

-- Under `cancel_and_refund`, the decision to cancel a losing subscription and refund its payment,
-- kept once per subscription whatever replays, duplicates or replicas decide it again, and how far
-- the checkout service has carried it out at the provider.
CREATE TABLE conflict_actions (
    account_id              text NOT NULL REFERENCES accounts (account_id),
    subscription_id         text NOT NULL,
    subscription_group      text NOT NULL,
    winner_subscription_id  text NOT NULL,
    purchase_id             text,
    state                   text NOT NULL CHECK (state IN ('decided', 'canceled', 'refunded', 'skipped')),
    refund_id               text,
    reason                  text NOT NULL DEFAULT '',
    cause_id                text NOT NULL,
    decided_at              timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    PRIMARY KEY (account_id, subscription_id),
    CONSTRAINT conflict_actions_once_per_subscription UNIQUE (subscription_id)
);
CREATE INDEX conflict_actions_to_do ON conflict_actions (decided_at) WHERE state IN ('decided', 'canceled');
