// SPDX-License-Identifier: Apache-2.0
//! Operating system facts: reads `/etc/os-release` (or `/usr/lib/os-release`) for the oVirt
//! `os-info` message.

use std::path::Path;

use super::{Error, read_text_opt};

/// The oVirt `os-info` fields (the `type` field is always `linux` and is added by the
/// message builder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsInfo {
    pub version: String,
    pub distribution: String,
    pub codename: String,
    pub arch: String,
    pub kernel: String,
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

/// The value of the last non-empty assignment to `key`.
fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .rev()
        .find(|(k, v)| k == key && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

/// Maps `uname -m` to the oVirt `arch` value: `i386`..`i686` become `x86`, others are kept.
pub fn map_arch(machine: &str) -> String {
    match machine {
        "i386" | "i486" | "i586" | "i686" => "x86".to_owned(),
        other => other.to_owned(),
    }
}

/// Builds the `os-info` fields from parsed os-release pairs, the machine name (`uname -m`)
/// and the kernel release (`uname -r`).
///
/// `distribution` is `NAME` (else `ID`, else `Linux`); `version` is `VERSION_ID` (else
/// empty); `codename` is `VERSION_CODENAME`, else the text in parentheses in `VERSION`
/// (`9 (stretch)` gives `stretch`), else empty.
pub fn os_info(os_release: &[(String, String)], machine: &str, kernel: &str) -> OsInfo {
    let distribution = lookup(os_release, "NAME")
        .or_else(|| lookup(os_release, "ID"))
        .unwrap_or("Linux");
    let codename = lookup(os_release, "VERSION_CODENAME")
        .or_else(|| lookup(os_release, "VERSION").and_then(parenthesized))
        .unwrap_or("");
    OsInfo {
        version: lookup(os_release, "VERSION_ID").unwrap_or("").to_owned(),
        distribution: distribution.to_owned(),
        codename: codename.to_owned(),
        arch: map_arch(machine),
        kernel: kernel.to_owned(),
    }
}

/// The trimmed text between the first `(` and the next `)`, if non-empty.
fn parenthesized(text: &str) -> Option<&str> {
    let (_, after) = text.split_once('(')?;
    let (inner, _) = after.split_once(')')?;
    Some(inner.trim()).filter(|s| !s.is_empty())
}

/// Reads and parses `etc/os-release` under `root`, falling back to `usr/lib/os-release` when
/// the former is missing. Both missing gives an empty list.
pub fn read_os_release(root: &Path) -> Result<Vec<(String, String)>, Error> {
    for rel in ["etc/os-release", "usr/lib/os-release"] {
        if let Some(text) = read_text_opt(root, rel)? {
            return Ok(parse_os_release(&text));
        }
    }
    Ok(Vec::new())
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

    #[test]
    fn os_info_from_full_release() {
        let rel = pairs(&[
            ("NAME", "Debian GNU/Linux"),
            ("VERSION_ID", "12"),
            ("VERSION", "12 (bookworm)"),
            ("VERSION_CODENAME", "bookworm"),
            ("ID", "debian"),
        ]);
        assert_eq!(
            os_info(&rel, "x86_64", "6.1.0-18-amd64"),
            OsInfo {
                version: "12".into(),
                distribution: "Debian GNU/Linux".into(),
                codename: "bookworm".into(),
                arch: "x86_64".into(),
                kernel: "6.1.0-18-amd64".into(),
            }
        );
    }

    #[test]
    fn os_info_fallbacks() {
        let rel = pairs(&[("ID", "debian"), ("VERSION", "9 (stretch)")]);
        let info = os_info(&rel, "i686", "4.9.0");
        assert_eq!(info.distribution, "debian");
        assert_eq!(info.version, "");
        assert_eq!(info.codename, "stretch");
        assert_eq!(info.arch, "x86");

        let info = os_info(&pairs(&[("VERSION", "3.19.1")]), "aarch64", "6.6");
        assert_eq!(info.distribution, "Linux");
        assert_eq!(info.codename, "");
        assert_eq!(info.arch, "aarch64");

        // The last assignment wins, and an empty NAME falls back to ID.
        let rel = pairs(&[
            ("VERSION_ID", "1"),
            ("VERSION_ID", "2"),
            ("NAME", ""),
            ("ID", "x"),
        ]);
        let info = os_info(&rel, "x86_64", "k");
        assert_eq!(
            (info.version.as_str(), info.distribution.as_str()),
            ("2", "x")
        );
    }

    #[test]
    fn maps_arch() {
        for m in ["i386", "i486", "i586", "i686"] {
            assert_eq!(map_arch(m), "x86");
        }
        assert_eq!(map_arch("x86_64"), "x86_64");
        assert_eq!(map_arch("ppc64le"), "ppc64le");
    }

    #[test]
    fn reads_etc_os_release() {
        let rel = read_os_release(&fixtures().join("os-debian")).unwrap();
        let info = os_info(&rel, "x86_64", "6.1.0");
        assert_eq!(info.distribution, "Debian GNU/Linux");
        assert_eq!(info.version, "12");
        assert_eq!(info.codename, "bookworm");
        assert!(rel.contains(&(
            "PRETTY_NAME".into(),
            "Debian GNU/Linux 12 (bookworm)".into()
        )));
        assert!(rel.contains(&("HOME_URL".into(), "https://www.debian.org/".into())));
    }

    #[test]
    fn falls_back_to_usr_lib() {
        let rel = read_os_release(&fixtures().join("os-usrlib")).unwrap();
        let info = os_info(&rel, "x86_64", "6.6.1");
        assert_eq!(info.distribution, "Alpine Linux");
        assert_eq!(info.version, "3.19.1");
        assert_eq!(info.codename, "");
    }

    #[test]
    fn follows_relative_symlink() {
        let rel = read_os_release(&fixtures().join("os-symlink")).unwrap();
        let info = os_info(&rel, "x86_64", "5.14");
        assert_eq!(info.distribution, "Rocky Linux");
        assert_eq!(info.version, "9.3");
        assert_eq!(info.codename, "Blue Onyx");
    }

    #[test]
    fn missing_files_give_empty_list() {
        assert!(
            read_os_release(&fixtures().join("os-missing"))
                .unwrap()
                .is_empty()
        );
    }
}
