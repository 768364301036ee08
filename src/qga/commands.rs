// SPDX-License-Identifier: Apache-2.0
//! The QGA command table: every command guestd serves, the members its arguments may have,
//! its handler, and whether it answers on success. Each group of commands lives in its own
//! module with its own slice; `all()` chains them. Also the command filter: `--block-rpcs`,
//! `--allow-rpcs` and the frozen state.

use serde_json::Value;

use super::wire::{Args, Error};
use crate::config::Config;
use crate::services::{LinkId, Requester, Services};

/// What a handler works with: the shared services, and who is asking (for work that
/// answers later).
pub struct Ctx<'a> {
    pub svc: &'a mut Services,
    pub link: LinkId,
    /// The request's number on its link, to match a later answer to it.
    pub serial: u64,
}

impl Ctx<'_> {
    /// Who to answer when work started now ends (see `Answer::Later`).
    pub fn requester(&self) -> Requester {
        Requester {
            link: self.link,
            id: Some(self.serial.to_string()),
        }
    }
}

/// How a handler answered.
#[derive(Debug)]
pub enum Answer {
    Return(Value),
    Fail(Error),
    /// Started, and a success has no reply (guest-shutdown, guest-suspend-*).
    Silent,
    /// Started; a `Notice` addressed to `Ctx::requester()` brings the answer. The link reads
    /// no further requests until then, so replies stay in request order.
    Later,
}

impl From<Result<Value, Error>> for Answer {
    fn from(r: Result<Value, Error>) -> Answer {
        match r {
            Ok(v) => Answer::Return(v),
            Err(e) => Answer::Fail(e),
        }
    }
}

pub type Handler = fn(&mut Ctx<'_>, &Args<'_>) -> Answer;

/// One command.
pub struct Command {
    pub name: &'static str,
    /// The argument members it accepts; any other is refused.
    pub params: &'static [&'static str],
    pub run: Handler,
    /// False for the commands that send no reply when they succeed.
    pub success_response: bool,
}

impl Command {
    /// A command that answers every request.
    pub const fn new(name: &'static str, params: &'static [&'static str], run: Handler) -> Command {
        Command {
            name,
            params,
            run,
            success_response: true,
        }
    }

    /// A command with no reply on success.
    pub const fn silent(
        name: &'static str,
        params: &'static [&'static str],
        run: Handler,
    ) -> Command {
        Command {
            name,
            params,
            run,
            success_response: false,
        }
    }
}

/// Every command, in `guest-info` order.
pub fn all() -> impl Iterator<Item = &'static Command> {
    [
        super::basic::COMMANDS,
        super::system::COMMANDS,
        super::net::COMMANDS,
        super::storage::COMMANDS,
        super::freeze::COMMANDS,
        super::exec::COMMANDS,
        super::file::COMMANDS,
        super::account::COMMANDS,
        super::power::COMMANDS,
        super::kv::COMMANDS,
    ]
    .into_iter()
    .flatten()
}

pub fn find(name: &str) -> Option<&'static Command> {
    all().find(|c| c.name == name)
}

/// The commands that still work while the file systems are frozen (qemu-ga's list).
pub const FROZEN_OK: &[&str] = &[
    "guest-ping",
    "guest-info",
    "guest-sync",
    "guest-sync-delimited",
    "guest-fsfreeze-status",
    "guest-fsfreeze-thaw",
];

/// Why `name` is disabled, if it is: the block list wins over the allow list, and the frozen
/// state over both (QEMU 9.1 semantics).
pub fn disabled(cfg: &Config, frozen: bool, name: &str) -> Option<&'static str> {
    if frozen && !FROZEN_OK.contains(&name) {
        return Some("the agent is in frozen state");
    }
    let blocked = cfg.block_rpcs.iter().any(|b| b == name);
    let not_allowed = cfg
        .allow_rpcs
        .as_ref()
        .is_some_and(|allow| !allow.iter().any(|a| a == name));
    (blocked || not_allowed).then_some("the command is not allowed")
}

/// The names in a `--block-rpcs`/`--allow-rpcs` list that are no command guestd serves (a
/// list written for qemu-ga may name its Windows-only commands): logged, not fatal.
pub fn unknown_names(list: &[String]) -> Vec<&str> {
    list.iter()
        .filter(|n| find(n).is_none())
        .map(String::as_str)
        .collect()
}
