// SPDX-License-Identifier: Apache-2.0
//! `make bench`: guestd against qemu-ga (Debian's `qemu-guest-agent`), measured in the same
//! run and reported as ratios. Not a test of timing: it asserts nothing about speed, it
//! prints a table. Host side, both agents serve a UNIX socket; guest side, both run in one
//! QEMU guest with no host on their ports (the state a fleet's idle VMs spend most time in).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Dir;

const ROUND_TRIPS: usize = 5000;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status_field(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(field))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never accepted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Sample {
    rss_idle_kb: u64,
    idle_ctx: u64,
    rss_after_kb: u64,
    wall: Duration,
    ticks: u64,
}

/// Starts an agent, measures it idle, then `ROUND_TRIPS` sequential request/answer pairs.
fn measure(child: Child, sock: &Path, request: &[u8], skip_greeting: bool) -> Sample {
    let p = Proc(child);
    let pid = p.0.id();
    wait_for(sock);
    std::thread::sleep(Duration::from_millis(300));
    let rss_idle_kb = status_field(pid, "VmRSS");
    let c0 = status_field(pid, "voluntary_ctxt_switches")
        + status_field(pid, "nonvoluntary_ctxt_switches");
    std::thread::sleep(Duration::from_secs(3));
    let idle_ctx = status_field(pid, "voluntary_ctxt_switches")
        + status_field(pid, "nonvoluntary_ctxt_switches")
        - c0;
    let stream = UnixStream::connect(sock).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    if skip_greeting {
        // guestd's start-up burst: 7 lines before the first answer.
        for _ in 0..7 {
            line.clear();
            reader.read_line(&mut line).unwrap();
        }
    }
    let t0 = cpu_ticks(pid);
    let start = Instant::now();
    for _ in 0..ROUND_TRIPS {
        writer.write_all(request).unwrap();
        loop {
            line.clear();
            reader.read_line(&mut line).unwrap();
            if !line.contains("heartbeat") {
                break;
            }
        }
    }
    let wall = start.elapsed();
    let ticks = cpu_ticks(pid) - t0;
    Sample {
        rss_idle_kb,
        idle_ctx,
        rss_after_kb: status_field(pid, "VmRSS"),
        wall,
        ticks,
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 {
        "-".into()
    } else {
        format!("{:.2}", a / b)
    }
}

fn guestd_bin() -> PathBuf {
    std::env::var_os("GUESTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(common::guestd_bin()))
}

#[test]
#[ignore = "benchmark; run with `make bench`"]
fn guestd_versus_qemu_ga() {
    let qga = ["/usr/sbin/qemu-ga", "/usr/bin/qemu-ga"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("qemu-ga is missing: sudo apt-get install qemu-guest-agent");
    let dir = Dir::new("bench");
    let d = dir.path();

    let gsock = d.join("g.sock");
    let g = Command::new(guestd_bin())
        .args(["--config", "/dev/null", "-d", "0"])
        .args(common::isolation(d))
        .arg(format!("--channel=unix-listen:{}", gsock.display()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let gs = measure(g, &gsock, b"{\"__name__\":\"echo\"}\n", true);

    let qsock = d.join("q.sock");
    let qstate = d.join("qga-state");
    std::fs::create_dir_all(&qstate).unwrap();
    let q = Command::new(qga)
        .args(["-m", "unix-listen", "-p"])
        .arg(&qsock)
        .arg("-t")
        .arg(&qstate)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let qs = measure(q, &qsock, b"{\"execute\":\"guest-ping\"}\n", false);

    let guestd_size = std::fs::metadata(guestd_bin())
        .map(|m| m.len())
        .unwrap_or(0);
    let qga_size = std::fs::metadata(qga).map(|m| m.len()).unwrap_or(0);
    let per = |s: &Sample| s.wall.as_secs_f64() * 1e6 / ROUND_TRIPS as f64;
    println!(
        "\nbench: host side, same run ({ROUND_TRIPS} sequential round trips: guestd echo, qemu-ga guest-ping)"
    );
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "", "guestd", "qemu-ga", "ratio"
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{:<40} {:>10.1}{unit:<2} {:>10.1}{unit:<2} {:>8}",
            name,
            a,
            b,
            ratio(a, b)
        );
    };
    row(
        "binary size (KiB; qemu-ga + shared libs excluded)",
        guestd_size as f64 / 1024.0,
        qga_size as f64 / 1024.0,
        "",
    );
    row(
        "RSS idle, no peer (KiB)",
        gs.rss_idle_kb as f64,
        qs.rss_idle_kb as f64,
        "",
    );
    row(
        "context switches idle 3 s, no peer",
        gs.idle_ctx as f64,
        qs.idle_ctx as f64,
        "",
    );
    row(
        "RSS after the round trips (KiB)",
        gs.rss_after_kb as f64,
        qs.rss_after_kb as f64,
        "",
    );
    row("round trip (us)", per(&gs), per(&qs), "");
    row(
        "agent CPU for all round trips (ticks)",
        gs.ticks as f64,
        qs.ticks as f64,
        "",
    );

    // Guest side: both agents in one QEMU guest, no host on either port.
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
    let deadline = Instant::now() + Duration::from_secs(90);
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
    println!("\nbench: in one TCG guest, no host on either virtio port, 10 s");
    println!(
        "{:<40} {:>12} {:>12} {:>8}",
        "", "guestd", "qemu-ga", "ratio"
    );
    row(
        "context switches (wake-ups) in 10 s",
        field("guestd_ctx"),
        field("qemu_ga_ctx"),
        "",
    );
    row(
        "RSS (KiB)",
        field("guestd_rss_kb"),
        field("qemu_ga_rss_kb"),
        "",
    );
}
