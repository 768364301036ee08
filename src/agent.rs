// SPDX-License-Identifier: Apache-2.0
//! The agent: one single-threaded poll(2) loop over a fixed table of four descriptors: the
//! signalfd (SIGTERM, SIGINT, SIGHUP, SIGIO), the timerfd (the next scheduled report or port
//! retry), the listening socket (unix-listen only) and the host connection.
//!
//! While no host is attached nothing is collected and no timer is armed: the process sleeps
//! in poll(2) until a peer connects (listening socket) or the virtio port raises SIGIO.

use std::collections::BTreeSet;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::channel::{self, Channel, ChannelSpec};
use crate::config::Config;
use crate::facts::{self, apps, cpus, disks, hostname, memory, net, osinfo, timezone, users};
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
    let signals = SignalFd::new(&[Signal::Term, Signal::Int, Signal::Hup, Signal::Io])
        .map_err(sys_err("creating the signalfd"))?;
    let timer = TimerFd::new().map_err(sys_err("creating the timerfd"))?;
    let channel = Channel::open(&cfg.channel, &cfg.root).map_err(Error::Channel)?;
    let mut agent = Agent {
        signals,
        timer,
        armed: None,
        channel,
        reader: LineReader::default(),
        core: Core::new(cfg),
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
        let mut fds = [
            sys::pollfd(self.signals.as_raw_fd(), POLLIN),
            sys::pollfd(self.timer.as_raw_fd(), POLLIN),
            sys::pollfd(self.channel.listen_poll_fd(), POLLIN),
            sys::pollfd(conn_fd, conn_events),
        ];
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
                        self.core.fact_failed("channel", &e);
                        self.core.retry_at = Some(now + PORT_RETRY);
                    }
                }
            }
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
        self.core.fact_ok("channel");
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
        let dropped = self.core.out.detach();
        self.channel.detach(broken);
        self.reader.reset();
        self.core.sched = None;
        self.core.refresh_pending = false;
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
        match self.core.out.flush_to(conn) {
            Ok(Flush::Empty) => self.core.queue_drained(),
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
        let want = match (report, self.core.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
        if !self.channel.is_attached() {
            return;
        }
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
    vmstat_prev: Option<(memory::VmStat, Duration)>,
    users: Option<Vec<String>>,
    active_user: Option<String>,
    /// Fact sources that failed and were logged at warn level; logged at debug until they
    /// work again, so a missing file does not flood the log every period.
    failing: BTreeSet<&'static str>,
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
            vmstat_prev: None,
            users: None,
            active_user: None,
            failing: BTreeSet::new(),
        }
    }

    fn root(&self) -> &Path {
        &self.cfg.root
    }

    fn attach(&mut self, now: Duration) {
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

    /// Logs a failing fact source once at warn level, then at debug level.
    fn fact_failed(&mut self, source: &'static str, e: &dyn fmt::Display) {
        if self.failing.insert(source) {
            log::warn!("{source}: {e}");
        } else {
            log::debug!("{source}: {e}");
        }
    }

    fn fact_ok(&mut self, source: &'static str) {
        if self.failing.remove(source) {
            log::info!("{source}: readable again");
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
            "set-number-of-cpus" => match cmd.args.get("count").and_then(Value::as_i64) {
                // As the reference Linux agent: CPUs are not changed here, the current count
                // is reported.
                Some(n) if n > 0 => {
                    log::info!("set-number-of-cpus {n}: reporting the online count");
                    self.send_number_of_cpus();
                }
                other => log::warn!("ignoring set-number-of-cpus with count {other:?}"),
            },
            other => log::info!("ignoring unsupported command '{other}'"),
        }
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
                self.fact_ok("meminfo");
                m
            }
            Err(e) => {
                // Still a heartbeat: it keeps the agent responsive; free-ram 0 makes VDSM
                // fall back to balloon statistics.
                self.fact_failed("meminfo", &e);
                memory::MemInfo::default()
            }
        };
        let vm = match memory::read_vmstat(self.root()) {
            Ok(v) => {
                self.fact_ok("vmstat");
                Some(v)
            }
            Err(e) => {
                self.fact_failed("vmstat", &e);
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

    fn send_host_name(&mut self) {
        match hostname::read_hostname(self.root()) {
            Ok(h) => {
                self.fact_ok("host-name");
                self.send(ovirt::host_name(&h), Kind::Report);
            }
            Err(e) => self.fact_failed("host-name", &e),
        }
    }

    fn send_fqdn(&mut self) {
        match hostname::read_hostname(self.root()) {
            Ok(h) => {
                self.fact_ok("fqdn");
                let f = hostname::read_fqdn(self.root(), &h);
                self.send(ovirt::fqdn(&f), Kind::Report);
            }
            Err(e) => self.fact_failed("fqdn", &e),
        }
    }

    fn send_os_version(&mut self) {
        match hostname::read_os_release_kernel(self.root()) {
            Ok(v) => {
                self.fact_ok("os-version");
                self.send(ovirt::os_version(&v), Kind::Report);
            }
            Err(e) => self.fact_failed("os-version", &e),
        }
    }

    fn send_os_info(&mut self) {
        if self.api_version < ovirt::min_api_version("os-info") {
            return;
        }
        let release = match osinfo::read_os_release(self.root()) {
            Ok(r) => r,
            Err(e) => {
                self.fact_failed("os-release", &e);
                Vec::new()
            }
        };
        let kernel = hostname::read_os_release_kernel(self.root()).unwrap_or_default();
        let machine = sys::machine().unwrap_or_default();
        let info = osinfo::os_info(&release, &machine, &kernel);
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
        let names = match net::read_interface_names(self.root()) {
            Ok(n) => n,
            Err(e) => return self.fact_failed("network-interfaces", &e),
        };
        let addrs = match sys::interface_addresses() {
            Ok(a) => {
                self.fact_ok("network-interfaces");
                a
            }
            Err(e) => {
                self.fact_failed("network-interfaces", &format!("getifaddrs: {e}"));
                Vec::new()
            }
        };
        let list = net::interfaces(names, &addrs, &self.cfg.ignored_nics);
        self.send(ovirt::network_interfaces(&list), Kind::Report);
    }

    fn send_applications(&mut self) {
        match apps::read_applications(self.root(), &self.cfg.applications) {
            Ok(list) => {
                self.fact_ok("applications");
                self.send(ovirt::applications(&list), Kind::Report);
            }
            Err(e) => self.fact_failed("applications", &e),
        }
    }

    fn send_number_of_cpus(&mut self) {
        let count = match cpus::read_online_count(self.root()) {
            Ok(n) => {
                self.fact_ok("number-of-cpus");
                i64::from(n)
            }
            Err(e) => {
                self.fact_failed("number-of-cpus", &e);
                -1
            }
        };
        self.send(ovirt::number_of_cpus(count), Kind::Report);
    }

    fn send_disks_usage(&mut self) {
        let mounts = match disks::read_mountinfo(self.root()) {
            Ok(m) => m,
            Err(e) => return self.fact_failed("disks-usage", &e),
        };
        let mounts = disks::mounts_to_measure(mounts, &self.cfg.ignored_fs);
        // statvfs runs on the real mount points; with a test root there is nothing real
        // to measure, so the fixture's mount list is measured under the root too.
        let root = self.cfg.root.clone();
        let real = |p: &Path| facts::under(&root, &p.to_string_lossy());
        let list = disks::collect(&mounts, |p| sys::statvfs(&real(p)), |p| real(p).is_file());
        let mapping = match disks::read_disk_mapping(self.root()) {
            Ok(m) => m,
            Err(e) => {
                self.fact_failed("disk mapping", &e);
                Vec::new()
            }
        };
        self.fact_ok("disks-usage");
        self.send(ovirt::disks_usage(&list, &mapping), Kind::Report);
    }

    /// Reads utmp; sends `session-logon`/`session-logoff` for users who came or went since the
    /// last check, and `active-user` when it changed (or always, when `force`).
    fn check_users(&mut self, force: bool) {
        let sessions = match users::read_sessions(self.root()) {
            Ok(s) => {
                self.fact_ok("users");
                s
            }
            Err(e) => return self.fact_failed("users", &e),
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
        let active = users::active_user(&now);
        if force || self.active_user.as_deref() != Some(active.as_str()) {
            self.send(ovirt::active_user(&active), Kind::Report);
        }
        self.users = Some(now);
        self.active_user = Some(active);
    }
}
