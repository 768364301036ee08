// SPDX-License-Identifier: Apache-2.0
//! Routing tables: IPv4 routes from `/proc/net/route` and IPv6 routes from
//! `/proc/net/ipv6_route`, parsed into typed entries with addresses as text.
//!
//! Unlike qemu-ga, the IPv6 `metric`, `refcnt`, `use` and `flags` columns are read as
//! unsigned 32-bit numbers (a metric of `ffffffff` is 4294967295, not -1), and a missing
//! `ipv6_route` (a kernel booted with `ipv6.disable=1`) leaves the IPv4 routes intact.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::{Error, read_text, read_text_opt};

/// Most routes read from one table; a guest with more is not a guest this agent serves.
pub const MAX_ROUTES: usize = 65536;

/// One IPv4 route (a `/proc/net/route` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route4 {
    /// Interface name.
    pub iface: String,
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Gateway (`0.0.0.0` for a directly connected network).
    pub gateway: Ipv4Addr,
    /// Netmask of the destination.
    pub mask: Ipv4Addr,
    /// `RTF_*` flags (the column is hexadecimal).
    pub flags: u32,
    /// Reference count (`RefCnt`).
    pub refcnt: u32,
    /// Lookups (`Use`).
    pub use_count: u32,
    /// Route metric.
    pub metric: u32,
    /// Path MTU advertised for TCP (`MTU`; 0 is the default).
    pub mtu: u32,
    /// TCP window clamp (`Window`).
    pub window: u32,
    /// Initial round-trip time (`IRTT`).
    pub irtt: u32,
}

/// One IPv6 route (a `/proc/net/ipv6_route` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route6 {
    /// Interface name.
    pub iface: String,
    /// Destination network.
    pub destination: Ipv6Addr,
    /// Prefix length of the destination.
    pub dest_prefix: u8,
    /// Source network (source routing; `::` when unused).
    pub source: Ipv6Addr,
    /// Prefix length of the source.
    pub source_prefix: u8,
    /// Next hop (`::` for a directly connected network).
    pub nexthop: Ipv6Addr,
    /// Route metric.
    pub metric: u32,
    /// Reference count.
    pub refcnt: u32,
    /// Lookups.
    pub use_count: u32,
    /// `RTF_*` flags.
    pub flags: u32,
}

/// An IPv4 address as `/proc/net/route` writes it: the 32-bit value in host (little-endian)
/// byte order, as 8 hex digits, so `010200C0` is 192.0.2.1.
pub fn parse_hex_ipv4(hex: &str) -> Option<Ipv4Addr> {
    if hex.len() != 8 {
        return None;
    }
    let n = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(n.to_le_bytes()))
}

/// An IPv6 address as `/proc/net/ipv6_route` writes it: 32 hex digits in network order.
pub fn parse_hex_ipv6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    u128::from_str_radix(hex, 16).ok().map(Ipv6Addr::from)
}

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// Parses `/proc/net/route` text: the header line is skipped, and so are malformed lines.
pub fn parse_route(text: &str) -> Vec<Route4> {
    text.lines()
        .skip(1)
        .filter_map(parse_route_line)
        .take(MAX_ROUTES)
        .collect()
}

/// `Iface Destination Gateway Flags RefCnt Use Metric Mask MTU Window IRTT`: addresses and
/// flags in hex, the counters in decimal (the kernel's `%X`/`%d` format).
fn parse_route_line(line: &str) -> Option<Route4> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [
        iface,
        dest,
        gw,
        flags,
        refcnt,
        use_count,
        metric,
        mask,
        mtu,
        window,
        irtt,
    ] = f.as_slice()
    else {
        return None;
    };
    Some(Route4 {
        iface: (*iface).to_owned(),
        destination: parse_hex_ipv4(dest)?,
        gateway: parse_hex_ipv4(gw)?,
        mask: parse_hex_ipv4(mask)?,
        flags: hex_u32(flags)?,
        refcnt: refcnt.parse().ok()?,
        use_count: use_count.parse().ok()?,
        metric: metric.parse().ok()?,
        mtu: mtu.parse().ok()?,
        window: window.parse().ok()?,
        irtt: irtt.parse().ok()?,
    })
}

/// Parses `/proc/net/ipv6_route` text (no header); malformed lines are skipped.
pub fn parse_ipv6_route(text: &str) -> Vec<Route6> {
    text.lines()
        .filter_map(parse_ipv6_route_line)
        .take(MAX_ROUTES)
        .collect()
}

/// `dest dest_plen src src_plen nexthop metric refcnt use flags iface`, every number in hex.
fn parse_ipv6_route_line(line: &str) -> Option<Route6> {
    let f: Vec<&str> = line.split_whitespace().collect();
    let [
        dest,
        dplen,
        src,
        splen,
        nexthop,
        metric,
        refcnt,
        use_count,
        flags,
        iface,
    ] = f.as_slice()
    else {
        return None;
    };
    Some(Route6 {
        iface: (*iface).to_owned(),
        destination: parse_hex_ipv6(dest)?,
        dest_prefix: u8::from_str_radix(dplen, 16).ok()?,
        source: parse_hex_ipv6(src)?,
        source_prefix: u8::from_str_radix(splen, 16).ok()?,
        nexthop: parse_hex_ipv6(nexthop)?,
        metric: hex_u32(metric)?,
        refcnt: hex_u32(refcnt)?,
        use_count: hex_u32(use_count)?,
        flags: hex_u32(flags)?,
    })
}

/// The routes under `root`: `proc/net/route` must be readable; a missing
/// `proc/net/ipv6_route` (IPv6 disabled) gives no IPv6 routes and no error.
pub fn read_routes(root: &Path) -> Result<(Vec<Route4>, Vec<Route6>), Error> {
    let v4 = parse_route(&read_text(root, "proc/net/route")?);
    let v6 = read_text_opt(root, "proc/net/ipv6_route")?
        .map(|t| parse_ipv6_route(&t))
        .unwrap_or_default();
    Ok((v4, v6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    #[test]
    fn ipv4_hex_is_little_endian() {
        assert_eq!(
            parse_hex_ipv4("010200C0"),
            Some(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_eq!(
            parse_hex_ipv4("00FFFFFF"),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(parse_hex_ipv4("00000000"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(parse_hex_ipv4("0102"), None);
        assert_eq!(parse_hex_ipv4("0102000G"), None);
    }

    #[test]
    fn ipv4_routes_skip_the_header_and_bad_lines() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t010200C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                    eth0\t000200C0\t00000000\t0001\t2\t7\t4294967295\t00FFFFFF\t1500\t0\t3\n\
                    bad line\n\
                    eth1\tXYZ\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        let got = parse_route(text);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Route4 {
                iface: "eth0".into(),
                destination: Ipv4Addr::UNSPECIFIED,
                gateway: Ipv4Addr::new(192, 0, 2, 1),
                mask: Ipv4Addr::UNSPECIFIED,
                flags: 3,
                refcnt: 0,
                use_count: 0,
                metric: 100,
                mtu: 0,
                window: 0,
                irtt: 0,
            }
        );
        assert_eq!(got[1].destination, Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(got[1].mask, Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!((got[1].refcnt, got[1].use_count), (2, 7));
        assert_eq!(got[1].metric, u32::MAX);
        assert_eq!((got[1].mtu, got[1].irtt), (1500, 3));
    }

    #[test]
    fn ipv6_routes_are_hex_and_unsigned() {
        let text = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000002 00000000 00000003     eth0\n\
                    00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 80200200       lo\n\
                    truncated 40\n";
        let got = parse_ipv6_route(text);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].destination, "fd00::".parse::<Ipv6Addr>().unwrap());
        assert_eq!(got[0].dest_prefix, 64);
        assert_eq!(got[0].metric, 256);
        assert_eq!(got[1].nexthop, "fd00::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(got[1].metric, 1024);
        assert_eq!(got[2].metric, 4_294_967_295);
        assert_eq!(got[2].flags, 0x8020_0200);
        assert_eq!(got[2].iface, "lo");
    }

    #[test]
    fn missing_ipv6_route_keeps_the_ipv4_routes() {
        let (v4, v6) = read_routes(&fixtures().join("qga-noipv6")).unwrap();
        assert_eq!(v4.len(), 2);
        assert!(v6.is_empty());
        let (v4, v6) = read_routes(&fixtures().join("qga-info")).unwrap();
        assert_eq!((v4.len(), v6.len()), (2, 3));
        assert!(read_routes(&fixtures().join("no-such-root")).is_err());
    }
}
