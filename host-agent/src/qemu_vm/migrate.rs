//! Live migration on the QEMU backend. The destination starts an identical QEMU
//! with `-incoming defer` and listens (`migrate-incoming`); the source sets the
//! policy's parameters and runs `migrate`; QEMU's own semantics keep exactly one
//! copy running: the destination resumes only after the whole state arrived, the
//! source stays paused (`postmigrate`) until it is discarded. Before switchover a
//! cancel leaves the source running and the destination is discarded.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use ferry_proto::v1::{MigrationStatusReply, VmRuntime, VmSpec};
use serde_json::json;

use super::{PowerState, QemuVms};

/// The QOM id of the TLS credentials object in each QEMU.
const TLS_OBJECT: &str = "ferry-tls";

impl QemuVms {
    /// This host's identity laid out as QEMU's `tls-creds-x509` expects it (the
    /// cluster CA, and the host's CA-issued certificate as both server and client).
    fn tls_dir(&self) -> anyhow::Result<std::path::PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let state = self.root.parent().context("no state dir")?;
        let dir = state.join("migration-tls");
        std::fs::create_dir_all(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let cert = std::fs::read(state.join("host.crt")).context("read host.crt")?;
        let key = std::fs::read(state.join("host.key")).context("read host.key")?;
        let ca = std::fs::read(state.join("ca.pem")).context("read ca.pem")?;
        for (name, data) in [
            ("ca-cert.pem", &ca),
            ("server-cert.pem", &cert),
            ("client-cert.pem", &cert),
            ("server-key.pem", &key),
            ("client-key.pem", &key),
        ] {
            std::fs::write(dir.join(name), data)?;
            let mode = if name.ends_with("-key.pem") {
                0o600
            } else {
                0o644
            };
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(mode))?;
        }
        Ok(dir)
    }

    /// (Re)creates the VM's TLS credentials object for `endpoint` (server/client).
    async fn tls_object(&self, qmp: &crate::qmp::Qmp, endpoint: &str) -> anyhow::Result<()> {
        let dir = self.tls_dir()?;
        let _ = qmp.execute("object-del", json!({"id": TLS_OBJECT})).await;
        qmp.execute(
            "object-add",
            json!({"qom-type": "tls-creds-x509", "id": TLS_OBJECT, "dir": dir.display().to_string(),
                   "endpoint": endpoint, "verify-peer": true}),
        )
        .await?;
        Ok(())
    }

    fn qmp_of(&self, vm_id: &str) -> anyhow::Result<Arc<crate::qmp::Qmp>> {
        let h = self
            .get(vm_id)
            .with_context(|| format!("VM {vm_id} is not on this host"))?;
        let qmp = h.live.lock().ok().and_then(|l| l.qmp.clone());
        qmp.with_context(|| format!("VM {vm_id} is not running here"))
    }

    /// Destination: starts the waiting QEMU and returns the URI to send to.
    pub async fn migrate_in(
        self: &Arc<Self>,
        spec: VmSpec,
        listen_ip: &str,
        tls: bool,
    ) -> anyhow::Result<String> {
        let h = self.handle(&spec);
        let _op = h.op.lock().await;
        // Asked again (a replayed saga step): the same waiting QEMU, the same URI.
        if let Some(uri) = h.live.lock().ok().and_then(|l| l.incoming_uri.clone()) {
            if h.live
                .lock()
                .map(|l| l.state == PowerState::Paused)
                .unwrap_or(false)
            {
                return Ok(uri);
            }
        }
        if h.live
            .lock()
            .map(|l| l.state != PowerState::Stopped)
            .unwrap_or(true)
        {
            bail!("VM {} already runs on this host", spec.vm_id);
        }
        self.start_qemu(&h, &spec, true).await?;
        let port = std::net::TcpListener::bind((listen_ip, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("no free port on {listen_ip}"))?
            .port();
        let uri = format!("tcp:{listen_ip}:{port}");
        let qmp = h
            .live
            .lock()
            .ok()
            .and_then(|l| l.qmp.clone())
            .context("no QMP")?;
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [{"capability": "events", "state": true}]}),
        )
        .await?;
        if tls {
            self.tls_object(&qmp, "server").await?;
            qmp.execute("migrate-set-parameters", json!({"tls-creds": TLS_OBJECT}))
                .await?;
        }
        qmp.execute("migrate-incoming", json!({"uri": uri})).await?;
        if let Ok(mut l) = h.live.lock() {
            l.incoming_uri = Some(uri.clone());
        }
        Ok(uri)
    }

    /// Source: starts sending the VM's state.
    pub async fn migrate_out(
        self: &Arc<Self>,
        vm_id: &str,
        uri: &str,
        max_bandwidth: u64,
        downtime_limit_ms: u32,
        auto_converge: bool,
        tls_hostname: &str,
    ) -> anyhow::Result<VmRuntime> {
        let h = self
            .get(vm_id)
            .with_context(|| format!("VM {vm_id} is not on this host"))?;
        let _op = h.op.lock().await;
        let qmp = self.qmp_of(vm_id)?;
        // Asked again (a replayed saga step): a migration already under way or done
        // is that migration, not a new one.
        let st = qmp.execute("query-migrate", json!({})).await?;
        if matches!(
            st["status"].as_str(),
            Some("setup" | "active" | "pre-switchover" | "device" | "completed")
        ) {
            return Ok(self.runtime(&h));
        }
        qmp.execute(
            "migrate-set-capabilities",
            json!({"capabilities": [
                {"capability": "events", "state": true},
                {"capability": "auto-converge", "state": auto_converge},
            ]}),
        )
        .await?;
        // No cap: as fast as the link goes (QEMU's default caps it at 128 MiB/s).
        let bandwidth = if max_bandwidth == 0 {
            64u64 << 30
        } else {
            max_bandwidth
        };
        qmp.execute(
            "migrate-set-parameters",
            json!({"max-bandwidth": bandwidth, "downtime-limit": downtime_limit_ms.max(1)}),
        )
        .await?;
        if tls_hostname.is_empty() {
            qmp.execute("migrate-set-parameters", json!({"tls-creds": ""}))
                .await?;
        } else {
            self.tls_object(&qmp, "client").await?;
            qmp.execute(
                "migrate-set-parameters",
                json!({"tls-creds": TLS_OBJECT, "tls-hostname": tls_hostname}),
            )
            .await?;
        }
        qmp.execute("migrate", json!({"uri": uri})).await?;
        Ok(self.runtime(&h))
    }

    /// Source: `query-migrate`.
    pub async fn migration_status(&self, vm_id: &str) -> anyhow::Result<MigrationStatusReply> {
        let v = self
            .qmp_of(vm_id)?
            .execute("query-migrate", json!({}))
            .await?;
        let ram = &v["ram"];
        let u = |x: &serde_json::Value| x.as_u64().unwrap_or(0);
        Ok(MigrationStatusReply {
            status: v["status"].as_str().unwrap_or("none").to_string(),
            transferred_bytes: u(&ram["transferred"]),
            remaining_bytes: u(&ram["remaining"]),
            total_bytes: u(&ram["total"]),
            iteration: u(&ram["dirty-sync-count"]),
            dirty_pages_rate: u(&ram["dirty-pages-rate"]),
            page_size: u(&ram["page-size"]),
            mbps: ram["mbps"].as_f64().unwrap_or(0.0),
            expected_downtime_ms: u(&v["expected-downtime"]),
            downtime_ms: u(&v["downtime"]),
            total_time_ms: u(&v["total-time"]),
            throttle_pct: u(&v["cpu-throttle-percentage"]) as u32,
            error: v["error-desc"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// Source: cancels an unfinished migration; the VM keeps (or resumes) running.
    pub async fn migrate_cancel(self: &Arc<Self>, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let h = self
            .get(vm_id)
            .with_context(|| format!("VM {vm_id} is not on this host"))?;
        let qmp = self.qmp_of(vm_id)?;
        qmp.execute("migrate_cancel", json!({})).await?;
        for _ in 0..200 {
            let st = self.migration_status(vm_id).await?.status;
            if st == "completed" {
                bail!("the migration had already completed; it cannot be cancelled");
            }
            if matches!(st.as_str(), "cancelled" | "failed" | "none") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        if qmp.status().await? != "running" {
            qmp.execute("cont", json!({})).await?;
            self.set_state(&h, PowerState::Running, "running (migration cancelled)");
        }
        Ok(self.runtime(&h))
    }

    /// Stops this host's copy and removes its taps and files, keeping the disks.
    pub async fn discard(self: &Arc<Self>, vm_id: &str) -> anyhow::Result<VmRuntime> {
        let Some(h) = self.get(vm_id) else {
            return Ok(VmRuntime {
                vm_id: vm_id.into(),
                state: "stopped".into(),
                ..Default::default()
            });
        };
        let _op = h.op.lock().await;
        if h.live
            .lock()
            .map(|l| l.state != PowerState::Stopped)
            .unwrap_or(false)
        {
            self.force_off(&h).await?;
        }
        let spec = h.spec.lock().map(|s| s.clone()).unwrap_or_default();
        self.cleanup_taps(&spec);
        let _ = std::fs::remove_dir_all(&h.dir);
        self.vms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(vm_id);
        Ok(VmRuntime {
            vm_id: vm_id.into(),
            state: "stopped".into(),
            generation: self.generation.next(),
            ..Default::default()
        })
    }

    /// Samples the guest's dirty-page rate for `calc_time` (QMP `calc-dirty-rate`).
    pub async fn sample_dirty_rate(&self, vm_id: &str, calc_time: Duration) -> anyhow::Result<u64> {
        let qmp = self.qmp_of(vm_id)?;
        qmp.execute(
            "calc-dirty-rate",
            json!({"calc-time": calc_time.as_secs().max(1)}),
        )
        .await?;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let v = qmp.execute("query-dirty-rate", json!({})).await?;
            if v["status"] == "measured" {
                // QEMU reports MiB/s.
                return Ok(v["dirty-rate"].as_u64().unwrap_or(0) << 20);
            }
        }
        bail!("the dirty rate was not measured in time")
    }
}
