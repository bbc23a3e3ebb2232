#!/bin/bash
# Builds packyard's test guest into DIR (default /var/lib/packyard/guest):
#
#   vmlinuz      the host's Debian kernel (/boot/vmlinuz-*, package linux-image-amd64), copied
#   initrd.img   a gzip'd cpio built here: /bin/busybox (busybox-static), the few kernel modules the
#                guest needs (virtio NIC and disk, ACPI power button, evdev) and an /init that
#                mounts proc/sys/dev, prints `packyard-guest: up` on the serial console (ttyS0),
#                a heartbeat every 5 s, serves GET /healthz on port 80 once it has an address (busybox
#                httpd, for health checks), and powers off on an ACPI power-button press (busybox acpid)
#   cmdline      the kernel command line to boot it with (direct kernel boot)
#   disk.qcow2   the same guest as a BIOS-bootable disk (for `vm: {disk: ...}`): sector 0 holds
#                boot.S (a 512-byte loader, assembled here with binutils), sector 1 the command line,
#                then the kernel and the initramfs. No partition table, no file system: the disk
#                case tests the disk path (overlay, SeaBIOS boot from the image), and the guest is
#                the same busybox guest, which runs from its initramfs.
#
# Idempotent and fast on re-runs: a stamp of the inputs (this script, boot.S, kernel, busybox)
# skips the build when nothing changed. Needs: cpio, gzip, qemu-img, as + ld (binutils).
set -euo pipefail

OUT=${1:-/var/lib/packyard/guest}
HERE=$(cd "$(dirname "$0")" && pwd)
KERNEL=${PACKYARD_GUEST_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1)}
BUSYBOX=${PACKYARD_GUEST_BUSYBOX:-/bin/busybox}
CMDLINE="console=ttyS0 nokaslr quiet panic=-1"

[ -n "$KERNEL" ] && [ -r "$KERNEL" ] || { echo "build.sh: no kernel in /boot (apt-get install linux-image-amd64)" >&2; exit 1; }
file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked' || [ -x "$BUSYBOX" ] || {
    echo "build.sh: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
KVER=${KERNEL##*/vmlinuz-}
MODDIR=/lib/modules/$KVER/kernel
# load order matters: dependencies first (modules.dep of the Debian kernel)
MODULES="drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko
drivers/virtio/virtio_pci_legacy_dev.ko drivers/virtio/virtio_pci_modern_dev.ko
drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko
drivers/net/virtio_net.ko drivers/block/virtio_blk.ko drivers/acpi/button.ko drivers/input/evdev.ko"

mkdir -p "$OUT"
stamp=$( { cat "$0" "$HERE/boot.S"; stat -Lc '%n %s %Y' "$KERNEL" "$BUSYBOX";
           for m in $MODULES; do stat -Lc '%n %s %Y' "$MODDIR/$m" 2>/dev/null || true; done; } | sha256sum)
if [ -f "$OUT/.stamp" ] && [ "$(cat "$OUT/.stamp")" = "$stamp" ] &&
   [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initrd.img" ] && [ -f "$OUT/disk.qcow2" ]; then
    exit 0
fi

work=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

# -- initramfs ------------------------------------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,dev,proc,sys,tmp,run,var/log,var/run,etc/acpi/PWRF,lib/modules}
cp "$BUSYBOX" "$root/bin/busybox"
for app in sh mount umount mkdir cat echo sleep insmod poweroff sync acpid ip ifconfig \
           free uname ls grep sed hostname dmesg ps kill mdev lsmod httpd; do
    ln -s busybox "$root/bin/$app"
done
i=0
for m in $MODULES; do
    if [ -f "$MODDIR/$m" ]; then
        i=$((i + 1))
        cp "$MODDIR/$m" "$root/lib/modules/$(printf %02d $i)-${m##*/}"
    fi
done
# busybox acpid maps the power button's input event to the key PWRF, acpid.conf maps PWRF to
# the action PWRF/00000080, and acpid runs that file under its -c directory
cat >"$root/etc/acpi/PWRF/00000080" <<'EOF'
#!/bin/sh
echo "packyard-guest: power button, powering off" >/dev/console
sync
poweroff -f
EOF
chmod +x "$root/etc/acpi/PWRF/00000080"
echo "PWRF PWRF/00000080" >"$root/etc/acpid.conf"
cat >"$root/init" <<'EOF'
#!/bin/sh
# packyard test guest: PID 1 (it must never exit: the kernel would panic)
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for pass in 1 2; do   # a second pass for modules whose dependencies sort after them
    for m in /lib/modules/*.ko; do insmod "$m" 2>/dev/null; done
done
acpid -c /etc/acpi -a /etc/acpid.conf -l /var/log/acpid.log
ip link set lo up
# packyard.ip=ADDR/PREFIX[,GATEWAY] on the command line: the address the agent allocated for eth0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    packyard.ip=*)
        spec=${arg#packyard.ip=}
        ip link set eth0 up && ip addr add "${spec%%,*}" dev eth0
        case "$spec" in *,*) ip route add default via "${spec#*,}" ;; esac
        # something for tcp and http health checks to reach: GET /healthz answers 200
        mkdir -p /www && echo ok >/www/healthz && httpd -p 80 -h /www
        ;;
    esac
done
nics=$(ls /sys/class/net | grep -v '^lo$' | tr '\n' ' ')
boot=kernel
grep -q 'packyard.boot=disk' /proc/cmdline && boot=disk
mem=$(grep MemTotal /proc/meminfo | sed 's/  */ /g')
addrs=$(ip -o -4 addr show | grep -v ' lo ' | sed 's/.* inet \([^ ]*\).*/\1/' | tr '\n' ' ')
echo "packyard-guest: up boot=$boot nics=[${nics% }] addrs=[${addrs% }] $mem" >/dev/console
if grep -q 'packyard.debug' /proc/cmdline; then
    { lsmod; ls -l /dev/input; ps; cat /proc/bus/input/devices; } >/dev/console 2>&1
fi
n=0
while :; do
    sleep 5
    n=$((n + 1))
    echo "packyard-guest: heartbeat $n" >/dev/console
done
EOF
chmod +x "$root/init"
# reproducible archive: fixed mtimes, sorted names
find "$root" -exec touch -h -d @0 {} +
(cd "$root" && find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n) >"$work/initrd.img"

# -- disk image -------------------------------------------------------------------------------------
as -o "$work/boot.o" "$HERE/boot.S"
ld -Ttext 0x7c00 -e _start --oformat binary -o "$work/boot.bin" "$work/boot.o"
[ "$(stat -c %s "$work/boot.bin")" = 512 ] || { echo "build.sh: boot.S is not 512 bytes" >&2; exit 1; }
le32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $((($1 >> 8) & 255)) $((($1 >> 16) & 255)) $((($1 >> 24) & 255)); }
ksize=$(stat -Lc %s "$KERNEL")
isize=$(stat -c %s "$work/initrd.img")
ksec=$(((ksize + 511) / 512))
isec=$(((isize + 511) / 512))
# params at 0x1e4 (boot.S): kernel_lba, kernel_sectors, initrd_lba, initrd_sectors, initrd_bytes
printf "$(le32 2)$(le32 $ksec)$(le32 $((2 + ksec)))$(le32 $isec)$(le32 $isize)" |
    dd of="$work/boot.bin" bs=1 seek=$((0x1e4)) conv=notrunc status=none
raw=$work/disk.raw
cp "$work/boot.bin" "$raw"
{ printf '%s packyard.boot=disk' "$CMDLINE"; printf '\0'; } | dd of="$raw" bs=512 seek=1 conv=sync status=none
dd if="$KERNEL" of="$raw" bs=512 seek=2 conv=sync status=none
dd if="$work/initrd.img" of="$raw" bs=512 seek=$((2 + ksec)) conv=sync status=none
truncate -s 32M "$raw"
qemu-img convert -q -f raw -O qcow2 "$raw" "$work/disk.qcow2"

# -- publish (each file atomically) -----------------------------------------------------------------
cp "$KERNEL" "$work/vmlinuz"
echo "$CMDLINE" >"$work/cmdline"
for f in vmlinuz initrd.img cmdline disk.qcow2; do
    chmod 0644 "$work/$f"
    mv -f "$work/$f" "$OUT/$f"
done
echo "$stamp" >"$OUT/.stamp"
echo "build.sh: guest in $OUT (kernel $KVER, initrd $((isize / 1024)) KiB)"
