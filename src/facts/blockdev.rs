// SPDX-License-Identifier: Apache-2.0
//! Block devices as QGA reports them: the mounts backed by a block device (the file systems
//! guest-get-fsinfo lists and freeze and trim work on), the disks behind a device number
//! (`sys/dev/block/MAJ:MIN`, device-mapper and md devices followed through `slaves/`), each
//! disk's address parsed from its sysfs path the way qemu-ga does (PCI controller, bus type,
//! bus/target/unit, serial, device node), and the disk list of guest-get-disks
//! (`sys/block`, partitions, dependencies, device-mapper names).
//!
//! Everything is read under a root directory, so fixture trees of symlinks stand in for sysfs.

use std::io;
use std::path::{Path, PathBuf};

use super::mounts::{Mount, read_mountinfo};
use super::{Error, read_bytes, read_text_opt, under};

/// How deep `slaves/` links are followed (dm over md over partitions is 3).
const MAX_DEPTH: usize = 8;
/// Most disks reported behind one device, and most entries read from one directory.
const MAX_ENTRIES: usize = 256;

/// A mounted file system backed by a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMount {
    /// Where it is mounted (escapes decoded).
    pub mount_point: String,
    pub fs_type: String,
    pub source: String,
    /// The `st_dev` of the mount point as mountinfo gives it (for btrfs an anonymous 0:N).
    pub st_dev: (u32, u32),
    /// The block device: `st_dev`, or for btrfs the device node's `st_rdev`.
    pub device: (u32, u32),
}

/// Whether a user-space daemon serves the file system (`fuse`, `fuse.*`, `fuseblk`): such a
/// file system is never statvfs-ed, frozen or trimmed, because a stuck daemon would hang the
/// agent's loop.
pub fn served_by_a_daemon(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type == "fuseblk" || fs_type.starts_with("fuse.")
}

/// The mounts backed by a block device, in mount order: those whose device major is not 0,
/// and btrfs mounts (major 0) whose source is a block device node (`rdev_of` gives its
/// number). Network, FUSE (except `fuseblk`) and virtual file systems have major 0 and are
/// left out, so nothing ever statvfs-es them.
pub fn block_mounts(
    mounts: Vec<Mount>,
    rdev_of: impl Fn(&str) -> Option<(u32, u32)>,
) -> Vec<BlockMount> {
    mounts
        .into_iter()
        .filter_map(|m| {
            let st_dev = m.major_minor?;
            let device = if st_dev.0 != 0 {
                st_dev
            } else if m.fs_type == "btrfs" {
                rdev_of(&m.source).filter(|d| d.0 != 0)?
            } else {
                return None;
            };
            Some(BlockMount {
                mount_point: m.mount_point,
                fs_type: m.fs_type,
                source: m.source,
                st_dev,
                device,
            })
        })
        .collect()
}

/// `block_mounts` of `proc/self/mountinfo` under `root`; a btrfs source is stat-ed under
/// `root` too.
pub fn read_block_mounts(root: &Path) -> Result<Vec<BlockMount>, Error> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let rdev = |source: &str| {
        let meta = std::fs::metadata(under(root, source)).ok()?;
        meta.file_type()
            .is_block_device()
            .then(|| crate::sys::dev_major_minor(meta.rdev()))
    };
    Ok(block_mounts(read_mountinfo(root)?, rdev))
}

/// Each device once: the first mount of a device that is mounted more than once (bind
/// mounts, btrfs subvolumes) is kept.
pub fn first_per_device(mounts: Vec<BlockMount>) -> Vec<BlockMount> {
    let mut seen = std::collections::HashSet::new();
    mounts
        .into_iter()
        .filter(|m| seen.insert(m.device))
        .collect()
}

/// A PCI address; every field -1 when unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciAddress {
    pub domain: i64,
    pub bus: i64,
    pub slot: i64,
    pub function: i64,
}

impl PciAddress {
    pub const UNKNOWN: PciAddress = PciAddress {
        domain: -1,
        bus: -1,
        slot: -1,
        function: -1,
    };
}

/// Where a disk is attached (QGA's `GuestDiskAddress`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskAddress {
    pub pci: PciAddress,
    /// `virtio`, `scsi`, `sata`, `ide`, `nvme`, `usb` or `unknown`.
    pub bus_type: &'static str,
    pub bus: u32,
    pub target: u32,
    pub unit: u32,
    pub serial: Option<String>,
    /// The device node, e.g. `/dev/vda1`.
    pub dev: String,
}

/// The device node of kernel name `name` (`!` stands for `/`, as in `cciss!c0d0`).
pub fn dev_node(name: &str) -> String {
    format!("/dev/{}", name.replace('!', "/"))
}

/// The sysfs path of `rel` (a path under `root`), relative to `root`, with its symlinks
/// resolved: e.g. `/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vda`.
fn sys_path(root: &Path, rel: &Path) -> io::Result<String> {
    let real = std::fs::canonicalize(root.join(rel))?;
    let base = std::fs::canonicalize(root)?;
    let tail = real
        .strip_prefix(&base)
        .map_err(|_| io::Error::other(format!("{} leads outside the root", rel.display())))?;
    Ok(format!("/{}", tail.to_string_lossy()))
}

/// The file name of a sysfs path.
fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The device of `sys/dev/block/MAJ:MIN` under `root`: its kernel name (`vda1`, `dm-0`) and
/// the addresses of the disks behind it (a device-mapper or md device followed through
/// `slaves/` to its real disks). A device sysfs does not know is named `MAJ:MIN` with no
/// disks.
pub fn device_disks(root: &Path, (major, minor): (u32, u32)) -> (String, Vec<DiskAddress>) {
    let link = PathBuf::from(format!("sys/dev/block/{major}:{minor}"));
    match sys_path(root, &link) {
        Ok(path) => {
            let mut disks = Vec::new();
            collect_disks(root, &path, 0, &mut disks);
            (base_name(&path).to_owned(), disks)
        }
        Err(e) => {
            log::debug!("{}: {e}", under(root, &link.to_string_lossy()).display());
            (format!("{major}:{minor}"), Vec::new())
        }
    }
}

/// Adds the addresses of the disks behind the device at sysfs `path`.
fn collect_disks(root: &Path, path: &str, depth: usize, out: &mut Vec<DiskAddress>) {
    if !path.contains("/devices/virtual/block/") {
        if out.len() < MAX_ENTRIES {
            out.push(address(root, path));
        }
        return;
    }
    if depth >= MAX_DEPTH {
        log::debug!("{path}: slaves nested too deep");
        return;
    }
    let slaves = format!("{path}/slaves");
    for name in dir_names(root, &slaves) {
        let rel = PathBuf::from(format!("{}/{name}", slaves.trim_start_matches('/')));
        match sys_path(root, &rel) {
            Ok(p) => collect_disks(root, &p, depth + 1, out),
            Err(e) => log::debug!("{}: {e}", rel.display()),
        }
    }
}

/// The entry names of directory `rel` under `root`, sorted, at most `MAX_ENTRIES`, without
/// hidden names (fixture trees keep empty directories with a `.keep` file); none when it
/// cannot be read.
fn dir_names(root: &Path, rel: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(under(root, rel)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .take(MAX_ENTRIES)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// The drivers qemu-ga knows a disk controller by.
const CONTROLLER_DRIVERS: &[&str] = &[
    "ata_piix",
    "sym53c8xx",
    "virtio-pci",
    "ahci",
    "nvme",
    "xhci_hcd",
    "ehci-pci",
];

/// `DDDD:BB:SS.F` as a PCI address.
fn parse_pci(s: &str) -> Option<PciAddress> {
    let (domain, rest) = s.split_once(':')?;
    let (bus, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    let hex = |x: &str| i64::from_str_radix(x, 16).ok().filter(|_| !x.is_empty());
    Some(PciAddress {
        domain: hex(domain)?,
        bus: hex(bus)?,
        slot: hex(slot)?,
        function: hex(function)?,
    })
}

/// The SCSI `(channel, target, lun)` of a sysfs path: the `H:C:T:L` component after a
/// `targetH:C:T` one.
fn scsi_target(parts: &[&str]) -> Option<(u32, u32, u32)> {
    let i = parts.iter().position(|p| p.starts_with("target"))?;
    let mut hctl = parts.get(i + 1)?.split(':').map(|n| n.parse::<u32>().ok());
    let _host = hctl.next()??;
    Some((hctl.next()??, hctl.next()??, hctl.next()??))
}

/// The index of the `ataN` (or else `hostN`) component of the path among its siblings of
/// that kind, sorted by number: the IDE bus or AHCI port.
fn host_index(root: &Path, parts: &[&str]) -> Option<u32> {
    let (i, prefix) = parts
        .iter()
        .position(|p| p.starts_with("ata") && p[3..].parse::<u32>().is_ok())
        .map(|i| (i, "ata"))
        .or_else(|| {
            parts
                .iter()
                .position(|p| p.starts_with("host") && p[4..].parse::<u32>().is_ok())
                .map(|i| (i, "host"))
        })?;
    let own: u32 = parts[i][prefix.len()..].parse().ok()?;
    let parent = parts[..i].join("/");
    let mut numbers: Vec<u32> = dir_names(root, &parent)
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .collect();
    numbers.sort_unstable();
    numbers
        .iter()
        .position(|&n| n == own)
        .and_then(|i| u32::try_from(i).ok())
}

/// The address of the real (not virtual) block device at sysfs `path`, e.g.
/// `/sys/devices/pci0000:00/0000:00:05.0/virtio2/block/vda/vda1`.
pub fn address(root: &Path, path: &str) -> DiskAddress {
    let name = base_name(path);
    // A partition's serial is its disk's.
    let disk_dir = if under(root, &format!("{path}/partition")).exists() {
        path.rsplit_once('/').map_or(path, |(d, _)| d)
    } else {
        path
    };
    let mut a = DiskAddress {
        pci: PciAddress::UNKNOWN,
        bus_type: "unknown",
        bus: 0,
        target: 0,
        unit: 0,
        serial: read_serial(root, disk_dir),
        dev: dev_node(name),
    };
    let parts: Vec<&str> = path.split('/').collect();
    if let Some(root_bus) = parts.iter().position(|p| p.starts_with("pci")) {
        pci_address(root, &parts, root_bus, &mut a);
    } else if path.contains("/virtio") {
        // virtio over MMIO or CCW: no PCI address.
        match scsi_target(&parts) {
            Some((c, t, l)) => (a.bus_type, a.bus, a.target, a.unit) = ("scsi", c, t, l),
            None => a.bus_type = "virtio",
        }
    }
    a
}

/// Fills in the PCI part of `a`: the first PCI device on the path whose driver is a known
/// disk controller (bridges and root ports are passed), and what that driver says about the
/// bus type and unit.
fn pci_address(root: &Path, parts: &[&str], root_bus: usize, a: &mut DiskAddress) {
    let mut found = None;
    for (i, part) in parts.iter().enumerate().skip(root_bus + 1) {
        let Some(pci) = parse_pci(part) else {
            break;
        };
        let link = under(root, &format!("{}/driver", parts[..=i].join("/")));
        let driver = std::fs::read_link(&link)
            .ok()
            .and_then(|t| Some(t.file_name()?.to_string_lossy().into_owned()));
        if let Some(d) = driver.filter(|d| CONTROLLER_DRIVERS.contains(&d.as_str())) {
            found = Some((pci, d));
            break;
        }
    }
    let Some((pci, driver)) = found else {
        log::debug!("no known disk controller on {}", parts.join("/"));
        return;
    };
    a.pci = pci;
    let target = scsi_target(parts);
    match driver.as_str() {
        // One host per IDE bus; target*:0:<unit>:0.
        "ata_piix" => {
            if let (Some(bus), Some((_, unit, _))) = (host_index(root, parts), target) {
                (a.bus_type, a.bus, a.unit) = ("ide", bus, unit);
            }
        }
        // LSI Logic SCSI: target*:0:<unit>:0.
        "sym53c8xx" => {
            if let Some((_, unit, _)) = target {
                (a.bus_type, a.unit) = ("scsi", unit);
            }
        }
        // virtio-scsi (channel, target, lun as libvirt's bus, target, unit), or virtio-blk:
        // one disk per PCI device.
        "virtio-pci" => match target {
            Some((c, t, l)) => (a.bus_type, a.bus, a.target, a.unit) = ("scsi", c, t, l),
            None => a.bus_type = "virtio",
        },
        // AHCI: one port (host) per unit.
        "ahci" => {
            if let (Some(unit), Some(_)) = (host_index(root, parts), target) {
                (a.bus_type, a.unit) = ("sata", unit);
            }
        }
        "nvme" => a.bus_type = "nvme",
        _ => a.bus_type = "usb",
    }
}

/// The disk's serial: `serial` (virtio-blk), `device/serial` (NVMe, some SCSI), or the unit
/// serial number VPD page (`device/vpd_pg80`, SCSI). Trimmed; none when empty or unreadable.
fn read_serial(root: &Path, disk: &str) -> Option<String> {
    let text = ["serial", "device/serial"].into_iter().find_map(|f| {
        read_text_opt(root, &format!("{disk}/{f}"))
            .ok()
            .flatten()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    });
    text.or_else(|| {
        let page = read_bytes(root, &format!("{disk}/device/vpd_pg80")).ok()?;
        vpd_serial(&page)
    })
}

/// The serial of a unit serial number VPD page (0x80): a 4-byte header whose last byte is the
/// length, then the serial.
pub fn vpd_serial(page: &[u8]) -> Option<String> {
    let len = usize::from(*page.get(3)?);
    let body = page.get(4..)?;
    let s = String::from_utf8_lossy(&body[..len.min(body.len())])
        .trim_matches(|c: char| c.is_whitespace() || c == '\0')
        .to_owned();
    (!s.is_empty()).then_some(s)
}

/// The `ID_SERIAL` udev gives whole disk `name` of `sys/block` under `root`, derived from
/// sysfs the way `60-persistent-storage.rules` and its helpers derive it, without udev:
/// - virtio-blk (`vd*`): the `serial` attribute, trimmed (as the rules' `$attr{serial}`);
/// - NVMe (`nvme*`) and others: `serial` or `device/serial`, trimmed (udev's NVMe form is
///   `<model>_<serial>`; VDSM matches a serial inside the reported one, so the bare serial
///   still matches);
/// - SATA (`sd*` whose vendor is `ATA`): `ata_id`'s `<model>_<serial>`, from the IDENTIFY data
///   of the ATA information VPD page (`device/vpd_pg89`, Linux 5.19+). Without that page the
///   model is the 16-character INQUIRY product (`device/model`) and the serial comes from
///   `device/vpd_pg80`: the same as udev for every model of at most 16 characters (QEMU's
///   `QEMU HARDDISK`), e.g. `QEMU_HARDDISK_QM00005`;
/// - other SCSI (`sd*`: virtio-scsi, LSI): `scsi_id --export`'s form from the device
///   identification page (`device/vpd_pg83`, the designators in scsi_id's priority order:
///   NAA, EUI-64, T10 vendor id, then vendor specific with vendor and model prepended, so a
///   QEMU `scsi-hd` with `serial=X` gives `0QEMU_QEMU_HARDDISK_X` and one with a `wwn` gives
///   `3<wwn in hex>`), else from the unit serial number page (`device/vpd_pg80`):
///   `S<vendor><model><serial>`.
///
/// SCSI and SATA serials then go through udev's clean-up: whitespace trimmed, each run of it
/// made one `_`, and characters outside `0-9A-Za-z#+-.:=@_`, valid UTF-8 and `\x` replaced by
/// `_`. USB disks (udev's `usb_id`) and CD drives are not covered.
pub fn id_serial(root: &Path, name: &str) -> Option<String> {
    if !name.starts_with("sd") {
        return read_serial(root, &format!("sys/block/{name}"));
    }
    let attr = |file: &str| read_bytes(root, &format!("sys/block/{name}/device/{file}")).ok();
    let line = |file: &str| {
        let mut v = attr(file).unwrap_or_default();
        if v.last() == Some(&b'\n') {
            v.pop();
        }
        v
    };
    let (vendor, model) = (line("vendor"), line("model"));
    if vendor.trim_ascii_end() == b"ATA" {
        let (model, serial) = match attr("vpd_pg89").and_then(|p| ata_identity(&p)) {
            Some(ids) => ids,
            None => (model, vpd_body(&attr("vpd_pg80")?)?),
        };
        let (model, serial) = (udev_clean(&model), udev_clean(&serial));
        let id = if serial.is_empty() {
            model
        } else {
            format!("{model}_{serial}")
        };
        return Some(id).filter(|s| !s.is_empty());
    }
    let vm = (vendor.len() == 8 && model.len() == 16).then(|| [vendor, model].concat());
    let raw = match attr("vpd_pg83").and_then(|p| page83_serial(&p, vm.as_deref())) {
        Some(s) => s,
        None => [b"S".as_slice(), &vm?, &vpd_body(&attr("vpd_pg80")?)?].concat(),
    };
    Some(udev_clean(&raw)).filter(|s| !s.is_empty())
}

/// The data of a VPD page: the bytes after its 4-byte header, as many as its length byte says.
fn vpd_body(page: &[u8]) -> Option<Vec<u8>> {
    // scsi_id reads the length from byte 3 only.
    let len = usize::from(*page.get(3)?);
    Some(page.get(4..)?.iter().take(len).copied().collect())
}

/// The (model, serial) of the IDENTIFY DEVICE data in an ATA information VPD page (0x89,
/// data at byte 60): words 27-46 and 10-19, each 16-bit word (in the CPU's order, as libata
/// copies it) holding two characters, the first in its high byte.
fn ata_identity(page: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let id = page.get(60..60 + 512)?;
    let text = |first: usize, words: usize| -> Vec<u8> {
        id[first * 2..(first + words) * 2]
            .chunks_exact(2)
            .flat_map(|w| u16::from_ne_bytes([w[0], w[1]]).to_be_bytes())
            .collect()
    };
    Some((text(27, 20), text(10, 10)))
}

/// scsi_id's serial from a device identification VPD page (0x83): the first designator in its
/// priority order (association with the device; NAA IEEE registered extended, NAA IEEE
/// registered, other NAA, EUI-64, T10 vendor id, vendor specific; binary before ASCII for
/// each), as the designator type's hex digit, then `vendor_model` (8 + 16 characters, vendor
/// specific only), then the identifier: ASCII as is, binary in lower-case hex. A pre-SPC-3
/// page (byte 6 not 0) gives `3` and its 16 bytes in hex.
fn page83_serial(page: &[u8], vendor_model: Option<&[u8]>) -> Option<Vec<u8>> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let hex = |b: &[u8]| -> Vec<u8> {
        b.iter()
            .flat_map(|x| [HEX[usize::from(x >> 4)], HEX[usize::from(x & 15)]])
            .collect()
    };
    // scsi_id reads at most 254 bytes of the page.
    let page = &page[..page.len().min(254)];
    if *page.get(1)? != 0x83 {
        return None;
    }
    if page.get(6).is_some_and(|&b| b != 0) {
        let len = usize::from(*page.get(3)?);
        return Some(
            [
                b"3".as_slice(),
                &hex(page.get(4..(4 + len).min(page.len()))?),
            ]
            .concat(),
        );
    }
    let end = (usize::from(*page.get(2)?) << 8) + usize::from(*page.get(3)?) + 4;
    let mut descriptors = Vec::new();
    let mut at = 4;
    while at + 4 <= end.min(page.len()) {
        let len = usize::from(page[at + 3]);
        let Some(id) = page.get(at + 4..at + 4 + len) else {
            break;
        };
        descriptors.push((&page[at..at + 4], id));
        at += 4 + len;
    }
    // (designator type, NAA type or none, code set: 1 binary, 2 ASCII)
    const ORDER: [(u8, Option<u8>, u8); 12] = [
        (3, Some(6), 1),
        (3, Some(6), 2),
        (3, Some(5), 1),
        (3, Some(5), 2),
        (3, None, 1),
        (3, None, 2),
        (2, None, 1),
        (2, None, 2),
        (1, None, 1),
        (1, None, 2),
        (0, None, 1),
        (0, None, 2),
    ];
    ORDER.iter().find_map(|&(kind, naa, code)| {
        descriptors.iter().find_map(|&(head, id)| {
            let matches = head[1] & 0x30 == 0
                && head[1] & 0x0f == kind
                && naa.is_none_or(|n| id.first().is_some_and(|b| b >> 4 == n))
                && head[0] & 0x0f == code;
            if !matches {
                return None;
            }
            let mut s = vec![HEX[usize::from(kind)]];
            if kind == 0 {
                s.extend_from_slice(vendor_model?);
            }
            s.extend(if code == 2 { id.to_vec() } else { hex(id) });
            Some(s)
        })
    })
}

/// udev's clean-up of an id string (`udev_replace_whitespace` then `udev_replace_chars`):
/// cut at the first NUL, leading and trailing whitespace dropped, each inner run of it made
/// one `_`; then every character that is not `0-9A-Za-z#+-.:=@_`, a valid multi-byte UTF-8
/// character or the `\` of `\x` becomes `_`.
pub fn udev_clean(raw: &[u8]) -> String {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let mut collapsed = Vec::with_capacity(raw.len());
    let mut space = false;
    for &b in raw {
        if b.is_ascii_whitespace() || b == 0x0b {
            space = !collapsed.is_empty();
        } else {
            if std::mem::take(&mut space) {
                collapsed.push(b'_');
            }
            collapsed.push(b);
        }
    }
    let mut out = String::with_capacity(collapsed.len());
    for chunk in collapsed.utf8_chunks() {
        let mut chars = chunk.valid().chars().peekable();
        while let Some(c) = chars.next() {
            let keep = c.is_ascii_alphanumeric()
                || "#+-.:=@_".contains(c)
                || (c == '\\' && chars.peek() == Some(&'x'))
                || (!c.is_ascii() && !is_noncharacter(c));
            out.push(if keep { c } else { '_' });
        }
        out.extend(chunk.invalid().iter().map(|_| '_'));
    }
    out
}

/// The Unicode noncharacters systemd's UTF-8 check refuses (U+FDD0..U+FDEF, U+xxFFFE/F).
fn is_noncharacter(c: char) -> bool {
    let c = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&c) || c & 0xFFFE == 0xFFFE
}

/// One entry of guest-get-disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The device node, e.g. `/dev/vda`.
    pub name: String,
    pub partition: bool,
    /// Device nodes it is built on (`slaves/`; a partition's disk); `None` when the device
    /// has no `slaves` directory.
    pub dependencies: Option<Vec<String>>,
    /// Where a real (not virtual) disk is attached.
    pub address: Option<DiskAddress>,
    /// The device-mapper name (`dm/name`).
    pub alias: Option<String>,
}

/// The block devices of `sys/block` under `root`, sorted by name, each followed by its
/// partitions (subdirectories named `<disk><n>` or `<disk>p<n>`). Devices of size 0 (empty
/// drives, unused loop devices) are left out. A missing `sys/block` gives an empty list.
pub fn read_disks(root: &Path) -> Result<Vec<DiskInfo>, Error> {
    let dir = under(root, "sys/block");
    if let Err(source) = std::fs::read_dir(&dir) {
        if source.kind() == io::ErrorKind::NotFound {
            return Ok(Vec::new());
        }
        return Err(Error::Read { path: dir, source });
    }
    let mut out = Vec::new();
    for name in dir_names(root, "sys/block") {
        let size = read_text_opt(root, &format!("sys/block/{name}/size"));
        if !matches!(&size, Ok(Some(s)) if s.trim() != "0") {
            continue;
        }
        let Ok(path) = sys_path(root, Path::new(&format!("sys/block/{name}"))) else {
            continue;
        };
        let dev = dev_node(&name);
        let alias = read_text_opt(root, &format!("{path}/dm/name"))
            .ok()
            .flatten()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty());
        let slaves = format!("{path}/slaves");
        let dependencies = under(root, &slaves).is_dir().then(|| {
            dir_names(root, &slaves)
                .iter()
                .map(|n| dev_node(n))
                .collect()
        });
        let address = (!path.contains("/devices/virtual/block/")).then(|| address(root, &path));
        out.push(DiskInfo {
            name: dev.clone(),
            partition: false,
            dependencies,
            address,
            alias,
        });
        for part in dir_names(root, &path) {
            let Some(rest) = part.strip_prefix(name.as_str()) else {
                continue;
            };
            let rest = rest.strip_prefix('p').unwrap_or(rest);
            if !rest.starts_with(|c: char| c.is_ascii_digit())
                || !under(root, &format!("{path}/{part}")).is_dir()
            {
                continue;
            }
            out.push(DiskInfo {
                name: dev_node(&part),
                partition: true,
                dependencies: Some(vec![dev.clone()]),
                address: None,
                alias: None,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
