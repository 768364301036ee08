// SPDX-License-Identifier: Apache-2.0
//! Installed applications (`name-version` strings), read straight from the dpkg, apk and opkg
//! package databases, without running a package manager.

use std::path::Path;

use super::{Error, read_text_opt};

/// A package database parser: text to (name, version) pairs.
type Parser = fn(&str) -> Vec<(String, String)>;

/// The package databases guestd knows, relative to the root, with their parsers.
const DATABASES: &[(&str, Parser)] = &[
    ("var/lib/dpkg/status", parse_dpkg_status),
    ("lib/apk/db/installed", parse_apk_installed),
    ("usr/lib/opkg/status", parse_opkg_status),
    ("var/lib/opkg/status", parse_opkg_status),
];

/// The installed packages of a dpkg `status` file, as (name, version). A stanza counts as
/// installed when the last word of its `Status` field is `installed` (so
/// `deinstall ok config-files` and `install ok half-installed` do not).
pub fn parse_dpkg_status(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    let mut version = None;
    let mut installed = false;
    // A final empty line closes the last stanza even when the file lacks a trailing newline.
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            // End of a stanza; the `take`s reset the state for the next one.
            let stanza = (std::mem::take(&mut installed), name.take(), version.take());
            if let (true, Some(n), Some(v)) = stanza {
                out.push((n, v));
            }
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue; // continuation of a multi-line field
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Package" => name = Some(value.to_string()),
            "Version" => version = Some(value.to_string()),
            "Status" => installed = value.split_whitespace().last() == Some("installed"),
            _ => {}
        }
    }
    out
}

/// The installed packages of an opkg `status` file, which has the dpkg format.
pub fn parse_opkg_status(text: &str) -> Vec<(String, String)> {
    parse_dpkg_status(text)
}

/// The packages of apk's `lib/apk/db/installed`, as (name, version): records separated by
/// blank lines, with `P:name` and `V:version` lines. Every record there is installed.
pub fn parse_apk_installed(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = None;
    let mut version = None;
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(n), Some(v)) = (name.take(), version.take()) {
                out.push((n, v));
            }
        } else if let Some(n) = line.strip_prefix("P:") {
            name = Some(n.trim().to_string());
        } else if let Some(v) = line.strip_prefix("V:") {
            version = Some(v.trim().to_string());
        }
    }
    out
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
/// `name-version` strings, from every package database present under `root`. Missing
/// databases are skipped (none at all gives an empty list); one that exists but cannot be read
/// is an error.
pub fn read_applications(root: &Path, wanted: &[String]) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for (rel, parse) in DATABASES {
        let Some(text) = read_text_opt(root, rel)? else {
            continue;
        };
        out.extend(
            parse(&text)
                .into_iter()
                .filter(|(name, _)| wanted.iter().any(|p| matches(p, name)))
                .map(|(name, version)| format!("{name}-{version}")),
        );
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

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
            parse_dpkg_status(text),
            pairs(&[
                ("cloud-init", "22.4.2-1"),
                ("no-trailing-newline", "2:1.2-3")
            ])
        );
    }

    #[test]
    fn dpkg_stanza_without_version_or_status_is_skipped() {
        let text = "Package: a\nStatus: install ok installed\n\nPackage: b\nVersion: 1\n";
        assert!(parse_dpkg_status(text).is_empty());
        assert!(parse_dpkg_status("").is_empty());
    }

    #[test]
    fn opkg_status_uses_dpkg_format() {
        let text = "Package: kernel\nVersion: 5.15.150-1\nStatus: install user installed\n";
        assert_eq!(parse_opkg_status(text), pairs(&[("kernel", "5.15.150-1")]));
    }

    #[test]
    fn apk_records() {
        let text =
            "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:cloud-init\nV:23.1.1-r0\n\nP:broken\n";
        assert_eq!(
            parse_apk_installed(text),
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
}
