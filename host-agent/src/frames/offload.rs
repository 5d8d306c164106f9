//! Frames captured on a tap, made fit to be written into another: offloaded
//! super-frames cut to the MTU, partial checksums completed.

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

/// A frame in a few words, for the relay's debug log: `udp:7#N` (the test
/// probe's number), `tcp:P seq=S len=L`, `arp`, or the EtherType.
pub fn describe(f: &[u8]) -> String {
    if f.len() < 14 {
        return "runt".into();
    }
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    if ethertype == 0x0806 {
        return "arp".into();
    }
    if ethertype != 0x0800 || f.len() < 34 {
        return format!("0x{ethertype:04x}");
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let l4 = 14 + ihl;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let port = |o: usize| f.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    match f[23] {
        17 => {
            let seq = f
                .get(l4 + 8..l4 + 16)
                .filter(|_| total == ihl + 16)
                .map(|b| format!("#{}", u64::from_be_bytes(b.try_into().unwrap_or_default())))
                .unwrap_or_default();
            format!("udp:{}{seq}", port(l4 + 2).unwrap_or(0))
        }
        6 => {
            let seq = f
                .get(l4 + 4..l4 + 8)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(0);
            let hl = f
                .get(l4 + 12)
                .map(|b| usize::from(b >> 4) * 4)
                .unwrap_or(20);
            format!(
                "tcp:{} seq={seq} len={}",
                port(l4 + 2).unwrap_or(0),
                total.saturating_sub(ihl + hl)
            )
        }
        p => format!("ip/{p}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn frames_are_described_for_the_log() {
        assert_eq!(describe(&tcp_frame(b"hello", 0x18)), "tcp:7 seq=1000 len=5");
        // The UDP probe's datagram: its number.
        let mut udp = tcp_frame(&[], 0);
        udp.truncate(34);
        udp[23] = 17;
        udp[16..18].copy_from_slice(&(20u16 + 8 + 8).to_be_bytes());
        let mut head = [0u8; 8];
        head[2..4].copy_from_slice(&7u16.to_be_bytes());
        udp.extend_from_slice(&head);
        udp.extend_from_slice(&275u64.to_be_bytes());
        assert_eq!(describe(&udp), "udp:7#275");
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(describe(&arp), "arp");
        let mut v6 = vec![0u8; 60];
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(describe(&v6), "0x86dd");
        assert_eq!(describe(&[0u8; 10]), "runt");
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
