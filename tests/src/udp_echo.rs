//! A client of the test guest's UDP echo: a numbered datagram every `every`, sent
//! from a network namespace of its own, and which numbers came back. UDP resends
//! nothing, so a datagram lost on its way there or back is a number missing — how
//! the frame relay's tests see a frame lost at switchover, where TCP would resend
//! it and mostly hide the loss.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What came back of what was sent.
#[derive(Debug)]
pub struct UdpReport {
    pub sent: u64,
    /// Numbers that never came back (the first 20).
    pub lost: Vec<u64>,
    pub lost_count: u64,
    /// Answers beyond the first for a number (a frame delivered twice).
    pub duplicates: u64,
    /// Numbers the client's own socket refused to send, and why (the first 20):
    /// lost too, but not by the network.
    pub unsent: Vec<(u64, std::io::ErrorKind)>,
}

pub struct UdpEcho {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    unsent: Arc<Mutex<Vec<(u64, std::io::ErrorKind)>>>,
    /// How many times each number came back.
    seen: Arc<Mutex<Vec<u8>>>,
    sender: Option<std::thread::JoinHandle<()>>,
    receiver: Option<std::thread::JoinHandle<()>>,
}

impl UdpEcho {
    /// Starts sending to `ip`:7 from namespace `ns` (the socket is made by a thread
    /// that entered it; a socket stays in the namespace it was made in).
    pub fn start_in(ns: &str, ip: &str, every: Duration) -> Self {
        let (path, addr) = (format!("/var/run/netns/{ns}"), format!("{ip}:7"));
        let socket = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = UdpSocket::bind("0.0.0.0:0").expect("bind udp");
            s.connect(&addr).expect("connect udp");
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("read timeout");
            s
        })
        .join()
        .expect("socket thread");
        let (stop, done) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let sent = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let tx = socket.try_clone().expect("clone udp socket");
        let unsent = Arc::new(Mutex::new(Vec::new()));
        let (stop2, sent2, unsent2) = (stop.clone(), sent.clone(), unsent.clone());
        let sender = std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                // A send refused (no route for an instant, or an ICMP error
                // reported on the socket) is a loss like any other, noted.
                if let Err(e) = tx.send(&n.to_be_bytes()) {
                    let mut u = unsent2.lock().expect("unsent");
                    if u.len() < 20 {
                        u.push((n, e.kind()));
                    }
                }
                n += 1;
                sent2.store(n, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        let (done2, seen2) = (done.clone(), seen.clone());
        let receiver = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !done2.load(Ordering::Relaxed) {
                let Ok(k) = socket.recv(&mut buf) else {
                    continue;
                };
                if k != 8 {
                    continue;
                }
                let n = u64::from_be_bytes(buf[..8].try_into().expect("8 bytes")) as usize;
                let mut seen: std::sync::MutexGuard<Vec<u8>> = seen2.lock().expect("seen");
                if seen.len() <= n {
                    seen.resize(n + 1, 0);
                }
                seen[n] = seen[n].saturating_add(1);
            }
        });
        Self {
            stop,
            done,
            sent,
            unsent,
            seen,
            sender: Some(sender),
            receiver: Some(receiver),
        }
    }

    fn answered(&self) -> u64 {
        let seen = self.seen.lock().expect("seen");
        seen.iter().filter(|c| **c > 0).count() as u64
    }

    /// Waits (with a deadline) until `n` more numbers than now have come back.
    pub async fn wait_answers(&self, n: u64) {
        let target = self.answered() + n;
        crate::wait_for(
            "the UDP echo's answers",
            Duration::from_secs(60),
            || async { (self.answered() >= target).then_some(()) },
        )
        .await;
    }

    /// Stops sending and reports, once every number has come back or `grace` has
    /// passed since the last was sent (what is still missing then is lost).
    pub async fn finish(mut self, grace: Duration) -> UdpReport {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.sender.take() {
            // At most one interval: then no number is sent after `sent` is read.
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let sent = self.sent.load(Ordering::Relaxed);
        // Not all back within the grace is an answer too (the loss), not a failure.
        let _ = tokio::time::timeout(
            grace,
            crate::wait_for("every number back", grace * 2, || async {
                (self.answered() >= sent).then_some(())
            }),
        )
        .await;
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.receiver.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        let seen = self.seen.lock().expect("seen");
        let count = |n: u64| seen.get(n as usize).copied().unwrap_or(0);
        let missing: Vec<u64> = (0..sent).filter(|n| count(*n) == 0).collect();
        UdpReport {
            sent,
            lost: missing.iter().take(20).copied().collect(),
            lost_count: missing.len() as u64,
            duplicates: seen.iter().map(|c| u64::from(c.saturating_sub(1))).sum(),
            unsent: self.unsent.lock().expect("unsent").clone(),
        }
    }
}
