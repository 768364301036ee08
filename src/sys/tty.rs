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
