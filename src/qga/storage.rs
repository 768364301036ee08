// SPDX-License-Identifier: Apache-2.0
//! QGA commands: file systems and disks (guest-get-fsinfo, guest-get-disks, guest-fstrim).
//!
//! All three work on the mounts backed by a block device (`facts::blockdev`): network, FUSE
//! and virtual file systems have no block device and are never touched, so no statvfs(3) or
//! ioctl can hang on a dead server or daemon (`fuseblk`, a FUSE daemon on a local disk, is
//! listed but not measured). statvfs on a local block file system reads in-memory counters.
//!
//! guest-fstrim runs FITRIM inline, as qemu-ga does: on a large, fragmented file system it
//! can take seconds, and the loop waits for it (hosts send it rarely, from maintenance jobs).

use std::path::Path;

use serde_json::{Map, Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{Args, Error};
use crate::facts::blockdev::{self, BlockMount, DiskAddress, DiskInfo};
use crate::facts::under;
use crate::sys::{self, FsStats};

pub const COMMANDS: &[Command] = &[
    Command::new("guest-get-fsinfo", &[], get_fsinfo),
    Command::new("guest-get-disks", &[], get_disks),
    Command::new("guest-fstrim", &["minimum"], fstrim),
];

/// The block-backed mounts under the root, or the error naming the mount table.
pub fn mounts(root: &Path) -> Result<Vec<BlockMount>, Error> {
    blockdev::read_block_mounts(root).map_err(|e| Error::generic(e.to_string()))
}

/// One disk address as QGA spells it. `pci-controller`, `bus`, `target` and `unit` are always
/// there: libvirt refuses the whole reply without them.
pub fn address_json(a: &DiskAddress) -> Value {
    let mut v = json!({
        "pci-controller": {
            "domain": a.pci.domain,
            "bus": a.pci.bus,
            "slot": a.pci.slot,
            "function": a.pci.function,
        },
        "bus-type": a.bus_type,
        "bus": a.bus,
        "target": a.target,
        "unit": a.unit,
        "dev": a.dev,
    });
    if let (Some(serial), Some(map)) = (&a.serial, v.as_object_mut()) {
        map.insert("serial".into(), serial.as_str().into());
    }
    v
}

/// `(used-bytes, total-bytes, total-bytes-privileged)` from statvfs numbers, as qemu-ga
/// computes them: used = (blocks - bfree) * frsize, total = (used + bavail) * frsize in
/// fragments (what an unprivileged user can reach), privileged = blocks * frsize. Saturating.
pub fn sizes(st: &FsStats) -> (u64, u64, u64) {
    let used = st.blocks.saturating_sub(st.bfree);
    (
        used.saturating_mul(st.frsize),
        used.saturating_add(st.bavail).saturating_mul(st.frsize),
        st.blocks.saturating_mul(st.frsize),
    )
}

/// One guest-get-fsinfo entry. `stat` is `None` when the file system was not measured.
pub fn fsinfo_entry(
    m: &BlockMount,
    name: &str,
    disks: &[DiskAddress],
    stat: Option<&FsStats>,
) -> Value {
    let mut e = Map::new();
    e.insert("name".into(), name.into());
    e.insert("mountpoint".into(), m.mount_point.as_str().into());
    e.insert("type".into(), m.fs_type.as_str().into());
    if let Some(st) = stat {
        let (used, total, privileged) = sizes(st);
        e.insert("used-bytes".into(), used.into());
        e.insert("total-bytes".into(), total.into());
        e.insert("total-bytes-privileged".into(), privileged.into());
    }
    e.insert("disk".into(), disks.iter().map(address_json).collect());
    Value::Object(e)
}

/// The mounted block file systems, each device once, in reverse mount order (as qemu-ga
/// lists them; libvirt reverses the list back).
fn get_fsinfo(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let root = cx.svc.cfg.root.clone();
    let list = match mounts(&root) {
        Ok(m) => blockdev::first_per_device(m),
        Err(e) => return Answer::Fail(e),
    };
    let entries: Vec<Value> = list
        .iter()
        .rev()
        .map(|m| {
            let (name, disks) = blockdev::device_disks(&root, m.device);
            let stat = if blockdev::served_by_a_daemon(&m.fs_type) {
                None
            } else {
                sys::statvfs(&under(&root, &m.mount_point))
                    .map_err(|e| log::debug!("statvfs {}: {e}", m.mount_point))
                    .ok()
            };
            fsinfo_entry(m, &name, &disks, stat.as_ref())
        })
        .collect();
    Answer::Return(Value::Array(entries))
}

/// One guest-get-disks entry.
pub fn disk_json(d: &DiskInfo) -> Value {
    let mut e = Map::new();
    e.insert("name".into(), d.name.as_str().into());
    e.insert("partition".into(), d.partition.into());
    if let Some(deps) = &d.dependencies {
        e.insert("dependencies".into(), deps.clone().into());
    }
    if let Some(a) = &d.address {
        e.insert("address".into(), address_json(a));
    }
    if let Some(alias) = &d.alias {
        e.insert("alias".into(), alias.as_str().into());
    }
    Value::Object(e)
}

fn get_disks(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    match blockdev::read_disks(&cx.svc.cfg.root) {
        Ok(disks) => Answer::Return(disks.iter().map(disk_json).collect()),
        Err(e) => Answer::Fail(Error::generic(e.to_string())),
    }
}

/// FITRIM on every mounted block file system (each device once, not FUSE); a path that
/// fails gets its own `error`, the call does not fail.
fn fstrim(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let minimum = match args.opt_i64("minimum") {
        Ok(m) => m.unwrap_or(0),
        Err(e) => return Answer::Fail(e),
    };
    let Ok(minimum) = u64::try_from(minimum) else {
        return Answer::Fail(Error::generic(format!(
            "Parameter 'minimum' must not be negative (got {minimum})"
        )));
    };
    let root = cx.svc.cfg.root.clone();
    let list = match mounts(&root) {
        Ok(m) => blockdev::first_per_device(m),
        Err(e) => return Answer::Fail(e),
    };
    log::info!("guest-fstrim: trimming {} file systems", list.len());
    let paths: Vec<Value> = list
        .iter()
        .rev()
        .filter(|m| !blockdev::served_by_a_daemon(&m.fs_type))
        .map(|m| trim_one(&root, m, minimum))
        .collect();
    Answer::Return(json!({ "paths": paths }))
}

fn trim_one(root: &Path, m: &BlockMount, minimum: u64) -> Value {
    let path = m.mount_point.as_str();
    let dir = match super::freeze::open_mount(root, m) {
        Ok(Some(d)) => d,
        Ok(None) => {
            let e = "failed to open: not the mounted file system (mounted over?)";
            return json!({"path": path, "error": e});
        }
        Err(e) => return json!({"path": path, "error": format!("failed to open: {e}")}),
    };
    match sys::trim(&dir, minimum) {
        Ok((trimmed, minimum)) => json!({"path": path, "trimmed": trimmed, "minimum": minimum}),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EOPNOTSUPP)) => {
            json!({"path": path, "error": "trim not supported"})
        }
        Err(e) => json!({"path": path, "error": format!("failed to trim: {e}")}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::blockdev::PciAddress;

    #[test]
    fn sizes_follow_qemu_ga() {
        let st = FsStats {
            frsize: 4096,
            blocks: 1000,
            bfree: 300,
            bavail: 250,
        };
        // used 700 fragments; non-root total 700 + 250.
        assert_eq!(sizes(&st), (2_867_200, 3_891_200, 4_096_000));
        let odd = FsStats {
            frsize: u64::MAX,
            blocks: 2,
            bfree: 3,
            bavail: 1,
        };
        assert_eq!(sizes(&odd), (0, u64::MAX, u64::MAX));
    }

    #[test]
    fn entries_always_carry_what_libvirt_requires() {
        let m = BlockMount {
            mount_point: "/usb".into(),
            fs_type: "fuseblk".into(),
            source: "/dev/sdc1".into(),
            st_dev: (8, 33),
            device: (8, 33),
        };
        let a = DiskAddress {
            pci: PciAddress::UNKNOWN,
            bus_type: "unknown",
            bus: 0,
            target: 0,
            unit: 0,
            serial: None,
            dev: "/dev/sdc1".into(),
        };
        assert_eq!(
            fsinfo_entry(&m, "sdc1", &[a], None),
            json!({"name": "sdc1", "mountpoint": "/usb", "type": "fuseblk", "disk": [{
                "pci-controller": {"domain": -1, "bus": -1, "slot": -1, "function": -1},
                "bus-type": "unknown", "bus": 0, "target": 0, "unit": 0, "dev": "/dev/sdc1"}]})
        );
        assert_eq!(fsinfo_entry(&m, "8:33", &[], None)["disk"], json!([]));
    }
}
