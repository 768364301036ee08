// SPDX-License-Identifier: Apache-2.0
//! The QEMU guest-agent protocol session (`shared/reference/qga-protocol.md`), served on
//! `org.qemu.guest_agent.0` (or a socket) from the same loop and fact readers as the oVirt
//! protocol.
//!
//! Requests arrive as a JSON stream (`proto::json`), are checked (`wire`), filtered
//! (`--block-rpcs`, `--allow-rpcs`, the frozen state) and dispatched through one table
//! (`commands`). One request at a time: a command whose work ends later (a child process,
//! hooks) holds the link's input until its answer comes back as a `Notice`, so replies go
//! out in request order and one slow command never makes the loop wait. A reply is never
//! dropped for lack of room (replies may use the queue's event allowance, and the link reads
//! no input while its queue is over the high-water mark); a reply for a host that left is
//! logged and dropped.
//!
//! - `wire`: request validation, ASCII-only reply encoding, argument getters.
//! - `commands`: the table, the filter, the handler context.
//! - `basic`, `system`, `net`, `storage`, `freeze`, `exec`, `file`, `account`, `power`,
//!   `kv`: the commands, by subject.

pub mod account;
pub mod basic;
pub mod commands;
pub mod exec;
pub mod file;
pub mod freeze;
pub mod kv;
pub mod net;
pub mod power;
pub mod storage;
pub mod system;
pub mod wire;

use std::time::Duration;

use serde_json::{Value, json};

use crate::link::Outbound;
use crate::proto::json::JsonStream;
use crate::proto::queue::Kind;
use crate::proto::{Frame, Framer};
use crate::services::{LinkId, Notice, Requester, Services};
use commands::{Answer, Ctx};
use wire::{Args, Error, MAX_REPLY};

/// The port a bare `virtio-serial` looks for.
pub const PORT_NAMES: &[&str] = &["org.qemu.guest_agent.0"];

/// A request whose answer comes later.
#[derive(Debug)]
struct Pending {
    serial: u64,
    name: &'static str,
    id: Option<Value>,
    success_response: bool,
}

/// The session on one link.
pub struct Session {
    link: LinkId,
    /// Requests served on this link so far; numbers the pending one.
    serial: u64,
    pending: Option<Pending>,
}

impl Session {
    pub fn new(link: LinkId) -> Session {
        Session {
            link,
            serial: 0,
            pending: None,
        }
    }

    /// Queues one reply; a reply over `MAX_REPLY` becomes an error saying so.
    fn reply(
        out: &mut Outbound<'_>,
        name: &'static str,
        result: Result<Value, Error>,
        id: Option<&Value>,
        delimit: bool,
    ) {
        if !out.is_attached() {
            log::info!("{name}: the host that asked has left; its reply is dropped");
            return;
        }
        if let Err(e) = &result {
            log::debug!("{name}: {}: {}", e.class.as_str(), e.desc);
        }
        let mut bytes = wire::encode_reply(&result, id, delimit);
        if bytes.len() > MAX_REPLY {
            let e = Error::generic(format!(
                "the reply to {name} is {} bytes, over the {} MiB limit; ask for less",
                bytes.len(),
                MAX_REPLY >> 20
            ));
            log::warn!("{}", e.desc);
            bytes = wire::encode_reply(&Err(e), id, delimit);
        }
        out.push(name, Kind::Event, bytes);
    }

    fn request(&mut self, text: &[u8], out: &mut Outbound<'_>, svc: &mut Services) {
        let req = match wire::parse_request(text) {
            Ok(r) => r,
            Err((e, id)) => return Self::reply(out, "error", Err(e), id.as_ref(), false),
        };
        let id = req.id.as_ref();
        let Some(cmd) = commands::find(&req.execute) else {
            let e = Error::not_found(format!("The command {} has not been found", req.execute));
            return Self::reply(out, "error", Err(e), id, false);
        };
        if let Some(why) = commands::disabled(&svc.cfg, svc.is_frozen(), cmd.name) {
            let e = Error::not_found(format!("Command {} has been disabled: {why}", cmd.name));
            return Self::reply(out, cmd.name, Err(e), id, false);
        }
        // Never log arguments: passwords and file contents pass through here.
        log::debug!("{} called", cmd.name);
        let args = match Args::new(&req.arguments, cmd.params) {
            Ok(a) => a,
            Err(e) => return Self::reply(out, cmd.name, Err(e), id, false),
        };
        self.serial += 1;
        let mut cx = Ctx {
            svc,
            link: self.link,
            serial: self.serial,
        };
        let delimit = cmd.name == "guest-sync-delimited";
        match (cmd.run)(&mut cx, &args) {
            Answer::Return(v) => Self::reply(out, cmd.name, Ok(v), id, delimit),
            Answer::Fail(e) => Self::reply(out, cmd.name, Err(e), id, delimit),
            Answer::Silent => log::debug!("{}: started; no reply on success", cmd.name),
            Answer::Later => {
                self.pending = Some(Pending {
                    serial: self.serial,
                    name: cmd.name,
                    id: req.id,
                    success_response: cmd.success_response,
                })
            }
        }
    }

    /// The answer to a pending request arrived.
    fn complete(&mut self, to: &Requester, result: Result<Value, String>, out: &mut Outbound<'_>) {
        let matches = |p: &Pending| to.id.as_deref() == Some(p.serial.to_string().as_str());
        let Some(p) = self.pending.take_if(|p| matches(p)) else {
            match result {
                Ok(_) => log::info!("a command of a host that left ended; its reply is dropped"),
                Err(e) => {
                    log::warn!("a command of a host that left failed: {e}; its reply is dropped")
                }
            }
            return;
        };
        if result.is_ok() && !p.success_response {
            log::debug!("{}: done; no reply on success", p.name);
            return;
        }
        Self::reply(
            out,
            p.name,
            result.map_err(Error::generic),
            p.id.as_ref(),
            false,
        );
    }
}

impl crate::link::Session for Session {
    fn protocol(&self) -> &'static str {
        "QEMU guest agent"
    }

    fn port_names(&self) -> &'static [&'static str] {
        PORT_NAMES
    }

    fn framer(&self) -> Box<dyn Framer> {
        Box::new(JsonStream::default())
    }

    fn attach(&mut self, _: Duration, _: &mut Outbound<'_>, _: &mut Services) {}

    fn detach(&mut self) {
        if let Some(p) = self.pending.take() {
            log::info!(
                "{}: the host left while it ran; its reply will be dropped",
                p.name
            );
        }
    }

    fn accepts_frames(&self) -> bool {
        self.pending.is_none()
    }

    fn frame(&mut self, frame: Frame<'_>, out: &mut Outbound<'_>, svc: &mut Services) {
        match frame {
            Frame::Line(text) => self.request(text, out, svc),
            Frame::Invalid(why) => Self::reply(out, "error", Err(Error::generic(why)), None, false),
            // The documented flush before a sync: silent, since every client skips to its
            // own sync reply anyway.
            Frame::Flush => log::debug!("flush marker: half-read input dropped"),
            Frame::Oversize => {
                let e = Error::generic(crate::proto::json::TOO_BIG);
                Self::reply(out, "error", Err(e), None, false)
            }
        }
    }

    fn timer(&mut self, _: Duration, _: &mut Outbound<'_>, _: &mut Services) {}

    fn deadline(&self) -> Option<Duration> {
        None
    }

    fn end_of_turn(&mut self, _: &mut Outbound<'_>, _: &mut Services) {}

    fn refresh(&mut self) {}

    fn notice(&mut self, notice: Notice, out: &mut Outbound<'_>, _: &mut Services) {
        match notice {
            Notice::Done { to, result, .. } => self.complete(&to, result.map(|()| json!({})), out),
            Notice::Reply { to, result } => self.complete(&to, result, out),
            Notice::ShuttingDown { .. } | Notice::LoggedOff { .. } | Notice::Measured { .. } => {}
        }
    }

    fn stopping(&mut self, _: &mut Outbound<'_>) {}
}

#[cfg(test)]
mod tests;
