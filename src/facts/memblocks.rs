// SPDX-License-Identifier: Apache-2.0
//! Memory hot-plug blocks: `/sys/devices/system/memory/memoryN/{state,removable}` and the
//! block size in `block_size_bytes`; a block's state can also be changed.

use std::io::{self, Write};
use std::path::Path;

use super::{Error, numbered_entries, read_text, read_text_opt, under};

/// Where the memory blocks live, relative to the root.
const MEM_DIR: &str = "sys/devices/system/memory";

/// Most memory blocks listed (a 64 TiB guest with 128 MiB blocks has 524288).
pub const MAX_BLOCKS: usize = 1 << 20;

/// One memory block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemBlock {
    /// N of `memoryN`.
    pub index: u64,
    /// `state` starts with `online`.
    pub online: bool,
    /// `removable` is `1`.
    pub can_offline: bool,
}

/// The content of a `state` file: whether the block is online (`online`, not `offline` or
/// `going-offline`).
pub fn parse_state(text: &str) -> bool {
    text.trim_start().starts_with("online")
}

/// The content of `block_size_bytes`: a hexadecimal number without `0x` (`8000000` is
/// 128 MiB).
pub fn parse_block_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    u64::from_str_radix(t, 16).ok().filter(|&n| n > 0)
}

/// The block index of a `memoryN` directory name.
fn block_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("memory")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The state of `memoryN` under `root`; `None` when it has no directory.
pub fn read_block(root: &Path, index: u64) -> Result<Option<MemBlock>, Error> {
    let base = format!("{MEM_DIR}/memory{index}");
    if !under(root, &base).is_dir() {
        return Ok(None);
    }
    let online = parse_state(&read_text(root, &format!("{base}/state"))?);
    let can_offline =
        read_text_opt(root, &format!("{base}/removable"))?.is_some_and(|t| t.trim() == "1");
    Ok(Some(MemBlock {
        index,
        online,
        can_offline,
    }))
}

/// Every memory block, sorted by index; no `sys/devices/system/memory` (no hot-plug
/// support) gives an empty list.
pub fn read_blocks(root: &Path) -> Result<Vec<MemBlock>, Error> {
    let ids = match numbered_entries(&under(root, MEM_DIR), block_number, MAX_BLOCKS) {
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        r => r?,
    };
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        // A block removed between the listing and the read is simply gone.
        out.extend(read_block(root, id)?);
    }
    Ok(out)
}

/// The memory block size in bytes, from `block_size_bytes`.
pub fn read_block_size(root: &Path) -> Result<u64, Error> {
    const REL: &str = "sys/devices/system/memory/block_size_bytes";
    let text = read_text(root, REL)?;
    parse_block_size(&text).ok_or_else(|| Error::Parse {
        path: under(root, REL),
        reason: format!("not a hexadecimal size: {:?}", text.trim()),
    })
}

/// What became of a request to change a block's state (QGA's `GuestMemoryBlockResponseType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// The block is in the wanted state.
    Success,
    /// There is no `memoryN` directory.
    NotFound,
    /// Offlining a block that is not removable.
    NotSupported,
    /// Reading or writing `state` failed with this errno.
    Failed(i32),
}

/// Brings `memoryN` online or offline by writing `online` or `offline` to its `state` file
/// (opened for writing and truncated, never created). A block already in the wanted state is left
/// alone.
pub fn set_block(root: &Path, index: u64, online: bool) -> SetOutcome {
    let cur = match read_block(root, index) {
        Ok(Some(b)) => b,
        Ok(None) => return SetOutcome::NotFound,
        Err(e) => {
            log::debug!("{e}");
            return SetOutcome::Failed(errno_of(&e));
        }
    };
    if cur.online == online {
        return SetOutcome::Success;
    }
    if !online && !cur.can_offline {
        return SetOutcome::NotSupported;
    }
    let path = under(root, &format!("{MEM_DIR}/memory{index}/state"));
    let write = || -> io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)?;
        f.write_all(if online { b"online" } else { b"offline" })
    };
    match write() {
        Ok(()) => SetOutcome::Success,
        Err(e) => {
            log::info!("writing {}: {e}", path.display());
            SetOutcome::Failed(e.raw_os_error().unwrap_or(libc::EIO))
        }
    }
}

fn errno_of(e: &Error) -> i32 {
    match e {
        Error::Read { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        Error::Parse { .. } => libc::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    #[test]
    fn states_and_sizes() {
        assert!(parse_state("online\n"));
        assert!(!parse_state("offline\n"));
        assert!(!parse_state("going-offline\n"));
        assert!(!parse_state(""));
        assert_eq!(parse_block_size("8000000\n"), Some(128 << 20));
        assert_eq!(parse_block_size("0x10000000"), Some(256 << 20));
        assert_eq!(parse_block_size("zz"), None);
        assert_eq!(parse_block_size("0"), None);
        assert_eq!(block_number("memory12"), Some(12));
        assert_eq!(block_number("memory"), None);
        assert_eq!(block_number("memory_tiers"), None);
    }

    #[test]
    fn blocks_from_the_fixture() {
        let root = fixtures().join("qga-info");
        let b = |index, online, can_offline| MemBlock {
            index,
            online,
            can_offline,
        };
        assert_eq!(
            read_blocks(&root).unwrap(),
            vec![
                b(0, true, false),
                b(1, true, true),
                b(2, false, true),
                b(32, true, true)
            ]
        );
        assert_eq!(read_block_size(&root).unwrap(), 128 << 20);
        assert!(
            read_blocks(&fixtures().join("no-such-root"))
                .unwrap()
                .is_empty()
        );
        // Nothing to write for these.
        assert_eq!(set_block(&root, 7, true), SetOutcome::NotFound);
        assert_eq!(set_block(&root, 1, true), SetOutcome::Success);
        assert_eq!(set_block(&root, 0, false), SetOutcome::NotSupported);
    }
}
