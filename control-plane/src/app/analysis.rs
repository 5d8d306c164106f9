//! Analysis before a move: the guest's dirty rate (sampled by the source's QEMU,
//! `calc-dirty-rate`), the bandwidth between the two agents over the migration
//! network (measured by them, cached for ten minutes per pair; a migration's
//! budget never waits for one, and the measurement it calls for waits until no
//! move has touched either host for a few seconds, so that it neither slows a
//! move nor measures part of the link), and a pre-copy prediction from both:
//!
//! each pass sends what the previous one left dirty, so with bandwidth B, dirty
//! rate D and memory M, pass i moves about M·(D/B)^i; the last pass (the
//! downtime) starts once what remains fits in the downtime limit. When D ≥ B
//! pre-copy alone cannot converge, and the strategy says what it takes.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ferry_api::migration::Prediction;
use ferry_api::vm::MigrationPolicy;
use ferry_api::{HostId, VmId};
use ferry_proto::v1::{BandwidthProbeRequest, BandwidthSinkRequest, VmRef};

use super::App;

const LINK_TTL: Duration = Duration::from_secs(600);
const PROBE_BYTES: u64 = 64 << 20;
/// How long a measurement waits for the moves on its hosts to end before it is
/// given up (the next move calls for it again), how often it looks, and how long
/// the hosts must have been without a move: moves that follow each other (an
/// evacuation, a balancing pass, the bench's series) leave a second or two
/// between them, and a probe begun in such a gap shared the link with the next
/// move (the second move of a series at 1 Gbit/s took ~150 ms longer).
const PROBE_WAIT: Duration = Duration::from_secs(1800);
const PROBE_RECHECK: Duration = Duration::from_secs(1);
const PROBE_QUIET: Duration = Duration::from_secs(5);

/// Measured bandwidth between pairs of hosts.
#[derive(Debug)]
pub struct LinkCache {
    links: Mutex<HashMap<(HostId, HostId), (u64, Instant)>>,
    /// One probe at a time: two at once would each measure half the link.
    probing: tokio::sync::Mutex<()>,
    /// Pairs whose measurement waits for their hosts' moves to end (one each).
    pending: Mutex<HashSet<(HostId, HostId)>>,
    /// Moves as they begin, (source, destination): a measurement under way on
    /// either host gives way to them (see [`App::measure_when_idle`]).
    began: tokio::sync::broadcast::Sender<(HostId, HostId)>,
}

impl Default for LinkCache {
    fn default() -> Self {
        Self {
            links: Mutex::default(),
            probing: tokio::sync::Mutex::default(),
            pending: Mutex::default(),
            began: tokio::sync::broadcast::channel(64).0,
        }
    }
}

/// Ends when a move begins on `src` or `dst` — or may have: when the receiver
/// fell behind, a move of theirs may be among those it missed.
async fn a_move_begins_on(
    mut began: tokio::sync::broadcast::Receiver<(HostId, HostId)>,
    src: HostId,
    dst: HostId,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match began.recv().await {
            Ok((a, b)) if [a, b].iter().any(|h| *h == src || *h == dst) => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            // The cache (and its sender) lives as long as the control plane.
            Err(RecvError::Closed) => std::future::pending::<()>().await,
        }
    }
}

/// The least bandwidth each concurrent migration keeps, bytes/s (200 Mbit/s).
const MIN_SHARE: u64 = 25_000_000;

/// How many migrations may share a link of `bandwidth` bytes/s: each keeps at
/// least [`MIN_SHARE`]; at most 4 below 2 Gbit/s and 8 above, like vMotion's 4 per
/// host on 1 GbE and 8 on 10 GbE.
pub fn budget_for(bandwidth: u64) -> u32 {
    let cap = if bandwidth < 250_000_000 { 4 } else { 8 };
    ((bandwidth / MIN_SHARE) as u32).clamp(1, cap)
}

/// The pre-copy model (see the module doc). `bandwidth` and `dirty` in bytes/s.
pub fn predict_precopy(
    memory: u64,
    bandwidth: u64,
    dirty: u64,
    policy: &MigrationPolicy,
) -> Prediction {
    let b = bandwidth.max(1) as f64;
    let d = dirty as f64;
    let cap = if policy.max_bandwidth_mbps > 0 {
        f64::from(policy.max_bandwidth_mbps) * 1e6 / 8.0
    } else {
        f64::MAX
    };
    let b = b.min(cap);
    let limit = f64::from(policy.max_downtime_ms) / 1000.0 * b;
    let mut remaining = memory as f64;
    let mut sent = 0.0;
    let mut passes = 0;
    while remaining > limit && passes < 30 && d < b {
        sent += remaining;
        remaining *= d / b;
        passes += 1;
    }
    let converges = d < b;
    let strategy = if converges {
        "precopy"
    } else if policy.allow_throttle {
        "precopy+auto-converge"
    } else {
        "postcopy"
    };
    let downtime_ms = if converges {
        (remaining / b * 1000.0).ceil() as u64
    } else {
        u64::from(policy.max_downtime_ms)
    };
    let total_bytes = if converges {
        sent + remaining
    } else {
        memory as f64 * 2.0
    };
    Prediction {
        total_ms: (total_bytes / b * 1000.0).ceil() as u64,
        downtime_ms,
        strategy: strategy.into(),
        bandwidth_bps: bandwidth,
        dirty_rate_bps: dirty,
        disk_bytes: 0,
    }
}

impl App {
    /// The bandwidth from `src` to `dst` in bytes/s, measured by the agents.
    pub async fn link_bandwidth(&self, src: HostId, dst: HostId) -> anyhow::Result<u64> {
        let fresh = || {
            self.links
                .links
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(src, dst))
                .filter(|(_, at)| at.elapsed() < LINK_TTL)
                .map(|(bw, _)| *bw)
        };
        if let Some(bw) = fresh() {
            return Ok(bw);
        }
        let _probing = self.links.probing.lock().await;
        // Whoever held the probe before may have just measured this very link.
        if let Some(bw) = fresh() {
            return Ok(bw);
        }
        let addr_of = |h: Option<ferry_api::host::Host>| {
            h.map(|h| h.address)
                .ok_or_else(|| anyhow::anyhow!("host gone"))
        };
        let dst_addr = addr_of(self.db.host_fetch(dst).await?)?;
        let src_addr = addr_of(self.db.host_fetch(src).await?)?;
        let sink = self
            .agents
            .connect(dst, &dst_addr)
            .await?
            .bandwidth_sink(BandwidthSinkRequest {})
            .await?
            .into_inner();
        let r = self
            .agents
            .connect(src, &src_addr)
            .await?
            .bandwidth_probe(BandwidthProbeRequest {
                address: sink.address,
                bytes: PROBE_BYTES,
            })
            .await?
            .into_inner();
        let bw = (r.bytes as f64 / (r.elapsed_us.max(1) as f64 / 1e6)) as u64;
        self.links
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((src, dst), (bw, Instant::now()));
        tracing::info!(%src, %dst, mbytes_per_s = bw >> 20, "measured migration bandwidth");
        let name =
            |h: Option<ferry_api::host::Host>, id: HostId| h.map_or(id.to_string(), |h| h.name);
        let from = name(self.db.host_fetch(src).await.ok().flatten(), src);
        let to = name(self.db.host_fetch(dst).await.ok().flatten(), dst);
        let ev = crate::db::events::NewEvent::info(
            "link.measured",
            format!("migration link {from} → {to}: {} MB/s", bw / 1_000_000),
        )
        .host(src)
        .data(serde_json::json!({
            "source_host_id": src,
            "destination_host_id": dst,
            "bytes_per_s": bw,
            "probe_bytes": r.bytes,
            "probe_us": r.elapsed_us,
        }));
        self.events.record(ev).await;
        Ok(bw)
    }

    /// The last bandwidth measured from `src` to `dst`, however old, without
    /// waiting for a new one; failing that, the other way (links are symmetric far
    /// more often than not, and a VM moved back meets the link it came over).
    pub fn known_link_bandwidth(&self, src: HostId, dst: HostId) -> Option<u64> {
        let links = self.links.links.lock().unwrap_or_else(|p| p.into_inner());
        links
            .get(&(src, dst))
            .or_else(|| links.get(&(dst, src)))
            .map(|(bw, _)| *bw)
    }

    /// The migration budget of each of `src` and `dst`: the configured one, or
    /// sized from the last bandwidth measured between them (either way; 4,
    /// vMotion's 1 GbE figure, with none). A migration never waits for a
    /// measurement: its saga calls for one ([`App::measure_when_idle`]).
    pub async fn migration_budget(&self, src: HostId, dst: HostId) -> u32 {
        if self.config.host_migration_budget > 0 {
            return self.config.host_migration_budget;
        }
        if src == dst {
            // A host's own moves (storage-only, or a plan over its links): no link
            // to itself is worth measuring; its fastest link known sizes it.
            let links = self.links.links.lock().unwrap_or_else(|p| p.into_inner());
            return links
                .iter()
                .filter(|((a, b), _)| *a == src || *b == src)
                .map(|(_, (bw, _))| budget_for(*bw))
                .max()
                .unwrap_or(4);
        }
        self.known_link_bandwidth(src, dst).map_or(4, budget_for)
    }

    /// A move between `src` and `dst` begins: a measurement under way on either
    /// host gives way to it.
    pub fn move_begins(&self, src: HostId, dst: HostId) {
        // An error only says no measurement is waiting: nobody to tell.
        let _ = self.links.began.send((src, dst));
    }

    /// When the link from `src` to `dst` has no fresh measurement, takes one in
    /// the background once no migration has touched either host for
    /// [`PROBE_QUIET`] (queued ones included; a migration's saga calls this with
    /// its own record in place): a
    /// probe that shared the link with the move that called for it slowed that
    /// move (64 MiB on a 1 Gbit/s link: the first move between two lab hosts took
    /// ~0.5 s longer than the next) and measured only part of the link. One
    /// waiter per pair. A move that begins on either host while the probe runs
    /// (the quiet look cannot see it coming) stops it: see [`Self::move_begins`].
    pub fn measure_when_idle(&self, src: HostId, dst: HostId) {
        let fresh = self
            .links
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(src, dst))
            .is_some_and(|(_, at)| at.elapsed() < LINK_TTL);
        if fresh || src == dst {
            return;
        }
        let first = self
            .links
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((src, dst));
        if !first {
            return;
        }
        let app = self.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + PROBE_WAIT;
            let outcome = loop {
                // Listening before the look, so that no move begun after it is missed.
                let began = app.links.began.subscribe();
                match app
                    .db
                    .migration_recent_on_hosts(&[src, dst], PROBE_QUIET)
                    .await
                {
                    // A move that begins while the probe runs would share the link
                    // with it for up to the probe's 64 MiB (0.5 s at 1 Gbit/s), and
                    // the probe would measure part of the link: the probe is
                    // dropped (its call cancelled, the source agent stops sending)
                    // and waits for the hosts to be quiet again.
                    Ok(false) => tokio::select! {
                        r = app.link_bandwidth(src, dst) => break r.map(drop),
                        () = a_move_begins_on(began, src, dst) => {
                            tracing::info!(%src, %dst, "a move began on the hosts: the link's measurement gave way to it, and waits for them to be quiet again");
                        }
                    },
                    Ok(true) if Instant::now() < deadline => {
                        tokio::time::sleep(PROBE_RECHECK).await
                    }
                    Ok(true) => {
                        break Err(anyhow::anyhow!(
                            "moves kept its hosts busy for {} s",
                            PROBE_WAIT.as_secs()
                        ))
                    }
                    Err(e) => break Err(e.into()),
                }
            };
            app.links
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&(src, dst));
            if let Err(e) = outcome {
                tracing::warn!(%src, %dst, "measure the link for its budget: {e:#}");
            }
        });
    }

    /// Samples the VM's dirty rate on its source and predicts the move.
    pub async fn predict(
        &self,
        vm: VmId,
        memory_mib: u64,
        src: HostId,
        dst: HostId,
        policy: &MigrationPolicy,
    ) -> anyhow::Result<Prediction> {
        let bandwidth = self.link_bandwidth(src, dst).await?;
        let src_addr = self
            .db
            .host_fetch(src)
            .await?
            .map(|h| h.address)
            .unwrap_or_default();
        let dirty = self
            .agents
            .connect(src, &src_addr)
            .await?
            .sample_dirty_rate(VmRef {
                vm_id: vm.to_string(),
            })
            .await?
            .into_inner()
            .dirty_bytes_per_s;
        Ok(predict_precopy(memory_mib << 20, bandwidth, dirty, policy))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_measurement_gives_way_to_a_move_on_its_hosts_only() {
        let (a, b, c, d) = (HostId::new(), HostId::new(), HostId::new(), HostId::new());
        let (tx, _) = tokio::sync::broadcast::channel(2);
        let waiting = a_move_begins_on(tx.subscribe(), a, b);
        tokio::pin!(waiting);
        tx.send((c, d)).unwrap();
        assert!(futures::poll!(&mut waiting).is_pending(), "c → d");
        tx.send((c, b)).unwrap();
        assert!(
            futures::poll!(&mut waiting).is_ready(),
            "c → b (its destination)"
        );
        let waiting = a_move_begins_on(tx.subscribe(), a, b);
        tokio::pin!(waiting);
        tx.send((a, a)).unwrap();
        assert!(
            futures::poll!(&mut waiting).is_ready(),
            "a storage-only move on a"
        );
        // Fallen behind (three moves elsewhere, room for two): one of its hosts'
        // may have been among those missed.
        let waiting = a_move_begins_on(tx.subscribe(), a, b);
        tokio::pin!(waiting);
        for _ in 0..3 {
            tx.send((c, d)).unwrap();
        }
        assert!(futures::poll!(&mut waiting).is_ready(), "lagged");
    }

    #[test]
    fn budgets_follow_the_link() {
        assert_eq!(budget_for(119_000_000), 4, "1 GbE: 4, like vMotion");
        assert_eq!(budget_for(1_190_000_000), 8, "10 GbE: 8");
        assert_eq!(budget_for(25_000_000), 1, "200 Mbit/s: one at a time");
        assert_eq!(budget_for(60_000_000), 2, "each keeps 200 Mbit/s");
        assert_eq!(budget_for(0), 1, "never zero");
    }

    #[test]
    fn model() {
        let p = MigrationPolicy::default(); // 300 ms
        let gib = 1u64 << 30;
        // Idle guest on a 1 GiB/s link: about one pass, about a second, tiny downtime.
        let idle = predict_precopy(gib, gib, 0, &p);
        assert_eq!(idle.strategy, "precopy");
        assert!((990..=1100).contains(&idle.total_ms), "{idle:?}");
        assert!(idle.downtime_ms <= 1, "{idle:?}");
        // Dirtying a third of the link: more passes, longer, bounded downtime.
        let light = predict_precopy(gib, gib, gib / 3, &p);
        assert!(
            light.total_ms > idle.total_ms && light.downtime_ms <= 300,
            "{light:?}"
        );
        // Dirtying faster than the link: pre-copy cannot converge.
        assert_eq!(
            predict_precopy(gib, gib, 2 * gib, &p).strategy,
            "precopy+auto-converge"
        );
        let no_throttle = MigrationPolicy {
            allow_throttle: false,
            ..MigrationPolicy::default()
        };
        assert_eq!(
            predict_precopy(gib, gib, 2 * gib, &no_throttle).strategy,
            "postcopy"
        );
    }
}
