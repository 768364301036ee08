// SPDX-License-Identifier: Apache-2.0
//! The oVirt guest-agent protocol: one JSON object per line, the message type in `__name__`
//! (`shared/reference/ovirt-protocol.md` §1.2). Inbound lines are bounded; outbound lines are
//! compact, ASCII-only JSON with XML-illegal characters replaced by U+FFFD, as VDSM expects.

use std::fmt;
use std::io::{self, Read};

use serde_json::{Map, Value};

mod messages;

pub use messages::{
    Message, active_user, active_user_name, applications, disks_usage, echo, fqdn, heartbeat,
    host_name, network_interfaces, number_of_cpus, os_info, os_version, timezone,
};

/// Longest inbound line accepted, without its newline (VDSM uses the same cap, §1.5).
pub const MAX_LINE: usize = 1024 * 1024;

/// The highest protocol version guestd implements (§4).
pub const MAX_API_VERSION: u32 = 3;

/// Read buffer size: one read(2) takes at most this much.
const READ_CHUNK: usize = 16 * 1024;

/// A line buffer larger than this is released after the line is served, so one big message
/// does not pin its memory for the agent's lifetime.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the line reader found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n`.
    Line(&'a [u8]),
    /// A line longer than `MAX_LINE` began; it is discarded up to its newline.
    Oversize,
}

/// How a `LineReader::read_from` call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    /// The source has no more data for now (`WouldBlock`).
    WouldBlock,
    /// The source reached end of file: the peer is gone.
    Eof,
}

/// Splits a byte stream into lines of at most `limit` bytes. Over-long lines are reported
/// once and skipped up to the next newline (VDSM's `too-big` state).
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    limit: usize,
    skipping: bool,
}

impl Default for LineReader {
    fn default() -> Self {
        LineReader::new(MAX_LINE)
    }
}

impl LineReader {
    pub fn new(limit: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            limit,
            skipping: false,
        }
    }

    /// Forgets any partial line (the peer changed).
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.skipping = false;
    }

    /// Feeds `data`, calling `f` for every complete line and every over-long line.
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(Frame<'_>)) {
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let (seg, rest) = match nl {
                Some(i) => (&data[..i], &data[i + 1..]),
                None => (data, &data[data.len()..]),
            };
            data = rest;
            if self.skipping {
                self.skipping = nl.is_none();
                continue;
            }
            if self.buf.len() + seg.len() > self.limit {
                f(Frame::Oversize);
                self.buf = Vec::new();
                self.skipping = nl.is_none();
                continue;
            }
            if nl.is_none() {
                self.buf.extend_from_slice(seg);
            } else if self.buf.is_empty() {
                f(Frame::Line(seg));
            } else {
                self.buf.extend_from_slice(seg);
                f(Frame::Line(&self.buf));
                self.buf.clear();
                if self.buf.capacity() > KEEP_CAPACITY {
                    self.buf = Vec::new();
                }
            }
        }
    }

    /// Reads from `src` until it would block or ends, feeding everything read. Interrupted
    /// reads are retried; other errors are returned.
    pub fn read_from<R: Read>(
        &mut self,
        src: &mut R,
        mut f: impl FnMut(Frame<'_>),
    ) -> io::Result<ReadEnd> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match src.read(&mut chunk) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => self.feed(&chunk[..n], &mut f),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadEnd::WouldBlock),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn frames(r: &mut LineReader, data: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        r.feed(data, |f| {
            out.push(match f {
                Frame::Line(l) => Some(l.to_vec()),
                Frame::Oversize => None,
            })
        });
        out
    }

    #[test]
    fn splits_lines_across_and_within_reads() {
        let mut r = LineReader::new(100);
        assert_eq!(
            frames(&mut r, b"{\"a\":1}\n{\"b\""),
            vec![Some(b"{\"a\":1}".to_vec())]
        );
        assert_eq!(frames(&mut r, b":2"), vec![]);
        assert_eq!(
            frames(&mut r, b"}\n\nx\n"),
            vec![
                Some(b"{\"b\":2}".to_vec()),
                Some(vec![]),
                Some(b"x".to_vec())
            ]
        );
    }

    #[test]
    fn oversize_line_is_skipped_to_its_newline_and_reported_once() {
        let mut r = LineReader::new(10);
        assert_eq!(frames(&mut r, b"0123456"), vec![]);
        assert_eq!(frames(&mut r, b"789abcdef"), vec![None]);
        assert_eq!(frames(&mut r, b"more garbage"), vec![]);
        assert_eq!(frames(&mut r, b"tail\nok\n"), vec![Some(b"ok".to_vec())]);
        // A line of exactly the limit is accepted.
        assert_eq!(
            frames(&mut r, b"0123456789\n"),
            vec![Some(b"0123456789".to_vec())]
        );
        assert_eq!(
            frames(&mut r, b"0123456789a\nz\n"),
            vec![None, Some(b"z".to_vec())]
        );
    }

    #[test]
    fn any_split_of_the_stream_gives_the_same_lines() {
        // A stream with short, empty, limit-sized and over-long lines.
        let mut stream = Vec::new();
        for (i, len) in [0usize, 1, 5, 31, 32, 33, 64, 7, 0, 100].iter().enumerate() {
            stream.extend(std::iter::repeat_n(b'a' + u8::try_from(i).unwrap(), *len));
            stream.push(b'\n');
        }
        let whole = frames(&mut LineReader::new(32), &stream);
        assert_eq!(
            whole.iter().filter(|f| f.is_none()).count(),
            3,
            "three over-long lines"
        );
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..500 {
            let mut r = LineReader::new(32);
            let mut got = Vec::new();
            let mut rest = &stream[..];
            while !rest.is_empty() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let n = usize::try_from(seed % 40).unwrap().min(rest.len()).max(1);
                got.extend(frames(&mut r, &rest[..n]));
                rest = &rest[n..];
            }
            assert_eq!(got, whole);
        }
    }

    #[test]
    fn read_from_reports_eof_and_would_block() {
        let mut r = LineReader::default();
        let mut src: &[u8] = b"a\nb\n";
        let mut lines = Vec::new();
        let end = r
            .read_from(&mut src, |f| {
                if let Frame::Line(l) = f {
                    lines.push(l.to_vec());
                }
            })
            .unwrap();
        assert_eq!(end, ReadEnd::Eof);
        assert_eq!(lines, vec![b"a".to_vec(), b"b".to_vec()]);

        let (mut a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        drop(b);
        assert_eq!(r.read_from(&mut a, |_| {}).unwrap(), ReadEnd::Eof);
        let (mut a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        assert_eq!(r.read_from(&mut a, |_| {}).unwrap(), ReadEnd::WouldBlock);
    }

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
    fn version_gates_match_the_reference() {
        assert_eq!(min_api_version("heartbeat"), 0);
        assert_eq!(min_api_version("number-of-cpus"), 1);
        assert_eq!(min_api_version("os-info"), 2);
        assert_eq!(min_api_version("timezone"), 2);
        assert_eq!(min_api_version("completion"), 3);
    }
}
