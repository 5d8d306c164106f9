-- Placement rules of a cluster: VM-VM affinity / anti-affinity and VM-host
-- must / must-not / should / should-not. A VM or host deleted leaves its rules.
CREATE TABLE rules (
    id          uuid PRIMARY KEY,
    cluster_id  uuid NOT NULL REFERENCES clusters (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('affinity', 'anti_affinity', 'must_run_on',
                                              'must_not_run_on', 'should_run_on',
                                              'should_not_run_on')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cluster_id, name)
);
CREATE TABLE rule_vms (
    rule_id  uuid NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    vm_id    uuid NOT NULL REFERENCES vms (id) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, vm_id)
);
CREATE INDEX rule_vms_vm_idx ON rule_vms (vm_id);
CREATE TABLE rule_hosts (
    rule_id  uuid NOT NULL REFERENCES rules (id) ON DELETE CASCADE,
    host_id  uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, host_id)
);
