//! Which disks a live migration moves, and where: the storage half of a
//! shared-nothing migration (issue #12). A VM whose disks are all on datastores
//! the destination mounts moves by memory alone. Otherwise — or when the request
//! names a `destination_datastore_id` — every disk is copied, while the guest
//! runs, to one datastore of the destination: the one named, or else one of the
//! kind the disks are on now (a local disk stays local) with the most free space
//! that holds them all. The saga then mirrors the disks before the
//! memory moves and switches both over together (`sagas/migrate.rs`).

use ferry_api::host::Host;
use ferry_api::migration::MigrateRequest;
use ferry_api::vm::Vm;
use ferry_api::DatastoreId;
use serde::{Deserialize, Serialize};

use super::App;
use crate::error::ApiResult;

/// One disk a migration copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskMove {
    /// The disk's index in the VM's spec.
    pub disk: u32,
    pub from: DatastoreId,
    pub to: DatastoreId,
    /// Its file name (the same on both datastores).
    pub path: String,
    pub size_bytes: u64,
}

/// What the storage of a move needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoragePlan {
    /// Every disk is on a datastore the destination mounts: nothing to copy.
    Shared,
    /// Copy these disks to `to` (`name`).
    Copy { name: String, moves: Vec<DiskMove> },
    /// It cannot move: the check's code and sentence.
    Impossible { code: &'static str, detail: String },
}

impl StoragePlan {
    pub fn moves(&self) -> Vec<DiskMove> {
        match self {
            StoragePlan::Copy { moves, .. } => moves.clone(),
            _ => Vec::new(),
        }
    }
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

impl App {
    /// The storage plan for moving `vm` to `dest` as `req` asks.
    pub async fn storage_plan(
        &self,
        vm: &Vm,
        dest: &Host,
        req: &MigrateRequest,
    ) -> ApiResult<StoragePlan> {
        let total: u64 = vm.disks.iter().map(|d| d.size_bytes).sum();
        let target = match req.destination_datastore_id {
            Some(id) => {
                let Some(ds) = self.db.datastore_fetch(id).await? else {
                    return Ok(StoragePlan::Impossible {
                        code: "unknown_datastore",
                        detail: format!("no datastore {id}"),
                    });
                };
                if !dest.datastores.contains(&id) {
                    return Ok(StoragePlan::Impossible {
                        code: "datastore_not_on_destination",
                        detail: format!(
                            "datastore {} is not mounted on host {}",
                            ds.name, dest.name
                        ),
                    });
                }
                if vm.disks.is_empty() {
                    return Ok(StoragePlan::Impossible {
                        code: "no_disks",
                        detail: format!("VM {} has no disk to move", vm.name),
                    });
                }
                if let Some(d) = vm.disks.iter().find(|d| d.datastore_id == id) {
                    return Ok(StoragePlan::Impossible {
                        code: "disk_already_on_datastore",
                        detail: format!(
                            "disk {} is already on datastore {}: a move copies every disk to a datastore none of them is on",
                            d.path, ds.name
                        ),
                    });
                }
                ds
            }
            None => {
                if vm
                    .disks
                    .iter()
                    .all(|d| dest.datastores.contains(&d.datastore_id))
                {
                    return Ok(StoragePlan::Shared);
                }
                // Of the destination's datastores that hold them all: one of the
                // kind the disks are on now (local stays local), then the most room.
                let kind = match vm.disks.first() {
                    Some(d) => self
                        .db
                        .datastore_fetch(d.datastore_id)
                        .await?
                        .map(|ds| ds.kind),
                    None => None,
                };
                let mut best: Option<ferry_api::datastore::Datastore> = None;
                for id in &dest.datastores {
                    if let Some(ds) = self.db.datastore_fetch(*id).await? {
                        let rank = |d: &ferry_api::datastore::Datastore| {
                            (Some(d.kind) == kind, d.free_bytes)
                        };
                        if ds.free_bytes >= total
                            && best.as_ref().is_none_or(|b| rank(&ds) > rank(b))
                        {
                            best = Some(ds);
                        }
                    }
                }
                match best {
                    Some(ds) => ds,
                    None => {
                        return Ok(StoragePlan::Impossible {
                            code: "datastore_not_on_destination",
                            detail: format!(
                                "host {} does not mount the VM's datastore(s), and none of its own has {:.1} GiB free for a copy",
                                dest.name,
                                gib(total)
                            ),
                        })
                    }
                }
            }
        };
        if target.free_bytes < total {
            return Ok(StoragePlan::Impossible {
                code: "insufficient_datastore_space",
                detail: format!(
                    "datastore {} has {:.1} GiB free; the VM's disks need {:.1} GiB",
                    target.name,
                    gib(target.free_bytes),
                    gib(total)
                ),
            });
        }
        Ok(StoragePlan::Copy {
            name: target.name.clone(),
            moves: vm
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| DiskMove {
                    disk: i as u32,
                    from: d.datastore_id,
                    to: target.id,
                    path: d.path.clone(),
                    size_bytes: d.size_bytes,
                })
                .collect(),
        })
    }
}
