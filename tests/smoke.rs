// SPDX-License-Identifier: Apache-2.0
//! The QEMU smoke test: boots the real test image (busybox init, guestd started from
//! /etc/init.d/S50guestd, no udev) under TCG with two vCPUs, both agent ports
//! (`ovirt-guest-agent.0` and `org.qemu.guest_agent.0`, each on its own host socket) and the
//! test disk, and checks, from the host ends of the virtio-serial sockets, against values the
//! image was built with: the burst, facts, heartbeats, key-value messages both ways, the QGA
//! link answering while the oVirt link reports (interleaved), sleeping while both hosts are
//! detached, CPU hot-unplug, a real reboot (both links come back) and a real power-off. Run
//! with `make smoke` (part of `make test`); it needs `qemu-system-x86_64`, a Debian kernel,
//! busybox-static and mkfs.ext4 (e2fsprogs).

mod common;
mod vm;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Dir, Peer, QgaPeer, names};
use serde_json::{Value, json};
use vm::{kernel_release, repo};

const SEC: Duration = Duration::from_secs(1);

struct Vm {
    child: Child,
    console: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing smoke shows what the guest printed.
        if std::thread::panicking() {
            let text = std::fs::read(&self.console).unwrap_or_default();
            eprintln!("--- guest console ---\n{}", String::from_utf8_lossy(&text));
        }
    }
}

/// Boots the image with the oVirt port on `sock`, the QGA port on `qga` and a fresh test
/// disk.
fn boot(dir: &Path, sock: &Path, qga: &Path) -> Vm {
    let disk = dir.join("data.img");
    vm::make_disk(&disk);
    let child = Command::new(repo().join("initramfs/run-vm.sh"))
        .arg(sock)
        .arg(dir.join("console.log"))
        .env("SMP", "2")
        .env("REBOOT", "1")
        .env("QGA_SOCKET", qga)
        .env("DISK", &disk)
        .current_dir(repo())
        .stdin(Stdio::null())
        .spawn()
        .expect("starting initramfs/run-vm.sh");
    Vm {
        child,
        console: dir.join("console.log"),
    }
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

/// Connects to QEMU's end of the QGA port (QEMU is the server; it listens from its start).
fn connect_qga(qga: &Path, deadline: Instant) -> QgaPeer {
    vm::wait_for(
        "QEMU's QGA socket",
        deadline,
        Duration::from_millis(50),
        || std::os::unix::net::UnixStream::connect(qga).ok(),
    );
    QgaPeer::connect(qga)
}

/// `guest-sync` as libvirt does it: replies to anything sent before (a previous host's
/// requests the agent answered late) are skipped until the one carrying `id`.
fn qga_sync(qga: &mut QgaPeer, id: u64, within: Duration) {
    qga.send_raw(
        json!({"execute": "guest-sync", "arguments": {"id": id}})
            .to_string()
            .as_bytes(),
    );
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = qga
            .next_raw(left)
            .unwrap_or_else(|| panic!("no guest-sync reply with id {id} within {within:?}"));
        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        if v["return"] == id {
            return;
        }
    }
}

/// The QGA link answers `guest-ping` and `guest-info` (with guestd's version and its
/// enabled commands).
fn qga_ping_info(qga: &mut QgaPeer) {
    assert_eq!(qga.ok("guest-ping", json!({})), json!({}));
    let info = qga.ok("guest-info", json!({}));
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"), "{info}");
    let cmds = info["supported_commands"]
        .as_array()
        .expect("supported_commands");
    for name in ["guest-sync", "guest-ping", "guest-info"] {
        assert!(
            cmds.iter()
                .any(|c| c["name"] == name && c["enabled"] == true),
            "{name} is not an enabled command in {info}"
        );
    }
}

/// Reads until a `param` with `key` arrives; returns its value.
fn param(peer: &mut Peer, key: &str, within: Duration) -> String {
    let (m, _) = peer.until_where("param", |m| m["key"] == key, within);
    m["value"].as_str().unwrap_or_default().to_owned()
}

/// The boot id the image's test script sends as `smoke.boot`: found among `seen` (it may
/// ride along with a burst), or waited for.
fn boot_id(peer: &mut Peer, seen: &[Value]) -> String {
    let early = seen
        .iter()
        .find(|m| m["__name__"] == "param" && m["key"] == "smoke.boot")
        .and_then(|m| m["value"].as_str().map(str::to_owned));
    early.unwrap_or_else(|| param(peer, "smoke.boot", 20 * SEC))
}

fn completion(peer: &mut Peer, id: &str, within: Duration) -> Value {
    peer.until_where("completion", |c| c["reply_id"] == id, within)
        .0
}

#[test]
#[ignore = "boots QEMU; run with `make smoke`"]
fn qemu_guest_end_to_end() {
    let dir = Dir::new("smoke");
    let sock = dir.path().join("ga.sock");
    let qga_sock = dir.path().join("qga.sock");
    let t0 = Instant::now();
    let mut vm = boot(dir.path(), &sock, &qga_sock);
    let mut peer = connect(&sock, t0 + 20 * SEC);
    peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);
    // A key-value command: this host speaks guestd's extension, so the params come unasked.
    peer.send(r#"{"__name__": "list-params"}"#);

    // The burst, within 20 s of QEMU start.
    let (fqdn, burst) = peer.until("fqdn", (20 * SEC).saturating_sub(t0.elapsed()));
    eprintln!(
        "smoke: QEMU start to burst: {:.1} s",
        t0.elapsed().as_secs_f64()
    );
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

    // The image's test script ran `guestd -p smoke.boot=<boot id>` after boot.
    // (It may already have come with the burst.)
    let boot1 = boot_id(&mut peer, &burst);
    assert_eq!(boot1.len(), 36, "a boot id: {boot1}");

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
    assert!(hb1["apiVersion"] == 3 || hb2["apiVersion"] == 3);
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    let (osinfo, _) = peer.until("os-info", 5 * SEC);
    assert_eq!(osinfo["distribution"], "guestd test image");
    assert_eq!(osinfo["version"], "1.0");
    assert_eq!(osinfo["codename"], "smoke");
    assert_eq!(osinfo["arch"], "x86_64");

    // Both links at the same time: the QGA host syncs and asks while the oVirt host keeps
    // receiving heartbeats; each QGA request is sent before waiting for a heartbeat and its
    // reply read after it, so the two links' traffic interleaves in the agent's loop.
    let mut qga = connect_qga(&qga_sock, Instant::now() + 5 * SEC);
    qga_sync(&mut qga, 4_242_001, 20 * SEC);
    qga_ping_info(&mut qga);
    for round in 0..3u64 {
        qga.send_raw(br#"{"execute": "guest-ping", "id": "p"}"#);
        qga.send_raw(
            json!({"execute": "guest-sync", "arguments": {"id": 4_242_100 + round}})
                .to_string()
                .as_bytes(),
        );
        let (hb, _) = peer.until("heartbeat", 5 * SEC);
        assert!(hb["memory-stat"]["mem_total"].as_u64().is_some(), "{hb}");
        assert_eq!(qga.reply(), json!({"return": {}, "id": "p"}));
        assert_eq!(qga.reply(), json!({"return": 4_242_100 + round}));
    }
    eprintln!(
        "smoke: QGA and oVirt interleaved ({:.1} s in)",
        t0.elapsed().as_secs_f64()
    );

    // A host set-param is visible to `guestd -l` inside the guest.
    peer.send(r#"{"__name__": "set-param", "key": "smoke.list", "value": "from the host", "reply_id": "l"}"#);
    assert_eq!(completion(&mut peer, "l", 5 * SEC)["done"], true);
    let listed = param(&mut peer, "smoke.listed", 15 * SEC);
    assert!(
        listed.contains(r#"{"smoke.list":"from the host"}"#),
        "{listed}"
    );

    // CPU hot-unplug on a 2-vCPU guest.
    peer.send(r#"{"__name__": "set-number-of-cpus", "count": 1, "reply_id": "c"}"#);
    let (cpus, _) = peer.until("number-of-cpus", 5 * SEC);
    assert_eq!(cpus["count"], 1);
    assert_eq!(completion(&mut peer, "c", 5 * SEC)["done"], true);

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

    // Both hosts detach for 10 s (the QGA host after using its link). The guest measures the
    // agent's voluntary context switches over 6 s of it and reports them through a param,
    // delivered when the oVirt host is back: neither port, left by its host, wakes the agent.
    let mut peer = connect(&sock, Instant::now() + 5 * SEC);
    peer.send(
        r#"{"__name__": "set-param", "key": "smoke.measure", "value": "6", "reply_id": "m"}"#,
    );
    assert_eq!(completion(&mut peer, "m", 5 * SEC)["done"], true);
    qga_ping_info(&mut qga);
    drop(qga);
    drop(peer);
    let detached = Instant::now();
    std::thread::sleep(10 * SEC);
    let mut peer = connect(&sock, Instant::now() + 5 * SEC);
    // The agent sends its burst again without being asked.
    let first = peer.next(5 * SEC).expect("burst after reattach");
    assert_eq!(first["__name__"], "session-startup");
    peer.send(r#"{"__name__": "list-params"}"#);
    let ctxt: u64 = param(&mut peer, "smoke.ctxt", 10 * SEC).parse().unwrap();
    eprintln!(
        "smoke: voluntary context switches over 6 s detached: {ctxt} (host away {:.1} s)",
        detached.elapsed().as_secs_f64()
    );
    assert!(
        ctxt <= 10,
        "guestd woke {ctxt} times while both hosts were detached"
    );
    // A new QGA host is served after the last one left.
    let mut qga = connect_qga(&qga_sock, Instant::now() + 5 * SEC);
    qga_sync(&mut qga, 4_242_002, 20 * SEC);
    qga_ping_info(&mut qga);

    // A real reboot: the guest comes back and its agent sends a new burst.
    peer.send(r#"{"__name__": "shutdown", "timeout": 0, "reboot": "True", "reply_id": "r"}"#);
    peer.until("session-shutdown", 10 * SEC);
    // The rebooted guest's agent finds the host still connected and sends its burst.
    let (_, _) = peer.until("session-startup", 40 * SEC);
    // The new agent knows nothing of this host yet: say again that it speaks key-value.
    peer.send(r#"{"__name__": "list-params"}"#);
    let (_, seen) = peer.until("fqdn", 5 * SEC);
    let boot2 = boot_id(&mut peer, &seen);
    assert_ne!(boot2, boot1, "the guest did not reboot");
    eprintln!("smoke: rebooted ({:.1} s in)", t0.elapsed().as_secs_f64());
    // The QGA host stayed connected to QEMU across the reboot: the new agent serves it.
    qga_sync(&mut qga, 4_242_003, 20 * SEC);
    qga_ping_info(&mut qga);

    // A real power-off: QEMU exits within 30 s.
    peer.send(&json!({"__name__": "shutdown", "timeout": 0, "reboot": "False"}).to_string());
    let off = Instant::now();
    loop {
        if let Some(st) = vm.child.try_wait().unwrap() {
            assert!(st.success(), "QEMU: {st:?}");
            break;
        }
        assert!(
            off.elapsed() < 30 * SEC,
            "QEMU still running 30 s after shutdown"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "smoke: powered off {:.1} s after the request; total {:.1} s",
        off.elapsed().as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
}
