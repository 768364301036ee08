// SPDX-License-Identifier: Apache-2.0
//! The QGA request and reply formats (`qga-protocol.md` §1.3, §1.4): requests validated as
//! QEMU's dispatcher does, replies encoded as compact ASCII-only JSON lines (every code point
//! from 0x7F up escaped as `\uXXXX`, so Latin-1 and line-based clients read them intact),
//! with the request's `id` echoed.

use serde_json::{Map, Value};

/// Replies are kept under this size: libvirt drops the agent above 10 MiB.
pub const MAX_REPLY: usize = 8 << 20;

/// The only error classes guestd sends (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    GenericError,
    CommandNotFound,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::GenericError => "GenericError",
            Class::CommandNotFound => "CommandNotFound",
        }
    }
}

/// A failed request: its class and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub class: Class,
    pub desc: String,
}

impl Error {
    pub fn generic(desc: impl Into<String>) -> Error {
        Error {
            class: Class::GenericError,
            desc: desc.into(),
        }
    }

    pub fn not_found(desc: impl Into<String>) -> Error {
        Error {
            class: Class::CommandNotFound,
            desc: desc.into(),
        }
    }
}

impl From<String> for Error {
    fn from(desc: String) -> Error {
        Error::generic(desc)
    }
}

impl From<&str> for Error {
    fn from(desc: &str) -> Error {
        Error::generic(desc)
    }
}

/// A valid request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub execute: String,
    pub arguments: Map<String, Value>,
    /// Echoed in the reply, whatever JSON it is.
    pub id: Option<Value>,
}

/// Parses one JSON value into a request. The `Err` carries the request's `id` when it had
/// one, so the error reply can echo it.
pub fn parse_request(text: &[u8]) -> Result<Request, (Error, Option<Value>)> {
    let value: Value = serde_json::from_slice(text)
        .map_err(|e| (Error::generic(format!("JSON parse error, {e}")), None))?;
    let Value::Object(mut obj) = value else {
        return Err((Error::generic("QMP input must be a JSON object"), None));
    };
    let id = obj.remove("id");
    let fail = |desc: String| Err((Error::generic(desc), id.clone()));
    if let Some(key) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "execute" | "arguments"))
    {
        return fail(format!("QMP input member '{key}' is unexpected"));
    }
    let execute = match obj.remove("execute") {
        Some(Value::String(s)) => s,
        Some(_) => return fail("QMP input member 'execute' must be a string".into()),
        None => return fail("QMP input lacks member 'execute'".into()),
    };
    let arguments = match obj.remove("arguments") {
        None => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return fail("QMP input member 'arguments' must be an object".into()),
    };
    Ok(Request {
        execute,
        arguments,
        id,
    })
}

/// Appends `v` to `buf` as compact JSON in ASCII: control characters, `"` and `\\` are
/// escaped, and every character from 0x7F up is written as `\\uXXXX` (a surrogate pair above
/// U+FFFF). Nesting is bounded by the values guestd builds.
pub fn encode_into(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => buf.extend_from_slice(b"null"),
        Value::Bool(true) => buf.extend_from_slice(b"true"),
        Value::Bool(false) => buf.extend_from_slice(b"false"),
        Value::Number(n) => buf.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => encode_str(buf, s),
        Value::Array(items) => {
            buf.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                encode_into(buf, item);
            }
            buf.push(b']');
        }
        Value::Object(map) => {
            buf.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                encode_str(buf, k);
                buf.push(b':');
                encode_into(buf, item);
            }
            buf.push(b'}');
        }
    }
}

/// Appends `s` as a JSON string in ASCII.
pub fn encode_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let mut plain = 0;
    for (i, c) in s.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if (c as u32) < 0x20 || (c as u32) >= 0x7F => b"",
            _ => continue,
        };
        buf.extend_from_slice(&s.as_bytes()[plain..i]);
        plain = i + c.len_utf8();
        if !short.is_empty() {
            buf.extend_from_slice(short);
            continue;
        }
        let mut units = [0u16; 2];
        for &u in c.encode_utf16(&mut units).iter() {
            buf.extend_from_slice(b"\\u");
            for shift in [12, 8, 4, 0] {
                buf.push(HEX[usize::from((u >> shift) & 0xF)]);
            }
        }
    }
    buf.extend_from_slice(&s.as_bytes()[plain..]);
    buf.push(b'"');
}

/// One reply line: `{"return": ...}` or `{"error": {...}}`, the request's `id`, a newline.
/// `delimit` puts the 0xFF sync marker before it (guest-sync-delimited).
pub fn encode_reply(result: &Result<Value, Error>, id: Option<&Value>, delimit: bool) -> Vec<u8> {
    let mut buf = Vec::with_capacity(64);
    if delimit {
        buf.push(0xFF);
    }
    match result {
        Ok(v) => {
            buf.extend_from_slice(b"{\"return\":");
            encode_into(&mut buf, v);
        }
        Err(e) => {
            buf.extend_from_slice(b"{\"error\":{\"class\":\"");
            buf.extend_from_slice(e.class.as_str().as_bytes());
            buf.extend_from_slice(b"\",\"desc\":");
            encode_str(&mut buf, &e.desc);
            buf.push(b'}');
        }
    }
    if let Some(id) = id {
        buf.extend_from_slice(b",\"id\":");
        encode_into(&mut buf, id);
    }
    buf.extend_from_slice(b"}\n");
    buf
}

/// Arguments of one command, checked as QEMU's strict input visitor does: unknown members are
/// refused, and each getter names the member and the type it wanted.
pub struct Args<'a> {
    map: &'a Map<String, Value>,
}

fn missing(name: &str) -> Error {
    Error::generic(format!("Parameter '{name}' is missing"))
}

fn bad_type(name: &str, want: &str) -> Error {
    Error::generic(format!(
        "Invalid parameter type for '{name}', expected: {want}"
    ))
}

impl<'a> Args<'a> {
    /// Checks that `map` holds only members named in `allowed`.
    pub fn new(map: &'a Map<String, Value>, allowed: &[&str]) -> Result<Args<'a>, Error> {
        if let Some(k) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(Error::generic(format!("Parameter '{k}' is unexpected")));
        }
        Ok(Args { map })
    }

    pub fn raw(&self, name: &str) -> Option<&'a Value> {
        self.map.get(name)
    }

    pub fn opt_str(&self, name: &str) -> Result<Option<&'a str>, Error> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad_type(name, "string")),
        }
    }

    pub fn str(&self, name: &str) -> Result<&'a str, Error> {
        self.opt_str(name)?.ok_or_else(|| missing(name))
    }

    pub fn opt_i64(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.map.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| bad_type(name, "integer")),
        }
    }

    pub fn i64(&self, name: &str) -> Result<i64, Error> {
        self.opt_i64(name)?.ok_or_else(|| missing(name))
    }

    pub fn opt_bool(&self, name: &str) -> Result<Option<bool>, Error> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad_type(name, "boolean")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, Error> {
        self.opt_bool(name)?.ok_or_else(|| missing(name))
    }

    /// A list of strings.
    pub fn opt_strings(&self, name: &str) -> Result<Option<Vec<&'a str>>, Error> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or_else(|| bad_type(name, "array of strings")))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(bad_type(name, "array")),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Vec<&'a str>, Error> {
        self.opt_strings(name)?.ok_or_else(|| missing(name))
    }

    /// A list of objects.
    pub fn objects(&self, name: &str) -> Result<Vec<&'a Map<String, Value>>, Error> {
        match self.map.get(name) {
            None => Err(missing(name)),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_object()
                        .ok_or_else(|| bad_type(name, "array of objects"))
                })
                .collect(),
            Some(_) => Err(bad_type(name, "array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_validated_as_qemu_does() {
        let r =
            parse_request(br#"{"execute":"guest-sync","arguments":{"id":5},"id":"x"}"#).unwrap();
        assert_eq!(r.execute, "guest-sync");
        assert_eq!(r.arguments["id"], 5);
        assert_eq!(r.id, Some(json!("x")));
        let err = |t: &[u8]| parse_request(t).unwrap_err();
        assert_eq!(err(b"[1]").0.desc, "QMP input must be a JSON object");
        assert_eq!(err(b"{}").0.desc, "QMP input lacks member 'execute'");
        assert_eq!(
            err(br#"{"execute":1}"#).0.desc,
            "QMP input member 'execute' must be a string"
        );
        assert_eq!(
            err(br#"{"execute":"x","arguments":[]}"#).0.desc,
            "QMP input member 'arguments' must be an object"
        );
        let (e, id) = err(br#"{"execute":"x","exec-oob":"y","id":7}"#);
        assert_eq!(e.desc, "QMP input member 'exec-oob' is unexpected");
        assert_eq!(id, Some(json!(7)));
        assert!(err(b"{\"execute\":").0.desc.starts_with("JSON parse error"));
    }

    #[test]
    fn replies_are_ascii_lines_with_the_id() {
        let r = encode_reply(
            &Ok(json!({"name": "caf\u{e9} \u{1F600}\u{7f}\n"})),
            Some(&json!(1)),
            false,
        );
        let text = String::from_utf8(r).unwrap();
        assert_eq!(
            text,
            "{\"return\":{\"name\":\"caf\\u00e9 \\ud83d\\ude00\\u007f\\n\"},\"id\":1}\n"
        );
        assert!(text.is_ascii());
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["return"]["name"], "caf\u{e9} \u{1F600}\u{7f}\n");
        let e = encode_reply(
            &Err(Error::not_found("The command x has not been found")),
            None,
            true,
        );
        assert_eq!(e[0], 0xFF);
        let v: Value = serde_json::from_slice(&e[1..]).unwrap();
        assert_eq!(v["error"]["class"], "CommandNotFound");
        assert!(v.get("id").is_none());
    }

    #[test]
    fn arguments_are_checked_by_name_and_type() {
        let m = json!({"a": "s", "n": 5, "b": true, "l": ["x", "y"]});
        let m = m.as_object().unwrap();
        assert_eq!(
            Args::new(m, &["a"]).err().unwrap().desc,
            "Parameter 'b' is unexpected"
        );
        let a = Args::new(m, &["a", "n", "b", "l"]).unwrap();
        assert_eq!(a.str("a").unwrap(), "s");
        assert_eq!(a.i64("n").unwrap(), 5);
        assert!(a.bool("b").unwrap());
        assert_eq!(a.strings("l").unwrap(), vec!["x", "y"]);
        assert_eq!(a.str("zz").unwrap_err().desc, "Parameter 'zz' is missing");
        assert_eq!(
            a.i64("a").unwrap_err().desc,
            "Invalid parameter type for 'a', expected: integer"
        );
    }
}
