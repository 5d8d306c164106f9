-- Orders and filters the dashboard's lists use (issue #11): VMs sorted by memory or
-- creation time (names are already unique and indexed), tasks by state and target.
CREATE INDEX vms_memory_idx ON vms (memory_mib, id);
CREATE INDEX vms_created_idx ON vms (created_at, id);
CREATE INDEX tasks_target_idx ON tasks (target_id, created_at DESC);
