// SPDX-License-Identifier: Apache-2.0
//! The oVirt wire format: one JSON object per line, the message type in `__name__`
//! (`shared/reference/ovirt-protocol.md` §1.2). Commands are parsed from lines; messages
//! (built in `messages`) are encoded as compact, ASCII-only JSON with XML-illegal characters
//! replaced by U+FFFD, as VDSM expects; and the version gate of each message.

use std::fmt;

use serde_json::{Map, Value};

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

/// Serialises a message: `__name__` plus `args`, sanitised, compact, ASCII-only (non-ASCII as
/// `\uXXXX`, surrogate pairs above the BMP), ending in one `\n`. Written straight into the
/// returned buffer, without copying `args`; keys in `Map` order with `__name__` in its sorted
/// place, as serialising the merged object did.
pub fn encode(name: &str, args: &Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    encode_object(&mut out, args, Some(name));
    out.push(b'\n');
    out
}

const NAME_KEY: &str = "__name__";

/// Appends `map` as a JSON object, with `"__name__": name` among its keys when given.
fn encode_object(buf: &mut Vec<u8>, map: &Map<String, Value>, name: Option<&str>) {
    if map.keys().any(|k| !clean(k)) {
        // Rare: sanitised keys can sort differently or collide (the later one wins), so
        // build the sanitised map, as the reference's sanitiser does.
        let mut sane = Map::new();
        for (k, v) in map {
            sane.insert(sanitize_str(k), v.clone());
        }
        return encode_object(buf, &sane, name);
    }
    buf.push(b'{');
    let mut name = name;
    let mut first = true;
    for (k, v) in map {
        if let Some(n) = name.filter(|_| k.as_str() >= NAME_KEY) {
            name = None;
            entry(buf, &mut first, NAME_KEY);
            encode_string(buf, n);
            if k == NAME_KEY {
                continue;
            }
        }
        entry(buf, &mut first, k);
        encode_value(buf, v);
    }
    if let Some(n) = name {
        entry(buf, &mut first, NAME_KEY);
        encode_string(buf, n);
    }
    buf.push(b'}');
}

/// Starts an object entry: a comma unless it is the first, the key and a colon.
fn entry(buf: &mut Vec<u8>, first: &mut bool, key: &str) {
    if !std::mem::take(first) {
        buf.push(b',');
    }
    encode_string(buf, key);
    buf.push(b':');
}

fn encode_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(true) => buf.extend_from_slice(b"true"),
        Value::Bool(false) => buf.extend_from_slice(b"false"),
        Value::Number(n) => {
            use std::io::Write;
            // Writing to a Vec cannot fail.
            let _ = write!(buf, "{n}");
        }
        Value::String(s) => encode_string(buf, s),
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                encode_value(buf, item);
            }
            buf.push(b']');
        }
        Value::Object(map) => encode_object(buf, map, None),
    }
}

/// Whether `s` has no XML-illegal character: a byte scan, since every such character is a
/// C0 control, DEL, or has a lead byte from 0xC2 up.
fn clean(s: &str) -> bool {
    s.bytes()
        .all(|b| matches!(b, 0x20..=0x7E | b'\t' | b'\n' | b'\r'))
        || !s.chars().any(xml_illegal)
}

/// Appends `s`, sanitised, as an ASCII JSON string. Once sanitised, the only control
/// characters left are `\t`, `\n` and `\r`, and DEL is gone, so the QGA encoder's escapes
/// are serde_json's plus `\uXXXX` for non-ASCII.
fn encode_string(buf: &mut Vec<u8>, s: &str) {
    if clean(s) {
        crate::qga::wire::encode_str(buf, s);
    } else {
        crate::qga::wire::encode_str(buf, &sanitize_str(s));
    }
}

/// An integer argument read the way the reference agent's Python `int()` reads it: a JSON
/// integer, a float (truncated), a boolean (0 or 1), or a string holding a decimal integer
/// (`"3"`, `" +3 "`). `None` for anything else.
pub fn int_arg(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            // Truncated toward zero; out-of-range floats saturate.
            #[allow(clippy::cast_possible_truncation)]
            n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let line = encode("test", &args);
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

    /// The encoder before it wrote straight into the buffer: sanitise a copy of the tree,
    /// serialise it with serde_json, escape non-ASCII. The reference for byte equality.
    fn old_encode(name: &str, args: Map<String, Value>) -> Vec<u8> {
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
        let mut obj = args;
        obj.insert("__name__".to_owned(), Value::String(name.to_owned()));
        let mut v = Value::Object(obj);
        sanitize(&mut v);
        let text = serde_json::to_string(&v).unwrap();
        let mut out = Vec::new();
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c as u8);
            } else {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.extend_from_slice(format!("\\u{u:04x}").as_bytes());
                }
            }
        }
        out.push(b'\n');
        out
    }

    #[test]
    fn encodes_byte_for_byte_as_the_tree_encoder_did() {
        let every_char: String = (0u32..0x300)
            .chain([
                0x2028, 0xD7FF, 0xE000, 0xFFFD, 0xFFFE, 0xFFFF, 0x10000, 0x1F40E, 0x10FFFF,
            ])
            .filter_map(char::from_u32)
            .collect();
        let cases = [
            (
                "heartbeat",
                json!({"free-ram": "1450", "apiVersion": 3, "memory-stat": {
                    "mem_total": 2_029_876u64, "majflt": 0, "swap_usage": u64::MAX}}),
            ),
            ("session-startup", json!({})),
            (
                "host-name",
                json!({"name": "Žluťoučký 🐎 \"kůň\" \\ / \u{7f}\u{85}"}),
            ),
            (
                "applications",
                json!({"applications": ["a\u{0}b", "tab\there\r\n", every_char]}),
            ),
            // Keys around `__name__` in sort order, and one that is `__name__` itself.
            (
                "network-interfaces",
                json!({"A": null, "_": true, "__name__": "overwritten", "__z": false,
                    "interfaces": [{"name": "eth0", "inet": [], "inet6": ["fe80::1"]}],
                    "n": -5, "f": 1.5}),
            ),
            // Keys that sanitise to sort elsewhere, or to one key (the later one wins).
            (
                "disks-usage",
                json!({"mapping": {"b\u{1}": {"name": "x"}, "b\u{2}": 2, "a\u{ffff}": 3,
                    "\u{7f}z": [1, {"k\u{8}": "v\u{c}"}]}, "x\u{1f}": "y"}),
            ),
        ];
        for (name, args) in cases {
            let Value::Object(args) = args else {
                unreachable!()
            };
            let new = encode(name, &args);
            let old = old_encode(name, args);
            assert_eq!(
                String::from_utf8_lossy(&new),
                String::from_utf8_lossy(&old),
                "{name}"
            );
            assert_eq!(new, old, "{name}");
        }
    }

    #[test]
    fn integer_arguments_are_read_as_pythons_int_reads_them() {
        assert_eq!(int_arg(&json!(3)), Some(3));
        assert_eq!(int_arg(&json!("3")), Some(3));
        assert_eq!(int_arg(&json!(" +2\n")), Some(2));
        assert_eq!(int_arg(&json!(-1)), Some(-1));
        assert_eq!(int_arg(&json!(2.9)), Some(2));
        assert_eq!(int_arg(&json!(true)), Some(1));
        assert_eq!(int_arg(&json!("3.0")), None);
        assert_eq!(int_arg(&json!("three")), None);
        assert_eq!(int_arg(&json!(null)), None);
        assert_eq!(int_arg(&json!([3])), None);
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
