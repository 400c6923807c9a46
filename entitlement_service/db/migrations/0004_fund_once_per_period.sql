-- Funding once per billing period. A `per_period` grant is issued from the paid invoice line that
-- pays for a period, at most once per (subscription, grant program, period), whatever else is
-- paid in that period; a program whose `on_change` is `difference` may top a period up to the
-- highest level paid in it, once per level. Periods are told apart by their end: a proration's
-- period runs from the change to the end of the period it belongs to.
--
-- `basis` says why a row was issued: `period` (the line that pays for a period), `difference` (an
-- upgrade paid mid-period; `funded_to` is the period's total after it), `one_time`, or `checkout`
-- (a paid one-time checkout). Rows issued before this migration have no basis and are left out of
-- the constraints below, but still count as funding their period.

ALTER TABLE grant_programs ADD COLUMN on_change text NOT NULL DEFAULT 'none'
    CHECK (on_change IN ('none', 'difference'));

ALTER TABLE issued_grants
    ADD COLUMN basis text CHECK (basis IN ('period', 'difference', 'one_time', 'checkout')),
    ADD COLUMN funded_to bigint,
    ADD CONSTRAINT issued_grants_difference_level CHECK ((basis = 'difference') = (funded_to IS NOT NULL)),
    ADD CONSTRAINT issued_grants_period_funding CHECK (basis NOT IN ('period', 'difference')
        OR (cadence = 'per_period' AND subscription_id IS NOT NULL AND period IS NOT NULL));

CREATE UNIQUE INDEX issued_grants_once_per_period ON issued_grants (subscription_id, grant_program_code, upper(period))
    WHERE basis = 'period';
CREATE UNIQUE INDEX issued_grants_once_per_level ON issued_grants
    (subscription_id, grant_program_code, upper(period), funded_to) WHERE basis = 'difference';
