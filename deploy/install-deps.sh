#!/usr/bin/env bash
# Installs what Ferry's build, tests and demo need and the machine lacks, with
# apt-get (Debian 12). Says what it will install, and from where, before it does;
# changes nothing when everything is there. `make deps` runs this step alone.
#
# A command whose failure is an expected answer ("is QEMU installed?", "is there a
# backports suite?") is always asked inside an `if`/`||`, never as a bare pipeline:
# under `set -euo pipefail` a missing program's 127 would end the script before it
# installed anything (issue #8). tests/tests/installer.rs runs this script with a
# PATH built for each case and stand-ins for apt-get, apt-cache and id.
set -euo pipefail

# What the script reads or writes by absolute path; the installer tests point these
# into their temporary directory, so nothing outside it is touched.
OS_RELEASE=${FERRY_OS_RELEASE:-/etc/os-release}
APT_DIR=${FERRY_APT_DIR:-/etc/apt}
PG_LIB=${FERRY_PG_LIB:-/usr/lib/postgresql}

say() { echo "install-deps: $*"; }
have() { command -v "$1" >/dev/null 2>&1; }

# The installed QEMU's major version; empty when there is none.
qemu_major() {
  local v
  have qemu-system-x86_64 || return 0
  v=$(qemu-system-x86_64 --version 2>/dev/null) || return 0
  if [[ $v =~ version\ ([0-9]+)\. ]]; then echo "${BASH_REMATCH[1]}"; fi
}

os_codename() {
  [ -r "$OS_RELEASE" ] || return 0
  (. "$OS_RELEASE" && echo "${VERSION_CODENAME:-}")
}

# The URI this machine's apt already uses for the Debian suite "$1". Machines behind
# a local mirror or proxy reach only that one, so backports must come from it too.
# Reads one-line `deb [opts] URI suite comp…` files and deb822 `.sources` stanzas.
debian_mirror() {
  local suite=$1 f found=
  for f in "$APT_DIR/sources.list" "$APT_DIR"/sources.list.d/*.list; do
    [ -r "$f" ] || continue
    found=$(awk -v s="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == s) { print $i; exit }
      }' "$f")
    [ -n "$found" ] && break
  done
  if [ -z "$found" ]; then
    for f in "$APT_DIR"/sources.list.d/*.sources; do
      [ -r "$f" ] || continue
      found=$(awk -v s="$suite" '
        BEGIN { RS = ""; FS = "\n" }
        {
          types = ""; uris = ""; suites = ""; enabled = "yes"
          for (i = 1; i <= NF; i++) {
            line = $i
            if (line ~ /^[ \t]*#/) continue
            if (sub(/^[Tt]ypes:[ \t]*/, "", line)) types = line
            else if (sub(/^URIs:[ \t]*/, "", line)) uris = line
            else if (sub(/^[Ss]uites:[ \t]*/, "", line)) suites = line
            else if (sub(/^[Ee]nabled:[ \t]*/, "", line)) enabled = line
          }
          if (enabled != "no" && (" " types " ") ~ / deb / && (" " suites " ") ~ (" " s " ")) {
            split(uris, u, " "); print u[1]; exit
          }
        }' "$f")
      [ -n "$found" ] && break
    done
  fi
  echo "$found"
}

need=()    # from the machine's own suites
need_bp=() # from bookworm-backports
add() {
  local -n list=$1
  local p
  for p in "${list[@]}"; do [ "$p" = "$2" ] && return 0; done
  list+=("$2")
}

codename=$(os_codename)
qemu_was=$(qemu_major)

# QEMU before 9.0 loses guest writes when it live-migrates a TCG guest (the agent
# works around it at a cost, a stall of ~0.5 s per 512 MiB when a move starts: see
# host-agent/src/qemu_vm/memory.rs), and Ferry's TCG moves pause shorter on QEMU 10
# (an idle guest on the unshaped lab path: median 6-12 ms against 21 ms on 7.2).
# Debian 12 ships 7.2 and bookworm-backports carries 10.0, so on Debian 12 Ferry
# takes QEMU from there. FERRY_SYSTEM_QEMU=1 keeps the distribution's.
qemu_list=need
if [ -z "${FERRY_SYSTEM_QEMU:-}" ] && [ "$codename" = bookworm ]; then
  qemu_list=need_bp
  if [ "${qemu_was:-0}" -lt 9 ]; then
    add need_bp qemu-system-x86
    add need_bp qemu-utils
  fi
fi
have qemu-system-x86_64 || add "$qemu_list" qemu-system-x86
have qemu-img || add "$qemu_list" qemu-utils
compgen -G "$PG_LIB/*/bin/initdb" >/dev/null || add need postgresql
have ip || add need iproute2
have tc || add need iproute2
have curl || add need curl
have cc || add need gcc
# What only `make test` needs (FERRY_DEPS=test, set by the Makefile's test target):
# Node.js and npm fetch the dashboard's chart library and the accessibility checker
# from the npm registry (web/package-lock.json); Chromium and ChromeDriver run the
# browser tests; promtool (Debian's prometheus package) lints both /metrics;
# python3 with its venv module holds schemathesis, the API contract checker
# (deploy/contract-deps.sh installs it from PyPI); nft (nftables) drops packets at
# random and redirects connections through a delay relay in the fault campaign.
if [ "${FERRY_DEPS:-}" = test ]; then
  have node || add need nodejs
  have npm || add need npm
  have chromium || add need chromium
  have chromedriver || add need chromium-driver
  have promtool || add need prometheus
  if ! have python3 || ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    add need python3-venv
  fi
  have nft || add need nftables
fi

if [ ${#need[@]} -gt 0 ] || [ ${#need_bp[@]} -gt 0 ]; then
  mirror=
  if [ ${#need_bp[@]} -gt 0 ]; then
    bp_configured=
    if grep -rqs -- "bookworm-backports" "$APT_DIR/sources.list" "$APT_DIR/sources.list.d/"; then
      bp_configured=1
    else
      mirror=$(debian_mirror bookworm)
    fi
  fi
  [ ${#need[@]} -gt 0 ] && say "will install ${need[*]} from the distribution (${codename:-unknown release}, apt's configured sources)"
  if [ ${#need_bp[@]} -gt 0 ]; then
    if [ -n "$bp_configured" ]; then
      say "will install ${need_bp[*]} from bookworm-backports (already in apt's sources); QEMU installed: ${qemu_was:-none}"
    elif [ -n "$mirror" ]; then
      say "will install ${need_bp[*]} from bookworm-backports at $mirror (the mirror apt uses for bookworm), adding it as $APT_DIR/sources.list.d/ferry-bookworm-backports.sources; QEMU installed: ${qemu_was:-none}"
    else
      say "QEMU ${qemu_was:-(none)} must come from bookworm-backports, but no source for bookworm was found in $APT_DIR/sources.list or $APT_DIR/sources.list.d/" >&2
      say "add the backports suite of your Debian mirror by hand, then run make again:" >&2
      echo "  echo 'deb http://<your-debian-mirror>/debian bookworm-backports main' > $APT_DIR/sources.list.d/bookworm-backports.list" >&2
      say "or keep the distribution's QEMU: FERRY_SYSTEM_QEMU=1 make …" >&2
      exit 1
    fi
  fi
  if [ "$(id -u)" != 0 ]; then
    all=("${need[@]}" "${need_bp[@]}")
    say "${all[*]} are missing and installing them needs root: run make as root, or first: sudo ./deploy/install-deps.sh" >&2
    [ ${#need_bp[@]} -gt 0 ] && say "(QEMU ${qemu_was:-none} is older than 9 or absent; FERRY_SYSTEM_QEMU=1 keeps the distribution's)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -n "$mirror" ]; then
    mkdir -p "$APT_DIR/sources.list.d"
    printf '%s\n' "Types: deb" "URIs: $mirror" "Suites: bookworm-backports" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      >"$APT_DIR/sources.list.d/ferry-bookworm-backports.sources"
  fi
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if [ ${#need_bp[@]} -gt 0 ]; then
    say "installing ${need_bp[*]} from bookworm-backports"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports "${need_bp[@]}" >/dev/null
    v=$(qemu-system-x86_64 --version)
    say "now ${v%%$'\n'*}"
  fi
fi

# Debian's postgresql package starts a system cluster; Ferry runs its own, so the
# system one is left as the package set it up.
if ! have cargo; then
  say "cargo (Rust) is not installed; install it with rustup first" >&2
  exit 1
fi
say "ok"
