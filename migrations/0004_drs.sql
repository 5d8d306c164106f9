-- Balancing (DRS): a VM's own automation level (NULL: the cluster's), the record of
-- each balancing pass, and the moves passes recommended.
ALTER TABLE vms ADD COLUMN drs_automation text
    CHECK (drs_automation IN ('disabled', 'manual', 'partially_automated', 'fully_automated'));

CREATE TABLE drs_passes (
    id           uuid PRIMARY KEY,
    cluster_id   uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    trigger      text NOT NULL CHECK (trigger IN ('scheduled', 'on_demand')),
    dry_run      boolean NOT NULL,
    before       jsonb NOT NULL,
    after        jsonb NOT NULL,
    tolerance    double precision,
    moves        integer NOT NULL,
    applied      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drs_passes_cluster_idx ON drs_passes (cluster_id, at DESC);

CREATE TABLE drs_recommendations (
    id             uuid PRIMARY KEY,
    cluster_id     uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    pass_id        uuid NOT NULL REFERENCES drs_passes (id) ON DELETE CASCADE,
    vm_id          uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    from_host_id   uuid NOT NULL REFERENCES hosts (id),
    to_host_id     uuid NOT NULL REFERENCES hosts (id),
    gain           double precision NOT NULL,
    cost_s         double precision NOT NULL,
    reason         text NOT NULL,
    state          text NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'applied', 'dismissed', 'superseded')),
    migration_id   uuid REFERENCES migrations (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX drs_recommendations_cluster_idx ON drs_recommendations (cluster_id, state, created_at DESC);
