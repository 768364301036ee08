// SPDX-License-Identifier: Apache-2.0
//! The mount table: `proc/self/mountinfo` parsed into mounts (mount point, type, source and
//! device number), with the kernel's octal escapes decoded.

use std::collections::HashSet;
use std::path::Path;

use super::{Error, read_text};

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted, with octal escapes decoded.
    pub mount_point: String,
    /// File-system type, e.g. `ext4` or `fuse.sshfs`.
    pub fs_type: String,
    /// Mount source (device or server path), with octal escapes decoded.
    pub source: String,
    /// The directory of the file system mounted here: `/` for a whole file system, the
    /// source directory for a bind mount of part of one. Escapes decoded.
    pub root: String,
    /// The `major:minor` of the mounted device (`st_dev`; major 0 for file systems without a
    /// block device), `None` when malformed.
    pub major_minor: Option<(u32, u32)>,
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
    let major_minor = fields.get(2).and_then(|f| {
        let (major, minor) = f.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    });
    let root = fields.get(3)?;
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
        root: unescape(root),
        major_minor,
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

/// The mounts in `proc/self/mountinfo` under `root`.
pub fn read_mountinfo(root: &Path) -> Result<Vec<Mount>, Error> {
    Ok(parse_mountinfo(&read_text(root, "proc/self/mountinfo")?))
}

/// A mount for tests.
#[cfg(test)]
pub(crate) fn mount(mount_point: &str, fs_type: &str, source: &str) -> Mount {
    Mount {
        mount_point: mount_point.into(),
        fs_type: fs_type.into(),
        source: source.into(),
        root: "/".into(),
        major_minor: None,
    }
}

/// `mount` with the device number of a parsed mountinfo line, for tests.
#[cfg(test)]
pub(crate) fn on(major: u32, minor: u32, m: Mount) -> Mount {
    Mount {
        major_minor: Some((major, minor)),
        ..m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

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
                Mount {
                    root: "/mnt1".into(),
                    ..on(98, 0, mount("/mnt2", "ext3", "/dev/root"))
                },
                on(252, 1, mount("/", "ext4", "/dev/vda1")),
                on(0, 21, mount("/proc", "proc", "proc")),
                on(0, 30, mount("/srv", "xfs", "/dev/vdb")),
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
                on(
                    0,
                    40,
                    mount("/mnt/my disk\ttab\nnl\\bs", "vfat", "/dev/sd b1")
                ),
                on(0, 41, mount("/mnt/odd\\9 1\\777", "ext4", "/dev/sdc")),
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
                on(0, 7, mount("/data", "xfs", "/dev/vdc")),
                on(0, 8, mount("/tmp", "tmpfs", "tmpfs"))
            ]
        );
        let bad_dev = parse_mountinfo("29 22 x / /x rw - ext4 /dev/vdd rw\n");
        assert_eq!(bad_dev, vec![mount("/x", "ext4", "/dev/vdd")]);
    }

    #[test]
    fn read_mountinfo_missing_is_an_error() {
        let err = read_mountinfo(&fixtures().join("no-such-root")).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
