#!/usr/bin/env bash
# Builds Ferry's test guest offline into target/guest/: `vmlinuz` (Debian's cloud
# kernel, from apt) and `initrd.img` (busybox-static, the virtio modules, an init
# script and the statically linked `ferry-guest`). Downloads are cached in
# target/guest-work; a second run only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OUT=$ROOT/target/guest
WORK=$ROOT/target/guest-work
mkdir -p "$OUT" "$WORK/debs"

debs=$("$ROOT/deploy/guest/fetch-debs.sh" "$WORK/debs")
kdeb=${debs%%$'\n'*}
bdeb=${debs#*$'\n'}

if [ ! -d "$WORK/kernel/boot" ] || [ "$kdeb" -nt "$WORK/kernel/boot" ]; then
  rm -rf "$WORK/kernel" && mkdir -p "$WORK/kernel" && dpkg -x "$kdeb" "$WORK/kernel"
fi
if [ ! -x "$WORK/busybox/bin/busybox" ]; then
  rm -rf "$WORK/busybox" && mkdir -p "$WORK/busybox" && dpkg -x "$bdeb" "$WORK/busybox"
fi

echo "guest: building ferry-guest (static)"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -q -p ferry-guest \
  --target x86_64-unknown-linux-gnu --target-dir "$ROOT/target/guest-build"
guest_bin=$ROOT/target/guest-build/x86_64-unknown-linux-gnu/release/ferry-guest
file_out=$(file "$guest_bin" 2>/dev/null || true)
case "$file_out" in *dynamically*) echo "ferry-guest is not static" >&2; exit 1 ;; esac

rootfs=$WORK/rootfs
rm -rf "$rootfs" && mkdir -p "$rootfs"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$WORK/busybox/bin/busybox" "$rootfs/bin/busybox"
cp "$guest_bin" "$rootfs/bin/ferry-guest"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_blk; do
  f=$(find "$WORK/kernel/lib/modules" -name "$m.ko*" -print -quit)
  [ -n "$f" ] || continue # built into the kernel
  case "$f" in
    *.xz) xz -dc "$f" >"$rootfs/lib/modules/$m.ko" ;;
    *.zst) zstd -dcq "$f" >"$rootfs/lib/modules/$m.ko" ;;
    *) cp "$f" "$rootfs/lib/modules/$m.ko" ;;
  esac
done
cp "$ROOT/deploy/guest/init" "$rootfs/init"
chmod +x "$rootfs/init"
(cd "$rootfs" && find . | "$rootfs/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -6 >"$OUT/initrd.img.tmp")
mv "$OUT/initrd.img.tmp" "$OUT/initrd.img"
vmlinuz=("$WORK"/kernel/boot/vmlinuz-*)
cp "${vmlinuz[0]}" "$OUT/vmlinuz"
echo "guest: $OUT/vmlinuz ($(du -h "$OUT/vmlinuz" | cut -f1)), $OUT/initrd.img ($(du -h "$OUT/initrd.img" | cut -f1))"
