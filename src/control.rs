// SPDX-License-Identifier: Apache-2.0
//! The agent's control socket (`/run/guestd.sock`): the command line's way in while the
//! agent runs. One JSON request per line, one JSON response per line (see `kv::ops::Op`).
//! Peers are checked with `SO_PEERCRED`: root, the agent's own user, or members of
//! `--control-group` (by primary group) only.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use serde_json::{Value, json};

use crate::channel::listen::Listener;
use crate::kv::ops::Op;
use crate::proto::line::{Fill, Frame, LineReader};
use crate::sys::{self, POLLERR, POLLHUP, POLLIN, POLLOUT};

/// Clients served at once; further connections wait in the backlog.
const MAX_CLIENTS: usize = 8;
/// A client's requests are served only while less than this of its answers waits to be
/// read; beyond it the agent reads nothing more from that client (its requests stay in the
/// socket), so one client's memory is bounded by this plus one answer.
const OUT_HIGH_WATER: usize = 64 * 1024;
/// Longest request line (a `set` with an 8 KiB value, JSON-escaped, fits easily).
const MAX_REQUEST: usize = 64 * 1024;
/// Reads from one client per wake-up, so one busy client cannot hold the loop.
const READS_PER_WAKEUP: usize = 4;

/// The gid of `name` in an /etc/group text.
pub fn group_gid(group_file: &str, name: &str) -> Option<u32> {
    group_file.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.trim().parse().ok()
    })
}

struct Client {
    stream: UnixStream,
    reader: LineReader,
    out: Vec<u8>,
    written: usize,
    /// The peer finished sending (or was refused): serve what is buffered, write the
    /// answers, then close.
    eof: bool,
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.written
    }

    /// Serves buffered requests while the answers waiting are below the high-water mark.
    fn serve(&mut self, serve: &mut dyn FnMut(Op) -> Value) {
        // What the peer has read is gone: the buffer holds only unread answers.
        if self.written > 0 {
            self.out.drain(..self.written);
            self.written = 0;
        }
        while self.pending() < OUT_HIGH_WATER {
            let response = match self.reader.next_frame() {
                None => return,
                Some(Frame::Oversize | Frame::Invalid(_) | Frame::Flush) => {
                    json!({"ok": false, "error": "request too long"})
                }
                Some(Frame::Line(l)) => match serde_json::from_slice::<Value>(l) {
                    Ok(v) => match Op::from_request(&v) {
                        Ok(op) => serve(op),
                        Err(e) => json!({"ok": false, "error": e}),
                    },
                    Err(e) => json!({"ok": false, "error": format!("invalid request: {e}")}),
                },
            };
            self.out.extend_from_slice(response.to_string().as_bytes());
            self.out.push(b'\n');
        }
    }

    /// Writes what the peer takes; false when the peer is gone.
    fn flush(&mut self) -> bool {
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return false,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        self.out.clear();
        self.written = 0;
        true
    }

    /// Reads, serves and writes as far as the budgets allow; false when the client is done.
    fn on_ready(&mut self, revents: i16, serve: &mut dyn FnMut(Op) -> Value) -> bool {
        if revents & (POLLIN | POLLHUP | POLLERR) != 0 && !self.eof {
            for _ in 0..READS_PER_WAKEUP {
                self.serve(serve);
                if self.pending() >= OUT_HIGH_WATER || self.reader.has_input() {
                    break;
                }
                match self.reader.fill_from(&mut self.stream) {
                    Ok(Fill::Data(_)) => {}
                    Ok(Fill::WouldBlock) => break,
                    Ok(Fill::Eof) | Err(_) => {
                        self.eof = true;
                        break;
                    }
                }
            }
        }
        loop {
            self.serve(serve);
            if !self.flush() {
                return false;
            }
            // Stop when the peer is slow (answers left) or nothing is left to serve.
            if self.pending() > 0 || !self.reader.has_input() {
                break;
            }
        }
        !(self.eof && self.pending() == 0 && !self.reader.has_input())
    }
}

/// The listening control socket and its connected clients.
pub struct ControlServer {
    listener: Listener,
    gid: Option<u32>,
    clients: Vec<Client>,
}

impl ControlServer {
    /// Binds `path` (mode 0600, or 0660 owned by `group` when one is named); the socket
    /// appears at `path` ready to accept.
    pub fn bind(path: &Path, group: Option<&str>) -> Result<ControlServer, String> {
        let gid = match group {
            None => None,
            Some(g) => {
                let text = std::fs::read_to_string("/etc/group")
                    .map_err(|e| format!("reading /etc/group: {e}"))?;
                Some(group_gid(&text, g).ok_or_else(|| format!("no group '{g}' in /etc/group"))?)
            }
        };
        let listener = Listener::bind(path, gid).map_err(|e| e.to_string())?;
        Ok(ControlServer {
            listener,
            gid,
            clients: Vec::new(),
        })
    }

    /// The descriptors to poll and their events.
    pub fn poll_fds(&self, out: &mut Vec<(RawFd, i16)>) {
        if self.clients.len() < MAX_CLIENTS {
            out.push((self.listener.socket().as_raw_fd(), POLLIN));
        }
        for c in &self.clients {
            let mut ev = 0;
            // After EOF a client is only written to: its EOF would keep POLLIN ready forever.
            if !c.eof && c.pending() < OUT_HIGH_WATER && !c.reader.has_input() {
                ev |= POLLIN;
            }
            if c.pending() > 0 {
                ev |= POLLOUT;
            }
            out.push((c.stream.as_raw_fd(), ev));
        }
    }

    /// Handles readiness of one of our descriptors; `serve` answers each request.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16, serve: &mut dyn FnMut(Op) -> Value) {
        if fd == self.listener.socket().as_raw_fd() {
            self.accept();
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.stream.as_raw_fd() == fd) else {
            return;
        };
        if !self.clients[i].on_ready(revents, serve) {
            self.clients.swap_remove(i);
        }
    }

    fn accept(&mut self) {
        let stream = match self.listener.accept() {
            Ok(Some(s)) => s,
            Ok(None) => return,
            Err(e) => {
                let path = self.listener.path().display();
                log::warn!("control socket {path}: accept: {e}");
                return;
            }
        };
        let mut client = Client {
            stream,
            reader: LineReader::new(MAX_REQUEST),
            out: Vec::new(),
            written: 0,
            eof: false,
        };
        let allowed = match sys::peer_cred(client.stream.as_fd()) {
            Ok(c) => c.uid == 0 || c.uid == sys::geteuid() || Some(c.gid) == self.gid,
            Err(_) => false,
        };
        if !allowed {
            log::warn!(
                "control socket: refusing a peer that is neither root nor in the control group"
            );
            client.out = b"{\"ok\":false,\"error\":\"permission denied\"}\n".to_vec();
            client.eof = true;
        }
        if client.flush() && (client.pending() > 0 || !client.eof) {
            self.clients.push(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_group_ids() {
        let text = "root:x:0:\nwheel:x:10:alice,bob\nguestd:x:998:\n";
        assert_eq!(group_gid(text, "wheel"), Some(10));
        assert_eq!(group_gid(text, "guestd"), Some(998));
        assert_eq!(group_gid(text, "nobody"), None);
        assert_eq!(group_gid("broken", "broken"), None);
    }
}
