-- Scheduled operations: what runs (action), when (repeat, time zone, not_before,
-- the next due time), and each run's outcome. A run is claimed in the same
-- transaction that advances next_run_at, so it runs at most once.
CREATE TABLE schedules (
    id           uuid PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    action       jsonb NOT NULL,
    repeat       jsonb NOT NULL,
    time_zone    text NOT NULL,
    not_before   timestamptz,
    next_run_at  timestamptz,
    state        text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'done', 'cancelled')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due_idx ON schedules (next_run_at) WHERE state = 'active';
CREATE TABLE schedule_runs (
    id            uuid PRIMARY KEY,
    schedule_id   uuid NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    due_at        timestamptz NOT NULL,
    ran_at        timestamptz NOT NULL DEFAULT now(),
    outcome       text NOT NULL CHECK (outcome IN ('running', 'started', 'refused', 'missed', 'interrupted')),
    detail        text NOT NULL DEFAULT '',
    operation_id  uuid,
    UNIQUE (schedule_id, due_at)
);
CREATE INDEX schedule_runs_schedule_idx ON schedule_runs (schedule_id, ran_at DESC);
