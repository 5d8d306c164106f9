#!/usr/bin/env bash
# Downloads the two Debian packages the test guest is made from into DIR (cached:
# a package already there is not fetched again) and prints their paths, the
# kernel's first: Debian's current cloud kernel (the package
# linux-image-cloud-amd64 depends on) and busybox-static.
#
# On a machine whose apt lists are empty, `apt-cache depends` fails (exit 100) and
# `apt-get download` finds nothing: both are answers meaning "run apt-get update
# first", so each is asked inside an `if`, and the lists are updated once, then
# asked again. tests/tests/installer.rs runs this with stand-ins for apt-get and
# apt-cache.
#
#   deploy/guest/fetch-debs.sh DIR
set -euo pipefail
dir=${1:?usage: fetch-debs.sh DIR}
mkdir -p "$dir"
cd "$dir"

updated=
update_once() {
  [ -n "$updated" ] && return 0
  echo "guest: apt lists are empty or stale; running apt-get update" >&2
  apt-get update -qq
  updated=1
}

kernel_package() {
  local out
  out=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null) || return 0
  awk '/Depends: linux-image-/ { print $2; exit }' <<<"$out"
}

# The cached .deb of package $1, if any.
cached() {
  local f
  for f in "$1"_*.deb; do
    if [ -f "$f" ]; then echo "$PWD/$f"; return 0; fi
  done
}

fetch() {
  local pkg=$1
  if [ -z "$(cached "$pkg")" ]; then
    if ! apt-get download "$pkg" >/dev/null 2>&1; then
      update_once
      apt-get download "$pkg" >/dev/null
    fi
  fi
  local f
  f=$(cached "$pkg")
  [ -n "$f" ] || { echo "guest: apt-get download $pkg left no ${pkg}_*.deb in $PWD" >&2; exit 1; }
  echo "$f"
}

kpkg=$(kernel_package)
if [ -z "$kpkg" ]; then
  update_once
  kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || { echo "guest: apt knows no linux-image-cloud-amd64 even after apt-get update" >&2; exit 1; }
fetch "$kpkg"
fetch busybox-static
