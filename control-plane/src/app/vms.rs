//! VM inventory: creation (validated against datastores, networks and the host that
//! will run it, chosen by placement when not given) and deletion (the agent removes
//! the VM's disks and files). Power operations are in `power`.

use std::collections::HashSet;

use ferry_api::vm::{self, Boot, Disk, Vm, VmCreate};
use ferry_api::{DatastoreId, NetworkId, VmId};

use super::placement::Needs;
use super::{names, App};
use crate::db::events::NewEvent;
use crate::db::vms::NewVm;
use crate::error::{is_unique_violation, ApiError, ApiResult};

impl App {
    pub async fn vm_create(&self, req: VmCreate) -> ApiResult<Vm> {
        names::validate("VM", &req.name)?;
        if !(1..=vm::MAX_VCPUS).contains(&req.vcpus) {
            return Err(ApiError::unprocessable(
                "out_of_range",
                format!("vcpus must be 1..{}, not {}", vm::MAX_VCPUS, req.vcpus),
            ));
        }
        if !(vm::MIN_MEMORY_MIB..=vm::MAX_MEMORY_MIB).contains(&req.memory_mib) {
            return Err(ApiError::unprocessable(
                "out_of_range",
                format!(
                    "memory_mib must be {}..{}, not {}",
                    vm::MIN_MEMORY_MIB,
                    vm::MAX_MEMORY_MIB,
                    req.memory_mib
                ),
            ));
        }
        if req.disks.len() > vm::MAX_DISKS || req.nics.len() > vm::MAX_NICS {
            return Err(ApiError::unprocessable(
                "out_of_range",
                format!("at most {} disks and {} NICs", vm::MAX_DISKS, vm::MAX_NICS),
            ));
        }
        let cpu_model = req
            .cpu_model
            .unwrap_or_else(|| vm::DEFAULT_CPU_MODEL.to_string());
        names::validate("CPU model", &cpu_model)?;
        let machine_type = req
            .machine_type
            .unwrap_or_else(|| vm::DEFAULT_MACHINE_TYPE.to_string());
        names::validate("machine type", &machine_type)?;

        // Where: an explicit host decides the cluster; else the given or default cluster.
        let host_cluster = match req.host_id {
            Some(h) => Some(self.db.host_cluster(h).await?.ok_or_else(|| {
                ApiError::unprocessable("unknown_host", format!("no host with id {h}"))
            })?),
            None => None,
        };
        let cluster_id = match (req.cluster_id, host_cluster) {
            (Some(c), Some(hc)) if c != hc => {
                return Err(ApiError::unprocessable(
                    "host_not_in_cluster",
                    format!(
                        "host {} is not in cluster {c}",
                        req.host_id.map(|h| h.to_string()).unwrap_or_default()
                    ),
                ))
            }
            (_, Some(hc)) => hc,
            (Some(c), None) => {
                self.db.cluster_fetch(c).await?.ok_or_else(|| {
                    ApiError::unprocessable("unknown_cluster", format!("no cluster with id {c}"))
                })?;
                c
            }
            (None, None) => self.db.cluster_ensure("default").await?.0,
        };

        // Disks: existing datastores, sane sizes and file names.
        let mut disks = Vec::with_capacity(req.disks.len());
        for (i, d) in req.disks.iter().enumerate() {
            if d.size_bytes < 1024 * 1024 || d.size_bytes > 64 << 40 {
                return Err(ApiError::unprocessable(
                    "out_of_range",
                    format!(
                        "disks[{i}].size_bytes must be 1 MiB..64 TiB, not {}",
                        d.size_bytes
                    ),
                ));
            }
            let path = d
                .path
                .clone()
                .unwrap_or_else(|| format!("{}-{i}.qcow2", req.name));
            names::validate("disk file", &path)?;
            disks.push(Disk {
                datastore_id: d.datastore_id,
                size_bytes: d.size_bytes,
                path,
            });
        }
        let ds_ids: Vec<DatastoreId> = disks.iter().map(|d| d.datastore_id).collect();
        let found: HashSet<_> = self
            .db
            .datastore_ids_existing(&ds_ids)
            .await?
            .into_iter()
            .collect();
        if let Some(missing) = ds_ids.iter().find(|d| !found.contains(d)) {
            return Err(ApiError::unprocessable(
                "unknown_datastore",
                format!("no datastore with id {missing}"),
            ));
        }
        let net_ids: Vec<NetworkId> = req.nics.iter().map(|n| n.network_id).collect();
        let found: HashSet<_> = self
            .db
            .network_ids_existing(&net_ids)
            .await?
            .into_iter()
            .collect();
        if let Some(missing) = net_ids.iter().find(|n| !found.contains(n)) {
            return Err(ApiError::unprocessable(
                "unknown_network",
                format!("no network with id {missing}"),
            ));
        }
        if let Some(b) = &req.boot {
            validate_boot(b, disks.len())?;
        }
        // Where it runs: the given host if it fits, else the best host of the cluster.
        let needs = Needs {
            memory_mib: req.memory_mib,
            cpu_model: &cpu_model,
            datastores: &ds_ids,
            networks: &net_ids,
        };
        let host_id = match req.host_id {
            Some(h) => self.host_fit(h, &needs).await?.id,
            None => {
                // A new VM: half its vCPUs busy and all its memory in use, until measured.
                let demand = (f64::from(req.vcpus) * 0.5, req.memory_mib as f64);
                self.place(cluster_id, &needs, demand, None).await?.id
            }
        };
        let policy = req.migration_policy.unwrap_or_default();
        validate_policy(&policy, "migration_policy")?;

        let new = NewVm {
            name: req.name.clone(),
            cluster_id,
            host_id: Some(host_id),
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
            cpu_model,
            machine_type,
            disks,
            nics: net_ids,
            boot: req.boot,
            migration_policy: policy,
        };
        let id = self.db.vm_insert(&new).await.map_err(|e| {
            if is_unique_violation(&e, Some("vms_name_key")) {
                ApiError::conflict(
                    "duplicate_name",
                    format!("a VM named {:?} already exists", new.name),
                )
            } else if is_unique_violation(&e, Some("vm_disks_datastore_id_path_key")) {
                ApiError::conflict(
                    "duplicate_disk",
                    "another VM already has a disk file of that name on that datastore",
                )
            } else {
                e.into()
            }
        })?;
        let mut ev = NewEvent::info("vm.created", format!("VM {} created", new.name)).vm(id);
        if let Some(h) = new.host_id {
            ev = ev.host(h);
        }
        self.events.record(ev).await;
        self.vm_get(id).await
    }

    pub async fn vm_get(&self, id: VmId) -> ApiResult<Vm> {
        self.db
            .vm_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("VM", id))
    }

    /// `PATCH /vms/{id}`: the fields given change.
    pub async fn vm_patch(&self, id: VmId, patch: ferry_api::vm::VmPatch) -> ApiResult<Vm> {
        let vm = self.vm_get(id).await?;
        if let Some(level) = patch.drs_automation {
            if !self.db.vm_set_drs_automation(id, level).await? {
                return Err(ApiError::not_found("vm", id));
            }
            self.events
                .record(
                    NewEvent::info(
                        "vm.updated",
                        format!(
                            "VM {}: balancing {}",
                            vm.name,
                            level
                                .map_or("as its cluster's".to_string(), |l| l.as_str().to_string())
                        ),
                    )
                    .vm(id),
                )
                .await;
        }
        self.vm_get(id).await
    }

    pub async fn vm_delete(&self, id: VmId) -> ApiResult<()> {
        let vm = self.vm_get(id).await?;
        if let Some(op) = self.db.vm_op_fetch(id).await? {
            return Err(ApiError::vm_busy(&vm.name, op));
        }
        if vm.power_state != ferry_api::vm::PowerState::Stopped {
            return Err(ApiError::conflict(
                "vm_not_stopped",
                format!(
                    "VM {} is {}; power it off before deleting it",
                    vm.name,
                    vm.power_state.as_str()
                ),
            ));
        }
        self.vm_remove_from_host(&vm).await?;
        if !self.db.vm_delete_stopped(id).await? {
            return Err(ApiError::conflict(
                "vm_not_stopped",
                format!(
                    "VM {} is {}; power it off before deleting it",
                    vm.name,
                    vm.power_state.as_str()
                ),
            ));
        }
        self.events
            .record(NewEvent::info("vm.deleted", format!("VM {} deleted", vm.name)).vm(id))
            .await;
        Ok(())
    }
}

fn validate_boot(b: &Boot, disks: usize) -> ApiResult<()> {
    match b {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            if kernel.is_empty()
                || kernel.len() > 4096
                || initrd.as_ref().is_some_and(|i| i.len() > 4096)
            {
                return Err(ApiError::unprocessable(
                    "invalid_boot",
                    "boot.kernel must be a path of 1..4096 bytes",
                ));
            }
            if cmdline.as_ref().is_some_and(|c| c.len() > 4096) {
                return Err(ApiError::unprocessable(
                    "invalid_boot",
                    "boot.cmdline is longer than 4096 bytes",
                ));
            }
        }
        Boot::Disk { disk } => {
            if *disk as usize >= disks {
                return Err(ApiError::unprocessable(
                    "invalid_boot",
                    format!("boot.disk is {disk} but the VM has {disks} disk(s)"),
                ));
            }
        }
    }
    Ok(())
}

/// A migration policy's bounds (`prefix` names it in the error).
pub fn validate_policy(policy: &vm::MigrationPolicy, prefix: &str) -> ApiResult<()> {
    let bad = |what: String| {
        Err(ApiError::unprocessable(
            "out_of_range",
            format!("{prefix}.{what}"),
        ))
    };
    if !(1..=60_000).contains(&policy.max_downtime_ms) {
        return bad(format!(
            "max_downtime_ms must be 1..60000, not {}",
            policy.max_downtime_ms
        ));
    }
    if policy.parallel_channels > 16 {
        return bad(format!(
            "parallel_channels must be 0..16, not {}",
            policy.parallel_channels
        ));
    }
    if policy.max_bandwidth_mbps > vm::MAX_BANDWIDTH_MBPS {
        return bad(format!(
            "max_bandwidth_mbps must be 0..{} (0: no cap), not {}",
            vm::MAX_BANDWIDTH_MBPS,
            policy.max_bandwidth_mbps
        ));
    }
    Ok(())
}
