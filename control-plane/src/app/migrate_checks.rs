//! Preparation for a live migration: every named compatibility check, each with
//! `passed`, a stable code and a sentence a person can act on; and the choice of
//! destination when none is given (the best host that passes every check).

use ferry_api::host::Host;
use ferry_api::migration::{Check, MigrateRequest};
use ferry_api::vm::{MigrationPolicy, PowerState, Vm};
use ferry_api::{HostId, VmId};

use super::host_fit::{self, FitKind, Role, VmParts};
use super::rules::RulesContext;
use super::storage::StoragePlan;
use super::App;
use crate::error::{ApiError, ApiResult};

fn check(name: &str, passed: bool, code: &str, detail: String) -> Check {
    Check {
        name: name.into(),
        passed,
        code: if passed { "ok".into() } else { code.into() },
        detail,
    }
}

/// What a check run found.
pub struct Preparation {
    pub vm: Vm,
    pub source: Host,
    pub destination: Option<Host>,
    pub checks: Vec<Check>,
    pub policy: MigrationPolicy,
}

impl Preparation {
    pub fn compatible(&self) -> bool {
        self.destination.is_some() && self.checks.iter().all(|c| c.passed)
    }
}

impl App {
    async fn checks_for(
        &self,
        vm: &Vm,
        source: &Host,
        dest: &Host,
        req: &MigrateRequest,
        rules: &RulesContext,
    ) -> ApiResult<Vec<Check>> {
        let mut out = Vec::new();
        out.push(check(
            "vm_running",
            vm.power_state == PowerState::Running,
            "vm_not_running",
            format!(
                "VM {} is {}; only a running VM is live-migrated",
                vm.name,
                vm.power_state.as_str()
            ),
        ));
        // The VM's own host with a datastore named: a storage-only move. Only the
        // datastore matters (the VM's memory, CPU and rules do not change place).
        if dest.id == source.id && req.destination_datastore_id.is_some() {
            out.push(check(
                "storage_only",
                true,
                "ok",
                format!(
                    "the VM stays on {}; only its disks move (storage-only)",
                    dest.name
                ),
            ));
            out.push(match self.storage_plan(vm, dest, req).await? {
                StoragePlan::Copy { name, moves } => check(
                    "datastores",
                    true,
                    "ok",
                    format!(
                        "{} disk(s), {:.1} GiB, will be copied to datastore {name} while the VM runs, then switched to",
                        moves.len(),
                        moves.iter().map(|m| m.size_bytes).sum::<u64>() as f64
                            / (1u64 << 30) as f64
                    ),
                ),
                StoragePlan::Impossible { code, detail } => check("datastores", false, code, detail),
                StoragePlan::Shared => check(
                    "datastores",
                    false,
                    "disk_already_on_datastore",
                    "nothing to move".into(),
                ),
            });
            let busy = self.db.migration_active_on_host(source.id).await?;
            let budget = i64::from(self.migration_budget(source.id, dest.id).await);
            out.push(check(
                "concurrency",
                true,
                "ok",
                format!(
                    "{busy} migration(s) on the host (budget {budget}){}",
                    if busy >= budget {
                        ": it will wait, queued"
                    } else {
                        ""
                    }
                ),
            ));
            out[0].detail = if out[0].passed {
                "vm_running: ok".into()
            } else {
                out[0].detail.clone()
            };
            return Ok(out);
        }
        out.push(check(
            "destination_differs",
            dest.id != source.id,
            "same_host",
            format!(
                "the VM already runs on {}; pick another host (or name a datastore to move only its disks)",
                dest.name
            ),
        ));
        out.push(check(
            "same_cluster",
            dest.cluster_id == vm.cluster_id,
            "other_cluster",
            format!("host {} is in another cluster than the VM", dest.name),
        ));
        // The host-fit rules placement uses, then what a move adds to them.
        let parts = VmParts::of(vm);
        let needs = parts.needs(vm);
        let baseline = self
            .db
            .cluster_fetch(vm.cluster_id)
            .await?
            .and_then(|c| c.cpu_baseline);
        for fit in host_fit::checks(dest, &needs, Role::Destination) {
            let kind = fit.kind;
            let mut c = Check::from(fit);
            match kind {
                // The cluster's CPU baseline (like EVC) binds a move, not a placement.
                FitKind::CpuModel if c.passed => {
                    let within = baseline
                        .as_deref()
                        .is_none_or(|b| b == vm.cpu_model || vm.cpu_model == "qemu64");
                    if !within {
                        c = check(
                            "cpu_model",
                            false,
                            "outside_cpu_baseline",
                            format!(
                                "CPU model {} is outside the cluster's baseline {}",
                                vm.cpu_model,
                                baseline.clone().unwrap_or_default()
                            ),
                        );
                    }
                }
                // Disks not on the destination's datastores are copied while the
                // VM runs (storage migration), when one of its datastores has room.
                FitKind::Datastores => {
                    c = match self.storage_plan(vm, dest, req).await? {
                        StoragePlan::Shared => c,
                        StoragePlan::Copy { name, moves } => check(
                            "datastores",
                            true,
                            "ok",
                            format!(
                                "{} disk(s), {:.1} GiB, will be copied to datastore {name} on {} while the VM runs",
                                moves.len(),
                                moves.iter().map(|m| m.size_bytes).sum::<u64>() as f64
                                    / (1u64 << 30) as f64,
                                dest.name
                            ),
                        ),
                        StoragePlan::Impossible { code, detail } => {
                            check("datastores", false, code, detail)
                        }
                    };
                }
                _ => {}
            }
            out.push(c);
        }
        // Placement rules: a must rule is never broken by a move; a should rule
        // broken is said, not refused.
        let breaches = rules
            .rules
            .breaches(vm.id, dest.id, &rules.at, &rules.names);
        let must: Vec<&str> = breaches
            .iter()
            .filter(|b| b.is_must())
            .map(|b| b.detail.as_str())
            .collect();
        let should: Vec<&str> = breaches
            .iter()
            .filter(|b| !b.is_must())
            .map(|b| b.detail.as_str())
            .collect();
        out.push(if must.is_empty() {
            check(
                "rules",
                true,
                "ok",
                if should.is_empty() {
                    "rules: ok".into()
                } else {
                    format!(
                        "rules: ok, but it breaks a should rule: {}",
                        should.join("; ")
                    )
                },
            )
        } else {
            check("rules", false, "rule_violation", must.join("; "))
        });
        out.push(check(
            "machine_type",
            dest.hypervisor_version == source.hypervisor_version,
            "hypervisor_mismatch",
            format!(
                "machine type {} needs the same QEMU on both hosts: {} vs {}",
                vm.machine_type, source.hypervisor_version, dest.hypervisor_version
            ),
        ));
        let (src_busy, dst_busy) = (
            self.db.migration_active_on_host(source.id).await?,
            self.db.migration_active_on_host(dest.id).await?,
        );
        // Over budget is no refusal: the migration waits, queued, for a slot.
        let budget = i64::from(self.migration_budget(source.id, dest.id).await);
        let busy = src_busy.max(dst_busy);
        out.push(check(
            "concurrency",
            true,
            "ok",
            if busy >= budget {
                format!("{src_busy} migration(s) on the source and {dst_busy} on the destination (budget {budget} each): it will wait, queued")
            } else {
                format!("{src_busy} migration(s) on the source and {dst_busy} on the destination (budget {budget} each)")
            },
        ));
        for c in out
            .iter_mut()
            // (A passed `datastores` check says where a disk copy goes.)
            .filter(|c| {
                c.passed && c.name != "concurrency" && c.name != "rules" && c.name != "datastores"
            })
        {
            c.detail = format!("{}: ok", c.name);
        }
        Ok(out)
    }

    /// Runs every check against the requested (or the best) destination.
    pub async fn migration_prepare(
        &self,
        vm_id: VmId,
        req: &MigrateRequest,
    ) -> ApiResult<Preparation> {
        self.migration_prepare_leaving(vm_id, req, None).await
    }

    /// As [`Self::migration_prepare`]; with `leaving`, the VMs still on that host
    /// count as placed nowhere for the rules (they are being evacuated from it).
    pub async fn migration_prepare_leaving(
        &self,
        vm_id: VmId,
        req: &MigrateRequest,
        leaving: Option<HostId>,
    ) -> ApiResult<Preparation> {
        let vm = self.vm_get(vm_id).await?;
        let rules = self
            .rules_context(vm.cluster_id, leaving)
            .await?
            .without(vm.id);
        let source_id = vm
            .host_id
            .ok_or_else(|| ApiError::conflict("vm_not_placed", "the VM has no host"))?;
        let source = self
            .db
            .host_fetch(source_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", source_id))?;
        let policy = req
            .policy
            .clone()
            .unwrap_or_else(|| vm.migration_policy.clone());
        super::vms::validate_policy(&policy, "policy")?;
        let candidates: Vec<Host> = match req.destination_host_id {
            Some(d) => vec![self.db.host_fetch(d).await?.ok_or_else(|| {
                ApiError::unprocessable("unknown_host", format!("no host with id {d}"))
            })?],
            None => {
                let mut hosts = self.cluster_hosts(vm.cluster_id).await?;
                hosts.retain(|h| h.id != source.id);
                // Best balanced first (the measure balancing uses), as placement does.
                let (cpu, mem) = self.vm_demand(&vm);
                let mut ranked = self
                    .rank_by_balance(vm.cluster_id, hosts, Some(source.id), cpu, mem)
                    .await?;
                rules.should_first(vm.id, &mut ranked);
                ranked
            }
        };
        let mut first: Option<(Host, Vec<Check>)> = None;
        for dest in candidates {
            let checks = self.checks_for(&vm, &source, &dest, req, &rules).await?;
            if checks.iter().all(|c| c.passed) {
                return Ok(Preparation {
                    vm,
                    source,
                    destination: Some(dest),
                    checks,
                    policy,
                });
            }
            if first.is_none() {
                first = Some((dest, checks));
            }
        }
        Ok(match first {
            Some((dest, checks)) => Preparation {
                vm,
                source,
                destination: Some(dest),
                checks,
                policy,
            },
            None => Preparation {
                vm,
                source,
                destination: None,
                checks: vec![check(
                    "destination",
                    false,
                    "no_destination",
                    "no other host in the cluster".into(),
                )],
                policy,
            },
        })
    }
}
