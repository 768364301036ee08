// SPDX-License-Identifier: Apache-2.0
//! Facts about the guest, one module per family, as typed structs that carry what any
//! protocol reports (each protocol maps them to its own messages). Each module has pure
//! parsers over text or bytes, and a reader that takes the root directory to read under (`/`
//! in production, a fixture tree under `tests/fixtures/` in tests). statvfs(3) is made on the
//! mount point joined onto the root, so a fixture tree is measured too; getifaddrs(3) and
//! uname(2), which no root can redirect, are made by the caller and passed in. The arithmetic
//! on every call's result is a pure function.

pub mod apps;
pub mod bdb;
pub mod blockdev;
pub mod calendar;
pub mod containers;
pub mod cpus;
pub mod disks;
mod health;
pub mod hostname;
pub mod memblocks;
pub mod memory;
pub mod mounts;
pub mod net;
pub mod osinfo;
pub mod route;
pub mod rpmdb;
pub mod sqlite;
pub mod stats;
pub mod timezone;
pub mod users;

pub use health::Health;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// A fact source that could not be read or parsed. The message names the path.
#[derive(Debug)]
pub enum Error {
    /// Reading `path` failed.
    Read { path: PathBuf, source: io::Error },
    /// `path` was read but its content is not what the parser expects.
    Parse { path: PathBuf, reason: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read { path, source } => write!(f, "reading {}: {source}", path.display()),
            Error::Parse { path, reason } => write!(f, "parsing {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Read { source, .. } => Some(source),
            Error::Parse { .. } => None,
        }
    }
}

impl Error {
    /// Whether the error is "the file does not exist" (many sources are optional).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Read { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// `root` joined with a path given relative to `/` (a leading `/` is ignored).
pub fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel.trim_start_matches('/'))
}

/// The numbers of the entries of directory `dir` whose names `number` accepts (`cpu3`,
/// `memory12`), sorted, at most `max` of them.
pub fn numbered_entries<T: Ord>(
    dir: &Path,
    number: impl Fn(&str) -> Option<T>,
    max: usize,
) -> Result<Vec<T>, Error> {
    let read_err = |source| Error::Read {
        path: dir.to_owned(),
        source,
    };
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        if let Some(id) = entry
            .map_err(read_err)?
            .file_name()
            .to_str()
            .and_then(&number)
        {
            ids.push(id);
            if ids.len() >= max {
                break;
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Largest file a fact reader loads; every source guestd reads is far smaller.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Reads `rel` under `root` as bytes, at most `MAX_FILE` of them.
pub fn read_bytes(root: &Path, rel: &str) -> Result<Vec<u8>, Error> {
    let mut buf = Vec::new();
    read_bytes_into(root, rel, &mut buf)?;
    Ok(buf)
}

/// Reads `rel` under `root` into `buf` (cleared first, its capacity kept for the next read),
/// at most `MAX_FILE` bytes.
pub fn read_bytes_into(root: &Path, rel: &str, buf: &mut Vec<u8>) -> Result<(), Error> {
    use std::io::Read;
    buf.clear();
    let path = under(root, rel);
    let mut file = std::fs::File::open(&path).map_err(|source| Error::Read {
        path: path.clone(),
        source,
    })?;
    // Read in chunks rather than with `read_to_end`, whose growth and probing cost more
    // than the small /proc and /sys files themselves.
    let limit = usize::try_from(MAX_FILE).unwrap_or(usize::MAX);
    let mut chunk = [0u8; 4096];
    while buf.len() < limit {
        match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                let take = n.min(limit - buf.len());
                buf.extend_from_slice(chunk.get(..take).unwrap_or_default());
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => return Err(Error::Read { path, source }),
        }
    }
    Ok(())
}

/// Reads `rel` under `root` as text (invalid UTF-8 is replaced, never an error).
pub fn read_text(root: &Path, rel: &str) -> Result<String, Error> {
    let bytes = read_bytes(root, rel)?;
    Ok(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Like `read_text`, but a missing file is `Ok(None)`.
pub fn read_text_opt(root: &Path, rel: &str) -> Result<Option<String>, Error> {
    match read_text(root, rel) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The directory holding the fixture trees, for unit tests.
#[cfg(test)]
pub(crate) fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
