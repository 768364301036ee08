// SPDX-License-Identifier: Apache-2.0
//! Blocked signals delivered through a signal file descriptor, see signalfd(2).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, RawFd};

use super::cvt;

/// The signals guestd handles in its loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
    Hup,
    Io,
    /// The real-time signal virtio ports raise (`F_SETSIG`): queued one per event, each naming
    /// its descriptor. SIGIO still comes when that queue overflows.
    PortIo,
    Child,
    Other(u32),
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Int => libc::SIGINT,
            Signal::Hup => libc::SIGHUP,
            Signal::Io => libc::SIGIO,
            Signal::PortIo => libc::SIGRTMIN(),
            Signal::Child => libc::SIGCHLD,
            Signal::Other(n) => libc::c_int::try_from(n).unwrap_or(0),
        }
    }

    fn from_number(n: u32) -> Signal {
        match libc::c_int::try_from(n).unwrap_or(0) {
            libc::SIGTERM => Signal::Term,
            libc::SIGINT => Signal::Int,
            libc::SIGHUP => Signal::Hup,
            libc::SIGIO => Signal::Io,
            libc::SIGCHLD => Signal::Child,
            rt if rt == libc::SIGRTMIN() => Signal::PortIo,
            _ => Signal::Other(n),
        }
    }
}

/// An owned, non-blocking signalfd. Creating it blocks the given signals for the calling thread
/// (guestd has only one), so they are read here instead of interrupting the process.
#[derive(Debug)]
pub struct SignalFd(File);

impl SignalFd {
    /// Blocks `signals` (sigprocmask(2)), resets their dispositions to the default, and opens a
    /// signalfd that reports them.
    pub fn new(signals: &[Signal]) -> io::Result<SignalFd> {
        // SAFETY: sigset_t is plain old data; sigemptyset below initialises it properly.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, writable sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for s in signals {
            // SAFETY: `set` is a valid sigset_t; the signal number is checked by the kernel
            // and an invalid one makes the call return -1, which is checked.
            cvt(unsafe { libc::sigaddset(&mut set, s.number()) })?;
        }
        // SAFETY: `set` is a valid sigset_t and the old-set pointer may be null.
        cvt(unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) })?;
        // Blocked now, the signals are taken back to their default action: one ignored by
        // whoever started guestd (nohup's SIGHUP, an ignored SIGCHLD that would reap the
        // hooks' children behind our back) would otherwise never reach the signalfd.
        for sig in signals {
            // SAFETY: SIG_DFL is a valid disposition for every signal number the kernel
            // accepts here; no handler function is installed; the result is checked.
            if unsafe { libc::signal(sig.number(), libc::SIG_DFL) } == libc::SIG_ERR {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is a valid sigset_t; -1 asks for a new fd; the result is checked.
        let fd = cvt(unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
        Ok(SignalFd(unsafe { File::from_raw_fd(fd) }))
    }

    /// Reads every pending signal (standard signals coalesce: one entry per kind).
    pub fn read_all(&self) -> io::Result<Vec<Signal>> {
        Ok(self.read_with_fd()?.into_iter().map(|(s, _)| s).collect())
    }

    /// Like `read_all`, with the descriptor a `PortIo` signal concerns (the kernel names it
    /// for descriptors set up by `enable_sigio`).
    pub fn read_with_fd(&self) -> io::Result<Vec<(Signal, Option<RawFd>)>> {
        const INFO: usize = std::mem::size_of::<libc::signalfd_siginfo>();
        let mut out = Vec::new();
        let mut buf = [0u8; INFO * 8];
        let field =
            |c: &[u8], at: usize| i32::from_ne_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
        loop {
            match (&self.0).read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => {
                    for chunk in buf[..n].chunks_exact(INFO) {
                        // signalfd_siginfo: ssi_signo (u32) at 0, ssi_code at 8, ssi_fd at 20.
                        let signo = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
                        let (code, fd) = (field(chunk, 8), field(chunk, 20));
                        let sig = Signal::from_number(signo);
                        // POLL_IN (1) to POLL_HUP (6): the kernel filled in si_fd.
                        let known = sig == Signal::PortIo && (1..=6).contains(&code);
                        out.push((sig, known.then_some(fd)));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for SignalFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}
