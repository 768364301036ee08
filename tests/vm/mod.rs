// SPDX-License-Identifier: Apache-2.0
//! Helpers shared by the VM tests (`smoke`, `smoke_libvirt`): where the repository, the
//! kernel and the test image are, and the test disk the image mounts at /data.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The test disk's size: enough for an ext4 journal, small enough to create in a blink.
pub const DISK_MIB: u64 = 16;
/// The ext4 label of the test disk.
pub const DISK_LABEL: &str = "guestd-data";
/// Where the image mounts the test disk (/dev/vda, see initramfs/rootfs/etc/init.d/rcS).
pub const DISK_MOUNT: &str = "/data";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The test image `make initramfs` builds (INITRD overrides it, as for run-vm.sh).
pub fn initrd() -> PathBuf {
    match std::env::var_os("INITRD") {
        Some(p) => repo().join(p),
        None => repo().join("build/initramfs.cpio.gz"),
    }
}

/// The kernel release the image boots (the newest in /lib/modules, as run-vm.sh picks).
pub fn kernel_release() -> String {
    let mut v: Vec<String> = std::fs::read_dir("/lib/modules")
        .expect("/lib/modules")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    v.sort_by_key(|s| version_key(s));
    v.pop().expect("a kernel in /lib/modules")
}

/// The kernel the image boots: KERNEL, or the Debian kernel of `kernel_release`.
pub fn kernel() -> PathBuf {
    std::env::var_os("KERNEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(format!("/boot/vmlinuz-{}", kernel_release())))
}

fn version_key(s: &str) -> Vec<u64> {
    s.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Creates the test disk at `path`: a raw image with an empty ext4 file system.
pub fn make_disk(path: &Path) {
    let f = std::fs::File::create(path).expect("creating the test disk image");
    f.set_len(DISK_MIB << 20)
        .expect("sizing the test disk image");
    drop(f);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", DISK_LABEL])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("mkfs.ext4: {e} (install e2fsprogs)"));
    assert!(
        out.status.success(),
        "mkfs.ext4 {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `f` every `step` until it returns `Some`, or panics naming `what` at `deadline`.
pub fn wait_for<T>(
    what: &str,
    deadline: Instant,
    step: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(step);
    }
}

/// The last `max` bytes of a text file, for failure reports.
pub fn tail(path: &Path, max: usize) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let from = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[from..]).into_owned()
}
