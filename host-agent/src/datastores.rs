//! Datastores: directories holding VM disks. Each carries an identity file
//! (`.ferry-datastore-id`); the first agent to see the directory writes it
//! (create-exclusive, so two agents racing agree), every agent reads it back.
//! Two hosts reporting the same id really see the same storage.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use ferry_proto::v1::DatastoreFacts;

pub const ID_FILE: &str = ".ferry-datastore-id";

/// A configured datastore.
#[derive(Debug, Clone)]
pub struct DatastoreSpec {
    pub name: String,
    pub path: std::path::PathBuf,
}

/// Reads (or creates) the datastore's identity.
pub fn identity(path: &Path) -> anyhow::Result<uuid::Uuid> {
    std::fs::create_dir_all(path)
        .with_context(|| format!("create datastore dir {}", path.display()))?;
    let file = path.join(ID_FILE);
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
    {
        Ok(mut f) => {
            let id = uuid::Uuid::new_v4();
            f.write_all(id.to_string().as_bytes())?;
            f.sync_all()?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            // Another agent may be writing it right now: retry briefly on a short read.
            for _ in 0..50 {
                let s = std::fs::read_to_string(&file)?;
                if let Ok(id) = s.trim().parse() {
                    return Ok(id);
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            anyhow::bail!("{} does not hold a datastore id", file.display())
        }
        Err(e) => Err(e).with_context(|| format!("create {}", file.display())),
    }
}

/// Facts of one datastore: identity, capacity and free space.
pub fn facts(spec: &DatastoreSpec) -> anyhow::Result<DatastoreFacts> {
    let id = identity(&spec.path)?;
    let st = nix::sys::statvfs::statvfs(&spec.path)?;
    let frag = st.fragment_size() as u64;
    Ok(DatastoreFacts {
        id: id.to_string(),
        name: spec.name.clone(),
        path: spec.path.display().to_string(),
        capacity_bytes: st.blocks() as u64 * frag,
        free_bytes: st.blocks_available() as u64 * frag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_stable_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let a = identity(dir.path()).unwrap();
        let b = identity(dir.path()).unwrap();
        assert_eq!(a, b);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(a, identity(other.path()).unwrap());
        let f = facts(&DatastoreSpec {
            name: "ds".into(),
            path: dir.path().into(),
        })
        .unwrap();
        assert_eq!(f.id, a.to_string());
        assert!(f.capacity_bytes >= f.free_bytes && f.capacity_bytes > 0);
    }
}
