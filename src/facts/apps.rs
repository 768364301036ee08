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
mod tests;
