-- A purchase keeps its provider checkout session's URL, so a second checkout into the same
-- non-stackable group can be answered with the open one instead of a new session. Purchases
-- registered before keep none.
ALTER TABLE purchases ADD COLUMN checkout_url text;

-- The open purchases of an account in a group, read under the account's lock at registration.
CREATE INDEX purchases_open_in_group ON purchases (account_id, subscription_group)
    WHERE state IN ('pending', 'returned');
