//! Power operations as tasks: `POST /vms/{id}/power` records a task, answers 202,
//! and the operation runs in the background against the VM's agent. The agent owns
//! the VM's runtime state; its answer and its later reports (stamped with a
//! generation) update the inventory, never an older report over a newer one.

use std::time::Duration;

use ferry_api::task::{Task, TaskState};
use ferry_api::vm::{Boot, PowerAction, PowerState, Vm};
use ferry_api::{HostId, TaskId, VmId};
use ferry_proto::v1::{
    VmConsoleRequest, VmDiskSpec, VmNicSpec, VmPowerRequest, VmRef, VmRuntime, VmSpec,
};

use ferry_proto::errors::Failure;

use super::host_fit::VmParts;
use super::App;
use crate::db::events::NewEvent;
use crate::db::vm_operations::OpKind;
use crate::db::Db;
use crate::error::{ApiError, ApiResult};

/// How long `off` with `force` waits for a cancelled migration to let go of the VM.
const FORCE_WAIT: Duration = Duration::from_secs(120);

impl App {
    /// A power operation as a task (202). One operation per VM: a VM that a
    /// migration or another power task holds is refused with 409 `vm_busy` naming
    /// it — except `off` with `force`, which cancels the migration first.
    pub async fn vm_power(&self, id: VmId, action: PowerAction, force: bool) -> ApiResult<Task> {
        let mut vm = self.vm_get(id).await?;
        if force && action == PowerAction::Off {
            self.cancel_for_power_off(&vm).await?;
            vm = self.vm_get(id).await?;
        }
        // A stopped VM whose host a must rule now keeps it off starts elsewhere.
        if let (Some(h), PowerAction::On) = (vm.host_id, action) {
            let ctx = self
                .rules_context(vm.cluster_id, None)
                .await?
                .without(vm.id);
            if !ctx.must_breaches(vm.id, h).is_empty() && vm.power_state == PowerState::Stopped {
                vm.host_id = None;
            }
        }
        let (host_id, place) = match (vm.host_id, action) {
            (Some(h), _) => (h, false),
            (None, PowerAction::On) => {
                let parts = VmParts::of(&vm);
                let needs = parts.needs(&vm);
                let demand = self.vm_demand(&vm);
                (
                    self.place(vm.cluster_id, &needs, demand, Some(vm.id))
                        .await?
                        .id,
                    true,
                )
            }
            (None, _) => {
                return Err(ApiError::conflict(
                    "vm_not_placed",
                    format!("VM {} has no host; power it on first", vm.name),
                ))
            }
        };
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        if host.state == ferry_api::host::HostState::Disconnected {
            return Err(ApiError::conflict(
                "host_unavailable",
                format!("host {} is disconnected", host.name),
            ));
        }
        let spec = match action {
            PowerAction::On => Some(self.vm_spec(&vm).await?),
            _ => None,
        };
        // The task and the VM's hold, together or not at all.
        let kind = format!("vm.power_{}", action.as_str());
        let mut tx = self.db.pool.begin().await?;
        let task_id = Db::task_insert_on(&mut tx, &kind, "vm", id.0).await?;
        if let Err(op) = Db::vm_op_take_on(&mut tx, id, OpKind::Power, task_id.0).await? {
            return Err(ApiError::vm_busy(&vm.name, op));
        }
        if place {
            Db::vm_set_host_on(&mut tx, id, host_id).await?;
        }
        tx.commit().await?;
        let app = self.clone();
        crate::audit::spawn(async move {
            app.run_power(task_id, vm, host_id, host.address, action, spec)
                .await
        });
        self.db
            .task_fetch(task_id)
            .await?
            .ok_or_else(|| ApiError::internal("task vanished"))
    }

    /// `off` with `force`: a migration holding the VM is cancelled (one past its
    /// switchover is let finish), and its saga let end, before the power-off.
    async fn cancel_for_power_off(&self, vm: &Vm) -> ApiResult<()> {
        let Some(op) = self.db.vm_op_fetch(vm.id).await? else {
            return Ok(());
        };
        if op.kind != OpKind::Migration.as_str() {
            return Err(ApiError::vm_busy(&vm.name, op));
        }
        let migration = ferry_api::MigrationId(op.id);
        // False when it is past its switchover: it is let finish, on the destination.
        let cancelling = self.db.migration_request_cancel(migration).await?;
        self.events
            .record(
                NewEvent::info(
                    "vm.power",
                    if cancelling {
                        format!("VM {}: cancelling migration {migration} to power it off", vm.name)
                    } else {
                        format!(
                            "VM {}: migration {migration} is past its switchover; powering off once it completes",
                            vm.name
                        )
                    },
                )
                .vm(vm.id),
            )
            .await;
        let deadline = tokio::time::Instant::now() + FORCE_WAIT;
        while self
            .db
            .vm_op_fetch(vm.id)
            .await?
            .is_some_and(|o| o.id == op.id)
        {
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::vm_busy(&vm.name, op));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Writes the task's state; the task must say how it ended, so this insists.
    async fn task_set(&self, task: TaskId, state: TaskState, pct: f32, error: Option<&str>) {
        let mut attempt = 0u32;
        while let Err(e) = self.db.task_update(task, state, pct, error).await {
            tracing::error!(%task, "record task state: {e}; retrying");
            tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(7))).await;
            attempt += 1;
        }
    }

    async fn run_power(
        &self,
        task: TaskId,
        vm: Vm,
        host_id: HostId,
        address: String,
        action: PowerAction,
        spec: Option<VmSpec>,
    ) {
        self.task_set(task, TaskState::Running, 10.0, None).await;
        let result = async {
            let mut client = self.agents.connect(host_id, &address).await?;
            let rt = client
                .vm_power(VmPowerRequest {
                    vm_id: vm.id.to_string(),
                    action: crate::grpc::wire::power_action(action) as i32,
                    spec,
                    shutdown_timeout_s: 0,
                })
                .await
                .map_err(Failure::from)?
                .into_inner();
            anyhow::Ok(rt)
        }
        .await;
        if let Ok(rt) = &result {
            // The agent's periodic reports and the pull store it too, if this fails.
            if let Err(e) = self.vm_store_runtime(host_id, rt).await {
                tracing::warn!("store runtime of {}: {e}", vm.id);
            }
        }
        // The hold goes before the task says it ended, so whoever saw the end can act.
        let mut attempt = 0u32;
        while let Err(e) = self.db.vm_op_release(vm.id, task.0).await {
            tracing::error!(%task, "release the VM: {e}; retrying");
            tokio::time::sleep(Duration::from_millis(200u64 << attempt.min(7))).await;
            attempt += 1;
        }
        match result {
            Ok(rt) => {
                self.task_set(task, TaskState::Succeeded, 100.0, None).await;
                let mut ev = NewEvent::info(
                    "vm.power",
                    format!(
                        "VM {} {}: now {}{}",
                        vm.name,
                        action.as_str(),
                        crate::grpc::wire::power_state(rt.state())
                            .map_or("unknown", |s| s.as_str()),
                        detail(&rt.detail)
                    ),
                )
                .vm(vm.id)
                .host(host_id);
                ev.task_id = Some(task);
                self.events.record(ev).await;
            }
            Err(e) => {
                let msg = format!("{e:#}");
                self.task_set(task, TaskState::Failed, 100.0, Some(&msg))
                    .await;
                let mut ev = NewEvent::warning(
                    "vm.power_failed",
                    format!("VM {} {} failed: {msg}", vm.name, action.as_str()),
                )
                .vm(vm.id)
                .host(host_id);
                ev.task_id = Some(task);
                self.events.record(ev).await;
            }
        }
    }

    /// The agent-facing spec of a VM (networks by name, datastores by identity).
    pub async fn vm_spec(&self, vm: &Vm) -> ApiResult<VmSpec> {
        let mut nics = Vec::new();
        for n in &vm.nics {
            let net = self
                .db
                .network_fetch(n.network_id)
                .await?
                .ok_or_else(|| ApiError::not_found("network", n.network_id))?;
            nics.push(VmNicSpec {
                network: net.name,
                mac: n.mac.clone(),
            });
        }
        let (kernel, initrd, cmdline, boot_disk) = match &vm.boot {
            Some(Boot::Kernel {
                kernel,
                initrd,
                cmdline,
            }) => (
                kernel.clone(),
                initrd.clone().unwrap_or_default(),
                cmdline.clone().unwrap_or_default(),
                -1,
            ),
            Some(Boot::Disk { disk }) => {
                (String::new(), String::new(), String::new(), *disk as i32)
            }
            None => {
                return Err(ApiError::conflict(
                    "no_boot",
                    format!("VM {} has no boot source", vm.name),
                ))
            }
        };
        Ok(VmSpec {
            vm_id: vm.id.to_string(),
            name: vm.name.clone(),
            vcpus: vm.vcpus,
            memory_mib: vm.memory_mib,
            cpu_model: vm.cpu_model.clone(),
            machine_type: vm.machine_type.clone(),
            disks: vm
                .disks
                .iter()
                .map(|d| VmDiskSpec {
                    datastore_id: d.datastore_id.to_string(),
                    path: d.path.clone(),
                    size_bytes: d.size_bytes,
                })
                .collect(),
            nics,
            kernel,
            initrd,
            cmdline,
            boot_disk,
        })
    }

    /// Stores a runtime report from `host` if it is about a VM on that host and newer.
    pub async fn vm_store_runtime(&self, host: HostId, rt: &VmRuntime) -> ApiResult<()> {
        let Ok(id) = rt.vm_id.parse::<VmId>() else {
            return Ok(());
        };
        if rt.state() == ferry_proto::v1::VmState::VmUnmanaged {
            self.events
                .record(
                    NewEvent::warning(
                        "vm.unmanaged",
                        format!("host runs a QEMU (pid {}, uuid {id}) with no record; it was left running", rt.pid),
                    )
                    .host(host),
                )
                .await;
            return Ok(());
        }
        let Some(state) = crate::grpc::wire::power_state(rt.state()) else {
            return Ok(());
        };
        self.db
            .vm_store_runtime(id, host, state, rt.generation)
            .await?;
        Ok(())
    }

    /// The tail of the VM's serial console, from its agent.
    pub async fn vm_console(&self, id: VmId, max_bytes: u32) -> ApiResult<String> {
        let vm = self.vm_get(id).await?;
        let host_id = vm
            .host_id
            .ok_or_else(|| ApiError::conflict("vm_not_placed", "the VM has no host yet"))?;
        let host = self
            .db
            .host_fetch(host_id)
            .await?
            .ok_or_else(|| ApiError::not_found("host", host_id))?;
        let mut client = self
            .agents
            .connect(host_id, &host.address)
            .await
            .map_err(|e| {
                ApiError::unavailable(format!("host {} is unreachable: {e}", host.name))
            })?;
        let reply = client
            .vm_console(VmConsoleRequest {
                vm_id: id.to_string(),
                max_bytes,
            })
            .await
            .map_err(|s| ApiError::conflict("no_console", s.message().to_string()))?;
        Ok(reply.into_inner().text)
    }

    /// Asks the VM's agent to remove it (disks included); best effort when the host
    /// is gone, since the inventory record goes either way.
    pub async fn vm_remove_from_host(&self, vm: &Vm) -> ApiResult<()> {
        let Some(host_id) = vm.host_id else {
            return Ok(());
        };
        let Some(host) = self.db.host_fetch(host_id).await? else {
            return Ok(());
        };
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            self.agents.connect(host_id, &host.address),
        )
        .await;
        match connect {
            Ok(Ok(mut client)) => {
                client
                    .vm_delete(VmRef {
                        vm_id: vm.id.to_string(),
                    })
                    .await
                    .map_err(|s| {
                        ApiError::conflict(
                            "host_refused",
                            format!("host {}: {}", host.name, s.message()),
                        )
                    })?;
            }
            _ => {
                tracing::warn!(vm = %vm.id, "host {} unreachable; its files for the VM stay", host.name)
            }
        }
        Ok(())
    }
}

fn detail(d: &str) -> String {
    if d.is_empty() {
        String::new()
    } else {
        format!(" ({d})")
    }
}
