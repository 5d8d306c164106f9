//! `ferry-bench-tunnel`: what the migration tunnel (`ferry-agent
//! migration-tunnel`, `host-agent/src/tunnel.rs`) costs, beside plain TCP.
//!
//! A stream of `--mib` MiB (over `--connections` connections at once, as QEMU's
//! multifd channels) goes from this program through a source tunnel and a
//! destination tunnel — two processes, TLS 1.3 between them over loopback, a
//! Unix socket at each end as QEMU has — back into this program; then the same
//! stream over plain loopback TCP. For each: the throughput, and the CPU time
//! each tunnel process spent per GB (from `/proc/PID/stat`). The CPU figure is the
//! one to compare across builds (`--agent` runs another build): on two cores
//! shared with everything else, throughput moves with what else runs, CPU per GB
//! much less. Medians of `--repeats`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// MiB per run (split over the connections).
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Connections at once, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    connections: Vec<usize>,
    #[arg(long, default_value_t = 7)]
    repeats: usize,
    /// The `ferry-agent` whose tunnel is measured (default: the one beside this
    /// program).
    #[arg(long)]
    agent: Option<PathBuf>,
    #[arg(long, default_value = "bench/results/tunnel.json")]
    out: PathBuf,
}

const NAME: &str = "bench.hosts.ferry";
const BLOCK: usize = 1 << 20;

/// A CA and one host identity it issued, in `dir` as an agent keeps them; both
/// tunnels use it (the same cluster, one name).
fn identity(dir: &Path) -> anyhow::Result<()> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key)?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![NAME.to_string()])?;
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("host.crt"), leaf.pem())?;
    std::fs::write(dir.join("host.key"), key.serialize_pem())?;
    Ok(())
}

/// A tunnel process, killed when dropped.
struct Proc(tokio::process::Child);

impl Proc {
    /// Starts `agent migration-tunnel ARGS` and returns it with its ready line.
    async fn start(agent: &Path, args: &[&str]) -> anyhow::Result<(Self, String)> {
        let mut child = tokio::process::Command::new(agent)
            .arg("migration-tunnel")
            .args(args)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", agent.display()))?;
        let out = child.stdout.take().context("the tunnel's stdout")?;
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::BufReader::new(out).read_line(&mut line),
        )
        .await
        .context("the tunnel was not ready in 10 s")??;
        Ok((Proc(child), line.trim().to_string()))
    }

    /// CPU seconds (user + system) the process has used so far.
    fn cpu_s(&self) -> anyhow::Result<f64> {
        let pid = self.0.id().context("the tunnel has exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .context("/proc/PID/stat")?
            .1
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
        Ok(ticks as f64
            / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64)
    }
}

/// Reads each connection to its end, all at once; the bytes of all.
async fn sink<S>(conns: Vec<S>) -> anyhow::Result<u64>
where
    S: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    let mut readers = Vec::new();
    for mut conn in conns {
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; BLOCK];
            let mut total = 0u64;
            loop {
                match conn.read(&mut buf).await? {
                    0 => return Ok::<_, std::io::Error>(total),
                    k => total += k as u64,
                }
            }
        }));
    }
    let mut total = 0;
    for r in readers {
        total += r.await??;
    }
    Ok(total)
}

/// Writes `bytes` into `conn` and closes it.
async fn source<S: tokio::io::AsyncWrite + Unpin>(mut conn: S, bytes: u64) -> std::io::Result<()> {
    let block: Vec<u8> = (0..BLOCK).map(|i| (i * 31 + i / 4093) as u8).collect();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(BLOCK as u64) as usize;
        conn.write_all(&block[..n]).await?;
        left -= n as u64;
    }
    conn.shutdown().await
}

struct Run {
    mb_per_s: f64,
    out_cpu_s_per_gb: Option<f64>,
    in_cpu_s_per_gb: Option<f64>,
}

/// Sends `bytes` split over the connections `sending`, all at once, and reads
/// them at the far end from as many connections taken with `accept`; the bytes
/// that arrived (checked against those sent) and MB/s.
async fn stream<C, S, F>(
    sending: Vec<C>,
    bytes: u64,
    mut accept: impl FnMut() -> F + Send + 'static,
) -> anyhow::Result<(u64, f64)>
where
    C: tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: tokio::io::AsyncRead + Unpin + Send + 'static,
    F: std::future::Future<Output = std::io::Result<S>> + Send,
{
    let n = sending.len();
    let each = bytes / n as u64;
    let t0 = Instant::now();
    let sources: Vec<_> = sending
        .into_iter()
        .map(|c| tokio::spawn(source(c, each)))
        .collect();
    let received = tokio::spawn(async move {
        let mut accepted = Vec::new();
        for _ in 0..n {
            accepted.push(accept().await?);
        }
        sink(accepted).await
    });
    let got = received.await??;
    let secs = t0.elapsed().as_secs_f64();
    for s in sources {
        s.await??;
    }
    let sent = each * n as u64;
    anyhow::ensure!(got == sent, "{got} bytes arrived of {sent}");
    Ok((got, got as f64 / 1e6 / secs))
}

/// One stream through the two tunnels.
async fn through_tunnel(agent: &Path, dir: &Path, conns: usize, bytes: u64) -> anyhow::Result<Run> {
    let in_sock = dir.join("in.sock");
    let out_sock = dir.join("out.sock");
    for s in [&in_sock, &out_sock] {
        let _ = std::fs::remove_file(s);
    }
    let qemu_in = tokio::net::UnixListener::bind(&in_sock)?;
    let state = dir.to_str().context("path")?;
    let (tin, ready) = Proc::start(
        agent,
        &[
            "in",
            "--listen",
            "127.0.0.1",
            "--unix",
            in_sock.to_str().context("path")?,
            "--state-dir",
            state,
        ],
    )
    .await?;
    let port = ready
        .strip_prefix("port ")
        .context("the destination tunnel printed no port")?
        .to_string();
    let (tout, _) = Proc::start(
        agent,
        &[
            "out",
            "--unix",
            out_sock.to_str().context("path")?,
            "--connect",
            &format!("127.0.0.1:{port}"),
            "--server-name",
            NAME,
            "--state-dir",
            state,
        ],
    )
    .await?;
    let (cpu_out0, cpu_in0) = (tout.cpu_s()?, tin.cpu_s()?);
    let mut sending = Vec::new();
    for _ in 0..conns {
        sending.push(tokio::net::UnixStream::connect(&out_sock).await?);
    }
    let qemu_in = std::sync::Arc::new(qemu_in);
    let (got, mb_per_s) = stream(sending, bytes, move || {
        let l = qemu_in.clone();
        async move { l.accept().await.map(|(c, _)| c) }
    })
    .await?;
    let gb = got as f64 / 1e9;
    Ok(Run {
        mb_per_s,
        out_cpu_s_per_gb: Some((tout.cpu_s()? - cpu_out0) / gb),
        in_cpu_s_per_gb: Some((tin.cpu_s()? - cpu_in0) / gb),
    })
}

/// The same stream over plain loopback TCP.
async fn over_tcp(conns: usize, bytes: u64) -> anyhow::Result<Run> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let mut sending = Vec::new();
    for _ in 0..conns {
        sending.push(tokio::net::TcpStream::connect(addr).await?);
    }
    let listener = std::sync::Arc::new(listener);
    let (_, mb_per_s) = stream(sending, bytes, move || {
        let l = listener.clone();
        async move { l.accept().await.map(|(c, _)| c) }
    })
    .await?;
    Ok(Run {
        mb_per_s,
        out_cpu_s_per_gb: None,
        in_cpu_s_per_gb: None,
    })
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[v.len() / 2])
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent = match args.agent {
        Some(a) => a,
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .join("ferry-agent"),
    };
    let dir = tempfile::tempdir()?;
    identity(dir.path())?;
    let bytes = args.mib << 20;
    println!(
        "== {} MiB through the migration tunnel ({}) and over plain TCP, loopback, medians of {}",
        args.mib,
        agent.display(),
        args.repeats
    );
    println!(
        "{:<8} {:>5} {:>8} {:>14} {:>14}",
        "path", "conns", "MB/s", "src CPU s/GB", "dst CPU s/GB"
    );
    let mut rows = Vec::new();
    for &conns in &args.connections {
        for path in ["tunnel", "tcp"] {
            let mut runs = Vec::new();
            for _ in 0..args.repeats {
                runs.push(match path {
                    "tunnel" => through_tunnel(&agent, dir.path(), conns, bytes).await?,
                    _ => over_tcp(conns, bytes).await?,
                });
            }
            let mbps = median(runs.iter().map(|r| r.mb_per_s).collect());
            let out_cpu = median(runs.iter().filter_map(|r| r.out_cpu_s_per_gb).collect());
            let in_cpu = median(runs.iter().filter_map(|r| r.in_cpu_s_per_gb).collect());
            let show = |v: Option<f64>| v.map_or("—".to_string(), |v| format!("{v:.2}"));
            println!(
                "{path:<8} {conns:>5} {:>8.0} {:>14} {:>14}",
                mbps.unwrap_or(f64::NAN),
                show(out_cpu),
                show(in_cpu)
            );
            rows.push(json!({
                "path": path,
                "connections": conns,
                "mb_per_s": mbps,
                "src_cpu_s_per_gb": out_cpu,
                "dst_cpu_s_per_gb": in_cpu,
                "runs_mb_per_s": runs.iter().map(|r| r.mb_per_s).collect::<Vec<_>>(),
            }));
        }
    }
    if let Some(d) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(
        &args.out,
        serde_json::to_vec_pretty(&json!({
            "mib": args.mib,
            "repeats": args.repeats,
            "agent": agent,
            "rows": rows,
        }))?,
    )?;
    println!("wrote {}", args.out.display());
    Ok(())
}
