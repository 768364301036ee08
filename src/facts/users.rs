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
mod tests {
    use super::*;
    use crate::facts::fixtures;

    const DEAD_PROCESS: i16 = 8;
    const LOGIN_PROCESS: i16 = 6;
    /// The committed utmp fixtures were written for x86_64 unless named otherwise.
    const X: Layout = GLIBC_X86_64;

    /// A local session with no login time.
    fn session(user: &str, line: &str, pid: i32) -> Session {
        Session {
            user: user.into(),
            line: line.into(),
            host: String::new(),
            pid,
            login_time: Duration::ZERO,
        }
    }

    fn remote(host: &str, s: Session) -> Session {
        Session {
            host: host.into(),
            ..s
        }
    }

    fn at(secs: u64, micros: u32, s: Session) -> Session {
        Session {
            login_time: Duration::new(secs, micros * 1000),
            ..s
        }
    }

    fn read_fixture(name: &str, layout: Layout) -> Vec<Session> {
        read_utmp(&fixtures().join(name), layout).unwrap().unwrap()
    }

    #[test]
    fn encode_parse_round_trip_in_both_layouts() {
        for layout in [GLIBC_X86_64, GLIBC_AARCH64] {
            let mut rec = layout.encode(USER_PROCESS, 4242, "pts/0", "alice", "10.0.0.1");
            assert_eq!(rec.len(), layout.size);
            assert_eq!(&rec[40..44], b"ts/0");
            assert_eq!(&rec[76..84], b"10.0.0.1");
            layout.set_login_time(&mut rec, 1_700_000_000, 123_456);
            let want = at(1_700_000_000, 123_456, session("alice", "pts/0", 4242));
            assert_eq!(layout.parse(&rec), vec![remote("10.0.0.1", want)]);
        }
        assert_eq!(GLIBC_X86_64.size, 384);
        assert_eq!(GLIBC_AARCH64.size, 400);
    }

    #[test]
    fn login_time_fields_sit_where_each_layout_puts_them() {
        let mut rec = X.encode(USER_PROCESS, 7, "tty1", "root", "");
        X.set_login_time(&mut rec, 1_700_000_000, 123_456);
        assert_eq!(&rec[340..344], &1_700_000_000u32.to_le_bytes());
        assert_eq!(&rec[344..348], &123_456i32.to_le_bytes());
        let mut rec = GLIBC_AARCH64.encode(USER_PROCESS, 7, "tty1", "root", "");
        GLIBC_AARCH64.set_login_time(&mut rec, 2_200_000_000, 9);
        assert_eq!(&rec[344..352], &2_200_000_000i64.to_le_bytes());
        assert_eq!(&rec[352..360], &9i64.to_le_bytes());
    }

    #[test]
    fn login_time_clamps_and_carries() {
        assert_eq!(login_time(0, 0), Duration::ZERO);
        assert_eq!(login_time(-5, 10), Duration::from_micros(10));
        assert_eq!(login_time(5, -10), Duration::from_secs(5));
        assert_eq!(login_time(1, 2_500_000), Duration::new(3, 500_000_000));
        assert_eq!(
            login_time(i64::MAX, i64::MAX),
            Duration::from_secs(i64::MAX as u64) + Duration::from_micros(i64::MAX as u64)
        );
    }

    #[test]
    fn read_login_times_from_fixture() {
        // Written by an independent script (struct.pack of glibc's x86_64 utmpx).
        let sessions = read_fixture("users-login-time", X);
        assert_eq!(
            sessions,
            vec![
                at(
                    1_700_000_100,
                    250_000,
                    remote("192.168.1.20", session("alice", "pts/0", 1234))
                ),
                at(1_699_990_000, 999_999, session("root", "tty1", 987)),
            ]
        );
        let data = std::fs::read(fixtures().join("users-login-time/run/utmp")).unwrap();
        let mut alice = X.encode(USER_PROCESS, 1234, "pts/0", "alice", "192.168.1.20");
        X.set_login_time(&mut alice, 1_700_000_100, 250_000);
        assert_eq!(&data[X.size..2 * X.size], alice.as_slice());
    }

    /// The same logins as each architecture's glibc writes them (the fixtures were written by
    /// an independent script, struct.pack of `bits/utmp.h` with `ut_session` and the IPv6
    /// address set): bob's login is after 2038.
    #[test]
    fn x86_64_and_aarch64_fixtures_each_read_with_their_layout() {
        let alice = at(
            1_700_000_100,
            250_000,
            remote("192.168.1.20", session("alice", "pts/0", 1234)),
        );
        let bob = |secs| at(secs, 5, session("bob", "ttyAMA0", 2345));
        assert_eq!(
            read_fixture("users-aarch64", GLIBC_AARCH64),
            vec![alice.clone(), bob(2_200_000_000)]
        );
        // glibc 2.40 made the 32-bit tv_sec unsigned: read so, it lasts until 2106.
        assert_eq!(
            read_fixture("users-x86_64", X),
            vec![alice.clone(), bob(3_000_000_000)]
        );
        // The wrong layout does not read these logins.
        assert_ne!(
            read_fixture("users-aarch64", X),
            vec![alice.clone(), bob(2_200_000_000)]
        );
        assert_ne!(
            read_fixture("users-x86_64", GLIBC_AARCH64),
            vec![alice, bob(3_000_000_000)]
        );
    }

    #[test]
    fn sessions_of_dead_processes_are_left_out() {
        let root = fixtures().join("agent-root");
        let all = read_fixture("agent-root", X);
        assert_eq!(logged_in_users(&all), ["alice", "root"]);
        // The fixture has proc/1234 (alice's shell) but no proc/987 (root's).
        let live = live_sessions(&root, all);
        assert_eq!(logged_in_users(&live), ["alice"]);
    }

    #[test]
    fn full_length_fields_without_nul() {
        let user = "u".repeat(40);
        let line = "l".repeat(32);
        let rec = X.encode(USER_PROCESS, -1, &line, &user, "");
        assert_eq!(X.parse(&rec), vec![session(&user[..32], &line, -1)]);
    }

    #[test]
    fn parse_skips_other_types_empty_users_and_partial_tail() {
        for layout in [GLIBC_X86_64, GLIBC_AARCH64] {
            let mut data = Vec::new();
            data.extend(layout.encode(2, 0, "~", "reboot", "6.1.0")); // BOOT_TIME
            data.extend(layout.encode(LOGIN_PROCESS, 300, "tty2", "LOGIN", ""));
            data.extend(layout.encode(DEAD_PROCESS, 301, "pts/1", "", ""));
            data.extend(layout.encode(USER_PROCESS, 302, "pts/2", "", ""));
            data.extend(layout.encode(USER_PROCESS, 303, "tty1", "root", ""));
            let partial = layout.encode(USER_PROCESS, 304, "pts/3", "bob", "");
            data.extend(&partial[..200]);
            assert_eq!(layout.parse(&data), vec![session("root", "tty1", 303)]);
            assert!(layout.parse(&[]).is_empty());
        }
    }

    #[test]
    fn users_sorted_deduplicated() {
        let sessions = [
            session("root", "tty1", 1),
            session("alice", "pts/0", 2),
            session("root", "pts/1", 3),
        ];
        assert_eq!(logged_in_users(&sessions), ["alice", "root"]);
        assert!(logged_in_users(&[]).is_empty());
    }

    #[test]
    fn read_fixture_with_two_users() {
        let sessions = read_fixture("users-two", X);
        assert_eq!(
            sessions,
            vec![
                remote("192.168.1.20", session("alice", "pts/0", 1234)),
                session("root", "tty1", 987)
            ]
        );
        assert_eq!(logged_in_users(&sessions), ["alice", "root"]);
    }

    #[test]
    fn fixture_matches_encoder() {
        // The fixture was written by an independent script; this pins the encoder's layout.
        let data = std::fs::read(fixtures().join("users-two/run/utmp")).unwrap();
        let mut expected = Vec::new();
        expected.extend(X.encode(LOGIN_PROCESS, 555, "tty2", "LOGIN", ""));
        expected.extend(X.encode(USER_PROCESS, 1234, "pts/0", "alice", "192.168.1.20"));
        expected.extend(X.encode(DEAD_PROCESS, 777, "pts/1", "bob", ""));
        expected.extend(X.encode(USER_PROCESS, 987, "tty1", "root", ""));
        assert_eq!(data, expected);
    }

    #[test]
    fn read_empty_utmp() {
        assert_eq!(read_fixture("users-empty", X), vec![]);
    }

    #[test]
    fn read_legacy_var_run_utmp() {
        assert_eq!(
            read_fixture("users-legacy", X),
            vec![session("carol", "ttyS0", 42)]
        );
    }

    #[test]
    fn read_without_utmp() {
        let root = fixtures().join("no-such-root");
        assert_eq!(read_utmp(&root, X).unwrap(), None);
        assert!(read_sessions(&root).unwrap().is_empty());
    }

    #[test]
    fn an_unreadable_utmp_is_an_error_naming_it() {
        // A directory where the file should be: reading it fails, and not as "missing".
        let dir = std::env::temp_dir().join(format!("guestd-utmp-dir-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("run/utmp")).unwrap();
        let e = current_sessions(&dir).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("run/utmp"), "{e}");
    }

    #[cfg(all(
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    #[test]
    fn native_layout_matches_the_c_library() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<libc::utmpx>(), NATIVE.size);
        assert_eq!(offset_of!(libc::utmpx, ut_pid), PID);
        assert_eq!(offset_of!(libc::utmpx, ut_line), LINE.0);
        assert_eq!(offset_of!(libc::utmpx, ut_id), ID.0);
        assert_eq!(offset_of!(libc::utmpx, ut_user), USER.0);
        assert_eq!(offset_of!(libc::utmpx, ut_host), HOST.0);
        assert_eq!(offset_of!(libc::utmpx, ut_tv), NATIVE.tv);
        let tv_size = offset_of!(libc::utmpx, ut_addr_v6) - offset_of!(libc::utmpx, ut_tv);
        assert_eq!(tv_size, if NATIVE.tv32 { 8 } else { 16 });
        assert_eq!(libc::USER_PROCESS, USER_PROCESS);
    }

    #[test]
    fn logind_session_files() {
        let text = "# This is private data. Do not parse.\nUID=1000\nUSER=alice\nACTIVE=1\n\
                    STATE=active\nREMOTE=1\nTYPE=tty\nCLASS=user\nTTY=pts/3\n\
                    REMOTE_HOST=10.0.0.9\nLEADER=4321\nREALTIME=1700000000123456\n\
                    MONOTONIC=123\n";
        assert_eq!(
            parse_logind_session(text),
            Some(at(
                1_700_000_000,
                123_456,
                remote("10.0.0.9", session("alice", "pts/3", 4321))
            ))
        );
        let closing = text.replace("STATE=active", "STATE=closing");
        assert_eq!(parse_logind_session(&closing), None);
        let greeter = text.replace("CLASS=user", "CLASS=greeter");
        assert_eq!(parse_logind_session(&greeter), None);
        let manager = text.replace("CLASS=user", "CLASS=manager");
        assert_eq!(parse_logind_session(&manager), None);
        let early = text.replace("CLASS=user", "CLASS=user-early");
        assert!(parse_logind_session(&early).is_some());
        let dev = text.replace("TTY=pts/3", "TTY=/dev/tty1");
        assert_eq!(parse_logind_session(&dev).unwrap().line, "tty1");
        assert_eq!(parse_logind_session("UID=0\nSTATE=online\n"), None);
        assert_eq!(
            parse_logind_session("USER=bob\nLEADER=x\n"),
            Some(session("bob", "", 0))
        );
    }

    #[test]
    fn logind_sessions_from_the_fixture() {
        let mut got = read_logind_sessions(&fixtures().join("qga-info")).unwrap();
        got.sort_by_key(|s| s.login_time);
        let users: Vec<&str> = got.iter().map(|s| s.user.as_str()).collect();
        // Session 4 is closing and session 9 a greeter.
        assert_eq!(users, ["bob", "alice", "alice"]);
    }

    #[test]
    fn utmp_first_then_logind() {
        // No utmp file: logind's user sessions (a greeter and a closing session left out).
        let (mut got, source) = current_sessions(&fixtures().join("logind-only")).unwrap();
        got.sort_by_key(|s| s.pid);
        assert_eq!(source, Source::LogindNoUtmp);
        assert_eq!(
            got,
            vec![
                at(
                    1_700_000_300,
                    0,
                    remote("192.0.2.7", session("dana", "pts/0", 2001))
                ),
                at(1_700_000_200, 500_000, session("erik", "tty1", 2002)),
            ]
        );
        // utmp with a live user: utmp only.
        let (got, source) = current_sessions(&fixtures().join("agent-root")).unwrap();
        assert_eq!(
            (logged_in_users(&got), source),
            (vec!["alice".into()], Source::Utmp)
        );
        // utmp without a live user: logind (none here).
        let (got, source) = current_sessions(&fixtures().join("users-two")).unwrap();
        assert_eq!((got, source), (vec![], Source::Logind));
    }

    #[test]
    fn earliest_login_per_user() {
        let s = |secs| Duration::from_secs(secs);
        let got = earliest_logins([
            ("bob".to_string(), s(30)),
            ("alice".to_string(), s(20)),
            ("bob".to_string(), s(10)),
            ("alice".to_string(), s(40)),
        ]);
        assert_eq!(got, vec![("alice".into(), s(20)), ("bob".into(), s(10))]);
    }
}
