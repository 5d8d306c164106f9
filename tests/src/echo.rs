//! A client of the test guest's echo service: a numbered line every 10 ms on one
//! TCP connection, each checked to come back whole and in order — what "a VM moves
//! while its users notice nothing" means in the tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Sends a numbered line every 10 ms on one connection and checks each comes back
/// in order; returns (messages, longest gap between answers).
pub struct EchoClient {
    stop: Arc<AtomicBool>,
    /// Answers received so far.
    answered: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<(u64, Duration)>,
}

impl EchoClient {
    pub async fn start(ip: &str) -> Self {
        Self::start_padded(ip, 0).await
    }

    /// As [`Self::start`], from network namespace `ns`: the connection is made
    /// on a thread of its own that enters the namespace (a socket stays in the
    /// namespace it was made in), so the namespace's TCP counters count it.
    /// Lines go every `every` (10 ms elsewhere).
    pub async fn start_in(ns: &str, ip: &str, every: Duration) -> Self {
        let (path, addr) = (format!("/var/run/netns/{ns}"), format!("{ip}:7"));
        let std = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let s = std::net::TcpStream::connect(&addr).expect("connect echo");
            s.set_nonblocking(true).expect("non-blocking");
            s
        })
        .join()
        .expect("connect thread");
        let stream = tokio::net::TcpStream::from_std(std).expect("tokio stream");
        Self::run(stream, 0, every)
    }

    /// Each line carries `pad` more bytes: large writes travel as offloaded
    /// super-frames, which the switchover's frame relay must cut to the MTU.
    pub async fn start_padded(ip: &str, pad: usize) -> Self {
        let stream = tokio::net::TcpStream::connect((ip, 7))
            .await
            .expect("connect echo");
        Self::run(stream, pad, Duration::from_millis(10))
    }

    fn run(stream: tokio::net::TcpStream, pad: usize, every: Duration) -> Self {
        stream.set_nodelay(true).unwrap();
        let (r, mut w) = stream.into_split();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let answered2 = answered.clone();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            let writer = tokio::spawn(async move {
                let mut n = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    w.write_all(format!("{n}{}\n", "x".repeat(pad)).as_bytes())
                        .await
                        .expect("the connection must not drop");
                    n += 1;
                    tokio::time::sleep(every).await;
                }
                w.write_all(b"end\n").await.expect("final write");
                n
            });
            let mut expect = 0u64;
            let mut last = Instant::now();
            let mut gap = Duration::ZERO;
            loop {
                let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                    .await
                    .expect("an answer within 30 s")
                    .expect("the connection must not drop")
                    .expect("the connection must not close");
                gap = gap.max(last.elapsed());
                last = Instant::now();
                if line == "end" {
                    break;
                }
                assert_eq!(
                    line,
                    format!("{expect}{}", "x".repeat(pad)),
                    "messages come back in order, whole, none lost or duplicated"
                );
                expect += 1;
                answered2.store(expect, Ordering::Relaxed);
            }
            let sent = writer.await.unwrap();
            assert_eq!(expect, sent, "every message sent came back");
            (sent, gap)
        });
        Self {
            stop,
            answered,
            task,
        }
    }

    /// Waits (with a deadline) until `n` more answers than now have come back:
    /// the connection is talking.
    pub async fn wait_answers(&self, n: u64) {
        let target = self.answered.load(Ordering::Relaxed) + n;
        crate::wait_for(
            "the echo client's answers",
            Duration::from_secs(60),
            || async { (self.answered.load(Ordering::Relaxed) >= target).then_some(()) },
        )
        .await;
    }

    pub async fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("echo client")
    }
}
