// SPDX-License-Identifier: Apache-2.0
//! The oVirt wire format: one JSON object per line, the message type in `__name__`
//! (`shared/reference/ovirt-protocol.md` §1.2). Commands are parsed from lines; messages are
//! built from the protocol-neutral facts and encoded as compact, ASCII-only JSON with
//! XML-illegal characters replaced by U+FFFD, as VDSM expects.

use std::fmt;

use serde_json::{Map, Value, json};

use crate::facts::disks::DiskUsage;
use crate::facts::memory::MemoryStat;
use crate::facts::net::Interface;
use crate::facts::osinfo::OsInfo;
use crate::facts::timezone::TimeZone;

/// Longest inbound line accepted, without its newline (VDSM uses the same cap, §1.5).
pub const MAX_LINE: usize = 1024 * 1024;

/// The highest protocol version guestd implements (§4).
pub const MAX_API_VERSION: u32 = 3;

/// A command from the host: its `__name__` and the remaining arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub args: Map<String, Value>,
}

/// Why an inbound line is not a command.
#[derive(Debug)]
pub enum ParseError {
    InvalidUtf8,
    InvalidJson(serde_json::Error),
    NotAnObject,
    MissingName,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::InvalidUtf8 => write!(f, "line is not valid UTF-8"),
            ParseError::InvalidJson(e) => write!(f, "line is not valid JSON: {e}"),
            ParseError::NotAnObject => write!(f, "line is not a JSON object"),
            ParseError::MissingName => write!(f, "object has no string \"__name__\""),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses one inbound line (without its newline; a trailing `\r` is tolerated).
pub fn parse_command(line: &[u8]) -> Result<Command, ParseError> {
    let text = std::str::from_utf8(line).map_err(|_| ParseError::InvalidUtf8)?;
    let value: Value = serde_json::from_str(text).map_err(ParseError::InvalidJson)?;
    let Value::Object(mut args) = value else {
        return Err(ParseError::NotAnObject);
    };
    match args.remove("__name__") {
        Some(Value::String(name)) => Ok(Command { name, args }),
        _ => Err(ParseError::MissingName),
    }
}

/// Whether oVirt's sanitiser replaces `c`: the characters XML 1.0 forbids (§1.2).
fn xml_illegal(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x08 | 0x0B..=0x0C | 0x0E..=0x1F | 0x7F..=0x84 | 0x86..=0x9F | 0xFFFE | 0xFFFF)
}

fn sanitize_str(s: &str) -> String {
    s.chars()
        .map(|c| if xml_illegal(c) { '\u{FFFD}' } else { c })
        .collect()
}

/// Replaces XML-illegal characters in every key and string of `v`, in place.
fn sanitize(v: &mut Value) {
    match v {
        Value::String(s) if s.chars().any(xml_illegal) => *s = sanitize_str(s),
        Value::Array(items) => items.iter_mut().for_each(sanitize),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(xml_illegal)) {
                let old = std::mem::take(map);
                for (k, v) in old {
                    map.insert(sanitize_str(&k), v);
                }
            }
            map.values_mut().for_each(sanitize);
        }
        _ => {}
    }
}

/// Serialises a message: `__name__` plus `args`, sanitised, compact, ASCII-only (non-ASCII as
/// `\uXXXX`, surrogate pairs above the BMP), ending in one `\n`.
pub fn encode(name: &str, args: Map<String, Value>) -> Vec<u8> {
    let mut obj = args;
    obj.insert("__name__".to_owned(), Value::String(name.to_owned()));
    let mut v = Value::Object(obj);
    sanitize(&mut v);
    // Serialising a Value cannot fail: every map key is a string.
    let text = serde_json::to_string(&v).unwrap_or_default();
    let mut out = Vec::with_capacity(text.len() + 1);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c as u8);
        } else {
            // Outside strings JSON is pure ASCII, so every non-ASCII char is inside a string.
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
            }
        }
    }
    out.push(b'\n');
    out
}

/// The lowest negotiated API version at which guestd sends `name` (§2, "min API").
pub fn min_api_version(name: &str) -> u32 {
    match name {
        "number-of-cpus" => 1,
        "os-info" | "timezone" => 2,
        "containers" | "completion" => 3,
        _ => 0,
    }
}

/// A message ready to queue: its name and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub name: &'static str,
    pub args: Map<String, Value>,
}

impl Message {
    fn new(name: &'static str, args: Value) -> Message {
        let args = match args {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Message { name, args }
    }

    /// A message with no arguments, such as `session-startup`.
    pub fn bare(name: &'static str) -> Message {
        Message {
            name,
            args: Map::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self.name, self.args.clone())
    }
}

/// `heartbeat`: free RAM in MiB as a string, the eleven memory-stat fields, and the API version
/// the agent advertises.
pub fn heartbeat(free_ram_mib: u64, stat: &MemoryStat, api_version: u32) -> Message {
    Message::new(
        "heartbeat",
        json!({
            "free-ram": free_ram_mib.to_string(),
            "memory-stat": {
                "mem_total": stat.mem_total,
                "mem_unused": stat.mem_unused,
                "mem_free": stat.mem_free,
                "mem_buffers": stat.mem_buffers,
                "mem_cached": stat.mem_cached,
                "swap_total": stat.swap_total,
                "swap_usage": stat.swap_usage,
                "swap_in": stat.swap_in,
                "swap_out": stat.swap_out,
                "pageflt": stat.pageflt,
                "majflt": stat.majflt,
            },
            "apiVersion": api_version,
        }),
    )
}

pub fn host_name(name: &str) -> Message {
    Message::new("host-name", json!({ "name": name }))
}

pub fn os_version(version: &str) -> Message {
    Message::new("os-version", json!({ "version": version }))
}

pub fn fqdn(fqdn: &str) -> Message {
    Message::new("fqdn", json!({ "fqdn": fqdn }))
}

pub fn active_user(name: &str) -> Message {
    Message::new("active-user", json!({ "name": name }))
}

pub fn applications(apps: &[String]) -> Message {
    Message::new("applications", json!({ "applications": apps }))
}

pub fn number_of_cpus(count: i64) -> Message {
    Message::new("number-of-cpus", json!({ "count": count }))
}

pub fn network_interfaces(ifaces: &[Interface]) -> Message {
    let list: Vec<Value> = ifaces
        .iter()
        .map(|i| json!({ "name": i.name, "hw": i.hw, "inet": i.inet, "inet6": i.inet6 }))
        .collect();
    Message::new("network-interfaces", json!({ "interfaces": list }))
}

/// `disks-usage`: the measured file systems and the `{serial: {name: device}}` mapping.
pub fn disks_usage(disks: &[DiskUsage], mapping: &[(String, String)]) -> Message {
    let list: Vec<Value> = disks
        .iter()
        .map(|d| json!({ "path": d.path, "fs": d.fs, "total": d.total, "used": d.used }))
        .collect();
    let mut map = Map::new();
    for (serial, dev) in mapping {
        map.insert(serial.clone(), json!({ "name": dev }));
    }
    Message::new("disks-usage", json!({ "disks": list, "mapping": map }))
}

pub fn os_info(info: &OsInfo) -> Message {
    Message::new(
        "os-info",
        json!({
            "version": info.version,
            "distribution": info.distribution,
            "codename": info.codename,
            "arch": info.arch,
            "type": "linux",
            "kernel": info.kernel,
        }),
    )
}

pub fn timezone(tz: &TimeZone) -> Message {
    Message::new("timezone", json!({ "zone": tz.zone, "offset": tz.offset }))
}

/// `echo`: the command's own arguments, sent back.
pub fn echo(args: Map<String, Value>) -> Message {
    Message { name: "echo", args }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands_and_rejects_bad_lines() {
        let c = parse_command(br#"{"__name__": "refresh", "apiVersion": 3}"#).unwrap();
        assert_eq!(c.name, "refresh");
        assert_eq!(c.args.get("apiVersion"), Some(&json!(3)));
        assert!(!c.args.contains_key("__name__"));
        assert!(matches!(
            parse_command(b"\xff\xfe"),
            Err(ParseError::InvalidUtf8)
        ));
        assert!(matches!(
            parse_command(b"{nope"),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_command(b""),
            Err(ParseError::InvalidJson(_))
        ));
        assert!(matches!(
            parse_command(b"[1,2]"),
            Err(ParseError::NotAnObject)
        ));
        assert!(matches!(
            parse_command(b"{\"a\":1}"),
            Err(ParseError::MissingName)
        ));
        assert!(matches!(
            parse_command(b"{\"__name__\":1}"),
            Err(ParseError::MissingName)
        ));
    }

    #[test]
    fn encodes_compact_ascii_with_sanitised_keys_and_values() {
        let mut args = Map::new();
        args.insert("name".into(), json!("Žluťoučký 🐎"));
        args.insert("bad\u{1}key".into(), json!(["a\u{0}b", "\u{85}ok\u{fffe}"]));
        let line = encode("test", args);
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(line.is_ascii());
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(text.matches('\n').count(), 1);
        assert!(!text.contains(": "), "compact separators: {text}");
        assert!(
            text.contains(r"\u017dlu\u0165ou\u010dk\u00fd \ud83d\udc0e"),
            "{text}"
        );
        let back: Value = serde_json::from_str(text).unwrap();
        assert_eq!(back["__name__"], "test");
        assert_eq!(back["name"], "Žluťoučký 🐎");
        // U+0085 (NEL) is allowed by XML; U+0000 and U+FFFE are not.
        assert_eq!(
            back["bad\u{fffd}key"],
            json!(["a\u{fffd}b", "\u{85}ok\u{fffd}"])
        );
    }

    #[test]
    fn heartbeat_has_the_reference_fields_and_types() {
        let stat = MemoryStat {
            mem_total: 1000,
            mem_unused: 100,
            mem_free: 300,
            mem_buffers: 50,
            mem_cached: 150,
            swap_total: 10,
            swap_usage: 1,
            swap_in: 2,
            swap_out: 3,
            pageflt: 4,
            majflt: 5,
        };
        let line = heartbeat(2, &stat, 3).encode();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["__name__"], "heartbeat");
        assert_eq!(v["free-ram"], "2");
        assert_eq!(v["apiVersion"], 3);
        let ms = v["memory-stat"].as_object().unwrap();
        assert_eq!(ms.len(), 11);
        assert_eq!(ms["mem_total"], 1000);
        assert_eq!(ms["majflt"], 5);
    }

    #[test]
    fn version_gates_match_the_reference() {
        assert_eq!(min_api_version("heartbeat"), 0);
        assert_eq!(min_api_version("number-of-cpus"), 1);
        assert_eq!(min_api_version("os-info"), 2);
        assert_eq!(min_api_version("timezone"), 2);
        assert_eq!(min_api_version("completion"), 3);
    }
}
