// SPDX-License-Identifier: Apache-2.0
//! A link: one host channel with its framer, its bounded outbound queue, its attach and
//! retry state, and the protocol session served on it. The loop holds a list of links and
//! knows nothing of their protocols; a second protocol is a second entry.
//!
//! Backpressure, not drops: a link stops taking frames from its input while its queue is over
//! the high-water mark, and reads no more from the channel while frames are buffered, so a
//! host that sends faster than it reads is slowed down instead of losing replies.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::channel::{self, Channel, ChannelSpec};
use crate::proto::queue::{Flush, Kind, OutQueue, Push};
use crate::proto::{Fill, Frame, Framer};
use crate::services::{LinkId, Notice, Services};
use crate::sys::{self, POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT};

/// How often a missing device is looked for again, or accepting resumes after an error.
pub const RETRY: Duration = Duration::from_secs(3);
/// Reads served per wake-up before the loop looks at its other descriptors again.
const READS_PER_WAKEUP: usize = 64;

/// A protocol served on a link. The link calls it only with its own queue; shared state
/// comes in `Services`.
pub trait Session {
    /// The protocol's name, for logs.
    fn protocol(&self) -> &'static str;
    /// The virtio port names a bare `virtio-serial` channel looks for, in order.
    fn port_names(&self) -> &'static [&'static str];
    /// A fresh framer for this protocol's inbound stream.
    fn framer(&self) -> Box<dyn Framer>;
    /// A host attached: start the session (start-up burst, schedule).
    fn attach(&mut self, now: Duration, out: &mut Outbound<'_>, svc: &mut Services);
    /// The host left; the queue was already emptied.
    fn detach(&mut self);
    /// One inbound frame.
    fn frame(&mut self, frame: Frame<'_>, out: &mut Outbound<'_>, svc: &mut Services);
    /// The timer fired; called while attached.
    fn timer(&mut self, now: Duration, out: &mut Outbound<'_>, svc: &mut Services);
    /// The session's next deadline while attached.
    fn deadline(&self) -> Option<Duration>;
    /// End of a loop turn: deferred work (a refresh burst, outbox messages to queue).
    fn end_of_turn(&mut self, out: &mut Outbound<'_>, svc: &mut Services);
    /// SIGHUP: send everything again.
    fn refresh(&mut self);
    /// Work this link asked for ended.
    fn notice(&mut self, notice: Notice, out: &mut Outbound<'_>, svc: &mut Services);
    /// The agent is stopping: say goodbye.
    fn stopping(&mut self, out: &mut Outbound<'_>);
    /// Whether the session takes another frame now: false while a request's answer is
    /// pending, so the link reads no more input until it is sent.
    fn accepts_frames(&self) -> bool {
        true
    }
}

/// The outbound side of a link, as its session sees it for one call: the link's queue, and
/// whether a host is there to receive (the channel's attach state, the only one there is).
#[derive(Debug)]
pub struct Outbound<'a> {
    queue: &'a mut OutQueue,
    /// Messages refused since the queue last drained (logged once, then summarised).
    rejected: &'a mut u64,
    attached: bool,
}

impl<'a> Outbound<'a> {
    /// A view of `queue` for a link whose host is (or is not) `attached`; `rejected` counts
    /// refusals since the queue last drained.
    pub fn new(queue: &'a mut OutQueue, rejected: &'a mut u64, attached: bool) -> Outbound<'a> {
        Outbound {
            queue,
            rejected,
            attached,
        }
    }

    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// Heartbeats written completely to this link.
    pub fn heartbeats_written(&self) -> u64 {
        self.queue.heartbeats_written()
    }

    /// Queued bytes.
    pub fn len_bytes(&self) -> usize {
        self.queue.len_bytes()
    }

    /// Queues an encoded message, logging what the queue had to drop or refuse; false when
    /// it was refused. Nothing is queued while no host is attached (durable messages come
    /// from the store instead).
    pub fn push(&mut self, name: &'static str, kind: Kind, bytes: Vec<u8>) -> bool {
        if !self.attached {
            log::debug!("no host attached: not sending {name}");
            return true;
        }
        let len = bytes.len();
        match self.queue.push(name, kind, bytes) {
            Push::Queued => true,
            Push::QueuedDropping(dropped) => {
                log::warn!(
                    "outbound queue full ({} bytes): dropped unsent {} to queue {name}",
                    self.queue.len_bytes(),
                    dropped.join(", "),
                );
                true
            }
            Push::Rejected => {
                *self.rejected += 1;
                if *self.rejected == 1 {
                    log::error!(
                        "outbound queue full ({} bytes): {name} ({len} bytes) dropped, the \
                         host is not reading; further drops are counted",
                        self.queue.len_bytes(),
                    );
                }
                false
            }
        }
    }

    /// Queues a durable message (an outbox entry); false when the queue refused it.
    pub fn push_durable(&mut self, seq: u64, bytes: Vec<u8>) -> bool {
        self.attached && self.queue.push_durable(seq, bytes) != Push::Rejected
    }
}

/// The queue emptied: report how much was refused while it was full.
fn drained(rejected: &mut u64) {
    if *rejected > 1 {
        log::warn!(
            "outbound queue drained; {} messages were dropped while it was full",
            rejected
        );
    }
    *rejected = 0;
}

/// The session's view of a link's queue, built from disjoint fields so the framer can stay
/// borrowed meanwhile.
macro_rules! outbound {
    ($link:ident) => {
        Outbound::new(
            &mut $link.queue,
            &mut $link.rejected,
            $link.channel.is_attached() && !$link.hung_up,
        )
    };
}

/// A channel, its framer and queue, and the session served on it.
pub struct Link {
    id: LinkId,
    channel: Channel,
    framer: Box<dyn Framer>,
    queue: OutQueue,
    /// Messages the queue refused since it last drained.
    rejected: u64,
    /// A socket peer can no longer receive (it hung up, or a write found it gone) but may
    /// still have input to read: that input is still carried out, with nothing queued for
    /// it, until end of file. (A virtio port is never in this state: see `on_conn`.)
    hung_up: bool,
    /// When to look for the device again, or resume accepting after an error.
    retry_at: Option<Duration>,
    session: Box<dyn Session>,
}

impl Link {
    /// Opens the channel `spec` for `session`. Only a socket that cannot be bound is fatal.
    pub fn open(
        id: LinkId,
        spec: &ChannelSpec,
        root: &std::path::Path,
        session: Box<dyn Session>,
    ) -> Result<Link, channel::Error> {
        let channel = Channel::open(spec, root, session.port_names())?;
        Ok(Link {
            id,
            channel,
            framer: session.framer(),
            queue: OutQueue::default(),
            rejected: 0,
            hung_up: false,
            retry_at: None,
            session,
        })
    }

    pub fn id(&self) -> LinkId {
        self.id
    }

    pub fn is_attached(&self) -> bool {
        self.channel.is_attached()
    }

    /// The session's deferred work (a burst, outbox messages to queue).
    fn session_turn(&mut self, svc: &mut Services) {
        let (session, mut out) = self.parts();
        session.end_of_turn(&mut out, svc);
    }

    /// The session and its view of the queue, for one call.
    fn parts(&mut self) -> (&mut dyn Session, Outbound<'_>) {
        let out = outbound!(self);
        (self.session.as_mut(), out)
    }

    /// Logs what the link waits for and attaches what is already there.
    pub fn start(&mut self, svc: &mut Services) {
        let (proto, spec) = (self.session.protocol(), self.channel.spec());
        log::info!("{proto} channel {spec}");
        if self.channel.is_listening() {
            log::info!("waiting for a host peer on {spec}");
        } else if self.channel.waiting_for_port() {
            log::warn!(
                "{} not available yet; looking again every {} s",
                self.channel.port_names(),
                RETRY.as_secs()
            );
            self.retry_at = Some(sys::monotonic_now() + RETRY);
        } else {
            self.port_opened(svc);
        }
    }

    /// The listening socket to poll, while the link accepts a host.
    pub fn listen_fd(&self) -> Option<RawFd> {
        self.channel.listen_fd()
    }

    /// The connection to poll and for what: input while the link takes more, output while
    /// its queue holds something. None while detached (a virtio port then waits for SIGIO).
    pub fn conn_poll(&self) -> Option<(RawFd, i16)> {
        let fd = self.channel.conn_fd()?;
        if self.hung_up {
            // Nothing goes out any more; input is read on to its end.
            return Some((fd, POLLIN));
        }
        let mut ev = 0;
        if !self.throttled() && !self.framer.has_input() && self.session.accepts_frames() {
            ev |= POLLIN;
        }
        if !self.queue.is_empty() {
            ev |= POLLOUT;
        }
        Some((fd, ev))
    }

    /// Frames are buffered and could be served now: the loop must not sleep.
    pub fn has_work(&self) -> bool {
        self.channel.is_attached()
            && self.framer.has_input()
            && !self.throttled()
            && self.session.accepts_frames()
    }

    fn throttled(&self) -> bool {
        self.queue.over_high_water()
    }

    /// The next deadline: a retry, or the session's while attached.
    pub fn deadline(&self) -> Option<Duration> {
        let session = self.session.deadline().filter(|_| self.is_attached());
        self.retry_at.into_iter().chain(session).min()
    }

    pub fn on_timer(&mut self, now: Duration, svc: &mut Services) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
            self.channel.pause_listening(false);
            if self.channel.waiting_for_port() {
                match self.channel.open_port() {
                    Ok(true) => self.port_opened(svc),
                    Ok(false) => self.retry_at = Some(now + RETRY),
                    Err(e) => {
                        svc.health.failed("channel", &e);
                        self.retry_at = Some(now + RETRY);
                    }
                }
            }
        }
        if self.is_attached() {
            let (session, mut out) = self.parts();
            session.timer(now, &mut out, svc);
        }
    }

    pub fn on_listen(&mut self, svc: &mut Services) {
        match self.channel.accept() {
            Ok(true) => self.attach(svc),
            Ok(false) => {}
            Err(e) => {
                // EMFILE and friends leave the listener readable: back off instead of spinning.
                log::error!(
                    "accepting a host peer on {}: {e}; pausing for {} s",
                    self.channel.spec(),
                    RETRY.as_secs()
                );
                self.channel.pause_listening(true);
                self.retry_at = Some(sys::monotonic_now() + RETRY);
            }
        }
    }

    /// A SIGIO arrived for this link's port (or for a port unknown): attach if a host is
    /// connected now.
    pub fn on_sigio(&mut self, fd: Option<RawFd>, svc: &mut Services) {
        if !self.channel.awaits_sigio() {
            return;
        }
        if fd.is_some_and(|fd| Some(fd) != self.channel.port_fd()) {
            return;
        }
        self.check_virtio_host(svc);
    }

    /// The device just opened: a serial line is attached at once, a virtio port when its
    /// host side is connected.
    fn port_opened(&mut self, svc: &mut Services) {
        svc.health.ok("channel");
        if self.channel.is_virtio() {
            self.check_virtio_host(svc);
        } else if self.channel.is_attached() {
            self.attach(svc);
        }
    }

    /// A virtio port reported a state change: attach if the host side is connected now.
    fn check_virtio_host(&mut self, svc: &mut Services) {
        if self.channel.is_attached() {
            return;
        }
        match self.channel.host_connected() {
            Ok(true) => {
                self.channel.set_attached();
                self.attach(svc);
            }
            Ok(false) => log::debug!("virtio port: no host connected"),
            Err(e) => log::error!("polling the virtio port: {e}"),
        }
    }

    fn attach(&mut self, svc: &mut Services) {
        log::info!("host attached on {}", self.channel.spec());
        self.framer.reset();
        let (session, mut out) = self.parts();
        session.attach(sys::monotonic_now(), &mut out, svc);
    }

    /// The host left (`broken`: the channel failed and is closed, to be opened again).
    fn detach(&mut self, why: &str, broken: bool, svc: &mut Services) {
        svc.store.commit_delivered();
        self.hung_up = false;
        let dropped = self.queue.detach();
        self.rejected = 0;
        self.channel.detach(broken);
        self.framer.reset();
        self.session.detach();
        log::info!("host detached ({why}); {dropped} unsent messages dropped");
        if self.channel.waiting_for_port() {
            self.retry_at = Some(sys::monotonic_now() + RETRY);
        } else if self.channel.is_virtio() {
            // A host that reconnected while we were still attached raised no signal (the
            // port's O_ASYNC is off while attached): look now, or it would go unnoticed.
            self.check_virtio_host(svc);
        }
    }

    /// Serves buffered frames while the queue has room (all of them when `all`: the host has
    /// gone, and what it sent is still carried out) and the session takes them; true when it
    /// stopped with frames left (the queue is over its high-water mark, or the session waits
    /// for a request's answer).
    fn serve(&mut self, all: bool, svc: &mut Services) -> bool {
        loop {
            if (!all && self.throttled()) || !self.session.accepts_frames() {
                return true;
            }
            match self.framer.next_frame() {
                Some(frame) => {
                    let mut out = outbound!(self);
                    self.session.frame(frame, &mut out, svc);
                }
                None => return false,
            }
        }
    }

    /// poll(2) reported `revents` on the connection `fd`.
    pub fn on_conn(&mut self, fd: RawFd, revents: i16, svc: &mut Services) {
        // An attach or detach earlier in this turn may have replaced the connection.
        if self.channel.conn_fd() != Some(fd) {
            return;
        }
        // A host that hung up still has what it sent before carried out (a set-param, say),
        // whatever the queue holds: read on to the end of its input.
        let gone = revents & (POLLHUP | POLLERR | POLLNVAL) != 0;
        if revents & POLLIN == 0 && !gone {
            return;
        }
        // A socket peer that hung up is gone for good: nothing more is queued for it. A virtio
        // port may have a new host by the time its input is read (QEMU hands the port from
        // one client to the next), so its answers keep going to the queue; end of file (no
        // host and no data) detaches, and the queue goes with it.
        if !self.channel.is_virtio() {
            self.hung_up |= gone;
        }
        let all = gone || self.hung_up;
        if all && !self.session.accepts_frames() && !self.host_back() {
            // The host left while its request runs: nothing it sent later can be answered in
            // order, and reading on would only buffer it.
            return self.detach(
                "hang-up while a request runs; its later input dropped",
                false,
                svc,
            );
        }
        let mut drained = false;
        for _ in 0..READS_PER_WAKEUP {
            if self.serve(all, svc) {
                break;
            }
            let Some(conn) = self.channel.conn_mut() else {
                return;
            };
            match self.framer.fill_from(conn) {
                Ok(Fill::Data(_)) => {}
                Ok(Fill::WouldBlock) => {
                    drained = true;
                    break;
                }
                Ok(Fill::Eof) => {
                    self.serve(true, svc);
                    return self.detach("end of stream", false, svc);
                }
                Err(e) => {
                    self.serve(true, svc);
                    return self.detach(&format!("read error: {e}"), true, svc);
                }
            }
        }
        self.serve(all, svc);
        if gone && drained {
            // A virtio port reads 0 when its host is gone, so EAGAIN after POLLHUP means the
            // host came back between poll and read: stay attached.
            if !self.host_back() {
                self.detach("hang-up", false, svc);
            }
        }
    }

    /// After a hang-up: whether a host is connected again (QEMU hands a virtio port from one
    /// client to the next, so a POLLHUP may be over by the time it is handled).
    fn host_back(&self) -> bool {
        !self.hung_up && self.channel.is_virtio() && self.channel.host_connected().unwrap_or(false)
    }

    /// End of a turn: deferred session work, buffered frames the queue has room for now,
    /// and a flush.
    pub fn end_of_turn(&mut self, svc: &mut Services) {
        if !self.is_attached() || self.hung_up {
            return;
        }
        self.session_turn(svc);
        self.flush(svc);
        if self.is_attached() && self.framer.has_input() && !self.serve(false, svc) {
            self.session_turn(svc);
            self.flush(svc);
        }
    }

    fn flush(&mut self, svc: &mut Services) {
        if self.queue.is_empty() || self.hung_up {
            return;
        }
        let Some(conn) = self.channel.conn_mut() else {
            return;
        };
        let result = self.queue.flush_to(conn);
        // Record deliveries even when the write then failed: those lines were written.
        svc.store.delivered(self.queue.take_delivered());
        match result {
            Ok(Flush::Empty) => {
                drained(&mut self.rejected);
                // Room again: the outbox may have more for this host.
                self.session_turn(svc);
            }
            Ok(Flush::Pending) => {}
            // The peer is gone, but its last commands may still be unread: stop writing and
            // read on to the end of its input (`on_conn` detaches there).
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                log::debug!("write error: {e}; reading the host's last input");
                self.hung_up = true;
            }
            Err(e) => self.detach(&format!("write error: {e}"), true, svc),
        }
    }

    /// SIGHUP.
    pub fn refresh(&mut self) {
        if self.is_attached() {
            log::info!("SIGHUP: sending a full refresh");
            self.session.refresh();
        }
    }

    pub fn notice(&mut self, notice: Notice, svc: &mut Services) {
        let (session, mut out) = self.parts();
        session.notice(notice, &mut out, svc);
    }

    /// The agent stops: the session says goodbye, and the link gives it `within` to leave.
    pub fn stop(&mut self, within: Duration, svc: &mut Services) {
        if !self.is_attached() {
            return;
        }
        let (session, mut out) = self.parts();
        session.stopping(&mut out);
        let deadline = sys::monotonic_now() + within;
        loop {
            self.flush(svc);
            let now = sys::monotonic_now();
            if self.queue.is_empty() || !self.is_attached() || now >= deadline {
                break;
            }
            let Some(fd) = self.channel.conn_fd() else {
                break;
            };
            let mut fds = [sys::pollfd(fd, POLLOUT)];
            let gone = POLLHUP | POLLERR | POLLNVAL;
            if sys::poll(&mut fds, Some(deadline - now)).is_err() || fds[0].revents & gone != 0 {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests;
