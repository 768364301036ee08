// SPDX-License-Identifier: Apache-2.0
//! The bounded outbound queue of one link. Writes to the host never block the loop: what the
//! channel does not take now stays queued, and the loop asks for `POLLOUT`. When the queue is
//! full, queued heartbeats coalesce to the newest one and reports make room, oldest first.
//! Replies are never dropped: the link stops reading input while the queue is over its
//! high-water mark, so replies can only add what one inbound frame asks for. Every operation
//! is O(1) amortised: superseded and dropped items are marked dead in place and skipped when
//! they reach the head.

use std::collections::VecDeque;
use std::io::{self, Write};

/// Default bound on queued bytes of reports, heartbeats and durable messages.
pub const DEFAULT_CAPACITY: usize = 1024 * 1024;
/// Above this many queued bytes the link reads no more input until the queue drains.
pub const HIGH_WATER: usize = 256 * 1024;
/// Replies and events may use this much beyond the capacity: the room the backpressure above
/// leaves for the answer to one inbound frame.
pub const EVENT_ALLOWANCE: usize = 8 * 1024 * 1024;

/// How a queued message behaves when the queue is full or the host goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A heartbeat: a newer one supersedes every queued one when space runs out.
    Heartbeat,
    /// A report of current state (facts): a newer report of the same name supersedes a
    /// queued one, and all are dropped when the host detaches, because the next attach sends
    /// a fresh burst.
    Report,
    /// A reply or a notification (`echo`, `completion`, `session-logon`): never superseded
    /// or dropped to make room; dropped when the host detaches (it concerned that host's
    /// session).
    Event,
    /// A message that must reach the host eventually: never dropped to make room (a full
    /// queue refuses it instead). Its source of truth is the store's outbox, which re-queues
    /// it after a detach; `take_delivered` reports when it has been written.
    Durable,
}

#[derive(Debug)]
struct Item {
    name: &'static str,
    kind: Kind,
    bytes: Vec<u8>,
    /// The outbox sequence number of a durable message.
    seq: Option<u64>,
    /// False once superseded or dropped: skipped when it reaches the head.
    live: bool,
}

/// The result of offering a message to the queue.
#[derive(Debug, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued after dropping older messages to make room (named, for the log).
    QueuedDropping(Vec<&'static str>),
    /// Not queued: the queue is full of messages that may not be dropped.
    Rejected,
}

/// The result of a flush.
#[derive(Debug, PartialEq, Eq)]
pub enum Flush {
    /// Everything was written.
    Empty,
    /// The channel would block; the rest stays queued.
    Pending,
}

/// A byte-bounded FIFO of encoded messages with a partially written head. Items are named by
/// ids that grow by one per push; `items[0]` has id `base`.
#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Item>,
    base: u64,
    /// Bytes of live items.
    bytes: usize,
    capacity: usize,
    /// Bytes of the head item already written.
    head_written: usize,
    heartbeats_written: u64,
    /// Outbox sequence numbers of durable messages written completely.
    delivered: Vec<u64>,
    /// Ids of queued heartbeats and reports, oldest first (some may be dead or gone).
    heartbeats: VecDeque<u64>,
    reports: VecDeque<u64>,
    /// The id of the newest queued report of each name (a handful of names: a list).
    latest: Vec<(&'static str, u64)>,
    /// Dead items still in `items`: compacted away when they outnumber the live ones, so a
    /// head the host never reads cannot make them pile up.
    dead: usize,
}

impl Default for OutQueue {
    fn default() -> Self {
        OutQueue::new(DEFAULT_CAPACITY)
    }
}

impl OutQueue {
    pub fn new(capacity: usize) -> OutQueue {
        OutQueue {
            items: VecDeque::new(),
            base: 0,
            bytes: 0,
            capacity,
            head_written: 0,
            heartbeats_written: 0,
            delivered: Vec::new(),
            heartbeats: VecDeque::new(),
            reports: VecDeque::new(),
            latest: Vec::new(),
            dead: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Bytes currently queued.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Whether the link should stop reading input until the queue drains.
    pub fn over_high_water(&self) -> bool {
        self.bytes >= HIGH_WATER.min(self.capacity)
    }

    /// Heartbeats written completely since the queue was created.
    pub fn heartbeats_written(&self) -> u64 {
        self.heartbeats_written
    }

    /// Marks item `id` dead unless it is gone or is the partially written head; returns its
    /// name when it was live.
    fn kill(&mut self, id: u64) -> Option<&'static str> {
        let idx = usize::try_from(id.checked_sub(self.base)?).ok()?;
        if idx == 0 && self.head_written > 0 {
            return None;
        }
        let it = self.items.get_mut(idx).filter(|it| it.live)?;
        it.live = false;
        self.bytes -= it.bytes.len();
        it.bytes = Vec::new();
        self.dead += 1;
        Some(it.name)
    }

    /// Drops dead items once they outnumber the live ones (O(n) after at least n/2 kills:
    /// amortised O(1)), renumbering the live ones from `base` and rebuilding the indexes.
    fn compact(&mut self) {
        if self.dead <= 64 || self.dead <= self.items.len() - self.dead {
            return;
        }
        self.items.retain(|it| it.live);
        self.dead = 0;
        self.heartbeats.clear();
        self.reports.clear();
        self.latest.clear();
        for (i, it) in self.items.iter().enumerate() {
            let id = self.base + i as u64;
            match it.kind {
                Kind::Heartbeat => self.heartbeats.push_back(id),
                Kind::Report => {
                    self.reports.push_back(id);
                    match self.latest.iter_mut().find(|(n, _)| *n == it.name) {
                        Some(entry) => entry.1 = id,
                        None => self.latest.push((it.name, id)),
                    }
                }
                Kind::Event | Kind::Durable => {}
            }
        }
    }

    /// Queues a durable message from the outbox, tagged with its sequence number.
    pub fn push_durable(&mut self, seq: u64, bytes: Vec<u8>) -> Push {
        let r = self.push("outbox", Kind::Durable, bytes);
        if r != Push::Rejected {
            if let Some(last) = self.items.back_mut() {
                last.seq = Some(seq);
            }
        }
        r
    }

    /// Sequence numbers of durable messages written completely since the last call.
    pub fn take_delivered(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.delivered)
    }

    /// Queues one encoded message.
    pub fn push(&mut self, name: &'static str, kind: Kind, bytes: Vec<u8>) -> Push {
        self.compact();
        let id = self.base + self.items.len() as u64;
        // A newer report of the same fact makes a queued, unsent one stale.
        if kind == Kind::Report {
            match self.latest.iter_mut().find(|(n, _)| *n == name) {
                Some(entry) => {
                    let old = std::mem::replace(&mut entry.1, id);
                    self.kill(old);
                }
                None => self.latest.push((name, id)),
            }
        }
        let len = bytes.len();
        let mut dropped = Vec::new();
        if self.bytes + len > self.capacity {
            while let Some(h) = self.heartbeats.pop_front() {
                dropped.extend(self.kill(h));
            }
        }
        if self.bytes + len > self.capacity && kind != Kind::Heartbeat {
            // Make room by dropping reports, oldest first, but only for a message that is
            // worth at least as much.
            while self.bytes + len > self.capacity {
                let Some(r) = self.reports.pop_front() else {
                    break;
                };
                dropped.extend(self.kill(r));
            }
        }
        let limit = match kind {
            Kind::Event => self.capacity + EVENT_ALLOWANCE,
            _ => self.capacity,
        };
        if self.bytes + len > limit {
            if kind == Kind::Report {
                self.latest.retain(|&(n, i)| n != name || i != id);
            }
            return Push::Rejected;
        }
        self.bytes += len;
        match kind {
            Kind::Heartbeat => self.heartbeats.push_back(id),
            Kind::Report => self.reports.push_back(id),
            Kind::Event | Kind::Durable => {}
        }
        self.items.push_back(Item {
            name,
            kind,
            bytes,
            seq: None,
            live: true,
        });
        if dropped.is_empty() {
            Push::Queued
        } else {
            Push::QueuedDropping(dropped)
        }
    }

    /// Removes the head item (written or dead) and forgets ids that are gone.
    fn pop_head(&mut self) {
        if self.items.pop_front().is_some_and(|it| !it.live) {
            self.dead -= 1;
        }
        self.base += 1;
        self.head_written = 0;
        while self.heartbeats.front().is_some_and(|&h| h < self.base) {
            self.heartbeats.pop_front();
        }
        while self.reports.front().is_some_and(|&r| r < self.base) {
            self.reports.pop_front();
        }
    }

    /// Writes queued bytes to `w` until it would block or the queue is empty.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<Flush> {
        while let Some(head) = self.items.front() {
            if !head.live {
                self.pop_head();
                continue;
            }
            match w.write(&head.bytes[self.head_written..]) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.head_written += n;
                    if self.head_written == head.bytes.len() {
                        if head.kind == Kind::Heartbeat {
                            self.heartbeats_written += 1;
                        }
                        if let Some(seq) = head.seq {
                            self.delivered.push(seq);
                        }
                        self.bytes -= head.bytes.len();
                        self.pop_head();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Pending),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        // Release the memory a burst may have needed.
        if self.items.capacity() > 64 {
            self.items.shrink_to(16);
        }
        self.latest.clear();
        Ok(Flush::Empty)
    }

    /// The host went away: everything queued is dropped (returned: how many). Reports and
    /// heartbeats are superseded by the next attach's burst; durable messages stay in the
    /// store's outbox and are queued again, whole, on the next attach, since the new host
    /// starts reading at a line boundary.
    pub fn detach(&mut self) -> usize {
        let n = self.items.iter().filter(|it| it.live).count();
        self.base += self.items.len() as u64;
        self.items.clear();
        self.heartbeats.clear();
        self.reports.clear();
        self.latest.clear();
        self.dead = 0;
        self.bytes = 0;
        self.head_written = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts `budget` bytes, then would block.
    struct Choke {
        out: Vec<u8>,
        budget: usize,
    }

    impl Write for Choke {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(tag: &str, len: usize) -> Vec<u8> {
        let mut v = tag.as_bytes().to_vec();
        v.resize(len - 1, b'.');
        v.push(b'\n');
        v
    }

    #[test]
    fn partial_writes_resume_where_they_stopped() {
        let mut q = OutQueue::new(1000);
        q.push("a", Kind::Report, line("a", 10));
        q.push("b", Kind::Report, line("b", 10));
        let mut w = Choke {
            out: Vec::new(),
            budget: 15,
        };
        assert_eq!(q.flush_to(&mut w).unwrap(), Flush::Pending);
        assert_eq!(q.len_bytes(), 10);
        w.budget = 100;
        assert_eq!(q.flush_to(&mut w).unwrap(), Flush::Empty);
        assert_eq!(w.out, [line("a", 10), line("b", 10)].concat());
        assert_eq!(q.len_bytes(), 0);
    }

    #[test]
    fn full_queue_coalesces_heartbeats_to_the_newest() {
        let mut q = OutQueue::new(100);
        for i in 0..5 {
            assert_eq!(
                q.push("heartbeat", Kind::Heartbeat, line(&i.to_string(), 20)),
                Push::Queued
            );
        }
        // Full: the sixth heartbeat replaces all five queued ones.
        assert_eq!(
            q.push("heartbeat", Kind::Heartbeat, line("5", 20)),
            Push::QueuedDropping(vec!["heartbeat"; 5])
        );
        assert_eq!(q.len_bytes(), 20);
        let mut w = Choke {
            out: Vec::new(),
            budget: 1000,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, line("5", 20));
        assert_eq!(q.heartbeats_written(), 1);
    }

    #[test]
    fn newer_report_supersedes_a_queued_one_of_the_same_name() {
        let mut q = OutQueue::new(1000);
        q.push("host-name", Kind::Report, line("old", 10));
        q.push("fqdn", Kind::Report, line("f", 10));
        q.push("host-name", Kind::Report, line("new", 10));
        let mut w = Choke {
            out: Vec::new(),
            budget: 1000,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, [line("f", 10), line("new", 10)].concat());
    }

    #[test]
    fn durable_messages_are_never_dropped_silently() {
        let mut q = OutQueue::new(30);
        assert_eq!(q.push("k1", Kind::Durable, line("1", 15)), Push::Queued);
        assert_eq!(q.push("r", Kind::Report, line("r", 15)), Push::Queued);
        // Room for a durable message is made by dropping the report, and said so.
        assert_eq!(
            q.push("k2", Kind::Durable, line("2", 15)),
            Push::QueuedDropping(vec!["r"])
        );
        // No report left to drop: the new message is refused, the queued ones stay.
        assert_eq!(q.push("k3", Kind::Durable, line("3", 15)), Push::Rejected);
        assert_eq!(q.push("h", Kind::Heartbeat, line("h", 15)), Push::Rejected);
        assert_eq!(q.len_bytes(), 30);
    }

    #[test]
    fn durable_messages_report_delivery_only_when_written_whole() {
        let mut q = OutQueue::new(1000);
        q.push_durable(7, line("k", 10));
        q.push("h", Kind::Heartbeat, line("h", 10));
        q.push_durable(8, line("m", 10));
        let mut w = Choke {
            out: Vec::new(),
            budget: 25,
        };
        assert_eq!(q.flush_to(&mut w).unwrap(), Flush::Pending);
        assert_eq!(q.take_delivered(), vec![7]);
        assert_eq!(q.take_delivered(), Vec::<u64>::new());
        // Detached with seq 8 half written: not delivered, and the queue is empty.
        assert_eq!(q.detach(), 1);
        assert_eq!(q.len_bytes(), 0);
        assert!(q.take_delivered().is_empty());
    }

    #[test]
    fn broken_pipe_is_an_error_and_keeps_the_data() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut q = OutQueue::new(1000);
        q.push("k", Kind::Durable, line("k", 10));
        assert!(q.flush_to(&mut Broken).is_err());
        assert_eq!(q.len_bytes(), 10);
    }

    #[test]
    fn events_are_not_refused_where_reports_would_be_and_stay_bounded() {
        let mut q = OutQueue::new(100);
        assert_eq!(q.push("r", Kind::Report, line("r", 100)), Push::Queued);
        assert!(q.over_high_water());
        // A reply makes room by dropping reports, as any message does, and is not refused at
        // the capacity...
        assert_eq!(
            q.push("echo", Kind::Event, line("e", 50)),
            Push::QueuedDropping(vec!["r"])
        );
        assert_eq!(q.push("echo", Kind::Event, line("e", 90)), Push::Queued);
        assert_eq!(q.len_bytes(), 140);
        // ... only beyond the allowance that backpressure keeps it far from.
        let big = line("b", EVENT_ALLOWANCE);
        assert_eq!(q.push("echo", Kind::Event, big), Push::Rejected);
        let mut w = Choke {
            out: Vec::new(),
            budget: 1000,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, [line("e", 50), line("e", 90)].concat());
        assert!(!q.over_high_water());
    }

    #[test]
    fn superseded_reports_leave_no_trace_and_ids_survive_detach() {
        let mut q = OutQueue::new(1 << 20);
        for i in 0..100_000 {
            q.push("fact", Kind::Report, line(&format!("{i}"), 16));
        }
        assert_eq!(q.len_bytes(), 16);
        let mut w = Choke {
            out: Vec::new(),
            budget: usize::MAX,
        };
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, line("99999", 16));
        // After a detach the same names queue afresh.
        q.push("fact", Kind::Report, line("x", 16));
        assert_eq!(q.detach(), 1);
        q.push("fact", Kind::Report, line("y", 16));
        q.push("hb", Kind::Heartbeat, line("h", 16));
        w.out.clear();
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, [line("y", 16), line("h", 16)].concat());
    }

    #[test]
    fn a_partially_written_head_is_never_dropped() {
        let mut q = OutQueue::new(30);
        q.push("r", Kind::Report, line("r", 20));
        let mut w = Choke {
            out: Vec::new(),
            budget: 5,
        };
        assert_eq!(q.flush_to(&mut w).unwrap(), Flush::Pending);
        // A newer report of the same name cannot supersede bytes already on the wire.
        q.push("r", Kind::Report, line("s", 10));
        w.budget = 100;
        q.flush_to(&mut w).unwrap();
        assert_eq!(w.out, [line("r", 20), line("s", 10)].concat());
    }

    #[test]
    fn superseded_items_behind_a_stuck_head_do_not_pile_up() {
        let mut q = OutQueue::new(1 << 20);
        q.push("head", Kind::Event, line("h", 100));
        let mut w = Choke {
            out: Vec::new(),
            budget: 10,
        };
        assert_eq!(q.flush_to(&mut w).unwrap(), Flush::Pending);
        // The host never reads again: months of reports, each superseding the last.
        for i in 0..100_000 {
            q.push("fact", Kind::Report, line(&format!("r{i}"), 20));
            q.push("other", Kind::Report, line(&format!("o{i}"), 20));
        }
        // The head, two live reports, and at most as many dead ones plus the slack.
        assert!(q.items.len() <= 3 + 3 + 65, "{} items kept", q.items.len());
        // The newest report is still the one queued, and everything is written in order.
        w.budget = usize::MAX;
        q.flush_to(&mut w).unwrap();
        let text = String::from_utf8(w.out).unwrap();
        assert!(text.contains("r99999"), "{text:.200}");
        assert!(!text.contains("r99998"));
        assert!(q.is_empty() && q.dead == 0);
    }
}
