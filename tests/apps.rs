// SPDX-License-Identifier: Apache-2.0
//! End-to-end tests of `applications` against the real binary: a Debian status file larger
//! than any file guestd loads whole, with the wanted package at its end, next to an RPM
//! database, both reported; the agent's peak memory stays far below the file's size.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{Agent, Dir, fixture};
use serde_json::Value;

/// Writes a Debian status file of about `mib` MiB whose last stanza is `linux-image-amd64`.
fn big_dpkg_status(path: &std::path::Path, mib: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let filler = "Description: filler\n".to_owned() + &" a continuation line\n".repeat(40);
    let (mut written, mut i) = (0, 0);
    while written < mib << 20 {
        let stanza =
            format!("Package: pkg{i}\nStatus: install ok installed\nVersion: 1.{i}\n{filler}\n");
        f.write_all(stanza.as_bytes()).unwrap();
        written += stanza.len();
        i += 1;
    }
    f.write_all(b"Package: linux-image-amd64\nStatus: install ok installed\nVersion: 6.1.76-1\n")
        .unwrap();
}

/// The peak resident size of process `pid`, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn big_dpkg_status_and_rpmdb_are_reported_in_small_memory() {
    let dir = Dir::new("apps-big");
    let root = dir.path().join("root");
    big_dpkg_status(&root.join("var/lib/dpkg/status"), 20);
    std::fs::create_dir_all(root.join("var/lib/rpm")).unwrap();
    std::fs::copy(
        fixture("apps-el9/var/lib/rpm/rpmdb.sqlite"),
        root.join("var/lib/rpm/rpmdb.sqlite"),
    )
    .unwrap();
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(dir.path(), &[&root_arg]);
    let mut peer = agent.connect();
    let (msg, _) = peer.until("applications", Duration::from_secs(30));
    let apps: Vec<&str> = msg["applications"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        apps,
        [
            "cloud-init-23.4-7.el9",
            "guestd-0.1.0-1.el9",
            "kernel-5.14.0-427.13.1.el9_4",
            "kernel-core-5.14.0-362.8.1.el9_3",
            "kernel-core-5.14.0-427.13.1.el9_4",
            "linux-image-amd64-6.1.76-1",
            "qemu-guest-agent-8.2.0-11.el9_4",
        ],
        "the default list, from both databases, the end of the 20 MiB file included"
    );
    let hwm = vm_hwm_kib(agent.pid());
    eprintln!("guestd peak RSS: {hwm} KiB");
    assert!(
        hwm < 12 * 1024,
        "peak RSS {hwm} KiB while reading a 20 MiB status file"
    );
}
