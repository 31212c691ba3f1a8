#!/bin/sh
# A tiny guest for direct kernel boot: a kernel and a busybox initramfs whose init lists the
# guest's PCI devices (address, vendor:device, class) on the serial console, again whenever the
# list changes (hot-plug), and otherwise idles. Made on the hypervisor host that boots it.
#   pci-listing.sh DIR KERNEL   writes DIR/vmlinuz (a copy of KERNEL) and DIR/initrd.img
# Needs busybox (statically linked: busybox-static).
set -eu
dir="$1"
kernel="$2"
rm -rf "$dir"
mkdir -p "$dir/root/bin" "$dir/root/dev" "$dir/root/proc" "$dir/root/sys"
cp "$(command -v busybox)" "$dir/root/bin/busybox"
cat > "$dir/root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
exec </dev/console >/dev/console 2>&1
list() {
  for d in /sys/bus/pci/devices/*; do
    echo "PASSAGE-PCI ${d##*/} $(cat "$d/vendor"):$(cat "$d/device") $(cat "$d/class")"
  done
}
old=""
while :; do
  new="$(list)"
  if [ "$new" != "$old" ]; then
    echo "PASSAGE-PCI-BEGIN"
    echo "$new"
    echo "PASSAGE-PCI-END"
    old="$new"
  fi
  sleep 2
done
EOF
chmod 755 "$dir/root/init"
(cd "$dir/root" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$dir/initrd.img"
rm -rf "$dir/root"
cp "$kernel" "$dir/vmlinuz"
