// SPDX-License-Identifier: Apache-2.0
//! Network interfaces: names, MAC addresses and flags from `sys/class/net`, joined with the
//! addresses and prefix lengths getifaddrs(3) reports; traffic counters from `/proc/net/dev`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::path::Path;

use super::{Error, read_text, read_text_opt, under};
use crate::sys::InterfaceAddress;

/// `IFF_UP` in `sys/class/net/<if>/flags`: the interface is administratively up.
pub const IFF_UP: u32 = 0x1;
/// `IFF_LOOPBACK` in `sys/class/net/<if>/flags`.
pub const IFF_LOOPBACK: u32 = 0x8;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    /// The address; its variant is the family (IPv6 addresses carry no scope).
    pub addr: IpAddr,
    /// Prefix length of the netmask: 0..=32 for IPv4, 0..=128 for IPv6.
    pub prefix: u8,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// MAC address as the kernel shows it, lower-cased and colon-separated (all zeros for
    /// loopback); `None` when the interface has none (no, empty or unreadable address file,
    /// e.g. tun or WireGuard devices).
    pub mac: Option<String>,
    /// `IFF_UP` is set (false when the flags file is missing or unreadable).
    pub up: bool,
    /// `IFF_LOOPBACK` is set (false when the flags file is missing or unreadable).
    pub loopback: bool,
    /// Addresses, in the order getifaddrs(3) lists them.
    pub addresses: Vec<Address>,
}

/// The content of a `sys/class/net/<if>/address` file: trimmed and lower-cased, `None` when
/// empty.
pub fn parse_mac(text: &str) -> Option<String> {
    let mac = text.trim().to_ascii_lowercase();
    (!mac.is_empty()).then_some(mac)
}

/// The content of a `sys/class/net/<if>/flags` file: a hexadecimal number such as `0x1003`
/// (the `0x` is optional). `None` when malformed.
pub fn parse_flags(text: &str) -> Option<u32> {
    let text = text.trim();
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    u32::from_str_radix(digits, 16).ok()
}

/// Reads an optional per-interface file; unreadable counts as missing (logged at debug).
fn read_if_file(root: &Path, name: &str, file: &str) -> Option<String> {
    match read_text_opt(root, &format!("sys/class/net/{name}/{file}")) {
        Ok(text) => text,
        Err(e) => {
            log::debug!("{e}");
            None
        }
    }
}

/// The interfaces under `sys/class/net`, sorted by name, with MAC and flags and no addresses
/// yet. Plain files in that directory (such as `bonding_masters`) are not interfaces and are
/// skipped. A missing `sys/class/net` gives an empty list.
pub fn read_interfaces(root: &Path) -> Result<Vec<Interface>, Error> {
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
            let mac = read_if_file(root, &name, "address").and_then(|t| parse_mac(&t));
            let flags = read_if_file(root, &name, "flags")
                .and_then(|t| parse_flags(&t))
                .unwrap_or(0);
            Interface {
                name,
                mac,
                up: flags & IFF_UP != 0,
                loopback: flags & IFF_LOOPBACK != 0,
                addresses: Vec::new(),
            }
        })
        .collect())
}

/// Joins `ifaces` (in the order given) with their addresses. Interfaces named in `ignored`
/// are dropped, and so are addresses of interfaces not in `ifaces`. Addresses keep the order
/// of `addrs`.
pub fn attach_addresses(
    ifaces: Vec<Interface>,
    addrs: &[InterfaceAddress],
    ignored: &[String],
) -> Vec<Interface> {
    let ignored: HashSet<&str> = ignored.iter().map(String::as_str).collect();
    let mut out: Vec<Interface> = ifaces
        .into_iter()
        .filter(|i| !ignored.contains(i.name.as_str()))
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
        iface.addresses.push(Address {
            addr: a.addr,
            prefix: a.prefix,
        });
    }
    out
}

/// The interfaces the oVirt reference agent reports (python-ethtool, §6.2): those that are up
/// and not loopback, minus those named in `ignored`, in the order given.
pub fn up_non_loopback(ifaces: Vec<Interface>, ignored: &[String]) -> Vec<Interface> {
    ifaces
        .into_iter()
        .filter(|i| i.up && !i.loopback && !ignored.contains(&i.name))
        .collect()
}

/// Traffic counters of one interface, from `/proc/net/dev`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetDevStats {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errs: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errs: u64,
    /// Packets dropped on sending.
    pub tx_dropped: u64,
}

/// Most interfaces read from `/proc/net/dev`.
pub const MAX_NET_DEV: usize = 65536;

/// Parses `/proc/net/dev` once into a map by interface name: after the two header lines,
/// each line is `name: rx_bytes rx_packets rx_errs rx_drop fifo frame compressed multicast
/// tx_bytes tx_packets tx_errs tx_drop ...`. Malformed lines are skipped.
pub fn parse_net_dev(text: &str) -> HashMap<String, NetDevStats> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let n: Vec<u64> = rest
                .split_whitespace()
                .take(16)
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            let &[
                rx_bytes,
                rx_packets,
                rx_errs,
                rx_dropped,
                _,
                _,
                _,
                _,
                tx_bytes,
                tx_packets,
                tx_errs,
                tx_dropped,
                ..,
            ] = n.as_slice()
            else {
                return None;
            };
            let stats = NetDevStats {
                rx_bytes,
                rx_packets,
                rx_errs,
                rx_dropped,
                tx_bytes,
                tx_packets,
                tx_errs,
                tx_dropped,
            };
            Some((name.trim().to_owned(), stats))
        })
        .take(MAX_NET_DEV)
        .collect()
}

/// Reads `proc/net/dev` under `root` (see `parse_net_dev`).
pub fn read_net_dev(root: &Path) -> Result<HashMap<String, NetDevStats>, Error> {
    Ok(parse_net_dev(&read_text(root, "proc/net/dev")?))
}

/// The interface an address belongs to: getifaddrs(3) names IPv4 addresses that carry a
/// label by the label (`eth0:1`), and the label's prefix before `:` is the interface.
pub fn label_interface(name: &str) -> &str {
    name.split_once(':').map_or(name, |(base, _)| base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn addr(name: &str, addr: IpAddr, prefix: u8) -> InterfaceAddress {
        InterfaceAddress {
            name: name.to_string(),
            addr,
            prefix,
        }
    }

    fn iface(name: &str, mac: Option<&str>, up: bool, loopback: bool) -> Interface {
        Interface {
            name: name.into(),
            mac: mac.map(str::to_owned),
            up,
            loopback,
            addresses: Vec::new(),
        }
    }

    #[test]
    fn parse_mac_trims_and_lowercases() {
        assert_eq!(
            parse_mac("52:54:00:AB:cd:EF\n").as_deref(),
            Some("52:54:00:ab:cd:ef")
        );
        assert_eq!(
            parse_mac("00:00:00:00:00:00\n").as_deref(),
            Some("00:00:00:00:00:00")
        );
        assert_eq!(parse_mac("\n"), None);
        assert_eq!(parse_mac(""), None);
    }

    #[test]
    fn parse_flags_hex() {
        assert_eq!(parse_flags("0x1003\n"), Some(0x1003));
        assert_eq!(parse_flags("0x9"), Some(IFF_UP | IFF_LOOPBACK));
        assert_eq!(parse_flags("1043"), Some(0x1043));
        assert_eq!(parse_flags("0x"), None);
        assert_eq!(parse_flags("up"), None);
        assert_eq!(parse_flags(""), None);
    }

    #[test]
    fn attach_addresses_by_name_in_order() {
        let v6: Ipv6Addr = "fe80::5054:ff:feab:cdef".parse().unwrap();
        let addrs = [
            addr("eth0", IpAddr::V4(Ipv4Addr::new(192, 168, 122, 10)), 24),
            addr("lo", IpAddr::V4(Ipv4Addr::LOCALHOST), 8),
            addr("eth0", IpAddr::V6(v6), 64),
            addr("eth0", IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)), 8),
            addr("gone0", IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 8),
            addr("docker0", IpAddr::V4(Ipv4Addr::new(172, 17, 0, 1)), 16),
        ];
        let got = attach_addresses(
            vec![
                iface("docker0", Some("02:42:ac:11:00:01"), true, false),
                iface("eth0", Some("52:54:00:ab:cd:ef"), true, false),
                iface("wg0", None, false, false),
            ],
            &addrs,
            &["docker0".to_string()],
        );
        let mut eth0 = iface("eth0", Some("52:54:00:ab:cd:ef"), true, false);
        eth0.addresses = vec![
            Address {
                addr: IpAddr::V4(Ipv4Addr::new(192, 168, 122, 10)),
                prefix: 24,
            },
            Address {
                addr: IpAddr::V6(v6),
                prefix: 64,
            },
            Address {
                addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)),
                prefix: 8,
            },
        ];
        assert_eq!(got, vec![eth0, iface("wg0", None, false, false)]);
    }

    #[test]
    fn attach_addresses_with_nothing() {
        assert!(attach_addresses(Vec::new(), &[], &[]).is_empty());
    }

    #[test]
    fn read_interfaces_from_fixture() {
        let got = read_interfaces(&fixtures().join("net-basic")).unwrap();
        assert_eq!(
            got,
            vec![
                // flags 0x1003: UP, BROADCAST, MULTICAST.
                iface("eth0", Some("52:54:00:ab:cd:ef"), true, false),
                // flags 0x9: UP, LOOPBACK.
                iface("lo", Some("00:00:00:00:00:00"), true, true),
                // No address and no flags file.
                iface("tun0", None, false, false),
                // Empty address file; flags 0x90: POINTOPOINT, NOARP, down.
                iface("wg0", None, false, false),
            ]
        );
    }

    #[test]
    fn only_interfaces_that_are_up_and_not_loopback_and_not_ignored_are_reported() {
        let all = read_interfaces(&fixtures().join("net-ovirt")).unwrap();
        let names = |l: &[Interface]| l.iter().map(|i| i.name.clone()).collect::<Vec<_>>();
        // eth1 is down (0x1002), tun1 has no flags file, lo is loopback.
        let got = up_non_loopback(all.clone(), &["docker0".to_string()]);
        assert_eq!(names(&got), ["eth0", "ib0", "wg0"]);
        assert_eq!(got[2].mac, None, "wg0 has no MAC");
        let got = up_non_loopback(all, &[]);
        assert_eq!(names(&got), ["docker0", "eth0", "ib0", "wg0"]);
    }

    #[test]
    fn read_interfaces_without_sys_class_net() {
        let got = read_interfaces(&fixtures().join("no-such-root")).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn net_dev_is_parsed_once_into_a_map() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n \
    lo:   31132     380    0    0    0     0          0         0    31132     380    0    0    0     0       0          0\n \
  eth0:1234567890 1000 1 2 0 0 0 5 987654 900 3 4 0 0 0 0\n \
  bad0: 1 2 3\n";
        let m = parse_net_dev(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["lo"].rx_bytes, 31132);
        assert_eq!(
            m["eth0"],
            NetDevStats {
                rx_bytes: 1234567890,
                rx_packets: 1000,
                rx_errs: 1,
                rx_dropped: 2,
                tx_bytes: 987654,
                tx_packets: 900,
                tx_errs: 3,
                tx_dropped: 4,
            }
        );
    }

    #[test]
    fn labels_name_their_interface() {
        assert_eq!(label_interface("eth0:1"), "eth0");
        assert_eq!(label_interface("eth0"), "eth0");
    }
}
