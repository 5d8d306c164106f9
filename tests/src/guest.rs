//! The test guest image (`make guest`): built once per test process, under a lock
//! so parallel test binaries share one build.

use std::path::PathBuf;
use std::sync::OnceLock;

static IMAGE: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

/// Kernel arguments that make every guest of a comparison hold the same bytes:
/// the guest zeroes memory it frees (`init_on_free=1`), so what a migration
/// sends is what the guest uses, not also whatever its free pages last held.
/// Without it two boots of the same guest, set up the same way, sent 419 and
/// 428 MB at their first move (which pages the dirtier's working set and the
/// boot's freed buffers landed on), and raw QEMU's defaults and its tuned
/// settings swapped places between two runs of the migration bench on that
/// alone; with it, every boot sent 336–338 MB.
pub const SAME_BYTES_CMDLINE: &str = "init_on_free=1";

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
