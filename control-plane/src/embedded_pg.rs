//! The embedded PostgreSQL: with no `--database-url`, the control plane runs its own
//! private PostgreSQL cluster from the system's installed binaries (Debian's
//! `postgresql` package), the way vCenter ships its own database.
//!
//! Layout: `DATA_DIR/pg/data` (the cluster), `DATA_DIR/pg` (its Unix socket; no TCP
//! listener), `DATA_DIR/pg/postgres.log`. PostgreSQL refuses to run as root, so when
//! the control plane runs as root the cluster runs as the `postgres` user. If that
//! user cannot reach `DATA_DIR` (e.g. it lies under `/root`, mode 0700), the cluster
//! is kept under `/var/lib/ferry/embedded-pg/<hash of DATA_DIR>` and `DATA_DIR/pg` is a
//! symlink to it. A cluster left running by a control plane that was killed is
//! adopted, not started twice.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnectOptions;

const PORT: u16 = 5432;
const DB_NAME: &str = "ferry";

/// A running embedded PostgreSQL cluster.
#[derive(Debug)]
pub struct EmbeddedPg {
    bin_dir: PathBuf,
    root: PathBuf,
    run_as: Option<(u32, u32)>,
}

impl EmbeddedPg {
    /// Initialises (first time) and starts the cluster for `data_dir`, or adopts a
    /// cluster that is already running there.
    pub fn start(data_dir: &Path, bin_dir: Option<&Path>) -> anyhow::Result<Self> {
        let bin_dir = match bin_dir {
            Some(b) => b.to_path_buf(),
            None => find_bin_dir()?,
        };
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        let data_dir = data_dir.canonicalize()?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")?.context(
                "running as root needs the `postgres` user (install Debian's postgresql package)",
            )?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let root = pg_root(&data_dir, run_as)?;
        let pg = Self {
            bin_dir,
            root,
            run_as,
        };
        pg.init()?;
        pg.ensure_running()?;
        Ok(pg)
    }

    /// Connection options for the `ferry` database (created on first use).
    pub async fn connect_options(&self) -> anyhow::Result<PgConnectOptions> {
        let admin = self.options("postgres");
        let mut conn = {
            use sqlx::Connection;
            sqlx::PgConnection::connect_with(&admin)
                .await
                .context("connect to embedded PostgreSQL")?
        };
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(DB_NAME)
                .fetch_optional(&mut conn)
                .await?;
        if exists.is_none() {
            sqlx::query(&format!("CREATE DATABASE {DB_NAME}"))
                .execute(&mut conn)
                .await?;
        }
        Ok(self.options(DB_NAME))
    }

    fn options(&self, db: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.root)
            .port(PORT)
            .username("postgres")
            .database(db)
    }

    /// Where the cluster's Unix socket lives.
    pub fn socket_dir(&self) -> &Path {
        &self.root
    }

    /// Stops the cluster (fast shutdown: open transactions are rolled back).
    pub fn stop(&self) -> anyhow::Result<()> {
        let out = self
            .pg_command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data())
            .args(["-m", "fast", "-w", "-t", "60"])
            .output()?;
        if !out.status.success() && self.is_running()? {
            bail!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn init(&self) -> anyhow::Result<()> {
        if self.data().join("PG_VERSION").exists() {
            return Ok(());
        }
        tracing::info!(dir = %self.data().display(), "initialising embedded PostgreSQL");
        let out = self
            .pg_command("initdb")
            .arg("-D")
            .arg(self.data())
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
            ])
            .output()
            .context("run initdb")?;
        if !out.status.success() {
            bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }

    fn is_running(&self) -> anyhow::Result<bool> {
        let st = self
            .pg_command("pg_ctl")
            .arg("status")
            .arg("-D")
            .arg(self.data())
            .output()?;
        Ok(st.status.success())
    }

    fn ensure_running(&self) -> anyhow::Result<()> {
        if self.is_running()? {
            tracing::info!("adopting the embedded PostgreSQL that is already running");
            return Ok(());
        }
        let opts = format!(
            "-c listen_addresses='' -c unix_socket_directories='{}' -c port={PORT} -c max_connections=300",
            self.root.display()
        );
        let out = self
            .pg_command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.root.join("postgres.log"))
            .args(["-w", "-t", "60", "-o", &opts])
            .output()
            .context("run pg_ctl start")?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.root.join("postgres.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            bail!(
                "pg_ctl start failed: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }

    fn pg_command(&self, prog: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(self.bin_dir.join(prog));
        cmd.current_dir(&self.root).env("LC_ALL", "C.UTF-8");
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for e in entries.flatten() {
            let v: u32 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let bin = e.path().join("bin");
            if bin.join("initdb").exists() && best.as_ref().is_none_or(|(bv, _)| v > *bv) {
                best = Some((v, bin));
            }
        }
    }
    best.map(|(_, b)| b).context(
        "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: install the \
         `postgresql` package, pass --pg-bin-dir, or use --database-url",
    )
}

/// Chooses the cluster's directory: `DATA_DIR/pg` when the cluster's user can reach
/// it and the socket path fits, else a private directory under `/var/lib/ferry`.
fn pg_root(data_dir: &Path, run_as: Option<(u32, u32)>) -> anyhow::Result<PathBuf> {
    let link = data_dir.join("pg");
    if let Ok(target) = std::fs::read_link(&link) {
        return Ok(target);
    }
    let socket_len = link.join(format!(".s.PGSQL.{PORT}")).as_os_str().len();
    let reachable = match run_as {
        None => true,
        Some((uid, _)) => {
            // Make DATA_DIR itself traversable (not readable) by the cluster's user.
            let meta = std::fs::metadata(data_dir)?;
            if meta.uid() != uid && meta.mode() & 0o001 == 0 {
                let mut perm = meta.permissions();
                perm.set_mode(meta.mode() | 0o011);
                std::fs::set_permissions(data_dir, perm)?;
            }
            data_dir.ancestors().skip(1).all(|a| {
                std::fs::metadata(a)
                    .map(|m| m.mode() & 0o001 != 0 || m.uid() == uid)
                    .unwrap_or(false)
            })
        }
    };
    let root = if reachable && socket_len < 100 {
        link.clone()
    } else {
        let hash = hex::encode(&Sha256::digest(data_dir.as_os_str().as_encoded_bytes())[..8]);
        let root = PathBuf::from("/var/lib/ferry/embedded-pg").join(hash);
        std::fs::create_dir_all(&root)?;
        if !link.exists() {
            std::os::unix::fs::symlink(&root, &link)?;
        }
        root
    };
    std::fs::create_dir_all(&root)?;
    if let Some((uid, gid)) = run_as {
        nix::unistd::chown(&root, Some(uid.into()), Some(gid.into()))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(root)
}

/// Stops the embedded cluster of `data_dir` if one is running there (clean-up after
/// a control plane that was killed).
pub fn stop_leftover(data_dir: &Path) -> anyhow::Result<()> {
    let root = match std::fs::read_link(data_dir.join("pg")) {
        Ok(t) => t,
        Err(_) => data_dir.join("pg"),
    };
    if !root.join("data/PG_VERSION").exists() {
        return Ok(());
    }
    let run_as = if nix::unistd::geteuid().is_root() {
        nix::unistd::User::from_name("postgres")?.map(|u| (u.uid.as_raw(), u.gid.as_raw()))
    } else {
        None
    };
    let pg = EmbeddedPg {
        bin_dir: find_bin_dir()?,
        root,
        run_as,
    };
    if pg.is_running()? {
        pg.stop()?;
    }
    Ok(())
}
