// SPDX-License-Identifier: Apache-2.0
//! Power and clock: guest-shutdown, guest-suspend-disk/-ram/-hybrid, guest-set-time.
//!
//! - guest-shutdown goes through the agent's power state machine with no grace period (the
//!   configured `poweroff-command`/`reboot-command`, else `/sbin/poweroff`, busybox, a
//!   signal to init, reboot(2)), run as a child so the loop never waits. No reply on
//!   success; a failure of every method is answered with an error. `halt` is a power-off:
//!   a halted VM that stays on would only be a stuck guest for the host.
//! - guest-suspend-* checks `/sys/power/state` (and `/sys/power/disk` offering `suspend` for
//!   hybrid), runs the `before_hibernation` hooks as oVirt's hibernate does, then writes the
//!   state. It does not use systemd or pm-utils. No reply on success (the write returns
//!   after the guest resumed).
//! - guest-set-time with `time` sets the system time, then the hardware clock: `hwclock -w`
//!   when installed (a helper program), else `RTC_SET_TIME` on `/dev/rtc` or `/dev/rtc0` in
//!   UTC. Without `time` it sets the system time from the hardware clock (`hwclock -s`, else
//!   `RTC_RD_TIME`, read as UTC). When the guest has neither, the request fails, as qemu-ga's
//!   does when hwclock fails; with `time`, the error says the system time was set all the
//!   same. `hwclock` is looked for in `<root>/sbin`, `/usr/sbin`, `/bin`, `/usr/bin`, the RTC
//!   device under `<root>/dev`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::account::{find_under, helper_env};
use super::commands::{Answer, Command, Ctx};
use super::exec::{TASK_TIMEOUT, errno_text};
use super::wire::{Args, Error};
use crate::actions::Shutdown;
use crate::exec::Spec;
use crate::facts;
use crate::facts::calendar::{civil_from_days, days_from_civil};
use crate::hooks::Job;
use crate::power;
use crate::services::{Followup, Lane, Notice};
use crate::sys::{self, RtcTime};

pub const COMMANDS: &[Command] = &[
    Command::silent("guest-shutdown", &["mode"], shutdown),
    Command::silent("guest-suspend-disk", &[], suspend_disk),
    Command::silent("guest-suspend-ram", &[], suspend_ram),
    Command::silent("guest-suspend-hybrid", &[], suspend_hybrid),
    Command::new("guest-set-time", &["time"], set_time),
];

/// Where hwclock is looked for, under the root.
const HWCLOCK_DIRS: &[&str] = &["sbin", "usr/sbin", "bin", "usr/bin"];
/// The RTC devices tried, under the root.
const RTC_DEVICES: &[&str] = &["dev/rtc", "dev/rtc0"];
const NS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

fn shutdown(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let mode = match args.opt_str("mode") {
        Ok(m) => m.unwrap_or("powerdown"),
        Err(e) => return Answer::Fail(e),
    };
    let reboot = match mode {
        "powerdown" | "halt" => false,
        "reboot" => true,
        _ => {
            return Answer::Fail(Error::generic(
                "mode is invalid (valid values are: halt|powerdown|reboot)",
            ));
        }
    };
    log::info!("guest-shutdown called, mode: {mode}");
    let req = Shutdown {
        grace: Duration::ZERO,
        message: "hypervisor initiated shutdown".into(),
        reboot,
    };
    let to = cx.requester();
    let svc = &mut *cx.svc;
    match svc.power.shutdown(&req, to, &svc.cfg.root) {
        Ok(replaced) => {
            if let Some(old) = replaced {
                svc.notices.push(Notice::Done {
                    to: old,
                    action: "shutdown".into(),
                    result: Err("replaced by a later shutdown request".into()),
                });
            }
            Answer::Later
        }
        Err(e) => Answer::Fail(Error::generic(e)),
    }
}

/// Whether `/sys/power/disk` under `root` offers `suspend` (the current choice is shown in
/// brackets).
fn hybrid_supported(root: &Path) -> bool {
    let offered = facts::read_text(root, "sys/power/disk").unwrap_or_default();
    offered
        .split_whitespace()
        .any(|w| w.trim_start_matches('[').trim_end_matches(']') == "suspend")
}

fn suspend(cx: &mut Ctx<'_>, state: &str) -> Answer {
    let root = &cx.svc.cfg.root;
    let supported = match state {
        "hybrid" => power::check_power_state(root, "disk").is_ok() && hybrid_supported(root),
        s => power::check_power_state(root, s).is_ok(),
    };
    if !supported {
        return Answer::Fail(Error::generic(
            "the requested suspend mode is not supported by the guest",
        ));
    }
    log::info!("guest-suspend: '{state}' after the before_hibernation hooks");
    let timeout = cx.svc.cfg.lifecycle_timeout;
    let label = "before_hibernation";
    let job = Job {
        label: label.into(),
        dir: cx.svc.cfg.hooks_dir.join(label),
        args: Vec::new(),
        stdin: Vec::new(),
        redact: Vec::new(),
        timeout,
        ends: Some(sys::monotonic_now() + timeout),
    };
    let then = Followup::Hibernate {
        state: state.to_owned(),
        to: cx.requester(),
    };
    cx.svc.submit(Lane::Urgent, job, then);
    Answer::Later
}

fn suspend_disk(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    suspend(cx, "disk")
}

fn suspend_ram(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    suspend(cx, "mem")
}

fn suspend_hybrid(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    suspend(cx, "hybrid")
}

fn small(n: i64) -> i32 {
    i32::try_from(n).unwrap_or(0)
}

/// The RTC's broken-down UTC time of `secs` since the epoch.
pub fn rtc_from_secs(secs: i64) -> RtcTime {
    let (days, rem) = (secs.div_euclid(SECS_PER_DAY), secs.rem_euclid(SECS_PER_DAY));
    let (y, m, d) = civil_from_days(days);
    RtcTime {
        sec: small(rem % 60),
        min: small(rem / 60 % 60),
        hour: small(rem / 3600),
        mday: small(d),
        mon: small(m - 1),
        year: small(y - 1900),
    }
}

/// Seconds since the epoch of the RTC's broken-down UTC time.
pub fn secs_from_rtc(t: &RtcTime) -> i64 {
    let days = days_from_civil(
        i64::from(t.year) + 1900,
        i64::from(t.mon) + 1,
        i64::from(t.mday),
    );
    days * SECS_PER_DAY + i64::from(t.hour) * 3600 + i64::from(t.min) * 60 + i64::from(t.sec)
}

/// `time` (ns since the epoch) as seconds and nanoseconds, if its year is 1970-2069 (the
/// range qemu-ga accepts).
pub fn check_time(time: i64) -> Result<(i64, u32), Error> {
    let (secs, nsec) = (time.div_euclid(NS_PER_SEC), time.rem_euclid(NS_PER_SEC));
    let (year, _, _) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    if !(1970..2070).contains(&year) {
        return Err(Error::generic("Invalid time"));
    }
    Ok((secs, u32::try_from(nsec).unwrap_or(0)))
}

/// The first RTC device that opens.
fn open_rtc(root: &Path) -> Option<(PathBuf, std::fs::File)> {
    RTC_DEVICES.iter().find_map(|d| {
        let p = facts::under(root, d);
        std::fs::File::open(&p).ok().map(|f| (p, f))
    })
}

fn hwclock_spec(program: PathBuf, flag: &str) -> Spec {
    Spec {
        program,
        args: vec![flag.to_owned()],
        env: helper_env(),
        cwd: Some(PathBuf::from("/")),
        stdin: Vec::new(),
        limit: 4096,
        timeout: Some(TASK_TIMEOUT),
        ends: None,
        merge_stderr: false,
    }
}

fn set_time(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let time = match args.opt_i64("time") {
        Ok(t) => t,
        Err(e) => return Answer::Fail(e),
    };
    let root = cx.svc.cfg.root.clone();
    let hwclock = find_under(&root, HWCLOCK_DIRS, "hwclock");
    let to = cx.requester();
    let task = |cx: &mut Ctx<'_>, flag, what| {
        let spec = hwclock_spec(hwclock.clone().unwrap_or_default(), flag);
        match cx.svc.execs.run_task(spec, to.clone(), what, Vec::new()) {
            Ok(()) => Answer::Later,
            Err(e) => Answer::Fail(Error::generic(e)),
        }
    };
    match time {
        Some(ns) => {
            let (secs, nsec) = match check_time(ns) {
                Ok(t) => t,
                Err(e) => return Answer::Fail(e),
            };
            if let Err(e) = sys::set_realtime(secs, nsec) {
                return Answer::Fail(Error::generic(format!(
                    "failed to set time: {}",
                    errno_text(&e)
                )));
            }
            log::info!("guest-set-time: system time set to {secs} s after the epoch");
            if hwclock.is_some() {
                return task(cx, "-w", "set hardware clock to system time");
            }
            let Some((dev, rtc)) = open_rtc(&root) else {
                return Answer::Fail(Error::generic(
                    "the system time was set, but not the hardware clock: no hwclock program \
                     and no /dev/rtc or /dev/rtc0 in this guest",
                ));
            };
            match sys::rtc_set(&rtc, &rtc_from_secs(secs)) {
                Ok(()) => Answer::Return(json!({})),
                Err(e) => Answer::Fail(Error::generic(format!(
                    "the system time was set, but not the hardware clock: RTC_SET_TIME on {}: \
                     {}",
                    dev.display(),
                    errno_text(&e)
                ))),
            }
        }
        None => {
            if hwclock.is_some() {
                return task(cx, "-s", "set system time from hardware clock");
            }
            let Some((dev, rtc)) = open_rtc(&root) else {
                return Answer::Fail(Error::generic(
                    "cannot set the system time from the hardware clock: no hwclock program \
                     and no /dev/rtc or /dev/rtc0 in this guest",
                ));
            };
            let r = sys::rtc_read(&rtc)
                .and_then(|t| sys::set_realtime(secs_from_rtc(&t), 0))
                .map(|()| json!({}))
                .map_err(|e| {
                    Error::generic(format!(
                        "failed to set the system time from {}: {}",
                        dev.display(),
                        errno_text(&e)
                    ))
                });
            r.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtc_times_are_utc_broken_down() {
        // 2024-02-29 13:14:15 UTC.
        let t = rtc_from_secs(1_709_212_455);
        assert_eq!(
            t,
            RtcTime {
                sec: 15,
                min: 14,
                hour: 13,
                mday: 29,
                mon: 1,
                year: 124
            }
        );
        assert_eq!(secs_from_rtc(&t), 1_709_212_455);
        assert_eq!(secs_from_rtc(&rtc_from_secs(0)), 0);
    }

    #[test]
    fn times_outside_1970_to_2069_are_invalid() {
        assert_eq!(
            check_time(1_709_212_455_123_456_789).unwrap(),
            (1_709_212_455, 123_456_789)
        );
        assert_eq!(check_time(0).unwrap(), (0, 0));
        let last = days_from_civil(2070, 1, 1) * SECS_PER_DAY * NS_PER_SEC;
        assert!(check_time(last - 1).is_ok());
        for bad in [-1, last, i64::MAX, i64::MIN] {
            assert_eq!(check_time(bad).unwrap_err().desc, "Invalid time", "{bad}");
        }
    }

    #[test]
    fn hybrid_needs_suspend_in_sys_power_disk() {
        let d = std::env::temp_dir().join(format!("guestd-hybrid-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sys/power")).unwrap();
        assert!(!hybrid_supported(&d));
        std::fs::write(d.join("sys/power/disk"), "[platform] shutdown reboot\n").unwrap();
        assert!(!hybrid_supported(&d));
        std::fs::write(d.join("sys/power/disk"), "platform shutdown [suspend]\n").unwrap();
        assert!(hybrid_supported(&d));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
