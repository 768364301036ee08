// SPDX-License-Identifier: Apache-2.0
//! Tests of `kv::store`.

use super::*;
use crate::kv::MAX_OUTBOX;
use serde_json::{Value, json};
use std::fs;
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

fn param(key: &str, value: &str) -> Record {
    Record::Param {
        key: key.into(),
        value: value.into(),
        origin: Origin::Guest,
    }
}

fn event() -> Record {
    Record::Event {
        name: "ready".into(),
    }
}

/// A version-1 decoder for these tests: `{"gone": KEY}` is a deleted key, the rest fails.
fn legacy(msg: &Value) -> Option<Record> {
    let key = msg.get("gone")?.as_str()?;
    Some(Record::ParamDeleted { key: key.into() })
}

fn open(dir: &Path) -> Result<Store, Error> {
    Store::open(dir, legacy)
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
    let mut s = open(&t.0).unwrap();
    assert!(s.params().is_empty() && s.outbox().is_empty());
    s.set("a", "1", Origin::Guest, false, None).unwrap();
    s.set("b", "2", Origin::Host, true, None).unwrap();
    s.set("c", "3", Origin::Guest, false, None).unwrap();
    s.set("a", "4", Origin::Host, true, None).unwrap();
    assert_eq!(keys(&s), ["b", "c", "a"]);
    let s2 = open(&t.0).unwrap();
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
    assert_eq!(doc["version"], 2);
    assert_eq!(doc["params"][0]["origin"], "host");
}

#[test]
fn secrets_are_deleted_once_used_and_marks_survive_a_reopen() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
    let root = "com.oracle.linux.root-password";
    s.set(root, "pw1", Origin::Host, true, None).unwrap();
    s.set_marked("token", "t1", Origin::Host, true, None, true)
        .unwrap();
    s.set("plain", "p", Origin::Host, true, None).unwrap();
    let s2 = open(&t.0).unwrap();
    assert!(s2.is_secret(root) && s2.is_secret("token") && !s2.is_secret("plain"));
    // A value replaced since it was applied is not the one applied: kept.
    let hash = crate::kv::value_hash("t0");
    assert_eq!(s.consume_secrets(&["token"], Some(hash)).unwrap(), 0);
    let hash = crate::kv::value_hash("t1");
    assert_eq!(
        s.consume_secrets(&["token", "plain"], Some(hash)).unwrap(),
        1
    );
    assert_eq!(
        s.consume_secrets(&[root, "plain", "absent"], None).unwrap(),
        1
    );
    assert_eq!(keys(&s), ["plain"]);
    let text = fs::read_to_string(t.0.join("params")).unwrap();
    assert!(!text.contains("pw1") && !text.contains("t1") && !text.contains("secret"));
    // Set again without the mark: an ordinary value.
    s.set_marked("token", "t2", Origin::Host, true, None, true)
        .unwrap();
    s.set("token", "t3", Origin::Host, true, None).unwrap();
    assert!(!open(&t.0).unwrap().is_secret("token"));
}

#[test]
fn delete_and_delete_all() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
    for k in ["a", "b", "c"] {
        s.set(k, "v", Origin::Guest, false, None).unwrap();
    }
    assert!(
        s.delete("b", Some(Record::ParamDeleted { key: "b".into() }))
            .unwrap()
    );
    assert!(!s.delete("b", None).unwrap());
    assert_eq!(keys(&s), ["a", "c"]);
    assert_eq!(s.outbox().len(), 1);
    assert_eq!(s.delete_all(Some(Record::ParamsDeleted)).unwrap(), 2);
    let s = open(&t.0).unwrap();
    assert!(s.params().is_empty());
    assert_eq!(s.outbox().len(), 2);
    assert_eq!(s.outbox()[1].record, Record::ParamsDeleted);
}

#[test]
fn key_and_value_limits() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
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
    let e = s.push_outbox(Record::ParamDeleted { key: "".into() });
    assert!(matches!(e, Err(Error::Invalid(_))));
}

#[test]
fn params_and_outbox_limits() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
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
        s.data.push(Some(event())).unwrap();
    }
    let e = s.set("new", "v", Origin::Guest, false, None).unwrap_err();
    assert!(matches!(e, Error::Full(_)), "{e}");
    s.set("k0", "updated", Origin::Guest, false, None).unwrap();
    s.push_outbox(event()).unwrap();
    let e = s.push_outbox(event()).unwrap_err();
    assert!(matches!(e, Error::Full(_)), "{e}");
    let e = s.set("k1", "v", Origin::Guest, false, Some(param("k1", "v")));
    assert!(matches!(e, Err(Error::Full(_))));
    assert_eq!(
        s.get("k1").unwrap().value,
        "",
        "a refused set changes nothing"
    );
    let s = open(&t.0).unwrap();
    assert_eq!(
        (s.params().len(), s.outbox().len()),
        (MAX_PARAMS, MAX_OUTBOX)
    );
    assert_eq!(s.params().last().unwrap().key, "k0");
}

#[test]
fn outbox_seq_monotonic_and_delivered_marks_sent() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
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
    let mut s = open(&t.0).unwrap();
    assert!(s.get("b").unwrap().sent);
    assert_eq!(s.push_outbox(event()).unwrap(), 4);
    let mut s = open(&t.0).unwrap();
    assert_eq!(s.outbox()[0].seq, 4);
    assert_eq!(s.push_outbox(event()).unwrap(), 5);
    s.delivered(&[99]).unwrap();
    assert_eq!(s.outbox().len(), 2);
}

#[test]
fn corrupt_and_truncated_files_are_moved_aside() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
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
        let s = open(&t.0).unwrap();
        assert!(s.params().is_empty() && s.outbox().is_empty());
        assert!(!t.0.join("params").exists());
        let moved = corrupt_files(&t.0);
        assert_eq!(moved.len(), i + 1);
        assert!(moved.iter().any(|p| fs::read(p).unwrap() == *bad));
    }
    // The empty store works and is persisted afresh.
    let mut s = open(&t.0).unwrap();
    s.set("b", "2", Origin::Host, true, None).unwrap();
    assert_eq!(keys(&open(&t.0).unwrap()), ["b"]);
}

#[test]
fn unreadable_file_is_an_error_and_kept() {
    let t = TempDir::new();
    fs::create_dir_all(t.0.join("params")).unwrap();
    let e = open(&t.0).unwrap_err();
    assert!(e.to_string().starts_with("reading "), "{e}");
    assert!(t.0.join("params").is_dir());
    assert!(corrupt_files(&t.0).is_empty());
}

#[test]
fn leftover_tmp_is_removed() {
    let t = TempDir::new();
    open(&t.0)
        .unwrap()
        .set("a", "1", Origin::Guest, false, None)
        .unwrap();
    fs::write(t.0.join("params.tmp"), "half a wri").unwrap();
    let s = open(&t.0).unwrap();
    assert!(!t.0.join("params.tmp").exists());
    assert_eq!(keys(&s), ["a"]);
}

#[test]
fn failed_persist_leaves_memory_and_disk_unchanged() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
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
    assert!(s.push_outbox(event()).is_err());
    assert!(s.delivered(&[1]).is_err());
    assert_eq!((s.params(), s.outbox()), (&params[..], &outbox[..]));
    fs::remove_dir(t.0.join("params.tmp")).unwrap();
    let s2 = open(&t.0).unwrap();
    assert_eq!((s2.params(), s2.outbox()), (&params[..], &outbox[..]));
    assert_eq!(s.push_outbox(event()).ok(), Some(2));
}

#[test]
fn every_record_kind_survives_a_reopen() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
    let kinds = [
        param("k", "v \"1\"\né"),
        Record::Param {
            key: "h".into(),
            value: String::new(),
            origin: Origin::Host,
        },
        Record::ParamDeleted { key: "k".into() },
        Record::ParamsDeleted,
        event(),
        Record::SessionLock,
        Record::SessionUnlock,
    ];
    for r in &kinds {
        s.push_outbox(r.clone()).unwrap();
    }
    let s = open(&t.0).unwrap();
    let got: Vec<(u64, &Record)> = s.outbox().iter().map(|p| (p.seq, &p.record)).collect();
    let want: Vec<(u64, &Record)> = (1..).zip(kinds.iter()).collect();
    assert_eq!(got, want);
    assert!(corrupt_files(&t.0).is_empty());
}

#[test]
fn version_one_file_is_read_through_the_decoder() {
    let t = TempDir::new();
    fs::create_dir_all(&t.0).unwrap();
    let v1 = r#"{"version":1,"next_seq":5,
        "params":[{"key":"a","value":"1","origin":"host","time":7,"sent":true}],
        "outbox":[{"seq":2,"msg":{"gone":"x"}},{"seq":3,"msg":{"unknown":true}},
                  {"seq":4,"msg":{"gone":"y"}}]}"#;
    fs::write(t.0.join("params"), v1).unwrap();
    let mut s = open(&t.0).unwrap();
    assert!(
        corrupt_files(&t.0).is_empty(),
        "a version-1 file is not corrupt"
    );
    assert_eq!(keys(&s), ["a"]);
    assert_eq!(
        (s.get("a").unwrap().time, s.get("a").unwrap().sent),
        (7, true)
    );
    let pending: Vec<(u64, Option<&str>)> =
        s.outbox().iter().map(|p| (p.seq, p.record.key())).collect();
    assert_eq!(
        pending,
        [(2, Some("x")), (4, Some("y"))],
        "seq 3 is dropped"
    );
    // Untouched until the next change, which writes version 2 and keeps counting.
    assert_eq!(fs::read_to_string(t.0.join("params")).unwrap(), v1);
    assert_eq!(s.push_outbox(event()).unwrap(), 5);
    let doc: Value = serde_json::from_slice(&fs::read(t.0.join("params")).unwrap()).unwrap();
    assert_eq!(doc["version"], 2);
    assert_eq!(
        doc["outbox"][0],
        json!({"seq": 2, "kind": "param-deleted", "key": "x"})
    );
    let s2 = open(&t.0).unwrap();
    assert_eq!((s2.params(), s2.outbox()), (s.params(), s.outbox()));
}

#[test]
fn forget_pending_drops_param_news_by_key() {
    let t = TempDir::new();
    let mut s = open(&t.0).unwrap();
    for r in [
        param("a", "1"),
        Record::ParamDeleted { key: "b".into() },
        event(),
        param("b", "2"),
        Record::ParamsDeleted,
        param("a", "3"),
        Record::SessionLock,
    ] {
        s.push_outbox(r).unwrap();
    }
    let seqs = |s: &Store| s.outbox().iter().map(|p| p.seq).collect::<Vec<_>>();
    s.forget_pending(Some("a")).unwrap();
    assert_eq!(seqs(&s), [2, 3, 4, 5, 7]);
    s.forget_pending(Some("nope")).unwrap();
    assert_eq!(seqs(&open(&t.0).unwrap()), [2, 3, 4, 5, 7]);
    s.forget_pending(None).unwrap();
    assert_eq!(seqs(&s), [3, 5, 7], "events and params-deleted stay");
    assert_eq!(seqs(&open(&t.0).unwrap()), [3, 5, 7]);
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
