// SPDX-License-Identifier: Apache-2.0
//! Installed applications (`name-version` strings), read straight from the package databases
//! without running a package manager: dpkg, apk and opkg status files, streamed line by line
//! (memory does not grow with the file, and a file of any size is read to its end), and the
//! RPM database (`rpmdb`), reported `name-version-release` as the reference agent does.
//! `Cache` keeps the last list while the databases' (device, inode, size, mtime) stay the
//! same, so an unchanged database costs one `stat` per file.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::rpmdb::{self, Format as Rpm};
use super::{Error, under};

/// The field names of a text database of blank-line separated stanzas.
#[derive(Debug)]
pub struct Stanzas {
    name: &'static str,
    version: &'static str,
    /// The field whose last word must be `installed`; `None`: every stanza is installed.
    status: Option<&'static str>,
}

/// dpkg's `status` (opkg's has the same format).
pub const DPKG: Stanzas = Stanzas {
    name: "Package",
    version: "Version",
    status: Some("Status"),
};

/// apk's `installed`: `P:name` and `V:version` lines.
pub const APK: Stanzas = Stanzas {
    name: "P",
    version: "V",
    status: None,
};

/// The text databases guestd knows, relative to the root.
const TEXT_DATABASES: &[(&str, &Stanzas)] = &[
    ("var/lib/dpkg/status", &DPKG),
    ("lib/apk/db/installed", &APK),
    ("usr/lib/opkg/status", &DPKG),
    ("var/lib/opkg/status", &DPKG),
];

/// Where rpm keeps its database, in the order looked for; the first one present is read
/// (Fedora 36+ and openSUSE moved it to /usr/lib/sysimage/rpm, leaving /var/lib/rpm as a
/// symbolic link to it).
const RPM_DATABASES: &[(&str, Rpm)] = &[
    ("usr/lib/sysimage/rpm/rpmdb.sqlite", Rpm::Sqlite),
    ("usr/lib/sysimage/rpm/Packages.db", Rpm::Ndb),
    ("var/lib/rpm/rpmdb.sqlite", Rpm::Sqlite),
    ("var/lib/rpm/Packages.db", Rpm::Ndb),
    ("var/lib/rpm/Packages", Rpm::Bdb),
];

/// Longest line kept whole; the rest of a longer one is skipped (only `Description` lines
/// get near it).
const MAX_LINE: usize = 64 * 1024;

/// Reads the next line of `input` into `line` (without its newline, at most `MAX_LINE`
/// bytes); `false` at the end of the input.
fn next_line(input: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(any);
        }
        any = true;
        let (part, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (chunk.get(..i).unwrap_or_default(), i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        line.extend_from_slice(part.get(..room).unwrap_or(part));
        input.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// The installed packages of a stanza database read from `input`, as (name, version),
/// keeping those whose name `keep` accepts. With a status field, a stanza counts as installed
/// when that field's last word is `installed` (so `deinstall ok config-files` and
/// `install ok half-installed` do not). Continuation lines (leading blank) are skipped.
pub fn parse_stanzas(
    mut input: impl BufRead,
    format: &Stanzas,
    keep: &dyn Fn(&str) -> bool,
) -> io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let (mut name, mut version, mut installed) = (None, None, format.status.is_none());
    let mut buf = Vec::new();
    loop {
        let more = next_line(&mut input, &mut buf)?;
        let line = String::from_utf8_lossy(&buf);
        if line.trim().is_empty() {
            // End of a stanza (a final one closes the last even without a trailing newline).
            let stanza = (installed, name.take(), version.take());
            if let (true, Some(n), Some(v)) = stanza {
                out.push((n, v));
            }
            installed = format.status.is_none();
            if !more {
                return Ok(out);
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if key == format.name {
            name = keep(value).then(|| value.to_owned());
        } else if key == format.version {
            version = Some(value.to_owned());
        } else if Some(key) == format.status {
            installed = value.split_whitespace().last() == Some("installed");
        }
    }
}

/// Whether package `name` matches `pattern`: equal to it, or, when the pattern ends with `*`,
/// starting with the part before the `*`.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// The installed packages matching any pattern of `wanted`, as sorted, deduplicated
/// `name-version` strings, from every package database present under `root` (one RPM
/// database at most). Missing databases are skipped (none at all gives an empty list); one
/// that exists but cannot be read is an error.
pub fn read_applications(root: &Path, wanted: &[String]) -> Result<Vec<String>, Error> {
    let keep = |name: &str| wanted.iter().any(|p| matches(p, name));
    let mut pairs = Vec::new();
    for (rel, format) in TEXT_DATABASES {
        let path = under(root, rel);
        let read_err = |source| Error::Read {
            path: path.clone(),
            source,
        };
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(read_err(e)),
        };
        pairs.extend(parse_stanzas(BufReader::new(file), format, &keep).map_err(read_err)?);
    }
    let mut rpm = RPM_DATABASES.iter().map(|(rel, f)| (under(root, rel), f));
    if let Some((path, format)) = rpm.find(|(path, _)| path.exists()) {
        pairs.extend(rpmdb::read(&path, *format, &keep)?);
    }
    let mut out: Vec<String> = pairs.into_iter().map(|(n, v)| format!("{n}-{v}")).collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// What identifies one version of a file: (device, inode, size, mtime s, mtime ns); `None`
/// when it cannot be stat'ed.
type Stamp = Option<(u64, u64, u64, i64, i64)>;

/// The stamps of every database file guestd may read under `root` (with SQLite's `-wal`).
fn stamps(root: &Path) -> Vec<Stamp> {
    let text = TEXT_DATABASES.iter().map(|(rel, _)| under(root, rel));
    let rpm = RPM_DATABASES.iter().flat_map(|(rel, _)| {
        let path = under(root, rel);
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        [path, wal.into()]
    });
    text.chain(rpm)
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

/// The last list read, valid while the databases' stamps and the wanted list are the same.
#[derive(Debug, Default)]
pub struct Cache {
    stamps: Vec<Stamp>,
    wanted: Vec<String>,
    list: Option<Vec<String>>,
    /// How many times the databases were read (not answered from the cache).
    pub reads: u64,
}

impl Cache {
    /// `read_applications`, answered from the cache while no database file changed.
    pub fn applications(&mut self, root: &Path, wanted: &[String]) -> Result<Vec<String>, Error> {
        let now = stamps(root);
        if let Some(list) = &self.list {
            if now == self.stamps && wanted == self.wanted.as_slice() {
                return Ok(list.clone());
            }
        }
        self.list = None;
        self.reads += 1;
        let list = read_applications(root, wanted)?;
        (self.stamps, self.wanted) = (now, wanted.to_vec());
        self.list = Some(list.clone());
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    fn parse(text: &str, format: &Stanzas) -> Vec<(String, String)> {
        parse_stanzas(text.as_bytes(), format, &|_| true).unwrap()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn dpkg_keeps_only_installed_stanzas() {
        let text = "\
Package: cloud-init
Status: install ok installed
Version: 22.4.2-1
Description: initialization
 Status: deinstall ok config-files
 .
 continuation lines are not fields

Package: linux-image-6.1.0-17-amd64
Status: deinstall ok config-files
Version: 6.1.69-1

Package: half
Status: install ok half-installed
Version: 1.0


Package: no-trailing-newline
Version: 2:1.2-3
Status: install ok installed";
        assert_eq!(
            parse(text, &DPKG),
            pairs(&[
                ("cloud-init", "22.4.2-1"),
                ("no-trailing-newline", "2:1.2-3")
            ])
        );
    }

    #[test]
    fn dpkg_stanza_without_version_or_status_is_skipped() {
        let text = "Package: a\nStatus: install ok installed\n\nPackage: b\nVersion: 1\n";
        assert!(parse(text, &DPKG).is_empty());
        assert!(parse("", &DPKG).is_empty());
    }

    #[test]
    fn opkg_status_uses_dpkg_format() {
        let text = "Package: kernel\nVersion: 5.15.150-1\nStatus: install user installed\n";
        assert_eq!(parse(text, &DPKG), pairs(&[("kernel", "5.15.150-1")]));
    }

    #[test]
    fn apk_records() {
        let text =
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:cloud-init\nV:23.1.1-r0\n\nP:broken\n";
        assert_eq!(
            parse(text, &APK),
            pairs(&[("musl", "1.2.4-r2"), ("cloud-init", "23.1.1-r0")])
        );
    }

    #[test]
    fn matches_exact_and_prefix() {
        assert!(matches("kernel", "kernel"));
        assert!(!matches("kernel", "kernel-default"));
        assert!(matches("linux-image*", "linux-image-6.1.0-18-amd64"));
        assert!(matches("linux-image*", "linux-image"));
        assert!(!matches("linux-image*", "linux-headers-6.1"));
        assert!(matches("*", "anything"));
    }

    #[test]
    fn read_applications_debian() {
        let wanted = strings(&["linux-image*", "cloud-init", "ovirt-guest-agent"]);
        let got = read_applications(&fixtures().join("apps-debian"), &wanted).unwrap();
        assert_eq!(
            got,
            strings(&[
                "cloud-init-22.4.2-1",
                "linux-image-6.1.0-18-amd64-6.1.76-1",
                "linux-image-amd64-6.1.76-1",
            ])
        );
    }

    #[test]
    fn read_applications_alpine() {
        let wanted = strings(&["linux-virt", "cloud-init", "qemu-guest-agent"]);
        let got = read_applications(&fixtures().join("apps-alpine"), &wanted).unwrap();
        assert_eq!(
            got,
            strings(&["cloud-init-23.1.1-r0", "linux-virt-6.6.14-r0"])
        );
    }

    #[test]
    fn read_applications_merges_and_dedups_databases() {
        let wanted = strings(&["kernel", "busybox"]);
        let got = read_applications(&fixtures().join("apps-mixed"), &wanted).unwrap();
        assert_eq!(got, strings(&["busybox-1.36.1-1", "kernel-5.15.150-1"]));
    }

    #[test]
    fn read_applications_without_databases() {
        let got = read_applications(&fixtures().join("no-such-root"), &strings(&["*"])).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn read_applications_unreadable_database_is_an_error() {
        let err =
            read_applications(&fixtures().join("apps-unreadable"), &strings(&["*"])).unwrap_err();
        assert!(err.to_string().contains("var/lib/dpkg/status"), "{err}");
    }

    const RPM_WANTED: &[&str] = &["kernel", "kernel-core", "guestd", "cloud-init", "bash*"];

    #[test]
    fn read_applications_el9_rpmdb_sqlite() {
        let got = read_applications(&fixtures().join("apps-el9"), &strings(RPM_WANTED)).unwrap();
        assert_eq!(
            got,
            strings(&[
                "bash-5.1.8-9.el9",
                "cloud-init-23.4-7.el9",
                "guestd-0.1.0-1.el9",
                "kernel-5.14.0-427.13.1.el9_4",
                "kernel-core-5.14.0-362.8.1.el9_3",
                "kernel-core-5.14.0-427.13.1.el9_4",
            ])
        );
    }

    #[test]
    fn read_applications_el9_uncheckpointed_wal() {
        // The WAL deletes kernel-core 362 and adds kernel-core 503: both are seen.
        let got = read_applications(&fixtures().join("apps-el9-wal"), &strings(&["kernel-core"]))
            .unwrap();
        assert_eq!(
            got,
            strings(&[
                "kernel-core-5.14.0-427.13.1.el9_4",
                "kernel-core-5.14.0-503.11.1.el9_5",
            ])
        );
    }

    #[test]
    fn torn_wal_frame_is_not_read() {
        // A frame whose checksum fails ends the WAL: the main file's state is read.
        let root = scratch("torn");
        let dir = root.join("var/lib/rpm");
        std::fs::create_dir_all(&dir).unwrap();
        let fixture = fixtures().join("apps-el9-wal/var/lib/rpm");
        std::fs::copy(fixture.join("rpmdb.sqlite"), dir.join("rpmdb.sqlite")).unwrap();
        let mut wal = std::fs::read(fixture.join("rpmdb.sqlite-wal")).unwrap();
        wal[32 + 24 + 100] ^= 1;
        std::fs::write(dir.join("rpmdb.sqlite-wal"), wal).unwrap();
        let got = read_applications(&root, &strings(&["kernel-core"])).unwrap();
        assert_eq!(
            got,
            strings(&[
                "kernel-core-5.14.0-362.8.1.el9_3",
                "kernel-core-5.14.0-427.13.1.el9_4",
            ])
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn read_applications_el7_berkeley_db() {
        let wanted = strings(&["kernel", "ovirt-guest-agent*", "guestd", "cloud-init"]);
        let got = read_applications(&fixtures().join("apps-el7"), &wanted).unwrap();
        assert_eq!(
            got,
            strings(&[
                "cloud-init-19.4-7.el7_9.6",
                "guestd-0.1.0-1.el7",
                "kernel-3.10.0-1160.108.1.el7",
                "kernel-3.10.0-1160.119.1.el7",
                "ovirt-guest-agent-common-1.0.16-1.el7",
            ])
        );
    }

    /// A scratch root for a test, removed first if left over.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("guestd-apps-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rpm_sysimage_database_is_read_once() {
        // Fedora 36+: the database in /usr/lib/sysimage/rpm, /var/lib/rpm a link to it.
        let root = scratch("sysimage");
        std::fs::create_dir_all(root.join("usr/lib/sysimage/rpm")).unwrap();
        std::fs::create_dir_all(root.join("var/lib")).unwrap();
        std::fs::copy(
            fixtures().join("apps-el9/var/lib/rpm/rpmdb.sqlite"),
            root.join("usr/lib/sysimage/rpm/rpmdb.sqlite"),
        )
        .unwrap();
        std::os::unix::fs::symlink("../../usr/lib/sysimage/rpm", root.join("var/lib/rpm")).unwrap();
        let mut cache = Cache::default();
        let got = cache.applications(&root, &strings(&["kernel"])).unwrap();
        assert_eq!(got, strings(&["kernel-5.14.0-427.13.1.el9_4"]));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn corrupt_rpm_databases_are_errors_naming_the_file() {
        let root = scratch("corrupt");
        for (fixture, rel) in [
            ("apps-el9", "var/lib/rpm/rpmdb.sqlite"),
            ("apps-el7", "var/lib/rpm/Packages"),
        ] {
            let good = std::fs::read(fixtures().join(fixture).join(rel)).unwrap();
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let mut cases: Vec<Vec<u8>> = [0, 50, 100, 600, 4096, 5000, good.len() / 2]
                .iter()
                .map(|&n| good[..n].to_vec())
                .collect();
            // Header fields, page headers, cell pointers and child pointers, mutated.
            let mut state = 0x2545_f491_u32;
            for _ in 0..300 {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let mut m = good.clone();
                let page = (state as usize >> 8) % (good.len() / 4096);
                let at = page * 4096 + (state as usize % 112);
                m[at] = (state >> 24) as u8;
                cases.push(m);
            }
            for (i, case) in cases.iter().enumerate() {
                std::fs::write(&path, case).unwrap();
                if let Err(e) = read_applications(&root, &strings(&["*"])) {
                    assert!(e.to_string().contains(rel), "{fixture} case {i}: {e}");
                }
            }
            for cut in [0, 50, 600, good.len() / 2] {
                std::fs::write(&path, &good[..cut]).unwrap();
                let err = read_applications(&root, &strings(&["*"])).unwrap_err();
                assert!(err.to_string().contains(rel), "{fixture} cut {cut}: {err}");
            }
            std::fs::remove_file(&path).unwrap();
        }
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn long_lines_are_skipped_not_kept() {
        let text = format!(
            "Package: a\nDescription: {}\nStatus: install ok installed\nVersion: 1\n",
            "x".repeat(3 * MAX_LINE)
        );
        assert_eq!(parse(&text, &DPKG), pairs(&[("a", "1")]));
        let mut line = Vec::new();
        let mut input = text.as_bytes();
        assert!(next_line(&mut input, &mut line).unwrap());
        assert!(next_line(&mut input, &mut line).unwrap());
        assert_eq!(line.len(), MAX_LINE);
    }

    /// Writes a Debian status file of `mib` MiB under `root` whose last stanza is
    /// `linux-image-amd64`.
    fn big_dpkg_status(root: &Path, mib: usize) {
        use std::io::Write;
        let path = root.join("var/lib/dpkg/status");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::io::BufWriter::new(File::create(&path).unwrap());
        let filler = "Description: filler\n".to_owned() + &" a continuation line\n".repeat(40);
        let mut written = 0;
        let mut i = 0;
        while written < mib << 20 {
            let stanza = format!(
                "Package: pkg{i}\nStatus: install ok installed\nVersion: 1.{i}\n{filler}\n"
            );
            f.write_all(stanza.as_bytes()).unwrap();
            written += stanza.len();
            i += 1;
        }
        f.write_all(
            b"Package: linux-image-amd64\nStatus: install ok installed\nVersion: 6.1.76-1\n",
        )
        .unwrap();
    }

    #[test]
    fn dpkg_status_over_16_mib_is_read_to_its_end() {
        let root = scratch("big");
        big_dpkg_status(&root, 20);
        let size = std::fs::metadata(root.join("var/lib/dpkg/status"))
            .unwrap()
            .len();
        assert!(size > crate::facts::MAX_FILE, "{size}");
        let got = read_applications(&root, &strings(&["linux-image*", "pkg7"])).unwrap();
        assert_eq!(got, strings(&["linux-image-amd64-6.1.76-1", "pkg7-1.7"]));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cache_reads_again_only_when_a_database_changes() {
        let root = scratch("cache");
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        let status = root.join("var/lib/dpkg/status");
        std::fs::copy(fixtures().join("apps-debian/var/lib/dpkg/status"), &status).unwrap();
        let wanted = strings(&["cloud-init"]);
        let mut cache = Cache::default();
        let first = cache.applications(&root, &wanted).unwrap();
        assert_eq!(first, strings(&["cloud-init-22.4.2-1"]));
        assert_eq!(cache.applications(&root, &wanted).unwrap(), first);
        assert_eq!(cache.reads, 1, "unchanged databases are not read again");
        // A new package database appears: read again.
        let apk = root.join("lib/apk/db");
        std::fs::create_dir_all(&apk).unwrap();
        std::fs::write(apk.join("installed"), "P:cloud-init\nV:23.1.1-r0\n").unwrap();
        let got = cache.applications(&root, &wanted).unwrap();
        assert_eq!(
            got,
            strings(&["cloud-init-22.4.2-1", "cloud-init-23.1.1-r0"])
        );
        assert_eq!(cache.reads, 2);
        // Rewritten in place with the same size: the mtime tells (set, so that a coarse
        // file-system clock cannot hide the change).
        let text = std::fs::read_to_string(&status).unwrap();
        std::fs::write(&status, text.replace("22.4.2-1", "22.4.9-1")).unwrap();
        let f = File::options().write(true).open(&status).unwrap();
        let when = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        f.set_modified(when).unwrap();
        drop(f);
        let got = cache.applications(&root, &wanted).unwrap();
        assert_eq!(
            got,
            strings(&["cloud-init-22.4.9-1", "cloud-init-23.1.1-r0"])
        );
        assert_eq!(cache.reads, 3);
        // Another wanted list is not answered from the cache.
        cache
            .applications(&root, &strings(&["linux-image*"]))
            .unwrap();
        assert_eq!(cache.reads, 4);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn default_list_covers_each_distributions_kernel_and_the_agents() {
        let wanted = crate::config::Config::default().applications;
        let reference = "kernel ovirt-guest-agent ovirt-guest-agent-common xorg-x11-drv-qxl \
            linux-image xserver-xorg-video-qxl xf86-video-qxl kernel-desktop kernel-default \
            kernel-trace kernel-vanilla kernel-debug kernel-ec2 kernel-xen kernel-ppc64 cloud-init";
        let ours = "guestd qemu-guest-agent kernel-core kernel-uek linux-image-amd64 \
            linux-image-6.1.0-18-amd64 linux-image-generic linux-virt linux-lts";
        for name in reference.split_whitespace().chain(ours.split_whitespace()) {
            assert!(wanted.iter().any(|p| matches(p, name)), "{name}");
        }
        assert!(
            !wanted
                .iter()
                .any(|p| matches(p, "linux-headers-6.1.0-18-amd64"))
        );
    }
}
