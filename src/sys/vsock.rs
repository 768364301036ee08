// SPDX-License-Identifier: Apache-2.0
//! `AF_VSOCK` stream sockets, see vsock(7): a listening socket bound to a CID and port, and
//! the connections it accepts. Both are non-blocking and close-on-exec, and own their fd.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;

/// Binds to every CID of this guest (`VMADDR_CID_ANY`).
pub const VSOCK_CID_ANY: u32 = libc::VMADDR_CID_ANY;

/// The size of `sockaddr_vm`, as socklen_t.
fn addr_len() -> io::Result<libc::socklen_t> {
    libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_vm>())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// A `sockaddr_vm` for `cid` and `port`.
fn sockaddr(cid: u32, port: u32) -> io::Result<libc::sockaddr_vm> {
    // SAFETY: sockaddr_vm is plain old data; all-zero is a valid value (and the required
    // value of its reserved and padding fields).
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::sa_family_t::try_from(libc::AF_VSOCK)
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    addr.svm_cid = cid;
    addr.svm_port = port;
    Ok(addr)
}

/// A listening vsock stream socket (backlog 1: one host at a time).
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// socket(2), bind(2) to `cid`:`port` and listen(2). Fails with `EAFNOSUPPORT` when the
    /// kernel has no vsock support, `EADDRNOTAVAIL` for a CID that is not this guest's and
    /// `EADDRINUSE` for a port already bound.
    pub fn bind(cid: u32, port: u32) -> io::Result<VsockListener> {
        // SAFETY: socket takes only integer arguments and touches no memory of ours; the
        // result is checked.
        let raw = cvt(unsafe {
            libc::socket(
                libc::AF_VSOCK,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        })?;
        // SAFETY: `raw` is a descriptor socket(2) just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let addr = sockaddr(cid, port)?;
        // SAFETY: `addr` is a valid sockaddr_vm that outlives the call and the length passed
        // is its size; the fd is open; the result is checked.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                addr_len()?,
            )
        })?;
        // SAFETY: listen takes only integer arguments on an open fd; the result is checked.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), 1) })?;
        Ok(VsockListener { fd })
    }

    /// accept4(2) a pending peer, non-blocking and close-on-exec, with its CID and port.
    /// `Ok(None)` when there is none (or it gave up before being accepted).
    pub fn accept(&self) -> io::Result<Option<(VsockStream, u32, u32)>> {
        // SAFETY: see `sockaddr`: all-zero is a valid sockaddr_vm.
        let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
        let mut len = addr_len()?;
        // SAFETY: `addr` and `len` are valid and writable for the call, and `len` holds the
        // size of `addr`, so the kernel writes within it; the result is checked.
        let ret = cvt(unsafe {
            libc::accept4(
                self.fd.as_raw_fd(),
                (&raw mut addr).cast::<libc::sockaddr>(),
                &mut len,
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        });
        match ret {
            Ok(raw) => {
                // SAFETY: accept4 just returned this descriptor, owned by nobody else.
                let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                Ok(Some((VsockStream { fd }, addr.svm_cid, addr.svm_port)))
            }
            Err(e) if crate::sys::no_client_yet(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for VsockListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for VsockListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A connected vsock stream. Reads and writes never block and never raise SIGPIPE.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl Read for VsockStream {
    /// recv(2).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid and writable for `buf.len()` bytes for the call; the fd is
        // open; the result is checked.
        let n =
            cvt(unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) })?;
        usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    }
}

impl Write for VsockStream {
    /// send(2) with `MSG_NOSIGNAL`: a peer that left is an `EPIPE` error, not a signal.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid and readable for `buf.len()` bytes for the call; the fd is
        // open; the result is checked.
        let n = cvt(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_NOSIGNAL,
            )
        })?;
        usize::try_from(n).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for VsockStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this kernel can make vsock sockets at all.
    fn supported() -> bool {
        match VsockListener::bind(VSOCK_CID_ANY, 0xFFFF_FFF0) {
            Ok(_) => true,
            Err(e) => {
                assert!(
                    matches!(e.raw_os_error(), Some(libc::EAFNOSUPPORT | libc::ENODEV)),
                    "{e}"
                );
                false
            }
        }
    }

    #[test]
    fn binds_listens_and_refuses_a_second_bind() {
        if !supported() {
            return;
        }
        let port = 0x4000_0000 + std::process::id();
        let l = VsockListener::bind(VSOCK_CID_ANY, port).unwrap();
        assert!(l.accept().unwrap().is_none(), "nobody can connect here");
        let e = VsockListener::bind(VSOCK_CID_ANY, port).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
        drop(l);
        VsockListener::bind(VSOCK_CID_ANY, port).unwrap();
        // A CID that is not this machine's cannot be bound.
        let e = VsockListener::bind(0x7654_3210, port).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRNOTAVAIL), "{e}");
    }
}
