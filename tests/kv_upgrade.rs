// SPDX-License-Identifier: Apache-2.0
//! A store written by an older guestd (document version 1, whose outbox kept the wire messages
//! themselves) is read by the real binary: its params and pending messages survive, the
//! messages reach the host byte for byte as before, and an entry that cannot be read is
//! reported by its seq, not lost silently.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, Dir, isolation};
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);

#[test]
fn a_version_one_store_is_upgraded_and_delivered() {
    let dir = Dir::new("upgrade");
    let d = dir.path();
    let state = d.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let msgs = [
        json!({"__name__": "param", "key": "a", "value": "é 1", "origin": "guest"}),
        json!({"__name__": "frobnicate", "key": "a"}),
        json!({"__name__": "event", "name": "ready"}),
        json!({"__name__": "session-lock"}),
    ];
    let outbox: Vec<Value> = (1u64..)
        .zip(&msgs)
        .map(|(seq, m)| json!({"seq": seq, "msg": m}))
        .collect();
    let v1 = json!({"version": 1, "next_seq": 5, "outbox": outbox,
        "params": [{"key": "a", "value": "é 1", "origin": "guest", "time": 5, "sent": false}]});
    std::fs::write(state.join("params"), v1.to_string()).unwrap();

    // The command line reads it (no agent runs) and says which entry it drops.
    let o = Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "1", "-l"])
        .args(isolation(d))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "{\"a\":\"é 1\"}\n");
    assert!(
        err.contains("dropped version-1 outbox entry seq 2 (not a message this guestd can queue)"),
        "{err}"
    );

    let agent = Agent::start(d, &["--ovirt-kv-messages=yes"]);
    let mut peer = agent.connect();
    let mut raw = Vec::new();
    let (param, _) = peer.until("param", 5 * SEC);
    raw.push(param);
    raw.push(peer.until("event", 5 * SEC).0);
    raw.push(peer.until("session-lock", 5 * SEC).0);
    assert_eq!(raw, [msgs[0].clone(), msgs[2].clone(), msgs[3].clone()]);
    assert!(agent.log_text().contains("outbox entry seq 2"));

    // Delivered: the store is rewritten as version 2 with an empty outbox and `a` sent.
    let deadline = Instant::now() + 5 * SEC;
    loop {
        let text = std::fs::read_to_string(state.join("params")).unwrap_or_default();
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if doc["version"] == 2 && doc["outbox"] == json!([]) {
            assert_eq!(doc["params"][0]["sent"], true);
            assert_eq!(doc["next_seq"], 5);
            break;
        }
        assert!(Instant::now() < deadline, "not rewritten: {text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
