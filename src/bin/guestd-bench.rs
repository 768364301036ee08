// SPDX-License-Identifier: Apache-2.0
//! `guestd-bench`: the client `make bench` drives both agents with (guestd's `--qga-channel`
//! and `qemu-ga -m unix-listen`), so both are measured over the same socket kind, protocol
//! and commands. A host tool, never part of the agent binary.
//!
//! It connects to a QGA socket, sends `{"execute":COMMAND}` and reads one reply line per
//! call: WARMUP calls first, then CALLS timed calls, and prints one line per round
//! (`median_ns=… min_ns=… max_ns=…`). With `--hold` it prints `ready` after the warm-up and
//! waits for a line on stdin before the timed calls, then, after printing the result, waits
//! for stdin to close before it disconnects: the caller zeroes and dumps callgrind's counters
//! in those gaps, so the dump holds exactly the CALLS requests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
Usage: guestd-bench SOCKET COMMAND [--calls N] [--warmup N] [--rounds N] [--hold]

Sends {\"execute\":COMMAND} to the QGA agent on the UNIX socket SOCKET, one call at a time,
and prints the median, minimum and maximum time per call of each round (nanoseconds).";

struct Opts {
    socket: String,
    command: String,
    calls: usize,
    warmup: usize,
    rounds: usize,
    hold: bool,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut pos = Vec::new();
    let mut o = Opts {
        socket: String::new(),
        command: String::new(),
        calls: 2000,
        warmup: 100,
        rounds: 1,
        hold: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match a.as_str() {
            "--calls" => o.calls = num("--calls")?,
            "--warmup" => o.warmup = num("--warmup")?,
            "--rounds" => o.rounds = num("--rounds")?,
            "--hold" => o.hold = true,
            "-h" | "--help" => return Err(USAGE.into()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            s => pos.push(s.to_owned()),
        }
    }
    let [socket, command] = <[String; 2]>::try_from(pos).map_err(|_| USAGE.to_owned())?;
    o.socket = socket;
    o.command = command;
    Ok(o)
}

/// Connects, retrying for up to 120 s (the agent may still be starting, or under valgrind).
fn connect(path: &str) -> Result<UnixStream, String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() >= deadline => return Err(format!("{path}: {e}")),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    request: Vec<u8>,
    line: String,
}

impl Client {
    /// One call: the request out, one reply line in (an error reply is an error).
    fn call(&mut self) -> Result<(), String> {
        self.writer
            .write_all(&self.request)
            .map_err(|e| format!("write: {e}"))?;
        self.line.clear();
        let n = self
            .reader
            .read_line(&mut self.line)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("the agent closed the connection".into());
        }
        if self.line.starts_with("{\"error\"") {
            return Err(format!("error reply: {}", self.line.trim_end()));
        }
        Ok(())
    }
}

fn wait_stdin_line() {
    let mut s = String::new();
    let _ = std::io::stdin().lock().read_line(&mut s);
}

fn run(o: &Opts) -> Result<(), String> {
    let stream = connect(&o.socket)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .map_err(|e| e.to_string())?;
    let mut c = Client {
        reader: BufReader::new(stream.try_clone().map_err(|e| e.to_string())?),
        writer: stream,
        request: format!("{{\"execute\":\"{}\"}}\n", o.command).into_bytes(),
        line: String::new(),
    };
    for _ in 0..o.warmup {
        c.call()?;
    }
    let mut out = std::io::stdout().lock();
    if o.hold {
        writeln!(out, "ready").and_then(|()| out.flush()).ok();
        wait_stdin_line();
    }
    let mut times = Vec::with_capacity(o.calls);
    for _ in 0..o.rounds {
        times.clear();
        for _ in 0..o.calls {
            let t = Instant::now();
            c.call()?;
            times.push(t.elapsed().as_nanos());
        }
        times.sort_unstable();
        let median = times.get(times.len() / 2).copied().unwrap_or(0);
        let min = times.first().copied().unwrap_or(0);
        let max = times.last().copied().unwrap_or(0);
        writeln!(
            out,
            "median_ns={median} min_ns={min} max_ns={max} reply_bytes={}",
            c.line.len()
        )
        .and_then(|()| out.flush())
        .ok();
    }
    if o.hold {
        wait_stdin_line();
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestd-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
