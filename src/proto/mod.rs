// SPDX-License-Identifier: Apache-2.0
//! Wire plumbing shared by the protocols, independent of real file descriptors: framing is
//! generic over `Read`, the queue over `Write`, so tests drive them with `Vec<u8>` and
//! `UnixStream::pair()`.

pub mod base64;
pub mod json;
pub mod line;
pub mod queue;

use std::io::{self, Read};

pub use line::{Fill, Frame};

/// Splits an inbound byte stream into messages, pulled one at a time so a link can stop
/// serving them while its outbound queue is full. Memory stays bounded: a link reads more
/// only when `has_input` is false.
pub trait Framer {
    /// One read(2) from `src` into the framer's buffer.
    fn fill_from(&mut self, src: &mut dyn Read) -> io::Result<Fill>;
    /// The next complete message, if the buffered input holds one.
    fn next_frame(&mut self) -> Option<Frame<'_>>;
    /// Whether unserved input is buffered.
    fn has_input(&self) -> bool;
    /// Forgets buffered input (the peer changed).
    fn reset(&mut self);
}

impl Framer for line::LineReader {
    fn fill_from(&mut self, mut src: &mut dyn Read) -> io::Result<Fill> {
        line::LineReader::fill_from(self, &mut src)
    }
    fn next_frame(&mut self) -> Option<Frame<'_>> {
        line::LineReader::next_frame(self)
    }
    fn has_input(&self) -> bool {
        line::LineReader::has_input(self)
    }
    fn reset(&mut self) {
        line::LineReader::reset(self);
    }
}

impl Framer for json::JsonStream {
    fn fill_from(&mut self, src: &mut dyn Read) -> io::Result<Fill> {
        json::JsonStream::fill_from(self, src)
    }
    fn next_frame(&mut self) -> Option<Frame<'_>> {
        json::JsonStream::next_frame(self)
    }
    fn has_input(&self) -> bool {
        json::JsonStream::has_input(self)
    }
    fn reset(&mut self) {
        json::JsonStream::reset(self);
    }
}
