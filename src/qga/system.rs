// SPDX-License-Identifier: Apache-2.0
//! QGA commands about the system (`qga-protocol.md` §2.2): OS, host name, time zone, users,
//! time, load, CPU and disk counters, logical CPUs and memory blocks. Every source is read
//! under `cfg.root`; every reply is built from the fact readers in `crate::facts`, with
//! integers as JSON integers and optional members left out when unknown.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{Args, Error};
use crate::facts::{cpus, hostname, memblocks, osinfo, stats, timezone, users};
use crate::sys;

/// The commands of this module.
pub const COMMANDS: &[Command] = &[
    Command::new("guest-get-time", &[], get_time),
    Command::new("guest-get-osinfo", &[], get_osinfo),
    Command::new("guest-get-host-name", &[], get_host_name),
    Command::new("guest-get-timezone", &[], get_timezone),
    Command::new("guest-get-users", &[], get_users),
    Command::new("guest-get-load", &[], get_load),
    Command::new("guest-get-cpustats", &[], get_cpustats),
    Command::new("guest-get-diskstats", &[], get_diskstats),
    Command::new("guest-get-vcpus", &[], get_vcpus),
    Command::new("guest-set-vcpus", &["vcpus"], set_vcpus),
    Command::new("guest-get-memory-blocks", &[], get_memory_blocks),
    Command::new("guest-set-memory-blocks", &["mem-blks"], set_memory_blocks),
    Command::new("guest-get-memory-block-info", &[], get_memory_block_info),
];

/// Time since the epoch by `CLOCK_REALTIME`; `None` before 1970.
fn since_epoch() -> Option<Duration> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok()
}

/// Nanoseconds since the epoch (an unsigned value in a signed integer, as libvirt wants).
fn get_time(_: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    since_epoch()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .map(Value::from)
        .ok_or_else(|| Error::generic("the system clock is outside 1970..2262"))
        .into()
}

/// Puts `key: value` into `out` unless `value` is empty.
fn put_str(out: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value.filter(|v| !v.is_empty()) {
        out.insert(key.to_owned(), Value::from(v));
    }
}

/// The kernel (release, version, machine) and os-release fields, each left out when unknown.
/// A guest with no os-release fields is logged once, not on every call.
fn get_osinfo(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    const SOURCE: &str = "qga os-release";
    let root = &cx.svc.cfg.root;
    let release = match osinfo::read_os_release(root) {
        Ok(r) if r == osinfo::OsRelease::default() => {
            let why = format!(
                "no os-release fields in {} or {}",
                crate::facts::under(root, "etc/os-release").display(),
                crate::facts::under(root, "usr/lib/os-release").display()
            );
            cx.svc.health.failed(SOURCE, &why);
            r
        }
        Ok(r) => {
            cx.svc.health.ok(SOURCE);
            r
        }
        Err(e) => {
            cx.svc.health.failed(SOURCE, &e);
            osinfo::OsRelease::default()
        }
    };
    let machine = sys::machine().unwrap_or_default();
    let info = osinfo::read_os_info(root, release, &machine);
    let r = &info.release;
    let mut out = Map::new();
    put_str(&mut out, "kernel-release", Some(&info.kernel_release));
    put_str(&mut out, "kernel-version", Some(&info.kernel_version));
    put_str(&mut out, "machine", Some(&info.machine));
    put_str(&mut out, "id", r.id.as_deref());
    put_str(&mut out, "name", r.name.as_deref());
    put_str(&mut out, "pretty-name", r.pretty_name.as_deref());
    put_str(&mut out, "version", r.version.as_deref());
    put_str(&mut out, "version-id", r.version_id.as_deref());
    put_str(&mut out, "variant", r.variant.as_deref());
    put_str(&mut out, "variant-id", r.variant_id.as_deref());
    Answer::Return(Value::Object(out))
}

/// The kernel's host name (`proc/sys/kernel/hostname`, what gethostname(2) returns).
fn get_host_name(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match hostname::read_hostname(&cx.svc.cfg.root) {
        Ok(h) => Answer::Return(json!({ "host-name": h })),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}

/// The zone abbreviation and the current offset east of UTC in seconds, daylight saving
/// time included (what GLib reports for qemu-ga). Without readable TZif data the offset is
/// the standard offset `read_timezone` finds (0 when unknown) and `zone` is left out.
fn get_timezone(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let root = &cx.svc.cfg.root;
    let now = since_epoch().map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match timezone::read_local_type(root, now) {
        Some(t) if !t.abbrev.is_empty() => {
            Answer::Return(json!({"zone": t.abbrev, "offset": t.offset}))
        }
        Some(t) => Answer::Return(json!({ "offset": t.offset })),
        None => {
            let tz = timezone::read_timezone(root);
            log::debug!(
                "no TZif data for zone {:?} under {}",
                tz.zone,
                root.display()
            );
            Answer::Return(json!({ "offset": i64::from(tz.offset) * 60 }))
        }
    }
}

/// One entry per logged-in user with the earliest login time, in seconds (fractional).
/// The sessions are utmp's live ones or else logind's (`users::current_sessions`), as the
/// oVirt side reports them.
fn get_users(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let (sessions, source) = match users::current_sessions(&cx.svc.cfg.root) {
        Ok(s) => s,
        Err(e) => return Answer::Fail(Error::generic(e.to_string())),
    };
    cx.svc.health.note("users", &source);
    let logins = sessions.into_iter().map(|s| (s.user, s.login_time));
    let list: Vec<Value> = users::earliest_logins(logins)
        .into_iter()
        .map(|(user, t)| json!({"user": user, "login-time": t.as_secs_f64()}))
        .collect();
    Answer::Return(Value::Array(list))
}

fn get_load(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match stats::read_loadavg(&cx.svc.cfg.root) {
        Ok(l) => Answer::Return(json!({
            "load1m": l.load1,
            "load5m": l.load5,
            "load15m": l.load15,
        })),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}

/// Per-CPU times in milliseconds (ticks × 1000 / `USER_HZ`); the columns an older kernel
/// lacks are left out.
fn get_cpustats(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let cpus = match stats::read_cpu_stat(&cx.svc.cfg.root) {
        Ok(c) => c,
        Err(e) => return Answer::Fail(Error::generic(e.to_string())),
    };
    let hz = sys::clock_ticks_per_second();
    let list: Vec<Value> = cpus
        .into_iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("type".into(), Value::from("linux"));
            o.insert("cpu".into(), Value::from(c.cpu));
            for (name, ticks) in stats::CPU_COLUMNS.iter().zip(c.times) {
                o.insert((*name).into(), Value::from(stats::ticks_to_ms(ticks, hz)));
            }
            Value::Object(o)
        })
        .collect();
    Answer::Return(Value::Array(list))
}

fn get_diskstats(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let disks = match stats::read_diskstats(&cx.svc.cfg.root) {
        Ok(d) => d,
        Err(e) => return Answer::Fail(Error::generic(e.to_string())),
    };
    let list: Vec<Value> = disks
        .into_iter()
        .map(|d| {
            let counters: Map<String, Value> = stats::disk_stats(&d.fields)
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect();
            json!({"name": d.name, "major": d.major, "minor": d.minor, "stats": counters})
        })
        .collect();
    Answer::Return(Value::Array(list))
}

fn vcpu_json(v: &cpus::Vcpu) -> Value {
    json!({"logical-id": v.id, "online": v.online, "can-offline": v.can_offline})
}

fn get_vcpus(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match cpus::read_vcpus(&cx.svc.cfg.root) {
        Ok(list) => Answer::Return(Value::Array(list.iter().map(vcpu_json).collect())),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}

/// The members of one list element, checked like top-level arguments.
fn element<'a>(obj: &'a Map<String, Value>, allowed: &[&str]) -> Result<Args<'a>, Error> {
    Args::new(obj, allowed)
}

/// The `(id, online)` pairs of a set-vcpus or set-memory-blocks request: the array `list`
/// of objects with `id` and `online` (and the ignored `can-offline`).
fn online_list(args: &Args<'_>, list: &str, id: &str) -> Result<Vec<(i64, bool)>, Error> {
    args.objects(list)?
        .into_iter()
        .map(|o| {
            let a = element(o, &[id, "online", "can-offline"])?;
            Ok((a.i64(id)?, a.bool("online")?))
        })
        .collect()
}

/// Brings the listed CPUs online or offline, in order. Returns how many were done before the
/// first failure; the failure itself is the reply only when none was done (qemu-ga's rule,
/// which libvirt relies on to resend the rest). The whole list is checked before anything
/// is changed.
fn set_vcpus(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let wanted = match online_list(args, "vcpus", "logical-id") {
        Ok(w) => w,
        Err(e) => return Answer::Fail(e),
    };
    let root = &cx.svc.cfg.root;
    let mut done: i64 = 0;
    for (id, online) in wanted {
        let result = match u32::try_from(id) {
            Ok(id) => cpus::set_vcpu(root, id, online).map_err(|e| e.to_string()),
            Err(_) => Err(format!("logical processor #{id} does not exist")),
        };
        match result {
            Ok(()) => {
                log::info!(
                    "guest-set-vcpus: cpu{id} {}",
                    if online { "online" } else { "offline" }
                );
                done += 1;
            }
            Err(e) if done == 0 => return Answer::Fail(Error::generic(e)),
            Err(e) => {
                log::info!("guest-set-vcpus: stopped after {done}: {e}");
                break;
            }
        }
    }
    Answer::Return(Value::from(done))
}

fn get_memory_blocks(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match memblocks::read_blocks(&cx.svc.cfg.root) {
        Ok(list) => Answer::Return(Value::Array(
            list.iter()
                .map(|b| {
                    json!({"phys-index": b.index, "online": b.online, "can-offline": b.can_offline})
                })
                .collect(),
        )),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}

/// Brings the listed memory blocks online or offline; one result per block, in order.
fn set_memory_blocks(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let wanted = match online_list(args, "mem-blks", "phys-index") {
        Ok(w) => w,
        Err(e) => return Answer::Fail(e),
    };
    let root = &cx.svc.cfg.root;
    let list: Vec<Value> = wanted
        .into_iter()
        .map(|(index, online)| {
            let outcome = match u64::try_from(index) {
                Ok(i) => memblocks::set_block(root, i, online),
                Err(_) => memblocks::SetOutcome::NotFound,
            };
            let response = match outcome {
                memblocks::SetOutcome::Success => "success",
                memblocks::SetOutcome::NotFound => "not-found",
                memblocks::SetOutcome::NotSupported => "operation-not-supported",
                memblocks::SetOutcome::Failed(_) => "operation-failed",
            };
            let mut o = json!({"phys-index": index, "response": response});
            if let memblocks::SetOutcome::Failed(errno) = outcome {
                o["error-code"] = Value::from(errno);
            }
            o
        })
        .collect();
    Answer::Return(Value::Array(list))
}

fn get_memory_block_info(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match memblocks::read_block_size(&cx.svc.cfg.root) {
        Ok(size) => Answer::Return(json!({ "size": size })),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}
