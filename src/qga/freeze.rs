// SPDX-License-Identifier: Apache-2.0
//! QGA commands: freezing the file systems (guest-fsfreeze-status, -freeze, -freeze-list,
//! -thaw), and the frozen state the agent keeps in `Services`.
//!
//! A freeze runs the hooks of `<hooks-dir>/fsfreeze/` with the argument `freeze` in the
//! urgent hook lane (each with the hook timeout; the loop keeps serving meanwhile), then:
//!
//! 1. writes the marker `<state-dir>/fsfreeze.frozen` (holding the boot id), while it still
//!    can be written;
//! 2. enters the frozen state: only the freeze-safe commands run (`commands::FROZEN_OK`),
//!    logging is off (`logger::set_frozen`) and the key-value store refuses writes and defers
//!    its delivery records (`Keeper::set_frozen`), since any write of guestd's own to a frozen
//!    file system would block the loop;
//! 3. freezes the block-backed mounts (`facts::blockdev`; FUSE, network and virtual file
//!    systems are never in the list) in reverse mount order with FIFREEZE, each device once.
//!    `EOPNOTSUPP`, `EBUSY` and `ENOTTY` mean "cannot be frozen" and are skipped; a mount
//!    point that is no longer the mounted file system (mounted over) is skipped too; any
//!    other error thaws what was frozen and fails the call. FIFREEZE writes out dirty data
//!    first and runs inline, as in qemu-ga.
//!
//! A failed freeze hook, a failed FIFREEZE and a freeze of nothing all leave the state thawed
//! and run the hooks with `thaw`, so every `freeze` hook run is followed by a `thaw` one
//! (qemu-ga leaves the applications its hook paused in that case).
//!
//! A thaw does FITHAW on every mounted block file system (as qemu-ga: also on those someone
//! else froze), repeatedly until it fails, counting each file system once; then leaves the
//! frozen state and, when the agent was frozen, runs the hooks with `thaw` and answers the
//! count. Thawing a thawed guest answers 0 (Proxmox needs a number). The agent also thaws by
//! itself after `fsfreeze-timeout` (logging an error: the host never thawed), and before it
//! exits.
//!
//! The marker lives in the state directory (`/var/lib/guestd`, on disk) rather than in a
//! tmpfs, so it holds the boot id: at start a marker of this boot means the agent was
//! restarted while frozen, and it starts frozen (without opening the store, whose lock file
//! it could not open); a marker of an earlier boot is stale and removed. The marker is only
//! read at start, which never blocks on a frozen file system.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{Args, Error};
use crate::config::Config;
use crate::facts::blockdev::{self, BlockMount};
use crate::facts::{read_text_opt, under};
use crate::hooks::{self, Job};
use crate::services::{Followup, Lane, Notice, Requester, Services};
use crate::sys;

pub const COMMANDS: &[Command] = &[
    Command::new("guest-fsfreeze-status", &[], status),
    Command::new("guest-fsfreeze-freeze", &[], freeze),
    Command::new("guest-fsfreeze-freeze-list", &["mountpoints"], freeze_list),
    Command::new("guest-fsfreeze-thaw", &[], thaw),
];

/// The error of a freeze while frozen (only reachable when the filter lets it through).
pub const ALREADY_FROZEN: &str = "the file systems are already frozen";
/// The marker file, in the state directory.
pub const MARKER: &str = "fsfreeze.frozen";
/// FITHAW calls per file system at most (each undoes one FIFREEZE).
const MAX_THAWS: usize = 64;

/// The freeze state.
#[derive(Debug, Default)]
pub struct Freeze {
    frozen: Option<Frozen>,
    /// A freeze or thaw is running its hooks.
    busy: bool,
    /// A thaw arrived while a freeze ran its hooks (its host had left, and a new one wants
    /// the guest thawed): the freeze must not go ahead when they end.
    cancelled: bool,
}

#[derive(Debug)]
struct Frozen {
    /// Monotonic time of the freeze (or of the start, for an agent that started frozen).
    since: Duration,
    /// The mount points frozen (empty when the agent started frozen: not known).
    mounts: Vec<String>,
}

impl Freeze {
    pub fn is_frozen(&self) -> bool {
        self.frozen.is_some()
    }

    /// When the automatic thaw is due (`timeout` zero: never).
    pub fn deadline(&self, timeout: Duration) -> Option<Duration> {
        if timeout.is_zero() {
            return None;
        }
        self.frozen.as_ref().map(|f| f.since + timeout)
    }
}

/// The marker's path.
pub fn marker(cfg: &Config) -> PathBuf {
    cfg.state_dir.join(MARKER)
}

/// This boot's id (`proc/sys/kernel/random/boot_id`), if the kernel gives one.
fn boot_id(root: &Path) -> Option<String> {
    let id = read_text_opt(root, "proc/sys/kernel/random/boot_id").ok()??;
    Some(id.trim().to_owned()).filter(|s| !s.is_empty())
}

/// Whether the agent starts frozen: the marker exists and was written in this boot (or its
/// boot cannot be told). A marker of another boot is removed.
pub fn frozen_at_start(cfg: &Config) -> bool {
    let path = marker(cfg);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
        Err(e) => {
            log::warn!("reading {}: {e}; taking it as frozen", path.display());
            return true;
        }
    };
    match boot_id(&cfg.root) {
        Some(now) if text.trim() != now => {
            log::info!("{}: left from an earlier boot; removed", path.display());
            if let Err(e) = std::fs::remove_file(&path) {
                log::warn!("removing {}: {e}", path.display());
            }
            false
        }
        _ => true,
    }
}

/// Enters the frozen state at start (the marker of this boot exists).
pub fn start_frozen(svc: &mut Services) {
    log::warn!(
        "{} exists: the file systems were frozen when guestd last stopped; starting frozen \
         (logging off until the host thaws, or {}s at most)",
        marker(&svc.cfg).display(),
        svc.cfg.fsfreeze_timeout.as_secs()
    );
    enter(svc, Vec::new());
}

fn enter(svc: &mut Services, mounts: Vec<String>) {
    svc.freeze.frozen = Some(Frozen {
        since: sys::monotonic_now(),
        mounts,
    });
    crate::logger::set_frozen(true);
    svc.store.set_frozen(true);
}

/// Leaves the frozen state: removes the marker, turns logging and the store back on.
/// Whether the agent was frozen.
fn leave(svc: &mut Services) -> bool {
    let Some(was) = svc.freeze.frozen.take() else {
        return false;
    };
    let removed = std::fs::remove_file(marker(&svc.cfg));
    crate::logger::set_frozen(false);
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            log::error!("removing {}: {e}", marker(&svc.cfg).display());
        }
        _ => {}
    }
    let secs = sys::monotonic_now().saturating_sub(was.since).as_secs();
    log::info!("thawed after {secs}s (frozen: {})", was.mounts.join(", "));
    svc.store.set_frozen(false);
    svc.store
        .open_deferred(&svc.cfg.state_dir, crate::ovirt::kv::legacy_record);
    true
}

/// Opens the mount point of `m` (under `root`) for an ioctl. `Ok(None)` when the directory
/// found there is not the mounted file system (it was mounted over, or `root` is a fixture
/// tree): an ioctl on it would reach another file system.
pub fn open_mount(root: &Path, m: &BlockMount) -> io::Result<Option<File>> {
    let dir = File::open(under(root, &m.mount_point))?;
    let dev = sys::dev_major_minor(dir.metadata()?.dev());
    if dev != m.st_dev {
        log::debug!(
            "{}: device {}:{} is not the mounted {}:{}",
            m.mount_point,
            dev.0,
            dev.1,
            m.st_dev.0,
            m.st_dev.1
        );
        return Ok(None);
    }
    Ok(Some(dir))
}

fn status(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    Answer::Return(json!(if cx.svc.is_frozen() {
        "frozen"
    } else {
        "thawed"
    }))
}

fn freeze(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    start(cx, None)
}

fn freeze_list(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    match args.opt_strings("mountpoints") {
        Ok(list) => start(cx, list.map(|l| l.into_iter().map(str::to_owned).collect())),
        Err(e) => Answer::Fail(e),
    }
}

/// The fsfreeze hook job with argument `arg` (`freeze` or `thaw`).
fn hook_job(cfg: &Config, arg: &str) -> Job {
    Job {
        label: "fsfreeze".into(),
        dir: cfg.hooks_dir.join("fsfreeze"),
        args: vec![arg.to_owned()],
        stdin: Vec::new(),
        redact: Vec::new(),
        timeout: cfg.hook_timeout,
        ends: None,
    }
}

/// Starts a freeze: the freeze hooks first; `after_freeze_hooks` carries on.
fn start(cx: &mut Ctx<'_>, mountpoints: Option<Vec<String>>) -> Answer {
    if cx.svc.is_frozen() {
        return Answer::Fail(Error::generic(ALREADY_FROZEN));
    }
    if cx.svc.freeze.busy {
        return Answer::Fail(Error::generic("a freeze or thaw is already under way"));
    }
    if !cx.svc.has_room(Lane::Urgent) {
        return Answer::Fail(Error::generic(hooks::REFUSED));
    }
    log::info!("guest-fsfreeze called");
    cx.svc.freeze.busy = true;
    let job = hook_job(&cx.svc.cfg, "freeze");
    let then = Followup::FreezeHooks {
        to: cx.requester(),
        mountpoints,
    };
    cx.svc.submit(Lane::Urgent, job, then);
    Answer::Later
}

/// The freeze hooks ended (`hooks`: whether they all succeeded): freezes, or aborts.
pub fn after_freeze_hooks(
    svc: &mut Services,
    to: Requester,
    mountpoints: Option<Vec<String>>,
    hooks: Result<(), String>,
) {
    if let Err(e) = hooks {
        let e = format!("the fsfreeze hook failed, nothing was frozen: {e}");
        log::warn!("{e}");
        return thaw_hooks(svc, Some(to), Err(e));
    }
    if std::mem::take(&mut svc.freeze.cancelled) {
        let e = "a thaw arrived while the fsfreeze hooks ran: nothing was frozen".to_owned();
        log::warn!("{e}");
        return thaw_hooks(svc, Some(to), Err(e));
    }
    match freeze_mounts(svc, mountpoints.as_deref()) {
        Ok(0) => {
            log::info!("guest-fsfreeze: no file system could be frozen");
            thaw_hooks(svc, Some(to), Ok(json!(0)));
        }
        Ok(n) => {
            svc.freeze.busy = false;
            svc.notices.push(Notice::Reply {
                to,
                result: Ok(json!(n)),
            });
        }
        Err(e) => thaw_hooks(svc, Some(to), Err(e)),
    }
}

/// Writes the marker, enters the frozen state and freezes the mounts (all, or those listed)
/// in reverse order. The number frozen; at 0, or on an error, the state is thawed again.
fn freeze_mounts(svc: &mut Services, list: Option<&[String]>) -> Result<usize, String> {
    let root = svc.cfg.root.clone();
    let mounts = blockdev::read_block_mounts(&root).map_err(|e| e.to_string())?;
    let listed = |m: &BlockMount| list.is_none_or(|l| l.contains(&m.mount_point));
    let targets: Vec<BlockMount> = mounts
        .into_iter()
        .filter(|m| !blockdev::served_by_a_daemon(&m.fs_type) && listed(m))
        .collect();
    let targets = blockdev::first_per_device(targets);
    write_marker(&svc.cfg)?;
    enter(svc, Vec::new());
    let mut frozen = Vec::new();
    let mut failed = None;
    for m in targets.iter().rev() {
        let dir = match open_mount(&root, m) {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                failed = Some(format!("failed to open {}: {e}", m.mount_point));
                break;
            }
        };
        match sys::freeze(&dir) {
            Ok(()) => frozen.push(m.mount_point.clone()),
            Err(e) if cannot_freeze(&e) => {}
            Err(e) => {
                failed = Some(format!("failed to freeze {}: {e}", m.mount_point));
                break;
            }
        }
    }
    if failed.is_some() || frozen.is_empty() {
        let thawed = thaw_mounts(&root);
        leave(svc);
        log::info!("guest-fsfreeze: undone ({thawed} thawed)");
        return failed.map_or(Ok(0), Err);
    }
    if let Some(f) = &mut svc.freeze.frozen {
        f.mounts = frozen.clone();
    }
    Ok(frozen.len())
}

/// The errors of FIFREEZE that mean "this file system cannot be frozen" (or is frozen
/// already, through another mount).
fn cannot_freeze(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EBUSY | libc::ENOTTY)
    )
}

fn write_marker(cfg: &Config) -> Result<(), String> {
    let path = marker(cfg);
    let text = format!("{}\n", boot_id(&cfg.root).unwrap_or_default());
    std::fs::create_dir_all(&cfg.state_dir)
        .and_then(|()| std::fs::write(&path, text))
        .map_err(|e| format!("creating {}: {e}", path.display()))
}

/// FITHAW on every mounted block file system, repeated until it fails; the number thawed at
/// least once. A mount table that cannot be read thaws nothing.
fn thaw_mounts(root: &Path) -> usize {
    let mounts = match blockdev::read_block_mounts(root) {
        Ok(m) => m,
        Err(e) => {
            log::error!("thawing: {e}");
            return 0;
        }
    };
    let mut count = 0;
    for m in mounts
        .iter()
        .filter(|m| !blockdev::served_by_a_daemon(&m.fs_type))
    {
        let Ok(Some(dir)) = open_mount(root, m) else {
            continue;
        };
        let thaws = (0..MAX_THAWS)
            .take_while(|_| sys::thaw(&dir).is_ok())
            .count();
        count += usize::from(thaws > 0);
    }
    count
}

fn thaw(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    if cx.svc.freeze.busy && !cx.svc.is_frozen() {
        // A freeze is running its hooks for a host that left (its link would still be
        // waiting otherwise): it must not freeze once they end.
        log::info!("guest-fsfreeze-thaw: cancelling the freeze whose hooks are running");
        cx.svc.freeze.cancelled = true;
    }
    let count = thaw_mounts(&cx.svc.cfg.root);
    if !leave(cx.svc) {
        log::info!("guest-fsfreeze-thaw: not frozen ({count} thawed)");
        return Answer::Return(json!(count));
    }
    thaw_hooks(cx.svc, Some(cx.requester()), Ok(json!(count)));
    Answer::Later
}

/// Runs the thaw hooks; `after_thaw_hooks` then answers `result` to `to`.
fn thaw_hooks(svc: &mut Services, to: Option<Requester>, result: Result<Value, String>) {
    svc.freeze.busy = true;
    let job = hook_job(&svc.cfg, "thaw");
    svc.submit(Lane::Urgent, job, Followup::ThawHooks { to, result });
}

/// The thaw hooks ended: answers. A thaw whose hooks failed is an error saying the file
/// systems were thawed all the same (as qemu-ga reports it).
pub fn after_thaw_hooks(
    svc: &mut Services,
    to: Option<Requester>,
    result: Result<Value, String>,
    hooks: Result<(), String>,
) {
    svc.freeze.busy = false;
    svc.freeze.cancelled = false;
    let result = match (hooks, result) {
        (Ok(()), r) => r,
        (Err(e), Ok(count)) => Err(format!(
            "the file systems were thawed ({count}), but the fsfreeze hook failed: {e}"
        )),
        (Err(e), Err(first)) => {
            log::warn!("fsfreeze thaw hooks: {e}");
            Err(first)
        }
    };
    match to {
        Some(to) => svc.notices.push(Notice::Reply { to, result }),
        None => {
            if let Err(e) = result {
                log::error!("{e}");
            }
        }
    }
}

/// The automatic thaw, once `fsfreeze-timeout` has passed since the freeze.
pub fn on_timer(svc: &mut Services, now: Duration) {
    let timeout = svc.cfg.fsfreeze_timeout;
    if svc.freeze.deadline(timeout).is_none_or(|d| now < d) {
        return;
    }
    let count = thaw_mounts(&svc.cfg.root);
    leave(svc);
    log::error!(
        "the host never thawed the file systems: thawed {count} by itself after {}s \
         (fsfreeze-timeout)",
        timeout.as_secs()
    );
    thaw_hooks(svc, None, Ok(json!(count)));
}

/// Before the agent exits: a frozen guest is thawed, and its thaw hooks run to the end.
pub fn thaw_at_exit(svc: &mut Services) {
    if !svc.is_frozen() {
        return;
    }
    let count = thaw_mounts(&svc.cfg.root);
    leave(svc);
    log::warn!("stopping while frozen: thawed {count} file systems first");
    let outcomes = hooks::run_blocking(hook_job(&svc.cfg, "thaw"));
    if let Err(e) = crate::services::summarise(&outcomes) {
        log::error!("fsfreeze thaw hooks: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_automatic_thaw_is_due_after_the_timeout_unless_zero() {
        let mut f = Freeze::default();
        assert_eq!(f.deadline(Duration::from_secs(600)), None);
        f.frozen = Some(Frozen {
            since: Duration::from_secs(5),
            mounts: Vec::new(),
        });
        assert_eq!(
            f.deadline(Duration::from_secs(600)),
            Some(Duration::from_secs(605))
        );
        assert_eq!(f.deadline(Duration::ZERO), None);
    }

    #[test]
    fn only_cannot_freeze_errors_are_skipped() {
        for (errno, skip) in [
            (libc::EOPNOTSUPP, true),
            (libc::EBUSY, true),
            (libc::ENOTTY, true),
            (libc::EIO, false),
            (libc::EPERM, false),
        ] {
            assert_eq!(cannot_freeze(&io::Error::from_raw_os_error(errno)), skip);
        }
    }

    #[test]
    fn a_fixture_directory_is_never_taken_for_its_mount() {
        let root = crate::facts::fixtures().join("blockdev");
        let m = BlockMount {
            mount_point: "/".into(),
            fs_type: "ext4".into(),
            source: "/dev/mapper/vg-root".into(),
            st_dev: (253, 0),
            device: (253, 0),
        };
        assert!(open_mount(&root, &m).unwrap().is_none());
    }
}
