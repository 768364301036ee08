// SPDX-License-Identifier: Apache-2.0
//! The key-value store over QGA (`__io.github.guestd_*`) against the real binary: the host
//! sets what `guestd -g` reads (and the param hooks see), the guest's `-p`/`-e`/`-r` reach
//! the host through get-messages and leave the outbox once acknowledged, one outbox shared
//! with an oVirt host without loss or double offers, limits, and non-ASCII values.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use std::time::{Duration, Instant};

use common::{Agent, Dir, QgaPeer, cli};
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);

fn cmd(name: &str) -> String {
    format!("__io.github.guestd_{name}")
}

fn ok_cli(dir: &Path, args: &[&str]) -> String {
    let o = cli(dir, args);
    assert!(
        o.status.success(),
        "guestd {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// An agent serving QGA on `<dir>/qga.sock`, its control socket up (the store is loaded).
fn start(dir: &Path) -> Agent {
    let agent = Agent::start_qga(dir, &[]);
    common::wait_for_control(dir);
    agent
}

fn messages(p: &mut QgaPeer, args: Value) -> (Vec<Value>, bool) {
    let r = p.ok(&cmd("get-messages"), args);
    let list = r["messages"].as_array().unwrap().clone();
    (list, r["more"].as_bool().unwrap())
}

fn kinds(list: &[Value]) -> Vec<String> {
    list.iter()
        .map(|m| m["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_host_sets_over_qga_and_the_guest_reads_it() {
    let dir = Dir::new("qga-kv-set");
    let d = dir.path();
    // A param hook that records what it was given.
    let hook = d.join("hooks/param/10-record");
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    let seen = d.join("seen");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nv=$(cat)\nprintf '%s=%s' \"$1\" \"$v\" > {0}.tmp && mv {0}.tmp {0}\n",
            seen.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = start(d);
    let mut p = agent.connect_qga();
    let value = "caf\u{e9} \u{2713} \u{1F600} \"q\"\n";
    let r = p.call(
        &json!({"execute": cmd("set-param"), "arguments": {"key": "greeting", "value": value}, "id": 1})
            .to_string(),
    );
    assert_eq!(r, json!({"return": {}, "id": 1}));
    // The guest side reads the host's value.
    assert_eq!(ok_cli(d, &["-g", "greeting"]), format!("{value}\n"));
    // The param hook ran with the key and the value on stdin.
    let deadline = Instant::now() + 10 * SEC;
    while !seen.exists() {
        assert!(Instant::now() < deadline, "the param hook did not run");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap(),
        format!("greeting={}", value.trim_end())
    );
    // The reply is ASCII with \u escapes (QgaPeer checks every line is ASCII).
    p.send_raw(
        json!({"execute": cmd("get-param"), "arguments": {"key": "greeting"}})
            .to_string()
            .as_bytes(),
    );
    let line = String::from_utf8(p.next_raw(20 * SEC).unwrap()).unwrap();
    assert!(
        line.contains(r#"caf\u00e9 \u2713 \ud83d\ude00 \"q\"\n"#),
        "{line}"
    );
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(
        v["return"],
        json!({"key": "greeting", "value": value, "origin": "host"})
    );
    // A guest-side param lists alongside, oldest first.
    ok_cli(d, &["-p", "ключ=значение"]);
    let list = p.ok(&cmd("list-params"), json!({}));
    assert_eq!(
        list,
        json!({"params": [
            {"key": "greeting", "value": value, "origin": "host"},
            {"key": "ключ", "value": "значение", "origin": "guest"},
        ]})
    );
    // Deleting, also an absent key, and deleting all.
    assert_eq!(
        p.ok(&cmd("delete-param"), json!({"key": "greeting"})),
        json!({})
    );
    assert_eq!(
        p.ok(&cmd("delete-param"), json!({"key": "greeting"})),
        json!({})
    );
    let e = p.err(&cmd("get-param"), json!({"key": "greeting"}));
    assert_eq!(
        e,
        json!({"class": "GenericError", "desc": "no param \"greeting\""})
    );
    assert_eq!(cli(d, &["-g", "greeting"]).status.code(), Some(1));
    assert_eq!(p.ok(&cmd("delete-params"), json!({})), json!({}));
    assert_eq!(p.ok(&cmd("list-params"), json!({})), json!({"params": []}));
    assert_eq!(ok_cli(d, &["-l"]), "");
}

#[test]
fn bad_keys_values_and_arguments_are_refused_with_reasons() {
    let dir = Dir::new("qga-kv-bad");
    let agent = start(dir.path());
    let mut p = agent.connect_qga();
    let desc = |p: &mut QgaPeer, name: &str, args: Value| {
        let e = p.err(&cmd(name), args);
        assert_eq!(e["class"], "GenericError", "{e}");
        e["desc"].as_str().unwrap().to_owned()
    };
    assert_eq!(
        desc(&mut p, "set-param", json!({"key": "", "value": "v"})),
        "key \"\": key is empty"
    );
    assert_eq!(
        desc(&mut p, "set-param", json!({"key": "a=b", "value": "v"})),
        "key \"a=b\": key contains '='"
    );
    let long = "k".repeat(256);
    assert!(
        desc(&mut p, "get-param", json!({ "key": long })).ends_with("key is longer than 255 bytes")
    );
    assert_eq!(
        desc(
            &mut p,
            "set-param",
            json!({"key": "big", "value": "v".repeat(8193)})
        ),
        "key \"big\": value is longer than 8192 bytes"
    );
    assert_eq!(
        desc(&mut p, "set-param", json!({"key": "k"})),
        "Parameter 'value' is missing"
    );
    assert_eq!(
        desc(&mut p, "set-param", json!({"key": "k", "value": 5})),
        "Invalid parameter type for 'value', expected: string"
    );
    assert_eq!(
        desc(&mut p, "delete-params", json!({"all": true})),
        "Parameter 'all' is unexpected"
    );
    assert_eq!(
        desc(&mut p, "get-messages", json!({"max": 0})),
        "'max' must be between 1 and 4096, not 0"
    );
    assert_eq!(
        desc(&mut p, "ack-messages", json!({"upto": -1})),
        "'upto' must not be negative, not -1"
    );
    // Nothing was stored by the refusals; the largest value fits.
    assert_eq!(p.ok(&cmd("list-params"), json!({})), json!({"params": []}));
    let max = "v".repeat(8192);
    p.ok(
        &cmd("set-param"),
        json!({"key": "k".repeat(255), "value": max}),
    );
    // guest-info lists every key-value command, enabled.
    let info = p.ok("guest-info", json!({}));
    let cmds = info["supported_commands"].as_array().unwrap();
    for name in [
        "set-param",
        "get-param",
        "list-params",
        "delete-param",
        "delete-params",
        "get-messages",
        "ack-messages",
    ] {
        let c = cmds.iter().find(|c| c["name"] == cmd(name).as_str());
        assert_eq!(c.map(|c| &c["enabled"]), Some(&json!(true)), "{name}");
    }
}

#[test]
fn guest_messages_reach_a_qga_host_once_acknowledged() {
    let dir = Dir::new("qga-kv-msgs");
    let d = dir.path();
    let agent = start(d);
    let mut p = agent.connect_qga();
    assert_eq!(messages(&mut p, json!({})), (vec![], false));
    ok_cli(d, &["-p", "a=\u{e9}t\u{e9}"]);
    ok_cli(d, &["-e", "ready"]);
    ok_cli(d, &["-r", "a"]);
    let (list, more) = messages(&mut p, json!({}));
    assert!(!more);
    assert_eq!(kinds(&list), ["param", "event", "param-deleted"]);
    assert_eq!(list[0]["key"], "a");
    assert_eq!(list[0]["value"], "\u{e9}t\u{e9}");
    assert_eq!(list[0]["origin"], "guest");
    assert_eq!(list[1]["name"], "ready");
    let seqs: Vec<u64> = list.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // Reading does not take them: a host that dies before acknowledging gets them again.
    assert_eq!(messages(&mut p, json!({})).0, list);
    // `max` pages, `more` says so.
    let (first, more) = messages(&mut p, json!({"max": 1}));
    assert_eq!((first.len(), more), (1, true));
    // Acknowledging up to the second leaves the third.
    assert_eq!(
        p.ok(&cmd("ack-messages"), json!({"upto": seqs[1]})),
        json!({})
    );
    let (rest, more) = messages(&mut p, json!({}));
    assert_eq!(
        (kinds(&rest), more),
        (vec!["param-deleted".to_owned()], false)
    );
    // Acknowledged messages stay gone across a restart (the store holds the outbox).
    drop(p);
    drop(agent);
    // SIGKILLed: its sockets stay behind, and `start` waits for them to appear afresh.
    for s in ["g.sock", "qga.sock", "ctl.sock"] {
        std::fs::remove_file(d.join(s)).unwrap();
    }
    let agent = start(d);
    let mut p = agent.connect_qga();
    assert_eq!(messages(&mut p, json!({})).0, rest);
    p.ok(&cmd("ack-messages"), json!({"upto": seqs[2]}));
    assert_eq!(messages(&mut p, json!({})), (vec![], false));
    // An oVirt host attaching now gets none of what the QGA host took: the first message it
    // sees is the next one queued.
    let mut ovirt = agent.connect();
    // A key-value command: this oVirt host takes the key-value messages.
    ovirt.send(r#"{"__name__": "list-params"}"#);
    ovirt.until("params", 10 * SEC);
    ok_cli(d, &["-e", "after"]);
    let (ev, before) = ovirt.until("event", 10 * SEC);
    assert_eq!(ev["name"], "after");
    assert!(
        !before.iter().any(|m| m["__name__"] == "param"),
        "{before:?}"
    );
    // ... and what the oVirt host was written is not offered to the QGA host again.
    assert_eq!(messages(&mut p, json!({})), (vec![], false));
    // A host set through QGA drops the guest's undelivered news about that key, as the
    // oVirt set-param does.
    drop(ovirt);
    let deadline = Instant::now() + 10 * SEC;
    // Wait until the oVirt link has seen its host leave (the next message stays queued).
    loop {
        ok_cli(d, &["-p", "b=guest"]);
        if !messages(&mut p, json!({})).0.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the oVirt host never left");
    }
    p.ok(&cmd("set-param"), json!({"key": "b", "value": "host"}));
    assert_eq!(messages(&mut p, json!({})), (vec![], false));
}
