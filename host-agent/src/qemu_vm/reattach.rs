//! Re-attaching to the VMs a previous agent process left running (an agent
//! restart must never touch a guest): each VM directory with a live QEMU of that
//! VM's id is taken over through its QMP socket; the rest are recorded stopped.

use std::sync::Arc;
use std::time::Duration;

use super::spec::spec_from_json;
use super::{pid_alive, qemu_uuid, storage, PowerState, QemuVms};
use crate::qmp::Qmp;

impl QemuVms {
    /// Finds the VMs a previous agent left running and re-attaches to them.
    pub async fn reattach(self: &Arc<Self>) -> anyhow::Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(());
        };
        for e in entries.flatten() {
            let dir = e.path();
            let Ok(spec_text) = std::fs::read_to_string(dir.join("spec.json")) else {
                continue;
            };
            let Ok(spec) =
                serde_json::from_str::<serde_json::Value>(&spec_text).map(spec_from_json)
            else {
                continue;
            };
            let handle = self.handle(&spec);
            let pid = std::fs::read_to_string(dir.join(super::QEMU_PIDFILE))
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok());
            match pid {
                Some(pid)
                    if pid_alive(pid) && qemu_uuid(pid).as_deref() == Some(spec.vm_id.as_str()) =>
                {
                    match Qmp::connect(&dir.join("qmp.sock"), Duration::from_secs(5)).await {
                        Ok((qmp, events)) => {
                            let state = match qmp.status().await.as_deref() {
                                Ok("running") => PowerState::Running,
                                _ => PowerState::Paused,
                            };
                            self.set(
                                &handle,
                                state,
                                Some(pid),
                                Some(qmp),
                                "re-attached after agent restart",
                            );
                            self.watch(handle.clone(), events);
                            tracing::info!(vm = %spec.vm_id, pid, "re-attached to running VM");
                            // A storage migration's destination whose state arrived
                            // while no agent was here to start it.
                            if state == PowerState::Paused
                                && dir.join(storage::INCOMING_DISKS).exists()
                            {
                                self.finish_if_arrived(&handle).await;
                            }
                        }
                        Err(e) => {
                            tracing::error!(vm = %spec.vm_id, pid, "QEMU runs but QMP failed: {e:#}")
                        }
                    }
                }
                _ => {
                    self.cleanup_taps(&spec);
                    self.set(
                        &handle,
                        PowerState::Stopped,
                        None,
                        None,
                        "not running at agent start",
                    );
                }
            }
        }
        Ok(())
    }
}
