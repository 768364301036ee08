// SPDX-License-Identifier: Apache-2.0
//! Shared helpers for the integration tests: a scratch directory, a guestd process that is
//! killed when dropped, and a host peer on a real UNIX socket that reads JSON lines with a
//! deadline, so no test can hang.

#![allow(dead_code)]

pub mod callgrind;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("guestd-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Copies a fixture tree (symlinks kept) so a test may change it.
pub fn copy_tree(from: &Path, to: &Path) {
    let ok = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cp -a {} {}", from.display(), to.display());
}

/// Options that keep a test's agent and CLI calls to its own directory: store, control socket
/// and hooks.
pub fn isolation(dir: &Path) -> Vec<String> {
    vec![
        format!("--state-dir={}", dir.join("state").display()),
        format!("--control-socket={}", dir.join("ctl.sock").display()),
        format!("--hooks-dir={}", dir.join("hooks").display()),
        // Never let a test power off or reboot the machine running it.
        "--poweroff-command=/bin/false".to_owned(),
        "--reboot-command=/bin/false".to_owned(),
    ]
}

pub fn guestd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_guestd")
}

/// A running guestd; killed (SIGKILL) on drop if still running.
pub struct Agent {
    pub child: Child,
    pub sock: PathBuf,
    /// The QGA socket, when started with `start_qga`.
    pub qga: PathBuf,
    pub log: PathBuf,
}

impl Agent {
    /// Starts `guestd --channel unix-listen:<dir>/g.sock -d 1` plus `extra` arguments and waits
    /// for the socket to appear.
    pub fn start(dir: &Path, extra: &[&str]) -> Agent {
        Agent::start_wrapped(dir, &[], Stdio::null(), extra)
    }

    /// Like `start`, with guestd run by `wrapper` (a program and its arguments, guestd's
    /// path and arguments appended: `unshare`, a shell script ending in `exec "$@"`), whose
    /// stdin is `stdin`.
    pub fn start_wrapped(dir: &Path, wrapper: &[&str], stdin: Stdio, extra: &[&str]) -> Agent {
        let sock = dir.join("g.sock");
        let log = dir.join("guestd.log");
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(guestd_bin());
                c
            }
            None => Command::new(guestd_bin()),
        };
        let child = cmd
            .arg("--config")
            .arg("/dev/null")
            .arg(format!("--channel=unix-listen:{}", sock.display()))
            .args(["-d", "1", "--log-level", "debug"])
            .args(isolation(dir))
            .args(extra)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "guestd did not create {}",
                sock.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        Agent {
            child,
            sock,
            qga: dir.join("qga.sock"),
            log,
        }
    }

    /// Like `start`, serving QGA on `<dir>/qga.sock` too, and waits for that socket.
    pub fn start_qga(dir: &Path, extra: &[&str]) -> Agent {
        let qga = format!(
            "--qga-channel=unix-listen:{}",
            dir.join("qga.sock").display()
        );
        let mut args = vec![qga.as_str()];
        args.extend_from_slice(extra);
        let agent = Agent::start(dir, &args);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !agent.qga.exists() {
            assert!(
                Instant::now() < deadline,
                "guestd did not create the QGA socket"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        agent
    }

    pub fn connect_qga(&self) -> QgaPeer {
        QgaPeer::connect(&self.qga)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn connect(&self) -> Peer {
        Peer::connect(&self.sock)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `sig` and waits for the exit status (at most 5 s).
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "guestd did not exit after SIG{sig}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Voluntary plus involuntary context switches of the process so far.
    pub fn context_switches(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One read from `stream` into `buf`, waiting until `deadline` at most; false at end of file
/// or when nothing came in time. A read interrupted by a signal (a child of the test
/// exiting) is retried.
fn read_more(stream: &mut UnixStream, buf: &mut Vec<u8>, deadline: Instant) -> bool {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        stream.set_read_timeout(Some(deadline - now)).unwrap();
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("reading from guestd: {e}"),
        }
    }
}

/// Waits until the agent of `dir` has its control socket (it exists once the store is
/// loaded).
pub fn wait_for_control(dir: &Path) {
    let ctl = dir.join("ctl.sock");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ctl.exists() {
        assert!(Instant::now() < deadline, "no control socket");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `guestd` in one-shot mode against the test directory's store and control socket.
pub fn cli(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(guestd_bin())
        .args(["--config", "/dev/null", "-d", "1"])
        .args(isolation(dir))
        .args(args)
        .output()
        .unwrap()
}

/// The host side of the channel.
pub struct Peer {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

impl Peer {
    pub fn connect(path: &Path) -> Peer {
        let stream = UnixStream::connect(path).unwrap();
        Peer {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next line as JSON, or `None` if nothing complete arrives before `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                assert!(line.is_ascii(), "non-ASCII output line: {line:?}");
                return Some(serde_json::from_slice(&line[..i]).unwrap_or_else(|e| {
                    panic!(
                        "invalid JSON from guestd: {e}: {}",
                        String::from_utf8_lossy(&line)
                    )
                }));
            }
            if !read_more(&mut self.stream, &mut self.buf, deadline) {
                return None;
            }
        }
    }

    /// Reads until a message named `name` arrives (returning it and everything before it), or
    /// panics after `timeout`.
    pub fn until(&mut self, name: &str, timeout: Duration) -> (Value, Vec<Value>) {
        self.until_where(name, |_| true, timeout)
    }

    /// Like `until`, for the first message named `name` that also satisfies `pred`.
    pub fn until_where(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> (Value, Vec<Value>) {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(v) if v["__name__"] == name && pred(&v) => return (v, seen),
                Some(v) => seen.push(v),
                None => panic!(
                    "no '{name}' within {timeout:?}; got {:?}",
                    seen.iter()
                        .map(|v| v["__name__"].clone())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Every message that arrives within `d`.
    pub fn collect_for(&mut self, d: Duration) -> Vec<Value> {
        let deadline = Instant::now() + d;
        let mut out = Vec::new();
        while let Some(v) = self.next(deadline.saturating_duration_since(Instant::now())) {
            out.push(v);
        }
        out
    }
}

/// Whether `fd` can be written to now (poll(2) with no wait): false once the agent pushes
/// back on a host that sends faster than it reads.
pub fn writable(fd: std::os::fd::RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait; the fd is open for the caller's whole call.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & libc::POLLOUT != 0
}

/// Writes `lines` to `stream` from a thread; the returned flag turns true when a write
/// would have blocked (the agent pushed back).
pub fn send_in_background(
    mut stream: UnixStream,
    lines: Vec<String>,
) -> (
    std::thread::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use std::os::fd::AsRawFd;
    let pushed_back = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = pushed_back.clone();
    let handle = std::thread::spawn(move || {
        for line in lines {
            if !writable(stream.as_raw_fd()) {
                flag.store(true, Ordering::SeqCst);
            }
            stream.write_all(line.as_bytes()).unwrap();
        }
    });
    (handle, pushed_back)
}

/// Waits (at most `timeout`) until `flag` is set or `thread` ended; whether the flag is set.
pub fn wait_flag(
    flag: &std::sync::atomic::AtomicBool,
    thread: &std::thread::JoinHandle<()>,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    while !flag.load(Ordering::SeqCst) && !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    flag.load(Ordering::SeqCst)
}

pub fn names(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|v| v["__name__"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The host side of a QGA channel.
pub struct QgaPeer {
    pub stream: UnixStream,
    buf: Vec<u8>,
}

/// How long a test waits for one QGA reply.
pub const QGA_WAIT: Duration = Duration::from_secs(20);

impl QgaPeer {
    pub fn connect(path: &Path) -> QgaPeer {
        QgaPeer {
            stream: UnixStream::connect(path).unwrap(),
            buf: Vec::new(),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next reply line, raw (a leading 0xFF kept), or `None` at end of file or after
    /// `timeout`. Every line must be ASCII apart from that 0xFF.
    pub fn next_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let body = line.strip_prefix(b"\xff").unwrap_or(&line);
                assert!(body.is_ascii(), "non-ASCII reply: {line:?}");
                return Some(line[..line.len() - 1].to_vec());
            }
            if !read_more(&mut self.stream, &mut self.buf, deadline) {
                return None;
            }
        }
    }

    /// The next reply as JSON (panics if none arrives within `QGA_WAIT`).
    pub fn reply(&mut self) -> Value {
        let line = self.next_raw(QGA_WAIT).expect("no QGA reply");
        serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("invalid reply: {e}: {}", String::from_utf8_lossy(&line)))
    }

    /// Sends one request (JSON text) and returns its reply.
    pub fn call(&mut self, request: &str) -> Value {
        self.send_raw(request.as_bytes());
        self.reply()
    }

    /// `execute` with `arguments`; the `return` value, or a panic naming the error.
    pub fn ok(&mut self, execute: &str, arguments: Value) -> Value {
        let req = serde_json::json!({"execute": execute, "arguments": arguments});
        let r = self.call(&req.to_string());
        match r.get("return") {
            Some(v) => v.clone(),
            None => panic!("{execute} failed: {r}"),
        }
    }

    /// `execute` with `arguments`, expected to fail: the error object.
    pub fn err(&mut self, execute: &str, arguments: Value) -> Value {
        let req = serde_json::json!({"execute": execute, "arguments": arguments});
        let r = self.call(&req.to_string());
        match r.get("error") {
            Some(v) => v.clone(),
            None => panic!("{execute} did not fail: {r}"),
        }
    }
}
