// SPDX-License-Identifier: Apache-2.0
//! QGA commands about the network (`qga-protocol.md` §2.2): interfaces with their MAC,
//! addresses and counters, and the IPv4 and IPv6 routing tables.
//!
//! Interface replies differ from qemu-ga on purpose in two ways:
//! - `ip-addresses` is always present, an empty array for an interface without addresses
//!   (qemu-ga leaves it out, and naive clients crash on the missing key); `hardware-address`
//!   is left out only when the interface has none (tun, WireGuard), and is lowercase
//!   `aa:bb:cc:dd:ee:ff` otherwise.
//! - An address carrying a label (`eth0:1`) is reported under its interface (`eth0`), not
//!   as an entry of its own that repeats the MAC (libvirt folds labels the same way).
//!
//! The interface list comes from `sys/class/net` under the root, the addresses from one
//! getifaddrs(3) call, the counters from one read of `proc/net/dev` parsed once into a map:
//! the work is linear in the number of interfaces.

use serde_json::{Map, Value, json};

use super::commands::{Answer, Command, Ctx};
use super::wire::{Args, Error};
use crate::facts::{net, route};
use crate::sys;

/// The commands of this module.
pub const COMMANDS: &[Command] = &[
    Command::new("guest-network-get-interfaces", &[], get_interfaces),
    Command::new("guest-network-get-route", &[], get_route),
];

fn get_interfaces(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let root = &cx.svc.cfg.root;
    let ifaces = match net::read_interfaces(root) {
        Ok(i) => i,
        Err(e) => return Answer::Fail(Error::generic(e.to_string())),
    };
    let mut addrs = match sys::interface_addresses() {
        Ok(a) => a,
        Err(e) => return Answer::Fail(Error::generic(format!("getifaddrs: {e}"))),
    };
    for a in &mut addrs {
        let base = net::label_interface(&a.name).len();
        a.name.truncate(base);
    }
    let counters = match net::read_net_dev(root) {
        Ok(c) => c,
        Err(e) => {
            // Counters are optional members; the interfaces are still worth reporting.
            log::debug!("{e}");
            Default::default()
        }
    };
    // QGA reports every interface: the oVirt `ignored-nics` list is not applied.
    let list: Vec<Value> = net::attach_addresses(ifaces, &addrs, &[])
        .into_iter()
        .map(|iface| {
            let mut o = Map::new();
            o.insert("name".into(), Value::from(iface.name.as_str()));
            if let Some(mac) = iface.mac {
                o.insert("hardware-address".into(), Value::from(mac));
            }
            let ips: Vec<Value> = iface
                .addresses
                .iter()
                .map(|a| {
                    let kind = if a.addr.is_ipv4() { "ipv4" } else { "ipv6" };
                    json!({
                        "ip-address": a.addr.to_string(),
                        "ip-address-type": kind,
                        "prefix": a.prefix,
                    })
                })
                .collect();
            o.insert("ip-addresses".into(), Value::Array(ips));
            if let Some(s) = counters.get(&iface.name) {
                o.insert(
                    "statistics".into(),
                    json!({
                        "rx-bytes": s.rx_bytes,
                        "rx-packets": s.rx_packets,
                        "rx-errs": s.rx_errs,
                        "rx-dropped": s.rx_dropped,
                        "tx-bytes": s.tx_bytes,
                        "tx-packets": s.tx_packets,
                        "tx-errs": s.tx_errs,
                        "tx-dropped": s.tx_dropped,
                    }),
                );
            }
            Value::Object(o)
        })
        .collect();
    Answer::Return(Value::Array(list))
}

/// IPv4 routes, then IPv6 routes. Without `proc/net/ipv6_route` (IPv6 disabled) the IPv4
/// routes are the answer, not an error; without `proc/net/route` the command fails.
fn get_route(cx: &mut Ctx<'_>, _: &Args<'_>) -> Answer {
    let (v4, v6) = match route::read_routes(&cx.svc.cfg.root) {
        Ok(r) => r,
        Err(e) => return Answer::Fail(Error::generic(e.to_string())),
    };
    let mut list: Vec<Value> = Vec::with_capacity(v4.len() + v6.len());
    list.extend(v4.into_iter().map(|r| {
        json!({
            "iface": r.iface,
            "destination": r.destination.to_string(),
            "gateway": r.gateway.to_string(),
            "mask": r.mask.to_string(),
            "metric": r.metric,
            "flags": r.flags,
            "refcnt": r.refcnt,
            "use": r.use_count,
            "mtu": r.mtu,
            "window": r.window,
            "irtt": r.irtt,
            "version": 4,
        })
    }));
    list.extend(v6.into_iter().map(|r| {
        json!({
            "iface": r.iface,
            "destination": r.destination.to_string(),
            "desprefixlen": r.dest_prefix.to_string(),
            "source": r.source.to_string(),
            "srcprefixlen": r.source_prefix.to_string(),
            "nexthop": r.nexthop.to_string(),
            "metric": r.metric,
            "flags": r.flags,
            "refcnt": r.refcnt,
            "use": r.use_count,
            "version": 6,
        })
    }));
    Answer::Return(Value::Array(list))
}
