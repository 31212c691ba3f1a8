#!/usr/bin/env bash
# A lab hypervisor host with a real (emulated) IOMMU, for the passthrough tests:
#
#   iommu-host.sh start          boot it (or find it running) and print its libvirt URI
#   iommu-host.sh stop           power it off again if `start` started it
#   iommu-host.sh exec CMD...    run CMD as root inside it (stdout and stderr merged, its exit status)
#   iommu-host.sh console        print its serial console so far
#   iommu-host.sh guest-kernel   print the path of a small kernel for guests of the lab host
#
# The lab host is a q35 guest under QEMU/TCG with QEMU's emulated Intel IOMMU (`-device
# intel-iommu`, Debian's kernel booted with `intel_iommu=on`), so VFIO inside it is real VFIO:
# real IOMMU groups, real vfio-pci binding, a real libvirtd that detaches and reattaches devices.
# Its root file system is this machine's own userland shared read-only over 9p, with tmpfs where
# the host must write (/etc is a copy), so it runs the same libvirtd and QEMU as this machine.
#
# Its PCI devices, as a GPU server would have them (the "GPUs" are QEMU's display devices, PCI
# vendor 0x1234, which the portal counts as GPUs when `[inventory] gpu_vendors` lists 0x1234):
#   01:00.0  standard VGA (class 0x030000), alone behind root port 00:02.0
#   02:00.0  standard VGA (class 0x030000), alone behind root port 00:03.0
#   03:00.0  secondary VGA (class 0x038000) with 03:00.1 its HD audio function, both behind root
#            port 00:04.0 in one IOMMU group: a GPU with its audio function, assigned together
#   04:00.0  an e1000e NIC behind root port 00:05.0, an ordinary device the portal must ignore
#   the virtio NIC and 9p share the lab host uses itself, and the ICH9 functions (one group).
#
# TEST LAB ONLY: libvirtd listens on TCP with `auth_tcp = "none"` and the command channel runs
# anything it is sent as root. Both are forwarded to 127.0.0.1 on this machine only, never to
# another interface. Never point this at anything but a throwaway test machine.
#
# Needs root on Debian 12 with bookworm's QEMU 7.2 and libvirt 9.0 (installed as
# tests/services/libvirtd.sh installs them). The kernel package and the initramfs are kept in
# $PASSAGE_LAB_CACHE (default /var/cache/passage-ci/lab) between runs.
#
# Environment: PASSAGE_LAB_LIBVIRT_PORT (default 16519) and PASSAGE_LAB_EXEC_PORT (default 16520)
# on 127.0.0.1; PASSAGE_LAB_MEMORY_MIB (default 3072).
set -euo pipefail

CACHE="${PASSAGE_LAB_CACHE:-/var/cache/passage-ci/lab}"
RUN=/run/passage-lab
LIBVIRT_PORT="${PASSAGE_LAB_LIBVIRT_PORT:-16519}"
EXEC_PORT="${PASSAGE_LAB_EXEC_PORT:-16520}"
MEMORY_MIB="${PASSAGE_LAB_MEMORY_MIB:-3072}"
URI="qemu+tcp://127.0.0.1:$LIBVIRT_PORT/system"
# The modules the initramfs needs to mount the 9p root, in dependency order.
ROOT_MODULES=(virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  netfs fscache 9pnet 9pnet_virtio 9p)

say() { printf 'iommu-host: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_packages() {
  local missing=() pkg
  for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86 \
    busybox-static socat udev kmod pci.ids; do
    installed "$pkg" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]}"
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
    libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
    qemu-system-x86/bookworm qemu-system-common/bookworm qemu-system-data/bookworm \
    qemu-utils/bookworm busybox-static socat udev kmod pci.ids >&2
}

# Debian's kernel: the package linux-image-amd64 depends on, unpacked (not installed) once.
kernel_version() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/{sub("linux-image-", "", $2); print $2; exit}'
}

prepare_kernel() {
  local version
  if [ -f "$CACHE/kernel.version" ]; then
    version="$(cat "$CACHE/kernel.version")"
    [ -f "$CACHE/kernel/boot/vmlinuz-$version" ] && { echo "$version"; return 0; }
  fi
  version="$(kernel_version)"
  if [ -z "$version" ]; then
    apt-get update -qq >&2
    version="$(kernel_version)"
  fi
  [ -n "$version" ] || die "cannot find the kernel package that linux-image-amd64 depends on"
  say "fetching Debian's kernel linux-image-$version"
  mkdir -p "$CACHE"
  rm -rf "$CACHE/kernel" "$CACHE"/linux-image-*.deb
  (cd "$CACHE" && apt-get download "linux-image-$version" >&2 2>/dev/null) \
    || (cd "$CACHE" && apt-get update -qq >&2 && apt-get download "linux-image-$version" >&2)
  dpkg-deb -x "$CACHE"/linux-image-"$version"_*.deb "$CACHE/kernel"
  rm -f "$CACHE"/linux-image-*.deb
  depmod -b "$CACHE/kernel" "$version"
  rm -f "$CACHE/initrd.img"
  echo "$version" > "$CACHE/kernel.version"
  echo "$version"
}

# A small kernel for the lab host's own guests (level 2, nested TCG, where every second of boot
# counts): Debian's cloud kernel, which has far fewer drivers to probe than the generic one. The
# lab host sees it at the same path. Prints that path.
prepare_guest_kernel() {
  local version
  version="$(prepare_kernel)"
  version="${version%-amd64}-cloud-amd64"
  local kernel="$CACHE/guest-kernel/boot/vmlinuz-$version"
  [ -f "$kernel" ] && { echo "$kernel"; return 0; }
  say "fetching Debian's cloud kernel linux-image-$version for the lab host's guests"
  rm -rf "$CACHE/guest-kernel" "$CACHE"/linux-image-*.deb
  (cd "$CACHE" && apt-get download "linux-image-$version" >&2 2>/dev/null) \
    || (cd "$CACHE" && apt-get update -qq >&2 && apt-get download "linux-image-$version" >&2)
  dpkg-deb -x "$CACHE"/linux-image-"$version"_*.deb "$CACHE/guest-kernel"
  rm -f "$CACHE"/linux-image-*.deb
  # The kernel alone: its modules are not needed by the guests' initramfs.
  rm -rf "$CACHE/guest-kernel/lib" "$CACHE/guest-kernel/usr"
  echo "$kernel"
}

# The initramfs: busybox, the 9p modules, and an init that mounts this machine's root read-only,
# lays tmpfs over what must be writable and hands over to the lab host's own init (below).
prepare_initrd() {
  local version="$1" dir module path
  [ -f "$CACHE/initrd.img" ] && [ "$CACHE/initrd.img" -nt "${BASH_SOURCE[0]}" ] && return 0
  say "building the lab host's initramfs"
  dir="$(mktemp -d)"
  mkdir -p "$dir"/{bin,dev,proc,sys,newroot,modules}
  cp /bin/busybox "$dir/bin/busybox"
  for module in "${ROOT_MODULES[@]}"; do
    path="$(find "$CACHE/kernel/lib/modules/$version" -name "$module.ko" | head -n1)"
    [ -n "$path" ] && cp "$path" "$dir/modules/"
  done
  cat > "$dir/init" <<EOF
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in ${ROOT_MODULES[*]}; do
  [ -f /modules/\$m.ko ] && insmod /modules/\$m.ko
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /newroot \
  || { echo "cannot mount the host's root over 9p"; poweroff -f; }
mount -t tmpfs -o mode=0755 tmpfs /newroot/run
for d in /tmp /var/tmp /root; do mount -t tmpfs -o mode=1777 tmpfs /newroot\$d; done
chmod 0700 /newroot/root
for d in /var/lib/libvirt /var/log /var/cache/libvirt /var/lib/udev; do
  [ -d /newroot\$d ] && mount -t tmpfs -o mode=0755 tmpfs /newroot\$d
done
# /etc is small: a writable copy, so that the lab host can have its own configuration.
mkdir -p /etc-copy && mount -t tmpfs -o mode=0755 tmpfs /etc-copy
cp -a /newroot/etc/. /etc-copy/ 2>/dev/null
mount --move /etc-copy /newroot/etc
# The guest kernel's modules replace this machine's.
mount -t tmpfs -o mode=0755 tmpfs /newroot/usr/lib/modules
mkdir -p /newroot/usr/lib/modules/$version
mount --bind /newroot$CACHE/kernel/lib/modules/$version /newroot/usr/lib/modules/$version
cp /lab-init /newroot/run/lab-init
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash /run/lab-init
EOF
  chmod +x "$dir/init"
  lab_init > "$dir/lab-init"
  (cd "$dir" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$CACHE/initrd.img.new"
  mv "$CACHE/initrd.img.new" "$CACHE/initrd.img"
  rm -rf "$dir"
}

# The lab host's own init (PID 1, bash from this machine's userland): devices, network, udev,
# vfio-pci, libvirtd on TCP, the command channel.
lab_init() {
  cat <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
exec </dev/console >/dev/console 2>&1
echo "lab-init: starting"
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null || true
hostname lab-host
echo "127.0.0.1 localhost lab-host" > /etc/hosts
# The management NIC (virtio) carries libvirt and the command channel through QEMU's user net.
echo "lab-init: $(cut -d" " -f1 /proc/uptime) network"
modprobe virtio_net
for dev in /sys/class/net/*; do
  [ "$(basename "$(readlink -f "$dev/device/driver" 2>/dev/null)")" = virtio_net ] || continue
  nic="$(basename "$dev")"
  ip link set lo up
  ip link set "$nic" up
  ip addr add 10.0.2.15/24 dev "$nic"
  ip route add default via 10.0.2.2
done
# udev loads every device's driver (bochs-drm, snd_hda_intel, e1000e, ...) and keeps the
# PCI database names that libvirt reports.
echo "lab-init: $(cut -d" " -f1 /proc/uptime) udev"
/lib/systemd/systemd-udevd --daemon
udevadm trigger --type=subsystems --action=add
udevadm trigger --type=devices --subsystem-match=pci --action=add
udevadm settle --timeout=120
echo "lab-init: $(cut -d" " -f1 /proc/uptime) vfio-pci"
modprobe vfio-pci
cat > /etc/libvirt/libvirtd.conf <<'CONF'
listen_tls = 0
listen_tcp = 1
listen_addr = "0.0.0.0"
tcp_port = "16509"
auth_tcp = "none"
CONF
printf 'user = "root"\ngroup = "root"\n' > /etc/libvirt/qemu.conf
mkdir -p /var/log/libvirt/qemu /var/lib/libvirt/images /var/cache/libvirt
echo "lab-init: $(cut -d" " -f1 /proc/uptime) libvirtd"
/usr/sbin/virtlogd -d
/usr/sbin/libvirtd -d --listen
# The command channel: one base64 line in, the command's output and a status line out.
cat > /run/lab-exec <<'CMD'
#!/bin/bash
read -r line
command="$(printf '%s' "$line" | base64 -d)"
bash -c "$command" </dev/null 2>&1
echo "__PASSAGE_LAB_STATUS=$?"
CMD
chmod +x /run/lab-exec
# -t: commands over 9p are slow to start; socat must wait for their output after the request ends.
socat -t 3600 TCP-LISTEN:7000,reuseaddr,fork EXEC:/run/lab-exec &
echo "lab-init: command channel pid $!"
for _ in $(seq 300); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.5; done
echo "lab-init: $(cut -d" " -f1 /proc/uptime) ready"
echo "PASSAGE-LAB-READY"
while :; do sleep 3600 & wait $!; done
EOF
}

running() {
  [ -f "$RUN/qemu.pid" ] && kill -0 "$(cat "$RUN/qemu.pid")" 2>/dev/null
}

exec_in_lab() {
  local command="$*" reply status
  command -v socat >/dev/null || die "socat is missing: run start first"
  reply="$(printf '%s\n' "$(printf '%s' "$command" | base64 -w0)" \
    | socat -t 3600 - "TCP:127.0.0.1:$EXEC_PORT" 2>/dev/null)" || true
  # Output that does not end with a line break (a serial log being written) has the status
  # marker glued to its last line: it is found and cut off there too.
  status="$(printf '%s\n' "$reply" | sed -n 's/^.*__PASSAGE_LAB_STATUS=\([0-9]*\)$/\1/p' | tail -n1)"
  printf '%s\n' "$reply" | sed -e '/^__PASSAGE_LAB_STATUS=[0-9]*$/d' -e 's/__PASSAGE_LAB_STATUS=[0-9]*$//'
  [ -n "$status" ] || { say "no answer from the lab host's command channel"; return 255; }
  return "$status"
}

start() {
  install_packages
  if running && virsh -c "$URI" version >/dev/null 2>&1; then
    echo "$URI"
    return 0
  fi
  running && stop
  local version began
  began=$(date +%s)
  version="$(prepare_kernel)"
  prepare_initrd "$version"
  prepare_guest_kernel >/dev/null
  # The lab host mounts its kernel's modules here; a container image may lack the directory.
  mkdir -p /usr/lib/modules "$RUN"
  : > "$RUN/console.log"
  say "booting the lab host (kernel $version)"
  qemu-system-x86_64 \
    -name passage-lab-host -machine q35,accel=tcg -cpu max -smp 2 -m "$MEMORY_MIB" \
    -device intel-iommu \
    -vga none -display none -monitor none -nodefaults \
    -serial "file:$RUN/console.log" \
    -kernel "$CACHE/kernel/boot/vmlinuz-$version" -initrd "$CACHE/initrd.img" \
    -append "console=ttyS0 intel_iommu=on panic=-1 quiet loglevel=4" \
    -device pcie-root-port,id=rp1,chassis=1,slot=1,addr=0x2 \
    -device VGA,bus=rp1,id=gpu0 \
    -device pcie-root-port,id=rp2,chassis=2,slot=2,addr=0x3 \
    -device VGA,bus=rp2,id=gpu1 \
    -device pcie-root-port,id=rp3,chassis=3,slot=3,addr=0x4 \
    -device secondary-vga,bus=rp3,addr=0.0,multifunction=on,id=gpu2 \
    -device ich9-intel-hda,bus=rp3,addr=0.1,id=gpu2-audio \
    -device pcie-root-port,id=rp4,chassis=4,slot=4,addr=0x5 \
    -netdev user,id=lan,restrict=on -device e1000e,bus=rp4,netdev=lan \
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot,addr=0x6 \
    -netdev "user,id=mgmt,hostfwd=tcp:127.0.0.1:$LIBVIRT_PORT-:16509,hostfwd=tcp:127.0.0.1:$EXEC_PORT-:7000" \
    -device virtio-net-pci,netdev=mgmt,addr=0x7 \
    -daemonize -pidfile "$RUN/qemu.pid"
  touch "$RUN/started"
  for _ in $(seq 600); do
    if grep -q PASSAGE-LAB-READY "$RUN/console.log" 2>/dev/null \
      && virsh -c "$URI" version >/dev/null 2>&1; then
      say "ready after $(( $(date +%s) - began )) s"
      echo "$URI"
      return 0
    fi
    running || { tail -n 40 "$RUN/console.log" >&2; die "the lab host stopped while booting"; }
    sleep 0.5
  done
  tail -n 40 "$RUN/console.log" >&2
  stop
  die "the lab host did not become ready within 300 s"
}

stop() {
  [ -f "$RUN/started" ] || return 0
  if running; then
    local pid
    pid="$(cat "$RUN/qemu.pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/qemu.pid" "$RUN/started"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  exec) shift; [ $# -gt 0 ] || die "usage: $0 exec CMD..."; exec_in_lab "$@" ;;
  console) cat "$RUN/console.log" ;;
  guest-kernel) prepare_guest_kernel ;;
  *) echo "usage: $0 start|stop|exec CMD...|console|guest-kernel" >&2; exit 2 ;;
esac
