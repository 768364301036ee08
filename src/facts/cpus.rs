// SPDX-License-Identifier: Apache-2.0
//! CPU facts: reads the online CPU list from `/sys/devices/system/cpu/online`.

use std::path::Path;

use super::{Error, read_text, under};

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
}
