// SPDX-License-Identifier: Apache-2.0
//! The libvirt smoke test: real libvirt drives guestd in a real guest. It boots the test image
//! as a transient TCG domain (direct kernel boot, no NIC, the test disk as virtio-blk, the
//! `org.qemu.guest_agent.0` channel libvirt connects to, an `ovirt-guest-agent.0` channel
//! beside it as oVirt defines) and checks what virsh makes of guestd's answers: the agent
//! connecting, `qemu-agent-command` passthrough, `domifaddr --source agent`, `guestinfo`,
//! `domfsinfo`, `domtime`, `set-user-password`, `domfsfreeze`/`domfsthaw`, guestd's key-value
//! vendor commands (a value set and read back, the guest's boot message read and
//! acknowledged), and `shutdown --mode agent` reaching `shut off`.
//!
//! It uses the system libvirtd if one answers on `qemu:///system`; otherwise (no systemd, as
//! in CI) it starts `virtlogd -d` and `libvirtd -d` itself, never starts a network, and stops
//! exactly the daemons it started when it ends, failed or not. Every virsh call runs under
//! `timeout(1)`. On failure it prints the guest console, the domain's QEMU log and the
//! libvirtd log.
//!
//! Run with `make smoke-libvirt` (part of `make test`); it needs libvirt-daemon-system,
//! libvirt-clients, qemu-system-x86, a Debian kernel, busybox-static and e2fsprogs. With
//! `SMOKE_ALLOW_MISSING=1` a check whose agent commands guestd does not list as enabled in
//! `guest-info` is reported as skipped instead of failing (for branches that lack them).

mod common;
mod vm;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Dir;
use serde_json::{Value, json};

const SEC: Duration = Duration::from_secs(1);
/// The libvirt connection the test uses.
const URI: &str = "qemu:///system";
/// Seconds after which `timeout(1)` ends a virsh call, so a hung libvirt cannot hang CI.
const VIRSH_TIMEOUT: &str = "60";
/// guestd's vendor key-value commands (QGA's `__RFQDN_` vendor prefix), and the key used.
const KV_SET: &str = "__io.github.guestd_set-param";
const KV_GET: &str = "__io.github.guestd_get-param";
const KV_KEY: &str = "libvirt.smoke";
/// guestd's outbox over QGA: what the guest queued for the host (here the image's boot
/// message, `guestd -p smoke.boot=<boot id>` from /etc/test.sh), read and acknowledged.
const KV_MESSAGES: &str = "__io.github.guestd_get-messages";
const KV_ACK: &str = "__io.github.guestd_ack-messages";
/// The image's test user (initramfs/rootfs/etc/passwd; its utmp record in build.sh).
const USER: &str = "tester";
/// Its host name and os-release ID (initramfs/rootfs/etc).
const HOSTNAME: &str = "guestd-vm";
const OS_ID: &str = "guestd-test";

/// What a virsh call failed with, as one line for a failure message.
type CheckResult = Result<(), String>;

/// Runs `virsh -c URI ARGS...` under `timeout(1)`: its standard output, or an error naming
/// the call, its exit status and its standard error.
fn virsh(args: &[&str]) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["-k", "5", VIRSH_TIMEOUT, "virsh", "-c", URI])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running timeout virsh: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        return Ok(stdout);
    }
    let why = match out.status.code() {
        Some(124) | Some(137) => format!("timed out after {VIRSH_TIMEOUT} s"),
        _ => format!("{}", out.status),
    };
    Err(format!(
        "virsh {} failed ({why}): {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim(),
        stdout.trim()
    ))
}

/// `virsh qemu-agent-command DOM JSON`: the agent's whole reply object.
fn agent(dom: &str, request: &Value) -> Result<Value, String> {
    let text = virsh(&[
        "qemu-agent-command",
        dom,
        "--timeout",
        "30",
        &request.to_string(),
    ])?;
    serde_json::from_str(&text).map_err(|e| format!("reply to {request} is not JSON: {e}: {text}"))
}

/// `execute` with `arguments` through libvirt: the `return` value.
fn agent_ok(dom: &str, execute: &str, arguments: Value) -> Result<Value, String> {
    let r = agent(dom, &json!({"execute": execute, "arguments": arguments}))?;
    r.get("return")
        .cloned()
        .ok_or_else(|| format!("{execute}: no return in {r}"))
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Sends `sig` to `pid` with kill(1).
fn kill(sig: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Stops `pid` (SIGTERM, then SIGKILL after `grace`); whether it went.
fn stop(pid: u32, grace: Duration) -> bool {
    kill("TERM", pid);
    let deadline = Instant::now() + grace;
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if !gone(pid) {
        kill("KILL", pid);
        std::thread::sleep(Duration::from_millis(500));
    }
    gone(pid)
}

/// The libvirt daemons: the system's, or the ones this test started (stopped on drop, by
/// pid, in reverse order).
struct Daemons {
    started: Vec<(&'static str, u32)>,
    log: PathBuf,
}

impl Daemons {
    fn up(dir: &Path) -> Daemons {
        let which = Command::new("sh")
            .args(["-c", "command -v virsh"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            which,
            "virsh is missing: install libvirt-daemon-system libvirt-clients"
        );
        let log = dir.join("libvirtd.log");
        let mut d = Daemons {
            started: Vec::new(),
            log,
        };
        if virsh(&["version"]).is_ok() {
            eprintln!("smoke-libvirt: using the running libvirtd");
            return d;
        }
        // A daemon started here must not bring up a network (libvirt's "default" network
        // would add a bridge and a dnsmasq to the machine): refuse if one would autostart.
        let autostart: Vec<String> = std::fs::read_dir("/etc/libvirt/qemu/networks/autostart")
            .map(|r| {
                r.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            autostart.is_empty(),
            "libvirtd would autostart networks {autostart:?}; disable them first \
             (rm /etc/libvirt/qemu/networks/autostart/*.xml)"
        );
        for name in ["virtlogd", "libvirtd"] {
            let pidfile = dir.join(format!("{name}.pid"));
            let st = Command::new(name)
                .arg("-d")
                .arg("-p")
                .arg(&pidfile)
                // Warnings, plus the agent traffic, to the test's own log.
                .env("LIBVIRT_DEBUG", "3")
                .env("LIBVIRT_LOG_FILTERS", "1:qemu.qemu_agent")
                .env("LIBVIRT_LOG_OUTPUTS", format!("1:file:{}", d.log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("starting {name}: {e} (install libvirt-daemon-system)"));
            assert!(st.success(), "{name} -d failed: {st}");
            // `-d` returns once the daemon is up and has written its pid file.
            let pid: u32 = vm::wait_for(
                &format!("{name}'s pid file"),
                Instant::now() + 10 * SEC,
                Duration::from_millis(50),
                || std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok(),
            );
            eprintln!("smoke-libvirt: started {name} (pid {pid})");
            d.started.push((name, pid));
        }
        let t = Instant::now();
        vm::wait_for(
            "libvirtd to answer virsh version",
            t + 60 * SEC,
            Duration::from_millis(200),
            || virsh(&["version"]).ok(),
        );
        eprintln!(
            "smoke-libvirt: libvirtd answers after {:.1} s",
            t.elapsed().as_secs_f64()
        );
        d
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        if std::thread::panicking() && self.log.exists() {
            eprintln!(
                "--- libvirtd log (tail) ---\n{}",
                vm::tail(&self.log, 16 * 1024)
            );
        }
        while let Some((name, pid)) = self.started.pop() {
            let ok = stop(pid, 20 * SEC);
            eprintln!(
                "smoke-libvirt: {} {name} (pid {pid})",
                if ok { "stopped" } else { "could not stop" }
            );
        }
    }
}

/// The transient test domain: destroyed on drop if still running (and its QEMU killed if
/// libvirt could not), with the guest console and QEMU log printed on failure.
struct Domain {
    name: String,
    console: PathBuf,
    qemu_pid: Option<u32>,
}

impl Domain {
    fn create(dir: &Path, name: &str) -> Domain {
        let disk = dir.join("data.img");
        vm::make_disk(&disk);
        let console = dir.join("console.log");
        let xml = domain_xml(name, &vm::kernel(), &vm::initrd(), &disk, &console);
        let file = dir.join("domain.xml");
        std::fs::write(&file, xml).unwrap();
        let mut dom = Domain {
            name: name.to_owned(),
            console,
            qemu_pid: None,
        };
        if let Err(e) = virsh(&["create", file.to_str().unwrap()]) {
            panic!("creating the domain: {e}");
        }
        dom.qemu_pid = std::fs::read_to_string(format!("/run/libvirt/qemu/{name}.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        dom
    }

    /// Whether the domain is shut off: `domstate` says so, or the transient domain is gone.
    fn is_off(&self) -> bool {
        match virsh(&["domstate", &self.name]) {
            Ok(state) => state.trim() == "shut off",
            Err(e) => e.contains("ailed to get domain") || e.contains("Domain not found"),
        }
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // libvirt keeps a log per domain name; each run has its own name, so a passing run
        // removes its log instead of leaving one behind per run.
        let qemu_log = PathBuf::from(format!("/var/log/libvirt/qemu/{}.log", self.name));
        if std::thread::panicking() {
            eprintln!(
                "--- guest console ---\n{}",
                vm::tail(&self.console, 16 * 1024)
            );
            eprintln!(
                "--- {} ---\n{}",
                qemu_log.display(),
                vm::tail(&qemu_log, 8 * 1024)
            );
        }
        if !self.is_off() {
            if let Err(e) = virsh(&["destroy", &self.name]) {
                eprintln!("smoke-libvirt: {e}");
            }
        }
        if let Some(pid) = self.qemu_pid.filter(|&p| !gone(p)) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&format!("guest={}", self.name)) {
                eprintln!("smoke-libvirt: killing the domain's QEMU (pid {pid})");
                stop(pid, 5 * SEC);
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&qemu_log);
        }
    }
}

/// The domain: TCG, 256 MiB, one vCPU, ACPI (without it a guest power-off only halts),
/// direct kernel boot of the test image, no NIC, the test disk as virtio-blk `vda`, the serial console to a file, and both agent channels
/// (libvirt picks their socket paths). QEMU runs as root without relabelling, so the kernel
/// in /boot and the files in the test's directory are used as they are.
fn domain_xml(name: &str, kernel: &Path, initrd: &Path, disk: &Path, console: &Path) -> String {
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>console=ttyS0 quiet panic=-1</cmdline>
  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'>
      <source path='{console}'/>
      <target port='0'/>
    </serial>
    <channel type='unix'>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <channel type='unix'>
      <target type='virtio' name='ovirt-guest-agent.0'/>
    </channel>
    <memballoon model='none'/>
  </devices>
  <seclabel type='static' model='dac' relabel='no'>
    <label>+0:+0</label>
  </seclabel>
</domain>
",
        kernel = kernel.display(),
        initrd = initrd.display(),
        disk = disk.display(),
        console = console.display(),
    )
}

/// `key : value` lines (virsh guestinfo) as a map.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Decodes standard base64 (guest-file-read's `buf-b64`).
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let val = |c: u8| -> Result<u32, String> {
        Ok(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("bad base64 byte {c:#x}")),
        } as u32)
    };
    let bytes: Vec<u8> = s.bytes().filter(|&c| c != b'=' && c != b'\n').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let k = chunk.len().saturating_sub(1);
        out.extend_from_slice(&n.to_be_bytes()[1..1 + k]);
    }
    Ok(out)
}

/// A guest file's contents, through guest-file-open/read/close.
fn guest_file(dom: &str, path: &str) -> Result<String, String> {
    let handle = agent_ok(dom, "guest-file-open", json!({"path": path, "mode": "r"}))?;
    let mut data = Vec::new();
    let result = loop {
        let r = match agent_ok(
            dom,
            "guest-file-read",
            json!({"handle": handle, "count": 65536}),
        ) {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        match base64_decode(r["buf-b64"].as_str().unwrap_or_default()) {
            Ok(b) => data.extend_from_slice(&b),
            Err(e) => break Err(format!("guest-file-read: {e}: {r}")),
        }
        if r["eof"] == true || r["count"] == 0 {
            break Ok(());
        }
    };
    let closed = agent_ok(dom, "guest-file-close", json!({"handle": handle}));
    result?;
    closed?;
    String::from_utf8(data).map_err(|e| format!("{path} is not UTF-8: {e}"))
}

/// The password field of `user` in a shadow file's text.
fn shadow_hash(shadow: &str, user: &str) -> Option<String> {
    shadow.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then(|| f.next().unwrap_or_default().to_owned())
    })
}

/// The checks, run one after another: each passes, fails (with its message) or, with
/// `SMOKE_ALLOW_MISSING=1`, is skipped when an agent command it needs is not enabled.
struct Checks {
    dom: String,
    enabled: Vec<String>,
    allow_missing: bool,
    passed: Vec<String>,
    skipped: Vec<String>,
    failed: Vec<String>,
}

impl Checks {
    fn run(&mut self, name: &str, needs: &[&str], f: impl FnOnce(&str) -> CheckResult) {
        let missing: Vec<&str> = needs
            .iter()
            .copied()
            .filter(|n| !self.enabled.iter().any(|e| e == n))
            .collect();
        if self.allow_missing && !missing.is_empty() {
            eprintln!(
                "smoke-libvirt: SKIP {name}: guestd lacks {}",
                missing.join(", ")
            );
            self.skipped
                .push(format!("{name} (needs {})", missing.join(", ")));
            return;
        }
        let t = Instant::now();
        match f(&self.dom) {
            Ok(()) => {
                eprintln!(
                    "smoke-libvirt: ok   {name} ({:.1} s)",
                    t.elapsed().as_secs_f64()
                );
                self.passed.push(name.to_owned());
            }
            Err(e) => {
                eprintln!("smoke-libvirt: FAIL {name}: {e}");
                self.failed.push(format!("{name}: {e}"));
            }
        }
    }
}

fn check_ping(dom: &str) -> CheckResult {
    let r = agent(dom, &json!({"execute": "guest-ping"}))?;
    (r == json!({"return": {}}))
        .then_some(())
        .ok_or_else(|| format!("guest-ping answered {r}"))
}

fn check_info(dom: &str) -> CheckResult {
    let info = agent_ok(dom, "guest-info", json!({}))?;
    if info["version"] != env!("CARGO_PKG_VERSION") {
        return Err(format!("guest-info version is not guestd's: {info}"));
    }
    Ok(())
}

/// An error reply passes through libvirt as an error, and the agent stays usable after it.
fn check_error_passthrough(dom: &str) -> CheckResult {
    match agent(dom, &json!({"execute": "guest-no-such-command"})) {
        Ok(r) => return Err(format!("an unknown command answered {r}")),
        Err(e) if e.contains("has not been found") => {}
        Err(e) => return Err(format!("an unknown command: not CommandNotFound: {e}")),
    }
    check_ping(dom).map_err(|e| format!("after an error reply: {e}"))
}

/// The guest has no NIC: the agent reports lo with 127.0.0.1/8.
fn check_domifaddr(dom: &str) -> CheckResult {
    let out = virsh(&["domifaddr", dom, "--source", "agent"])?;
    let lo = out
        .lines()
        .any(|l| l.split_whitespace().next() == Some("lo") && l.contains("127.0.0.1/8"));
    lo.then_some(())
        .ok_or_else(|| format!("no lo with 127.0.0.1/8 in:\n{out}"))
}

/// Every section asked for explicitly (so a missing one is an error, not skipped).
fn check_guestinfo(dom: &str) -> CheckResult {
    let out = virsh(&[
        "guestinfo",
        dom,
        "--user",
        "--os",
        "--timezone",
        "--hostname",
        "--filesystem",
    ])?;
    let f = fields(&out);
    let want = |k: &str, v: &str| -> CheckResult {
        match f.get(k) {
            Some(x) if x == v => Ok(()),
            other => Err(format!("guestinfo {k} = {other:?}, expected {v:?}:\n{out}")),
        }
    };
    want("os.id", OS_ID)?;
    want("hostname", HOSTNAME)?;
    if !f.contains_key("timezone.offset") {
        return Err(format!("guestinfo has no timezone.offset:\n{out}"));
    }
    let users: usize = f
        .get("user.count")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !(0..users).any(|i| f.get(&format!("user.{i}.name")).map(String::as_str) == Some(USER)) {
        return Err(format!("guestinfo lists no user {USER}:\n{out}"));
    }
    let fs: usize = f.get("fs.count").and_then(|n| n.parse().ok()).unwrap_or(0);
    let data = (0..fs)
        .find(|i| f.get(&format!("fs.{i}.mountpoint")).map(String::as_str) == Some(vm::DISK_MOUNT));
    let Some(i) = data else {
        return Err(format!(
            "guestinfo lists no {} file system:\n{out}",
            vm::DISK_MOUNT
        ));
    };
    want(&format!("fs.{i}.fstype"), "ext4")?;
    want(&format!("fs.{i}.disk.0.alias"), "vda")
}

/// /data on the domain's virtio disk vda, matched by libvirt through its PCI address.
fn check_domfsinfo(dom: &str) -> CheckResult {
    let out = virsh(&["domfsinfo", dom])?;
    let row = out.lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.first() == Some(&vm::DISK_MOUNT)).then_some(cols)
    });
    match row {
        Some(cols) if cols.len() >= 4 && cols[2] == "ext4" && cols[3] == "vda" => Ok(()),
        _ => Err(format!(
            "no '{} <name> ext4 vda' row in:\n{out}",
            vm::DISK_MOUNT
        )),
    }
}

/// The guest's clock (from the emulated RTC at boot) is within a minute of the host's.
fn check_domtime(dom: &str) -> CheckResult {
    let out = virsh(&["domtime", dom])?;
    let guest: i64 = fields(&out)
        .get("Time")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| format!("no Time in domtime output: {out}"))?;
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let host = i64::try_from(host).unwrap();
    ((guest - host).abs() <= 60)
        .then_some(())
        .ok_or_else(|| format!("guest time {guest} is {} s off the host's", guest - host))
}

/// virsh set-user-password changes the test user's hash in the guest's /etc/shadow; where
/// the host has busybox, the new hash is checked to be of the password given.
fn check_set_user_password(dom: &str) -> CheckResult {
    const PASSWORD: &str = "smoke-libvirt pass 1";
    let before = shadow_hash(&guest_file(dom, "/etc/shadow")?, USER)
        .ok_or_else(|| format!("no {USER} in the guest's /etc/shadow"))?;
    virsh(&["set-user-password", dom, USER, PASSWORD])?;
    let after = shadow_hash(&guest_file(dom, "/etc/shadow")?, USER)
        .ok_or_else(|| format!("no {USER} in the guest's /etc/shadow after the change"))?;
    if after == before || !after.starts_with('$') {
        return Err(format!("{USER}'s hash went from {before:?} to {after:?}"));
    }
    // $id$salt$hash: hash the password again with the same salt on the host.
    let mut parts = after.split('$');
    let (Some(""), Some("6"), Some(salt)) = (parts.next(), parts.next(), parts.next()) else {
        return Ok(());
    };
    if let Ok(out) = Command::new("busybox")
        .args(["mkpasswd", "-m", "sha512", PASSWORD, salt])
        .output()
    {
        let want = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if out.status.success() && want != after {
            return Err(format!(
                "{USER}'s new hash {after} is not of the password set"
            ));
        }
    }
    Ok(())
}

/// Freeze /data only, see the agent report frozen, thaw, see it thawed.
fn check_fsfreeze(dom: &str) -> CheckResult {
    let status = || -> Result<String, String> {
        let s = agent_ok(dom, "guest-fsfreeze-status", json!({}))?;
        Ok(s.as_str().unwrap_or_default().to_owned())
    };
    let out = virsh(&["domfsfreeze", dom, "--mountpoint", vm::DISK_MOUNT])?;
    let frozen = status();
    // Thaw whatever happened, so the rest of the run is not stuck on a frozen disk.
    let thawed = virsh(&["domfsthaw", dom]);
    if !out.contains("Froze 1 filesystem") {
        return Err(format!(
            "domfsfreeze --mountpoint {}: {out}",
            vm::DISK_MOUNT
        ));
    }
    match frozen? {
        s if s == "frozen" => {}
        s => return Err(format!("guest-fsfreeze-status while frozen: {s:?}")),
    }
    let thawed = thawed?;
    if !thawed.contains("Thawed 1 filesystem") {
        return Err(format!("domfsthaw: {thawed}"));
    }
    match status()? {
        s if s == "thawed" => Ok(()),
        s => Err(format!("guest-fsfreeze-status after thaw: {s:?}")),
    }
}

/// A value set through guestd's vendor command comes back from its get command.
fn check_kv(dom: &str) -> CheckResult {
    let value = format!("set through libvirt {}", std::process::id());
    agent_ok(dom, KV_SET, json!({"key": KV_KEY, "value": value}))?;
    let got = agent_ok(dom, KV_GET, json!({"key": KV_KEY}))?;
    let v = got.get("value").unwrap_or(&got);
    (v == &json!(value))
        .then_some(())
        .ok_or_else(|| format!("{KV_GET} answered {got}, expected {value:?}"))
}

/// The image's boot message (`guestd -p smoke.boot=<boot id>`, queued with no oVirt host
/// attached) reaches the QGA host, and leaves the outbox once acknowledged.
fn check_messages(dom: &str) -> CheckResult {
    let boot = |r: &Value| -> Option<(u64, String)> {
        let m = r["messages"]
            .as_array()?
            .iter()
            .find(|m| m["kind"] == "param" && m["key"] == "smoke.boot")?;
        Some((m["seq"].as_u64()?, m["value"].as_str()?.to_owned()))
    };
    // /etc/test.sh runs at the end of the boot, perhaps after the agent first answered.
    let deadline = Instant::now() + 20 * SEC;
    let (seq, id) = loop {
        let r = agent_ok(dom, KV_MESSAGES, json!({}))?;
        if let Some(found) = boot(&r) {
            break found;
        }
        if Instant::now() > deadline {
            return Err(format!("no smoke.boot param among the messages: {r}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if id.len() != 36 {
        return Err(format!("smoke.boot is not a boot id: {id:?}"));
    }
    agent_ok(dom, KV_ACK, json!({"upto": seq}))?;
    let r = agent_ok(dom, KV_MESSAGES, json!({}))?;
    match boot(&r) {
        None => Ok(()),
        Some(_) => Err(format!("smoke.boot is still offered after {KV_ACK}: {r}")),
    }
}

#[test]
#[ignore = "boots a libvirt domain; run with `make smoke-libvirt`"]
fn libvirt_drives_guestd() {
    let t0 = Instant::now();
    let dir = Dir::new("libvirt");
    let initrd = vm::initrd();
    assert!(
        initrd.exists(),
        "no test image at {} (make initramfs)",
        initrd.display()
    );
    let daemons = Daemons::up(dir.path());
    let name = format!("guestd-smoke-{}", std::process::id());
    let dom = Domain::create(dir.path(), &name);
    let booted = Instant::now();
    eprintln!(
        "smoke-libvirt: domain {name} created ({:.1} s in)",
        t0.elapsed().as_secs_f64()
    );

    // libvirt connects to the agent once the guest opens the port; until then (and until
    // guestd answers its guest-sync) agent calls fail.
    let mut last = String::new();
    vm::wait_for(
        "the agent to answer guest-ping through libvirt",
        booted + 120 * SEC,
        Duration::from_millis(500),
        || match check_ping(&name) {
            Ok(()) => Some(()),
            Err(e) => {
                last = e;
                assert!(!dom.is_off(), "the domain stopped while booting: {last}");
                None
            }
        },
    );
    eprintln!(
        "smoke-libvirt: agent connected {:.1} s after create",
        booted.elapsed().as_secs_f64()
    );

    let info = agent_ok(&name, "guest-info", json!({})).expect("guest-info");
    let enabled = info["supported_commands"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["enabled"] == true)
                .filter_map(|c| c["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut checks = Checks {
        dom: name.clone(),
        enabled,
        allow_missing: std::env::var_os("SMOKE_ALLOW_MISSING").is_some_and(|v| v == "1"),
        passed: Vec::new(),
        skipped: Vec::new(),
        failed: Vec::new(),
    };
    checks.run("guest-ping", &["guest-ping"], check_ping);
    checks.run("guest-info", &["guest-info"], check_info);
    checks.run(
        "error passthrough",
        &["guest-ping"],
        check_error_passthrough,
    );
    checks.run(
        "domifaddr --source agent",
        &["guest-network-get-interfaces"],
        check_domifaddr,
    );
    checks.run(
        "guestinfo",
        &[
            "guest-get-users",
            "guest-get-osinfo",
            "guest-get-timezone",
            "guest-get-host-name",
            "guest-get-fsinfo",
        ],
        check_guestinfo,
    );
    checks.run("domfsinfo", &["guest-get-fsinfo"], check_domfsinfo);
    checks.run("domtime", &["guest-get-time"], check_domtime);
    checks.run(
        "set-user-password",
        &[
            "guest-set-user-password",
            "guest-file-open",
            "guest-file-read",
            "guest-file-close",
        ],
        check_set_user_password,
    );
    checks.run(
        "domfsfreeze/domfsthaw",
        &[
            "guest-fsfreeze-freeze-list",
            "guest-fsfreeze-status",
            "guest-fsfreeze-thaw",
        ],
        check_fsfreeze,
    );
    checks.run("key-value", &[KV_SET, KV_GET], check_kv);
    checks.run("guest messages", &[KV_MESSAGES, KV_ACK], check_messages);
    checks.run("shutdown --mode agent", &["guest-shutdown"], |d| {
        virsh(&["shutdown", "--mode", "agent", d])?;
        let deadline = Instant::now() + 60 * SEC;
        while !dom.is_off() {
            if Instant::now() > deadline {
                return Err("the domain is not shut off 60 s after shutdown --mode agent".into());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    });

    eprintln!(
        "smoke-libvirt: {} passed, {} skipped, {} failed in {:.1} s",
        checks.passed.len(),
        checks.skipped.len(),
        checks.failed.len(),
        t0.elapsed().as_secs_f64()
    );
    for s in &checks.skipped {
        eprintln!("smoke-libvirt: skipped: {s}");
    }
    assert!(
        checks.failed.is_empty(),
        "libvirt checks failed:\n  {}",
        checks.failed.join("\n  ")
    );
    drop(dom);
    drop(daemons);
}
