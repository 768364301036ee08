// SPDX-License-Identifier: Apache-2.0
//! An agent run under `valgrind --tool=callgrind`, whose counters the test zeroes and dumps
//! around the work it measures (`callgrind_control -z` / `-d`), so a count holds only that
//! work. Instruction counts do not depend on machine load, so they can be compared with a
//! committed budget on any machine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether valgrind and callgrind_control are installed.
pub fn available() -> bool {
    let ok = |p: &str, a: &str| {
        Command::new(p)
            .arg(a)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    ok("valgrind", "--version") && ok("callgrind_control", "--version")
}

/// A process under callgrind; killed (SIGKILL) on drop.
pub struct Callgrind {
    pub child: Child,
    out: PathBuf,
    dumps: u32,
}

impl Callgrind {
    /// Starts `program args…` under callgrind, its output files in `dir`.
    pub fn spawn(dir: &Path, program: &Path, args: &[String]) -> Callgrind {
        let mut full = vec![
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}/callgrind.out.%p", dir.display()),
            program.display().to_string(),
        ];
        full.extend_from_slice(args);
        Callgrind::spawn_raw(dir, Path::new("valgrind"), &full)
    }

    /// Starts `program args…`, which execs valgrind with
    /// `--callgrind-out-file=DIR/callgrind.out.%p` (`ip netns exec NS valgrind …`).
    pub fn spawn_raw(dir: &Path, program: &Path, args: &[String]) -> Callgrind {
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("valgrind.log")).unwrap())
            .spawn()
            .expect("valgrind");
        Callgrind {
            child,
            out: dir.join("callgrind.out"),
            dumps: 0,
        }
    }

    fn control(&self, flag: &str) {
        let st = Command::new("callgrind_control")
            .arg(flag)
            .arg(self.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("callgrind_control");
        assert!(st.success(), "callgrind_control {flag} failed");
    }

    /// Zeroes the counters.
    pub fn zero(&self) {
        self.control("-z");
    }

    /// Dumps the counters and returns the instructions counted since the last zero.
    pub fn dump(&mut self) -> u64 {
        self.control("-d");
        self.dumps += 1;
        let file = PathBuf::from(format!(
            "{}.{}.{}",
            self.out.display(),
            self.child.id(),
            self.dumps
        ));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if let Some(n) = text
                .lines()
                .find_map(|l| l.strip_prefix("totals:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
            {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "callgrind wrote no totals to {}",
                file.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Instructions per QGA request of `command`: `guestd-bench --hold` does `warmup` calls, the
/// counters are zeroed, it does `calls` calls, they are dumped.
pub fn qga_request(
    cg: &mut Callgrind,
    sock: &Path,
    command: &str,
    warmup: usize,
    calls: usize,
) -> u64 {
    use std::io::{BufRead, BufReader, Write};
    let mut client = Command::new(env!("CARGO_BIN_EXE_guestd-bench"))
        .arg(sock)
        .arg(command)
        .args([
            "--warmup",
            &warmup.to_string(),
            "--calls",
            &calls.to_string(),
        ])
        .arg("--hold")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("guestd-bench");
    let mut stdin = client.stdin.take().unwrap();
    let mut out = BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "guestd-bench {command} did not warm up"
    );
    cg.zero();
    stdin.write_all(b"go\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("median_ns="),
        "guestd-bench {command}: {line:?}"
    );
    let n = cg.dump();
    drop(stdin);
    let st = client.wait().unwrap();
    assert!(st.success(), "guestd-bench {command} failed");
    n / calls as u64
}

/// Instructions per heartbeat tick of guestd's oVirt session on `peer` (a host that is
/// attached and silent): after two heartbeats, zero, wait for `ticks` heartbeats, dump. A
/// window in which anything but heartbeats arrives (a periodic report) is measured again.
pub fn ovirt_tick(cg: &mut Callgrind, peer: &mut super::Peer, ticks: u64) -> u64 {
    let t = Duration::from_secs(120);
    for _ in 0..2 {
        peer.until("heartbeat", t);
    }
    for _ in 0..5 {
        cg.zero();
        let mut other = false;
        for _ in 0..ticks {
            let (_, before) = peer.until("heartbeat", t);
            other |= !before.is_empty();
        }
        let n = cg.dump();
        if !other {
            return n / ticks;
        }
    }
    panic!("no window of {ticks} heartbeats without other messages");
}

/// Instructions of one refresh burst: zero, send `refresh`, and once the burst's first line
/// is in, an `echo` (handled after the whole burst is queued, so its reply ends the burst);
/// dump; the cost of one echo, measured the same way, is subtracted.
pub fn ovirt_refresh(cg: &mut Callgrind, peer: &mut super::Peer) -> (u64, usize) {
    let t = Duration::from_secs(120);
    let echo = |cg: &mut Callgrind, peer: &mut super::Peer| {
        cg.zero();
        peer.send(r#"{"__name__":"echo","x":1}"#);
        peer.until("echo", t);
        cg.dump()
    };
    // Warm-up, and the echo's own cost.
    echo(cg, peer);
    let e = echo(cg, peer);
    for _ in 0..5 {
        cg.zero();
        peer.send(r#"{"__name__":"refresh","apiVersion":3}"#);
        let first = peer.next(t).expect("no refresh burst");
        peer.send(r#"{"__name__":"echo","x":1}"#);
        let (_, rest) = peer.until("echo", t);
        let n = cg.dump();
        let beats = std::iter::once(&first)
            .chain(&rest)
            .filter(|v| v["__name__"] == "heartbeat")
            .count();
        if beats == 0 {
            return (n.saturating_sub(e), 1 + rest.len());
        }
    }
    panic!("no refresh burst without a heartbeat inside it");
}
