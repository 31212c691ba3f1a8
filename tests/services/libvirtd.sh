#!/usr/bin/env bash
# A real libvirtd with QEMU (TCG) for the hypervisor tests, without systemd: `start` prints the URI
# to export as PASSAGE_TEST_LIBVIRT_URI; `stop` stops the daemons again if `start` started them.
# Needs root. libvirt 9.0 must be paired with Debian 12's own QEMU 7.2 (newer QEMU rejects the
# options this libvirt passes), so QEMU packages are pinned to bookworm.
set -euo pipefail
STATE=/run/passage-test-libvirtd.started
URI=qemu:///system

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

start() {
  local missing=0
  for pkg in libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86; do
    installed "$pkg" || missing=1
  done
  if [ "$missing" = 1 ]; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
      libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients \
      qemu-system-x86/bookworm qemu-system-common/bookworm qemu-system-data/bookworm \
      qemu-utils/bookworm >&2
  fi
  if virsh -c "$URI" version >/dev/null 2>&1; then
    echo "$URI"
    return 0
  fi
  getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
  getent passwd libvirt-qemu >/dev/null \
    || useradd --system -g libvirt-qemu -d /var/lib/libvirt -M -s /usr/sbin/nologin libvirt-qemu
  mkdir -p /var/log/libvirt/qemu /run/libvirt
  # Running QEMU as root spares every API call a fresh capability probe.
  grep -q '^user = "root"' /etc/libvirt/qemu.conf 2>/dev/null \
    || printf 'user = "root"\ngroup = "root"\n' >> /etc/libvirt/qemu.conf
  pgrep -x virtlogd >/dev/null || /usr/sbin/virtlogd -d -p /run/passage-virtlogd.pid
  /usr/sbin/libvirtd -d -p /run/passage-libvirtd.pid
  touch "$STATE"
  for _ in $(seq 300); do
    virsh -c "$URI" version >/dev/null 2>&1 && { echo "$URI"; return 0; }
    sleep 0.2
  done
  echo "libvirtd did not answer on $URI within 60 s" >&2
  exit 1
}

stop() {
  [ -f "$STATE" ] || return 0
  for pidfile in /run/passage-libvirtd.pid /run/passage-virtlogd.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  done
  rm -f "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
