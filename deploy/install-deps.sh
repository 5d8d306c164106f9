#!/usr/bin/env bash
# Installs what Ferry's build, tests and demo need and the machine lacks, with
# apt-get (Debian 12). Idempotent and quick when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
qemu_major() { qemu-system-x86_64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\)\..*/\1/p' | head -1; }
codename=$(. /etc/os-release 2>/dev/null; echo "${VERSION_CODENAME:-}")

# QEMU before 9.0 loses guest writes when it live-migrates a TCG guest (the agent
# works around it at a cost, a stall of ~0.5 s per 512 MiB when a move starts: see
# host-agent/src/qemu_vm.rs `memory_arg`), and Ferry's TCG moves pause shorter on
# QEMU 10 (an idle guest on the unshaped lab path: median 6-12 ms against 21 ms on
# 7.2). Debian 12 ships 7.2 and bookworm-backports carries 10.0, so on Debian 12
# Ferry installs that one. FERRY_SYSTEM_QEMU=1 keeps the distribution's.
qemu_was=$(qemu_major)
backports=
if [ -z "${FERRY_SYSTEM_QEMU:-}" ] && [ "$codename" = bookworm ] && [ "${qemu_was:-0}" -lt 9 ]; then
  backports=1
else
  have qemu-system-x86_64 || need+=(qemu-system-x86)
  have qemu-img || need+=(qemu-utils)
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have curl || need+=(curl)
have cc || need+=(gcc)

if [ ${#need[@]} -gt 0 ] || [ -n "$backports" ]; then
  if [ "$(id -u)" != 0 ]; then
    [ ${#need[@]} -gt 0 ] && echo "install-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    [ -n "$backports" ] && echo "install-deps: QEMU ${qemu_was:-none} is older than 9; run as root to install QEMU 10 from bookworm-backports (or set FERRY_SYSTEM_QEMU=1)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  if [ -n "$backports" ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf '%s\n' "Types: deb" "URIs: http://deb.debian.org/debian" "Suites: bookworm-backports" \
      "Components: main" "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" \
      > /etc/apt/sources.list.d/ferry-bookworm-backports.sources
  fi
  apt-get update -qq
  if [ ${#need[@]} -gt 0 ]; then
    echo "install-deps: installing ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
  if [ -n "$backports" ]; then
    echo "install-deps: installing QEMU 10 from bookworm-backports (installed: ${qemu_was:-none})"
    apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 qemu-utils >/dev/null
    echo "install-deps: $(qemu-system-x86_64 --version | head -1)"
  fi
fi

# Debian's postgresql package starts a system cluster; Ferry runs its own, so the
# system one is left as the package set it up.
if ! have cargo; then
  echo "install-deps: cargo (Rust) is not installed; install it with rustup first" >&2
  exit 1
fi
echo "install-deps: ok"
