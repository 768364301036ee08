// SPDX-License-Identifier: Apache-2.0
//! guestctl, the host-side tool, against a real agent on a UNIX socket.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Dir, copy_tree, fixture};
use serde_json::Value;

fn guestctl(agent: &Agent, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--socket", agent.sock.to_str().unwrap(), "--timeout", "10"])
        .args(args)
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn agent(tag: &str) -> (Dir, Agent) {
    let dir = Dir::new(tag);
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(dir.path(), &["-t", "1", &root_arg]);
    (dir, agent)
}

#[test]
fn info_prints_the_facts_as_a_table_or_json() {
    let (_dir, agent) = agent("ctl-info");
    let o = guestctl(&agent, &["--json", "info"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["host-name"]["name"], "vm1");
    assert_eq!(v["os-info"]["codename"], "bookworm", "negotiated to API 3");
    assert_eq!(v["timezone"]["zone"], "Europe/Prague");
    let o = guestctl(&agent, &["info"]);
    let table = text(&o.stdout);
    for row in [
        "host name     vm1",
        "fqdn          vm1.lab.example.com",
        "users         alice",
        "52:54:00:ab:cd:ef",
    ] {
        assert!(table.contains(row), "{row:?} missing from:\n{table}");
    }
}

#[test]
fn key_value_commands_wait_for_completions() {
    let (_dir, agent) = agent("ctl-kv");
    assert!(guestctl(&agent, &["set", "a=1 2"]).status.success());
    assert!(guestctl(&agent, &["set", "b=x"]).status.success());
    assert_eq!(text(&guestctl(&agent, &["get", "a"]).stdout), "1 2\n");
    assert_eq!(
        text(&guestctl(&agent, &["list"]).stdout),
        "{\"a\":\"1 2\"}\n{\"b\":\"x\"}\n"
    );
    assert!(guestctl(&agent, &["delete", "a"]).status.success());
    let o = guestctl(&agent, &["get", "a"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no param 'a'"));
    let o = guestctl(&agent, &["set", "bad=key=v"]);
    assert!(o.status.success(), "the value may hold '='");
    let o = guestctl(&agent, &["set", "=v"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("the guest refused set-param: key is empty"),
        "{}",
        text(&o.stderr)
    );
    assert!(guestctl(&agent, &["delete-all"]).status.success());
    assert_eq!(text(&guestctl(&agent, &["list"]).stdout), "");
}

#[test]
fn actions_report_refusals_and_echo_round_trips() {
    let (_dir, agent) = agent("ctl-actions");
    let o = guestctl(&agent, &["echo"]);
    assert!(
        text(&o.stdout).starts_with("echo answered in "),
        "{}",
        text(&o.stdout)
    );
    // The test harness configures /bin/false as the power-off command.
    let o = guestctl(&agent, &["shutdown", "--timeout", "1", "--message", "bye"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("refused shutdown"),
        "{}",
        text(&o.stderr)
    );
    let o = guestctl(&agent, &["lock-screen"]);
    assert!(
        text(&o.stderr).contains("no lock-screen hook"),
        "{}",
        text(&o.stderr)
    );
    assert!(
        guestctl(&agent, &["lifecycle", "before_migration"])
            .status
            .success()
    );
    let o = guestctl(&agent, &["set-cpus", "0"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn watch_prints_timestamped_messages_and_a_missing_socket_times_out() {
    let (_dir, agent) = agent("ctl-watch");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--socket", agent.sock.to_str().unwrap(), "watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let (stamp, msg) = first.split_once(' ').unwrap();
    assert!(stamp.ends_with('Z') && stamp.len() == 24, "{stamp}");
    assert_eq!(
        serde_json::from_str::<Value>(msg).unwrap()["__name__"],
        "session-startup"
    );
    watch.kill().unwrap();
    let _ = watch.wait();
    let t0 = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args([
            "--socket",
            "/nonexistent/ga.sock",
            "--timeout",
            "0.5",
            "info",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        text(&o.stderr).contains("/nonexistent/ga.sock"),
        "{}",
        text(&o.stderr)
    );
    let mut stdin_login = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--socket", agent.sock.to_str().unwrap(), "login", "alice"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    stdin_login
        .stdin
        .take()
        .unwrap()
        .write_all(b"pw\n")
        .unwrap();
    let o = stdin_login.wait_with_output().unwrap();
    assert!(
        text(&o.stderr).contains("no login hook"),
        "{}",
        text(&o.stderr)
    );
}

/// `guestctl --qga <dir>/qga.sock ARGS`.
fn guestctl_qga(agent: &Agent, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--qga", agent.qga.to_str().unwrap(), "--timeout", "10"])
        .args(args)
        .output()
        .unwrap()
}

fn ok_qga(agent: &Agent, args: &[&str]) -> String {
    let o = guestctl_qga(agent, args);
    assert!(
        o.status.success(),
        "guestctl --qga {args:?}: {}",
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn err_qga(agent: &Agent, args: &[&str]) -> String {
    let o = guestctl_qga(agent, args);
    assert_eq!(
        o.status.code(),
        Some(1),
        "guestctl --qga {args:?} did not fail"
    );
    text(&o.stderr)
}

#[test]
fn qga_mode_syncs_and_runs_protocol_and_raw_commands() {
    let dir = Dir::new("ctl-qga");
    let agent = Agent::start_qga(dir.path(), &["--block-rpcs=guest-sync"]);
    assert!(ok_qga(&agent, &["ping"]).starts_with("guest-ping answered in "));
    let table = ok_qga(&agent, &["info"]);
    assert!(table.starts_with("version "), "{table}");
    for row in ["guest-ping", "__io.github.guestd_get-param"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(row) && l.ends_with(" enabled")),
            "{row} missing from:\n{table}"
        );
    }
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("guest-sync ") && l.ends_with(" disabled"))
    );
    let info: Value = serde_json::from_str(&ok_qga(&agent, &["--json", "info"])).unwrap();
    assert!(info["supported_commands"].as_array().unwrap().len() > 4);
    // A command the agent lacks, and one it refuses, in words.
    assert_eq!(
        err_qga(&agent, &["call", "guest-frobnicate"]),
        "guestctl: the agent does not support guest-frobnicate\n"
    );
    assert!(
        err_qga(&agent, &["call", "guest-sync", "{\"id\":1}"])
            .contains("the agent has disabled guest-sync")
    );
    // call prints the return value; raw prints the whole reply, id and all.
    assert_eq!(ok_qga(&agent, &["call", "guest-ping"]), "{}\n");
    let raw = ok_qga(&agent, &["raw", r#"{"execute":"guest-ping","id":"x1"}"#]);
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        serde_json::json!({"return": {}, "id": "x1"})
    );
    let e = guestctl_qga(&agent, &["raw", r#"{"execute":"nope"}"#]);
    assert_eq!(e.status.code(), Some(1));
    assert!(
        text(&e.stdout).contains("CommandNotFound"),
        "{}",
        text(&e.stdout)
    );
    // Usage errors need no agent round trip.
    assert!(err_qga(&agent, &["frob"]).contains("unknown command 'frob' with --qga"));
    let o = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--qga", "a", "--socket", "b", "ping"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--socket and --qga exclude each other"));
}

#[test]
fn qga_mode_reaches_the_key_value_store_and_the_guest_messages() {
    let dir = Dir::new("ctl-qga-kv");
    let d = dir.path();
    let agent = Agent::start_qga(d, &[]);
    assert_eq!(ok_qga(&agent, &["set", "a=1 = 2"]), "");
    assert_eq!(ok_qga(&agent, &["set", "ключ=\u{e9}"]), "");
    assert_eq!(ok_qga(&agent, &["get", "a"]), "1 = 2\n");
    assert_eq!(ok_qga(&agent, &["get", "ключ"]), "\u{e9}\n");
    assert_eq!(
        ok_qga(&agent, &["list"]),
        "{\"a\":\"1 = 2\"}\n{\"ключ\":\"é\"}\n"
    );
    assert_eq!(ok_qga(&agent, &["delete", "a"]), "");
    assert_eq!(
        err_qga(&agent, &["get", "a"]),
        "guestctl: __io.github.guestd_get-param: no param \"a\"\n"
    );
    assert!(err_qga(&agent, &["set", "=v"]).contains("key is empty"));
    assert_eq!(ok_qga(&agent, &["delete-all"]), "");
    assert_eq!(ok_qga(&agent, &["list"]), "");
    // The guest's messages: read, then taken with --ack.
    let guestd = |args: &[&str]| {
        let o = Command::new(common::guestd_bin())
            .args(["--config", "/dev/null", "-d", "1"])
            .args(common::isolation(d))
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o.stderr));
    };
    guestd(&["-p", "k=v"]);
    guestd(&["-e", "ready"]);
    let lines = |s: String| -> Vec<Value> {
        s.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first = lines(ok_qga(&agent, &["messages"]));
    assert_eq!(first.len(), 2);
    assert_eq!(
        (&first[0]["kind"], &first[0]["key"]),
        (&"param".into(), &"k".into())
    );
    assert_eq!(first[1]["name"], "ready");
    assert_eq!(lines(ok_qga(&agent, &["messages", "--ack"])), first);
    assert_eq!(ok_qga(&agent, &["messages"]), "");
    guestd(&["-e", "again"]);
    let seq = lines(ok_qga(&agent, &["messages"]))[0]["seq"].to_string();
    assert_eq!(ok_qga(&agent, &["ack", &seq]), "");
    assert_eq!(ok_qga(&agent, &["messages"]), "");
}
