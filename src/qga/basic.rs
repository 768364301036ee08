// SPDX-License-Identifier: Apache-2.0
//! The protocol's own commands: guest-sync, guest-sync-delimited, guest-ping, guest-info.

use serde_json::{Value, json};

use super::commands::{self, Answer, Command, Ctx};
use super::wire::Args;

pub const COMMANDS: &[Command] = &[
    Command::new("guest-sync-delimited", &["id"], sync),
    Command::new("guest-sync", &["id"], sync),
    Command::new("guest-ping", &[], ping),
    Command::new("guest-info", &[], info),
];

/// Echoes the integer `id` (the 0xFF of guest-sync-delimited is the session's doing).
fn sync(_: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    args.i64("id").map(Value::from).into()
}

fn ping(_: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    Answer::Return(json!({}))
}

/// The agent's version and every command with its enabled state (`supported_commands`, with
/// an underscore, as the schema spells it).
fn info(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let frozen = cx.svc.is_frozen();
    let list: Vec<Value> = commands::all()
        .map(|c| {
            json!({
                "name": c.name,
                "enabled": commands::disabled(&cx.svc.cfg, frozen, c.name).is_none(),
                "success-response": c.success_response,
            })
        })
        .collect();
    Answer::Return(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "supported_commands": list,
    }))
}
