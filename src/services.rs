// SPDX-License-Identifier: Apache-2.0
//! What every link's protocol session shares: the configuration, the fact sources' health,
//! the key-value store, the two hook lanes and the power state machines. Work that ends
//! later (a hook job, a shutdown's grace period) comes back as a `Notice` addressed to the
//! link and request that asked for it; the loop hands each notice to that link's session.

use std::os::fd::RawFd;
use std::time::Duration;

use crate::config::Config;
use crate::facts::Health;
use crate::hooks::{self, Job, Outcome, Runner};
use crate::kv::keeper::Keeper;
use crate::power::{self, Power};
use crate::probe::Probes;
use crate::qga::exec::Execs;
use crate::qga::file::Files;
use crate::qga::freeze::{self, Freeze};

/// Index of a link in the agent's list.
pub type LinkId = usize;

/// Who asked for something that ends later: a link and the request's id on that link
/// (oVirt's `reply_id`, absent when the host wants no answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub link: LinkId,
    pub id: Option<String>,
}

/// What to do when a hook job finishes; each job carries its own.
#[derive(Debug)]
pub enum Followup {
    /// Nothing (param hooks).
    Nothing,
    /// The param hooks for a secret ran: when every one succeeded, the secret was applied and
    /// is deleted from the store, if it still holds the value (its `kv::value_hash`) applied.
    SecretApplied { key: String, value_hash: u64 },
    /// Answer the requester. `need_hook`: no executable at all means the action could not be
    /// done (a guest without a desktop has nothing to lock, for example).
    Complete {
        to: Requester,
        action: String,
        need_hook: bool,
    },
    /// `before_hibernation` hooks are done: now suspend.
    Hibernate { state: String, to: Requester },
    /// A power-off or reboot command ended.
    Power,
    /// The fsfreeze hooks ran with `freeze`: now freeze (all mounts, or those listed).
    FreezeHooks {
        to: Requester,
        mountpoints: Option<Vec<String>>,
    },
    /// The fsfreeze hooks ran with `thaw`: answer `result` (no one, for the automatic thaw).
    ThawHooks {
        to: Option<Requester>,
        result: Result<serde_json::Value, String>,
    },
}

/// Work that ended, for the session of the link that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A request finished: answer it.
    Done {
        to: Requester,
        action: String,
        result: Result<(), String>,
    },
    /// A shutdown's grace period is over and the power-off starts now.
    ShuttingDown { to: Requester },
    /// The built-in log-off ended the active user's sessions, those led by `leaders`.
    LoggedOff { to: Requester, leaders: Vec<i32> },
    /// A request's work ended with a value to answer (QGA).
    Reply {
        to: Requester,
        result: Result<serde_json::Value, String>,
    },
    /// The network and FUSE file systems the link asked about were measured (those that
    /// answered in time).
    Measured {
        to: Requester,
        filesystems: Vec<crate::facts::disks::Filesystem>,
    },
}

impl Notice {
    pub fn link(&self) -> LinkId {
        match self {
            Notice::Done { to, .. }
            | Notice::ShuttingDown { to }
            | Notice::LoggedOff { to, .. }
            | Notice::Reply { to, .. }
            | Notice::Measured { to, .. } => to.link,
        }
    }
}

/// The lane a hook job runs in. Each lane runs one program at a time; what the host waits
/// for with a deadline (lifecycle events, hibernation: VDSM gives 10 s) never queues behind
/// slow param or desktop hooks, and a power-off command queues behind nothing (the power
/// state machine runs one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    Normal = 0,
    Urgent = 1,
    Power = 2,
}

/// The three hook lanes, indexed by `Lane`.
pub struct Hooks {
    lanes: [Runner<Followup>; 3],
}

impl Default for Hooks {
    fn default() -> Hooks {
        // Normal, urgent, and power (one power command at a time).
        Hooks {
            lanes: [Runner::new(), Runner::new(), Runner::with_limit(1)],
        }
    }
}

impl Hooks {
    /// Whether `lane` takes another job.
    pub fn has_room(&self, lane: Lane) -> bool {
        !self.lanes[lane as usize].is_full()
    }

    /// Whether a job finished that `take_finished` has not handed out.
    fn has_finished(&self) -> bool {
        self.lanes.iter().any(Runner::has_finished)
    }

    /// Queues `job` in `lane`; a full lane gives the follow-up back, for the refusal.
    pub fn submit(&mut self, lane: Lane, job: Job, then: Followup) -> Result<(), Followup> {
        self.lanes[lane as usize]
            .submit(job, then)
            .map_err(|r| r.then)
    }

    pub fn poll_fds(&self, out: &mut Vec<(RawFd, i16)>) {
        for r in &self.lanes {
            out.extend(r.poll_fds());
        }
    }

    /// poll(2) reported `revents` on `fd`; each runner ignores descriptors not its own.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16) {
        for r in &mut self.lanes {
            r.on_ready(fd, revents);
        }
    }

    pub fn on_sigchld(&mut self) {
        self.lanes.iter_mut().for_each(Runner::on_sigchld);
    }

    pub fn on_timer(&mut self, now: Duration) {
        for r in &mut self.lanes {
            r.on_timer(now);
        }
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.lanes.iter().filter_map(Runner::next_deadline).min()
    }

    /// Finished jobs of every lane: each follow-up with its label and outcomes.
    fn take_finished(&mut self) -> Vec<(Followup, String, Vec<Outcome>)> {
        let mut done = Vec::new();
        for r in &mut self.lanes {
            done.extend(
                r.take_finished()
                    .into_iter()
                    .map(|f| (f.then, f.label, f.outcomes)),
            );
        }
        done
    }
}

/// The shared state and machinery.
pub struct Services {
    pub cfg: Config,
    pub health: Health,
    pub store: Keeper,
    pub hooks: Hooks,
    pub power: Power,
    /// QGA's guest-exec processes and helper programs.
    pub execs: Execs,
    /// QGA's open file handles, which outlive the connection that opened them.
    pub files: Files,
    /// Whether the file systems are frozen (QGA), and the freeze under way.
    pub freeze: Freeze,
    /// Notices for the sessions, routed by the loop at the end of each turn.
    pub notices: Vec<Notice>,
    /// statvfs of network and FUSE file systems, off the loop.
    pub probes: Probes,
}

impl Services {
    pub fn new(cfg: Config, store: Keeper) -> Services {
        Services {
            execs: Execs::new(cfg.exec_expiry),
            files: Files::default(),
            cfg,
            health: Health::default(),
            store,
            hooks: Hooks::default(),
            power: Power::default(),
            freeze: Freeze::default(),
            notices: Vec::new(),
            probes: Probes::default(),
        }
    }

    /// Whether `lane` takes another job. Jobs that already finished are handed on first, so
    /// only queued and running ones count.
    pub fn has_room(&mut self, lane: Lane) -> bool {
        self.hooks_finished();
        self.hooks.has_room(lane)
    }

    /// Queues a hook job that a request asked for. A full lane is answered with a clear
    /// refusal instead.
    pub fn submit(&mut self, lane: Lane, job: Job, then: Followup) {
        self.hooks_finished();
        if let Err(then) = self.hooks.submit(lane, job, then) {
            let refusal = hooks::REFUSED.to_owned();
            match then {
                Followup::Complete { to, action, .. } => self.notices.push(Notice::Done {
                    to,
                    action,
                    result: Err(refusal),
                }),
                Followup::Hibernate { to, .. } => self.notices.push(Notice::Done {
                    to,
                    action: "hibernate".into(),
                    result: Err(refusal),
                }),
                Followup::Power => {
                    self.power
                        .command_done(Err(refusal), &mut self.hooks, &mut self.notices)
                }
                Followup::Nothing | Followup::SecretApplied { .. } => {
                    log::warn!("hook job refused: {refusal}")
                }
                Followup::FreezeHooks { to, mountpoints } => {
                    freeze::after_freeze_hooks(self, to, mountpoints, Err(refusal))
                }
                Followup::ThawHooks { to, result } => {
                    freeze::after_thaw_hooks(self, to, result, Err(refusal))
                }
            }
        }
    }

    /// Carries on with whatever waited for finished hook jobs. A follow-up may start a job
    /// that ends at once (a program that cannot start): those are served too.
    pub fn hooks_finished(&mut self) {
        loop {
            let finished = self.hooks.take_finished();
            if finished.is_empty() {
                return;
            }
            for (then, label, outcomes) in finished {
                let failed = outcomes.iter().filter(|o| !o.ok()).count();
                if failed > 0 {
                    log::warn!("{label} hooks: {failed} of {} failed", outcomes.len());
                }
                self.followup(then, &label, &outcomes);
            }
        }
    }

    fn followup(&mut self, then: Followup, label: &str, outcomes: &[Outcome]) {
        match then {
            Followup::Nothing => {}
            Followup::SecretApplied { key, value_hash } => {
                if outcomes.is_empty() || !outcomes.iter().all(Outcome::ok) {
                    return;
                }
                let done = (self.store.store_mut()).and_then(|s| {
                    s.consume_secrets(&[&key], Some(value_hash))
                        .map_err(|e| e.to_string())
                });
                match done {
                    Ok(0) => {}
                    Ok(_) => log::info!("secret param '{key}' applied by its hooks: deleted"),
                    Err(e) => log::error!("deleting the applied secret param '{key}': {e}"),
                }
            }
            Followup::Complete {
                to,
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
                    summarise(outcomes)
                };
                self.notices.push(Notice::Done { to, action, result });
            }
            Followup::Hibernate { state, to } => {
                let result = power::write_power_state(&self.cfg.root, &state);
                self.notices.push(Notice::Done {
                    to,
                    action: "hibernate".into(),
                    result,
                });
            }
            Followup::Power => {
                let ok = !outcomes.is_empty() && outcomes.iter().all(Outcome::ok);
                let result = if ok {
                    Ok(())
                } else {
                    Err(summarise(outcomes)
                        .err()
                        .unwrap_or_else(|| format!("{label}: not run")))
                };
                self.power
                    .command_done(result, &mut self.hooks, &mut self.notices);
            }
            Followup::FreezeHooks { to, mountpoints } => {
                freeze::after_freeze_hooks(self, to, mountpoints, summarise(outcomes))
            }
            Followup::ThawHooks { to, result } => {
                freeze::after_thaw_hooks(self, to, result, summarise(outcomes))
            }
        }
    }

    /// Whether the guest's file systems are frozen (guest-fsfreeze-freeze): only the
    /// freeze-safe QGA commands run, and guestd writes nothing to disk.
    pub fn is_frozen(&self) -> bool {
        self.freeze.is_frozen()
    }

    /// Whether work ended that the links have not heard of yet.
    pub fn has_notices(&self) -> bool {
        !self.notices.is_empty() || self.hooks.has_finished()
    }

    /// A SIGCHLD arrived: reaps hook programs and QGA's processes that ended.
    pub fn on_sigchld(&mut self) {
        self.hooks.on_sigchld();
        self.execs.on_sigchld(&mut self.notices);
        self.probes.on_sigchld(&mut self.notices);
    }

    /// poll(2) reported `revents` on a pipe of a QGA process or a statvfs probe.
    pub fn on_exec_ready(&mut self, fd: RawFd, revents: i16) {
        self.execs.on_ready(fd, revents, &mut self.notices);
        self.probes.on_ready(fd, revents, &mut self.notices);
    }

    /// Timer work: hook timeouts, power deadlines, batched delivery records, QGA process
    /// drains and expiry, the automatic thaw.
    pub fn on_timer(&mut self, now: Duration) {
        self.hooks.on_timer(now);
        self.execs.on_timer(now, &mut self.notices);
        self.probes.on_timer(now, &mut self.notices);
        freeze::on_timer(self, now);
        self.power
            .on_timer(now, &self.cfg, &mut self.hooks, &mut self.notices);
        self.store.on_timer(now);
    }

    /// The earliest deadline of the shared machinery.
    pub fn deadline(&self) -> Option<Duration> {
        [
            self.hooks.deadline(),
            self.power.deadline(),
            self.store.deadline(),
            self.execs.deadline(),
            self.probes.deadline(),
            self.freeze.deadline(self.cfg.fsfreeze_timeout),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

/// `Ok` when every program succeeded, else the failures, named.
pub fn summarise(outcomes: &[Outcome]) -> Result<(), String> {
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
