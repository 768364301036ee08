// SPDX-License-Identifier: Apache-2.0
//! The store's on-disk document, `<dir>/params`: one JSON object holding the params and the
//! outbox, parsed and checked in full before use, and serialised whole on every change.
//!
//! Version 2 (written):
//! `{"version":2,"next_seq":N,"params":[{"key","value","origin","time","sent"}...],
//! "outbox":[{"seq":N,"kind":K,...fields}...]}` where `kind` and its fields are the store's
//! own spelling of a `Record`: `param` (`key`, `value`, `origin`), `param-deleted` (`key`),
//! `params-deleted`, `event` (`name`), `session-lock`, `session-unlock`. An optional
//! `"secret":[KEY...]` lists the keys the host marked secret (`kv::is_secret_key` keys are
//! secret anyway); older readers ignore it.
//!
//! Version 1 (read only) had the same params, but kept each outbox entry as the protocol
//! message itself, `{"seq":N,"msg":{...}}`. Those messages are turned back into records by a
//! `LegacyDecoder` the protocol side provides; an entry it cannot decode is dropped and
//! reported (`Parsed::dropped`), the rest of the document is kept.

use serde_json::{Value, json};

use super::store::Error;
use super::{Entry, MAX_OUTBOX, MAX_PARAMS, Origin, Pending, Record, check_key, check_value};

/// The version of the document written.
pub(super) const VERSION: u64 = 2;

/// Turns the message of a version-1 outbox entry back into a record; `None` when it is not a
/// message the store could have queued.
pub type LegacyDecoder = fn(&Value) -> Option<Record>;

/// The params and the outbox, as held in memory.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Data {
    pub(super) next_seq: u64,
    pub(super) params: Vec<Entry>,
    pub(super) outbox: Vec<Pending>,
    /// Keys the host marked secret (each also in `params`).
    pub(super) secret: Vec<String>,
}

/// A version-1 outbox entry left out on reading, and why (never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Dropped {
    pub(super) seq: u64,
    pub(super) why: String,
}

/// A document read: its data, and the version-1 outbox entries that were dropped.
#[derive(Debug)]
pub(super) struct Parsed {
    pub(super) data: Data,
    pub(super) dropped: Vec<Dropped>,
}

impl Data {
    pub(super) fn empty() -> Data {
        // Sequence numbers start at 1 (0 means "none" to the agent).
        Data {
            next_seq: 1,
            params: Vec::new(),
            outbox: Vec::new(),
            secret: Vec::new(),
        }
    }

    pub(super) fn pos(&self, key: &str) -> Option<usize> {
        self.params.iter().position(|e| e.key == key)
    }

    /// Appends `record` (if any) to the outbox and returns its sequence number (0 if none).
    pub(super) fn push(&mut self, record: Option<Record>) -> Result<u64, Error> {
        let Some(record) = record else { return Ok(0) };
        record.check().map_err(Error::Invalid)?;
        if self.outbox.len() >= MAX_OUTBOX {
            return Err(Error::Full(format!(
                "the outbox is full ({MAX_OUTBOX} messages)"
            )));
        }
        let seq = self.next_seq;
        self.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| Error::Full("outbox sequence numbers exhausted".into()))?;
        self.outbox.push(Pending { seq, record });
        Ok(seq)
    }

    /// The document, compact, in the current version.
    pub(super) fn to_bytes(&self) -> Vec<u8> {
        let params: Vec<Value> = (self.params.iter())
            .map(|e| {
                let o = e.origin.as_str();
                json!({"key": e.key, "value": e.value, "origin": o, "time": e.time, "sent": e.sent})
            })
            .collect();
        let outbox: Vec<Value> = (self.outbox.iter())
            .map(|p| record_json(p.seq, &p.record))
            .collect();
        let mut doc = json!({"version": VERSION, "next_seq": self.next_seq, "params": params, "outbox": outbox});
        if !self.secret.is_empty() {
            doc["secret"] = json!(self.secret);
        }
        doc.to_string().into_bytes()
    }

    /// Parses and checks a `params` document of version 1 or 2; the error says what is wrong
    /// (never a value). `legacy` decodes version-1 outbox messages.
    pub(super) fn parse(bytes: &[u8], legacy: LegacyDecoder) -> Result<Parsed, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let version = match v.get("version").and_then(Value::as_u64) {
            Some(n @ (1 | 2)) => n,
            _ => return Err("\"version\" is not 1 or 2".into()),
        };
        let arr = |name: &str| {
            v.get(name)
                .and_then(Value::as_array)
                .ok_or(format!("{name:?} is not an array"))
        };
        let mut d = Data::empty();
        d.next_seq = (v.get("next_seq").and_then(Value::as_u64))
            .filter(|&n| n >= 1)
            .ok_or("bad \"next_seq\"")?;
        let (params, outbox) = (arr("params")?, arr("outbox")?);
        if params.len() > MAX_PARAMS || outbox.len() > MAX_OUTBOX {
            return Err("too many params or outbox messages".into());
        }
        for p in params {
            let e = entry_from_json(p)?;
            if d.pos(&e.key).is_some() {
                return Err(format!("key {:?} appears twice", e.key));
            }
            d.params.push(e);
        }
        // Marks of keys no longer stored are dropped.
        let marks = v.get("secret").and_then(Value::as_array);
        d.secret = (marks.into_iter().flatten().filter_map(Value::as_str))
            .filter(|k| d.pos(k).is_some())
            .take(MAX_PARAMS)
            .map(str::to_owned)
            .collect();
        let mut dropped = Vec::new();
        let mut last = None;
        for p in outbox {
            let seq = (p.get("seq").and_then(Value::as_u64))
                .filter(|&s| s < d.next_seq && last.is_none_or(|l| l < s))
                .ok_or("an outbox entry has a bad or out-of-order \"seq\"")?;
            last = Some(seq);
            if version == 2 {
                let record = (record_from_json(p).filter(|r| r.check().is_ok()))
                    .ok_or(format!("outbox entry seq {seq} is malformed"))?;
                d.outbox.push(Pending { seq, record });
                continue;
            }
            let msg = p
                .get("msg")
                .ok_or(format!("outbox entry seq {seq} has no \"msg\""))?;
            let decoded = legacy(msg)
                .ok_or_else(|| "not a message this guestd can queue".to_owned())
                .and_then(|r| r.check().map(|()| r));
            match decoded {
                Ok(record) => d.outbox.push(Pending { seq, record }),
                Err(why) => dropped.push(Dropped { seq, why }),
            }
        }
        Ok(Parsed { data: d, dropped })
    }
}

fn entry_from_json(p: &Value) -> Result<Entry, String> {
    let s = |k: &str| {
        p.get(k)
            .and_then(Value::as_str)
            .ok_or(format!("a param has no string {k:?}"))
    };
    let (key, value) = (s("key")?, s("value")?);
    check_key(key)?;
    check_value(value).map_err(|e| format!("key {key:?}: {e}"))?;
    Ok(Entry {
        key: key.to_owned(),
        value: value.to_owned(),
        origin: Origin::parse(s("origin")?).ok_or("a param has a bad \"origin\"")?,
        time: (p.get("time").and_then(Value::as_u64)).ok_or("a param has no \"time\"")?,
        sent: (p.get("sent").and_then(Value::as_bool)).ok_or("a param has no \"sent\"")?,
    })
}

/// A version-2 outbox entry.
fn record_json(seq: u64, r: &Record) -> Value {
    match r {
        Record::Param { key, value, origin } => {
            json!({"seq": seq, "kind": "param", "key": key, "value": value, "origin": origin.as_str()})
        }
        Record::ParamDeleted { key } => json!({"seq": seq, "kind": "param-deleted", "key": key}),
        Record::ParamsDeleted => json!({"seq": seq, "kind": "params-deleted"}),
        Record::Event { name } => json!({"seq": seq, "kind": "event", "name": name}),
        Record::SessionLock => json!({"seq": seq, "kind": "session-lock"}),
        Record::SessionUnlock => json!({"seq": seq, "kind": "session-unlock"}),
    }
}

/// The record of a version-2 outbox entry (not yet checked).
fn record_from_json(v: &Value) -> Option<Record> {
    Record::from_fields(v.get("kind")?.as_str()?, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 decoder for these tests: `{"gone": KEY}` is a deleted key, the rest fails.
    fn legacy(msg: &Value) -> Option<Record> {
        let key = msg.get("gone")?.as_str()?;
        Some(Record::ParamDeleted { key: key.into() })
    }

    fn all_kinds() -> Vec<Record> {
        vec![
            Record::Param {
                key: "k \"1\"".into(),
                value: "a\nb é".into(),
                origin: Origin::Guest,
            },
            Record::Param {
                key: "h".into(),
                value: String::new(),
                origin: Origin::Host,
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

    #[test]
    fn every_record_kind_round_trips() {
        let mut d = Data::empty();
        for r in all_kinds() {
            d.push(Some(r)).unwrap();
        }
        let bytes = d.to_bytes();
        let p = Data::parse(&bytes, legacy).unwrap();
        assert_eq!(p.data, d);
        assert!(p.dropped.is_empty());
        let doc: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(doc["version"], 2);
        assert_eq!(doc["next_seq"], 8);
        assert_eq!(
            doc["outbox"][2],
            json!({"seq": 3, "kind": "param-deleted", "key": "k"})
        );
        assert_eq!(
            doc["outbox"][6],
            json!({"seq": 7, "kind": "session-unlock"})
        );
    }

    #[test]
    fn version_one_outbox_goes_through_the_decoder() {
        let doc = br#"{"version":1,"next_seq":9,
            "params":[{"key":"a","value":"1","origin":"guest","time":5,"sent":false}],
            "outbox":[{"seq":2,"msg":{"gone":"a"}},{"seq":4,"msg":{"what":1}},
                      {"seq":6,"msg":{"gone":""}},{"seq":8,"msg":{"gone":"b"}}]}"#;
        let p = Data::parse(doc, legacy).unwrap();
        assert_eq!(p.data.next_seq, 9);
        assert_eq!(p.data.params[0].key, "a");
        let kept: Vec<(u64, Option<&str>)> = (p.data.outbox.iter())
            .map(|p| (p.seq, p.record.key()))
            .collect();
        assert_eq!(kept, [(2, Some("a")), (8, Some("b"))]);
        assert_eq!(
            p.dropped,
            [
                Dropped {
                    seq: 4,
                    why: "not a message this guestd can queue".into()
                },
                Dropped {
                    seq: 6,
                    why: "key is empty".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        let v2 = |outbox: &str| {
            format!(r#"{{"version":2,"next_seq":5,"params":[],"outbox":[{outbox}]}}"#)
        };
        for (doc, why) in [
            (
                v2(r#"{"seq":1,"kind":"frob"}"#),
                "outbox entry seq 1 is malformed",
            ),
            (
                v2(r#"{"seq":1,"kind":"param","key":"k"}"#),
                "outbox entry seq 1 is malformed",
            ),
            (
                v2(r#"{"seq":1,"kind":"param-deleted","key":"a=b"}"#),
                "outbox entry seq 1 is malformed",
            ),
            (
                v2(r#"{"seq":2,"kind":"params-deleted"},{"seq":2,"kind":"params-deleted"}"#),
                "an outbox entry has a bad or out-of-order \"seq\"",
            ),
            (
                v2(r#"{"seq":5,"kind":"params-deleted"}"#),
                "an outbox entry has a bad or out-of-order \"seq\"",
            ),
            (
                r#"{"version":1,"next_seq":5,"params":[],"outbox":[{"seq":1}]}"#.into(),
                "outbox entry seq 1 has no \"msg\"",
            ),
            (
                r#"{"version":3,"next_seq":5,"params":[],"outbox":[]}"#.into(),
                "\"version\" is not 1 or 2",
            ),
            (
                r#"{"version":2,"next_seq":0,"params":[],"outbox":[]}"#.into(),
                "bad \"next_seq\"",
            ),
        ] {
            assert_eq!(
                Data::parse(doc.as_bytes(), legacy).unwrap_err(),
                why,
                "{doc}"
            );
        }
    }

    #[test]
    fn push_checks_records() {
        let mut d = Data::empty();
        assert_eq!(d.push(None).unwrap(), 0);
        let bad = Record::Param {
            key: "k".into(),
            value: "v".repeat(8193),
            origin: Origin::Guest,
        };
        let e = d.push(Some(bad)).unwrap_err();
        assert_eq!(e.to_string(), "key \"k\": value is longer than 8192 bytes");
        let e = d.push(Some(Record::Event { name: "".into() })).unwrap_err();
        assert!(matches!(e, Error::Invalid(_)), "{e}");
        assert_eq!(d, Data::empty());
    }
}
