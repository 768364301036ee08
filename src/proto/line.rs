// SPDX-License-Identifier: Apache-2.0
//! Line framing shared by the oVirt channel, the control socket and the command-line
//! clients: a byte stream split into lines of at most `limit` bytes. The reader is pulled
//! one frame at a time, so a caller that must stop (its outbound queue is full) leaves the
//! rest buffered and reads no more until it has served them.

use std::io::{self, Read};

/// Bytes one `fill_from` asks read(2) for.
pub const READ_CHUNK: usize = 16 * 1024;

/// A buffer larger than this is released once it is drained, so one big line does not pin
/// its memory for the agent's lifetime.
const KEEP_CAPACITY: usize = 64 * 1024;

/// What the reader found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n` (or a complete JSON value, for a JSON stream).
    Line(&'a [u8]),
    /// A line longer than the limit began; it is discarded up to its newline.
    Oversize,
    /// Input that is not what the protocol expects, reported once (JSON streams only).
    Invalid(&'static str),
    /// A flush marker (0xFF in a JSON stream): the half-read input was dropped.
    Flush,
}

/// How one `fill_from` call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Fill {
    /// This many bytes were read and buffered.
    Data(usize),
    /// The source has no more data for now (`WouldBlock`).
    WouldBlock,
    /// The source reached end of file: the peer is gone.
    Eof,
}

/// How a `read_from` call ended.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadEnd {
    WouldBlock,
    Eof,
}

/// Splits a byte stream into lines of at most `limit` bytes. Over-long lines are reported
/// once and skipped up to the next newline (VDSM's `too-big` state). Memory is bounded by
/// `limit` plus one read.
#[derive(Debug)]
pub struct LineReader {
    /// Input in `buf[start..end]`; the rest of `buf` is initialised room for the next read,
    /// so a read never has to zero-fill its buffer again.
    buf: Vec<u8>,
    /// Start of the first unserved byte.
    start: usize,
    /// End of the buffered input.
    end: usize,
    /// Bytes before this offset are known to hold no newline.
    scanned: usize,
    limit: usize,
    /// Inside an over-long line: everything up to the next newline is dropped.
    skipping: bool,
}

impl LineReader {
    pub fn new(limit: usize) -> LineReader {
        LineReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            scanned: 0,
            limit,
            skipping: false,
        }
    }

    /// Forgets any buffered input (the peer changed).
    pub fn reset(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.end = 0;
        self.scanned = 0;
        self.skipping = false;
    }

    /// Whether unserved input is buffered (complete lines may be among it).
    pub fn has_input(&self) -> bool {
        self.scanned < self.end
    }

    /// Makes room for `n` more bytes after the buffered input.
    fn reserve(&mut self, n: usize) {
        if self.buf.len() < self.end + n {
            self.buf.resize(self.end + n, 0);
        }
    }

    /// Appends `data` to the buffered input.
    pub fn push(&mut self, data: &[u8]) {
        self.reserve(data.len());
        self.buf[self.end..self.end + data.len()].copy_from_slice(data);
        self.end += data.len();
    }

    /// The next complete line (or over-long line report), if the buffered input holds one.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        loop {
            let from = self.scanned;
            let Some(i) = self.buf[from..self.end].iter().position(|&b| b == b'\n') else {
                return self.no_newline();
            };
            let end = from + i;
            let begin = self.start;
            self.start = end + 1;
            self.scanned = self.start;
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if end - begin > self.limit {
                return Some(Frame::Oversize);
            }
            return Some(Frame::Line(&self.buf[begin..end]));
        }
    }

    /// No newline in the rest of the buffer: keep the partial line (compacted), or report
    /// and drop it when it is over the limit.
    fn no_newline(&mut self) -> Option<Frame<'static>> {
        let partial = self.end - self.start;
        let oversize = !self.skipping && partial > self.limit;
        if self.skipping || oversize {
            self.skipping = true;
            self.end = 0;
        } else {
            self.buf.copy_within(self.start..self.end, 0);
            self.end = partial;
        }
        self.start = 0;
        self.scanned = self.end;
        if self.end == 0 && self.buf.len() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        oversize.then_some(Frame::Oversize)
    }

    /// Feeds `data` and calls `f` for every frame it completes.
    pub fn feed(&mut self, data: &[u8], mut f: impl FnMut(Frame<'_>)) {
        self.push(data);
        while let Some(frame) = self.next_frame() {
            f(frame);
        }
    }

    /// One read(2) from `src` into the buffer. Interrupted reads are retried.
    pub fn fill_from<R: Read>(&mut self, src: &mut R) -> io::Result<Fill> {
        self.reserve(READ_CHUNK);
        let room = &mut self.buf[self.end..self.end + READ_CHUNK];
        let got = loop {
            match src.read(room) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        self.end += *got.as_ref().unwrap_or(&0);
        match got {
            Ok(0) => Ok(Fill::Eof),
            Ok(n) => Ok(Fill::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Fill::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// Reads from `src` until it would block or ends, calling `f` for every frame.
    pub fn read_from<R: Read>(
        &mut self,
        src: &mut R,
        mut f: impl FnMut(Frame<'_>),
    ) -> io::Result<ReadEnd> {
        loop {
            let end = self.fill_from(src)?;
            while let Some(frame) = self.next_frame() {
                f(frame);
            }
            match end {
                Fill::Data(_) => {}
                Fill::WouldBlock => return Ok(ReadEnd::WouldBlock),
                Fill::Eof => return Ok(ReadEnd::Eof),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(r: &mut LineReader, data: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        r.feed(data, |f| {
            out.push(match f {
                Frame::Line(l) => Some(l.to_vec()),
                _ => None,
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
    fn frames_are_pulled_one_at_a_time_and_the_rest_stays_buffered() {
        let mut r = LineReader::new(100);
        r.push(b"a\nb\nc");
        assert_eq!(r.next_frame(), Some(Frame::Line(b"a")));
        assert!(r.has_input());
        assert_eq!(r.next_frame(), Some(Frame::Line(b"b")));
        assert_eq!(r.next_frame(), None);
        assert!(!r.has_input(), "only a partial line is left");
        r.push(b"\n");
        assert_eq!(r.next_frame(), Some(Frame::Line(b"c")));
        assert_eq!(r.next_frame(), None);
    }

    #[test]
    fn read_from_reports_eof_and_would_block() {
        let mut r = LineReader::new(1024);
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
}
