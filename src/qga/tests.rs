// SPDX-License-Identifier: Apache-2.0
//! The QGA session driven frame by frame through a link's queue: dispatch, errors, the
//! filter, pending answers.

use serde_json::{Value, json};

use super::*;
use crate::config::Config;
use crate::kv::keeper::Keeper;
use crate::link::Session as _;
use crate::proto::queue::OutQueue;

/// Services over the fixture root, with no store.
pub(crate) fn services() -> Services {
    let cfg = Config {
        root: crate::facts::fixtures().join("agent-root"),
        ..Config::default()
    };
    Services::new(cfg, Keeper::default())
}

/// Everything queued, raw.
fn raw(q: &mut OutQueue) -> Vec<u8> {
    let mut bytes = Vec::new();
    q.flush_to(&mut bytes).unwrap();
    bytes
}

/// Everything queued, as JSON values (a leading 0xFF is checked and skipped by the caller).
fn replies(q: &mut OutQueue) -> Vec<Value> {
    raw(q)
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect()
}

/// Feeds `input` through a fresh JSON framer into `s`.
fn feed(s: &mut Session, svc: &mut Services, q: &mut OutQueue, input: &[u8]) {
    let mut rejected = 0;
    let mut framer = s.framer();
    let mut src = input;
    while framer.fill_from(&mut src).unwrap() != crate::proto::Fill::Eof {
        while let Some(f) = framer.next_frame() {
            let mut out = Outbound::new(q, &mut rejected, true);
            s.frame(f, &mut out, svc);
        }
    }
}

fn call(svc: &mut Services, input: &str) -> Vec<Value> {
    let (mut s, mut q) = (Session::new(0), OutQueue::default());
    feed(&mut s, svc, &mut q, input.as_bytes());
    replies(&mut q)
}

#[test]
fn sync_ping_and_ids_are_answered_in_order() {
    let mut svc = services();
    let got = call(
        &mut svc,
        r#"{"execute":"guest-sync","arguments":{"id":12345678901234}}
           {'execute':'guest-ping','id':'a'}{"execute":"guest-ping","id":{"x":[1]}}"#,
    );
    assert_eq!(
        got,
        vec![
            json!({"return": 12345678901234_i64}),
            json!({"return": {}, "id": "a"}),
            json!({"return": {}, "id": {"x": [1]}}),
        ]
    );
}

#[test]
fn sync_delimited_puts_ff_before_its_reply_only() {
    let (mut s, mut svc, mut q) = (Session::new(0), services(), OutQueue::default());
    feed(
        &mut s,
        &mut svc,
        &mut q,
        b"\xff{\"execute\":\"guest-sync-delimited\",\"arguments\":{\"id\":7}}{\"execute\":\"guest-ping\"}",
    );
    assert_eq!(raw(&mut q), b"\xff{\"return\":7}\n{\"return\":{}}\n");
}

#[test]
fn errors_use_only_the_two_classes_and_echo_the_id() {
    let mut svc = services();
    let got = call(
        &mut svc,
        r#"{"execute":"guest-nope","id":1}
           {"execute":"guest-sync","arguments":{"id":"x"},"id":2}
           {"execute":"guest-ping","arguments":{"bogus":1}}
           {"arguments":{}}
           hello
           {"execute":"guest-sync","arguments":{}}"#,
    );
    let classes: Vec<&str> = got
        .iter()
        .map(|r| r["error"]["class"].as_str().unwrap())
        .collect();
    assert_eq!(
        classes,
        [
            "CommandNotFound",
            "GenericError",
            "GenericError",
            "GenericError",
            "GenericError",
            "GenericError"
        ]
    );
    assert_eq!(
        got[0]["error"]["desc"],
        "The command guest-nope has not been found"
    );
    assert_eq!(got[0]["id"], 1);
    assert_eq!(
        got[1]["error"]["desc"],
        "Invalid parameter type for 'id', expected: integer"
    );
    assert_eq!(got[1]["id"], 2);
    assert_eq!(got[2]["error"]["desc"], "Parameter 'bogus' is unexpected");
    assert_eq!(got[3]["error"]["desc"], "QMP input lacks member 'execute'");
    assert_eq!(got[4]["error"]["desc"], crate::proto::json::STRAY);
    assert_eq!(got[5]["error"]["desc"], "Parameter 'id' is missing");
}

#[test]
fn blocked_and_not_allowed_commands_are_disabled_with_qemu_ga_wording() {
    let mut svc = services();
    svc.cfg.block_rpcs = vec!["guest-ping".into()];
    let got = call(
        &mut svc,
        r#"{"execute":"guest-ping"}{"execute":"guest-info"}"#,
    );
    assert_eq!(got[0]["error"]["class"], "CommandNotFound");
    assert_eq!(
        got[0]["error"]["desc"],
        "Command guest-ping has been disabled: the command is not allowed"
    );
    let list = got[1]["return"]["supported_commands"].as_array().unwrap();
    let entry = |name: &str| list.iter().find(|c| c["name"] == name).unwrap().clone();
    assert_eq!(
        entry("guest-ping"),
        json!({"name": "guest-ping", "enabled": false, "success-response": true})
    );
    assert_eq!(entry("guest-info")["enabled"], true);
    // An allow list disables the rest; the block list wins over it.
    svc.cfg.allow_rpcs = Some(vec!["guest-ping".into(), "guest-sync".into()]);
    let got = call(
        &mut svc,
        r#"{"execute":"guest-ping"}{"execute":"guest-info"}{"execute":"guest-sync","arguments":{"id":1}}"#,
    );
    assert_eq!(got[0]["error"]["class"], "CommandNotFound");
    assert_eq!(got[1]["error"]["class"], "CommandNotFound");
    assert_eq!(got[2], json!({"return": 1}));
}

#[test]
fn guest_info_lists_every_command_once_with_its_flags() {
    let mut svc = services();
    let got = call(&mut svc, r#"{"execute":"guest-info"}"#);
    assert_eq!(got[0]["return"]["version"], env!("CARGO_PKG_VERSION"));
    let list = got[0]["return"]["supported_commands"].as_array().unwrap();
    let mut names: Vec<&str> = list.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names.len(), commands::all().count());
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), list.len(), "a command is listed twice");
    for c in list {
        assert!(c["enabled"].is_boolean() && c["success-response"].is_boolean());
    }
}

#[test]
fn a_pending_request_holds_the_input_and_is_answered_in_order() {
    let (mut s, mut svc, mut q) = (Session::new(4), services(), OutQueue::default());
    let mut rejected = 0;
    s.pending = Some(Pending {
        serial: 9,
        name: "guest-set-user-password",
        id: Some(json!("p")),
        success_response: true,
    });
    assert!(!s.accepts_frames());
    // A notice for another request (a host that left) is dropped.
    let stale = Requester {
        link: 4,
        id: Some("8".into()),
    };
    let mut out = Outbound::new(&mut q, &mut rejected, true);
    s.notice(
        Notice::Reply {
            to: stale,
            result: Ok(json!(1)),
        },
        &mut out,
        &mut svc,
    );
    assert!(!s.accepts_frames());
    let to = Requester {
        link: 4,
        id: Some("9".into()),
    };
    s.notice(
        Notice::Done {
            to,
            action: "x".into(),
            result: Err("chpasswd: exit status 1".into()),
        },
        &mut out,
        &mut svc,
    );
    assert!(s.accepts_frames());
    assert_eq!(
        replies(&mut q),
        vec![
            json!({"error": {"class": "GenericError", "desc": "chpasswd: exit status 1"}, "id": "p"})
        ]
    );
}

#[test]
fn a_silent_command_sends_nothing_on_success_but_its_error() {
    let (mut s, mut svc, mut q) = (Session::new(0), services(), OutQueue::default());
    let mut rejected = 0;
    for (serial, result) in [(1, Ok(())), (2, Err("no way".to_owned()))] {
        s.pending = Some(Pending {
            serial,
            name: "guest-suspend-ram",
            id: None,
            success_response: false,
        });
        let to = Requester {
            link: 0,
            id: Some(serial.to_string()),
        };
        let mut out = Outbound::new(&mut q, &mut rejected, true);
        s.notice(
            Notice::Done {
                to,
                action: "suspend".into(),
                result,
            },
            &mut out,
            &mut svc,
        );
    }
    assert_eq!(
        replies(&mut q),
        vec![json!({"error": {"class": "GenericError", "desc": "no way"}})]
    );
}

#[test]
fn a_host_that_left_gets_no_reply() {
    let (mut s, mut svc, mut q) = (Session::new(0), services(), OutQueue::default());
    let mut rejected = 0;
    let mut framer = s.framer();
    framer
        .fill_from(&mut &b"{\"execute\":\"guest-ping\"}"[..])
        .unwrap();
    let f = framer.next_frame().unwrap();
    s.frame(
        f,
        &mut Outbound::new(&mut q, &mut rejected, false),
        &mut svc,
    );
    assert!(q.is_empty());
}
