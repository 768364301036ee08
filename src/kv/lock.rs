// SPDX-License-Identifier: Apache-2.0
//! The store's lock: an exclusive flock(2) on `<dir>/lock`, held by whoever opens and mutates
//! the store (the agent for its life, or the CLI for one operation when no agent runs).

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::file::{ensure_dir, io_err};
use super::store::Error;
use crate::sys;

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
    use std::fs;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn lock_is_exclusive() {
        let base = std::env::temp_dir().join(format!("guestd-kv-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let dir = base.join("state");
        let lock = StoreLock::try_lock(&dir).unwrap().expect("first lock");
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        assert_eq!(
            fs::metadata(dir.join("lock")).unwrap().mode() & 0o777,
            0o600
        );
        assert!(StoreLock::try_lock(&dir).unwrap().is_none());
        drop(lock);
        assert!(StoreLock::try_lock(&dir).unwrap().is_some());
        let _ = fs::remove_dir_all(&base);
    }
}
