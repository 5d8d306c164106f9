-- The audit trail (issue #13): every request that changes something, or tried to.
CREATE TABLE audit (
    seq          bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    -- The token the request authenticated with (NULL: none valid, refused 401);
    -- its name and role as they were then.
    token_id     uuid,
    token_name   text,
    role         text CHECK (role IN ('viewer', 'operator', 'admin')),
    method       text NOT NULL,
    -- The route's template, e.g. /api/v1/vms/{id}/migrate.
    route        text NOT NULL,
    target_ids   uuid[] NOT NULL DEFAULT '{}',
    -- The body, secrets removed.
    request      jsonb NOT NULL DEFAULT '{}',
    remote_addr  text NOT NULL,
    status       integer NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('succeeded', 'refused', 'failed')),
    code         text,
    duration_ms  bigint NOT NULL
);
CREATE INDEX audit_token_idx ON audit (token_id, seq);
CREATE INDEX audit_targets_idx ON audit USING gin (target_ids);

-- Who caused an event: {"token_id", "name", "role"} of the request behind it.
ALTER TABLE events ADD COLUMN actor jsonb;
