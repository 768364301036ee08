// SPDX-License-Identifier: Apache-2.0
//! guestd's key-value store over QGA, as QAPI downstream-extension commands: the name is
//! `__` + a reversed domain that is guestd's + `_` + the command (QAPI's rule, as in
//! `__com.redhat_drive-mirror`), here `__io.github.guestd_`. So
//! `virsh qemu-agent-command DOM '{"execute":"__io.github.guestd_get-param","arguments":{"key":"x"}}'`
//! reaches the same store, limits and `param` hooks as the oVirt host's commands
//! (`ovirt::kv::host_set_param` and friends) and `guestd -p/-g/-l/-r/-x`.
//!
//! | command | arguments | returns |
//! |---|---|---|
//! | `set-param` | `key`, `value` | `{}`; stored as the host's, `param` hooks run |
//! | `get-param` | `key` | `{key, value, origin}`; a missing key is a GenericError |
//! | `list-params` | | `{params: [{key, value, origin}...]}`, oldest first |
//! | `delete-param` | `key` | `{}`, also when the key was absent |
//! | `delete-params` | | `{}` |
//! | `get-messages` | `max`? (1..=4096, default 256) | `{messages: [{seq, kind, ...}...], more}` |
//! | `ack-messages` | `upto` | `{}`: the messages up to `upto` are delivered |
//!
//! **Messages** are the store's outbox: what the guest queued for the host (`guestd -p`,
//! `-r`, `-x`, `-e`, screen-lock events). `get-messages` only reads them, oldest first,
//! each with its `seq` and `kind` (`param` with `key`, `value`, `origin`; `param-deleted`
//! with `key`; `params-deleted`; `event` with `name`; `session-lock`; `session-unlock`), up to
//! `max` and about 1 MiB; `more` says whether others wait. `ack-messages {upto}` then removes
//! every message whose seq is at most `upto`, so a host that crashes before acknowledging
//! gets them again; a host passes the last seq it has handled (acknowledging a seq it never
//! read drops messages it has not seen).
//!
//! **One outbox, several hosts.** A message leaves the outbox once: when it has been written
//! whole to an oVirt host, or when a QGA host acknowledges it, whichever comes first; the
//! other host then never sees it. `get-messages` first records what the oVirt link has
//! already written, so it never offers those again. Only when both hosts are attached and
//! reading at the same moment can one message reach both: delivered at least once, never
//! lost (the rule the outbox already follows across a crash).

use serde_json::{Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{self, Args, Error};
use crate::kv::{self, Pending, Record};
use crate::ovirt::kv::{host_delete_param, host_delete_params, host_set_param};
use crate::services::Services;

/// The prefix of guestd's own QGA commands.
pub const PREFIX: &str = "__io.github.guestd_";

/// The key-value commands.
pub const COMMANDS: &[Command] = &[
    Command::new("__io.github.guestd_set-param", &["key", "value"], set_param),
    Command::new("__io.github.guestd_get-param", &["key"], get_param),
    Command::new("__io.github.guestd_list-params", &[], list_params),
    Command::new("__io.github.guestd_delete-param", &["key"], delete_param),
    Command::new("__io.github.guestd_delete-params", &[], delete_params),
    Command::new("__io.github.guestd_get-messages", &["max"], get_messages),
    Command::new("__io.github.guestd_ack-messages", &["upto"], ack_messages),
];

/// Messages one `get-messages` returns unless `max` says otherwise.
const DEFAULT_MAX: i64 = 256;
/// Encoded bytes of messages one `get-messages` returns at most (at least one message is
/// always returned: one is at most about 50 KiB once escaped).
const REPLY_BUDGET: usize = 1 << 20;

/// The `key` argument, checked by ovmd's rules; the error names the key.
fn key<'a>(args: &Args<'a>) -> Result<&'a str, Error> {
    let key = args.str("key")?;
    kv::check_key(key).map_err(|e| Error::generic(format!("key {key:?}: {e}")))?;
    Ok(key)
}

fn set_param(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    set_param_in(cx.svc, args).into()
}

fn set_param_in(svc: &mut Services, args: &Args<'_>) -> Result<Value, Error> {
    let key = key(args)?;
    let value = args.str("value")?;
    kv::check_value(value).map_err(|e| Error::generic(format!("key {key:?}: {e}")))?;
    host_set_param(svc, key, value).map_err(|e| Error::generic(format!("setting {key:?}: {e}")))?;
    Ok(json!({}))
}

fn get_param(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    get_param_in(cx.svc, args).into()
}

fn get_param_in(svc: &mut Services, args: &Args<'_>) -> Result<Value, Error> {
    let key = key(args)?;
    let store = svc.store.store_mut()?;
    let e = store
        .get(key)
        .ok_or_else(|| Error::generic(format!("no param {key:?}")))?;
    Ok(json!({"key": e.key, "value": e.value, "origin": e.origin.as_str()}))
}

fn list_params(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    list_params_in(cx.svc, args).into()
}

fn list_params_in(svc: &mut Services, _: &Args<'_>) -> Result<Value, Error> {
    let list: Vec<Value> = svc
        .store
        .store_mut()?
        .params()
        .iter()
        .map(|e| json!({"key": e.key, "value": e.value, "origin": e.origin.as_str()}))
        .collect();
    Ok(json!({ "params": list }))
}

fn delete_param(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    delete_param_in(cx.svc, args).into()
}

fn delete_param_in(svc: &mut Services, args: &Args<'_>) -> Result<Value, Error> {
    let key = key(args)?;
    host_delete_param(svc, key).map_err(|e| Error::generic(format!("deleting {key:?}: {e}")))?;
    Ok(json!({}))
}

fn delete_params(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    host_delete_params(cx.svc)
        .map(|()| json!({}))
        .map_err(|e| Error::generic(format!("deleting every param: {e}")))
        .into()
}

/// One outbox message as QGA returns it.
pub fn message_json(p: &Pending) -> Value {
    let seq = p.seq;
    match &p.record {
        Record::Param { key, value, origin } => json!({
            "seq": seq, "kind": "param", "key": key, "value": value, "origin": origin.as_str()
        }),
        Record::ParamDeleted { key } => json!({"seq": seq, "kind": "param-deleted", "key": key}),
        Record::ParamsDeleted => json!({"seq": seq, "kind": "params-deleted"}),
        Record::Event { name } => json!({"seq": seq, "kind": "event", "name": name}),
        Record::SessionLock => json!({"seq": seq, "kind": "session-lock"}),
        Record::SessionUnlock => json!({"seq": seq, "kind": "session-unlock"}),
    }
}

fn get_messages(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    get_messages_in(cx.svc, args).into()
}

fn get_messages_in(svc: &mut Services, args: &Args<'_>) -> Result<Value, Error> {
    let max = args.opt_i64("max")?.unwrap_or(DEFAULT_MAX);
    let limit = i64::try_from(kv::MAX_OUTBOX).unwrap_or(i64::MAX);
    if !(1..=limit).contains(&max) {
        return Err(Error::generic(format!(
            "'max' must be between 1 and {limit}, not {max}"
        )));
    }
    let max = usize::try_from(max).unwrap_or(kv::MAX_OUTBOX);
    // What an oVirt host has already been written leaves the outbox first, so it is not
    // offered again.
    svc.store.commit_delivered();
    let outbox = svc.store.store_mut()?.outbox();
    let mut messages = Vec::new();
    let mut bytes = 0;
    for p in outbox.iter().take(max) {
        let m = message_json(p);
        let mut buf = Vec::new();
        wire::encode_into(&mut buf, &m);
        if !messages.is_empty() && bytes + buf.len() > REPLY_BUDGET {
            break;
        }
        bytes += buf.len();
        messages.push(m);
    }
    let more = messages.len() < outbox.len();
    Ok(json!({"messages": messages, "more": more}))
}

fn ack_messages(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    ack_messages_in(cx.svc, args).into()
}

fn ack_messages_in(svc: &mut Services, args: &Args<'_>) -> Result<Value, Error> {
    let upto = args.i64("upto")?;
    let upto = u64::try_from(upto)
        .map_err(|_| Error::generic(format!("'upto' must not be negative, not {upto}")))?;
    let store = svc.store.store_mut()?;
    let seqs: Vec<u64> = store
        .outbox()
        .iter()
        .take_while(|p| p.seq <= upto)
        .map(|p| p.seq)
        .collect();
    if !seqs.is_empty() {
        store
            .delivered(&seqs)
            .map_err(|e| Error::generic(format!("acknowledging messages: {e}")))?;
        log::info!("a QGA host took {} messages (up to {upto})", seqs.len());
    }
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Origin;

    #[test]
    fn every_command_carries_the_prefix() {
        for c in COMMANDS {
            assert!(c.name.starts_with(PREFIX), "{}", c.name);
            assert!(c.success_response);
        }
    }

    #[test]
    fn messages_name_their_kind_and_seq() {
        let p = |seq, record| Pending { seq, record };
        assert_eq!(
            message_json(&p(
                3,
                Record::Param {
                    key: "k".into(),
                    value: "v".into(),
                    origin: Origin::Guest
                }
            )),
            json!({"seq": 3, "kind": "param", "key": "k", "value": "v", "origin": "guest"})
        );
        assert_eq!(
            message_json(&p(4, Record::Event { name: "up".into() })),
            json!({"seq": 4, "kind": "event", "name": "up"})
        );
        assert_eq!(
            message_json(&p(5, Record::ParamsDeleted)),
            json!({"seq": 5, "kind": "params-deleted"})
        );
    }
}
