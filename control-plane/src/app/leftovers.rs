//! Copies a host keeps that the inventory does not place on it: the waiting
//! destination of a migration that failed while that host was unreachable (its
//! discard could not reach it). When the host is connected again, each VM its agent
//! holds that the inventory places elsewhere, and that no unfinished migration is
//! bringing to it, is discarded there (`VmDiscard`: its taps and files, and the
//! disks an unfinished storage migration made — never the VM's own disks).

use ferry_api::HostId;
use ferry_proto::v1::{VmListRequest, VmRef};

use super::App;
use crate::db::events::NewEvent;

impl App {
    /// Discards `host`'s leftover copies (run when it reconnects).
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
            if arriving {
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
