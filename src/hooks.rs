// SPDX-License-Identifier: Apache-2.0
//! The hook runner: runs the executables of a hooks directory one after another, with no
//! shell, a sanitised environment, data on stdin, bounded captured output logged at info
//! level, and a timeout after which the program's whole process group is killed.
//!
//! `Runner` never blocks: the agent feeds it poll(2) readiness, SIGCHLD and timer expiry from
//! its loop. `run_blocking` drives one for the one-shot command line.

use std::collections::VecDeque;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{self, ExitStatus, POLLIN, POLLOUT, Signal};

/// The whole environment of a hook, besides `GUESTD_HOOK=<label>`.
const ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C",
];
/// Bytes of each of stdout and stderr kept for the log; the rest is read and counted.
const KEEP: usize = 4096;
/// How long output is still read after a program exited (a background child of it may hold
/// the pipes open), and how often a killed but unreaped program is looked at again.
const DRAIN: Duration = Duration::from_millis(500);
/// Reads per stream per wake-up, so a chatty program cannot hold the loop.
const READS_PER_WAKEUP: usize = 16;
/// The longest `run_blocking` sleeps without looking at its child (a SIGCHLD taken by
/// another thread would otherwise go unnoticed).
const TICK: Duration = Duration::from_millis(100);

/// One run of every executable in `dir` (or of `dir` itself when it is one executable file,
/// as for a power-off command). No `Debug`: `stdin` may hold a secret.
#[derive(Clone)]
pub struct Job {
    /// Names the job in logs and in `GUESTD_HOOK`, e.g. "param" or "configure".
    pub label: String,
    pub dir: PathBuf,
    /// Arguments after the program path, e.g. the parameter key.
    pub args: Vec<String>,
    /// Written to each program's stdin; never logged.
    pub stdin: Vec<u8>,
    /// Each is replaced by "***" in captured output before it is logged.
    pub redact: Vec<Vec<u8>>,
    pub timeout: Duration,
    /// When set, the whole job ends by this monotonic time: a program still running then is
    /// killed, and programs not started yet are skipped (lifecycle events must be answered
    /// within VDSM's 10 s, however many hooks there are).
    pub ends: Option<Duration>,
}

/// How one program of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub label: String,
    pub program: PathBuf,
    /// `Err` when the program could not be started or was killed after its timeout.
    pub result: Result<ExitStatus, String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.result == Ok(ExitStatus::Code(0))
    }
}

/// The executables of `dir` (regular files, symlinks followed, with any execute bit), sorted
/// by file name, skipping names starting with '.' or ending with '~'. A missing directory
/// has none.
pub fn list_executables(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        r => r?,
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().map_or(&[][..], |n| n.as_bytes());
        let exec = |m: std::fs::Metadata| m.is_file() && m.permissions().mode() & 0o111 != 0;
        if !name.starts_with(b".") && !name.ends_with(b"~") && path.metadata().is_ok_and(exec) {
            out.push(path);
        }
    }
    out.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(out)
}

/// Captured output of one stream: the first `KEEP` bytes and a count of the rest.
#[derive(Default)]
struct Capture {
    file: Option<File>,
    kept: Vec<u8>,
    dropped: usize,
}

impl Capture {
    /// Reads what is available; closes the stream at end of file or on an error.
    fn read(&mut self) {
        let Some(f) = &mut self.file else { return };
        let mut buf = [0u8; KEEP];
        for _ in 0..READS_PER_WAKEUP {
            match f.read(&mut buf) {
                Ok(n) if n > 0 => {
                    let keep = n.min(KEEP - self.kept.len());
                    self.kept.extend_from_slice(&buf[..keep]);
                    self.dropped += n - keep;
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
}

/// The running program.
struct Proc {
    program: PathBuf,
    pid: i32,
    stdin: Option<File>,
    written: usize,
    out: Capture,
    err: Capture,
    exit: Option<Result<ExitStatus, String>>,
    /// The timeout while it runs, the end of the drain once it exited, the next look after a
    /// kill.
    deadline: Duration,
    killed: bool,
}

impl Proc {
    /// Writes more of `input`; closes stdin when all of it is written or the program stopped
    /// reading (EPIPE from a program that ignores its stdin is normal).
    fn write_input(&mut self, input: &[u8]) {
        let Some(f) = &mut self.stdin else { return };
        while let Some(rest) = input.get(self.written..).filter(|r| !r.is_empty()) {
            match f.write(rest) {
                Ok(n) if n > 0 => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                _ => break,
            }
        }
        self.stdin = None;
    }

    /// Collects the exit status if the program ended.
    fn reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        self.exit = match sys::try_wait(self.pid) {
            Ok(None) => return,
            Ok(Some(st)) => Some(Ok(st)),
            Err(e) => Some(Err(format!("waitpid: {e}"))),
        };
        self.stdin = None;
        self.deadline = sys::monotonic_now() + DRAIN;
    }

    fn done(&self) -> bool {
        self.exit.is_some() && self.out.file.is_none() && self.err.file.is_none()
    }
}

/// The job being run: its programs still to run and the outcomes of the others.
struct Current {
    job: Job,
    left: VecDeque<PathBuf>,
    done: Vec<Outcome>,
}

/// Runs jobs one after another, and the programs of a job one after another.
pub struct Runner {
    queue: VecDeque<Job>,
    cur: Option<Current>,
    proc: Option<Proc>,
    finished: Vec<(String, Vec<Outcome>)>,
    /// Where rendered reports go: the log, or a capture in tests.
    sink: fn(&str),
}

impl Default for Runner {
    fn default() -> Runner {
        Runner::new()
    }
}

impl Runner {
    pub fn new() -> Runner {
        Runner {
            queue: VecDeque::new(),
            cur: None,
            proc: None,
            finished: Vec::new(),
            sink: log_lines,
        }
    }

    /// Queues `job`; it starts at once if nothing else runs.
    pub fn submit(&mut self, job: Job) {
        self.queue.push_back(job);
        self.advance();
    }

    /// Nothing running and nothing queued (finished jobs may still wait in `take_finished`).
    pub fn is_idle(&self) -> bool {
        self.cur.is_none() && self.queue.is_empty()
    }

    /// The descriptors to poll for the running program, with their events.
    pub fn poll_fds(&self) -> Vec<(RawFd, i16)> {
        let Some(p) = &self.proc else {
            return Vec::new();
        };
        let fd = |f: &Option<File>, ev| f.as_ref().map(|f| (f.as_raw_fd(), ev));
        [
            fd(&p.out.file, POLLIN),
            fd(&p.err.file, POLLIN),
            fd(&p.stdin, POLLOUT),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// poll(2) reported `revents` (non-zero) on `fd`.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16) {
        if let (Some(p), Some(cur)) = (&mut self.proc, &self.cur) {
            let is =
                |f: &Option<File>| revents != 0 && f.as_ref().is_some_and(|f| f.as_raw_fd() == fd);
            if is(&p.out.file) {
                p.out.read();
            } else if is(&p.err.file) {
                p.err.read();
            } else if is(&p.stdin) {
                p.write_input(&cur.job.stdin);
            }
        }
        self.advance();
    }

    /// A SIGCHLD arrived (or may have): reaps the running program if it ended.
    pub fn on_sigchld(&mut self) {
        if let Some(p) = &mut self.proc {
            p.reap();
        }
        self.advance();
    }

    /// When `on_timer` next has work to do, on the monotonic clock.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.proc.as_ref().map(|p| p.deadline)
    }

    /// Kills the program's process group past its timeout; ends the drain after an exit.
    pub fn on_timer(&mut self, now: Duration) {
        if let Some(p) = &mut self.proc {
            p.reap();
            if now >= p.deadline && p.exit.is_some() {
                p.out.file = None;
                p.err.file = None;
            } else if now >= p.deadline {
                if !p.killed {
                    p.killed = true;
                    if let Err(e) = sys::kill_group(p.pid, sys::SIGKILL) {
                        log::warn!("killing process group {}: {e}", p.pid);
                    }
                }
                p.deadline = now + DRAIN;
            }
        }
        self.advance();
    }

    /// The jobs whose every program has finished, with their labels, in submission order.
    pub fn take_finished(&mut self) -> Vec<(String, Vec<Outcome>)> {
        std::mem::take(&mut self.finished)
    }

    /// Concludes the running program if it is done, then starts whatever comes next.
    fn advance(&mut self) {
        let sink = self.sink;
        loop {
            if self.proc.as_ref().is_some_and(|p| !p.done()) {
                return;
            }
            if let (Some(p), Some(cur)) = (self.proc.take(), &mut self.cur) {
                let result = match p.exit {
                    _ if p.killed => {
                        Err(format!("killed after timeout ({})", secs(cur.job.timeout)))
                    }
                    Some(r) => r,
                    None => Err("lost".into()),
                };
                let o = conclude(sink, &cur.job, p.program, result, &p.out, &p.err);
                cur.done.push(o);
            }
            let Some(cur) = &mut self.cur else {
                let Some(job) = self.queue.pop_front() else {
                    return;
                };
                let mut done = Vec::new();
                let listed = if job.dir.is_file() {
                    Ok(vec![job.dir.clone()])
                } else {
                    list_executables(&job.dir)
                };
                let left = listed.unwrap_or_else(|e| {
                    let r = Err(format!("listing {}: {e}", job.dir.display()));
                    done.push(conclude(
                        sink,
                        &job,
                        job.dir.clone(),
                        r,
                        &Capture::default(),
                        &Capture::default(),
                    ));
                    Vec::new()
                });
                let left = left.into();
                self.cur = Some(Current { job, left, done });
                continue;
            };
            let Some(program) = cur.left.pop_front() else {
                if let Some(c) = self.cur.take() {
                    self.finished.push((c.job.label, c.done));
                }
                return;
            };
            if cur.job.ends.is_some_and(|e| sys::monotonic_now() >= e) {
                let r = Err("skipped: the job's time was up".to_owned());
                let none = Capture::default();
                cur.done
                    .push(conclude(sink, &cur.job, program, r, &none, &none));
                continue;
            }
            match start(&cur.job, &program) {
                Ok(p) => self.proc = Some(p),
                Err(e) => {
                    let r = Err(format!("cannot run: {e}"));
                    let none = Capture::default();
                    cur.done
                        .push(conclude(sink, &cur.job, program, r, &none, &none));
                }
            }
        }
    }
}

impl Drop for Runner {
    /// A program still running when the runner goes (the agent stops) is killed and reaped.
    fn drop(&mut self) {
        if let Some(p) = self.proc.as_ref().filter(|p| p.exit.is_none()) {
            if sys::kill_group(p.pid, sys::SIGKILL).is_ok() {
                let _ = sys::wait(p.pid);
            }
        }
    }
}

/// Starts `program` of `job`: argv `[program, args...]`, the fixed environment, cwd "/".
fn start(job: &Job, program: &Path) -> io::Result<Proc> {
    let c = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    // Absolute, since the child changes to "/" before it executes the program.
    let path = c(std::path::absolute(program)?.as_os_str().as_bytes())?;
    let mut argv = vec![path.clone()];
    let mut envp = vec![c(format!("GUESTD_HOOK={}", job.label).as_bytes())?];
    for a in &job.args {
        argv.push(c(a.as_bytes())?);
    }
    for e in ENV {
        envp.push(c(e.as_bytes())?);
    }
    let s = sys::spawn(&path, &argv, &envp, Some(c"/"))?;
    let mut p = Proc {
        program: program.to_path_buf(),
        pid: s.pid,
        stdin: (!job.stdin.is_empty()).then_some(s.stdin),
        written: 0,
        out: Capture {
            file: Some(s.stdout),
            ..Capture::default()
        },
        err: Capture {
            file: Some(s.stderr),
            ..Capture::default()
        },
        exit: None,
        deadline: {
            let own = sys::monotonic_now() + job.timeout;
            job.ends.map_or(own, |e| e.min(own))
        },
        killed: false,
    };
    p.write_input(&job.stdin);
    Ok(p)
}

/// Logs how `program` ended, with its output, and returns its outcome.
fn conclude(
    sink: fn(&str),
    job: &Job,
    program: PathBuf,
    result: Result<ExitStatus, String>,
    out: &Capture,
    err: &Capture,
) -> Outcome {
    let name = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy();
    let name = format!("{}/{name}", job.label);
    sink(&render(&name, &result, out, err, &job.redact));
    Outcome {
        label: job.label.clone(),
        program,
        result,
    }
}

/// The report of one program: "<name>: <status>", then one line per output line.
fn render(
    name: &str,
    result: &Result<ExitStatus, String>,
    out: &Capture,
    err: &Capture,
    secrets: &[Vec<u8>],
) -> String {
    let mut text = match result {
        Ok(st) => format!("{name}: {st}"),
        Err(e) => format!("{name}: {e}"),
    };
    for (stream, c) in [("stdout", out), ("stderr", err)] {
        let kept = secrets.iter().fold(c.kept.clone(), |buf, s| {
            redact(&buf, c.dropped > 0, Some(s))
        });
        for line in String::from_utf8_lossy(&kept).lines() {
            let _ = write!(text, "\n{name} {stream}: {line}");
        }
        if c.dropped > 0 {
            let _ = write!(text, "\n{name} {stream}: [... {} bytes dropped]", c.dropped);
        }
    }
    text
}

/// `buf` with every `secret` replaced by "***"; when the output was cut short, a start of the
/// secret left at its very end is replaced too.
fn redact(buf: &[u8], truncated: bool, secret: Option<&[u8]>) -> Vec<u8> {
    let Some(s) = secret.filter(|s| !s.is_empty()) else {
        return buf.to_vec();
    };
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while let Some(rest) = buf.get(i..).filter(|r| !r.is_empty()) {
        if rest.starts_with(s) {
            out.extend_from_slice(b"***");
            i += s.len();
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    if let Some(k) = (1..s.len())
        .rev()
        .find(|&k| truncated && out.ends_with(&s[..k]))
    {
        out.truncate(out.len() - k);
        out.extend_from_slice(b"***");
    }
    out
}

fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

fn log_lines(text: &str) {
    for line in text.lines() {
        log::info!("{line}");
    }
}

/// Runs `job` to the end, blocking, and returns its outcomes: for the one-shot command line.
/// SIGCHLD is blocked in the calling thread and read through a signalfd.
pub fn run_blocking(job: Job) -> Vec<Outcome> {
    drive(&mut Runner::new(), job)
}

fn drive(r: &mut Runner, job: Job) -> Vec<Outcome> {
    let sigs = sys::SignalFd::new(&[Signal::Child])
        .map_err(|e| log::warn!("creating a signalfd for SIGCHLD: {e}"))
        .ok();
    r.submit(job);
    let mut outcomes = Vec::new();
    loop {
        outcomes.extend(r.take_finished().into_iter().flat_map(|(_, o)| o));
        if r.is_idle() {
            return outcomes;
        }
        let mut fds: Vec<_> = r
            .poll_fds()
            .into_iter()
            .map(|(fd, ev)| sys::pollfd(fd, ev))
            .collect();
        fds.extend(sigs.as_ref().map(|s| sys::pollfd(s.as_raw_fd(), POLLIN)));
        let now = sys::monotonic_now();
        let wait = r
            .next_deadline()
            .map_or(TICK, |d| d.saturating_sub(now).min(TICK));
        // On a poll error the loop goes on by the clock; the timeout still ends every program.
        if let Err(e) = sys::poll(&mut fds, Some(wait)) {
            log::error!("poll: {e}");
        }
        if let Some(s) = &sigs {
            let _ = s.read_all();
        }
        for f in fds.iter().filter(|f| f.revents != 0) {
            r.on_ready(f.fd, f.revents);
        }
        r.on_sigchld();
        r.on_timer(sys::monotonic_now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::fs;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// Hook tests run one at a time: timing stays predictable, and no test forks while
    /// another holds a script open for writing (which would make its exec fail ETXTBSY).
    static SERIAL: Mutex<()> = Mutex::new(());
    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    thread_local! {
        static LOGGED: RefCell<String> = const { RefCell::new(String::new()) };
    }

    fn capture(text: &str) {
        LOGGED.with(|l| {
            let mut l = l.borrow_mut();
            l.push_str(text);
            l.push('\n');
        });
    }

    fn tempdir() -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("guestd-hooks-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("hooks")).unwrap();
        d
    }

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join("hooks").join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn job(dir: &Path, args: &[&str]) -> Job {
        Job {
            label: "test".into(),
            dir: dir.join("hooks"),
            args: args.iter().map(|a| a.to_string()).collect(),
            stdin: Vec::new(),
            redact: Vec::new(),
            timeout: Duration::from_secs(10),
            ends: None,
        }
    }

    /// Runs `job` to the end in a runner that logs into `LOGGED`; returns the outcomes and
    /// the log text, after checking that this thread has no child left, zombie or not.
    fn run(job: Job) -> (Vec<Outcome>, String) {
        let mut r = Runner::new();
        r.sink = capture;
        let out = drive(&mut r, job);
        assert_no_children();
        (out, LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut())))
    }

    fn assert_no_children() {
        if let Ok(c) = fs::read_to_string("/proc/thread-self/children") {
            assert_eq!(c.trim(), "", "children left");
            return;
        }
        // Without CONFIG_PROC_CHILDREN: no zombie child of this process may stay.
        let me = std::process::id().to_string();
        for _ in 0..50 {
            let zombies = fs::read_dir("/proc").unwrap().flatten().filter(|e| {
                let stat = fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
                let f: Vec<&str> = after.split_whitespace().collect();
                f.len() > 2 && f[0] == "Z" && f[1] == me
            });
            if zombies.count() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("zombie children left");
    }

    fn names(out: &[Outcome]) -> Vec<String> {
        let name = |o: &Outcome| {
            o.program
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        out.iter().map(name).collect()
    }

    #[test]
    fn runs_in_sorted_order_one_at_a_time() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        let log = d.join("order");
        // Each script checks that no other is running (the lock file) while it runs.
        let body = "[ -e \"$1.lock\" ] && echo overlap >> \"$1\"; : > \"$1.lock\"; sleep 0.05; \
                    echo \"${0##*/}\" >> \"$1\"; rm \"$1.lock\"";
        for n in ["b", "a", "10", "C", "a2"] {
            script(&d, n, body, 0o755);
        }
        let (out, _) = run(job(&d, &[log.to_str().unwrap()]));
        assert_eq!(names(&out), ["10", "C", "a", "a2", "b"]);
        assert!(out.iter().all(|o| o.ok() && o.label == "test"), "{out:?}");
        assert_eq!(fs::read_to_string(&log).unwrap(), "10\nC\na\na2\nb\n");
    }

    #[test]
    fn jobs_run_in_submission_order() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let (d1, d2) = (tempdir(), tempdir());
        let log = d1.join("order");
        script(&d1, "one", "sleep 0.1; echo one >> \"$1\"", 0o755);
        script(&d2, "two", "echo two >> \"$1\"", 0o755);
        let mut r = Runner::new();
        r.sink = capture;
        r.submit(Job {
            label: "first".into(),
            ..job(&d1, &[log.to_str().unwrap()])
        });
        assert!(!r.is_idle());
        assert!(!r.poll_fds().is_empty() && r.next_deadline().is_some());
        let out = drive(&mut r, job(&d2, &[log.to_str().unwrap()]));
        assert!(r.is_idle() && r.poll_fds().is_empty() && r.next_deadline().is_none());
        assert_eq!(names(&out), ["one", "two"]);
        assert_eq!(out[0].label, "first");
        assert_eq!(fs::read_to_string(&log).unwrap(), "one\ntwo\n");
        assert_no_children();
    }

    #[test]
    fn stdin_args_and_environment() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        let (o, a, e) = (d.join("stdin"), d.join("args"), d.join("env"));
        script(
            &d,
            "10-copy",
            "cat > \"$1\"; printf '%s|' \"$@\" > \"$2\"; env > \"$3\"",
            0o755,
        );
        // Reads nothing: the EPIPE on its stdin is not an error.
        script(&d, "20-ignore", "exit 0", 0o755);
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let paths = [
            o.to_str().unwrap(),
            a.to_str().unwrap(),
            e.to_str().unwrap(),
        ];
        let j = Job {
            label: "param".into(),
            stdin: input.clone(),
            args: [&paths[..], &["KEY"]]
                .concat()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            ..job(&d, &[])
        };
        let (out, _) = run(j);
        assert!(out.iter().all(Outcome::ok), "{out:?}");
        assert_eq!(fs::read(&o).unwrap(), input);
        assert_eq!(
            fs::read_to_string(&a).unwrap(),
            format!("{}|{}|{}|KEY|", paths[0], paths[1], paths[2])
        );
        let env = fs::read_to_string(&e).unwrap();
        let mut vars: Vec<&str> = env
            .lines()
            .filter(|l| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p)))
            .collect();
        vars.sort_unstable();
        assert_eq!(vars, ["GUESTD_HOOK=param", "LANG=C", ENV[0]]);
        assert!(env.lines().any(|l| l == "PWD=/"), "{env}");
    }

    #[test]
    fn exit_statuses_are_reported() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        script(&d, "1", "echo fine", 0o755);
        script(&d, "2", "echo bad >&2; exit 3", 0o755);
        script(&d, "3", "kill -9 $$", 0o755);
        let (out, log) = run(job(&d, &[]));
        let res: Vec<_> = out.iter().map(|o| o.result.clone()).collect();
        use ExitStatus::{Code, Signal};
        assert_eq!(res, [Ok(Code(0)), Ok(Code(3)), Ok(Signal(9))]);
        assert_eq!(
            out.iter().map(Outcome::ok).collect::<Vec<_>>(),
            [true, false, false]
        );
        assert_eq!(
            log,
            "test/1: exit status 0\ntest/1 stdout: fine\ntest/2: exit status 3\n\
             test/2 stderr: bad\ntest/3: killed by signal 9\n"
        );
    }

    #[test]
    fn skips_non_executables_and_reports_exec_failure() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        let h = d.join("hooks");
        script(&d, "10-plain", "exit 0", 0o644);
        script(&d, "20-badinterp", "exit 0", 0o755);
        fs::write(h.join("20-badinterp"), "#!/nonexistent/sh\n").unwrap();
        script(&d, "30-good", "exit 0", 0o755);
        script(&d, ".hidden", "exit 0", 0o755);
        script(&d, "30-good~", "exit 0", 0o755);
        fs::create_dir(h.join("35-dir")).unwrap();
        std::os::unix::fs::symlink(h.join("30-good"), h.join("40-link")).unwrap();
        std::os::unix::fs::symlink(h.join("missing"), h.join("50-dangling")).unwrap();
        let list = list_executables(&h).unwrap();
        assert_eq!(
            list,
            [h.join("20-badinterp"), h.join("30-good"), h.join("40-link")]
        );
        assert!(list_executables(&d.join("missing")).unwrap().is_empty());

        let (out, log) = run(job(&d, &[]));
        let e = out[0].result.as_ref().unwrap_err();
        assert!(e.starts_with("cannot run: No such file"), "{e}");
        assert!(log.starts_with("test/20-badinterp: cannot run: "), "{log}");
        assert!(out[1].ok() && out[2].ok() && out.len() == 3);

        // A job naming one executable file runs just that program.
        let (out, _) = run(Job {
            dir: h.join("30-good"),
            ..job(&d, &[])
        });
        assert!(out.len() == 1 && out[0].ok() && out[0].program == h.join("30-good"));
        // A missing directory: nothing to run, nothing failed.
        assert!(
            run(Job {
                dir: d.join("missing"),
                ..job(&d, &[])
            })
            .0
            .is_empty()
        );
    }

    #[test]
    fn timeout_kills_the_process_group() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        let pidfile = d.join("pid");
        script(&d, "1-hang", "sleep 30 & echo $! > \"$1\"; sleep 30", 0o755);
        script(&d, "2-after", "echo ran", 0o755);
        let t = Instant::now();
        let j = Job {
            timeout: Duration::from_millis(300),
            ends: None,
            ..job(&d, &[pidfile.to_str().unwrap()])
        };
        let (out, log) = run(j);
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(out[0].result, Err("killed after timeout (300ms)".into()));
        assert!(out[1].ok(), "the next program still runs");
        assert!(
            log.contains("test/1-hang: killed after timeout (300ms)\ntest/2-after: exit status 0")
        );
        // The background grandchild was in the group: it is gone (or a zombie of init).
        let pid = fs::read_to_string(&pidfile).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        let gone = (0..100).any(|_| {
            let s = fs::read_to_string(&stat).unwrap_or_default();
            let dead = s.rsplit_once(") ").is_none_or(|(_, r)| r.starts_with('Z'));
            if !dead {
                std::thread::sleep(Duration::from_millis(20));
            }
            dead
        });
        assert!(gone, "grandchild {pid} survived");
        assert_eq!(secs(Duration::from_secs(60)), "60s");
    }

    #[test]
    fn output_is_bounded() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        script(
            &d,
            "big",
            "head -c 100000 /dev/zero | tr '\\0' a; echo; echo tail >&2",
            0o755,
        );
        let (out, log) = run(job(&d, &[]));
        assert!(out[0].ok());
        let a = "a".repeat(KEEP);
        assert!(log.contains(&format!("test/big stdout: {a}\n")));
        assert!(!log.contains(&format!("{a}a")));
        assert!(
            log.ends_with("test/big stdout: [... 95905 bytes dropped]\ntest/big stderr: tail\n"),
            "{}",
            &log[log.len() - 100..]
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let d = tempdir();
        script(&d, "echo", "cat; echo \"pw=s3cret!\" >&2", 0o755);
        let j = Job {
            stdin: b"line s3cret\n".to_vec(),
            redact: vec![b"s3cret".to_vec()],
            ..job(&d, &[])
        };
        let (out, log) = run(j);
        assert!(out[0].ok());
        assert_eq!(
            log,
            "test/echo: exit status 0\ntest/echo stdout: line ***\ntest/echo stderr: pw=***!\n"
        );

        // A secret cut by the bound leaves no prefix of itself in the log.
        let mut kept = vec![b'x'; KEEP - 3];
        kept.extend_from_slice(b"s3c");
        let cut = Capture {
            kept,
            dropped: 3,
            file: None,
        };
        let text = render(
            "t/p",
            &Ok(ExitStatus::Code(0)),
            &cut,
            &Capture::default(),
            &[b"s3cret".to_vec()],
        );
        assert!(text.contains("xx***\nt/p stdout: [... 3 bytes dropped]") && !text.contains("s3c"));
        assert_eq!(redact(b"s3s3cret", false, Some(b"s3cret")), b"s3***");
        assert_eq!(redact(b"abc", true, None), b"abc");
    }
}
