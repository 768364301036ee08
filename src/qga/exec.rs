// SPDX-License-Identifier: Apache-2.0
//! guest-exec and guest-exec-status, and the table of programs guestd runs for QGA: the
//! host's processes (`Execs`, at most `MAX_EXECS`) and the helper programs of other commands
//! (`chpasswd`, `hwclock`: tasks, whose end answers the request that started them).
//!
//! Each program is an `exec::Child` (no shell, its own process group, bounded capture),
//! driven by the agent's loop: its pipes are polled, SIGCHLD reaps it, the timer ends its
//! drain. Nothing waits. Differences from qemu-ga, all bounds:
//! - each stream keeps `exec-output-limit` bytes (1 MiB by default, at most 2 MiB, so the
//!   status reply stays under the 8 MiB reply cap and libvirt's 10 MiB line); the rest is
//!   read and dropped, and `out-truncated`/`err-truncated` say so;
//! - the table holds `MAX_EXECS` processes, running or finished and not yet asked about; a
//!   guest-exec beyond that fails;
//! - a finished process whose status nobody asks for is forgotten `exec-expiry` after it
//!   ended (10 minutes by default), so fire-and-forget calls leak nothing;
//! - streams that are not captured are read and thrown away instead of going to /dev/null,
//!   and a program without `input-data` reads end of file at once from a closed pipe.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{Args, Error};
use crate::exec::{self, Child, Output, Spec};
use crate::proto::base64;
use crate::services::{Notice, Requester};
use crate::sys::{self, ExitStatus};

/// Host processes held at most: running, or finished and not yet asked about.
pub const MAX_EXECS: usize = 64;
/// The `input-data` held for all host processes together, until their stdin takes it.
pub const MAX_INPUT_HELD: usize = 32 << 20;
/// Helper programs (chpasswd, hwclock) running at most.
pub const MAX_TASKS: usize = 8;
/// How long a helper program may run before its group is killed.
pub const TASK_TIMEOUT: Duration = Duration::from_secs(30);
/// The search path when neither the request's environment nor guestd's has `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub const COMMANDS: &[Command] = &[
    Command::new(
        "guest-exec",
        &["path", "arg", "env", "input-data", "capture-output"],
        guest_exec,
    ),
    Command::new("guest-exec-status", &["pid"], guest_exec_status),
];

/// Which of the program's output streams are kept (`capture-output`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    None,
    Stdout,
    Stderr,
    Separated,
    /// stderr goes into stdout.
    Merged,
}

impl Capture {
    fn parse(v: Option<&Value>) -> Result<Capture, Error> {
        Ok(match v {
            None | Some(Value::Bool(false)) => Capture::None,
            Some(Value::Bool(true)) => Capture::Separated,
            Some(Value::String(s)) => match s.as_str() {
                "none" => Capture::None,
                "stdout" => Capture::Stdout,
                "stderr" => Capture::Stderr,
                "separated" => Capture::Separated,
                "merged" => Capture::Merged,
                _ => {
                    return Err(Error::generic(format!(
                        "Parameter 'capture-output' does not accept value '{s}'"
                    )));
                }
            },
            Some(_) => {
                return Err(Error::generic(
                    "Invalid parameter type for 'capture-output', expected: boolean or string",
                ));
            }
        })
    }

    fn stdout(self) -> bool {
        matches!(self, Capture::Stdout | Capture::Separated | Capture::Merged)
    }

    fn stderr(self) -> bool {
        matches!(self, Capture::Stderr | Capture::Separated)
    }
}

/// A host process.
struct Entry {
    child: Child,
    capture: Capture,
    /// Set once it is done: when it is forgotten if nobody asks.
    expires: Option<Duration>,
}

/// A helper program of another command; its end answers `to`.
struct Task {
    child: Child,
    to: Requester,
    /// What it does, for the error text: "set user password".
    what: &'static str,
    /// Masked in the output quoted in an error (a password); wiped when done.
    secret: Vec<u8>,
}

/// The programs guestd runs for QGA. Dropping it kills and reaps the running ones.
pub struct Execs {
    entries: Vec<Entry>,
    tasks: Vec<Task>,
    expiry: Duration,
}

impl Execs {
    /// An empty table whose finished, unclaimed entries are forgotten after `expiry`.
    pub fn new(expiry: Duration) -> Execs {
        Execs {
            entries: Vec::new(),
            tasks: Vec::new(),
            expiry,
        }
    }

    /// Host processes held (running, or finished and not yet asked about).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No host process is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Starts a host process; its pid.
    fn start(&mut self, spec: Spec, capture: Capture) -> Result<i32, Error> {
        if self.entries.len() >= MAX_EXECS {
            return Err(Error::generic(format!(
                "guest-exec: {MAX_EXECS} processes are already running or waiting for \
                 guest-exec-status; try again later"
            )));
        }
        let held: usize = self.entries.iter().map(|e| e.child.input_held()).sum();
        if held + spec.stdin.len() > MAX_INPUT_HELD {
            return Err(Error::generic(format!(
                "guest-exec: {held} bytes of input-data are still waiting for programs to read \
                 them (at most {} MiB together); try again later",
                MAX_INPUT_HELD >> 20
            )));
        }
        let shown = spec.program.display().to_string();
        let child = Child::start(spec).map_err(|e| {
            Error::generic(format!(
                "Failed to execute child process \"{shown}\" ({})",
                errno_text(&e.source)
            ))
        })?;
        let pid = child.pid();
        log::info!("guest-exec: started {shown} as pid {pid}");
        self.entries.push(Entry {
            child,
            capture,
            expires: None,
        });
        Ok(pid)
    }

    /// The status of host process `pid`; once it is done, the first answer frees it.
    fn status(&mut self, pid: i64) -> Result<Value, Error> {
        let unknown = || Error::generic(format!("PID {pid} does not exist"));
        let i = (self.entries.iter())
            .position(|e| i64::from(e.child.pid()) == pid)
            .ok_or_else(unknown)?;
        if !self.entries[i].child.is_done() {
            return Ok(json!({"exited": false}));
        }
        let mut e = self.entries.swap_remove(i);
        let out = e.child.take_output().ok_or_else(unknown)?;
        Ok(status_reply(&out, e.capture))
    }

    /// Runs a helper program for the request `to`: `Ok(())` answers it when the program ends
    /// (`{}` on exit status 0, else an error quoting its output, `secret` masked).
    pub fn run_task(
        &mut self,
        spec: Spec,
        to: Requester,
        what: &'static str,
        mut secret: Vec<u8>,
    ) -> Result<(), String> {
        if self.tasks.len() >= MAX_TASKS {
            exec::wipe(&mut secret);
            return Err(format!(
                "{MAX_TASKS} helper programs are already running; try again later"
            ));
        }
        match Child::start(spec) {
            Ok(child) => {
                self.tasks.push(Task {
                    child,
                    to,
                    what,
                    secret,
                });
                Ok(())
            }
            Err(e) => {
                exec::wipe(&mut secret);
                Err(format!(
                    "cannot {what}: starting {}: {}",
                    e.program.display(),
                    errno_text(&e.source)
                ))
            }
        }
    }

    fn children(&self) -> impl Iterator<Item = &Child> {
        let a = self.entries.iter().map(|e| &e.child);
        a.chain(self.tasks.iter().map(|t| &t.child))
    }

    fn children_mut(&mut self) -> impl Iterator<Item = &mut Child> {
        let a = self.entries.iter_mut().map(|e| &mut e.child);
        a.chain(self.tasks.iter_mut().map(|t| &mut t.child))
    }

    /// The pipes to poll, with their events.
    pub fn poll_fds(&self, out: &mut Vec<(RawFd, i16)>) {
        for c in self.children() {
            out.extend(c.poll_fds());
        }
    }

    /// poll(2) reported `revents` on `fd`; descriptors not its own are ignored.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16, notices: &mut Vec<Notice>) {
        for c in self.children_mut() {
            c.on_ready(fd, revents);
        }
        self.settle(sys::monotonic_now(), notices);
    }

    /// A SIGCHLD arrived: reaps whatever ended.
    pub fn on_sigchld(&mut self, notices: &mut Vec<Notice>) {
        for c in self.children_mut() {
            c.on_sigchld();
        }
        self.settle(sys::monotonic_now(), notices);
    }

    /// Timer work: the end of an output drain, the expiry of unclaimed entries.
    pub fn on_timer(&mut self, now: Duration, notices: &mut Vec<Notice>) {
        for c in self.children_mut() {
            c.on_timer(now);
        }
        self.settle(now, notices);
    }

    /// The earliest deadline: a drain's end, a task's timeout, an entry's expiry.
    pub fn deadline(&self) -> Option<Duration> {
        let drains = self.children().filter_map(Child::next_deadline);
        drains
            .chain(self.entries.iter().filter_map(|e| e.expires))
            .min()
    }

    /// Starts the expiry of entries that are done, forgets expired ones, and answers for
    /// tasks that are done.
    fn settle(&mut self, now: Duration, notices: &mut Vec<Notice>) {
        let expiry = self.expiry;
        for e in &mut self.entries {
            if e.expires.is_none() && e.child.is_done() {
                e.expires = Some(now + expiry);
            }
        }
        self.entries.retain(|e| {
            let keep = e.expires.is_none_or(|t| now < t);
            if !keep {
                log::info!(
                    "guest-exec: pid {} ended {} s ago and nobody asked; forgotten",
                    e.child.pid(),
                    expiry.as_secs()
                );
            }
            keep
        });
        let mut i = 0;
        while i < self.tasks.len() {
            if !self.tasks[i].child.is_done() {
                i += 1;
                continue;
            }
            let mut t = self.tasks.swap_remove(i);
            let result = match t.child.take_output() {
                Some(out) => task_result(&out, t.what, t.child.program(), &t.secret),
                None => Err(format!("cannot {}: its outcome was lost", t.what)),
            };
            exec::wipe(&mut t.secret);
            notices.push(Notice::Reply { to: t.to, result });
        }
    }
}

/// An io::Error's text without Rust's " (os error N)".
pub fn errno_text(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// The guest-exec-status reply of a done process.
fn status_reply(out: &Output, capture: Capture) -> Value {
    let mut m = Map::new();
    m.insert("exited".into(), Value::Bool(true));
    match &out.status {
        Ok(ExitStatus::Code(c)) => {
            m.insert("exitcode".into(), json!(c));
        }
        Ok(ExitStatus::Signal(s)) => {
            m.insert("signal".into(), json!(s));
        }
        Err(e) => log::warn!("guest-exec: {e}"),
    }
    let streams = [
        ("out", capture.stdout(), &out.stdout),
        ("err", capture.stderr(), &out.stderr),
    ];
    for (name, kept, c) in streams {
        if !kept {
            continue;
        }
        if !c.bytes.is_empty() {
            m.insert(format!("{name}-data"), base64::encode(&c.bytes).into());
        }
        if c.truncated() {
            m.insert(format!("{name}-truncated"), Value::Bool(true));
        }
    }
    Value::Object(m)
}

/// A helper program's answer: `{}` on exit status 0, else why, quoting its output with
/// `secret` masked.
fn task_result(out: &Output, what: &str, program: &Path, secret: &[u8]) -> Result<Value, String> {
    let status = match &out.status {
        Ok(ExitStatus::Code(0)) if !out.killed => return Ok(json!({})),
        Ok(st) if out.killed => format!("killed after {} s ({st})", TASK_TIMEOUT.as_secs()),
        Ok(st) => st.to_string(),
        Err(e) => e.to_string(),
    };
    let mut text = out.stderr.bytes.clone();
    if text.iter().all(u8::is_ascii_whitespace) {
        text = out.stdout.bytes.clone();
    }
    let text = String::from_utf8_lossy(&mask(&text, secret))
        .trim()
        .to_owned();
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    Err(if text.is_empty() {
        format!("child process has failed to {what}: {name}: {status}")
    } else {
        format!("child process has failed to {what}: {name}: {status}: {text}")
    })
}

/// `text` with every occurrence of `secret` replaced by "***".
fn mask(text: &[u8], secret: &[u8]) -> Vec<u8> {
    if secret.is_empty() {
        return text.to_vec();
    }
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(secret) {
            out.extend_from_slice(b"***");
            i += secret.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

/// `name` found as qemu-ga does: a name with a `/` as it is, else the first executable
/// regular file of that name in the directories of `path`.
pub fn find_program(name: &str, path: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    if name.is_empty() {
        return None;
    }
    path.split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(name))
        .find(|p| is_executable(p))
}

/// A regular file (symlinks followed) with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The environment guestd itself runs with, as "NAME=value" entries.
fn own_environment() -> Vec<String> {
    std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect()
}

fn guest_exec(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    exec_request(cx, args).into()
}

fn exec_request(cx: &mut Ctx<'_>, args: &Args<'_>) -> Result<Value, Error> {
    let path = args.str("path")?;
    let argv: Vec<String> = (args.opt_strings("arg")?.unwrap_or_default())
        .into_iter()
        .map(str::to_owned)
        .collect();
    let env = args
        .opt_strings("env")?
        .map(|l| l.into_iter().map(str::to_owned).collect::<Vec<_>>());
    let stdin = match args.opt_str("input-data")? {
        Some(text) => base64::decode(text).map_err(|e| Error::generic(e.to_string()))?,
        None => Vec::new(),
    };
    let capture = Capture::parse(args.raw("capture-output"))?;
    let env = env.unwrap_or_else(own_environment);
    let search = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let Some(program) = find_program(path, search) else {
        return Err(Error::generic(format!(
            "Failed to execute child process \"{path}\" (No such file or directory)"
        )));
    };
    let spec = Spec {
        program,
        args: argv,
        env,
        cwd: None,
        stdin,
        limit: cx.svc.cfg.exec_output_limit,
        timeout: None,
        ends: None,
        merge_stderr: capture == Capture::Merged,
    };
    let pid = cx.svc.execs.start(spec, capture)?;
    Ok(json!({"pid": pid}))
}

fn guest_exec_status(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = args.i64("pid").and_then(|pid| cx.svc.execs.status(pid));
    r.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::Captured;

    #[test]
    fn capture_modes_parse_as_qemu_names_them() {
        let p = |v: Value| Capture::parse(Some(&v));
        assert_eq!(Capture::parse(None).unwrap(), Capture::None);
        assert_eq!(p(json!(true)).unwrap(), Capture::Separated);
        assert_eq!(p(json!(false)).unwrap(), Capture::None);
        assert_eq!(p(json!("merged")).unwrap(), Capture::Merged);
        assert_eq!(p(json!("stderr")).unwrap(), Capture::Stderr);
        assert_eq!(
            p(json!("all")).unwrap_err().desc,
            "Parameter 'capture-output' does not accept value 'all'"
        );
        assert!(p(json!(1)).is_err());
    }

    #[test]
    fn status_replies_carry_only_what_was_captured() {
        let out = Output {
            status: Ok(ExitStatus::Code(3)),
            killed: false,
            stdout: Captured {
                bytes: b"hi".to_vec(),
                dropped: 5,
            },
            stderr: Captured {
                bytes: b"e".to_vec(),
                dropped: 0,
            },
        };
        assert_eq!(
            status_reply(&out, Capture::Separated),
            json!({"exited": true, "exitcode": 3, "out-data": "aGk=", "out-truncated": true,
                   "err-data": "ZQ=="})
        );
        assert_eq!(
            status_reply(&out, Capture::None),
            json!({"exited": true, "exitcode": 3})
        );
        let killed = Output {
            status: Ok(ExitStatus::Signal(9)),
            ..out
        };
        assert_eq!(
            status_reply(&killed, Capture::Stderr),
            json!({"exited": true, "signal": 9, "err-data": "ZQ=="})
        );
    }

    #[test]
    fn task_errors_quote_output_with_the_secret_masked() {
        let out = Output {
            status: Ok(ExitStatus::Code(1)),
            killed: false,
            stdout: Captured::default(),
            stderr: Captured {
                bytes: b"bad line 'bob:s3cret'\n".to_vec(),
                dropped: 0,
            },
        };
        let e = task_result(
            &out,
            "set user password",
            Path::new("/x/chpasswd"),
            b"s3cret",
        );
        assert_eq!(
            e.unwrap_err(),
            "child process has failed to set user password: chpasswd: exit status 1: \
             bad line 'bob:***'"
        );
        assert_eq!(mask(b"aXXbXX", b"XX"), b"a***b***");
    }

    #[test]
    fn programs_are_found_on_the_given_path() {
        assert_eq!(find_program("/x/y", ""), Some(PathBuf::from("/x/y")));
        assert_eq!(
            find_program("sh", "/nonexistent:/bin"),
            Some(PathBuf::from("/bin/sh"))
        );
        assert_eq!(find_program("sh", "/nonexistent"), None);
        assert_eq!(find_program("", "/bin"), None);
    }
}
