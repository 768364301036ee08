// SPDX-License-Identifier: Apache-2.0
//! Key-value operations, the same whoever performs them: the agent (for a CLI call over the
//! control socket) or the CLI itself (editing the store under its lock when no agent runs).
//! Also the wire messages of guestd's key-value extension of the oVirt channel: the message
//! for each outbox record (`record_message`), and the decoder of the outbox of a version-1
//! store, which kept those messages themselves (`legacy_record`).

use serde_json::{Map, Value, json};

use crate::kv::store::{self, Store};
use crate::kv::{self, Entry, Origin, Record};
use crate::proto::ovirt::Message;

/// One operation of the ovmd-style command line (`-p -g -r -x -l -e -s`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Set { key: String, value: String },
    Get { key: String },
    Delete { key: String },
    DeleteAll,
    List,
    Event { name: String },
    Script { name: String },
}

impl Op {
    /// Checks limits before anything is stored or sent (ovmd's: key 1-255 bytes without '='
    /// or control characters, value at most 8192 bytes; hook names are one path component).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Op::Set { key, value } => kv::check_key(key).and_then(|()| kv::check_value(value)),
            Op::Get { key } | Op::Delete { key } => kv::check_key(key),
            Op::Event { name } | Op::Script { name } => check_hook_name(name),
            Op::DeleteAll | Op::List => Ok(()),
        }
    }

    /// The control-socket request for this operation (`Script` runs in the CLI itself).
    pub fn request(&self) -> Value {
        match self {
            Op::Set { key, value } => json!({"op": "set", "key": key, "value": value}),
            Op::Get { key } => json!({"op": "get", "key": key}),
            Op::Delete { key } => json!({"op": "delete", "key": key}),
            Op::DeleteAll => json!({"op": "delete-all"}),
            Op::List | Op::Script { .. } => json!({"op": "list"}),
            Op::Event { name } => json!({"op": "event", "name": name}),
        }
    }

    /// Parses a control-socket request.
    pub fn from_request(v: &Value) -> Result<Op, String> {
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("request lacks string \"{k}\""))
        };
        let op = match v.get("op").and_then(Value::as_str) {
            Some("set") => Op::Set {
                key: s("key")?,
                value: s("value")?,
            },
            Some("get") => Op::Get { key: s("key")? },
            Some("delete") => Op::Delete { key: s("key")? },
            Some("delete-all") => Op::DeleteAll,
            Some("list") => Op::List,
            Some("event") => Op::Event { name: s("name")? },
            other => return Err(format!("unknown request {other:?}")),
        };
        op.validate()?;
        Ok(op)
    }
}

/// A hook directory name: one non-empty path component.
pub fn check_hook_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        Err(format!("'{name}' is not a valid event or script name"))
    } else {
        Ok(())
    }
}

/// The result of a guest-side operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Done,
    Value(Option<String>),
    List(Vec<Entry>),
}

impl Reply {
    /// The control-socket response.
    pub fn response(&self) -> Value {
        match self {
            Reply::Done => json!({"ok": true}),
            Reply::Value(Some(v)) => json!({"ok": true, "value": v}),
            Reply::Value(None) => json!({"ok": true, "absent": true}),
            Reply::List(entries) => {
                json!({"ok": true, "params": entries.iter().map(entry_json).collect::<Vec<_>>()})
            }
        }
    }

    /// Parses a control-socket response; `Err` carries the agent's error text.
    pub fn from_response(v: &Value) -> Result<Reply, String> {
        if v.get("ok") != Some(&Value::Bool(true)) {
            return Err(v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("malformed response from the agent")
                .to_owned());
        }
        if let Some(val) = v.get("value").and_then(Value::as_str) {
            return Ok(Reply::Value(Some(val.to_owned())));
        }
        if v.get("absent") == Some(&Value::Bool(true)) {
            return Ok(Reply::Value(None));
        }
        if let Some(list) = v.get("params").and_then(Value::as_array) {
            return Ok(Reply::List(
                list.iter().filter_map(entry_from_json).collect(),
            ));
        }
        Ok(Reply::Done)
    }
}

fn entry_json(e: &Entry) -> Value {
    json!({"key": e.key, "value": e.value, "origin": e.origin.as_str(), "time": e.time, "sent": e.sent})
}

fn entry_from_json(v: &Value) -> Option<Entry> {
    Some(Entry {
        key: v.get("key")?.as_str()?.to_owned(),
        value: v.get("value")?.as_str()?.to_owned(),
        origin: Origin::parse(v.get("origin")?.as_str()?)?,
        time: v.get("time").and_then(Value::as_u64).unwrap_or(0),
        sent: v.get("sent").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// Performs a guest-side operation on the store: what `-p`, `-r`, `-x` and `-e` store is
/// also queued in the store's outbox for the host, durably, in the same write.
pub fn apply(store: &mut Store, op: &Op) -> Result<Reply, store::Error> {
    match op {
        Op::Set { key, value } => {
            let news = Record::Param {
                key: key.clone(),
                value: value.clone(),
                origin: Origin::Guest,
            };
            store.set(key, value, Origin::Guest, false, Some(news))?;
            Ok(Reply::Done)
        }
        Op::Get { key } => Ok(Reply::Value(store.get(key).map(|e| e.value.clone()))),
        Op::Delete { key } => {
            store.delete(key, Some(Record::ParamDeleted { key: key.clone() }))?;
            Ok(Reply::Done)
        }
        Op::DeleteAll => {
            store.delete_all(Some(Record::ParamsDeleted))?;
            Ok(Reply::Done)
        }
        Op::List | Op::Script { .. } => Ok(Reply::List(store.params().to_vec())),
        Op::Event { name } => {
            // A screen locker reports through `guestd -e session-lock`: these two are sent as
            // the oVirt notifications themselves.
            let record = match name.as_str() {
                "session-lock" => Record::SessionLock,
                "session-unlock" => Record::SessionUnlock,
                _ => Record::Event { name: name.clone() },
            };
            store.push_outbox(record)?;
            Ok(Reply::Done)
        }
    }
}

/// The oVirt message that delivers an outbox record.
pub fn record_message(record: &Record) -> Message {
    match record {
        Record::Param { key, value, origin } => param(key, value, *origin),
        Record::ParamDeleted { key } => param_deleted(key),
        Record::ParamsDeleted => Message::bare("params-deleted"),
        Record::Event { name } => event(name),
        Record::SessionLock => Message::bare("session-lock"),
        Record::SessionUnlock => Message::bare("session-unlock"),
    }
}

/// The record behind a message a version-1 store kept in its outbox (the message as one JSON
/// object, its name in `__name__`): the inverse of `record_message`. `None` for anything else.
/// Passed to `Store::open`.
pub fn legacy_record(msg: &Value) -> Option<Record> {
    let s = |k: &str| msg.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(match msg.get("__name__")?.as_str()? {
        "param" => Record::Param {
            key: s("key")?,
            value: s("value")?,
            origin: Origin::parse(msg.get("origin")?.as_str()?)?,
        },
        "param-deleted" => Record::ParamDeleted { key: s("key")? },
        "params-deleted" => Record::ParamsDeleted,
        "event" => Record::Event { name: s("name")? },
        "session-lock" => Record::SessionLock,
        "session-unlock" => Record::SessionUnlock,
        _ => return None,
    })
}

fn msg(name: &'static str, args: Value) -> Message {
    Message {
        name,
        args: match args {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

/// `param {key, value, origin}`.
pub fn param(key: &str, value: &str, origin: Origin) -> Message {
    msg(
        "param",
        json!({"key": key, "value": value, "origin": origin.as_str()}),
    )
}

/// `param {key, error: "no such key"}`: the answer to `get-param` for an absent key.
pub fn param_absent(key: &str) -> Message {
    msg("param", json!({"key": key, "error": "no such key"}))
}

/// `params {params: [{key, value, origin}...]}`, oldest first.
pub fn params(entries: &[Entry]) -> Message {
    let list: Vec<Value> = entries
        .iter()
        .map(|e| json!({"key": e.key, "value": e.value, "origin": e.origin.as_str()}))
        .collect();
    msg("params", json!({ "params": list }))
}

pub fn param_deleted(key: &str) -> Message {
    msg("param-deleted", json!({ "key": key }))
}

pub fn event(name: &str) -> Message {
    msg("event", json!({ "name": name }))
}

/// `completion {reply_id, done: true}`, or `done: false` with the reason.
pub fn completion(reply_id: &str, result: Result<(), String>) -> Message {
    match result {
        Ok(()) => msg("completion", json!({"reply_id": reply_id, "done": true})),
        Err(e) => msg(
            "completion",
            json!({"reply_id": reply_id, "done": false, "error": e}),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message as one JSON object, `__name__` among its arguments (what a version-1 store
    /// kept in its outbox).
    fn wire(msg: &Message) -> Value {
        let mut m = msg.args.clone();
        m.insert("__name__".into(), Value::String(msg.name.into()));
        Value::Object(m)
    }

    #[test]
    fn requests_round_trip_and_are_validated() {
        for op in [
            Op::Set {
                key: "k".into(),
                value: "v=1\n".into(),
            },
            Op::Get { key: "k".into() },
            Op::Delete { key: "k".into() },
            Op::DeleteAll,
            Op::List,
            Op::Event {
                name: "ready".into(),
            },
        ] {
            assert_eq!(Op::from_request(&op.request()), Ok(op));
        }
        assert!(Op::from_request(&json!({"op": "set", "key": "a=b", "value": ""})).is_err());
        assert!(Op::from_request(&json!({"op": "reboot"})).is_err());
        assert!(
            Op::Script {
                name: "../x".into()
            }
            .validate()
            .is_err()
        );
        assert!(Op::Event { name: "".into() }.validate().is_err());
    }

    #[test]
    fn responses_round_trip() {
        let e = Entry {
            key: "k".into(),
            value: "v".into(),
            origin: Origin::Host,
            time: 5,
            sent: true,
        };
        for r in [
            Reply::Done,
            Reply::Value(Some("x".into())),
            Reply::Value(None),
            Reply::List(vec![e]),
        ] {
            assert_eq!(Reply::from_response(&r.response()), Ok(r));
        }
        assert_eq!(
            Reply::from_response(&json!({"ok": false, "error": "store full"})),
            Err("store full".into())
        );
    }

    #[test]
    fn completion_carries_the_refusal_reason() {
        let m = completion("r1", Err("key contains '='".into()));
        assert_eq!(
            wire(&m),
            json!({"__name__": "completion", "reply_id": "r1", "done": false, "error": "key contains '='"})
        );
    }

    /// Every kind of outbox record.
    fn all_records() -> Vec<Record> {
        vec![
            Record::Param {
                key: "k\u{1}é".into(),
                value: "v=1\n\u{1F600}".into(),
                origin: Origin::Guest,
            },
            Record::ParamDeleted { key: "k".into() },
            Record::ParamsDeleted,
            Record::Event {
                name: "ready".into(),
            },
            Record::SessionLock,
            Record::SessionUnlock,
        ]
    }

    /// What the agent wrote for an outbox entry before records: the stored wire object,
    /// `__name__` taken out again, encoded.
    fn old_line(stored: &Value) -> Vec<u8> {
        let mut args = stored.as_object().cloned().unwrap();
        let Some(Value::String(name)) = args.remove("__name__") else {
            panic!("no name in {stored}");
        };
        crate::proto::ovirt::encode(&name, args)
    }

    #[test]
    fn records_make_the_same_lines_as_before() {
        for r in all_records() {
            let m = record_message(&r);
            assert_eq!(m.encode(), old_line(&wire(&m)), "{r:?}");
            assert_eq!(legacy_record(&wire(&m)), Some(r));
        }
        let line = |r: Record| String::from_utf8(record_message(&r).encode()).unwrap();
        assert_eq!(
            line(all_records().remove(0)),
            "{\"__name__\":\"param\",\"key\":\"k\\ufffd\\u00e9\",\"origin\":\"guest\",\
             \"value\":\"v=1\\n\\ud83d\\ude00\"}\n"
        );
        assert_eq!(
            line(Record::SessionLock),
            "{\"__name__\":\"session-lock\"}\n"
        );
        assert_eq!(
            line(Record::Event { name: "x".into() }),
            "{\"__name__\":\"event\",\"name\":\"x\"}\n"
        );
    }

    #[test]
    fn legacy_decoder_refuses_what_the_store_never_queued() {
        for msg in [
            json!({"__name__": "frobnicate"}),
            json!({"__name__": "param", "key": "k", "value": "v"}),
            json!({"__name__": "param", "key": "k", "value": "v", "origin": "martian"}),
            json!({"__name__": "param-deleted"}),
            json!({"__name__": "event", "name": 7}),
            json!({"key": "k"}),
            json!("param"),
        ] {
            assert_eq!(legacy_record(&msg), None, "{msg}");
        }
    }

    /// A fresh state directory (not yet created), removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let base =
                std::env::temp_dir().join(format!("guestd-params-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            TempDir(base.join("state"))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    #[test]
    fn apply_queues_records() {
        let t = TempDir::new("apply");
        let mut store = Store::open(&t.0, legacy_record).unwrap();
        let ops = [
            Op::Set {
                key: "k".into(),
                value: "v".into(),
            },
            Op::Delete { key: "k".into() },
            Op::DeleteAll,
            Op::Event {
                name: "session-lock".into(),
            },
            Op::Event {
                name: "session-unlock".into(),
            },
            Op::Event {
                name: "ready".into(),
            },
            Op::Get { key: "k".into() },
            Op::List,
        ];
        for op in &ops {
            apply(&mut store, op).unwrap();
        }
        let queued: Vec<Record> = store.outbox().iter().map(|p| p.record.clone()).collect();
        assert_eq!(
            queued,
            [
                Record::Param {
                    key: "k".into(),
                    value: "v".into(),
                    origin: Origin::Guest
                },
                Record::ParamDeleted { key: "k".into() },
                Record::ParamsDeleted,
                Record::SessionLock,
                Record::SessionUnlock,
                Record::Event {
                    name: "ready".into()
                },
            ]
        );
    }

    #[test]
    fn a_version_one_store_is_read_through_the_wire_decoder() {
        let t = TempDir::new("v1");
        std::fs::create_dir_all(&t.0).unwrap();
        // What guestd wrote before records: the wire objects themselves in the outbox.
        let msgs = [
            json!({"__name__": "param", "key": "a", "value": "1", "origin": "guest"}),
            json!({"__name__": "frobnicate", "key": "a"}),
            json!({"__name__": "param-deleted", "key": "b"}),
            json!({"__name__": "params-deleted"}),
            json!({"__name__": "event", "name": "ready"}),
            json!({"__name__": "session-lock"}),
            json!({"__name__": "session-unlock"}),
            json!({"__name__": "param", "key": "a=b", "value": "1", "origin": "guest"}),
        ];
        let outbox: Vec<Value> = (1u64..)
            .zip(&msgs)
            .map(|(seq, m)| json!({"seq": seq, "msg": m}))
            .collect();
        let doc = json!({"version": 1, "next_seq": 9, "outbox": outbox,
            "params": [{"key": "a", "value": "1", "origin": "guest", "time": 5, "sent": false}]});
        std::fs::write(t.0.join("params"), doc.to_string()).unwrap();
        let mut store = Store::open(&t.0, legacy_record).unwrap();
        assert_eq!(store.params().len(), 1);
        let kept: Vec<u64> = store.outbox().iter().map(|p| p.seq).collect();
        assert_eq!(kept, [1, 3, 4, 5, 6, 7], "2 and 8 are dropped");
        for p in store.outbox() {
            let i = usize::try_from(p.seq - 1).unwrap();
            assert_eq!(record_message(&p.record).encode(), old_line(&msgs[i]));
        }
        store.delivered(&[1]).unwrap();
        assert!(store.get("a").unwrap().sent);
        let reread = Store::open(&t.0, legacy_record).unwrap();
        assert_eq!(reread.outbox(), store.outbox());
        assert!(reread.get("a").unwrap().sent);
    }
}
