// SPDX-License-Identifier: Apache-2.0
//! The QEMU smoke test: boots the real test image (busybox init, guestd started from
//! /etc/init.d/S50guestd, no udev) under TCG and checks what arrives on the host end of the
//! virtio-serial socket against values the image was built with. Run with `make smoke`
//! (part of `make test`); it needs `qemu-system-x86_64`, a Debian kernel and busybox-static.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, Peer, names};
use serde_json::Value;

const SEC: Duration = Duration::from_secs(1);

struct Vm {
    child: Child,
    console: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Vm {
    fn console_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.console).unwrap_or_default()).into_owned()
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn boot(dir: &Path, sock: &Path) -> Vm {
    let console = dir.join("console.log");
    let child = Command::new(repo().join("initramfs/run-vm.sh"))
        .arg(sock)
        .arg(&console)
        .current_dir(repo())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting initramfs/run-vm.sh");
    Vm { child, console }
}

fn connect(sock: &Path, deadline: Instant) -> Peer {
    loop {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(sock) {
            drop(s);
            return Peer::connect(sock);
        }
        assert!(
            Instant::now() < deadline,
            "QEMU never opened {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The kernel release the image boots (the newest in /lib/modules, as run-vm.sh picks).
fn kernel_release() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/lib/modules")
        .expect("/lib/modules")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort_by_key(|s| version_key(s));
    v.pop().expect("a kernel in /lib/modules")
}

fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The voluntary context switches the image's test hook printed, in console order.
fn ctx_samples(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| l.split("GUESTD-CTX ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
#[ignore = "boots QEMU; run with `make smoke`"]
fn qemu_guest_reports_to_the_host_and_sleeps_while_detached() {
    let dir = Dir::new("smoke");
    let sock = dir.path().join("ga.sock");
    let t0 = Instant::now();
    let vm = boot(dir.path(), &sock);
    let mut peer = connect(&sock, t0 + 20 * SEC);
    peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);

    // The burst, within 20 s of QEMU start.
    let (fqdn, burst) = peer.until("fqdn", (20 * SEC).saturating_sub(t0.elapsed()));
    let boot_to_burst = t0.elapsed();
    eprintln!("smoke: QEMU start to burst: {boot_to_burst:?}");
    let get = |name: &str| -> Value {
        burst
            .iter()
            .rev()
            .find(|m| m["__name__"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in the burst: {:?}", names(&burst)))
    };
    assert_eq!(get("session-startup")["__name__"], "session-startup");
    assert_eq!(get("host-name")["name"], "guestd-vm");
    assert_eq!(fqdn["fqdn"], "guestd-vm.test.example");
    assert_eq!(get("os-version")["version"], kernel_release().as_str());
    assert_eq!(get("active-user")["name"], "tester");
    let ifaces = get("network-interfaces")["interfaces"].clone();
    let eth0 = ifaces
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["hw"] == "52:54:00:12:34:56")
        .unwrap_or_else(|| panic!("no NIC with the VM's MAC: {ifaces}"));
    assert!(
        eth0["inet"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "10.0.2.15"),
        "{eth0}"
    );

    // Heartbeats at the image's period (time-period = 2), memory consistent with -m 256.
    let (hb1, _) = peer.until("heartbeat", 5 * SEC);
    let t1 = Instant::now();
    let (hb2, _) = peer.until("heartbeat", 5 * SEC);
    let gap = t1.elapsed();
    assert!(
        gap > Duration::from_millis(1200) && gap < Duration::from_millis(3500),
        "{gap:?}"
    );
    let mem_total = hb2["memory-stat"]["mem_total"].as_u64().unwrap();
    assert!(
        (150 * 1024..=256 * 1024).contains(&mem_total),
        "mem_total {mem_total} KiB"
    );
    let free: u64 = hb2["free-ram"].as_str().unwrap().parse().unwrap();
    assert!(free > 0 && free <= mem_total / 1024, "free-ram {free} MiB");

    // Negotiation as VDSM does it: version 3 once a heartbeat advertises it.
    let hb = if hb1["apiVersion"] == 3 { hb1 } else { hb2 };
    assert_eq!(hb["apiVersion"], 3);
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    let (osinfo, _) = peer.until("os-info", 5 * SEC);
    assert_eq!(osinfo["distribution"], "guestd test image");
    assert_eq!(osinfo["version"], "1.0");
    assert_eq!(osinfo["codename"], "smoke");
    assert_eq!(osinfo["arch"], "x86_64");

    // guestctl against the VM, end to end (QEMU's socket serves one client at a time).
    drop(peer);
    let out = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args([
            "--socket",
            sock.to_str().unwrap(),
            "--timeout",
            "15",
            "--json",
            "info",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(info["host-name"]["name"], "guestd-vm");
    assert_eq!(info["os-info"]["codename"], "smoke");

    // The host detaches for 10 s: the agent must sleep (no timer, SIGIO wakes it on return).
    let detached_at = Instant::now();
    std::thread::sleep(SEC);
    let before = ctx_samples(&vm.console_text());
    std::thread::sleep(8 * SEC);
    let during = ctx_samples(&vm.console_text());
    let window = &during[before.len().saturating_sub(1)..];
    assert!(
        window.len() >= 5,
        "the image's test hook stopped reporting: {window:?}"
    );
    let woke = window.last().unwrap() - window.first().unwrap();
    eprintln!(
        "smoke: voluntary context switches while detached: {woke} over {} samples",
        window.len()
    );
    assert!(
        woke <= 10,
        "guestd woke {woke} times while detached: {window:?}"
    );
    std::thread::sleep((10 * SEC).saturating_sub(detached_at.elapsed()));

    // The host returns: the agent sends its burst again without being asked.
    let mut peer = connect(&sock, Instant::now() + 5 * SEC);
    let first = peer.next(5 * SEC).expect("burst after reattach");
    assert_eq!(first["__name__"], "session-startup");
    peer.until("fqdn", 5 * SEC);
    eprintln!("smoke: total {:?}", t0.elapsed());
}
