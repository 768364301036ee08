// SPDX-License-Identifier: Apache-2.0
//! Key-value messaging between guest and host (ovmd's params): the limits, the entry type, the
//! outbox record type, the `-l` line format, and the persistent store (`store`, its on-disk
//! document in `doc`, its lock in `lock`). Nothing here knows a wire protocol: the protocol
//! side turns records into messages, and decodes the outbox of a version-1 store for `open`.

mod doc;
mod file;
pub mod keeper;
mod lock;
pub mod ops;
pub mod store;

pub use doc::LegacyDecoder;
pub use lock::StoreLock;
pub use store::{Error, Store};

use serde_json::{Map, Value};

/// Longest key in bytes (ovmapi's 256-byte name buffer, NUL included).
pub const MAX_KEY: usize = 255;
/// Longest value in bytes (ovmapi's `OVMM_MAX_VALUE_LEN`).
pub const MAX_VALUE: usize = 8192;
/// Most keys the store holds.
pub const MAX_PARAMS: usize = 1024;
/// Most messages waiting for delivery to the host.
pub const MAX_OUTBOX: usize = 4096;

/// A key is 1..=255 bytes of UTF-8 with no `=` and no control characters.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        Err("key is empty".into())
    } else if key.len() > MAX_KEY {
        Err(format!("key is longer than {MAX_KEY} bytes"))
    } else if key.contains('=') {
        Err("key contains '='".into())
    } else if key.chars().any(char::is_control) {
        Err("key contains a control character".into())
    } else {
        Ok(())
    }
}

/// Whether `key` is a well-known secret: its last dot-separated part ends in `password`
/// (ASCII case ignored), as the first-boot configuration's `com.oracle.linux.root-password`
/// and site keys such as `com.example.linux.db-password`. Such values are kept only until
/// they were used once (`Store::consume_secrets`).
pub fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).as_bytes();
    last.len() >= 8 && last[last.len() - 8..].eq_ignore_ascii_case(b"password")
}

/// A hash of a value, to recognise it later without keeping a copy.
pub fn value_hash(value: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A value is at most 8192 bytes.
pub fn check_value(value: &str) -> Result<(), String> {
    if value.len() > MAX_VALUE {
        Err(format!("value is longer than {MAX_VALUE} bytes"))
    } else {
        Ok(())
    }
}

/// Which side set an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Guest,
    Host,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Guest => "guest",
            Origin::Host => "host",
        }
    }

    /// The inverse of `as_str`.
    pub fn parse(s: &str) -> Option<Origin> {
        match s {
            "guest" => Some(Origin::Guest),
            "host" => Some(Origin::Host),
            _ => None,
        }
    }
}

/// One stored param.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
    pub origin: Origin,
    /// Unix seconds when it was set.
    pub time: u64,
    /// Whether it has reached the host.
    pub sent: bool,
}

/// News the host is owed, kept in the store's outbox until it has been delivered. The store
/// knows these kinds, not how a protocol spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// `key` was set to `value` (by the guest, so far).
    Param {
        key: String,
        value: String,
        origin: Origin,
    },
    /// `key` was deleted.
    ParamDeleted { key: String },
    /// Every param was deleted.
    ParamsDeleted,
    /// A named guest event (`guestd -e NAME`).
    Event { name: String },
    /// The user's session was locked.
    SessionLock,
    /// The user's session was unlocked.
    SessionUnlock,
}

impl Record {
    /// The record of kind `kind` (`param`, `param-deleted`, `params-deleted`, `event`,
    /// `session-lock`, `session-unlock`) whose fields are in the JSON object `fields`; not yet
    /// checked. The store's document names the kind in `kind`; an older format's decoder may
    /// find it elsewhere.
    pub fn from_fields(kind: &str, fields: &Value) -> Option<Record> {
        let s = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(match kind {
            "param" => Record::Param {
                key: s("key")?,
                value: s("value")?,
                origin: Origin::parse(fields.get("origin")?.as_str()?)?,
            },
            "param-deleted" => Record::ParamDeleted { key: s("key")? },
            "params-deleted" => Record::ParamsDeleted,
            "event" => Record::Event { name: s("name")? },
            "session-lock" => Record::SessionLock,
            "session-unlock" => Record::SessionUnlock,
            _ => return None,
        })
    }

    /// The key this record is news about: `Param` and `ParamDeleted` only.
    pub fn key(&self) -> Option<&str> {
        match self {
            Record::Param { key, .. } | Record::ParamDeleted { key } => Some(key),
            _ => None,
        }
    }

    /// Checks keys and values against `check_key` and `check_value`, and that an event has a
    /// name; the error never quotes a value.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Record::Param { key, value, .. } => check_key(key)
                .and_then(|()| check_value(value).map_err(|e| format!("key {key:?}: {e}"))),
            Record::ParamDeleted { key } => check_key(key),
            Record::Event { name } if name.is_empty() => Err("event name is empty".into()),
            Record::Event { .. } | Record::ParamsDeleted => Ok(()),
            Record::SessionLock | Record::SessionUnlock => Ok(()),
        }
    }
}

/// A record not yet delivered, with its sequence number (from 1, increasing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: u64,
    pub record: Record,
}

/// The `guestd -l` line for `e`: `{"key":"value"}`, compact, no newline.
pub fn list_line(e: &Entry) -> String {
    let mut m = Map::new();
    m.insert(e.key.clone(), Value::String(e.value.clone()));
    Value::Object(m).to_string()
}

/// A fresh state directory (not yet created) for tests, removed on drop.
#[cfg(test)]
pub(crate) struct TempDir(pub std::path::PathBuf);

#[cfg(test)]
impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        let base = std::env::temp_dir().join(format!("guestd-params-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        TempDir(base.join("state"))
    }
}

#[cfg(test)]
impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(base) = self.0.parent() {
            let _ = std::fs::remove_dir_all(base);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_secret_keys() {
        assert!(is_secret_key("com.oracle.linux.root-password"));
        assert!(is_secret_key("com.example.linux.DB-Password"));
        assert!(is_secret_key("password"));
        assert!(!is_secret_key("com.oracle.linux.password-policy"));
        assert!(!is_secret_key("com.oracle.linux.network.hostname"));
        assert!(!is_secret_key("pass"));
    }

    #[test]
    fn keys_values_and_lines() {
        assert_eq!(check_key(""), Err("key is empty".into()));
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert_eq!(
            check_key(&"k".repeat(256)),
            Err("key is longer than 255 bytes".into())
        );
        assert_eq!(check_key("a=b"), Err("key contains '='".into()));
        assert_eq!(
            check_key("a\nb"),
            Err("key contains a control character".into())
        );
        assert!(check_key("ключ \"x\"").is_ok());
        assert!(check_value(&"v".repeat(8192)).is_ok());
        assert_eq!(
            check_value(&"v".repeat(8193)),
            Err("value is longer than 8192 bytes".into())
        );
        assert_eq!(Origin::parse("host"), Some(Origin::Host));
        assert_eq!(Origin::parse(Origin::Guest.as_str()), Some(Origin::Guest));
        assert_eq!(Origin::parse("x"), None);
        let e = Entry {
            key: "k\"1".into(),
            value: "a\nb".into(),
            origin: Origin::Guest,
            time: 0,
            sent: false,
        };
        assert_eq!(list_line(&e), r#"{"k\"1":"a\nb"}"#);
    }
}
