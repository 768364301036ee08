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
