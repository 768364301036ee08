#!/bin/sh
# Installs what booting the test image needs (e2fsprogs: the smoke tests' test disk), on
# Debian: as root with apt-get, otherwise it prints the command to run.
set -eu
pkgs="qemu-system-x86 linux-image-amd64 busybox-static cpio e2fsprogs"
missing=""
command -v qemu-system-x86_64 >/dev/null || missing="$missing qemu-system-x86"
ls /boot/vmlinuz-* >/dev/null 2>&1 || missing="$missing linux-image-amd64"
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing="$missing busybox-static"
command -v cpio >/dev/null || missing="$missing cpio"
command -v mkfs.ext4 >/dev/null || [ -x /sbin/mkfs.ext4 ] || missing="$missing e2fsprogs"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q $pkgs >/dev/null
else
    echo "missing:$missing; install with: sudo apt-get install $pkgs" >&2
    exit 1
fi
