// SPDX-License-Identifier: Apache-2.0
//! The hook runner: runs the executables of a hooks directory one after another (each a
//! `exec::Child`: no shell, its own process group, a timeout), with a sanitised environment,
//! data on stdin, and bounded captured output logged at info level with secrets masked.
//!
//! `Runner` never blocks: the agent feeds it poll(2) readiness, SIGCHLD and timer expiry from
//! its loop. It holds a bounded number of jobs, each with the caller's follow-up value, which
//! comes back with that job's outcomes. `run_blocking` drives one for the one-shot command
//! line.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::{Captured, Child, Spec};
use crate::sys::{self, ExitStatus};

mod blocking;
mod report;
pub use blocking::run_blocking;
use report::{conclude, concluded, log_lines};

/// The whole environment of a hook, besides `GUESTD_HOOK=<label>`.
const ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C",
];
/// Bytes of each of stdout and stderr kept for the log; the rest is read and counted.
const KEEP: usize = 4096;
/// The jobs a `Runner::new()` holds at most (queued, running, or finished and not taken).
pub const DEFAULT_LIMIT: usize = 64;
/// Why a job was refused (`Refused` displays it).
pub const REFUSED: &str = "too many hooks are pending; try again later";

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

/// A job the runner would not take because it holds `limit` jobs already; `then` is the
/// caller's follow-up, given back so that the caller can answer the refusal.
#[derive(Debug)]
pub struct Refused<F> {
    pub then: F,
    pub limit: usize,
}

impl<F> fmt::Display for Refused<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REFUSED)
    }
}

/// A job whose every program has finished, with the follow-up it was submitted with.
#[derive(Debug)]
pub struct Finished<F> {
    pub label: String,
    pub then: F,
    /// One per program, in the order they ran; empty when there was nothing to run.
    pub outcomes: Vec<Outcome>,
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

/// The job being run: its programs still to run and the outcomes of the others.
struct Current {
    job: Job,
    left: VecDeque<PathBuf>,
    done: Vec<Outcome>,
}

/// Runs jobs one after another, and the programs of a job one after another. Dropping it
/// kills a running program (see `Child`).
pub struct Runner<F> {
    queue: VecDeque<(Job, F)>,
    cur: Option<(Current, F)>,
    child: Option<Child>,
    finished: Vec<Finished<F>>,
    limit: usize,
    /// Where rendered reports go: the log, or a capture in tests.
    sink: fn(&str),
}

impl<F> Default for Runner<F> {
    fn default() -> Runner<F> {
        Runner::new()
    }
}

impl<F> Runner<F> {
    /// A runner holding at most `DEFAULT_LIMIT` jobs.
    pub fn new() -> Runner<F> {
        Runner::with_limit(DEFAULT_LIMIT)
    }

    /// A runner holding at most `limit` jobs: queued, running, or finished and not yet taken.
    pub fn with_limit(limit: usize) -> Runner<F> {
        Runner {
            queue: VecDeque::new(),
            cur: None,
            child: None,
            finished: Vec::new(),
            limit,
            sink: log_lines,
        }
    }

    /// The jobs held: queued, running, or finished and not yet taken.
    pub fn len(&self) -> usize {
        self.queue.len() + usize::from(self.cur.is_some()) + self.finished.len()
    }

    /// No job held at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A `submit` now would be refused.
    pub fn is_full(&self) -> bool {
        self.len() >= self.limit
    }

    /// Queues `job`, to be followed by `then` when it finishes; it starts at once if nothing
    /// else runs. Refused, with `then` given back, when the runner is full.
    pub fn submit(&mut self, job: Job, then: F) -> Result<(), Refused<F>> {
        if self.is_full() {
            return Err(Refused {
                then,
                limit: self.limit,
            });
        }
        self.queue.push_back((job, then));
        self.advance();
        Ok(())
    }

    /// Nothing running and nothing queued (finished jobs may still wait in `take_finished`).
    pub fn is_idle(&self) -> bool {
        self.cur.is_none() && self.queue.is_empty()
    }

    /// The descriptors to poll for the running program, with their events.
    pub fn poll_fds(&self) -> Vec<(RawFd, i16)> {
        self.child
            .as_ref()
            .map_or(Vec::new(), |c| c.poll_fds().collect())
    }

    /// poll(2) reported `revents` (non-zero) on `fd`; descriptors not its own are ignored.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16) {
        if let Some(c) = &mut self.child {
            c.on_ready(fd, revents);
        }
        self.advance();
    }

    /// A SIGCHLD arrived (or may have): reaps the running program if it ended.
    pub fn on_sigchld(&mut self) {
        if let Some(c) = &mut self.child {
            c.on_sigchld();
        }
        self.advance();
    }

    /// When `on_timer` next has work to do, on the monotonic clock.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.child.as_ref().and_then(Child::next_deadline)
    }

    /// Kills the program's process group past its timeout; ends the drain after an exit.
    pub fn on_timer(&mut self, now: Duration) {
        if let Some(c) = &mut self.child {
            c.on_timer(now);
        }
        self.advance();
    }

    /// Whether a job finished that `take_finished` has not handed out yet.
    pub fn has_finished(&self) -> bool {
        !self.finished.is_empty()
    }

    /// The jobs whose every program has finished, each with its own follow-up, in the order
    /// they finished (which, in one runner, is the order they were submitted).
    pub fn take_finished(&mut self) -> Vec<Finished<F>> {
        std::mem::take(&mut self.finished)
    }

    /// Moves the current job on, and starts the next jobs as the current ones finish. (Only
    /// this part knows `F`: the work is in `Current::step`, which is not generic.)
    fn advance(&mut self) {
        loop {
            if let Some((cur, _)) = &mut self.cur {
                if !cur.step(&mut self.child, self.sink) {
                    return;
                }
            }
            if let Some((cur, then)) = self.cur.take() {
                let (label, outcomes) = (cur.job.label, cur.done);
                self.finished.push(Finished {
                    label,
                    then,
                    outcomes,
                });
            }
            let Some((job, then)) = self.queue.pop_front() else {
                return;
            };
            self.cur = Some((Current::begin(self.sink, job), then));
        }
    }
}

impl Current {
    /// The job about to run: the programs of its directory (or the one file it names).
    fn begin(sink: fn(&str), job: Job) -> Current {
        let mut done = Vec::new();
        let listed = if job.dir.is_file() {
            Ok(vec![job.dir.clone()])
        } else {
            list_executables(&job.dir)
        };
        let left = listed.unwrap_or_else(|e| {
            let r = Err(format!("listing {}: {e}", job.dir.display()));
            let none = Captured::default();
            done.push(conclude(sink, &job, job.dir.clone(), r, &none, &none));
            Vec::new()
        });
        Current {
            job,
            left: left.into(),
            done,
        }
    }

    /// Concludes the running program if it is done, then starts the next one, skipping those
    /// past the job's end and those that cannot start. True when no program is left: the job
    /// has finished.
    fn step(&mut self, child: &mut Option<Child>, sink: fn(&str)) -> bool {
        loop {
            if child.as_ref().is_some_and(|c| !c.is_done()) {
                return false;
            }
            if let Some(mut c) = child.take() {
                if let Some(out) = c.take_output() {
                    let o = concluded(sink, &self.job, c.program().to_path_buf(), out);
                    self.done.push(o);
                }
            }
            let Some(program) = self.left.pop_front() else {
                return true;
            };
            let why = if self.job.ends.is_some_and(|e| sys::monotonic_now() >= e) {
                "skipped: the job's time was up".to_owned()
            } else {
                match Child::start(spec(&self.job, program.clone())) {
                    Ok(c) => {
                        *child = Some(c);
                        continue;
                    }
                    Err(e) => format!("cannot run: {}", e.source),
                }
            };
            let none = Captured::default();
            let o = conclude(sink, &self.job, program, Err(why), &none, &none);
            self.done.push(o);
        }
    }
}

/// How `program` of `job` is run: argv `[program, args...]`, the fixed environment, cwd "/".
fn spec(job: &Job, program: PathBuf) -> Spec {
    let mut env = vec![format!("GUESTD_HOOK={}", job.label)];
    env.extend(ENV.iter().map(|e| (*e).to_owned()));
    Spec {
        program,
        args: job.args.clone(),
        env,
        cwd: Some(PathBuf::from("/")),
        stdin: job.stdin.clone(),
        limit: KEEP,
        timeout: Some(job.timeout),
        ends: job.ends,
        merge_stderr: false,
    }
}

#[cfg(test)]
mod tests {
    use super::blocking::{child_signals, drive};
    use super::*;
    use crate::exec::testing::{assert_no_children, gone, script, serial, tempdir};
    use ExitStatus::Code;
    use std::cell::RefCell;
    use std::fs;
    use std::time::Instant;

    thread_local! {
        static LOGGED: RefCell<String> = const { RefCell::new(String::new()) };
    }

    fn capture(text: &str) {
        LOGGED.with(|l| l.borrow_mut().push_str(&format!("{text}\n")));
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

    fn runner<F>(limit: usize) -> Runner<F> {
        Runner {
            sink: capture,
            ..Runner::with_limit(limit)
        }
    }

    /// Runs `job` to the end in a runner that logs into `LOGGED`; returns the outcomes and
    /// the log text, after checking that this thread has no child left, zombie or not.
    fn run(job: Job) -> (Vec<Outcome>, String) {
        let mut r = runner(1);
        r.submit(job, ()).unwrap();
        let out = drive(child_signals().as_ref(), &mut [&mut r]);
        assert_no_children();
        let out = out.into_iter().flat_map(|f| f.outcomes).collect();
        (out, LOGGED.with(|l| std::mem::take(&mut *l.borrow_mut())))
    }

    #[test]
    fn runs_in_sorted_order_one_at_a_time() {
        let _g = serial();
        let d = tempdir();
        let log = d.join("order");
        // Each script checks that no other is running (the lock file) while it runs.
        let body = "[ -e \"$1.lock\" ] && echo overlap >> \"$1\"; : > \"$1.lock\"; sleep 0.05; \
                    echo \"${0##*/}\" >> \"$1\"; rm \"$1.lock\"";
        for n in ["b", "a", "10", "C", "a2"] {
            script(&d, n, body, 0o755);
        }
        let (out, _) = run(job(&d, &[log.to_str().unwrap()]));
        let names: Vec<_> = out.iter().map(|o| o.program.file_name().unwrap()).collect();
        assert_eq!(names, ["10", "C", "a", "a2", "b"]);
        assert!(out.iter().all(|o| o.ok() && o.label == "test"), "{out:?}");
        assert_eq!(fs::read_to_string(&log).unwrap(), "10\nC\na\na2\nb\n");
    }

    #[test]
    fn stdin_args_and_environment() {
        let _g = serial();
        let d = tempdir();
        let (o, e) = (d.join("stdin"), d.join("env"));
        let copy = "cat > \"$1\"; env > \"$2\"; echo \"$3\"";
        script(&d, "10-copy", copy, 0o755);
        // Reads nothing: the EPIPE on its stdin is not an error.
        script(&d, "20-ignore", "exit 0", 0o755);
        let input: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let j = Job {
            label: "param".into(),
            stdin: input.clone(),
            ..job(&d, &[o.to_str().unwrap(), e.to_str().unwrap(), "KEY"])
        };
        let (out, log) = run(j);
        assert!(out.iter().all(Outcome::ok), "{out:?}");
        assert!(log.contains("param/10-copy stdout: KEY\n"), "{log}");
        assert_eq!(fs::read(&o).unwrap(), input);
        let env = fs::read_to_string(&e).unwrap();
        let own = |l: &&str| !["PWD=", "SHLVL=", "_="].iter().any(|p| l.starts_with(p));
        let mut vars: Vec<&str> = env.lines().filter(own).collect();
        vars.sort_unstable();
        assert_eq!(vars, ["GUESTD_HOOK=param", "LANG=C", ENV[0]]);
        assert!(env.lines().any(|l| l == "PWD=/"), "{env}");
    }

    #[test]
    fn skips_non_executables_and_reports_exec_failure() {
        let _g = serial();
        let d = tempdir();
        let h = d.join("hooks");
        for (name, mode) in [("10-plain", 0o644), ("30-good", 0o755), (".hidden", 0o755)] {
            script(&d, name, "exit 0", mode);
        }
        script(&d, "30-good~", "exit 0", 0o755);
        script(&d, "20-badinterp", "exit 0", 0o755);
        fs::write(h.join("20-badinterp"), "#!/nonexistent/sh\n").unwrap();
        fs::create_dir(h.join("35-dir")).unwrap();
        std::os::unix::fs::symlink(h.join("30-good"), h.join("40-link")).unwrap();
        std::os::unix::fs::symlink(h.join("missing"), h.join("50-dangling")).unwrap();
        let list = list_executables(&h).unwrap();
        let want = ["20-badinterp", "30-good", "40-link"].map(|n| h.join(n));
        assert_eq!(list, want);
        assert!(list_executables(&d.join("missing")).unwrap().is_empty());

        let (out, log) = run(job(&d, &[]));
        let e = out[0].result.as_ref().unwrap_err();
        assert!(e.starts_with("cannot run: No such file"), "{e}");
        assert!(log.starts_with("test/20-badinterp: cannot run: "), "{log}");
        assert!(out[1].ok() && out[2].ok() && out.len() == 3);

        // A job naming one executable file runs just that program.
        let one = |dir| {
            run(Job {
                dir,
                ..job(&d, &[])
            })
            .0
        };
        let out = one(h.join("30-good"));
        assert!(out.len() == 1 && out[0].ok() && out[0].program == h.join("30-good"));
        // A missing directory: nothing to run, nothing failed.
        assert!(one(d.join("missing")).is_empty());
    }

    #[test]
    fn statuses_and_bounded_redacted_output_are_logged() {
        let _g = serial();
        let d = tempdir();
        script(&d, "1", "echo fine", 0o755);
        script(&d, "2", "echo bad >&2; exit 3", 0o755);
        let big = "head -c 5000 /dev/zero | tr '\\0' a; kill -9 $$";
        script(&d, "3", big, 0o755);
        script(&d, "4", "cat; echo \"pw=s3cret!\" >&2", 0o755);
        let j = Job {
            stdin: b"line s3cret\n".to_vec(),
            redact: vec![b"s3cret".to_vec()],
            ..job(&d, &[])
        };
        let (out, log) = run(j);
        let res: Vec<_> = out.iter().map(|o| o.result.clone()).collect();
        let killed = Ok(ExitStatus::Signal(9));
        assert_eq!(res, [Ok(Code(0)), Ok(Code(3)), killed, Ok(Code(0))]);
        let a = "a".repeat(KEEP);
        let want = format!(
            "test/1: exit status 0\ntest/1 stdout: fine\ntest/2: exit status 3\n\
             test/2 stderr: bad\ntest/3: killed by signal 9\ntest/3 stdout: {a}\n\
             test/3 stdout: [... 904 bytes dropped]\ntest/4: exit status 0\n\
             test/4 stdout: line ***\ntest/4 stderr: pw=***!\n"
        );
        assert_eq!(log, want);
    }

    #[test]
    fn timeout_and_the_jobs_end() {
        let _g = serial();
        let d = tempdir();
        let pidfile = d.join("pid");
        script(&d, "1-hang", "sleep 30 & echo $! > \"$1\"; sleep 30", 0o755);
        script(&d, "2-after", "echo ran", 0o755);
        let t = Instant::now();
        let j = Job {
            timeout: Duration::from_millis(300),
            ..job(&d, &[pidfile.to_str().unwrap()])
        };
        let (out, log) = run(j.clone());
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(out[0].result, Err("killed after timeout (300ms)".into()));
        assert!(out[1].ok(), "the next program still runs");
        assert!(log.contains("test/1-hang: killed after timeout (300ms)\ntest/2-after: exit"));
        let pid = fs::read_to_string(&pidfile).unwrap();
        assert!(gone(&pid), "grandchild {pid} survived");
        // The job's end kills the running program and skips the rest.
        let ends = Some(sys::monotonic_now() + Duration::from_millis(200));
        let (out, _) = run(Job { ends, ..j });
        assert!(
            out[0]
                .result
                .as_ref()
                .is_err_and(|e| e.starts_with("killed"))
        );
        assert_eq!(out[1].result, Err("skipped: the job's time was up".into()));
    }

    #[test]
    fn a_refused_submit_gives_the_followup_back() {
        let _g = serial();
        let d = tempdir();
        script(&d, "wait", "sleep 30", 0o755);
        let mut r = runner(2);
        r.submit(job(&d, &[]), "first").unwrap();
        r.submit(job(&d, &[]), "second").unwrap();
        assert!(r.is_full() && r.len() == 2 && !r.poll_fds().is_empty());
        let refused = r.submit(job(&d, &[]), "third").unwrap_err();
        assert_eq!((refused.then, refused.limit), ("third", 2));
        assert_eq!(refused.to_string(), REFUSED);
        drop(r);
        assert_no_children();

        // A finished job is held until taken.
        let empty = || job(&d.join("missing"), &[]);
        let mut r = runner(1);
        r.submit(empty(), 7).unwrap();
        assert!(r.is_idle() && r.is_full());
        assert_eq!(r.submit(empty(), 8).unwrap_err().then, 8);
        let f = r.take_finished();
        assert!(f.len() == 1 && f[0].then == 7 && f[0].outcomes.is_empty());
        assert!(r.is_empty() && r.submit(empty(), 9).is_ok());
    }

    #[test]
    fn followups_come_back_with_their_own_jobs() {
        let _g = serial();
        let (a, b) = (tempdir(), tempdir());
        let go = a.join("go");
        let wait = "while [ ! -e \"$1\" ]; do sleep 0.01; done; exit 1";
        script(&a, "wait", wait, 0o755);
        script(&b, "code", "exit \"$1\"", 0o755);
        let sigs = child_signals();
        let (mut ra, mut rb) = (runner(8), runner(8));
        let j = |dir, label: &str, arg: &str| Job {
            label: label.into(),
            ..job(dir, &[arg])
        };
        ra.submit(j(&a, "a1", go.to_str().unwrap()), ("A1", 1))
            .unwrap();
        ra.submit(j(&b, "a2", "0"), ("A2", 0)).unwrap();
        rb.submit(j(&b, "b1", "3"), ("B1", 3)).unwrap();
        // rb's job finishes while ra's first still runs.
        let done = drive(sigs.as_ref(), &mut [&mut rb]);
        assert!(done.len() == 1 && done[0].then == ("B1", 3) && !ra.is_idle());
        fs::write(&go, "").unwrap();
        rb.submit(j(&b, "b2", "4"), ("B2", 4)).unwrap();
        let more = drive(sigs.as_ref(), &mut [&mut ra, &mut rb]);
        let all: Vec<_> = done.into_iter().chain(more).collect();
        assert_eq!(all.len(), 4);
        for f in &all {
            let (name, code) = f.then;
            assert_eq!(f.label, name.to_lowercase());
            assert_eq!(f.outcomes.len(), 1);
            assert_eq!(f.outcomes[0].result, Ok(Code(code)), "{name}");
        }
        let order = |n| all.iter().position(|f| f.then.0 == n);
        assert!(
            order("A1") < order("A2"),
            "one runner keeps submission order"
        );
        assert_no_children();
    }
}
