// SPDX-License-Identifier: Apache-2.0
//! Time zone facts: reads the `/etc/localtime` symlink and TZif data, `/etc/timezone` and
//! `/etc/sysconfig/clock`, for the zone name and its standard-time offset.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::{read_bytes, read_text_opt, under};

/// The guest's time zone: its name and standard-time offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeZone {
    /// The zone name, e.g. `Europe/Prague` (may be empty when unknown).
    pub zone: String,
    /// Minutes east of UTC of standard time, ignoring DST (Python's `-time.timezone / 60`).
    pub offset: i32,
}

/// The zone name from an `/etc/localtime` symlink target: the path after a `zoneinfo`
/// component (without a leading `posix/` or `right/`), else the last two components.
/// `None` if no name is left or a component is not UTF-8.
pub fn zone_from_link_target(target: &Path) -> Option<String> {
    let parts = target
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_str()),
            _ => None,
        })
        .collect::<Option<Vec<&str>>>()?;
    let zone = match parts.iter().rposition(|&p| p == "zoneinfo") {
        Some(i) => {
            let rest = parts.get(i + 1..).unwrap_or_default();
            match rest.split_first() {
                Some((&("posix" | "right"), tail)) => tail,
                _ => rest,
            }
        }
        None => parts
            .get(parts.len().saturating_sub(2)..)
            .unwrap_or_default(),
    };
    (!zone.is_empty()).then(|| zone.join("/"))
}

/// Length of a TZif header (RFC 8536 section 3.1).
const HEADER_LEN: usize = 44;
/// Length of one `ttinfo` record: `i32` utoff, `u8` isdst, `u8` desigidx.
const TTINFO_LEN: usize = 6;

/// The counts of a TZif header.
struct Header {
    version: u8,
    isutcnt: usize,
    isstdcnt: usize,
    leapcnt: usize,
    timecnt: usize,
    typecnt: usize,
    charcnt: usize,
}

impl Header {
    /// Parses the header at the start of `data`.
    fn parse(data: &[u8]) -> Option<Header> {
        let head = data.get(..HEADER_LEN)?;
        if head.get(..4)? != b"TZif" {
            return None;
        }
        let count = |i: usize| -> Option<usize> {
            let bytes: [u8; 4] = head.get(20 + 4 * i..24 + 4 * i)?.try_into().ok()?;
            usize::try_from(u32::from_be_bytes(bytes)).ok()
        };
        Some(Header {
            version: *head.get(4)?,
            isutcnt: count(0)?,
            isstdcnt: count(1)?,
            leapcnt: count(2)?,
            timecnt: count(3)?,
            typecnt: count(4)?,
            charcnt: count(5)?,
        })
    }

    /// Length of the data block after this header, with `time_len`-byte times (4 or 8).
    fn block_len(&self, time_len: usize) -> Option<usize> {
        let times = self.timecnt.checked_mul(time_len.checked_add(1)?)?;
        let types = self.typecnt.checked_mul(TTINFO_LEN)?;
        let leaps = self.leapcnt.checked_mul(time_len.checked_add(4)?)?;
        times
            .checked_add(types)?
            .checked_add(self.charcnt)?
            .checked_add(leaps)?
            .checked_add(self.isstdcnt)?
            .checked_add(self.isutcnt)
    }

    /// The standard-time offset in minutes from a data `block` with `time_len`-byte times:
    /// the last transition to a non-DST type, else the first non-DST type, else the first.
    fn std_offset(&self, block: &[u8], time_len: usize) -> Option<i32> {
        let types_at = self.timecnt.checked_mul(time_len)?;
        let ttinfo_at = types_at.checked_add(self.timecnt)?;
        let types = block.get(types_at..ttinfo_at)?;
        let ttinfos =
            block.get(ttinfo_at..ttinfo_at.checked_add(self.typecnt.checked_mul(TTINFO_LEN)?)?)?;
        let ttinfo = |i: usize| -> Option<(i32, bool)> {
            let rec = ttinfos.get(i.checked_mul(TTINFO_LEN)?..)?;
            let utoff: [u8; 4] = rec.get(..4)?.try_into().ok()?;
            Some((i32::from_be_bytes(utoff), *rec.get(4)? != 0))
        };
        let all: Vec<(i32, bool)> = (0..self.typecnt).map(ttinfo).collect::<Option<_>>()?;
        let last_std = types
            .iter()
            .rev()
            .map(|&t| all.get(usize::from(t)).copied())
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .find(|&(_, dst)| !dst);
        let (utoff, _) = last_std
            .or_else(|| all.iter().copied().find(|&(_, dst)| !dst))
            .or_else(|| all.first().copied())?;
        Some(utoff / 60)
    }
}

/// The standard-time offset, in minutes east of UTC, of TZif data (RFC 8536).
///
/// For version 2 and later the POSIX TZ string in the footer is used when it parses;
/// otherwise the offset of the last transition into standard time, else of the first
/// standard-time type, else of the first type. Malformed or truncated data gives `None`.
pub fn parse_tzif_std_offset(data: &[u8]) -> Option<i32> {
    let v1 = Header::parse(data)?;
    let v1_end = HEADER_LEN.checked_add(v1.block_len(4)?)?;
    let v1_block = data.get(HEADER_LEN..v1_end)?;
    if v1.version == 0 {
        return v1.std_offset(v1_block, 4);
    }
    let rest = data.get(v1_end..)?;
    let v2 = Header::parse(rest)?;
    let v2_end = HEADER_LEN.checked_add(v2.block_len(8)?)?;
    let v2_block = rest.get(HEADER_LEN..v2_end)?;
    rest.get(v2_end..)
        .and_then(footer_tz)
        .and_then(parse_posix_tz_std_offset)
        .or_else(|| v2.std_offset(v2_block, 8))
}

/// The TZ string of a TZif footer (`\n<TZ>\n`).
fn footer_tz(footer: &[u8]) -> Option<&str> {
    let body = footer.strip_prefix(b"\n")?;
    let end = body.iter().position(|&b| b == b'\n')?;
    std::str::from_utf8(body.get(..end)?).ok()
}

/// The standard-time offset, in minutes east of UTC, of a POSIX TZ string such as
/// `CET-1CEST,M3.5.0,M10.5.0/3` (60), `EST5EDT` (-300) or `<+0530>-5:30` (330). The name
/// is 3+ letters or `<...>`-quoted; the offset is `[+-]hh[:mm[:ss]]`, positive west of UTC.
pub fn parse_posix_tz_std_offset(tz: &str) -> Option<i32> {
    let rest = if let Some(quoted) = tz.strip_prefix('<') {
        let (name, rest) = quoted.split_once('>')?;
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
        if !name_ok {
            return None;
        }
        rest
    } else {
        let end = tz
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(tz.len());
        if end < 3 {
            return None;
        }
        tz.get(end..)?
    };
    let (west_secs, rest) = parse_posix_offset(rest)?;
    let rest_ok = rest.is_empty()
        || rest.starts_with(|c: char| c.is_ascii_alphabetic() || c == '<' || c == ',');
    rest_ok.then(|| -west_secs / 60)
}

/// Parses `[+-]hh[:mm[:ss]]` at the start of `s` into seconds and the remaining text.
fn parse_posix_offset(s: &str) -> Option<(i32, &str)> {
    let (sign, s) = match s.as_bytes().first() {
        Some(b'-') => (-1, s.get(1..)?),
        Some(b'+') => (1, s.get(1..)?),
        _ => (1, s),
    };
    let (hours, mut s) = take_number(s, 3, 167)?;
    let mut secs = hours * 3600;
    for unit in [60, 1] {
        match s.strip_prefix(':') {
            Some(after) => {
                let (n, after) = take_number(after, 2, 59)?;
                secs += n * unit;
                s = after;
            }
            None => break,
        }
    }
    Some((sign * secs, s))
}

/// Parses 1 to `max_digits` leading ASCII digits of `s`, at most `max`.
fn take_number(s: &str, max_digits: usize, max: i32) -> Option<(i32, &str)> {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 || len > max_digits {
        return None;
    }
    let (digits, rest) = s.split_at_checked(len)?;
    let n: i32 = digits.parse().ok()?;
    (n <= max).then_some((n, rest))
}

/// How many symlinks [`resolve_under`] follows before giving up.
const MAX_LINKS: usize = 16;

/// Follows the symlink chain ending at `path` (under `root`), resolving absolute targets
/// under `root` and relative ones against the link's directory. Returns the final path
/// relative to `root`, or `None` on a loop or a non-UTF-8 path.
fn resolve_under(root: &Path, mut path: PathBuf) -> Option<String> {
    for _ in 0..MAX_LINKS {
        match std::fs::read_link(&path) {
            Ok(target) => {
                path = match target.strip_prefix("/") {
                    Ok(rel) => root.join(rel),
                    Err(_) => path.parent()?.join(target),
                };
            }
            Err(_) => return path.strip_prefix(root).ok()?.to_str().map(str::to_owned),
        }
    }
    None
}

/// The standard-time offset of the TZif file at `rel` under `root` (symlinks followed under
/// `root`), if it is readable and parses.
fn tzif_offset(root: &Path, rel: &str) -> Option<i32> {
    let rel = resolve_under(root, under(root, rel))?;
    match read_bytes(root, &rel) {
        Ok(data) => parse_tzif_std_offset(&data),
        Err(e) => {
            log::debug!("{e}");
            None
        }
    }
}

/// Reads a text file that may be missing; read errors are logged and count as missing.
fn read_optional(root: &Path, rel: &str) -> Option<String> {
    read_text_opt(root, rel).unwrap_or_else(|e| {
        log::debug!("{e}");
        None
    })
}

/// The first non-empty line of `etc/timezone` (Debian).
fn zone_from_timezone_file(root: &Path) -> Option<String> {
    let text = read_optional(root, "etc/timezone")?;
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(str::to_owned)
}

/// `ZONE=` in `etc/sysconfig/clock` (older Red Hat), quotes stripped.
fn zone_from_sysconfig(root: &Path) -> Option<String> {
    let text = read_optional(root, "etc/sysconfig/clock")?;
    super::osinfo::parse_os_release(&text)
        .into_iter()
        .rev()
        .find(|(key, value)| key == "ZONE" && !value.is_empty())
        .map(|(_, value)| value)
}

/// `usr/share/zoneinfo/<zone>`, unless `zone` is empty or could leave that directory.
fn zoneinfo_rel(zone: &str) -> Option<String> {
    let safe = !zone.is_empty() && !zone.starts_with('/') && !zone.split('/').any(|p| p == "..");
    safe.then(|| format!("usr/share/zoneinfo/{zone}"))
}

/// Reads the guest's time zone under `root`; never fails.
///
/// The zone is, in order: the name in the `etc/localtime` symlink target, the first line of
/// `etc/timezone`, `ZONE=` in `etc/sysconfig/clock`, `UTC` if `etc/localtime` does not exist,
/// else empty. The offset comes from the TZif data of `etc/localtime` (symlinks followed
/// under `root`), else of `usr/share/zoneinfo/<zone>`, else 0.
pub fn read_timezone(root: &Path) -> TimeZone {
    let localtime = under(root, "etc/localtime");
    let link = std::fs::read_link(&localtime).ok();
    let zone = link
        .as_deref()
        .and_then(zone_from_link_target)
        .or_else(|| zone_from_timezone_file(root))
        .or_else(|| zone_from_sysconfig(root))
        .unwrap_or_else(|| match std::fs::symlink_metadata(&localtime) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => "UTC".to_owned(),
            _ => String::new(),
        });
    let offset = tzif_offset(root, "etc/localtime")
        .or_else(|| tzif_offset(root, &zoneinfo_rel(&zone)?))
        .unwrap_or(0);
    TimeZone { zone, offset }
}

#[cfg(test)]
mod tests;
