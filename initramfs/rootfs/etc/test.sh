#!/bin/sh
# Test hook of the image: once a second, print guestd's context-switch counters to the
# console, so the host-side smoke test can check that the agent sleeps while detached.
while true; do
    pid=$(cat /run/guestd.pid 2>/dev/null)
    if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
        v=$(sed -n 's/^voluntary_ctxt_switches:[[:space:]]*//p' "/proc/$pid/status")
        n=$(sed -n 's/^nonvoluntary_ctxt_switches:[[:space:]]*//p' "/proc/$pid/status")
        echo "GUESTD-CTX $v $n" > /dev/console
    fi
    sleep 1
done
