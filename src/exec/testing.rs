// SPDX-License-Identifier: Apache-2.0
//! Helpers for the tests of modules that start programs: one lock so they run one at a
//! time, scratch directories and scripts, and checks that no child is left behind.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Tests that start programs run one at a time: timing stays predictable, and no test
/// forks while another holds a script open for writing (its exec would fail ETXTBSY).
static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A new directory with an empty `hooks` directory in it.
pub fn tempdir() -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("guestd-exec-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(d.join("hooks")).unwrap();
    d
}

/// Writes `hooks/<name>` under `dir`: a shell script running `body`.
pub fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    let p = dir.join("hooks").join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// This thread has no child left, zombie or not.
pub fn assert_no_children() {
    if let Ok(c) = fs::read_to_string("/proc/thread-self/children") {
        assert_eq!(c.trim(), "", "children left");
        return;
    }
    // Without CONFIG_PROC_CHILDREN: no zombie child of this process may stay.
    let me = std::process::id().to_string();
    for _ in 0..50 {
        let zombies = fs::read_dir("/proc").unwrap().flatten().filter(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            let f: Vec<&str> = after.split_whitespace().collect();
            f.len() > 2 && f[0] == "Z" && f[1] == me
        });
        if zombies.count() == 0 {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("zombie children left");
}

/// Process `pid` is gone (or a zombie of init), waiting up to 2 s for it.
pub fn gone(pid: &str) -> bool {
    let stat = format!("/proc/{}/stat", pid.trim());
    (0..100).any(|_| {
        let s = fs::read_to_string(&stat).unwrap_or_default();
        let dead = s.rsplit_once(") ").is_none_or(|(_, r)| r.starts_with('Z'));
        if !dead {
            std::thread::sleep(Duration::from_millis(20));
        }
        dead
    })
}
