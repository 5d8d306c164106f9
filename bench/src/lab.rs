//! What the lab benchmarks share: the raw TCP throughput between two host
//! namespaces (`--tcp-sink` / `--tcp-probe`, internal modes of each benchmark
//! program, run inside a namespace), the echo client that measures what a guest's
//! user notices, the guest's status and dirtier, and raw QEMU guests run by hand
//! (the peer every benchmark compares Ferry with).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_agent::qemu_vm::{memory_arg, needs_tcg_dirty_padding};
use ferry_tests::guest;
use ferry_tests::procs::Env;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Bytes each link probe sends.
pub const PROBE_BYTES: usize = 256 << 20;

// ---------------------------------------------------------------- link probe

/// The first line of `qemu-system-x86_64 --version`.
pub fn qemu_version() -> String {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .unwrap_or_default()
}

pub fn tcp_sink(addr: &str) -> anyhow::Result<()> {
    let l = std::net::TcpListener::bind(addr)?;
    println!("listening");
    std::io::stdout().flush()?;
    let (mut c, _) = l.accept()?;
    let mut buf = vec![0u8; 1 << 20];
    while c.read(&mut buf)? > 0 {}
    Ok(())
}

pub fn tcp_probe(addr: &str) -> anyhow::Result<()> {
    let mut c = std::net::TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let t0 = Instant::now();
    for _ in 0..PROBE_BYTES / buf.len() {
        c.write_all(&buf)?;
    }
    c.shutdown(std::net::Shutdown::Write)?;
    let mut end = [0u8; 1];
    let _ = c.read(&mut end);
    println!("{}", PROBE_BYTES as f64 / t0.elapsed().as_secs_f64());
    Ok(())
}

/// Raw TCP throughput from host `from` to host `to`, bytes/s.
pub fn measure_link(env: &Env, from: u8, to: u8) -> anyhow::Result<f64> {
    let me = std::env::current_exe()?;
    let addr = format!("{}:47999", env.lab.host_ip(to));
    let mut sink = env
        .lab
        .command(to, &me)
        .args(["--tcp-sink", &addr])
        .stdout(Stdio::piped())
        .spawn()?;
    let mut first = [0u8; 9];
    sink.stdout.as_mut().unwrap().read_exact(&mut first)?;
    let out = env
        .lab
        .command(from, &me)
        .args(["--tcp-probe", &addr])
        .output()?;
    let _ = sink.wait();
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

// ---------------------------------------------------------------- the client

pub struct Echo {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(f64, u64, bool)>,
}

impl Echo {
    pub async fn start(ip: &str) -> anyhow::Result<Self> {
        let s = tokio::net::TcpStream::connect((ip, 7)).await?;
        s.set_nodelay(true)?;
        let (r, mut w) = s.into_split();
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(r).lines();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (mut sent, mut got, mut gap) = (0u64, 0u64, Duration::ZERO);
            let mut last = Instant::now();
            let mut held = true;
            let mut ending: Option<Instant> = None;
            let trace = std::env::var_os("FERRY_BENCH_TRACE").is_some();
            loop {
                tokio::select! {
                    _ = tick.tick(), if ending.is_none() => {
                        if w.write_all(format!("{sent}\n").as_bytes()).await.is_err() { held = false; break; }
                        sent += 1;
                    }
                    _ = stopped.changed(), if ending.is_none() => { ending = Some(Instant::now()); }
                    l = lines.next_line() => match l {
                        Ok(Some(_)) => {
                            if trace && last.elapsed() > Duration::from_millis(30) {
                                eprintln!("  echo gap {:>4} ms ending at {}", last.elapsed().as_millis(), chrono_now());
                            }
                            gap = gap.max(last.elapsed());
                            last = Instant::now();
                            got += 1;
                            if ending.is_some() && got >= sent { break; }
                        }
                        _ => { held = false; break; }
                    },
                    _ = tokio::time::sleep(Duration::from_secs(5)), if ending.is_some() => break,
                }
            }
            (gap.as_secs_f64() * 1000.0, sent.saturating_sub(got), held)
        });
        Ok(Self { stop, task })
    }

    pub async fn finish(self) -> (f64, u64, bool) {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or((f64::NAN, 0, false))
    }
}

/// Wall-clock time of day, UTC, to the microsecond (to line up with agent logs).
pub fn chrono_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let s = d.as_secs() % 86400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_micros()
    )
}

pub use ferry_tests::vmtest::try_guest_status as status;

/// Sets the guest's dirtier and returns what it reports doing, MiB/s.
pub async fn set_dirty(ip: &str, mibps: u64, wss: u64) -> f64 {
    let _ = reqwest::Client::new()
        .post(format!("http://{ip}/dirty?mbps={mibps}&wss_mib={wss}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    match status(ip).await {
        Some(s) => s["dirty_mbps"].as_f64().unwrap_or(0.0),
        None => 0.0,
    }
}

// ---------------------------------------------------------------- raw QEMU

pub struct RawVm {
    child: Child,
    pub qmp: std::sync::Arc<ferry_agent::qmp::Qmp>,
    ns: String,
    tap: String,
    dir: PathBuf,
}

/// A raw guest's disk: its qcow2 image (made beforehand) and what the guest
/// image's disk writer does with it (`ferry.disk_mib`, `ferry.disk_mbps`).
#[derive(Clone, Copy)]
pub struct RawDisk<'a> {
    pub image: &'a Path,
    pub write_mib: u64,
    pub write_mbps: u32,
}

impl RawVm {
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        env: &Env,
        host: u8,
        name: &str,
        mib: u64,
        ip: &str,
        mac: &str,
        // The URI to wait for a migration on, and the multifd channels (0/1: none).
        incoming: Option<(&str, u32)>,
        dir: &Path,
        // More kernel arguments (e.g. `guest::SAME_BYTES_CMDLINE`).
        extra_cmdline: &str,
    ) -> anyhow::Result<Self> {
        Self::start_with_disk(
            env,
            host,
            name,
            mib,
            ip,
            mac,
            incoming,
            dir,
            None,
            extra_cmdline,
        )
        .await
    }

    /// As [`Self::start`], with a virtio disk (`-drive id=disk0`).
    #[allow(clippy::too_many_arguments)]
    pub async fn start_with_disk(
        env: &Env,
        host: u8,
        name: &str,
        mib: u64,
        ip: &str,
        mac: &str,
        incoming: Option<(&str, u32)>,
        dir: &Path,
        disk: Option<RawDisk<'_>>,
        extra_cmdline: &str,
    ) -> anyhow::Result<Self> {
        let (kernel, initrd) = guest::image();
        let ns = env.lab.ns(host);
        let tap = format!("rq{name}");
        let _ = Command::new("ip")
            .args(["-n", &ns, "link", "del", &tap])
            .stderr(Stdio::null())
            .status();
        for args in [
            vec!["tuntap", "add", "dev", &tap, "mode", "tap", "vnet_hdr"],
            vec!["link", "set", &tap, "master", "fbr-vmnet"],
            vec!["link", "set", &tap, "up"],
        ] {
            let ok = Command::new("ip").args(["-n", &ns]).args(&args).status()?;
            anyhow::ensure!(ok.success(), "ip {args:?} in {ns}");
        }
        let vmdir = dir.join(format!("{name}-{host}"));
        std::fs::create_dir_all(&vmdir)?;
        let qmp_path = vmdir.join("qmp.sock");
        let _ = std::fs::remove_file(&qmp_path);
        let mut c = env.lab.command(host, Path::new("qemu-system-x86_64"));
        c.args(["-machine", "q35,accel=tcg", "-cpu", "qemu64", "-smp", "1"])
            // One page over where Ferry does it: QEMU before 9.0 loses writes when it
            // migrates a TCG guest otherwise (see the agent's `memory_arg`).
            .args([
                "-m",
                &memory_arg(mib, needs_tcg_dirty_padding(&qemu_version(), "tcg")),
            ])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                match disk {
                    Some(d) => format!(
                        "console=ttyS0 quiet ferry.ip={ip}/24 ferry.disk=/dev/vda ferry.disk_mib={} ferry.disk_mbps={} {extra_cmdline}",
                        d.write_mib, d.write_mbps
                    ),
                    None => format!("console=ttyS0 quiet ferry.ip={ip}/24 {extra_cmdline}"),
                }
                .trim_end(),
            ])
            .arg("-serial")
            .arg(format!("file:{}", vmdir.join("console.log").display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp_path.display()))
            .args([
                "-netdev",
                &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            ])
            .args(["-device", &format!("virtio-net-pci,netdev=n0,mac={mac}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(d) = disk {
            c.arg("-drive")
                .arg(format!(
                    "file={},if=none,id=disk0,format=qcow2,node-name=rdisk0",
                    d.image.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=disk0"]);
        }
        if incoming.is_some() {
            c.args(["-incoming", "defer"]);
        }
        let child = c.spawn()?;
        let (qmp, _events) =
            ferry_agent::qmp::Qmp::connect(&qmp_path, Duration::from_secs(30)).await?;
        if let Some((uri, channels)) = incoming {
            // As a user would: the destination's capabilities match the source's.
            if channels > 1 {
                qmp.execute(
                    "migrate-set-capabilities",
                    serde_json::json!({"capabilities": [{"capability": "multifd", "state": true}]}),
                )
                .await?;
                qmp.execute(
                    "migrate-set-parameters",
                    serde_json::json!({"multifd-channels": channels}),
                )
                .await?;
            }
            qmp.execute("migrate-incoming", serde_json::json!({"uri": uri}))
                .await?;
        }
        Ok(Self {
            child,
            qmp,
            ns,
            tap,
            dir: vmdir,
        })
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["-n", &self.ns, "link", "del", &self.tap])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Touches `mib` MiB of fresh memory and frees it, just before a timed move, so
/// that the destination QEMU about to be started gets memory its machine has
/// recently used.
///
/// The lab is itself a VM whose freed memory is reported back to its hypervisor
/// (virtio-balloon free page reporting, order 9): the first touch of memory freed
/// more than a moment ago then costs ~3 ms per MiB (512 MiB: 1.5 s, measured),
/// against ~0.1 ms on a host that keeps it. A destination receives into fresh
/// memory, so without this every contender's total varied up to 3 × with when
/// the memory it got was last used — by luck of timing, not by what it does.
/// Done before every move of every contender; `--cold` leaves it out. In huge
/// pages, as QEMU takes guest RAM (4 KiB pages, once freed, did not reliably
/// come back as the huge pages a destination faults in: 1 move in 3 stayed cold).
pub fn warm_free_memory(mib: u64) {
    const HUGE: usize = 2 << 20;
    let n = (mib as usize) << 20;
    let mut v = vec![0u8; n + HUGE];
    let skip = v.as_ptr().align_offset(HUGE);
    let region = &mut v[skip..skip + n];
    // SAFETY: advice on memory this function owns and keeps alive across the
    // call; MADV_HUGEPAGE changes how it is backed, never its contents.
    #[allow(unsafe_code)]
    let _ = unsafe {
        nix::sys::mman::madvise(
            std::ptr::NonNull::from(&mut *region).cast(),
            n,
            nix::sys::mman::MmapAdvise::MADV_HUGEPAGE,
        )
    };
    for i in (0..n).step_by(4096) {
        region[i] = 1;
    }
    std::hint::black_box(&v);
}
