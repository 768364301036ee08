// SPDX-License-Identifier: Apache-2.0
//! CPU facts: reads the online CPU list from `/sys/devices/system/cpu/online`, and each
//! logical CPU's state from `/sys/devices/system/cpu/cpuN/online` (which it can also change).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{Error, numbered_entries, read_text, read_text_opt, under};

/// The `(first, last)` ranges of a kernel cpu-list such as `"0-3,5,7-8\n"`. Returns `None`
/// for an empty or malformed list (including a range whose end is below its start).
pub fn parse_cpu_ranges(text: &str) -> Option<Vec<(u32, u32)>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.split(',')
        .map(|item| {
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let (first, last): (u32, u32) = (first.parse().ok()?, last.parse().ok()?);
            (last >= first).then_some((first, last))
        })
        .collect()
}

/// Counts the CPUs in a kernel cpu-list such as `"0-3,5,7-8\n"` (7 CPUs). Returns `None` for
/// an empty or malformed list.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    parse_cpu_ranges(text)?
        .iter()
        .try_fold(0u32, |count, &(first, last)| {
            count.checked_add((last - first).checked_add(1)?)
        })
}

/// Reads the number of online CPUs from `sys/devices/system/cpu/online` under `root`.
pub fn read_online_count(root: &Path) -> Result<u32, Error> {
    const REL: &str = "sys/devices/system/cpu/online";
    let text = read_text(root, REL)?;
    parse_cpu_list(&text).ok_or_else(|| Error::Parse {
        path: under(root, REL),
        reason: format!("malformed cpu list {:?}", text.trim()),
    })
}

/// Where the per-CPU directories live, relative to the root.
const CPU_DIR: &str = "sys/devices/system/cpu";

/// Most logical CPUs listed (the kernel's own limit is far lower).
pub const MAX_CPUS: usize = 65536;

/// One logical CPU and whether it is online.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vcpu {
    /// N of `cpuN`.
    pub id: u32,
    /// The CPU runs (its `online` file reads `1`, or it has none).
    pub online: bool,
    /// The CPU has an `online` file; without one (usually cpu0) it is always online.
    pub can_offline: bool,
}

/// The CPU number of a `cpuN` directory name.
fn cpu_number(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("cpu")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The state of `cpuN` under `root`: the first character of its `online` file (`1` is
/// online); no `online` file means online and not able to go offline.
pub fn read_vcpu(root: &Path, id: u32) -> Result<Vcpu, Error> {
    match read_text_opt(root, &format!("{CPU_DIR}/cpu{id}/online"))? {
        Some(text) => Ok(Vcpu {
            id,
            online: text.trim_start().starts_with('1'),
            can_offline: true,
        }),
        None => Ok(Vcpu {
            id,
            online: true,
            can_offline: false,
        }),
    }
}

/// Every `cpuN` directory under `sys/devices/system/cpu`, sorted by number.
pub fn read_vcpus(root: &Path) -> Result<Vec<Vcpu>, Error> {
    let ids = numbered_entries(&under(root, CPU_DIR), cpu_number, MAX_CPUS)?;
    ids.into_iter().map(|id| read_vcpu(root, id)).collect()
}

/// Why a CPU's state could not be changed.
#[derive(Debug)]
pub enum SetError {
    /// There is no `cpuN` directory.
    NoSuchCpu(u32),
    /// Asked to go offline, but the CPU has no `online` file.
    CannotOffline(u32),
    /// Reading the `online` file failed.
    Read(Error),
    /// Writing the `online` file failed.
    Write {
        /// The `online` file.
        path: PathBuf,
        /// Why the write failed.
        source: io::Error,
    },
}

impl std::fmt::Display for SetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetError::NoSuchCpu(id) => write!(f, "logical processor #{id} does not exist"),
            SetError::CannotOffline(id) => {
                write!(f, "logical processor #{id} can't be offlined")
            }
            SetError::Read(e) => write!(f, "{e}"),
            SetError::Write { path, source } => {
                write!(f, "writing {}: {source}", path.display())
            }
        }
    }
}

/// Brings `cpuN` under `root` online or offline by writing `1` or `0` to its `online` file
/// (opened for writing and truncated, never created). A CPU already in the wanted state is left
/// alone; a CPU with no `online` file is always online, so only offlining it is an error.
/// The write blocks until the kernel has moved the CPU.
pub fn set_vcpu(root: &Path, id: u32, online: bool) -> Result<(), SetError> {
    if !under(root, &format!("{CPU_DIR}/cpu{id}")).is_dir() {
        return Err(SetError::NoSuchCpu(id));
    }
    let cur = read_vcpu(root, id).map_err(SetError::Read)?;
    if cur.online == online {
        return Ok(());
    }
    if !cur.can_offline {
        return Err(SetError::CannotOffline(id));
    }
    let path = under(root, &format!("{CPU_DIR}/cpu{id}/online"));
    let write = |path: &Path| -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(path)?;
        f.write_all(if online { b"1" } else { b"0" })
    };
    write(&path).map_err(|source| SetError::Write { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    #[test]
    fn counts_cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(1));
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,5,7-8\n"), Some(7));
        assert_eq!(parse_cpu_list("2,4,6"), Some(3));
        assert_eq!(parse_cpu_list("0-0"), Some(1));
    }

    #[test]
    fn rejects_malformed_lists() {
        for bad in [
            "",
            "\n",
            "x",
            "0-",
            "-3",
            "3-1",
            "0,,1",
            "0-3,",
            "1 2",
            "0-4294967295,1",
        ] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_fixture_tree() {
        assert_eq!(
            read_online_count(&fixtures().join("cpus-basic")).unwrap(),
            7
        );
    }

    #[test]
    fn malformed_file_is_parse_error() {
        let root = fixtures().join("cpus-bad");
        match read_online_count(&root) {
            Err(Error::Parse { path, .. }) => {
                assert_eq!(path, root.join("sys/devices/system/cpu/online"));
            }
            other => panic!("expected parse error, got {other:?}"),
        }
    }

    #[test]
    fn missing_file_is_read_error() {
        let err = read_online_count(&fixtures().join("cpus-missing")).unwrap_err();
        assert!(err.is_not_found());
    }

    #[test]
    fn vcpus_from_the_fixture() {
        let got = read_vcpus(&fixtures().join("qga-info")).unwrap();
        let v = |id, online, can_offline| Vcpu {
            id,
            online,
            can_offline,
        };
        // cpu0 has no online file; cpu10 sorts after cpu2; "cpufreq" is no CPU.
        assert_eq!(
            got,
            vec![
                v(0, true, false),
                v(1, true, true),
                v(2, false, true),
                v(10, true, true)
            ]
        );
        assert_eq!(cpu_number("cpu12"), Some(12));
        assert_eq!(cpu_number("cpu"), None);
        assert_eq!(cpu_number("cpufreq"), None);
        assert_eq!(cpu_number("cpu+1"), None);
    }
}
