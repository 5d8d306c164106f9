//! The migration stream's TLS, carried by a helper process instead of by QEMU.
//!
//! QEMU's own TLS channel (gnutls) hands each guest page to `gnutls_record_send`
//! by itself: one 4 KiB record and one `sendmsg` per page on the source, and two
//! `recv`s per record on the destination, where plain TCP moves a multifd packet
//! of 128 pages in one `writev`. On these two-core lab hosts that made a 512 MiB
//! guest's move 1.6–1.7 × slower over TLS than over TCP with raw QEMU alone, and
//! 3–4 × slower for Ferry (whose moves were always TLS). So QEMU migrates in the
//! clear over a Unix socket in the VM's directory (only this host's root can
//! reach it), and a `ferry-agent migration-tunnel` process carries each of its
//! connections in TLS 1.3 (rustls), moving 256 KiB per read into 16 KiB records.
//!
//! It is a process of its own, not a task of the agent, for the reason QEMU is
//! one: an agent restarted (or upgraded) mid-move must not cut the stream. It
//! ends when its QEMU exits, or when every connection it carried has closed.
//!
//! On the wire it is what QEMU's TLS channel is (TLS, the hosts' CA-issued
//! identities both ways, the migration stream inside), so either end may be
//! QEMU's own (`--migration-tls qemu`).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Bytes moved per read, each way.
const CHUNK: usize = 256 * 1024;
/// What one read of a TLS connection's socket may take. rustls reads its socket
/// 4 KiB at a time (its deframer's read size): one `recv` per 4 KiB of the
/// stream. Reading ahead into a buffer of this size serves the 16 KiB records
/// from memory (one more copy, far cheaper than the calls): with AES-128 (see
/// [`provider`]) the destination's CPU per GB went from 0.80–0.93 s to
/// 0.68–0.88 (`ferry-bench-tunnel`, medians of 7, two builds in turn).
const READ_AHEAD: usize = 256 * 1024;
/// How long a peer has to complete its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long a destination's QEMU may take to start and listen while the tunnel
/// holds the source's stream for it (see [`reach_qemu`]).
const QEMU_START: Duration = Duration::from_secs(30);
/// The most of one connection's stream held for a QEMU not yet listening;
/// beyond it the tunnel stops reading and TCP makes the source wait.
const HOLD_MAX: usize = 256 << 20;

/// `ferry-agent migration-tunnel`: started by the agent, not by hand.
#[derive(Debug, Parser)]
#[command(name = "ferry-agent migration-tunnel")]
pub struct Args {
    #[command(subcommand)]
    side: Side,
    /// The agent's state directory: `host.crt`, `host.key`, `ca.pem`.
    #[arg(long, global = true, default_value = ".")]
    state_dir: PathBuf,
    /// The QEMU this tunnel serves: it ends when that process does.
    #[arg(long, global = true, default_value_t = 0)]
    qemu_pid: u32,
    /// Or the pid file of a QEMU about to start (a destination that takes the
    /// stream before its QEMU listens): the tunnel ends if no pid appears in it
    /// within 30 s, and when that process ends.
    #[arg(long, global = true, conflicts_with = "qemu_pid")]
    qemu_pidfile: Option<PathBuf>,
    /// Where to write, when it ends, what it carried (a [`Record`], JSON).
    #[arg(long, global = true)]
    record: Option<PathBuf>,
}

/// What a tunnel carried, written when it ends (`--record`): how many
/// connections, the bytes each way, and the TLS each was carried in.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub connections: u64,
    /// From QEMU's side into TLS (the source's stream, on the source).
    pub bytes_from_qemu: u64,
    /// Out of TLS into QEMU's side (the stream, on the destination).
    pub bytes_to_qemu: u64,
    /// e.g. `TLSv1_3`, and the cipher suite: of the last connection.
    pub protocol: String,
    pub cipher_suite: String,
}

#[derive(Debug, clap::Subcommand)]
enum Side {
    /// Source: accepts QEMU's connections on `--unix` and carries each to
    /// `--connect` in TLS, verifying the destination is `--server-name`.
    Out {
        #[arg(long)]
        unix: PathBuf,
        #[arg(long)]
        connect: SocketAddr,
        #[arg(long)]
        server_name: String,
    },
    /// Destination: accepts TLS connections from hosts of the cluster on
    /// `--listen` (any port; printed) and carries each to QEMU's `--unix`.
    In {
        #[arg(long)]
        listen: std::net::IpAddr,
        #[arg(long)]
        unix: PathBuf,
    },
}

/// Entry point of the `migration-tunnel` subcommand (`args` without it).
pub fn main(args: Vec<OsString>) -> std::process::ExitCode {
    let args = Args::parse_from(std::iter::once(OsString::from("migration-tunnel")).chain(args));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = rt
        .context("start the runtime")
        .and_then(|rt| rt.block_on(run(args, |line| println!("{line}"))));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("migration tunnel: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Counts the connections carried and open; wakes the main loop when one ends.
#[derive(Default)]
struct Carried {
    open: AtomicUsize,
    total: AtomicUsize,
    ended: tokio::sync::Notify,
    record: std::sync::Mutex<Record>,
    /// Taken in turn (tokio's lock is first come, first served) by incoming
    /// connections to reach QEMU: in the order their handshakes ended, even when
    /// they wait together for a QEMU that is still starting.
    order: tokio::sync::Mutex<()>,
}

impl Carried {
    fn begin(self: &Arc<Self>) -> Guard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        Guard(self.clone())
    }
    /// One connection carried: `from_qemu` and `to_qemu` bytes, in `tls`.
    fn note(&self, from_qemu: u64, to_qemu: u64, tls: &rustls::CommonState) {
        let mut r = self.record.lock().unwrap_or_else(|p| p.into_inner());
        r.connections += 1;
        r.bytes_from_qemu += from_qemu;
        r.bytes_to_qemu += to_qemu;
        if let Some(v) = tls.protocol_version() {
            r.protocol = format!("{v:?}");
        }
        if let Some(c) = tls.negotiated_cipher_suite() {
            r.cipher_suite = format!("{:?}", c.suite());
        }
    }

    fn done(&self) -> bool {
        self.total.load(Ordering::SeqCst) > 0 && self.open.load(Ordering::SeqCst) == 0
    }
}

struct Guard(Arc<Carried>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        self.0.ended.notify_one();
    }
}

/// Carries connections until done (see the module's doc); `ready` is told, once
/// listening, what the agent waits to read: `ready`, or `port N`.
async fn run(args: Args, ready: impl FnOnce(String)) -> anyhow::Result<()> {
    let qemu_gone = qemu_exit(args.qemu_pid, args.qemu_pidfile.clone());
    let carried = Arc::new(Carried::default());
    let accepting = async {
        match args.side {
            Side::Out {
                unix,
                connect,
                server_name,
            } => {
                let config = Arc::new(client_config(&args.state_dir)?);
                let name = ServerName::try_from(server_name.clone())
                    .with_context(|| format!("{server_name:?} is no server name"))?;
                let _ = std::fs::remove_file(&unix);
                let listener = UnixListener::bind(&unix)
                    .with_context(|| format!("bind {}", unix.display()))?;
                ready("ready".into());
                loop {
                    let (qemu, _) = listener.accept().await?;
                    let guard = carried.begin();
                    let (config, name, carried) = (config.clone(), name.clone(), carried.clone());
                    tokio::spawn(async move {
                        if let Err(e) = carry_out(qemu, connect, name, config, &carried).await {
                            tracing::warn!("migration tunnel to {connect}: {e:#}");
                        }
                        drop(guard);
                    });
                }
            }
            Side::In { listen, unix } => {
                let config = Arc::new(server_config(&args.state_dir)?);
                let listener = TcpListener::bind((listen, 0))
                    .await
                    .with_context(|| format!("listen on {listen}"))?;
                ready(format!("port {}", listener.local_addr()?.port()));
                loop {
                    let (tcp, peer) = listener.accept().await?;
                    let (config, unix, carried) = (config.clone(), unix.clone(), carried.clone());
                    tokio::spawn(async move {
                        if let Err(e) = carry_in(tcp, &unix, config, &carried).await {
                            tracing::warn!("migration tunnel from {peer}: {e:#}");
                        }
                    });
                }
            }
        }
    };
    let all_ended = async {
        loop {
            carried.ended.notified().await;
            if carried.done() {
                return;
            }
        }
    };
    let result = tokio::select! {
        r = accepting => r,
        () = all_ended => Ok(()),
        () = qemu_gone => Ok(()),
    };
    // Not when the VM's directory has gone with it (its move was undone).
    if let Some(path) = args
        .record
        .as_ref()
        .filter(|p| p.parent().is_some_and(Path::exists))
    {
        let r = carried.record.lock().unwrap_or_else(|p| p.into_inner());
        let json = serde_json::to_vec(&*r)?;
        std::fs::write(path, json).with_context(|| format!("write {}", path.display()))?;
    }
    result
}

/// One of the source QEMU's connections, carried to the destination in TLS.
async fn carry_out(
    mut qemu: UnixStream,
    to: SocketAddr,
    name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
    carried: &Carried,
) -> anyhow::Result<()> {
    let tcp = TcpStream::connect(to)
        .await
        .with_context(|| format!("connect to {to}"))?;
    tcp.set_nodelay(true)?;
    let tcp = tokio::io::BufReader::with_capacity(READ_AHEAD, tcp);
    let tls = tokio::time::timeout(
        HANDSHAKE,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context("TLS handshake")?;
    let mut tls = Tls::new(tls);
    let copied = tokio::io::copy_bidirectional_with_sizes(&mut qemu, &mut tls, CHUNK, CHUNK).await;
    carried.note(tls.written, tls.read, tls.inner.get_ref().1);
    ended(copied, tls.written + tls.read)
}

/// One connection from a source host, carried to the waiting QEMU once it has
/// shown a certificate of the cluster's CA.
async fn carry_in(
    tcp: TcpStream,
    unix: &Path,
    config: Arc<rustls::ServerConfig>,
    carried: &Arc<Carried>,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let tcp = tokio::io::BufReader::with_capacity(READ_AHEAD, tcp);
    let tls = tokio::time::timeout(
        HANDSHAKE,
        tokio_rustls::TlsAcceptor::from(config).accept(tcp),
    )
    .await
    .context("TLS handshake timed out")?
    .context("TLS handshake")?;
    let mut tls = Tls::new(tls);
    let _guard = carried.begin();
    let (mut qemu, held) = reach_qemu(unix, &mut tls, &carried.order).await?;
    if !held.is_empty() {
        tracing::debug!(
            bytes = held.len(),
            "the stream was held until QEMU listened"
        );
        qemu.write_all(&held)
            .await
            .context("hand QEMU the stream held for it")?;
    }
    let copied = tokio::io::copy_bidirectional_with_sizes(&mut tls, &mut qemu, CHUNK, CHUNK).await;
    carried.note(tls.written, tls.read, tls.inner.get_ref().1);
    ended(copied, tls.written + tls.read)
}

/// Connects to QEMU's socket `unix`, in turn with the tunnel's other
/// connections (`order`: QEMU may tell its channels apart only by the order
/// they come in). Until QEMU listens there (it may still be starting:
/// `MigrateIn`'s `hold_stream`) and while the connection waits its turn, what
/// the source sends is read and held, up to [`HOLD_MAX`], for [`QEMU_START`] at
/// most; it is returned with the connection, to be written into it first. A
/// source that ended its stream meanwhile (a small guest, all sent) has it
/// handed over whole all the same: its end reaches QEMU after the held bytes,
/// as the next read of `source`.
async fn reach_qemu<S: AsyncRead + Unpin>(
    unix: &Path,
    source: &mut S,
    order: &tokio::sync::Mutex<()>,
) -> anyhow::Result<(UnixStream, Vec<u8>)> {
    let deadline = tokio::time::Instant::now() + QEMU_START;
    let mut held = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut source_ended = false;
    let turn = order.lock();
    tokio::pin!(turn);
    let mut my_turn = None;
    loop {
        if my_turn.is_some() {
            match UnixStream::connect(unix).await {
                Ok(qemu) => return Ok((qemu, held)),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(e).with_context(|| {
                        format!(
                            "QEMU did not listen on {} within {} s",
                            unix.display(),
                            QEMU_START.as_secs()
                        )
                    })
                }
                Err(_) => {}
            }
        } else if tokio::time::Instant::now() >= deadline {
            anyhow::bail!(
                "another connection to QEMU was still waiting after {} s",
                QEMU_START.as_secs()
            );
        }
        let reading = !source_ended && held.len() < HOLD_MAX;
        tokio::select! {
            guard = &mut turn, if my_turn.is_none() => my_turn = Some(guard),
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
            n = source.read(&mut buf), if reading => match n.context("read the source's stream")? {
                0 => source_ended = true,
                n => held.extend_from_slice(&buf[..n]),
            },
        }
    }
}

/// How a carried connection ended: QEMU closes (or resets) its migration
/// connections when it is done with them, so an error after bytes have
/// crossed is the stream's normal end, logged at debug; one before is not.
fn ended(copied: std::io::Result<(u64, u64)>, bytes: u64) -> anyhow::Result<()> {
    match copied {
        Err(e) if bytes > 0 => {
            tracing::debug!("a migration connection ended after {bytes} bytes: {e}");
            Ok(())
        }
        r => r.map(|_| ()).map_err(Into::into),
    }
}

/// The TLS side of a carried connection: counts the bytes each way (QEMU ends
/// its streams by closing or resetting the connection, so the count cannot
/// come from a copy that ended "in error"), and takes a peer's close without
/// `close_notify`, as QEMU's own TLS channel closes, for the end of the stream.
/// Safe here because a migration stream delimits itself — one cut short does
/// not load (QEMU fails the incoming migration) — so a truncation cannot pass
/// for a whole stream, which is what `close_notify` guards against.
struct Tls<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Tls<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tls<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = out.filled().len();
        match ready!(Pin::new(&mut me.inner).poll_read(cx, out)) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            r => {
                me.read += (out.filled().len() - before) as u64;
                Poll::Ready(r)
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tls<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        let r = ready!(Pin::new(&mut me.inner).poll_write(cx, data));
        if let Ok(n) = &r {
            me.written += *n as u64;
        }
        Poll::Ready(r)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Resolves when the QEMU the tunnel serves has exited: process `pid`, or the
/// one whose pid appears in `pidfile` (at once if none does within
/// [`QEMU_START`]); never when neither names one.
async fn qemu_exit(pid: u32, pidfile: Option<PathBuf>) {
    let Some(file) = pidfile else {
        return process_exit(pid).await;
    };
    let deadline = tokio::time::Instant::now() + QEMU_START;
    loop {
        let pid = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|p| *p > 0);
        if let Some(pid) = pid {
            return process_exit(pid).await;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                "no QEMU pid in {} within {} s",
                file.display(),
                QEMU_START.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves when process `pid` has exited (never for pid 0, which names none).
/// Polled: the tunnel outlives its QEMU by a fifth of a second at most.
async fn process_exit(pid: u32) {
    if pid == 0 {
        return std::future::pending().await;
    }
    let alive = || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    };
    while alive() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// ring's TLS 1.3 suites, AES-128-GCM first: a source tunnel offers it first
/// and a destination takes the client's order, so two tunnels agree on it.
/// rustls puts AES-256 first; AES-128 has 10 rounds to its 14, the same
/// standing in TLS 1.3 (the suite every implementation must have), and the
/// migration stream is the tunnel's CPU (see [`READ_AHEAD`]). A QEMU doing its own
/// TLS at either end still negotiates in its own order.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

fn identity(dir: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert = std::fs::read(dir.join("host.crt")).context("read host.crt")?;
    let key = std::fs::read(dir.join("host.key")).context("read host.key")?;
    let chain = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<Vec<_>, _>>()
        .context("host.crt")?;
    let key = PrivateKeyDer::from_pem_slice(&key).context("host.key")?;
    Ok((chain, key))
}

fn roots(dir: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let ca = std::fs::read(dir.join("ca.pem")).context("read ca.pem")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&ca) {
        roots.add(c.context("ca.pem")?)?;
    }
    Ok(roots)
}

/// The source's side: trusts the cluster CA, shows this host's certificate.
pub fn client_config(dir: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let (chain, key) = identity(dir)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(dir)?)
        .with_client_auth_cert(chain, key)?)
}

/// The destination's side: shows this host's certificate, and takes only peers
/// with a certificate of the cluster CA (as QEMU's `verify-peer` does).
///
/// It sends nothing once the handshake is done: no TLS 1.3 session tickets
/// (rustls sends two by default). A source QEMU doing its own TLS never reads a
/// multifd channel, and Linux resets a socket closed with unread bytes, dropping
/// what it had not yet sent: the stream arrived cut short and the destination
/// waited for the rest for ever (`make test`, once; the regression test below
/// lost 4 MiB of 32).
pub fn server_config(dir: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let (chain, key) = identity(dir)?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(dir)?),
        provider(),
    )
    .build()?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(config)
}

/// The agent's handle on a tunnel process it started: the process ends by
/// itself (see the module's doc); the handle reaps it.
#[derive(Debug)]
pub struct Tunnel {
    pub pid: u32,
    /// What it printed when ready: `ready`, or `port N`.
    pub ready: String,
}

/// Starts `ferry-agent migration-tunnel ARGS` (this very binary) and waits until
/// it is ready. Through `/proc/self/exe`, which still opens the running program
/// when an upgrade has replaced the file on disk (a path would then name the new
/// binary, or nothing).
pub async fn spawn(args: &[String]) -> anyhow::Result<Tunnel> {
    let mut child = tokio::process::Command::new("/proc/self/exe")
        .arg("migration-tunnel")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Not in the agent's process group: a ^C to the agent leaves it, as QEMU.
        .process_group(0)
        .spawn()
        .context("start the migration tunnel")?;
    let pid = child.id().unwrap_or(0);
    let stdout = child.stdout.take().context("the tunnel's stdout")?;
    let mut line = String::new();
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await;
    // Reaped whenever it ends.
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    match read {
        Ok(Ok(n)) if n > 0 => Ok(Tunnel {
            pid,
            ready: line.trim().to_string(),
        }),
        Ok(_) => anyhow::bail!("the migration tunnel ended before it was ready (its log says why)"),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            anyhow::bail!("the migration tunnel was not ready within 10 s")
        }
    }
}

#[cfg(test)]
mod tests;
