// SPDX-License-Identifier: Apache-2.0
//! QGA's process, file, account, power and clock commands against the real binary over a
//! UNIX socket: guest-exec and its table, guest-file-*, guest-set-user-password with a fake
//! chpasswd, ssh keys in a fake home, guest-shutdown with a harmless power-off command,
//! guest-suspend-* and guest-set-time under a scratch root. Nothing here changes this
//! machine's clock, passwords or power state.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Agent, Dir, QgaPeer};
use guestd::proto::base64;
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

/// Asks for the status of `pid` until it has exited (polling, within a generous deadline).
fn exec_wait(p: &mut QgaPeer, pid: &Value) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let st = p.ok("guest-exec-status", json!({ "pid": pid }));
        if st["exited"] == true {
            return st;
        }
        assert_eq!(st, json!({"exited": false}));
        assert!(Instant::now() < deadline, "pid {pid} did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs one guest-exec to the end; its final status.
fn run(p: &mut QgaPeer, args: Value) -> Value {
    let pid = p.ok("guest-exec", args)["pid"].clone();
    assert!(pid.is_i64(), "{pid}");
    exec_wait(p, &pid)
}

fn decoded(v: &Value) -> Vec<u8> {
    base64::decode(v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))).unwrap()
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<String> {
    let me = pid.to_string();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = fs::read_to_string(e.path().join("stat")).ok()?;
            let after = stat.rsplit_once(')')?.1.to_owned();
            let f: Vec<&str> = after.split_whitespace().collect();
            (f.len() > 2 && f[0] == "Z" && f[1] == me).then(|| stat.clone())
        })
        .collect()
}

/// Waits until `pred` holds, or fails naming `what`.
fn wait_for(what: &str, mut pred: impl FnMut() -> bool) {
    let deadline = Instant::now() + LONG;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn script(path: &Path, body: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    // Renamed into place: no fork of the agent can hold it open for writing (ETXTBSY).
    fs::rename(&tmp, path).unwrap();
}

#[test]
fn exec_arguments_environment_input_and_capture_modes() {
    let dir = Dir::new("qga-exec");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    // PATH lookup through the given environment, which replaces guestd's.
    let st = run(
        &mut p,
        json!({"path": "sh", "arg": ["-c", "printf '%s|' \"$0\" \"$@\"; echo \"$FOO\"; env | grep -c =", "a", "b c"],
               "env": ["FOO=bar", "PATH=/usr/bin:/bin"], "capture-output": true}),
    );
    assert_eq!(st["exitcode"], 0, "{st}");
    let out = String::from_utf8(decoded(&st["out-data"])).unwrap();
    let (head, count) = out.split_once('\n').unwrap();
    assert_eq!(head, "a|b c|bar");
    // FOO and PATH, plus what sh adds itself (PWD, SHLVL, _): nothing of guestd's.
    assert!(count.trim().parse::<u32>().unwrap() <= 5, "{out}");
    assert!(st.get("err-data").is_none());

    // input-data, wrapped at 76 columns with a trailing newline as Proxmox sends it.
    let input: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let wrapped: String = base64::encode(&input)
        .as_bytes()
        .chunks(76)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    let st = run(
        &mut p,
        json!({"path": "/bin/cat", "input-data": wrapped, "capture-output": "separated"}),
    );
    assert_eq!(decoded(&st["out-data"]), input);
    // Without input-data stdin is at end of file at once.
    let st = run(&mut p, json!({"path": "/bin/cat", "capture-output": true}));
    assert_eq!(st, json!({"exited": true, "exitcode": 0}));

    let both = "echo out; echo err >&2; exit 3";
    let sh = |mode: Value| json!({"path": "/bin/sh", "arg": ["-c", both], "capture-output": mode});
    let st = run(&mut p, sh(json!("merged")));
    assert_eq!(decoded(&st["out-data"]), b"out\nerr\n");
    assert!(st.get("err-data").is_none());
    assert_eq!(st["exitcode"], 3);
    let st = run(&mut p, sh(json!("stderr")));
    assert_eq!(
        st,
        json!({"exited": true, "exitcode": 3, "err-data": "ZXJyCg=="})
    );
    let st = run(&mut p, sh(json!("stdout")));
    assert_eq!(
        st,
        json!({"exited": true, "exitcode": 3, "out-data": "b3V0Cg=="})
    );
    for none in [json!("none"), json!(false)] {
        assert_eq!(
            run(&mut p, sh(none)),
            json!({"exited": true, "exitcode": 3})
        );
    }
    let st = run(
        &mut p,
        json!({"path": "/bin/sh", "arg": ["-c", "kill -9 $$"]}),
    );
    assert_eq!(st, json!({"exited": true, "signal": 9}));

    // The first exited status freed the entry; unknown pids are errors.
    let pid = p.ok("guest-exec", json!({"path": "/bin/true"}))["pid"].clone();
    exec_wait(&mut p, &pid);
    let e = p.err("guest-exec-status", json!({ "pid": pid }));
    assert_eq!(e["class"], "GenericError");
    assert_eq!(
        p.err("guest-exec-status", json!({"pid": 1}))["class"],
        "GenericError"
    );
    let e = p.err("guest-exec", json!({"path": "/nonexistent/prog"}));
    assert!(
        e["desc"]
            .as_str()
            .unwrap()
            .contains("\"/nonexistent/prog\""),
        "{e}"
    );
    let e = p.err("guest-exec", json!({"path": "no-such-program-here"}));
    assert!(
        e["desc"].as_str().unwrap().contains("no-such-program-here"),
        "{e}"
    );
    let e = p.err(
        "guest-exec",
        json!({"path": "/bin/true", "capture-output": "all"}),
    );
    assert_eq!(e["class"], "GenericError");
    let e = p.err(
        "guest-exec",
        json!({"path": "/bin/cat", "input-data": "!!"}),
    );
    assert_eq!(e["desc"], "Base64 data is not valid");
}

#[test]
fn exec_output_is_truncated_at_the_configured_cap() {
    let dir = Dir::new("qga-exec-cap");
    let agent = Agent::start_qga(dir.path(), &["--exec-output-limit=1000"]);
    let mut p = agent.connect_qga();
    let body = "head -c 5000 /dev/zero; echo small >&2";
    let st = run(
        &mut p,
        json!({"path": "/bin/sh", "arg": ["-c", body], "capture-output": true}),
    );
    assert_eq!(decoded(&st["out-data"]), vec![0u8; 1000]);
    assert_eq!(st["out-truncated"], true);
    assert_eq!(decoded(&st["err-data"]), b"small\n");
    assert!(st.get("err-truncated").is_none(), "{st}");
}

#[test]
fn the_table_is_bounded_ping_is_not_held_up_and_children_are_reaped() {
    let dir = Dir::new("qga-exec-table");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    let pids: Vec<Value> = (0..64)
        .map(|_| p.ok("guest-exec", json!({"path": "/bin/sleep", "arg": ["60"]}))["pid"].clone())
        .collect();
    let e = p.err("guest-exec", json!({"path": "/bin/true"}));
    assert!(e["desc"].as_str().unwrap().contains("64 processes"), "{e}");
    // Long-running processes do not hold up other requests.
    let t = Instant::now();
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(
        p.ok("guest-exec-status", json!({"pid": pids[0]})),
        json!({"exited": false})
    );
    for pid in &pids {
        let ok = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    for pid in &pids {
        assert_eq!(exec_wait(&mut p, pid), json!({"exited": true, "signal": 9}));
    }
    // Room again; and a process nobody asks about is reaped all the same.
    let st = run(&mut p, json!({"path": "/bin/true"}));
    assert_eq!(st["exitcode"], 0);
    for _ in 0..5 {
        p.ok("guest-exec", json!({"path": "/bin/true"}));
    }
    wait_for("no zombie children of guestd", || {
        zombies_of(agent.pid()).is_empty()
    });
}

/// Input a program does not read is held for it, but not beyond a total for all programs.
#[test]
fn input_data_held_for_programs_is_bounded_in_total() {
    let dir = Dir::new("qga-exec-input");
    let mut agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    let input = base64::encode(&vec![b'x'; 11 << 20]);
    let req = |input: &str| json!({"path": "/bin/sleep", "arg": ["60"], "input-data": input});
    p.ok("guest-exec", req(&input));
    p.ok("guest-exec", req(&input));
    let e = p.err("guest-exec", req(&input));
    assert!(e["desc"].as_str().unwrap().contains("input-data"), "{e}");
    // Small input still fits.
    p.ok("guest-exec", req(&base64::encode(b"small")));
    assert!(agent.signal_and_wait("TERM").success());
}

#[test]
fn unclaimed_entries_expire() {
    let dir = Dir::new("qga-exec-expiry");
    let agent = Agent::start_qga(dir.path(), &["--exec-expiry=1"]);
    let mut p = agent.connect_qga();
    let pid = p.ok("guest-exec", json!({"path": "/bin/true"}))["pid"].clone();
    wait_for("the entry to be forgotten", || {
        agent.log_text().contains(&format!("pid {pid} ended"))
    });
    let e = p.err("guest-exec-status", json!({ "pid": pid }));
    assert_eq!(e["class"], "GenericError");
}

#[test]
fn file_round_trip_limits_and_handles_across_connections() {
    let dir = Dir::new("qga-file");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    let path = dir.path().join("data");
    let path_s = path.to_str().unwrap();
    let h = p.ok("guest-file-open", json!({"path": path_s, "mode": "w+"}));
    assert!(h.as_i64().unwrap() >= 1000, "{h}");
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode & !0o600, 0, "created with {mode:o}");
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
    let w = p.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": base64::encode(&data)}),
    );
    assert_eq!(w, json!({"count": 10_000, "eof": false}));
    let w = p.ok(
        "guest-file-write",
        json!({"handle": h, "buf-b64": "YWJj", "count": 2}),
    );
    assert_eq!(w["count"], 2);
    let e = p.err(
        "guest-file-write",
        json!({"handle": h, "buf-b64": "YWJj", "count": 4}),
    );
    assert_eq!(e["desc"], "value '4' is invalid for argument count");
    let s = p.ok(
        "guest-file-seek",
        json!({"handle": h, "offset": 0, "whence": "set"}),
    );
    assert_eq!(s, json!({"position": 0, "eof": false}));
    // Read in chunks to the end.
    let mut got = Vec::new();
    loop {
        let r = p.ok("guest-file-read", json!({"handle": h, "count": 4096}));
        let chunk = decoded(&r["buf-b64"]);
        assert_eq!(r["count"], chunk.len());
        got.extend(chunk);
        if r["eof"] == true {
            break;
        }
        assert!(got.len() <= 10_002);
    }
    let mut want = data.clone();
    want.extend(b"ab");
    assert_eq!(got, want);
    let r = p.ok("guest-file-read", json!({"handle": h}));
    assert_eq!(r, json!({"count": 0, "buf-b64": "", "eof": true}));
    let s = p.ok(
        "guest-file-seek",
        json!({"handle": h, "offset": -2, "whence": 2}),
    );
    assert_eq!(s["position"], 10_000);
    let e = p.err(
        "guest-file-seek",
        json!({"handle": h, "offset": 0, "whence": 7}),
    );
    assert_eq!(e["desc"], "invalid whence code 7");
    for bad in [-1, (4 << 20) + 1] {
        let e = p.err("guest-file-read", json!({"handle": h, "count": bad}));
        assert_eq!(
            e["desc"],
            format!("value '{bad}' is invalid for argument count")
        );
    }
    assert_eq!(p.ok("guest-file-flush", json!({"handle": h})), json!({}));

    // The handle outlives the connection that opened it.
    drop(p);
    let mut p = agent.connect_qga();
    let s = p.ok(
        "guest-file-seek",
        json!({"handle": h, "offset": 0, "whence": "set"}),
    );
    assert_eq!(s["position"], 0);
    let r = p.ok("guest-file-read", json!({"handle": h, "count": 3}));
    assert_eq!(decoded(&r["buf-b64"]), &data[..3]);
    assert_eq!(p.ok("guest-file-close", json!({"handle": h})), json!({}));
    let e = p.err("guest-file-read", json!({"handle": h}));
    assert_eq!(e["desc"], format!("handle '{h}' has not been found"));

    let e = p.err("guest-file-open", json!({"path": path_s, "mode": "rw"}));
    assert_eq!(e["desc"], "invalid file open mode 'rw'");
    let e = p.err(
        "guest-file-open",
        json!({"path": dir.path().join("missing").to_str().unwrap()}),
    );
    assert!(e["desc"].as_str().unwrap().contains("missing"), "{e}");

    // At most 64 handles; numbers are never reused.
    let handles: Vec<i64> = (0..64)
        .map(|_| {
            p.ok("guest-file-open", json!({"path": "/dev/null"}))
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(handles.iter().all(|&n| n > h.as_i64().unwrap()));
    let e = p.err("guest-file-open", json!({"path": "/dev/null"}));
    assert!(e["desc"].as_str().unwrap().contains("64 handles"), "{e}");
    p.ok("guest-file-close", json!({"handle": handles[0]}));
    let again = p.ok("guest-file-open", json!({"path": "/dev/null"}));
    assert!(again.as_i64().unwrap() > handles[63]);
}

#[test]
fn set_user_password_through_chpasswd() {
    let dir = Dir::new("qga-passwd");
    let root = dir.path().join("root");
    let chpasswd = root.join("usr/sbin/chpasswd");
    let (args_file, stdin_file) = (dir.path().join("args"), dir.path().join("stdin"));
    script(
        &chpasswd,
        &format!(
            "echo \"$@\" > {a}; cat > {s}; if grep -q '^fail:' {s}; then echo \"bad line: $(cat {s})\" >&2; exit 1; fi",
            a = args_file.display(),
            s = stdin_file.display()
        ),
    );
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start_qga(dir.path(), &[&root_arg]);
    let mut p = agent.connect_qga();
    let pw = base64::encode(b"s3cret pass");
    let r = p.ok(
        "guest-set-user-password",
        json!({"username": "bob", "password": pw, "crypted": false}),
    );
    assert_eq!(r, json!({}));
    assert_eq!(fs::read(&stdin_file).unwrap(), b"bob:s3cret pass\n");
    assert_eq!(fs::read_to_string(&args_file).unwrap(), "\n");
    p.ok(
        "guest-set-user-password",
        json!({"username": "bob", "password": base64::encode(b"$6$x$y"), "crypted": true}),
    );
    assert_eq!(fs::read_to_string(&args_file).unwrap(), "-e\n");
    // chpasswd's complaint is quoted, the password masked.
    let e = p.err(
        "guest-set-user-password",
        json!({"username": "fail", "password": pw, "crypted": false}),
    );
    let desc = e["desc"].as_str().unwrap();
    assert!(desc.contains("failed to set user password"), "{desc}");
    assert!(desc.contains("bad line: fail:***"), "{desc}");
    let e = p.err(
        "guest-set-user-password",
        json!({"username": "bob", "password": base64::encode(b"a\nb"), "crypted": false}),
    );
    assert_eq!(e["desc"], "forbidden characters in raw password");
    for name in ["b:ob", "b\nob"] {
        let e = p.err(
            "guest-set-user-password",
            json!({"username": name, "password": pw, "crypted": false}),
        );
        assert_eq!(e["desc"], "forbidden characters in username");
    }
    fs::remove_file(&chpasswd).unwrap();
    let e = p.err(
        "guest-set-user-password",
        json!({"username": "bob", "password": pw, "crypted": false}),
    );
    assert_eq!(
        e["desc"],
        "chpasswd is not installed: cannot set passwords in this guest"
    );
    let log = agent.log_text();
    assert!(!log.contains("s3cret"), "the password reached the log");
}

#[test]
fn ssh_keys_are_added_listed_and_removed() {
    let dir = Dir::new("qga-ssh");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("home/alice")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:4321:4322:Alice:/home/alice:/bin/sh\n",
    )
    .unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start_qga(dir.path(), &[&root_arg]);
    let mut p = agent.connect_qga();
    let user = json!("alice");
    let e = p.err("guest-ssh-get-authorized-keys", json!({"username": user}));
    assert_eq!(e["class"], "GenericError");
    let (k1, k2, k3) = (
        "ssh-ed25519 AAAA1 a@x",
        "ssh-rsa BBBB2 b@x",
        "ssh-ed25519 CCCC3",
    );
    p.ok(
        "guest-ssh-add-authorized-keys",
        json!({"username": user, "keys": [k1, k2]}),
    );
    let ssh = root.join("home/alice/.ssh");
    let file = ssh.join("authorized_keys");
    let (dm, fm) = (fs::metadata(&ssh).unwrap(), fs::metadata(&file).unwrap());
    assert_eq!((dm.mode() & 0o777, dm.uid(), dm.gid()), (0o700, 4321, 4322));
    assert_eq!((fm.mode() & 0o777, fm.uid(), fm.gid()), (0o600, 4321, 4322));
    let keys = |p: &mut QgaPeer| {
        p.ok(
            "guest-ssh-get-authorized-keys",
            json!({"username": "alice"}),
        )
    };
    assert_eq!(keys(&mut p), json!({"keys": [k2, k1]}));
    p.ok(
        "guest-ssh-add-authorized-keys",
        json!({"username": user, "keys": [k2, k3]}),
    );
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        format!("{k1}\n{k2}\n{k3}\n")
    );
    p.ok(
        "guest-ssh-remove-authorized-keys",
        json!({"username": user, "keys": [k1, "ssh-rsa not-there"]}),
    );
    assert_eq!(keys(&mut p), json!({"keys": [k3, k2]}));
    p.ok(
        "guest-ssh-add-authorized-keys",
        json!({"username": user, "keys": [k1], "reset": true}),
    );
    assert_eq!(keys(&mut p), json!({"keys": [k1]}));
    for bad in ["", "# comment", "a\nb"] {
        let e = p.err(
            "guest-ssh-add-authorized-keys",
            json!({"username": user, "keys": [bad]}),
        );
        assert_eq!(e["desc"], format!("invalid OpenSSH public key: '{bad}'"));
    }
    let e = p.err(
        "guest-ssh-get-authorized-keys",
        json!({"username": "mallory"}),
    );
    assert_eq!(e["desc"], "failed to lookup user 'mallory'");
    // Removing from a missing file is a success.
    fs::remove_file(&file).unwrap();
    p.ok(
        "guest-ssh-remove-authorized-keys",
        json!({"username": user, "keys": [k1]}),
    );
}

#[test]
fn ssh_key_writes_refuse_links_the_user_planted() {
    let dir = Dir::new("qga-ssh-links");
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("home/bob/.ssh")).unwrap();
    fs::create_dir_all(root.join("root/.ssh")).unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nbob:x:4321:4322:Bob:/home/bob:/bin/sh\neve:x:4323:4322:Eve:/home/eve:/bin/sh\n",
    )
    .unwrap();
    let secret = root.join("etc/shadow");
    fs::write(&secret, "root:$6$secret-hash:19000::::::\n").unwrap();
    let keys = root.join("home/bob/.ssh/authorized_keys");
    std::os::unix::fs::symlink(&secret, &keys).unwrap();
    // Eve's .ssh points at root's.
    fs::create_dir_all(root.join("home/eve")).unwrap();
    std::os::unix::fs::symlink(root.join("root/.ssh"), root.join("home/eve/.ssh")).unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start_qga(dir.path(), &[&root_arg]);
    let mut p = agent.connect_qga();
    // A linked authorized_keys is not read into a file the user would own.
    let e = p.err(
        "guest-ssh-add-authorized-keys",
        json!({"username": "bob", "keys": ["ssh-ed25519 AAAA1 a@x"]}),
    );
    assert_eq!(e["class"], "GenericError");
    assert!(fs::symlink_metadata(&keys).unwrap().is_symlink());
    assert_eq!(
        fs::read_to_string(&secret).unwrap(),
        "root:$6$secret-hash:19000::::::\n"
    );
    let e = p.err(
        "guest-ssh-remove-authorized-keys",
        json!({"username": "bob", "keys": ["ssh-ed25519 AAAA1 a@x"]}),
    );
    assert_eq!(e["class"], "GenericError");
    // A linked .ssh is refused: root's keys are not written or handed to the user.
    let e = p.err(
        "guest-ssh-add-authorized-keys",
        json!({"username": "eve", "keys": ["ssh-ed25519 EEEE e@x"]}),
    );
    assert!(
        e["desc"].as_str().unwrap().contains("is not a directory"),
        "{e}"
    );
    assert!(!root.join("root/.ssh/authorized_keys").exists());
}

#[test]
fn shutdown_sends_no_reply_on_success_and_an_error_on_failure() {
    let dir = Dir::new("qga-shutdown");
    let marker = dir.path().join("powered-off");
    let off = dir.path().join("off.sh");
    script(&off, &format!("echo \"$@\" > {}", marker.display()));
    let cmd = format!("--poweroff-command={}", off.display());
    let agent = Agent::start_qga(dir.path(), &[&cmd]);
    let mut p = agent.connect_qga();
    let e = p.err("guest-shutdown", json!({"mode": "sleep"}));
    assert_eq!(
        e["desc"],
        "mode is invalid (valid values are: halt|powerdown|reboot)"
    );
    p.send_raw(br#"{"execute":"guest-shutdown","arguments":{"mode":"powerdown"},"id":"s1"}"#);
    wait_for("the power-off command", || marker.exists());
    // The next reply is the ping's: the shutdown sent none.
    let r = p.call(r#"{"execute":"guest-ping","id":"p1"}"#);
    assert_eq!(r, json!({"return": {}, "id": "p1"}));

    // With a power-off command that fails (the test default, /bin/false), the error is sent.
    let dir2 = Dir::new("qga-shutdown-fail");
    let agent2 = Agent::start_qga(dir2.path(), &[]);
    let mut p2 = agent2.connect_qga();
    let r = p2.call(r#"{"execute":"guest-shutdown","id":"s2"}"#);
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    assert_eq!(r["id"], "s2");
}

#[test]
fn suspend_checks_sys_power_and_writes_the_state_under_the_root() {
    let dir = Dir::new("qga-suspend");
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start_qga(dir.path(), &[&root_arg]);
    let mut p = agent.connect_qga();
    for cmd in [
        "guest-suspend-disk",
        "guest-suspend-ram",
        "guest-suspend-hybrid",
    ] {
        let e = p.err(cmd, json!({}));
        assert_eq!(
            e["desc"],
            "the requested suspend mode is not supported by the guest"
        );
    }
    // A scratch /sys/power: the "suspend" is a write to a plain file.
    let power = root.join("sys/power");
    fs::create_dir_all(&power).unwrap();
    fs::write(power.join("state"), "freeze mem\n").unwrap();
    let e = p.err("guest-suspend-disk", json!({}));
    assert_eq!(e["class"], "GenericError");
    p.send_raw(br#"{"execute":"guest-suspend-ram","id":1}"#);
    wait_for("the write of mem", || {
        fs::read_to_string(power.join("state")).unwrap_or_default() == "mem"
    });
    assert_eq!(p.call(r#"{"execute":"guest-ping","id":2}"#)["id"], 2);

    fs::write(power.join("state"), "mem disk\n").unwrap();
    fs::write(power.join("disk"), "[platform] shutdown reboot suspend\n").unwrap();
    p.send_raw(br#"{"execute":"guest-suspend-hybrid","id":3}"#);
    wait_for("the write of disk", || {
        fs::read_to_string(power.join("state")).unwrap_or_default() == "disk"
    });
    assert_eq!(fs::read_to_string(power.join("disk")).unwrap(), "suspend");
    assert_eq!(p.call(r#"{"execute":"guest-ping","id":4}"#)["id"], 4);
}

#[test]
fn set_time_validates_and_needs_a_hardware_clock() {
    // A scratch root has no hwclock and no /dev/rtc; no request here may set the clock.
    let dir = Dir::new("qga-time");
    let root = dir.path().join("root");
    fs::create_dir_all(&root).unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start_qga(dir.path(), &[&root_arg]);
    let mut p = agent.connect_qga();
    let e = p.err("guest-set-time", json!({}));
    assert_eq!(
        e["desc"],
        "cannot set the system time from the hardware clock: no hwclock program and no \
         /dev/rtc or /dev/rtc0 in this guest"
    );
    // 1969, 2070 and far beyond are refused before anything is set.
    for bad in [-1i64, 3_155_760_000_000_000_000, i64::MAX] {
        let e = p.err("guest-set-time", json!({ "time": bad }));
        assert_eq!(e["desc"], "Invalid time", "{bad}");
    }
    let e = p.err("guest-set-time", json!({"time": "now"}));
    assert_eq!(e["class"], "GenericError");
}
