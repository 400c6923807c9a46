-- The audit trail is read by account. Its one reader, a purchase's trace, asks for the rows caused
-- by the purchase's events or about its objects: with `(cause, cause_id)` and `(entity, entity_id)`
-- led by columns the question leaves open, neither index could answer it, and it read the whole
-- table, every account's rows. The trace knows its accounts, so it now reads them along the primary
-- key `(account_id, id)`; these two indexes were only written, three rows of them per changed row.
DROP INDEX audit_log_cause;
DROP INDEX audit_log_entity;
