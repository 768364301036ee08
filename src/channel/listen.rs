// SPDX-License-Identifier: Apache-2.0
//! Listening UNIX sockets (the `unix-listen:PATH` channel and the control socket). A socket
//! appears at its path only when it is ready: it is bound under a temporary name, given its
//! mode and group, put into listen(2), and only then rename(2)d into place, so whoever sees
//! the file can connect.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::{Error, err};
use crate::sys;

/// A listening socket that removes its path when dropped.
#[derive(Debug)]
pub struct Listener {
    sock: UnixListener,
    path: PathBuf,
}

impl Listener {
    /// Binds `path`: mode 0600, or 0660 with group `gid`; non-blocking. A stale socket left
    /// by a previous run is replaced; a live one, or any other kind of file, is an error.
    pub fn bind(path: &Path, gid: Option<u32>) -> Result<Listener, Error> {
        let refuse = |kind, why| Err(err("listening on", path)(io::Error::new(kind, why)));
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return refuse(io::ErrorKind::AddrInUse, "another process is listening");
                }
            }
            Ok(_) => {
                let why = "the path exists and is not a socket";
                return refuse(io::ErrorKind::AlreadyExists, why);
            }
            Err(_) => {}
        }
        let tmp = temp_name(path);
        let _ = std::fs::remove_file(&tmp);
        let ready = bind_ready(&tmp, gid).and_then(|sock| {
            std::fs::rename(&tmp, path)
                .map_err(err("renaming into place", &tmp))
                .map(|()| sock)
        });
        match ready {
            Ok(sock) => Ok(Listener {
                sock,
                path: path.to_owned(),
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn socket(&self) -> &UnixListener {
        &self.sock
    }

    /// Accepts a pending peer, non-blocking. `Ok(None)` when there is none (or it gave up).
    pub fn accept(&self) -> io::Result<Option<UnixStream>> {
        match self.sock.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(true)?;
                Ok(Some(s))
            }
            Err(e) if crate::sys::no_client_yet(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `<dir>/.<name>.<pid>.tmp`: on the same file system, so the rename is atomic.
fn temp_name(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = format!(".{}.{}.tmp", name.unwrap_or_default(), std::process::id());
    path.with_file_name(tmp)
}

/// Binds and listens on `tmp`, created 0600 (umask 0177, so no other user can connect in
/// between), then given group `gid` and mode 0660 when a group is named.
fn bind_ready(tmp: &Path, gid: Option<u32>) -> Result<UnixListener, Error> {
    let sock = sys::with_umask(0o177, || UnixListener::bind(tmp)).map_err(err("binding", tmp))?;
    let mode = match gid {
        Some(gid) => {
            sys::chgrp(tmp, gid).map_err(err("changing the group of", tmp))?;
            0o660
        }
        None => 0o600,
    };
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(mode))
        .map_err(err("setting permissions of", tmp))?;
    sock.set_nonblocking(true)
        .map_err(err("listening on", tmp))?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("guestd-listen-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn appears_ready_with_its_mode_and_replaces_a_stale_socket() {
        let d = dir("stale");
        let path = d.join("s.sock");
        drop(UnixListener::bind(&path).unwrap());
        let l = Listener::bind(&path, None).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        // No temporary name is left behind.
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        assert!(l.accept().unwrap().is_none());
        let _peer = UnixStream::connect(&path).unwrap();
        assert!(l.accept().unwrap().is_some());
        // A second listener on the same live path is refused.
        let e = Listener::bind(&path, None).unwrap_err();
        assert!(
            e.to_string().contains("another process is listening"),
            "{e}"
        );
        drop(l);
        assert!(!path.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn refuses_a_path_that_is_not_a_socket() {
        let d = dir("file");
        let path = d.join("s.sock");
        std::fs::write(&path, "keep me").unwrap();
        let e = Listener::bind(&path, None).unwrap_err();
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
