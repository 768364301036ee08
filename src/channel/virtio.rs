// SPDX-License-Identifier: Apache-2.0
//! virtio-serial ports: finding one by name, with or without udev, opening it for SIGIO, and
//! asking whether its host side is connected.
//!
//! A port stays open for the agent's life (closing it tells the host the agent left). With
//! no host on the other end it reports POLLHUP forever, so while detached the loop leaves it
//! out of the poll set and waits for the SIGIO the port raises (F_SETOWN + O_ASYNC) when the
//! host connects.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use super::{Error, err, open_device};
use crate::facts::under;
use crate::sys;

/// Finds the virtio port for the first of `names` that exists: `dev/virtio-ports/NAME` (udev),
/// else the `dev/vportNpM` whose `sys/class/virtio-ports/vportNpM/name` is NAME.
pub fn find_port(root: &Path, names: &[&str]) -> Option<PathBuf> {
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

/// Opens the port at `path`, non-blocking, raising SIGIO on state changes.
pub fn open(path: &Path) -> Result<File, Error> {
    let f = open_device(path)?;
    // INVARIANT: SIGIO is blocked (the signalfd exists) before O_ASYNC is set, so the first
    // host connect cannot kill the process.
    sys::enable_sigio(f.as_fd()).map_err(err("enabling SIGIO on", path))?;
    log::info!("opened virtio port {}", path.display());
    Ok(f)
}

/// Whether the host side of an open port is connected now (no POLLHUP).
pub fn host_connected(port: &File) -> io::Result<bool> {
    let ev = sys::poll_now(port.as_fd(), sys::POLLIN | sys::POLLOUT)?;
    Ok(ev & (sys::POLLHUP | sys::POLLERR | sys::POLLNVAL) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    const NAMES: &[&str] = crate::ovirt::PORT_NAMES;

    #[test]
    fn finds_port_through_sysfs_without_udev() {
        let root = fixtures().join("ports-sysfs");
        // Both oVirt names exist: the legacy one wins, as in the reference agent.
        assert_eq!(find_port(&root, NAMES), Some(root.join("dev/vport1p3")));
        assert_eq!(
            find_port(&root, &["ovirt-guest-agent.0"]),
            Some(root.join("dev/vport1p2"))
        );
        assert_eq!(find_port(&root, &["absent.0"]), None);
    }

    #[test]
    fn prefers_the_legacy_ovirt_port_when_both_exist() {
        let root = fixtures().join("ports-udev");
        assert_eq!(
            find_port(&root, NAMES),
            Some(root.join("dev/virtio-ports/com.redhat.rhevm.vdsm"))
        );
        assert_eq!(find_port(&fixtures().join("no-such-root"), NAMES), None);
    }

    #[test]
    fn falls_back_to_the_current_ovirt_name_without_the_legacy_port() {
        let root = fixtures().join("ports-new-only");
        assert_eq!(
            find_port(&root, NAMES),
            Some(root.join("dev/virtio-ports/ovirt-guest-agent.0"))
        );
        // Without udev links the sysfs name decides the same way.
        let root = fixtures().join("ports-sysfs-legacy-only");
        assert_eq!(find_port(&root, NAMES), Some(root.join("dev/vport2p1")));
    }
}
