// SPDX-License-Identifier: Apache-2.0
//! The host's actions (§3): shutdown and reboot with a grace period, hibernate,
//! lock-screen, log-off, login, lifecycle events and CPU hot-plug. Arguments are parsed here;
//! the work is queued in the hook lanes or the power state machines, and its end comes back
//! as a notice that `Session::notice` answers.

use std::time::Duration;

use serde_json::Value;

use super::wire::Command;
use super::{Ctx, Session};
use crate::actions;
use crate::hooks::{self, Job};
use crate::power;
use crate::services::{Followup, Lane, Notice};

/// A hook job for `action` with the configured defaults.
fn job(label: &str, cx: &Ctx<'_, '_>, timeout: Duration) -> Job {
    Job {
        label: label.to_owned(),
        dir: cx.svc.cfg.hooks_dir.join(label),
        args: Vec::new(),
        stdin: Vec::new(),
        redact: Vec::new(),
        timeout,
        ends: None,
    }
}

/// Runs `<hooks-dir>/<action>/`, answering when the hooks end; a guest without the hook
/// cannot do the action.
fn run_action_hooks(s: &Session, cmd: &Command, action: &str, job: Job, cx: &mut Ctx<'_, '_>) {
    let then = Followup::Complete {
        to: s.requester(cmd),
        action: action.to_owned(),
        need_hook: true,
    };
    cx.svc.submit(Lane::Normal, job, then);
}

/// Answers `cmd` at once.
fn answer(
    s: &Session,
    cmd: &Command,
    action: &str,
    result: Result<(), String>,
    cx: &mut Ctx<'_, '_>,
) {
    s.answer(cx, super::reply_id(cmd).as_deref(), action, result);
}

pub(super) fn shutdown(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    match actions::parse_shutdown(&cmd.args) {
        Ok(req) => {
            let svc = &mut *cx.svc;
            match svc.power.shutdown(&req, s.requester(cmd), &svc.cfg.root) {
                Ok(Some(old)) => {
                    let e = "replaced by a later shutdown request".to_owned();
                    if old.link == s.link {
                        s.answer(cx, old.id.as_deref(), "shutdown", Err(e));
                    } else {
                        // Asked on another link: its session answers.
                        let action = "shutdown".into();
                        let done = Notice::Done {
                            to: old,
                            action,
                            result: Err(e),
                        };
                        cx.svc.notices.push(done);
                    }
                }
                Ok(None) => {}
                Err(e) => answer(s, cmd, "shutdown", Err(e), cx),
            }
        }
        Err(e) => answer(s, cmd, "shutdown", Err(e), cx),
    }
}

pub(super) fn hibernate(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let state = cmd
        .args
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("disk")
        .to_owned();
    if let Err(e) = power::check_power_state(&cx.svc.cfg.root, &state) {
        return answer(s, cmd, "hibernate", Err(e), cx);
    }
    let timeout = cx.svc.cfg.lifecycle_timeout;
    let mut job = job("before_hibernation", cx, timeout);
    job.ends = Some(crate::sys::monotonic_now() + timeout);
    let to = s.requester(cmd);
    cx.svc
        .submit(Lane::Urgent, job, Followup::Hibernate { state, to });
}

pub(super) fn lock_screen(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let job = job("lock-screen", cx, cx.svc.cfg.hook_timeout);
    run_action_hooks(s, cmd, "lock-screen", job, cx);
}

pub(super) fn login(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let user = cmd.args.get("username").and_then(Value::as_str);
    let pass = cmd.args.get("password").and_then(Value::as_str);
    let (Some(user), Some(pass)) = (user, pass) else {
        let e = "login needs username and password";
        return answer(s, cmd, "login", Err(e.into()), cx);
    };
    // Credentials only on the hook's stdin; the password is masked in its logged output.
    let mut job = job("login", cx, cx.svc.cfg.hook_timeout);
    job.stdin = actions::login_stdin(user, pass);
    job.redact = vec![pass.as_bytes().to_vec()];
    run_action_hooks(s, cmd, "login", job, cx);
}

pub(super) fn log_off(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let dir = cx.svc.cfg.hooks_dir.join("log-off");
    if !hooks::list_executables(&dir).unwrap_or_default().is_empty() {
        let job = job("log-off", cx, cx.svc.cfg.hook_timeout);
        return run_action_hooks(s, cmd, "log-off", job, cx);
    }
    // Built in: end the active user's sessions.
    let svc = &mut *cx.svc;
    if let Err(e) = svc.power.log_off(s.requester(cmd), &svc.cfg.root) {
        answer(s, cmd, "log-off", Err(e), cx);
    }
}

pub(super) fn lifecycle_event(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let kind = cmd.args.get("type").and_then(Value::as_str).unwrap_or("");
    if !actions::LIFECYCLE_TYPES.contains(&kind) {
        // As the reference agent: no hook to run, and done.
        log::info!("lifecycle event '{kind}' is not one guestd knows: nothing to run");
        return answer(s, cmd, "lifecycle-event", Ok(()), cx);
    }
    let timeout = cx.svc.cfg.lifecycle_timeout;
    let mut job = job(kind, cx, timeout);
    // The whole event, not each hook, must end in time: VDSM waits 10 s at most.
    job.ends = Some(crate::sys::monotonic_now() + timeout);
    if cmd.args.get("failure") == Some(&Value::Bool(true)) {
        job.args = vec!["failure".into()];
    }
    // A missing hook directory is not an error: nothing had to be done.
    let then = Followup::Complete {
        to: s.requester(cmd),
        action: kind.to_owned(),
        need_hook: false,
    };
    cx.svc.submit(Lane::Urgent, job, then);
}

pub(super) fn set_number_of_cpus(s: &mut Session, cmd: &Command, cx: &mut Ctx<'_, '_>) {
    let count = match cmd.args.get("count").and_then(Value::as_i64) {
        Some(n) if n > 0 => u32::try_from(n).unwrap_or(u32::MAX),
        other => {
            let e = format!("count {other:?} is not a positive integer");
            return answer(s, cmd, "set-number-of-cpus", Err(e), cx);
        }
    };
    let (reached, result) = power::set_online_cpus(&cx.svc.cfg.root, count);
    log::info!("set-number-of-cpus {count}: {reached} CPUs online");
    s.send_number_of_cpus(cx);
    answer(s, cmd, "set-number-of-cpus", result, cx);
}
