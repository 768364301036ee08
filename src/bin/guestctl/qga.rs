// SPDX-License-Identifier: Apache-2.0
//! `guestctl --qga SOCKET`: the QEMU guest-agent protocol from the host side, over the UNIX
//! socket of the VM's `org.qemu.guest_agent.0` port (or guestd's `unix-listen` QGA channel).
//!
//! Every connection starts with the handshake `qga-protocol.md` §1.5 describes: 0xFF (which
//! flushes whatever half-sent request an earlier client left in the agent's parser), then
//! `guest-sync-delimited` with a random id; everything up to the 0xFF that precedes the
//! reply carrying that id is skipped. Requests then carry an `id` of their own, and replies
//! with another id (stale ones) are skipped too.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

/// guestd's key-value commands are `PREFIX` + name.
pub const KV_PREFIX: &str = "__io.github.guestd_";

/// The longest reply line kept (guestd's replies stay under 8 MiB).
const MAX_REPLY: usize = 16 << 20;

/// A synchronised connection to a QGA agent.
pub struct Qga {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Numbers this client's requests.
    serial: u64,
    deadline: Instant,
}

/// A random sync id: from /dev/urandom, else from the clock and pid; kept within 52 bits so
/// every JSON reader keeps it exact.
fn random_id() -> i64 {
    let mut b = [0u8; 8];
    let urandom = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    let raw = match urandom {
        Ok(()) => u64::from_ne_bytes(b),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            u64::try_from(t & u128::from(u64::MAX)).unwrap_or(0) ^ u64::from(std::process::id())
        }
    };
    i64::try_from(raw & ((1 << 52) - 1)).unwrap_or(1)
}

/// Consumes `buf` up to and including the delimited sync reply carrying `id` (0xFF, then
/// `{"return": id}` and a newline): true when it was found. Everything before it is
/// skipped (an earlier client's replies, error lines); an incomplete tail is kept for the
/// next read.
pub fn take_sync_reply(buf: &mut Vec<u8>, id: i64) -> bool {
    loop {
        let Some(ff) = buf.iter().position(|&b| b == 0xFF) else {
            // No marker: nothing buffered can be the reply.
            buf.clear();
            return false;
        };
        buf.drain(..ff);
        let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
            return false;
        };
        let line: Vec<u8> = buf.drain(..=nl).collect();
        let reply = serde_json::from_slice::<Value>(&line[1..nl]).ok();
        if reply.is_some_and(|r| r.get("return").and_then(Value::as_i64) == Some(id)) {
            return true;
        }
    }
}

impl Qga {
    /// Connects (retrying while the socket does not exist or refuses: the VM is starting)
    /// and synchronises, all before `deadline`, which also bounds every later call.
    pub fn connect(path: &Path, deadline: Instant) -> Result<Qga, String> {
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("connecting to {}: {e}", path.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let mut q = Qga {
            stream,
            buf: Vec::new(),
            serial: 0,
            deadline,
        };
        q.sync()?;
        Ok(q)
    }

    fn sync(&mut self) -> Result<(), String> {
        let id = random_id();
        let mut req = vec![0xFF];
        req.extend_from_slice(
            json!({"execute": "guest-sync-delimited", "arguments": {"id": id}})
                .to_string()
                .as_bytes(),
        );
        req.push(b'\n');
        self.send(&req)?;
        while !take_sync_reply(&mut self.buf, id) {
            if !self.read_more()? {
                return Err(
                    "no answer to guest-sync-delimited in time (is the agent running in the VM?)"
                        .into(),
                );
            }
        }
        Ok(())
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("sending to the agent: {e}"))
    }

    /// One read into the buffer: false at the deadline.
    fn read_more(&mut self) -> Result<bool, String> {
        let now = Instant::now();
        if now >= self.deadline {
            return Ok(false);
        }
        if self.buf.len() > MAX_REPLY {
            return Err(format!("a reply over {} MiB", MAX_REPLY >> 20));
        }
        self.stream
            .set_read_timeout(Some(self.deadline - now))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 65536];
        loop {
            return match self.stream.read(&mut chunk) {
                Ok(0) => Err("the agent closed the connection".into()),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    Ok(false)
                }
                Err(e) => Err(format!("reading from the agent: {e}")),
            };
        }
    }

    /// The next reply line as JSON (a 0xFF before it dropped).
    fn next_reply(&mut self) -> Result<Value, String> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=nl).collect();
                let body = line[..nl].strip_prefix(b"\xff").unwrap_or(&line[..nl]);
                match serde_json::from_slice::<Value>(body) {
                    Ok(v) if v.is_object() => return Ok(v),
                    _ => {
                        eprintln!("guestctl: skipping a malformed line from the agent");
                        continue;
                    }
                }
            }
            if !self.read_more()? {
                return Err("no reply from the agent in time".into());
            }
        }
    }

    /// Sends `text` as it is and returns the next reply, whole.
    pub fn raw(&mut self, text: &str) -> Result<Value, String> {
        self.send(text.as_bytes())?;
        self.send(b"\n")?;
        self.next_reply()
    }

    /// Runs `execute` with `arguments`: its `return` value, or the agent's error in words.
    pub fn call(&mut self, execute: &str, arguments: Value) -> Result<Value, String> {
        self.serial += 1;
        let id = format!("guestctl-{}-{}", std::process::id(), self.serial);
        let mut req = json!({"execute": execute, "id": id});
        if arguments.as_object().is_some_and(|m| !m.is_empty()) {
            req["arguments"] = arguments;
        }
        self.send(format!("{req}\n").as_bytes())?;
        loop {
            let reply = self.next_reply()?;
            if reply.get("id").and_then(Value::as_str) != Some(id.as_str()) {
                continue;
            }
            if let Some(v) = reply.get("return") {
                return Ok(v.clone());
            }
            return Err(error_text(execute, &reply["error"]));
        }
    }
}

/// An error reply in words; CommandNotFound says the agent lacks the command.
pub fn error_text(execute: &str, error: &Value) -> String {
    let desc = error["desc"].as_str().unwrap_or("(no description)");
    match error["class"].as_str() {
        Some("CommandNotFound") if desc.contains("has been disabled") => {
            format!("the agent has disabled {execute}: {desc}")
        }
        Some("CommandNotFound") => format!("the agent does not support {execute}"),
        _ => format!("{execute}: {desc}"),
    }
}

/// What `guestctl --qga` understands (`args` are the command's own arguments). Prints to
/// stdout; an error is returned for the caller to print.
pub fn run(
    socket: &Path,
    timeout: Duration,
    as_json: bool,
    command: &str,
    args: &[String],
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let kv = |name: &str| format!("{KV_PREFIX}{name}");
    let one = |what: &str| match args {
        [a] => Ok(a.as_str()),
        _ => Err(format!("{command} needs {what}")),
    };
    let none = || match args {
        [] => Ok(()),
        _ => Err(format!("{command} takes no arguments")),
    };
    // Checked before connecting, so a typo costs no round trip.
    let known = [
        "ping",
        "info",
        "osinfo",
        "call",
        "raw",
        "set",
        "get",
        "list",
        "delete",
        "delete-all",
        "messages",
        "ack",
    ];
    if !known.contains(&command) {
        return Err(format!(
            "unknown command '{command}' with --qga (see guestctl --help)"
        ));
    }
    let mut q = Qga::connect(socket, deadline)?;
    match command {
        "ping" => {
            none()?;
            let t0 = Instant::now();
            q.call("guest-ping", json!({}))?;
            println!(
                "guest-ping answered in {:.1} ms",
                t0.elapsed().as_secs_f64() * 1000.0
            );
        }
        "info" => {
            none()?;
            let info = q.call("guest-info", json!({}))?;
            if as_json {
                println!("{info}");
            } else {
                println!("version {}", info["version"].as_str().unwrap_or("?"));
                for c in info["supported_commands"].as_array().into_iter().flatten() {
                    let state = if c["enabled"] == true {
                        "enabled"
                    } else {
                        "disabled"
                    };
                    println!("{:<40} {state}", c["name"].as_str().unwrap_or("?"));
                }
            }
        }
        "osinfo" => {
            none()?;
            println!("{}", q.call("guest-get-osinfo", json!({}))?);
        }
        "call" => {
            let (name, arguments) = match args {
                [n] => (n, json!({})),
                [n, a] => {
                    let v: Value = serde_json::from_str(a)
                        .map_err(|e| format!("call: the arguments are not JSON: {e}"))?;
                    (n, v)
                }
                _ => return Err("call needs NAME [ARGUMENTS-JSON]".into()),
            };
            println!("{}", q.call(name, arguments)?);
        }
        "raw" => {
            let text = one("one JSON request")?;
            let reply = q.raw(text)?;
            println!("{reply}");
            if reply.get("error").is_some() {
                return Err("the agent answered with an error".into());
            }
        }
        "set" => {
            let (k, v) = one("KEY=VALUE")?
                .split_once('=')
                .ok_or("set needs KEY=VALUE")?;
            q.call(&kv("set-param"), json!({"key": k, "value": v}))?;
        }
        "get" => {
            let r = q.call(&kv("get-param"), json!({"key": one("KEY")?}))?;
            println!("{}", r["value"].as_str().unwrap_or(""));
        }
        "list" => {
            none()?;
            let r = q.call(&kv("list-params"), json!({}))?;
            for p in r["params"].as_array().into_iter().flatten() {
                let mut m = Map::new();
                m.insert(
                    p["key"].as_str().unwrap_or("").to_owned(),
                    p["value"].clone(),
                );
                println!("{}", Value::Object(m));
            }
        }
        "delete" => {
            q.call(&kv("delete-param"), json!({"key": one("KEY")?}))?;
        }
        "delete-all" => {
            none()?;
            q.call(&kv("delete-params"), json!({}))?;
        }
        "messages" => messages(&mut q, args)?,
        _ => {
            let upto: i64 = one("SEQ")?
                .parse()
                .map_err(|_| "ack needs a message number SEQ".to_owned())?;
            q.call(&kv("ack-messages"), json!({ "upto": upto }))?;
        }
    }
    Ok(())
}

/// `messages [--ack]`: prints the guest's pending messages, one JSON object a line; with
/// `--ack` each page is acknowledged once printed, until none is left.
fn messages(q: &mut Qga, args: &[String]) -> Result<(), String> {
    let ack = match args {
        [] => false,
        [a] if a == "--ack" => true,
        _ => return Err("messages takes only --ack".into()),
    };
    loop {
        let r = q.call(&format!("{KV_PREFIX}get-messages"), json!({}))?;
        let list = r["messages"].as_array().cloned().unwrap_or_default();
        for m in &list {
            println!("{m}");
        }
        let more = r["more"] == true;
        if !ack {
            if more {
                eprintln!("guestctl: more messages wait; use --ack to take them all");
            }
            return Ok(());
        }
        let Some(last) = list.last().and_then(|m| m["seq"].as_i64()) else {
            return Ok(());
        };
        q.call(&format!("{KV_PREFIX}ack-messages"), json!({ "upto": last }))?;
        if !more {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_skips_to_the_reply_with_its_id() {
        let mut buf =
            b"{\"error\":{\"class\":\"GenericError\",\"desc\":\"x\"}}\n\xff{\"ret".to_vec();
        assert!(!take_sync_reply(&mut buf, 7), "incomplete");
        assert_eq!(buf, b"\xff{\"ret");
        buf.extend_from_slice(b"urn\":6}\n{\"return\":{}}\n\xff{\"return\":7}\n{\"return\":1}");
        assert!(take_sync_reply(&mut buf, 7));
        assert_eq!(buf, b"{\"return\":1}", "what follows is kept");
        let mut junk = b"{\"return\":7}\n".to_vec();
        assert!(!take_sync_reply(&mut junk, 7), "no 0xFF, no sync");
        assert!(junk.is_empty());
    }

    #[test]
    fn errors_say_what_the_agent_lacks() {
        let e = json!({"class": "CommandNotFound", "desc": "The command x has not been found"});
        assert_eq!(error_text("x", &e), "the agent does not support x");
        let e = json!({"class": "CommandNotFound", "desc": "Command x has been disabled: why"});
        assert_eq!(
            error_text("x", &e),
            "the agent has disabled x: Command x has been disabled: why"
        );
        let e = json!({"class": "GenericError", "desc": "no param \"k\""});
        assert_eq!(error_text("get", &e), "get: no param \"k\"");
        assert!((0..1 << 52).contains(&random_id()));
    }
}
