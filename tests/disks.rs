// SPDX-License-Identifier: Apache-2.0
//! `disks-usage` end to end against the real binary: the udev-style disk mapping and one
//! report per file system (fixture root), and network/FUSE file systems measured off the loop
//! (real FUSE mounts in a private mount namespace: one whose server never answers, one
//! served by this test).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Agent, Dir, copy_tree, fixture};
use serde_json::{Value, json};

/// The `path` of each entry of a disks-usage message.
fn paths(msg: &Value) -> Vec<String> {
    msg["disks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn mapping_has_udev_serials_and_a_file_system_mounted_twice_is_reported_once() {
    let d = Dir::new("disks-map");
    let root = d.path().join("root");
    copy_tree(&fixture("disks-mapping"), &root);
    // Every local mount point exists, so each one that is reported can be measured.
    for p in ["data", "again", "mnt/part", "mnt/whole", "mnt/scsi"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    let root_arg = format!("--root={}", root.display());
    let agent = Agent::start(d.path(), &[&root_arg]);
    let mut peer = agent.connect();
    peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);
    let (msg, _) = peer.until("disks-usage", Duration::from_secs(10));
    // `/` also mounted at /data (bind of /srv/data) and /again; /dev/sdb bound from /sub at
    // /mnt/part, then mounted whole at /mnt/whole; the NFS and sshfs mount points are missing
    // under the fixture root, so their probes fail and they are left out.
    assert_eq!(paths(&msg), ["/", "/mnt/whole", "/mnt/scsi"]);
    let name = |serial: &str| msg["mapping"][serial]["name"].clone();
    assert_eq!(name("0QEMU_QEMU_HARDDISK_6d9c1b2e-0a4f-4d3b-9"), "/dev/sda");
    assert_eq!(name("35000c500a1b2c3d4"), "/dev/sdb");
    assert_eq!(name("QEMU_HARDDISK_QM00005"), "/dev/sdd");
    assert_eq!(name("QEMU_HARDDISK_QM00007"), "/dev/sde");
    assert_eq!(name("b3a1c2d4-e5f6-4a7b-8"), "/dev/vda");
    assert_eq!(name("S4EWNX0R123456"), "/dev/nvme0n1");
    assert_eq!(msg["mapping"].as_object().unwrap().len(), 9);
}

/// Whether this test can make FUSE mounts in a private mount namespace: root, /dev/fuse,
/// `unshare` and `mount`. Says why not.
fn can_mount_fuse() -> bool {
    let uid = Command::new("id").arg("-u").output().unwrap().stdout;
    let ok = String::from_utf8_lossy(&uid).trim() == "0"
        && std::path::Path::new("/dev/fuse").exists()
        && Command::new("unshare").arg("--help").output().is_ok()
        && Command::new("mount").arg("--version").output().is_ok();
    if !ok {
        eprintln!("skipped: needs root, /dev/fuse, unshare and mount");
    }
    ok
}

/// A FUSE server on `dev` that answers INIT, STATFS (1000 blocks of 4 KiB, 250 free, 200
/// available) and GETATTR (a directory), and ENOSYS to the rest, until the connection ends
/// (the mount is gone).
fn serve_fuse(mut dev: File) {
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = dev.read(&mut buf) {
        let req = &buf[..n];
        if req.len() < 40 {
            return;
        }
        let opcode = u32::from_ne_bytes(req[4..8].try_into().unwrap());
        let unique = &req[8..16];
        let u32s = |v: &[u32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_ne_bytes()).collect() };
        let u64s = |v: &[u64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_ne_bytes()).collect() };
        let (error, body): (i32, Vec<u8>) = match opcode {
            // FORGET, BATCH_FORGET: no reply.
            2 | 42 => continue,
            // INIT: version 7.31, max_write 4096, time_gran 1, the rest 0 (64 bytes).
            26 => (0, [u32s(&[7, 31, 0, 0, 0, 4096, 1]), vec![0; 36]].concat()),
            // STATFS: blocks, bfree, bavail, files, ffree; bsize, namelen, frsize, padding,
            // spare[6].
            17 => {
                let counts = u64s(&[1000, 250, 200, 10, 5]);
                (
                    0,
                    [counts, u32s(&[4096, 255, 4096, 0]), vec![0; 24]].concat(),
                )
            }
            // GETATTR: attr_valid, attr_valid_nsec + dummy, then the root directory's
            // attributes: ino 1, size, blocks, [amc]time, [amc]timensec, mode 040755, nlink
            // 2, uid, gid, rdev, blksize, flags.
            3 => {
                let head = u64s(&[0, 0, 1, 0, 0, 0, 0, 0]);
                (
                    0,
                    [head, u32s(&[0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0])].concat(),
                )
            }
            _ => (-38, Vec::new()),
        };
        let len = u32::try_from(16 + body.len()).unwrap();
        let reply = [&len.to_ne_bytes()[..], &error.to_ne_bytes(), unique, &body].concat();
        if dev.write_all(&reply).is_err() {
            return;
        }
    }
}

/// The pids of the processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let me = pid.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = stat.rsplit_once(") ")?.1;
            (after.split(' ').nth(1)? == me).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect()
}

#[test]
fn a_fuse_mount_that_never_answers_is_left_out_without_hanging_the_loop() {
    if !can_mount_fuse() {
        return;
    }
    let d = Dir::new("disks-fuse");
    let root = d.path().join("root");
    for p in ["proc/self", "hang", "ok"] {
        std::fs::create_dir_all(root.join(p)).unwrap();
    }
    // The mount table guestd reads (under --root): the fixture root itself, and the two FUSE
    // mounts the wrapper makes at root/hang and root/ok.
    std::fs::write(
        root.join("proc/self/mountinfo"),
        "1 0 253:0 / / rw - ext4 /dev/root rw\n\
         2 1 0:90 / /hang rw - fuse.hang hang rw,user_id=0,group_id=0\n\
         3 1 0:91 / /ok rw - fuse.ok ok rw,user_id=0,group_id=0\n",
    )
    .unwrap();
    // The server of /ok is this test, on the /dev/fuse the wrapper gets as stdin; nobody ever
    // reads the /dev/fuse of /hang (the wrapper's fd 3, which guestd inherits), so its INIT
    // and every request after it stay unanswered.
    let dev = File::options()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .unwrap();
    let wrapper_stdin = dev.try_clone().unwrap();
    let opts = "rootmode=40000,user_id=0,group_id=0";
    let script = format!(
        "set -e\nexec 3<>/dev/fuse\n\
         mount -i -t fuse.hang -o fd=3,{opts} hang '{r}/hang'\n\
         mount -i -t fuse.ok -o fd=0,{opts} ok '{r}/ok'\n\
         exec \"$@\" </dev/null",
        r = root.display()
    );
    let wrapper = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        &script,
        "sh",
    ];
    let root_arg = format!("--root={}", root.display());
    let mut agent =
        Agent::start_wrapped(d.path(), &wrapper, Stdio::from(wrapper_stdin), &[&root_arg]);
    // The mounts are made (guestd runs): the device is connected, so it may be read now.
    let server = std::thread::spawn(move || serve_fuse(dev));
    let mut peer = agent.connect();
    for round in 0..2 {
        let t = Instant::now();
        peer.send(r#"{"__name__": "refresh", "apiVersion": 3}"#);
        peer.send(r#"{"__name__": "echo", "round": 1}"#);
        // The loop answers while the probe of /hang hangs: the echo comes first.
        let (_, before) = peer.until("echo", Duration::from_secs(5));
        let echoed = t.elapsed();
        assert!(
            !before.iter().any(|m| m["__name__"] == "disks-usage"),
            "disks-usage came before the measurements were in: {before:?}"
        );
        let (msg, _) = peer.until("disks-usage", Duration::from_secs(10));
        let took = t.elapsed();
        assert!(
            echoed < took,
            "round {round}: echo {echoed:?}, disks {took:?}"
        );
        // Sent once /hang's probe was killed at its 2 s bound (and reaped).
        assert!(took >= Duration::from_secs(2), "round {round}: {took:?}");
        assert!(took < Duration::from_secs(8), "round {round}: {took:?}");
        assert_eq!(paths(&msg), ["/", "/ok"], "round {round}");
        let ok = &msg["disks"][1];
        assert_eq!(
            (&ok["fs"], &ok["total"], &ok["used"]),
            (&json!("fuse.ok"), &json!(4_096_000), &json!(3_072_000))
        );
        // No probe is left behind: reaped, not a zombie.
        assert_eq!(children_of(agent.pid()), Vec::<u32>::new(), "round {round}");
    }
    agent.signal_and_wait("TERM");
    let log = agent.log_text();
    let warned = log.matches("did not answer within 2000 ms").count();
    assert_eq!(warned, 1, "logged once:\n{log}");
    assert!(
        log.contains("statvfs") && log.contains("/hang did not answer"),
        "{log}"
    );
    // guestd's exit ended the namespace, and with it the mount of /ok: the server stops.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !server.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the mount of /ok outlived guestd"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.join().unwrap();
}
