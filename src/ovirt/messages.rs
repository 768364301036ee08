// SPDX-License-Identifier: Apache-2.0
//! The oVirt messages guestd sends, built from the protocol-neutral facts: each builder maps
//! a fact struct to the message's fields exactly as the reference agent names and computes
//! them (`shared/reference/ovirt-protocol.md` §2).

use serde_json::{Map, Value, json};

use super::wire::encode;
use crate::facts::containers::Container;
use crate::facts::disks::{DiskSerial, Filesystem};
use crate::facts::memory::MemoryStat;
use crate::facts::net::Interface;
use crate::facts::osinfo::OsInfo;
use crate::facts::timezone::TimeZone;

/// A message ready to queue: its name and arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub name: &'static str,
    pub args: Map<String, Value>,
}

impl Message {
    fn new(name: &'static str, args: Value) -> Message {
        let args = match args {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Message { name, args }
    }

    /// A message with no arguments, such as `session-startup`.
    pub fn bare(name: &'static str) -> Message {
        Message {
            name,
            args: Map::new(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        encode(self.name, &self.args)
    }
}

/// `heartbeat`: free RAM in MiB as a string, the eleven memory-stat fields, and the API version
/// the agent advertises.
/// The `heartbeat` as a message tree: the reference `encode_heartbeat` is checked against.
#[cfg(test)]
pub fn heartbeat(free_ram_mib: u64, stat: &MemoryStat, api_version: u32) -> Message {
    Message::new(
        "heartbeat",
        json!({
            "free-ram": free_ram_mib.to_string(),
            "memory-stat": {
                "mem_total": stat.mem_total,
                "mem_unused": stat.mem_unused,
                "mem_free": stat.mem_free,
                "mem_buffers": stat.mem_buffers,
                "mem_cached": stat.mem_cached,
                "swap_total": stat.swap_total,
                "swap_usage": stat.swap_usage,
                "swap_in": stat.swap_in,
                "swap_out": stat.swap_out,
                "pageflt": stat.pageflt,
                "majflt": stat.majflt,
            },
            "apiVersion": api_version,
        }),
    )
}

/// Appends the decimal digits of `n`.
fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        // `n % 10` is below 10: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let d = (n % 10) as u8;
        digits[i] = b'0' + d;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// The `heartbeat` line, written straight into `buf`: the same bytes as
/// `heartbeat(..).encode()` (keys in sorted order, no string to escape), without building a
/// JSON tree on every tick.
pub fn encode_heartbeat(buf: &mut Vec<u8>, free_ram_mib: u64, stat: &MemoryStat, api_version: u32) {
    buf.extend_from_slice(b"{\"__name__\":\"heartbeat\",\"apiVersion\":");
    push_u64(buf, u64::from(api_version));
    buf.extend_from_slice(b",\"free-ram\":\"");
    push_u64(buf, free_ram_mib);
    buf.extend_from_slice(b"\",\"memory-stat\":{");
    let fields: [(&[u8], u64); 11] = [
        (b"majflt", stat.majflt),
        (b"mem_buffers", stat.mem_buffers),
        (b"mem_cached", stat.mem_cached),
        (b"mem_free", stat.mem_free),
        (b"mem_total", stat.mem_total),
        (b"mem_unused", stat.mem_unused),
        (b"pageflt", stat.pageflt),
        (b"swap_in", stat.swap_in),
        (b"swap_out", stat.swap_out),
        (b"swap_total", stat.swap_total),
        (b"swap_usage", stat.swap_usage),
    ];
    for (i, (key, value)) in fields.into_iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.push(b'"');
        buf.extend_from_slice(key);
        buf.extend_from_slice(b"\":");
        push_u64(buf, value);
    }
    buf.extend_from_slice(b"}}\n");
}

pub fn host_name(name: &str) -> Message {
    Message::new("host-name", json!({ "name": name }))
}

pub fn os_version(version: &str) -> Message {
    Message::new("os-version", json!({ "version": version }))
}

pub fn fqdn(fqdn: &str) -> Message {
    Message::new("fqdn", json!({ "fqdn": fqdn }))
}

pub fn active_user(name: &str) -> Message {
    Message::new("active-user", json!({ "name": name }))
}

/// The `active-user` name for the logged-in `users`: the first of them in sort order, or the
/// literal `"None"` when nobody is logged in.
pub fn active_user_name(users: &[String]) -> String {
    users
        .iter()
        .min()
        .cloned()
        .unwrap_or_else(|| "None".to_string())
}

pub fn applications(apps: &[String]) -> Message {
    Message::new("applications", json!({ "applications": apps }))
}

pub fn number_of_cpus(count: i64) -> Message {
    Message::new("number-of-cpus", json!({ "count": count }))
}

/// The `hw` the reference agent sends: python-ethtool's `get_hwaddr`, which formats the first
/// six bytes of `SIOCGIFHWADDR` as `xx:xx:xx:xx:xx:xx`. The kernel fills what the interface's
/// address does not (none for tun or WireGuard devices) with zeros, so an interface without
/// a MAC is `00:00:00:00:00:00`, and a longer address (InfiniBand) is cut to six bytes.
pub fn ovirt_hw(mac: Option<&str>) -> String {
    let mut octets = mac
        .unwrap_or_default()
        .split(':')
        .filter(|o| !o.is_empty())
        .map(|o| u8::from_str_radix(o, 16).unwrap_or(0));
    let six: Vec<String> = (0..6)
        .map(|_| format!("{:02x}", octets.next().unwrap_or(0)))
        .collect();
    six.join(":")
}

/// `network-interfaces`: per interface its name, `hw` (`ovirt_hw`), and its IPv4 (`inet`)
/// and IPv6 (`inet6`) addresses without prefix length, in getifaddrs order.
pub fn network_interfaces(ifaces: &[Interface]) -> Message {
    let list: Vec<Value> = ifaces
        .iter()
        .map(|i| {
            let hw = ovirt_hw(i.mac.as_deref());
            let of = |v6: bool| -> Vec<String> {
                i.addresses
                    .iter()
                    .filter(|a| a.addr.is_ipv6() == v6)
                    .map(|a| a.addr.to_string())
                    .collect()
            };
            json!({ "name": i.name, "hw": hw, "inet": of(false), "inet6": of(true) })
        })
        .collect();
    Message::new("network-interfaces", json!({ "interfaces": list }))
}

/// `containers`: the reference's helper keeps `Id`, `Names`, `Image`, `Command` and `Status`
/// of Docker's list, renamed to lower case; an empty list without a container engine.
pub fn containers(list: &[Container]) -> Message {
    let list: Vec<Value> = list
        .iter()
        .map(|c| {
            json!({"id": c.id, "names": c.names, "image": c.image, "command": c.command,
                "status": c.status})
        })
        .collect();
    Message::new("containers", json!({ "list": list }))
}

/// `disks-usage`: the measured file systems (`path`, `fs`, `total` and `used` bytes) and the
/// `{serial: {name: device}}` mapping.
pub fn disks_usage(filesystems: &[Filesystem], serials: &[DiskSerial]) -> Message {
    let list: Vec<Value> = filesystems
        .iter()
        .map(
            |f| json!({ "path": f.mount_point, "fs": f.fs_type, "total": f.total, "used": f.used }),
        )
        .collect();
    let mut map = Map::new();
    for d in serials {
        map.insert(d.serial.clone(), json!({ "name": d.device }));
    }
    Message::new("disks-usage", json!({ "disks": list, "mapping": map }))
}

/// `os-info`, as the reference agent computes it: `distribution` is `NAME` (else `ID`, else
/// `Linux`); `version` is `VERSION_ID` (else empty); `codename` is `VERSION_CODENAME`, else
/// the text in parentheses in `VERSION` (`9 (stretch)` gives `stretch`), else empty; `arch` is
/// the machine with `i386`..`i686` mapped to `x86`; `kernel` is the kernel release; `type`
/// is always `linux`.
pub fn os_info(info: &OsInfo) -> Message {
    let rel = &info.release;
    let distribution = rel.name.as_deref().or(rel.id.as_deref()).unwrap_or("Linux");
    let codename = rel
        .version_codename
        .as_deref()
        .or_else(|| rel.version.as_deref().and_then(parenthesized))
        .unwrap_or("");
    Message::new(
        "os-info",
        json!({
            "version": rel.version_id.as_deref().unwrap_or(""),
            "distribution": distribution,
            "codename": codename,
            "arch": map_arch(&info.machine),
            "type": "linux",
            "kernel": info.kernel_release,
        }),
    )
}

/// Maps `uname -m` to the `os-info` `arch` value: `i386`..`i686` become `x86`, others are kept.
fn map_arch(machine: &str) -> &str {
    match machine {
        "i386" | "i486" | "i586" | "i686" => "x86",
        other => other,
    }
}

/// The trimmed text between the first `(` and the next `)`, if non-empty.
fn parenthesized(text: &str) -> Option<&str> {
    let (_, after) = text.split_once('(')?;
    let (inner, _) = after.split_once(')')?;
    Some(inner.trim()).filter(|s| !s.is_empty())
}

pub fn timezone(tz: &TimeZone) -> Message {
    Message::new("timezone", json!({ "zone": tz.zone, "offset": tz.offset }))
}

/// `echo`: the command's own arguments, sent back.
pub fn echo(args: Map<String, Value>) -> Message {
    Message { name: "echo", args }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{self, disks, net, osinfo, users};
    use std::net::IpAddr;

    fn line(msg: &Message) -> String {
        String::from_utf8(msg.encode()).unwrap()
    }

    #[test]
    fn heartbeat_has_the_reference_fields_and_types() {
        let stat = MemoryStat {
            mem_total: 1000,
            mem_unused: 100,
            mem_free: 300,
            mem_buffers: 50,
            mem_cached: 150,
            swap_total: 10,
            swap_usage: 1,
            swap_in: 2,
            swap_out: 3,
            pageflt: 4,
            majflt: 5,
        };
        let line = heartbeat(2, &stat, 3).encode();
        let v: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["__name__"], "heartbeat");
        assert_eq!(v["free-ram"], "2");
        assert_eq!(v["apiVersion"], 3);
        let ms = v["memory-stat"].as_object().unwrap();
        assert_eq!(ms.len(), 11);
        assert_eq!(ms["mem_total"], 1000);
        assert_eq!(ms["majflt"], 5);
    }

    #[test]
    fn the_heartbeat_is_written_byte_for_byte_as_its_tree_encodes() {
        let big = MemoryStat {
            mem_total: u64::MAX,
            mem_unused: 9,
            mem_free: 10,
            mem_buffers: 1_000_000_007,
            mem_cached: 42,
            swap_total: 18_446_744_073_709_551,
            swap_usage: 1,
            swap_in: 100,
            swap_out: 99,
            pageflt: 12_345,
            majflt: 7,
        };
        for (free, stat, api) in [
            (0, MemoryStat::default(), 0),
            (3125, big, 3),
            (u64::MAX, big, u32::MAX),
        ] {
            let mut line = Vec::new();
            encode_heartbeat(&mut line, free, &stat, api);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                String::from_utf8(heartbeat(free, &stat, api).encode()).unwrap()
            );
        }
    }

    fn iface(name: &str, mac: Option<&str>, addrs: &[(&str, u8)]) -> Interface {
        Interface {
            name: name.into(),
            mac: mac.map(str::to_owned),
            up: true,
            loopback: false,
            addresses: addrs
                .iter()
                .map(|&(a, prefix)| net::Address {
                    addr: a.parse::<IpAddr>().unwrap(),
                    prefix,
                })
                .collect(),
        }
    }

    #[test]
    fn network_interfaces_line_has_addresses_without_prefix() {
        let ifaces = [
            iface(
                "eth0",
                Some("52:54:00:ab:cd:ef"),
                &[
                    ("192.168.122.10", 24),
                    ("fe80::5054:ff:feab:cdef", 64),
                    ("10.0.0.5", 8),
                ],
            ),
            iface(
                "lo",
                Some("00:00:00:00:00:00"),
                &[("127.0.0.1", 8), ("::1", 128)],
            ),
            iface("wg0", None, &[]),
        ];
        assert_eq!(
            line(&network_interfaces(&ifaces)),
            concat!(
                r#"{"__name__":"network-interfaces","interfaces":["#,
                r#"{"hw":"52:54:00:ab:cd:ef","inet":["192.168.122.10","10.0.0.5"],"#,
                r#""inet6":["fe80::5054:ff:feab:cdef"],"name":"eth0"},"#,
                r#"{"hw":"00:00:00:00:00:00","inet":["127.0.0.1"],"inet6":["::1"],"name":"lo"},"#,
                r#"{"hw":"00:00:00:00:00:00","inet":[],"inet6":[],"name":"wg0"}]}"#,
                "\n"
            )
        );
        assert_eq!(
            line(&network_interfaces(&[])),
            "{\"__name__\":\"network-interfaces\",\"interfaces\":[]}\n"
        );
    }

    #[test]
    fn network_interfaces_from_fixture_as_the_reference_selects_them() {
        let root = facts::fixtures().join("net-ovirt");
        let read = net::read_interfaces(&root).unwrap();
        let list = net::up_non_loopback(read, &["docker0".to_string()]);
        let list = net::attach_addresses(list, &[], &[]);
        let v: Value = serde_json::from_slice(&network_interfaces(&list).encode()).unwrap();
        let empty: [&str; 0] = [];
        assert_eq!(
            v["interfaces"],
            json!([
                {"name": "eth0", "hw": "52:54:00:12:34:56", "inet": empty, "inet6": empty},
                // The first six bytes of a 20-byte InfiniBand address.
                {"name": "ib0", "hw": "80:00:02:08:fe:80", "inet": empty, "inet6": empty},
                // No MAC: zeros, as SIOCGIFHWADDR gives python-ethtool.
                {"name": "wg0", "hw": "00:00:00:00:00:00", "inet": empty, "inet6": empty},
            ])
        );
    }

    #[test]
    fn hw_is_six_octets_as_python_ethtool_formats_them() {
        assert_eq!(ovirt_hw(Some("52:54:00:AB:cd:ef")), "52:54:00:ab:cd:ef");
        assert_eq!(ovirt_hw(None), "00:00:00:00:00:00");
        assert_eq!(ovirt_hw(Some("")), "00:00:00:00:00:00");
        // An IPv4-in-IPv4 tunnel's 4-byte address, padded.
        assert_eq!(ovirt_hw(Some("0a:00:00:01")), "0a:00:00:01:00:00");
    }

    #[test]
    fn containers_line_has_the_five_docker_fields() {
        let c = Container {
            id: "d0c4e1".into(),
            names: vec!["/web".into()],
            image: "nginx:latest".into(),
            command: "nginx -g 'daemon off;'".into(),
            status: "Up 2 hours".into(),
            created: 5,
        };
        assert_eq!(
            line(&containers(&[c])),
            concat!(
                r#"{"__name__":"containers","list":[{"command":"nginx -g 'daemon off;'","#,
                r#""id":"d0c4e1","image":"nginx:latest","names":["/web"],"status":"Up 2 hours"}]}"#,
                "\n"
            )
        );
        assert_eq!(
            line(&containers(&[])),
            "{\"__name__\":\"containers\",\"list\":[]}\n"
        );
    }

    #[test]
    fn disks_usage_line() {
        let fs = disks::Filesystem {
            device: "/dev/vda1".into(),
            fs_type: "ext4".into(),
            mount_point: "/".into(),
            major_minor: Some((252, 1)),
            total: 4_096_000,
            used: 2_457_600,
            available: 1_228_800,
        };
        let serial = |serial: &str, device: &str| DiskSerial {
            serial: serial.into(),
            device: device.into(),
        };
        let msg = disks_usage(
            &[fs],
            &[
                serial("b3a1c2d4", "/dev/vda"),
                serial("S4EWNX0R123456", "/dev/nvme0n1"),
            ],
        );
        assert_eq!(
            line(&msg),
            concat!(
                r#"{"__name__":"disks-usage","disks":[{"fs":"ext4","path":"/","#,
                r#""total":4096000,"used":2457600}],"mapping":{"#,
                r#""S4EWNX0R123456":{"name":"/dev/nvme0n1"},"b3a1c2d4":{"name":"/dev/vda"}}}"#,
                "\n"
            )
        );
        assert_eq!(
            line(&disks_usage(&[], &[])),
            "{\"__name__\":\"disks-usage\",\"disks\":[],\"mapping\":{}}\n"
        );
    }

    fn os(pairs: &[(&str, &str)], machine: &str, kernel: &str) -> Message {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        os_info(&OsInfo {
            release: osinfo::OsRelease::from_pairs(&pairs),
            kernel_release: kernel.into(),
            kernel_version: "#1 SMP".into(),
            machine: machine.into(),
        })
    }

    #[test]
    fn os_info_from_full_release() {
        let rel = [
            ("NAME", "Debian GNU/Linux"),
            ("VERSION_ID", "12"),
            ("VERSION", "12 (bookworm)"),
            ("VERSION_CODENAME", "bookworm"),
            ("ID", "debian"),
        ];
        assert_eq!(
            line(&os(&rel, "x86_64", "6.1.0-18-amd64")),
            concat!(
                r#"{"__name__":"os-info","arch":"x86_64","codename":"bookworm","#,
                r#""distribution":"Debian GNU/Linux","kernel":"6.1.0-18-amd64","#,
                r#""type":"linux","version":"12"}"#,
                "\n"
            )
        );
    }

    #[test]
    fn os_info_fallbacks() {
        let m = os(
            &[("ID", "debian"), ("VERSION", "9 (stretch)")],
            "i686",
            "4.9.0",
        );
        assert_eq!(m.args["distribution"], "debian");
        assert_eq!(m.args["version"], "");
        assert_eq!(m.args["codename"], "stretch");
        assert_eq!(m.args["arch"], "x86");

        let m = os(&[("VERSION", "3.19.1")], "aarch64", "6.6");
        assert_eq!(m.args["distribution"], "Linux");
        assert_eq!(m.args["codename"], "");
        assert_eq!(m.args["arch"], "aarch64");

        // The last assignment wins, and an empty NAME falls back to ID.
        let rel = [
            ("VERSION_ID", "1"),
            ("VERSION_ID", "2"),
            ("NAME", ""),
            ("ID", "x"),
        ];
        let m = os(&rel, "x86_64", "k");
        assert_eq!(
            (&m.args["version"], &m.args["distribution"]),
            (&json!("2"), &json!("x"))
        );
    }

    #[test]
    fn maps_arch() {
        for m in ["i386", "i486", "i586", "i686"] {
            assert_eq!(map_arch(m), "x86");
        }
        assert_eq!(map_arch("x86_64"), "x86_64");
        assert_eq!(map_arch("ppc64le"), "ppc64le");
    }

    #[test]
    fn os_info_from_fixtures() {
        let read = |name: &str| {
            let root = facts::fixtures().join(name);
            let rel = osinfo::read_os_release(&root).unwrap();
            os_info(&osinfo::read_os_info(&root, rel, "x86_64")).args
        };
        let debian = read("os-debian");
        assert_eq!(debian["distribution"], "Debian GNU/Linux");
        assert_eq!(debian["version"], "12");
        assert_eq!(debian["codename"], "bookworm");
        assert_eq!(debian["kernel"], "6.1.0-18-amd64");
        let alpine = read("os-usrlib");
        assert_eq!(alpine["distribution"], "Alpine Linux");
        assert_eq!(alpine["version"], "3.19.1");
        assert_eq!(alpine["codename"], "");
        let rocky = read("os-symlink");
        assert_eq!(rocky["distribution"], "Rocky Linux");
        assert_eq!(rocky["version"], "9.3");
        assert_eq!(rocky["codename"], "Blue Onyx");
        let none = read("os-missing");
        assert_eq!(none["distribution"], "Linux");
        assert_eq!(
            (&none["version"], &none["kernel"]),
            (&json!(""), &json!(""))
        );
    }

    #[test]
    fn active_user_is_the_first_sorted_or_none() {
        let users = ["alice".to_string(), "root".to_string()];
        assert_eq!(active_user_name(&users), "alice");
        assert_eq!(active_user_name(&[]), "None");
        let names = |fixture: &str| {
            let root = facts::fixtures().join(fixture);
            users::logged_in_users(&users::read_sessions(&root).unwrap())
        };
        assert_eq!(active_user_name(&names("users-two")), "alice");
        assert_eq!(active_user_name(&names("users-empty")), "None");
    }
}
