// SPDX-License-Identifier: Apache-2.0
//! Host-requested actions over a real UNIX socket, with a temporary hooks dir, a fixture
//! root, and power commands replaced by scripts (the test machine is never powered off).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, Dir, Peer, copy_tree, fixture, names};
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);

struct Setup {
    dir: Dir,
    agent: Agent,
    peer: Peer,
}

impl Setup {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn completion(&mut self, id: &str, within: Duration) -> Value {
        self.peer
            .until_where("completion", |c| c["reply_id"] == id, within)
            .0
    }
    fn send(&mut self, v: Value) {
        self.peer.send(&v.to_string());
    }
}

fn script(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An agent over a fixture root, with power commands that record what they were asked.
fn setup(tag: &str, extra: &[&str]) -> Setup {
    let dir = Dir::new(tag);
    let d = dir.path();
    let root = d.join("root");
    std::fs::create_dir_all(&root).unwrap();
    copy_tree(&fixture("agent-root"), &root);
    for (name, what) in [("poweroff", "poweroff"), ("reboot", "reboot")] {
        script(
            &d.join(name),
            &format!("echo \"{what} $*\" >> {}", d.join("power.log").display()),
        );
    }
    let args: Vec<String> = vec![
        format!("--root={}", root.display()),
        format!("--poweroff-command={} now", d.join("poweroff").display()),
        format!("--reboot-command={}", d.join("reboot").display()),
    ];
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    let agent = Agent::start(d, &all);
    let mut peer = agent.connect();
    peer.until("fqdn", 5 * SEC);
    // Completions come from API version 3 on: negotiate it as VDSM does, and wait for the
    // refresh burst that answers it.
    peer.send(r#"{"__name__": "api-version", "apiVersion": 3}"#);
    peer.until("os-info", 5 * SEC);
    Setup { dir, agent, peer }
}

/// Mirrors a real process's /proc/PID/stat into the fixture root.
fn fake_proc(root: &Path, pid: i32) {
    let dir = root.join(format!("proc/{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    // setsid(1) may not have made its session yet: wait until the process leads one.
    let deadline = Instant::now() + 5 * SEC;
    let stat = loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let session = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(3)
            .unwrap()
            .to_owned();
        if session == pid.to_string() {
            break stat;
        }
        assert!(
            Instant::now() < deadline,
            "{pid} never led a session: {stat}"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    std::fs::write(dir.join("stat"), stat).unwrap();
}

fn power_log(s: &Setup) -> String {
    std::fs::read_to_string(s.dir.path().join("power.log")).unwrap_or_default()
}

#[test]
fn shutdown_waits_its_grace_answering_meanwhile_then_reboots() {
    let mut s = setup("shutdown", &[]);
    // alice is logged in on pts/0: she is told.
    let tty = s.root().join("dev/pts/0");
    std::fs::create_dir_all(tty.parent().unwrap()).unwrap();
    std::fs::write(&tty, "").unwrap();
    let t0 = Instant::now();
    s.send(json!({"__name__": "shutdown", "timeout": 2, "message": "Maintenance", "reboot": "True", "reply_id": "s1"}));
    // During the grace period the agent keeps answering.
    std::thread::sleep(Duration::from_millis(500));
    s.send(json!({"__name__": "echo", "during": "grace"}));
    let (echo, seen) = s.peer.until("echo", SEC);
    assert_eq!(echo["during"], "grace");
    assert!(!names(&seen).contains(&"session-shutdown".to_owned()));
    assert!(
        power_log(&s).is_empty(),
        "powered off before the grace period ended"
    );
    let (_, _) = s.peer.until("session-shutdown", 4 * SEC);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "grace only {waited:?}"
    );
    let c = s.completion("s1", 3 * SEC);
    assert_eq!(c["done"], true, "{c}");
    assert_eq!(power_log(&s), "reboot \n");
    let wall = std::fs::read_to_string(&tty).unwrap();
    assert!(
        wall.contains("Maintenance") && wall.contains("reboot in 2 s"),
        "{wall:?}"
    );
}

#[test]
fn a_second_shutdown_replaces_the_first_and_json_booleans_work() {
    let mut s = setup("shutdown2", &[]);
    s.send(json!({"__name__": "shutdown", "timeout": 30, "reboot": "False", "reply_id": "a"}));
    s.send(json!({"__name__": "shutdown", "timeout": 0, "reboot": false, "reply_id": "b"}));
    let a = s.completion("a", 5 * SEC);
    assert_eq!(a["done"], false);
    assert_eq!(a["error"], "replaced by a later shutdown request");
    let b = s.completion("b", 3 * SEC);
    assert_eq!(b["done"], true, "{b}");
    assert_eq!(power_log(&s), "poweroff now\n");
}

#[test]
fn a_failing_power_command_is_reported_and_nothing_else_is_tried() {
    let mut s = setup("powerfail", &["--poweroff-command=/bin/false"]);
    s.send(json!({"__name__": "shutdown", "reply_id": "f"}));
    let c = s.completion("f", 3 * SEC);
    assert_eq!(c["done"], false);
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .contains("false: exit status 1"),
        "{c}"
    );
    assert!(power_log(&s).is_empty());
    assert!(
        s.agent.child.try_wait().unwrap().is_none(),
        "the agent keeps running"
    );
}

#[test]
fn hibernate_checks_the_kernel_runs_hooks_then_suspends() {
    let mut s = setup("hibernate", &[]);
    let state = s.root().join("sys/power/state");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    std::fs::write(&state, "freeze mem\n").unwrap();
    s.send(json!({"__name__": "hibernate", "state": "disk", "reply_id": "h1"}));
    let c = s.completion("h1", 5 * SEC);
    assert_eq!(c["done"], false);
    assert_eq!(
        c["error"],
        "this guest cannot suspend to disk: /sys/power/state offers 'freeze mem'"
    );
    let marker = s.dir.path().join("before");
    script(
        &s.dir.path().join("hooks/before_hibernation/10-mark"),
        &format!("cat {} > {}", state.display(), marker.display()),
    );
    s.send(json!({"__name__": "hibernate", "state": "mem", "reply_id": "h2"}));
    let c = s.completion("h2", 3 * SEC);
    assert_eq!(c["done"], true, "{c}");
    // The hook ran before the state was written.
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "freeze mem\n");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "mem");
}

#[test]
fn lock_screen_and_login_need_hooks_and_keep_credentials_out_of_logs() {
    let mut s = setup("desktop", &[]);
    s.send(json!({"__name__": "lock-screen", "reply_id": "l1"}));
    let c = s.completion("l1", 5 * SEC);
    assert_eq!(
        (c["done"].clone(), c["error"].clone()),
        (
            json!(false),
            json!("no lock-screen hook is installed in this guest")
        )
    );
    let d = s.dir.path().to_owned();
    script(
        &d.join("hooks/lock-screen/10-lock"),
        &format!("echo locked >> {}", d.join("locks").display()),
    );
    s.send(json!({"__name__": "lock-screen", "reply_id": "l2"}));
    assert_eq!(s.completion("l2", 5 * SEC)["done"], true);
    assert_eq!(
        std::fs::read_to_string(d.join("locks")).unwrap(),
        "locked\n"
    );
    let creds = d.join("creds");
    script(
        &d.join("hooks/login/10-sso"),
        &format!(
            "echo \"argc=$#\" > {c}; cat >> {c}; env >> {c}.env; echo got password: $(tail -n1 {c})",
            c = creds.display()
        ),
    );
    let password = "Pa55-w0rd-secret";
    s.send(json!({"__name__": "login", "username": "alice@example", "password": password, "reply_id": "g"}));
    assert_eq!(s.completion("g", 3 * SEC)["done"], true);
    assert_eq!(
        std::fs::read_to_string(&creds).unwrap(),
        format!("argc=0\nalice@example\n{password}")
    );
    let env = std::fs::read_to_string(format!("{}.env", creds.display())).unwrap();
    assert!(!env.contains(password));
    let log = s.agent.log_text();
    assert!(log.contains("got password: ***"), "{log}");
    assert!(!log.contains(password), "the password reached the log");
}

/// A real session leader in its own process group (as a login shell or sshd's session
/// process is), mirrored into the fixture's /proc.
fn session_leader(root: &Path) -> (std::process::Child, i32) {
    let leader = Command::new("setsid")
        .args(["sleep", "300"])
        .spawn()
        .unwrap();
    let pid = i32::try_from(leader.id()).unwrap();
    fake_proc(root, pid);
    (leader, pid)
}

/// A logind session file (`/run/systemd/sessions/<id>`) as systemd writes it.
fn logind_session(root: &Path, id: &str, user: &str, leader: i32, tty: &str) {
    let dir = root.join("run/systemd/sessions");
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "# This is private data. Do not parse.\nUID=1000\nUSER={user}\nACTIVE=1\nIS_DISPLAY=0\n\
         STATE=active\nREMOTE=0\nTYPE=tty\nCLASS=user\nTTY={tty}\nLEADER={leader}\n\
         REALTIME=1700000000000000\nMONOTONIC=1\n"
    );
    std::fs::write(dir.join(id), text).unwrap();
}

fn count(msgs: &[Value], name: &str) -> usize {
    msgs.iter().filter(|m| m["__name__"] == name).count()
}

/// Logs off aaron, the active user, whose session `leader` leads (`--report-user-rate 1`), and
/// checks that the host hears it exactly once: `session-logoff` then `active-user` "None",
/// nothing more at the next two user checks while the killed session's record lingers, and
/// no second `session-logoff` once `end_session` removes the record (seen at zed's login,
/// which `zed_logs_in` records).
fn log_off_is_reported_once(
    s: &mut Setup,
    mut leader: std::process::Child,
    end_session: impl FnOnce(&Path),
    zed_logs_in: impl FnOnce(&Path),
) {
    s.peer
        .until_where("active-user", |m| m["name"] == "aaron", 5 * SEC);
    s.send(json!({"__name__": "log-off", "reply_id": "o"}));
    let t0 = Instant::now();
    let (c, seen) = s
        .peer
        .until_where("completion", |c| c["reply_id"] == "o", 10 * SEC);
    assert_eq!(c["done"], true, "{c}");
    assert!(t0.elapsed() < 8 * SEC);
    let n = names(&seen);
    assert_eq!(count(&seen, "session-logoff"), 1, "{n:?}");
    let at = |name: &str| n.iter().position(|x| x == name).unwrap();
    assert!(at("session-logoff") < at("active-user"), "{n:?}");
    assert_eq!(
        seen.iter().rfind(|m| m["__name__"] == "active-user"),
        Some(&json!({"__name__": "active-user", "name": "None"}))
    );
    // SIGKILL is delivered by now; give the process a moment to be gone.
    let gone = Instant::now() + SEC;
    while leader.try_wait().unwrap().is_none() {
        assert!(Instant::now() < gone, "the session leader still runs");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        s.agent
            .log_text()
            .contains("log-off: ending the sessions of 'aaron'")
    );
    // Two user checks with the killed session's record still there: nothing to report.
    let later = s.peer.collect_for(Duration::from_millis(2500));
    for name in ["session-logoff", "session-logon", "active-user"] {
        assert_eq!(count(&later, name), 0, "{:?}", names(&later));
    }
    // The record goes, as the system cleans up; then zed logs in.
    end_session(&s.root());
    zed_logs_in(&s.root());
    let (_, seen) = s.peer.until("session-logon", 5 * SEC);
    assert_eq!(count(&seen, "session-logoff"), 0, "{:?}", names(&seen));
    let (au, _) = s.peer.until("active-user", 2 * SEC);
    assert_eq!(au["name"], "zed");
}

#[test]
fn log_off_without_a_hook_ends_the_active_users_session() {
    use guestd::facts::users::encode_utmp_record;
    let mut s = setup("logoff", &["--report-user-rate", "1"]);
    let (leader, pid) = session_leader(&s.root());
    let utmp = s.root().join("run/utmp");
    std::fs::write(&utmp, encode_utmp_record(7, pid, "pts/7", "aaron", "")).unwrap();
    log_off_is_reported_once(
        &mut s,
        leader,
        // The process is gone, as /proc would show; its record stays (a stale record).
        |root| std::fs::remove_dir_all(root.join(format!("proc/{pid}"))).unwrap(),
        |root| {
            std::fs::create_dir_all(root.join("proc/4545")).unwrap();
            let mut data = std::fs::read(&utmp).unwrap();
            data.extend(encode_utmp_record(7, 4545, "pts/8", "zed", ""));
            std::fs::write(&utmp, data).unwrap();
        },
    );
    // zed's process leads no session (a fixture /proc without stat): nothing to end.
    s.send(json!({"__name__": "log-off", "reply_id": "o2"}));
    let c = s.completion("o2", 5 * SEC);
    assert_eq!(c["error"], "no user session to end", "{c}");
}

#[test]
fn log_off_ends_a_logind_session_when_there_is_no_utmp() {
    let mut s = setup("logoff-logind", &["--report-user-rate", "1"]);
    std::fs::remove_file(s.root().join("run/utmp")).unwrap();
    let (leader, pid) = session_leader(&s.root());
    logind_session(&s.root(), "5", "aaron", pid, "pts/7");
    log_off_is_reported_once(
        &mut s,
        leader,
        // logind removes the file of a session that ended.
        |root| std::fs::remove_file(root.join("run/systemd/sessions/5")).unwrap(),
        |root| logind_session(root, "6", "zed", 4545, "pts/8"),
    );
}

#[test]
fn shutdown_is_announced_on_the_terminals_of_logind_sessions() {
    let mut s = setup("shutdown-logind", &[]);
    std::fs::remove_file(s.root().join("run/utmp")).unwrap();
    logind_session(&s.root(), "3", "erik", 0, "/dev/tty1");
    logind_session(&s.root(), "4", "erik", 0, "tty1");
    logind_session(&s.root(), "5", "dana", 0, "pts/4");
    let dev = s.root().join("dev/pts");
    std::fs::create_dir_all(&dev).unwrap();
    for tty in ["dev/tty1", "dev/pts/4"] {
        std::fs::write(s.root().join(tty), "").unwrap();
    }
    s.send(
        json!({"__name__": "shutdown", "timeout": 600, "message": "Maintenance", "reply_id": "s"}),
    );
    // Handled in order: once the echo is back, the shutdown was announced.
    s.send(json!({"__name__": "echo"}));
    s.peer.until("echo", 3 * SEC);
    for tty in ["dev/tty1", "dev/pts/4"] {
        let wall = std::fs::read_to_string(s.root().join(tty)).unwrap();
        // Once per terminal, though erik has two sessions on tty1.
        assert_eq!(wall.matches("Maintenance").count(), 1, "{tty}: {wall}");
    }
    assert!(power_log(&s).is_empty());
}

#[test]
fn lifecycle_events_run_their_hooks_in_order_and_complete() {
    let mut s = setup("lifecycle", &[]);
    let d = s.dir.path().to_owned();
    let trace = d.join("trace");
    script(
        &d.join("hooks/before_migration/20-b"),
        &format!("echo \"b $*\" >> {}", trace.display()),
    );
    script(
        &d.join("hooks/before_migration/10-a"),
        &format!("echo \"a $*\" >> {}", trace.display()),
    );
    let t0 = Instant::now();
    s.send(json!({"__name__": "lifecycle-event", "type": "before_migration", "reply_id": "m1"}));
    assert_eq!(s.completion("m1", 10 * SEC)["done"], true);
    assert!(t0.elapsed() < 10 * SEC);
    assert_eq!(std::fs::read_to_string(&trace).unwrap(), "a \nb \n");
    // failure:true reaches the hooks as an argument; a missing directory is fine.
    s.send(json!({"__name__": "lifecycle-event", "type": "before_migration", "failure": true, "reply_id": "m2"}));
    assert_eq!(s.completion("m2", 10 * SEC)["done"], true);
    assert!(
        std::fs::read_to_string(&trace)
            .unwrap()
            .ends_with("a failure\nb failure\n")
    );
    s.send(json!({"__name__": "lifecycle-event", "type": "after_hibernation", "reply_id": "m3"}));
    assert_eq!(s.completion("m3", 10 * SEC)["done"], true);
    // A type guestd does not know runs nothing and is done, as in the reference agent.
    s.send(json!({"__name__": "lifecycle-event", "type": "reboot_now", "reply_id": "m4"}));
    assert_eq!(
        s.completion("m4", 5 * SEC),
        json!({"__name__": "completion", "reply_id": "m4", "done": true})
    );
    // Without reply_id nothing is answered, and the hook still runs.
    s.send(json!({"__name__": "lifecycle-event", "type": "after_migration"}));
    s.send(json!({"__name__": "echo", "x": 1}));
    let (_, seen) = s.peer.until("echo", 5 * SEC);
    assert!(!names(&seen).contains(&"completion".to_owned()));
}

#[test]
fn lifecycle_hooks_are_killed_within_vdsms_ten_seconds() {
    let mut s = setup("lifecycle-slow", &["--lifecycle-hook-timeout=1"]);
    script(
        &s.dir.path().join("hooks/before_hibernation/10-hang"),
        "sleep 60",
    );
    // The budget is for the whole event: a second slow hook does not get its own.
    script(
        &s.dir.path().join("hooks/before_hibernation/20-hang"),
        "sleep 60",
    );
    let t0 = Instant::now();
    s.send(json!({"__name__": "lifecycle-event", "type": "before_hibernation", "reply_id": "x"}));
    let c = s.completion("x", 10 * SEC);
    // The hooks would run 120 s; the event's budget ends them long before.
    assert!(t0.elapsed() < 8 * SEC, "{:?}", t0.elapsed());
    assert_eq!(c["done"], false);
    assert!(
        c["error"]
            .as_str()
            .unwrap()
            .contains("killed after timeout"),
        "{c}"
    );
    assert!(
        c["error"].as_str().unwrap().contains("20-hang: skipped"),
        "{c}"
    );
}

#[test]
fn set_number_of_cpus_switches_cpus_but_never_cpu0() {
    let mut s = setup("cpus", &[]);
    let cpu = s.root().join("sys/devices/system/cpu");
    std::fs::write(cpu.join("present"), "0-3\n").unwrap();
    std::fs::write(cpu.join("online"), "0-3\n").unwrap();
    for n in 0..4 {
        std::fs::create_dir_all(cpu.join(format!("cpu{n}"))).unwrap();
        std::fs::write(cpu.join(format!("cpu{n}/online")), "1").unwrap();
    }
    // VDSM sends set-number-of-cpus only once API version 1 or more is agreed.
    s.send(json!({"__name__": "api-version", "apiVersion": 3}));
    s.send(json!({"__name__": "set-number-of-cpus", "count": 2, "reply_id": "c"}));
    let (n, _) = s.peer.until("number-of-cpus", 5 * SEC);
    assert!(n["count"].is_i64());
    assert_eq!(s.completion("c", 5 * SEC)["done"], true);
    let state: Vec<String> = (0..4)
        .map(|n| std::fs::read_to_string(cpu.join(format!("cpu{n}/online"))).unwrap())
        .collect();
    assert_eq!(state, vec!["1", "1", "0", "0"]);
    s.send(json!({"__name__": "set-number-of-cpus", "count": 9, "reply_id": "c2"}));
    let c = s.completion("c2", 5 * SEC);
    assert_eq!(c["error"], "only 4 CPUs are present");
    s.send(json!({"__name__": "set-number-of-cpus", "count": 0, "reply_id": "c3"}));
    assert_eq!(s.completion("c3", 5 * SEC)["done"], false);
}

#[test]
fn a_screen_locker_reports_session_lock_through_the_command_line() {
    let mut s = setup("locknotify", &[]);
    let out = Command::new(common::guestd_bin())
        .args(["--config", "/dev/null", "-d", "0"])
        .args(common::isolation(s.dir.path()))
        .args(["-e", "session-lock", "-e", "session-unlock"])
        .output()
        .unwrap();
    assert!(out.status.success());
    s.peer.until("session-lock", 3 * SEC);
    s.peer.until("session-unlock", 3 * SEC);
}

#[test]
fn lifecycle_events_do_not_wait_behind_a_slow_param_hook() {
    let mut s = setup("lanes", &[]);
    let d = s.dir.path().to_owned();
    script(&d.join("hooks/param/10-slow"), "sleep 30");
    script(&d.join("hooks/before_migration/10-fast"), "true");
    s.send(json!({"__name__": "set-param", "key": "k", "value": "v", "reply_id": "p"}));
    assert_eq!(s.completion("p", 5 * SEC)["done"], true);
    let t0 = Instant::now();
    s.send(json!({"__name__": "lifecycle-event", "type": "before_migration", "reply_id": "m"}));
    assert_eq!(s.completion("m", 5 * SEC)["done"], true);
    assert!(t0.elapsed() < 5 * SEC, "waited {:?}", t0.elapsed());
}
