// SPDX-License-Identifier: Apache-2.0
//! The guest's power and session state machines: a shutdown waiting for its grace period, a
//! power-off or reboot trying its methods in turn, a log-off waiting to SIGKILL what SIGHUP
//! left alive; and the direct writes for hibernation and CPU hot-plug. None blocks the loop
//! but the two sysfs writes named in docs/DESIGN.md: grace periods and the kill delay are
//! timer deadlines, and power commands run in a hook lane of their own. Each state machine
//! carries the `Requester` it answers when it ends (its completion token).

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::actions::{self, PowerStep, Shutdown};
use crate::config::Config;
use crate::facts::{self, users};
use crate::hooks::Job;
use crate::services::{Followup, Hooks, Lane, Notice, Requester};
use crate::sys;

/// How long a power-off or reboot command may run.
const POWER_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Between SIGHUP and SIGKILL when logging a user off without a hook.
const LOGOFF_GRACE: Duration = Duration::from_secs(5);

/// A shutdown waiting for its grace period.
#[derive(Debug)]
struct PendingShutdown {
    at: Duration,
    reboot: bool,
    to: Requester,
}

/// A power-off or reboot in progress: the methods left to try.
#[derive(Debug)]
struct Run {
    reboot: bool,
    steps: VecDeque<PowerStep>,
    to: Requester,
    errors: Vec<String>,
}

/// A log-off waiting to SIGKILL what SIGHUP left alive.
#[derive(Debug)]
struct PendingLogoff {
    at: Duration,
    leaders: Vec<i32>,
    to: Requester,
}

/// At most one of each at a time.
#[derive(Debug, Default)]
pub struct Power {
    shutdown: Option<PendingShutdown>,
    run: Option<Run>,
    logoff: Option<PendingLogoff>,
}

impl Power {
    /// Schedules a power-off or reboot after `req.grace`, telling logged-in terminals. A
    /// newer request replaces a pending one, whose requester is returned to be answered as
    /// replaced. `Err` refuses the request at once.
    pub fn shutdown(
        &mut self,
        req: &Shutdown,
        to: Requester,
        root: &Path,
    ) -> Result<Option<Requester>, String> {
        if self.run.is_some() {
            return Err("a power-off or reboot is already under way".into());
        }
        let replaced = self.shutdown.take().map(|old| {
            log::info!("shutdown: a new request replaces the pending one");
            old.to
        });
        log::info!(
            "shutdown requested: {} in {} s",
            if req.reboot { "reboot" } else { "power-off" },
            req.grace.as_secs()
        );
        announce(root, req);
        self.shutdown = Some(PendingShutdown {
            at: sys::monotonic_now() + req.grace,
            reboot: req.reboot,
            to,
        });
        Ok(replaced)
    }

    /// Ends the active user's sessions (the built-in log-off, when no hook is installed):
    /// SIGHUP to each session leader's group now, SIGKILL after `LOGOFF_GRACE` (then a
    /// `LoggedOff` notice). The sessions are utmp's or logind's, by `users::current_sessions`;
    /// the leaders are their pids (utmp's `ut_pid`, logind's `LEADER`) that lead a session.
    /// `Err` refuses the request at once.
    pub fn log_off(&mut self, to: Requester, root: &Path) -> Result<(), String> {
        if self.logoff.is_some() {
            return Err("a log-off is already under way".into());
        }
        let sessions = match users::current_sessions(root) {
            Ok((s, _)) => s,
            Err(e) => return Err(e.to_string()),
        };
        // The active user: the first logged-in user in sort order.
        let Some(active) = users::logged_in_users(&sessions).into_iter().next() else {
            log::info!("log-off: nothing to do (no user session)");
            return Err("no user session to end".into());
        };
        let mut leaders: Vec<i32> = sessions
            .iter()
            .filter(|s| s.user == active && s.pid > 1)
            // Only live session leaders of this system: recorded pids can be stale and reused,
            // and the facts root may be a fixture tree.
            .filter(|s| is_session_leader(root, s.pid))
            .map(|s| s.pid)
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        if leaders.is_empty() {
            log::info!("log-off: nothing to do (no user session)");
            return Err("no user session to end".into());
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
            to,
        });
        Ok(())
    }

    /// Timer work: the end of a grace period, the log-off kill.
    pub fn on_timer(
        &mut self,
        now: Duration,
        cfg: &Config,
        hooks: &mut Hooks,
        n: &mut Vec<Notice>,
    ) {
        if let Some(s) = self.shutdown.take_if(|s| s.at <= now) {
            n.push(Notice::ShuttingDown { to: s.to.clone() });
            self.start(s.reboot, s.to, cfg, hooks, n);
        }
        if let Some(l) = self.logoff.take_if(|l| l.at <= now) {
            // The whole group, also when its leader already left: members may remain.
            for &pid in &l.leaders {
                let _ = sys::kill_group(pid, sys::SIGKILL);
            }
            n.push(Notice::LoggedOff {
                to: l.to,
                leaders: l.leaders,
            });
        }
    }

    /// The earliest deadline.
    pub fn deadline(&self) -> Option<Duration> {
        let a = self.shutdown.as_ref().map(|s| s.at);
        let b = self.logoff.as_ref().map(|l| l.at);
        a.into_iter().chain(b).min()
    }

    fn start(
        &mut self,
        reboot: bool,
        to: Requester,
        cfg: &Config,
        hooks: &mut Hooks,
        n: &mut Vec<Notice>,
    ) {
        let configured = if reboot {
            cfg.reboot_command.as_deref()
        } else {
            cfg.poweroff_command.as_deref()
        };
        let init = actions::init_kind(
            std::fs::read_link("/proc/1/exe").ok().as_deref(),
            std::fs::read_to_string("/proc/1/comm").ok().as_deref(),
        );
        let steps = actions::power_plan(configured, reboot, Path::exists, init);
        self.run = Some(Run {
            reboot,
            steps: steps.into(),
            to,
            errors: Vec::new(),
        });
        self.next_step(None, hooks, n);
    }

    /// A power command ended (or could not be queued).
    pub fn command_done(
        &mut self,
        result: Result<(), String>,
        hooks: &mut Hooks,
        n: &mut Vec<Notice>,
    ) {
        match result {
            Ok(()) => self.finish(Ok(()), n),
            Err(e) => self.next_step(Some(e), hooks, n),
        }
    }

    /// Tries the next power method; `failed` says why the previous one did not work.
    fn next_step(&mut self, failed: Option<String>, hooks: &mut Hooks, n: &mut Vec<Notice>) {
        let Some(run) = &mut self.run else {
            return;
        };
        if let Some(e) = failed {
            log::error!("shutdown: {e}");
            run.errors.push(e);
        }
        while let Some(step) = run.steps.pop_front() {
            match step {
                PowerStep::Command(program, args) => {
                    log::info!("shutdown: running {} {}", program.display(), args.join(" "));
                    let job = Job {
                        label: "power".into(),
                        dir: program,
                        args,
                        stdin: Vec::new(),
                        redact: Vec::new(),
                        timeout: POWER_COMMAND_TIMEOUT,
                        ends: None,
                    };
                    // The power lane holds one job, and one power-off runs at a time.
                    match hooks.submit(Lane::Power, job, Followup::Power) {
                        Ok(()) => return,
                        Err(_) => run.errors.push("a power command is already running".into()),
                    }
                }
                PowerStep::SignalInit(sig) => match sys::signal(1, sig) {
                    Ok(()) => {
                        log::info!("shutdown: sent signal {sig} to init");
                        return self.finish(Ok(()), n);
                    }
                    Err(e) => run.errors.push(format!("signalling init: {e}")),
                },
                PowerStep::Syscall => {
                    let e = sys::sync_and_reboot(run.reboot);
                    run.errors.push(format!("reboot(2): {e}"));
                }
            }
        }
        let why = run.errors.join("; ");
        self.finish(
            Err(if why.is_empty() {
                "no power-off method".into()
            } else {
                why
            }),
            n,
        );
    }

    fn finish(&mut self, result: Result<(), String>, n: &mut Vec<Notice>) {
        if let Some(run) = self.run.take() {
            let what = if run.reboot { "reboot" } else { "power-off" };
            if result.is_ok() {
                log::info!("shutdown: {what} under way");
            }
            n.push(Notice::Done {
                to: run.to,
                action: "shutdown".into(),
                result,
            });
        }
    }
}

/// Tells every logged-in terminal (the sessions' ttys, from utmp or logind) what is coming,
/// once per terminal.
fn announce(root: &Path, req: &Shutdown) {
    use std::os::unix::fs::OpenOptionsExt;
    let text = actions::wall_text(req);
    let sessions = match users::current_sessions(root) {
        Ok((s, _)) => s,
        Err(e) => return log::warn!("shutdown: not announced: {e}"),
    };
    let mut ttys: Vec<_> = sessions
        .iter()
        .filter_map(|s| actions::tty_path(&s.line))
        .collect();
    ttys.sort();
    ttys.dedup();
    for rel in ttys {
        let path = root.join(rel);
        // Non-blocking, no controlling terminal: a stuck tty must not stall the agent.
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path);
        match opened.and_then(|mut f| f.write_all(text.as_bytes())) {
            Ok(()) => log::debug!("shutdown announced on {}", path.display()),
            Err(e) => log::debug!("announcing on {}: {e}", path.display()),
        }
    }
}

/// Whether the guest can suspend to `state` ("disk" or "mem"), per `/sys/power/state`.
pub fn check_power_state(root: &Path, state: &str) -> Result<(), String> {
    if state != "disk" && state != "mem" {
        return Err(format!("state '{state}' is not \"disk\" or \"mem\""));
    }
    let offered = facts::read_text(root, "sys/power/state").unwrap_or_default();
    if actions::power_state_supported(&offered, state) {
        Ok(())
    } else {
        Err(format!(
            "this guest cannot suspend to {state}: /sys/power/state offers '{}'",
            offered.trim()
        ))
    }
}

/// Suspends the guest. Blocks: the write returns once the guest has resumed. `hybrid`
/// (QGA's guest-suspend-hybrid) first writes "suspend" to `/sys/power/disk`, then "disk".
pub fn write_power_state(root: &Path, state: &str) -> Result<(), String> {
    let state = if state == "hybrid" {
        let disk = facts::under(root, "sys/power/disk");
        log::info!("hibernate: writing 'suspend' to {}", disk.display());
        std::fs::write(&disk, "suspend").map_err(|e| format!("writing {}: {e}", disk.display()))?;
        "disk"
    } else {
        state
    };
    let path = facts::under(root, "sys/power/state");
    log::info!("hibernate: writing '{state}' to {}", path.display());
    std::fs::write(&path, state).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Brings CPUs online or offline until `count` are online. Returns the count reached and the
/// result. Each sysfs write blocks until the kernel has moved the CPU.
pub fn set_online_cpus(root: &Path, count: u32) -> (u32, Result<(), String>) {
    let base = "sys/devices/system/cpu";
    let list = |f: &str| {
        facts::read_text(root, &format!("{base}/{f}"))
            .map(|t| actions::cpu_list(&t))
            .unwrap_or_default()
    };
    let (writes, reached) = actions::cpu_plan(&list("present"), &list("online"), count);
    let mut errors = Vec::new();
    for (cpu, on) in writes {
        let path = facts::under(root, &format!("{base}/cpu{cpu}/online"));
        if let Err(e) = std::fs::write(&path, if on { "1" } else { "0" }) {
            errors.push(format!("writing {}: {e}", path.display()));
        }
    }
    let result = if !errors.is_empty() {
        Err(errors.join("; "))
    } else if reached < count {
        Err(format!("only {reached} CPUs are present"))
    } else {
        Ok(())
    };
    (reached, result)
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
