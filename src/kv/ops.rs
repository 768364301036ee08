// SPDX-License-Identifier: Apache-2.0
//! Key-value operations, the same whoever performs them: the agent (for a CLI call over the
//! control socket) or the CLI itself (editing the store under its lock when no agent runs).

use serde_json::{Value, json};

use super::store::{self, Store};
use super::{Entry, Origin, Record};

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
            Op::Set { key, value } => {
                super::check_key(key).and_then(|()| super::check_value(value))
            }
            Op::Get { key } | Op::Delete { key } => super::check_key(key),
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

/// Deletes the secrets among `keys` once the guest has read them (`-g`, `-l`, `-s`): what
/// the guest read is its only copy. A failed write leaves them (logged, naming no value).
fn consume(store: &mut Store, keys: &[&str]) {
    match store.consume_secrets(keys, None) {
        Ok(0) => {}
        Ok(n) => log::info!("{n} secret params read by the guest: deleted from the store"),
        Err(e) => log::error!("deleting secret params the guest read: {e}"),
    }
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
        Op::Get { key } => {
            let value = store.get(key).map(|e| e.value.clone());
            consume(store, &[key]);
            Ok(Reply::Value(value))
        }
        Op::Delete { key } => {
            store.delete(key, Some(Record::ParamDeleted { key: key.clone() }))?;
            Ok(Reply::Done)
        }
        Op::DeleteAll => {
            store.delete_all(Some(Record::ParamsDeleted))?;
            Ok(Reply::Done)
        }
        Op::List | Op::Script { .. } => {
            let list = store.params().to_vec();
            consume(
                store,
                &list.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(),
            );
            Ok(Reply::List(list))
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::TempDir;

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
    fn apply_queues_records() {
        let t = TempDir::new("apply");
        let mut store = Store::open(&t.0, |_| None).unwrap();
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
}
