// SPDX-License-Identifier: Apache-2.0
//! File systems and disks: the mounts worth measuring (each device once), the sizes of the
//! local ones from statvfs(3) on the mount point under the root (network and FUSE file systems
//! are left to `crate::probe`, off the loop), and the disk serial to device mapping from
//! `sys/block`.

use std::io;
use std::path::Path;

use super::mounts::{Mount, read_mountinfo};
use super::{Error, blockdev, under};
use crate::sys::{self, FsStats};

/// Network and cluster file systems. They are never statvfs-ed on the agent's loop (a dead
/// server would hang it): `crate::probe` measures them in a child process with a time limit.
pub const NETWORK_FS: &[&str] = &[
    "virtiofs",
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

/// The file-system types not measured by default: the reference guest agent's `ignored_fs`
/// list, plus pseudo and read-only image file systems it predates (`bpf`, `efivarfs`, `nsfs`,
/// `ramfs`, `squashfs`).
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

/// One measured file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    /// Mount source (device or server path).
    pub device: String,
    /// File-system type, e.g. `ext4`.
    pub fs_type: String,
    /// Where it is mounted.
    pub mount_point: String,
    /// The `major:minor` of the mounted device, as in `Mount`.
    pub major_minor: Option<(u32, u32)>,
    /// Size in bytes: `f_frsize * f_blocks`.
    pub total: u64,
    /// Bytes in use: `total - f_frsize * f_bfree` (the blocks reserved for root count as
    /// free).
    pub used: u64,
    /// Bytes free for unprivileged users: `f_frsize * f_bavail`.
    pub available: u64,
}

/// A block device that reports a serial number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSerial {
    /// The serial, trimmed, e.g. the `serial=` a virtio-blk disk was given by the host.
    pub serial: String,
    /// The device node, e.g. `/dev/vda`.
    pub device: String,
}

/// The mounts worth measuring: those whose type is not in `ignored`, each device once (see
/// `once_per_device`), split into (local, may hang): network and FUSE file systems (see
/// `may_hang`) are measured off the loop.
pub fn mounts_to_measure(mounts: Vec<Mount>, ignored: &[String]) -> (Vec<Mount>, Vec<Mount>) {
    let kept = mounts.into_iter().filter(|m| !ignored.contains(&m.fs_type));
    once_per_device(kept.collect())
        .into_iter()
        .partition(|m| !may_hang(&m.fs_type))
}

/// Whether statvfs(3) on a file system of type `fs_type` may hang: network and cluster file
/// systems (`NETWORK_FS`), and FUSE ones (`fuse`, `fuse.*`), served by a user-space daemon
/// that may be stuck. `fuseblk` (ntfs-3g and the like on a local disk) counts as FUSE too.
pub fn may_hang(fs_type: &str) -> bool {
    NETWORK_FS.contains(&fs_type) || super::blockdev::served_by_a_daemon(fs_type)
}

/// Each mounted file system once. Mounts with the same device number (`major:minor`: bind
/// mounts, a device mounted at two places, btrfs subvolumes, NFS mounts sharing a superblock)
/// are one file system with one usage; the one reported is the first that mounts the whole
/// file system (mountinfo root `/`), else the first of them; it keeps the place of the first.
/// The reference agent reported each mount point, bind mounts included.
pub fn once_per_device(mounts: Vec<Mount>) -> Vec<Mount> {
    let mut index = std::collections::HashMap::new();
    let mut out: Vec<Mount> = Vec::with_capacity(mounts.len());
    for m in mounts {
        let Some(dev) = m.major_minor else {
            out.push(m);
            continue;
        };
        match index.get(&dev) {
            None => {
                index.insert(dev, out.len());
                out.push(m);
            }
            Some(&i) if out[i].root != "/" && m.root == "/" => out[i] = m,
            Some(_) => {}
        }
    }
    out
}

/// (total, used) bytes from statvfs numbers: `total = frsize*blocks`,
/// `used = total - frsize*bfree`, saturating instead of overflowing.
pub fn usage(frsize: u64, blocks: u64, bfree: u64) -> (u64, u64) {
    let total = frsize.saturating_mul(blocks);
    (total, total.saturating_sub(frsize.saturating_mul(bfree)))
}

/// Mount `m` measured by its statvfs result `st`.
pub fn filesystem(m: &Mount, st: &FsStats) -> Filesystem {
    let (total, used) = usage(st.frsize, st.blocks, st.bfree);
    Filesystem {
        device: m.source.clone(),
        fs_type: m.fs_type.clone(),
        mount_point: m.mount_point.clone(),
        major_minor: m.major_minor,
        total,
        used,
        available: st.frsize.saturating_mul(st.bavail),
    }
}

/// Measures `mounts` with `stat` (statvfs in production). Mount points that are regular files
/// (bind-mounted files), mounts whose `stat` fails, and empty file systems (total and used both
/// 0) are left out. Both closures get the mount point as listed in the mount table.
pub fn collect(
    mounts: &[Mount],
    mut stat: impl FnMut(&Path) -> io::Result<FsStats>,
    is_regular_file: impl Fn(&Path) -> bool,
) -> Vec<Filesystem> {
    let mut out = Vec::new();
    for m in mounts {
        let path = Path::new(&m.mount_point);
        if is_regular_file(path) {
            continue;
        }
        match stat(path) {
            Ok(st) => {
                let u = filesystem(m, &st);
                if u.total != 0 || u.used != 0 {
                    out.push(u);
                }
            }
            Err(e) => log::debug!("statvfs {}: {e}", m.mount_point),
        }
    }
    out
}

/// The file systems mounted under `root` worth measuring (see `mounts_to_measure`; types in
/// `ignored` are left out): the local ones measured, each statvfs-ed at its mount point joined
/// onto `root` (so a fixture tree is measured under itself) as `collect` does, and the ones
/// that may hang, to be measured off the loop. Failing statvfs calls are logged at debug level
/// and left out; only an unreadable mount table is an error.
pub fn read_filesystems(
    root: &Path,
    ignored: &[String],
) -> Result<(Vec<Filesystem>, Vec<Mount>), Error> {
    let (local, remote) = mounts_to_measure(read_mountinfo(root)?, ignored);
    let real = |p: &Path| under(root, &p.to_string_lossy());
    let measured = collect(&local, |p| sys::statvfs(&real(p)), |p| real(p).is_file());
    Ok((measured, remote))
}

/// Every block device under `sys/block` that has a udev-style `ID_SERIAL` (see
/// `blockdev::id_serial`: the virtio-blk or NVMe serial, `0QEMU_QEMU_HARDDISK_<serial>` for a
/// QEMU SCSI disk, `QEMU_HARDDISK_<serial>` for a SATA one), with its `/dev/<name>` node,
/// sorted by device name: what the reference agent's `diskmapper` prints. A `!` in the kernel
/// name stands for `/` in the device path. A missing `sys/block` gives an empty list.
pub fn read_disk_serials(root: &Path) -> Result<Vec<DiskSerial>, Error> {
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
            let serial = blockdev::id_serial(root, &name)?;
            Some(DiskSerial {
                serial,
                device: format!("/dev/{}", name.replace('!', "/")),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;
    use crate::facts::mounts::{mount, on, read_mountinfo};

    fn stats(frsize: u64, blocks: u64, bfree: u64, bavail: u64) -> FsStats {
        FsStats {
            frsize,
            blocks,
            bfree,
            bavail,
        }
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn measure_drops_ignored_and_sets_network_and_fuse_apart() {
        let mounts = vec![
            mount("/", "ext4", "/dev/vda1"),
            mount("/proc", "proc", "proc"),
            mount("/home", "nfs4", "srv:/home"),
            mount("/sshfs", "fuse.sshfs", "u@h:"),
            mount("/rclone", "fuse", "r:"),
            mount("/ntfs", "fuseblk", "/dev/sdb1"),
            mount("/shared", "virtiofs", "tag"),
            mount("/ctr", "overlay", "overlay"),
        ];
        let ignored: Vec<String> = DEFAULT_IGNORED_FS.iter().map(|s| s.to_string()).collect();
        let (local, remote) = mounts_to_measure(mounts, &ignored);
        let points =
            |v: &[Mount]| -> Vec<String> { v.iter().map(|m| m.mount_point.clone()).collect() };
        assert_eq!(points(&local), ["/", "/ctr"]);
        assert_eq!(
            points(&remote),
            ["/home", "/sshfs", "/rclone", "/ntfs", "/shared"]
        );
        assert!(!DEFAULT_IGNORED_FS.contains(&"overlay"));
    }

    /// `tests/fixtures/disks-mapping`: `/` bind-mounted at `/data` (a subdirectory) and
    /// mounted again at `/again`; `/dev/sdb` first bind-mounted from a subdirectory, then
    /// whole; `/run/netns` bound onto itself; one NFS export at two places.
    #[test]
    fn a_file_system_mounted_twice_is_measured_once() {
        let mounts = read_mountinfo(&fixtures().join("disks-mapping")).unwrap();
        assert_eq!(mounts[5].root, "/srv/data");
        let (local, remote) = mounts_to_measure(mounts, &strings(DEFAULT_IGNORED_FS));
        let points =
            |v: &[Mount]| -> Vec<String> { v.iter().map(|m| m.mount_point.clone()).collect() };
        // The whole-file-system mount wins, at the place of the first mount of the device.
        assert_eq!(points(&local), ["/", "/mnt/whole", "/mnt/scsi"]);
        assert_eq!(points(&remote), ["/srv/nfs", "/mnt/sshfs"]);
        // Without a whole mount the first one stays; mounts without a device number all stay.
        let part = |p: &str, root: &str| Mount {
            root: root.into(),
            ..on(8, 1, mount(p, "xfs", "/dev/sda1"))
        };
        let got = once_per_device(vec![
            part("/a", "/x"),
            mount("/u", "xfs", "u"),
            part("/b", "/y"),
            mount("/u", "xfs", "u"),
        ]);
        assert_eq!(
            got,
            [
                part("/a", "/x"),
                mount("/u", "xfs", "u"),
                mount("/u", "xfs", "u")
            ]
        );
    }

    #[test]
    fn usage_arithmetic() {
        assert_eq!(usage(4096, 1000, 250), (4_096_000, 3_072_000));
        assert_eq!(usage(0, 1000, 1000), (0, 0));
        assert_eq!(usage(u64::MAX, 2, 1), (u64::MAX, 0));
        assert_eq!(usage(4096, 10, 20), (40_960, 0));
    }

    #[test]
    fn filesystem_totals_count_fragments() {
        // f_frsize is the unit of the block counts (f_bsize, the preferred I/O size, may be
        // larger and is not used).
        let m = on(252, 2, mount("/", "ext4", "/dev/vda2"));
        assert_eq!(
            filesystem(&m, &stats(1024, 1000, 400, 350)),
            Filesystem {
                device: "/dev/vda2".into(),
                fs_type: "ext4".into(),
                mount_point: "/".into(),
                major_minor: Some((252, 2)),
                total: 1_024_000,
                used: 614_400,
                available: 358_400,
            }
        );
        let full = filesystem(&m, &stats(u64::MAX, 3, 1, 2));
        assert_eq!(
            (full.total, full.used, full.available),
            (u64::MAX, 0, u64::MAX)
        );
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
                    Some("/") => Ok(stats(4096, 1000, 400, 300)),
                    Some("/data") => Ok(stats(1024, 10, 10, 10)),
                    Some("/empty") => Ok(stats(4096, 0, 0, 0)),
                    _ => Err(io::Error::from(io::ErrorKind::NotConnected)),
                }
            },
            |p| p == Path::new("/etc/resolv.conf"),
        );
        assert_eq!(
            got,
            vec![
                Filesystem {
                    device: "/dev/vda1".into(),
                    fs_type: "ext4".into(),
                    mount_point: "/".into(),
                    major_minor: None,
                    total: 4_096_000,
                    used: 2_457_600,
                    available: 1_228_800,
                },
                Filesystem {
                    device: "/dev/vdc".into(),
                    fs_type: "xfs".into(),
                    mount_point: "/data".into(),
                    major_minor: None,
                    total: 10_240,
                    used: 0,
                    available: 10_240,
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
        assert_eq!(mounts[3], on(252, 2, mount("/", "ext4", "/dev/vda2")));
        let ignored = strings(DEFAULT_IGNORED_FS);
        let (local, remote) = mounts_to_measure(mounts, &ignored);
        let points: Vec<&str> = local.iter().map(|m| m.mount_point.as_str()).collect();
        assert_eq!(points, ["/", "/boot/efi", "/mnt/usb stick"]);
        assert_eq!(remote.len(), 1);
        assert_eq!(remote[0].mount_point, "/srv/nfs");
    }

    #[test]
    fn read_filesystems_measures_under_the_root() {
        // Only "/" exists under the fixture root (as the fixture directory itself); the
        // other local mount points are missing there, so their statvfs fails.
        let root = fixtures().join("disks-basic");
        let (got, remote) = read_filesystems(&root, &strings(DEFAULT_IGNORED_FS)).unwrap();
        assert_eq!(remote.len(), 1, "the NFS mount is left to the probe");
        let [fs] = got.as_slice() else {
            panic!("one file system expected: {got:?}");
        };
        assert_eq!(
            (
                fs.device.as_str(),
                fs.fs_type.as_str(),
                fs.mount_point.as_str()
            ),
            ("/dev/vda2", "ext4", "/")
        );
        assert_eq!(fs.major_minor, Some((252, 2)));
        let st = sys::statvfs(&root).unwrap();
        assert_eq!(fs.total, st.frsize * st.blocks);
        assert!(fs.used <= fs.total && fs.available <= fs.total);
        let err = read_filesystems(&fixtures().join("no-such-root"), &[]).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn read_disk_serials_fixture() {
        let got = read_disk_serials(&fixtures().join("disks-basic")).unwrap();
        let disk = |serial: &str, device: &str| DiskSerial {
            serial: serial.into(),
            device: device.into(),
        };
        assert_eq!(
            got,
            vec![
                disk("CCISS-0001", "/dev/cciss/c0d0"),
                disk("S4EWNX0R123456", "/dev/nvme0n1"),
                disk("b3a1c2d4-e5f6-4a7b-8", "/dev/vda"),
            ]
        );
    }

    /// `tests/fixtures/disks-mapping`: one disk per bus and form, each with the `ID_SERIAL`
    /// udev gives it (`udevadm info` on QEMU guests; the VPD pages are QEMU's, the SATA
    /// IDENTIFY data is laid out as libata copies it on a little-endian guest).
    #[test]
    fn mapping_keys_are_udev_id_serials_for_each_bus() {
        let got = read_disk_serials(&fixtures().join("disks-mapping")).unwrap();
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|d| (d.device.as_str(), d.serial.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                // NVMe: the controller's serial, trimmed (as before).
                ("/dev/nvme0n1", "S4EWNX0R123456"),
                // virtio-scsi scsi-hd with serial=: page 0x83's vendor-specific designator.
                ("/dev/sda", "0QEMU_QEMU_HARDDISK_6d9c1b2e-0a4f-4d3b-9"),
                // ... with a wwn: the NAA designator wins.
                ("/dev/sdb", "35000c500a1b2c3d4"),
                // No page 0x83: the unit serial number page.
                ("/dev/sdc", "SQEMU_QEMU_HARDDISK_drive-scsi0-0-0-2"),
                // SATA (AHCI): ata_id's model_serial from the IDENTIFY data of page 0x89.
                ("/dev/sdd", "QEMU_HARDDISK_QM00005"),
                // ... on a kernel without vpd_pg89: INQUIRY product and page 0x80.
                ("/dev/sde", "QEMU_HARDDISK_QM00007"),
                // ... a model longer than the 16 characters of the INQUIRY product.
                ("/dev/sdf", "Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456A"),
                // udev's clean-up: whitespace runs to one `_`, `/` replaced.
                ("/dev/sdg", "0QEMU_QEMU_HARDDISK_my_disk_1"),
                // virtio-blk: the serial itself.
                ("/dev/vda", "b3a1c2d4-e5f6-4a7b-8"),
            ]
        );
    }

    #[test]
    fn udev_clean_is_udevs_whitespace_and_character_replacement() {
        use blockdev::udev_clean;
        assert_eq!(
            udev_clean(b"  QEMU    QEMU HARDDISK   x  "),
            "QEMU_QEMU_HARDDISK_x"
        );
        assert_eq!(udev_clean(br"a\x2fb c/d\e"), r"a\x2fb_c_d_e");
        assert_eq!(
            udev_clean("d\u{e9}j\u{e0}-vu\u{fdd0}".as_bytes()),
            "d\u{e9}j\u{e0}-vu_"
        );
        assert_eq!(udev_clean(b"ab\xffcd\0ignored"), "ab_cd");
        assert_eq!(udev_clean(b" \t\n"), "");
    }

    #[test]
    fn read_disk_serials_without_sys_block() {
        assert!(
            read_disk_serials(&fixtures().join("no-such-root"))
                .unwrap()
                .is_empty()
        );
    }
}
