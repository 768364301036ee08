// SPDX-License-Identifier: Apache-2.0
//! Login sessions and logged-in users, parsed straight from the binary `run/utmp` file (musl
//! has no utmp functions, so none are called).
//!
//! The record layout is glibc's on x86_64 (and other 64-bit little-endian ports): 384 bytes,
//! `ut_type` i16 at 0, `ut_pid` i32 at 4, `ut_line[32]` at 8, `ut_id[4]` at 40, `ut_user[32]`
//! at 44, `ut_host[256]` at 76, exit status at 332, session at 336, `ut_tv` at 340 (`tv_sec`
//! i32 at 340, `tv_usec` i32 at 344), then the address and padding up to 384.
//!
//! Guests without utmp (systemd 257 and later no longer write it) still have logind's
//! session files, `/run/systemd/sessions/<id>`: plain `KEY=value` lines with `USER`,
//! `REALTIME` (microseconds since the epoch), `STATE` and `CLASS`. They are read as text; no
//! D-Bus is involved.

use std::path::Path;
use std::time::Duration;

use super::{Error, read_bytes};

/// Size of one utmp record.
pub const RECORD_SIZE: usize = 384;
/// `ut_type` of a normal user login.
pub const USER_PROCESS: i16 = 7;

const TYPE: usize = 0;
const PID: usize = 4;
const LINE: (usize, usize) = (8, 32);
const ID: (usize, usize) = (40, 4);
const USER: (usize, usize) = (44, 32);
const HOST: (usize, usize) = (76, 256);
const TV_SEC: usize = 340;
const TV_USEC: usize = 344;

/// One login session from utmp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Login name.
    pub user: String,
    /// Terminal, without `/dev/` (e.g. `pts/0`, `tty1`).
    pub line: String,
    /// Remote host for remote logins (e.g. an address), empty for local ones.
    pub host: String,
    /// Pid of the login process.
    pub pid: i32,
    /// Login time since the Unix epoch, to the microsecond (`ut_tv`; negative values count
    /// as 0).
    pub login_time: Duration,
}

/// The `USER_PROCESS` records with a non-empty user name in utmp `data`. A trailing partial
/// record is ignored.
pub fn parse_utmp(data: &[u8]) -> Vec<Session> {
    data.chunks_exact(RECORD_SIZE)
        .filter_map(parse_record)
        .collect()
}

fn parse_record(rec: &[u8]) -> Option<Session> {
    let ut_type = i16::from_le_bytes(rec.get(TYPE..TYPE + 2)?.try_into().ok()?);
    if ut_type != USER_PROCESS {
        return None;
    }
    let user = c_field(rec, USER)?;
    if user.is_empty() {
        return None;
    }
    Some(Session {
        user,
        line: c_field(rec, LINE)?,
        host: c_field(rec, HOST)?,
        pid: i32_at(rec, PID)?,
        login_time: login_time(i32_at(rec, TV_SEC)?, i32_at(rec, TV_USEC)?),
    })
}

fn i32_at(rec: &[u8], offset: usize) -> Option<i32> {
    Some(i32::from_le_bytes(
        rec.get(offset..offset + 4)?.try_into().ok()?,
    ))
}

/// A `struct timeval` as a time since the epoch; negative fields count as 0, and
/// `tv_usec` beyond a second carries into the seconds.
pub fn login_time(tv_sec: i32, tv_usec: i32) -> Duration {
    let secs = Duration::from_secs(u64::try_from(tv_sec).unwrap_or(0));
    secs.saturating_add(Duration::from_micros(u64::try_from(tv_usec).unwrap_or(0)))
}

/// A NUL-padded string field (not NUL-terminated when it fills the field), lossily decoded.
fn c_field(rec: &[u8], (offset, len): (usize, usize)) -> Option<String> {
    let bytes = rec.get(offset..offset + len)?;
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(len);
    Some(String::from_utf8_lossy(bytes.get(..end)?).into_owned())
}

/// The sessions in `run/utmp`, or else `var/run/utmp`; neither existing gives an empty list.
pub fn read_sessions(root: &Path) -> Result<Vec<Session>, Error> {
    for rel in ["run/utmp", "var/run/utmp"] {
        match read_bytes(root, rel) {
            Ok(data) => return Ok(parse_utmp(&data)),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Vec::new())
}

/// The sessions whose process still exists under `root` (`proc/PID`), as `users(1)` checks:
/// a crash or power loss can leave stale USER_PROCESS records behind.
pub fn live_sessions(root: &Path, sessions: Vec<Session>) -> Vec<Session> {
    sessions
        .into_iter()
        .filter(|s| s.pid > 0 && crate::facts::under(root, &format!("proc/{}", s.pid)).exists())
        .collect()
}

/// The user names of `sessions`, sorted and deduplicated (what `users` prints, minus repeats).
pub fn logged_in_users(sessions: &[Session]) -> Vec<String> {
    let mut users: Vec<String> = sessions.iter().map(|s| s.user.clone()).collect();
    users.sort();
    users.dedup();
    users
}

/// One utmp record (`RECORD_SIZE` bytes) with the given type, pid, line, user and host, every
/// other field zero. `ut_id` is the last four bytes of `line`, as login(1) does. Strings longer
/// than their field are truncated.
pub fn encode_utmp_record(ut_type: i16, pid: i32, line: &str, user: &str, host: &str) -> Vec<u8> {
    let mut rec = vec![0u8; RECORD_SIZE];
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

/// Sets the login time (`ut_tv`) of a record made by `encode_utmp_record`.
pub fn set_utmp_login_time(rec: &mut [u8], tv_sec: i32, tv_usec: i32) {
    put(rec, TV_SEC, &tv_sec.to_le_bytes());
    put(rec, TV_USEC, &tv_usec.to_le_bytes());
}

fn put_field(rec: &mut [u8], (offset, len): (usize, usize), value: &[u8]) {
    put(rec, offset, value.get(..len).unwrap_or(value));
}

fn put(rec: &mut [u8], offset: usize, value: &[u8]) {
    if let Some(dst) = rec.get_mut(offset..offset + value.len()) {
        dst.copy_from_slice(value);
    }
}

#[cfg(test)]
mod live_tests {
    use super::*;

    #[test]
    fn sessions_of_dead_processes_are_left_out() {
        let root = crate::facts::fixtures().join("agent-root");
        let all = read_sessions(&root).unwrap();
        assert_eq!(logged_in_users(&all), ["alice", "root"]);
        // The fixture has proc/1234 (alice's shell) but no proc/987 (root's).
        let live = live_sessions(&root, all);
        assert_eq!(logged_in_users(&live), ["alice"]);
    }
}

/// Where logind keeps one file per session, relative to the root.
const LOGIND_DIR: &str = "run/systemd/sessions";

/// Most logind session files read.
pub const MAX_LOGIND_SESSIONS: usize = 4096;

/// Largest logind session file read; real ones are well under 1 KiB.
const MAX_LOGIND_FILE: u64 = 64 * 1024;

/// A user session from a logind session file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogindSession {
    /// `USER`: the login name.
    pub user: String,
    /// `REALTIME`: when the session started, since the epoch (0 when missing).
    pub login_time: Duration,
}

/// A logind session file's text as a user session: `None` when it names no user, is not a
/// user session (`CLASS` other than `user`, `user-early`, `user-incomplete` and the like,
/// e.g. `greeter` or `manager`), or is `closing`.
pub fn parse_logind_session(text: &str) -> Option<LogindSession> {
    let mut user = None;
    let mut realtime = 0u64;
    let mut live = true;
    let mut is_user = true;
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        match key.trim() {
            "USER" => user = Some(value.trim()),
            "REALTIME" => realtime = value.trim().parse().unwrap_or(0),
            "STATE" => live = value.trim() != "closing",
            "CLASS" => is_user = value.trim().starts_with("user"),
            _ => {}
        }
    }
    let user = user.filter(|u| !u.is_empty())?;
    (live && is_user).then(|| LogindSession {
        user: user.to_owned(),
        login_time: Duration::from_micros(realtime),
    })
}

/// The user sessions in `run/systemd/sessions` under `root` (see `parse_logind_session`);
/// no such directory gives an empty list. Unreadable files are skipped (a session may end
/// while the directory is read).
pub fn read_logind_sessions(root: &Path) -> Result<Vec<LogindSession>, Error> {
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

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn encode_parse_round_trip() {
        let rec = encode_utmp_record(USER_PROCESS, 4242, "pts/0", "alice", "10.0.0.1");
        assert_eq!(rec.len(), RECORD_SIZE);
        assert_eq!(&rec[40..44], b"ts/0");
        assert_eq!(&rec[76..84], b"10.0.0.1");
        assert_eq!(
            parse_utmp(&rec),
            vec![remote("10.0.0.1", session("alice", "pts/0", 4242))]
        );
    }

    #[test]
    fn login_time_round_trip() {
        let mut rec = encode_utmp_record(USER_PROCESS, 7, "tty1", "root", "");
        set_utmp_login_time(&mut rec, 1_700_000_000, 123_456);
        assert_eq!(&rec[340..344], &1_700_000_000i32.to_le_bytes());
        assert_eq!(&rec[344..348], &123_456i32.to_le_bytes());
        let [s] = parse_utmp(&rec).try_into().unwrap();
        assert_eq!(s.login_time, Duration::new(1_700_000_000, 123_456_000));
    }

    #[test]
    fn login_time_clamps_and_carries() {
        assert_eq!(login_time(0, 0), Duration::ZERO);
        assert_eq!(login_time(-5, 10), Duration::from_micros(10));
        assert_eq!(login_time(5, -10), Duration::from_secs(5));
        assert_eq!(login_time(1, 2_500_000), Duration::new(3, 500_000_000));
        assert_eq!(
            login_time(i32::MAX, i32::MAX),
            Duration::from_secs(2_147_483_647) + Duration::from_micros(2_147_483_647)
        );
    }

    #[test]
    fn read_login_times_from_fixture() {
        // Written by an independent script (struct.pack of glibc's x86_64 utmpx).
        let sessions = read_sessions(&fixtures().join("users-login-time")).unwrap();
        assert_eq!(
            sessions,
            vec![
                Session {
                    login_time: Duration::new(1_700_000_100, 250_000_000),
                    ..remote("192.168.1.20", session("alice", "pts/0", 1234))
                },
                Session {
                    login_time: Duration::new(1_699_990_000, 999_999_000),
                    ..session("root", "tty1", 987)
                },
            ]
        );
        assert_eq!(sessions[0].login_time.as_secs_f64(), 1_700_000_100.25);
        let data = std::fs::read(fixtures().join("users-login-time/run/utmp")).unwrap();
        let mut alice = encode_utmp_record(USER_PROCESS, 1234, "pts/0", "alice", "192.168.1.20");
        set_utmp_login_time(&mut alice, 1_700_000_100, 250_000);
        assert_eq!(&data[RECORD_SIZE..2 * RECORD_SIZE], alice.as_slice());
    }

    #[test]
    fn full_length_fields_without_nul() {
        let user = "u".repeat(40);
        let line = "l".repeat(32);
        let rec = encode_utmp_record(USER_PROCESS, -1, &line, &user, "");
        assert_eq!(parse_utmp(&rec), vec![session(&user[..32], &line, -1)]);
    }

    #[test]
    fn parse_skips_other_types_empty_users_and_partial_tail() {
        let mut data = Vec::new();
        data.extend(encode_utmp_record(2, 0, "~", "reboot", "6.1.0")); // BOOT_TIME
        data.extend(encode_utmp_record(LOGIN_PROCESS, 300, "tty2", "LOGIN", ""));
        data.extend(encode_utmp_record(DEAD_PROCESS, 301, "pts/1", "", ""));
        data.extend(encode_utmp_record(USER_PROCESS, 302, "pts/2", "", ""));
        data.extend(encode_utmp_record(USER_PROCESS, 303, "tty1", "root", ""));
        let partial = encode_utmp_record(USER_PROCESS, 304, "pts/3", "bob", "");
        data.extend(&partial[..200]);
        assert_eq!(parse_utmp(&data), vec![session("root", "tty1", 303)]);
        assert!(parse_utmp(&[]).is_empty());
    }

    #[test]
    fn users_sorted_deduplicated() {
        let sessions = [
            session("root", "tty1", 1),
            session("alice", "pts/0", 2),
            session("root", "pts/1", 3),
        ];
        let users = logged_in_users(&sessions);
        assert_eq!(users, strings(&["alice", "root"]));
        assert!(logged_in_users(&[]).is_empty());
    }

    #[test]
    fn read_fixture_with_two_users() {
        let sessions = read_sessions(&fixtures().join("users-two")).unwrap();
        assert_eq!(
            sessions,
            vec![
                remote("192.168.1.20", session("alice", "pts/0", 1234)),
                session("root", "tty1", 987)
            ]
        );
        assert_eq!(logged_in_users(&sessions), strings(&["alice", "root"]));
    }

    #[test]
    fn fixture_matches_encoder() {
        // The fixture was written by an independent script; this pins the encoder's layout.
        let data = std::fs::read(fixtures().join("users-two/run/utmp")).unwrap();
        let mut expected = Vec::new();
        expected.extend(encode_utmp_record(LOGIN_PROCESS, 555, "tty2", "LOGIN", ""));
        expected.extend(encode_utmp_record(
            USER_PROCESS,
            1234,
            "pts/0",
            "alice",
            "192.168.1.20",
        ));
        expected.extend(encode_utmp_record(DEAD_PROCESS, 777, "pts/1", "bob", ""));
        expected.extend(encode_utmp_record(USER_PROCESS, 987, "tty1", "root", ""));
        assert_eq!(data, expected);
    }

    #[test]
    fn read_empty_utmp() {
        let sessions = read_sessions(&fixtures().join("users-empty")).unwrap();
        assert!(sessions.is_empty());
        assert!(logged_in_users(&sessions).is_empty());
    }

    #[test]
    fn read_legacy_var_run_utmp() {
        let sessions = read_sessions(&fixtures().join("users-legacy")).unwrap();
        assert_eq!(sessions, vec![session("carol", "ttyS0", 42)]);
    }

    #[test]
    fn read_without_utmp() {
        assert!(
            read_sessions(&fixtures().join("no-such-root"))
                .unwrap()
                .is_empty()
        );
    }

    #[cfg(all(target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn layout_matches_glibc() {
        use std::mem::{offset_of, size_of};
        assert_eq!(size_of::<libc::utmpx>(), RECORD_SIZE);
        assert_eq!(offset_of!(libc::utmpx, ut_pid), PID);
        assert_eq!(offset_of!(libc::utmpx, ut_line), LINE.0);
        assert_eq!(offset_of!(libc::utmpx, ut_id), ID.0);
        assert_eq!(offset_of!(libc::utmpx, ut_user), USER.0);
        assert_eq!(offset_of!(libc::utmpx, ut_host), HOST.0);
        assert_eq!(offset_of!(libc::utmpx, ut_tv), TV_SEC);
        assert_eq!(offset_of!(libc::utmpx, ut_tv) + 4, TV_USEC);
        assert_eq!(libc::USER_PROCESS, USER_PROCESS);
    }

    #[test]
    fn logind_session_files() {
        let text = "# This is private data. Do not parse.\nUID=1000\nUSER=alice\nACTIVE=1\n\
                    STATE=active\nREMOTE=1\nTYPE=tty\nCLASS=user\nREALTIME=1700000000123456\n\
                    MONOTONIC=123\n";
        assert_eq!(
            parse_logind_session(text),
            Some(LogindSession {
                user: "alice".into(),
                login_time: Duration::new(1_700_000_000, 123_456_000),
            })
        );
        let closing = text.replace("STATE=active", "STATE=closing");
        assert_eq!(parse_logind_session(&closing), None);
        let greeter = text.replace("CLASS=user", "CLASS=greeter");
        assert_eq!(parse_logind_session(&greeter), None);
        let manager = text.replace("CLASS=user", "CLASS=manager");
        assert_eq!(parse_logind_session(&manager), None);
        let early = text.replace("CLASS=user", "CLASS=user-early");
        assert!(parse_logind_session(&early).is_some());
        assert_eq!(parse_logind_session("UID=0\nSTATE=online\n"), None);
        let no_time = parse_logind_session("USER=bob\n").unwrap();
        assert_eq!(no_time.login_time, Duration::ZERO);
    }

    #[test]
    fn logind_sessions_from_the_fixture() {
        let mut got = read_logind_sessions(&crate::facts::fixtures().join("qga-info")).unwrap();
        got.sort_by_key(|s| s.login_time);
        let users: Vec<&str> = got.iter().map(|s| s.user.as_str()).collect();
        // Session 4 is closing and session 9 a greeter.
        assert_eq!(users, ["bob", "alice", "alice"]);
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
