// SPDX-License-Identifier: Apache-2.0
//! Raw mode for serial devices, see termios(3).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use super::cvt;

/// Puts the terminal `fd` in raw mode (cfmakeraw(3)): no echo, no line discipline, 8-bit
/// characters, no output processing, so JSON lines pass through byte for byte.
pub fn set_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: termios is plain old data; tcgetattr fills it in.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a writable termios; the fd is borrowed; the result is checked.
    cvt(unsafe { libc::tcgetattr(raw, &mut t) })?;
    // SAFETY: `t` is a valid termios obtained from tcgetattr.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_cflag |= libc::CLOCAL | libc::CREAD;
    // SAFETY: `t` is a valid termios; the fd is borrowed; the result is checked.
    cvt(unsafe { libc::tcsetattr(raw, libc::TCSANOW, &t) })?;
    Ok(())
}

/// Opens a new pseudo-terminal (posix_openpt(3), grantpt, unlockpt, ptsname_r): the master
/// side and the path of the slave. The serial channel is tested against such a real tty.
pub fn open_pty() -> io::Result<(std::fs::File, std::path::PathBuf)> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointers are passed; the returned fd is checked before use.
    let fd = cvt(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: `fd` was just returned by posix_openpt and is owned by nobody else; the File
    // closes it on every path below.
    let master = unsafe { std::fs::File::from_raw_fd(fd) };
    // SAFETY: `fd` is a valid pty master for the calls below; results are checked.
    cvt(unsafe { libc::grantpt(fd) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::unlockpt(fd) })?;
    let mut buf = [0 as libc::c_char; 128];
    // SAFETY: `buf` is writable for its full length, which is passed; the result is checked
    // (ptsname_r returns an error number, not -1).
    let ret = unsafe { libc::ptsname_r(fd, buf.as_mut_ptr(), buf.len()) };
    if ret != 0 {
        return Err(io::Error::from_raw_os_error(ret));
    }
    let name = super::c_chars_to_string(&buf);
    Ok((master, std::path::PathBuf::from(name)))
}
