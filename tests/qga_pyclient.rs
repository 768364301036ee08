// SPDX-License-Identifier: Apache-2.0
//! A third-party client against the real binary: PyPI's `qemu.qmp`, used the way QEMU's own
//! `qemu-ga-client` uses it (`tests/py/qga_client.py`), on `--qga-channel unix-listen:PATH`.
//! Needs python3; `qemu.qmp` is installed with pip when missing. The test fails, naming
//! what is missing, when neither works: it is never skipped silently.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Agent, Dir, isolation};

fn python(args: &[&str]) -> Option<Output> {
    Command::new("python3").args(args).output().ok()
}

fn has_qemu_qmp() -> bool {
    python(&["-c", "import qemu.qmp.legacy"]).is_some_and(|o| o.status.success())
}

/// Makes `qemu.qmp` importable, or panics saying why it is not.
fn ensure_qemu_qmp() {
    let Some(v) = python(&["--version"]) else {
        panic!("python3 is not installed: this test needs python3 and PyPI's qemu.qmp");
    };
    assert!(v.status.success(), "python3 --version failed");
    if has_qemu_qmp() {
        return;
    }
    let mut tried = Vec::new();
    for extra in [&[][..], &["--break-system-packages"][..]] {
        let mut args = vec!["-m", "pip", "install", "--quiet", "qemu.qmp"];
        args.extend_from_slice(extra);
        let out = python(&args);
        if has_qemu_qmp() {
            return;
        }
        tried.push(format!(
            "python3 {}: {}",
            args.join(" "),
            out.map_or("did not run".into(), |o| String::from_utf8_lossy(&o.stderr)
                .trim()
                .to_owned())
        ));
    }
    panic!(
        "PyPI's qemu.qmp is not installed and could not be (install python3-pip, then \
         `pip install qemu.qmp`):\n{}",
        tried.join("\n")
    );
}

#[test]
fn qemu_qmp_legacy_client_talks_to_guestd() {
    ensure_qemu_qmp();
    let dir = Dir::new("qga-py");
    let agent = Agent::start_qga(dir.path(), &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/qga_client.py");
    let out = python(&[script.to_str().unwrap(), agent.qga.to_str().unwrap()]).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the qemu.qmp client failed:\n{stdout}\n{}\nguestd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log_text()
    );
    for step in [
        "guest-ping ok",
        "guest-sync ok",
        "guest-info ok",
        "kv round trip ok",
        "unknown command ok: CommandNotFound",
        "done",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(step)),
            "{step:?} missing:\n{stdout}"
        );
    }
    // What the client set is in the guest's store.
    let g = Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "1"])
        .args(isolation(dir.path()))
        .args(["-g", "from-python"])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    assert_eq!(
        String::from_utf8(g.stdout).unwrap(),
        "caf\u{e9} \u{2713} \u{1F600}\n"
    );
}
