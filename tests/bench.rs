// SPDX-License-Identifier: Apache-2.0
//! `make bench` (and `make bench-quick`, BENCH_QUICK=1): guestd against qemu-ga (Debian's
//! `qemu-guest-agent`), like with like, in one run. Both agents serve QGA on a UNIX socket
//! and get the same commands from one client (`guestd-bench`), in interleaved rounds. The
//! headline figures are callgrind instruction counts, which a loaded machine does not change;
//! times are medians of round medians with their min–max. Prints a markdown table and writes
//! it to docs/benchmarks.md (a quick run: build/benchmarks-quick.md). Asserts nothing about speed.

mod common;

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::callgrind::{self, Callgrind};
use common::{Dir, Peer};

const COMMANDS: [&str; 5] = [
    "guest-ping",
    "guest-get-osinfo",
    "guest-network-get-interfaces",
    "guest-get-fsinfo",
    "guest-get-users",
];

struct Plan {
    quick: bool,
    rounds: usize,
    calls: usize,
    cg_calls: usize,
    sizes: &'static [usize],
    starts: usize,
    rss_requests: usize,
    idle: Duration,
    attached: Duration,
}

impl Plan {
    fn new() -> Plan {
        if std::env::var_os("BENCH_QUICK").is_some() {
            Plan {
                quick: true,
                rounds: 3,
                calls: 200,
                cg_calls: 20,
                sizes: &[10, 100],
                starts: 10,
                rss_requests: 10_000,
                idle: Duration::from_secs(3),
                attached: Duration::from_secs(6),
            }
        } else {
            Plan {
                quick: false,
                rounds: 5,
                calls: 2000,
                cg_calls: 100,
                sizes: &[10, 100, 500, 2000],
                starts: 50,
                rss_requests: 100_000,
                idle: Duration::from_secs(10),
                attached: Duration::from_secs(20),
            }
        }
    }
}

/// A process killed (SIGKILL) and reaped on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn qemu_ga() -> &'static str {
    ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("qemu-ga is missing: sudo apt-get install qemu-guest-agent")
}

fn guestd_bin() -> PathBuf {
    std::env::var_os("GUESTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(common::guestd_bin()))
}

/// The unstripped build callgrind counts (`make bench` sets it); else the release binary.
fn guestd_profile_bin() -> PathBuf {
    std::env::var_os("GUESTD_PROFILE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(guestd_bin)
}

/// One agent's command line: guestd serving QGA (and oVirt) on sockets in `dir`, or qemu-ga.
#[derive(Clone, Copy, PartialEq)]
enum Agent {
    Guestd,
    QemuGa,
}

impl Agent {
    fn name(self) -> &'static str {
        match self {
            Agent::Guestd => "guestd",
            Agent::QemuGa => "qemu-ga",
        }
    }

    fn qga_sock(self, dir: &Path) -> PathBuf {
        dir.join(format!("{}-qga.sock", self.name()))
    }

    fn ovirt_sock(dir: &Path) -> PathBuf {
        dir.join("guestd-ovirt.sock")
    }

    /// Program and arguments; `bin` is guestd's binary.
    fn argv(self, dir: &Path, bin: &Path, heartbeat: u32) -> (PathBuf, Vec<String>) {
        match self {
            Agent::Guestd => {
                let mut a = vec![
                    "--config".to_owned(),
                    "/dev/null".to_owned(),
                    "-d".to_owned(),
                    "0".to_owned(),
                    "-t".to_owned(),
                    heartbeat.to_string(),
                    format!("--channel=unix-listen:{}", Self::ovirt_sock(dir).display()),
                    format!("--qga-channel=unix-listen:{}", self.qga_sock(dir).display()),
                ];
                a.extend(common::isolation(dir));
                (bin.to_owned(), a)
            }
            Agent::QemuGa => {
                let state = dir.join("qga-state");
                std::fs::create_dir_all(&state).unwrap();
                let a = vec![
                    "-m".to_owned(),
                    "unix-listen".to_owned(),
                    "-p".to_owned(),
                    self.qga_sock(dir).display().to_string(),
                    "-t".to_owned(),
                    state.display().to_string(),
                ];
                (PathBuf::from(qemu_ga()), a)
            }
        }
    }

    /// Starts the agent (inside network namespace `netns` if given) and waits for its socket.
    fn start(self, dir: &Path, netns: Option<&str>) -> Proc {
        let (prog, args) = self.argv(dir, &guestd_bin(), 5);
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        let p = Proc(
            cmd.args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_accept(&self.qga_sock(dir));
        p
    }
}

fn wait_accept(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never accepted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `guestd-bench`: one line per round, the median per call (ns) of each; `None` if the
/// agent answered with an error or failed.
fn client(sock: &Path, command: &str, warmup: usize, calls: usize) -> Option<f64> {
    let out = Command::new(env!("CARGO_BIN_EXE_guestd-bench"))
        .arg(sock)
        .arg(command)
        .args(["--warmup", &warmup.to_string()])
        .args(["--calls", &calls.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.strip_prefix("median_ns="))
        .and_then(|v| v.parse().ok())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Median and min–max of the round medians, interleaved A, B, A, B …, in µs.
fn interleaved(dir: &Path, command: &str, rounds: usize, calls: usize) -> [Option<Spread>; 2] {
    let agents = [Agent::Guestd, Agent::QemuGa];
    let mut r: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut failed = [false; 2];
    for round in 0..rounds {
        for (i, a) in agents.iter().enumerate() {
            if failed[i] {
                continue;
            }
            let warmup = if round == 0 { calls.clamp(1, 100) } else { 1 };
            match client(&a.qga_sock(dir), command, warmup, calls) {
                Some(ns) => r[i].push(ns / 1000.0),
                None => failed[i] = true,
            }
        }
    }
    let spread = |v: &mut Vec<f64>, f: bool| {
        (!f && !v.is_empty()).then(|| {
            let m = median(v);
            Spread {
                median: m,
                min: v[0],
                max: v[v.len() - 1],
            }
        })
    };
    [spread(&mut r[0], failed[0]), spread(&mut r[1], failed[1])]
}

#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn cell(&self) -> String {
        format!("{} ({}–{})", num(self.median), num(self.min), num(self.max))
    }
}

fn num(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn count(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.2}M", n as f64 / 1e6)
    } else if n >= 10_000 {
        format!("{:.1}k", n as f64 / 1e3)
    } else {
        n.to_string()
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || a.is_nan() || b.is_nan() {
        "–".into()
    } else {
        format!("{:.2}", a / b)
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(field))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

fn ctx_switches(pid: u32) -> u64 {
    status_kb(pid, "voluntary_ctxt_switches") + status_kb(pid, "nonvoluntary_ctxt_switches")
}

/// Time `pid` has spent on a CPU, in ns (/proc/PID/schedstat: nanosecond resolution, where
/// utime and stime count 10 ms ticks).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The pid of the agent itself when `p` is `ip netns exec … agent` (exec'd: the same pid).
fn pid(p: &Proc) -> u32 {
    p.0.id()
}

/// The table: rows of (measure, guestd, qemu-ga, ratio).
#[derive(Default)]
struct Table {
    rows: Vec<[String; 4]>,
}

impl Table {
    fn row(&mut self, what: impl Into<String>, g: String, q: String, r: String) {
        let row = [what.into(), g, q, r];
        println!("| {} | {} | {} | {} |", row[0], row[1], row[2], row[3]);
        self.rows.push(row);
    }

    fn nums(&mut self, what: impl Into<String>, g: f64, q: f64) {
        self.row(what, num(g), num(q), ratio(g, q));
    }

    fn counts(&mut self, what: impl Into<String>, g: Option<u64>, q: Option<u64>) {
        let c = |v: Option<u64>| v.map_or_else(|| "–".into(), count);
        let f = |v: Option<u64>| v.map_or(f64::NAN, |n| n as f64);
        self.row(what, c(g), c(q), ratio(f(g), f(q)));
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| measure | guestd | qemu-ga | guestd / qemu-ga |\n| --- | --- | --- | --- |\n",
        );
        for r in &self.rows {
            let _ = writeln!(s, "| {} | {} | {} | {} |", r[0], r[1], r[2], r[3]);
        }
        s
    }
}

/// A network namespace made for the run, deleted (with its devices) on drop.
struct Netns {
    name: String,
    kind: &'static str,
    made: usize,
}

impl Netns {
    /// `None` where a namespace cannot be made (not root, no `ip`).
    fn new() -> Option<Netns> {
        let name = format!("guestd-bench-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return None;
        }
        let mut ns = Netns {
            name,
            kind: "ifb",
            made: 0,
        };
        // `dummy` where the kernel has it, else `ifb`.
        if ns.batch("link add probe0 type dummy\nlink del probe0\n") {
            ns.kind = "dummy";
        }
        ns.batch("link set lo up\n");
        Some(ns)
    }

    fn batch(&self, cmds: &str) -> bool {
        let mut c = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(cmds.as_bytes()).unwrap();
        c.wait().is_ok_and(|s| s.success())
    }

    /// Adds devices (up, one IPv4 address each) until there are `n`.
    fn grow(&mut self, n: usize) {
        let mut cmds = String::new();
        for i in self.made..n {
            let _ = writeln!(cmds, "link add b{i} type {}", self.kind);
            let _ = writeln!(cmds, "link set b{i} up");
            let _ = writeln!(cmds, "addr add 10.{}.{}.1/32 dev b{i}", i / 256, i % 256);
        }
        assert!(self.batch(&cmds), "ip -batch: adding {} devices failed", n);
        self.made = n;
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// exec → first reply to guest-ping, in ms.
fn startup(a: Agent, dir: &Path) -> f64 {
    let sock = a.qga_sock(dir);
    let _ = std::fs::remove_file(&sock);
    let (prog, args) = a.argv(dir, &guestd_bin(), 5);
    let t0 = Instant::now();
    let _p = Proc(
        Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = t0 + Duration::from_secs(30);
    let s = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(Instant::now() < deadline, "{} never accepted", a.name());
        std::thread::sleep(Duration::from_micros(200));
    };
    (&s).write_all(b"{\"execute\":\"guest-ping\"}\n").unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    t0.elapsed().as_secs_f64() * 1e3
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn gzip_size(p: &Path) -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -9 -c \"$1\" | wc -c")
        .arg("sh")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn shared_libs(bin: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [_, "=>", p, ..] if p.starts_with('/') => Some(PathBuf::from(p)),
                [p, ..] if p.starts_with('/') => Some(PathBuf::from(p)),
                _ => None,
            }
        })
        .collect()
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Callgrind counts, per call, of every command for both agents; guestd's heartbeat tick and
/// refresh burst.
fn instructions(plan: &Plan, t: &mut Table, notes: &mut Vec<String>) {
    let dir = Dir::new("bench-cg");
    let d = dir.path();
    let mut per: [Vec<Option<u64>>; 2] = [Vec::new(), Vec::new()];
    for (i, a) in [Agent::Guestd, Agent::QemuGa].into_iter().enumerate() {
        let (prog, args) = a.argv(d, &guestd_profile_bin(), 1);
        let mut cg = Callgrind::spawn(d, &prog, &args);
        let sock = a.qga_sock(d);
        wait_accept(&sock);
        for c in COMMANDS {
            let n = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                callgrind::qga_request(&mut cg, &sock, c, 5, plan.cg_calls)
            }))
            .ok();
            per[i].push(n);
        }
        if a == Agent::Guestd {
            let sock = Agent::ovirt_sock(d);
            wait_accept(&sock);
            let mut peer = Peer::connect(&sock);
            let tick = callgrind::ovirt_tick(&mut cg, &mut peer, 3);
            // Three bursts: what a burst reads depends on what is cached, so they differ.
            let mut bursts = Vec::new();
            let mut lines = 0;
            for _ in 0..3 {
                let (n, l) = callgrind::ovirt_refresh(&mut cg, &mut peer);
                bursts.push(count(n));
                lines = l;
            }
            t.counts(
                "instructions: one heartbeat tick (oVirt, host attached)",
                Some(tick),
                None,
            );
            t.row(
                format!("instructions: refresh burst (oVirt, {lines} messages), three in a row"),
                bursts.join(", "),
                "–".into(),
                "–".into(),
            );
            notes.push(format!(
                "CPU per hour attached and silent, from the tick count: {} instructions × 720 ticks = {:.0}M instructions.",
                count(tick),
                tick as f64 * 720.0 / 1e6
            ));
        }
    }
    for (k, c) in COMMANDS.iter().enumerate() {
        t.counts(format!("instructions: one `{c}`"), per[0][k], per[1][k]);
    }
}

fn measure_network(plan: &Plan, t: &mut Table, notes: &mut Vec<String>) {
    let Some(mut ns) = Netns::new() else {
        notes.push("No NIC rows: `ip netns add` failed (it needs root).".into());
        return;
    };
    let kind = ns.kind;
    for &n in plan.sizes {
        ns.grow(n);
        let dir = Dir::new("bench-ns");
        let d = dir.path();
        {
            let _g = Agent::Guestd.start(d, Some(&ns.name));
            let _q = Agent::QemuGa.start(d, Some(&ns.name));
            let calls = (2000 / n).clamp(3, 200);
            let [g, q] = interleaved(d, "guest-network-get-interfaces", 3, calls);
            let cell = |s: Option<Spread>| s.map_or_else(|| "error".into(), |s| s.cell());
            let m = |s: Option<Spread>| s.map_or(f64::NAN, |s| s.median);
            t.row(
                format!("guest-network-get-interfaces, {n} {kind} NICs (µs, median (min–max) of 3 rounds × {calls})"),
                cell(g),
                cell(q),
                ratio(m(g), m(q)),
            );
        }
        // Instructions: guestd at every size; qemu-ga up to 500 (at 2,000 one call runs for
        // minutes under callgrind).
        let mut counts = [None, None];
        for (i, a) in [Agent::Guestd, Agent::QemuGa].into_iter().enumerate() {
            if a == Agent::QemuGa && n > 500 {
                continue;
            }
            let (prog, args) = a.argv(d, &guestd_profile_bin(), 5);
            let mut full = vec!["netns".to_owned(), "exec".to_owned(), ns.name.clone()];
            full.push("valgrind".to_owned());
            full.push("--tool=callgrind".to_owned());
            full.push(format!(
                "--callgrind-out-file={}/callgrind.out.%p",
                d.display()
            ));
            full.push(prog.display().to_string());
            full.extend(args);
            // `ip netns exec` execs valgrind: the pid callgrind_control needs is the child's.
            let mut cg = Callgrind::spawn_raw(d, Path::new("ip"), &full);
            let sock = a.qga_sock(d);
            wait_accept(&sock);
            counts[i] = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                callgrind::qga_request(&mut cg, &sock, "guest-network-get-interfaces", 1, 3)
            }))
            .ok();
        }
        t.counts(
            format!("instructions: guest-network-get-interfaces, {n} NICs"),
            counts[0],
            counts[1],
        );
    }
}

#[test]
#[ignore = "benchmark; run with `make bench` or `make bench-quick`"]
fn guestd_versus_qemu_ga() {
    let plan = Plan::new();
    let started = Instant::now();
    let qga = qemu_ga();
    let mut t = Table::default();
    let mut notes = Vec::new();
    println!("\n| measure | guestd | qemu-ga | guestd / qemu-ga |\n| --- | --- | --- | --- |");

    // Instruction counts first: the headline figures.
    if callgrind::available() {
        instructions(&plan, &mut t, &mut notes);
    } else {
        notes.push("valgrind is not installed: no instruction counts.".into());
    }

    // Both agents serving QGA on UNIX sockets; idle states, RSS, then interleaved rounds.
    let dir = Dir::new("bench");
    let d = dir.path();
    {
        let g = Agent::Guestd.start(d, None);
        let q = Agent::QemuGa.start(d, None);
        let (gp, qp) = (pid(&g), pid(&q));
        let rss_start = (status_kb(gp, "VmRSS"), status_kb(qp, "VmRSS"));

        // Never attached: nobody on any socket.
        let per_hour = 3600.0 / plan.idle.as_secs_f64();
        let (c0, u0) = (
            (ctx_switches(gp), ctx_switches(qp)),
            (cpu_ns(gp), cpu_ns(qp)),
        );
        std::thread::sleep(plan.idle);
        let idle_ctx = (ctx_switches(gp) - c0.0, ctx_switches(qp) - c0.1);
        let idle_cpu = (cpu_ns(gp) - u0.0, cpu_ns(qp) - u0.1);

        // Host attached and silent: guestd's oVirt host (heartbeats every 5 s); qemu-ga's
        // QGA host connected (it sends nothing unasked: it has no heartbeat).
        let _host = Peer::connect(&Agent::ovirt_sock(d));
        let _qhost = UnixStream::connect(Agent::QemuGa.qga_sock(d)).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        let att_per_hour = 3600.0 / plan.attached.as_secs_f64();
        let (c1, u1) = (
            (ctx_switches(gp), ctx_switches(qp)),
            (cpu_ns(gp), cpu_ns(qp)),
        );
        std::thread::sleep(plan.attached);
        let att_ctx = (ctx_switches(gp) - c1.0, ctx_switches(qp) - c1.1);
        let att_cpu = (cpu_ns(gp) - u1.0, cpu_ns(qp) - u1.1);
        drop(_qhost);
        drop(_host);

        let tick_ms = 1e-6; // ns to ms
        t.nums(
            format!(
                "wake-ups per hour, never attached (host side, {} s)",
                plan.idle.as_secs()
            ),
            idle_ctx.0 as f64 * per_hour,
            idle_ctx.1 as f64 * per_hour,
        );
        t.nums(
            "CPU ms per hour, never attached (schedstat)",
            idle_cpu.0 as f64 * tick_ms * per_hour,
            idle_cpu.1 as f64 * tick_ms * per_hour,
        );
        t.row(
            format!(
                "wake-ups per hour, host attached and silent ({} s; guestd: oVirt heartbeats every 5 s; qemu-ga: QGA client connected, no heartbeat exists)",
                plan.attached.as_secs()
            ),
            num(att_ctx.0 as f64 * att_per_hour),
            num(att_ctx.1 as f64 * att_per_hour),
            "not alike".into(),
        );
        t.row(
            "CPU ms per hour, host attached and silent (schedstat)",
            num(att_cpu.0 as f64 * tick_ms * att_per_hour),
            num(att_cpu.1 as f64 * tick_ms * att_per_hour),
            "not alike".into(),
        );

        for c in COMMANDS {
            let [gs, qs] = interleaved(d, c, plan.rounds, plan.calls);
            let cell = |s: Option<Spread>| s.map_or_else(|| "error".into(), |s| s.cell());
            let m = |s: Option<Spread>| s.map_or(f64::NAN, |s| s.median);
            t.row(
                format!(
                    "`{c}` (µs per call, median (min–max) of {} rounds × {})",
                    plan.rounds, plan.calls
                ),
                cell(gs),
                cell(qs),
                ratio(m(gs), m(qs)),
            );
        }

        // RSS after many requests.
        let [_, _] = [
            client(
                &Agent::Guestd.qga_sock(d),
                "guest-ping",
                0,
                plan.rss_requests,
            ),
            client(
                &Agent::QemuGa.qga_sock(d),
                "guest-ping",
                0,
                plan.rss_requests,
            ),
        ];
        t.nums("RSS at start (KiB)", rss_start.0 as f64, rss_start.1 as f64);
        t.nums(
            format!(
                "RSS after all requests above + {} guest-ping (KiB)",
                plan.rss_requests
            ),
            status_kb(gp, "VmRSS") as f64,
            status_kb(qp, "VmRSS") as f64,
        );
        t.nums(
            "VmHWM, peak RSS (KiB)",
            status_kb(gp, "VmHWM") as f64,
            status_kb(qp, "VmHWM") as f64,
        );
    }

    // Start-up: alternating starts.
    {
        let mut s: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..plan.starts {
            s[0].push(startup(Agent::Guestd, d));
            s[1].push(startup(Agent::QemuGa, d));
        }
        let g = median(&mut s[0]);
        let q = median(&mut s[1]);
        t.row(
            format!(
                "exec → first guest-ping reply (ms, median (min–max) of {} alternating starts)",
                plan.starts
            ),
            Spread {
                median: g,
                min: s[0][0],
                max: s[0][s[0].len() - 1],
            }
            .cell(),
            Spread {
                median: q,
                min: s[1][0],
                max: s[1][s[1].len() - 1],
            }
            .cell(),
            ratio(g, q),
        );
    }

    // Sizes: what an image pays.
    {
        let g = guestd_bin();
        let libs = shared_libs(qga);
        let lib_size: u64 = libs.iter().map(|l| file_size(l)).sum();
        let lib_gz: u64 = libs.iter().map(|l| gzip_size(l)).sum();
        let kib = |b: u64| b as f64 / 1024.0;
        t.nums(
            "binary (KiB)",
            kib(file_size(&g)),
            kib(file_size(Path::new(qga))),
        );
        t.nums(
            "binary, gzip -9 (KiB)",
            kib(gzip_size(&g)),
            kib(gzip_size(Path::new(qga))),
        );
        t.row(
            format!("shared libraries (KiB; qemu-ga: {} from ldd)", libs.len()),
            "0 (static)".into(),
            num(kib(lib_size)),
            "–".into(),
        );
        t.row(
            "shared libraries, gzip -9 (KiB)".to_string(),
            "0".into(),
            num(kib(lib_gz)),
            "–".into(),
        );
    }

    measure_network(&plan, &mut t, &mut notes);
    notes.push(
        "qemu-ga's instructions at 2,000 NICs are not counted: one call runs for minutes under callgrind (its time per call is in the table)."
            .into(),
    );
    notes.push(
        "Refresh bursts differ in cost with what guestd has cached (package list, disks), hence three in a row."
            .into(),
    );
    notes.push(
        "Wake-ups are voluntary plus involuntary context switches (/proc/PID/status); CPU is /proc/PID/schedstat's time on CPU. \"Never attached\" starts right after the agents' sockets accept."
            .into(),
    );

    if !plan.quick {
        guest_row(&mut t, d);
    }

    let elapsed = started.elapsed();
    let header = format!(
        "# Benchmarks: guestd and qemu-ga\n\n\
         Written by `make {}` on {} (took {} s). Machine: {} cores ({}), kernel {}.\n\
         Versions: guestd {} ({}), {}.\n\n\
         Both agents serve QGA on UNIX sockets and get the same commands from one client\n\
         (`src/bin/guestd-bench.rs`), rounds interleaved guestd, qemu-ga, guestd …; times are the\n\
         median of the round medians with their min–max. Instruction counts are callgrind's\n\
         (guestd: the unstripped size-report build of the same code), per call after warm-up,\n\
         and do not depend on machine load: they are the headline figures.\n\n",
        if plan.quick { "bench-quick" } else { "bench" },
        sh("date -u '+%Y-%m-%d %H:%M UTC'"),
        elapsed.as_secs(),
        sh("nproc"),
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'"),
        sh("uname -r"),
        env!("CARGO_PKG_VERSION"),
        sh("git -C \"$CARGO_MANIFEST_DIR\" describe --always --dirty 2>/dev/null"),
        sh(&format!("{qga} --version")),
    );
    let mut doc = header + &t.markdown();
    if !notes.is_empty() {
        doc.push('\n');
        for n in &notes {
            let _ = writeln!(doc, "- {n}");
        }
    }
    // The committed table is a full run's; a quick run's goes to build/.
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(if plan.quick {
        "build/benchmarks-quick.md"
    } else {
        "docs/benchmarks.md"
    });
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&out, &doc).unwrap();
    println!("\n{doc}\nwritten to {}", out.display());
}

/// Both agents in one QEMU guest with no host on either port (BENCH_INITRD, the QEMU_GA=1
/// image): wake-ups and RSS over 10 s.
fn guest_row(t: &mut Table, d: &Path) {
    let initrd = std::env::var("BENCH_INITRD").unwrap_or_else(|_| "build/bench.cpio.gz".into());
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let console = d.join("console.log");
    let qga_chardev = format!(
        "socket,id=qga0,path={},server=on,wait=off",
        d.join("qga.sock").display()
    );
    let vm = Proc(
        Command::new(repo.join("initramfs/run-vm.sh"))
            .arg(d.join("ga.sock"))
            .arg(&console)
            .args(["-chardev", &qga_chardev])
            .args([
                "-device",
                "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            ])
            .current_dir(&repo)
            .env("INITRD", &initrd)
            .stdin(Stdio::null())
            .spawn()
            .expect("initramfs/run-vm.sh"),
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let line = loop {
        let text =
            String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
        if let Some(l) = text.lines().find(|l| l.contains("GUESTD-BENCH")) {
            break l.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no GUESTD-BENCH line on the console:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    drop(vm);
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    t.nums(
        "wake-ups per hour, in a QEMU guest (TCG), no host on either port (10 s × 360)",
        field("guestd_ctx") * 360.0,
        field("qemu_ga_ctx") * 360.0,
    );
    t.nums(
        "RSS in that guest (KiB)",
        field("guestd_rss_kb"),
        field("qemu_ga_rss_kb"),
    );
}
