// SPDX-License-Identifier: Apache-2.0
//! The agent: one single-threaded poll(2) loop. Four fixed descriptors: the signalfd
//! (SIGTERM, SIGINT, SIGHUP, SIGIO, SIGCHLD), the timerfd (the next scheduled report, port
//! retry or hook deadline), the listening socket (unix-listen only) and the host connection;
//! then the control socket and its clients, and the pipes of a running hook.
//!
//! While no host is attached nothing is collected and no timer is armed: the process sleeps
//! in poll(2) until a peer connects (listening socket) or the virtio port raises SIGIO.

mod actions;

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::channel::{self, Channel, ChannelSpec};
use crate::config::Config;
use crate::control::ControlServer;
use crate::facts::{
    self, Health, apps, cpus, disks, hostname, memory, net, osinfo, timezone, users,
};
use crate::hooks::{self, Job};
use crate::kv::Origin;
use crate::kv::store::{Store, StoreLock};
use crate::params::{self, Op};
use crate::proto::ovirt::{self, Command, Frame, LineReader, MAX_API_VERSION, Message, ReadEnd};
use crate::proto::queue::{Flush, Kind, OutQueue, Push};
use crate::schedule::{Schedule, Task};
use crate::sys::{self, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, Signal, SignalFd, TimerFd};

/// Indices into the poll table.
const SIGNALS: usize = 0;
const TIMER: usize = 1;
const LISTEN: usize = 2;
const CONN: usize = 3;

/// How often a missing virtio port is looked for again.
const PORT_RETRY: Duration = Duration::from_secs(3);
/// How long the agent tries to deliver `session-shutdown` before exiting.
const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);
/// Reads served per wake-up before the loop looks at its other descriptors again.
const READS_PER_WAKEUP: usize = 64;
/// Outbox messages are queued for the host while the queue holds less than this.
const OUTBOX_WINDOW: usize = 256 * 1024;
/// Delivered outbox messages are recorded in the store at most this often while a backlog
/// drains.
const DELIVERED_BATCH: Duration = Duration::from_secs(1);
/// Hook jobs (and their follow-ups) waiting at most; a host `set-param` beyond is refused.
const MAX_PENDING_HOOK_JOBS: usize = 64;
/// How long the agent waits at start for a command-line call that holds the store lock.
const STORE_LOCK_WAIT: Duration = Duration::from_secs(5);

/// A failure that stops the agent.
#[derive(Debug)]
pub enum Error {
    /// Creating a loop descriptor (signalfd, timerfd) or polling failed.
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

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(cfg: Config) -> Result<(), Error> {
    // INVARIANT: the signals are blocked (by creating the signalfd) before the channel is
    // opened, because opening a virtio port turns on SIGIO.
    let signals = SignalFd::new(&[
        Signal::Term,
        Signal::Int,
        Signal::Hup,
        Signal::Io,
        Signal::Child,
    ])
    .map_err(sys_err("creating the signalfd"))?;
    let timer = TimerFd::new().map_err(sys_err("creating the timerfd"))?;
    let channel = Channel::open(&cfg.channel, &cfg.root).map_err(Error::Channel)?;
    let mut core = Core::new(cfg);
    core.open_store()?;
    // INVARIANT: the store is locked and loaded before the control socket exists, so a
    // command-line call either edits the store itself or reaches an agent that has it.
    let control = if core.store.is_some() {
        // Fatal when it fails: the agent holds the store lock, so without this socket no
        // command-line call could reach the store at all.
        let c = ControlServer::bind(&core.cfg.control_socket, core.cfg.control_group.as_deref())
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
        channel,
        reader: LineReader::default(),
        control,
        core,
        stop: false,
    };
    agent.start()?;
    while !agent.stop {
        agent.turn()?;
    }
    agent.shutdown();
    Ok(())
}

struct Agent {
    signals: SignalFd,
    timer: TimerFd,
    /// The deadline the timer is armed for, to skip redundant timerfd_settime calls.
    armed: Option<Duration>,
    channel: Channel,
    reader: LineReader,
    control: Option<ControlServer>,
    core: Core,
    stop: bool,
}

impl Agent {
    fn start(&mut self) -> Result<(), Error> {
        log::info!(
            "guestd {} starting on {}",
            env!("CARGO_PKG_VERSION"),
            self.channel.spec()
        );
        if let ChannelSpec::UnixListen(p) = self.channel.spec() {
            log::info!("waiting for a host peer on {}", p.display());
        } else if self.channel.waiting_for_port() {
            log::warn!(
                "{} not available yet; looking again every {} s",
                port_names(self.channel.spec()),
                PORT_RETRY.as_secs()
            );
            self.core.retry_at = Some(sys::monotonic_now() + PORT_RETRY);
        } else {
            self.port_opened();
        }
        self.rearm()
    }

    /// One poll(2) and the handling of what it reported.
    fn turn(&mut self) -> Result<(), Error> {
        let conn_fd = self.channel.conn_poll_fd();
        let conn_events = if self.core.out.is_empty() {
            POLLIN
        } else {
            POLLIN | POLLOUT
        };
        let mut extra = Vec::new();
        if let Some(c) = &self.control {
            c.poll_fds(&mut extra);
        }
        let control_end = extra.len();
        for lane in &self.core.lanes {
            extra.extend(lane.runner.poll_fds());
        }
        let mut fds = vec![
            sys::pollfd(self.signals.as_raw_fd(), POLLIN),
            sys::pollfd(self.timer.as_raw_fd(), POLLIN),
            sys::pollfd(self.channel.listen_poll_fd(), POLLIN),
            sys::pollfd(conn_fd, conn_events),
        ];
        fds.extend(extra.iter().map(|&(fd, ev)| sys::pollfd(fd, ev)));
        sys::poll(&mut fds, None).map_err(sys_err("poll"))?;

        if fds[SIGNALS].revents != 0 {
            self.on_signals();
        }
        if fds[TIMER].revents != 0 {
            self.on_timer();
        }
        if fds[LISTEN].revents != 0 {
            self.on_listen();
        }
        let rev = fds[CONN].revents;
        // Only act on the connection poll reported on: an attach above may have replaced it.
        if rev & (POLLIN | POLLHUP | POLLERR | POLLNVAL) != 0
            && conn_fd == self.channel.conn_poll_fd()
        {
            self.on_readable(rev);
        }
        for (i, p) in fds.iter().enumerate().skip(CONN + 1) {
            if p.revents == 0 {
                continue;
            }
            if i - (CONN + 1) < control_end {
                if let Some(c) = &mut self.control {
                    let core = &mut self.core;
                    c.on_ready(p.fd, p.revents, &mut |op| core.control_op(op));
                }
            } else {
                // Each runner ignores descriptors that are not its own.
                for lane in &mut self.core.lanes {
                    lane.runner.on_ready(p.fd, p.revents);
                }
            }
        }
        self.core.hooks_finished();
        self.core.run_pending_refresh();
        self.flush();
        self.rearm()
    }

    fn on_signals(&mut self) {
        let signals = match self.signals.read_all() {
            Ok(s) => s,
            Err(e) => {
                log::error!("reading the signalfd: {e}");
                return;
            }
        };
        for s in signals {
            match s {
                Signal::Term | Signal::Int => {
                    log::info!("received {s:?}, stopping");
                    self.stop = true;
                }
                Signal::Hup => {
                    if self.channel.is_attached() {
                        log::info!("SIGHUP: sending a full refresh");
                        self.core.request_refresh();
                    }
                }
                Signal::Io => {
                    if !self.channel.is_attached() {
                        self.check_virtio_host();
                    }
                }
                Signal::Child => self
                    .core
                    .lanes
                    .iter_mut()
                    .for_each(|l| l.runner.on_sigchld()),
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
        if self.core.retry_at.is_some_and(|t| t <= now) {
            self.core.retry_at = None;
            self.channel.pause_listening(false);
            if self.channel.waiting_for_port() {
                match self.channel.open_port() {
                    Ok(true) => self.port_opened(),
                    Ok(false) => self.core.retry_at = Some(now + PORT_RETRY),
                    Err(e) => {
                        self.core.health.failed("channel", &e);
                        self.core.retry_at = Some(now + PORT_RETRY);
                    }
                }
            }
        }
        for lane in &mut self.core.lanes {
            lane.runner.on_timer(now);
        }
        self.core.on_action_timers(now);
        if self.core.delivered_due.is_some_and(|d| d <= now) {
            self.core.commit_delivered();
        }
        if self.channel.is_attached() {
            self.core.run_due(now);
        }
    }

    fn on_listen(&mut self) {
        match self.channel.accept() {
            Ok(true) => self.attach(),
            Ok(false) => {}
            Err(e) => {
                // EMFILE and friends leave the listener readable: back off instead of spinning.
                log::error!(
                    "accepting a host peer on {}: {e}; pausing for {} s",
                    self.channel.spec(),
                    PORT_RETRY.as_secs()
                );
                self.channel.pause_listening(true);
                self.core.retry_at = Some(sys::monotonic_now() + PORT_RETRY);
            }
        }
    }

    /// The device just opened: a serial line is attached at once, a virtio port when its
    /// host side is connected.
    fn port_opened(&mut self) {
        self.core.health.ok("channel");
        if self.channel.is_virtio() {
            self.check_virtio_host();
        } else if self.channel.is_attached() {
            self.attach();
        }
    }

    /// A virtio port reported a state change: attach if the host side is connected now.
    fn check_virtio_host(&mut self) {
        if self.channel.is_attached() {
            return;
        }
        match self.channel.host_connected() {
            Ok(true) => {
                self.channel.set_attached();
                self.attach();
            }
            Ok(false) => log::debug!("virtio port: no host connected"),
            Err(e) => log::error!("polling the virtio port: {e}"),
        }
    }

    fn attach(&mut self) {
        log::info!("host attached on {}", self.channel.spec());
        self.reader.reset();
        self.core.attach(sys::monotonic_now());
    }

    /// The host left (`broken`: the channel failed and is closed, to be opened again).
    fn detach(&mut self, why: &str, broken: bool) {
        self.core.commit_delivered();
        let dropped = self.core.out.detach();
        self.channel.detach(broken);
        self.reader.reset();
        self.core.sched = None;
        self.core.refresh_pending = false;
        self.core.attached = false;
        log::info!("host detached ({why}); {dropped} unsent messages dropped");
        if self.channel.waiting_for_port() {
            self.core.retry_at = Some(sys::monotonic_now() + PORT_RETRY);
        } else if self.channel.is_virtio() {
            // A host that reconnected while we were still attached raised its SIGIO then;
            // look now, or that connection would go unnoticed.
            self.check_virtio_host();
        }
    }

    fn on_readable(&mut self, revents: i16) {
        let Some(conn) = self.channel.conn_mut() else {
            return;
        };
        let core = &mut self.core;
        let mut budget = READS_PER_WAKEUP;
        let mut src = Budgeted {
            inner: conn,
            left: &mut budget,
        };
        let end = self
            .reader
            .read_from(&mut src, |frame| core.on_frame(frame));
        match end {
            Ok(ReadEnd::Eof) => self.detach("end of stream", false),
            Ok(ReadEnd::WouldBlock) => {
                if budget > 0 && revents & (POLLHUP | POLLERR | POLLNVAL) != 0 {
                    // A virtio port reads 0 when its host is gone, so EAGAIN after POLLHUP
                    // means the host came back between poll and read: stay attached.
                    let back =
                        self.channel.is_virtio() && self.channel.host_connected().unwrap_or(false);
                    if !back {
                        self.detach("hang-up", false);
                    }
                }
            }
            Err(e) => self.detach(&format!("read error: {e}"), true),
        }
    }

    fn flush(&mut self) {
        if self.core.out.is_empty() {
            return;
        }
        let Some(conn) = self.channel.conn_mut() else {
            return;
        };
        let result = self.core.out.flush_to(conn);
        // Record deliveries even when the write then failed: those lines were written.
        self.core.record_delivered();
        match result {
            Ok(Flush::Empty) => {
                self.core.queue_drained();
                self.core.pump_outbox();
            }
            Ok(Flush::Pending) => {}
            Err(e) => {
                let broken = e.kind() != io::ErrorKind::BrokenPipe;
                self.detach(&format!("write error: {e}"), broken);
            }
        }
    }

    /// Arms the timer for the earliest of the next report and the next port retry.
    fn rearm(&mut self) -> Result<(), Error> {
        let report = self.core.sched.as_ref().and_then(Schedule::next_deadline);
        let want = [
            report,
            self.core.retry_at,
            self.core
                .lanes
                .iter()
                .filter_map(|l| l.runner.next_deadline())
                .min(),
            self.core.action_deadline(),
            self.core.delivered_due,
        ]
        .into_iter()
        .flatten()
        .min();
        if want != self.armed {
            self.timer
                .set_deadline(want)
                .map_err(sys_err("arming the timerfd"))?;
            self.armed = want;
        }
        Ok(())
    }

    /// Sends `session-shutdown` and gives it a moment to leave.
    fn shutdown(&mut self) {
        if self.channel.is_attached() {
            self.flush_for_exit();
        }
        // What went out is recorded before the agent exits, so it is not sent again.
        self.core.commit_delivered();
    }

    fn flush_for_exit(&mut self) {
        self.core
            .send(Message::bare("session-shutdown"), Kind::Event);
        let deadline = sys::monotonic_now() + SHUTDOWN_FLUSH;
        loop {
            self.flush();
            let now = sys::monotonic_now();
            if self.core.out.is_empty() || !self.channel.is_attached() || now >= deadline {
                break;
            }
            let mut fds = [sys::pollfd(self.channel.conn_poll_fd(), POLLOUT)];
            let gone = POLLHUP | POLLERR | POLLNVAL;
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || fds[0].revents & gone != 0 {
                break;
            }
        }
    }
}

/// A reader that allows a fixed number of reads, then reports `WouldBlock`, so one busy host
/// cannot keep the loop from its timer and signals.
struct Budgeted<'a, R> {
    inner: &'a mut R,
    left: &'a mut usize,
}

impl<R: io::Read> io::Read for Budgeted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if *self.left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        *self.left -= 1;
        self.inner.read(buf)
    }
}

fn port_names(spec: &ChannelSpec) -> String {
    match spec {
        ChannelSpec::VirtioSerial(Some(n)) => n.clone(),
        _ => channel::DEFAULT_PORT_NAMES.join(" or "),
    }
}

/// Everything but the descriptors: the protocol state, the facts state and the queue.
struct Core {
    cfg: Config,
    out: OutQueue,
    api_version: u32,
    sched: Option<Schedule>,
    /// When to look for the device again, or resume accepting after an error.
    retry_at: Option<Duration>,
    /// A refresh burst was asked for (refresh, api-version, SIGHUP); sent once per wake-up,
    /// however many requests arrived.
    refresh_pending: bool,
    /// Messages refused since the queue last drained (logged once, then summarised).
    rejected: u64,
    /// A host is attached (bursts and outbox messages may be queued).
    attached: bool,
    /// The key-value store, held under its lock for the agent's life; `None` when it could
    /// not be opened (then key-value requests are refused with `store_error`).
    store: Option<Store>,
    store_error: String,
    _store_lock: Option<StoreLock>,
    /// The highest outbox sequence number queued for the current host.
    queued_upto: u64,
    /// Hook jobs: normal and urgent lanes (see `actions::Lane`).
    lanes: [actions::Lane; 2],
    /// Outbox messages written but not yet recorded as delivered in the store, and when
    /// they will be.
    delivered_pending: Vec<u64>,
    delivered_due: Option<Duration>,

    shutdown: Option<actions::PendingShutdown>,
    power: Option<actions::Power>,
    logoff: Option<actions::PendingLogoff>,
    vmstat_prev: Option<(memory::VmStat, Duration)>,
    users: Option<Vec<String>>,
    active_user: Option<String>,
    /// Fact sources that are failing, so a missing file does not flood the log every period.
    health: Health,
}

impl Core {
    fn new(cfg: Config) -> Core {
        Core {
            cfg,
            out: OutQueue::default(),
            api_version: 0,
            sched: None,
            retry_at: None,
            refresh_pending: false,
            rejected: 0,
            attached: false,
            store: None,
            store_error: String::new(),
            _store_lock: None,
            queued_upto: 0,
            lanes: Default::default(),
            delivered_pending: Vec::new(),
            delivered_due: None,

            shutdown: None,
            power: None,
            logoff: None,
            vmstat_prev: None,
            users: None,
            active_user: None,
            health: Health::new(),
        }
    }

    fn root(&self) -> &Path {
        &self.cfg.root
    }

    /// Locks and loads the store. A store that cannot be used is not fatal: the oVirt
    /// side works without it, and key-value requests get the reason as their error.
    fn open_store(&mut self) -> Result<(), Error> {
        let dir = self.cfg.state_dir.clone();
        let deadline = sys::monotonic_now() + STORE_LOCK_WAIT;
        let lock = loop {
            match StoreLock::try_lock(&dir) {
                Ok(Some(l)) => break l,
                Ok(None) if sys::monotonic_now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    return Err(Error::Sys {
                        op: "locking the store (is another guestd using it?)",
                        source: io::Error::new(
                            io::ErrorKind::WouldBlock,
                            dir.display().to_string(),
                        ),
                    });
                }
                Err(e) => {
                    log::error!("key-value store disabled: {e}");
                    self.store_error = e.to_string();
                    return Ok(());
                }
            }
        };
        match Store::open(&dir) {
            Ok(s) => {
                log::info!(
                    "store {}: {} params, {} messages pending for the host",
                    dir.display(),
                    s.params().len(),
                    s.outbox().len()
                );
                self.store = Some(s);
                self._store_lock = Some(lock);
            }
            Err(e) => {
                log::error!("key-value store disabled: {e}");
                self.store_error = e.to_string();
            }
        }
        Ok(())
    }

    fn attach(&mut self, now: Duration) {
        self.attached = true;
        self.queued_upto = 0;
        let c = &self.cfg;
        self.sched = Some(Schedule::new(
            now,
            &[
                (Task::Heartbeat, c.heartbeat),
                (Task::Users, c.user_rate),
                (Task::Applications, c.application_rate),
                (Task::Cpus, c.cpu_rate),
                (Task::Disks, c.disk_rate),
            ],
        ));
        self.vmstat_prev = None;
        self.users = None;
        self.active_user = None;
        self.startup_burst();
        self.pump_outbox();
    }

    /// Queues outbox messages not yet queued for this host, in order, while there is room.
    fn pump_outbox(&mut self) {
        if !self.attached {
            return;
        }
        let Some(store) = &self.store else {
            return;
        };
        for p in store.outbox() {
            if p.seq <= self.queued_upto {
                continue;
            }
            if self.out.len_bytes() >= OUTBOX_WINDOW {
                break;
            }
            let mut args = p.msg.as_object().cloned().unwrap_or_default();
            let name = match args.remove("__name__") {
                Some(Value::String(n)) => n,
                _ => String::from("invalid"),
            };
            if self.out.push_durable(p.seq, ovirt::encode(&name, args)) == Push::Rejected {
                break;
            }
            self.queued_upto = p.seq;
        }
    }

    /// Notes outbox messages written to the host. The store records them at once when the
    /// outbox is then empty (the usual case: one message), otherwise at most once a second,
    /// so a long backlog does not rewrite the store for every batch. Until recorded, a crash
    /// makes them go out again: duplicated, never lost.
    fn record_delivered(&mut self) {
        self.delivered_pending.extend(self.out.take_delivered());
        let Some(&newest) = self.delivered_pending.iter().max() else {
            return;
        };
        let all = self
            .store
            .as_ref()
            .and_then(|s| s.outbox().last())
            .is_none_or(|p| p.seq <= newest);
        let now = sys::monotonic_now();
        match self.delivered_due {
            _ if all => self.commit_delivered(),
            Some(due) if now >= due => self.commit_delivered(),
            Some(_) => {}
            None => self.delivered_due = Some(now + DELIVERED_BATCH),
        }
    }

    fn commit_delivered(&mut self) {
        self.delivered_due = None;
        let seqs = std::mem::take(&mut self.delivered_pending);
        if seqs.is_empty() {
            return;
        }
        if let Some(store) = &mut self.store {
            if let Err(e) = store.delivered(&seqs) {
                log::error!("recording {} delivered messages: {e}", seqs.len());
            }
        }
    }

    /// Serves a command-line request from the control socket.
    fn control_op(&mut self, op: Op) -> Value {
        let Some(store) = &mut self.store else {
            return json!({"ok": false, "error": format!("the store is unavailable: {}", self.store_error)});
        };
        match params::apply(store, &op) {
            Ok(reply) => {
                self.pump_outbox();
                reply.response()
            }
            Err(e) => json!({"ok": false, "error": e.to_string()}),
        }
    }

    /// Logs hooks that finished (the runner logs each program's status and output).
    fn hooks_finished(&mut self) {
        // A follow-up may start a job that ends at once (a program that cannot start):
        // serve those too, or they would wait for the next wake-up.
        loop {
            let finished: Vec<(usize, String, Vec<hooks::Outcome>)> = (0..self.lanes.len())
                .flat_map(|i| {
                    let done = self.lanes[i].runner.take_finished();
                    done.into_iter().map(move |(label, o)| (i, label, o))
                })
                .collect();
            if finished.is_empty() {
                break;
            }
            for (lane, label, outcomes) in finished {
                let failed = outcomes.iter().filter(|o| !o.ok()).count();
                if failed > 0 {
                    log::warn!("{label} hooks: {failed} of {} failed", outcomes.len());
                }
                self.followup(lane, &label, outcomes);
            }
        }
    }

    fn run_due(&mut self, now: Duration) {
        let due = match &mut self.sched {
            Some(s) => s.take_due(now),
            None => return,
        };
        for task in due {
            match task {
                Task::Heartbeat => self.send_heartbeat(),
                Task::Users => self.check_users(false),
                Task::Applications => {
                    self.send_applications();
                    self.send_host_name();
                    self.send_os_version();
                    self.send_network_interfaces();
                    self.send_fqdn();
                }
                Task::Cpus => self.send_number_of_cpus(),
                Task::Disks => self.send_disks_usage(),
            }
        }
    }

    /// Queues `msg` if the negotiated version allows it (§4), logging what does not fit.
    fn send(&mut self, msg: Message, kind: Kind) {
        let min = ovirt::min_api_version(msg.name);
        if min > self.api_version {
            log::debug!(
                "not sending {}: needs API version {min}, negotiated {}",
                msg.name,
                self.api_version
            );
            return;
        }
        self.push_message(msg, kind);
    }

    /// Queues the answer to a host request, or says why it cannot go out.
    fn push_reply(&mut self, msg: Message) -> Result<(), String> {
        let bytes = msg.encode();
        if bytes.len() > ovirt::MAX_LINE {
            return Err(format!(
                "the answer is {} bytes, over the 1 MiB line limit of the channel",
                bytes.len()
            ));
        }
        match self.out.push(msg.name, Kind::Event, bytes) {
            Push::Rejected => Err("the outbound queue is full".into()),
            _ => Ok(()),
        }
    }

    /// Queues `msg` without the version gate. Nothing is queued while no host is attached
    /// (durable messages go through the store's outbox instead).
    fn push_message(&mut self, msg: Message, kind: Kind) {
        if !self.attached {
            log::debug!("no host attached: not sending {}", msg.name);
            return;
        }
        let bytes = msg.encode();
        let len = bytes.len();
        match self.out.push(msg.name, kind, bytes) {
            Push::Queued => {}
            Push::QueuedDropping(dropped) => log::warn!(
                "outbound queue full ({} bytes): dropped unsent {} to queue {}",
                self.out.len_bytes(),
                dropped.join(", "),
                msg.name
            ),
            Push::Rejected => {
                self.rejected += 1;
                if self.rejected == 1 {
                    log::error!(
                        "outbound queue full ({} bytes): {} ({len} bytes) dropped, the host is \
                         not reading; further drops are counted",
                        self.out.len_bytes(),
                        msg.name
                    );
                }
            }
        }
    }

    /// The queue emptied: report how much was refused while it was full.
    fn queue_drained(&mut self) {
        if self.rejected > 1 {
            log::warn!(
                "outbound queue drained; {} messages were dropped while it was full",
                self.rejected
            );
        }
        self.rejected = 0;
    }

    fn request_refresh(&mut self) {
        self.refresh_pending = true;
    }

    fn run_pending_refresh(&mut self) {
        if std::mem::take(&mut self.refresh_pending) {
            self.refresh_burst();
        }
    }

    fn on_frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Oversize => log::warn!(
                "discarding an inbound line longer than {} bytes",
                ovirt::MAX_LINE
            ),
            Frame::Line(line) => match ovirt::parse_command(line) {
                Ok(cmd) => self.on_command(cmd),
                Err(e) => log::debug!("skipping inbound line: {e}"),
            },
        }
    }

    fn on_command(&mut self, cmd: Command) {
        // Never log arguments: set-param values may be secrets.
        log::debug!("host command {}", cmd.name);
        // Consecutive refresh requests share one burst, but a later command is answered after
        // the burst its predecessors asked for, as the host expects.
        if !matches!(cmd.name.as_str(), "refresh" | "api-version") {
            self.run_pending_refresh();
        }
        match cmd.name.as_str() {
            "refresh" => {
                // An old host that does not say its version gets version 0 (§3).
                if !cmd.args.contains_key("apiVersion") && self.api_version > 0 {
                    log::info!("refresh without apiVersion: falling back to API version 0");
                    self.api_version = 0;
                }
                self.request_refresh();
            }
            "api-version" => match cmd.args.get("apiVersion").and_then(Value::as_i64) {
                Some(v) => {
                    let v = u32::try_from(v.clamp(0, i64::from(MAX_API_VERSION))).unwrap_or(0);
                    if v != self.api_version {
                        log::info!("API version {} -> {v}", self.api_version);
                        self.api_version = v;
                        self.request_refresh();
                    }
                }
                None => log::warn!(
                    "ignoring api-version with a non-integer apiVersion: {:?}",
                    cmd.args.get("apiVersion")
                ),
            },
            "echo" => self.send(ovirt::echo(cmd.args), Kind::Event),
            _ if self.on_action(&cmd) => {}
            "set-param" | "delete-param" | "delete-params" | "get-param" | "list-params" => {
                let result = self.host_param_command(&cmd);
                self.complete(&cmd, result);
            }
            other => log::info!("ignoring unsupported command '{other}'"),
        }
    }

    /// Answers `completion` when the command carried a `reply_id`; logs a refusal otherwise.
    fn complete(&mut self, cmd: &Command, result: Result<(), String>) {
        match cmd.args.get("reply_id").and_then(Value::as_str) {
            // A host that asks for a reply understands it, whatever the negotiated version.
            Some(id) => {
                let msg = params::completion(id, result);
                self.push_message(msg, Kind::Event);
            }
            None => {
                if let Err(e) = result {
                    log::warn!("{} refused: {e}", cmd.name);
                }
            }
        }
    }

    /// The key-value commands of the host (guestd's extension of the channel).
    fn host_param_command(&mut self, cmd: &Command) -> Result<(), String> {
        let arg = |k: &str| {
            cmd.args
                .get(k)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("missing string \"{k}\""))
        };
        let Some(store) = &mut self.store else {
            return Err(format!("the store is unavailable: {}", self.store_error));
        };
        match cmd.name.as_str() {
            "set-param" => {
                let (key, value) = (arg("key")?, arg("value")?);
                if self.lanes[actions::NORMAL].followups.len() >= MAX_PENDING_HOOK_JOBS {
                    return Err("too many hooks are pending; try again later".into());
                }
                store
                    .set(key, value, Origin::Host, true, None)
                    .map_err(|e| e.to_string())?;
                // The host's value wins over guest news about the key not yet delivered.
                store.forget_pending(Some(key)).map_err(|e| e.to_string())?;
                log::info!("host set param '{key}'");
                let job = Job {
                    label: "param".into(),
                    dir: self.cfg.hooks_dir.join("param"),
                    args: vec![key.to_owned()],
                    stdin: value.as_bytes().to_vec(),
                    redact: vec![value.as_bytes().to_vec()],
                    timeout: self.cfg.hook_timeout,
                    ends: None,
                };
                self.submit(actions::NORMAL, job, actions::Followup::Nothing);
            }
            "delete-param" => {
                // Deleting an absent key is not an error: the key is absent afterwards.
                let key = arg("key")?;
                store.delete(key, None).map_err(|e| e.to_string())?;
                store.forget_pending(Some(key)).map_err(|e| e.to_string())?;
            }
            "delete-params" => {
                store.delete_all(None).map_err(|e| e.to_string())?;
                store.forget_pending(None).map_err(|e| e.to_string())?;
            }
            "get-param" => {
                let key = arg("key")?;
                let msg = match store.get(key) {
                    Some(e) => params::param(&e.key, &e.value, e.origin),
                    None => params::param_absent(key),
                };
                self.push_reply(msg)?;
            }
            _ => {
                let msg = params::params(store.params());
                self.push_reply(msg)?;
            }
        }
        Ok(())
    }

    /// The start-up burst, in the reference order (§2.1).
    fn startup_burst(&mut self) {
        self.send(Message::bare("session-startup"), Kind::Event);
        self.send_host_name();
        self.send_os_version();
        self.send_network_interfaces();
        self.check_users(true);
        self.send_applications();
        self.send_fqdn();
        self.send_timezone();
        self.send_os_info();
    }

    /// The refresh burst, in the reference order (§2.1); no heartbeat, no number-of-cpus.
    fn refresh_burst(&mut self) {
        self.send(Message::bare("session-startup"), Kind::Event);
        self.check_users(true);
        self.send_applications();
        self.send_host_name();
        self.send_os_version();
        self.send_network_interfaces();
        self.send_disks_usage();
        self.send_fqdn();
        self.send_timezone();
        self.send_os_info();
    }

    fn send_heartbeat(&mut self) {
        let mem = match memory::read_meminfo(self.root()) {
            Ok(m) => {
                self.health.ok("meminfo");
                m
            }
            Err(e) => {
                // Still a heartbeat: it keeps the agent responsive; free-ram 0 makes VDSM
                // fall back to balloon statistics.
                self.health.failed("meminfo", &e);
                memory::MemInfo::default()
            }
        };
        let vm = match memory::read_vmstat(self.root()) {
            Ok(v) => {
                self.health.ok("vmstat");
                Some(v)
            }
            Err(e) => {
                self.health.failed("vmstat", &e);
                None
            }
        };
        let now = sys::monotonic_now();
        let cur = vm.unwrap_or_default();
        let prev = self.vmstat_prev.as_ref().map(|(v, t)| (v, *t));
        let prev = if vm.is_some() { prev } else { None };
        let stat = memory::memory_stat(&mem, prev, &cur, now);
        self.vmstat_prev = vm.map(|v| (v, now));
        // The renegotiation trick (§4 step 5): 0 until the first heartbeat has gone out.
        let api = if self.out.heartbeats_written() == 0 {
            0
        } else {
            MAX_API_VERSION
        };
        self.send(
            ovirt::heartbeat(mem.free_ram_mib(), &stat, api),
            Kind::Heartbeat,
        );
    }

    /// Sends the report `build` makes of a fact that was read, or logs why it was not.
    fn report<T>(
        &mut self,
        source: &'static str,
        read: Result<T, facts::Error>,
        build: impl FnOnce(&T) -> Message,
    ) {
        match read {
            Ok(v) => {
                self.health.ok(source);
                self.send(build(&v), Kind::Report);
            }
            Err(e) => self.health.failed(source, &e),
        }
    }

    fn send_host_name(&mut self) {
        let read = hostname::read_hostname(self.root());
        self.report("host-name", read, |h| ovirt::host_name(h));
    }

    fn send_fqdn(&mut self) {
        let read =
            hostname::read_hostname(self.root()).map(|h| hostname::read_fqdn(self.root(), &h));
        self.report("fqdn", read, |f| ovirt::fqdn(f));
    }

    fn send_os_version(&mut self) {
        let read = hostname::read_os_release_kernel(self.root());
        self.report("os-version", read, |v| ovirt::os_version(v));
    }

    fn send_os_info(&mut self) {
        if self.api_version < ovirt::min_api_version("os-info") {
            return;
        }
        let release = match osinfo::read_os_release(self.root()) {
            Ok(r) => {
                self.health.ok("os-release");
                r
            }
            Err(e) => {
                self.health.failed("os-release", &e);
                osinfo::OsRelease::default()
            }
        };
        let machine = sys::machine().unwrap_or_default();
        let info = osinfo::read_os_info(self.root(), release, &machine);
        self.send(ovirt::os_info(&info), Kind::Report);
    }

    fn send_timezone(&mut self) {
        if self.api_version < ovirt::min_api_version("timezone") {
            return;
        }
        let tz = timezone::read_timezone(self.root());
        self.send(ovirt::timezone(&tz), Kind::Report);
    }

    fn send_network_interfaces(&mut self) {
        let ifaces = match net::read_interfaces(self.root()) {
            Ok(n) => n,
            Err(e) => return self.health.failed("network-interfaces", &e),
        };
        let addrs = match sys::interface_addresses() {
            Ok(a) => {
                self.health.ok("network-interfaces");
                a
            }
            Err(e) => {
                self.health
                    .failed("network-interfaces", &format!("getifaddrs: {e}"));
                Vec::new()
            }
        };
        let list = net::attach_addresses(ifaces, &addrs, &self.cfg.ignored_nics);
        self.send(ovirt::network_interfaces(&list), Kind::Report);
    }

    fn send_applications(&mut self) {
        let read = apps::read_applications(self.root(), &self.cfg.applications);
        self.report("applications", read, |list| ovirt::applications(list));
    }

    fn send_number_of_cpus(&mut self) {
        let count = match cpus::read_online_count(self.root()) {
            Ok(n) => {
                self.health.ok("number-of-cpus");
                i64::from(n)
            }
            Err(e) => {
                self.health.failed("number-of-cpus", &e);
                -1
            }
        };
        self.send(ovirt::number_of_cpus(count), Kind::Report);
    }

    fn send_disks_usage(&mut self) {
        let list = match disks::read_filesystems(self.root(), &self.cfg.ignored_fs) {
            Ok(l) => l,
            Err(e) => return self.health.failed("disks-usage", &e),
        };
        let mapping = match disks::read_disk_serials(self.root()) {
            Ok(m) => {
                self.health.ok("disk mapping");
                m
            }
            Err(e) => {
                self.health.failed("disk mapping", &e);
                Vec::new()
            }
        };
        self.health.ok("disks-usage");
        self.send(ovirt::disks_usage(&list, &mapping), Kind::Report);
    }

    /// Reads utmp; sends `session-logon`/`session-logoff` for users who came or went since the
    /// last check, and `active-user` when it changed (or always, when `force`).
    fn check_users(&mut self, force: bool) {
        let sessions = match users::read_sessions(self.root()) {
            Ok(s) => {
                self.health.ok("users");
                users::live_sessions(self.root(), s)
            }
            Err(e) => return self.health.failed("users", &e),
        };
        let now = users::logged_in_users(&sessions);
        if let Some(before) = self.users.take() {
            for _ in now.iter().filter(|u| !before.contains(u)) {
                self.send(Message::bare("session-logon"), Kind::Event);
            }
            for _ in before.iter().filter(|u| !now.contains(u)) {
                self.send(Message::bare("session-logoff"), Kind::Event);
            }
        }
        let active = ovirt::active_user_name(&now);
        if force || self.active_user.as_deref() != Some(active.as_str()) {
            self.send(ovirt::active_user(&active), Kind::Report);
        }
        self.users = Some(now);
        self.active_user = Some(active);
    }
}
