#!/usr/bin/env bash
# Installs what Ferry's build, tests and demo need and the machine lacks, with
# apt-get (Debian 12). Idempotent and quick when everything is there.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }

ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have qemu-system-x86_64 || need+=(qemu-system-x86)
have qemu-img || need+=(qemu-utils)
have ip || need+=(iproute2)
have tc || need+=(iproute2)
have curl || need+=(curl)
have cc || need+=(gcc)

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing ${need[*]}; run as root (or: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's postgresql package starts a system cluster; Ferry runs its own, so the
# system one is left as the package set it up.
if ! have cargo; then
  echo "install-deps: cargo (Rust) is not installed; install it with rustup first" >&2
  exit 1
fi
echo "install-deps: ok"
