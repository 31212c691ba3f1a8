#!/usr/bin/env bash
# A bootable Debian 12 guest image with cloud-init, built from Debian packages, for the tests that
# boot a real guest. Prints the path of the qcow2 image on stdout; everything else goes to stderr.
#
#   tests/services/guest-image.sh [build]   build it unless cached, print its path
#   tests/services/guest-image.sh path      print the cached image's path, or fail when not built
#
# The image is an ordinary BIOS-bootable disk, as any cloud image is: an MBR with SYSLINUX, a
# small FAT partition holding the kernel, initrd and SYSLINUX's configuration, and an ext4 root.
# It is made without loop devices or mounts (mmdebstrap into a directory, `mkfs.ext4 -d`, mtools,
# `syslinux --install` on a file), so it builds in an unprivileged container as well as on CI.
# Cached in $PASSAGE_GUEST_CACHE (default /var/cache/passage-ci/guest) under a name that changes
# whenever this script does. Needs root (mmdebstrap's root mode, apt-get for missing packages).
set -euo pipefail

WORK=""
CACHE="${PASSAGE_GUEST_CACHE:-/var/cache/passage-ci/guest}"
SUITE=bookworm
MIRROR="${PASSAGE_GUEST_MIRROR:-http://deb.debian.org/debian}"
DISK_MIB=3072
BOOT_MIB=128
PACKAGES=(systemd-sysv udev dbus cloud-init openssh-server sudo curl ca-certificates iproute2
  ifupdown isc-dhcp-client netbase linux-image-cloud-amd64 initramfs-tools)
SELF_HASH="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)"
IMAGE="$CACHE/debian-12-cloud-init-$SELF_HASH.qcow2"

say() { echo "guest-image: $*" >&2; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_tools() {
  local missing=() pkg
  for pkg in mmdebstrap syslinux syslinux-common mtools dosfstools e2fsprogs fdisk qemu-utils; do
    installed "$pkg" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  apt-get update -qq >&2
  # qemu-utils from bookworm, to match the QEMU 7.2 that libvirt 9.0 needs (tests/services/libvirtd.sh).
  local wanted=()
  for pkg in "${missing[@]}"; do
    [ "$pkg" = qemu-utils ] && pkg=qemu-utils/bookworm
    wanted+=("$pkg")
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    "${wanted[@]}" >&2
}

build() {
  if [ -f "$IMAGE" ]; then
    echo "$IMAGE"
    return 0
  fi
  [ "$(id -u)" = 0 ] || { say "needs root"; exit 1; }
  mkdir -p "$CACHE"
  # One build at a time; whoever waited finds the image made.
  exec 9>"$CACHE/.lock"
  flock 9
  if [ -f "$IMAGE" ]; then
    echo "$IMAGE"
    return 0
  fi
  # What an interrupted build left behind.
  rm -rf "$CACHE"/build.*
  install_tools
  local work started
  started=$(date +%s)
  WORK="$(mktemp -d "$CACHE/build.XXXXXX")"
  trap 'rm -rf "$WORK"' EXIT
  work="$WORK"
  local root="$work/root"

  say "mmdebstrap $SUITE (${PACKAGES[*]})"
  local include
  include="$(IFS=,; echo "${PACKAGES[*]}")"
  mmdebstrap --variant=minbase --include="$include" \
    --customize-hook='echo passage-guest > "$1/etc/hostname"' \
    --customize-hook='printf "LABEL=passage-root / ext4 defaults,errors=remount-ro 0 1\n" > "$1/etc/fstab"' \
    --customize-hook='printf "datasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n" > "$1/etc/cloud/cloud.cfg.d/90-passage.cfg"' \
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key*' \
    --customize-hook='rm -f "$1/etc/machine-id"; : > "$1/etc/machine-id"' \
    "$SUITE" "$root" "$MIRROR" >&2
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages

  local kernel initrd
  kernel="$(find "$root/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)"
  initrd="$(find "$root/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)"
  [ -n "$kernel" ] && [ -n "$initrd" ] || { say "no kernel or initrd under $root/boot"; exit 1; }

  say "the boot partition: SYSLINUX, $(basename "$kernel")"
  local boot="$work/boot.fat"
  mkfs.vfat -n PASSAGEBOOT -C "$boot" $((BOOT_MIB * 1024)) >&2
  cat >"$work/syslinux.cfg" <<'EOF'
SERIAL 0 115200
DEFAULT debian
TIMEOUT 0
PROMPT 0
LABEL debian
  LINUX /vmlinuz
  INITRD /initrd.img
  APPEND root=LABEL=passage-root rw console=tty0 console=ttyS0,115200n8
EOF
  mcopy -i "$boot" "$kernel" ::/vmlinuz
  mcopy -i "$boot" "$initrd" ::/initrd.img
  mcopy -i "$boot" "$work/syslinux.cfg" ::/syslinux.cfg
  syslinux --install "$boot"

  say "the root file system (ext4 from the tree, no mount)"
  local root_mib=$((DISK_MIB - BOOT_MIB - 1))
  local rootfs="$work/root.ext4"
  mkfs.ext4 -q -L passage-root -d "$root" "$rootfs" "${root_mib}M" >&2

  say "the disk: MBR, boot partition, root partition"
  local disk="$work/disk.raw"
  truncate -s "${DISK_MIB}M" "$disk"
  printf 'label: dos\nstart=1MiB, size=%sMiB, type=c, bootable\nstart=%sMiB, type=83\n' \
    "$BOOT_MIB" $((BOOT_MIB + 1)) | sfdisk -q "$disk" >&2
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$boot" of="$disk" bs=1M seek=1 conv=notrunc,sparse status=none
  dd if="$rootfs" of="$disk" bs=1M seek=$((BOOT_MIB + 1)) conv=notrunc,sparse status=none

  qemu-img convert -f raw -O qcow2 "$disk" "$work/image.qcow2"
  mv "$work/image.qcow2" "$IMAGE"
  # Older builds of this script are of no further use.
  find "$CACHE" -maxdepth 1 -name 'debian-12-cloud-init-*.qcow2' ! -path "$IMAGE" -delete
  say "built $IMAGE in $(( $(date +%s) - started )) s ($(du -h "$IMAGE" | cut -f1))"
  echo "$IMAGE"
}

case "${1:-build}" in
  build) build ;;
  path) [ -f "$IMAGE" ] && echo "$IMAGE" || { say "not built: run $0 build"; exit 1; } ;;
  *) echo "usage: $0 [build|path]" >&2; exit 2 ;;
esac
