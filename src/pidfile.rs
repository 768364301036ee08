// SPDX-License-Identifier: Apache-2.0
//! The pid file (`-f`): held with an exclusive flock(2) for the agent's life, so a second
//! guestd is refused while the first lives, and a stale file left by a crash is reused.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::sys;

/// Why the pid file could not be taken.
#[derive(Debug)]
pub enum Error {
    Io { path: PathBuf, source: io::Error },
    Held { path: PathBuf, pid: Option<i32> },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, source } => write!(f, "pid file {}: {source}", path.display()),
            Error::Held {
                path,
                pid: Some(pid),
            } => {
                write!(f, "another guestd (pid {pid}) holds {}", path.display())
            }
            Error::Held { path, pid: None } => {
                write!(f, "another guestd holds {}", path.display())
            }
        }
    }
}

impl std::error::Error for Error {}

/// A held pid file; dropping it removes the file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _file: File,
}

impl PidFile {
    pub fn acquire(path: &Path) -> Result<PidFile, Error> {
        let io_err = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        // A holder that exits removes the file while still holding the lock, so a file
        // locked here may already be unlinked: lock again until the locked file is the one
        // at `path`.
        for _ in 0..10 {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map_err(io_err)?;
            if !sys::flock_exclusive_nonblocking(file.as_fd()).map_err(io_err)? {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(Error::Held {
                    path: path.to_owned(),
                    pid: text.trim().parse().ok(),
                });
            }
            let same = match (file.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                _ => false,
            };
            if !same {
                continue;
            }
            file.set_len(0).map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            writeln!(file, "{}", std::process::id()).map_err(io_err)?;
            return Ok(PidFile {
                path: path.to_owned(),
                _file: file,
            });
        }
        Err(io_err(io::Error::other("the file keeps being replaced")))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_stale_file_reused() {
        let path = std::env::temp_dir().join(format!("guestd-pid-{}", std::process::id()));
        std::fs::write(&path, "999999\n").unwrap(); // stale: nobody holds the lock
        let held = PidFile::acquire(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        let e = PidFile::acquire(&path).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "another guestd (pid {}) holds {}",
                std::process::id(),
                path.display()
            )
        );
        drop(held);
        assert!(!path.exists());
    }
}
