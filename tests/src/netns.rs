//! A lab network for one test: a fabric bridge `fy<K>br` in the root namespace with
//! address 10.77.K.1/24 (the control plane listens there), and one network namespace
//! per host, `fy<K>h<I>`, joined to the fabric by a veth pair, with address
//! 10.77.K.(10+I)/24 on its `eth0`, and a second link `eth1` into the fabric without
//! an address, which the agent puts in its VM network's bridge (guests get
//! 10.77.K.(100+N)). A test may add a client namespace `fy<K>c` (10.77.K.9), whose
//! TCP counters then count that client alone. K is claimed atomically (creating the bridge
//! fails if another test holds it), so tests run side by side. Everything is
//! removed on drop, processes inside the namespaces first.

use std::process::Command;

pub struct Lab {
    pub k: u8,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Lab {
    /// A fabric with `hosts` host namespaces.
    pub fn new(hosts: u8) -> Self {
        let start: u8 = rand::random::<u8>() % 250;
        let k = (0..250u16)
            .map(|i| ((start as u16 + i) % 250 + 1) as u8)
            .find(|k| ip(&["link", "add", &format!("fy{k}br"), "type", "bridge"]).is_ok())
            .expect("no free lab slot (fy1br..fy250br all exist: run `make clean-lab`)");
        let mut lab = Lab {
            k,
            hosts: Vec::new(),
        };
        let br = lab.bridge();
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.fabric_ip()),
            "dev",
            &br,
        ])
        .expect("fabric address");
        ip(&["link", "set", &br, "up"]).expect("fabric up");
        for i in 0..hosts {
            lab.add_host(i);
        }
        lab
    }

    pub fn bridge(&self) -> String {
        format!("fy{}br", self.k)
    }

    /// The root namespace's address on the fabric (where the control plane listens).
    pub fn fabric_ip(&self) -> String {
        format!("10.77.{}.1", self.k)
    }

    pub fn ns(&self, i: u8) -> String {
        format!("fy{}h{}", self.k, i)
    }

    pub fn host_ip(&self, i: u8) -> String {
        format!("10.77.{}.{}", self.k, 10 + i)
    }

    /// A new namespace `ns` joined to the fabric by the veth pair `fy<K><tag>a`/`b`,
    /// its end named `eth0` with `addr`/24, and `lo` up.
    fn add_namespace(&mut self, ns: &str, tag: &str, addr: &str) {
        ip(&["netns", "add", ns]).expect("netns add");
        self.hosts.push(ns.to_string());
        let outer = format!("fy{}{tag}a", self.k);
        let inner = format!("fy{}{tag}b", self.k);
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ])
        .expect("veth");
        ip(&["link", "set", &outer, "master", &self.bridge()]).expect("veth to fabric");
        ip(&["link", "set", &outer, "up"]).expect("veth up");
        ip(&["link", "set", &inner, "netns", ns]).expect("veth into ns");
        let nsx = |args: &[&str]| {
            let mut a = vec!["-n", ns];
            a.extend_from_slice(args);
            ip(&a)
        };
        nsx(&["link", "set", &inner, "name", "eth0"]).expect("rename");
        nsx(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]).expect("address");
        nsx(&["link", "set", "eth0", "up"]).expect("eth0 up");
        nsx(&["link", "set", "lo", "up"]).expect("lo up");
    }

    fn add_host(&mut self, i: u8) {
        let ns = self.ns(i);
        self.add_namespace(&ns, &format!("h{i}"), &self.host_ip(i));
        // A second link into the fabric, with no address: the uplink of the host's VM
        // network bridge.
        let (up_out, up_in) = (
            format!("fy{}h{}c", self.k, i),
            format!("fy{}h{}d", self.k, i),
        );
        ip(&[
            "link", "add", &up_out, "type", "veth", "peer", "name", &up_in,
        ])
        .expect("uplink veth");
        ip(&["link", "set", &up_out, "master", &self.bridge()]).expect("uplink to fabric");
        ip(&["link", "set", &up_out, "up"]).expect("uplink up");
        ip(&["link", "set", &up_in, "netns", &ns]).expect("uplink into ns");
        ip(&["-n", &ns, "link", "set", &up_in, "name", "eth1"]).expect("rename uplink");
    }

    /// Adds the client namespace `fy<K>c`, joined to the fabric with address
    /// 10.77.K.9; returns its name.
    pub fn add_client(&mut self) -> String {
        let ns = format!("fy{}c", self.k);
        self.add_namespace(&ns, "c", &format!("10.77.{}.9", self.k));
        ns
    }

    /// An address on the fabric for guest `n` (outside the hosts' range).
    pub fn guest_ip(&self, n: u8) -> String {
        format!("10.77.{}.{}", self.k, 100 + n)
    }

    /// Runs a command inside host `i`'s namespace.
    pub fn command(&self, i: u8, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i)]).arg(program);
        c
    }
}

/// A TCP counter of namespace `ns`, read from inside it: `file` is
/// `/proc/net/snmp` (section `Tcp:`, e.g. `RetransSegs`) or `/proc/net/netstat`
/// (section `TcpExt:`, e.g. `TCPTimeouts`, `TCPLossProbes`).
pub fn tcp_counter(ns: &str, file: &str, section: &str, name: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", file])
        .output()
        .expect("read the namespace's TCP counters");
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .filter(|l| l.starts_with(section))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let (names, values) = (&rows[0], &rows[1]);
    let i = names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{name} in {file}"));
    values[i].parse().expect("a number")
}

/// The TCP segments namespace `ns` has retransmitted (`TcpRetransSegs`).
pub fn tcp_retrans_segs(ns: &str) -> u64 {
    tcp_counter(ns, "/proc/net/snmp", "Tcp:", "RetransSegs")
}

/// How often a retransmission timeout fired in namespace `ns` (`TCPTimeouts`:
/// at least 200 ms without an answer).
pub fn tcp_timeouts(ns: &str) -> u64 {
    tcp_counter(ns, "/proc/net/netstat", "TcpExt:", "TCPTimeouts")
}

/// Kills every process still running inside namespace `ns`.
fn kill_in(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in &self.hosts {
            kill_in(ns);
            let _ = ip(&["netns", "del", ns]);
        }
        let _ = ip(&["link", "del", &self.bridge()]);
    }
}
