// SPDX-License-Identifier: Apache-2.0
//! The oVirt guest-agent protocol session (`shared/reference/ovirt-protocol.md`): the
//! negotiated API version, the start-up and refresh bursts, the periodic schedule, one table
//! from command name to handler, the host's key-value commands and the delivery of the
//! store's outbox. It serves one link; the loop knows none of this.
//!
//! - `wire`: the line format: commands parsed, messages encoded, version gates.
//! - `messages`: the messages, built from the protocol-neutral facts.
//! - `schedule`: the periodic report deadlines.
//! - `reports`: facts read and sent as messages, and the bursts.
//! - `actions`: the host's actions (shutdown, hibernate, lock-screen, ...).
//! - `kv`: the host's key-value commands and the outbox delivery.

pub mod actions;
pub mod kv;
pub mod messages;
pub mod reports;
pub mod schedule;
pub mod wire;

use std::time::Duration;

use serde_json::Value;

use crate::config::{Config, OvirtKv};
use crate::link::Outbound;
use crate::proto::line::LineReader;
use crate::proto::queue::Kind;
use crate::proto::{Frame, Framer};
use crate::services::{LinkId, Notice, Requester, Services};
use messages::Message;
use schedule::Schedule;
use wire::{Command, MAX_API_VERSION, MAX_LINE};

/// Port names tried, in order, when `virtio-serial` names none. The legacy name comes first,
/// as in the reference Linux agent (§1.1): it opens `com.redhat.rhevm.vdsm` whenever that
/// port exists, and `ovirt-guest-agent.0` otherwise.
pub const PORT_NAMES: &[&str] = &["com.redhat.rhevm.vdsm", "ovirt-guest-agent.0"];

/// What a handler works with: the link's queue and the shared services.
pub struct Ctx<'a, 'b> {
    pub out: &'a mut Outbound<'b>,
    pub svc: &'a mut Services,
}

/// A command handler.
type Handler = fn(&mut Session, &Command, &mut Ctx<'_, '_>);

/// Every command guestd understands, and who handles it.
const COMMANDS: &[(&str, Handler)] = &[
    ("refresh", Session::on_refresh),
    ("api-version", Session::on_api_version),
    ("echo", Session::on_echo),
    ("shutdown", actions::shutdown),
    ("hibernate", actions::hibernate),
    ("lock-screen", actions::lock_screen),
    ("login", actions::login),
    ("log-off", actions::log_off),
    ("lifecycle-event", actions::lifecycle_event),
    ("set-number-of-cpus", actions::set_number_of_cpus),
    ("set-param", kv::set_param),
    ("delete-param", kv::delete_param),
    ("delete-params", kv::delete_params),
    ("get-param", kv::get_param),
    ("list-params", kv::list_params),
];

/// The commands that ask for a burst: consecutive ones share it.
fn asks_for_burst(name: &str) -> bool {
    matches!(name, "refresh" | "api-version")
}

/// The session on one link.
pub struct Session {
    link: LinkId,
    api_version: u32,
    sched: Option<Schedule>,
    /// A refresh burst was asked for (refresh, api-version, SIGHUP); sent once per turn,
    /// however many requests arrived.
    refresh_pending: bool,
    /// The highest outbox sequence number queued for the current host, or held back from it.
    queued_upto: u64,
    /// The oldest key-value extension record held back from the current host (up to
    /// `queued_upto`), until it shows it speaks them (`kv::is_extension`).
    held_from: Option<u64>,
    /// The current host has sent a key-value command: it speaks guestd's extension.
    kv_host: bool,
    /// What earlier reports said, for diffs.
    seen: reports::Seen,
}

impl Session {
    pub fn new(link: LinkId) -> Session {
        Session {
            link,
            api_version: 0,
            sched: None,
            refresh_pending: false,
            queued_upto: 0,
            held_from: None,
            kv_host: false,
            seen: reports::Seen::default(),
        }
    }

    /// Who to answer for a command on this link.
    fn requester(&self, cmd: &Command) -> Requester {
        Requester {
            link: self.link,
            id: reply_id(cmd),
        }
    }

    /// Queues `msg` if the negotiated version allows it (§4), logging what does not fit.
    fn send(&self, out: &mut Outbound<'_>, msg: Message, kind: Kind) {
        if !out.is_attached() {
            return;
        }
        let min = wire::min_api_version(msg.name);
        if min > self.api_version {
            log::debug!(
                "not sending {}: needs API version {min}, negotiated {}",
                msg.name,
                self.api_version
            );
            return;
        }
        out.push(msg.name, kind, msg.encode());
    }

    /// Whether the current host gets guestd's key-value extension messages unasked.
    fn kv_messages(&self, cfg: &Config) -> bool {
        match cfg.ovirt_kv {
            OvirtKv::Auto => self.kv_host,
            OvirtKv::Yes => true,
            OvirtKv::No => false,
        }
    }

    /// Answers a request: `completion` when it carried a `reply_id` and the host takes
    /// completions: from API version 3 on, as the reference agent (below, it drops them), or
    /// any time to a host that speaks guestd's key-value extension. Otherwise the result is
    /// logged.
    fn answer(
        &self,
        cx: &mut Ctx<'_, '_>,
        id: Option<&str>,
        action: &str,
        result: Result<(), String>,
    ) {
        let takes = self.api_version >= wire::min_api_version("completion")
            || self.kv_host
            || cx.svc.cfg.ovirt_kv == OvirtKv::Yes;
        let id = match id {
            Some(_) if !takes => {
                log::debug!(
                    "no completion for {action}: API version {}",
                    self.api_version
                );
                None
            }
            id => id,
        };
        let out = &mut *cx.out;
        match id {
            Some(id) if out.is_attached() => {
                let msg = kv::completion(id, result);
                out.push(msg.name, Kind::Event, msg.encode());
            }
            // The host that asked has left: the answer goes to the log instead.
            Some(_) => match result {
                Ok(()) => log::info!("{action}: done; the host that asked has left"),
                Err(e) => log::warn!("{action}: {e}; the host that asked has left"),
            },
            None => match result {
                Ok(()) => log::info!("{action}: done"),
                Err(e) => log::warn!("{action}: {e}"),
            },
        }
    }

    /// Queues the answer to a host request, or says why it cannot go out.
    fn push_reply(out: &mut Outbound<'_>, msg: &Message) -> Result<(), String> {
        if !out.is_attached() {
            return Ok(());
        }
        let bytes = msg.encode();
        if bytes.len() > MAX_LINE {
            return Err(format!(
                "the answer is {} bytes, over the 1 MiB line limit of the channel",
                bytes.len()
            ));
        }
        if out.push(msg.name, Kind::Event, bytes) {
            Ok(())
        } else {
            Err("the outbound queue is full".into())
        }
    }

    fn on_command(&mut self, cmd: Command, cx: &mut Ctx<'_, '_>) {
        // Never log arguments: set-param values may be secrets.
        log::debug!("host command {}", cmd.name);
        // Consecutive refresh requests share one burst, but a later command is answered after
        // the burst its predecessors asked for, as the host expects.
        if !asks_for_burst(&cmd.name) {
            self.run_pending_refresh(cx);
        }
        if kv::is_kv_command(&cmd.name) && !self.kv_host {
            log::info!("the host speaks guestd's key-value extension");
            self.kv_host = true;
        }
        match COMMANDS.iter().find(|(name, _)| *name == cmd.name) {
            Some((_, handler)) => handler(self, &cmd, cx),
            None => log::info!("ignoring unsupported command '{}'", cmd.name),
        }
    }

    fn on_refresh(&mut self, cmd: &Command, _: &mut Ctx<'_, '_>) {
        // An old host that does not say its version gets version 0 (§3).
        if !cmd.args.contains_key("apiVersion") && self.api_version > 0 {
            log::info!("refresh without apiVersion: falling back to API version 0");
            self.api_version = 0;
        }
        self.refresh_pending = true;
    }

    fn on_api_version(&mut self, cmd: &Command, _: &mut Ctx<'_, '_>) {
        match cmd.args.get("apiVersion").and_then(wire::int_arg) {
            Some(v) => {
                let v = u32::try_from(v.clamp(0, i64::from(MAX_API_VERSION))).unwrap_or(0);
                if v != self.api_version {
                    log::info!("API version {} -> {v}", self.api_version);
                    self.api_version = v;
                    self.refresh_pending = true;
                }
            }
            None => log::warn!(
                "ignoring api-version whose apiVersion is not an integer: {:?}",
                cmd.args.get("apiVersion")
            ),
        }
    }

    fn on_echo(&mut self, cmd: &Command, cx: &mut Ctx<'_, '_>) {
        self.send(cx.out, messages::echo(cmd.args.clone()), Kind::Event);
    }

    fn run_pending_refresh(&mut self, cx: &mut Ctx<'_, '_>) {
        // A burst only for a host that can receive it.
        if std::mem::take(&mut self.refresh_pending) && cx.out.is_attached() {
            self.refresh_burst(cx);
        }
    }
}

/// The `reply_id` of a command, if it has one.
fn reply_id(cmd: &Command) -> Option<String> {
    cmd.args
        .get("reply_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

impl crate::link::Session for Session {
    fn protocol(&self) -> &'static str {
        "oVirt"
    }

    fn port_names(&self) -> &'static [&'static str] {
        PORT_NAMES
    }

    fn framer(&self) -> Box<dyn Framer> {
        Box::new(LineReader::new(MAX_LINE))
    }

    fn attach(&mut self, now: Duration, out: &mut Outbound<'_>, svc: &mut Services) {
        self.queued_upto = 0;
        self.held_from = None;
        self.kv_host = false;
        let c = &svc.cfg;
        self.sched = Some(schedule::for_config(now, c));
        self.seen.forget_host();
        let cx = &mut Ctx { out, svc };
        self.startup_burst(cx);
        self.pump_outbox(cx);
    }

    fn detach(&mut self) {
        self.sched = None;
        self.refresh_pending = false;
    }

    fn frame(&mut self, frame: Frame<'_>, out: &mut Outbound<'_>, svc: &mut Services) {
        match frame {
            Frame::Oversize => {
                log::warn!("discarding an inbound line longer than {MAX_LINE} bytes");
            }
            // Line framing produces neither.
            Frame::Invalid(_) | Frame::Flush => {}
            Frame::Line(line) => match wire::parse_command(line) {
                Ok(cmd) => self.on_command(cmd, &mut Ctx { out, svc }),
                Err(e) => log::debug!("skipping inbound line: {e}"),
            },
        }
    }

    fn timer(&mut self, now: Duration, out: &mut Outbound<'_>, svc: &mut Services) {
        let due = match &mut self.sched {
            Some(s) => s.take_due(now),
            None => return,
        };
        let cx = &mut Ctx { out, svc };
        for task in due {
            self.run_task(task, cx);
        }
    }

    fn deadline(&self) -> Option<Duration> {
        self.sched.as_ref().and_then(Schedule::next_deadline)
    }

    fn end_of_turn(&mut self, out: &mut Outbound<'_>, svc: &mut Services) {
        let cx = &mut Ctx { out, svc };
        self.run_pending_refresh(cx);
        self.pump_outbox(cx);
    }

    fn refresh(&mut self) {
        self.refresh_pending = true;
    }

    fn notice(&mut self, notice: Notice, out: &mut Outbound<'_>, svc: &mut Services) {
        match notice {
            Notice::Done { to, action, result } => {
                self.answer(&mut Ctx { out, svc }, to.id.as_deref(), &action, result);
            }
            Notice::ShuttingDown { .. } => {
                let msg = Message::bare("session-shutdown");
                out.push(msg.name, Kind::Event, msg.encode());
            }
            Notice::LoggedOff { to, leaders } => {
                let cx = &mut Ctx { out, svc };
                self.logged_off(leaders, cx);
                self.answer(cx, to.id.as_deref(), "log-off", Ok(()));
            }
            Notice::Measured { filesystems, .. } => {
                self.disks_measured(filesystems, &mut Ctx { out, svc });
            }
            // Asked for by QGA sessions only.
            Notice::Reply { .. } => {}
        }
    }

    fn stopping(&mut self, out: &mut Outbound<'_>) {
        let msg = Message::bare("session-shutdown");
        out.push(msg.name, Kind::Event, msg.encode());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::kv::keeper::Keeper;
    use crate::link::Session as _;
    use crate::proto::queue::OutQueue;
    use serde_json::json;

    /// Services over the fixture root, with no store.
    fn services() -> Services {
        let cfg = Config {
            root: crate::facts::fixtures().join("agent-root"),
            ..Config::default()
        };
        Services::new(cfg, Keeper::default())
    }

    /// Everything queued, as JSON values.
    fn sent(q: &mut OutQueue) -> Vec<Value> {
        let mut bytes = Vec::new();
        q.flush_to(&mut bytes).unwrap();
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn names(v: &[Value]) -> Vec<&str> {
        v.iter().map(|m| m["__name__"].as_str().unwrap()).collect()
    }

    #[test]
    fn the_package_list_cache_outlives_a_host() {
        let (mut q, mut rejected, mut svc) = (OutQueue::default(), 0, services());
        let mut s = Session::new(0);
        for round in 0..3 {
            let mut out = Outbound::new(&mut q, &mut rejected, true);
            s.attach(Duration::ZERO, &mut out, &mut svc);
            s.detach();
            q.detach();
            if round == 0 {
                assert_eq!(*s.seen.package_reads(), 1);
                // Marks this cache: a new one would count from zero again.
                *s.seen.package_reads() = 100;
            }
        }
        assert_eq!(
            *s.seen.package_reads(),
            100,
            "the cache was dropped or the database re-read"
        );
    }

    #[test]
    fn attach_queues_the_startup_burst_in_reference_order() {
        let (mut q, mut rejected, mut svc) = (OutQueue::default(), 0, services());
        let mut s = Session::new(0);
        s.attach(
            Duration::ZERO,
            &mut Outbound::new(&mut q, &mut rejected, true),
            &mut svc,
        );
        let burst = sent(&mut q);
        assert_eq!(
            names(&burst),
            [
                "session-startup",
                "host-name",
                "os-version",
                "network-interfaces",
                "active-user",
                "applications",
                "fqdn",
                "disks-usage"
            ]
        );
        assert!(s.deadline().is_some(), "the schedule runs while attached");
        s.detach();
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn commands_are_answered_through_the_links_queue_only_while_attached() {
        let (mut q, mut rejected, mut svc) = (OutQueue::default(), 0, services());
        let mut s = Session::new(0);
        let echo = br#"{"__name__": "echo", "x": 1}"#;
        let mut out = Outbound::new(&mut q, &mut rejected, false);
        s.frame(Frame::Line(echo), &mut out, &mut svc);
        assert!(sent(&mut q).is_empty(), "nothing is queued while detached");
        let mut out = Outbound::new(&mut q, &mut rejected, true);
        s.frame(Frame::Line(echo), &mut out, &mut svc);
        s.frame(
            Frame::Line(br#"{"__name__": "no-such-command"}"#),
            &mut out,
            &mut svc,
        );
        let get = br#"{"__name__": "get-param", "key": "k", "reply_id": "g"}"#;
        s.frame(Frame::Line(get), &mut out, &mut svc);
        let got = sent(&mut q);
        assert_eq!(got[0], json!({"__name__": "echo", "x": 1}));
        assert_eq!(got[1]["__name__"], "completion");
        assert_eq!(got[1]["reply_id"], "g");
        assert_eq!(got[1]["done"], false);
        assert!(
            got[1]["error"]
                .as_str()
                .unwrap()
                .contains("store is unavailable")
        );
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn notices_for_the_link_are_answered_as_completions() {
        let (mut q, mut rejected, mut svc) = (OutQueue::default(), 0, services());
        let mut s = Session::new(3);
        let to = Requester {
            link: 3,
            id: Some("r1".into()),
        };
        let done = |result| Notice::Done {
            to: to.clone(),
            action: "shutdown".into(),
            result,
        };
        // Below API version 3 the reference sends no completion: only the log has it.
        let mut out = Outbound::new(&mut q, &mut rejected, true);
        s.notice(done(Ok(())), &mut out, &mut svc);
        assert!(sent(&mut q).is_empty());
        s.api_version = 3;
        let mut out = Outbound::new(&mut q, &mut rejected, true);
        s.notice(Notice::ShuttingDown { to: to.clone() }, &mut out, &mut svc);
        let done = Notice::Done {
            to,
            action: "shutdown".into(),
            result: Err("no power-off method".into()),
        };
        s.notice(done, &mut out, &mut svc);
        let got = sent(&mut q);
        assert_eq!(names(&got), ["session-shutdown", "completion"]);
        assert_eq!(got[1]["error"], "no power-off method");
    }
}
