// SPDX-License-Identifier: Apache-2.0
//! The QGA information commands against the real binary over a UNIX socket: reply shapes
//! and values from fixture trees (`--root`), the same commands against this machine's real
//! `/proc` and `/sys`, the set-commands on copied trees, and a 500-interface budget check
//! in a network namespace.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Agent, Dir, QgaPeer, fixture};
use serde_json::{Value, json};

fn root_arg(root: &Path) -> String {
    format!("--root={}", root.display())
}

/// An agent reading under the fixture `name`, and a connected peer.
fn on_fixture(dir: &Dir, name: &str) -> (Agent, QgaPeer) {
    on_root(dir, &fixture(name))
}

fn on_root(dir: &Dir, root: &Path) -> (Agent, QgaPeer) {
    let agent = Agent::start_qga(dir.path(), &[&root_arg(root)]);
    let peer = agent.connect_qga();
    (agent, peer)
}

/// A copy of the fixture `name` under `dir`, for commands that write.
fn copied(dir: &Dir, name: &str) -> std::path::PathBuf {
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    common::copy_tree(&fixture(name), &root);
    root
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn osinfo_host_name_and_time_zone_from_a_fixture() {
    let dir = Dir::new("qgai-os");
    let (_agent, mut p) = on_fixture(&dir, "qga-info");
    assert_eq!(
        p.ok("guest-get-osinfo", json!({})),
        json!({
            "kernel-release": "6.1.0-18-amd64",
            "kernel-version": "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
            "machine": std::env::consts::ARCH,
            "id": "debian",
            "name": "Debian GNU/Linux",
            "pretty-name": "Debian GNU/Linux 12 (bookworm)",
            "version": "12 (bookworm)",
            "version-id": "12",
        })
    );
    assert_eq!(
        p.ok("guest-get-host-name", json!({})),
        json!({"host-name": "guest-info"})
    );
    // Prague: CET in winter, CEST in summer; whichever holds today, name and offset agree.
    let tz = p.ok("guest-get-timezone", json!({}));
    assert!(
        tz == json!({"zone": "CET", "offset": 3600})
            || tz == json!({"zone": "CEST", "offset": 7200}),
        "{tz}"
    );
    // Arguments are refused as QEMU does.
    let e = p.err("guest-get-osinfo", json!({"x": 1}));
    assert_eq!(e["desc"], "Parameter 'x' is unexpected");
}

#[test]
fn time_zone_of_other_roots() {
    let dir = Dir::new("qgai-tz");
    let (_a, mut p) = on_fixture(&dir, "tz-kolkata-link");
    assert_eq!(
        p.ok("guest-get-timezone", json!({})),
        json!({"zone": "IST", "offset": 19800})
    );
    // No etc/localtime at all: UTC, as the C library does.
    let dir2 = Dir::new("qgai-tz-none");
    let empty = dir2.path().join("empty-root");
    std::fs::create_dir_all(&empty).unwrap();
    let (_a2, mut p2) = on_root(&dir2, &empty);
    assert_eq!(
        p2.ok("guest-get-timezone", json!({})),
        json!({"zone": "UTC", "offset": 0})
    );
}

#[test]
fn missing_os_release_is_logged_once() {
    let dir = Dir::new("qgai-noos");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
    std::fs::write(root.join("proc/sys/kernel/osrelease"), "6.9.0\n").unwrap();
    let (agent, mut p) = on_root(&dir, &root);
    for _ in 0..3 {
        let info = p.ok("guest-get-osinfo", json!({}));
        assert_eq!(info["kernel-release"], "6.9.0");
        assert!(
            info.get("id").is_none() && info.get("pretty-name").is_none(),
            "{info}"
        );
    }
    // The host name is missing too: the error names the file.
    let e = p.err("guest-get-host-name", json!({}));
    assert!(
        e["desc"]
            .as_str()
            .unwrap()
            .contains("proc/sys/kernel/hostname"),
        "{e}"
    );
    let log = agent.log_text();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no os-release fields"))
        .count();
    assert_eq!(warned, 1, "{log}");
}

#[test]
fn users_come_from_logind_when_there_is_no_utmp() {
    let dir = Dir::new("qgai-logind");
    let (_a, mut p) = on_fixture(&dir, "qga-info");
    // alice's earliest of sessions 1 and 3; carol's session is closing, gdm's a greeter.
    assert_eq!(
        p.ok("guest-get-users", json!({})),
        json!([
            {"user": "alice", "login-time": 1700000100.25},
            {"user": "bob", "login-time": 1700000000.0},
        ])
    );
}

#[test]
fn users_come_from_utmp_when_it_has_live_sessions() {
    use guestd::facts::users::{encode_utmp_record, set_utmp_login_time};
    let dir = Dir::new("qgai-utmp");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("proc/4242")).unwrap();
    std::fs::create_dir_all(root.join("proc/4343")).unwrap();
    let mut utmp = Vec::new();
    for (pid, user, sec, usec) in [
        (4242, "dave", 1_700_000_300, 500_000),
        (4343, "dave", 1_700_000_200, 0),
        (4242, "erin", 1_700_000_400, 0),
        // A stale record: no proc/5555.
        (5555, "stale", 1_600_000_000, 0),
    ] {
        let mut rec = encode_utmp_record(7, pid, "pts/1", user, "");
        set_utmp_login_time(&mut rec, sec, usec);
        utmp.extend(rec);
    }
    std::fs::create_dir_all(root.join("run/systemd/sessions")).unwrap();
    std::fs::write(root.join("run/utmp"), utmp).unwrap();
    // logind knows someone else: utmp wins when it has live sessions.
    std::fs::write(
        root.join("run/systemd/sessions/7"),
        "USER=zoe\nSTATE=active\nCLASS=user\nREALTIME=1\n",
    )
    .unwrap();
    let (_a, mut p) = on_root(&dir, &root);
    assert_eq!(
        p.ok("guest-get-users", json!({})),
        json!([
            {"user": "dave", "login-time": 1700000200.0},
            {"user": "erin", "login-time": 1700000400.0},
        ])
    );
}

#[test]
fn load_cpustats_and_diskstats_from_a_fixture() {
    let dir = Dir::new("qgai-stats");
    let (_a, mut p) = on_fixture(&dir, "qga-info");
    assert_eq!(
        p.ok("guest-get-load", json!({})),
        json!({"load1m": 0.16, "load5m": 0.25, "load15m": 0.46})
    );
    let hz = guestd::sys::clock_ticks_per_second();
    let ms = |ticks: u64| ticks * 1000 / hz;
    assert_eq!(
        p.ok("guest-get-cpustats", json!({})),
        json!([
            {"type": "linux", "cpu": 0, "user": ms(194409), "nice": ms(1626),
             "system": ms(29409), "idle": ms(601824), "iowait": ms(3943), "irq": 0,
             "softirq": ms(769), "steal": ms(5608), "guest": 0, "guestnice": 0},
            // An old kernel's four columns: the others are left out.
            {"type": "linux", "cpu": 1, "user": ms(209393), "nice": ms(2843),
             "system": ms(28307), "idle": ms(586575)},
        ])
    );
    let d = p.ok("guest-get-diskstats", json!({}));
    assert_eq!(d.as_array().unwrap().len(), 3);
    assert_eq!(
        d[0],
        json!({"name": "loop0", "major": 7, "minor": 0, "stats": {
            "read-ios": 40, "read-merges": 0, "read-sectors": 684, "read-ticks": 0,
            "write-ios": 6, "write-merges": 0, "write-sectors": 4, "write-ticks": 0,
            "ios-pgr": 0, "total-ticks": 0, "weight-ticks": 1, "discard-ios": 0,
            "discard-merges": 0, "discard-sectors": 0, "discard-ticks": 0,
            "flush-ios": 6, "flush-ticks": 0}})
    );
    // 15 counters: discard but no flush.
    let vda = d[1]["stats"].as_object().unwrap();
    assert_eq!(vda.len(), 15);
    assert_eq!(vda["discard-ticks"], 15);
    assert!(vda.get("flush-ios").is_none());
    // The old four-counter partition format.
    assert_eq!(
        d[2],
        json!({"name": "hda1", "major": 3, "minor": 1, "stats": {
            "read-ios": 100, "read-sectors": 200, "write-ios": 300, "write-sectors": 400}})
    );
}

#[test]
fn sources_that_are_missing_give_errors_naming_them_or_empty_lists() {
    let dir = Dir::new("qgai-empty");
    let root = dir.path().join("empty-root");
    std::fs::create_dir_all(&root).unwrap();
    let (_a, mut p) = on_root(&dir, &root);
    for (cmd, path) in [
        ("guest-get-load", "proc/loadavg"),
        ("guest-get-cpustats", "proc/stat"),
        ("guest-get-diskstats", "proc/diskstats"),
        ("guest-get-vcpus", "sys/devices/system/cpu"),
        ("guest-get-memory-block-info", "block_size_bytes"),
        ("guest-network-get-route", "proc/net/route"),
    ] {
        let e = p.err(cmd, json!({}));
        assert_eq!(e["class"], "GenericError");
        assert!(e["desc"].as_str().unwrap().contains(path), "{cmd}: {e}");
    }
    // No memory hot-plug directory: an empty list, no error.
    assert_eq!(p.ok("guest-get-memory-blocks", json!({})), json!([]));
    assert_eq!(p.ok("guest-get-users", json!({})), json!([]));
    assert_eq!(p.ok("guest-network-get-interfaces", json!({})), json!([]));
    // guest-ping is still served at once.
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
}

#[test]
fn vcpus_are_listed_and_set() {
    let dir = Dir::new("qgai-vcpus");
    let root = copied(&dir, "qga-info");
    let cpu = |n: u32| root.join(format!("sys/devices/system/cpu/cpu{n}/online"));
    let (_a, mut p) = on_root(&dir, &root);
    assert_eq!(
        p.ok("guest-get-vcpus", json!({})),
        json!([
            {"logical-id": 0, "online": true, "can-offline": false},
            {"logical-id": 1, "online": true, "can-offline": true},
            {"logical-id": 2, "online": false, "can-offline": true},
            {"logical-id": 10, "online": true, "can-offline": true},
        ])
    );
    // A type error anywhere in the list changes nothing.
    let e = p.err(
        "guest-set-vcpus",
        json!({"vcpus": [{"logical-id": 2, "online": true}, {"logical-id": "1", "online": false}]}),
    );
    assert_eq!(
        e["desc"],
        "Invalid parameter type for 'logical-id', expected: integer"
    );
    assert_eq!(read(&cpu(2)), "0\n");
    let n = p.ok(
        "guest-set-vcpus",
        json!({"vcpus": [{"logical-id": 2, "online": true}, {"logical-id": 1, "online": false}]}),
    );
    assert_eq!(n, 2);
    assert_eq!(read(&cpu(2)).trim(), "1");
    assert_eq!(read(&cpu(1)).trim(), "0");
    // cpu0 has no online file: it cannot go offline. Alone, that is the reply.
    let e = p.err(
        "guest-set-vcpus",
        json!({"vcpus": [{"logical-id": 0, "online": false}]}),
    );
    assert_eq!(e["desc"], "logical processor #0 can't be offlined");
    // After one success, the count so far is the reply and the rest is not done.
    let n = p.ok(
        "guest-set-vcpus",
        json!({"vcpus": [
            {"logical-id": 1, "online": true},
            {"logical-id": 99, "online": true},
            {"logical-id": 10, "online": false},
        ]}),
    );
    assert_eq!(n, 1);
    assert_eq!(read(&cpu(1)).trim(), "1");
    assert_eq!(read(&cpu(10)).trim(), "1");
    let e = p.err(
        "guest-set-vcpus",
        json!({"vcpus": [{"logical-id": 99, "online": true}]}),
    );
    assert_eq!(e["desc"], "logical processor #99 does not exist");
    // Asking for the state a CPU is already in is a success; cpu0 is always online.
    assert_eq!(
        p.ok(
            "guest-set-vcpus",
            json!({"vcpus": [{"logical-id": 0, "online": true}]})
        ),
        1
    );
    assert!(!root.join("sys/devices/system/cpu/cpu0/online").exists());
}

#[test]
fn memory_blocks_are_listed_and_set() {
    let dir = Dir::new("qgai-mem");
    let root = copied(&dir, "qga-info");
    let state = |n: u32| root.join(format!("sys/devices/system/memory/memory{n}/state"));
    let (_a, mut p) = on_root(&dir, &root);
    assert_eq!(
        p.ok("guest-get-memory-blocks", json!({})),
        json!([
            {"phys-index": 0, "online": true, "can-offline": false},
            {"phys-index": 1, "online": true, "can-offline": true},
            {"phys-index": 2, "online": false, "can-offline": true},
            {"phys-index": 32, "online": true, "can-offline": true},
        ])
    );
    assert_eq!(
        p.ok("guest-get-memory-block-info", json!({})),
        json!({"size": 134217728})
    );
    let r = p.ok(
        "guest-set-memory-blocks",
        json!({"mem-blks": [
            {"phys-index": 2, "online": true},
            {"phys-index": 1, "online": false},
            {"phys-index": 0, "online": false},
            {"phys-index": 7, "online": true},
        ]}),
    );
    assert_eq!(
        r,
        json!([
            {"phys-index": 2, "response": "success"},
            {"phys-index": 1, "response": "success"},
            {"phys-index": 0, "response": "operation-not-supported"},
            {"phys-index": 7, "response": "not-found"},
        ])
    );
    assert_eq!(read(&state(2)).trim_end(), "online");
    assert_eq!(read(&state(1)).trim_end(), "offline");
    assert_eq!(read(&state(0)), "online\n");
    // A state file that cannot be written: operation-failed with the errno.
    std::fs::remove_file(state(32)).unwrap();
    std::fs::create_dir(state(32)).unwrap();
    let r = p.ok(
        "guest-set-memory-blocks",
        json!({"mem-blks": [{"phys-index": 32, "online": false}]}),
    );
    assert_eq!(r[0]["response"], "operation-failed");
    assert_eq!(r[0]["error-code"], 21, "EISDIR: {r}");
    let e = p.err(
        "guest-set-memory-blocks",
        json!({"mem-blks": [{"online": true}]}),
    );
    assert_eq!(e["desc"], "Parameter 'phys-index' is missing");
}

#[test]
fn routes_from_a_fixture_with_and_without_ipv6() {
    let dir = Dir::new("qgai-route");
    let root = copied(&dir, "qga-info");
    let (_a, mut p) = on_root(&dir, &root);
    let routes = p.ok("guest-network-get-route", json!({}));
    assert_eq!(routes.as_array().unwrap().len(), 5, "{routes}");
    assert_eq!(
        routes[0],
        json!({"iface": "eth0", "destination": "0.0.0.0", "gateway": "192.0.2.1",
               "mask": "0.0.0.0", "metric": 100, "flags": 3, "refcnt": 0, "use": 0,
               "mtu": 0, "window": 0, "irtt": 0, "version": 4})
    );
    assert_eq!(routes[1]["destination"], "192.0.2.0");
    assert_eq!(routes[1]["mask"], "255.255.255.0");
    assert_eq!(routes[1]["mtu"], 1500);
    assert_eq!(
        routes[2],
        json!({"iface": "eth0", "destination": "fd00::", "desprefixlen": "64",
               "source": "::", "srcprefixlen": "0", "nexthop": "::", "metric": 256,
               "flags": 1, "refcnt": 1, "use": 0, "version": 6})
    );
    assert_eq!(routes[3]["nexthop"], "fd00::1");
    // Unsigned, not sign-extended as qemu-ga does.
    assert_eq!(routes[4]["metric"], 4294967295u64);
    assert_eq!(routes[4]["flags"], 0x8020_0200u64);
    // IPv6 disabled: the IPv4 routes are still the answer.
    std::fs::remove_file(root.join("proc/net/ipv6_route")).unwrap();
    let routes = p.ok("guest-network-get-route", json!({}));
    let versions: Vec<&Value> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["version"])
        .collect();
    assert_eq!(versions, [4, 4]);
}

#[test]
fn interfaces_from_a_fixture_tree() {
    let dir = Dir::new("qgai-ifaces");
    let (_a, mut p) = on_fixture(&dir, "qga-info");
    let list = p.ok("guest-network-get-interfaces", json!({}));
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["eth0", "lo", "tun0"]);
    let eth0 = &list[0];
    assert_eq!(eth0["hardware-address"], "52:54:00:ab:cd:ef");
    assert_eq!(
        eth0["statistics"],
        json!({"rx-bytes": 1234567890, "rx-packets": 1000, "rx-errs": 1, "rx-dropped": 2,
               "tx-bytes": 987654, "tx-packets": 900, "tx-errs": 3, "tx-dropped": 4})
    );
    // tun0: no MAC, no counters, but an (empty) address list all the same.
    let tun0 = list[2].as_object().unwrap();
    assert!(!tun0.contains_key("hardware-address"), "{tun0:?}");
    assert!(!tun0.contains_key("statistics"), "{tun0:?}");
    assert_eq!(tun0["ip-addresses"], json!([]));
    // lo is in the fixture, so the real 127.0.0.1/8 of getifaddrs attaches to it.
    assert!(
        list[1]["ip-addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8})),
        "{}",
        list[1]
    );
}

/// The `cpuN` lines of this machine's `/proc/stat`.
fn real_cpu_lines() -> usize {
    read(Path::new("/proc/stat"))
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count()
}

#[test]
fn this_machine_answers_with_its_own_facts() {
    let dir = Dir::new("qgai-real");
    let (_a, mut p) = on_root(&dir, Path::new("/"));
    // get-time: an integer close to the test's own clock.
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let t = p.ok("guest-get-time", json!({}));
    let after = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let t = u128::from(t.as_u64().expect("an unsigned integer"));
    assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
    // cpustats: one entry per CPU line of /proc/stat, in milliseconds.
    let cpus = p.ok("guest-get-cpustats", json!({}));
    assert_eq!(cpus.as_array().unwrap().len(), real_cpu_lines());
    assert!(
        cpus.as_array()
            .unwrap()
            .iter()
            .all(|c| c["type"] == "linux" && c["idle"].is_u64())
    );
    // vcpus: one entry per cpuN directory.
    let vcpus = p.ok("guest-get-vcpus", json!({}));
    let dirs = std::fs::read_dir("/sys/devices/system/cpu")
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name().into_string().unwrap();
            n.strip_prefix("cpu")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .count();
    assert_eq!(vcpus.as_array().unwrap().len(), dirs);
    // Interfaces: lo with 127.0.0.1/8, every one with an address list.
    let ifaces = p.ok("guest-network-get-interfaces", json!({}));
    let lo = ifaces
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "lo")
        .expect("lo");
    assert!(
        lo["ip-addresses"]
            .as_array()
            .unwrap()
            .contains(&json!({"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8})),
        "{lo}"
    );
    assert!(lo["statistics"]["rx-bytes"].is_u64(), "{lo}");
    assert!(
        ifaces
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["ip-addresses"].is_array())
    );
    // Load, host name, kernel release, routes, diskstats, memory blocks.
    let load = p.ok("guest-get-load", json!({}));
    assert!(
        ["load1m", "load5m", "load15m"]
            .iter()
            .all(|k| load[k].as_f64().is_some_and(|v| v >= 0.0))
    );
    let host = read(Path::new("/proc/sys/kernel/hostname"));
    assert_eq!(
        p.ok("guest-get-host-name", json!({}))["host-name"],
        host.trim()
    );
    let rel = read(Path::new("/proc/sys/kernel/osrelease"));
    assert_eq!(
        p.ok("guest-get-osinfo", json!({}))["kernel-release"],
        rel.trim()
    );
    let v4 = read(Path::new("/proc/net/route")).lines().skip(1).count();
    let routes = p.ok("guest-network-get-route", json!({}));
    assert_eq!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["version"] == 4)
            .count(),
        v4
    );
    let disks = p.ok("guest-get-diskstats", json!({}));
    assert!(
        disks
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["major"].is_u64() && d["stats"].is_object())
    );
    if let Ok(size) = std::fs::read_to_string("/sys/devices/system/memory/block_size_bytes") {
        let size = u64::from_str_radix(size.trim(), 16).unwrap();
        assert_eq!(
            p.ok("guest-get-memory-block-info", json!({})),
            json!({"size": size})
        );
    }
    assert!(p.ok("guest-get-users", json!({})).is_array());
    let tz = p.ok("guest-get-timezone", json!({}));
    assert!(tz["offset"].is_i64(), "{tz}");
}

/// Runs `ip` with `args`, feeding `stdin`; whether it succeeded.
fn ip(args: &[&str], stdin: &str) -> bool {
    let mut child = match Command::new("ip")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    let wrote = std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes());
    child.wait().is_ok_and(|s| s.success()) && wrote.is_ok()
}

/// A network namespace, deleted on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.0], "");
    }
}

#[test]
fn five_hundred_interfaces_answer_within_a_second() {
    const N: usize = 500;
    if guestd::sys::geteuid() != 0 {
        eprintln!("SKIP five_hundred_interfaces: needs root for a network namespace");
        return;
    }
    let ns = Netns(format!("guestd-qgai-{}", std::process::id()));
    if !ip(&["netns", "add", &ns.0], "") {
        eprintln!("SKIP five_hundred_interfaces: `ip netns add` failed (no namespaces?)");
        return;
    }
    let mut batch = String::from("link set dev lo up\n");
    for i in 0..N {
        batch.push_str(&format!("link add ifb{i} type ifb\n"));
    }
    if !ip(&["-n", &ns.0, "-batch", "-"], &batch) {
        eprintln!("SKIP five_hundred_interfaces: cannot create ifb devices (no ifb support?)");
        return;
    }
    // `ip netns exec` enters the namespace and remounts /sys for it, then execs guestd.
    let dir = Dir::new("qgai-500");
    let qga = dir.path().join("qga.sock");
    let log = dir.path().join("guestd.log");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &ns.0,
        common::guestd_bin(),
        "--config",
        "/dev/null",
    ])
    .arg(format!(
        "--channel=unix-listen:{}",
        dir.path().join("g.sock").display()
    ))
    .arg(format!("--qga-channel=unix-listen:{}", qga.display()))
    .args(["-d", "1"])
    .args(common::isolation(dir.path()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let agent = Agent {
        child: cmd.spawn().unwrap(),
        sock: dir.path().join("g.sock"),
        qga: qga.clone(),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !qga.exists() {
        assert!(
            Instant::now() < deadline,
            "no QGA socket: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut p = agent.connect_qga();
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
    let start = Instant::now();
    let list = p.ok("guest-network-get-interfaces", json!({}));
    let took = start.elapsed();
    eprintln!("guest-network-get-interfaces: {took:?} for {N} interfaces");
    let list = list.as_array().unwrap();
    let ifbs: Vec<&Value> = list
        .iter()
        .filter(|i| i["name"].as_str().is_some_and(|n| n.starts_with("ifb")))
        .collect();
    assert_eq!(ifbs.len(), N, "{} interfaces in all", list.len());
    assert!(ifbs.iter().all(|i| i["hardware-address"].is_string()
        && i["statistics"]["rx-bytes"].is_u64()
        && i["ip-addresses"] == json!([])));
    let lo = list.iter().find(|i| i["name"] == "lo").expect("lo");
    assert_eq!(lo["ip-addresses"][0]["ip-address"], "127.0.0.1");
    assert!(
        took < Duration::from_secs(1),
        "guest-network-get-interfaces took {took:?} for {N} interfaces"
    );
    drop(p);
    drop(agent);
}
