//! Host networking for VMs: one Linux bridge per network (port group), with the
//! network's uplink enslaved, and one tap per VM NIC on its network's bridge.
//! Interface names are derived so they fit Linux's 15 characters.

use std::process::Command;

use anyhow::{bail, Context};

/// One `ip` command (the arguments are names and keywords, never with spaces).
fn ip(args: &[&str]) -> anyhow::Result<()> {
    ip_batch(&[args.join(" ")])
}

/// Several `ip` commands in one process (`ip -batch`: it stops at the first
/// that fails, and says which): a VM's start or a migration's destination waits
/// for its taps, and each process costs milliseconds.
fn ip_batch(lines: &[String]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("run ip")?;
    let mut stdin = child.stdin.take().context("ip's stdin")?;
    stdin.write_all(lines.join("\n").as_bytes())?;
    drop(stdin);
    let out = child.wait_with_output().context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip -batch ({}): {}",
            lines.join("; "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn exists(dev: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(dev).exists()
}

/// The bridge of network `name`.
pub fn bridge_name(name: &str) -> String {
    let candidate = format!("fbr-{name}");
    if candidate.len() <= 15 {
        candidate
    } else {
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        format!("fbr-{:011x}", h & 0xfff_ffff_ffff)
    }
}

/// The tap of NIC `idx` of VM `vm_id`.
pub fn tap_name(vm_id: &str, idx: usize) -> String {
    let short: String = vm_id
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(8)
        .collect();
    format!("ft{short}n{idx}")
}

/// Makes sure network `name`'s bridge exists and is up, with `uplink` in it.
pub fn ensure_bridge(name: &str, uplink: &str) -> anyhow::Result<String> {
    let br = bridge_name(name);
    if !exists(&br) {
        ip(&["link", "add", &br, "type", "bridge"]).or_else(|e| {
            if exists(&br) {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        // Forward at once: a VM that moves here must not wait out STP learning.
        let _ = std::fs::write(format!("/sys/class/net/{br}/bridge/forward_delay"), "0");
    }
    l2_only(&br);
    if !uplink.is_empty() {
        if !exists(uplink) {
            bail!("network {name}: uplink {uplink} does not exist on this host");
        }
        ip(&["link", "set", uplink, "master", &br])?;
        ip(&["link", "set", uplink, "up"])?;
        // A bridge takes the lowest MAC among its ports unless given one, so it
        // would change as taps come and go; pin it to the uplink's.
        if let Ok(mac) = std::fs::read_to_string(format!("/sys/class/net/{uplink}/address")) {
            ip(&["link", "set", &br, "address", mac.trim()])?;
        }
    }
    ip(&["link", "set", &br, "up"])?;
    Ok(br)
}

/// A VM network's bridge carries guests' frames only: the host must not answer
/// ARP for its own addresses through it. Otherwise a neighbour on the same
/// segment (another host's agent, the migration stream) can learn the bridge's
/// MAC for this host's management address and lose its packets once that MAC
/// changes — which is exactly what stalled migrations in setup until this was
/// set. No IPv6 either: no link-local address, no DAD or router solicitations.
fn l2_only(br: &str) {
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{br}/arp_ignore"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{br}/arp_announce"), "2"),
        (format!("/proc/sys/net/ipv6/conf/{br}/disable_ipv6"), "1"),
    ] {
        if let Err(e) = std::fs::write(&path, value) {
            tracing::warn!("{path}: {e}");
        }
    }
}

/// Creates (or re-creates) a tap on `bridge`.
pub fn create_tap(tap: &str, bridge: &str) -> anyhow::Result<()> {
    if exists(tap) {
        let _ = ip(&["link", "del", tap]);
    }
    ip_batch(&[
        format!("tuntap add dev {tap} mode tap vnet_hdr"),
        format!("link set dev {tap} master {bridge} up"),
    ])
}

/// Removes the bridges of networks this host no longer offers (`fbr-*` not in
/// `keep`), unless a VM's tap is still in one. Returns the bridges removed.
pub fn remove_stale_bridges(keep: &[String]) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
        return removed;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("fbr-") || keep.contains(&name) {
            continue;
        }
        let ports = std::fs::read_dir(e.path().join("brif"))
            .map(|d| {
                d.flatten()
                    .map(|p| p.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if ports.iter().any(|p| p.starts_with("ft")) {
            tracing::warn!(bridge = %name, "network no longer configured but VMs still use it; kept");
            continue;
        }
        match ip(&["link", "del", &name]) {
            Ok(()) => removed.push(name),
            Err(e) => tracing::warn!("remove stale bridge: {e:#}"),
        }
    }
    removed
}

pub fn delete_tap(tap: &str) {
    if exists(tap) {
        if let Err(e) = ip(&["link", "del", tap]) {
            tracing::warn!("remove tap {tap}: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit() {
        assert_eq!(bridge_name("vmnet"), "fbr-vmnet");
        assert!(bridge_name("a-very-long-network-name").len() <= 15);
        assert_ne!(
            bridge_name("a-very-long-network-name"),
            bridge_name("a-very-long-network-nama")
        );
        let t = tap_name("1a2b3c4d-0000-4000-8000-000000000000", 3);
        assert_eq!(t, "ft1a2b3c4dn3");
        assert!(t.len() <= 15);
    }
}
