//! The frame relay that makes a switchover lose no packet.
//!
//! From the moment the source QEMU pauses for the switchover until the fabric has
//! learned the VM's new port, frames addressed to the VM still reach the source
//! host's tap, where nobody reads them: QEMU stops reading taps while the VM is
//! stopped and the tap is destroyed with it. A peer's TCP then waits out its
//! 200 ms minimum retransmission timeout — the client-visible gap that dwarfs
//! QEMU's own downtime.
//!
//! So the source agent captures what the bridge sends into the VM's taps
//! (AF_PACKET, through `pnet_datalink`) from the start of the migration, keeps a
//! few milliseconds of it, and once the VM pauses forwards those frames and every
//! later one to the destination agent, which writes them into the new taps. The
//! destination's QEMU reads its taps only once the VM runs, so the frames wait in
//! the tap's queue and reach the guest, in order, the instant it resumes.
//!
//! The link between the agents is a plain TCP connection on the migration
//! network, opened by the source to the address the destination returned from
//! `MigrateIn` and authenticated by the one-time token that came with it: the
//! frames are guest traffic that crossed the same segment in the clear anyway.
//! The source's copy (and its taps) is removed only once frames for the guest
//! have stopped arriving ([`Relay::settle`]).
//! Frames the guest itself sent are never forwarded. A few frames from just before
//! the pause may be delivered twice (the margin covers the instant between QEMU
//! stopping and the agent hearing of it); TCP discards such duplicates.
//!
//! Captured GSO super-frames are cut to the tap's MTU before they are written.
//!
//! Wire format, after the token line: `[nic: u8][len: u16 BE][frame]`.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use pnet_datalink::{Channel, Config, DataLinkReceiver, DataLinkSender};

/// Frames this agent's relays forwarded (held at a switchover), since it started.
pub static FRAMES_HELD: AtomicU64 = AtomicU64::new(0);
/// Frames this agent's sinks wrote into a VM's taps, since it started.
pub static FRAMES_DELIVERED: AtomicU64 = AtomicU64::new(0);

/// How far before QEMU's stop (by its event's timestamp) captured frames are
/// still forwarded.
const MARGIN: Duration = Duration::from_millis(1);
/// How much capture is kept while the VM runs: more than the delay before the
/// agent hears of the stop.
const HISTORY: Duration = Duration::from_millis(500);
/// How long a sink waits for its source to connect.
const ACCEPT_WINDOW: Duration = Duration::from_secs(600);

fn open(tap: &str) -> anyhow::Result<(Box<dyn DataLinkSender>, Box<dyn DataLinkReceiver>)> {
    let iface = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == tap)
        .with_context(|| format!("no interface {tap}"))?;
    let config = Config {
        read_timeout: Some(Duration::from_millis(20)),
        promiscuous: false,
        // Whole GSO super-frames (up to 64 KiB), not pnet's default 4 KiB.
        read_buffer_size: 65536 + 64,
        write_buffer_size: 65536 + 64,
        ..Config::default()
    };
    match pnet_datalink::channel(&iface, config).with_context(|| format!("AF_PACKET on {tap}"))? {
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => bail!("{tap}: not an Ethernet channel"),
    }
}

fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Destination side: where the source sends the frames it held.
pub struct Sink {
    pub address: String,
    pub token: String,
    stop: Arc<AtomicBool>,
}

impl Sink {
    /// Listens on `ip` and, once the source connects with the token, writes each
    /// frame into `taps[nic]`.
    pub fn start(ip: &str, taps: Vec<String>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).context("frame sink")?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?.to_string();
        let token = format!("{:032x}", rand::random::<u128>());
        let stop = Arc::new(AtomicBool::new(false));
        let (want, halt) = (token.clone(), stop.clone());
        std::thread::Builder::new()
            .name("frame-sink".into())
            .spawn(move || {
                if let Err(e) = sink_loop(listener, &want, &taps, &halt) {
                    tracing::warn!("frame sink: {e:#}");
                }
            })?;
        Ok(Self {
            address,
            token,
            stop,
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sink_loop(
    listener: TcpListener,
    token: &str,
    taps: &[String],
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + ACCEPT_WINDOW;
    let mut conn = loop {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            return Ok(());
        }
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => return Err(e.into()),
        }
    };
    drop(listener);
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut line = [0u8; 33];
    read_full(&mut conn, &mut line, stop)?;
    if &line[..32] != token.as_bytes() || line[32] != b'\n' {
        bail!("a connection without the token was refused");
    }
    let mut senders: Vec<Option<Box<dyn DataLinkSender>>> = taps
        .iter()
        .map(|t| match open(t) {
            Ok((tx, _rx)) => Some(tx),
            Err(e) => {
                tracing::warn!("frame sink: {e:#}");
                None
            }
        })
        .collect();
    let mtus: Vec<usize> = taps
        .iter()
        .map(|t| {
            std::fs::read_to_string(format!("/sys/class/net/{t}/mtu"))
                .ok()
                .and_then(|m| m.trim().parse().ok())
                .unwrap_or(1500)
        })
        .collect();
    let (mut n, mut buf) = (0u64, vec![0u8; 65536]);
    loop {
        let mut head = [0u8; 3];
        if !read_full(&mut conn, &mut head, stop)? {
            break;
        }
        let len = u16::from_be_bytes([head[1], head[2]]) as usize;
        if !read_full(&mut conn, &mut buf[..len], stop)? {
            break;
        }
        if let Some(Some(tx)) = senders.get_mut(head[0] as usize) {
            let mtu = mtus.get(head[0] as usize).copied().unwrap_or(1500);
            for mut frame in segment(&buf[..len], mtu) {
                fix_checksums(&mut frame);
                if let Some(Err(e)) = tx.send_to(&frame, None) {
                    tracing::warn!(len = frame.len(), "frame into tap: {e}");
                } else {
                    n += 1;
                    FRAMES_DELIVERED.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    tracing::info!(
        frames = n,
        "frame relay closed; frames delivered into the taps"
    );
    Ok(())
}

/// Fills `buf`; false on a clean end of stream (or a stop) before any byte.
fn read_full(conn: &mut TcpStream, buf: &mut [u8], stop: &AtomicBool) -> anyhow::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match conn.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => bail!("the relay closed mid-frame"),
            Ok(k) => got += k,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if stop.load(Ordering::Relaxed) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

/// Source side: captures what reaches the VM's taps and, once the VM pauses,
/// forwards it to the destination's sink.
pub struct Relay {
    paused_at: Mutex<Option<SystemTime>>,
    stop: AtomicBool,
    /// Frames forwarded to the destination so far.
    forwarded: AtomicU64,
    /// The origin of the stamps below (µs since it).
    born: Instant,
    /// Per tap: when its capture last finished a look (a frame read and handled,
    /// or a read that found none).
    looked: Vec<AtomicU64>,
    /// When a frame addressed to the guest was last captured.
    last_for_guest: AtomicU64,
}

impl Relay {
    /// Starts capturing on `taps` (with the guest's own MAC on each, whose frames
    /// are not forwarded) for the sink at `address`.
    pub fn start(
        address: &str,
        token: &str,
        taps: Vec<(String, String)>,
    ) -> anyhow::Result<Arc<Self>> {
        let relay = Arc::new(Self {
            paused_at: Mutex::new(None),
            stop: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
            born: Instant::now(),
            looked: taps.iter().map(|_| AtomicU64::new(0)).collect(),
            last_for_guest: AtomicU64::new(0),
        });
        let conn = Arc::new(Mutex::new(None::<TcpStream>));
        // Connected now, so the pause costs no handshake (or, failing that, at the
        // first frame to forward).
        if let Err(e) = forward(&conn, address, token, 0, &[]) {
            tracing::warn!("frame relay: {e:#}");
        }
        let target = (address.to_string(), token.to_string());
        for (nic, (tap, mac)) in taps.into_iter().enumerate() {
            let (_tx, rx) = open(&tap)?;
            let guest = parse_mac(&mac);
            let (me, conn, target) = (relay.clone(), conn.clone(), target.clone());
            std::thread::Builder::new()
                .name(format!("relay-{tap}"))
                .spawn(move || me.capture(nic as u8, rx, guest, &conn, &target))?;
        }
        Ok(relay)
    }

    /// The VM paused at `at` (QEMU's timestamp): forward what arrived since.
    pub fn paused(&self, at: SystemTime) {
        let mut p = self.paused_at.lock().unwrap_or_else(|e| e.into_inner());
        p.get_or_insert(at);
    }

    /// The VM runs again here (the migration was cancelled): stop forwarding.
    pub fn resumed(&self) {
        *self.paused_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn now_us(&self) -> u64 {
        self.born.elapsed().as_micros() as u64
    }

    /// After the switchover, before the source's QEMU (and its taps) go: waits
    /// until frames for the guest have stopped reaching the taps — none for
    /// `quiet`, and every tap's capture has looked since this call began, so none
    /// waits unread — or `max` has passed (false). Frames keep arriving here until
    /// the fabric has learned the VM's new port; one that arrives after the
    /// capture stopped is lost, and the peer that sent it waits for its
    /// retransmission (seen once the control plane learned of a completion at
    /// once rather than at its next poll, and removed the source's copy a few ms
    /// sooner: a frame still queued for the capture was dropped with it). At
    /// once when the VM never paused for a switchover.
    pub async fn settle(&self, quiet: Duration, max: Duration) -> bool {
        if self
            .paused_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
        {
            return true;
        }
        let began = self.now_us();
        let deadline = Instant::now() + max;
        let quiet = quiet.as_micros() as u64;
        loop {
            let now = self.now_us();
            let calm = now.saturating_sub(self.last_for_guest.load(Ordering::Relaxed)) >= quiet;
            let caught_up = self
                .looked
                .iter()
                .all(|l| l.load(Ordering::Relaxed) > began);
            if calm && caught_up {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Frames forwarded to the destination so far (those that arrived while the VM
    /// was paused, and after).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    fn capture(
        &self,
        nic: u8,
        mut rx: Box<dyn DataLinkReceiver>,
        guest: Option<[u8; 6]>,
        conn: &Mutex<Option<TcpStream>>,
        (address, token): &(String, String),
    ) {
        let mut recent: VecDeque<(SystemTime, Vec<u8>)> = VecDeque::new();
        let mut forwarded = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let frame = match rx.next() {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => &[][..],
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => &[][..],
                Err(_) => break, // the tap is gone
            };
            let now = SystemTime::now();
            let guest_mac = guest.as_ref().map(|m| &m[..]);
            if frame.len() >= 14 && Some(&frame[6..12]) != guest_mac {
                recent.push_back((now, frame.to_vec()));
                if Some(&frame[..6]) == guest_mac {
                    self.last_for_guest.store(self.now_us(), Ordering::Relaxed);
                }
            }
            let paused = *self.paused_at.lock().unwrap_or_else(|e| e.into_inner());
            match paused {
                None => {
                    while recent
                        .front()
                        .is_some_and(|(t, _)| now.duration_since(*t).unwrap_or_default() > HISTORY)
                    {
                        recent.pop_front();
                    }
                }
                Some(at) => {
                    let send: Vec<_> = recent
                        .drain(..)
                        .filter(|(t, _)| *t + MARGIN >= at)
                        .map(|(_, f)| f)
                        .collect();
                    if !send.is_empty() {
                        match forward(conn, address, token, nic, &send) {
                            Ok(()) => {
                                let k = send.len() as u64;
                                forwarded += k;
                                self.forwarded.fetch_add(k, Ordering::Relaxed);
                                FRAMES_HELD.fetch_add(k, Ordering::Relaxed);
                            }
                            Err(e) => tracing::warn!("frame relay: {e:#}"),
                        }
                    }
                }
            }
            if let Some(l) = self.looked.get(nic as usize) {
                l.store(self.now_us(), Ordering::Relaxed);
            }
        }
        if forwarded > 0 {
            tracing::info!(nic, frames = forwarded, "frames relayed to the destination");
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn forward(
    conn: &Mutex<Option<TcpStream>>,
    address: &str,
    token: &str,
    nic: u8,
    frames: &[Vec<u8>],
) -> anyhow::Result<()> {
    let mut guard = conn.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let c = TcpStream::connect_timeout(
            &address.parse().context("sink address")?,
            Duration::from_secs(2),
        )
        .with_context(|| format!("connect to the frame sink {address}"))?;
        c.set_nodelay(true)?;
        (&c).write_all(format!("{token}\n").as_bytes())?;
        *guard = Some(c);
    }
    let c = guard.as_mut().context("no connection")?;
    let mut out = Vec::new();
    for f in frames {
        let len = f.len().min(u16::MAX as usize);
        out.push(nic);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&f[..len]);
    }
    c.write_all(&out)?;
    Ok(())
}

/// Splits a TCP segment larger than the tap's MTU into MTU-sized ones. What the
/// bridge sends into a tap may be one GSO super-frame (up to 64 KiB) that the tap
/// would hand the guest with an offload header; written back through AF_PACKET it
/// must fit the MTU, so it is cut the way the NIC would have (sequence numbers, IP
/// ids and lengths adjusted; FIN and PSH on the last piece only, CWR on the first).
/// Anything else is returned whole. Checksums are left to [`fix_checksums`].
pub fn segment(frame: &[u8], mtu: usize) -> Vec<Vec<u8>> {
    let whole = || vec![frame.to_vec()];
    let Some(t) = frame.get(12..14) else {
        return whole();
    };
    let (l3, ethertype) = match u16::from_be_bytes([t[0], t[1]]) {
        0x8100 => match frame.get(16..18) {
            Some(t) => (18, u16::from_be_bytes([t[0], t[1]])),
            None => return whole(),
        },
        e => (14, e),
    };
    if frame.len() <= l3 + mtu {
        return whole();
    }
    // (IP header length, L4 protocol, L3 packet length)
    let (ip_len, proto, total) = match ethertype {
        0x0800 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return whole();
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            (ihl, ip[9], usize::from(u16::from_be_bytes([ip[2], ip[3]])))
        }
        0x86dd => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return whole();
            };
            (
                40,
                ip[6],
                40 + usize::from(u16::from_be_bytes([ip[4], ip[5]])),
            )
        }
        _ => return whole(),
    };
    let l4 = l3 + ip_len;
    if proto != 6 || frame.len() < l3 + total || frame.len() < l4 + 20 {
        return whole();
    }
    let tcp_len = usize::from(frame[l4 + 12] >> 4) * 4;
    let data = l4 + tcp_len;
    if tcp_len < 20 || data > l3 + total || mtu <= ip_len + tcp_len {
        return whole();
    }
    let mss = mtu - ip_len - tcp_len;
    let payload = &frame[data..l3 + total];
    let seq = u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]);
    let chunks: Vec<&[u8]> = payload.chunks(mss).collect();
    let last = chunks.len().saturating_sub(1);
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut f = frame[..data].to_vec();
            f.extend_from_slice(chunk);
            let l3_len = ip_len + tcp_len + chunk.len();
            if ethertype == 0x0800 {
                f[l3 + 2..l3 + 4].copy_from_slice(&(l3_len as u16).to_be_bytes());
                let id = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]).wrapping_add(i as u16);
                f[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
                f[l3 + 10] = 0;
                f[l3 + 11] = 0;
                let c = !fold(add_words(0, &f[l3..l3 + ip_len]));
                f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
            } else {
                let plen = (tcp_len + chunk.len()) as u16;
                f[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
            }
            let s = seq.wrapping_add((i * mss) as u32);
            f[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            if i != last {
                f[l4 + 13] &= !0x09; // FIN, PSH
            }
            if i != 0 {
                f[l4 + 13] &= !0x80; // CWR
            }
            f
        })
        .collect()
}

/// Adds `bytes` to a one's-complement sum as big-endian 16-bit words (an odd
/// last byte is padded with zero), as the Internet checksum does.
fn add_words(sum: u32, bytes: &[u8]) -> u32 {
    bytes.chunks(2).fold(sum, |s, w| {
        s + ((u32::from(w[0]) << 8) | w.get(1).map_or(0, |&b| u32::from(b)))
    })
}

/// Folds the carries of a one's-complement sum into 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Completes the TCP/UDP checksum of an IPv4 or IPv6 frame. Frames captured on
/// their way into a tap often carry only a partial checksum (the kernel offloads
/// the rest to whoever reads the tap, here the guest's virtio-net); written into
/// another tap as they are, the guest would drop them as corrupt.
pub fn fix_checksums(frame: &mut [u8]) {
    let mut l3 = 14;
    let mut ethertype = match frame.get(12..14) {
        Some(t) => u16::from_be_bytes([t[0], t[1]]),
        None => return,
    };
    if ethertype == 0x8100 {
        ethertype = match frame.get(16..18) {
            Some(t) => u16::from_be_bytes([t[0], t[1]]),
            None => return,
        };
        l3 = 18;
    }
    // (protocol, start of the L4 header, L4 length, pseudo-header sum)
    let (proto, l4, l4_len, sum) = match ethertype {
        0x0800 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                return;
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let fragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            if ihl < 20 || total < ihl || fragmented || frame.len() < l3 + total {
                return;
            }
            let len = total - ihl;
            let sum = add_words(u32::from(ip[9]) + len as u32, &ip[12..20]);
            (ip[9], l3 + ihl, len, sum)
        }
        0x86dd => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                return;
            };
            let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if frame.len() < l3 + 40 + len {
                return;
            }
            let sum = add_words(u32::from(ip[6]) + len as u32, &ip[8..40]);
            (ip[6], l3 + 40, len, sum)
        }
        _ => return,
    };
    let at = match proto {
        6 if l4_len >= 20 => 16,
        17 if l4_len >= 8 => 6,
        _ => return,
    };
    let seg = &mut frame[l4..l4 + l4_len];
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut c = !fold(add_words(sum, seg));
    if proto == 17 && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("52:54:00:ab:cd:ef"),
            Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef])
        );
        assert_eq!(parse_mac("52:54:00:ab:cd"), None);
        assert_eq!(parse_mac("52:54:00:ab:cd:ef:01"), None);
        assert_eq!(parse_mac("zz:54:00:ab:cd:ef"), None);
    }

    /// An Ethernet + IPv4 + TCP frame from 10.0.0.1:1234 to 10.0.0.2:7.
    fn tcp_frame(payload: &[u8], flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&1234u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&7u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&1000u32.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        f.extend_from_slice(&tcp);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn super_frames_are_cut_to_the_mtu() {
        let payload: Vec<u8> = (0..4000u32).map(|i| i as u8).collect();
        let big = tcp_frame(&payload, 0x19); // FIN PSH ACK
        let parts = segment(&big, 1500);
        assert_eq!(parts.len(), 3, "1460 + 1460 + 1080");
        let mut joined = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= 14 + 1500);
            let total = usize::from(u16::from_be_bytes([p[16], p[17]]));
            assert_eq!(total, p.len() - 14);
            let seq = u32::from_be_bytes([p[38], p[39], p[40], p[41]]);
            assert_eq!(seq, 1000 + (i * 1460) as u32);
            let flags = p[47];
            assert_eq!(flags & 0x10, 0x10, "ACK kept");
            assert_eq!(flags & 0x09 != 0, i == 2, "FIN/PSH only on the last");
            // The IP header checksum verifies.
            assert_eq!(fold(add_words(0, &p[14..34])), 0xffff);
            joined.extend_from_slice(&p[54..]);
        }
        assert_eq!(joined, payload, "the bytes, in order, none lost");
        // Small frames and non-TCP pass whole.
        let small = tcp_frame(b"hi", 0x18);
        assert_eq!(segment(&small, 1500), vec![small.clone()]);
        let mut udp = big.clone();
        udp[23] = 17;
        assert_eq!(segment(&udp, 1500).len(), 1);
        assert_eq!(segment(&big[..20], 1500).len(), 1);
    }

    #[test]
    fn checksums_are_completed() {
        // A TCP segment (payload "hi\n", PSH ACK) with no checksum: filled in.
        let mut f = tcp_frame(b"hi\n", 0x18);
        fix_checksums(&mut f);
        let good = [f[50], f[51]];
        assert_ne!(good, [0, 0]);
        // Verify: the one's-complement sum over pseudo-header and segment is 0xffff.
        let sum = add_words(add_words(6 + 23, &f[26..34]), &f[34..]);
        assert_eq!(fold(sum), 0xffff);
        // A partial checksum (what offload leaves) is completed the same way.
        f[50] = 0x12;
        f[51] = 0x34;
        fix_checksums(&mut f);
        assert_eq!([f[50], f[51]], good);
        // Too short or not IP: left alone, no panic.
        let mut short = f[..30].to_vec();
        fix_checksums(&mut short);
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        fix_checksums(&mut arp);
        assert_eq!(arp[50..52], good);
    }
}
