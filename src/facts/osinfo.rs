// SPDX-License-Identifier: Apache-2.0
//! Operating system facts: the os-release(5) fields from `/etc/os-release` (or
//! `/usr/lib/os-release`) and the kernel's release, version and machine name.

use std::path::Path;

use super::{Error, hostname, read_text, read_text_opt};

/// The identifying os-release(5) fields. Each is the last non-empty assignment to its key;
/// `None` when the key is missing or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `ID`, e.g. `debian`.
    pub id: Option<String>,
    /// `ID_LIKE`, a space-separated list such as `rhel centos fedora`.
    pub id_like: Option<String>,
    /// `NAME`, e.g. `Debian GNU/Linux`.
    pub name: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
    /// `VERSION`, e.g. `12 (bookworm)`.
    pub version: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `VERSION_CODENAME`, e.g. `bookworm`.
    pub version_codename: Option<String>,
    /// `VARIANT`, e.g. `Server Edition`.
    pub variant: Option<String>,
    /// `VARIANT_ID`, e.g. `server`.
    pub variant_id: Option<String>,
    /// `BUILD_ID`, e.g. `2024-02-01`.
    pub build_id: Option<String>,
}

impl OsRelease {
    /// The fields from parsed `(key, value)` pairs (see `parse_os_release`); other keys are
    /// ignored.
    pub fn from_pairs(pairs: &[(String, String)]) -> OsRelease {
        let get = |key: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, v)| k == key && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        OsRelease {
            id: get("ID"),
            id_like: get("ID_LIKE"),
            name: get("NAME"),
            pretty_name: get("PRETTY_NAME"),
            version: get("VERSION"),
            version_id: get("VERSION_ID"),
            version_codename: get("VERSION_CODENAME"),
            variant: get("VARIANT"),
            variant_id: get("VARIANT_ID"),
            build_id: get("BUILD_ID"),
        }
    }
}

/// The operating system and the kernel running it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsInfo {
    pub release: OsRelease,
    /// Kernel release (`uname -r`), e.g. `6.1.0-18-amd64`; empty when unknown.
    pub kernel_release: String,
    /// Kernel version (`uname -v`), e.g. `#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1
    /// (2024-02-01)`; empty when unknown.
    pub kernel_version: String,
    /// Machine hardware name (`uname -m`), e.g. `x86_64`; empty when unknown.
    pub machine: String,
}

/// Parses os-release(5) text into `(key, value)` pairs, in file order.
///
/// Lines are `KEY=value`; the value is unquoted (trailing whitespace trimmed), `"double
/// quoted"` (the escapes `\"`, `\\`, `\$` and `` \` `` are decoded, other backslashes are kept
/// literally) or `'single quoted'` (no escapes). Comments, blank lines and malformed lines
/// (bad key, unterminated quote, text after the closing quote) are skipped.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(parse_line).collect()
}

/// One os-release line, or `None` for a comment, blank or malformed line.
fn parse_line(line: &str) -> Option<(String, String)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let (key, raw) = line.split_once('=')?;
    let mut chars = key.chars();
    let key_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !key_ok {
        return None;
    }
    let value = if let Some(rest) = raw.strip_prefix('"') {
        unquote_double(rest)?
    } else if let Some(rest) = raw.strip_prefix('\'') {
        let (inner, after) = rest.split_once('\'')?;
        after.trim().is_empty().then(|| inner.to_owned())?
    } else {
        raw.trim().to_owned()
    };
    Some((key.to_owned(), value))
}

/// Decodes the text after an opening `"`, up to the closing `"`; `None` if unterminated or
/// followed by anything but whitespace.
fn unquote_double(rest: &str) -> Option<String> {
    let mut value = String::new();
    let mut chars = rest.char_indices();
    while let Some((_, c)) = chars.next() {
        match c {
            '"' => {
                return chars.as_str().trim().is_empty().then_some(value);
            }
            '\\' => match chars.next() {
                Some((_, e @ ('"' | '\\' | '$' | '`'))) => value.push(e),
                Some((_, other)) => {
                    value.push('\\');
                    value.push(other);
                }
                None => return None,
            },
            _ => value.push(c),
        }
    }
    None
}

/// Reads and parses `etc/os-release` under `root`, falling back to `usr/lib/os-release` when
/// the former is missing. Both missing gives an empty list.
pub fn read_os_release_pairs(root: &Path) -> Result<Vec<(String, String)>, Error> {
    for rel in ["etc/os-release", "usr/lib/os-release"] {
        if let Some(text) = read_text_opt(root, rel)? {
            return Ok(parse_os_release(&text));
        }
    }
    Ok(Vec::new())
}

/// The os-release fields under `root` (see `read_os_release_pairs`); both files missing gives
/// all fields `None`.
pub fn read_os_release(root: &Path) -> Result<OsRelease, Error> {
    Ok(OsRelease::from_pairs(&read_os_release_pairs(root)?))
}

/// `release` with the kernel release and version under `root`
/// (`proc/sys/kernel/{osrelease,version}`, trimmed; empty when unreadable) and `machine`
/// (`uname -m`, which no file under the root holds).
pub fn read_os_info(root: &Path, release: OsRelease, machine: &str) -> OsInfo {
    let kernel_version = read_text(root, "proc/sys/kernel/version")
        .map(|v| v.trim().to_owned())
        .unwrap_or_default();
    OsInfo {
        release,
        kernel_release: hostname::read_os_release_kernel(root).unwrap_or_default(),
        kernel_version,
        machine: machine.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn parses_quoting_styles() {
        let text = "# comment\n\
                    \n\
                    NAME=Fedora Linux  \n\
                    ID=\"fedora\"\n\
                    PRETTY_NAME='Fedora \"39\" $x \\n'\n\
                    ESC=\"a \\\"b\\\" \\\\ \\$HOME \\` \\n c\"\n\
                    EMPTY=\n\
                    EMPTYQ=\"\"\n\
                    TRAIL=\"x\"   \n";
        assert_eq!(
            parse_os_release(text),
            pairs(&[
                ("NAME", "Fedora Linux"),
                ("ID", "fedora"),
                ("PRETTY_NAME", "Fedora \"39\" $x \\n"),
                ("ESC", "a \"b\" \\ $HOME ` \\n c"),
                ("EMPTY", ""),
                ("EMPTYQ", ""),
                ("TRAIL", "x"),
            ])
        );
    }

    #[test]
    fn skips_malformed_lines() {
        let text = "no equals sign\n\
                    =value\n\
                    1KEY=x\n\
                    BAD KEY=x\n\
                    OPEN=\"unterminated\n\
                    OPEN2='unterminated\n\
                    AFTER=\"x\" y\n\
                    BACKSLASH_END=\"x\\\n\
                    GOOD_1=yes\n";
        assert_eq!(parse_os_release(text), pairs(&[("GOOD_1", "yes")]));
        assert!(parse_os_release("").is_empty());
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn fields_take_the_last_non_empty_assignment() {
        let rel = OsRelease::from_pairs(&pairs(&[
            ("VERSION_ID", "1"),
            ("VERSION_ID", "2"),
            ("NAME", "x"),
            ("NAME", ""),
            ("ID", ""),
            ("OTHER", "ignored"),
        ]));
        assert_eq!(
            rel,
            OsRelease {
                version_id: some("2"),
                name: some("x"),
                ..OsRelease::default()
            }
        );
        assert_eq!(OsRelease::from_pairs(&[]), OsRelease::default());
    }

    #[test]
    fn reads_etc_os_release_and_kernel() {
        let root = fixtures().join("os-debian");
        let rel = read_os_release(&root).unwrap();
        assert_eq!(
            rel,
            OsRelease {
                id: some("debian"),
                name: some("Debian GNU/Linux"),
                pretty_name: some("Debian GNU/Linux 12 (bookworm)"),
                version: some("12 (bookworm)"),
                version_id: some("12"),
                version_codename: some("bookworm"),
                ..OsRelease::default()
            }
        );
        let pairs = read_os_release_pairs(&root).unwrap();
        assert!(pairs.contains(&("HOME_URL".into(), "https://www.debian.org/".into())));
        let info = read_os_info(&root, rel.clone(), "x86_64");
        assert_eq!(
            info,
            OsInfo {
                release: rel,
                kernel_release: "6.1.0-18-amd64".into(),
                kernel_version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)".into(),
                machine: "x86_64".into(),
            }
        );
    }

    #[test]
    fn reads_variant_and_skips_empty_codename() {
        let root = fixtures().join("os-fedora");
        let rel = read_os_release(&root).unwrap();
        assert_eq!(
            rel,
            OsRelease {
                id: some("fedora"),
                name: some("Fedora Linux"),
                pretty_name: some("Fedora Linux 39 (Server Edition)"),
                version: some("39 (Server Edition)"),
                version_id: some("39"),
                version_codename: None,
                variant: some("Server Edition"),
                variant_id: some("server"),
                ..OsRelease::default()
            }
        );
        let info = read_os_info(&root, rel, "aarch64");
        assert_eq!(info.kernel_release, "6.5.6-300.fc39.x86_64");
        assert_eq!(
            info.kernel_version,
            "#1 SMP PREEMPT_DYNAMIC Fri Oct  6 19:57:21 UTC 2023"
        );
        assert_eq!(info.machine, "aarch64");
    }

    #[test]
    fn falls_back_to_usr_lib() {
        let rel = read_os_release(&fixtures().join("os-usrlib")).unwrap();
        assert_eq!(rel.name.as_deref(), Some("Alpine Linux"));
        assert_eq!(rel.id.as_deref(), Some("alpine"));
        assert_eq!(rel.version_id.as_deref(), Some("3.19.1"));
        assert_eq!(rel.version, None);
        assert_eq!(rel.version_codename, None);
    }

    #[test]
    fn follows_relative_symlink() {
        let rel = read_os_release(&fixtures().join("os-symlink")).unwrap();
        assert_eq!(rel.name.as_deref(), Some("Rocky Linux"));
        assert_eq!(rel.version_id.as_deref(), Some("9.3"));
        assert_eq!(rel.version.as_deref(), Some("9.3 (Blue Onyx)"));
        assert_eq!(rel.id_like.as_deref(), Some("rhel centos fedora"));
    }

    #[test]
    fn missing_files_give_empty_release_and_kernel() {
        let root = fixtures().join("os-missing");
        assert!(read_os_release_pairs(&root).unwrap().is_empty());
        let rel = read_os_release(&root).unwrap();
        assert_eq!(rel, OsRelease::default());
        let info = read_os_info(&root, rel, "");
        assert_eq!(info, OsInfo::default());
    }
}
