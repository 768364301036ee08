#!/bin/sh
# Boots the test image under QEMU (TCG, no KVM needed) with the guest agent's virtio-serial
# port on a host UNIX socket. QEMU is the socket server (server=on,wait=off), as with
# libvirt, so host tools connect as clients whenever they like.
#
# usage: initramfs/run-vm.sh SOCKET CONSOLE_LOG [extra qemu args...]
# env:   KERNEL (default /boot/vmlinuz-<newest>), INITRD (default build/initramfs.cpio.gz),
#        MEM (MiB, default 256), SMP (default 1), REBOOT=1 to let a guest reboot (by default
#        a guest reboot ends QEMU, like a power-off), QGA_SOCKET (a second virtio-serial
#        port, org.qemu.guest_agent.0, on this host socket, also with QEMU as the server),
#        DISK (a raw disk image attached as virtio-blk /dev/vda; the image mounts an ext4
#        one at /data)
set -eu
sock=${1:?usage: run-vm.sh SOCKET CONSOLE_LOG [qemu args...]}
log=${2:?usage: run-vm.sh SOCKET CONSOLE_LOG [qemu args...]}
shift 2
kver=$(ls /lib/modules 2>/dev/null | sort -V | tail -n 1)
kernel=${KERNEL:-/boot/vmlinuz-$kver}
initrd=${INITRD:-build/initramfs.cpio.gz}
hint="sudo apt-get install qemu-system-x86 linux-image-amd64 busybox-static"
command -v qemu-system-x86_64 >/dev/null || { echo "run-vm: qemu-system-x86_64 is missing: $hint" >&2; exit 1; }
[ -r "$kernel" ] || { echo "run-vm: no readable kernel at $kernel: $hint" >&2; exit 1; }
[ -r "$initrd" ] || { echo "run-vm: no initramfs at $initrd (make initramfs)" >&2; exit 1; }
rm -f "$sock"
noreboot=-no-reboot
[ "${REBOOT:-0}" = 1 ] && noreboot=
# Optional devices, as positional parameters after the caller's extra arguments.
if [ -n "${QGA_SOCKET:-}" ]; then
    rm -f "$QGA_SOCKET"
    set -- "$@" -chardev "socket,id=qga0,path=$QGA_SOCKET,server=on,wait=off" \
        -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0
fi
if [ -n "${DISK:-}" ]; then
    [ -r "$DISK" ] || { echo "run-vm: no disk image at $DISK" >&2; exit 1; }
    set -- "$@" -drive "file=$DISK,if=virtio,format=raw"
fi
exec qemu-system-x86_64 -accel tcg -m "${MEM:-256}" -smp "${SMP:-1}" $noreboot \
    -display none -monitor none -serial "file:$log" \
    -kernel "$kernel" -initrd "$initrd" -append "console=ttyS0 quiet panic=-1" \
    -device virtio-serial \
    -chardev "socket,id=ga0,path=$sock,server=on,wait=off" \
    -device virtserialport,chardev=ga0,name=ovirt-guest-agent.0 \
    -netdev user,id=n0,restrict=on \
    -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56 \
    "$@"
