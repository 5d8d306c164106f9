//! Delay on a host's migration path, without `netem` (this kernel has none): a
//! small TCP relay inside the host's network namespace, and an nftables rule that
//! sends the host's new TCP connections towards one peer address through it
//! (`dnat` in the output hook). The relay learns each connection's real
//! destination from conntrack (`SO_ORIGINAL_DST`), connects there with a socket
//! mark the rule skips, and forwards each direction's bytes `delay` after it
//! read them (latency, not a bandwidth limit). Connections open before the rule
//! keep their direct path. Dropping the [`DelayRelay`] removes the rule and
//! stops the relay.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt};

/// The mark on the relay's own connections, which the rule lets pass.
const MARK: u32 = 0x4652_4459; // "FRDY"

/// A running relay and its rule; dropping it removes both.
pub struct DelayRelay {
    ns: String,
    table: String,
    stop: Arc<AtomicBool>,
    listen: SocketAddr,
    relayed: Arc<AtomicU64>,
}

/// Runs nftables `script` (`nft -f -`) inside namespace `ns`; its output.
pub fn nft(ns: &str, script: &str) -> Result<String, String> {
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| format!("nft stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into())
    } else {
        Err(format!(
            "nft: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Enters network namespace `ns` on the calling thread only.
fn enter(ns: &str) -> Result<(), String> {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).map_err(|e| format!("{ns}: {e}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns {ns}: {e}"))
}

impl DelayRelay {
    /// Delays, by `delay` each way, the TCP connections host namespace `ns` (whose
    /// own fabric address is `own_ip`) opens to `peer_ip` from now on.
    pub fn start(ns: &str, own_ip: &str, peer_ip: &str, delay: Duration) -> Result<Self, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let relayed = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let (ns_thread, own, stop_thread) = (ns.to_string(), own_ip.to_string(), stop.clone());
        let count = relayed.clone();
        std::thread::spawn(move || {
            let bound = enter(&ns_thread).and_then(|()| {
                TcpListener::bind((own.as_str(), 0)).map_err(|e| format!("bind relay: {e}"))
            });
            let listener = match bound {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let _ = listener.set_nonblocking(true);
            let _ = tx.send(listener.local_addr().map_err(|e| e.to_string()));
            // Threads spawned from here inherit this thread's namespace.
            while !stop_thread.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        let stop = stop_thread.clone();
                        std::thread::spawn(move || relay(client, delay, stop));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let listen = rx
            .recv()
            .map_err(|_| "the relay thread ended".to_string())??;
        let table = format!("ferry_delay_{}", listen.port());
        let rule = format!(
            "table ip {table} {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  \
             oifname \"eth0\" ip daddr {peer_ip} meta l4proto tcp meta mark != {MARK:#x} dnat to {listen}\n }}\n}}\n"
        );
        let relay = Self {
            ns: ns.to_string(),
            table,
            stop,
            listen,
            relayed,
        };
        nft(ns, &rule)?;
        Ok(relay)
    }

    pub fn address(&self) -> SocketAddr {
        self.listen
    }

    /// Connections the relay has carried so far.
    pub fn connections(&self) -> u64 {
        self.relayed.load(Ordering::Relaxed)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        let _ = nft(&self.ns, &format!("delete table ip {}\n", self.table));
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The destination `client` was headed for before the rule turned it here.
fn original_destination(client: &TcpStream) -> Option<SocketAddrV4> {
    let a = socket::getsockopt(client, sockopt::OriginalDst).ok()?;
    Some(SocketAddrV4::new(
        u32::from_be(a.sin_addr.s_addr).into(),
        u16::from_be(a.sin_port),
    ))
}

/// Connects to `to` with the mark the rule lets pass.
fn connect_marked(to: SocketAddrV4) -> std::io::Result<TcpStream> {
    let fd = socket::socket(
        socket::AddressFamily::Inet,
        socket::SockType::Stream,
        socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::Mark, &MARK)?;
    socket::connect(fd.as_raw_fd(), &socket::SockaddrIn::from(to))?;
    Ok(TcpStream::from(fd))
}

fn relay(client: TcpStream, delay: Duration, stop: Arc<AtomicBool>) {
    let Some(to) = original_destination(&client) else {
        return;
    };
    let Ok(server) = connect_marked(to) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let stop2 = stop.clone();
    let up = std::thread::spawn(move || pump(client, server, delay, stop));
    pump(s2, c2, delay, stop2);
    let _ = up.join();
}

/// Copies `from` → `to`, each chunk written `delay` after it was read.
fn pump(mut from: TcpStream, to: TcpStream, delay: Duration, stop: Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let mut writer_to = match to.try_clone() {
        Ok(t) => t,
        Err(_) => return,
    };
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if writer_to.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = writer_to.shutdown(Shutdown::Write);
    });
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            let _ = to.shutdown(Shutdown::Both);
            break;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if tx
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.join();
}
