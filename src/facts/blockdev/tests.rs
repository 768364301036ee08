// SPDX-License-Identifier: Apache-2.0
//! Tests of `blockdev` against `tests/fixtures/blockdev`: a sysfs of symlinks with a
//! virtio-blk disk (two partitions), a virtio-scsi disk, a SATA disk on an AHCI controller, an
//! NVMe disk behind a PCIe root port, a device-mapper volume on a partition, and an empty loop
//! device.

use super::*;
use crate::facts::fixtures;
use crate::facts::mounts::{mount, on};

fn root() -> PathBuf {
    fixtures().join("blockdev")
}

fn pci(domain: i64, bus: i64, slot: i64, function: i64) -> PciAddress {
    PciAddress {
        domain,
        bus,
        slot,
        function,
    }
}

fn vda(dev: &str) -> DiskAddress {
    DiskAddress {
        pci: pci(0, 0, 5, 0),
        bus_type: "virtio",
        bus: 0,
        target: 0,
        unit: 0,
        serial: Some("vda-serial-1".into()),
        dev: dev.into(),
    }
}

#[test]
fn block_mounts_keep_block_devices_and_btrfs_with_a_device_node() {
    let mounts = vec![
        on(252, 1, mount("/", "ext4", "/dev/vda1")),
        on(0, 21, mount("/proc", "proc", "proc")),
        on(0, 30, mount("/home", "nfs4", "srv:/home")),
        on(0, 31, mount("/b", "btrfs", "/dev/vdb")),
        on(0, 32, mount("/c", "btrfs", "/dev/missing")),
        mount("/bad", "ext4", "/dev/vdc"),
    ];
    let rdev = |s: &str| (s == "/dev/vdb").then_some((252, 16));
    let got = block_mounts(mounts, rdev);
    let brief: Vec<_> = got
        .iter()
        .map(|m| (m.mount_point.as_str(), m.st_dev, m.device))
        .collect();
    assert_eq!(
        brief,
        [("/", (252, 1), (252, 1)), ("/b", (0, 31), (252, 16))]
    );
}

#[test]
fn fixture_mounts_are_the_block_backed_ones_and_each_device_once() {
    let got = read_block_mounts(&root()).unwrap();
    let points: Vec<_> = got.iter().map(|m| m.mount_point.as_str()).collect();
    // The btrfs source /dev/vdc is no device node under the fixture root: left out.
    assert_eq!(
        points,
        ["/", "/boot", "/data", "/sata", "/nvme", "/srv/bind", "/usb"]
    );
    let once: Vec<_> = first_per_device(got)
        .into_iter()
        .map(|m| m.mount_point)
        .collect();
    assert_eq!(once, ["/", "/boot", "/data", "/sata", "/nvme", "/usb"]);
    assert!(served_by_a_daemon("fuseblk") && served_by_a_daemon("fuse.sshfs"));
    assert!(!served_by_a_daemon("ext4"));
}

#[test]
fn virtio_blk_partition_has_its_disks_serial_and_its_own_node() {
    assert_eq!(
        device_disks(&root(), (252, 1)),
        ("vda1".to_owned(), vec![vda("/dev/vda1")])
    );
    assert_eq!(
        device_disks(&root(), (252, 0)),
        ("vda".to_owned(), vec![vda("/dev/vda")])
    );
}

#[test]
fn virtio_scsi_reports_channel_target_lun_and_the_vpd_serial() {
    let (name, disks) = device_disks(&root(), (8, 0));
    assert_eq!(name, "sda");
    assert_eq!(
        disks,
        [DiskAddress {
            pci: pci(0, 0, 3, 0),
            bus_type: "scsi",
            bus: 0,
            target: 1,
            unit: 2,
            serial: Some("drive-scsi0".into()),
            dev: "/dev/sda".into(),
        }]
    );
}

#[test]
fn sata_unit_is_the_ahci_port_index() {
    let (name, disks) = device_disks(&root(), (8, 17));
    assert_eq!(name, "sdb1");
    assert_eq!(
        disks,
        [DiskAddress {
            pci: pci(0, 0, 0x1f, 2),
            bus_type: "sata",
            bus: 0,
            target: 0,
            unit: 2,
            serial: None,
            dev: "/dev/sdb1".into(),
        }]
    );
}

#[test]
fn nvme_behind_a_root_port_gets_the_controllers_address() {
    let (name, disks) = device_disks(&root(), (259, 0));
    assert_eq!(name, "nvme0n1");
    assert_eq!(
        disks,
        [DiskAddress {
            pci: pci(0, 4, 0, 0),
            bus_type: "nvme",
            bus: 0,
            target: 0,
            unit: 0,
            serial: Some("NVME-SERIAL-7".into()),
            dev: "/dev/nvme0n1".into(),
        }]
    );
}

#[test]
fn device_mapper_is_followed_to_its_real_disks() {
    assert_eq!(
        device_disks(&root(), (253, 0)),
        ("dm-0".to_owned(), vec![vda("/dev/vda2")])
    );
}

#[test]
fn unknown_devices_are_named_by_number_without_disks() {
    assert_eq!(device_disks(&root(), (8, 33)), ("8:33".to_owned(), vec![]));
    let a = address(&root(), "/sys/devices/platform/foo/block/mmcblk0");
    assert_eq!((a.pci, a.bus_type), (PciAddress::UNKNOWN, "unknown"));
    let a = address(
        &root(),
        "/sys/devices/platform/a000000.virtio_mmio/virtio0/block/vda",
    );
    assert_eq!((a.pci, a.bus_type), (PciAddress::UNKNOWN, "virtio"));
}

#[test]
fn vpd_page_parsing() {
    assert_eq!(vpd_serial(b"\x00\x80\x00\x04AB12"), Some("AB12".into()));
    assert_eq!(vpd_serial(b"\x00\x80\x00\x08 AB\x00"), Some("AB".into()));
    assert_eq!(vpd_serial(b"\x00\x80\x00\x00"), None);
    assert_eq!(vpd_serial(b"\x00\x80"), None);
}

#[test]
fn disks_list_partitions_dependencies_and_aliases() {
    let got = read_disks(&root()).unwrap();
    let brief: Vec<_> = got
        .iter()
        .map(|d| {
            (
                d.name.as_str(),
                d.partition,
                d.dependencies.clone(),
                d.address.as_ref().map(|a| a.bus_type),
                d.alias.as_deref(),
            )
        })
        .collect();
    let deps = |list: &[&str]| Some(list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    assert_eq!(
        brief,
        [
            (
                "/dev/dm-0",
                false,
                deps(&["/dev/vda2"]),
                None,
                Some("vg-root")
            ),
            ("/dev/nvme0n1", false, None, Some("nvme"), None),
            ("/dev/nvme0n1p1", true, deps(&["/dev/nvme0n1"]), None, None),
            ("/dev/sda", false, None, Some("scsi"), None),
            ("/dev/sdb", false, None, Some("sata"), None),
            ("/dev/sdb1", true, deps(&["/dev/sdb"]), None, None),
            ("/dev/vda", false, deps(&[]), Some("virtio"), None),
            ("/dev/vda1", true, deps(&["/dev/vda"]), None, None),
            ("/dev/vda2", true, deps(&["/dev/vda"]), None, None),
        ]
    );
    assert_eq!(got[6].address, Some(vda("/dev/vda")));
    assert!(
        read_disks(&fixtures().join("no-such-root"))
            .unwrap()
            .is_empty()
    );
}
