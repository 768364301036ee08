#!/bin/sh
# Assembles a bootable test initramfs (cpio.gz) from Debian packages, reproducibly:
# busybox-static, the virtio and ext4 modules of the installed linux-image-amd64, the static
# guestd, and the files under initramfs/rootfs (inittab, rcS, the S50guestd init script,
# config, a passwd/shadow with root and the test user "tester"), plus a chpasswd script when
# busybox has no chpasswd applet (Debian's busybox-static has none).
#
# usage: initramfs/build.sh GUESTD_BINARY OUTPUT.cpio.gz
# env:   KVER (default: newest /lib/modules), BUSYBOX (default: /bin/busybox)
set -eu

guestd=${1:?usage: build.sh GUESTD_BINARY OUTPUT.cpio.gz}
out=${2:?usage: build.sh GUESTD_BINARY OUTPUT.cpio.gz}
here=$(cd "$(dirname "$0")" && pwd)
busybox=${BUSYBOX:-/bin/busybox}
kver=${KVER:-$(ls /lib/modules 2>/dev/null | sort -V | tail -n 1)}
install_hint="sudo apt-get install qemu-system-x86 linux-image-amd64 busybox-static"

die() { echo "initramfs: $*" >&2; exit 1; }
[ -x "$busybox" ] || die "no static busybox at $busybox; install it: $install_hint"
"$busybox" --list >/dev/null 2>&1 || die "$busybox does not run"
[ -n "$kver" ] && [ -d "/lib/modules/$kver" ] || die "no kernel modules in /lib/modules; install a kernel: $install_hint"
[ -f "$guestd" ] || die "no guestd binary at $guestd (run make first)"
command -v cpio >/dev/null || die "cpio is missing: sudo apt-get install cpio"

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

mkdir -p "$stage"/bin "$stage"/sbin "$stage"/usr/bin "$stage"/usr/sbin "$stage"/proc \
    "$stage"/sys "$stage"/dev "$stage"/run "$stage"/tmp "$stage"/var/lib/guestd \
    "$stage"/lib/modules "$stage"/root
# /var/run is /run, as on any current distribution (glibc's utmp is /var/run/utmp).
ln -s ../run "$stage/var/run"
cp "$busybox" "$stage/bin/busybox"
for applet in $("$busybox" --list-full); do
    [ -e "$stage/$applet" ] || ln -s /bin/busybox "$stage/$applet"
done

# The virtio modules, then virtio-blk and ext4 for the test disk (/data), in load order (no
# udev, no modprobe database: rcS insmods them).
moddir=/lib/modules/$kver/kernel
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci drivers/char/virtio_console \
         net/core/failover drivers/net/net_failover drivers/net/virtio_net \
         drivers/block/virtio_blk lib/crc16 crypto/crc32c_generic fs/mbcache fs/jbd2/jbd2 fs/ext4/ext4; do
    name=$(basename "$m")
    if [ -f "$moddir/$m.ko" ]; then
        cp "$moddir/$m.ko" "$stage/lib/modules/$name.ko"
    elif [ -f "$moddir/$m.ko.xz" ]; then
        xz -dc "$moddir/$m.ko.xz" > "$stage/lib/modules/$name.ko"
    elif [ -f "$moddir/$m.ko.zst" ]; then
        zstd -qdc "$moddir/$m.ko.zst" > "$stage/lib/modules/$name.ko"
    else
        echo "initramfs: note: $m not found for $kver (built into the kernel?)" >&2
    fi
done

install -m 0755 "$guestd" "$stage/usr/sbin/guestd"
cp -R "$here/rootfs/." "$stage/"
chmod 0755 "$stage/init" "$stage/etc/init.d/rcS" "$stage/etc/init.d/S50guestd"
chmod 0644 "$stage/etc/passwd" "$stage/etc/group"
chmod 0600 "$stage/etc/shadow"
mkdir -p "$stage/data" "$stage/home/tester"
# guest-set-user-password runs chpasswd(8), as qemu-ga does; busybox-static has no such
# applet, so the image carries a shell one over busybox's mkpasswd.
if ! "$busybox" --list | grep -qx chpasswd; then
    rm -f "$stage/usr/sbin/chpasswd"
    install -m 0755 "$here/chpasswd" "$stage/usr/sbin/chpasswd"
fi
find "$stage/etc/guestd/hooks.d" -type f -exec chmod 0755 {} +
[ -f "$here/rootfs/etc/test.sh" ] && chmod 0755 "$stage/etc/test.sh"

# Benchmark images (QEMU_GA=1) also carry Debian's qemu-ga with the libraries it links, so
# both agents can be measured in the same guest; S60qemu-ga starts it.
if [ "${QEMU_GA:-0}" = 1 ]; then
    qga=$(command -v qemu-ga || echo /usr/sbin/qemu-ga)
    [ -x "$qga" ] || die "QEMU_GA=1 needs qemu-ga: sudo apt-get install qemu-guest-agent"
    install -D -m 0755 "$qga" "$stage/usr/sbin/qemu-ga"
    for lib in $(ldd "$qga" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
        [ -f "$lib" ] && install -D -m 0644 "$lib" "$stage$lib"
    done
    # The dynamic loader must sit at the path the binary names.
    interp=$(ldd "$qga" | awk '/ld-linux/ { print $1 }')
    [ -f "$interp" ] && install -D -m 0755 "$interp" "$stage$interp"
    cat > "$stage/etc/init.d/S60qemu-ga" <<'QGA'
#!/bin/sh
# Benchmark image only: qemu-ga on its own virtio port, found through sysfs (no udev).
[ "$1" = start ] || exit 0
for d in /sys/class/virtio-ports/vport*; do
    [ "$(cat "$d/name" 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
    mkdir -p /var/run/qemu-ga
    /usr/sbin/qemu-ga -m virtio-serial -p "/dev/${d##*/}" -t /var/run/qemu-ga \
        -f /run/qemu-ga.pid -d
done
QGA
    chmod 0755 "$stage/etc/init.d/S60qemu-ga"
    # qemu-ga's guest-shutdown runs sysvinit's `shutdown -h|-r -P +0 MESSAGE`; busybox has
    # poweroff, reboot and halt instead.
    cat > "$stage/sbin/shutdown" <<'SHUTDOWN'
#!/bin/sh
# Benchmark image only: sysvinit's shutdown(8) as qemu-ga calls it, over busybox.
case " $* " in
    *" -r "*) exec reboot ;;
    *" -H "*) exec halt ;;
    *) exec poweroff ;;
esac
SHUTDOWN
    chmod 0755 "$stage/sbin/shutdown"
    # The org.qemu.guest_agent.0 port is qemu-ga's here: guestd (which would serve QGA on it
    # by default) keeps to its oVirt port, so each agent has its own port, as before.
    printf '# benchmark image: the QGA port belongs to qemu-ga\nqga = no\n' >> "$stage/etc/guestd.conf"
    cat > "$stage/etc/init.d/S99bench" <<'BENCH'
#!/bin/sh
# Benchmark image only: with no host on either port, count each agent's context switches
# over 10 s (after 10 s of settling) and its resident memory; print them on the console.
[ "$1" = start ] || exit 0
ctx() { awk '/ctxt_switches/ { n += $2 } END { print n }' "/proc/$1/status"; }
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
(
    sleep 10
    g=$(cat /run/guestd.pid); q=$(cat /run/qemu-ga.pid)
    g0=$(ctx "$g"); q0=$(ctx "$q")
    sleep 10
    echo "GUESTD-BENCH guestd_ctx=$(( $(ctx "$g") - g0 )) qemu_ga_ctx=$(( $(ctx "$q") - q0 )) guestd_rss_kb=$(rss "$g") qemu_ga_rss_kb=$(rss "$q")" > /dev/console
) &
BENCH
    chmod 0755 "$stage/etc/init.d/S99bench"
fi

# A utmp record (glibc x86_64 layout, 384 bytes) for a logged-in user, so active-user has
# something real to report: USER_PROCESS, pid 1, tty1, user "tester".
field() { printf '%s' "$1"; head -c $(($2 - ${#1})) /dev/zero; }
{
    printf '\007\000\000\000\001\000\000\000'   # ut_type = 7, padding, ut_pid = 1
    field tty1 32                               # ut_line
    field 1 4                                   # ut_id
    field tester 32                             # ut_user
    field console 256                           # ut_host
    head -c 52 /dev/zero                        # exit, session, tv, addr, reserved
} > "$stage/run/utmp"
[ "$(wc -c < "$stage/run/utmp")" -eq 384 ] || die "utmp record is not 384 bytes"

# Reproducible: fixed timestamps and sorted names.
find "$stage" -exec touch -h -d @0 {} +
(cd "$stage" && find . | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) | gzip -n -9 > "$out"
echo "initramfs: $out ($(wc -c < "$out") bytes, kernel $kver)"
