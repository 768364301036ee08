#!/bin/sh
# make demo: boot the test image under QEMU with guestd inside, ask it for its facts with
# guestctl from the host side, print them, then shut the VM down through guestd.
set -eu
cd "$(dirname "$0")/.."
dir=$(mktemp -d)
sock=$dir/ga.sock
trap 'kill "$qemu" 2>/dev/null || true; wait "$qemu" 2>/dev/null || true; rm -rf "$dir"' EXIT
initramfs/run-vm.sh "$sock" "$dir/console.log" &
qemu=$!
echo "demo: VM booting (console log: $dir/console.log); asking guestd for its facts..."
start=$(date +%s)
target/debug/guestctl --socket "$sock" --timeout 60 info
echo "demo: answered $(( $(date +%s) - start )) s after QEMU start"
echo "demo: guestctl shutdown"
target/debug/guestctl --socket "$sock" --timeout 30 shutdown --message "guestd demo is done"
i=0
while kill -0 "$qemu" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if kill -0 "$qemu" 2>/dev/null; then
    echo "demo: the VM did not power off within 30 s" >&2
    exit 1
fi
echo "demo: the VM powered off $(( $(date +%s) - start )) s after QEMU start"
