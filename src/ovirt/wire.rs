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
