// SPDX-License-Identifier: Apache-2.0
//! One child process, driven from a poll(2) loop: started with an argv (no shell), a fixed
//! environment and a working directory in its own process group, fed its stdin, its stdout
//! and stderr captured up to a limit each, its whole group SIGKILLed at its deadline, and
//! reaped on SIGCHLD. Knows nothing of hooks: the hook runner and QGA's `guest-exec` build
//! on it.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, ExitStatus, POLLIN, POLLOUT};

/// How long output is still read after a program exited (a background child of it may hold
/// the pipes open), and how often a killed but unreaped program is looked at again.
const DRAIN: Duration = Duration::from_millis(500);
/// Bytes read at a time from stdout or stderr.
const READ_CHUNK: usize = 4096;
/// Reads per stream per wake-up, so a chatty program cannot hold the loop.
const READS_PER_WAKEUP: usize = 16;

/// What to run. No `Debug`: `stdin` may hold a secret. `Spec::default()` keeps no output
/// and sets no timeout.
#[derive(Clone, Default)]
pub struct Spec {
    /// The program; made absolute before the child changes to `cwd`. It is also `argv[0]`.
    pub program: PathBuf,
    /// The arguments after `argv[0]`.
    pub args: Vec<String>,
    /// The whole environment, as "NAME=value" entries.
    pub env: Vec<String>,
    /// Where the program starts; `None` leaves the caller's working directory.
    pub cwd: Option<PathBuf>,
    /// Written to the program's stdin, which is then closed (at once when empty).
    pub stdin: Vec<u8>,
    /// Bytes of each of stdout and stderr kept; the rest is read and counted.
    pub limit: usize,
    /// The program's group is killed this long after the start, if set.
    pub timeout: Option<Duration>,
    /// ... and at this monotonic time, if set and earlier.
    pub ends: Option<Duration>,
    /// The program's stderr goes into its stdout pipe (`stderr` then stays empty).
    pub merge_stderr: bool,
}

/// Overwrites `buf` with zeros in a way the optimiser keeps, before it is freed: for input
/// that may hold a secret (a password on a program's stdin).
pub fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&buf);
}

/// Why a program could not be started or waited for.
#[derive(Debug)]
pub struct Error {
    pub op: Op,
    pub program: PathBuf,
    pub source: io::Error,
}

/// The operation an `Error` is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Preparing the argv or environment, fork(2) or execve(2).
    Start,
    /// waitpid(2).
    Wait,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Start => "starting",
            Op::Wait => "waiting for",
        };
        write!(f, "{op} {}: {}", self.program.display(), self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// What was kept of one output stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    /// The first `Spec::limit` bytes.
    pub bytes: Vec<u8>,
    /// How many bytes after those were read and thrown away.
    pub dropped: usize,
}

impl Captured {
    pub fn truncated(&self) -> bool {
        self.dropped > 0
    }
}

/// How a program ended and what it wrote.
#[derive(Debug)]
pub struct Output {
    /// `Err` when waitpid(2) failed.
    pub status: Result<ExitStatus, Error>,
    /// The program was still running at its deadline and its group was SIGKILLed.
    pub killed: bool,
    pub stdout: Captured,
    pub stderr: Captured,
}

/// One output stream: its pipe until end of file, and what was kept of it.
struct Stream {
    file: Option<File>,
    kept: Captured,
    limit: usize,
}

impl Stream {
    /// Reads what is available; closes the pipe at end of file or on an error.
    fn read(&mut self) {
        let Some(f) = &mut self.file else { return };
        let mut buf = [0u8; READ_CHUNK];
        for _ in 0..READS_PER_WAKEUP {
            match f.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let keep = n.min(self.limit.saturating_sub(self.kept.bytes.len()));
                    self.kept.bytes.extend_from_slice(&buf[..keep]);
                    self.kept.dropped += n - keep;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => {
                    self.file = None;
                    return;
                }
            }
        }
    }

    fn is(&self, fd: RawFd) -> bool {
        self.file.as_ref().is_some_and(|f| f.as_raw_fd() == fd)
    }
}

/// A started program. Dropping it while the program runs kills its group and reaps it.
pub struct Child {
    program: PathBuf,
    pid: i32,
    stdin: Option<File>,
    input: Vec<u8>,
    written: usize,
    out: Stream,
    err: Stream,
    /// Set once reaped; taken by `take_output`.
    exit: Option<Result<ExitStatus, io::Error>>,
    reaped: bool,
    /// The kill deadline while it runs, the end of the drain once it exited, the next look
    /// after a kill.
    deadline: Option<Duration>,
    killed: bool,
}

impl Child {
    /// Starts `spec.program` with argv `[program, args...]`, exactly `spec.env`, in
    /// `spec.cwd`, in a new process group. A program that cannot be executed (missing, not
    /// executable, a bad interpreter) is an error here, not an exit status.
    pub fn start(spec: Spec) -> Result<Child, Error> {
        let err = |source| Error {
            op: Op::Start,
            program: spec.program.clone(),
            source,
        };
        let nul = || err(io::Error::from_raw_os_error(libc::EINVAL));
        let c = |b: &[u8]| CString::new(b).map_err(|_| nul());
        let abs = std::path::absolute(&spec.program).map_err(err)?;
        let path = c(abs.as_os_str().as_bytes())?;
        let mut argv = vec![path.clone()];
        for a in &spec.args {
            argv.push(c(a.as_bytes())?);
        }
        let envp = (spec.env.iter().map(|e| c(e.as_bytes()))).collect::<Result<Vec<_>, _>>()?;
        let cwd = (spec.cwd.as_ref())
            .map(|d| c(d.as_os_str().as_bytes()))
            .transpose()?;
        let s =
            sys::spawn_with(&path, &argv, &envp, cwd.as_deref(), spec.merge_stderr).map_err(err)?;
        let now = sys::monotonic_now();
        let own = spec.timeout.map(|t| now + t);
        let deadline = match (own, spec.ends) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let stream = |file, limit| Stream {
            file: Some(file),
            kept: Captured::default(),
            limit,
        };
        let mut child = Child {
            program: spec.program,
            pid: s.pid,
            stdin: (!spec.stdin.is_empty()).then_some(s.stdin),
            input: spec.stdin,
            written: 0,
            out: stream(s.stdout, spec.limit),
            err: stream(s.stderr, spec.limit),
            exit: None,
            reaped: false,
            deadline,
            killed: false,
        };
        child.write_input();
        Ok(child)
    }

    /// The program as given in its `Spec`.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Bytes of input held for its stdin (released once written or the pipe closed).
    pub fn input_held(&self) -> usize {
        self.input.len()
    }

    /// Its pid, which is also its process group id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The descriptors to poll, with their events: its stdout and stderr while open, its
    /// stdin while input is left to write.
    pub fn poll_fds(&self) -> impl Iterator<Item = (RawFd, i16)> + '_ {
        let fd = |f: &Option<File>, ev| f.as_ref().map(|f| (f.as_raw_fd(), ev));
        [
            fd(&self.out.file, POLLIN),
            fd(&self.err.file, POLLIN),
            fd(&self.stdin, POLLOUT),
        ]
        .into_iter()
        .flatten()
    }

    /// poll(2) reported `revents` on `fd`; descriptors not its own are ignored.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16) {
        if revents == 0 {
            return;
        }
        if self.out.is(fd) {
            self.out.read();
        } else if self.err.is(fd) {
            self.err.read();
        } else if self.stdin.as_ref().is_some_and(|f| f.as_raw_fd() == fd) {
            self.write_input();
        }
    }

    /// A SIGCHLD arrived (or may have): reaps the program if it ended.
    pub fn on_sigchld(&mut self) {
        if self.reaped {
            return;
        }
        self.exit = match sys::try_wait(self.pid) {
            Ok(None) => return,
            Ok(Some(st)) => Some(Ok(st)),
            Err(e) => Some(Err(e)),
        };
        self.reaped = true;
        self.stdin = None;
        wipe(&mut self.input);
        self.input = Vec::new();
        self.deadline = Some(sys::monotonic_now() + DRAIN);
    }

    /// When `on_timer` next has work to do, on the monotonic clock; `None` when done or
    /// when a program without a timeout still runs.
    pub fn next_deadline(&self) -> Option<Duration> {
        if self.is_done() { None } else { self.deadline }
    }

    /// Kills the program's group past its deadline; ends the drain of its output after it
    /// exited.
    pub fn on_timer(&mut self, now: Duration) {
        self.on_sigchld();
        if self.deadline.is_none_or(|d| now < d) {
            return;
        }
        if self.reaped {
            self.out.file = None;
            self.err.file = None;
            return;
        }
        if !self.killed {
            self.killed = true;
            if let Err(e) = sys::kill_group(self.pid, sys::SIGKILL) {
                log::warn!("killing process group {}: {e}", self.pid);
            }
        }
        self.deadline = Some(now + DRAIN);
    }

    /// The program was reaped and its output read to the end (or the drain ran out).
    pub fn is_done(&self) -> bool {
        self.reaped && self.out.file.is_none() && self.err.file.is_none()
    }

    /// Whether and how the program exited (it may still be draining output); `None` also
    /// after `take_output`.
    pub fn exited(&self) -> Option<Result<ExitStatus, &io::Error>> {
        self.exit.as_ref().map(|r| r.as_ref().copied())
    }

    /// The output kept so far.
    pub fn stdout(&self) -> &Captured {
        &self.out.kept
    }

    /// The error output kept so far.
    pub fn stderr(&self) -> &Captured {
        &self.err.kept
    }

    /// How it ended and what it wrote, once it is done; `None` before, and after the first
    /// time.
    pub fn take_output(&mut self) -> Option<Output> {
        if !self.is_done() {
            return None;
        }
        let status = self.exit.take()?.map_err(|source| Error {
            op: Op::Wait,
            program: self.program.clone(),
            source,
        });
        Some(Output {
            status,
            killed: self.killed,
            stdout: std::mem::take(&mut self.out.kept),
            stderr: std::mem::take(&mut self.err.kept),
        })
    }

    /// Writes more of the input; closes stdin when all of it is written or the program
    /// stopped reading (EPIPE from a program that ignores its stdin is normal).
    fn write_input(&mut self) {
        let Some(f) = &mut self.stdin else { return };
        while let Some(rest) = self.input.get(self.written..).filter(|r| !r.is_empty()) {
            match f.write(rest) {
                Ok(n) if n > 0 => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => break,
            }
        }
        self.stdin = None;
        wipe(&mut self.input);
        self.input = Vec::new();
    }
}

impl Drop for Child {
    /// A program still running when its owner goes (the agent stops) is killed and reaped.
    fn drop(&mut self) {
        wipe(&mut self.input);
        if !self.reaped && sys::kill_group(self.pid, sys::SIGKILL).is_ok() {
            let _ = sys::wait(self.pid);
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::{assert_no_children, gone, script, serial, tempdir};
    use super::*;
    use std::time::Instant;

    fn sh(body: &str) -> Spec {
        Spec {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), body.into()],
            env: vec!["A=1".into()],
            cwd: Some("/".into()),
            limit: 1 << 20,
            timeout: Some(Duration::from_secs(10)),
            ..Spec::default()
        }
    }

    /// Drives `c` to the end by polling its descriptors (looking at least every 20 ms, as
    /// no SIGCHLD is caught here); the output can be taken once.
    fn finish(mut c: Child) -> Output {
        assert!(c.take_output().is_none() && c.exited().is_none());
        while !c.is_done() {
            let mut fds: Vec<_> = c.poll_fds().map(|(fd, ev)| sys::pollfd(fd, ev)).collect();
            let now = sys::monotonic_now();
            let tick = Duration::from_millis(20);
            let wait = c
                .next_deadline()
                .map_or(tick, |d| d.saturating_sub(now).min(tick));
            sys::poll(&mut fds, Some(wait)).unwrap();
            for f in &fds {
                c.on_ready(f.fd, f.revents);
            }
            c.on_sigchld();
            c.on_timer(sys::monotonic_now());
        }
        assert!(c.next_deadline().is_none() && c.exited().is_some());
        let out = c.take_output().unwrap();
        assert!(c.take_output().is_none());
        out
    }

    fn run(spec: Spec) -> Output {
        let out = finish(Child::start(spec).unwrap());
        assert_no_children();
        out
    }

    #[test]
    fn stdin_args_environment_and_cwd() {
        let _g = serial();
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut spec = sh("cat; printf '%s|' \"$0\" \"$@\" \"$(pwd)\"; env");
        spec.args.extend(["x".into(), "y z".into()]);
        spec.stdin = input.clone();
        let out = run(spec);
        assert_eq!(out.status.unwrap(), ExitStatus::Code(0));
        let (got, rest) = out.stdout.bytes.split_at(input.len());
        assert_eq!(got, input);
        let rest = String::from_utf8_lossy(rest);
        let env = rest.strip_prefix("x|y z|/|").unwrap();
        // sh adds PWD, SHLVL and `_` to the one variable it was given.
        let own = |l: &&str| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p));
        assert_eq!(env.lines().filter(own).collect::<Vec<_>>(), ["A=1"]);
        // No stdin data: the program reads end of file at once.
        let out = run(sh("cat; echo done"));
        assert_eq!(out.stdout.bytes, b"done\n");
    }

    #[test]
    fn exit_statuses() {
        let _g = serial();
        let status = |body| run(sh(body)).status.unwrap();
        assert_eq!(status("echo fine"), ExitStatus::Code(0));
        assert_eq!(status("exit 3"), ExitStatus::Code(3));
        assert_eq!(status("kill -9 $$"), ExitStatus::Signal(9));
        let out = run(sh("echo bad >&2; exit 1"));
        assert!(!out.killed && out.stdout.bytes.is_empty() && out.stderr.bytes == b"bad\n");
    }

    #[test]
    fn exec_failure_names_the_program() {
        let _g = serial();
        let d = tempdir();
        let bad = script(&d, "badinterp", "", 0o755);
        std::fs::write(&bad, "#!/nonexistent/sh\n").unwrap();
        let start = |spec: Spec| Child::start(spec).err().unwrap();
        for program in [PathBuf::from("/nonexistent/prog"), bad.clone()] {
            let e = start(Spec {
                program: program.clone(),
                ..sh("")
            });
            assert_eq!(
                (e.op, e.source.raw_os_error()),
                (Op::Start, Some(libc::ENOENT))
            );
            let want = format!("starting {}: No such file", program.display());
            assert!(e.to_string().starts_with(&want), "{e}");
        }
        let e = start(Spec {
            cwd: Some(d.join("missing")),
            ..sh("")
        });
        assert_eq!(e.source.raw_os_error(), Some(libc::ENOENT));
        let e = start(Spec {
            args: vec!["a\0b".into()],
            ..sh("")
        });
        assert_eq!(e.source.raw_os_error(), Some(libc::EINVAL));
        assert_no_children();
    }

    #[test]
    fn output_is_bounded_and_never_blocks() {
        let _g = serial();
        let body = "head -c 100000 /dev/zero | tr '\\0' a; echo tail >&2";
        let out = run(Spec {
            limit: 4096,
            ..sh(body)
        });
        assert_eq!(out.status.unwrap(), ExitStatus::Code(0));
        assert_eq!(out.stdout.bytes, vec![b'a'; 4096]);
        assert_eq!(out.stdout.dropped, 100_000 - 4096);
        assert!(out.stdout.truncated() && !out.stderr.truncated());
        assert_eq!(out.stderr.bytes, b"tail\n");
        // Nothing kept at all: everything is still read and counted.
        let out = run(Spec {
            limit: 0,
            ..sh(body)
        });
        assert_eq!((out.stdout.bytes.len(), out.stdout.dropped), (0, 100_000));
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let _g = serial();
        let t = Instant::now();
        let out = run(Spec {
            timeout: Some(Duration::from_millis(300)),
            ..sh("sleep 30 & echo $!; sleep 30")
        });
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(out.killed);
        assert_eq!(out.status.unwrap(), ExitStatus::Signal(libc::SIGKILL));
        // The background grandchild was in the group: it is gone.
        let pid = String::from_utf8(out.stdout.bytes).unwrap();
        assert!(gone(&pid), "grandchild {pid} survived");

        // An absolute end earlier than the timeout counts too.
        let t = Instant::now();
        let out = run(Spec {
            ends: Some(sys::monotonic_now() + Duration::from_millis(200)),
            ..sh("sleep 30")
        });
        assert!(out.killed && t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn without_a_timeout_it_runs_until_dropped() {
        let _g = serial();
        let c = Child::start(Spec {
            timeout: None,
            ..sh("exec sleep 30")
        })
        .unwrap();
        assert!(c.next_deadline().is_none() && !c.is_done() && c.exited().is_none());
        let pid = c.pid().to_string();
        drop(c);
        assert!(gone(&pid));
        assert_no_children();
    }

    #[test]
    fn output_is_drained_after_exit() {
        let _g = serial();
        // A background child holds stdout open after the program exited: the drain ends.
        let t = Instant::now();
        let out = run(sh("sleep 30 & echo $!; exit 4"));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(
            (out.status.unwrap(), out.killed),
            (ExitStatus::Code(4), false)
        );
        let pid = String::from_utf8(out.stdout.bytes).unwrap();
        sys::signal(pid.trim().parse().unwrap(), sys::SIGKILL).unwrap();
    }
}
