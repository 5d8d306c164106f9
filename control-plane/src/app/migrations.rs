//! Live migrations at the API: check, start (a saga), list, cancel.

use ferry_api::migration::{CheckResult, MigrateRequest, Migration};
use ferry_api::problem::Reason;
use ferry_api::{HostId, MigrationId, SagaId, VmId};

use super::App;
use crate::db::events::NewEvent;
use crate::db::migrations::NewMigration;
use crate::db::vm_operations::OpKind;
use crate::db::Db;
use crate::error::{is_unique_violation, ApiError, ApiResult};
use crate::sagas::escalation::choose_channels;
use crate::sagas::migrate;

impl App {
    pub async fn migration_check(&self, vm: VmId, req: &MigrateRequest) -> ApiResult<CheckResult> {
        let prep = self.migration_prepare(vm, req).await?;
        let prediction = match (&prep.destination, prep.compatible()) {
            // A storage-only move crosses no link: there is nothing measured to
            // predict it from (its progress and result say how it went).
            (Some(dest), true) if dest.id == prep.source.id => None,
            (Some(dest), true) => {
                match self
                    .predict(
                        vm,
                        prep.vm.memory_mib,
                        prep.source.id,
                        dest.id,
                        &prep.policy,
                    )
                    .await
                {
                    Ok(mut p) => {
                        // A storage migration copies the disks first, over the same link.
                        let disks: u64 = self
                            .storage_plan(&prep.vm, dest, req)
                            .await?
                            .moves()
                            .iter()
                            .map(|m| m.size_bytes)
                            .sum();
                        if disks > 0 {
                            p.disk_bytes = disks;
                            p.total_ms += disks * 1000 / p.bandwidth_bps.max(1);
                            p.strategy = format!("mirror+{}", p.strategy);
                        }
                        Some(p)
                    }
                    Err(e) => {
                        tracing::warn!(%vm, "prediction failed: {e:#}");
                        None
                    }
                }
            }
            _ => None,
        };
        Ok(CheckResult {
            compatible: prep.compatible(),
            destination_host_id: prep.destination.as_ref().map(|d| d.id),
            checks: prep.checks,
            prediction,
        })
    }

    pub async fn migration_start(&self, vm: VmId, req: &MigrateRequest) -> ApiResult<Migration> {
        self.migration_start_leaving(vm, req, None).await
    }

    /// As [`Self::migration_start`], for a move out of `leaving` while it is
    /// evacuated (the rules count its remaining VMs as leaving too).
    pub async fn migration_start_leaving(
        &self,
        vm: VmId,
        req: &MigrateRequest,
        leaving: Option<HostId>,
    ) -> ApiResult<Migration> {
        let prep = self.migration_prepare_leaving(vm, req, leaving).await?;
        let compatible = prep.compatible();
        let Some(dest) = prep.destination.filter(|_| compatible) else {
            let reasons: Vec<Reason> = prep
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| Reason {
                    code: c.code.clone(),
                    detail: c.detail.clone(),
                })
                .collect();
            let first = reasons
                .first()
                .map(|r| r.detail.clone())
                .unwrap_or_default();
            return Err(ApiError::conflict(
                "incompatible_destination",
                format!("cannot migrate {}: {first}", prep.vm.name),
            )
            .with_reasons(reasons));
        };
        let id = MigrationId::new();
        let saga = SagaId::new();
        // The number of channels is decided once, here, and kept with the saga, so
        // that every step, a replay and a recovery all see the same.
        let mut policy = prep.policy.clone();
        let (channels, channels_why) = choose_channels(
            &policy,
            self.known_link_bandwidth(prep.source.id, dest.id),
            prep.source.cpu.cores.min(dest.cpu.cores),
        );
        policy.parallel_channels = channels;
        // Disks the destination lacks are copied while the VM runs (the check
        // above passed, so the plan is a copy or nothing).
        let disks = self.storage_plan(&prep.vm, &dest, req).await?.moves();
        let storage_only = dest.id == prep.source.id;
        if !disks.is_empty()
            && !storage_only
            && policy.mode == ferry_api::vm::MigrationMode::Postcopy
        {
            return Err(ApiError::conflict(
                "postcopy_with_storage",
                format!(
                    "{} moves with its disks, which post-copy cannot do (the destination would run before its disks are complete): use auto or precopy",
                    prep.vm.name
                ),
            ));
        }
        let params = migrate::Params {
            migration: id,
            vm,
            vm_name: prep.vm.name.clone(),
            source: prep.source.id,
            destination: dest.id,
            policy: policy.clone(),
            disks,
        };
        let new = NewMigration {
            id,
            vm,
            source: prep.source.id,
            destination: dest.id,
            policy: &policy,
            prediction: None,
            saga,
            slots: if !params.disks.is_empty() && !storage_only {
                2
            } else {
                1
            },
        };
        // The saga and the migration are recorded together or not at all.
        let params_json = serde_json::to_value(&params).map_err(anyhow::Error::from)?;
        let mut tx = self.db.pool.begin().await?;
        Db::saga_insert_on(&mut tx, saga, migrate::KIND, &params_json).await?;
        // One operation per VM: the migration holds the VM until its saga ends.
        if let Err(op) = Db::vm_op_take_on(&mut tx, vm, OpKind::Migration, id.0).await? {
            return Err(if op.kind == OpKind::Migration.as_str() {
                ApiError::conflict(
                    "migration_in_progress",
                    format!(
                        "VM {} is already migrating (migration {})",
                        prep.vm.name, op.id
                    ),
                )
            } else {
                ApiError::vm_busy(&prep.vm.name, op)
            });
        }
        if let Err(e) = Db::migration_insert_on(&mut tx, &new).await {
            return Err(if is_unique_violation(&e, None) {
                ApiError::conflict(
                    "migration_in_progress",
                    format!("VM {} is already migrating", prep.vm.name),
                )
            } else {
                e.into()
            });
        }
        tx.commit().await?;
        self.events
            .record(
                NewEvent::info(
                    "migration.requested",
                    format!(
                        "migrate {} from {} to {}",
                        prep.vm.name, prep.source.name, dest.name
                    ),
                )
                .vm(vm)
                .data(serde_json::json!({"migration_id": id})),
            )
            .await;
        // A storage-only move has no memory stream: its mirror says what it does.
        if !storage_only {
            self.events
                .record(
                    NewEvent::info(
                        "migration.strategy",
                        format!("{}: {channels_why}", prep.vm.name),
                    )
                    .vm(vm)
                    .data(serde_json::json!({"migration_id": id})),
                )
                .await;
        }
        let app = self.clone();
        crate::audit::spawn(async move { migrate::run(app, saga, params).await });
        self.migration_get(id).await
    }

    pub async fn migration_get(&self, id: MigrationId) -> ApiResult<Migration> {
        self.db
            .migration_fetch(id)
            .await?
            .ok_or_else(|| ApiError::not_found("migration", id))
    }

    pub async fn migration_cancel(&self, id: MigrationId) -> ApiResult<Migration> {
        let m = self.migration_get(id).await?;
        if !self.db.migration_request_cancel(id).await? {
            return Err(ApiError::conflict(
                "migration_not_cancellable",
                format!(
                    "migration {id} is {} and can no longer be cancelled",
                    m.state.as_str()
                ),
            ));
        }
        self.migration_get(id).await
    }
}
