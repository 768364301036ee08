// SPDX-License-Identifier: Apache-2.0
//! guestd's key-value extension of the oVirt channel: the host's `set-param`,
//! `delete-param`, `delete-params`, `get-param` and `list-params`; the delivery of the store's
//! outbox to the host; the message for each outbox record (`record_message`), and the decoder
//! of the outbox of a version-1 store, which kept those messages themselves (`legacy_record`).

use serde_json::{Map, Value, json};

use super::messages::Message;
use super::wire::Command;
use super::{Ctx, Session};
use crate::hooks::{self, Job};
use crate::kv::{Entry, Origin, Record};
use crate::link::Outbound;
use crate::services::{Followup, Lane, Services};

/// Outbox messages are queued for the host while its queue holds less than this: half the
/// high-water mark, so a backlog never stops the link from reading the host's commands.
const OUTBOX_WINDOW: usize = crate::proto::queue::HIGH_WATER / 2;

/// Whether `name` is one of the host's key-value commands: a host that sends one speaks
/// guestd's extension.
pub fn is_kv_command(name: &str) -> bool {
    matches!(
        name,
        "set-param" | "delete-param" | "delete-params" | "get-param" | "list-params"
    )
}

/// Whether `record` becomes one of guestd's extension messages, which the reference protocol
/// does not have (`session-lock` and `session-unlock` are the reference's own).
pub fn is_extension(record: &Record) -> bool {
    !matches!(record, Record::SessionLock | Record::SessionUnlock)
}

/// A string argument of `cmd`.
fn arg<'a>(cmd: &'a Command, k: &str) -> Result<&'a str, String> {
    cmd.args
        .get(k)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("missing string \"{k}\""))
}

/// Runs a key-value command and answers it (`completion` when it has a `reply_id`).
fn run(
    s: &mut Session,
    cmd: &Command,
    cx: &mut Ctx<'_, '_>,
    f: fn(&mut Session, &Command, &mut Ctx<'_, '_>) -> Result<(), String>,
) {
    let result = f(s, cmd, cx);
    match super::reply_id(cmd) {
        Some(id) => s.answer(cx, Some(&id), &cmd.name, result),
        // Without a reply_id only a refusal is worth a log line.
        None => {
            if let Err(e) = result {
                log::warn!("{} refused: {e}", cmd.name);
            }
        }
    }
}

/// `set-param {key, value}`; `secret: true` marks the value secret (guestd's own flag: the
/// reference protocols have none), as keys `kv::is_secret_key` names are anyway.
pub(super) fn set_param(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    run(s, cmd, cx, |_, cmd, cx| {
        let secret = cmd.args.get("secret") == Some(&Value::Bool(true));
        host_set_param_marked(cx.svc, arg(cmd, "key")?, arg(cmd, "value")?, secret)
    });
}

pub(super) fn delete_param(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    run(s, cmd, cx, |_, cmd, cx| {
        host_delete_param(cx.svc, arg(cmd, "key")?)
    });
}

pub(super) fn delete_params(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    run(s, cmd, cx, |_, _, cx| host_delete_params(cx.svc));
}

/// The host sets `key` to `value`, whichever protocol it speaks (the QGA session calls this
/// too): stored as the host's and sent, guest news about the key not yet delivered dropped,
/// and the `param` hooks queued. Refused before anything is stored when the hook lane is
/// full, so the hooks run for every value set.
pub fn host_set_param(svc: &mut Services, key: &str, value: &str) -> Result<(), String> {
    host_set_param_marked(svc, key, value, false)
}

/// `host_set_param`, the value marked secret when `secret`. A secret (marked, or a
/// `kv::is_secret_key` key) is deleted from the store once the `param` hooks have all
/// succeeded with it, or once the guest has read it (`-g`, `-l`, `-s`), whichever is first.
pub fn host_set_param_marked(
    svc: &mut Services,
    key: &str,
    value: &str,
    secret: bool,
) -> Result<(), String> {
    if !svc.has_room(Lane::Normal) {
        return Err(hooks::REFUSED.into());
    }
    let store = svc.store.store_mut()?;
    store
        .set_marked(key, value, Origin::Host, true, None, secret)
        .map_err(|e| e.to_string())?;
    let then = if store.is_secret(key) {
        Followup::SecretApplied {
            key: key.to_owned(),
            value_hash: crate::kv::value_hash(value),
        }
    } else {
        Followup::Nothing
    };
    // The host's value wins over guest news about the key not yet delivered.
    store.forget_pending(Some(key)).map_err(|e| e.to_string())?;
    log::info!("host set param '{key}'");
    let job = Job {
        label: "param".into(),
        dir: svc.cfg.hooks_dir.join("param"),
        args: vec![key.to_owned()],
        stdin: value.as_bytes().to_vec(),
        redact: vec![value.as_bytes().to_vec()],
        timeout: svc.cfg.hook_timeout,
        ends: None,
    };
    svc.submit(Lane::Normal, job, then);
    Ok(())
}

/// The host deletes `key` (any protocol). Deleting an absent key is not an error: the key is
/// absent afterwards. Guest news about it not yet delivered is dropped.
pub fn host_delete_param(svc: &mut Services, key: &str) -> Result<(), String> {
    let store = svc.store.store_mut()?;
    store.delete(key, None).map_err(|e| e.to_string())?;
    store.forget_pending(Some(key)).map_err(|e| e.to_string())
}

/// The host deletes every param (any protocol), and the guest's undelivered news about them.
pub fn host_delete_params(svc: &mut Services) -> Result<(), String> {
    let store = svc.store.store_mut()?;
    store.delete_all(None).map_err(|e| e.to_string())?;
    store.forget_pending(None).map_err(|e| e.to_string())
}

pub(super) fn get_param(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    run(s, cmd, cx, |_, cmd, cx| {
        let key = arg(cmd, "key")?;
        let msg = match cx.svc.store.store_mut()?.get(key) {
            Some(e) => param(&e.key, &e.value, e.origin),
            None => param_absent(key),
        };
        Session::push_reply(cx.out, &msg)
    });
}

pub(super) fn list_params(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    run(s, cmd, cx, |_, _, cx| {
        let msg = params(cx.svc.store.store_mut()?.params());
        Session::push_reply(cx.out, &msg)
    });
}

impl Session {
    /// Queues outbox messages not yet queued for this host, in order, while there is room.
    /// Extension records wait while the host does not take them (`kv_messages`), and go out,
    /// oldest first, once it does; the reference protocol's records are not held behind them.
    pub(super) fn pump_outbox(&mut self, cx: &mut Ctx<'_, '_>) {
        if !cx.out.is_attached() {
            return;
        }
        let ext = self.kv_messages(&cx.svc.cfg);
        let Some(store) = cx.svc.store.get() else {
            return;
        };
        let outbox = store.outbox();
        let room = |out: &Outbound<'_>| out.len_bytes() < OUTBOX_WINDOW;
        if let Some(held) = self.held_from.filter(|_| ext) {
            let from = outbox.partition_point(|p| p.seq < held);
            let upto = outbox.partition_point(|p| p.seq <= self.queued_upto);
            for p in outbox[from..upto]
                .iter()
                .filter(|p| is_extension(&p.record))
            {
                if !room(cx.out)
                    || !cx
                        .out
                        .push_durable(p.seq, record_message(&p.record).encode())
                {
                    self.held_from = Some(p.seq);
                    return;
                }
            }
            self.held_from = None;
        }
        let from = outbox.partition_point(|p| p.seq <= self.queued_upto);
        for p in &outbox[from..] {
            if !ext && is_extension(&p.record) {
                self.held_from.get_or_insert(p.seq);
            } else if !room(cx.out)
                || !cx
                    .out
                    .push_durable(p.seq, record_message(&p.record).encode())
            {
                break;
            }
            self.queued_upto = p.seq;
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
    // A stored message's name is the record's kind, its other fields the record's fields.
    Record::from_fields(msg.get("__name__")?.as_str()?, msg)
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
    use crate::kv::Store;
    use crate::kv::TempDir;

    /// A message as one JSON object, `__name__` among its arguments (what a version-1 store
    /// kept in its outbox).
    fn wire(msg: &Message) -> Value {
        let mut m = msg.args.clone();
        m.insert("__name__".into(), Value::String(msg.name.into()));
        Value::Object(m)
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
        crate::ovirt::wire::encode(&name, &args)
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
