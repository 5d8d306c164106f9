//! QEMU's `-m` for a VM, and which QEMU needs it padded: the workaround for the
//! TCG dirty-tracking bug of QEMU before 9.0.

/// QEMU's `-m` for a VM of `mib` MiB.
///
/// Under TCG, QEMU before 9.0 loses guest writes during live migration: its fast
/// path for syncing the migration dirty bitmap (taken when a RAM block is a whole
/// number of 64-page words) clears the dirty bits without resetting the vCPUs' TLB
/// dirty flags, so a page written through a TLB entry filled before the sync is
/// never marked dirty again and the destination gets a stale copy (seen here with
/// QEMU 7.2: a guest dirtying 48 MiB/s panics with corrupted kernel lists right
/// after the move, 3 times in 3, with raw QEMU as with Ferry). QEMU 9.0 resets the
/// flags there (`physical_memory_dirty_bits_cleared`); QEMU 10.0 moved the same
/// guest 0 times in 7 with a panic. On an affected QEMU, one page more than asked
/// keeps the block off that path, because the per-page path resets them; the cost
/// is a guest stall of about 0.5 s per 512 MiB when a move starts.
pub fn memory_arg(mib: u64, pad: bool) -> String {
    if pad {
        format!("{}K", mib * 1024 + 4)
    } else {
        format!("{mib}M")
    }
}

/// Whether QEMU `version` (its `--version` line) under `accel` needs the padding of
/// [`memory_arg`]. An unparseable version is treated as affected: the padding costs
/// time, its absence costs data.
pub fn needs_tcg_dirty_padding(version: &str, accel: &str) -> bool {
    accel == "tcg" && parse_version(version).is_none_or(|v| v < (9, 0))
}

/// `(major, minor)` from `QEMU emulator version 10.0.2 (Debian …)`.
pub fn parse_version(line: &str) -> Option<(u32, u32)> {
    let v = line.split("version ").nth(1)?.split_whitespace().next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_only_for_tcg_on_a_qemu_before_9() {
        let q72 = "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)";
        let q10 = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)";
        assert_eq!(parse_version(q72), Some((7, 2)));
        assert_eq!(parse_version(q10), Some((10, 0)));
        assert!(needs_tcg_dirty_padding(q72, "tcg"));
        assert!(!needs_tcg_dirty_padding(q72, "kvm"));
        assert!(!needs_tcg_dirty_padding(q10, "tcg"));
        assert!(needs_tcg_dirty_padding("something else", "tcg"));
        assert_eq!(memory_arg(256, true), "262148K");
        assert_eq!(memory_arg(256, false), "256M");
    }
}
