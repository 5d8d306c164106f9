//! A destination that takes the migration stream before its QEMU listens.
//!
//! `MigrateIn` with `hold_stream` (what the control plane asks where the
//! agent's tunnel carries the stream, with QEMU's return path open: see
//! `migrate_in`) replies as soon as the destination's
//! migration tunnel listens and the frame sink is up. The QEMU starts behind
//! the reply, under the VM's operation lock, while the source already sends:
//! the tunnel holds what arrives until QEMU listens (`crate::tunnel`). Starting
//! QEMU — 90–190 ms on the lab's hosts while the source guest runs — then
//! overlaps the transfer instead of coming before it, as it does for raw QEMU.
//!
//! If that QEMU does not get to listen, the reason is kept for the VM's
//! `MigrationStatus` on this host, the tunnel is stopped (the source's
//! migration fails at once, not at the tunnel's deadline) and what the start
//! left is removed. The source's VM runs on, as after any failed transfer.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ferry_proto::v1::{MigrateInReply, MigrateInRequest, VmSpec};
use serde_json::json;
use tokio::sync::OwnedMutexGuard;

use super::migrate::{path_str, receiving, TUNNEL_IN};
use super::{PowerState, QemuVms, VmHandle, QEMU_PIDFILE};

impl QemuVms {
    /// `MigrateIn`, replying before QEMU listens (see the module). `op` is the
    /// VM's operation lock, held until QEMU listens or its start is undone.
    pub(super) async fn held_start(
        self: &Arc<Self>,
        h: Arc<VmHandle>,
        op: OwnedMutexGuard<()>,
        spec: VmSpec,
        req: MigrateInRequest,
    ) -> anyhow::Result<MigrateInReply> {
        let t0 = std::time::Instant::now();
        std::fs::create_dir_all(&h.dir)?;
        let sock = h.dir.join(TUNNEL_IN);
        let _ = std::fs::remove_file(&sock);
        // The tunnel learns its QEMU from this file: none may be left from before.
        let _ = std::fs::remove_file(h.dir.join(QEMU_PIDFILE));
        let listen_ip = req.listen_ip.clone();
        let tunnel = self
            .spawn_tunnel(
                &h,
                "in",
                &["in", "--listen", &listen_ip, "--unix", &path_str(&sock)],
            )
            .await?;
        let port = tunnel
            .ready
            .strip_prefix("port ")
            .and_then(|p| p.parse::<u16>().ok())
            .with_context(|| format!("the migration tunnel said {:?}", tunnel.ready));
        let port = match port {
            Ok(p) => p,
            Err(e) => {
                stop_tunnel(tunnel.pid);
                return Err(e);
            }
        };
        let taps = (0..spec.nics.len())
            .map(|i| crate::netdev::tap_name(&spec.vm_id, i))
            .collect();
        let sink = match crate::frames::Sink::start(&listen_ip, taps) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::warn!(vm = %spec.vm_id, "no frame relay for this move: {e:#}");
                None
            }
        };
        let reply = MigrateInReply {
            uri: format!("tcp:{listen_ip}:{port}"),
            frames_address: sink.as_ref().map(|s| s.address.clone()).unwrap_or_default(),
            frames_token: sink.as_ref().map(|s| s.token.clone()).unwrap_or_default(),
            held: true,
            ..Default::default()
        };
        let replied_ms = t0.elapsed().as_millis();
        let (me, waiting) = (self.clone(), reply.clone());
        tokio::spawn(async move {
            let _op = op;
            match me.listen_behind(&h, &spec, &req, &sock).await {
                Ok(()) => {
                    if let Ok(mut l) = h.live.lock() {
                        l.incoming = Some(waiting);
                        l.sink = sink;
                    }
                    tracing::debug!(vm = %spec.vm_id, replied_ms, ms = t0.elapsed().as_millis(),
                        "waiting for the migration (its stream held until now)");
                }
                Err(e) => {
                    let why = format!("the QEMU to receive the VM: {e:#}");
                    tracing::warn!(vm = %spec.vm_id, "{why}");
                    if let Ok(mut l) = h.live.lock() {
                        l.start_failed = Some(why);
                    }
                    stop_tunnel(tunnel.pid);
                    let started = h.live.lock().is_ok_and(|l| l.state != PowerState::Stopped);
                    if started {
                        if let Err(e) = me.force_off(&h).await {
                            tracing::warn!(vm = %spec.vm_id, "stop the QEMU that did not listen: {e:#}");
                        }
                    }
                    me.cleanup_taps(&spec);
                }
            }
        });
        Ok(reply)
    }

    /// Starts the VM's QEMU waiting for a migration and has it listen on the
    /// tunnel's socket `sock`.
    async fn listen_behind(
        self: &Arc<Self>,
        h: &Arc<VmHandle>,
        spec: &VmSpec,
        req: &MigrateInRequest,
        sock: &Path,
    ) -> anyhow::Result<()> {
        self.start_qemu(h, spec, true).await?;
        let qmp = receiving(h, req).await?;
        qmp.execute(
            "migrate-incoming",
            json!({"uri": format!("unix:{}", sock.display())}),
        )
        .await?;
        Ok(())
    }
}

/// Ends the tunnel process `pid` (its connections with it).
fn stop_tunnel(pid: u32) {
    if pid == 0 {
        return; // none known (0 would name this process group)
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
