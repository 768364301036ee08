// SPDX-License-Identifier: Apache-2.0
//! The persistent param store and the outbox of records the host has not received yet, kept
//! together in one JSON document `<dir>/params` (its format in `doc`) that is replaced
//! crash-safely on every mutation (`file`: write `params.tmp`, fsync, rename, fsync the
//! directory). Whoever opens and mutates a store holds its `StoreLock` (the agent for its
//! life, or the CLI when no agent runs).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::doc::{Data, LegacyDecoder};
use super::file;
use super::{Entry, MAX_PARAMS, Origin, Pending, Record, check_key, check_value};

/// Still importable from here, where it was first defined.
pub use super::lock::StoreLock;

/// Why a store operation failed. Nothing was changed, in memory or on disk.
#[derive(Debug)]
pub enum Error {
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A key, value or record breaks the rules (`check_key`, `check_value`, `Record::check`).
    Invalid(String),
    /// A limit was reached.
    Full(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { op, path, source } => write!(f, "{op} {}: {source}", path.display()),
            Error::Invalid(s) | Error::Full(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The params and the outbox, in memory and in `<dir>/params`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    data: Data,
}

pub(super) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Store {
    /// Loads the store in `dir` (created 0700 if missing); no `params` file is an empty store.
    /// A `params` that does not parse is moved aside to `params.corrupt-<unix seconds>`,
    /// logged, and the store starts empty. The outbox of a version-1 `params` is read through
    /// `legacy`; an entry it cannot decode is logged, naming its seq, and dropped.
    pub fn open(dir: &Path, legacy: LegacyDecoder) -> Result<Store, Error> {
        let data = file::load(dir, legacy)?;
        Ok(Store {
            dir: dir.to_owned(),
            data,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.data.params.iter().find(|e| e.key == key)
    }

    /// All params, oldest first.
    pub fn params(&self) -> &[Entry] {
        &self.data.params
    }

    /// Records not yet delivered, in sending order.
    pub fn outbox(&self) -> &[Pending] {
        &self.data.outbox
    }

    /// Sets `key` (replacing and moving it to the newest place if present), appends `news` to
    /// the outbox if given, and persists.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        origin: Origin,
        sent: bool,
        news: Option<Record>,
    ) -> Result<(), Error> {
        self.set_marked(key, value, origin, sent, news, false)
    }

    /// `set`, with `key` marked secret (`is_secret`) when `secret`; the mark follows the
    /// latest value.
    pub fn set_marked(
        &mut self,
        key: &str,
        value: &str,
        origin: Origin,
        sent: bool,
        news: Option<Record>,
        secret: bool,
    ) -> Result<(), Error> {
        check_key(key).map_err(Error::Invalid)?;
        check_value(value).map_err(Error::Invalid)?;
        self.commit(|d| {
            d.secret.retain(|k| k != key);
            if secret {
                d.secret.push(key.to_owned());
            }
            match d.pos(key) {
                Some(i) => {
                    d.params.remove(i);
                }
                None if d.params.len() >= MAX_PARAMS => {
                    return Err(Error::Full(format!(
                        "the store is full ({MAX_PARAMS} keys)"
                    )));
                }
                None => {}
            }
            d.params.push(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
                origin,
                time: now(),
                sent,
            });
            d.push(news).map(drop)
        })
    }

    /// Whether `key`'s value is a secret: a well-known secret key (`kv::is_secret_key`), or
    /// marked secret by the host.
    pub fn is_secret(&self, key: &str) -> bool {
        super::is_secret_key(key) || self.data.secret.iter().any(|k| k == key)
    }

    /// Deletes, without news for the host, those of `keys` that hold secrets (and, with
    /// `value`, only while they still hold that value): a secret is kept until it was used
    /// once. `value` is the `kv::value_hash` of the value used. Returns how many were deleted; persists once, and only when there are any.
    pub fn consume_secrets(&mut self, keys: &[&str], value: Option<u64>) -> Result<usize, Error> {
        let gone = |d: &Data, k: &str| {
            self.is_secret(k)
                && (d.pos(k)).is_some_and(|i| {
                    value.is_none_or(|v| super::value_hash(&d.params[i].value) == v)
                })
        };
        let keys: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| gone(&self.data, k))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        self.commit(|d| {
            d.params.retain(|e| !keys.contains(&e.key.as_str()));
            d.secret.retain(|k| !keys.contains(&k.as_str()));
            Ok(keys.len())
        })
    }

    /// Deletes `key` (true if it existed), appends `news` if given, and persists.
    pub fn delete(&mut self, key: &str, news: Option<Record>) -> Result<bool, Error> {
        if self.get(key).is_none() && news.is_none() {
            return Ok(false);
        }
        self.commit(|d| {
            d.secret.retain(|k| k != key);
            let found = d.pos(key).map(|i| d.params.remove(i)).is_some();
            d.push(news)?;
            Ok(found)
        })
    }

    /// Deletes every param (returns how many), appends `news` if given, and persists.
    pub fn delete_all(&mut self, news: Option<Record>) -> Result<usize, Error> {
        self.commit(|d| {
            let n = d.params.len();
            d.params.clear();
            d.secret.clear();
            d.push(news)?;
            Ok(n)
        })
    }

    /// Appends `record` to the outbox, persists, and returns its sequence number.
    pub fn push_outbox(&mut self, record: Record) -> Result<u64, Error> {
        self.commit(|d| d.push(Some(record)))
    }

    /// Drops pending `Param`/`ParamDeleted` records about `key` (all keys with `None`): the
    /// host has just set or deleted it itself, so the guest's older news is stale.
    pub fn forget_pending(&mut self, key: Option<&str>) -> Result<(), Error> {
        let stale = |p: &Pending| (p.record.key()).is_some_and(|k| key.is_none_or(|key| k == key));
        if !self.data.outbox.iter().any(stale) {
            return Ok(());
        }
        self.commit(|d| {
            d.outbox.retain(|p| !stale(p));
            Ok(())
        })
    }

    /// Removes the delivered records `seqs` from the outbox; a delivered `Param` marks its
    /// key sent if the key still holds the value sent and no later news about it is pending.
    /// Persists once.
    pub fn delivered(&mut self, seqs: &[u64]) -> Result<(), Error> {
        if !self.data.outbox.iter().any(|p| seqs.contains(&p.seq)) {
            return Ok(());
        }
        self.commit(|d| {
            let (done, keep) = d.outbox.drain(..).partition(|p| seqs.contains(&p.seq));
            d.outbox = keep;
            for p in done {
                let Record::Param { key, value, .. } = &p.record else {
                    continue;
                };
                // Sent only if no later news about this key is still pending.
                let later = d.outbox.iter().any(|q| q.record.key() == Some(key));
                if let Some(e) = d
                    .params
                    .iter_mut()
                    .find(|e| e.key == *key && e.value == *value && !later)
                {
                    e.sent = true;
                }
            }
            Ok(())
        })
    }

    /// Applies `f` to a copy of the data, persists the copy, and only then makes it current:
    /// on any error memory stays as it was.
    fn commit<T>(&mut self, f: impl FnOnce(&mut Data) -> Result<T, Error>) -> Result<T, Error> {
        let mut d = self.data.clone();
        let out = f(&mut d)?;
        file::replace(&self.dir, &d.to_bytes())?;
        // Renamed: the new state is what the disk holds now, so memory follows it even if the
        // directory sync below fails (the caller is then told the write may not be durable).
        self.data = d;
        file::sync_dir(&self.dir)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
