//! How a migration is configured from its policy, and how `auto` escalates
//! while it runs, from the progress QEMU measures:
//!
//! 1. pre-copy at full link speed, aiming at a tight downtime ([`TIGHT_DOWNTIME_MS`])
//!    so the final pause is short whenever the guest allows it;
//! 2. a pass that still leaves more than that target can send in one pause doubles
//!    the target, up to the policy's `max_downtime_ms`;
//! 3. throttling: with `allow_throttle`, QEMU's auto-converge is armed from the
//!    start and engages by itself when a pass dirties more than half of what it
//!    sent (dirty-limit needs KVM's dirty ring, absent under TCG and in QEMU 7.2; auto-converge is
//!    the throttle available everywhere); each change is recorded;
//! 4. post-copy: when pre-copy has not converged after 1.5 × the time the VM's
//!    memory takes to cross the link — or its first full pass took, if longer —
//!    (a pass left about as much as the one before), or in any case after 3 ×, or the guest dirties faster than the link
//!    and cannot be throttled, or progress stalls, the VM switches to the
//!    destination and pulls the pages it still lacks. Past that moment the
//!    destination holds the VM: it is the saga's point of no return.
//!
//! `precopy` stops at step 3 (a stall aborts, the VM stays on its source);
//! `postcopy` switches after the first full pass. Parallel channels (multifd)
//! cannot be combined with post-copy (QEMU 7.2 to 10.0 refuse: "Postcopy is not
//! yet compatible with multifd"). With `parallel_channels: 0` Ferry decides
//! ([`choose_channels`]): several channels where one cannot fill the measured link
//! and throttling may stand in for post-copy, else one; `auto` with several gives
//! up step 4, and says so.

use std::time::Duration;

use ferry_api::vm::{MigrationMode, MigrationPolicy};

/// The downtime a move aims at before anything forces it higher. QEMU's switchover
/// adds device state and the drain of what is still in flight on top: with 10 ms
/// an idle 512 MiB TCG guest on a 1 Gbit/s link paused 29–68 ms (with 30 ms,
/// 36–51 ms, and a guest dirtying a third of the link 112–150 ms against 49–53).
pub const TIGHT_DOWNTIME_MS: u32 = 10;

/// The link speed from which one migration channel no longer fills the link and
/// `auto` spreads the move over multifd channels: 2.5 Gbit/s. One channel fills
/// 1 GbE anywhere; here one TLS channel of a TCG guest's QEMU moved 150–270 MB/s
/// on a 1.8–2.1 GB/s path, and two moved an idle 512 MiB guest in 2.0–2.4 s and a
/// guest dirtying 190 MiB/s in 2.9–3.2 s against 5.7–6.8 s with one.
pub const MULTIFD_MIN_LINK_BPS: u64 = 312_500_000;

/// How many migration channels a move uses, and why: what the policy asks, or —
/// with `parallel_channels: 0` — Ferry's choice from the measured link (`link_bps`)
/// and the fewer cores of the two hosts. Multifd excludes post-copy, so `auto` uses
/// it only where throttling may stand in for post-copy as the way to converge.
pub fn choose_channels(
    policy: &MigrationPolicy,
    link_bps: Option<u64>,
    cores: u32,
) -> (u8, String) {
    if policy.parallel_channels > 0 {
        let n = policy.parallel_channels;
        return (n, format!("{n} migration channel(s), as the policy asks"));
    }
    let one = |why: String| (1, format!("one migration channel: {why}"));
    if policy.mode == MigrationMode::Postcopy {
        return one("post-copy cannot be combined with multifd".into());
    }
    if policy.mode == MigrationMode::Auto && !policy.allow_throttle {
        return one("without throttling, post-copy is what makes `auto` converge, and it cannot be combined with multifd".into());
    }
    let Some(link) = link_bps else {
        return one("the link between the hosts is not measured yet".into());
    };
    let cap = u64::from(policy.max_bandwidth_mbps) * 1_000_000 / 8;
    let usable = if cap > 0 { link.min(cap) } else { link };
    if usable < MULTIFD_MIN_LINK_BPS {
        return one(format!("one fills {} MB/s", usable / 1_000_000));
    }
    let n = cores.clamp(1, 4) as u8;
    if n < 2 {
        return one("a host has a single core".into());
    }
    (
        n,
        format!(
            "{n} multifd channels: the link carries {} MB/s, more than one channel moves; auto-converge, not post-copy, is then the way to converge",
            usable / 1_000_000
        ),
    )
}

/// How QEMU is set up for the move.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub postcopy: bool,
    pub auto_converge: bool,
    pub channels: u32,
    pub downtime_ms: u32,
    pub max_downtime_ms: u32,
    pub mode: MigrationMode,
}

impl Plan {
    pub fn new(policy: &MigrationPolicy) -> Self {
        let channels = u32::from(policy.parallel_channels.max(1));
        let postcopy = match policy.mode {
            MigrationMode::Precopy => false,
            MigrationMode::Postcopy => true,
            MigrationMode::Auto => channels == 1,
        };
        Plan {
            postcopy,
            auto_converge: policy.allow_throttle && policy.mode != MigrationMode::Postcopy,
            channels: if postcopy { 1 } else { channels },
            downtime_ms: policy.max_downtime_ms.clamp(1, TIGHT_DOWNTIME_MS),
            max_downtime_ms: policy.max_downtime_ms.max(1),
            mode: policy.mode,
        }
    }

    /// The strategy's name, as results and events show it.
    pub fn strategy(&self, postcopy_started: bool, throttled: bool) -> String {
        let mut s = String::from("precopy");
        if self.channels > 1 {
            s.push_str(&format!("+multifd({})", self.channels));
        }
        if throttled {
            s.push_str("+auto-converge");
        }
        if postcopy_started {
            s.push_str("+postcopy");
        }
        s
    }
}

/// What QEMU measured at one look.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub iteration: u64,
    pub remaining_bytes: u64,
    pub total_bytes: u64,
    pub dirty_bps: u64,
    pub bandwidth_bps: u64,
    pub throttle_pct: u32,
    pub elapsed: Duration,
    /// No progress for the stall window.
    pub stalled: bool,
}

impl Sample {
    /// What the link carries during the downtime target `ms`.
    fn fits(&self, ms: u32) -> f64 {
        self.bandwidth_bps as f64 * f64::from(ms) / 1000.0
    }
}

/// One decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Downtime(u32, String),
    Postcopy(String),
    Note(String),
}

/// Follows one move and decides its escalations.
#[derive(Debug)]
pub struct Escalator {
    pub plan: Plan,
    pub postcopy_started: bool,
    pub throttled: bool,
    last_iteration: u64,
    last_throttle: u32,
    best_bandwidth: u64,
    /// When the first full pass ended (the elapsed time at the first look in a
    /// later pass).
    first_pass: Option<Duration>,
    /// What was left at the start of the previous and of the current pass.
    left: (Option<u64>, Option<u64>),
}

impl Escalator {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            postcopy_started: false,
            throttled: false,
            last_iteration: 0,
            last_throttle: 0,
            best_bandwidth: 0,
            first_pass: None,
            left: (None, None),
        }
    }

    /// The decisions `s` calls for (each taken once).
    pub fn observe(&mut self, s: &Sample) -> Vec<Action> {
        let mut out = Vec::new();
        if self.postcopy_started {
            return out;
        }
        self.best_bandwidth = self.best_bandwidth.max(s.bandwidth_bps);
        if s.throttle_pct != self.last_throttle {
            if s.throttle_pct > 0 {
                self.throttled = true;
                out.push(Action::Note(format!(
                    "the guest dirties memory faster than pre-copy gains on it: QEMU throttles its vCPUs to {}% (auto-converge)",
                    s.throttle_pct
                )));
            }
            self.last_throttle = s.throttle_pct;
        }
        let new_pass = s.iteration > self.last_iteration;
        self.last_iteration = s.iteration;
        if s.iteration >= 2 && self.first_pass.is_none() {
            self.first_pass = Some(s.elapsed);
        }
        if new_pass && s.iteration >= 2 {
            self.left = (self.left.1, Some(s.remaining_bytes));
        }
        // Converging: the last pass left clearly less than the one before.
        let converging = match self.left {
            (Some(before), Some(now)) => (now as f64) < 0.8 * before as f64,
            _ => true,
        };
        let mib = |b: u64| b >> 20;
        // Post-copy by policy: after the first full pass.
        if self.plan.mode == MigrationMode::Postcopy && s.iteration >= 2 {
            return self.postcopy(
                out,
                "the policy asks for post-copy after the first pass".into(),
            );
        }
        // The time a full pass takes: the memory over the best bandwidth QEMU
        // has reported — or what the first pass took, where that was longer. A
        // momentary peak (QEMU's rate over a window of zero pages) made the
        // first alone 7 × short on two cores shared with three other moves, and
        // `auto` switched a guest that was converging to post-copy at "3 ×".
        let t_link =
            Duration::from_secs_f64(s.total_bytes as f64 / self.best_bandwidth.max(1) as f64)
                .max(self.first_pass.unwrap_or_default());
        if self.plan.postcopy {
            if s.stalled {
                return self.postcopy(out, "pre-copy stalled".into());
            }
            let overrun = if s.elapsed > t_link.mul_f64(3.0) {
                Some(3.0)
            } else if s.elapsed > t_link.mul_f64(1.5) && !converging {
                Some(1.5)
            } else {
                None
            };
            if let (true, Some(k)) = (s.iteration >= 2, overrun) {
                return self.postcopy(
                    out,
                    format!(
                        "pre-copy has not converged in {:.1} s, over {k}× the {:.1} s a full pass of the memory takes ({} MiB still dirty)",
                        s.elapsed.as_secs_f64(),
                        t_link.as_secs_f64(),
                        mib(s.remaining_bytes)
                    ),
                );
            }
            if s.iteration >= 2
                && !self.plan.auto_converge
                && s.dirty_bps >= s.bandwidth_bps
                && s.bandwidth_bps > 0
            {
                return self.postcopy(
                    out,
                    format!(
                        "the guest dirties {} MiB/s, more than the link's {} MiB/s, and may not be throttled",
                        mib(s.dirty_bps),
                        mib(s.bandwidth_bps)
                    ),
                );
            }
        }
        // A pass that still leaves more than the target can send in one pause:
        // double the target, up to the policy's ceiling.
        if new_pass
            && s.iteration >= 3
            && self.plan.downtime_ms < self.plan.max_downtime_ms
            && s.remaining_bytes as f64 > s.fits(self.plan.downtime_ms)
        {
            let next = (self.plan.downtime_ms * 2).min(self.plan.max_downtime_ms);
            out.push(Action::Downtime(
                next,
                format!(
                    "pass {} still leaves {} MiB: downtime target raised from {} to {} ms",
                    s.iteration,
                    mib(s.remaining_bytes),
                    self.plan.downtime_ms,
                    next
                ),
            ));
            self.plan.downtime_ms = next;
        }
        out
    }

    fn postcopy(&mut self, mut out: Vec<Action>, why: String) -> Vec<Action> {
        self.postcopy_started = true;
        out.push(Action::Postcopy(why));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: MigrationMode, throttle: bool, channels: u8) -> MigrationPolicy {
        MigrationPolicy {
            mode,
            allow_throttle: throttle,
            parallel_channels: channels,
            ..MigrationPolicy::default()
        }
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn channels() {
        let auto = MigrationPolicy::default();
        let fast = Some(2_000_000_000);
        assert_eq!(choose_channels(&auto, fast, 2).0, 2);
        assert_eq!(choose_channels(&auto, fast, 16).0, 4);
        assert_eq!(choose_channels(&auto, fast, 1).0, 1);
        assert_eq!(choose_channels(&auto, Some(120_000_000), 8).0, 1, "1 GbE");
        assert_eq!(choose_channels(&auto, None, 8).0, 1, "not measured");
        let capped = MigrationPolicy {
            max_bandwidth_mbps: 1000,
            ..MigrationPolicy::default()
        };
        assert_eq!(choose_channels(&capped, fast, 8).0, 1);
        let no_throttle = MigrationPolicy {
            allow_throttle: false,
            ..MigrationPolicy::default()
        };
        assert_eq!(choose_channels(&no_throttle, fast, 8).0, 1);
        assert_eq!(
            choose_channels(&policy(MigrationMode::Postcopy, true, 0), fast, 8).0,
            1
        );
        assert_eq!(
            choose_channels(&policy(MigrationMode::Precopy, false, 0), fast, 8).0,
            4
        );
        let (n, why) = choose_channels(&policy(MigrationMode::Auto, true, 3), None, 1);
        assert_eq!(n, 3, "{why}");
    }

    #[test]
    fn plans() {
        let auto = Plan::new(&MigrationPolicy::default());
        assert!(auto.postcopy && auto.auto_converge);
        assert_eq!(
            (auto.channels, auto.downtime_ms, auto.max_downtime_ms),
            (1, TIGHT_DOWNTIME_MS, 300)
        );
        let multi = Plan::new(&policy(MigrationMode::Auto, true, 4));
        assert!(
            !multi.postcopy,
            "multifd and post-copy do not mix in QEMU 7.2"
        );
        assert_eq!(multi.channels, 4);
        let pre = Plan::new(&policy(MigrationMode::Precopy, false, 0));
        assert!(!pre.postcopy && !pre.auto_converge);
        let post = Plan::new(&policy(MigrationMode::Postcopy, true, 4));
        assert!(post.postcopy && post.channels == 1 && !post.auto_converge);
        let tight = Plan::new(&MigrationPolicy {
            max_downtime_ms: 5,
            ..MigrationPolicy::default()
        });
        assert_eq!(tight.downtime_ms, 5);
    }

    fn sample(iteration: u64, remaining: u64, elapsed_ms: u64) -> Sample {
        Sample {
            iteration,
            remaining_bytes: remaining,
            total_bytes: 512 * MIB,
            dirty_bps: 0,
            bandwidth_bps: 512 * MIB, // the memory takes 1 s on the link
            throttle_pct: 0,
            elapsed: Duration::from_millis(elapsed_ms),
            stalled: false,
        }
    }

    #[test]
    fn an_idle_guest_is_left_alone() {
        let mut e = Escalator::new(Plan::new(&MigrationPolicy::default()));
        assert!(e.observe(&sample(1, 200 * MIB, 500)).is_empty());
        assert!(e.observe(&sample(2, MIB, 1000)).is_empty());
    }

    #[test]
    fn the_downtime_target_doubles_up_to_the_ceiling() {
        let mut e = Escalator::new(Plan::new(&MigrationPolicy::default()));
        e.observe(&sample(2, 100 * MIB, 900));
        let a = e.observe(&sample(3, 100 * MIB, 1000));
        assert!(
            matches!(a[..], [Action::Downtime(d, _)] if d == 2 * TIGHT_DOWNTIME_MS),
            "{a:?}"
        );
        e.observe(&sample(3, 100 * MIB, 1050)); // same pass: nothing new
        assert_eq!(e.plan.downtime_ms, 2 * TIGHT_DOWNTIME_MS);
        for (i, it) in (4..12).enumerate() {
            e.observe(&sample(it, 200 * MIB, 1100 + i as u64));
        }
        assert_eq!(e.plan.downtime_ms, 300, "capped at the policy's max");
    }

    #[test]
    fn auto_switches_to_postcopy_when_precopy_overruns() {
        let mut e = Escalator::new(Plan::new(&MigrationPolicy::default()));
        assert!(e.observe(&sample(2, 300 * MIB, 1200)).is_empty());
        // Still converging (each pass leaves much less): left alone at 1.5×...
        let mut c = Escalator::new(Plan::new(&MigrationPolicy::default()));
        c.observe(&sample(2, 300 * MIB, 1200));
        let a = c.observe(&sample(3, 100 * MIB, 1600));
        assert!(!a.iter().any(|x| matches!(x, Action::Postcopy(_))), "{a:?}");
        // ...but not forever: at 3× (of the first pass's 1.2 s, longer than
        // the 1 s the bandwidth says) it switches anyway.
        let a = c.observe(&sample(4, 60 * MIB, 3500));
        assert!(!a.iter().any(|x| matches!(x, Action::Postcopy(_))), "{a:?}");
        let a = c.observe(&sample(4, 60 * MIB, 3700));
        assert!(a.iter().any(|x| matches!(x, Action::Postcopy(_))), "{a:?}");
        // Not converging: switches at 1.5×.
        let a = e.observe(&sample(3, 300 * MIB, 1900));
        assert!(a.iter().any(|x| matches!(x, Action::Postcopy(_))), "{a:?}");
        assert!(e.observe(&sample(4, 300 * MIB, 3000)).is_empty(), "once");
        assert_eq!(
            e.plan.strategy(e.postcopy_started, e.throttled),
            "precopy+postcopy"
        );
    }

    #[test]
    fn a_first_pass_slower_than_the_bandwidth_peak_gives_precopy_its_time() {
        let mut e = Escalator::new(Plan::new(&MigrationPolicy::default()));
        // A peak of 512 MiB/s (the memory in 1 s), then the pass crawls: the
        // first pass ends at 5 s.
        assert!(e.observe(&sample(1, 400 * MIB, 200)).is_empty());
        let slow = |it, left, ms| Sample {
            bandwidth_bps: 50 * MIB,
            ..sample(it, left, ms)
        };
        assert!(e.observe(&slow(2, 100 * MIB, 5000)).is_empty());
        // Converging, past 3 × the peak's second, short of 3 × the first pass.
        let a = e.observe(&slow(3, 40 * MIB, 9000));
        assert!(!a.iter().any(|x| matches!(x, Action::Postcopy(_))), "{a:?}");
        let a = e.observe(&slow(4, 20 * MIB, 15_100));
        assert!(
            matches!(&a[..], [Action::Postcopy(why)] if why.contains("5.0 s a full pass")),
            "{a:?}"
        );
    }

    #[test]
    fn auto_without_throttle_switches_when_dirtying_beats_the_link() {
        let mut e = Escalator::new(Plan::new(&policy(MigrationMode::Auto, false, 0)));
        let mut s = sample(2, 300 * MIB, 1100);
        s.dirty_bps = 600 * MIB;
        let a = e.observe(&s);
        assert!(matches!(a[..], [Action::Postcopy(_)]), "{a:?}");
    }

    #[test]
    fn a_stall_escalates_in_auto_and_is_left_to_the_saga_in_precopy() {
        let mut s = sample(1, 300 * MIB, 100);
        s.stalled = true;
        let mut auto = Escalator::new(Plan::new(&MigrationPolicy::default()));
        assert!(matches!(auto.observe(&s)[..], [Action::Postcopy(_)]));
        let mut pre = Escalator::new(Plan::new(&policy(MigrationMode::Precopy, true, 0)));
        assert!(pre.observe(&s).is_empty());
    }

    #[test]
    fn throttling_is_recorded_and_named() {
        let mut e = Escalator::new(Plan::new(&policy(MigrationMode::Precopy, true, 0)));
        let mut s = sample(3, 10 * MIB, 500);
        s.throttle_pct = 20;
        assert!(matches!(e.observe(&s)[0], Action::Note(_)));
        assert!(e.observe(&s).is_empty(), "unchanged: nothing new");
        assert_eq!(e.plan.strategy(false, e.throttled), "precopy+auto-converge");
    }

    #[test]
    fn postcopy_mode_switches_after_the_first_pass() {
        let mut e = Escalator::new(Plan::new(&policy(MigrationMode::Postcopy, true, 0)));
        assert!(e.observe(&sample(1, 300 * MIB, 100)).is_empty());
        assert!(matches!(
            e.observe(&sample(2, 300 * MIB, 900))[..],
            [Action::Postcopy(_)]
        ));
    }
}
