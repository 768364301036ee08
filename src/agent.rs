// SPDX-License-Identifier: Apache-2.0
//! The agent: one single-threaded poll(2) loop over a table built each turn from named
//! tokens: the signalfd (SIGTERM, SIGINT, SIGHUP, SIGIO, SIGCHLD), the timerfd (the earliest
//! deadline of every link and service), each link's listening socket and connection, the
//! control socket and its clients, and the pipes of running hooks and QGA processes. It
//! dispatches readiness and knows no protocol: each link's session does that.
//!
//! While no host is attached nothing is collected and no timer is armed: the process sleeps
//! in poll(2) until a peer connects (listening socket) or a virtio port raises SIGIO.

use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use serde_json::{Value, json};

use crate::channel;
use crate::config::Config;
use crate::control::ControlServer;
use crate::kv::keeper::Keeper;
use crate::kv::ops::{self, Op};
use crate::link::Link;
use crate::ovirt;
use crate::qga;
use crate::services::{LinkId, Services};
use crate::sys::{self, POLLIN, Signal, SignalFd, TimerFd};

/// Rounds of notice routing and link work per loop turn.
const ROUNDS_PER_TURN: usize = 4;
/// How long the agent tries to deliver its goodbye (`session-shutdown`) before exiting.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// A failure that stops the agent.
#[derive(Debug)]
pub enum Error {
    /// Creating a loop descriptor (signalfd, timerfd), locking the store or polling failed.
    Sys {
        op: &'static str,
        source: io::Error,
    },
    Channel(channel::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys { op, source } => write!(f, "{op}: {source}"),
            Error::Channel(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Sys { source, .. } => Some(source),
            Error::Channel(e) => Some(e),
        }
    }
}

fn sys_err(op: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Sys { op, source }
}

/// What a poll table entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Signals,
    Timer,
    Listen(LinkId),
    Conn(LinkId),
    /// The control socket or one of its clients (the server tells them apart by fd).
    Control,
    /// A pipe of a running hook (the runners tell them apart by fd).
    Hook,
    /// A pipe of a QGA guest-exec process or helper program, or of a statvfs probe (each
    /// table tells its own apart).
    Exec,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), Error> {
    // INVARIANT: the signals are blocked (by creating the signalfd) before any channel is
    // opened, because opening a virtio port turns on SIGIO.
    let signals = SignalFd::new(&[
        Signal::Term,
        Signal::Int,
        Signal::Hup,
        Signal::Io,
        Signal::PortIo,
        Signal::Child,
    ])
    .map_err(sys_err("creating the signalfd"))?;
    let timer = TimerFd::new().map_err(sys_err("creating the timerfd"))?;
    // A restart while the file systems are frozen: the store stays closed until the thaw
    // (even opening its lock file would block).
    let frozen = qga::freeze::frozen_at_start(&cfg);
    if frozen {
        // Before anything else is logged: a record written to a frozen file system (stderr
        // redirected to a file, a syslog daemon) would block the only process that thaws.
        crate::logger::set_frozen(true);
    }
    let links = open_links(&cfg)?;
    let store = if frozen {
        Keeper::deferred()
    } else {
        Keeper::open(&cfg.state_dir, ovirt::kv::legacy_record)
            .map_err(sys_err("opening the store"))?
    };
    let svc = Services::new(cfg, store);
    // INVARIANT: the store is locked and loaded before the control socket exists, so a
    // command-line call either edits the store itself or reaches an agent that has it.
    let control = if svc.store.is_open() {
        // Fatal when it fails: the agent holds the store lock, so without this socket no
        // command-line call could reach the store at all.
        let c = ControlServer::bind(&svc.cfg.control_socket, svc.cfg.control_group.as_deref())
            .map_err(|e| Error::Sys {
                op: "binding the control socket",
                source: io::Error::other(e),
            })?;
        Some(c)
    } else {
        None
    };
    let mut agent = Agent {
        signals,
        timer,
        armed: None,
        links,
        control,
        svc,
        stop: false,
        control_later: frozen,
    };
    log::info!("guestd {} starting", env!("CARGO_PKG_VERSION"));
    if frozen {
        qga::freeze::start_frozen(&mut agent.svc);
    }
    for link in &mut agent.links {
        link.start(&mut agent.svc);
    }
    let served = (|| {
        agent.end_of_turn()?;
        while !agent.stop {
            agent.turn()?;
        }
        Ok(())
    })();
    // Also when the loop failed: a guest must not stay frozen because guestd stopped.
    qga::freeze::thaw_at_exit(&mut agent.svc);
    served?;
    for link in &mut agent.links {
        link.stop(SHUTDOWN_FLUSH, &mut agent.svc);
    }
    // What went out is recorded before the agent exits, so it is not sent again.
    agent.svc.store.commit_delivered();
    Ok(())
}

/// The links the configuration asks for: the oVirt protocol on `--channel`, the QEMU
/// guest-agent protocol on `--qga-channel` (by default on `org.qemu.guest_agent.0` when that
/// port exists: a guest without it gets no link that would look for it every few seconds).
fn open_links(cfg: &Config) -> Result<Vec<Link>, Error> {
    let mut links = Vec::new();
    if cfg.ovirt {
        let id = links.len();
        let session = Box::new(ovirt::Session::new(id));
        links.push(Link::open(id, &cfg.channel, &cfg.root, session).map_err(Error::Channel)?);
    }
    if cfg.qga {
        for list in [Some(&cfg.block_rpcs), cfg.allow_rpcs.as_ref()]
            .into_iter()
            .flatten()
        {
            let unknown = qga::commands::unknown_names(list);
            if !unknown.is_empty() {
                log::warn!("no such QGA commands (ignored): {}", unknown.join(", "));
            }
        }
        let spec = match &cfg.qga_channel {
            Some(spec) => Some(spec.clone()),
            None => channel::virtio::find_port(&cfg.root, qga::PORT_NAMES)
                .map(|_| channel::ChannelSpec::VirtioSerial(None)),
        };
        match spec {
            Some(spec) => {
                let id = links.len();
                let session = Box::new(qga::Session::new(id));
                links.push(Link::open(id, &spec, &cfg.root, session).map_err(Error::Channel)?);
            }
            None => log::info!(
                "no {} port: the QEMU guest-agent protocol is not served (see --qga-channel)",
                qga::PORT_NAMES[0]
            ),
        }
    }
    if links.is_empty() {
        return Err(Error::Sys {
            op: "starting",
            source: io::Error::other("no protocol is enabled (ovirt = no, and no QGA channel)"),
        });
    }
    Ok(links)
}

struct Agent {
    signals: SignalFd,
    timer: TimerFd,
    /// The deadline the timer is armed for, to skip redundant timerfd_settime calls.
    armed: Option<Duration>,
    links: Vec<Link>,
    control: Option<ControlServer>,
    svc: Services,
    stop: bool,
    /// The store opens at thaw (the agent started frozen): bind the control socket then.
    control_later: bool,
}

impl Agent {
    /// The poll table: descriptors with their events, and what each is for.
    fn table(&self) -> (Vec<sys::PollFd>, Vec<Token>) {
        let mut entries = vec![
            (Token::Signals, self.signals.as_raw_fd(), POLLIN),
            (Token::Timer, self.timer.as_raw_fd(), POLLIN),
        ];
        for link in &self.links {
            if let Some(fd) = link.listen_fd() {
                entries.push((Token::Listen(link.id()), fd, POLLIN));
            }
            if let Some((fd, ev)) = link.conn_poll() {
                entries.push((Token::Conn(link.id()), fd, ev));
            }
        }
        let mut fds: Vec<(RawFd, i16)> = Vec::new();
        if let Some(c) = &self.control {
            c.poll_fds(&mut fds);
        }
        entries.extend(fds.drain(..).map(|(fd, ev)| (Token::Control, fd, ev)));
        self.svc.hooks.poll_fds(&mut fds);
        entries.extend(fds.drain(..).map(|(fd, ev)| (Token::Hook, fd, ev)));
        self.svc.execs.poll_fds(&mut fds);
        self.svc.probes.poll_fds(&mut fds);
        entries.extend(fds.into_iter().map(|(fd, ev)| (Token::Exec, fd, ev)));
        entries
            .into_iter()
            .map(|(t, fd, ev)| (sys::pollfd(fd, ev), t))
            .unzip()
    }

    /// One poll(2) and the handling of what it reported.
    fn turn(&mut self) -> Result<(), Error> {
        let (mut fds, tokens) = self.table();
        // Frames a link could serve now, and work that ended, are announced by no descriptor.
        let busy = self.links.iter().any(Link::has_work) || self.svc.has_notices();
        let timeout = busy.then_some(Duration::ZERO);
        sys::poll(&mut fds, timeout).map_err(sys_err("poll"))?;
        for (p, &token) in fds.iter().zip(&tokens) {
            if p.revents == 0 {
                continue;
            }
            match token {
                Token::Signals => self.on_signals(),
                Token::Timer => self.on_timer(),
                Token::Listen(i) => self.links[i].on_listen(&mut self.svc),
                Token::Conn(i) => self.links[i].on_conn(p.fd, p.revents, &mut self.svc),
                Token::Control => {
                    if let Some(c) = &mut self.control {
                        let store = &mut self.svc.store;
                        c.on_ready(p.fd, p.revents, &mut |op| control_op(store, op));
                    }
                }
                Token::Hook => self.svc.hooks.on_ready(p.fd, p.revents),
                Token::Exec => self.svc.on_exec_ready(p.fd, p.revents),
            }
        }
        self.end_of_turn()
    }

    /// Routes finished work to the links that asked, lets each link finish its turn, and
    /// arms the timer for the earliest deadline.
    fn end_of_turn(&mut self) -> Result<(), Error> {
        // Serving buffered frames may finish more work at once (a hook job with no program to
        // run, a refusal): go round until nothing is left, a bounded number of times; what
        // is still left then makes the next poll return at once.
        for _ in 0..ROUNDS_PER_TURN {
            self.route_notices();
            for link in &mut self.links {
                link.end_of_turn(&mut self.svc);
            }
            if !self.svc.has_notices() {
                break;
            }
        }
        self.bind_control_later();
        self.rearm()
    }

    /// Binds the control socket once a store opened late (at thaw) is open.
    fn bind_control_later(&mut self) {
        if !self.control_later || !self.svc.store.is_open() {
            return;
        }
        self.control_later = false;
        let cfg = &self.svc.cfg;
        match ControlServer::bind(&cfg.control_socket, cfg.control_group.as_deref()) {
            Ok(c) => self.control = Some(c),
            Err(e) => log::error!("binding the control socket: {e}"),
        }
    }

    /// Hands finished work to the links that asked for it.
    fn route_notices(&mut self) {
        self.svc.hooks_finished();
        for notice in std::mem::take(&mut self.svc.notices) {
            match self.links.get_mut(notice.link()) {
                Some(link) => link.notice(notice, &mut self.svc),
                None => log::warn!("dropping a notice for unknown link {}", notice.link()),
            }
        }
    }

    fn on_signals(&mut self) {
        let signals = match self.signals.read_with_fd() {
            Ok(s) => s,
            Err(e) => {
                log::error!("reading the signalfd: {e}");
                return;
            }
        };
        for (s, fd) in signals {
            match s {
                Signal::Term | Signal::Int => {
                    log::info!("received {s:?}, stopping");
                    self.stop = true;
                }
                Signal::Hup => self.links.iter_mut().for_each(Link::refresh),
                // A port's signal goes to the detached virtio link whose port it names;
                // plain SIGIO (the real-time queue overflowed) to every detached one.
                Signal::PortIo | Signal::Io => {
                    for link in &mut self.links {
                        link.on_sigio(fd, &mut self.svc);
                    }
                }
                Signal::Child => self.svc.on_sigchld(),
                other => log::debug!("ignoring signal {other:?}"),
            }
        }
    }

    fn on_timer(&mut self) {
        if let Err(e) = self.timer.read() {
            log::error!("reading the timerfd: {e}");
        }
        self.armed = None;
        let now = sys::monotonic_now();
        self.svc.on_timer(now);
        // What the services' deadlines ended (a grace period) goes out before the links'
        // periodic reports of the same tick.
        self.route_notices();
        for link in &mut self.links {
            link.on_timer(now, &mut self.svc);
        }
    }

    /// Arms the timer for the earliest deadline of any link or service.
    fn rearm(&mut self) -> Result<(), Error> {
        let want = self
            .links
            .iter()
            .filter_map(Link::deadline)
            .chain(self.svc.deadline())
            .min();
        if want != self.armed {
            self.timer
                .set_deadline(want)
                .map_err(sys_err("arming the timerfd"))?;
            self.armed = want;
        }
        Ok(())
    }
}

/// Serves a command-line request from the control socket. Outbox messages it stores are
/// queued for the hosts at the end of the turn.
fn control_op(store: &mut Keeper, op: Op) -> Value {
    let store = match store.store_mut() {
        Ok(s) => s,
        Err(e) => return json!({"ok": false, "error": e}),
    };
    match ops::apply(store, &op) {
        Ok(reply) => reply.response(),
        Err(e) => json!({"ok": false, "error": e.to_string()}),
    }
}
