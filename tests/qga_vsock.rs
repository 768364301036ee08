// SPDX-License-Identifier: Apache-2.0
//! `--qga-channel vsock-listen:PORT` through the real binary. Nothing on a test machine can
//! connect over vsock (no vhost-vsock, no loopback transport, and the host CID 2 is never
//! dialled), so these tests check what can be checked: the agent binds and listens on the
//! port (a second bind is refused with EADDRINUSE while it runs and succeeds after it
//! exits), stays idle while nobody connects, and exits with an error naming the channel when
//! the socket cannot be bound. Accepting, reading and writing over vsock are not exercised.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Agent, Dir, isolation};
use guestd::sys::{VSOCK_CID_ANY, VsockListener};

const SEC: Duration = Duration::from_secs(1);

/// A vsock port this test process has not used yet, free right now; `None` when the kernel
/// has no vsock at all (the error is checked to say so).
fn free_port() -> Option<u32> {
    static N: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = N.fetch_add(1, Ordering::SeqCst);
        let port = 0x6000_0000 + (std::process::id() << 4) + n;
        match VsockListener::bind(VSOCK_CID_ANY, port) {
            Ok(_) => return Some(port),
            Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => continue,
            Err(e) => {
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::ENODEV)),
                    "unexpected vsock error: {e}"
                );
                return None;
            }
        }
    }
}

/// Runs guestd with `--qga-channel=SPEC`, expecting it to exit at once; its stderr.
fn failing_agent(dir: &Dir, spec: &str) -> String {
    let out = Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "1", "--ovirt=no"])
        .arg(format!("--qga-channel={spec}"))
        .args(isolation(dir.path()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "guestd with {spec} did not fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_for_log(agent: &Agent, text: &str) {
    let deadline = Instant::now() + 10 * SEC;
    while !agent.log_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no {text:?} in the log:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_agent_listens_on_a_vsock_port_and_sleeps_while_nobody_connects() {
    let dir = Dir::new("qga-vsock");
    let Some(port) = free_port() else {
        // No vsock in this kernel: the agent must say so and exit.
        let err = failing_agent(&dir, "vsock-listen:1234");
        assert!(
            err.contains("listening on vsock-listen:1234: "),
            "the error does not name the channel: {err}"
        );
        return;
    };
    let spec = format!("--qga-channel=vsock-listen:{port}");
    let mut agent = Agent::start(dir.path(), &[&spec]);
    wait_for_log(
        &agent,
        &format!("waiting for a host peer on vsock-listen:{port}"),
    );
    // The agent holds the port.
    let e = VsockListener::bind(VSOCK_CID_ANY, port).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
    // The loop is running (the control socket answers) and then wakes for nothing.
    let out = Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "1", "-l"])
        .args(isolation(dir.path()))
        .output()
        .unwrap();
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(300));
    let before = agent.context_switches();
    std::thread::sleep(2 * SEC);
    let woke = agent.context_switches() - before;
    assert!(woke <= 1, "the idle agent woke {woke} times in 2 s");
    // Gone with the agent.
    assert!(agent.signal_and_wait("TERM").success());
    VsockListener::bind(VSOCK_CID_ANY, port).unwrap();
}

#[test]
fn an_unusable_vsock_address_stops_the_agent_with_the_channel_named() {
    let dir = Dir::new("qga-vsock-bad");
    let Some(port) = free_port() else {
        let err = failing_agent(&dir, "vsock-listen:99");
        assert!(err.contains("listening on vsock-listen:99: "), "{err}");
        return;
    };
    // A CID that is not this machine's.
    let err = failing_agent(&dir, &format!("vsock-listen:1985229328:{port}"));
    assert!(
        err.contains(&format!(
            "listening on vsock-listen:1985229328:{port}: Cannot assign requested address"
        )),
        "{err}"
    );
    // A port another process holds.
    let _held = VsockListener::bind(VSOCK_CID_ANY, port).unwrap();
    let err = failing_agent(&dir, &format!("vsock-listen:{port}"));
    assert!(
        err.contains(&format!("listening on vsock-listen:{port}: Address in use"))
            || err.contains(&format!(
                "listening on vsock-listen:{port}: Address already in use"
            )),
        "{err}"
    );
    // A port that is no port never gets that far.
    let err = failing_agent(&dir, "vsock-listen:4294967295");
    assert!(
        err.contains("the port '4294967295' is not a number"),
        "{err}"
    );
}
