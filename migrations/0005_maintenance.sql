-- Maintenance mode: one evacuation of a host at a time, run as a saga; its plan,
-- policies, progress and outcome.
CREATE TABLE maintenance (
    id                uuid PRIMARY KEY,
    host_id           uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    saga_id           uuid NOT NULL REFERENCES sagas (id),
    state             text NOT NULL DEFAULT 'evacuating'
                      CHECK (state IN ('evacuating', 'in_maintenance', 'cancelled', 'failed', 'exited')),
    powered_off       text NOT NULL CHECK (powered_off IN ('move', 'leave')),
    unmovable         text NOT NULL CHECK (unmovable IN ('fail', 'power_off', 'wait')),
    plan              jsonb NOT NULL,
    cancel_requested  boolean NOT NULL DEFAULT false,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- A host is evacuated by at most one maintenance at a time.
CREATE UNIQUE INDEX maintenance_one_active_per_host ON maintenance (host_id)
    WHERE state = 'evacuating';
CREATE INDEX maintenance_host_idx ON maintenance (host_id, created_at DESC);
