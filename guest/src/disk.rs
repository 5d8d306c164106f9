//! The disk workload (`ferry.disk=/dev/vda`): writes 4 KiB blocks over the first
//! `ferry.disk_mib` MiB of the disk at `ferry.disk_mbps` MiB/s, each block holding
//! its index, a sequence number and words derived from both, with `O_DIRECT |
//! O_DSYNC` so every completed write is on the virtual disk, not in the guest's page
//! cache (which migrates with its memory and would hide a lost disk write). The
//! last sequence number of each block is remembered; `POST /disk/verify` reads every
//! written block back from the disk (again `O_DIRECT`) and counts the blocks whose
//! content is not exactly the last one written: a write lost, torn or misplaced by a
//! storage migration is a mismatch.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const MAGIC: u64 = 0x6665_7272_7964_736b; // "ferrydsk"
const O_DIRECT: i32 = 0o40000;
const O_DSYNC: i32 = 0o10000;

pub struct Disk {
    file: File,
    blocks: u64,
    pub target_mbps: AtomicU64,
    /// Last sequence number written to each block (0: never written).
    written: Mutex<Vec<u64>>,
    pub writes: AtomicU64,
    pub write_errors: AtomicU64,
    pub verified: AtomicU64,
    pub mismatches: AtomicU64,
}

/// A 4 KiB buffer aligned for `O_DIRECT` (no `unsafe`: the type carries the alignment).
#[repr(C, align(4096))]
struct Aligned([u8; BLOCK]);

struct Buf(Box<Aligned>);

impl Buf {
    fn new() -> Self {
        Buf(Box::new(Aligned([0; BLOCK])))
    }
    fn bytes(&mut self) -> &mut [u8] {
        &mut self.0 .0
    }
}

fn word(block: u64, seq: u64, i: u64) -> u64 {
    // splitmix64 of the three: any torn or misplaced block differs.
    let mut z = block
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(seq.wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add(i);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fill(buf: &mut [u8], block: u64, seq: u64) {
    for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
        let v = match i {
            0 => MAGIC,
            1 => block,
            2 => seq,
            _ => word(block, seq, i as u64),
        };
        chunk.copy_from_slice(&v.to_le_bytes());
    }
}

fn matches(buf: &[u8], block: u64, seq: u64) -> bool {
    buf.chunks_exact(8).enumerate().all(|(i, c)| {
        let v = u64::from_le_bytes(c.try_into().unwrap_or_default());
        v == match i {
            0 => MAGIC,
            1 => block,
            2 => seq,
            _ => word(block, seq, i as u64),
        }
    })
}

impl Disk {
    pub fn open(path: &str, mib: u64, mbps: u64) -> std::io::Result<Disk> {
        // The block device may appear a moment after its driver loads.
        let deadline = Instant::now() + Duration::from_secs(10);
        let file = loop {
            match OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(O_DIRECT | O_DSYNC)
                .open(path)
            {
                Ok(f) => break f,
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let blocks = mib * 1024 * 1024 / BLOCK as u64;
        Ok(Disk {
            file,
            blocks,
            target_mbps: AtomicU64::new(mbps),
            written: Mutex::new(vec![0; blocks as usize]),
            writes: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            verified: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
        })
    }

    /// Writes forever at the target rate, block after block (wrapping).
    pub fn run(&self) {
        let mut buf = Buf::new();
        let mut next = 0u64;
        let mut seq = 0u64;
        let mut window = Instant::now();
        let mut in_window = 0u64;
        loop {
            let mbps = self.target_mbps.load(Ordering::Relaxed);
            if mbps == 0 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            let per_s = mbps * 1024 * 1024 / BLOCK as u64;
            if in_window >= per_s / 10 {
                let left = Duration::from_millis(100).saturating_sub(window.elapsed());
                std::thread::sleep(left);
                window = Instant::now();
                in_window = 0;
            }
            seq += 1;
            let block = next;
            next = (next + 1) % self.blocks;
            fill(buf.bytes(), block, seq);
            let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            match self.file.write_all_at(buf.bytes(), block * BLOCK as u64) {
                Ok(()) => {
                    written[block as usize] = seq;
                    self.writes.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.write_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            drop(written);
            in_window += 1;
        }
    }

    /// Reads back every block written so far; returns (checked, mismatches).
    pub fn verify(&self) -> (u64, u64) {
        let mut buf = Buf::new();
        let (mut checked, mut bad) = (0, 0);
        for block in 0..self.blocks {
            // Held per block: a write to it is either before or after this read.
            let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
            let seq = written[block as usize];
            if seq == 0 {
                continue;
            }
            let ok = self
                .file
                .read_exact_at(buf.bytes(), block * BLOCK as u64)
                .is_ok()
                && matches(buf.bytes(), block, seq);
            drop(written);
            checked += 1;
            if !ok {
                bad += 1;
            }
        }
        self.verified.store(checked, Ordering::Relaxed);
        self.mismatches.store(bad, Ordering::Relaxed);
        (checked, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_matches_only_its_own_index_and_sequence() {
        let mut b = vec![0u8; BLOCK];
        fill(&mut b, 7, 3);
        assert!(matches(&b, 7, 3));
        assert!(!matches(&b, 7, 2));
        assert!(!matches(&b, 8, 3));
        b[100] ^= 1;
        assert!(!matches(&b, 7, 3));
    }
}
