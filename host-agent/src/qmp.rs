//! A small typed QMP client (QEMU Machine Protocol, JSON over a Unix socket).
//! A reader task routes each answer to the command that asked (by `id`) and each
//! asynchronous event (`STOP`, `RESUME`, `SHUTDOWN`, ...) to a channel.
//!
//! The `qapi` crate was considered; its generated types track a QEMU version other
//! than Debian 12's 7.2, and Ferry needs only a handful of commands, so this stays
//! a few dozen lines with the commands typed at their call sites.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// An asynchronous QMP event.
#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
    /// When QEMU emitted it (its wall clock), if it said.
    pub at: Option<std::time::SystemTime>,
}

pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Qmp {
    /// Connects (retrying while QEMU creates the socket, up to `wait`), negotiates
    /// capabilities, and returns the client and its event stream.
    pub async fn connect(
        path: &Path,
        wait: Duration,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<QmpEvent>)> {
        let deadline = tokio::time::Instant::now() + wait;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::trace!("QMP {} not ready: {e}", path.display());
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("connect QMP {}", path.display())),
            }
        };
        let (read, write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let greeting = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .context("QMP greeting timed out")??
            .context("QMP closed before its greeting")?;
        if !greeting.contains("\"QMP\"") {
            bail!("not a QMP greeting: {greeting}");
        }
        let pending: Pending = Arc::default();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if let Some(name) = v.get("event").and_then(Value::as_str) {
                    let ts = &v["timestamp"];
                    let at = ts["seconds"].as_u64().map(|s| {
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(s)
                            + std::time::Duration::from_micros(
                                ts["microseconds"].as_u64().unwrap_or(0),
                            )
                    });
                    let _ = events_tx.send(QmpEvent {
                        name: name.to_string(),
                        data: v["data"].clone(),
                        at,
                    });
                    continue;
                }
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let reply = match (v.get("return"), v.get("error")) {
                    (Some(r), _) => Ok(r.clone()),
                    (_, Some(e)) => Err(e["desc"].as_str().unwrap_or("QMP error").to_string()),
                    _ => continue,
                };
                if let Some(tx) = reader_pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id)
                {
                    let _ = tx.send(reply);
                }
            }
            // The socket closed (QEMU exited): fail whoever still waits.
            reader_pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        });
        let qmp = Arc::new(Self {
            writer: tokio::sync::Mutex::new(write),
            pending,
            next_id: AtomicU64::new(1),
        });
        qmp.execute("qmp_capabilities", json!({})).await?;
        Ok((qmp, events_rx))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&self, command: &str, arguments: Value) -> anyhow::Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut msg = json!({"execute": command, "id": id});
        if arguments.as_object().is_some_and(|a| !a.is_empty()) {
            msg["arguments"] = arguments;
        }
        // Every command, for debugging what the agent asked of QEMU (`FERRY_LOG=
        // ferry_agent::qmp=trace`); `query-*` polls are many, the rest few.
        if !command.starts_with("query-") {
            tracing::trace!(%msg, "QMP");
        }
        let mut line = serde_json::to_vec(&msg)?;
        line.push(b'\n');
        self.writer
            .lock()
            .await
            .write_all(&line)
            .await
            .with_context(|| format!("send QMP {command}"))?;
        match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(e))) => Err(anyhow!("QMP {command}: {e}")),
            Ok(Err(_)) => Err(anyhow!("QMP {command}: the connection closed")),
            Err(_) => Err(anyhow!("QMP {command}: no answer in 30 s")),
        }
    }

    /// `query-status`: `running`, `paused`, `postmigrate`, `shutdown`, ...
    pub async fn status(&self) -> anyhow::Result<String> {
        let v = self.execute("query-status", json!({})).await?;
        Ok(v["status"].as_str().unwrap_or("unknown").to_string())
    }
}
