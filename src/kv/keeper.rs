// SPDX-License-Identifier: Apache-2.0
//! The agent's hold on the store: the lock taken at start and kept for the agent's life, the
//! reason when the store could not be used, and the batched recording of outbox messages the
//! links have delivered.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::{LegacyDecoder, Store, StoreLock};
use crate::sys;

/// How long the agent waits at start for a command-line call that holds the store lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Delivered outbox messages are recorded in the store at most this often while a backlog
/// drains.
const DELIVERED_BATCH: Duration = Duration::from_secs(1);

/// The store, or why there is none, and the deliveries not yet recorded in it.
#[derive(Debug, Default)]
pub struct Keeper {
    store: Option<Store>,
    error: String,
    _lock: Option<StoreLock>,
    /// Outbox messages written to a host but not yet recorded as delivered, and when they
    /// will be.
    delivered: Vec<u64>,
    due: Option<Duration>,
    /// The guest's file systems are frozen: nothing is written (a write would block the
    /// loop until thaw), delivery records wait.
    frozen: bool,
    /// The store was not opened at start because the file systems were frozen: it is
    /// opened at thaw (`open_deferred`).
    deferred: bool,
}

/// The error of a store write while the file systems are frozen.
pub const FROZEN: &str = "the guest's file systems are frozen";

impl Keeper {
    /// Locks and loads the store in `dir` (`legacy` decodes the outbox of a version-1 store). A store that cannot be used is not fatal: the
    /// protocols work without it, and key-value requests get the reason as their error. Only
    /// a lock another guestd keeps holding is: two agents must not share one store.
    ///
    /// Blocks for up to `LOCK_WAIT` while a command-line call holds the lock.
    pub fn open(dir: &Path, legacy: LegacyDecoder) -> io::Result<Keeper> {
        let deadline = sys::monotonic_now() + LOCK_WAIT;
        let mut k = Keeper::default();
        let lock = loop {
            match StoreLock::try_lock(dir) {
                Ok(Some(l)) => break l,
                Ok(None) if sys::monotonic_now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        format!(
                            "locking the store {} (is another guestd using it?)",
                            dir.display()
                        ),
                    ));
                }
                Err(e) => {
                    log::error!("key-value store disabled: {e}");
                    k.error = e.to_string();
                    return Ok(k);
                }
            }
        };
        match Store::open(dir, legacy) {
            Ok(s) => {
                log::info!(
                    "store {}: {} params, {} messages pending for the host",
                    dir.display(),
                    s.params().len(),
                    s.outbox().len()
                );
                k.store = Some(s);
                k._lock = Some(lock);
            }
            Err(e) => {
                log::error!("key-value store disabled: {e}");
                k.error = e.to_string();
            }
        }
        Ok(k)
    }

    /// A keeper whose store is opened later (`open_deferred`), because the agent started
    /// while the file systems were frozen: even opening the lock file would block then.
    pub fn deferred() -> Keeper {
        Keeper {
            error: FROZEN.to_owned(),
            deferred: true,
            frozen: true,
            ..Keeper::default()
        }
    }

    /// Opens the store a `deferred()` keeper left closed (at thaw); otherwise nothing.
    pub fn open_deferred(&mut self, dir: &Path, legacy: LegacyDecoder) {
        if !self.deferred || self.frozen {
            return;
        }
        match Keeper::open(dir, legacy) {
            Ok(k) => *self = k,
            Err(e) => {
                log::error!("key-value store disabled: {e}");
                self.deferred = false;
                self.error = e.to_string();
            }
        }
    }

    /// Marks the file systems frozen or thawed. At thaw the deliveries noted meanwhile are
    /// recorded.
    pub fn set_frozen(&mut self, frozen: bool) {
        self.frozen = frozen;
        if !frozen && !self.delivered.is_empty() {
            self.commit_delivered();
        }
    }

    pub fn is_open(&self) -> bool {
        self.store.is_some()
    }

    pub fn get(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// The store, or the error a request that needs it gets.
    /// While the file systems are frozen every request for it is refused with `FROZEN` (the
    /// store persists each change before it counts).
    pub fn store_mut(&mut self) -> Result<&mut Store, String> {
        if self.frozen {
            return Err(FROZEN.to_owned());
        }
        match &mut self.store {
            Some(s) => Ok(s),
            None => Err(format!("the store is unavailable: {}", self.error)),
        }
    }

    /// Notes outbox messages written to a host. The store records them at once when the
    /// outbox is then empty (the usual case: one message), otherwise at most once a second,
    /// so a long backlog does not rewrite the store for every batch. Until recorded, a crash
    /// makes them go out again: duplicated, never lost.
    pub fn delivered(&mut self, seqs: Vec<u64>) {
        if seqs.is_empty() {
            return;
        }
        self.delivered.extend(seqs);
        let Some(&newest) = self.delivered.iter().max() else {
            return;
        };
        let all = self
            .store
            .as_ref()
            .and_then(|s| s.outbox().last())
            .is_none_or(|p| p.seq <= newest);
        let now = sys::monotonic_now();
        match self.due {
            _ if self.frozen => {}
            _ if all => self.commit_delivered(),
            Some(due) if now >= due => self.commit_delivered(),
            Some(_) => {}
            None => self.due = Some(now + DELIVERED_BATCH),
        }
    }

    /// When the batched deliveries are due to be recorded.
    pub fn deadline(&self) -> Option<Duration> {
        self.due.filter(|_| !self.frozen)
    }

    pub fn on_timer(&mut self, now: Duration) {
        if self.due.is_some_and(|d| d <= now) {
            self.commit_delivered();
        }
    }

    /// Records every delivery noted so far (not while frozen: then they wait for the thaw).
    pub fn commit_delivered(&mut self) {
        if self.frozen {
            return;
        }
        self.due = None;
        let seqs = std::mem::take(&mut self.delivered);
        if seqs.is_empty() {
            return;
        }
        if let Some(store) = &mut self.store {
            if let Err(e) = store.delivered(&seqs) {
                log::error!("recording {} delivered messages: {e}", seqs.len());
            }
        }
    }
}
