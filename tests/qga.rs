// SPDX-License-Identifier: Apache-2.0
//! The QEMU guest-agent protocol against the real binary over a UNIX socket: framing (split,
//! batched, garbage, 0xFF, oversize, deep nesting), errors, the filter, and a peer that
//! leaves.

mod common;

use std::time::Duration;

use common::{Agent, Dir};
use serde_json::json;

const SEC: Duration = Duration::from_secs(1);

#[test]
fn requests_split_across_writes_and_batched_in_one_write_are_all_answered() {
    let dir = Dir::new("qga-framing");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    // One request byte by byte.
    for b in br#"{"execute": "guest-sync", "arguments": {"id": 42}}"# {
        p.send_raw(&[*b]);
    }
    assert_eq!(p.reply(), json!({"return": 42}));
    // Proxmox's way: sync-delimited and the command in one write, with or without a newline.
    p.send_raw(
        b"{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":123450}}\n{\"execute\":\"guest-ping\"}{'execute':'guest-ping','id':3}",
    );
    assert_eq!(p.next_raw(5 * SEC).unwrap(), b"\xff{\"return\":123450}");
    assert_eq!(p.reply(), json!({"return": {}}));
    assert_eq!(p.reply(), json!({"return": {}, "id": 3}));
}

#[test]
fn garbage_flush_oversize_and_deep_nesting_are_survived() {
    let dir = Dir::new("qga-garbage");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    // Garbage gets one error, then the stream resynchronises.
    p.send_raw(b"this is not json\n");
    assert_eq!(p.reply()["error"]["class"], "GenericError");
    // A lone 0xFF flushes a half-sent request and gets no reply.
    p.send_raw(b"{\"execute\":\"guest-pi\xff");
    assert_eq!(
        p.call(r#"{"execute":"guest-sync","arguments":{"id":1}}"#),
        json!({"return": 1})
    );
    // Deep nesting is refused, and what follows is served.
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    p.send_raw(deep.as_bytes());
    assert_eq!(
        p.reply()["error"]["desc"],
        "JSON nesting depth limit exceeded"
    );
    // A value over 16 MiB is refused without being kept, and what follows is served.
    let mut big = b"{\"execute\":\"guest-ping\",\"arguments\":{\"x\":\"".to_vec();
    big.resize(17 << 20, b'a');
    big.extend_from_slice(b"\"}}");
    let mut w = p.stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || std::io::Write::write_all(&mut w, &big).unwrap());
    let r = p.reply();
    sender.join().unwrap();
    assert!(
        r["error"]["desc"].as_str().unwrap().contains("size limit"),
        "{r}"
    );
    assert_eq!(
        p.call(r#"{"execute":"guest-sync","arguments":{"id":2}}"#),
        json!({"return": 2})
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    assert!(
        rss_kb < 40 * 1024,
        "peak RSS {rss_kb} KiB after refusing 17 MiB"
    );
}

#[test]
fn only_one_host_at_a_time_and_a_new_one_after_the_first_leaves() {
    let dir = Dir::new("qga-reconnect");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut first = agent.connect_qga();
    assert_eq!(first.ok("guest-ping", json!({})), json!({}));
    // A half-sent request dies with its connection.
    first.send_raw(b"{\"execute\":\"guest-sy");
    drop(first);
    let mut second = agent.connect_qga();
    assert_eq!(
        second.call(r#"{"execute":"guest-sync","arguments":{"id":9}}"#),
        json!({"return": 9})
    );
}

#[test]
fn block_and_allow_lists_come_from_the_command_line_and_the_config_file() {
    let dir = Dir::new("qga-filter");
    let conf = dir.path().join("guestd.conf");
    std::fs::write(&conf, "allow-rpcs = guest-ping, guest-info, guest-sync\n").unwrap();
    let conf_arg = format!("--config={}", conf.display());
    let agent = Agent::start_qga(dir.path(), &[&conf_arg, "--block-rpcs=guest-sync"]);
    let mut p = agent.connect_qga();
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
    let e = p.err("guest-sync", json!({"id": 1}));
    assert_eq!(
        e,
        json!({"class": "CommandNotFound", "desc": "Command guest-sync has been disabled: the command is not allowed"})
    );
    let e = p.err("guest-get-time", json!({}));
    assert_eq!(e["class"], "CommandNotFound");
}

#[test]
fn block_rpcs_help_lists_the_commands() {
    let out = std::process::Command::new(common::guestd_bin())
        .args(["--block-rpcs=help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for name in ["guest-sync-delimited", "guest-ping", "guest-info"] {
        assert!(text.lines().any(|l| l == name), "{name} missing: {text}");
    }
}
