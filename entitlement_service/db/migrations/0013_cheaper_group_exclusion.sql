-- The same exclusion (two overlapping windows from different subscriptions in one non-stackable
-- group of one account), led by an integer hash of the account id. GiST chooses where a new key
-- goes by the first column's penalty, and for text (btree_gist) that comparison of ranges of
-- strings was most of the cost of an insert, which grew with the table. An 8-byte integer is cheap
-- to compare; `account_id WITH =` is still part of the key, so accounts whose ids share a hash
-- never conflict with each other: the rule refuses exactly what it refused before.
-- `hashtextextended` is also what hash partitioning places rows by, so a PostgreSQL release that
-- changed it would break hash-partitioned tables carried over by `pg_upgrade` as well. Should one
-- ever do so, the index keeps the old hashes: rebuild it after the upgrade (docs/operations.md).
ALTER TABLE plan_assignments
    DROP CONSTRAINT one_subscription_per_non_stackable_group,
    ADD CONSTRAINT one_subscription_per_non_stackable_group EXCLUDE USING gist (
        (hashtextextended(account_id, 0)) WITH =, account_id WITH =, subscription_group WITH =,
        subscription_id WITH <>, effective WITH &&
    ) WHERE (NOT stackable AND NOT conflict);
