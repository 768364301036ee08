// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of a link's transport behaviour against the real binary: backpressure
//! instead of dropped replies, and listening sockets that appear only when ready.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{Agent, Dir, copy_tree, fixture};
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

/// A host that pipelines far more echoes than the agent's queue holds and does not read
/// until the agent pushes back (its writes would block) gets every reply, in order: the
/// agent stops reading while its queue is full instead of dropping replies.
#[test]
fn pipelined_echoes_are_all_answered_in_order_when_the_host_reads_late() {
    const N: usize = 3000;
    let dir = Dir::new("pipeline");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(dir.path(), &[root_arg.as_str()]);
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    // About 12 MB of replies, each with 4 KiB of padding: far beyond the 1 MiB queue.
    let pad = "x".repeat(4096);
    let lines = (0..N)
        .map(|i| format!("{{\"__name__\":\"echo\",\"n\":{i},\"pad\":\"{pad}\"}}\n"))
        .collect();
    let (sender, pushed_back) = common::send_in_background(peer.stream.try_clone().unwrap(), lines);
    // Read nothing until the agent pushed back (or, without backpressure, took it all).
    assert!(
        common::wait_flag(&pushed_back, &sender, 30 * SEC),
        "the agent took all input without pushing back"
    );
    let mut reader = BufReader::new(peer.stream.try_clone().unwrap());
    reader.get_mut().set_read_timeout(Some(60 * SEC)).unwrap();
    let mut next = 0;
    let mut line = String::new();
    while next < N {
        line.clear();
        let n = reader.read_line(&mut line).expect("reading replies");
        assert!(n > 0, "the agent closed the channel after {next} replies");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["__name__"] != "echo" {
            continue;
        }
        assert_eq!(v["n"], next, "replies out of order or missing");
        next += 1;
    }
    sender.join().unwrap();
    let log = agent.log_text();
    assert!(!log.contains("dropped"), "{log}");
}

/// The control socket and a unix-listen channel exist only once they accept, with their
/// final mode: a client that sees the file can connect at once.
#[test]
fn sockets_appear_ready_with_their_mode() {
    let dir = Dir::new("ready");
    let agent = Agent::start(dir.path(), &[]);
    // `Agent::start` returned as soon as the channel socket existed: connect without retry.
    let _peer = UnixStream::connect(&agent.sock).expect("connect as soon as the file exists");
    let ctl = dir.path().join("ctl.sock");
    let deadline = std::time::Instant::now() + 10 * SEC;
    while !ctl.exists() {
        assert!(std::time::Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(std::fs::metadata(&ctl).unwrap().mode() & 0o777, 0o600);
    UnixStream::connect(&ctl).expect("connect as soon as the file exists");
    // No temporary names are left behind.
    let stray: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

/// A command held back while the queue was full, whose work then ends at once (a hook job
/// with no program to run), is answered in the same turn, not at the next timer wake-up
/// (the timers here are an hour away).
#[test]
fn an_answer_to_a_command_held_back_by_backpressure_is_not_parked_until_a_timer() {
    let dir = Dir::new("parked");
    // 20 params of 8 KB: list-params answers with 160 KB.
    for i in 0..20 {
        let kv = format!("k{i}={}", "v".repeat(8000));
        let o = std::process::Command::new(common::guestd_bin())
            .args(["--config", "/dev/null", "-d", "0"])
            .args(common::isolation(dir.path()))
            .args(["-p", &kv])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    }
    let hour = [
        "-t",
        "3600",
        "--report-user-rate=3600",
        "--report-application-rate=3600",
        "--report-num-cpu-rate=3600",
        "--report-disk-usage-rate=3600",
    ];
    let agent = Agent::start(dir.path(), &hour);
    let mut peer = agent.connect();
    peer.until("fqdn", 10 * SEC);
    // One write: a big answer, a bigger one, then a command whose work ends at once.
    let echo = format!(
        r#"{{"__name__": "echo", "pad": "{}"}}"#,
        "x".repeat(105_000)
    );
    let list = r#"{"__name__": "list-params"}"#;
    let lock = r#"{"__name__": "lock-screen", "reply_id": "L"}"#;
    peer.send_raw(format!("{list}\n{echo}\n{lock}\n").as_bytes());
    let (c, _) = peer.until_where("completion", |v| v["reply_id"] == "L", 60 * SEC);
    assert_eq!(c["done"], false, "{c}");
    assert_eq!(c["error"], "no lock-screen hook is installed in this guest");
}

/// Requests refused at once are answered at once, in order with the replies to the commands
/// after them.
#[test]
fn immediate_refusals_keep_their_place_among_the_replies() {
    let dir = Dir::new("order");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(dir.path(), &[root_arg.as_str()]);
    let mut peer = agent.connect();
    peer.until("session-startup", 10 * SEC);
    let off = |id: &str| format!(r#"{{"__name__": "log-off", "reply_id": "{id}"}}"#);
    let echo = r#"{"__name__": "echo", "n": 1}"#;
    // Completions need API version 3.
    let v3 = r#"{"__name__": "api-version", "apiVersion": 3}"#;
    peer.send_raw(format!("{v3}\n{}\n{}\n{echo}\n", off("L1"), off("L2")).as_bytes());
    let (_, before) = peer.until("echo", 10 * SEC);
    let answered: Vec<_> = before
        .iter()
        .filter(|m| m["__name__"] == "completion")
        .map(|m| (m["reply_id"].clone(), m["error"].clone()))
        .collect();
    assert_eq!(
        answered,
        [
            (json!("L1"), json!("no user session to end")),
            (json!("L2"), json!("no user session to end"))
        ]
    );
}
