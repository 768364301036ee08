// SPDX-License-Identifier: Apache-2.0
//! The actions a host can request (oVirt §3): shutdown and reboot with a grace period,
//! hibernate, lock-screen, log-off, login, lifecycle events and CPU hot-plug. None of them
//! blocks the loop: grace periods and the log-off kill delay are timer deadlines, and hooks
//! and power commands run in the hook runner, whose results come back as follow-ups.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::Core;
use crate::actions::{self, PowerStep, Shutdown};
use crate::facts::{self, users};
use crate::hooks::{self, Job, Outcome, Runner};
use crate::proto::ovirt::{self, Command, Message};
use crate::proto::queue::Kind;
use crate::{params, sys};

/// How long a power-off or reboot command may run.
const POWER_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Between SIGHUP and SIGKILL when logging a user off without a hook.
const LOGOFF_GRACE: Duration = Duration::from_secs(5);

/// The two lanes hook jobs run in, each one program at a time, side by side: what the host
/// waits for with a deadline (lifecycle events, hibernation, power-off: VDSM gives 10 s)
/// never queues behind slow param or desktop hooks.
pub(super) const NORMAL: usize = 0;
pub(super) const URGENT: usize = 1;

/// A runner and the follow-ups of its jobs, in submission order (a runner finishes jobs in
/// the order they were submitted).
#[derive(Default)]
pub(super) struct Lane {
    pub runner: Runner,
    pub followups: VecDeque<Followup>,
}

/// What to do when a submitted hook job finishes.
pub(super) enum Followup {
    /// Nothing (param hooks).
    Nothing,
    /// Answer `completion`. `need_hook`: no executable at all means the action could not
    /// be done (a guest without a desktop has nothing to lock, for example).
    Complete {
        reply_id: Option<String>,
        action: String,
        need_hook: bool,
    },
    /// `before_hibernation` hooks are done: now suspend.
    Hibernate {
        state: String,
        reply_id: Option<String>,
    },
    /// A power-off or reboot command ended.
    Power,
}

/// A shutdown waiting for its grace period.
pub(super) struct PendingShutdown {
    pub at: Duration,
    pub reboot: bool,
    pub reply_id: Option<String>,
}

/// A power-off or reboot in progress: the methods left to try.
pub(super) struct Power {
    reboot: bool,
    steps: VecDeque<PowerStep>,
    reply_id: Option<String>,
    errors: Vec<String>,
}

/// A log-off waiting to SIGKILL what SIGHUP left alive.
pub(super) struct PendingLogoff {
    pub at: Duration,
    leaders: Vec<i32>,
    reply_id: Option<String>,
}

fn reply_id(cmd: &Command) -> Option<String> {
    cmd.args
        .get("reply_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn summarise(outcomes: &[Outcome]) -> Result<(), String> {
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok())
        .map(|o| {
            let name = o.program.file_name().unwrap_or_default().to_string_lossy();
            match &o.result {
                Ok(status) => format!("{name}: {status}"),
                Err(e) => format!("{name}: {e}"),
            }
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("hooks failed: {}", failed.join("; ")))
    }
}

impl Core {
    /// Handles an action command; false when `cmd` is not one.
    pub(super) fn on_action(&mut self, cmd: &Command) -> bool {
        match cmd.name.as_str() {
            "shutdown" => self.on_shutdown(cmd),
            "hibernate" => self.on_hibernate(cmd),
            "lock-screen" => {
                self.run_action_hooks(cmd, "lock-screen", Vec::new(), Vec::new(), Vec::new())
            }
            "login" => self.on_login(cmd),
            "log-off" => self.on_logoff(cmd),
            "lifecycle-event" => self.on_lifecycle(cmd),
            "set-number-of-cpus" => self.on_set_cpus(cmd),
            _ => return false,
        }
        true
    }

    fn reply(&mut self, id: Option<String>, action: &str, result: Result<(), String>) {
        match id {
            Some(id) => self.push_message(params::completion(&id, result), Kind::Event),
            None => match result {
                Ok(()) => log::info!("{action}: done"),
                Err(e) => log::warn!("{action}: {e}"),
            },
        }
    }

    /// Queues a hook job in `lane` and what to do when it finishes.
    pub(super) fn submit(&mut self, lane: usize, job: Job, then: Followup) {
        if let Some(l) = self.lanes.get_mut(lane) {
            l.runner.submit(job);
            l.followups.push_back(then);
        }
    }

    fn job(&self, label: &str, dir: PathBuf, timeout: Duration) -> Job {
        Job {
            label: label.to_owned(),
            dir,
            args: Vec::new(),
            stdin: Vec::new(),
            redact: Vec::new(),
            timeout,
            ends: None,
        }
    }

    /// Runs `<hooks-dir>/<action>/` with `stdin`; completion when they end.
    fn run_action_hooks(
        &mut self,
        cmd: &Command,
        action: &str,
        stdin: Vec<u8>,
        redact: Vec<Vec<u8>>,
        args: Vec<String>,
    ) {
        let mut job = self.job(
            action,
            self.cfg.hooks_dir.join(action),
            self.cfg.hook_timeout,
        );
        job.stdin = stdin;
        job.redact = redact;
        job.args = args;
        let then = Followup::Complete {
            reply_id: reply_id(cmd),
            action: action.to_owned(),
            need_hook: true,
        };
        self.submit(NORMAL, job, then);
    }

    /// A hook job finished: carry on with whatever was waiting for it.
    pub(super) fn followup(&mut self, lane: usize, label: &str, outcomes: Vec<Outcome>) {
        let next = self
            .lanes
            .get_mut(lane)
            .and_then(|l| l.followups.pop_front());
        match next.unwrap_or(Followup::Nothing) {
            Followup::Nothing => {}
            Followup::Complete {
                reply_id,
                action,
                need_hook,
            } => {
                let result = if need_hook && outcomes.is_empty() {
                    log::info!(
                        "{action}: nothing to do (no hook in {})",
                        self.cfg.hooks_dir.join(&action).display()
                    );
                    Err(format!("no {action} hook is installed in this guest"))
                } else {
                    summarise(&outcomes)
                };
                self.reply(reply_id, &action, result);
            }
            Followup::Hibernate { state, reply_id } => {
                let result = self.write_power_state(&state);
                self.reply(reply_id, "hibernate", result);
            }
            Followup::Power => {
                let ok = !outcomes.is_empty() && outcomes.iter().all(Outcome::ok);
                if ok {
                    self.power_done(Ok(()));
                } else {
                    let why = summarise(&outcomes)
                        .err()
                        .unwrap_or_else(|| format!("{label}: not run"));
                    self.next_power_step(Some(why));
                }
            }
        }
    }

    fn on_shutdown(&mut self, cmd: &Command) {
        let id = reply_id(cmd);
        let req = match actions::parse_shutdown(&cmd.args) {
            Ok(r) => r,
            Err(e) => return self.reply(id, "shutdown", Err(e)),
        };
        if self.power.is_some() {
            return self.reply(
                id,
                "shutdown",
                Err("a power-off or reboot is already under way".into()),
            );
        }
        if let Some(old) = self.shutdown.take() {
            log::info!("shutdown: a new request replaces the pending one");
            self.reply(
                old.reply_id,
                "shutdown",
                Err("replaced by a later shutdown request".into()),
            );
        }
        log::info!(
            "shutdown requested: {} in {} s",
            if req.reboot { "reboot" } else { "power-off" },
            req.grace.as_secs()
        );
        self.announce(&req);
        self.shutdown = Some(PendingShutdown {
            at: sys::monotonic_now() + req.grace,
            reboot: req.reboot,
            reply_id: id,
        });
    }

    /// Tells every logged-in terminal (the utmp ttys) what is coming.
    fn announce(&mut self, req: &Shutdown) {
        let text = actions::wall_text(req);
        let sessions = users::read_sessions(self.root()).unwrap_or_default();
        let sessions = users::live_sessions(self.root(), sessions);
        for s in sessions {
            let Some(rel) = actions::tty_path(&s.line) else {
                continue;
            };
            let path = self.cfg.root.join(rel);
            // Non-blocking, no controlling terminal: a stuck tty must not stall the agent.
            let opened = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags_nonblocking()
                .open(&path);
            match opened.and_then(|mut f| f.write_all(text.as_bytes())) {
                Ok(()) => log::debug!("shutdown announced on {}", path.display()),
                Err(e) => log::debug!("announcing on {}: {e}", path.display()),
            }
        }
    }

    /// Timer work for pending actions (the grace period, the log-off kill).
    pub(super) fn on_action_timers(&mut self, now: Duration) {
        if self.shutdown.as_ref().is_some_and(|s| s.at <= now) {
            if let Some(s) = self.shutdown.take() {
                self.push_message(Message::bare("session-shutdown"), Kind::Event);
                self.start_power(s.reboot, s.reply_id);
            }
        }
        if self.logoff.as_ref().is_some_and(|l| l.at <= now) {
            if let Some(l) = self.logoff.take() {
                // The whole group, also when its leader already left: members may remain.
                for &pid in &l.leaders {
                    let _ = sys::kill_group(pid, sys::SIGKILL);
                }
                self.logged_off(l.reply_id);
            }
        }
    }

    /// The earliest action deadline.
    pub(super) fn action_deadline(&self) -> Option<Duration> {
        let a = self.shutdown.as_ref().map(|s| s.at);
        let b = self.logoff.as_ref().map(|l| l.at);
        a.into_iter().chain(b).min()
    }

    fn start_power(&mut self, reboot: bool, reply_id: Option<String>) {
        let configured = if reboot {
            self.cfg.reboot_command.clone()
        } else {
            self.cfg.poweroff_command.clone()
        };
        let init = actions::init_kind(
            std::fs::read_link("/proc/1/exe").ok().as_deref(),
            std::fs::read_to_string("/proc/1/comm").ok().as_deref(),
        );
        let steps = actions::power_plan(configured.as_deref(), reboot, Path::exists, init);
        self.power = Some(Power {
            reboot,
            steps: steps.into(),
            reply_id,
            errors: Vec::new(),
        });
        self.next_power_step(None);
    }

    /// Tries the next power method; `failed` says why the previous one did not work.
    fn next_power_step(&mut self, failed: Option<String>) {
        let Some(power) = &mut self.power else {
            return;
        };
        if let Some(e) = failed {
            log::error!("shutdown: {e}");
            power.errors.push(e);
        }
        while let Some(step) = power.steps.pop_front() {
            match step {
                PowerStep::Command(program, args) => {
                    log::info!("shutdown: running {} {}", program.display(), args.join(" "));
                    let mut job = self.job("power", program, POWER_COMMAND_TIMEOUT);
                    job.args = args;
                    self.submit(URGENT, job, Followup::Power);
                    return;
                }
                PowerStep::SignalInit(sig) => match sys::signal(1, sig) {
                    Ok(()) => {
                        log::info!("shutdown: sent signal {sig} to init");
                        return self.power_done(Ok(()));
                    }
                    Err(e) => power.errors.push(format!("signalling init: {e}")),
                },
                PowerStep::Syscall => {
                    let e = sys::sync_and_reboot(power.reboot);
                    power.errors.push(format!("reboot(2): {e}"));
                }
            }
        }
        let why = power.errors.join("; ");
        self.power_done(Err(if why.is_empty() {
            "no power-off method".into()
        } else {
            why
        }));
    }

    fn power_done(&mut self, result: Result<(), String>) {
        if let Some(p) = self.power.take() {
            let what = if p.reboot { "reboot" } else { "power-off" };
            if result.is_ok() {
                log::info!("shutdown: {what} under way");
            }
            self.reply(p.reply_id, "shutdown", result);
        }
    }

    fn on_hibernate(&mut self, cmd: &Command) {
        let id = reply_id(cmd);
        let state = cmd
            .args
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("disk")
            .to_owned();
        if state != "disk" && state != "mem" {
            return self.reply(
                id,
                "hibernate",
                Err(format!("state '{state}' is not \"disk\" or \"mem\"")),
            );
        }
        let offered = facts::read_text(self.root(), "sys/power/state").unwrap_or_default();
        if !actions::power_state_supported(&offered, &state) {
            let e = format!(
                "this guest cannot suspend to {state}: /sys/power/state offers '{}'",
                offered.trim()
            );
            return self.reply(id, "hibernate", Err(e));
        }
        let mut job = self.job(
            "before_hibernation",
            self.cfg.hooks_dir.join("before_hibernation"),
            self.cfg.lifecycle_timeout,
        );
        job.ends = Some(sys::monotonic_now() + self.cfg.lifecycle_timeout);
        self.submit(
            URGENT,
            job,
            Followup::Hibernate {
                state,
                reply_id: id,
            },
        );
    }

    fn write_power_state(&mut self, state: &str) -> Result<(), String> {
        let path = facts::under(self.root(), "sys/power/state");
        log::info!("hibernate: writing '{state}' to {}", path.display());
        // The write returns once the guest has resumed.
        std::fs::write(&path, state).map_err(|e| format!("writing {}: {e}", path.display()))
    }

    fn on_login(&mut self, cmd: &Command) {
        let user = cmd.args.get("username").and_then(Value::as_str);
        let pass = cmd.args.get("password").and_then(Value::as_str);
        let (Some(user), Some(pass)) = (user, pass) else {
            return self.reply(
                reply_id(cmd),
                "login",
                Err("login needs username and password".into()),
            );
        };
        // Credentials only on the hook's stdin; the password is masked in its logged output.
        let stdin = actions::login_stdin(user, pass);
        let redact = vec![pass.as_bytes().to_vec()];
        self.run_action_hooks(cmd, "login", stdin, redact, Vec::new());
    }

    fn on_logoff(&mut self, cmd: &Command) {
        let dir = self.cfg.hooks_dir.join("log-off");
        if !hooks::list_executables(&dir).unwrap_or_default().is_empty() {
            return self.run_action_hooks(cmd, "log-off", Vec::new(), Vec::new(), Vec::new());
        }
        // Built in: end the active user's sessions.
        let id = reply_id(cmd);
        if self.logoff.is_some() {
            return self.reply(id, "log-off", Err("a log-off is already under way".into()));
        }
        let sessions = users::read_sessions(self.root()).unwrap_or_default();
        let sessions = users::live_sessions(self.root(), sessions);
        let active = ovirt::active_user_name(&users::logged_in_users(&sessions));
        let leaders: Vec<i32> = sessions
            .iter()
            .filter(|s| s.user == active && s.pid > 1)
            // Only live session leaders of this system: utmp pids can be stale and reused, and
            // the facts root may be a fixture tree.
            .filter(|s| is_session_leader(self.root(), s.pid))
            .map(|s| s.pid)
            .collect();
        if leaders.is_empty() {
            log::info!("log-off: nothing to do (no user session)");
            return self.reply(id, "log-off", Err("no user session to end".into()));
        }
        log::info!("log-off: ending the sessions of '{active}'");
        for &pid in &leaders {
            if let Err(e) = sys::kill_group(pid, libc::SIGHUP) {
                log::warn!("log-off: SIGHUP to process group {pid}: {e}");
            }
        }
        self.logoff = Some(PendingLogoff {
            at: sys::monotonic_now() + LOGOFF_GRACE,
            leaders,
            reply_id: id,
        });
    }

    fn logged_off(&mut self, reply_id: Option<String>) {
        self.push_message(ovirt::active_user("None"), Kind::Report);
        self.push_message(Message::bare("session-logoff"), Kind::Event);
        self.active_user = Some("None".into());
        self.reply(reply_id, "log-off", Ok(()));
    }

    fn on_lifecycle(&mut self, cmd: &Command) {
        let id = reply_id(cmd);
        let kind = cmd.args.get("type").and_then(Value::as_str).unwrap_or("");
        if !actions::LIFECYCLE_TYPES.contains(&kind) {
            return self.reply(
                id,
                "lifecycle-event",
                Err(format!("unknown lifecycle event '{kind}'")),
            );
        }
        let mut job = self.job(
            kind,
            self.cfg.hooks_dir.join(kind),
            self.cfg.lifecycle_timeout,
        );
        // The whole event, not each hook, must end in time: VDSM waits 10 s at most.
        job.ends = Some(sys::monotonic_now() + self.cfg.lifecycle_timeout);
        if cmd.args.get("failure") == Some(&Value::Bool(true)) {
            job.args = vec!["failure".into()];
        }
        // A missing hook directory is not an error: nothing had to be done.
        self.submit(
            URGENT,
            job,
            Followup::Complete {
                reply_id: id,
                action: kind.to_owned(),
                need_hook: false,
            },
        );
    }

    fn on_set_cpus(&mut self, cmd: &Command) {
        let id = reply_id(cmd);
        let count = match cmd.args.get("count").and_then(Value::as_i64) {
            Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
            other => {
                return self.reply(
                    id,
                    "set-number-of-cpus",
                    Err(format!("count {other:?} is not a positive integer")),
                );
            }
        };
        let base = "sys/devices/system/cpu";
        let present = facts::read_text(self.root(), &format!("{base}/present"))
            .map(|t| actions::cpu_list(&t))
            .unwrap_or_default();
        let online = facts::read_text(self.root(), &format!("{base}/online"))
            .map(|t| actions::cpu_list(&t))
            .unwrap_or_default();
        let (writes, reached) = actions::cpu_plan(&present, &online, count);
        let mut errors = Vec::new();
        for (cpu, on) in writes {
            let path = facts::under(self.root(), &format!("{base}/cpu{cpu}/online"));
            if let Err(e) = std::fs::write(&path, if on { "1" } else { "0" }) {
                errors.push(format!("writing {}: {e}", path.display()));
            }
        }
        log::info!("set-number-of-cpus {count}: {} CPUs online", reached);
        self.send_number_of_cpus();
        let result = if !errors.is_empty() {
            Err(errors.join("; "))
        } else if reached < count {
            Err(format!("only {reached} CPUs are present"))
        } else {
            Ok(())
        };
        self.reply(id, "set-number-of-cpus", result);
    }
}

/// Whether `pid` leads its own session (field 6 of `/proc/PID/stat` under `root` is `pid`):
/// what a login shell recorded in utmp is, and what a reused pid usually is not.
fn is_session_leader(root: &Path, pid: i32) -> bool {
    let Ok(stat) = facts::read_text(root, &format!("proc/{pid}/stat")) else {
        return false;
    };
    // After "pid (comm) ": state ppid pgrp session ...
    let rest = stat.rsplit(')').next().unwrap_or("");
    rest.split_whitespace()
        .nth(3)
        .and_then(|s| s.parse::<i32>().ok())
        == Some(pid)
}

/// `O_NONBLOCK | O_NOCTTY` for opening terminals.
trait NonBlocking {
    fn custom_flags_nonblocking(&mut self) -> &mut Self;
}

impl NonBlocking for std::fs::OpenOptions {
    fn custom_flags_nonblocking(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
    }
}
