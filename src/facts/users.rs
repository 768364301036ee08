// SPDX-License-Identifier: Apache-2.0
//! Login sessions and logged-in users, from the binary utmp file (musl has no utmp functions,
//! so none are called) or from systemd-logind's session files.
//!
//! **Which source.** utmp is the first: its `USER_PROCESS` records whose process still lives.
//! When there is no utmp file, or it has no such record, logind's user sessions are used
//! (systemd 257 and later no longer write utmp; musl-based images have none, since musl's
//! utmp functions write nothing). A utmp file that exists but cannot be read is an error. Both
//! protocols use this one rule (`current_sessions`).
//!
//! **utmp layout.** The record layout is that of the C library that wrote the file, which
//! differs by architecture (glibc `bits/utmp.h`, `bits/struct_utmpx.h`): the fields up to
//! `ut_exit` are the same everywhere (`ut_type` i16 at 0, `ut_pid` i32 at 4, `ut_line[32]` at 8,
//! `ut_id[4]` at 40, `ut_user[32]` at 44, `ut_host[256]` at 76, `ut_exit` at 332), then:
//! - x86_64 (and the 32-bit ports; `__WORDSIZE_TIME64_COMPAT32`): `ut_session` i32 at 336,
//!   `ut_tv` two 32-bit fields at 340 and 344 (`tv_sec` unsigned since glibc 2.40, signed
//!   before: read as unsigned, good until 2106), 384 bytes in all;
//! - aarch64: `ut_session` a `long` at 336, `ut_tv` a `struct timeval` of two i64 at 344 and
//!   352, 400 bytes in all (musl's `struct utmpx` has this layout on every 64-bit port).
//!
//! `NATIVE` is the layout of the architecture guestd is built for; the parser takes the layout
//! as a parameter so both are tested on any host. Big-endian ports are not supported.
//!
//! **logind.** `/run/systemd/sessions/<id>`: plain `KEY=value` lines written by logind
//! (`session_save`): `USER`, `TTY`, `REMOTE_HOST`, `LEADER` (pid), `REALTIME` (microseconds
//! since the epoch), `STATE` and `CLASS`. They are read as text; no D-Bus is involved. logind
//! removes a session's file when the session ends, so no liveness check is made.

use std::path::Path;
use std::time::Duration;

use super::{Error, read_bytes};

/// `ut_type` of a normal user login.
pub const USER_PROCESS: i16 = 7;

const TYPE: usize = 0;
const PID: usize = 4;
const LINE: (usize, usize) = (8, 32);
const ID: (usize, usize) = (40, 4);
const USER: (usize, usize) = (44, 32);
const HOST: (usize, usize) = (76, 256);

/// Where the fields of a utmp record that differ by architecture are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Size of one record.
    pub size: usize,
    /// Offset of `ut_tv`.
    tv: usize,
    /// Whether `tv_sec` and `tv_usec` are 32-bit (else 64-bit each).
    tv32: bool,
}

/// glibc on x86_64: 384-byte records, a 32-bit `ut_tv` at 340.
pub const GLIBC_X86_64: Layout = Layout {
    size: 384,
    tv: 340,
    tv32: true,
};

/// glibc on aarch64: 400-byte records, a 64-bit `struct timeval` at 344.
pub const GLIBC_AARCH64: Layout = Layout {
    size: 400,
    tv: 344,
    tv32: false,
};

/// The layout of the guests this build runs in.
#[cfg(target_arch = "aarch64")]
pub const NATIVE: Layout = GLIBC_AARCH64;
/// The layout of the guests this build runs in.
#[cfg(not(target_arch = "aarch64"))]
pub const NATIVE: Layout = GLIBC_X86_64;

/// One login session, from a utmp record or a logind session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Login name.
    pub user: String,
    /// Terminal, without `/dev/` (e.g. `pts/0`, `tty1`); may be empty.
    pub line: String,
    /// Remote host for remote logins (e.g. an address), empty for local ones.
    pub host: String,
    /// Pid of the login process (logind: the session leader); 0 when unknown.
    pub pid: i32,
    /// Login time since the Unix epoch, to the microsecond (negative values count as 0).
    pub login_time: Duration,
}

impl Layout {
    /// The `USER_PROCESS` records with a non-empty user name in utmp `data`. A trailing
    /// partial record is ignored.
    pub fn parse(self, data: &[u8]) -> Vec<Session> {
        data.chunks_exact(self.size)
            .filter_map(|rec| self.parse_record(rec))
            .collect()
    }

    fn parse_record(self, rec: &[u8]) -> Option<Session> {
        let ut_type = i16::from_le_bytes(rec.get(TYPE..TYPE + 2)?.try_into().ok()?);
        if ut_type != USER_PROCESS {
            return None;
        }
        let user = c_field(rec, USER)?;
        if user.is_empty() {
            return None;
        }
        let (sec, usec) = if self.tv32 {
            let sec = u32::from_le_bytes(le(rec, self.tv)?);
            let usec = i32::from_le_bytes(le(rec, self.tv + 4)?);
            (i64::from(sec), i64::from(usec))
        } else {
            let sec = i64::from_le_bytes(le(rec, self.tv)?);
            (sec, i64::from_le_bytes(le(rec, self.tv + 8)?))
        };
        Some(Session {
            user,
            line: c_field(rec, LINE)?,
            host: c_field(rec, HOST)?,
            pid: i32::from_le_bytes(le(rec, PID)?),
            login_time: login_time(sec, usec),
        })
    }

    /// One record with the given type, pid, line, user and host, every other field zero.
    /// `ut_id` is the last four bytes of `line`, as login(1) does. Strings longer than their
    /// field are truncated.
    pub fn encode(self, ut_type: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
        let mut rec = vec![0u8; self.size];
        put(&mut rec, TYPE, &ut_type.to_le_bytes());
        put(&mut rec, PID, &pid.to_le_bytes());
        put_field(&mut rec, LINE, line.as_bytes());
        let id = line.as_bytes();
        put_field(
            &mut rec,
            ID,
            id.get(id.len().saturating_sub(ID.1)..).unwrap_or_default(),
        );
        put_field(&mut rec, USER, user.as_bytes());
        put_field(&mut rec, HOST, host.as_bytes());
        rec
    }

    /// Sets the login time (`ut_tv`) of a record made by `encode` (truncated to 32 bits in
    /// a 32-bit layout).
    pub fn set_login_time(self, rec: &mut [u8], tv_sec: i64, tv_usec: i64) {
        let width = if self.tv32 { 4 } else { 8 };
        // Little-endian: the low bytes come first.
        let (sec, usec) = (tv_sec.to_le_bytes(), tv_usec.to_le_bytes());
        put(rec, self.tv, sec.get(..width).unwrap_or_default());
        put(rec, self.tv + width, usec.get(..width).unwrap_or_default());
    }
}

/// The `N` bytes at `offset`, if the record has them.
fn le<const N: usize>(rec: &[u8], offset: usize) -> Option<[u8; N]> {
    rec.get(offset..offset.checked_add(N)?)?.try_into().ok()
}

/// `NATIVE.parse(data)`.
pub fn parse_utmp(data: &[u8]) -> Vec<Session> {
    NATIVE.parse(data)
}

/// `NATIVE.encode(..)`: a record as the guest's C library writes it.
pub fn encode_utmp_record(ut_type: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
    NATIVE.encode(ut_type, pid, line, user, host)
}

/// `NATIVE.set_login_time(..)`.
pub fn set_utmp_login_time(rec: &mut [u8], tv_sec: i64, tv_usec: i64) {
    NATIVE.set_login_time(rec, tv_sec, tv_usec);
}

/// A `struct timeval` as a time since the epoch; negative fields count as 0, and
/// `tv_usec` beyond a second carries into the seconds.
pub fn login_time(tv_sec: i64, tv_usec: i64) -> Duration {
    let secs = Duration::from_secs(u64::try_from(tv_sec).unwrap_or(0));
    secs.saturating_add(Duration::from_micros(u64::try_from(tv_usec).unwrap_or(0)))
}

/// A NUL-padded string field (not NUL-terminated when it fills the field), lossily decoded.
fn c_field(rec: &[u8], (offset, len): (usize, usize)) -> Option<String> {
    let bytes = rec.get(offset..offset + len)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
    Some(String::from_utf8_lossy(bytes.get(..end)?).into_owned())
}

/// The utmp files tried, in order.
const UTMP_PATHS: [&str; 2] = ["run/utmp", "var/run/utmp"];

/// The sessions in `run/utmp`, or else `var/run/utmp`, read with `layout`; `None` when
/// neither exists.
pub fn read_utmp(root: &Path, layout: Layout) -> Result<Option<Vec<Session>>, Error> {
    for rel in UTMP_PATHS {
        match read_bytes(root, rel) {
            Ok(data) => return Ok(Some(layout.parse(&data))),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The sessions in the utmp file (`NATIVE` layout); no utmp file gives an empty list.
pub fn read_sessions(root: &Path) -> Result<Vec<Session>, Error> {
    Ok(read_utmp(root, NATIVE)?.unwrap_or_default())
}

/// The sessions whose process still exists under `root` (`proc/PID`), as `users(1)` checks:
/// a crash or power loss can leave stale USER_PROCESS records behind.
pub fn live_sessions(root: &Path, sessions: Vec<Session>) -> Vec<Session> {
    sessions
        .into_iter()
        .filter(|s| s.pid > 0 && crate::facts::under(root, &format!("proc/{}", s.pid)).exists())
        .collect()
}

/// Where `current_sessions` found the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// utmp's live `USER_PROCESS` records.
    Utmp,
    /// logind's session files: the utmp file has no live user record.
    Logind,
    /// logind's session files: there is no utmp file (normal on musl-based images and with
    /// systemd 257 and later).
    LogindNoUtmp,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Utmp => "read from utmp",
            Source::Logind => "utmp has no live user session; reading logind's session files",
            Source::LogindNoUtmp => {
                "no utmp file (/run/utmp, /var/run/utmp); reading logind's session files"
            }
        })
    }
}

/// The logged-in sessions by the rule in the module documentation, and their source.
pub fn current_sessions(root: &Path) -> Result<(Vec<Session>, Source), Error> {
    let source = match read_utmp(root, NATIVE)? {
        Some(s) => {
            let live = live_sessions(root, s);
            if !live.is_empty() {
                return Ok((live, Source::Utmp));
            }
            Source::Logind
        }
        None => Source::LogindNoUtmp,
    };
    Ok((read_logind_sessions(root)?, source))
}

/// The user names of `sessions`, sorted and deduplicated (what `users` prints, minus repeats).
pub fn logged_in_users(sessions: &[Session]) -> Vec<String> {
    let mut users: Vec<String> = sessions.iter().map(|s| s.user.clone()).collect();
    users.sort();
    users.dedup();
    users
}

fn put_field(rec: &mut [u8], (offset, len): (usize, usize), value: &[u8]) {
    put(rec, offset, value.get(..len).unwrap_or(value));
}

fn put(rec: &mut [u8], offset: usize, value: &[u8]) {
    if let Some(dst) = rec.get_mut(offset..offset + value.len()) {
        dst.copy_from_slice(value);
    }
}

/// Where logind keeps one file per session, relative to the root.
const LOGIND_DIR: &str = "run/systemd/sessions";

/// Most logind session files read.
pub const MAX_LOGIND_SESSIONS: usize = 4096;

/// Largest logind session file read; real ones are well under 1 KiB.
const MAX_LOGIND_FILE: u64 = 64 * 1024;

/// A logind session file's text as a user session: `None` when it names no user, is not a
/// user session (`CLASS` other than `user`, `user-early`, `user-incomplete` and the like,
/// e.g. `greeter` or `manager`), or is `closing`. `TTY` (less a `/dev/` prefix) is the
/// terminal, `REMOTE_HOST` the host (as logind wrote it, C escapes left as they are), `LEADER`
/// the pid and `REALTIME` the login time; each may be missing.
pub fn parse_logind_session(text: &str) -> Option<Session> {
    let mut s = Session {
        user: String::new(),
        line: String::new(),
        host: String::new(),
        pid: 0,
        login_time: Duration::ZERO,
    };
    let mut live = true;
    let mut is_user = true;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "USER" => s.user = value.to_owned(),
            "TTY" => s.line = value.strip_prefix("/dev/").unwrap_or(value).to_owned(),
            "REMOTE_HOST" => s.host = value.to_owned(),
            "LEADER" => s.pid = value.parse().unwrap_or(0),
            "REALTIME" => s.login_time = Duration::from_micros(value.parse().unwrap_or(0)),
            "STATE" => live = value != "closing",
            "CLASS" => is_user = value.starts_with("user"),
            _ => {}
        }
    }
    (live && is_user && !s.user.is_empty()).then_some(s)
}

/// The user sessions in `run/systemd/sessions` under `root` (see `parse_logind_session`);
/// no such directory gives an empty list. Unreadable files are skipped (a session may end
/// while the directory is read).
pub fn read_logind_sessions(root: &Path) -> Result<Vec<Session>, Error> {
    use std::io::Read;
    let dir = crate::facts::under(root, LOGIND_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.take(MAX_LOGIND_SESSIONS) {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let name = entry.file_name();
        // `<id>.ref` files are FIFOs held by the session's processes; never open them.
        if name.to_string_lossy().ends_with(".ref") || !entry.file_type().is_ok_and(|t| t.is_file())
        {
            continue;
        }
        let mut text = String::new();
        let read = std::fs::File::open(entry.path())
            .and_then(|f| f.take(MAX_LOGIND_FILE).read_to_string(&mut text));
        match read {
            Ok(_) => out.extend(parse_logind_session(&text)),
            Err(e) => log::debug!("reading {}: {e}", entry.path().display()),
        }
    }
    Ok(out)
}

/// One entry per user with the earliest of their login times, sorted by user name.
pub fn earliest_logins(
    logins: impl IntoIterator<Item = (String, Duration)>,
) -> Vec<(String, Duration)> {
    let mut first: std::collections::BTreeMap<String, Duration> = std::collections::BTreeMap::new();
    for (user, t) in logins {
        first
            .entry(user)
            .and_modify(|e| *e = (*e).min(t))
            .or_insert(t);
    }
    first.into_iter().collect()
}

#[cfg(test)]
mod tests;
