// SPDX-License-Identifier: Apache-2.0
//! QGA storage and freeze commands against the real binary over a UNIX socket.
//!
//! The freeze tests never touch the machine's own file systems. Each runs guestd in a private
//! mount namespace (`unshare -m`) holding two loop-mounted ext4 images, with `--root` pointing
//! at a directory whose `proc/self/mountinfo` lists only those two mounts: even a full
//! guest-fsfreeze-freeze can reach nothing else. Nothing outside the namespace sees the
//! mounts, and a guard thaws them (through the namespace) before the agent is killed.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Dir, QgaPeer, guestd_bin, isolation};
use serde_json::{Value, json};

/// Generous bound for anything a loaded 2-core machine should do in a moment.
const WAIT: Duration = Duration::from_secs(30);

/// Polls `f` until it is true, or panics naming `what` after `WAIT`.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// guestd in a private mount namespace with two ext4 loop mounts at `<root>/m1` and
/// `<root>/m2`, the real sysfs at `<root>/sys`, `--root=<root>`, and the hooks of
/// `<dir>/hooks`.
struct Frozen {
    agent: Agent,
    root: PathBuf,
}

const SETUP: &str = r#"set -e
mount -o loop "$IMG1" "$R/m1"
mount -o loop "$IMG2" "$R/m2"
mount --bind /sys "$R/sys"
grep -E " $R/m[12] " /proc/self/mountinfo | sed "s| $R/| /|" > "$R/proc/self/mountinfo"
exec "$GUESTD" "$@"
"#;

impl Frozen {
    fn start(dir: &Path, extra: &[&str]) -> Frozen {
        let root = dir.join("root");
        for sub in ["m1", "m2", "proc/self", "sys"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        for img in ["img1", "img2"] {
            let img = dir.join(img);
            run(Command::new("truncate").arg("-s").arg("32M").arg(&img));
            run(Command::new("mkfs.ext4").arg("-q").arg(&img));
        }
        let sock = dir.join("g.sock");
        let qga = dir.join("qga.sock");
        let log = dir.join("guestd.log");
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", SETUP, "sh"])
            .args(["--config", "/dev/null", "-d", "1", "--log-level", "debug"])
            .arg(format!("--channel=unix-listen:{}", sock.display()))
            .arg(format!("--qga-channel=unix-listen:{}", qga.display()))
            .arg(format!("--root={}", root.display()))
            .args(isolation(dir))
            .args(extra)
            .env("IMG1", dir.join("img1"))
            .env("IMG2", dir.join("img2"))
            .env("R", &root)
            .env("GUESTD", guestd_bin())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            sock,
            qga,
            log,
        };
        wait_for("the QGA socket", || agent.qga.exists());
        let f = Frozen { agent, root };
        let info = std::fs::read_to_string(f.root.join("proc/self/mountinfo")).unwrap();
        assert_eq!(info.lines().count(), 2, "{info}");
        f
    }

    fn mount(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }

    /// A shell running `script` inside the agent's mount namespace.
    fn sh(&self, script: &str) -> Child {
        Command::new("nsenter")
            .args([
                "-t",
                &self.agent.pid().to_string(),
                "-m",
                "sh",
                "-c",
                script,
            ])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Starts a write of `text` to `<mount>/<file>` inside the namespace.
    fn writer(&self, mount: &str, file: &str, text: &str) -> Child {
        self.sh(&format!(
            "echo {text} > {}/{mount}/{file}",
            self.root.display()
        ))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Whatever happened, nothing stays frozen (FITHAW until it fails, in the namespace).
        if self.agent.child.try_wait().ok().flatten().is_none() {
            for m in ["m1", "m2"] {
                let script = format!(
                    "for i in 1 2 3 4 5; do fsfreeze -u {}/{m} 2>/dev/null || break; done",
                    self.root.display()
                );
                let _ = self.sh(&script).wait();
            }
        }
    }
}

/// The state letter of process `pid` (`D`: uninterruptible sleep), if it still runs.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.chars().next()
}

/// Waits until `child` blocks in the kernel (a write to a frozen file system).
fn wait_blocked(child: &mut Child) {
    let pid = child.id();
    wait_for("the writer to block", || {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the write finished while frozen"
        );
        state(pid) == Some('D')
    });
}

/// Waits for `child` to exit successfully.
fn wait_done(child: &mut Child) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "{st}");
            return;
        }
        assert!(Instant::now() < deadline, "the write never finished");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An fsfreeze hook that appends its argument to `<dir>/hook.log`, and fails with `fail_on`.
fn hook(dir: &Path, fail_on: &str) -> PathBuf {
    let hooks = dir.join("hooks/fsfreeze");
    std::fs::create_dir_all(&hooks).unwrap();
    let log = dir.join("hook.log");
    let body = format!(
        "#!/bin/sh\necho \"$1\" >> {}\n[ \"$1\" = \"{fail_on}\" ] && {{ echo nope >&2; exit 3; }}\nexit 0\n",
        log.display()
    );
    let path = hooks.join("10-log");
    std::fs::write(&path, body).unwrap();
    run(Command::new("chmod").arg("755").arg(&path));
    log
}

/// `guestd -p k=v` through the agent's control socket.
fn set_param(dir: &Path) -> std::process::Output {
    Command::new(guestd_bin())
        .args(["--config", "/dev/null", "-d", "1"])
        .args(isolation(dir))
        .args(["-p", "k=v"])
        .output()
        .unwrap()
}

fn status(p: &mut QgaPeer) -> Value {
    p.ok("guest-fsfreeze-status", json!({}))
}

#[test]
fn freeze_blocks_writes_and_disables_commands_until_thaw() {
    let dir = Dir::new("qga-freeze");
    let hook_log = hook(dir.path(), "none");
    let f = Frozen::start(dir.path(), &[]);
    let mut p = f.agent.connect_qga();
    let marker = dir.path().join("state/fsfreeze.frozen");

    // Only the two loop mounts exist under the root; both are listed, with sizes.
    let info = p.ok("guest-get-fsinfo", json!({}));
    let points: Vec<&str> = info
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["mountpoint"].as_str().unwrap())
        .collect();
    assert_eq!(points, ["/m2", "/m1"], "{info}");
    for e in info.as_array().unwrap() {
        assert_eq!(e["type"], "ext4");
        assert!(e["name"].as_str().unwrap().starts_with("loop"), "{e}");
        let (used, total) = (e["used-bytes"].as_u64(), e["total-bytes"].as_u64());
        let privileged = e["total-bytes-privileged"].as_u64().unwrap();
        assert!(used.unwrap() <= total.unwrap() && total.unwrap() <= privileged);
        assert!(privileged > 20 << 20 && privileged <= 32 << 20, "{e}");
        assert!(e["disk"].is_array());
    }
    // Trimmed per path; a loop device passes discards to its file.
    let trim = p.ok("guest-fstrim", json!({"minimum": 0}));
    let paths = trim["paths"].as_array().unwrap();
    assert_eq!(paths.len(), 2, "{trim}");
    for t in paths {
        assert!(
            t.get("trimmed").is_some() || t.get("error").is_some(),
            "{t}"
        );
    }

    assert_eq!(status(&mut p), "thawed");
    assert_eq!(p.ok("guest-fsfreeze-freeze", json!({})), json!(2));
    assert_eq!(status(&mut p), "frozen");
    assert!(marker.exists());
    let mut w = f.writer("m1", "file", "written-while-frozen");
    wait_blocked(&mut w);
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
    for cmd in [
        "guest-get-fsinfo",
        "guest-fsfreeze-freeze",
        "guest-fsfreeze-freeze-list",
    ] {
        let e = p.err(cmd, json!({}));
        assert_eq!(
            e,
            json!({"class": "CommandNotFound",
                   "desc": format!("Command {cmd} has been disabled: the agent is in frozen state")})
        );
    }
    let enabled: Vec<Value> = p.ok("guest-info", json!({}))["supported_commands"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["enabled"] == true)
        .map(|c| c["name"].clone())
        .collect();
    assert!(enabled.contains(&json!("guest-fsfreeze-thaw")) && enabled.len() == 6);

    // The store refuses writes (a write could block the loop), the log records nothing.
    let kv = set_param(dir.path());
    let err = String::from_utf8_lossy(&kv.stderr);
    assert!(
        !kv.status.success() && err.contains("the guest's file systems are frozen"),
        "{kv:?}"
    );
    assert!(!f.agent.log_text().contains("guest-ping called"));

    assert_eq!(p.ok("guest-fsfreeze-thaw", json!({})), json!(2));
    wait_done(&mut w);
    let mut check = f.sh(&format!(
        "grep -q written-while-frozen {}",
        f.mount("m1/file")
    ));
    wait_done(&mut check);
    assert_eq!(status(&mut p), "thawed");
    assert!(!marker.exists());
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "freeze\nthaw\n"
    );
    // Thawing a thawed guest is 0, not an error, and runs no hooks.
    assert_eq!(p.ok("guest-fsfreeze-thaw", json!({})), json!(0));
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "freeze\nthaw\n"
    );
    let log = f.agent.log_text();
    assert!(log.contains("logging re-enabled after thaw"), "{log}");
    let kv = set_param(dir.path());
    assert!(kv.status.success(), "{kv:?}");
}

#[test]
fn freeze_list_freezes_only_the_listed_mounts() {
    let dir = Dir::new("qga-freeze-list");
    let f = Frozen::start(dir.path(), &[]);
    let mut p = f.agent.connect_qga();
    let list = json!({"mountpoints": ["/m2", "/not-mounted"]});
    assert_eq!(p.ok("guest-fsfreeze-freeze-list", list), json!(1));
    let mut blocked = f.writer("m2", "f", "x");
    wait_blocked(&mut blocked);
    let mut free = f.writer("m1", "f", "x");
    wait_done(&mut free);
    assert_eq!(p.ok("guest-fsfreeze-thaw", json!({})), json!(1));
    wait_done(&mut blocked);
    // Nothing listed that is mounted: nothing frozen, and the agent stays thawed.
    let none = json!({"mountpoints": ["/elsewhere"]});
    assert_eq!(p.ok("guest-fsfreeze-freeze-list", none), json!(0));
    assert_eq!(status(&mut p), "thawed");
}

#[test]
fn the_agent_thaws_by_itself_after_the_timeout() {
    let dir = Dir::new("qga-autothaw");
    let hook_log = hook(dir.path(), "none");
    let f = Frozen::start(dir.path(), &["--fsfreeze-timeout=2"]);
    let mut p = f.agent.connect_qga();
    let list = json!({"mountpoints": ["/m1"]});
    assert_eq!(p.ok("guest-fsfreeze-freeze-list", list), json!(1));
    let mut w = f.writer("m1", "f", "x");
    wait_blocked(&mut w);
    wait_for("the automatic thaw", || status(&mut p) == "thawed");
    wait_done(&mut w);
    wait_for("the thaw hook", || {
        std::fs::read_to_string(&hook_log).unwrap() == "freeze\nthaw\n"
    });
    assert!(!dir.path().join("state/fsfreeze.frozen").exists());
    let log = f.agent.log_text();
    assert!(
        log.contains("the host never thawed the file systems"),
        "{log}"
    );
}

#[test]
fn a_failing_freeze_hook_aborts_the_freeze() {
    let dir = Dir::new("qga-hookfail");
    let hook_log = hook(dir.path(), "freeze");
    let f = Frozen::start(dir.path(), &[]);
    let mut p = f.agent.connect_qga();
    let e = p.err("guest-fsfreeze-freeze", json!({}));
    assert_eq!(e["class"], "GenericError");
    let desc = e["desc"].as_str().unwrap();
    assert!(
        desc.starts_with("the fsfreeze hook failed, nothing was frozen: hooks failed: 10-log"),
        "{desc}"
    );
    assert_eq!(status(&mut p), "thawed");
    let mut w = f.writer("m1", "f", "x");
    wait_done(&mut w);
    // The thaw hooks undo what the freeze hooks did.
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "freeze\nthaw\n"
    );
    assert!(!dir.path().join("state/fsfreeze.frozen").exists());
}

/// A host that asks for a freeze and leaves while the freeze hooks run, then a new host
/// that thaws: the freeze does not happen when the hooks end.
#[test]
fn a_thaw_while_the_freeze_hooks_run_cancels_the_freeze() {
    let dir = Dir::new("qga-freeze-cancel");
    let hooks = dir.path().join("hooks/fsfreeze");
    std::fs::create_dir_all(&hooks).unwrap();
    let (hook_log, go) = (dir.path().join("hook.log"), dir.path().join("go"));
    // The freeze hook says it started, then waits for the test's go-ahead.
    let body = format!(
        "#!/bin/sh\necho \"$1\" >> {log}\n[ \"$1\" = freeze ] || exit 0\n\
         while [ ! -e {go} ]; do sleep 0.05; done\nexit 0\n",
        log = hook_log.display(),
        go = go.display()
    );
    let path = hooks.join("10-wait");
    std::fs::write(&path, body).unwrap();
    run(Command::new("chmod").arg("755").arg(&path));
    let f = Frozen::start(dir.path(), &[]);
    let mut first = f.agent.connect_qga();
    first.send_raw(br#"{"execute":"guest-fsfreeze-freeze"}"#);
    wait_for("the freeze hook", || hook_log.exists());
    drop(first);
    let mut second = f.agent.connect_qga();
    assert_eq!(second.ok("guest-fsfreeze-thaw", json!({})), json!(0));
    std::fs::write(&go, "").unwrap();
    wait_for("the thaw hook after the cancelled freeze", || {
        std::fs::read_to_string(&hook_log).unwrap_or_default() == "freeze\nthaw\n"
    });
    assert_eq!(status(&mut second), "thawed");
    let mut w = f.writer("m1", "f", "x");
    wait_done(&mut w);
    assert!(
        f.agent
            .log_text()
            .contains("a thaw arrived while the fsfreeze hooks ran")
    );
}

#[test]
fn sigterm_while_frozen_thaws_before_the_agent_exits() {
    let dir = Dir::new("qga-freeze-term");
    let hook_log = hook(dir.path(), "none");
    let mut f = Frozen::start(dir.path(), &[]);
    let mut p = f.agent.connect_qga();
    assert_eq!(p.ok("guest-fsfreeze-freeze", json!({})), json!(2));
    let mut w = f.writer("m2", "f", "x");
    wait_blocked(&mut w);
    // The writer keeps the namespace and its mounts alive after the agent is gone.
    let st = f.agent.signal_and_wait("TERM");
    assert!(st.success(), "{st}");
    wait_done(&mut w);
    assert_eq!(
        std::fs::read_to_string(&hook_log).unwrap(),
        "freeze\nthaw\n"
    );
    assert!(!dir.path().join("state/fsfreeze.frozen").exists());
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap()
}

#[test]
fn a_marker_of_this_boot_makes_the_agent_start_frozen() {
    let dir = Dir::new("qga-marker");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("fsfreeze.frozen"), boot_id()).unwrap();
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    assert_eq!(status(&mut p), "frozen");
    // Nothing is logged while frozen, from the very start.
    let log = agent.log_text();
    assert!(!log.contains("starting"), "logged while frozen: {log}");
    assert_eq!(p.ok("guest-ping", json!({})), json!({}));
    let e = p.err("guest-get-disks", json!({}));
    assert_eq!(e["class"], "CommandNotFound");
    // The store stays closed until the thaw: no control socket yet.
    let ctl = dir.path().join("ctl.sock");
    assert!(!ctl.exists());
    // Nothing of this machine is frozen: the count is 0.
    assert_eq!(p.ok("guest-fsfreeze-thaw", json!({})), json!(0));
    assert_eq!(status(&mut p), "thawed");
    assert!(!state.join("fsfreeze.frozen").exists());
    wait_for("the control socket", || ctl.exists());
    assert!(p.ok("guest-get-disks", json!({})).is_array());
}

#[test]
fn a_marker_of_an_earlier_boot_is_removed() {
    let dir = Dir::new("qga-marker-stale");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(
        state.join("fsfreeze.frozen"),
        "00000000-0000-0000-0000-000000000000\n",
    )
    .unwrap();
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    assert_eq!(status(&mut p), "thawed");
    assert!(!state.join("fsfreeze.frozen").exists());
}

/// Checks the members libvirt requires of one disk address, and their integer types.
fn check_address(a: &Value) {
    let pci = &a["pci-controller"];
    for k in ["domain", "bus", "slot", "function"] {
        assert!(pci[k].is_i64(), "{a}");
    }
    for k in ["bus", "target", "unit"] {
        assert!(a[k].is_u64(), "{a}");
    }
    assert!(a["bus-type"].is_string() && a["dev"].as_str().unwrap().starts_with("/dev/"));
}

#[test]
fn fsinfo_and_disks_of_this_machine_are_well_formed() {
    let dir = Dir::new("qga-fsinfo");
    let agent = Agent::start_qga(dir.path(), &[]);
    let mut p = agent.connect_qga();
    let info = p.ok("guest-get-fsinfo", json!({}));
    let list = info.as_array().unwrap();
    assert!(
        list.iter().any(|e| e["mountpoint"] == "/"),
        "the root file system is listed: {info}"
    );
    let mut names = std::collections::HashSet::new();
    for e in list {
        for k in ["name", "mountpoint", "type"] {
            assert!(e[k].is_string(), "{e}");
        }
        assert!(
            !["proc", "sysfs", "tmpfs", "nfs", "nfs4", "overlay"]
                .contains(&e["type"].as_str().unwrap()),
            "{e}"
        );
        assert!(names.insert(e["name"].clone()), "a device twice: {info}");
        e["disk"].as_array().unwrap().iter().for_each(check_address);
        if let Some(total) = e.get("total-bytes-privileged") {
            let used = e["used-bytes"].as_u64().unwrap();
            assert!(used <= e["total-bytes"].as_u64().unwrap());
            assert!(e["total-bytes"].as_u64().unwrap() <= total.as_u64().unwrap());
        }
    }
    let disks = p.ok("guest-get-disks", json!({}));
    for d in disks.as_array().unwrap() {
        assert!(d["name"].as_str().unwrap().starts_with("/dev/"), "{d}");
        assert!(d["partition"].is_boolean(), "{d}");
        if let Some(a) = d.get("address") {
            check_address(a);
        }
    }
    let e = p.err("guest-fstrim", json!({"minimum": -1}));
    assert_eq!(e["class"], "GenericError");
    let e = p.err("guest-get-fsinfo", json!({"x": 1}));
    assert_eq!(e["desc"], "Parameter 'x' is unexpected");
}
