// SPDX-License-Identifier: Apache-2.0
//! The persistent param store and the outbox of messages the host has not received yet, kept
//! together in one JSON document `<dir>/params` that is replaced crash-safely on every
//! mutation (write `params.tmp`, fsync, rename, fsync the directory). Whoever opens and
//! mutates a store holds its `StoreLock` (the agent for its life, or the CLI when no agent
//! runs).

use std::fmt;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{Entry, MAX_OUTBOX, MAX_PARAMS, Origin, check_key, check_value};
use crate::sys;

/// Largest `params` file read or written; a full store of plain values is about 45 MiB.
const MAX_FILE: usize = 64 << 20;

/// Why a store operation failed. Nothing was changed, in memory or on disk.
#[derive(Debug)]
pub enum Error {
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A key or value breaks the rules (`check_key`, `check_value`).
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

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A wire message (a JSON object with `__name__`) still to be delivered to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub seq: u64,
    pub msg: Value,
}

#[derive(Debug, Clone, PartialEq)]
struct Data {
    next_seq: u64,
    params: Vec<Entry>,
    outbox: Vec<Pending>,
}

impl Data {
    fn pos(&self, key: &str) -> Option<usize> {
        self.params.iter().position(|e| e.key == key)
    }

    fn push(&mut self, msg: Option<Value>) -> Result<u64, Error> {
        let Some(msg) = msg else { return Ok(0) };
        if !msg.is_object() {
            return Err(Error::Invalid(
                "an outbox message is not a JSON object".into(),
            ));
        }
        if self.outbox.len() >= MAX_OUTBOX {
            return Err(Error::Full(format!(
                "the outbox is full ({MAX_OUTBOX} messages)"
            )));
        }
        let seq = self.next_seq;
        self.next_seq = seq
            .checked_add(1)
            .ok_or_else(|| Error::Full("outbox sequence numbers exhausted".into()))?;
        self.outbox.push(Pending { seq, msg });
        Ok(seq)
    }

    fn to_json(&self) -> Value {
        let params: Vec<Value> = (self.params.iter())
            .map(|e| {
                let o = e.origin.as_str();
                json!({"key": e.key, "value": e.value, "origin": o, "time": e.time, "sent": e.sent})
            })
            .collect();
        let outbox: Vec<Value> = (self.outbox.iter())
            .map(|p| json!({"seq": p.seq, "msg": p.msg}))
            .collect();
        json!({"version": 1, "next_seq": self.next_seq, "params": params, "outbox": outbox})
    }

    /// Parses and checks a `params` document; the error says what is wrong (never a value).
    fn parse(bytes: &[u8]) -> Result<Data, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if v.get("version").and_then(Value::as_u64) != Some(1) {
            return Err("\"version\" is not 1".into());
        }
        let arr = |name: &str| {
            v.get(name)
                .and_then(Value::as_array)
                .ok_or(format!("{name:?} is not an array"))
        };
        let mut d = Data {
            // Sequence numbers start at 1 (0 means "none" to the agent).
            next_seq: (v.get("next_seq").and_then(Value::as_u64))
                .filter(|&n| n >= 1)
                .ok_or("bad \"next_seq\"")?,
            params: Vec::new(),
            outbox: Vec::new(),
        };
        let (params, outbox) = (arr("params")?, arr("outbox")?);
        if params.len() > MAX_PARAMS || outbox.len() > MAX_OUTBOX {
            return Err("too many params or outbox messages".into());
        }
        for p in params {
            let s = |k: &str| {
                p.get(k)
                    .and_then(Value::as_str)
                    .ok_or(format!("a param has no string {k:?}"))
            };
            let (key, value) = (s("key")?, s("value")?);
            check_key(key)?;
            check_value(value).map_err(|e| format!("key {key:?}: {e}"))?;
            if d.pos(key).is_some() {
                return Err(format!("key {key:?} appears twice"));
            }
            d.params.push(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
                origin: Origin::parse(s("origin")?).ok_or("a param has a bad \"origin\"")?,
                time: (p.get("time").and_then(Value::as_u64)).ok_or("a param has no \"time\"")?,
                sent: (p.get("sent").and_then(Value::as_bool)).ok_or("a param has no \"sent\"")?,
            });
        }
        for p in outbox {
            let seq = p.get("seq").and_then(Value::as_u64);
            let last = d.outbox.last().map(|l| l.seq);
            match (seq, p.get("msg")) {
                (Some(seq), Some(msg))
                    if msg.is_object() && seq < d.next_seq && last.is_none_or(|l| l < seq) =>
                {
                    d.outbox.push(Pending {
                        seq,
                        msg: msg.clone(),
                    });
                }
                _ => return Err("an outbox entry is malformed or out of order".into()),
            }
        }
        Ok(d)
    }
}

/// The params and the outbox, in memory and in `<dir>/params`.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    data: Data,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
fn ensure_dir(dir: &Path) -> Result<(), Error> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, Permissions::from_mode(0o700)))
        .map_err(io_err("creating", dir))?;
    // The new directory entry must be durable too, or the first write could vanish with it.
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Writes `bytes` to `path` (mode 0600) and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("creating", path))?;
    file.write_all(bytes).map_err(io_err("writing", path))?;
    file.sync_all().map_err(io_err("syncing", path))
}

impl Store {
    /// Loads the store in `dir` (created 0700 if missing); no `params` file is an empty store.
    /// A `params` that does not parse is moved aside to `params.corrupt-<unix seconds>`,
    /// logged, and the store starts empty.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        ensure_dir(dir)?;
        let tmp = dir.join("params.tmp");
        match fs::remove_file(&tmp) {
            Ok(()) => log::warn!("removed {} left by an interrupted write", tmp.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("removing {}: {e}", tmp.display()),
        }
        let path = dir.join("params");
        let mut data = Data {
            next_seq: 1,
            params: Vec::new(),
            outbox: Vec::new(),
        };
        let mut bytes = Vec::new();
        match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            file => {
                let file = file.map_err(io_err("opening", &path))?;
                (file.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes))
                    .map_err(io_err("reading", &path))?;
                let parsed = if bytes.len() > MAX_FILE {
                    Err(format!("larger than {MAX_FILE} bytes"))
                } else {
                    Data::parse(&bytes)
                };
                match parsed {
                    Ok(d) => data = d,
                    Err(why) => move_aside(dir, &path, &why)?,
                }
            }
        }
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

    /// Messages not yet delivered, in sending order.
    pub fn outbox(&self) -> &[Pending] {
        &self.data.outbox
    }

    /// Sets `key` (replacing and moving it to the newest place if present), appends
    /// `outbox_msg` to the outbox if given, and persists.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        origin: Origin,
        sent: bool,
        outbox_msg: Option<Value>,
    ) -> Result<(), Error> {
        check_key(key).map_err(Error::Invalid)?;
        check_value(value).map_err(Error::Invalid)?;
        self.commit(|d| {
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
            d.push(outbox_msg).map(drop)
        })
    }

    /// Deletes `key` (true if it existed), appends `outbox_msg` if given, and persists.
    pub fn delete(&mut self, key: &str, outbox_msg: Option<Value>) -> Result<bool, Error> {
        if self.get(key).is_none() && outbox_msg.is_none() {
            return Ok(false);
        }
        self.commit(|d| {
            let found = d.pos(key).map(|i| d.params.remove(i)).is_some();
            d.push(outbox_msg)?;
            Ok(found)
        })
    }

    /// Deletes every param (returns how many), appends `outbox_msg` if given, and persists.
    pub fn delete_all(&mut self, outbox_msg: Option<Value>) -> Result<usize, Error> {
        self.commit(|d| {
            let n = d.params.len();
            d.params.clear();
            d.push(outbox_msg)?;
            Ok(n)
        })
    }

    /// Appends `msg` (a JSON object) to the outbox, persists, and returns its sequence number.
    pub fn push_outbox(&mut self, msg: Value) -> Result<u64, Error> {
        self.commit(|d| d.push(Some(msg)))
    }

    /// Removes the delivered messages `seqs` from the outbox; a delivered `param` message
    /// marks its key sent if the key still holds the value sent. Persists once.
    /// Drops pending `param`/`param-deleted` messages about `key` (all keys with `None`):
    /// the host has just set or deleted it itself, so the guest's older news is stale.
    pub fn forget_pending(&mut self, key: Option<&str>) -> Result<(), Error> {
        let stale = |p: &Pending| {
            let name = p.msg.get("__name__").and_then(Value::as_str);
            let k = p.msg.get("key").and_then(Value::as_str);
            matches!(name, Some("param" | "param-deleted")) && key.is_none_or(|key| k == Some(key))
        };
        if !self.data.outbox.iter().any(stale) {
            return Ok(());
        }
        self.commit(|d| {
            d.outbox.retain(|p| !stale(p));
            Ok(())
        })
    }

    pub fn delivered(&mut self, seqs: &[u64]) -> Result<(), Error> {
        if !self.data.outbox.iter().any(|p| seqs.contains(&p.seq)) {
            return Ok(());
        }
        self.commit(|d| {
            let (done, keep) = d.outbox.drain(..).partition(|p| seqs.contains(&p.seq));
            d.outbox = keep;
            for p in done {
                let m = &p.msg;
                let (Some("param"), Some(key), Some(value)) = (
                    m.get("__name__").and_then(Value::as_str),
                    m.get("key").and_then(Value::as_str),
                    m.get("value").and_then(Value::as_str),
                ) else {
                    continue;
                };
                // Sent only if no later message about this key is still pending.
                let later = d
                    .outbox
                    .iter()
                    .any(|q| q.msg.get("key").and_then(Value::as_str) == Some(key));
                if let Some(e) = d
                    .params
                    .iter_mut()
                    .find(|e| e.key == key && e.value == value && !later)
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
        let bytes = d.to_json().to_string().into_bytes();
        if bytes.len() > MAX_FILE {
            return Err(Error::Full(format!(
                "the store would exceed {MAX_FILE} bytes"
            )));
        }
        ensure_dir(&self.dir)?;
        let (tmp, path) = (self.dir.join("params.tmp"), self.dir.join("params"));
        let res = write_synced(&tmp, &bytes)
            .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp)));
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res?;
        // Renamed: the new state is what the disk holds now, so memory follows it even if the
        // directory sync below fails (the caller is then told the write may not be durable).
        self.data = d;
        sync_dir(&self.dir)?;
        Ok(out)
    }
}

/// Renames a corrupt `path` to a free `params.corrupt-<unix seconds>[-N]` and logs it.
fn move_aside(dir: &Path, path: &Path, why: &str) -> Result<(), Error> {
    let base = format!("params.corrupt-{}", now());
    for n in 0..1000 {
        let name = if n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        let to = dir.join(name);
        if fs::symlink_metadata(&to).is_ok() {
            continue;
        }
        fs::rename(path, &to).map_err(io_err("moving aside", path))?;
        sync_dir(dir)?;
        log::error!(
            "the param store {} is corrupt ({why}): moved it to {}, starting with an empty \
             store; its params and undelivered messages are lost unless restored by hand",
            path.display(),
            to.display()
        );
        return Ok(());
    }
    Err(Error::Io {
        op: "moving aside",
        path: path.to_owned(),
        source: io::Error::from(io::ErrorKind::AlreadyExists),
    })
}

/// An exclusive flock(2) on `<dir>/lock`; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock(#[expect(dead_code, reason = "held only for its flock")] File);

impl StoreLock {
    /// Takes the lock without waiting; `Ok(None)` when another open file holds it.
    pub fn try_lock(dir: &Path) -> Result<Option<StoreLock>, Error> {
        ensure_dir(dir)?;
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let held =
            sys::flock_exclusive_nonblocking(file.as_fd()).map_err(io_err("locking", &path))?;
        Ok(held.then_some(StoreLock(file)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh state directory (not yet created), removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let base = std::env::temp_dir().join(format!("guestd-kv-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&base);
            TempDir(base.join("state"))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(self.0.parent().unwrap());
        }
    }

    fn keys(s: &Store) -> Vec<&str> {
        s.params().iter().map(|e| e.key.as_str()).collect()
    }

    fn param(key: &str, value: &str) -> Value {
        json!({"__name__": "param", "key": key, "value": value, "origin": "guest"})
    }

    fn corrupt_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains("params.corrupt-"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn round_trip_order_and_modes() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        assert!(s.params().is_empty() && s.outbox().is_empty());
        s.set("a", "1", Origin::Guest, false, None).unwrap();
        s.set("b", "2", Origin::Host, true, None).unwrap();
        s.set("c", "3", Origin::Guest, false, None).unwrap();
        s.set("a", "4", Origin::Host, true, None).unwrap();
        assert_eq!(keys(&s), ["b", "c", "a"]);
        let s2 = Store::open(&t.0).unwrap();
        assert_eq!(s2.params(), s.params());
        let a = s2.get("a").unwrap();
        assert_eq!(
            (a.value.as_str(), a.origin, a.sent),
            ("4", Origin::Host, true)
        );
        assert!(a.time > 1_600_000_000);
        assert!(s2.get("x").is_none());
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&t.0), 0o700);
        assert_eq!(mode(&t.0.join("params")), 0o600);
        let doc: Value = serde_json::from_slice(&fs::read(t.0.join("params")).unwrap()).unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["params"][0]["origin"], "host");
    }

    #[test]
    fn delete_and_delete_all() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        for k in ["a", "b", "c"] {
            s.set(k, "v", Origin::Guest, false, None).unwrap();
        }
        assert!(
            s.delete("b", Some(json!({"__name__": "param-deleted", "key": "b"})))
                .unwrap()
        );
        assert!(!s.delete("b", None).unwrap());
        assert_eq!(keys(&s), ["a", "c"]);
        assert_eq!(s.outbox().len(), 1);
        assert_eq!(
            s.delete_all(Some(json!({"__name__": "params-deleted"})))
                .unwrap(),
            2
        );
        let s = Store::open(&t.0).unwrap();
        assert!(s.params().is_empty());
        assert_eq!(s.outbox().len(), 2);
        assert_eq!(s.outbox()[1].msg["__name__"], "params-deleted");
    }

    #[test]
    fn key_and_value_limits() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        for bad in ["", "a=b", "a\tb", &"k".repeat(256)] {
            assert!(matches!(
                s.set(bad, "v", Origin::Guest, false, None),
                Err(Error::Invalid(_))
            ));
        }
        s.set("k", &"v".repeat(8192), Origin::Guest, false, None)
            .unwrap();
        let e = s
            .set("k", &"v".repeat(8193), Origin::Guest, false, None)
            .unwrap_err();
        assert_eq!(e.to_string(), "value is longer than 8192 bytes");
        assert_eq!(s.get("k").unwrap().value.len(), 8192);
        assert!(s.push_outbox(json!("not an object")).is_err());
    }

    #[test]
    fn params_and_outbox_limits() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        // Fill through the data directly: persisting 1024 times would be slow.
        for i in 0..MAX_PARAMS {
            s.data.params.push(Entry {
                key: format!("k{i}"),
                value: String::new(),
                origin: Origin::Guest,
                time: 0,
                sent: false,
            });
        }
        for _ in 1..MAX_OUTBOX {
            s.data.push(Some(json!({"__name__": "event"}))).unwrap();
        }
        let e = s.set("new", "v", Origin::Guest, false, None).unwrap_err();
        assert!(matches!(e, Error::Full(_)), "{e}");
        s.set("k0", "updated", Origin::Guest, false, None).unwrap();
        s.push_outbox(json!({"__name__": "event"})).unwrap();
        let e = s.push_outbox(json!({"__name__": "event"})).unwrap_err();
        assert!(matches!(e, Error::Full(_)), "{e}");
        let e = s.set("k1", "v", Origin::Guest, false, Some(param("k1", "v")));
        assert!(matches!(e, Err(Error::Full(_))));
        assert_eq!(
            s.get("k1").unwrap().value,
            "",
            "a refused set changes nothing"
        );
        let s = Store::open(&t.0).unwrap();
        assert_eq!(
            (s.params().len(), s.outbox().len()),
            (MAX_PARAMS, MAX_OUTBOX)
        );
        assert_eq!(s.params().last().unwrap().key, "k0");
    }

    #[test]
    fn outbox_seq_monotonic_and_delivered_marks_sent() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        s.set("a", "1", Origin::Guest, false, Some(param("a", "1")))
            .unwrap();
        s.set("b", "1", Origin::Guest, false, Some(param("b", "1")))
            .unwrap();
        s.set("b", "2", Origin::Guest, false, Some(param("b", "2")))
            .unwrap();
        let seqs: Vec<u64> = s.outbox().iter().map(|p| p.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        s.delivered(&[1, 2]).unwrap();
        assert!(s.get("a").unwrap().sent);
        assert!(
            !s.get("b").unwrap().sent,
            "b holds a newer value than the one delivered"
        );
        s.delivered(&[3]).unwrap();
        assert!(s.outbox().is_empty());
        let mut s = Store::open(&t.0).unwrap();
        assert!(s.get("b").unwrap().sent);
        assert_eq!(s.push_outbox(json!({"__name__": "event"})).unwrap(), 4);
        let mut s = Store::open(&t.0).unwrap();
        assert_eq!(s.outbox()[0].seq, 4);
        assert_eq!(s.push_outbox(json!({"__name__": "event"})).unwrap(), 5);
        s.delivered(&[99]).unwrap();
        assert_eq!(s.outbox().len(), 2);
    }

    #[test]
    fn corrupt_and_truncated_files_are_moved_aside() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        s.set("a", "1", Origin::Guest, false, Some(param("a", "1")))
            .unwrap();
        let good = fs::read(t.0.join("params")).unwrap();
        let torn = &good[..good.len() / 2];
        let wrong_shape = br#"{"version":1,"next_seq":1,"params":[{"key":"a"}],"outbox":[]}"#;
        for (i, bad) in [b"garbage".as_slice(), torn, b"", wrong_shape]
            .iter()
            .enumerate()
        {
            fs::write(t.0.join("params"), bad).unwrap();
            let s = Store::open(&t.0).unwrap();
            assert!(s.params().is_empty() && s.outbox().is_empty());
            assert!(!t.0.join("params").exists());
            let moved = corrupt_files(&t.0);
            assert_eq!(moved.len(), i + 1);
            assert!(moved.iter().any(|p| fs::read(p).unwrap() == *bad));
        }
        // The empty store works and is persisted afresh.
        let mut s = Store::open(&t.0).unwrap();
        s.set("b", "2", Origin::Host, true, None).unwrap();
        assert_eq!(keys(&Store::open(&t.0).unwrap()), ["b"]);
    }

    #[test]
    fn unreadable_file_is_an_error_and_kept() {
        let t = TempDir::new();
        fs::create_dir_all(t.0.join("params")).unwrap();
        let e = Store::open(&t.0).unwrap_err();
        assert!(e.to_string().starts_with("reading "), "{e}");
        assert!(t.0.join("params").is_dir());
        assert!(corrupt_files(&t.0).is_empty());
    }

    #[test]
    fn leftover_tmp_is_removed() {
        let t = TempDir::new();
        Store::open(&t.0)
            .unwrap()
            .set("a", "1", Origin::Guest, false, None)
            .unwrap();
        fs::write(t.0.join("params.tmp"), "half a wri").unwrap();
        let s = Store::open(&t.0).unwrap();
        assert!(!t.0.join("params.tmp").exists());
        assert_eq!(keys(&s), ["a"]);
    }

    #[test]
    fn failed_persist_leaves_memory_and_disk_unchanged() {
        let t = TempDir::new();
        let mut s = Store::open(&t.0).unwrap();
        s.set("a", "1", Origin::Guest, false, Some(param("a", "1")))
            .unwrap();
        let (params, outbox) = (s.params().to_vec(), s.outbox().to_vec());
        fs::create_dir(t.0.join("params.tmp")).unwrap();
        let e = s
            .set("a", "2", Origin::Guest, false, Some(param("a", "2")))
            .unwrap_err();
        assert!(e.to_string().contains("params.tmp"), "{e}");
        assert!(s.set("b", "1", Origin::Guest, false, None).is_err());
        assert!(s.delete("a", None).is_err());
        assert!(s.delete_all(None).is_err());
        assert!(s.push_outbox(json!({"__name__": "event"})).is_err());
        assert!(s.delivered(&[1]).is_err());
        assert_eq!((s.params(), s.outbox()), (&params[..], &outbox[..]));
        fs::remove_dir(t.0.join("params.tmp")).unwrap();
        let s2 = Store::open(&t.0).unwrap();
        assert_eq!((s2.params(), s2.outbox()), (&params[..], &outbox[..]));
        assert_eq!(s.push_outbox(json!({"__name__": "event"})).ok(), Some(2));
    }

    #[test]
    fn lock_is_exclusive() {
        let t = TempDir::new();
        let lock = StoreLock::try_lock(&t.0).unwrap().expect("first lock");
        assert_eq!(fs::metadata(&t.0).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(t.0.join("lock")).unwrap().mode() & 0o777,
            0o600
        );
        assert!(StoreLock::try_lock(&t.0).unwrap().is_none());
        drop(lock);
        assert!(StoreLock::try_lock(&t.0).unwrap().is_some());
    }

    #[test]
    fn error_display_names_op_and_path() {
        let e = Error::Io {
            op: "writing",
            path: PathBuf::from("/var/lib/guestd/params.tmp"),
            source: io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(
            e.to_string(),
            "writing /var/lib/guestd/params.tmp: No space left on device (os error 28)"
        );
    }
}
