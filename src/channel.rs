// SPDX-License-Identifier: Apache-2.0
//! The host channel: what `--channel` names, how the port is found, and its attach state.
//!
//! - `virtio-serial[:NAME]`: `/dev/virtio-ports/NAME`, or, without udev, the `vportNpM` whose
//!   `/sys/class/virtio-ports/*/name` is NAME. The port stays open for the agent's life
//!   (closing it tells the host the agent left). With no host on the other end it reports
//!   POLLHUP forever, so while detached the agent leaves it out of the poll set and waits for
//!   the SIGIO that the port raises (F_SETOWN + O_ASYNC) when the host connects.
//! - `unix-listen:PATH`: a listening UNIX socket; one host peer at a time.
//! - `serial:DEVICE`: a serial line in raw mode; always attached.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::facts::under;
use crate::sys;

/// Port names tried, in order, when `virtio-serial` names none.
pub const DEFAULT_PORT_NAMES: &[&str] = &["ovirt-guest-agent.0", "com.redhat.rhevm.vdsm"];

/// A parsed `--channel` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    VirtioSerial(Option<String>),
    UnixListen(PathBuf),
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
            _ => Err(format!(
                "channel '{s}' is not virtio-serial[:NAME], unix-listen:PATH or serial:DEVICE"
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
        }
    }
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

/// Finds the virtio port for the first of `names` that exists: `dev/virtio-ports/NAME` (udev),
/// else the `dev/vportNpM` whose `sys/class/virtio-ports/vportNpM/name` is NAME.
pub fn find_virtio_port(root: &Path, names: &[&str]) -> Option<PathBuf> {
    let mut by_name: Option<Vec<(String, String)>> = None;
    for name in names {
        let udev = under(root, "dev/virtio-ports").join(name);
        if udev.exists() {
            return Some(udev);
        }
        let ports = by_name.get_or_insert_with(|| sysfs_port_names(root));
        if let Some((_, vport)) = ports.iter().find(|(n, _)| n == name) {
            return Some(under(root, "dev").join(vport));
        }
    }
    None
}

/// (port name, `vportNpM`) for every port the kernel lists.
fn sysfs_port_names(root: &Path) -> Vec<(String, String)> {
    let dir = under(root, "sys/class/virtio-ports");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let vport = e.file_name().to_str()?.to_owned();
            let name = std::fs::read_to_string(e.path().join("name")).ok()?;
            Some((name.trim().to_owned(), vport))
        })
        .collect();
    out.sort();
    out
}

/// The open connection to the host.
#[derive(Debug)]
pub enum Conn {
    Port(File),
    Stream(UnixStream),
}

impl Conn {
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Conn::Port(f) => f.as_raw_fd(),
            Conn::Stream(s) => s.as_raw_fd(),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Port(f) => f.read(buf),
            Conn::Stream(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Port(f) => f.write(buf),
            Conn::Stream(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The channel and its state: where it is, whether it is open, whether a host is attached.
#[derive(Debug)]
pub struct Channel {
    spec: ChannelSpec,
    root: PathBuf,
    listener: Option<UnixListener>,
    conn: Option<Conn>,
    attached: bool,
    /// Accepting is paused after an accept error (e.g. EMFILE), so the loop does not spin.
    listen_paused: bool,
}

impl Channel {
    /// Opens the channel. A virtio port or serial device that does not exist yet, or cannot
    /// be opened yet, is not an error: the agent retries `open_port` until it can. Only a
    /// listening socket that cannot be bound is fatal.
    pub fn open(spec: &ChannelSpec, root: &Path) -> Result<Channel, Error> {
        let mut ch = Channel {
            spec: spec.clone(),
            root: root.to_owned(),
            listener: None,
            conn: None,
            attached: false,
            listen_paused: false,
        };
        match spec {
            ChannelSpec::UnixListen(path) => ch.listener = Some(listen(path)?),
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

    /// Whether this is a device channel (virtio or serial) that is not open: not found yet,
    /// or closed after an error. The agent then retries `open_port` on a timer.
    pub fn waiting_for_port(&self) -> bool {
        !matches!(self.spec, ChannelSpec::UnixListen(_)) && self.conn.is_none()
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
        let path = match &self.spec {
            ChannelSpec::UnixListen(_) => return Ok(false),
            ChannelSpec::Serial(path) => {
                let f = open_device(path)?;
                sys::set_raw(f.as_fd()).map_err(err("setting raw mode on", path))?;
                log::info!("opened serial line {}", path.display());
                self.conn = Some(Conn::Port(f));
                self.attached = true;
                return Ok(true);
            }
            ChannelSpec::VirtioSerial(name) => {
                let names: Vec<&str> = match name {
                    Some(n) => vec![n.as_str()],
                    None => DEFAULT_PORT_NAMES.to_vec(),
                };
                match find_virtio_port(&self.root, &names) {
                    Some(p) => p,
                    None => return Ok(false),
                }
            }
        };
        let f = open_device(&path)?;
        // INVARIANT: SIGIO is blocked (the signalfd exists) before O_ASYNC is set, so the
        // first host connect cannot kill the process.
        sys::enable_sigio(f.as_fd()).map_err(err("enabling SIGIO on", &path))?;
        log::info!("opened virtio port {}", path.display());
        self.conn = Some(Conn::Port(f));
        Ok(true)
    }

    pub fn is_attached(&self) -> bool {
        self.attached
    }

    /// The fd to poll for host data: the connection while a host is attached, else -1.
    pub fn conn_poll_fd(&self) -> RawFd {
        match (&self.conn, self.attached) {
            (Some(c), true) => c.raw_fd(),
            _ => -1,
        }
    }

    /// The listening socket while it should accept (no peer yet), else -1.
    pub fn listen_poll_fd(&self) -> RawFd {
        match (&self.listener, &self.conn) {
            (Some(l), None) if !self.listen_paused => l.as_raw_fd(),
            _ => -1,
        }
    }

    /// Stops (or resumes) accepting host peers; used to back off after an accept error.
    pub fn pause_listening(&mut self, paused: bool) {
        self.listen_paused = paused;
    }

    /// For a virtio port: whether the host side is connected now (no POLLHUP). Called on
    /// start and on every SIGIO while detached.
    pub fn host_connected(&self) -> io::Result<bool> {
        match &self.conn {
            Some(Conn::Port(f)) if matches!(self.spec, ChannelSpec::VirtioSerial(_)) => {
                let ev = sys::poll_now(f.as_fd(), sys::POLLIN | sys::POLLOUT)?;
                Ok(ev & (sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) == 0)
            }
            _ => Ok(false),
        }
    }

    /// Marks the channel attached (virtio host connected).
    pub fn set_attached(&mut self) {
        if self.conn.is_some() {
            self.attached = true;
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
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(true)?;
                self.conn = Some(Conn::Stream(s));
                self.attached = true;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The host left. A socket peer is closed. A virtio port stays open, detached, unless
    /// `broken` (an I/O error such as ENODEV after hot-unplug): then it is closed and looked
    /// for again. A serial line has no "host left" state, so any detach closes and reopens it.
    pub fn detach(&mut self, broken: bool) {
        self.attached = false;
        let close = match self.spec {
            ChannelSpec::UnixListen(_) | ChannelSpec::Serial(_) => true,
            ChannelSpec::VirtioSerial(_) => broken,
        };
        if close {
            self.conn = None;
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

/// Binds `path` (replacing a stale socket left by a previous run, never another kind of
/// file), mode 0600, non-blocking.
pub(crate) fn listen(path: &Path) -> Result<UnixListener, Error> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if UnixStream::connect(path).is_ok() {
                return Err(Error {
                    op: "listening on",
                    path: path.to_owned(),
                    source: io::Error::new(
                        io::ErrorKind::AddrInUse,
                        "another process is listening",
                    ),
                });
            }
            std::fs::remove_file(path).map_err(err("removing stale socket", path))?;
        }
    }
    // Created 0600 from the start (umask 0177), so no other user can connect in between.
    let l =
        sys::with_umask(0o177, || UnixListener::bind(path)).map_err(err("listening on", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(err("setting permissions of", path))?;
    l.set_nonblocking(true).map_err(err("listening on", path))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

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
    fn finds_port_through_sysfs_without_udev() {
        let root = fixtures().join("ports-sysfs");
        assert_eq!(
            find_virtio_port(&root, DEFAULT_PORT_NAMES),
            Some(root.join("dev/vport1p2"))
        );
        assert_eq!(
            find_virtio_port(&root, &["com.redhat.rhevm.vdsm"]),
            Some(root.join("dev/vport1p3"))
        );
        assert_eq!(find_virtio_port(&root, &["absent.0"]), None);
    }

    #[test]
    fn prefers_udev_link_and_the_first_name() {
        let root = fixtures().join("ports-udev");
        assert_eq!(
            find_virtio_port(&root, DEFAULT_PORT_NAMES),
            Some(root.join("dev/virtio-ports/ovirt-guest-agent.0"))
        );
        assert_eq!(
            find_virtio_port(&fixtures().join("no-such-root"), DEFAULT_PORT_NAMES),
            None
        );
    }

    #[test]
    fn unix_listen_serves_one_peer_and_replaces_stale_socket() {
        let dir = std::env::temp_dir().join(format!("guestd-ch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        // A stale socket file from a dead process is replaced.
        drop(UnixListener::bind(&path).unwrap());
        let mut ch = Channel::open(&ChannelSpec::UnixListen(path.clone()), &dir).unwrap();
        assert!(!ch.is_attached());
        assert!(!ch.accept().unwrap());
        let _peer = UnixStream::connect(&path).unwrap();
        assert!(ch.accept().unwrap());
        assert!(ch.is_attached());
        assert_eq!(ch.listen_poll_fd(), -1);
        // A second listener on the same live path is refused.
        let e = Channel::open(&ChannelSpec::UnixListen(path.clone()), &dir).unwrap_err();
        assert!(
            e.to_string().contains("another process is listening"),
            "{e}"
        );
        ch.pause_listening(true);
        ch.detach(false);
        assert_eq!(ch.listen_poll_fd(), -1);
        ch.pause_listening(false);
        assert!(ch.listen_poll_fd() >= 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
