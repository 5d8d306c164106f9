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
    task: tokio::task::JoinHandle<(u64, Duration)>,
}

impl EchoClient {
    pub async fn start(ip: &str) -> Self {
        Self::start_padded(ip, 0).await
    }

    /// Each line carries `pad` more bytes: large writes travel as offloaded
    /// super-frames, which the switchover's frame relay must cut to the MTU.
    pub async fn start_padded(ip: &str, pad: usize) -> Self {
        let stream = tokio::net::TcpStream::connect((ip, 7))
            .await
            .expect("connect echo");
        stream.set_nodelay(true).unwrap();
        let (r, mut w) = stream.into_split();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            let writer = tokio::spawn(async move {
                let mut n = 0u64;
                while !stop2.load(Ordering::Relaxed) {
                    w.write_all(format!("{n}{}\n", "x".repeat(pad)).as_bytes())
                        .await
                        .expect("the connection must not drop");
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
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
            }
            let sent = writer.await.unwrap();
            assert_eq!(expect, sent, "every message sent came back");
            (sent, gap)
        });
        Self { stop, task }
    }

    pub async fn finish(self) -> (u64, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("echo client")
    }
}
