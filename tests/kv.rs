// SPDX-License-Identifier: Apache-2.0
//! Key-value messaging end to end: the ovmd-style command line against a running agent and
//! without one, the host's key-value commands over a real UNIX socket, delivery across
//! detach and restart, crash safety under SIGKILL, and hooks.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{Agent, Dir, Peer, cli, isolation, names};
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An agent whose oVirt host takes the key-value messages unasked (these tests are about
/// their delivery; `ovirt-kv-messages = auto` is tested in tests/agent.rs).
fn start(dir: &Path, extra: &[&str]) -> Agent {
    let mut args = vec!["--ovirt-kv-messages=yes"];
    args.extend_from_slice(extra);
    let agent = Agent::start(dir, &args);
    common::wait_for_control(dir);
    agent
}

/// Messages other than the periodic and burst ones, until `name` arrives.
fn kv_until(peer: &mut Peer, name: &str) -> Value {
    peer.until(name, 5 * SEC).0
}

fn hook(dir: &Path, rel: &str, body: &str) {
    let p = dir.join("hooks").join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_ovmd_transcript_works_with_and_without_an_agent() {
    let dir = Dir::new("transcript");
    let d = dir.path();
    // No agent: the command line edits the store itself.
    assert!(cli(d, &["-p", "key1=value1"]).status.success());
    assert_eq!(stdout(&cli(d, &["--list"])), "{\"key1\":\"value1\"}\n");
    // With an agent: the same commands go through it, and the host's key2 shows up.
    let agent = start(d, &[]);
    let mut peer = agent.connect();
    // key1 was pending: it reaches the host when it attaches.
    let p = kv_until(&mut peer, "param");
    assert_eq!(
        p,
        json!({"__name__": "param", "key": "key1", "value": "value1", "origin": "guest"})
    );
    peer.send(r#"{"__name__": "set-param", "key": "key2", "value": "value2", "reply_id": "a"}"#);
    assert_eq!(kv_until(&mut peer, "completion")["done"], true);
    assert_eq!(
        stdout(&cli(d, &["--list"])),
        "{\"key1\":\"value1\"}\n{\"key2\":\"value2\"}\n"
    );
    assert!(cli(d, &["-r", "key1"]).status.success());
    assert_eq!(
        kv_until(&mut peer, "param-deleted"),
        json!({"__name__": "param-deleted", "key": "key1"})
    );
    assert_eq!(stdout(&cli(d, &["--list"])), "{\"key2\":\"value2\"}\n");
    let g = cli(d, &["-g", "key2"]);
    assert_eq!(
        (g.status.code(), stdout(&g)),
        (Some(0), "value2\n".to_owned())
    );
    let g = cli(d, &["-g", "nope"]);
    assert_eq!(g.status.code(), Some(1));
    assert!(stderr(&g).contains("no param 'nope'"), "{}", stderr(&g));
    drop(agent);
    // The agent is gone (SIGKILL): the store still answers.
    assert_eq!(stdout(&cli(d, &["-l"])), "{\"key2\":\"value2\"}\n");
}

#[test]
fn host_commands_get_completions_and_refusals() {
    let dir = Dir::new("hostcmds");
    let agent = start(dir.path(), &[]);
    let mut peer = agent.connect();
    let big = "v".repeat(8193);
    for (cmd, ok, err) in [
        (
            json!({"__name__": "set-param", "key": "a", "value": "1", "reply_id": "1"}),
            true,
            "",
        ),
        (
            json!({"__name__": "set-param", "key": "b", "value": "2", "reply_id": "2"}),
            true,
            "",
        ),
        (
            json!({"__name__": "set-param", "key": "a=b", "value": "1", "reply_id": "3"}),
            false,
            "key contains '='",
        ),
        (
            json!({"__name__": "set-param", "key": "", "value": "1", "reply_id": "4"}),
            false,
            "key is empty",
        ),
        (
            json!({"__name__": "set-param", "key": "c", "value": big, "reply_id": "5"}),
            false,
            "value is longer than 8192 bytes",
        ),
        (
            json!({"__name__": "set-param", "key": "c", "reply_id": "6"}),
            false,
            "missing string \"value\"",
        ),
        (
            json!({"__name__": "delete-param", "key": "a", "reply_id": "7"}),
            true,
            "",
        ),
    ] {
        peer.send(&cmd.to_string());
        let c = kv_until(&mut peer, "completion");
        assert_eq!(c["reply_id"], cmd["reply_id"]);
        assert_eq!(c["done"], ok, "{cmd} -> {c}");
        if !ok {
            assert_eq!(c["error"], err);
        }
    }
    peer.send(r#"{"__name__": "get-param", "key": "b"}"#);
    assert_eq!(
        kv_until(&mut peer, "param"),
        json!({"__name__": "param", "key": "b", "value": "2", "origin": "host"})
    );
    peer.send(r#"{"__name__": "get-param", "key": "a", "reply_id": "8"}"#);
    assert_eq!(
        kv_until(&mut peer, "param"),
        json!({"__name__": "param", "key": "a", "error": "no such key"})
    );
    assert_eq!(kv_until(&mut peer, "completion")["reply_id"], "8");
    assert!(cli(dir.path(), &["-p", "g=guest value"]).status.success());
    kv_until(&mut peer, "param");
    peer.send(r#"{"__name__": "list-params"}"#);
    assert_eq!(
        kv_until(&mut peer, "params")["params"],
        json!([{"key": "b", "value": "2", "origin": "host"}, {"key": "g", "value": "guest value", "origin": "guest"}])
    );
    peer.send(r#"{"__name__": "delete-params", "reply_id": "9"}"#);
    assert_eq!(kv_until(&mut peer, "completion")["done"], true);
    assert_eq!(stdout(&cli(dir.path(), &["-l"])), "");
    // Completions go out even before API version 3 is negotiated (the host asked for them).
    let log = agent.log_text();
    assert!(
        !log.contains("guest value") && !log.contains("\"2\""),
        "values in the log: {log}"
    );
}

#[test]
fn guest_operations_reach_the_host_as_messages() {
    let dir = Dir::new("guestmsgs");
    let agent = start(dir.path(), &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    let o = cli(
        dir.path(),
        &[
            "-p", "k1=v1", "-p", "k2=v=2", "-r", "k1", "-x", "-e", "ready",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let mut got = Vec::new();
    while got.len() < 5 {
        let m = peer.next(5 * SEC).expect("guest messages");
        if ["param", "param-deleted", "params-deleted", "event"]
            .contains(&m["__name__"].as_str().unwrap())
        {
            got.push(m);
        }
    }
    assert_eq!(
        got,
        vec![
            json!({"__name__": "param", "key": "k1", "value": "v1", "origin": "guest"}),
            json!({"__name__": "param", "key": "k2", "value": "v=2", "origin": "guest"}),
            json!({"__name__": "param-deleted", "key": "k1"}),
            json!({"__name__": "params-deleted"}),
            json!({"__name__": "event", "name": "ready"}),
        ]
    );
}

#[test]
fn out_of_limit_operations_store_and_send_nothing() {
    let dir = Dir::new("limits");
    let agent = start(dir.path(), &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    let long_key = format!("{}=v", "k".repeat(256));
    let big = format!("k={}", "v".repeat(8193));
    let ok_key = format!("{}=v", "k".repeat(255));
    let ok_val = format!("k={}", "v".repeat(8192));
    for bad in [
        &long_key,
        &big,
        &"=v".to_owned(),
        &"a\tb=v".to_owned(),
        &"novalue".to_owned(),
    ] {
        // A valid operation before the bad one must not run either.
        let o = cli(dir.path(), &["-p", "first=1", "-p", bad]);
        assert_eq!(o.status.code(), Some(2), "{bad:.20}");
        assert!(!stderr(&o).is_empty());
    }
    assert_eq!(stdout(&cli(dir.path(), &["-l"])), "");
    assert!(
        cli(dir.path(), &["-p", &ok_key, "-p", &ok_val])
            .status
            .success()
    );
    let first = kv_until(&mut peer, "param");
    assert_eq!(
        first["key"].as_str().unwrap().len(),
        255,
        "nothing from the refused calls was sent"
    );
    assert_eq!(
        kv_until(&mut peer, "param")["value"]
            .as_str()
            .unwrap()
            .len(),
        8192
    );
}

#[test]
fn nothing_is_lost_across_detach_and_agent_restart() {
    let dir = Dir::new("pending");
    let d = dir.path();
    let agent = start(d, &[]);
    // No host yet: three messages wait.
    assert!(
        cli(d, &["-p", "a=1", "-e", "e1", "-p", "b=2"])
            .status
            .success()
    );
    let mut peer = agent.connect();
    let m1 = kv_until(&mut peer, "param");
    assert_eq!(m1["key"], "a");
    assert_eq!(kv_until(&mut peer, "event")["name"], "e1");
    assert_eq!(kv_until(&mut peer, "param")["key"], "b");
    drop(peer);
    // The host is away: more messages wait, in order.
    assert!(cli(d, &["-p", "c=3", "-r", "a"]).status.success());
    std::thread::sleep(Duration::from_millis(200));
    let mut peer = agent.connect();
    assert_eq!(kv_until(&mut peer, "param")["key"], "c");
    assert_eq!(kv_until(&mut peer, "param-deleted")["key"], "a");
    drop(peer);
    // Agent restart (SIGTERM) with messages pending: they survive.
    let mut agent = agent;
    assert!(agent.signal_and_wait("TERM").success());
    drop(agent);
    assert!(cli(d, &["-p", "d=4"]).status.success());
    let agent = start(d, &[]);
    let mut peer = agent.connect();
    assert_eq!(kv_until(&mut peer, "param")["key"], "d");
    // Delivered messages are not sent twice.
    let rest = peer.collect_for(SEC);
    assert!(!names(&rest).contains(&"param".to_owned()), "{rest:?}");
    assert_eq!(
        stdout(&cli(d, &["-l"])),
        "{\"b\":\"2\"}\n{\"c\":\"3\"}\n{\"d\":\"4\"}\n"
    );
}

#[test]
fn a_hundred_parallel_set_param_calls_are_all_stored_and_sent() {
    let dir = Dir::new("parallel");
    let agent = start(dir.path(), &[]);
    let mut peer = agent.connect();
    peer.until("fqdn", 2 * SEC);
    let children: Vec<_> = (0..100)
        .map(|i| {
            Command::new(common::guestd_bin())
                .args(["--config", "/dev/null", "-d", "0"])
                .args(isolation(dir.path()))
                .arg(format!("-pk{i}=v{i}"))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let mut sent = std::collections::BTreeSet::new();
    while sent.len() < 100 {
        let m = peer.next(10 * SEC).expect("all 100 params sent");
        if m["__name__"] == "param" {
            assert!(
                sent.insert(m["key"].as_str().unwrap().to_owned()),
                "duplicate {m}"
            );
        }
    }
    let listed = stdout(&cli(dir.path(), &["-l"]));
    assert_eq!(listed.lines().count(), 100);
}

#[test]
fn the_store_survives_sigkill_during_a_thousand_writes() {
    let dir = Dir::new("sigkill");
    let d = dir.path();
    let mut acknowledged = Vec::new();
    let mut agent = Some(start(d, &[]));
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut kills = 0;
    for i in 0..1000 {
        let mut call = Command::new(common::guestd_bin())
            .args(["--config", "/dev/null", "-d", "0"])
            .args(isolation(d))
            .arg(format!("-pkey{i}=value {i}"))
            .spawn()
            .unwrap();
        // Every so often kill the agent at a random moment while this write is under way.
        if rand() % 40 == 0 {
            if let Some(mut a) = agent.take() {
                std::thread::sleep(Duration::from_micros(rand() % 4000));
                let _ = a.child.kill();
                let _ = a.child.wait();
                kills += 1;
            }
        }
        if call.wait().unwrap().success() {
            acknowledged.push(i);
        }
        if agent.is_none() && rand() % 5 == 0 {
            let _ = std::fs::remove_file(d.join("g.sock"));
            agent = Some(start(d, &[]));
        }
    }
    drop(agent);
    eprintln!(
        "sigkill: {kills} kills, {} of 1000 writes acknowledged",
        acknowledged.len()
    );
    assert!(kills >= 5, "only {kills} kills");
    assert!(
        acknowledged.len() >= 900,
        "{} of 1000 acknowledged",
        acknowledged.len()
    );
    let text = std::fs::read_to_string(d.join("state/params")).unwrap();
    let store: Value = serde_json::from_str(&text).expect("the store parses");
    let keys: std::collections::BTreeSet<String> = store["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap().to_owned())
        .collect();
    for i in &acknowledged {
        assert!(
            keys.contains(&format!("key{i}")),
            "acknowledged key{i} lost"
        );
    }
    let corrupt = std::fs::read_dir(d.join("state"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains("corrupt")
        })
        .count();
    assert_eq!(corrupt, 0, "the store was never found corrupt");
}

#[test]
fn host_set_param_runs_param_hooks_with_the_value_on_stdin_only() {
    let dir = Dir::new("paramhook");
    let d = dir.path();
    let out = d.join("hook-out");
    hook(
        d,
        "param/10-record",
        &format!(
            "echo \"args=$# key=$1\" >> {o}; cat > {o}.value; env > {o}.env; echo hook saw $1",
            o = out.display()
        ),
    );
    let agent = start(d, &[]);
    let mut peer = agent.connect();
    let secret = "S3cr3t-root-password";
    peer.send(&json!({"__name__": "set-param", "key": "com.oracle.linux.root-password", "value": secret, "reply_id": "p"}).to_string());
    assert_eq!(kv_until(&mut peer, "completion")["done"], true);
    let deadline = Instant::now() + 5 * SEC;
    while !agent.log_text().contains("param/10-record: exit status 0") {
        assert!(
            Instant::now() < deadline,
            "hook did not finish: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let rec = std::fs::read_to_string(&out).unwrap();
    assert_eq!(rec, "args=1 key=com.oracle.linux.root-password\n");
    assert_eq!(
        std::fs::read_to_string(format!("{}.value", out.display())).unwrap(),
        secret
    );
    let env = std::fs::read_to_string(format!("{}.env", out.display())).unwrap();
    assert!(!env.contains(secret), "value in the environment");
    let log = agent.log_text();
    assert!(
        log.contains("hook saw com.oracle.linux.root-password"),
        "{log}"
    );
    assert!(!log.contains(secret), "the secret reached the log: {log}");
}

#[test]
fn script_hooks_run_in_order_with_params_on_stdin_and_report_status() {
    let dir = Dir::new("script");
    let d = dir.path();
    let trace = d.join("trace");
    let t = trace.display();
    hook(
        d,
        "configure/20-second",
        &format!("echo second >> {t}; exit 3"),
    );
    hook(
        d,
        "configure/10-first",
        &format!("echo first >> {t}; cat >> {t}"),
    );
    hook(d, "configure/30-third", &format!("echo third >> {t}"));
    std::fs::write(
        d.join("hooks/configure/40-not-executable"),
        "#!/bin/sh\necho no >> /dev/null\n",
    )
    .unwrap();
    assert!(cli(d, &["-p", "a=1", "-p", "b=x\"y"]).status.success());
    let o = cli(d, &["-s", "configure"]);
    assert_eq!(o.status.code(), Some(1), "one script failed");
    assert_eq!(
        std::fs::read_to_string(&trace).unwrap(),
        "first\n{\"a\":\"1\"}\n{\"b\":\"x\\\"y\"}\nsecond\nthird\n"
    );
    let report = stdout(&o);
    assert!(
        report.contains("configure/10-first: exit status 0"),
        "{report}"
    );
    assert!(
        report.contains("configure/20-second: exit status 3"),
        "{report}"
    );
    assert!(!report.contains("40-not-executable"), "{report}");
    // All succeed: exit 0.
    std::fs::remove_file(d.join("hooks/configure/20-second")).unwrap();
    assert_eq!(cli(d, &["-s", "configure"]).status.code(), Some(0));
    // A script may call guestd itself (ovmd's first-boot pattern): the store is not held
    // while scripts run.
    let me = format!(
        "{} --config /dev/null -d 0 {}",
        common::guestd_bin(),
        isolation(d).join(" ")
    );
    hook(
        d,
        "configure/50-nested",
        &format!("{me} -p from.script=yes"),
    );
    let o = cli(d, &["-s", "configure"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&cli(d, &["-g", "from.script"])), "yes\n");
}

#[test]
fn hooks_past_their_timeout_are_killed_and_leave_no_zombies() {
    let dir = Dir::new("timeout");
    let d = dir.path();
    hook(d, "event/slow/10-sleep", "sleep 30 & sleep 30");
    hook(d, "param/10-slow", "sleep 30");
    let t0 = Instant::now();
    let o = cli(d, &["--hook-timeout", "1", "-e", "slow"]);
    assert!(t0.elapsed() < 5 * SEC, "took {:?}", t0.elapsed());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("killed after timeout"),
        "{}",
        stdout(&o)
    );
    // The agent's runner: a param hook that hangs is killed, and reaped.
    let agent = start(d, &["--hook-timeout", "1"]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "set-param", "key": "k", "value": "v", "reply_id": "1"}"#);
    kv_until(&mut peer, "completion");
    // The agent keeps answering while the hook runs.
    peer.send(r#"{"__name__": "echo", "alive": 1}"#);
    kv_until(&mut peer, "echo");
    let deadline = Instant::now() + 5 * SEC;
    while !agent
        .log_text()
        .contains("param/10-slow: killed after timeout")
    {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", agent.pid()))
        .unwrap_or_default();
    for pid in children.split_whitespace() {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .next();
        assert_ne!(state, Some("Z"), "zombie child {pid}: {stat}");
    }
    assert!(children.trim().is_empty(), "children left: {children}");
}

#[test]
fn the_control_socket_admits_root_and_the_control_group_only() {
    let dir = Dir::new("peercred");
    let d = dir.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(common::guestd_bin())
            .args(["--config", "/dev/null", "-d", "0"])
            .args(isolation(d))
            .args(args)
            .output()
            .unwrap()
    };
    {
        let _agent = start(d, &[]);
        // Even with the socket opened up, a non-root peer is refused by SO_PEERCRED.
        std::fs::set_permissions(d.join("ctl.sock"), std::fs::Permissions::from_mode(0o666))
            .unwrap();
        let o = as_nobody(&["-p", "k=v"]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
        assert_eq!(stdout(&cli(d, &["-l"])), "", "nothing was stored");
    }
    // Members of --control-group are admitted (here by primary group).
    let _ = std::fs::remove_file(d.join("ctl.sock"));
    let _agent = start(d, &["--control-group=nogroup"]);
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(d.join("ctl.sock")).unwrap();
    assert_eq!((meta.gid(), meta.mode() & 0o777), (65534, 0o660));
    let o = as_nobody(&["-p", "k=v"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&cli(d, &["-l"])), "{\"k\":\"v\"}\n");
}

/// The store file on disk, as text.
fn store_text(d: &Path) -> String {
    std::fs::read_to_string(d.join("state/params")).unwrap_or_default()
}

/// Waits until the agent's log has `text`.
fn wait_log(agent: &Agent, text: &str) {
    let deadline = Instant::now() + 5 * SEC;
    while !agent.log_text().contains(text) {
        assert!(
            Instant::now() < deadline,
            "no '{text}': {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_root_password_is_deleted_from_the_store_once_the_guest_read_it() {
    let dir = Dir::new("secret-read");
    let d = dir.path();
    let agent = start(d, &[]);
    let mut peer = agent.connect();
    let secret = "Tr0ub4dor&3-root";
    let key = "com.oracle.linux.root-password";
    peer.send(
        &json!({"__name__": "set-param", "key": key, "value": secret, "reply_id": "p"}).to_string(),
    );
    peer.send(&json!({"__name__": "set-param", "key": "com.oracle.linux.network.hostname", "value": "vm7", "reply_id": "h"}).to_string());
    peer.until_where("completion", |c| c["reply_id"] == "h", 5 * SEC);
    // No param hook applied it: it waits on disk for the first-boot configuration to read.
    assert!(store_text(d).contains(secret));
    let o = cli(d, &["-g", key]);
    assert_eq!(stdout(&o), format!("{secret}\n"));
    // Read once: gone from the store file, and from the store.
    assert!(!store_text(d).contains(secret), "{}", store_text(d));
    assert!(!store_text(d).contains(key));
    let again = cli(d, &["-g", key]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("no param"), "{}", stderr(&again));
    // Other params stay.
    assert_eq!(
        stdout(&cli(d, &["-g", "com.oracle.linux.network.hostname"])),
        "vm7\n"
    );
    // The same through `-l` (ovmd -l | ovm-template-config --stdin), with no agent running.
    peer.send(
        &json!({"__name__": "set-param", "key": key, "value": secret, "reply_id": "q"}).to_string(),
    );
    peer.until_where("completion", |c| c["reply_id"] == "q", 5 * SEC);
    let log = agent.log_text();
    drop(peer);
    drop(agent);
    let listed = stdout(&cli(d, &["-l"]));
    assert!(listed.contains(secret), "{listed}");
    assert!(!store_text(d).contains(secret), "{}", store_text(d));
    assert!(!log.contains(secret), "the secret reached the log: {log}");
}

#[test]
fn a_secret_the_param_hooks_applied_is_deleted_and_a_failed_one_kept() {
    let dir = Dir::new("secret-hook");
    let d = dir.path();
    // The hook applies values it is given, and fails for the key "bad".
    hook(d, "param/10-apply", "cat > /dev/null; [ \"$1\" != bad ]");
    let agent = start(d, &[]);
    let mut peer = agent.connect();
    let secret = "marked-by-the-host-7";
    for (id, key) in [("a", "db.token"), ("b", "bad")] {
        let cmd = json!({"__name__": "set-param", "key": key, "value": secret, "secret": true, "reply_id": id});
        peer.send(&cmd.to_string());
        peer.until_where("completion", |c| c["reply_id"] == id, 5 * SEC);
    }
    wait_log(&agent, "param/10-apply: exit status 1");
    wait_log(
        &agent,
        "secret param 'db.token' applied by its hooks: deleted",
    );
    let text = store_text(d);
    // db.token is gone; bad keeps its value (once) until the guest reads it.
    assert!(!text.contains("db.token"), "{text}");
    assert_eq!(text.matches(secret).count(), 1, "{text}");
    assert_eq!(stdout(&cli(d, &["-g", "bad"])), format!("{secret}\n"));
    assert!(!store_text(d).contains(secret));
    // Without the mark, an ordinary key is kept.
    peer.send(
        r#"{"__name__": "set-param", "key": "plain", "value": "kept-value", "reply_id": "c"}"#,
    );
    peer.until_where("completion", |c| c["reply_id"] == "c", 5 * SEC);
    assert_eq!(stdout(&cli(d, &["-g", "plain"])), "kept-value\n");
    assert_eq!(stdout(&cli(d, &["-g", "plain"])), "kept-value\n");
    let log = agent.log_text();
    assert!(!log.contains(secret), "the secret reached the log: {log}");
}
