// SPDX-License-Identifier: Apache-2.0
//! File-system calls that std does not offer: statvfs(3), flock(2), and the freeze, thaw and
//! trim ioctls (FIFREEZE, FITHAW, FITRIM: ioctl_fs(2), linux/fs.h).

use std::ffi::CString;
use std::fs::File;
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

/// An `_IOWR(ty, nr, size)` ioctl request number, in the encoding of the architecture.
const fn iowr(ty: u8, nr: u8, size: usize) -> u32 {
    // powerpc, mips and sparc use 3 direction bits (read 2, write 4) and 13 size bits; the
    // others (x86, arm, riscv, s390, loongarch) 2 direction bits (write 1, read 2) and 14.
    #[cfg(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    ))]
    const READ_WRITE: u32 = (2 | 4) << 29;
    #[cfg(not(any(
        target_arch = "powerpc",
        target_arch = "powerpc64",
        target_arch = "mips",
        target_arch = "mips64",
        target_arch = "sparc",
        target_arch = "sparc64"
    )))]
    const READ_WRITE: u32 = (1 | 2) << 30;
    #[allow(clippy::cast_possible_truncation)] // the sizes below are a few bytes
    let size = size as u32;
    READ_WRITE | (size << 16) | ((ty as u32) << 8) | nr as u32
}

/// `struct fstrim_range` (linux/fs.h).
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

const FIFREEZE: u32 = iowr(b'X', 119, std::mem::size_of::<libc::c_int>());
const FITHAW: u32 = iowr(b'X', 120, std::mem::size_of::<libc::c_int>());
const FITRIM: u32 = iowr(b'X', 121, std::mem::size_of::<FstrimRange>());

/// The request type of ioctl(2) in this libc (`c_int` in musl, `c_ulong` in glibc), from the
/// kernel's 32-bit number (bit-preserving, as the kernel reads it).
#[allow(clippy::cast_possible_wrap, clippy::cast_lossless)]
fn request(nr: u32) -> libc::Ioctl {
    nr as libc::Ioctl
}

/// FIFREEZE on the file system holding `dir` (an open directory): flushes it and blocks every
/// write to it until FITHAW. Fails with `EBUSY` when it is frozen already and `EOPNOTSUPP`
/// when the file system cannot be frozen; it may take a while (dirty data is written first).
pub fn freeze(dir: &File) -> io::Result<()> {
    // SAFETY: FIFREEZE takes no argument memory; the fd is borrowed for the call and the
    // result is checked.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), request(FIFREEZE), 0) }).map(drop)
}

/// FITHAW on the file system holding `dir`: undoes one FIFREEZE. Fails with `EINVAL` when it
/// is not frozen.
pub fn thaw(dir: &File) -> io::Result<()> {
    // SAFETY: FITHAW takes no argument memory; the fd is borrowed for the call and the result
    // is checked.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), request(FITHAW), 0) }).map(drop)
}

/// FITRIM over the whole file system holding `dir`, discarding free extents of at least
/// `minlen` bytes: the bytes trimmed, and the minimum the file system used (it may raise it).
pub fn trim(dir: &File, minlen: u64) -> io::Result<(u64, u64)> {
    let mut range = FstrimRange {
        start: 0,
        len: u64::MAX,
        minlen,
    };
    // SAFETY: `range` is a valid, writable fstrim_range that outlives the call, which reads
    // and updates it; the fd is borrowed for the call and the result is checked.
    cvt(unsafe { libc::ioctl(dir.as_raw_fd(), request(FITRIM), &mut range) })?;
    Ok((range.len, range.minlen))
}

/// The (major, minor) of a `dev_t` (glibc's and musl's 64-bit encoding).
pub fn dev_major_minor(dev: u64) -> (u32, u32) {
    #[allow(clippy::cast_possible_truncation)] // each part is masked to 32 bits first
    let major = (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff)) as u32;
    #[allow(clippy::cast_possible_truncation)]
    let minor = (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32;
    (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_fs_h() {
        if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            assert_eq!(FIFREEZE, 0xC004_5877);
            assert_eq!(FITHAW, 0xC004_5878);
            assert_eq!(FITRIM, 0xC018_5879);
        }
    }

    #[test]
    fn device_numbers_split_like_the_kernel() {
        assert_eq!(dev_major_minor(0xfc01), (252, 1));
        assert_eq!(dev_major_minor(0x0803), (8, 3));
        // major 259 (block extended), minor 1048575: both parts use their high bits.
        let dev = (259u64 & 0xfff) << 8 | (0xfffffu64 & 0xff) | (0xfffffu64 & !0xff) << 12;
        assert_eq!(dev_major_minor(dev), (259, 0xfffff));
    }

    #[test]
    fn thaw_of_a_file_system_that_is_not_frozen_fails() {
        let dir = File::open(std::env::temp_dir()).unwrap();
        let e = thaw(&dir).unwrap_err();
        // EINVAL when not frozen; EPERM without CAP_SYS_ADMIN; EOPNOTSUPP on some.
        assert!(e.raw_os_error().is_some(), "{e}");
    }
}
