// SPDX-License-Identifier: Apache-2.0
//! The one-shot command line (`guestd -p/-g/-r/-x/-l/-e/-s`). It works whether or not the
//! agent runs: through the agent's control socket when it answers (so the agent sends at
//! once), otherwise by editing the store directly under its lock (the agent sends pending
//! messages when it starts).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Config;
use crate::hooks::{self, Job};
use crate::kv::ops::{self, Op, Reply};
use crate::kv::store::{Store, StoreLock};
use crate::kv::{self, Entry};
use crate::ovirt::kv::legacy_record;
use crate::proto::line::{Frame, LineReader};

/// How long the CLI waits for a busy store lock or an agent that is starting.
const CONNECT_WAIT: Duration = Duration::from_secs(10);
/// How long the CLI waits for the agent's answer.
const ANSWER_WAIT: Duration = Duration::from_secs(30);
/// Longest control-socket line: a full `list` (1024 params of 8 KiB, JSON-escaped).
pub const MAX_CONTROL_LINE: usize = 64 * 1024 * 1024;

enum Backend {
    Agent {
        stream: UnixStream,
        reader: LineReader,
    },
    Direct {
        store: Store,
        _lock: StoreLock,
    },
}

fn connect(cfg: &Config) -> Result<Backend, String> {
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        if let Ok(stream) = UnixStream::connect(&cfg.control_socket) {
            return Ok(Backend::Agent {
                stream,
                reader: LineReader::new(MAX_CONTROL_LINE),
            });
        }
        match StoreLock::try_lock(&cfg.state_dir) {
            Ok(Some(lock)) => {
                let store =
                    Store::open(&cfg.state_dir, legacy_record).map_err(|e| e.to_string())?;
                return Ok(Backend::Direct { store, _lock: lock });
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the store in {} is locked and no agent answers on {}",
                cfg.state_dir.display(),
                cfg.control_socket.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Backend {
    fn perform(&mut self, op: &Op) -> Result<Reply, String> {
        match self {
            Backend::Direct { store, .. } => ops::apply(store, op).map_err(|e| e.to_string()),
            Backend::Agent { stream, reader } => {
                let mut line = op.request().to_string().into_bytes();
                line.push(b'\n');
                let sent = stream.write_all(&line);
                // A refusal (e.g. a peer not allowed) may have arrived before the agent closed:
                // read it even when the write failed.
                match (read_line(stream, reader), sent) {
                    (Ok(response), _) => Reply::from_response(&response),
                    (Err(_), Err(e)) => Err(format!("sending to the agent: {e}")),
                    (Err(e), Ok(())) => Err(e),
                }
            }
        }
    }
}

/// Reads one JSON line from the agent.
fn read_line(stream: &mut UnixStream, reader: &mut LineReader) -> Result<Value, String> {
    let deadline = Instant::now() + ANSWER_WAIT;
    let mut got: Option<Result<Value, String>> = None;
    let mut buf = vec![0u8; 64 * 1024];
    while got.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the agent did not answer in time".into());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Err("the agent closed the connection".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading the agent's answer: {e}")),
        };
        reader.feed(&buf[..n], |f| {
            if got.is_none() {
                got = Some(match f {
                    Frame::Line(l) => serde_json::from_slice(l).map_err(|e| e.to_string()),
                    Frame::Oversize | Frame::Invalid(_) | Frame::Flush => {
                        Err("the agent's answer is too long".into())
                    }
                });
            }
        });
    }
    got.unwrap_or_else(|| Err("no answer".into()))
}

/// The `-l` text: one `{"key":"value"}` line per param, oldest first.
pub fn list_text(entries: &[Entry]) -> String {
    entries.iter().map(|e| kv::list_line(e) + "\n").collect()
}

/// Performs one operation, with a fresh connection (or lock) that is released before any
/// hook runs: a hook may call `guestd` itself, and an agent may be starting meanwhile.
fn perform(cfg: &Config, op: &Op) -> Result<Reply, String> {
    let mut backend = connect(cfg)?;
    match backend.perform(op) {
        // The agent went away mid-call (it was stopping): once more, with whoever has the
        // store now. Every operation but `-e` is idempotent; an event may then arrive twice.
        Err(e) if matches!(backend, Backend::Agent { .. }) && agent_went_away(&e) => {
            drop(backend);
            connect(cfg)?.perform(op)
        }
        r => r,
    }
}

/// Whether a failed call means the agent stopped under it (rather than refusing the call).
fn agent_went_away(e: &str) -> bool {
    ["closed the connection", "reset by peer", "Broken pipe"]
        .iter()
        .any(|m| e.contains(m))
}

/// Runs `ops` in order; returns the process exit code (0 all fine, 1 a failure or an absent
/// key for `-g`).
pub fn run(cfg: &Config, ops: &[Op]) -> u8 {
    let mut code = 0;
    for op in ops {
        let reply = match perform(cfg, op) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("guestd: {e}");
                code = 1;
                continue;
            }
        };
        let mut out = io::stdout().lock();
        match (op, reply) {
            (Op::Get { key }, Reply::Value(v)) => match v {
                Some(v) => {
                    let _ = writeln!(out, "{v}");
                }
                None => {
                    eprintln!("guestd: no param '{key}'");
                    code = 1;
                }
            },
            (Op::List, Reply::List(entries)) => {
                let _ = out.write_all(list_text(&entries).as_bytes());
            }
            (Op::Script { name }, Reply::List(entries)) => {
                let _ = out.flush();
                drop(out);
                // Param values may be secrets: masked wherever a script prints them (values
                // shorter than 4 bytes are left alone, or every digit would be masked).
                let secrets = entries
                    .iter()
                    .filter(|e| e.value.len() >= 4)
                    .map(|e| e.value.clone().into_bytes())
                    .collect();
                let dir = cfg.hooks_dir.join(name);
                if !run_hooks(cfg, name, &dir, list_text(&entries), secrets) {
                    code = 1;
                }
            }
            (Op::Event { name }, _) => {
                drop(out);
                let dir = cfg.hooks_dir.join("event").join(name);
                if !run_hooks(
                    cfg,
                    &format!("event/{name}"),
                    &dir,
                    String::new(),
                    Vec::new(),
                ) {
                    code = 1;
                }
            }
            _ => {}
        }
    }
    let _ = io::stdout().flush();
    code
}

/// Runs the executables in `dir`, printing each one's status; true when all succeeded.
fn run_hooks(cfg: &Config, label: &str, dir: &Path, stdin: String, redact: Vec<Vec<u8>>) -> bool {
    let outcomes = hooks::run_blocking(Job {
        label: label.to_owned(),
        dir: dir.to_owned(),
        args: Vec::new(),
        stdin: stdin.into_bytes(),
        redact,
        timeout: cfg.hook_timeout,
        ends: None,
    });
    let mut all_ok = true;
    for o in &outcomes {
        let name = o
            .program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &o.result {
            Ok(status) => println!("{label}/{name}: {status}"),
            Err(e) => println!("{label}/{name}: {e}"),
        }
        all_ok &= o.ok();
    }
    all_ok
}
