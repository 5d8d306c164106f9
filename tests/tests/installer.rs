//! The set-up path as a new user's machine meets it (issue #8): `deploy/install-deps.sh`
//! and the guest image's package fetch (`deploy/guest/fetch-debs.sh`) run with a `PATH`
//! built for each case — symlinks to this machine's real tools minus the ones the case
//! hides — and stand-ins for `apt-get`, `apt-cache` and `id` that record what they were
//! asked and "install" into that `PATH`. Every absolute path the scripts touch
//! (`/etc/os-release`, `/etc/apt`, `/usr/lib/postgresql`) is pointed into the case's
//! temporary directory, so these tests need no root, no network, and change nothing
//! outside it. Each asserts the exact apt calls and the exit status.

use std::collections::HashSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Tools whose presence a case decides; the machine's own copies are never linked.
const MANAGED: &[&str] = &[
    "qemu-system-x86_64",
    "qemu-img",
    "ip",
    "tc",
    "curl",
    "cc",
    "apt-get",
    "apt-cache",
    "id",
    "node",
    "npm",
    "chromium",
    "chromedriver",
    "promtool",
    "python3",
    "nft",
];

/// The machine's Debian mirror as the fixture's apt sources name it.
const MIRROR: &str = "http://apt-proxy.lab.internal:3142/debian";

const APT_GET: &str = r#"#!/bin/bash
echo "apt-get $*" >>"$FAKE_LOG"
args=(); target=
while [ $# -gt 0 ]; do
  case $1 in
    -t) target=$2; shift 2 ;;
    -*) shift ;;
    *) args+=("$1"); shift ;;
  esac
done
stub() { printf '#!/bin/sh\n%s\n' "$2" >"$FAKE_BIN/$1"; chmod +x "$FAKE_BIN/$1"; }
case ${args[0]} in
  update) touch "$FAKE_LISTS" ;;
  install)
    [ -f "$FAKE_LISTS" ] || { echo "E: Unable to locate package ${args[1]}" >&2; exit 100; }
    for p in "${args[@]:1}"; do
      case $p in
        qemu-system-x86)
          v=7.2.15; [ "$target" = bookworm-backports ] && v=10.0.2
          stub qemu-system-x86_64 "echo 'QEMU emulator version $v (Debian 1:$v+ds-1)'" ;;
        qemu-utils) stub qemu-img true ;;
        postgresql) mkdir -p "$FAKE_PG/15/bin"; touch "$FAKE_PG/15/bin/initdb" ;;
        iproute2) stub ip true; stub tc true ;;
        curl) stub curl true ;;
        gcc) stub cc true ;;
        nodejs) stub node true ;;
        npm) stub npm true ;;
        chromium) stub chromium true ;;
        chromium-driver) stub chromedriver true ;;
        prometheus) stub promtool true ;;
        nftables) stub nft true ;;
        python3-venv) stub python3 true ;;
        *) echo "E: Unable to locate package $p" >&2; exit 100 ;;
      esac
    done ;;
  download)
    [ -f "$FAKE_LISTS" ] || { echo "E: Can't select candidate version from package ${args[1]}" >&2; exit 100; }
    touch "${args[1]}_1.0_amd64.deb" ;;
  *) echo "apt-get stand-in: unexpected $*" >&2; exit 2 ;;
esac
"#;

const APT_CACHE: &str = r#"#!/bin/bash
echo "apt-cache $*" >>"$FAKE_LOG"
[ -f "$FAKE_LISTS" ] || { echo "E: No packages found" >&2; exit 100; }
echo "linux-image-cloud-amd64"
echo "  Depends: linux-image-6.1.0-41-cloud-amd64"
"#;

/// One machine as a case describes it, in a temporary directory.
struct Machine {
    dir: tempfile::TempDir,
    uid: u32,
}

impl Machine {
    /// A Debian 12 machine with everything Ferry needs (QEMU 10, PostgreSQL's server
    /// binaries, iproute2, curl, gcc, cargo), apt lists present, as root.
    fn complete() -> Machine {
        let m = Machine::bare();
        m.qemu("10.0.2");
        for t in ["qemu-img", "ip", "tc", "curl", "cc"] {
            m.tool(t);
        }
        m.postgres();
        m.apt_lists();
        m.sources("debian.sources", &deb822(MIRROR));
        m
    }

    /// Bookworm with none of the managed tools and no PostgreSQL, no apt lists, no apt
    /// sources, as root.
    fn bare() -> Machine {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(dir.path().join("apt/sources.list.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("pg")).unwrap();
        std::fs::write(
            dir.path().join("os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n",
        )
        .unwrap();
        let mut seen: HashSet<String> = MANAGED.iter().map(|s| s.to_string()).collect();
        let path = std::env::var_os("PATH").expect("PATH");
        for d in std::env::split_paths(&path) {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if seen.insert(name.clone()) {
                    symlink(e.path(), bin.join(&name)).unwrap();
                }
            }
        }
        let m = Machine { dir, uid: 0 };
        m.script("apt-get", APT_GET);
        m.script("apt-cache", APT_CACHE);
        m
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.path("bin").join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn tool(&self, name: &str) {
        self.script(name, "#!/bin/sh\ntrue\n");
    }

    fn hide(&self, name: &str) {
        std::fs::remove_file(self.path("bin").join(name)).unwrap();
    }

    fn qemu(&self, version: &str) {
        self.script(
            "qemu-system-x86_64",
            &format!("#!/bin/sh\necho 'QEMU emulator version {version} (Debian)'\necho 'Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers'\n"),
        );
    }

    fn postgres(&self) {
        let bin = self.path("pg/15/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("initdb"), "").unwrap();
    }

    fn apt_lists(&self) {
        std::fs::write(self.path("apt-lists"), "").unwrap();
    }

    fn sources(&self, file: &str, text: &str) {
        let p = if file == "sources.list" {
            self.path("apt/sources.list")
        } else {
            self.path("apt/sources.list.d").join(file)
        };
        std::fs::write(p, text).unwrap();
    }

    fn run(&self, script: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
        let root = ferry_tests::workspace();
        let mut cmd = Command::new(root.join(script));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", self.path("bin"))
            .env("HOME", self.dir.path())
            .env("FERRY_OS_RELEASE", self.path("os-release"))
            .env("FERRY_APT_DIR", self.path("apt"))
            .env("FERRY_PG_LIB", self.path("pg"))
            .env("FAKE_BIN", self.path("bin"))
            .env("FAKE_PG", self.path("pg"))
            .env("FAKE_LOG", self.path("apt.log"))
            .env("FAKE_LISTS", self.path("apt-lists"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.script("id", &format!("#!/bin/sh\necho {}\n", self.uid));
        cmd.output().expect("run script")
    }

    fn install(&self, env: &[(&str, &str)]) -> Output {
        self.run("deploy/install-deps.sh", &[], env)
    }

    /// Every apt-get / apt-cache call, in order.
    fn apt_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("apt.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn has(&self, name: &str) -> bool {
        self.path("bin").join(name).exists()
    }

    fn backports_source(&self) -> Option<String> {
        std::fs::read_to_string(self.path("apt/sources.list.d/ferry-bookworm-backports.sources"))
            .ok()
    }
}

fn deb822(uri: &str) -> String {
    format!(
        "Types: deb\n# a snapshot of this archive\nURIs: {uri}\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://security.mirror.lab.internal/debian-security\nSuites: bookworm-security\nComponents: main\n"
    )
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
}

const UPDATE: &str = "apt-get update -qq";
const BACKPORTS_QEMU: &str =
    "apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils";

fn install_plain(pkgs: &str) -> String {
    format!("apt-get install -y -qq --no-install-recommends {pkgs}")
}

#[test]
fn nothing_missing_asks_apt_nothing() {
    let m = Machine::complete();
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
    assert!(String::from_utf8_lossy(&o.stdout).contains("install-deps: ok"));
    assert!(m.backports_source().is_none());
}

#[test]
fn qemu_absent_installs_qemu_10_from_backports_at_the_machines_mirror() {
    let m = Machine::complete();
    m.hide("qemu-system-x86_64");
    m.hide("qemu-img");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), vec![UPDATE, BACKPORTS_QEMU]);
    let src = m.backports_source().expect("backports source written");
    assert!(src.contains(&format!("URIs: {MIRROR}\n")), "{src}");
    assert!(src.contains("Suites: bookworm-backports\n"), "{src}");
    let out = String::from_utf8_lossy(&o.stdout);
    // Said before it is done, with where from.
    let plan = out.find("will install qemu-system-x86 qemu-utils from bookworm-backports at");
    let doing = out.find("installing qemu-system-x86 qemu-utils");
    assert!(plan.is_some() && plan < doing, "{}", text(&o));
    assert!(out.contains("QEMU emulator version 10.0.2"), "{}", text(&o));
}

#[test]
fn qemu_7_present_is_replaced_from_backports() {
    let m = Machine::complete();
    m.qemu("7.2.15");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), vec![UPDATE, BACKPORTS_QEMU]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("QEMU installed: 7"));
}

#[test]
fn the_mirror_comes_from_a_one_line_sources_list_too() {
    let m = Machine::complete();
    std::fs::remove_file(m.path("apt/sources.list.d/debian.sources")).unwrap();
    m.sources(
        "sources.list",
        "# deb cdrom:[Debian 12]/ bookworm main\ndeb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://local-mirror.lab.internal/debian bookworm main contrib\ndeb http://local-mirror.lab.internal/debian-security bookworm-security main\n",
    );
    m.qemu("7.2.15");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    let src = m.backports_source().expect("backports source written");
    assert!(
        src.contains("URIs: http://local-mirror.lab.internal/debian\n"),
        "{src}"
    );
}

#[test]
fn backports_already_configured_is_used_as_it_is() {
    let m = Machine::complete();
    m.sources(
        "backports.list",
        "deb http://somewhere.lab.internal/debian bookworm-backports main\n",
    );
    m.qemu("7.2.15");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), vec![UPDATE, BACKPORTS_QEMU]);
    assert!(m.backports_source().is_none(), "a second backports source");
}

#[test]
fn no_mirror_found_stops_with_the_command_to_run_by_hand() {
    let m = Machine::complete();
    std::fs::remove_file(m.path("apt/sources.list.d/debian.sources")).unwrap();
    m.hide("qemu-system-x86_64");
    let o = m.install(&[]);
    assert_exit(&o, 1);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bookworm-backports main' >"), "{}", text(&o));
    assert!(err.contains("FERRY_SYSTEM_QEMU=1"), "{}", text(&o));
    assert!(m.backports_source().is_none());
}

#[test]
fn qemu_img_absent_installs_qemu_utils_alone() {
    let m = Machine::complete();
    m.hide("qemu-img");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![
            UPDATE,
            "apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-utils"
        ]
    );
    assert!(m.has("qemu-img"));
}

#[test]
fn postgres_server_binaries_absent_installs_postgresql() {
    let m = Machine::complete();
    std::fs::remove_dir_all(m.path("pg/15")).unwrap();
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![UPDATE.to_string(), install_plain("postgresql")]
    );
    assert!(m.path("pg/15/bin/initdb").exists());
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("will install postgresql from the distribution (bookworm"));
}

#[test]
fn ip_and_tc_absent_ask_for_iproute2_once() {
    let m = Machine::complete();
    m.hide("ip");
    m.hide("tc");
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![UPDATE.to_string(), install_plain("iproute2")]
    );
}

#[test]
fn a_fresh_machine_gets_everything_in_two_installs() {
    let m = Machine::bare();
    m.sources("debian.sources", &deb822(MIRROR));
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![
            UPDATE.to_string(),
            install_plain("postgresql iproute2 curl gcc"),
            BACKPORTS_QEMU.to_string()
        ]
    );
    for t in ["qemu-system-x86_64", "qemu-img", "ip", "tc", "curl", "cc"] {
        assert!(m.has(t), "{t} not installed");
    }
}

#[test]
fn not_root_with_something_missing_says_so_and_asks_apt_nothing() {
    let mut m = Machine::complete();
    m.uid = 1000;
    m.hide("qemu-system-x86_64");
    m.hide("curl");
    let o = m.install(&[]);
    assert_exit(&o, 1);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("curl qemu-system-x86 qemu-utils are missing")
            && err.contains("sudo ./deploy/install-deps.sh"),
        "{}",
        text(&o)
    );
    assert!(
        m.backports_source().is_none(),
        "wrote apt sources as a user"
    );
}

#[test]
fn not_root_with_nothing_missing_is_fine() {
    let mut m = Machine::complete();
    m.uid = 1000;
    let o = m.install(&[]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
}

#[test]
fn system_qemu_keeps_7_2_and_installs_the_distributions_when_absent() {
    let m = Machine::complete();
    m.qemu("7.2.15");
    let o = m.install(&[("FERRY_SYSTEM_QEMU", "1")]);
    assert_exit(&o, 0);
    assert_eq!(m.apt_calls(), Vec::<String>::new());

    m.hide("qemu-system-x86_64");
    let o = m.install(&[("FERRY_SYSTEM_QEMU", "1")]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![UPDATE.to_string(), install_plain("qemu-system-x86")]
    );
    assert!(m.backports_source().is_none());
}

#[test]
fn cargo_absent_is_named() {
    let m = Machine::complete();
    if m.has("cargo") {
        m.hide("cargo");
    }
    let o = m.install(&[]);
    assert_exit(&o, 1);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cargo (Rust) is not installed"));
}

#[test]
fn guest_packages_with_empty_apt_lists_update_once_then_fetch() {
    let m = Machine::bare();
    let o = m.run("deploy/guest/fetch-debs.sh", &["debs"], &[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![
            "apt-cache depends linux-image-cloud-amd64",
            UPDATE,
            "apt-cache depends linux-image-cloud-amd64",
            "apt-get download linux-image-6.1.0-41-cloud-amd64",
            "apt-get download busybox-static",
        ]
    );
    let debs = m.path("debs");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!(
            "{}\n{}\n",
            debs.join("linux-image-6.1.0-41-cloud-amd64_1.0_amd64.deb")
                .display(),
            debs.join("busybox-static_1.0_amd64.deb").display()
        )
    );
}

#[test]
fn guest_packages_already_cached_are_not_downloaded_again() {
    let m = Machine::bare();
    m.apt_lists();
    let debs = m.path("debs");
    std::fs::create_dir_all(&debs).unwrap();
    for f in [
        "linux-image-6.1.0-41-cloud-amd64_6.1.158-1_amd64.deb",
        "busybox-static_1.35.0-4+b3_amd64.deb",
    ] {
        std::fs::write(debs.join(f), "").unwrap();
    }
    let o = m.run("deploy/guest/fetch-debs.sh", &["debs"], &[]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec!["apt-cache depends linux-image-cloud-amd64"]
    );
    assert!(Path::new(String::from_utf8_lossy(&o.stdout).lines().next().unwrap()).exists());
}

/// The test target's extra tools (`FERRY_DEPS=test`, as `make test-deps` runs it).
const TEST_TOOLS: &[&str] = &[
    "node",
    "npm",
    "chromium",
    "chromedriver",
    "promtool",
    "python3",
    "nft",
];

#[test]
fn test_deps_on_a_machine_without_them_install_node_npm_chromium_its_driver_and_promtool() {
    let m = Machine::complete();
    let o = m.install(&[("FERRY_DEPS", "test")]);
    assert_exit(&o, 0);
    assert_eq!(
        m.apt_calls(),
        vec![
            UPDATE.to_string(),
            install_plain("nodejs npm chromium chromium-driver prometheus python3-venv nftables")
        ]
    );
    for t in TEST_TOOLS {
        assert!(m.has(t), "{t} not installed");
    }
    // Without FERRY_DEPS=test (make demo, make build) none of them is asked for.
    let plain = Machine::complete();
    assert_exit(&plain.install(&[]), 0);
    assert_eq!(plain.apt_calls(), Vec::<String>::new());
}

#[test]
fn test_deps_present_ask_apt_nothing_and_one_missing_is_installed_alone() {
    let m = Machine::complete();
    for t in TEST_TOOLS {
        m.tool(t);
    }
    assert_exit(&m.install(&[("FERRY_DEPS", "test")]), 0);
    assert_eq!(m.apt_calls(), Vec::<String>::new());
    m.hide("chromedriver");
    assert_exit(&m.install(&[("FERRY_DEPS", "test")]), 0);
    assert_eq!(
        m.apt_calls(),
        vec![UPDATE.to_string(), install_plain("chromium-driver")]
    );
}

#[test]
fn web_deps_run_npm_ci_once_per_lockfile_and_name_what_is_missing() {
    let m = Machine::complete();
    let web = m.path("web");
    std::fs::create_dir_all(&web).unwrap();
    std::fs::write(web.join("package-lock.json"), "{\"lockfileVersion\": 3}\n").unwrap();
    let web_s = web.display().to_string();
    // No npm: it says how to get it, and fails.
    let o = m.run("deploy/web-deps.sh", &[], &[("FERRY_WEB_DIR", &web_s)]);
    assert_exit(&o, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("make test-deps"),
        "{}",
        text(&o)
    );
    // An npm that records its calls and makes node_modules, as npm ci does.
    m.script(
        "npm",
        "#!/bin/sh\necho \"npm $*\" >>\"$FAKE_LOG\"\nmkdir -p node_modules\n",
    );
    assert_exit(
        &m.run("deploy/web-deps.sh", &[], &[("FERRY_WEB_DIR", &web_s)]),
        0,
    );
    assert_exit(
        &m.run("deploy/web-deps.sh", &[], &[("FERRY_WEB_DIR", &web_s)]),
        0,
    );
    assert_eq!(
        m.apt_calls(),
        vec!["npm ci --no-audit --no-fund --loglevel=error"],
        "npm ci runs once for one lockfile"
    );
    // A changed lockfile installs again.
    std::fs::write(
        web.join("package-lock.json"),
        "{\"lockfileVersion\": 3, \"x\": 1}\n",
    )
    .unwrap();
    assert_exit(
        &m.run("deploy/web-deps.sh", &[], &[("FERRY_WEB_DIR", &web_s)]),
        0,
    );
    assert_eq!(m.apt_calls().len(), 2);
}

#[test]
fn contract_deps_make_the_schemathesis_venv_once_per_requirements_and_name_what_is_missing() {
    let m = Machine::complete();
    let req = m.path("contract-requirements.txt");
    std::fs::write(&req, "schemathesis==4.32.5\n").unwrap();
    let venv = m.path("venv");
    let env = [
        ("FERRY_CONTRACT_REQUIREMENTS", req.to_str().unwrap()),
        ("FERRY_CONTRACT_VENV", venv.to_str().unwrap()),
    ];
    // No python3: it says how to get it, and fails.
    let o = m.run("deploy/contract-deps.sh", &[], &env);
    assert_exit(&o, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("make test-deps"),
        "{}",
        text(&o)
    );
    // A python3 whose venv module makes a pip that records its calls and
    // installs the schemathesis command, as pip does.
    m.script(
        "python3",
        r##"#!/bin/sh
[ "$1" = -c ] && exit 0
[ "$1 $2" = "-m venv" ] || exit 2
mkdir -p "$3/bin"
printf '#!/bin/sh\necho "pip $*" >>"$FAKE_LOG"\nprintf "#!/bin/sh\\n" >"%s/bin/schemathesis"; chmod +x "%s/bin/schemathesis"\n' "$3" "$3" >"$3/bin/pip"
chmod +x "$3/bin/pip"
"##,
    );
    assert_exit(&m.run("deploy/contract-deps.sh", &[], &env), 0);
    assert_exit(&m.run("deploy/contract-deps.sh", &[], &env), 0);
    let pip = format!(
        "pip install --quiet --disable-pip-version-check -r {}",
        req.display()
    );
    assert_eq!(m.apt_calls(), vec![pip.clone()], "pip runs once");
    assert!(venv.join("bin/schemathesis").exists());
    // Changed requirements install again, into a fresh environment.
    std::fs::write(&req, "schemathesis==4.33.0\n").unwrap();
    assert_exit(&m.run("deploy/contract-deps.sh", &[], &env), 0);
    assert_eq!(m.apt_calls(), vec![pip.clone(), pip]);
}
