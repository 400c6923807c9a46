-- A number that changes with every write to the catalog, so a replica can keep the catalog in
-- memory and read one row to know whether its copy is current. It comes from a sequence, which
-- never hands out a number twice: a copy read inside a transaction that rolled back can never
-- match a version committed later.
CREATE SEQUENCE catalog_version_seq;

CREATE TABLE catalog_version (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version   bigint NOT NULL
);
INSERT INTO catalog_version (version) VALUES (nextval('catalog_version_seq'));

CREATE FUNCTION bump_catalog_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE catalog_version SET version = nextval('catalog_version_seq');
    RETURN NULL;
END
$$;

CREATE TRIGGER subscription_groups_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON subscription_groups
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER plans_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON plans
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER grant_programs_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grant_programs
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER gate_bundles_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON gate_bundles
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER catalog_products_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog_products
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
CREATE TRIGGER catalog_prices_version AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON catalog_prices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_catalog_version();
