-- The reconciler sweeps the accounts a page at a time: where the sweep stands is saved with each
-- page, so a run cut short (a deadline, a restart) resumes there instead of at the first account.
ALTER TABLE reconciler_checkpoints ADD COLUMN sweep_position text NOT NULL DEFAULT '';

-- One checkout replica reconciles at a time: it holds this lease, renewed while it runs; a lease
-- not renewed lapses at expires_at, so a replica that died holding it blocks nobody for long.
CREATE TABLE reconciler_leases (
    name        text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
