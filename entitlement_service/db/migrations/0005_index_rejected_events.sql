-- Rejected events are looked for by time when an operator replays them (ReplayEvents): few rows,
-- found without reading the whole event table.
CREATE INDEX provider_events_rejected ON provider_events (created, provider_event_id) WHERE outcome = 'rejected';
