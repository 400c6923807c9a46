-- Every account-owned table's primary key leads with account_id, so one account's rows sit
-- together in each table and a table can be distributed by account_id (docs/scaling.md). Child
-- rows that found their account through their parent (subscription items, purchase transitions)
-- carry it themselves, filled from the parent.
--
-- Identities the provider or a caller assigns stay unique across accounts, as the code relies
-- on them: a provider subscription, a purchase, a checkout session and an issue of funding are
-- each held by one account, whichever it is (the targets of ON CONFLICT (subscription_id),
-- (purchase_id) and (issue_key)). They keep a unique constraint of their own beside the new
-- key; docs/scaling.md says what each becomes on a distributed database.
--
-- Indexes on account_id alone, or on (account_id, id), are dropped: the new key serves their reads.

-- Subscriptions and their children. The foreign keys to a subscription go while its key changes
-- and come back referencing its id, which stays unique.
ALTER TABLE subscription_items DROP CONSTRAINT subscription_items_subscription_id_fkey;
ALTER TABLE plan_assignments DROP CONSTRAINT plan_assignments_subscription_id_fkey;
ALTER TABLE grant_bindings DROP CONSTRAINT grant_bindings_subscription_id_fkey;

ALTER TABLE subscriptions
    DROP CONSTRAINT subscriptions_pkey,
    ADD PRIMARY KEY (account_id, subscription_id),
    ADD CONSTRAINT subscriptions_held_once UNIQUE (subscription_id);
DROP INDEX subscriptions_account;

ALTER TABLE subscription_items ADD COLUMN account_id text;
UPDATE subscription_items i SET account_id = s.account_id FROM subscriptions s
WHERE s.subscription_id = i.subscription_id;
ALTER TABLE subscription_items
    ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT subscription_items_pkey,
    ADD PRIMARY KEY (account_id, subscription_id, price_id),
    ADD CONSTRAINT subscription_items_subscription_id_fkey
        FOREIGN KEY (subscription_id) REFERENCES subscriptions (subscription_id);

ALTER TABLE plan_assignments
    DROP CONSTRAINT plan_assignments_pkey,
    ADD PRIMARY KEY (account_id, id),
    ADD CONSTRAINT plan_assignments_subscription_id_fkey
        FOREIGN KEY (subscription_id) REFERENCES subscriptions (subscription_id);
DROP INDEX plan_assignments_account;

ALTER TABLE grant_bindings
    DROP CONSTRAINT grant_bindings_pkey,
    ADD PRIMARY KEY (account_id, id),
    ADD CONSTRAINT grant_bindings_subscription_id_fkey
        FOREIGN KEY (subscription_id) REFERENCES subscriptions (subscription_id);
DROP INDEX grant_bindings_account;

-- Issued funding: an issue key is issued once, to whichever account it was issued to.
ALTER TABLE issued_grants
    DROP CONSTRAINT issued_grants_pkey,
    ADD PRIMARY KEY (account_id, issue_key),
    ADD CONSTRAINT issued_grants_issued_once UNIQUE (issue_key);

-- Purchases and their transitions: a transition belongs to its purchase's account.
ALTER TABLE purchase_transitions DROP CONSTRAINT purchase_transitions_purchase_id_fkey;
ALTER TABLE purchases
    DROP CONSTRAINT purchases_pkey,
    ADD PRIMARY KEY (account_id, purchase_id),
    ADD CONSTRAINT purchases_registered_once UNIQUE (purchase_id);

ALTER TABLE purchase_transitions ADD COLUMN account_id text;
UPDATE purchase_transitions t SET account_id = p.account_id FROM purchases p WHERE p.purchase_id = t.purchase_id;
ALTER TABLE purchase_transitions
    ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT purchase_transitions_pkey,
    ADD PRIMARY KEY (account_id, id),
    ADD CONSTRAINT purchase_transitions_purchase_fkey
        FOREIGN KEY (account_id, purchase_id) REFERENCES purchases (account_id, purchase_id);

-- The audit trail and mismatches: '' is the account of an entry or a finding about none (a
-- replayed event that found no account, a stuck checkout session that names none).
UPDATE audit_log SET account_id = '' WHERE account_id IS NULL;
ALTER TABLE audit_log
    ALTER COLUMN account_id SET DEFAULT '',
    ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT audit_log_pkey,
    ADD PRIMARY KEY (account_id, id);
DROP INDEX audit_log_account;

UPDATE mismatches SET account_id = '' WHERE account_id IS NULL;
ALTER TABLE mismatches
    ALTER COLUMN account_id SET DEFAULT '',
    ALTER COLUMN account_id SET NOT NULL,
    DROP CONSTRAINT mismatches_pkey,
    ADD PRIMARY KEY (account_id, mismatch_id);
-- Mismatches are read by account in id order, which the key serves; ListMismatches without an
-- account pages through every account's in id order.
DROP INDEX mismatches_account;
CREATE INDEX mismatches_in_order ON mismatches (mismatch_id);
