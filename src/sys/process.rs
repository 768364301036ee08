// SPDX-License-Identifier: Apache-2.0
//! Starting, signalling and reaping child processes by hand: fork(2), execve(2), kill(2),
//! waitpid(2). `std::process::Command` would cost more binary size than guestd can spare.

use std::ffi::{CStr, CString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::ptr;

use super::{cvt, set_nonblocking};

pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGTERM: i32 = libc::SIGTERM;

/// A started child: its pid (also its process group id) and the parent's ends of its stdin,
/// stdout and stderr pipes, all non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Spawned {
    pub pid: i32,
    pub stdin: File,
    pub stdout: File,
    pub stderr: File,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit status {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// A close-on-exec pipe (pipe2(2)): (read end, write end).
fn pipe() -> io::Result<(File, File)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a writable array of two ints, as pipe2 requires; the result is checked.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

/// Runs `path` with `argv` and exactly the environment `envp` in a new process group, with
/// its stdin, stdout and stderr connected to pipes, in `cwd` if given. The signal mask is
/// emptied and SIGPIPE restored to its default in the child. A failure to execute (e.g. a
/// file that is not executable or a missing interpreter) is returned as the exec's error,
/// the child having been reaped.
pub fn spawn(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    cwd: Option<&CStr>,
) -> io::Result<Spawned> {
    spawn_with(path, argv, envp, cwd, false)
}

/// `spawn`, with the child's stderr sent into its stdout pipe when `merge_stderr` is set
/// (QGA's `capture-output: "merged"`); the returned `stderr` then reads end of file at once.
pub fn spawn_with(
    path: &CStr,
    argv: &[CString],
    envp: &[CString],
    cwd: Option<&CStr>,
    merge_stderr: bool,
) -> io::Result<Spawned> {
    // Everything the child needs is prepared here: it must not allocate after fork.
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(Some(ptr::null()))
            .collect()
    };
    let (argp, envpp) = (ptrs(argv), ptrs(envp));
    let cwd = cwd.map_or(ptr::null(), CStr::as_ptr);
    let (in_r, in_w) = pipe()?;
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    let err_end = if merge_stderr { &out_w } else { &err_w };
    let ends = [in_r.as_raw_fd(), out_w.as_raw_fd(), err_end.as_raw_fd()];
    // SAFETY: guestd's child only makes async-signal-safe calls before execve or _exit (see
    // `child`), so forking is sound even if the parent had other threads.
    let pid = cvt(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: we are the freshly forked child; every pointer was built before the fork
        // and stays valid because nothing is freed before execve or _exit.
        unsafe { child(path.as_ptr(), &argp, &envpp, cwd, ends, exec_w.as_raw_fd()) }
    }
    // SAFETY: setpgid takes integers only. The child does the same; doing it here too closes
    // the race with a kill_group before the child ran. EACCES (it already exec'd) and ESRCH
    // are expected and harmless, so the result is ignored.
    unsafe { libc::setpgid(pid, pid) };
    drop((in_r, out_w, err_w, exec_w));
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match (&exec_r).read(&mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if got > 0 {
        let _ = wait(pid);
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    for f in [&in_w, &out_r, &err_r] {
        set_nonblocking(f.as_fd())?;
    }
    Ok(Spawned {
        pid,
        stdin: in_w,
        stdout: out_r,
        stderr: err_r,
    })
}

/// The child side of `spawn`: never returns.
///
/// # Safety
/// Must be called only in a freshly forked child, with NULL-terminated `argv` and `envp`
/// arrays of valid C strings, `cwd` null or a valid C string, and open fds.
unsafe fn child(
    path: *const libc::c_char,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    cwd: *const libc::c_char,
    ends: [libc::c_int; 3],
    report: libc::c_int,
) -> ! {
    // SAFETY: only async-signal-safe calls on integers, a stack sigset_t and the pointers the
    // caller vouches for; every failure ends in _exit.
    unsafe {
        libc::setpgid(0, 0);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        // The pipe ends are first moved to fds >= 3, so that dup2 onto 0, 1 and 2 cannot
        // overwrite one another (the parent may have had its own 0-2 closed).
        let mut ok = true;
        for (target, fd) in (0..).zip(ends) {
            let high = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
            ok &= high >= 0 && libc::dup2(high, target) == target;
        }
        if ok && (cwd.is_null() || libc::chdir(cwd) == 0) {
            libc::execve(path, argv.as_ptr(), envp.as_ptr());
        }
        let errno = *libc::__errno_location();
        libc::write(report, (&raw const errno).cast(), 4);
        libc::_exit(127)
    }
}

/// Sends `sig` to every process in group `pgid` (kill(2) with `-pgid`); a group that no
/// longer exists is not an error.
pub fn kill_group(pgid: i32, sig: i32) -> io::Result<()> {
    // kill(0) and kill(-1) would hit our own group or every process: refuse them.
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill takes integers only; the result is checked.
    match cvt(unsafe { libc::kill(-pgid, sig) }) {
        Err(e) if e.raw_os_error() != Some(libc::ESRCH) => Err(e),
        _ => Ok(()),
    }
}

fn waitpid(pid: i32, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a writable int; the result is checked.
        match cvt(unsafe { libc::waitpid(pid, &mut status, flags) }) {
            Ok(0) => return Ok(None),
            Ok(_) if libc::WIFSIGNALED(status) => {
                return Ok(Some(ExitStatus::Signal(libc::WTERMSIG(status))));
            }
            Ok(_) => return Ok(Some(ExitStatus::Code(libc::WEXITSTATUS(status)))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reaps `pid` if it has ended (waitpid(2) with WNOHANG).
pub fn try_wait(pid: i32) -> io::Result<Option<ExitStatus>> {
    waitpid(pid, libc::WNOHANG)
}

/// Waits for `pid` to end and reaps it (waitpid(2)).
pub fn wait(pid: i32) -> io::Result<ExitStatus> {
    waitpid(pid, 0)?.ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))
}

/// Sends `sig` to one process (kill(2)).
pub fn signal(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill takes two integers and touches no memory; the result is checked.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// Flushes file systems and powers off (or reboots) at once: sync(2), reboot(2). The last
/// resort of a host-requested shutdown; returns only on failure.
pub fn sync_and_reboot(reboot: bool) -> io::Error {
    let how = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: sync and reboot take no pointers; reboot returns only on failure, when errno
    // says why.
    unsafe {
        libc::sync();
        libc::reboot(how);
    }
    io::Error::last_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn sh(script: &str) -> Spawned {
        let argv = [c("sh"), c("-c"), c(script)];
        spawn(&c("/bin/sh"), &argv, &[c("A=1")], Some(&c("/"))).unwrap()
    }

    fn read_all(mut f: &File) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn pipes_env_cwd_and_status() {
        let p = sh("read x; echo \"$x $A $(pwd)\"; echo err >&2; exit 3");
        (&p.stdin).write_all(b"hi\n").unwrap();
        drop(p.stdin);
        assert_eq!(read_all(&p.stdout), b"hi 1 /\n");
        assert_eq!(read_all(&p.stderr), b"err\n");
        assert_eq!(wait(p.pid).unwrap(), ExitStatus::Code(3));
        assert_eq!(ExitStatus::Code(3).to_string(), "exit status 3");
    }

    #[test]
    fn stderr_can_be_merged_into_stdout() {
        let argv = [c("sh"), c("-c"), c("echo out; echo err >&2")];
        let p = spawn_with(&c("/bin/sh"), &argv, &[], None, true).unwrap();
        drop(p.stdin);
        assert_eq!(read_all(&p.stdout), b"out\nerr\n");
        assert_eq!(read_all(&p.stderr), b"");
        assert_eq!(wait(p.pid).unwrap(), ExitStatus::Code(0));
    }

    #[test]
    fn exec_failure_is_reported() {
        let e = spawn(&c("/nonexistent/prog"), &[c("x")], &[], None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        let e = spawn(&c("/bin/sh"), &[c("sh")], &[], Some(&c("/nonexistent"))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn own_group_is_killed() {
        let p = sh("sleep 30");
        assert_eq!(try_wait(p.pid).unwrap(), None);
        let children = std::fs::read_to_string("/proc/thread-self/children").unwrap_or_default();
        assert!(children.is_empty() || children.contains(&p.pid.to_string()));
        kill_group(p.pid, SIGKILL).unwrap();
        let st = wait(p.pid).unwrap();
        assert_eq!(st, ExitStatus::Signal(SIGKILL));
        assert_eq!(st.to_string(), "killed by signal 9");
        kill_group(p.pid, SIGKILL).unwrap();
        assert!(kill_group(0, SIGKILL).is_err() && kill_group(1, SIGKILL).is_err());
    }
}
