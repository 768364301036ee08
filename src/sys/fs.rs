// SPDX-License-Identifier: Apache-2.0
//! File-system calls that std does not offer: statvfs(3) and flock(2).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::cvt;

/// The parts of `struct statvfs` that file-system sizes need.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    /// Fragment size: the unit of `blocks`, `bfree` and `bavail`.
    pub frsize: u64,
    /// Size of the file system, in fragments.
    pub blocks: u64,
    /// Free fragments, including those reserved for root.
    pub bfree: u64,
    /// Free fragments available to unprivileged users.
    pub bavail: u64,
}

/// statvfs(3) on `path`.
pub fn statvfs(path: &Path) -> io::Result<FsStats> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all-zero is a valid value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated string and `st` a writable statvfs, both outliving the
    // call; the result is checked.
    cvt(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    Ok(FsStats {
        frsize: st.f_frsize,
        blocks: st.f_blocks,
        bfree: st.f_bfree,
        bavail: st.f_bavail,
    })
}

/// Takes an exclusive, non-blocking flock(2) on `fd`. `Ok(false)` when another open file
/// description holds it.
pub fn flock_exclusive_nonblocking(fd: BorrowedFd<'_>) -> io::Result<bool> {
    // SAFETY: flock takes an fd and flags only; the fd is borrowed for the call.
    match cvt(unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}
