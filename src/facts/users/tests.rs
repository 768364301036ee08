// SPDX-License-Identifier: Apache-2.0
//! Tests of `facts::users`.

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
