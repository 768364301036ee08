// SPDX-License-Identifier: Apache-2.0
//! A `CLOCK_MONOTONIC` timer file descriptor, see timerfd_create(2).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::time::Duration;

use super::cvt;

/// An owned, non-blocking, close-on-exec timerfd on `CLOCK_MONOTONIC`. Dropping it closes it.
#[derive(Debug)]
pub struct TimerFd(File);

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    }
}

impl TimerFd {
    /// timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC).
    pub fn new() -> io::Result<TimerFd> {
        // SAFETY: no pointers are passed; the return value is checked before use.
        let fd = cvt(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by timerfd_create and is owned by nobody else.
        Ok(TimerFd(unsafe { File::from_raw_fd(fd) }))
    }

    /// Arms the timer to fire once at the absolute monotonic time `at` (a time in the past fires
    /// at once), or disarms it with `None`.
    pub fn set_deadline(&self, at: Option<Duration>) -> io::Result<()> {
        let value = match at {
            // A zero it_value disarms, so a deadline at exactly 0 is nudged to 1 ns.
            Some(at) => timespec(at.max(Duration::from_nanos(1))),
            None => timespec(Duration::ZERO),
        };
        let spec = libc::itimerspec {
            it_interval: timespec(Duration::ZERO),
            it_value: value,
        };
        // SAFETY: `spec` is a valid itimerspec that outlives the call; the old-value pointer is
        // null, which timerfd_settime accepts; the fd is owned by `self`; the result is checked.
        cvt(unsafe {
            libc::timerfd_settime(
                self.0.as_raw_fd(),
                libc::TFD_TIMER_ABSTIME,
                &spec,
                std::ptr::null_mut(),
            )
        })?;
        Ok(())
    }

    /// Reads and clears the expiration count; 0 when the timer has not fired (EAGAIN).
    pub fn read(&self) -> io::Result<u64> {
        let mut buf = [0u8; 8];
        match (&self.0).read(&mut buf) {
            Ok(8) => Ok(u64::from_ne_bytes(buf)),
            Ok(_) => Ok(0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for TimerFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for TimerFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::{POLLIN, monotonic_now, poll, pollfd};

    #[test]
    fn fires_at_deadline_and_counts_once() {
        let t = TimerFd::new().unwrap();
        assert_eq!(t.read().unwrap(), 0);
        t.set_deadline(Some(monotonic_now() + Duration::from_millis(50)))
            .unwrap();
        let mut fds = [pollfd(t.as_raw_fd(), POLLIN)];
        assert_eq!(poll(&mut fds, Some(Duration::from_secs(5))).unwrap(), 1);
        assert_eq!(t.read().unwrap(), 1);
        assert_eq!(t.read().unwrap(), 0);
    }

    #[test]
    fn disarmed_timer_never_fires() {
        let t = TimerFd::new().unwrap();
        t.set_deadline(Some(monotonic_now() + Duration::from_millis(20)))
            .unwrap();
        t.set_deadline(None).unwrap();
        let mut fds = [pollfd(t.as_raw_fd(), POLLIN)];
        assert_eq!(poll(&mut fds, Some(Duration::from_millis(100))).unwrap(), 0);
    }
}
