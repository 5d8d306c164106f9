-- Ferry inventory: clusters, hosts, datastores, networks, VMs, tasks, events,
-- API tokens, the control plane's certificate authority, and the saga log.

CREATE TABLE clusters (
    id              uuid PRIMARY KEY,
    name            text NOT NULL UNIQUE,
    cpu_baseline    text,
    drs_automation  text NOT NULL DEFAULT 'manual'
                    CHECK (drs_automation IN ('manual', 'partially_automated', 'fully_automated')),
    drs_threshold   smallint NOT NULL DEFAULT 3 CHECK (drs_threshold BETWEEN 1 AND 5),
    drs_interval_s  integer NOT NULL DEFAULT 300 CHECK (drs_interval_s > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE hosts (
    id                   uuid PRIMARY KEY,
    name                 text NOT NULL UNIQUE,
    cluster_id           uuid NOT NULL REFERENCES clusters (id),
    address              text NOT NULL,
    -- Administrative mode, owned by the control plane (maintenance comes later).
    mode                 text NOT NULL DEFAULT 'active'
                         CHECK (mode IN ('active', 'entering_maintenance', 'maintenance')),
    -- Whether the agent heartbeats in time; the API shows `disconnected` when not.
    reachable            boolean NOT NULL DEFAULT true,
    accel                text NOT NULL DEFAULT 'tcg' CHECK (accel IN ('kvm', 'tcg', 'sim')),
    accel_reason         text NOT NULL DEFAULT '',
    cpu_vendor           text NOT NULL DEFAULT '',
    cpu_model            text NOT NULL DEFAULT '',
    cpu_cores            integer NOT NULL DEFAULT 0,
    cpu_flags            text[] NOT NULL DEFAULT '{}',
    cpu_supported_models text[] NOT NULL DEFAULT '{}',
    memory_total_mib     bigint NOT NULL DEFAULT 0,
    memory_free_mib      bigint NOT NULL DEFAULT 0,
    load_cpu_pct         real NOT NULL DEFAULT 0,
    load_mem_pct         real NOT NULL DEFAULT 0,
    agent_version        text NOT NULL DEFAULT '',
    hypervisor_version   text NOT NULL DEFAULT '',
    -- Generation of the last stored facts report (the agent owns facts).
    report_generation    bigint NOT NULL DEFAULT 0,
    last_seen_at         timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX hosts_cluster_idx ON hosts (cluster_id);
CREATE INDEX hosts_seen_idx ON hosts (last_seen_at) WHERE reachable;

CREATE TABLE datastores (
    id              uuid PRIMARY KEY,
    name            text NOT NULL,
    capacity_bytes  bigint NOT NULL DEFAULT 0,
    free_bytes      bigint NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE host_datastores (
    host_id       uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    datastore_id  uuid NOT NULL REFERENCES datastores (id) ON DELETE CASCADE,
    path          text NOT NULL,
    PRIMARY KEY (host_id, datastore_id)
);
CREATE INDEX host_datastores_ds_idx ON host_datastores (datastore_id);

CREATE TABLE networks (
    id          uuid PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE host_networks (
    host_id     uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    network_id  uuid NOT NULL REFERENCES networks (id) ON DELETE CASCADE,
    uplink      text NOT NULL DEFAULT '',
    PRIMARY KEY (host_id, network_id)
);
CREATE INDEX host_networks_net_idx ON host_networks (network_id);

CREATE TABLE vms (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE,
    cluster_id          uuid NOT NULL REFERENCES clusters (id),
    -- Intent: the host the VM should be on (owned by the control plane).
    host_id             uuid REFERENCES hosts (id),
    -- Runtime state as last reported by the owning agent, with its generation.
    power_state         text NOT NULL DEFAULT 'stopped'
                        CHECK (power_state IN ('running', 'stopped', 'paused', 'migrating')),
    runtime_generation  bigint NOT NULL DEFAULT 0,
    vcpus               integer NOT NULL CHECK (vcpus > 0),
    memory_mib          bigint NOT NULL CHECK (memory_mib > 0),
    cpu_model           text NOT NULL,
    machine_type        text NOT NULL,
    boot                jsonb,
    migration_policy    jsonb NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX vms_host_idx ON vms (host_id);
CREATE INDEX vms_cluster_idx ON vms (cluster_id);

CREATE TABLE vm_disks (
    vm_id         uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    idx           integer NOT NULL,
    datastore_id  uuid NOT NULL REFERENCES datastores (id),
    size_bytes    bigint NOT NULL CHECK (size_bytes > 0),
    path          text NOT NULL,
    PRIMARY KEY (vm_id, idx),
    UNIQUE (datastore_id, path)
);

CREATE TABLE vm_nics (
    vm_id       uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    idx         integer NOT NULL,
    network_id  uuid NOT NULL REFERENCES networks (id),
    mac         text NOT NULL UNIQUE CHECK (mac ~ '^([0-9a-f]{2}:){5}[0-9a-f]{2}$'),
    PRIMARY KEY (vm_id, idx)
);

CREATE TABLE tasks (
    id            uuid PRIMARY KEY,
    kind          text NOT NULL,
    state         text NOT NULL DEFAULT 'queued'
                  CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    progress_pct  real NOT NULL DEFAULT 0,
    target_kind   text,
    target_id     uuid,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE INDEX tasks_created_idx ON tasks (created_at DESC, id);

CREATE TABLE events (
    seq        bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    kind       text NOT NULL,
    severity   text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'error')),
    message    text NOT NULL,
    host_id    uuid,
    vm_id      uuid,
    task_id    uuid,
    data       jsonb NOT NULL DEFAULT '{}'
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    -- SHA-256 of the secret, hex; the secret itself is never stored.
    secret_sha256 text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz
);

-- The control plane's certificate authority (one row). Agents' certificates chain to it.
CREATE TABLE certificate_authority (
    id          smallint PRIMARY KEY CHECK (id = 1),
    cert_pem    text NOT NULL,
    key_pem     text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Durable multi-step operations (DESIGN principle 3).
CREATE TABLE sagas (
    id          uuid PRIMARY KEY,
    kind        text NOT NULL,
    params      jsonb NOT NULL,
    state       text NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'unwinding', 'done', 'failed')),
    task_id     uuid REFERENCES tasks (id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_unfinished_idx ON sagas (state) WHERE state IN ('running', 'unwinding');

CREATE TABLE saga_events (
    saga_id     uuid NOT NULL REFERENCES sagas (id) ON DELETE CASCADE,
    seq         integer NOT NULL,
    step        text NOT NULL,
    event_type  text NOT NULL
                CHECK (event_type IN ('started', 'succeeded', 'failed', 'undo_started', 'undo_finished')),
    data        jsonb NOT NULL DEFAULT '{}',
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, seq)
);
