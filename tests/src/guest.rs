//! The test guest image (`make guest`): built once per test process, under a lock
//! so parallel test binaries share one build.

use std::path::PathBuf;
use std::sync::OnceLock;

static IMAGE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

/// (`vmlinuz`, `initrd.img`), building them if needed.
pub fn image() -> (PathBuf, PathBuf) {
    IMAGE
        .get_or_init(|| {
            let root = crate::workspace();
            let lock_dir = root.join("target");
            std::fs::create_dir_all(&lock_dir).expect("target dir");
            let lock = std::fs::File::create(lock_dir.join(".guest.lock")).expect("guest lock");
            let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
                .map_err(|(_, e)| e)
                .expect("lock guest build");
            let out = std::process::Command::new(root.join("deploy/guest/build.sh"))
                .output()
                .expect("run build.sh");
            assert!(
                out.status.success(),
                "guest build failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (
                root.join("target/guest/vmlinuz"),
                root.join("target/guest/initrd.img"),
            )
        })
        .clone()
}
