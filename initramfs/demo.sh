#!/bin/sh
# make demo: boot the test image under QEMU with guestd inside, ask it for its facts with
# guestctl from the host side, print them, and stop the VM.
set -eu
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
sock=$dir/ga.sock
trap 'kill "$qemu" 2>/dev/null; wait "$qemu" 2>/dev/null; rm -rf "$dir"' EXIT
initramfs/run-vm.sh "$sock" "$dir/console.log" &
qemu=$!
echo "demo: VM booting (console log: $dir/console.log); asking guestd for its facts..."
start=$(date +%s)
target/debug/guestctl --socket "$sock" --timeout 60 info
echo "demo: answered $(( $(date +%s) - start )) s after QEMU start; stopping the VM"
