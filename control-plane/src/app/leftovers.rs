//! Copies a host keeps that the inventory does not place on it: the waiting
//! destination of a migration that failed while that host was unreachable (its
//! discard could not reach it), a move's paused source whose clean-up could not.
//! When the host is connected again, and on every pass of the reconcile loop, each
//! VM its agent holds that the inventory places elsewhere, and that no operation
//! (an unfinished migration either way) owns, is discarded there (`VmDiscard`: its taps and files, and the
//! disks an unfinished storage migration made — never the VM's own disks).

use ferry_api::HostId;
use ferry_proto::v1::{VmListRequest, VmRef};

use super::App;
use crate::db::events::NewEvent;

impl App {
    /// Discards `host`'s leftover copies (run when it reconnects, and by the
    /// reconcile loop).
    pub async fn discard_leftovers(&self, host: HostId) -> anyhow::Result<usize> {
        let Some(h) = self.db.host_fetch(host).await? else {
            return Ok(0);
        };
        let mut agent = self.agents.connect(host, &h.address).await?;
        let held = agent.vm_list(VmListRequest {}).await?.into_inner().vms;
        let mut discarded = 0;
        for rt in held {
            let Ok(id) = rt.vm_id.parse() else { continue };
            let Some(vm) = self.db.vm_fetch(id).await? else {
                continue; // not in the inventory: reported as unmanaged, never touched
            };
            if vm.host_id == Some(host) {
                continue;
            }
            let arriving = self
                .db
                .migration_active_destinations(vm.cluster_id)
                .await?
                .iter()
                .any(|(v, d)| *v == id && *d == host);
            // A move under way (either way, post-copy's source included) owns
            // its copies: its saga discards them.
            // A post-copy that failed split the VM's state between two hosts:
            // neither copy is a leftover (an operator decides).
            if arriving
                || self.db.vm_op_fetch(id).await?.is_some()
                || self.db.migration_latest_failed_in_postcopy(id).await?
            {
                continue;
            }
            agent
                .vm_discard(VmRef {
                    vm_id: rt.vm_id.clone(),
                })
                .await?;
            discarded += 1;
            self.events
                .record(
                    NewEvent::info(
                        "vm.leftover_discarded",
                        format!(
                            "host {} held a copy of VM {} that runs elsewhere (left by an interrupted migration); discarded it",
                            h.name, vm.name
                        ),
                    )
                    .host(host)
                    .vm(id),
                )
                .await;
        }
        Ok(discarded)
    }
}
