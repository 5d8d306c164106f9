//! Monotonic generations for what the agent owns. A generation is the wall clock in
//! microseconds, forced strictly upward within the process, so a restarted agent
//! (later clock) always outranks what its previous incarnation reported.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Generation(AtomicU64);

impl Generation {
    pub fn next(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let mut cur = self.0.load(Ordering::Relaxed);
        loop {
            let next = now.max(cur + 1);
            match self
                .0
                .compare_exchange_weak(cur, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => cur = actual,
            }
        }
    }

    pub fn current(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn strictly_increasing() {
        let g = super::Generation::default();
        let mut last = 0;
        for _ in 0..10_000 {
            let n = g.next();
            assert!(n > last);
            last = n;
        }
        assert_eq!(g.current(), last);
    }
}
