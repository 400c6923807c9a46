-- An account's assignments and bindings are read by account id alone, for many accounts at once
-- (account_id = ANY(...)), which a GiST index cannot serve: a B-tree on account_id serves those
-- reads and the point-in-time ones, and costs less to maintain on every insert.
DROP INDEX plan_assignments_account;
CREATE INDEX plan_assignments_account ON plan_assignments (account_id);
DROP INDEX grant_bindings_account;
CREATE INDEX grant_bindings_account ON grant_bindings (account_id);
