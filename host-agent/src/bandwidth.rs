//! Bandwidth between agents over the migration network: a one-shot TCP sink on the
//! destination and a probe on the source that sends a fixed amount and waits for
//! the sink's count, so the time covers every byte arriving.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Opens a sink on `ip` for one probe; returns its address.
pub async fn sink(ip: &str) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .context("bind bandwidth sink")?;
    let addr = listener.local_addr()?.to_string();
    tokio::spawn(async move {
        let accepted = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await;
        let Ok(Ok((mut conn, _))) = accepted else {
            return;
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            match tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => total += n as u64,
            }
        }
        let _ = conn.write_all(&total.to_be_bytes()).await;
    });
    Ok(addr)
}

/// Sends `bytes` to a sink and returns (bytes the sink counted, elapsed).
pub async fn probe(addr: &str, bytes: u64) -> anyhow::Result<(u64, Duration)> {
    let mut conn =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .context("connect to bandwidth sink timed out")??;
    let chunk = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        conn.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    conn.shutdown().await?;
    let mut count = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(30), conn.read_exact(&mut count))
        .await
        .context("sink did not answer")??;
    Ok((u64::from_be_bytes(count), t0.elapsed()))
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn probe_counts_every_byte() {
        let addr = super::sink("127.0.0.1").await.unwrap();
        let (n, t) = super::probe(&addr, 8 << 20).await.unwrap();
        assert_eq!(n, 8 << 20);
        assert!(t.as_nanos() > 0);
    }
}
