// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of the agent over a real UNIX socket: the host peer side of the oVirt
//! protocol against the real binary, with facts read from a fixture root.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Dir, copy_tree, fixture, names};
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);

fn agent_with_root(tag: &str, extra: &[&str]) -> (Dir, Agent) {
    let dir = Dir::new(tag);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    let root_arg = format!("--root={}", root.display());
    let mut args = vec![root_arg.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start(dir.path(), &args);
    (dir, agent)
}

/// The reference's start-up burst at API version 0 (containers, timezone and os-info need
/// more), then disks-usage, which the reference sends only after 300 s (number-of-cpus, due
/// after 60 s there, needs version 1: it comes with the negotiated burst).
const STARTUP_BURST: &[&str] = &[
    "session-startup",
    "host-name",
    "os-version",
    "network-interfaces",
    "active-user",
    "applications",
    "fqdn",
    "disks-usage",
];

/// An agent over agent-root with the fixture tree `overlay` laid over it; `replace` is a
/// directory of agent-root removed first.
fn agent_with_overlay(tag: &str, overlay: &str, replace: &str, extra: &[&str]) -> (Dir, Agent) {
    let dir = Dir::new(tag);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    let _ = std::fs::remove_dir_all(root.join(replace));
    copy_tree(&fixture(overlay), &root);
    let root_arg = format!("--root={}", root.display());
    let mut args = vec![root_arg.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start(dir.path(), &args);
    (dir, agent)
}

#[test]
fn startup_burst_arrives_at_once_in_reference_order_with_exact_facts() {
    let (_dir, agent) = agent_with_root("burst", &["-t", "1"]);
    let mut peer = agent.connect();
    let mut burst = Vec::new();
    for _ in STARTUP_BURST {
        burst.push(peer.next(SEC).expect("burst message"));
    }
    // The burst is sent on attach, not by the schedule: it is all there before the first
    // heartbeat (due 1 s later), however loaded the machine is.
    assert_eq!(names(&burst), STARTUP_BURST);
    assert_eq!(burst[1], json!({"__name__": "host-name", "name": "vm1"}));
    assert_eq!(
        burst[2],
        json!({"__name__": "os-version", "version": "6.1.0-18-amd64"})
    );
    let ifaces = burst[3]["interfaces"].as_array().unwrap();
    let eth0 = ifaces.iter().find(|i| i["name"] == "eth0").unwrap();
    assert_eq!(eth0["hw"], "52:54:00:ab:cd:ef");
    assert!(eth0["inet"].is_array() && eth0["inet6"].is_array());
    // wg0 is down; lo is loopback.
    let listed: Vec<&Value> = ifaces.iter().map(|i| &i["name"]).collect();
    assert_eq!(listed, ["eth0"]);
    assert_eq!(
        burst[4],
        json!({"__name__": "active-user", "name": "alice"})
    );
    let apps = burst[5]["applications"].as_array().unwrap();
    assert!(apps.iter().all(|a| a.is_string()));
    assert!(
        apps.iter()
            .all(|a| !a.as_str().unwrap().starts_with("base-files")),
        "only configured packages: {apps:?}"
    );
    assert_eq!(
        burst[6],
        json!({"__name__": "fqdn", "fqdn": "vm1.lab.example.com"})
    );
}

#[test]
fn heartbeat_fields_types_and_period() {
    let (_dir, agent) = agent_with_root("hb", &["-t", "1"]);
    let mut peer = agent.connect();
    let mut beats = Vec::new();
    let mut times = Vec::new();
    while beats.len() < 3 {
        let (hb, _) = peer.until("heartbeat", 3 * SEC);
        times.push(Instant::now());
        beats.push(hb);
    }
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            // Never early; late only by what a loaded machine's scheduling adds.
            gap > Duration::from_millis(700) && gap < Duration::from_millis(3000),
            "heartbeat gap {gap:?}"
        );
    }
    // The renegotiation trick: 0 in the first heartbeat after start, then 3.
    assert_eq!(beats[0]["apiVersion"], 0);
    assert_eq!(beats[1]["apiVersion"], 3);
    let hb = &beats[1];
    // Fixture meminfo: (MemFree + Buffers + Cached) / 1024, as a string.
    assert_eq!(hb["free-ram"], "3125");
    let ms = hb["memory-stat"].as_object().unwrap();
    let keys: Vec<&str> = ms.keys().map(String::as_str).collect();
    let mut want = vec![
        "mem_total",
        "mem_unused",
        "mem_free",
        "mem_buffers",
        "mem_cached",
        "swap_total",
        "swap_usage",
        "swap_in",
        "swap_out",
        "pageflt",
        "majflt",
    ];
    want.sort();
    assert_eq!(keys, want);
    assert!(ms.values().all(Value::is_u64), "{ms:?}");
    assert_eq!(ms["mem_total"], 4_012_344);
    // vmstat does not change in the fixture: every rate is 0.
    assert_eq!(ms["pageflt"], 0);
}

#[test]
fn negotiation_brings_os_info_and_timezone() {
    let (_dir, agent) = agent_with_root("nego", &["-t", "1"]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);
    // At version 0 the refresh burst carries no os-info or timezone.
    let (_, before) = peer.until("heartbeat", 3 * SEC);
    assert!(
        !names(&before)
            .iter()
            .any(|n| n == "os-info" || n == "timezone")
    );
    let (hb, _) = peer.until("heartbeat", 3 * SEC);
    assert_eq!(hb["apiVersion"], 3);
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    let (tz, seen) = peer.until("timezone", 2 * SEC);
    assert_eq!(
        tz,
        json!({"__name__": "timezone", "zone": "Europe/Prague", "offset": 60})
    );
    assert!(
        names(&seen).contains(&"disks-usage".to_owned()),
        "refresh burst: {seen:?}"
    );
    let (osinfo, _) = peer.until("os-info", 2 * SEC);
    assert_eq!(osinfo["distribution"], "Debian GNU/Linux");
    assert_eq!(osinfo["version"], "12");
    assert_eq!(osinfo["codename"], "bookworm");
    assert_eq!(osinfo["kernel"], "6.1.0-18-amd64");
    assert_eq!(osinfo["type"], "linux");
    assert!(osinfo["arch"].is_string());
    // Same version again: no new burst. A number-of-cpus request is answered (API >= 1).
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    peer.send(r#"{"__name__": "set-number-of-cpus", "count": 2}"#);
    let (cpus, seen) = peer.until("number-of-cpus", 2 * SEC);
    assert_eq!(cpus["count"], 7);
    assert!(
        !names(&seen).contains(&"session-startup".to_owned()),
        "{seen:?}"
    );
}

#[test]
fn refresh_without_version_falls_back_to_zero() {
    let (_dir, agent) = agent_with_root("oldhost", &["-t", "1"]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    peer.until("os-info", 2 * SEC);
    peer.send(r#"{"__name__": "refresh"}"#);
    let (_, seen) = peer.until("heartbeat", 3 * SEC);
    let refresh: Vec<String> = names(&seen)
        .into_iter()
        .skip_while(|n| n != "session-startup")
        .collect();
    assert!(refresh.contains(&"fqdn".to_owned()), "{refresh:?}");
    assert!(!refresh.contains(&"os-info".to_owned()), "{refresh:?}");
}

#[test]
fn echo_returns_the_arguments_and_non_ascii_is_escaped() {
    let (_dir, agent) = agent_with_root("echo", &[]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "echo", "text": "héllo \u0001", "n": [1, {"k": null}]}"#);
    let (echo, _) = peer.until("echo", 2 * SEC);
    assert_eq!(
        echo,
        json!({"__name__": "echo", "text": "héllo \u{fffd}", "n": [1, {"k": null}]})
    );
}

#[test]
fn garbage_huge_line_and_invalid_utf8_are_skipped_and_the_next_command_answered() {
    let (_dir, agent) = agent_with_root("garbage", &[]);
    let mut peer = agent.connect();
    peer.send("this is not json");
    peer.send("[1,2,3]");
    peer.send(r#"{"no_name": 1}"#);
    peer.send(r#"{"__name__": "no-such-command"}"#);
    peer.send_raw(b"{\"__name__\": \"echo\", \"x\": \"\xff\xfe\"}\n");
    let mut huge = vec![b'x'; 2 * 1024 * 1024];
    huge.push(b'\n');
    peer.send_raw(&huge);
    peer.send(r#"{"__name__": "echo", "after": "garbage"}"#);
    let (echo, seen) = peer.until("echo", 5 * SEC);
    assert_eq!(echo["after"], "garbage");
    assert!(
        !names(&seen).contains(&"echo".to_owned()),
        "invalid UTF-8 line was served"
    );
    let log = agent.log_text();
    assert!(
        log.contains("discarding an inbound line longer than 1048576 bytes"),
        "{log}"
    );
    assert!(
        log.contains("ignoring unsupported command 'no-such-command'"),
        "{log}"
    );
    assert!(log.contains("not valid UTF-8"), "{log}");
}

#[test]
fn peers_come_and_go_and_the_idle_agent_sleeps() {
    let (_dir, agent) = agent_with_root("reconnect", &["-t", "1"]);
    for round in 0..5 {
        let mut peer = agent.connect();
        let first = peer.next(2 * SEC).expect("burst");
        assert_eq!(first["__name__"], "session-startup", "round {round}");
        peer.send(r#"{"__name__": "echo", "round": 1}"#);
        peer.until("echo", 2 * SEC);
    }
    // A peer that leaves mid-stream (unread data in flight) does not upset the agent.
    {
        let mut peer = agent.connect();
        peer.send_raw(b"{\"__name__\": \"echo\", \"cut\": ");
    }
    let mut peer = agent.connect();
    assert_eq!(peer.next(2 * SEC).unwrap()["__name__"], "session-startup");
    drop(peer);

    // No peer: nothing is armed, the process does not wake at all.
    std::thread::sleep(Duration::from_millis(300));
    let before = agent.context_switches();
    std::thread::sleep(Duration::from_secs(3));
    let after = agent.context_switches();
    assert!(
        after - before <= 1,
        "idle agent woke {} times in 3 s",
        after - before
    );
}

#[test]
fn user_changes_send_logon_logoff_and_active_user() {
    let (dir, agent) = agent_with_root("users", &["--report-user-rate", "1"]);
    let utmp = dir.path().join("root/run/utmp");
    let mut peer = agent.connect();
    let (au, _) = peer.until("active-user", 2 * SEC);
    assert_eq!(au["name"], "alice");
    // Everyone logs out.
    std::fs::write(&utmp, b"").unwrap();
    let (au, seen) = peer.until("active-user", 3 * SEC);
    assert_eq!(au["name"], "None");
    let n = names(&seen);
    // One logoff: alice's. The fixture's root record is stale (no proc/987), never counted.
    assert_eq!(
        n.iter().filter(|x| *x == "session-logoff").count(),
        1,
        "{n:?}"
    );
    // bob logs in: his shell runs (as /proc shows); a stale record of a dead process does not count.
    std::fs::create_dir_all(dir.path().join("root/proc/4242")).unwrap();
    let mut rec = guestd::facts::users::encode_utmp_record(7, 4242, "pts/3", "bob", "10.0.0.1");
    rec.extend(guestd::facts::users::encode_utmp_record(
        7,
        4343,
        "pts/4",
        "aaa-stale",
        "",
    ));
    std::fs::write(&utmp, rec).unwrap();
    let (au, seen) = peer.until("active-user", 3 * SEC);
    assert_eq!(au["name"], "bob");
    assert_eq!(
        names(&seen)
            .iter()
            .filter(|x| *x == "session-logon")
            .count(),
        1
    );
}

#[test]
fn logind_sessions_give_active_user_logon_and_logoff_without_utmp() {
    // A guest without utmp (systemd 257+, a musl-based image): logind's session files only.
    let dir = Dir::new("logind");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    std::fs::remove_file(root.join("run/utmp")).unwrap();
    copy_tree(&fixture("logind-only"), &root);
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(dir.path(), &[&root_arg, "--report-user-rate", "1"]);
    let mut peer = agent.connect();
    // dana and erik; the greeter (gdm) and the closing session (frank) do not count.
    let (au, _) = peer.until("active-user", 2 * SEC);
    assert_eq!(au["name"], "dana");
    // aaron logs in: logind writes his session's file.
    let sessions = root.join("run/systemd/sessions");
    std::fs::write(
        sessions.join("9"),
        "UID=1000\nUSER=aaron\nSTATE=online\nCLASS=user\nTTY=pts/2\nLEADER=3001\n",
    )
    .unwrap();
    let (_, seen) = peer.until("session-logon", 3 * SEC);
    assert!(!names(&seen).iter().any(|n| n.starts_with("session-")));
    let (au, _) = peer.until("active-user", 2 * SEC);
    assert_eq!(au["name"], "aaron");
    // aaron and dana log out: logind removes their files.
    std::fs::remove_file(sessions.join("9")).unwrap();
    std::fs::remove_file(sessions.join("2")).unwrap();
    let (au, seen) = peer.until("active-user", 3 * SEC);
    assert_eq!(au["name"], "erik");
    let n = names(&seen);
    let logoffs = n.iter().filter(|x| *x == "session-logoff").count();
    assert_eq!(logoffs, 2, "{n:?}");
    // Several user checks later, the missing utmp was mentioned once, at debug level.
    let log = agent.log_text();
    let mentions: Vec<&str> = log.lines().filter(|l| l.contains("utmp")).collect();
    assert_eq!(mentions.len(), 1, "{log}");
    assert!(mentions[0].contains("DEBUG"), "{log}");
    assert!(mentions[0].contains("no utmp file"), "{log}");
}

#[test]
fn sigterm_sends_session_shutdown_and_exits_zero() {
    let (_dir, mut agent) = agent_with_root("term", &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    let status = agent.signal_and_wait("TERM");
    assert!(status.success(), "{status:?}");
    let (_, _) = peer.until("session-shutdown", 2 * SEC);
}

#[test]
fn sighup_resends_the_facts() {
    let (_dir, mut agent) = agent_with_root("hup", &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    std::process::Command::new("kill")
        .args(["-HUP", &agent.pid().to_string()])
        .status()
        .unwrap();
    let (_, seen) = peer.until("fqdn", 2 * SEC);
    assert!(names(&seen).contains(&"network-interfaces".to_owned()));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "SIGHUP must not stop the agent"
    );
}

#[test]
fn a_host_that_never_reads_cannot_grow_the_queue_past_its_bound() {
    let (_dir, agent) = agent_with_root("stuck", &["-t", "1"]);
    let mut peer = agent.connect();
    // Flood echo requests with big payloads and never read the replies: the agent stops
    // reading, so the host's own writes are pushed back instead of the agent's memory growing.
    let big = "y".repeat(60_000);
    let lines = (0..60)
        .map(|_| format!("{{\"__name__\": \"echo\", \"p\": \"{big}\"}}\n"))
        .collect();
    let (sender, pushed_back) = common::send_in_background(peer.stream.try_clone().unwrap(), lines);
    assert!(
        common::wait_flag(&pushed_back, &sender, 30 * SEC),
        "the agent took all input without pushing back"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(rss_kb < 16 * 1024, "RSS {rss_kb} KiB");
    // Still alive and answering once the host reads again: every echo, then the last one.
    let mut echoes = 0;
    while echoes < 60 {
        let v = peer.next(10 * SEC).expect("agent answers again");
        if v["__name__"] == "echo" {
            echoes += 1;
        }
    }
    sender.join().unwrap();
    peer.send(r#"{"__name__": "echo", "last": true}"#);
    let deadline = Instant::now() + 10 * SEC;
    loop {
        let v = peer.next(5 * SEC).expect("agent answers again");
        if v["__name__"] == "echo" && v["last"] == true {
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn pid_file_refuses_a_second_agent() {
    let dir = Dir::new("pid");
    let pid = dir.path().join("guestd.pid");
    let pid_arg = format!("--pid-file={}", pid.display());
    let agent = Agent::start(dir.path(), &[&pid_arg]);
    let held = std::fs::read_to_string(&pid).unwrap();
    assert_eq!(held.trim(), agent.pid().to_string());
    let out = std::process::Command::new(common::guestd_bin())
        .args([
            "--config",
            "/dev/null",
            "-d",
            "0",
            "--channel=unix-listen:/tmp/x-unused.sock",
        ])
        .args(common::isolation(dir.path()))
        .arg(&pid_arg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("another guestd (pid {})", agent.pid())),
        "{err}"
    );
}

#[test]
fn config_errors_name_file_and_line_and_exit_2() {
    let dir = Dir::new("conf");
    let conf = dir.path().join("guestd.conf");
    std::fs::write(&conf, "# ok\ntime-period = 5\nheartbeat = 3\n").unwrap();
    let out = std::process::Command::new(common::guestd_bin())
        .arg(format!("--config={}", conf.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: unknown key 'heartbeat'", conf.display())),
        "{err}"
    );
    let out = std::process::Command::new(common::guestd_bin())
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(common::guestd_bin())
        .arg("-h")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for opt in [
        "--time-period",
        "--debug",
        "--pid-file",
        "--channel",
        "--config",
        "--version",
    ] {
        assert!(help.contains(opt), "help lacks {opt}");
    }
}

#[test]
fn waits_for_a_missing_virtio_port_instead_of_exiting() {
    let dir = Dir::new("noport");
    let root = dir.path();
    let mut child = std::process::Command::new(common::guestd_bin())
        .args([
            "--config",
            "/dev/null",
            "-d",
            "1",
            "--channel",
            "virtio-serial",
        ])
        .args(common::isolation(root))
        .arg(format!("--root={}", root.display()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "guestd exited without a port"
    );
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not available yet"), "{err}");
}

#[test]
fn a_flood_of_refresh_requests_costs_one_burst_per_wakeup() {
    let (_dir, agent) = agent_with_root("flood", &["-t", "1"]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    let flood = r#"{"__name__": "refresh", "apiVersion": 3}"#.to_owned() + "\n";
    peer.send_raw(flood.repeat(3000).as_bytes());
    peer.send(r#"{"__name__": "echo", "done": 1}"#);
    let (_, seen) = peer.until("echo", 5 * SEC);
    let bursts = names(&seen)
        .iter()
        .filter(|n| *n == "session-startup")
        .count();
    assert!(
        (1..=60).contains(&bursts),
        "{bursts} refresh bursts for 3000 requests"
    );
    // The schedule is not starved.
    peer.until("heartbeat", 3 * SEC);
}

#[test]
fn serial_channel_speaks_raw_json_lines_over_a_real_tty() {
    use std::io::{Read, Write};
    let dir = Dir::new("serial");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    let (mut master, slave) = guestd::sys::open_pty().unwrap();
    let mut child = std::process::Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "0", "-t", "1"])
        .arg(format!("--channel=serial:{}", slave.display()))
        .arg(format!("--root={}", root.display()))
        .args(common::isolation(dir.path()))
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + 5 * SEC;
    let mut fds = [libc_pollfd(&master)];
    while !String::from_utf8_lossy(&got).contains("\"__name__\":\"fqdn\"") {
        assert!(
            Instant::now() < deadline,
            "no burst on the tty: {:?}",
            String::from_utf8_lossy(&got)
        );
        if guestd::sys::poll(&mut fds, Some(Duration::from_millis(100))).unwrap() > 0 {
            let mut buf = [0u8; 4096];
            let n = match master.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                r => r.unwrap(),
            };
            got.extend_from_slice(&buf[..n]);
        }
    }
    let text = String::from_utf8(got.clone()).unwrap();
    assert!(
        text.starts_with("{\"__name__\":\"session-startup\"}\n"),
        "{text}"
    );
    assert!(!text.contains('\r'), "raw mode: no CR added to newlines");
    master
        .write_all(b"{\"__name__\":\"echo\",\"via\":\"tty\"}\n")
        .unwrap();
    let deadline = Instant::now() + 5 * SEC;
    while !String::from_utf8_lossy(&got).contains("\"via\":\"tty\"") {
        assert!(Instant::now() < deadline, "no echo on the tty");
        if guestd::sys::poll(&mut fds, Some(Duration::from_millis(100))).unwrap() > 0 {
            let mut buf = [0u8; 4096];
            let n = match master.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
                r => r.unwrap(),
            };
            got.extend_from_slice(&buf[..n]);
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

fn libc_pollfd(f: &std::fs::File) -> guestd::sys::PollFd {
    use std::os::fd::AsRawFd;
    guestd::sys::pollfd(f.as_raw_fd(), guestd::sys::POLLIN)
}

#[test]
fn debug_2_writes_syslog_records_to_the_socket_and_falls_back_to_stderr() {
    use std::os::unix::net::UnixDatagram;
    let dir = Dir::new("syslog");
    let log_sock = dir.path().join("log.sock");
    let syslog = UnixDatagram::bind(&log_sock).unwrap();
    syslog.set_read_timeout(Some(5 * SEC)).unwrap();
    let mut child = std::process::Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "2"])
        .arg(format!("--syslog-socket={}", log_sock.display()))
        .arg(format!(
            "--channel=unix-listen:{}",
            dir.path().join("g.sock").display()
        ))
        .args(common::isolation(dir.path()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = syslog.recv(&mut buf).expect("a syslog record");
    let record = String::from_utf8_lossy(&buf[..n]).into_owned();
    // facility daemon (3), severity info (6): <30>
    let head = format!("<30>guestd[{}]: ", child.id());
    assert!(record.starts_with(&head), "{record}");
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.stderr.is_empty(),
        "nothing on stderr while syslog works"
    );
    // No syslog socket: the records go to stderr.
    let out = std::process::Command::new(common::guestd_bin())
        .args([
            "--config",
            "/dev/null",
            "-d",
            "2",
            "--syslog-socket=/nonexistent/log",
        ])
        .arg(format!(
            "--channel=unix-listen:{}",
            dir.path().join("g2.sock").display()
        ))
        .args(common::isolation(dir.path()))
        .arg("--pid-file=/nonexistent/dir/guestd.pid")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR") && err.contains("/nonexistent/dir/guestd.pid"),
        "{err}"
    );
}

#[test]
fn network_interfaces_are_those_up_and_not_loopback_with_the_references_hw() {
    let (_dir, agent) = agent_with_overlay("net", "net-ovirt", "sys/class/net", &[]);
    let mut peer = agent.connect();
    let (msg, _) = peer.until("network-interfaces", 5 * SEC);
    // Addresses come from getifaddrs(3) of the machine running the test: only their shape.
    let got: Vec<(&Value, &Value)> = msg["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|i| assert!(i["inet"].is_array() && i["inet6"].is_array(), "{i}"))
        .map(|i| (&i["name"], &i["hw"]))
        .collect();
    // Left out: eth1 (down), tun1 (no flags: down), lo (loopback), docker0 (ignored-nics).
    assert_eq!(
        got,
        [
            (&json!("eth0"), &json!("52:54:00:12:34:56")),
            // The first six bytes of a 20-byte InfiniBand address.
            (&json!("ib0"), &json!("80:00:02:08:fe:80")),
            // No MAC: zeros, as python-ethtool gets them from SIOCGIFHWADDR.
            (&json!("wg0"), &json!("00:00:00:00:00:00")),
        ]
    );
    // ignored-nics replaces the default list.
    drop(peer);
    drop(agent);
    let (_dir, agent) = agent_with_overlay(
        "net2",
        "net-ovirt",
        "sys/class/net",
        &["--ignored-nics=wg0"],
    );
    let (msg, _) = agent.connect().until("network-interfaces", 5 * SEC);
    let listed: Vec<&Value> = msg["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["name"])
        .collect();
    assert_eq!(listed, ["docker0", "eth0", "ib0"]);
}

#[test]
fn negotiation_with_a_string_version_brings_cpus_and_containers_in_the_burst() {
    let (_dir, agent) = agent_with_overlay("containers", "containers", "var/lib/docker", &[]);
    let mut peer = agent.connect();
    let mut burst = Vec::new();
    for _ in STARTUP_BURST {
        burst.push(peer.next(SEC).expect("burst message"));
    }
    assert_eq!(names(&burst), STARTUP_BURST);
    assert!(burst[7]["disks"].is_array() && burst[7]["mapping"].is_object());
    // The reference reads the version with Python's int(): "3" is 3.
    peer.send(r#"{"__name__": "api-version", "apiVersion": "3"}"#);
    let (cpus, seen) = peer.until("number-of-cpus", 5 * SEC);
    assert!(cpus["count"].as_i64().unwrap() >= 1, "{cpus}");
    let refresh: Vec<String> = names(&seen)
        .into_iter()
        .skip_while(|n| n != "session-startup")
        .filter(|n| n != "heartbeat")
        .collect();
    assert_eq!(
        refresh,
        [
            "session-startup",
            "active-user",
            "applications",
            "containers",
            "host-name",
            "os-version",
            "network-interfaces",
            "disks-usage",
            "fqdn",
            "timezone",
            "os-info"
        ]
    );
    let containers = seen.iter().find(|m| m["__name__"] == "containers").unwrap();
    let list = containers["list"].as_array().unwrap();
    assert_eq!(list.len(), 5, "{containers}");
    let web = list.iter().find(|c| c["names"] == json!(["/web"])).unwrap();
    assert_eq!(web["image"], "nginx:latest");
    assert_eq!(
        web["command"],
        "/docker-entrypoint.sh nginx -g 'daemon off;'"
    );
    assert!(web["id"].as_str().unwrap().starts_with("d0c4e1"));
    // Worded against the real clock: started in 2024, so up for years.
    assert!(web["status"].as_str().unwrap().starts_with("Up "), "{web}");
    let db = list.iter().find(|c| c["names"] == json!(["/db"])).unwrap();
    assert_eq!(db["status"], "Up");
    assert_eq!(db["image"], "docker.io/library/postgres:16");
    let keys: Vec<&String> = web.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["command", "id", "image", "names", "status"]);
    // A version that is not a number changes nothing.
    peer.send(r#"{"__name__": "api-version", "apiVersion": "three"}"#);
    peer.send(r#"{"__name__": "echo"}"#);
    let (_, seen) = peer.until("echo", 5 * SEC);
    assert!(!names(&seen).contains(&"session-startup".to_owned()));
    assert!(agent.log_text().contains("apiVersion is not an integer"));
}

#[test]
fn containers_is_an_empty_list_without_an_engine_and_waits_for_api_3() {
    let (_dir, agent) = agent_with_root("nocontainers", &[]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);
    peer.send(r#"{"__name__": "echo"}"#);
    let (_, seen) = peer.until("echo", 5 * SEC);
    assert!(!names(&seen).contains(&"containers".to_owned()), "{seen:?}");
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    let (c, _) = peer.until("containers", 5 * SEC);
    assert_eq!(c, json!({"__name__": "containers", "list": []}));
}

#[test]
fn completion_needs_api_3_and_an_unknown_lifecycle_event_is_done() {
    let (_dir, agent) = agent_with_root("completion", &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    // Version 0: the reference drops completion; the outcome goes to the log only.
    peer.send(r#"{"__name__": "lifecycle-event", "type": "before_migration", "reply_id": "a"}"#);
    peer.send(r#"{"__name__": "echo"}"#);
    let (_, seen) = peer.until("echo", 5 * SEC);
    assert!(!names(&seen).contains(&"completion".to_owned()), "{seen:?}");
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    peer.send(r#"{"__name__": "lifecycle-event", "type": "before_migration", "reply_id": "b"}"#);
    let (c, _) = peer.until("completion", 5 * SEC);
    assert_eq!(
        c,
        json!({"__name__": "completion", "reply_id": "b", "done": true})
    );
    // A type the reference has no hook for: nothing runs, and it is done.
    peer.send(r#"{"__name__": "lifecycle-event", "type": "before_teleport", "reply_id": "c"}"#);
    let (c, _) = peer.until("completion", 5 * SEC);
    assert_eq!(
        c,
        json!({"__name__": "completion", "reply_id": "c", "done": true})
    );
    assert!(
        agent
            .log_text()
            .contains("no completion for before_migration")
    );
}

/// Reads until `echo` after sending one, returning what came before it.
fn drain(peer: &mut common::Peer) -> Vec<Value> {
    peer.send(r#"{"__name__": "echo"}"#);
    peer.until("echo", 5 * SEC).1
}

fn cli_ok(dir: &std::path::Path, args: &[&str]) {
    let o = common::cli(dir, args);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn key_value_messages_wait_for_a_host_that_speaks_them() {
    let (dir, agent) = agent_with_root("kvauto", &[]);
    common::wait_for_control(dir.path());
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    cli_ok(dir.path(), &["-p", "k=v"]);
    cli_ok(dir.path(), &["-e", "ready"]);
    // The reference's own session-lock is not held behind them.
    cli_ok(dir.path(), &["-e", "session-lock"]);
    let (_, seen) = peer.until("session-lock", 5 * SEC);
    let seen = [seen, drain(&mut peer)].concat();
    for held in ["param", "event"] {
        assert!(!names(&seen).contains(&held.to_owned()), "{seen:?}");
    }
    // A host without the extension (VDSM) never gets them, however long it stays.
    drop(peer);
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    let seen = drain(&mut peer);
    assert!(!names(&seen).contains(&"param".to_owned()), "{seen:?}");
    // Once the host sends a key-value command, the held messages follow its answer, in order.
    peer.send(r#"{"__name__": "list-params"}"#);
    let (params, _) = peer.until("params", 5 * SEC);
    assert_eq!(params["params"][0]["key"], "k");
    let (p, _) = peer.until("param", 5 * SEC);
    assert_eq!(
        p,
        json!({"__name__": "param", "key": "k", "value": "v", "origin": "guest"})
    );
    assert_eq!(peer.until("event", 5 * SEC).0["name"], "ready");
    // Later news goes at once to this host.
    cli_ok(dir.path(), &["-e", "later"]);
    assert_eq!(peer.until("event", 5 * SEC).0["name"], "later");
}

#[test]
fn ovirt_kv_messages_yes_sends_at_once_and_no_never() {
    let (dir, agent) = agent_with_root("kvyes", &["--ovirt-kv-messages=yes"]);
    common::wait_for_control(dir.path());
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    cli_ok(dir.path(), &["-p", "k=v"]);
    assert_eq!(peer.until("param", 5 * SEC).0["key"], "k");
    drop(peer);
    drop(agent);

    let (dir, agent) = agent_with_root("kvno", &["--ovirt-kv-messages=no"]);
    common::wait_for_control(dir.path());
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    cli_ok(dir.path(), &["-p", "k=v"]);
    // Even a host that asks for params gets only its answers, not the outbox.
    peer.send(r#"{"__name__": "get-param", "key": "k", "reply_id": "g"}"#);
    let (got, _) = peer.until("param", 5 * SEC);
    assert_eq!(got["origin"], "guest");
    let (c, _) = peer.until("completion", 5 * SEC);
    assert_eq!(
        c["done"], true,
        "a key-value host takes completions at any version"
    );
    let seen = drain(&mut peer);
    assert!(!names(&seen).contains(&"param".to_owned()), "{seen:?}");
    // Still in the outbox, nothing lost.
    let store = std::fs::read_to_string(dir.path().join("state/params")).unwrap();
    let doc: Value = serde_json::from_str(&store).unwrap();
    assert_eq!(doc["outbox"].as_array().unwrap().len(), 1, "{doc}");
}
