//! The guest's network services: TCP and UDP echo and a tiny HTTP status server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::disk::Disk;
use crate::memory::State;

fn bind(port: u16) -> TcpListener {
    loop {
        match TcpListener::bind(("0.0.0.0", port)) {
            Ok(l) => return l,
            Err(e) => {
                eprintln!("ferry-guest: bind :{port}: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

pub fn serve_echo(port: u16) {
    for conn in bind(port).incoming().flatten() {
        std::thread::spawn(move || echo(conn));
    }
}

/// Sends every datagram back to where it came from: a datagram lost on its way
/// shows as an answer missing (TCP would resend it and hide the loss).
pub fn serve_udp_echo(port: u16) {
    loop {
        match UdpSocket::bind(("0.0.0.0", port)) {
            Ok(s) => {
                let mut buf = [0u8; 2048];
                loop {
                    if let Ok((n, from)) = s.recv_from(&mut buf) {
                        let _ = s.send_to(&buf[..n], from);
                    }
                }
            }
            Err(e) => {
                eprintln!("ferry-guest: bind udp :{port}: {e}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        }
    }
}

fn echo(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if conn.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

pub fn serve_http(port: u16, state: &State, disk: Option<&Disk>, started: Instant) {
    for conn in bind(port).incoming().flatten() {
        let _ = handle(conn, state, disk, started);
    }
}

fn query(q: &str, key: &str) -> Option<u64> {
    q.split('&').find_map(|kv| {
        kv.strip_prefix(key)
            .and_then(|v| v.strip_prefix('='))
            .and_then(|v| v.parse().ok())
    })
}

fn handle(
    conn: TcpStream,
    state: &State,
    disk: Option<&Disk>,
    started: Instant,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    // Drain the headers.
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        ("GET", "/status") => ("200 OK", status_json(state, disk, started)),
        ("POST", "/disk/verify") => match disk {
            Some(d) => {
                d.verify();
                ("200 OK", status_json(state, Some(d), started))
            }
            None => (
                "404 Not Found",
                "{\"error\":\"no disk workload\"}".to_string(),
            ),
        },
        ("POST", "/disk") => match disk {
            Some(d) => {
                if let Some(m) = query(q, "mbps") {
                    d.target_mbps.store(m.min(1000), Ordering::Relaxed);
                }
                ("200 OK", status_json(state, Some(d), started))
            }
            None => (
                "404 Not Found",
                "{\"error\":\"no disk workload\"}".to_string(),
            ),
        },
        ("POST", "/dirty") => {
            if let Some(m) = query(q, "mbps") {
                state.target_mbps.store(m.min(100_000), Ordering::Relaxed);
            }
            if let Some(w) = query(q, "wss_mib") {
                state.wss_mib.store(w.clamp(1, 1 << 20), Ordering::Relaxed);
            }
            if let Some(v) = query(q, "verify_pages") {
                state.verify_pages.store(v.min(1 << 20), Ordering::Relaxed);
            }
            ("200 OK", status_json(state, disk, started))
        }
        _ => ("404 Not Found", "{\"error\":\"not found\"}".to_string()),
    };
    let mut conn = conn;
    write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn status_json(state: &State, disk: Option<&Disk>, started: Instant) -> String {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let disk = match disk {
        Some(d) => format!(
            ",\"disk\":{{\"writes\":{},\"write_errors\":{},\"blocks_verified\":{},\"mismatches\":{}}}",
            d.writes.load(Ordering::Relaxed),
            d.write_errors.load(Ordering::Relaxed),
            d.verified.load(Ordering::Relaxed),
            d.mismatches.load(Ordering::Relaxed)
        ),
        None => String::new(),
    };
    format!(
        "{{\"boot_id\":\"{}\",\"uptime_s\":{:.3},\"dirty_mbps_target\":{},\"dirty_mbps\":{:.2},\"wss_mib\":{},\"pages_written\":{},\"pages_verified\":{},\"integrity_errors\":{}{disk}}}",
        boot_id.trim(),
        started.elapsed().as_secs_f64(),
        state.target_mbps.load(Ordering::Relaxed),
        state.actual_kibps.load(Ordering::Relaxed) as f64 / 1024.0,
        state.wss_mib.load(Ordering::Relaxed),
        state.pages_written.load(Ordering::Relaxed),
        state.pages_verified.load(Ordering::Relaxed),
        state.errors.load(Ordering::Relaxed),
    )
}
