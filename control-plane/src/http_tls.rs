//! The REST listener (API and dashboard): plain TCP or TLS, and the certificate
//! it serves. `--http-tls auto` serves HTTPS unless the listener is on loopback;
//! the certificate is issued by the cluster CA for the configured names, or read
//! from `--http-cert`/`--http-key` (re-read when the files change, so a renewed
//! certificate is served without a restart). A plain-HTTP request reaching the
//! TLS port is answered with a `400 https_required` problem rather than a
//! handshake failure the client cannot explain.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::ca::CertificateAuthority;
use crate::config::{Config, HttpTls};

/// Whether the REST listener of `config` speaks TLS; an error for flags that
/// contradict each other or certificate files that cannot be served. Checked
/// before anything starts, so a mistake costs nothing.
pub fn check(config: &Config) -> anyhow::Result<bool> {
    let tls = match config.http_tls {
        HttpTls::Off => {
            anyhow::ensure!(
                config.http_cert.is_none(),
                "--http-cert was given with --http-tls off: say which one is meant"
            );
            false
        }
        HttpTls::On => true,
        HttpTls::Auto => config.http_cert.is_some() || !config.http_listen.ip().is_loopback(),
    };
    if let (Some(cert), Some(key)) = (&config.http_cert, &config.http_key) {
        read_pair(cert, key)?;
    }
    Ok(tls)
}

/// The peer of a REST connection, for handlers and the audit trail
/// (`ConnectInfo<Peer>`), whichever way the connection came.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The REST listener: TCP, with or without TLS.
pub struct RestListener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

/// Handshakes under way at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;
/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl RestListener {
    /// Binds `config.http_listen`, serving TLS with `ca`'s certificate or the
    /// configured files when [`check`] says so.
    pub async fn bind(config: &Config, ca: &CertificateAuthority) -> anyhow::Result<Self> {
        let tls = if check(config)? {
            Some(TlsAcceptor::from(Arc::new(server_config(config, ca)?)))
        } else {
            if !config.http_listen.ip().is_loopback() {
                tracing::warn!(
                    listen = %config.http_listen,
                    "the REST API serves plain HTTP beyond loopback (--http-tls off): tokens cross the network in clear"
                );
            }
            None
        };
        let tcp = TcpListener::bind(config.http_listen)
            .await
            .with_context(|| format!("bind HTTP listener {}", config.http_listen))?;
        Ok(Self {
            tcp,
            tls,
            handshakes: JoinSet::new(),
        })
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

fn server_config(
    config: &Config,
    ca: &CertificateAuthority,
) -> anyhow::Result<rustls::ServerConfig> {
    let resolver = match (&config.http_cert, &config.http_key) {
        (Some(cert), Some(key)) => Resolver::from_files(cert.clone(), key.clone())?,
        _ => {
            let mut sans = vec!["::1".to_string()];
            if !config.http_listen.ip().is_unspecified() {
                sans.push(config.http_listen.ip().to_string());
            }
            sans.extend(config.http_sans.iter().cloned());
            let issued = ca.issue_control_plane(&sans)?;
            Resolver::fixed(load(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())?)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server)
}

/// A certificate chain and its key, checked to belong together.
fn load(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("read the certificate chain (PEM)")?;
    anyhow::ensure!(!chain.is_empty(), "no certificate in the PEM file");
    let key = PrivateKeyDer::from_pem_slice(key_pem).context("read the private key (PEM)")?;
    let provider = rustls::crypto::ring::default_provider();
    let signer = provider
        .key_provider
        .load_private_key(key)
        .context("the private key is of no supported kind")?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .context("the private key does not belong to the certificate")?;
    Ok(Arc::new(certified))
}

/// Serves one certificate; with files, the latest valid pair they hold.
#[derive(Debug)]
struct Resolver {
    files: Option<(PathBuf, PathBuf)>,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    key: Arc<CertifiedKey>,
    stamp: Option<(SystemTime, SystemTime)>,
    checked: Instant,
}

/// How often a handshake looks at the files' modification times.
const RECHECK: Duration = Duration::from_secs(1);

impl Resolver {
    fn fixed(key: Arc<CertifiedKey>) -> Self {
        Self {
            files: None,
            current: Mutex::new(Current {
                key,
                stamp: None,
                checked: Instant::now(),
            }),
        }
    }

    fn from_files(cert: PathBuf, key: PathBuf) -> anyhow::Result<Self> {
        let stamp = stamps(&cert, &key)?;
        let certified = read_pair(&cert, &key)?;
        Ok(Self {
            files: Some((cert, key)),
            current: Mutex::new(Current {
                key: certified,
                stamp: Some(stamp),
                checked: Instant::now(),
            }),
        })
    }
}

fn stamps(cert: &Path, key: &Path) -> anyhow::Result<(SystemTime, SystemTime)> {
    let m = |p: &Path| {
        std::fs::metadata(p)
            .and_then(|m| m.modified())
            .with_context(|| format!("read {}", p.display()))
    };
    Ok((m(cert)?, m(key)?))
}

fn read_pair(cert: &Path, key: &Path) -> anyhow::Result<Arc<CertifiedKey>> {
    let c = std::fs::read(cert).with_context(|| format!("read {}", cert.display()))?;
    let k = std::fs::read(key).with_context(|| format!("read {}", key.display()))?;
    load(&c, &k).with_context(|| format!("{} and {}", cert.display(), key.display()))
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a panic elsewhere mid-update; the value is whole.
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cert, key)) = &self.files {
            if cur.checked.elapsed() >= RECHECK {
                cur.checked = Instant::now();
                match stamps(cert, key) {
                    Ok(stamp) if Some(stamp) != cur.stamp => match read_pair(cert, key) {
                        Ok(k) => {
                            tracing::info!(cert = %cert.display(), "serving the REST certificate from its changed files");
                            cur.key = k;
                            cur.stamp = Some(stamp);
                        }
                        // Mid-rotation (a new certificate, the old key): keep serving
                        // the last good pair and look again next time.
                        Err(e) => tracing::warn!("keeping the REST certificate in use: {e:#}"),
                    },
                    Ok(_) => {}
                    Err(e) => tracing::warn!("keeping the REST certificate in use: {e:#}"),
                }
            }
        }
        Some(cur.key.clone())
    }
}

/// A REST connection.
pub enum RestIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for RestIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RestIo::Plain(s) => std::pin::Pin::new(s).poll_read(cx, buf),
            RestIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RestIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match self.get_mut() {
            RestIo::Plain(s) => std::pin::Pin::new(s).poll_write(cx, buf),
            RestIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RestIo::Plain(s) => std::pin::Pin::new(s).poll_flush(cx),
            RestIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match self.get_mut() {
            RestIo::Plain(s) => std::pin::Pin::new(s).poll_shutdown(cx),
            RestIo::Tls(s) => std::pin::Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl axum::serve::Listener for RestListener {
    type Io = RestIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (RestIo, SocketAddr) {
        loop {
            let room = self.handshakes.len() < MAX_HANDSHAKES;
            tokio::select! {
                accepted = self.tcp.accept(), if room => match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        let Some(tls) = &self.tls else {
                            return (RestIo::Plain(tcp), peer);
                        };
                        let tls = tls.clone();
                        self.handshakes.spawn(async move {
                            tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tls, tcp, peer))
                                .await
                                .ok()
                                .flatten()
                                .map(|s| (s, peer))
                        });
                    }
                    // Out of descriptors and the like: axum's own listener waits
                    // a second too, rather than spinning.
                    Err(e) => {
                        tracing::warn!("accepting a REST connection: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some((stream, peer))) = done {
                        return (RestIo::Tls(Box::new(stream)), peer);
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

impl Connected<IncomingStream<'_, RestListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, RestListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// The first byte of every TLS connection: a handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

async fn handshake(
    tls: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1) if first[0] != TLS_HANDSHAKE_RECORD => {
            answer_plain_http(tcp).await;
            return None;
        }
        Ok(1) => {}
        _ => return None,
    }
    match tls.accept(tcp).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(%peer, "TLS handshake failed: {e}");
            None
        }
    }
}

/// Tells a client that spoke plain HTTP to the TLS port what to do instead.
async fn answer_plain_http(mut tcp: TcpStream) {
    use tokio::io::AsyncReadExt;
    // Read what the request sent so far: closing a socket with unread data
    // resets the connection, and the client would lose the answer.
    let mut sink = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(200), tcp.read(&mut sink)).await;
    let problem = crate::error::ApiError::bad_request(
        "https_required",
        "this port serves HTTPS only: use an https:// address (the cluster CA that \
         issued the certificate is ca.pem in the control plane's data directory)",
    )
    .problem();
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    // Best effort: a client that went away has nobody to tell.
    let _ = tcp.write_all(head.as_bytes()).await;
    let _ = tcp.write_all(&body).await;
    let _ = tcp.shutdown().await;
}
