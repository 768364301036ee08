// SPDX-License-Identifier: Apache-2.0
//! Network interfaces (oVirt `network-interfaces`): names and MAC addresses from
//! `sys/class/net`, joined with the addresses getifaddrs(3) reports.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::path::Path;

use super::{Error, read_text_opt, under};
use crate::sys::InterfaceAddress;

/// One entry of the `network-interfaces` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// MAC address, lower-case and colon-separated; empty when the interface has none.
    pub hw: String,
    /// IPv4 addresses as dotted quads, without prefix length.
    pub inet: Vec<String>,
    /// IPv6 addresses, without prefix length or scope.
    pub inet6: Vec<String>,
}

/// The MAC the kernel shows for interfaces without a hardware address (loopback, bridges
/// before their first port, ...).
const ZERO_MAC: &str = "00:00:00:00:00:00";

/// The content of a `sys/class/net/<if>/address` file as oVirt wants it: trimmed and
/// lower-cased, with the all-zero address mapped to "".
fn normalize_mac(text: &str) -> String {
    let mac = text.trim().to_ascii_lowercase();
    if mac == ZERO_MAC { String::new() } else { mac }
}

/// The interfaces under `sys/class/net`, sorted by name, each with its MAC address ("" when
/// the address file is missing, empty or unreadable, e.g. for tun or WireGuard devices).
/// Plain files in that directory (such as `bonding_masters`) are not interfaces and are
/// skipped. A missing `sys/class/net` gives an empty list.
pub fn read_interface_names(root: &Path) -> Result<Vec<(String, String)>, Error> {
    let dir = under(root, "sys/class/net");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        // `is_dir` follows the symlinks sysfs uses for interfaces.
        if entry.path().is_dir() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let hw = match read_text_opt(root, &format!("sys/class/net/{name}/address")) {
                Ok(text) => text.as_deref().map(normalize_mac).unwrap_or_default(),
                Err(e) => {
                    log::debug!("{e}");
                    String::new()
                }
            };
            (name, hw)
        })
        .collect())
}

/// Joins interface names and MACs (`names`, in the order given) with their addresses. Names
/// in `ignored` are dropped, and so are addresses of interfaces not in `names`. Addresses keep
/// the order of `addrs`.
pub fn interfaces(
    names: Vec<(String, String)>,
    addrs: &[InterfaceAddress],
    ignored: &[String],
) -> Vec<Interface> {
    let ignored: HashSet<&str> = ignored.iter().map(String::as_str).collect();
    let mut out: Vec<Interface> = names
        .into_iter()
        .filter(|(name, _)| !ignored.contains(name.as_str()))
        .map(|(name, hw)| Interface {
            name,
            hw,
            inet: Vec::new(),
            inet6: Vec::new(),
        })
        .collect();
    let index: HashMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, iface)| (iface.name.clone(), i))
        .collect();
    for a in addrs {
        let Some(iface) = index.get(&a.name).and_then(|&i| out.get_mut(i)) else {
            continue;
        };
        match a.addr {
            IpAddr::V4(v4) => iface.inet.push(v4.to_string()),
            IpAddr::V6(v6) => iface.inet6.push(v6.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr(name: &str, addr: IpAddr) -> InterfaceAddress {
        InterfaceAddress {
            name: name.to_string(),
            addr,
        }
    }

    fn names(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, h)| (n.to_string(), h.to_string()))
            .collect()
    }

    #[test]
    fn normalize_mac_trims_lowercases_and_drops_zero() {
        assert_eq!(normalize_mac("52:54:00:AB:cd:EF\n"), "52:54:00:ab:cd:ef");
        assert_eq!(normalize_mac("00:00:00:00:00:00\n"), "");
        assert_eq!(normalize_mac("\n"), "");
    }

    #[test]
    fn interfaces_attach_addresses_by_name_in_order() {
        let v6: Ipv6Addr = "fe80::5054:ff:feab:cdef".parse().unwrap();
        let addrs = [
            addr("eth0", IpAddr::V4(Ipv4Addr::new(192, 168, 122, 10))),
            addr("lo", IpAddr::V4(Ipv4Addr::LOCALHOST)),
            addr("eth0", IpAddr::V6(v6)),
            addr("eth0", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5))),
            addr("gone0", IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9))),
            addr("docker0", IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1))),
        ];
        let got = interfaces(
            names(&[
                ("docker0", "02:42:ac:11:00:01"),
                ("eth0", "52:54:00:ab:cd:ef"),
                ("wg0", ""),
            ]),
            &addrs,
            &["docker0".to_string()],
        );
        assert_eq!(
            got,
            vec![
                Interface {
                    name: "eth0".into(),
                    hw: "52:54:00:ab:cd:ef".into(),
                    inet: vec!["192.168.122.10".into(), "10.0.0.5".into()],
                    inet6: vec!["fe80::5054:ff:feab:cdef".into()],
                },
                Interface {
                    name: "wg0".into(),
                    hw: String::new(),
                    inet: vec![],
                    inet6: vec![],
                },
            ]
        );
    }

    #[test]
    fn interfaces_with_nothing() {
        assert!(interfaces(Vec::new(), &[], &[]).is_empty());
    }

    #[test]
    fn read_interface_names_from_fixture() {
        let got = read_interface_names(&fixtures().join("net-basic")).unwrap();
        assert_eq!(
            got,
            names(&[
                ("eth0", "52:54:00:ab:cd:ef"),
                ("lo", ""),
                ("tun0", ""),
                ("wg0", ""),
            ])
        );
    }

    #[test]
    fn read_interface_names_without_sys_class_net() {
        let got = read_interface_names(&fixtures().join("no-such-root")).unwrap();
        assert!(got.is_empty());
    }
}
