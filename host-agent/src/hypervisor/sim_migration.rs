//! The sim backend's live migration: a model of QEMU's pre-copy (and post-copy),
//! so the control plane's prediction, `auto` escalation, budgets and sagas run
//! against many moves without guests. No feature that touches guests is proven
//! on it (DESIGN principle 1); what it proves is the control plane's side.
//!
//! The model is the one `control-plane/src/app/analysis.rs` predicts with: with
//! link bandwidth B, dirty rate D and memory M, pass 1 sends M, each later pass
//! sends what the previous one left dirty (D × its duration, at most M), and the
//! switchover comes once what remains fits in the downtime target; its transfer
//! is the downtime. Auto-converge throttles the guest (20 %, then +10 % a pass,
//! like QEMU's defaults) while D > B / 2; post-copy moves the VM at once and pulls
//! the rest in remaining / B.
//!
//! ```text
//!   setup ─► active ──(remaining ≤ B × downtime)──► switching_over ─► completed
//!              │  └──(start_postcopy)─► postcopy_active ────────────► completed
//!              └──(cancel)─► cancelled      (fail_at_pass) ─► failed
//! ```
//!
//! Per-VM model parameters come from the VM's kernel command line, so a test sets
//! them through the ordinary API: `sim.dirty_mibps=N` (dirty rate), `sim.fail_at_pass=N`
//! (the migration fails at that pass), `sim.step=1` (step mode: the model advances
//! one pass each time the status is asked, not with the clock), and the load it
//! reports for balancing: `sim.cpu=CORES`, `sim.mem_used_mib=N`.

use ferry_proto::v1::MigrationStatus;

/// What a sim VM's command line says about its guest.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GuestModel {
    pub dirty_bps: u64,
    pub fail_at_pass: Option<u64>,
    pub step: bool,
    /// CPU demand in cores (`sim.cpu=1.5`; default 0.1) and memory in use
    /// (`sim.mem_used_mib=N`; default half the VM's memory), for balancing.
    pub cpu_cores: Option<f64>,
    pub mem_used_mib: Option<u64>,
}

impl GuestModel {
    pub fn from_cmdline(cmdline: &str) -> Self {
        let mut m = GuestModel::default();
        for word in cmdline.split_whitespace() {
            let Some((k, v)) = word.split_once('=') else {
                continue;
            };
            match k {
                "sim.dirty_mibps" => m.dirty_bps = v.parse::<u64>().unwrap_or(0) << 20,
                "sim.fail_at_pass" => m.fail_at_pass = v.parse().ok(),
                "sim.step" => m.step = v == "1",
                "sim.cpu" => {
                    m.cpu_cores = v.parse().ok().filter(|c: &f64| c.is_finite() && *c >= 0.0)
                }
                "sim.mem_used_mib" => m.mem_used_mib = v.parse().ok(),
                _ => {}
            }
        }
        m
    }
}

/// The settings of one move.
#[derive(Debug, Clone, Copy)]
pub struct MoveParams {
    pub memory: u64,
    pub link_bps: u64,
    /// 0: no cap.
    pub cap_bps: u64,
    pub downtime_ms: u32,
    pub auto_converge: bool,
}

/// One modelled migration's state, advanced by [`Move::advance`].
#[derive(Debug, Clone)]
pub struct Move {
    pub p: MoveParams,
    pub guest: GuestModel,
    pub status: MigrationStatus,
    /// Passes completed (QEMU's `dirty-sync-count`).
    pub iteration: u64,
    pub transferred: u64,
    /// Bytes the current pass (or post-copy) still has to send.
    pub remaining: u64,
    /// Dirtied since the current pass began (sent by the next one).
    pub dirtied: f64,
    pub throttle_pct: u32,
    pub downtime_ms: u64,
    /// Modelled seconds since the move began.
    pub elapsed: f64,
    sent_in_pass: f64,
}

impl Move {
    pub fn new(p: MoveParams, guest: GuestModel) -> Self {
        Self {
            p,
            guest,
            status: MigrationStatus::MigrationActive,
            iteration: 0,
            transferred: 0,
            remaining: p.memory,
            dirtied: 0.0,
            throttle_pct: 0,
            downtime_ms: 0,
            elapsed: 0.0,
            sent_in_pass: 0.0,
        }
    }

    /// The bandwidth the move runs at, bytes/s.
    pub fn bandwidth(&self) -> f64 {
        let b = self.p.link_bps.max(1);
        (if self.p.cap_bps > 0 {
            b.min(self.p.cap_bps)
        } else {
            b
        }) as f64
    }

    /// The guest's dirty rate under the current throttle, bytes/s.
    pub fn dirty_rate(&self) -> f64 {
        self.guest.dirty_bps as f64 * f64::from(100 - self.throttle_pct.min(99)) / 100.0
    }

    fn limit(&self) -> f64 {
        f64::from(self.p.downtime_ms) / 1000.0 * self.bandwidth()
    }

    pub fn done(&self) -> bool {
        matches!(
            self.status,
            MigrationStatus::MigrationCompleted
                | MigrationStatus::MigrationFailed
                | MigrationStatus::MigrationCancelled
        )
    }

    /// Moves to post-copy: the destination runs the VM from here on.
    pub fn start_postcopy(&mut self) {
        if self.status == MigrationStatus::MigrationActive {
            self.remaining += self.dirtied as u64;
            self.remaining = self.remaining.min(self.p.memory);
            self.dirtied = 0.0;
            self.status = MigrationStatus::MigrationPostcopyActive;
        }
    }

    /// Advances `dt` modelled seconds. Returns true when the status changed.
    pub fn advance(&mut self, mut dt: f64) -> bool {
        let before = self.status;
        while dt > 0.0 && !self.done() && self.status != MigrationStatus::MigrationSwitchingOver {
            let b = self.bandwidth();
            let left = self.remaining as f64 - self.sent_in_pass;
            let need = left / b;
            let step = need.min(dt);
            self.elapsed += step;
            dt -= step;
            self.sent_in_pass += step * b;
            self.transferred = self.transferred.saturating_add((step * b) as u64);
            if self.status == MigrationStatus::MigrationPostcopyActive {
                if step >= need {
                    self.remaining = 0;
                    self.status = MigrationStatus::MigrationCompleted;
                }
                continue;
            }
            self.dirtied = (self.dirtied + step * self.dirty_rate()).min(self.p.memory as f64);
            if step < need {
                continue;
            }
            // The pass is done.
            self.iteration += 1;
            self.sent_in_pass = 0.0;
            if self.guest.fail_at_pass == Some(self.iteration) {
                self.status = MigrationStatus::MigrationFailed;
                break;
            }
            self.remaining = self.dirtied as u64;
            self.dirtied = 0.0;
            if self.remaining as f64 <= self.limit() {
                self.downtime_ms = ((self.remaining as f64 / b) * 1000.0).ceil() as u64;
                self.status = MigrationStatus::MigrationSwitchingOver;
            } else if self.p.auto_converge && self.guest.dirty_bps as f64 > b / 2.0 {
                self.throttle_pct = if self.throttle_pct == 0 {
                    20
                } else {
                    (self.throttle_pct + 10).min(99)
                };
            }
        }
        before != self.status
    }

    /// The switchover's last transfer happened (the destination took the state).
    pub fn complete(&mut self) {
        self.elapsed += self.downtime_ms as f64 / 1000.0;
        self.transferred += self.remaining;
        self.remaining = 0;
        self.status = MigrationStatus::MigrationCompleted;
    }

    /// Runs the whole move without a clock (the switchover included): (passes,
    /// modelled seconds, status). For tests and for the model check.
    pub fn run_to_end(mut self) -> (u64, f64, MigrationStatus) {
        for _ in 0..100_000 {
            self.advance(0.05);
            if self.status == MigrationStatus::MigrationSwitchingOver {
                self.complete();
            }
            if self.done() {
                break;
            }
        }
        (self.iteration, self.elapsed, self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(memory_mib: u64, link_mbps: u64) -> MoveParams {
        MoveParams {
            memory: memory_mib << 20,
            link_bps: link_mbps * 1_000_000 / 8,
            cap_bps: 0,
            downtime_ms: 300,
            auto_converge: false,
        }
    }

    #[test]
    fn an_idle_guest_moves_in_one_pass_at_link_speed() {
        // 1 GiB over 10 Gbit/s: 1073741824 / 1.25e9 = 0.859 s, nothing dirtied.
        let (passes, secs, st) =
            Move::new(params(1024, 10_000), GuestModel::default()).run_to_end();
        assert_eq!(st, MigrationStatus::MigrationCompleted);
        assert_eq!(passes, 1);
        assert!((secs - 0.859).abs() < 0.01, "{secs}");
    }

    #[test]
    fn a_dirtying_guest_takes_passes_that_shrink_by_d_over_b() {
        // 1 GiB, 1 Gbit/s (125 MB/s), 50 MiB/s dirty: D/B = 0.419; pass sizes 1024,
        // 429.5, 180.1, 75.5 MiB, and 31.7 MiB (33.2 MB) dirtied during pass 4 fits
        // the 300 ms target (37.5 MB): the switchover follows pass 4 (~266 ms).
        let g = GuestModel {
            dirty_bps: 50 << 20,
            ..Default::default()
        };
        let (passes, secs, st) = Move::new(params(1024, 1000), g).run_to_end();
        assert_eq!(st, MigrationStatus::MigrationCompleted);
        assert_eq!(passes, 4);
        // 1709 MiB (1792 MB) at 125 MB/s = 14.34 s, + 0.266 s of downtime.
        assert!((secs - 14.6).abs() < 0.1, "{secs}");
    }

    #[test]
    fn dirtying_faster_than_the_link_never_converges_without_help() {
        let g = GuestModel {
            dirty_bps: 200 << 20,
            ..Default::default()
        };
        let mut m = Move::new(params(512, 1000), g);
        m.advance(120.0);
        assert_eq!(m.status, MigrationStatus::MigrationActive);
        assert!(m.iteration > 3);
        // Post-copy finishes it: what is left, once, at link speed.
        m.start_postcopy();
        m.advance(10.0);
        assert_eq!(m.status, MigrationStatus::MigrationCompleted);
    }

    #[test]
    fn auto_converge_throttles_until_it_fits() {
        let g = GuestModel {
            dirty_bps: 200 << 20,
            ..Default::default()
        };
        let mut p = params(512, 1000);
        p.auto_converge = true;
        let mut m = Move::new(p, g);
        m.advance(120.0);
        assert_eq!(m.status, MigrationStatus::MigrationSwitchingOver);
        assert!(m.throttle_pct >= 50, "{}", m.throttle_pct);
    }

    #[test]
    fn failure_injection_and_command_line() {
        let g = GuestModel::from_cmdline(
            "console=ttyS0 sim.dirty_mibps=8 sim.fail_at_pass=2 sim.step=1",
        );
        assert_eq!(
            g,
            GuestModel {
                dirty_bps: 8 << 20,
                fail_at_pass: Some(2),
                step: true,
                cpu_cores: None,
                mem_used_mib: None,
            }
        );
        let (passes, _, st) = Move::new(params(1024, 1000), g).run_to_end();
        assert_eq!((passes, st), (2, MigrationStatus::MigrationFailed));
    }
}
