// SPDX-License-Identifier: Apache-2.0
//! The store's file `<dir>/params` on disk: the 0700 directory, the bounded read on open (a
//! leftover `params.tmp` removed, a corrupt file moved aside), and the crash-safe replace on
//! every change (write `params.tmp`, fsync, rename; the caller then fsyncs the directory).

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::doc::{Data, LegacyDecoder};
use super::store::{Error, now};

/// Largest `params` file read or written; a full store of plain values is about 45 MiB.
pub(super) const MAX_FILE: usize = 64 << 20;

pub(super) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist.
pub(super) fn ensure_dir(dir: &Path) -> Result<(), Error> {
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

pub(super) fn sync_dir(dir: &Path) -> Result<(), Error> {
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

/// Reads the store in `dir` (created 0700 if missing); no `params` file is an empty store.
/// A `params` that does not parse is moved aside and logged, and the store starts empty;
/// version-1 outbox entries `legacy` cannot decode are logged, naming their seq, and dropped.
pub(super) fn load(dir: &Path, legacy: LegacyDecoder) -> Result<Data, Error> {
    ensure_dir(dir)?;
    let tmp = dir.join("params.tmp");
    match fs::remove_file(&tmp) {
        Ok(()) => log::warn!("removed {} left by an interrupted write", tmp.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => log::warn!("removing {}: {e}", tmp.display()),
    }
    let path = dir.join("params");
    let file = match File::open(&path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Data::empty()),
        file => file.map_err(io_err("opening", &path))?,
    };
    let mut bytes = Vec::new();
    (file.take(MAX_FILE as u64 + 1).read_to_end(&mut bytes)).map_err(io_err("reading", &path))?;
    let parsed = if bytes.len() > MAX_FILE {
        Err(format!("larger than {MAX_FILE} bytes"))
    } else {
        Data::parse(&bytes, legacy)
    };
    match parsed {
        Ok(p) => {
            for d in &p.dropped {
                log::error!(
                    "the param store {}: dropped version-1 outbox entry seq {} ({}); the host \
                     will not receive it",
                    path.display(),
                    d.seq,
                    d.why
                );
            }
            Ok(p.data)
        }
        Err(why) => {
            move_aside(dir, &path, &why)?;
            Ok(Data::empty())
        }
    }
}

/// Replaces `<dir>/params` with `bytes` atomically: `params.tmp` written and fsynced, then
/// renamed over it. On error `params` is unchanged and no `params.tmp` is left. The caller
/// fsyncs `dir` afterwards to make the rename durable.
pub(super) fn replace(dir: &Path, bytes: &[u8]) -> Result<(), Error> {
    if bytes.len() > MAX_FILE {
        return Err(Error::Full(format!(
            "the store would exceed {MAX_FILE} bytes"
        )));
    }
    ensure_dir(dir)?;
    let (tmp, path) = (dir.join("params.tmp"), dir.join("params"));
    let res = write_synced(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, &path).map_err(io_err("renaming", &tmp)));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
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
