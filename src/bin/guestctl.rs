// SPDX-License-Identifier: Apache-2.0
//! `guestctl`: the host-side tool. Connects as a client to the UNIX socket QEMU or libvirt
//! exposes for the VM's `ovirt-guest-agent.0` port and talks to guestd over it, or, with
//! `--qga`, to the socket of its `org.qemu.guest_agent.0` port (`guestctl/qga.rs`).
//!
//! A host tool, not the agent: it uses blocking I/O with read timeouts, which keeps it short.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[path = "guestctl/qga.rs"]
mod qga;
#[path = "guestctl/table.rs"]
mod table;

use guestd::ovirt::wire as ovirt;
use guestd::proto::line::{Frame, LineReader};
use serde_json::{Map, Value, json};
use table::{print_table, s, timestamp};

const USAGE: &str = "\
Usage: guestctl --socket PATH [--timeout SECS] [--json] COMMAND
       guestctl --qga PATH [--timeout SECS] [--json] QGA-COMMAND

Talks to guestd through the host side of the VM's ovirt-guest-agent.0 channel socket
(QEMU: -chardev socket,server=on,wait=off). Retries until the socket accepts a connection.

Commands:
  info      ask for a refresh, negotiate API version 3 and print the guest's facts
            (a table, or one JSON object with --json)
  watch     print every message as it arrives, one line each, with a UTC timestamp
  refresh   send refresh {\"apiVersion\":3} and print the burst that answers it
  echo      send echo and wait for it to come back; prints the round-trip time

Key-value messages (each waits for the guest's completion):
  set KEY=VALUE   get KEY   list   delete KEY   delete-all

Actions (each waits for the guest's completion):
  shutdown [--reboot] [--timeout SECS] [--message TEXT]
                    power off (or reboot) after SECS of grace (default 0)
  hibernate [disk|mem]   lock-screen   log-off
  login USER        the password is read from stdin (never from the command line)
  lifecycle TYPE    before_hibernation, after_hibernation, before_migration, after_migration
  set-cpus COUNT    bring CPUs online or offline; prints the new number-of-cpus

With --qga PATH, guestctl speaks the QEMU guest-agent protocol instead, to the socket of
the VM's org.qemu.guest_agent.0 port (libvirt: /var/lib/libvirt/qemu/channel/target/
DOMAIN/org.qemu.guest_agent.0) or guestd's unix-listen QGA channel. It synchronises first
(0xFF, guest-sync-delimited with a random id), so it works with qemu-ga too, except for
guestd's own key-value commands. QGA commands:
  ping            guest-ping; prints the round-trip time
  info            guest-info: the version and every command, enabled or disabled
                  (one JSON object with --json)
  osinfo          guest-get-osinfo, as JSON
  call NAME [ARGUMENTS-JSON]   any command; prints its return value as JSON
  raw JSON        send one request as it is; prints the whole reply
  set KEY=VALUE   get KEY   list   delete KEY   delete-all
                  guestd's key-value store (__io.github.guestd_* commands)
  messages [--ack]  the guest's messages for the host, one JSON object a line; --ack
                  takes them (acknowledged, they are not delivered again)
  ack SEQ         acknowledge the messages up to SEQ

Options:
  --socket PATH    the oVirt channel socket
  --qga PATH       the QEMU guest-agent channel socket (one of the two is required)
  --timeout SECS   give up after SECS without the expected answer (default 10)
  --json           info: print one JSON object instead of a table
  -h, --help       this help
";

struct Opts {
    socket: PathBuf,
    /// `--qga`: speak the QEMU guest-agent protocol.
    qga: bool,
    timeout: Duration,
    json: bool,
    command: String,
    /// The command's own arguments.
    args: Vec<String>,
}

fn parse_args() -> Result<Option<Opts>, String> {
    let mut socket = None;
    let mut qga = None;
    let mut timeout = Duration::from_secs(10);
    let mut json = false;
    let mut command = None;
    let mut rest = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (a.clone(), None),
        };
        let mut value = |n: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{n} needs a value"))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--socket" => socket = Some(PathBuf::from(value("--socket")?)),
            "--qga" => qga = Some(PathBuf::from(value("--qga")?)),
            "--timeout" => {
                let v = value("--timeout")?;
                let secs: f64 = v
                    .parse()
                    .map_err(|_| format!("--timeout: '{v}' is not a number"))?;
                if !(0.1..=3600.0).contains(&secs) {
                    return Err(format!("--timeout must be between 0.1 and 3600 s, not {v}"));
                }
                timeout = Duration::from_secs_f64(secs);
            }
            "--json" => json = true,
            c if !c.starts_with('-') => {
                command = Some(c.to_owned());
                // Everything after the command word belongs to the command.
                rest.extend(args.by_ref());
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    let (socket, qga) = match (socket, qga) {
        (Some(s), None) => (s, false),
        (None, Some(q)) => (q, true),
        (Some(_), Some(_)) => return Err("--socket and --qga exclude each other".into()),
        (None, None) => return Err("--socket PATH or --qga PATH is required".into()),
    };
    let command = command.ok_or("a COMMAND is required")?;
    Ok(Some(Opts {
        socket,
        qga,
        timeout,
        json,
        args: rest,
        command,
    }))
}

/// A connection to the agent with a deadline on every read.
struct Link {
    stream: UnixStream,
    reader: LineReader,
    pending: Vec<Value>,
}

impl Link {
    /// Connects, retrying while the socket does not exist or refuses (the VM is starting).
    fn connect(path: &PathBuf, deadline: Instant) -> Result<Link, String> {
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    return Ok(Link {
                        stream,
                        reader: LineReader::new(ovirt::MAX_LINE),
                        pending: Vec::new(),
                    });
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("connecting to {}: {e}", path.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn send(&mut self, name: &str, args: Value) -> Result<(), String> {
        let args = match args {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        self.stream
            .write_all(&ovirt::encode(name, &args))
            .map_err(|e| format!("sending {name}: {e}"))
    }

    /// The next message, or `Ok(None)` at the deadline.
    fn next(&mut self, deadline: Instant) -> Result<Option<Value>, String> {
        loop {
            if !self.pending.is_empty() {
                return Ok(Some(self.pending.remove(0)));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| e.to_string())?;
            let mut buf = [0u8; 65536];
            let n = match self.stream.read(&mut buf) {
                Ok(0) => return Err("the channel closed".to_owned()),
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(format!("reading: {e}")),
            };
            let pending = &mut self.pending;
            self.reader.feed(&buf[..n], |f| match f {
                Frame::Line(l) => match serde_json::from_slice::<Value>(l) {
                    Ok(v) if v.get("__name__").is_some_and(Value::is_string) => pending.push(v),
                    _ => eprintln!("guestctl: skipping a malformed line from the guest"),
                },
                Frame::Oversize | Frame::Invalid(_) | Frame::Flush => {
                    eprintln!("guestctl: skipping a line over 1 MiB")
                }
            });
        }
    }
}

fn name(v: &Value) -> &str {
    v["__name__"].as_str().unwrap_or("")
}

/// Collects facts the way VDSM does: refresh, then api-version once a heartbeat advertises 3.
fn info(opts: &Opts) -> Result<Map<String, Value>, String> {
    let deadline = Instant::now() + opts.timeout;
    let mut link = Link::connect(&opts.socket, deadline)?;
    link.send("refresh", json!({"apiVersion": 3}))?;
    let mut facts = Map::new();
    let mut negotiated = false;
    let done = |f: &Map<String, Value>| {
        ["heartbeat", "fqdn", "os-info", "timezone", "disks-usage"]
            .iter()
            .all(|k| f.contains_key(*k))
    };
    while !done(&facts) {
        let Some(msg) = link.next(deadline)? else {
            break;
        };
        let n = name(&msg).to_owned();
        if n == "heartbeat" && !negotiated {
            let v = msg["apiVersion"].as_i64().unwrap_or(0).clamp(0, 3);
            if v > 0 {
                link.send("api-version", json!({"apiVersion": v}))?;
                negotiated = true;
            }
        }
        facts.insert(n, msg);
    }
    if facts.is_empty() {
        return Err(format!(
            "nothing arrived from the guest within {:.1} s (is guestd running in the VM?)",
            opts.timeout.as_secs_f64()
        ));
    }
    if !done(&facts) {
        eprintln!("guestctl: timed out before every fact arrived; printing what did");
    }
    Ok(facts)
}

fn run(opts: &Opts) -> Result<(), String> {
    if opts.qga {
        return qga::run(
            &opts.socket,
            opts.timeout,
            opts.json,
            &opts.command,
            &opts.args,
        );
    }
    match opts.command.as_str() {
        "info" => {
            let facts = info(opts)?;
            if opts.json {
                println!("{}", Value::Object(facts));
            } else {
                print_table(&facts);
            }
        }
        "watch" => {
            let mut link = Link::connect(&opts.socket, Instant::now() + opts.timeout)?;
            loop {
                let far = Instant::now() + Duration::from_secs(3600);
                if let Some(m) = link.next(far)? {
                    println!("{} {m}", timestamp());
                }
            }
        }
        "refresh" => {
            let mut link = Link::connect(&opts.socket, Instant::now() + opts.timeout)?;
            link.send("refresh", json!({"apiVersion": 3}))?;
            let deadline = Instant::now() + opts.timeout;
            let mut got = 0;
            // The burst ends with fqdn, timezone or os-info depending on the negotiated version.
            while let Some(m) = link.next(deadline)? {
                println!("{m}");
                got += 1;
                if name(&m) == "os-info" || (name(&m) == "fqdn" && got > 1) {
                    let quiet = Instant::now() + Duration::from_millis(300);
                    while let Some(m) = link.next(quiet)? {
                        println!("{m}");
                    }
                    return Ok(());
                }
            }
            if got == 0 {
                return Err("no answer to refresh".into());
            }
        }
        "echo" => {
            let deadline = Instant::now() + opts.timeout;
            let mut link = Link::connect(&opts.socket, deadline)?;
            let token = format!("guestctl-{}-{}", std::process::id(), timestamp());
            let t0 = Instant::now();
            link.send("echo", json!({"token": token}))?;
            loop {
                let Some(m) = link.next(deadline)? else {
                    return Err(format!(
                        "no echo within {:.1} s",
                        opts.timeout.as_secs_f64()
                    ));
                };
                if name(&m) == "echo" && m["token"] == token.as_str() {
                    println!(
                        "echo answered in {:.1} ms",
                        t0.elapsed().as_secs_f64() * 1000.0
                    );
                    return Ok(());
                }
            }
        }
        "set" | "get" | "list" | "delete" | "delete-all" => kv_command(opts)?,
        "shutdown" | "hibernate" | "lock-screen" | "log-off" | "login" | "lifecycle"
        | "set-cpus" => action(opts)?,
        other => return Err(format!("unknown command '{other}' (see guestctl --help)")),
    }
    Ok(())
}

/// A unique reply id for this call.
fn reply_id() -> String {
    format!("guestctl-{}-{}", std::process::id(), timestamp())
}

/// Sends `name` with `args` plus a reply id and prints/returns what the guest answers:
/// messages named in `answers` as they come, then the completion.
fn request(
    opts: &Opts,
    deadline: Instant,
    name: &str,
    args: Value,
    answers: &[&str],
) -> Result<Vec<Value>, String> {
    let mut link = Link::connect(&opts.socket, deadline)?;
    // Completions need API version 3 (key-value commands get them at any version): say the
    // host speaks 3, as VDSM does before it asks for one.
    link.send("api-version", json!({"apiVersion": 3}))?;
    let id = reply_id();
    let mut args = args;
    if let Value::Object(m) = &mut args {
        m.insert("reply_id".into(), Value::String(id.clone()));
    }
    link.send(name, args)?;
    let mut got = Vec::new();
    loop {
        let Some(m) = link.next(deadline)? else {
            return Err(format!("no completion for {name} in time"));
        };
        if answers.contains(&self::name(&m)) {
            got.push(m);
        } else if self::name(&m) == "completion" && m["reply_id"] == id.as_str() {
            if m["done"] == true {
                return Ok(got);
            }
            return Err(format!("the guest refused {name}: {}", s(&m["error"])));
        }
    }
}

fn one_arg<'a>(opts: &'a Opts, what: &str) -> Result<&'a str, String> {
    match opts.args.as_slice() {
        [a] => Ok(a),
        _ => Err(format!("{} needs {what}", opts.command)),
    }
}

fn kv_command(opts: &Opts) -> Result<(), String> {
    let deadline = Instant::now() + opts.timeout;
    match opts.command.as_str() {
        "set" => {
            let kv = one_arg(opts, "KEY=VALUE")?;
            let (k, v) = kv.split_once('=').ok_or("set needs KEY=VALUE")?;
            request(
                opts,
                deadline,
                "set-param",
                json!({"key": k, "value": v}),
                &[],
            )?;
        }
        "get" => {
            let k = one_arg(opts, "KEY")?;
            let got = request(opts, deadline, "get-param", json!({"key": k}), &["param"])?;
            match got.iter().find(|m| m["key"] == k) {
                Some(m) if m.get("value").is_some() => println!("{}", s(&m["value"])),
                _ => return Err(format!("no param '{k}'")),
            }
        }
        "list" => {
            let got = request(opts, deadline, "list-params", json!({}), &["params"])?;
            for p in got
                .last()
                .and_then(|m| m["params"].as_array())
                .into_iter()
                .flatten()
            {
                let mut one = Map::new();
                one.insert(s(&p["key"]), p["value"].clone());
                println!("{}", Value::Object(one));
            }
        }
        "delete" => {
            let k = one_arg(opts, "KEY")?;
            request(opts, deadline, "delete-param", json!({"key": k}), &[])?;
        }
        _ => {
            request(opts, deadline, "delete-params", json!({}), &[])?;
        }
    }
    Ok(())
}

fn action(opts: &Opts) -> Result<(), String> {
    let mut deadline = Instant::now() + opts.timeout;
    let (name, args) = match opts.command.as_str() {
        "shutdown" => {
            let (mut reboot, mut grace, mut message) = (false, 0u64, None);
            let mut it = opts.args.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--reboot" => reboot = true,
                    "--timeout" => {
                        let v = it.next().ok_or("--timeout needs SECS")?;
                        grace = v
                            .parse()
                            .map_err(|_| format!("--timeout: '{v}' is not whole seconds"))?;
                    }
                    "--message" => message = Some(it.next().ok_or("--message needs TEXT")?.clone()),
                    other => return Err(format!("shutdown: unexpected argument '{other}'")),
                }
            }
            // The completion comes once the grace period is over.
            deadline += Duration::from_secs(grace);
            let mut args =
                json!({"timeout": grace, "reboot": if reboot { "True" } else { "False" }});
            if let Some(m) = message {
                args["message"] = Value::String(m);
            }
            ("shutdown", args)
        }
        "hibernate" => {
            let state = opts.args.first().map_or("disk", String::as_str);
            ("hibernate", json!({ "state": state }))
        }
        "lock-screen" => ("lock-screen", json!({})),
        "log-off" => ("log-off", json!({})),
        "login" => {
            let user = one_arg(opts, "USER")?;
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            let password = password.strip_suffix('\n').unwrap_or(&password).to_owned();
            ("login", json!({"username": user, "password": password}))
        }
        "lifecycle" => ("lifecycle-event", json!({"type": one_arg(opts, "TYPE")?})),
        _ => {
            let n: u32 = one_arg(opts, "COUNT")?
                .parse()
                .map_err(|_| "set-cpus needs a positive COUNT".to_owned())?;
            let got = request(
                opts,
                deadline,
                "set-number-of-cpus",
                json!({"count": n}),
                &["number-of-cpus"],
            )?;
            if let Some(m) = got.last() {
                println!("number-of-cpus {}", s(&m["count"]));
            }
            return Ok(());
        }
    };
    request(opts, deadline, name, args, &[])?;
    println!("{}: done", opts.command);
    Ok(())
}

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(Some(o)) => o,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("guestctl: {e}\nTry 'guestctl --help'.");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guestctl: {e}");
            ExitCode::from(1)
        }
    }
}
