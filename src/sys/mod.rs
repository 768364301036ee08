// SPDX-License-Identifier: Apache-2.0
//! Every `unsafe` block and every raw libc call of guestd lives under this module, behind small
//! fd-owning types and functions that return `io::Result`. Nothing here panics.

mod fs;
mod net;
#[cfg(all(target_env = "musl", panic = "abort"))]
mod nounwind;
mod process;
mod signalfd;
mod sock;
mod time;
mod timerfd;
mod tty;
mod vsock;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

pub use fs::{FsStats, dev_major_minor, flock_exclusive_nonblocking, freeze, statvfs, thaw, trim};
pub use net::{InterfaceAddress, interface_addresses, prefix_len};
pub use process::{
    ExitStatus, SIGKILL, SIGTERM, Spawned, kill_group, signal, spawn, spawn_with, sync_and_reboot,
    try_wait, wait,
};
pub use signalfd::{Signal, SignalFd};
pub use sock::{PeerCred, chgrp, geteuid, peer_cred};
pub use time::{RtcTime, rtc_read, rtc_set, set_realtime};
pub use timerfd::TimerFd;
pub use tty::{open_pty, set_raw};
pub use vsock::{VSOCK_CID_ANY, VsockListener, VsockStream};

/// Turns a libc return value of -1 into `io::Error::last_os_error()`.
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> io::Result<T> {
    if ret.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

pub(crate) trait IsMinusOne {
    fn is_minus_one(&self) -> bool;
}

impl IsMinusOne for i32 {
    fn is_minus_one(&self) -> bool {
        *self == -1
    }
}

impl IsMinusOne for isize {
    fn is_minus_one(&self) -> bool {
        *self == -1
    }
}

/// The `pollfd` entry type, re-exported so callers need not name libc.
pub type PollFd = libc::pollfd;

pub const POLLIN: i16 = libc::POLLIN;
pub const POLLOUT: i16 = libc::POLLOUT;
pub const POLLHUP: i16 = libc::POLLHUP;
pub const POLLERR: i16 = libc::POLLERR;
pub const POLLNVAL: i16 = libc::POLLNVAL;

/// A `pollfd` for `fd` (or -1 for an unused slot) asking for `events`.
pub fn pollfd(fd: RawFd, events: i16) -> PollFd {
    PollFd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) over `fds`, retrying on EINTR. `timeout` of `None` waits forever; a sub-millisecond
/// timeout is rounded up so it never turns into a busy poll.
pub fn poll(fds: &mut [PollFd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms: libc::c_int = match timeout {
        None => -1,
        Some(t) => {
            let ms = t.as_nanos().div_ceil(1_000_000);
            libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
        }
    };
    let nfds = libc::nfds_t::try_from(fds.len())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: `fds` is a valid, exclusively borrowed slice of `nfds` pollfd structs that
        // outlives the call; the kernel writes only their `revents` fields.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), nfds, ms) };
        match cvt(ret) {
            Ok(n) => return Ok(usize::try_from(n).unwrap_or(0)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The events `fd` reports right now (poll with a zero timeout), e.g. to see whether a virtio
/// port's host side is connected (`POLLHUP` absent).
pub fn poll_now(fd: BorrowedFd<'_>, events: i16) -> io::Result<i16> {
    let mut fds = [pollfd(fd.as_raw_fd(), events)];
    poll(&mut fds, Some(Duration::ZERO))?;
    Ok(fds[0].revents)
}

/// fcntl(2) `F_SETSIG` (linux/fcntl.h, the same on every architecture); the libc crate does
/// not export it for every target.
const F_SETSIG: libc::c_int = 10;

/// Makes the process the owner of `fd` and turns on `O_ASYNC`, so the kernel signals when the
/// file's state changes (fcntl(2) `F_SETOWN`, `F_SETSIG`, `F_SETFL`). For a virtio port this
/// fires on host connect, on data, and on host disconnect. The signal is the real-time
/// `SIGRTMIN` (`Signal::PortIo`): real-time signals queue, one per event, each naming its
/// descriptor, so with several ports none is lost; when that queue overflows the kernel
/// sends plain SIGIO, which names none.
pub fn enable_sigio(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_SETSIG takes an integer argument and touches no memory of ours; the result
    // is checked.
    cvt(unsafe { libc::fcntl(raw, F_SETSIG, libc::SIGRTMIN()) })?;
    // SAFETY: F_SETOWN takes an integer argument and touches no memory of ours; `raw` is a
    // live descriptor borrowed for the duration of the call; the result is checked.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETOWN, libc::getpid()) })?;
    // SAFETY: F_GETFL takes no argument and touches no memory; the result is checked.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    // SAFETY: F_SETFL takes an integer argument and touches no memory; the result is checked.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_ASYNC | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Turns `O_ASYNC` on or off (fcntl(2) `F_SETFL`): a port that `enable_sigio` set up
/// signals state changes only while it is on.
pub fn set_async(fd: BorrowedFd<'_>, on: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument and touches no memory; the result is checked.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    let flags = if on {
        flags | libc::O_ASYNC
    } else {
        flags & !libc::O_ASYNC
    };
    // SAFETY: F_SETFL takes an integer argument and touches no memory; the result is checked.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, flags) })?;
    Ok(())
}

/// Whether an accept(2) error only means that no client is there to take now (none came,
/// a signal interrupted the call, or the client gave up before it was accepted).
pub fn no_client_yet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
    )
}

/// Sets `O_NONBLOCK` on `fd` (fcntl(2) `F_SETFL`).
pub fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: F_GETFL takes no argument and touches no memory; the result is checked.
    let flags = cvt(unsafe { libc::fcntl(raw, libc::F_GETFL) })?;
    // SAFETY: F_SETFL takes an integer argument and touches no memory; the result is checked.
    cvt(unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Runs `f` with the process umask set to `mask`, then restores the previous one (umask(2)).
/// guestd is single-threaded, so no other thread can create files meanwhile.
pub fn with_umask<T>(mask: u32, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps the process file-mode mask; it cannot fail.
    let old = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above; restores the mask saved before.
    unsafe { libc::umask(old) };
    out
}

/// The current `CLOCK_MONOTONIC` time, the clock every guestd timer runs on.
pub fn monotonic_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux, so
    // the call cannot fail (and on failure `ts` stays zero, which is harmless).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// The machine hardware name (`uname -m`), from uname(2).
pub fn machine() -> io::Result<String> {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname; the return value is checked.
    cvt(unsafe { libc::uname(&mut uts) })?;
    Ok(c_chars_to_string(&uts.machine))
}

/// A NUL-terminated C char array as a lossily decoded `String`.
fn c_chars_to_string(chars: &[libc::c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c.to_ne_bytes()[0])
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Clock ticks per second (`USER_HZ`, sysconf(3) `_SC_CLK_TCK`), the unit of `/proc/stat`'s
/// CPU times; 100 when sysconf cannot tell.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name, touches no memory of ours and cannot fail in a
    // way that matters here (-1 is handled below).
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|&n| n > 0).unwrap_or(100)
}
