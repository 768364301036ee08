// SPDX-License-Identifier: Apache-2.0
//! The bounded outbound queue. Writes to the host never block the loop: what the channel does
//! not take now stays queued, and the loop asks for `POLLOUT`. When the queue is full, queued
//! heartbeats coalesce to the newest one; nothing else is dropped without a log line.

use std::collections::VecDeque;
use std::io::{self, Write};

/// Default bound on queued bytes.
pub const DEFAULT_CAPACITY: usize = 1024 * 1024;

/// How a queued message behaves when the queue is full or the host goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A heartbeat: a newer one supersedes every queued one when space runs out.
    Heartbeat,
    /// A report of current state (facts, replies to this host): a newer report of the same
    /// name supersedes a queued one, and all are dropped when the host detaches, because the
    /// next attach sends a fresh burst.
    Report,
    /// A notification or a reply (`session-logon`, `echo`): never superseded, dropped when
    /// the host detaches (it concerned that host's session).
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

/// A byte-bounded FIFO of encoded messages with a partially written head.
#[derive(Debug)]
pub struct OutQueue {
    items: VecDeque<Item>,
    bytes: usize,
    capacity: usize,
    /// Bytes of the head item already written.
    head_written: usize,
    heartbeats_written: u64,
    /// Outbox sequence numbers of durable messages written completely.
    delivered: Vec<u64>,
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
            bytes: 0,
            capacity,
            head_written: 0,
            heartbeats_written: 0,
            delivered: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes currently queued.
    pub fn len_bytes(&self) -> usize {
        self.bytes
    }

    /// Heartbeats written completely since the queue was created.
    pub fn heartbeats_written(&self) -> u64 {
        self.heartbeats_written
    }

    /// Removes queued items for which `drop_it` is true, except a partially written head.
    fn remove_where(&mut self, mut drop_it: impl FnMut(&Item) -> bool) -> Vec<&'static str> {
        let mut dropped = Vec::new();
        let mut i = usize::from(self.head_written > 0);
        while i < self.items.len() {
            if drop_it(&self.items[i]) {
                if let Some(it) = self.items.remove(i) {
                    self.bytes -= it.bytes.len();
                    dropped.push(it.name);
                }
            } else {
                i += 1;
            }
        }
        dropped
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
        // A newer report of the same fact makes a queued, unsent one stale.
        let mut dropped = Vec::new();
        if kind == Kind::Report {
            self.remove_where(|it| it.kind == Kind::Report && it.name == name);
        }
        if self.bytes + bytes.len() > self.capacity {
            dropped.extend(self.remove_where(|it| it.kind == Kind::Heartbeat));
        }
        if self.bytes + bytes.len() > self.capacity && kind != Kind::Heartbeat {
            // Make room by dropping reports, oldest first, but only for a message that is
            // worth at least as much.
            let mut need = self.bytes + bytes.len() - self.capacity;
            dropped.extend(self.remove_where(|it| {
                if need > 0 && it.kind == Kind::Report {
                    need = need.saturating_sub(it.bytes.len());
                    true
                } else {
                    false
                }
            }));
        }
        if self.bytes + bytes.len() > self.capacity {
            return Push::Rejected;
        }
        self.bytes += bytes.len();
        self.items.push_back(Item {
            name,
            kind,
            bytes,
            seq: None,
        });
        if dropped.is_empty() {
            Push::Queued
        } else {
            Push::QueuedDropping(dropped)
        }
    }

    /// Writes queued bytes to `w` until it would block or the queue is empty.
    pub fn flush_to<W: Write>(&mut self, w: &mut W) -> io::Result<Flush> {
        while let Some(head) = self.items.front() {
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
                        self.head_written = 0;
                        self.items.pop_front();
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
        Ok(Flush::Empty)
    }

    /// The host went away: everything queued is dropped (returned: how many). Reports and
    /// heartbeats are superseded by the next attach's burst; durable messages stay in the
    /// store's outbox and are queued again, whole, on the next attach, since the new host
    /// starts reading at a line boundary.
    pub fn detach(&mut self) -> usize {
        let n = self.items.len();
        self.items.clear();
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
}
