// SPDX-License-Identifier: Apache-2.0
//! The agent's control socket (`/run/guestd.sock`): the command line's way in while the
//! agent runs. One JSON request per line, one JSON response per line (see `params::Op`).
//! Peers are checked with `SO_PEERCRED`: root, the agent's own user, or members of
//! `--control-group` (by primary group) only.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::channel;
use crate::params::Op;
use crate::proto::ovirt::{Frame, LineReader};
use crate::sys::{self, POLLERR, POLLHUP, POLLIN, POLLOUT};

/// Clients served at once; further connections wait in the backlog.
const MAX_CLIENTS: usize = 8;
/// Answers kept for a client that sends requests without reading the answers.
const MAX_PENDING_OUTPUT: usize = 128 * 1024 * 1024;
/// Longest request line (a `set` with an 8 KiB value, JSON-escaped, fits easily).
const MAX_REQUEST: usize = 64 * 1024;

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
    /// Close once `out` is written (peer refused, or the peer finished sending).
    closing: bool,
}

/// The listening control socket and its connected clients.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    gid: Option<u32>,
    clients: Vec<Client>,
}

impl ControlServer {
    /// Binds `path` (mode 0600, or 0660 owned by `group` when one is named).
    pub fn bind(path: &Path, group: Option<&str>) -> Result<ControlServer, String> {
        let gid = match group {
            None => None,
            Some(g) => {
                let text = std::fs::read_to_string("/etc/group")
                    .map_err(|e| format!("reading /etc/group: {e}"))?;
                Some(group_gid(&text, g).ok_or_else(|| format!("no group '{g}' in /etc/group"))?)
            }
        };
        let listener = channel::listen(path).map_err(|e| e.to_string())?;
        if let Some(gid) = gid {
            use std::os::unix::fs::PermissionsExt;
            sys::chgrp(path, gid).map_err(|e| format!("chgrp {}: {e}", path.display()))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                .map_err(|e| format!("chmod {}: {e}", path.display()))?;
        }
        Ok(ControlServer {
            listener,
            path: path.to_owned(),
            gid,
            clients: Vec::new(),
        })
    }

    /// The descriptors to poll and their events.
    pub fn poll_fds(&self, out: &mut Vec<(RawFd, i16)>) {
        if self.clients.len() < MAX_CLIENTS {
            out.push((self.listener.as_raw_fd(), POLLIN));
        }
        for c in &self.clients {
            let pending = c.written < c.out.len();
            // A closing client is only written to: its EOF would keep POLLIN ready forever.
            let ev = match (c.closing, pending) {
                (true, _) => POLLOUT,
                (false, true) => POLLIN | POLLOUT,
                (false, false) => POLLIN,
            };
            out.push((c.stream.as_raw_fd(), ev));
        }
    }

    /// Handles readiness of one of our descriptors; `serve` answers each request.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16, serve: &mut dyn FnMut(Op) -> Value) {
        if fd == self.listener.as_raw_fd() {
            self.accept();
            return;
        }
        let Some(i) = self.clients.iter().position(|c| c.stream.as_raw_fd() == fd) else {
            return;
        };
        let c = &mut self.clients[i];
        if revents & (POLLIN | POLLHUP | POLLERR) != 0 && !c.closing {
            let mut requests = Vec::new();
            let end = c.reader.read_from(&mut c.stream, |f| match f {
                Frame::Line(l) => requests.push(serde_json::from_slice::<Value>(l)),
                Frame::Oversize => requests.push(Ok(json!({"op": "oversize"}))),
            });
            for r in requests {
                let response = match r {
                    Ok(v) => match Op::from_request(&v) {
                        Ok(op) => serve(op),
                        Err(e) => json!({"ok": false, "error": e}),
                    },
                    Err(e) => json!({"ok": false, "error": format!("invalid request: {e}")}),
                };
                c.out.extend_from_slice(response.to_string().as_bytes());
                c.out.push(b'\n');
            }
            if !matches!(end, Ok(crate::proto::ovirt::ReadEnd::WouldBlock)) {
                c.closing = true;
            }
            if c.out.len() - c.written > MAX_PENDING_OUTPUT {
                log::warn!("control socket: dropping a client that does not read its answers");
                self.clients.swap_remove(i);
                return;
            }
        }
        let done = flush(c);
        if done || (c.closing && c.written >= c.out.len()) {
            self.clients.swap_remove(i);
        }
    }

    fn accept(&mut self) {
        let stream = match self.listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("control socket {}: accept: {e}", self.path.display());
                return;
            }
        };
        let mut client = Client {
            stream,
            reader: LineReader::new(MAX_REQUEST),
            out: Vec::new(),
            written: 0,
            closing: false,
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
            client.closing = true;
        }
        if client.stream.set_nonblocking(true).is_ok() {
            flush(&mut client);
            self.clients.push(client);
        }
    }
}

/// Writes what the client can take; true when the client is gone.
fn flush(c: &mut Client) -> bool {
    while c.written < c.out.len() {
        match c.stream.write(&c.out[c.written..]) {
            Ok(0) => return true,
            Ok(n) => c.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
    c.out.clear();
    c.written = 0;
    false
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
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
