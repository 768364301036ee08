// SPDX-License-Identifier: Apache-2.0
//! Time zone facts: reads the `/etc/localtime` symlink and TZif data, `/etc/timezone` and
//! `/etc/sysconfig/clock`, for the zone name and its standard-time offset; and the local
//! time type in effect at a given instant (offset including DST, and its abbreviation, such
//! as `CEST`), from the TZif transitions and the POSIX TZ rule in the file's footer.

use std::io;
use std::path::{Component, Path, PathBuf};

use super::calendar::{civil_from_days, days_from_civil};
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

/// The local time type in effect at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalType {
    /// Seconds east of UTC, daylight saving time included.
    pub offset: i32,
    /// The abbreviation, e.g. `CET`, `CEST`, `IST` or `+0530`; may be empty.
    pub abbrev: String,
    /// Daylight saving time is in effect.
    pub dst: bool,
}

/// The local time type of TZif `data` at `now` (seconds since the epoch): the type of the
/// last transition at or before `now`; after the last transition (or with none), the
/// footer's POSIX TZ rule when there is one; before the first transition, type 0 (RFC 8536
/// section 3.2). Malformed data gives `None`.
pub fn parse_tzif_at(data: &[u8], now: i64) -> Option<LocalType> {
    let v1 = Header::parse(data)?;
    let v1_end = HEADER_LEN.checked_add(v1.block_len(4)?)?;
    let (hdr, block, time_len, footer) = if v1.version == 0 {
        (v1, data.get(HEADER_LEN..v1_end)?, 4, None)
    } else {
        let rest = data.get(v1_end..)?;
        let v2 = Header::parse(rest)?;
        let v2_end = HEADER_LEN.checked_add(v2.block_len(8)?)?;
        let footer = rest.get(v2_end..).and_then(footer_tz);
        (v2, rest.get(HEADER_LEN..v2_end)?, 8, footer)
    };
    let times_len = hdr.timecnt.checked_mul(time_len)?;
    let times: Vec<i64> = block
        .get(..times_len)?
        .chunks_exact(time_len)
        .map(|c| match c.len() {
            4 => c.try_into().ok().map(|b| i64::from(i32::from_be_bytes(b))),
            _ => c.try_into().ok().map(i64::from_be_bytes),
        })
        .collect::<Option<_>>()?;
    let idx = block.get(times_len..times_len.checked_add(hdr.timecnt)?)?;
    let ttinfo_at = times_len.checked_add(hdr.timecnt)?;
    let chars_at = ttinfo_at.checked_add(hdr.typecnt.checked_mul(TTINFO_LEN)?)?;
    let chars = block.get(chars_at..chars_at.checked_add(hdr.charcnt)?)?;
    let local_type = |t: usize| -> Option<LocalType> {
        let at = ttinfo_at.checked_add(t.checked_mul(TTINFO_LEN)?)?;
        let rec = block.get(at..at.checked_add(TTINFO_LEN)?)?;
        let utoff = i32::from_be_bytes(rec.get(..4)?.try_into().ok()?);
        let desig = chars.get(usize::from(*rec.get(5)?)..).unwrap_or_default();
        let end = desig.iter().position(|&b| b == 0).unwrap_or(desig.len());
        Some(LocalType {
            offset: utoff,
            abbrev: String::from_utf8_lossy(desig.get(..end)?).into_owned(),
            dst: *rec.get(4)? != 0,
        })
    };
    let after_last = times.last().is_none_or(|&last| now >= last);
    if after_last {
        if let Some(rule) = footer.and_then(|tz| posix_tz_at(tz, now)) {
            return Some(rule);
        }
    }
    match times.partition_point(|&t| t <= now) {
        0 => local_type(0),
        n => local_type(usize::from(*idx.get(n - 1)?)),
    }
}

/// One end of a DST period in a POSIX TZ rule.
#[derive(Debug, Clone, Copy)]
enum RuleDate {
    /// `Jn`: day 1..=365, February 29 never counted.
    Julian1(i64),
    /// `n`: day 0..=365, February 29 counted.
    Julian0(i64),
    /// `Mm.w.d`: day `d` (0 = Sunday) of week `w` (5 = last) of month `m`.
    Month(i64, i64, i64),
}

/// A name of a POSIX TZ string at the start of `s` (3+ letters, or `<...>`-quoted) and the
/// text after it.
fn take_tz_name(s: &str) -> Option<(&str, &str)> {
    if let Some(quoted) = s.strip_prefix('<') {
        let (name, rest) = quoted.split_once('>')?;
        let ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-');
        return ok.then_some((name, rest));
    }
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    (end >= 3).then(|| s.split_at(end))
}

/// A rule date and optional `/time` (default 02:00) at the start of `s`.
fn take_rule(s: &str) -> Option<((RuleDate, i32), &str)> {
    let (date, rest) = if let Some(r) = s.strip_prefix('J') {
        let (n, r) = take_number(r, 3, 365)?;
        (n >= 1).then_some((RuleDate::Julian1(i64::from(n)), r))?
    } else if let Some(r) = s.strip_prefix('M') {
        let (m, r) = take_number(r, 2, 12)?;
        let (w, r) = take_number(r.strip_prefix('.')?, 1, 5)?;
        let (d, r) = take_number(r.strip_prefix('.')?, 1, 6)?;
        (m >= 1 && w >= 1).then_some((RuleDate::Month(m.into(), w.into(), d.into()), r))?
    } else {
        let (n, r) = take_number(s, 3, 365)?;
        (RuleDate::Julian0(i64::from(n)), r)
    };
    match rest.strip_prefix('/') {
        Some(r) => {
            let (t, r) = parse_posix_offset(r)?;
            Some(((date, t), r))
        }
        None => Some(((date, 7200), rest)),
    }
}

/// The civil year of a day count since 1970-01-01.
fn year_of_days(z: i64) -> i64 {
    civil_from_days(z).0
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Days since the epoch of `date` in `year`.
fn rule_day(year: i64, date: RuleDate) -> i64 {
    let jan1 = days_from_civil(year, 1, 1);
    match date {
        RuleDate::Julian0(n) => jan1 + n,
        RuleDate::Julian1(n) => jan1 + n - 1 + i64::from(is_leap(year) && n >= 60),
        RuleDate::Month(m, w, d) => {
            let first = days_from_civil(year, m, 1);
            // 1970-01-01 was a Thursday (4).
            let wday_first = (first + 4).rem_euclid(7);
            let mut day = first + (d - wday_first).rem_euclid(7) + (w - 1) * 7;
            let next_month = if m == 12 {
                days_from_civil(year + 1, 1, 1)
            } else {
                days_from_civil(year, m + 1, 1)
            };
            while day >= next_month {
                day -= 7;
            }
            day
        }
    }
}

/// The local time type a POSIX TZ string (`CET-1CEST,M3.5.0,M10.5.0/3`, `UTC0`,
/// `<+0530>-5:30`) gives at `now`. A DST name without rules uses the US rules
/// (`M3.2.0,M11.1.0`), as glibc does. Malformed strings give `None`.
pub fn posix_tz_at(tz: &str, now: i64) -> Option<LocalType> {
    let (std_name, rest) = take_tz_name(tz)?;
    let (std_west, rest) = parse_posix_offset(rest)?;
    let standard = LocalType {
        offset: -std_west,
        abbrev: std_name.to_owned(),
        dst: false,
    };
    if rest.is_empty() {
        return Some(standard);
    }
    let (dst_name, rest) = take_tz_name(rest)?;
    let (dst_west, rest) = if rest.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
    {
        parse_posix_offset(rest)?
    } else {
        (std_west - 3600, rest)
    };
    let ((start, start_t), (end, end_t)) = if rest.is_empty() {
        (
            (RuleDate::Month(3, 2, 0), 7200),
            (RuleDate::Month(11, 1, 0), 7200),
        )
    } else {
        let (start, r) = take_rule(rest.strip_prefix(',')?)?;
        let (end, r) = take_rule(r.strip_prefix(',')?)?;
        if !r.is_empty() {
            return None;
        }
        (start, end)
    };
    let year = year_of_days((now - i64::from(std_west)).div_euclid(86_400));
    let start_utc = rule_day(year, start) * 86_400 + i64::from(start_t) + i64::from(std_west);
    let end_utc = rule_day(year, end) * 86_400 + i64::from(end_t) + i64::from(dst_west);
    let in_dst = if start_utc < end_utc {
        start_utc <= now && now < end_utc
    } else {
        !(end_utc <= now && now < start_utc)
    };
    Some(if in_dst {
        LocalType {
            offset: -dst_west,
            abbrev: dst_name.to_owned(),
            dst: true,
        }
    } else {
        standard
    })
}

/// The local time type at `now` of the guest's zone under `root`: from `etc/localtime`
/// (symlinks followed under `root`), else from `usr/share/zoneinfo/<zone>` for the zone
/// `read_timezone` finds; `UTC` when `etc/localtime` does not exist and no zone is named
/// (what the C library does). `None` when no TZif data can be read.
pub fn read_local_type(root: &Path, now: i64) -> Option<LocalType> {
    let at = |rel: &str| -> Option<LocalType> {
        let rel = resolve_under(root, under(root, rel))?;
        match read_bytes(root, &rel) {
            Ok(data) => parse_tzif_at(&data, now),
            Err(e) => {
                log::debug!("{e}");
                None
            }
        }
    };
    at("etc/localtime").or_else(|| {
        let tz = read_timezone(root);
        at(&zoneinfo_rel(&tz.zone)?).or_else(|| {
            (tz.zone == "UTC").then(|| LocalType {
                offset: 0,
                abbrev: "UTC".into(),
                dst: false,
            })
        })
    })
}

#[cfg(test)]
mod tests;
