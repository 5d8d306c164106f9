//! The memory dirtier and integrity verifier. One thread owns the working set, so
//! writes and checks never race: it dirties pages at the target rate and, in the
//! time left, verifies pages in a sweep; every page is checked before it is
//! rewritten, so a page corrupted in flight is caught the next time round.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const PAGE_WORDS: usize = 512; // 4 KiB
const MIB_PAGES: u64 = 256;

pub struct State {
    pub target_mbps: AtomicU64,
    pub wss_mib: AtomicU64,
    /// Measured over the last second, in KiB/s.
    pub actual_kibps: AtomicU64,
    pub pages_verified: AtomicU64,
    pub pages_written: AtomicU64,
    pub errors: AtomicU64,
    /// Pages the verifier reads at most per 10 ms slice (`POST
    /// /dirty?verify_pages=N`; a benchmark of many guests keeps them quiet).
    pub verify_pages: AtomicU64,
}

impl State {
    pub fn new(mbps: u64, wss_mib: u64) -> Self {
        Self {
            target_mbps: AtomicU64::new(mbps),
            wss_mib: AtomicU64::new(wss_mib.clamp(1, 1 << 20)),
            actual_kibps: AtomicU64::new(0),
            pages_verified: AtomicU64::new(0),
            pages_written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            verify_pages: AtomicU64::new(2 * MIB_PAGES),
        }
    }
}

/// The word `j` of page `p` at version `v` (splitmix64 of the three).
fn word(p: u64, v: u64, j: u64) -> u64 {
    let mut z = p.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ v.rotate_left(17)
        ^ j.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn write_page(page: &mut [u64], p: u64, v: u64) {
    page[0] = v;
    for (j, w) in page.iter_mut().enumerate().skip(1) {
        *w = word(p, v, j as u64);
    }
}

fn page_ok(page: &[u64], p: u64) -> bool {
    let v = page[0];
    page.iter()
        .enumerate()
        .skip(1)
        .all(|(j, w)| *w == word(p, v, j as u64))
}

fn alloc(mib: u64) -> Vec<u64> {
    let pages = mib * MIB_PAGES;
    let mut mem = vec![0u64; (pages as usize) * PAGE_WORDS];
    for (p, page) in mem.chunks_mut(PAGE_WORDS).enumerate() {
        write_page(page, p as u64, 0);
    }
    mem
}

pub fn run(state: &State) {
    let mut wss = state.wss_mib.load(Ordering::Relaxed);
    let mut mem = alloc(wss);
    let mut next_dirty = 0u64;
    let mut next_verify = 0u64;
    let mut window_start = Instant::now();
    let mut window_bytes = 0u64;
    let slice = Duration::from_millis(10);
    loop {
        let want = state.wss_mib.load(Ordering::Relaxed);
        if want != wss {
            wss = want;
            mem = alloc(wss);
            next_dirty = 0;
            next_verify = 0;
        }
        let pages = wss * MIB_PAGES;
        let t0 = Instant::now();
        // Dirty this slice's share of the target rate.
        let per_slice = state.target_mbps.load(Ordering::Relaxed) * MIB_PAGES / 100;
        for _ in 0..per_slice {
            let p = next_dirty % pages;
            let page = &mut mem[(p as usize) * PAGE_WORDS..(p as usize + 1) * PAGE_WORDS];
            if !page_ok(page, p) {
                state.errors.fetch_add(1, Ordering::Relaxed);
            }
            let v = page[0] + 1;
            write_page(page, p, v);
            next_dirty += 1;
            window_bytes += 4096;
        }
        state.pages_written.fetch_add(per_slice, Ordering::Relaxed);
        // Verify in the time left (bounded, so an idle guest stays mostly idle).
        let mut checked = 0u64;
        let verify = state.verify_pages.load(Ordering::Relaxed);
        while t0.elapsed() < slice / 2 && checked < verify {
            let p = next_verify % pages;
            if !page_ok(
                &mem[(p as usize) * PAGE_WORDS..(p as usize + 1) * PAGE_WORDS],
                p,
            ) {
                state.errors.fetch_add(1, Ordering::Relaxed);
            }
            next_verify += 1;
            checked += 1;
        }
        state.pages_verified.fetch_add(checked, Ordering::Relaxed);
        if window_start.elapsed() >= Duration::from_secs(1) {
            let kib = window_bytes / 1024;
            state.actual_kibps.store(
                (kib as f64 / window_start.elapsed().as_secs_f64()) as u64,
                Ordering::Relaxed,
            );
            window_start = Instant::now();
            window_bytes = 0;
        }
        if let Some(rest) = slice.checked_sub(t0.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_verify_and_corruption_is_seen() {
        let mut mem = alloc(1);
        for (p, page) in mem.chunks(PAGE_WORDS).enumerate() {
            assert!(page_ok(page, p as u64));
        }
        write_page(&mut mem[PAGE_WORDS..2 * PAGE_WORDS], 1, 7);
        assert!(page_ok(&mem[PAGE_WORDS..2 * PAGE_WORDS], 1));
        mem[PAGE_WORDS + 100] ^= 1;
        assert!(!page_ok(&mem[PAGE_WORDS..2 * PAGE_WORDS], 1));
        // A page holding another page's content is wrong too.
        let other: Vec<u64> = mem[2 * PAGE_WORDS..3 * PAGE_WORDS].to_vec();
        assert!(!page_ok(&other, 1));
    }
}
