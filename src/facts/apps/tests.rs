// SPDX-License-Identifier: Apache-2.0
//! Tests of `facts::apps`.

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
    let text = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:cloud-init\nV:23.1.1-r0\n\nP:broken\n";
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
    let err = read_applications(&fixtures().join("apps-unreadable"), &strings(&["*"])).unwrap_err();
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
    let got =
        read_applications(&fixtures().join("apps-el9-wal"), &strings(&["kernel-core"])).unwrap();
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
        let stanza =
            format!("Package: pkg{i}\nStatus: install ok installed\nVersion: 1.{i}\n{filler}\n");
        f.write_all(stanza.as_bytes()).unwrap();
        written += stanza.len();
        i += 1;
    }
    f.write_all(b"Package: linux-image-amd64\nStatus: install ok installed\nVersion: 6.1.76-1\n")
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
