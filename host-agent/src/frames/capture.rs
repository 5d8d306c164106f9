//! The relay's capture socket on one tap.
//!
//! The relay numbers the frames it sees going into a tap and, at the pause,
//! compares that number with the tap's own count of frames its reader (QEMU)
//! took. The two line up only if the capture sees every frame the tap sends and
//! nothing else, so the socket is set up for that rather than left to
//! `pnet_datalink`'s defaults:
//!
//! * a kernel filter keeps only the frames the tap *sends* (`PACKET_OUTGOING`:
//!   what the bridge delivers to the VM); the guest's own frames, as many again,
//!   are dropped before they are queued instead of being read and thrown away;
//! * an 8 MiB receive buffer (the default, 208 KiB, is ~90 small frames: a
//!   capture thread kept off the CPU for tens of milliseconds by a busy host
//!   would lose frames, and the numbering with them);
//! * the kernel's count of frames it dropped anyway ([`Stats::dropped`]), so
//!   the relay can allow for them: a frame dropped here may be one QEMU read, and
//!   each such frame makes the first unread one look one further on.
//!
//! The socket is opened with no protocol, so it receives nothing until it is
//! bound to the tap: no frame of another interface is counted.
//!
//! The workspace denies unsafe code; the three system calls below are its
//! exception here, each with its reason: no safe wrapper in the tree (nix,
//! socket2, pnet) sets `SO_RCVBUFFORCE` and a filter on a packet socket or
//! reads `PACKET_STATISTICS`.

use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::Duration;

use anyhow::{bail, Context};
use pnet_datalink::{Channel, Config, DataLinkReceiver};

/// The capture's receive buffer, bytes.
const RCVBUF: libc::c_int = 8 << 20;
/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: where classic BPF reads a frame's packet type.
const SKF_PKTTYPE: u32 = (-0x1000i32 + 4) as u32;
/// `PACKET_OUTGOING`: a frame the interface sends (for a tap: to its reader).
const PACKET_OUTGOING: u32 = 4;

/// The statistics of a tap's capture socket (a second descriptor of it, so it
/// stays valid, and names the same socket, after the capture has closed its own).
pub struct Stats(OwnedFd);

impl Stats {
    /// Frames the kernel dropped from the capture since the last call (its
    /// receive buffer was full); None if it cannot say.
    pub fn dropped(&self) -> Option<u64> {
        dropped(self.0.as_raw_fd())
    }
}

/// Opens a capture on `tap` (read timeout 20 ms, whole GSO super-frames).
pub fn open(tap: &str) -> anyhow::Result<(Box<dyn DataLinkReceiver>, Stats)> {
    let iface = super::interface(tap)?;
    let fd = socket().with_context(|| format!("capture socket for {tap}"))?;
    let stats = fd.try_clone().context("dup capture socket")?;
    let config = Config {
        read_timeout: Some(Duration::from_millis(20)),
        promiscuous: false,
        read_buffer_size: 65536 + 64,
        write_buffer_size: 64,
        // pnet binds it to the tap and owns it from here (closes it with `rx`).
        socket_fd: Some(fd.into_raw_fd()),
        ..Config::default()
    };
    match pnet_datalink::channel(&iface, config).with_context(|| format!("AF_PACKET on {tap}"))? {
        Channel::Ethernet(_tx, rx) => Ok((rx, Stats(stats))),
        _ => bail!("{tap}: not an Ethernet channel"),
    }
}

/// An AF_PACKET socket with the filter and buffer above, not yet bound.
#[allow(unsafe_code)]
fn socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a descriptor just returned to us and owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Above the system's cap needs CAP_NET_ADMIN (the agent has it); else the
    // largest the cap allows.
    if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF).is_err() {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RCVBUF)?;
    }
    let mut program = [
        // A = the frame's packet type
        bpf(
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS,
            0,
            0,
            SKF_PKTTYPE,
        ),
        // sent by the tap? keep it whole : drop it
        bpf(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            PACKET_OUTGOING,
        ),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        bpf(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    Ok(fd)
}

fn bpf(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

#[allow(unsafe_code)]
fn setsockopt<T>(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: `value` points to a live `T` of the size passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `PACKET_STATISTICS`' drops (the kernel resets its counts on each read).
#[allow(unsafe_code)]
fn dropped(fd: RawFd) -> Option<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are live and sized for PACKET_STATISTICS.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(u64::from(stats.tp_drops))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A tap in a network namespace of its own (this thread's), with its reader.
    #[allow(unsafe_code)]
    fn tap(name: &str) -> std::fs::File {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        let tun = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .expect("open /dev/net/tun");
        // struct ifreq: the name, then IFF_TAP | IFF_NO_PI.
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(0x0002u16 | 0x1000).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr` is sized for.
        let r = unsafe { libc::ioctl(tun.as_raw_fd(), 0x4004_54ca, ifr.as_mut_ptr()) };
        assert_eq!(r, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        // Children run in this thread's namespace. No IPv6: it would send frames of its own.
        for cmd in [
            format!("sysctl -qw net.ipv6.conf.{name}.disable_ipv6=1"),
            format!("ip link set {name} up"),
        ] {
            let st = std::process::Command::new("sh").args(["-c", &cmd]).status();
            assert!(st.is_ok_and(|s| s.success()), "{cmd}");
        }
        tun
    }

    /// The tap's `tx_packets`, as `frames_read` reads it from sysfs — which
    /// shows the namespace it was mounted in, not this thread's.
    fn tx_packets(name: &str) -> u64 {
        let dev = std::fs::read_to_string("/proc/thread-self/net/dev").expect("net/dev");
        let line = dev
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}:")))
            .expect("the tap in net/dev");
        line.split_whitespace()
            .nth(9)
            .expect("tx_packets")
            .parse()
            .expect("a count")
    }

    fn frame(src: u8, k: u16) -> Vec<u8> {
        let mut f = vec![0u8; 1514];
        f[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 0x01]); // to the guest
        f[6..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, src]);
        f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        f[14..16].copy_from_slice(&k.to_be_bytes());
        f
    }

    #[test]
    fn the_capture_sees_what_the_tap_sends_and_counts_what_it_dropped() {
        std::thread::spawn(|| {
            let name = "fycap0";
            let mut tun = tap(name);
            let (mut rx, stats) = open(name).expect("capture");
            // The bridge's side: what the relay's sink writes with.
            let (mut bridge, _) = crate::frames::open(name).expect("a sender on the tap");
            let read_before = tx_packets(name);
            // Five frames for the guest, and three from it (which the filter drops).
            for k in 0..5 {
                bridge
                    .send_to(&frame(0x02, k), None)
                    .expect("queued")
                    .expect("sent");
                tun.write_all(&frame(0x01, 100 + k))
                    .expect("from the guest");
            }
            let mut seen = Vec::new();
            loop {
                match rx.next() {
                    Ok(f) => seen.push(u16::from_be_bytes([f[14], f[15]])),
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
                    Err(e) => panic!("capture: {e}"),
                }
            }
            assert_eq!(
                seen,
                vec![0, 1, 2, 3, 4],
                "only what the tap sends, in order"
            );
            // The tap counts what its reader takes, not what it holds.
            assert_eq!(tx_packets(name), read_before);
            let mut buf = [0u8; 2048];
            for _ in 0..3 {
                let n = tun.read(&mut buf).expect("read by the reader");
                assert_eq!(n, 1514, "one whole frame per read");
            }
            assert_eq!(tx_packets(name), read_before + 3);
            // More than the buffer holds: what is not delivered is counted.
            assert_eq!(stats.dropped(), Some(0));
            let sent = 12_000u16;
            for k in 0..sent {
                bridge
                    .send_to(&frame(0x02, k), None)
                    .expect("queued")
                    .expect("sent");
            }
            let mut got = 0u64;
            while rx.next().is_ok() {
                got += 1;
            }
            let dropped = stats.dropped().expect("statistics");
            assert!(dropped > 0, "{got} captured of {sent}, none dropped");
            assert_eq!(
                got + dropped,
                u64::from(sent),
                "every frame captured or counted"
            );
            assert_eq!(
                stats.dropped(),
                Some(0),
                "the count starts again at each read"
            );
        })
        .join()
        .expect("the capture test");
    }
}
