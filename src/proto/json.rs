// SPDX-License-Identifier: Apache-2.0
//! JSON-stream framing for the QEMU guest-agent protocol (`qga-protocol.md` §1.2): the
//! input is a byte stream of JSON values, not lines. A value ends when its braces and
//! brackets balance, so several values in one read and one value split over many reads both
//! work; newlines are ordinary white space.
//!
//! What QEMU's lexer accepts beyond RFC 8259 is accepted here too, and handed on as standard
//! JSON: single-quoted strings are rewritten with double quotes, and `\'` becomes `'`.
//!
//! Garbage is reported once and skipped to a resynchronisation point (a structural
//! character, a control character, 0xFE or 0xFF), as QEMU does. A lone 0xFF (or 0xFE) is
//! the documented flush marker: it drops any half-read value and is reported as `Flush`,
//! which gets no reply. A value over the size limit or nested too deep is reported once and
//! its bytes are skipped to its end. Memory is bounded by the size limit plus one read.

use std::io::{self, Read};

use super::line::{Fill, Frame, READ_CHUNK};

/// The largest value accepted (QEMU accepts 64 MiB; 16 MiB carries a 12 MiB file write).
pub const MAX_VALUE: usize = 16 << 20;
/// The deepest nesting of brackets and braces accepted (serde_json stops at 128).
pub const MAX_NESTING: usize = 100;
/// A value buffer larger than this is released once its value was served.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why input was rejected; each is reported once per bad stretch of input.
pub const STRAY: &str = "JSON parse error, stray input outside a JSON object";
pub const CONTROL: &str = "JSON parse error, control character in the input";
pub const TOO_DEEP: &str = "JSON nesting depth limit exceeded";
pub const TOO_BIG: &str = "JSON token size limit exceeded (16 MiB per request)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between values.
    Idle,
    /// Inside a value, copying it.
    Value,
    /// Inside a bad value: tracking its nesting to its end, keeping nothing.
    Discard,
    /// After stray bytes between values: skipping to a resynchronisation point.
    Garbage,
}

/// Splits a byte stream into JSON values of at most `limit` bytes.
#[derive(Debug)]
pub struct JsonStream {
    /// Unscanned input is `raw[start..end]`; the rest of `raw` is initialised room.
    raw: Vec<u8>,
    start: usize,
    end: usize,
    /// The current value, normalised to standard JSON.
    value: Vec<u8>,
    /// `value` holds a complete value handed out by the last `next_frame`.
    served: bool,
    state: State,
    depth: usize,
    /// The quote of the string being read (`"` or `'`), or 0 outside strings.
    quote: u8,
    /// The previous byte was a backslash inside a string.
    escape: bool,
    limit: usize,
}

impl Default for JsonStream {
    fn default() -> Self {
        JsonStream::new(MAX_VALUE)
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_flush(b: u8) -> bool {
    b >= 0xFE
}

/// Where QEMU's lexer resynchronises after garbage: structural characters, control
/// characters other than TAB (so newlines), and 0xFE/0xFF.
fn is_resync(b: u8) -> bool {
    matches!(b, b'[' | b']' | b'{' | b'}' | b':' | b',') || (b < 0x20 && b != b'\t') || b >= 0xFE
}

impl JsonStream {
    pub fn new(limit: usize) -> JsonStream {
        JsonStream {
            raw: Vec::new(),
            start: 0,
            end: 0,
            value: Vec::new(),
            served: false,
            state: State::Idle,
            depth: 0,
            quote: 0,
            escape: false,
            limit,
        }
    }

    /// Forgets buffered input and any half-read value (the peer changed).
    pub fn reset(&mut self) {
        *self = JsonStream::new(self.limit);
    }

    /// Whether unscanned input is buffered.
    pub fn has_input(&self) -> bool {
        self.start < self.end
    }

    /// Appends `data` to the buffered input.
    pub fn push(&mut self, data: &[u8]) {
        self.compact();
        self.raw.truncate(self.end);
        self.raw.extend_from_slice(data);
        self.end += data.len();
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.raw.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// One read(2) from `src`. Interrupted reads are retried.
    pub fn fill_from<R: Read + ?Sized>(&mut self, src: &mut R) -> io::Result<Fill> {
        self.compact();
        if self.raw.len() < self.end + READ_CHUNK {
            self.raw.resize(self.end + READ_CHUNK, 0);
        }
        let room = &mut self.raw[self.end..self.end + READ_CHUNK];
        let got = loop {
            match src.read(room) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        match got {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => {
                self.end += n;
                Ok(Fill::Data(n))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Drops the half-read value and starts over between values.
    fn restart(&mut self, state: State) {
        self.value.clear();
        self.state = state;
        self.depth = 0;
        self.quote = 0;
        self.escape = false;
    }

    /// The next complete value (as standard JSON), error report or flush marker, if the
    /// buffered input holds one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        if std::mem::take(&mut self.served) {
            self.value.clear();
            if self.value.capacity() > KEEP_CAPACITY {
                self.value = Vec::new();
            }
        }
        while self.start < self.end {
            let b = self.raw[self.start];
            self.start += 1;
            match self.state {
                State::Idle => {
                    if is_space(b) {
                        continue;
                    }
                    if is_flush(b) {
                        return Some(Frame::Flush);
                    }
                    if b == b'{' || b == b'[' {
                        self.state = State::Value;
                        self.depth = 1;
                        self.value.push(b);
                        continue;
                    }
                    if b < 0x20 {
                        return Some(Frame::Invalid(CONTROL));
                    }
                    // A stray closer, colon or comma is its own resynchronisation point.
                    if !is_resync(b) {
                        self.state = State::Garbage;
                    }
                    return Some(Frame::Invalid(STRAY));
                }
                State::Garbage => {
                    if matches!(b, b'}' | b']' | b':' | b',') {
                        continue;
                    }
                    if is_resync(b) {
                        // Served again between values: a value, a flush, white space.
                        self.start -= 1;
                        self.state = State::Idle;
                    }
                }
                State::Value | State::Discard => {
                    let keep = self.state == State::Value;
                    if is_flush(b) {
                        self.restart(State::Idle);
                        return Some(Frame::Flush);
                    }
                    match self.scan(b, keep) {
                        Ok(false) => {}
                        Ok(true) => {
                            self.state = State::Idle;
                            if keep {
                                self.served = true;
                                return Some(Frame::Line(&self.value));
                            }
                        }
                        Err(why) => {
                            self.value.clear();
                            self.state = State::Discard;
                            if keep {
                                return Some(Frame::Invalid(why));
                            }
                        }
                    }
                    if keep && self.value.len() > self.limit {
                        self.value.clear();
                        self.state = State::Discard;
                        return Some(Frame::Invalid(TOO_BIG));
                    }
                }
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        None
    }

    /// One byte inside a value: copied (normalised) when `keep`; true when it closed the
    /// value.
    fn scan(&mut self, b: u8, keep: bool) -> Result<bool, &'static str> {
        let out = &mut self.value;
        let mut put = |bytes: &[u8]| {
            if keep {
                out.extend_from_slice(bytes);
            }
        };
        if self.quote != 0 {
            if std::mem::take(&mut self.escape) {
                match b {
                    // QEMU's extra escape; standard JSON has none.
                    b'\'' => put(b"'"),
                    _ => put(&[b'\\', b]),
                }
            } else if b == b'\\' {
                self.escape = true;
            } else if b == self.quote {
                self.quote = 0;
                put(b"\"");
            } else if b == b'"' {
                // A double quote inside a single-quoted string.
                put(b"\\\"");
            } else if b < 0x20 {
                // The string goes on to its quote, so the value's end is still found.
                return Err(CONTROL);
            } else {
                put(&[b]);
            }
            return Ok(false);
        }
        match b {
            b'"' | b'\'' => {
                self.quote = b;
                put(b"\"");
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth > MAX_NESTING {
                    return Err(TOO_DEEP);
                }
                put(&[b]);
            }
            b'}' | b']' => {
                put(&[b]);
                self.depth -= 1;
                return Ok(self.depth == 0);
            }
            _ if b < 0x20 && !is_space(b) => return Err(CONTROL),
            _ => put(&[b]),
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum F {
        V(String),
        Bad(&'static str),
        Flush,
    }

    fn frames(s: &mut JsonStream, data: &[u8]) -> Vec<F> {
        s.push(data);
        let mut out = Vec::new();
        while let Some(f) = s.next_frame() {
            out.push(match f {
                Frame::Line(v) => F::V(String::from_utf8(v.to_vec()).unwrap()),
                Frame::Invalid(why) => F::Bad(why),
                Frame::Flush => F::Flush,
                Frame::Oversize => panic!("no oversize frames here"),
            });
        }
        out
    }

    fn v(s: &str) -> F {
        F::V(s.to_owned())
    }

    #[test]
    fn values_end_when_brackets_balance_not_at_newlines() {
        let mut s = JsonStream::default();
        let got = frames(
            &mut s,
            b"{\"execute\":\"guest-ping\"}{\"a\":[1,{\"b\":\"}]\"}]}\n\n {\"x\":\n1}",
        );
        assert_eq!(
            got,
            vec![
                v(r#"{"execute":"guest-ping"}"#),
                v(r#"{"a":[1,{"b":"}]"}]}"#),
                v("{\"x\":\n1}"),
            ]
        );
    }

    #[test]
    fn a_value_split_across_reads_is_one_frame() {
        let mut s = JsonStream::default();
        let whole = br#"{"execute": "guest-sync", "arguments": {"id": 1234}}"#;
        let mut got = Vec::new();
        for chunk in whole.chunks(3) {
            got.extend(frames(&mut s, chunk));
        }
        assert_eq!(got, vec![v(std::str::from_utf8(whole).unwrap())]);
        assert!(!s.has_input());
    }

    #[test]
    fn single_quotes_and_escaped_quotes_become_standard_json() {
        let mut s = JsonStream::default();
        let got = frames(
            &mut s,
            br#"{'execute': 'say "hi"', 'x': 'it\'s', "y": "a\'b\"c"}"#,
        );
        let [F::V(text)] = &got[..] else {
            panic!("{got:?}")
        };
        let parsed: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed["execute"], r#"say "hi""#);
        assert_eq!(parsed["x"], "it's");
        assert_eq!(parsed["y"], "a'b\"c");
    }

    #[test]
    fn garbage_is_reported_once_then_skipped_to_a_resync_point() {
        let mut s = JsonStream::default();
        let got = frames(&mut s, b"hello world\n{\"execute\":\"guest-ping\"}");
        assert_eq!(got, vec![F::Bad(STRAY), v(r#"{"execute":"guest-ping"}"#)]);
        // Garbage up to a brace resynchronises on the brace itself.
        let got = frames(&mut s, b"xx{\"a\":1}");
        assert_eq!(got, vec![F::Bad(STRAY), v(r#"{"a":1}"#)]);
        // A stray closer is one error.
        assert_eq!(frames(&mut s, b"}{}"), vec![F::Bad(STRAY), v("{}")]);
    }

    #[test]
    fn a_lone_ff_is_a_silent_flush_that_drops_a_half_read_value() {
        let mut s = JsonStream::default();
        let got = frames(
            &mut s,
            b"{\"execute\":\"gue\xff{\"execute\":\"guest-sync\"}",
        );
        assert_eq!(got, vec![F::Flush, v(r#"{"execute":"guest-sync"}"#)]);
        assert_eq!(frames(&mut s, b"\xff"), vec![F::Flush]);
    }

    #[test]
    fn control_characters_in_a_value_discard_it_to_its_end() {
        let mut s = JsonStream::default();
        let got = frames(&mut s, b"{\"a\": \"x\x01y\", \"b\": {}}{\"ok\":1}");
        assert_eq!(got, vec![F::Bad(CONTROL), v(r#"{"ok":1}"#)]);
    }

    #[test]
    fn nesting_is_bounded() {
        let mut s = JsonStream::default();
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_NESTING + 1),
            "]".repeat(MAX_NESTING + 1)
        );
        let mut input = deep.into_bytes();
        input.extend_from_slice(b"{\"after\":1}");
        assert_eq!(
            frames(&mut s, &input),
            vec![F::Bad(TOO_DEEP), v(r#"{"after":1}"#)]
        );
        let ok = format!("{}{}", "[".repeat(MAX_NESTING), "]".repeat(MAX_NESTING));
        assert_eq!(frames(&mut s, ok.as_bytes()), vec![v(&ok)]);
    }

    #[test]
    fn an_oversize_value_is_reported_once_and_skipped_without_keeping_it() {
        let mut s = JsonStream::new(64);
        let big = format!("{{\"a\":\"{}\"}}", "x".repeat(200));
        let mut got = Vec::new();
        for chunk in big.as_bytes().chunks(16) {
            got.extend(frames(&mut s, chunk));
        }
        got.extend(frames(&mut s, b"{\"b\":2}"));
        assert_eq!(got, vec![F::Bad(TOO_BIG), v(r#"{"b":2}"#)]);
        assert!(s.value.capacity() < 1024);
    }

    #[test]
    fn reads_from_a_socket_pair() {
        use std::io::Write;
        use std::os::unix::net::UnixStream;
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.write_all(b"{\"execute\":\"guest-ping\"}\n{\"exe")
            .unwrap();
        drop(a);
        let mut s = JsonStream::default();
        assert_eq!(s.fill_from(&mut b).unwrap(), Fill::Data(30));
        let mut got = Vec::new();
        while let Some(Frame::Line(l)) = s.next_frame() {
            got.push(l.to_vec());
        }
        assert_eq!(got, vec![br#"{"execute":"guest-ping"}"#.to_vec()]);
        assert_eq!(s.fill_from(&mut b).unwrap(), Fill::Eof);
    }
}
