// SPDX-License-Identifier: Apache-2.0
//! Interface addresses and their prefix lengths from getifaddrs(3).

use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cvt;

/// One address of one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub name: String,
    pub addr: IpAddr,
    /// Prefix length of the netmask (e.g. 24 for 255.255.255.0).
    pub prefix: u8,
}

/// The prefix length of a netmask given as network-order bytes: the number of leading one
/// bits. Bits after the first zero are ignored (netmasks are contiguous).
pub fn prefix_len(mask: &[u8]) -> u8 {
    let mut bits = 0u32;
    for &b in mask {
        bits += b.leading_ones();
        if b != 0xff {
            break;
        }
    }
    u8::try_from(bits).unwrap_or(u8::MAX)
}

/// Every IPv4 and IPv6 address of every interface, in the order getifaddrs(3) lists them,
/// with the prefix length of its netmask (a missing netmask counts as a full-length prefix:
/// 32 or 128).
pub fn interface_addresses() -> io::Result<Vec<InterfaceAddress>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `head` is a valid out-pointer; on success the list is freed below with
    // freeifaddrs; the result is checked.
    cvt(unsafe { libc::getifaddrs(&mut head) })?;
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a non-null node of the list getifaddrs returned, which stays valid
        // until freeifaddrs below.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: `ifa_name` is a non-null, NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: `ifa_addr` is non-null and points at a sockaddr whose family field is valid.
        let family = libc::c_int::from(unsafe { (*ifa.ifa_addr).sa_family });
        let mask = ifa.ifa_netmask;
        let (addr, prefix) = match family {
            libc::AF_INET => {
                // SAFETY: the family is AF_INET, so the sockaddr is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                let prefix = if mask.is_null() {
                    32
                } else {
                    // SAFETY: a non-null netmask of an AF_INET address is a sockaddr_in too
                    // (getifaddrs fills it for the address's family); it lives in the list.
                    let m = unsafe { &*(mask as *const libc::sockaddr_in) };
                    prefix_len(&m.sin_addr.s_addr.to_ne_bytes())
                };
                let v4 = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                (IpAddr::V4(v4), prefix)
            }
            libc::AF_INET6 => {
                // SAFETY: the family is AF_INET6, so the sockaddr is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                let prefix = if mask.is_null() {
                    128
                } else {
                    // SAFETY: a non-null netmask of an AF_INET6 address is a sockaddr_in6 too
                    // (getifaddrs fills it for the address's family); it lives in the list.
                    let m = unsafe { &*(mask as *const libc::sockaddr_in6) };
                    prefix_len(&m.sin6_addr.s6_addr)
                };
                (IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)), prefix)
            }
            _ => continue,
        };
        out.push(InterfaceAddress { name, addr, prefix });
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once; no reference
    // into the list outlives this point (names were copied).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_has_127_0_0_1_slash_8() {
        let addrs = interface_addresses().unwrap();
        assert!(
            addrs.iter().any(|a| a.name == "lo"
                && a.addr == IpAddr::V4(Ipv4Addr::LOCALHOST)
                && a.prefix == 8),
            "{addrs:?}"
        );
    }

    #[test]
    fn ipv4_netmasks_to_prefix() {
        let v4 = |s: &str| prefix_len(&s.parse::<Ipv4Addr>().unwrap().octets());
        assert_eq!(v4("255.255.255.0"), 24);
        assert_eq!(v4("255.0.0.0"), 8);
        assert_eq!(v4("255.255.255.255"), 32);
        assert_eq!(v4("0.0.0.0"), 0);
        assert_eq!(v4("255.255.240.0"), 20);
        assert_eq!(v4("255.255.255.252"), 30);
        // Not contiguous: only the leading ones count.
        assert_eq!(v4("255.0.255.0"), 8);
    }

    #[test]
    fn ipv6_netmasks_to_prefix() {
        let v6 = |s: &str| prefix_len(&s.parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(v6("ffff:ffff:ffff:ffff::"), 64);
        assert_eq!(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 128);
        assert_eq!(v6("ffff:ffff:ffff:ff00::"), 56);
        assert_eq!(v6("fe00::"), 7);
        assert_eq!(v6("::"), 0);
        assert_eq!(prefix_len(&[]), 0);
    }
}
