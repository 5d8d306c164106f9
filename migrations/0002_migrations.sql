-- Live migrations: one row per requested move, with its progress and outcome.
CREATE TABLE migrations (
    id                   uuid PRIMARY KEY,
    vm_id                uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    source_host_id       uuid NOT NULL REFERENCES hosts (id),
    destination_host_id  uuid NOT NULL REFERENCES hosts (id),
    state                text NOT NULL DEFAULT 'queued'
                         CHECK (state IN ('queued', 'preparing', 'transferring', 'switching_over',
                                          'completed', 'failed', 'cancelled')),
    phase                text NOT NULL DEFAULT '',
    policy               jsonb NOT NULL,
    progress             jsonb NOT NULL DEFAULT '{}',
    prediction           jsonb,
    result               jsonb,
    error                text,
    cancel_requested     boolean NOT NULL DEFAULT false,
    saga_id              uuid REFERENCES sagas (id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz
);
CREATE INDEX migrations_created_idx ON migrations (created_at DESC, id);
-- A VM moves in at most one migration at a time.
CREATE UNIQUE INDEX migrations_one_active_per_vm ON migrations (vm_id)
    WHERE state NOT IN ('completed', 'failed', 'cancelled');
