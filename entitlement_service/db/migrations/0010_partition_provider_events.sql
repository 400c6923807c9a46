-- Provider events partitioned by the provider's time (`created`, in UTC months), so that raw
-- payloads are dropped with the partition that holds them while everything else about an event
-- stays: ids, type, times, account, outcome, reason, deliveries and the normalized snapshot.
--
--   provider_events_archive   [MINVALUE, H): every event older than the month partitions, kept
--                             compact: no raw payload, except for a `rejected` event (ReplayEvents
--                             and ReplayUnreadableEvents apply those again from what is stored)
--   provider_events_YYYY_MM   [first of the month, first of the next), one per month from H on,
--                             made ahead of time
--   provider_events_default   DEFAULT: anything past the last month partition (normally nothing),
--                             moved into its month when that partition is made
--
-- So the number of partitions stays bounded: the months within the retention age, the months made
-- ahead, the archive and the default. Every delivery of one event carries the same `created`, so
-- the primary key (provider_event_id, created) still records an event once, and a duplicate of an
-- archived event still meets its row there.
--
-- The functions below change the layout: months made ahead (provider_events_add_months), a month
-- past the retention age folded into the archive (provider_events_bound_archive,
-- _validate_archive, then _fold_month). The service runs them as its runtime role, which owns
-- nothing: they run as their owner (SECURITY DEFINER), and only the roles granted EXECUTE may
-- call them. The payloads the archive itself holds are pruned where they lie, by plain updates.
--
-- The rows already recorded stay where they are: the table becomes the archive (with its raw
-- payloads, pruned in place once past the retention age), and the rows of this month and later
-- move into their partitions.

ALTER TABLE provider_events RENAME TO provider_events_archive;
ALTER TABLE provider_events_archive DROP CONSTRAINT provider_events_pkey;
ALTER TABLE provider_events_archive ALTER COLUMN payload DROP NOT NULL;
ALTER INDEX provider_events_object RENAME TO provider_events_archive_object;
ALTER INDEX provider_events_account RENAME TO provider_events_archive_account;
ALTER INDEX provider_events_subscription RENAME TO provider_events_archive_subscription;
ALTER INDEX provider_events_session RENAME TO provider_events_archive_session;
ALTER INDEX provider_events_rejected_customer RENAME TO provider_events_archive_rejected_customer;
ALTER INDEX provider_events_rejected RENAME TO provider_events_archive_rejected;

-- The same columns in the same order; `payload` is NULL once pruned.
CREATE TABLE provider_events (
    provider_event_id  text NOT NULL,
    type               text NOT NULL,
    created            timestamptz NOT NULL,
    received_at        timestamptz NOT NULL,
    api_version        text NOT NULL DEFAULT '',
    object_id          text NOT NULL DEFAULT '',
    subscription_id    text,
    checkout_session_id text,
    account_id         text,
    provider_customer_id text,
    outcome            text NOT NULL
        CONSTRAINT provider_events_outcome_check CHECK (outcome IN ('applied', 'stale', 'ignored', 'rejected')),
    reason             text NOT NULL DEFAULT '',
    deliveries         integer NOT NULL DEFAULT 1,
    payload            bytea,
    snapshot           bytea,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider_event_id, created)
) PARTITION BY RANGE (created);
CREATE INDEX provider_events_object ON provider_events (object_id, created);
CREATE INDEX provider_events_account ON provider_events (account_id, created);
CREATE INDEX provider_events_subscription ON provider_events (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX provider_events_session ON provider_events (checkout_session_id) WHERE checkout_session_id IS NOT NULL;
CREATE INDEX provider_events_rejected_customer ON provider_events (provider_customer_id)
    WHERE outcome = 'rejected';
CREATE INDEX provider_events_rejected ON provider_events (created, provider_event_id) WHERE outcome = 'rejected';

CREATE TABLE provider_events_default PARTITION OF provider_events DEFAULT;

-- The month partitions, oldest first: each one's bounds and name.
CREATE FUNCTION provider_event_months() RETURNS TABLE (month_start timestamptz, month_end timestamptz, name text)
LANGUAGE sql STABLE SET search_path FROM CURRENT SET TimeZone = 'UTC' AS $$
    SELECT make_timestamptz(m[1]::int, m[2]::int, 1, 0, 0, 0, 'UTC'),
           make_timestamptz(m[1]::int, m[2]::int, 1, 0, 0, 0, 'UTC') + interval '1 month', c.relname::text
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid,
         LATERAL regexp_match(c.relname, '^provider_events_(\d{4})_(\d{2})$') AS m
    WHERE i.inhparent = 'provider_events'::regclass AND m IS NOT NULL
    ORDER BY 1
$$;

-- Makes the month partitions after the last one, up to the month holding `through`; the rows the
-- default partition holds for a month move into it. Returns how many it made.
CREATE FUNCTION provider_events_add_months(through timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET TimeZone = 'UTC' AS $$
DECLARE
    next_start timestamptz;
    next_end timestamptz;
    partition text;
    made integer := 0;
BEGIN
    SELECT max(month_end) INTO next_start FROM provider_event_months();
    IF next_start IS NULL THEN
        RAISE EXCEPTION 'provider_events has no month partition to follow';
    END IF;
    WHILE next_start <= through LOOP
        next_end := next_start + interval '1 month';
        partition := 'provider_events_' || to_char(next_start, 'YYYY_MM');
        EXECUTE format('CREATE TABLE %I (LIKE provider_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition);
        LOCK TABLE provider_events_default IN SHARE ROW EXCLUSIVE MODE;
        EXECUTE format('WITH moved AS (DELETE FROM provider_events_default WHERE created >= $1 AND created < $2 '
                       'RETURNING *) INSERT INTO %I SELECT * FROM moved', partition) USING next_start, next_end;
        -- Takes no lock that stops writes to the other partitions.
        EXECUTE format('ALTER TABLE provider_events ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       partition, next_start, next_end);
        made := made + 1;
        next_start := next_end;
    END LOOP;
    RETURN made;
END
$$;

-- The first step of folding the month that ends at `month_end` into the archive: a constraint
-- saying the archive holds nothing from `month_end` on, added without reading the archive (a
-- moment's lock on it). The archive is re-attached with its new bound on the strength of it,
-- once validated, instead of being read while every writer waits.
CREATE FUNCTION provider_events_bound_archive(month_end timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET TimeZone = 'UTC' AS $$
DECLARE
    bound text := 'provider_events_archive_before_' || to_char(month_end, 'YYYY_MM');
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = 'provider_events_archive'::regclass AND conname = bound) THEN
        EXECUTE format('ALTER TABLE provider_events_archive ADD CONSTRAINT %I CHECK (created < %L) NOT VALID',
                       bound, month_end);
    END IF;
END
$$;

-- The second step: reads the archive to validate that constraint, while writes go on (a lock that
-- stops only other changes to the archive's definition).
CREATE FUNCTION provider_events_validate_archive(month_end timestamptz) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET TimeZone = 'UTC' AS $$
BEGIN
    EXECUTE format('ALTER TABLE provider_events_archive VALIDATE CONSTRAINT %I',
                   'provider_events_archive_before_' || to_char(month_end, 'YYYY_MM'));
END
$$;

-- The last step: the oldest month partition, which must end at `month_end` and not be the only
-- one, moves into the archive without its raw payloads (a `rejected` event keeps its own) and is
-- dropped, payloads and all; the archive's bound moves to `month_end`. Every statement on
-- provider_events waits while the month's rows are copied. Returns the events archived, the
-- payloads dropped and the payloads kept.
CREATE FUNCTION provider_events_fold_month(month_end timestamptz, OUT archived bigint, OUT payloads_dropped bigint,
                                           OUT payloads_kept bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT SET TimeZone = 'UTC' AS $$
DECLARE
    oldest record;
    bound text := 'provider_events_archive_before_' || to_char(month_end, 'YYYY_MM');
    earlier record;
    columns text;
    compacted text;
BEGIN
    SELECT * INTO oldest FROM provider_event_months() ORDER BY month_start LIMIT 1;
    IF oldest.month_end IS DISTINCT FROM month_end THEN
        RAISE EXCEPTION 'the oldest month partition, %, does not end at %', oldest.name, month_end;
    END IF;
    IF (SELECT count(*) FROM provider_event_months()) < 2 THEN
        RAISE EXCEPTION 'the last month partition, %, is never folded', oldest.name;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'provider_events_archive'::regclass
                   AND conname = bound AND convalidated) THEN
        RAISE EXCEPTION 'provider_events_archive has no validated constraint %', bound;
    END IF;
    -- Every column the table has, whatever later migrations add; the payload only when rejected.
    SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum),
           string_agg(CASE WHEN attname = 'payload' THEN 'CASE WHEN outcome = ''rejected'' THEN payload END'
                      ELSE quote_ident(attname) END, ', ' ORDER BY attnum)
    INTO columns, compacted
    FROM pg_attribute WHERE attrelid = 'provider_events'::regclass AND attnum > 0 AND NOT attisdropped;

    ALTER TABLE provider_events DETACH PARTITION provider_events_archive;
    EXECUTE format('ALTER TABLE provider_events DETACH PARTITION %I', oldest.name);
    FOR earlier IN SELECT conname FROM pg_constraint WHERE conrelid = 'provider_events_archive'::regclass
                   AND contype = 'c' AND starts_with(conname, 'provider_events_archive_before_') AND conname <> bound
    LOOP
        EXECUTE format('ALTER TABLE provider_events_archive DROP CONSTRAINT %I', earlier.conname);
    END LOOP;
    EXECUTE format('WITH moved AS (INSERT INTO provider_events_archive (%s) SELECT %s FROM %I RETURNING outcome) '
                   'SELECT count(*), count(*) FILTER (WHERE outcome <> ''rejected''), '
                   'count(*) FILTER (WHERE outcome = ''rejected'') FROM moved', columns, compacted, oldest.name)
    INTO archived, payloads_dropped, payloads_kept;
    EXECUTE format('ALTER TABLE provider_events ATTACH PARTITION provider_events_archive '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', month_end);
    EXECUTE format('DROP TABLE %I', oldest.name);
END
$$;

REVOKE ALL ON FUNCTION provider_events_add_months(timestamptz), provider_events_bound_archive(timestamptz),
    provider_events_validate_archive(timestamptz), provider_events_fold_month(timestamptz) FROM PUBLIC;

-- This month's partition; the rows recorded from this month on move into their partitions; the old
-- table, bounded below this month, becomes the archive; the next two months are made ahead.
SET LOCAL TimeZone = 'UTC';
DO $$
DECLARE
    this_month timestamptz := date_trunc('month', now());
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF provider_events FOR VALUES FROM (%L) TO (%L)',
                   'provider_events_' || to_char(this_month, 'YYYY_MM'), this_month, this_month + interval '1 month');
    INSERT INTO provider_events SELECT * FROM provider_events_archive WHERE created >= this_month;
    DELETE FROM provider_events_archive WHERE created >= this_month;
    EXECUTE format('ALTER TABLE provider_events_archive ADD CONSTRAINT %I CHECK (created < %L)',
                   'provider_events_archive_before_' || to_char(this_month, 'YYYY_MM'), this_month);
    EXECUTE format('ALTER TABLE provider_events ATTACH PARTITION provider_events_archive '
                   'FOR VALUES FROM (MINVALUE) TO (%L)', this_month);
    PERFORM provider_events_add_months(this_month + interval '2 months');
END
$$;

-- The archive's raw payloads still to prune where they lie (rows recorded before this migration,
-- and events older than the month partitions recorded since), found without reading the archive.
CREATE INDEX provider_events_archive_payloads ON provider_events_archive (created)
    WHERE payload IS NOT NULL AND outcome <> 'rejected';
