-- Every resolution a price has had, and from when: a catalog change (a price's group, plan, gate
-- bundle or grants) takes effect from one instant for every account, and derivations read each
-- stretch of history with the resolution in force then. `effective_from` NULL: since always (a
-- price's first resolution). Prices stored before this migration start with their resolution now.
CREATE TABLE catalog_price_versions (
    id                  bigserial PRIMARY KEY,
    price_id            text NOT NULL,
    effective_from      timestamptz,
    subscription_group  text,
    billing_plan_code   text,
    gate_bundle         text,
    grant_bindings      jsonb NOT NULL DEFAULT '[]',
    valid               boolean NOT NULL,
    invalid_reason      text,
    recorded_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (valid OR invalid_reason IS NOT NULL)
);
CREATE UNIQUE INDEX catalog_price_versions_once
    ON catalog_price_versions (price_id, coalesce(effective_from, '-infinity'::timestamptz));

INSERT INTO catalog_price_versions (price_id, effective_from, subscription_group, billing_plan_code, gate_bundle,
    grant_bindings, valid, invalid_reason)
SELECT price_id, NULL, subscription_group, billing_plan_code, gate_bundle, grant_bindings, valid, invalid_reason
FROM catalog_prices;

CREATE TRIGGER catalog_price_versions_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog_price_versions
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();

-- The accounts a catalog change touches, derived again after the change commits (by the call that
-- made it, and by every replica at start-up and now and then, so none is left behind by a crash).
CREATE TABLE catalog_rederive (
    account_id  text PRIMARY KEY,
    cause_id    text NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT now()
);
-- Which accounts hold a price, without reading every item.
CREATE INDEX subscription_items_price ON subscription_items (price_id);
