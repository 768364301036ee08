// SPDX-License-Identifier: Apache-2.0
//! Disk usage (oVirt `disks-usage`): mounts from `proc/self/mountinfo`, sizes from statvfs(3)
//! (made by the caller), and the disk serial to device mapping from `sys/block`.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use super::{Error, read_text, read_text_opt, under};
use crate::sys::FsStats;

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted, with octal escapes decoded.
    pub mount_point: String,
    /// File-system type, e.g. `ext4` or `fuse.sshfs`.
    pub fs_type: String,
    /// Mount source (device or server path), with octal escapes decoded.
    pub source: String,
}

/// Network and cluster file systems. They are never statvfs-ed: a dead server would hang the
/// agent.
pub const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "fuse.glusterfs",
    "fuse.sshfs",
    "sshfs",
    "9p",
    "afs",
    "ncpfs",
    "lustre",
    "fuse.s3fs",
    "davfs",
    "gfs2",
    "ocfs2",
];

/// The oVirt agent's default `ignored_fs`, plus pseudo and read-only image file systems it
/// predates (`bpf`, `efivarfs`, `nsfs`, `ramfs`, `squashfs`).
pub const DEFAULT_IGNORED_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "fuse.gvfsd-fuse",
    "fuse.gvfs-fuse-daemon",
    "hugetlbfs",
    "mqueue",
    "nfsd",
    "proc",
    "pstore",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "udev",
    "usbfs",
    "bpf",
    "efivarfs",
    "nsfs",
    "ramfs",
    "squashfs",
];

/// One entry of the `disks-usage` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    /// Mount point.
    pub path: String,
    /// File-system type.
    pub fs: String,
    /// Size in bytes.
    pub total: u64,
    /// Bytes in use (total minus free, including the blocks reserved for root).
    pub used: u64,
}

/// The mounts of a `/proc/self/mountinfo` text, e.g.
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`.
/// Malformed lines are skipped. When a mount point appears more than once only the last entry
/// is kept, since it is mounted over the earlier ones.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    let mounts: Vec<Mount> = text.lines().filter_map(parse_mountinfo_line).collect();
    let mut seen = HashSet::new();
    let mut last: Vec<Mount> = mounts
        .into_iter()
        .rev()
        .filter(|m| seen.insert(m.mount_point.clone()))
        .collect();
    last.reverse();
    last
}

fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    // Six fixed fields, then optional fields up to the "-" separator.
    let sep = fields.iter().skip(6).position(|&f| f == "-")? + 6;
    let mount_point = fields.get(4)?;
    let fs_type = fields.get(sep + 1)?;
    let source = fields.get(sep + 2)?;
    if mount_point.is_empty() || fs_type.is_empty() {
        return None;
    }
    Some(Mount {
        mount_point: unescape(mount_point),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// Decodes the kernel's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash, ...). A backslash not followed by three octal digits is kept as is.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'\\' {
            if let Some(v) = bytes.get(i + 1..i + 4).and_then(octal_byte) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Three octal digits as a byte, if they are octal digits and fit.
fn octal_byte(digits: &[u8]) -> Option<u8> {
    let value = digits.iter().try_fold(0u32, |acc, &d| {
        (b'0'..=b'7')
            .contains(&d)
            .then(|| acc * 8 + u32::from(d - b'0'))
    })?;
    u8::try_from(value).ok()
}

/// The mounts worth measuring: those whose type is neither in `ignored` nor a network file
/// system.
pub fn mounts_to_measure(mounts: Vec<Mount>, ignored: &[String]) -> Vec<Mount> {
    mounts
        .into_iter()
        .filter(|m| {
            !ignored.contains(&m.fs_type)
                && !NETWORK_FS.contains(&m.fs_type.as_str())
                && !served_by_a_daemon(&m.fs_type)
        })
        .collect()
}

/// FUSE file systems (`fuse`, `fuse.*`) answer statvfs through a user-space daemon; a dead
/// or stuck one would hang the agent's loop, so they are never measured. `fuseblk`
/// (ntfs-3g and the like on a local block device) is measured.
fn served_by_a_daemon(fs_type: &str) -> bool {
    fs_type == "fuse" || fs_type.starts_with("fuse.")
}

/// (total, used) bytes from statvfs numbers: `total = frsize*blocks`,
/// `used = total - frsize*bfree`, saturating instead of overflowing.
pub fn usage(frsize: u64, blocks: u64, bfree: u64) -> (u64, u64) {
    let total = frsize.saturating_mul(blocks);
    (total, total.saturating_sub(frsize.saturating_mul(bfree)))
}

/// The usage entry of mount `m` given its statvfs result.
pub fn disk_usage(m: &Mount, st: &FsStats) -> DiskUsage {
    let (total, used) = usage(st.frsize, st.blocks, st.bfree);
    DiskUsage {
        path: m.mount_point.clone(),
        fs: m.fs_type.clone(),
        total,
        used,
    }
}

/// Measures `mounts` with `stat` (statvfs in production). Mount points that are regular files
/// (bind-mounted files), mounts whose `stat` fails, and empty file systems (total and used both
/// 0) are left out.
pub fn collect(
    mounts: &[Mount],
    mut stat: impl FnMut(&Path) -> io::Result<FsStats>,
    is_regular_file: impl Fn(&Path) -> bool,
) -> Vec<DiskUsage> {
    let mut out = Vec::new();
    for m in mounts {
        let path = Path::new(&m.mount_point);
        if is_regular_file(path) {
            continue;
        }
        match stat(path) {
            Ok(st) => {
                let u = disk_usage(m, &st);
                if u.total != 0 || u.used != 0 {
                    out.push(u);
                }
            }
            Err(e) => log::debug!("statvfs {}: {e}", m.mount_point),
        }
    }
    out
}

/// The mounts in `proc/self/mountinfo` under `root`.
pub fn read_mountinfo(root: &Path) -> Result<Vec<Mount>, Error> {
    Ok(parse_mountinfo(&read_text(root, "proc/self/mountinfo")?))
}

/// (serial, `/dev/<name>`) for every block device under `sys/block` that reports a serial in
/// `serial` (virtio-blk) or `device/serial` (NVMe, some SCSI), sorted by device name. A `!`
/// in the kernel name stands for `/` in the device path. A missing `sys/block` gives an empty
/// list.
pub fn read_disk_mapping(root: &Path) -> Result<Vec<(String, String)>, Error> {
    let dir = under(root, "sys/block");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names
        .into_iter()
        .filter_map(|name| {
            let serial = read_serial(root, &name)?;
            Some((serial, format!("/dev/{}", name.replace('!', "/"))))
        })
        .collect())
}

/// The trimmed, non-empty serial of block device `name`, if it has one. Read errors (virtio-blk
/// may fail the read when the host set no serial) count as no serial.
fn read_serial(root: &Path, name: &str) -> Option<String> {
    ["serial", "device/serial"].into_iter().find_map(|file| {
        match read_text_opt(root, &format!("sys/block/{name}/{file}")) {
            Ok(text) => text.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()),
            Err(e) => {
                log::debug!("{e}");
                None
            }
        }
    })
}

#[cfg(test)]
mod fuse_tests {
    use super::*;

    #[test]
    fn fuse_mounts_are_never_measured_but_fuseblk_is() {
        let m = |t: &str| Mount {
            mount_point: format!("/m/{t}"),
            fs_type: t.into(),
            source: "x".into(),
        };
        let kept = mounts_to_measure(
            vec![m("fuse"), m("fuse.rclone"), m("fuseblk"), m("ext4")],
            &[],
        );
        let types: Vec<&str> = kept.iter().map(|m| m.fs_type.as_str()).collect();
        assert_eq!(types, ["fuseblk", "ext4"]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    fn mount(mount_point: &str, fs_type: &str, source: &str) -> Mount {
        Mount {
            mount_point: mount_point.into(),
            fs_type: fs_type.into(),
            source: source.into(),
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn mountinfo_kernel_example_and_optional_fields() {
        let text = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
23 22 0:21 / /proc rw,nosuid - proc proc rw
24 22 0:30 / /srv rw shared:5 master:2 propagate_from:1 unbindable - xfs /dev/vdb rw
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                mount("/mnt2", "ext3", "/dev/root"),
                mount("/", "ext4", "/dev/vda1"),
                mount("/proc", "proc", "proc"),
                mount("/srv", "xfs", "/dev/vdb"),
            ]
        );
    }

    #[test]
    fn mountinfo_decodes_escapes() {
        let text = r"40 22 0:40 / /mnt/my\040disk\011tab\012nl\134bs rw - vfat /dev/sd\040b1 rw
41 22 0:41 / /mnt/odd\9\0401\777 rw - ext4 /dev/sdc rw
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                mount("/mnt/my disk\ttab\nnl\\bs", "vfat", "/dev/sd b1"),
                mount("/mnt/odd\\9 1\\777", "ext4", "/dev/sdc"),
            ]
        );
    }

    #[test]
    fn mountinfo_skips_malformed_and_keeps_last_duplicate() {
        let text = "\
garbage
1 2 3 4 5 6 7 8
25 22 0:5 / /data rw - ext4 /dev/vdb rw
26 22 0:6 / /other rw -
27 22 0:7 / /data rw - xfs /dev/vdc rw

28 22 0:8 / /tmp rw - tmpfs tmpfs rw
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                mount("/data", "xfs", "/dev/vdc"),
                mount("/tmp", "tmpfs", "tmpfs")
            ]
        );
    }

    #[test]
    fn measure_drops_ignored_and_network_fs() {
        let mounts = vec![
            mount("/", "ext4", "/dev/vda1"),
            mount("/proc", "proc", "proc"),
            mount("/home", "nfs4", "srv:/home"),
            mount("/sshfs", "fuse.sshfs", "u@h:"),
            mount("/ctr", "overlay", "overlay"),
        ];
        let ignored: Vec<String> = DEFAULT_IGNORED_FS.iter().map(|s| s.to_string()).collect();
        let got = mounts_to_measure(mounts, &ignored);
        assert_eq!(
            got,
            vec![
                mount("/", "ext4", "/dev/vda1"),
                mount("/ctr", "overlay", "overlay")
            ]
        );
        assert!(!DEFAULT_IGNORED_FS.contains(&"overlay"));
    }

    #[test]
    fn usage_arithmetic() {
        assert_eq!(usage(4096, 1000, 250), (4_096_000, 3_072_000));
        assert_eq!(usage(0, 1000, 1000), (0, 0));
        assert_eq!(usage(u64::MAX, 2, 1), (u64::MAX, 0));
        assert_eq!(usage(4096, 10, 20), (40_960, 0));
    }

    #[test]
    fn collect_skips_files_failures_and_empty() {
        let mounts = vec![
            mount("/", "ext4", "/dev/vda1"),
            mount("/etc/resolv.conf", "ext4", "/dev/vda1"),
            mount("/broken", "xfs", "/dev/vdb"),
            mount("/empty", "fuse", "x"),
            mount("/data", "xfs", "/dev/vdc"),
        ];
        let mut calls = Vec::new();
        let got = collect(
            &mounts,
            |p| {
                calls.push(p.to_path_buf());
                match p.to_str() {
                    Some("/") => Ok(FsStats {
                        frsize: 4096,
                        blocks: 1000,
                        bfree: 400,
                    }),
                    Some("/data") => Ok(FsStats {
                        frsize: 1024,
                        blocks: 10,
                        bfree: 10,
                    }),
                    Some("/empty") => Ok(FsStats {
                        frsize: 4096,
                        blocks: 0,
                        bfree: 0,
                    }),
                    _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
                }
            },
            |p| p == Path::new("/etc/resolv.conf"),
        );
        assert_eq!(
            got,
            vec![
                DiskUsage {
                    path: "/".into(),
                    fs: "ext4".into(),
                    total: 4_096_000,
                    used: 2_457_600,
                },
                DiskUsage {
                    path: "/data".into(),
                    fs: "xfs".into(),
                    total: 10_240,
                    used: 0,
                },
            ]
        );
        assert!(!calls.iter().any(|p| p == Path::new("/etc/resolv.conf")));
    }

    #[test]
    fn read_mountinfo_fixture() {
        let mounts = read_mountinfo(&fixtures().join("disks-basic")).unwrap();
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(
            points,
            [
                "/sys",
                "/proc",
                "/dev",
                "/",
                "/run",
                "/boot/efi",
                "/mnt/usb stick",
                "/srv/nfs"
            ]
        );
        assert_eq!(mounts[3], mount("/", "ext4", "/dev/vda2"));
        let ignored = strings(DEFAULT_IGNORED_FS);
        let measured = mounts_to_measure(mounts, &ignored);
        let points: Vec<&str> = measured.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/boot/efi", "/mnt/usb stick"]);
    }

    #[test]
    fn read_mountinfo_missing_is_an_error() {
        let err = read_mountinfo(&fixtures().join("no-such-root")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn read_disk_mapping_fixture() {
        let got = read_disk_mapping(&fixtures().join("disks-basic")).unwrap();
        assert_eq!(
            got,
            vec![
                ("CCISS-0001".to_string(), "/dev/cciss/c0d0".to_string()),
                ("S4EWNX0R123456".to_string(), "/dev/nvme0n1".to_string()),
                ("b3a1c2d4-e5f6-4a7b-8".to_string(), "/dev/vda".to_string()),
            ]
        );
    }

    #[test]
    fn read_disk_mapping_without_sys_block() {
        assert!(
            read_disk_mapping(&fixtures().join("no-such-root"))
                .unwrap()
                .is_empty()
        );
    }
}
