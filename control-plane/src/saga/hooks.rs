//! The executor's test hooks: the generic saga tests drive failures through these,
//! in process, instead of production flags. A control plane started by
//! `ferry-control-plane` has none set; only `server::run_in_process` (used by the
//! tests) takes them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::NodeError;

/// What to break, each once.
#[derive(Debug, Default)]
pub struct Hooks {
    /// Fail this node once, right after its action ran (its effects happened).
    pub fail_after: Mutex<Option<String>>,
    /// Run every action twice, as a recovery after a crash would.
    pub replay: AtomicBool,
    /// Stop the saga right after this node's outcome is recorded, as if the
    /// control plane had died there; `saga::recover_all` picks it up.
    pub crash_after: Mutex<Option<String>>,
    /// Fail the saga's n-th database write (counting from 0), once.
    pub fail_write: Mutex<Option<usize>>,
    /// Writes the last saga run made, in order (what the write loop iterates over).
    pub writes_seen: Mutex<Vec<String>>,
}

impl Hooks {
    fn take_if(slot: &Mutex<Option<String>>, node: &str) -> bool {
        let mut s = slot.lock().unwrap_or_else(|p| p.into_inner());
        if s.as_deref() == Some(node) {
            *s = None;
            true
        } else {
            false
        }
    }

    pub(crate) fn fail_after_now(&self, node: &str) -> bool {
        Self::take_if(&self.fail_after, node)
    }

    pub(crate) fn crash_after_now(&self, node: &str) -> bool {
        Self::take_if(&self.crash_after, node)
    }

    pub fn set_fail_after(&self, node: Option<&str>) {
        *self.fail_after.lock().unwrap_or_else(|p| p.into_inner()) = node.map(str::to_string);
    }

    pub fn set_crash_after(&self, node: Option<&str>) {
        *self.crash_after.lock().unwrap_or_else(|p| p.into_inner()) = node.map(str::to_string);
    }

    pub fn set_fail_write(&self, n: Option<usize>) {
        *self.fail_write.lock().unwrap_or_else(|p| p.into_inner()) = n;
        self.writes_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    pub fn writes_seen(&self) -> Vec<String> {
        self.writes_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Counts one saga run's database writes and fails the one the hooks name.
#[derive(Debug)]
pub struct WriteCounter<'a> {
    hooks: &'a Hooks,
    n: AtomicUsize,
    fired: AtomicBool,
}

impl<'a> WriteCounter<'a> {
    pub fn new(hooks: &'a Hooks) -> Self {
        Self {
            hooks,
            n: AtomicUsize::new(0),
            fired: AtomicBool::new(false),
        }
    }

    /// Called before every write; `Err` when this is the write to fail.
    pub fn check(&self, what: &str) -> Result<(), NodeError> {
        let i = self.n.fetch_add(1, Ordering::SeqCst);
        self.hooks
            .writes_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what.to_string());
        let target = *self
            .hooks
            .fail_write
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if target == Some(i) && !self.fired.swap(true, Ordering::SeqCst) {
            tracing::warn!(write = i, what, "injected database error");
            return Err(NodeError::Failed(format!(
                "database ({what}): injected error at write {i}"
            )));
        }
        Ok(())
    }
}
