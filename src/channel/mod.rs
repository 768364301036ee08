// SPDX-License-Identifier: Apache-2.0
//! A host channel: what `--channel` names, opening it, and its attach state. The transports
//! live in their own files:
//!
//! - `virtio`: `virtio-serial[:NAME]`, `/dev/virtio-ports/NAME` or, without udev, the
//!   `vportNpM` whose `/sys/class/virtio-ports/*/name` is NAME; detached while no host is on
//!   the other end (SIGIO says when one comes).
//! - `listen`: `unix-listen:PATH`, a listening UNIX socket; one host peer at a time.
//! - `vsock-listen:[CID:]PORT`: a listening vsock socket (`sys::VsockListener`, backlog 1),
//!   on every CID of the guest unless one is named, as qemu-ga's `-m vsock-listen -p
//!   CID:PORT`; one host peer at a time, like `unix-listen`.
//! - `serial`: `serial:DEVICE`, a serial line in raw mode; always attached.
//!
//! The port names a bare `virtio-serial` looks for belong to the protocol served on it and
//! are passed in.

pub mod listen;
pub mod serial;
pub mod virtio;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::sys;

/// A parsed `--channel` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    VirtioSerial(Option<String>),
    UnixListen(PathBuf),
    /// `vsock-listen:[CID:]PORT`; no CID is `VMADDR_CID_ANY`.
    VsockListen {
        cid: Option<u32>,
        port: u32,
    },
    Serial(PathBuf),
}

impl Default for ChannelSpec {
    fn default() -> Self {
        ChannelSpec::VirtioSerial(None)
    }
}

impl FromStr for ChannelSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        match (kind, arg) {
            ("virtio-serial", None) => Ok(ChannelSpec::VirtioSerial(None)),
            ("virtio-serial", Some(n)) if !n.is_empty() && !n.contains('/') => {
                Ok(ChannelSpec::VirtioSerial(Some(n.to_owned())))
            }
            ("unix-listen", Some(p)) if !p.is_empty() => Ok(ChannelSpec::UnixListen(p.into())),
            ("serial", Some(p)) if !p.is_empty() => Ok(ChannelSpec::Serial(p.into())),
            ("vsock-listen", Some(a)) => parse_vsock(a).map_err(|e| format!("channel '{s}': {e}")),
            _ => Err(format!(
                "channel '{s}' is not virtio-serial[:NAME], unix-listen:PATH, \
                 vsock-listen:[CID:]PORT or serial:DEVICE"
            )),
        }
    }
}

impl fmt::Display for ChannelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelSpec::VirtioSerial(None) => write!(f, "virtio-serial"),
            ChannelSpec::VirtioSerial(Some(n)) => write!(f, "virtio-serial:{n}"),
            ChannelSpec::UnixListen(p) => write!(f, "unix-listen:{}", p.display()),
            ChannelSpec::Serial(p) => write!(f, "serial:{}", p.display()),
            ChannelSpec::VsockListen { cid: None, port } => write!(f, "vsock-listen:{port}"),
            ChannelSpec::VsockListen {
                cid: Some(cid),
                port,
            } => write!(f, "vsock-listen:{cid}:{port}"),
        }
    }
}

/// `[CID:]PORT` of `vsock-listen`. The port is 0..=4294967294 (4294967295 is
/// `VMADDR_PORT_ANY`, which listen(2) cannot use); the CID any 32-bit number.
fn parse_vsock(arg: &str) -> Result<ChannelSpec, String> {
    let (cid, port) = match arg.split_once(':') {
        Some((c, p)) => (Some(c), p),
        None => (None, arg),
    };
    let port = port
        .parse::<u32>()
        .ok()
        .filter(|&p| p < u32::MAX)
        .ok_or_else(|| {
            format!(
                "the port '{port}' is not a number from 0 to {}",
                u32::MAX - 1
            )
        })?;
    let cid = cid
        .map(|c| {
            c.parse::<u32>()
                .map_err(|_| format!("the CID '{c}' is not a number from 0 to {}", u32::MAX))
        })
        .transpose()?;
    Ok(ChannelSpec::VsockListen { cid, port })
}

/// A channel operation that failed, with the path it concerned.
#[derive(Debug)]
pub struct Error {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    move |source| Error {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The open connection to the host.
#[derive(Debug)]
pub enum Conn {
    Port(File),
    Stream(UnixStream),
    Vsock(sys::VsockStream),
}

impl Conn {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Conn::Port(f) => f.as_raw_fd(),
            Conn::Stream(s) => s.as_raw_fd(),
            Conn::Vsock(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Port(f) => f.read(buf),
            Conn::Stream(s) => s.read(buf),
            Conn::Vsock(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Port(f) => f.write(buf),
            Conn::Stream(s) => s.write(buf),
            Conn::Vsock(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A listening socket: UNIX or vsock.
#[derive(Debug)]
enum Listening {
    Unix(listen::Listener),
    Vsock(sys::VsockListener),
}

impl Listening {
    fn raw_fd(&self) -> RawFd {
        match self {
            Listening::Unix(l) => l.socket().as_raw_fd(),
            Listening::Vsock(l) => l.as_raw_fd(),
        }
    }

    fn accept(&self) -> io::Result<Option<Conn>> {
        match self {
            Listening::Unix(l) => Ok(l.accept()?.map(Conn::Stream)),
            Listening::Vsock(l) => Ok(l.accept()?.map(|(s, cid, port)| {
                log::info!("vsock host peer {cid}:{port} connected");
                Conn::Vsock(s)
            })),
        }
    }
}

/// The channel and its state: where it is, whether it is open, whether a host is attached.
/// This is the one place attach state is kept.
#[derive(Debug)]
pub struct Channel {
    spec: ChannelSpec,
    root: PathBuf,
    /// The port names a bare `virtio-serial` looks for, in order.
    ports: &'static [&'static str],
    listener: Option<Listening>,
    conn: Option<Conn>,
    attached: bool,
    /// Accepting is paused after an accept error (e.g. EMFILE), so the loop does not spin.
    listen_paused: bool,
}

impl Channel {
    /// Opens the channel. A virtio port or serial device that does not exist yet, or cannot
    /// be opened yet, is not an error: the link retries `open_port` until it can. Only a
    /// listening socket that cannot be bound is fatal.
    pub fn open(
        spec: &ChannelSpec,
        root: &Path,
        ports: &'static [&'static str],
    ) -> Result<Channel, Error> {
        let mut ch = Channel {
            spec: spec.clone(),
            root: root.to_owned(),
            ports,
            listener: None,
            conn: None,
            attached: false,
            listen_paused: false,
        };
        match spec {
            ChannelSpec::UnixListen(path) => {
                ch.listener = Some(Listening::Unix(listen::Listener::bind(path, None)?))
            }
            ChannelSpec::VsockListen { cid, port } => {
                let l = sys::VsockListener::bind(cid.unwrap_or(sys::VSOCK_CID_ANY), *port)
                    .map_err(|source| Error {
                        op: "listening on",
                        path: spec.to_string().into(),
                        source,
                    })?;
                ch.listener = Some(Listening::Vsock(l));
            }
            ChannelSpec::VirtioSerial(_) | ChannelSpec::Serial(_) => {
                if let Err(e) = ch.open_port() {
                    log::error!("{e}");
                }
            }
        }
        Ok(ch)
    }

    pub fn spec(&self) -> &ChannelSpec {
        &self.spec
    }

    /// The port names looked for, for messages.
    pub fn port_names(&self) -> String {
        match &self.spec {
            ChannelSpec::VirtioSerial(Some(n)) => n.clone(),
            _ => self.ports.join(" or "),
        }
    }

    /// Whether this is a device channel (virtio or serial) that is not open: not found yet,
    /// or closed after an error. The link then retries `open_port` on a timer.
    pub fn waiting_for_port(&self) -> bool {
        !self.is_listening() && self.conn.is_none()
    }

    /// Whether this is a listening socket (`unix-listen`, `vsock-listen`): a host peer
    /// connects to it.
    pub fn is_listening(&self) -> bool {
        matches!(
            self.spec,
            ChannelSpec::UnixListen(_) | ChannelSpec::VsockListen { .. }
        )
    }

    pub fn is_virtio(&self) -> bool {
        matches!(self.spec, ChannelSpec::VirtioSerial(_))
    }

    /// Finds and opens the device. `Ok(true)` when it is open now. A serial line counts as
    /// attached as soon as it is open; a virtio port is attached once `host_connected` says so.
    pub fn open_port(&mut self) -> Result<bool, Error> {
        if self.conn.is_some() {
            return Ok(true);
        }
        match &self.spec {
            ChannelSpec::UnixListen(_) | ChannelSpec::VsockListen { .. } => Ok(false),
            ChannelSpec::Serial(path) => {
                self.conn = Some(Conn::Port(serial::open(path)?));
                self.attached = true;
                Ok(true)
            }
            ChannelSpec::VirtioSerial(name) => {
                let named;
                let names = match name {
                    Some(n) => {
                        named = [n.as_str()];
                        &named[..]
                    }
                    None => self.ports,
                };
                let Some(path) = virtio::find_port(&self.root, names) else {
                    return Ok(false);
                };
                self.conn = Some(Conn::Port(virtio::open(&path)?));
                Ok(true)
            }
        }
    }

    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// The fd to poll for host data: the connection while a host is attached.
    pub fn conn_fd(&self) -> Option<RawFd> {
        match (&self.conn, self.attached) {
            (Some(c), true) => Some(c.raw_fd()),
            _ => None,
        }
    }

    /// The open device or connection, attached or not.
    pub fn port_fd(&self) -> Option<RawFd> {
        self.conn.as_ref().map(Conn::raw_fd)
    }

    /// The listening socket while it should accept (no peer yet).
    pub fn listen_fd(&self) -> Option<RawFd> {
        match (&self.listener, &self.conn) {
            (Some(l), None) if !self.listen_paused => Some(l.raw_fd()),
            _ => None,
        }
    }

    /// Stops (or resumes) accepting host peers; used to back off after an accept error.
    pub fn pause_listening(&mut self, paused: bool) {
        self.listen_paused = paused;
    }

    /// Whether this is an open virtio port whose host side is not connected: the port a SIGIO
    /// may concern.
    pub fn awaits_sigio(&self) -> bool {
        self.is_virtio() && self.conn.is_some() && !self.attached
    }

    /// For a virtio port: whether the host side is connected now (no POLLHUP). Called on
    /// start and on every SIGIO while detached.
    pub fn host_connected(&self) -> io::Result<bool> {
        match &self.conn {
            Some(Conn::Port(f)) if self.is_virtio() => virtio::host_connected(f),
            _ => Ok(false),
        }
    }

    /// Marks the channel attached (virtio host connected). The port's signal is turned off
    /// while attached: the poll set watches the port then, and a signal per host write would
    /// only cost a wake-up each.
    pub fn set_attached(&mut self) {
        if let Some(c) = &self.conn {
            self.attached = true;
            self.port_signal(c, false);
        }
    }

    /// Turns a virtio port's signal on or off; a failure is logged (the port then keeps
    /// signalling, which costs wake-ups, not correctness).
    fn port_signal(&self, c: &Conn, on: bool) {
        if let (Conn::Port(f), true) = (c, self.is_virtio()) {
            if let Err(e) = sys::set_async(f.as_fd(), on) {
                log::warn!("setting O_ASYNC on the virtio port: {e}");
            }
        }
    }

    /// Accepts a pending host peer on the listening socket. `Ok(true)` when one was accepted.
    pub fn accept(&mut self) -> io::Result<bool> {
        let Some(l) = &self.listener else {
            return Ok(false);
        };
        if self.conn.is_some() {
            return Ok(false);
        }
        match l.accept()? {
            Some(c) => {
                self.conn = Some(c);
                self.attached = true;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// The host left. A socket peer is closed. A virtio port stays open, detached, unless
    /// `broken` (an I/O error such as ENODEV after hot-unplug): then it is closed and looked
    /// for again. A serial line has no "host left" state, so any detach closes and reopens it.
    pub fn detach(&mut self, broken: bool) {
        self.attached = false;
        let close = match self.spec {
            ChannelSpec::UnixListen(_)
            | ChannelSpec::VsockListen { .. }
            | ChannelSpec::Serial(_) => true,
            ChannelSpec::VirtioSerial(_) => broken,
        };
        if close {
            self.conn = None;
        } else if let Some(c) = &self.conn {
            // Detached: the port's signal says when the host is back.
            self.port_signal(c, true);
        }
    }

    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        if self.attached {
            self.conn.as_mut()
        } else {
            None
        }
    }
}

fn open_device(path: &Path) -> Result<File, Error> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(err("opening", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_channel_specs() {
        assert_eq!("virtio-serial".parse(), Ok(ChannelSpec::VirtioSerial(None)));
        assert_eq!(
            "virtio-serial:org.x.0".parse(),
            Ok(ChannelSpec::VirtioSerial(Some("org.x.0".into())))
        );
        assert_eq!(
            "unix-listen:/a/b".parse(),
            Ok(ChannelSpec::UnixListen("/a/b".into()))
        );
        assert_eq!(
            "serial:/dev/ttyS1".parse(),
            Ok(ChannelSpec::Serial("/dev/ttyS1".into()))
        );
        for bad in ["", "unix-listen:", "serial", "tcp:1", "virtio-serial:a/b"] {
            assert!(bad.parse::<ChannelSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            ChannelSpec::UnixListen("/x".into()).to_string(),
            "unix-listen:/x"
        );
    }

    #[test]
    fn parses_vsock_listen_and_round_trips() {
        let v = |cid, port| ChannelSpec::VsockListen { cid, port };
        assert_eq!("vsock-listen:1024".parse(), Ok(v(None, 1024)));
        assert_eq!("vsock-listen:3:0".parse(), Ok(v(Some(3), 0)));
        assert_eq!(
            "vsock-listen:4294967295:4294967294".parse(),
            Ok(v(Some(u32::MAX), u32::MAX - 1))
        );
        for spec in [v(None, 1024), v(Some(3), 0), v(Some(u32::MAX), 7)] {
            assert_eq!(spec.to_string().parse(), Ok(spec));
        }
        assert_eq!(v(None, 9).to_string(), "vsock-listen:9");
        let e = |s: &str| s.parse::<ChannelSpec>().unwrap_err();
        assert_eq!(
            e("vsock-listen:4294967295"),
            "channel 'vsock-listen:4294967295': the port '4294967295' is not a number from 0 to 4294967294"
        );
        assert_eq!(
            e("vsock-listen:x:5"),
            "channel 'vsock-listen:x:5': the CID 'x' is not a number from 0 to 4294967295"
        );
        assert!(e("vsock-listen").contains("vsock-listen:[CID:]PORT"));
        for bad in ["vsock-listen:", "vsock-listen:-1", "vsock-listen:1:2:3"] {
            assert!(e(bad).contains("is not a number"), "{bad}: {}", e(bad));
        }
    }

    #[test]
    fn vsock_listen_binds_or_names_the_channel_in_its_error() {
        let port = 0x5000_0000 + std::process::id();
        let spec = ChannelSpec::VsockListen { cid: None, port };
        match Channel::open(&spec, Path::new("/"), &[]) {
            Ok(mut ch) => {
                assert!(ch.is_listening() && !ch.waiting_for_port());
                assert!(ch.listen_fd().is_some());
                assert!(!ch.accept().unwrap(), "nothing can connect here");
                // A second listener on the same port names the channel.
                let e = Channel::open(&spec, Path::new("/"), &[]).unwrap_err();
                assert_eq!(e.source.raw_os_error(), Some(libc::EADDRINUSE));
                assert!(
                    e.to_string()
                        .starts_with(&format!("listening on vsock-listen:{port}: ")),
                    "{e}"
                );
            }
            Err(e) => {
                // A kernel without vsock.
                assert!(
                    matches!(
                        e.source.raw_os_error(),
                        Some(libc::EAFNOSUPPORT | libc::ENODEV)
                    ),
                    "{e}"
                );
                assert!(e.to_string().contains("vsock-listen:"), "{e}");
            }
        }
    }

    #[test]
    fn unix_listen_serves_one_peer() {
        let dir = std::env::temp_dir().join(format!("guestd-ch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let mut ch = Channel::open(&ChannelSpec::UnixListen(path.clone()), &dir, &[]).unwrap();
        assert!(!ch.is_attached());
        assert!(!ch.accept().unwrap());
        let _peer = UnixStream::connect(&path).unwrap();
        assert!(ch.accept().unwrap());
        assert!(ch.is_attached());
        assert_eq!(ch.listen_fd(), None);
        ch.pause_listening(true);
        ch.detach(false);
        assert_eq!(ch.listen_fd(), None);
        ch.pause_listening(false);
        assert!(ch.listen_fd().is_some());
        drop(ch);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
