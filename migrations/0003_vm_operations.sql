-- One operation per VM at a time (DESIGN principle 3): a saga (a migration) or a
-- power task holds its VM here while it acts on it; whoever comes second is
-- refused with 409 `vm_busy`, naming the operation in flight.
CREATE TABLE vm_operations (
    vm_id       uuid PRIMARY KEY REFERENCES vms (id) ON DELETE CASCADE,
    kind        text NOT NULL CHECK (kind IN ('migration', 'power')),
    op_id       uuid NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now()
);
