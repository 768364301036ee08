# SPDX-License-Identifier: Apache-2.0
"""A third-party QGA client against guestd: PyPI's qemu.qmp, used the way QEMU's own
qemu-ga-client (python/qemu/utils/qemu_ga_client.py) uses it: the legacy synchronous
QEMUMonitorProtocol on a UNIX socket, connect(negotiate=False), guest-ping, then
guest-sync with a random id. Run by tests/qga_pyclient.rs: python3 qga_client.py SOCKET.
Prints one line per check; any failure raises (exit status 1)."""

import random
import sys

from qemu.qmp import ExecuteError
from qemu.qmp.legacy import QEMUMonitorProtocol

KV = "__io.github.guestd_"


def main(path):
    qga = QEMUMonitorProtocol(path)
    # qemu-ga sends no greeting and wants no qmp_capabilities.
    assert qga.connect(negotiate=False) is None
    qga.settimeout(20)

    assert qga.cmd("guest-ping") == {}
    print("guest-ping ok")

    uid = random.randint(0, (1 << 32) - 1)
    assert qga.cmd("guest-sync", id=uid) == uid
    print("guest-sync ok", uid)

    info = qga.cmd("guest-info")
    names = {c["name"]: c["enabled"] for c in info["supported_commands"]}
    for name in ["guest-ping", "guest-sync", "guest-info", KV + "set-param",
                 KV + "get-param", KV + "get-messages"]:
        assert names.get(name) is True, (name, sorted(names))
    assert isinstance(info["version"], str)
    print("guest-info ok", len(names), "commands")

    value = "caf\u00e9 \u2713 \U0001F600"
    assert qga.cmd(KV + "set-param", key="from-python", value=value) == {}
    got = qga.cmd(KV + "get-param", key="from-python")
    assert got == {"key": "from-python", "value": value, "origin": "host"}, got
    print("kv round trip ok")

    try:
        qga.cmd("guest-frobnicate")
    except ExecuteError as e:
        assert e.error_class == "CommandNotFound", e.error_class
        print("unknown command ok:", e.error_class)
    else:
        raise AssertionError("guest-frobnicate did not fail")

    # The connection is still in step after the error.
    assert qga.cmd("guest-sync", id=uid + 1) == uid + 1
    qga.close()
    print("done")


if __name__ == "__main__":
    main(sys.argv[1])
