// SPDX-License-Identifier: Apache-2.0
//! Memory facts: reads `/proc/meminfo` and `/proc/vmstat`, and derives memory statistics
//! (sizes, and swap and page-fault rates) and the reclaimable memory.

use std::path::Path;
use std::time::Duration;

use super::{Error, read_bytes_into, under};

/// The `/proc/meminfo` fields guestd reports, in KiB. Missing keys are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total: u64,
    pub mem_free: u64,
    pub buffers: u64,
    pub cached: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl MemInfo {
    /// Reclaimable memory in MiB, as the reference guest agent counts free memory:
    /// (MemFree + Buffers + Cached) / 1024.
    pub fn free_ram_mib(&self) -> u64 {
        self.reclaimable_kib() / 1024
    }

    /// MemFree + Buffers + Cached, in KiB.
    fn reclaimable_kib(&self) -> u64 {
        self.mem_free
            .saturating_add(self.buffers)
            .saturating_add(self.cached)
    }
}

/// The `/proc/vmstat` counters guestd reports (events since boot). Missing keys are 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VmStat {
    pub pswpin: u64,
    pub pswpout: u64,
    pub pgfault: u64,
    pub pgmajfault: u64,
}

/// Memory statistics derived from one meminfo and two vmstat samples: sizes in KiB, the last
/// four are per-second rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStat {
    pub mem_total: u64,
    pub mem_unused: u64,
    pub mem_free: u64,
    pub mem_buffers: u64,
    pub mem_cached: u64,
    pub swap_total: u64,
    pub swap_usage: u64,
    pub swap_in: u64,
    pub swap_out: u64,
    pub pageflt: u64,
    pub majflt: u64,
}

/// The values of the `keys` in `key: value [kB]` or `key value` lines (ASCII, as the kernel
/// writes them), in `keys` order; a key without a line whose value is a number is `None`.
/// Works on bytes, parses a value only for a wanted key, and stops once every key has a
/// value (the kernel writes each key once; of repeated keys the first valid one counts).
fn numeric_fields<const N: usize>(text: &[u8], keys: [&[u8]; N]) -> [Option<u64>; N] {
    let mut found = [None; N];
    let mut left = N;
    let mut rest = text;
    while left > 0 && !rest.is_empty() {
        let end = find_newline(rest).unwrap_or(rest.len());
        let line = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or_default();
        // Most lines hold no wanted key: rule them out by their first two bytes before
        // looking at the words.
        let trimmed = line.trim_ascii_start();
        let (first, second) = (trimmed.first(), trimmed.get(1));
        if !keys
            .iter()
            .any(|k| k.first() == first && k.get(1) == second)
        {
            continue;
        }
        let (mut key, after) = first_word(trimmed);
        while let [k @ .., b':'] = key {
            key = k;
        }
        let Some(i) = keys.iter().position(|k| k.len() == key.len() && *k == key) else {
            continue;
        };
        if found[i].is_none() {
            found[i] = parse_u64(first_word(after.trim_ascii_start()).0);
            if found[i].is_some() {
                left -= 1;
            }
        }
    }
    found
}

/// The bytes of `s` up to its first ASCII white space, and the rest.
fn first_word(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The offset of the first `\n` in `s`, eight bytes at a time (the word-at-a-time zero-byte
/// test: a heartbeat tick scans about 4 KB of /proc text).
fn find_newline(s: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        // Bytes equal to '\n' become zero; the lowest flagged byte is the first zero byte.
        let w = u64::from_le_bytes(word) ^ (ONES * u64::from(b'\n'));
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    tail.iter().position(|&b| b == b'\n').map(|i| at + i)
}

/// A decimal `u64`, as `str::parse` reads it (an optional `+`, digits, no overflow).
fn parse_u64(word: &[u8]) -> Option<u64> {
    let digits = word.strip_prefix(b"+").unwrap_or(word);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Parses `/proc/meminfo` text (`MemTotal:  16318612 kB` lines), plus whether MemTotal was
/// present.
fn parse_meminfo_checked(text: &[u8]) -> (MemInfo, bool) {
    let keys: [&[u8]; 6] = [
        b"MemTotal",
        b"MemFree",
        b"Buffers",
        b"Cached",
        b"SwapTotal",
        b"SwapFree",
    ];
    let [total, free, buffers, cached, swap_total, swap_free] = numeric_fields(text, keys);
    let mem = MemInfo {
        mem_total: total.unwrap_or(0),
        mem_free: free.unwrap_or(0),
        buffers: buffers.unwrap_or(0),
        cached: cached.unwrap_or(0),
        swap_total: swap_total.unwrap_or(0),
        swap_free: swap_free.unwrap_or(0),
    };
    (mem, total.is_some())
}

/// Parses `/proc/meminfo` text. Missing or malformed keys are 0.
pub fn parse_meminfo(text: &[u8]) -> MemInfo {
    parse_meminfo_checked(text).0
}

/// Parses `/proc/vmstat` text (`pgfault 123` lines). Missing or malformed keys are 0.
pub fn parse_vmstat(text: &[u8]) -> VmStat {
    let keys: [&[u8]; 4] = [b"pswpin", b"pswpout", b"pgfault", b"pgmajfault"];
    let [pswpin, pswpout, pgfault, pgmajfault] = numeric_fields(text, keys);
    VmStat {
        pswpin: pswpin.unwrap_or(0),
        pswpout: pswpout.unwrap_or(0),
        pgfault: pgfault.unwrap_or(0),
        pgmajfault: pgmajfault.unwrap_or(0),
    }
}

/// Reads `proc/meminfo` under `root`. A file without `MemTotal` is a parse error.
pub fn read_meminfo(root: &Path) -> Result<MemInfo, Error> {
    read_meminfo_with(root, &mut Vec::new())
}

/// `read_meminfo`, reading into `buf` (cleared first), which the caller keeps between calls.
pub fn read_meminfo_with(root: &Path, buf: &mut Vec<u8>) -> Result<MemInfo, Error> {
    const REL: &str = "proc/meminfo";
    read_bytes_into(root, REL, buf)?;
    let (mem, has_total) = parse_meminfo_checked(buf);
    if has_total {
        Ok(mem)
    } else {
        Err(Error::Parse {
            path: under(root, REL),
            reason: "no MemTotal line".into(),
        })
    }
}

/// Reads `proc/vmstat` under `root`.
pub fn read_vmstat(root: &Path) -> Result<VmStat, Error> {
    read_vmstat_with(root, &mut Vec::new())
}

/// `read_vmstat`, reading into `buf` (cleared first), which the caller keeps between calls.
pub fn read_vmstat_with(root: &Path, buf: &mut Vec<u8>) -> Result<VmStat, Error> {
    read_bytes_into(root, "proc/vmstat", buf)?;
    Ok(parse_vmstat(buf))
}

/// The per-second rate of a counter that went from `prev` to `cur` in `elapsed`, truncated.
/// 0 when no time passed or the counter went backwards.
fn rate(prev: u64, cur: u64, elapsed: Duration) -> u64 {
    let nanos = elapsed.as_nanos();
    match cur.checked_sub(prev) {
        Some(delta) if nanos > 0 => {
            u64::try_from(u128::from(delta) * 1_000_000_000 / nanos).unwrap_or(u64::MAX)
        }
        _ => 0,
    }
}

/// Builds the memory statistics from a meminfo sample and the current vmstat sample
/// `cur` taken at monotonic time `now`. `prev` is the previous vmstat sample with its
/// monotonic time; without it (the first sample) the rates are 0.
pub fn memory_stat(
    mem: &MemInfo,
    prev: Option<(&VmStat, Duration)>,
    cur: &VmStat,
    now: Duration,
) -> MemoryStat {
    let (swap_in, swap_out, pageflt, majflt) = match prev {
        Some((old, then)) => {
            let elapsed = now.saturating_sub(then);
            (
                rate(old.pswpin, cur.pswpin, elapsed),
                rate(old.pswpout, cur.pswpout, elapsed),
                rate(old.pgfault, cur.pgfault, elapsed),
                rate(old.pgmajfault, cur.pgmajfault, elapsed),
            )
        }
        None => (0, 0, 0, 0),
    };
    MemoryStat {
        mem_total: mem.mem_total,
        mem_unused: mem.mem_free,
        mem_free: mem.reclaimable_kib(),
        mem_buffers: mem.buffers,
        mem_cached: mem.cached,
        swap_total: mem.swap_total,
        swap_usage: mem.swap_total.saturating_sub(mem.swap_free),
        swap_in,
        swap_out,
        pageflt,
        majflt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    const MEMINFO: &str = "MemTotal:        2029876 kB\n\
                           MemFree:          812340 kB\n\
                           MemAvailable:    1502020 kB\n\
                           Buffers:           52312 kB\n\
                           Cached:           621000 kB\n\
                           SwapCached:            0 kB\n\
                           SwapTotal:       1048572 kB\n\
                           SwapFree:         948572 kB\n\
                           HugePages_Total:       0\n";

    #[test]
    fn newlines_are_found_at_every_offset() {
        for len in 0..40 {
            for nl in 0..=len {
                let mut s = vec![b'a'; len];
                if nl < len {
                    s[nl] = b'\n';
                    // A byte just above '\n' must not be taken for it.
                    if nl + 1 < len {
                        s[nl + 1] = 0x0b;
                    }
                }
                let want = s.iter().position(|&b| b == b'\n');
                assert_eq!(find_newline(&s), want, "len {len}, newline at {nl}");
            }
        }
        assert_eq!(
            find_newline(b"\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0b\x0a"),
            Some(8)
        );
    }

    #[test]
    fn parses_meminfo() {
        let mem = parse_meminfo(MEMINFO.as_bytes());
        assert_eq!(
            mem,
            MemInfo {
                mem_total: 2_029_876,
                mem_free: 812_340,
                buffers: 52_312,
                cached: 621_000,
                swap_total: 1_048_572,
                swap_free: 948_572,
            }
        );
        // (812340 + 52312 + 621000) / 1024 = 1450.83...
        assert_eq!(mem.free_ram_mib(), 1450);
    }

    #[test]
    fn meminfo_missing_and_malformed_keys_are_zero() {
        let mem = parse_meminfo(b"MemTotal: 1000 kB\nMemFree: lots kB\nCached:\ngarbage\n\n");
        assert_eq!(
            mem,
            MemInfo {
                mem_total: 1000,
                ..MemInfo::default()
            }
        );
        assert_eq!(parse_meminfo(b""), MemInfo::default());
    }

    #[test]
    fn parses_vmstat() {
        let vm =
            parse_vmstat(b"nr_free_pages 1\npswpin 10\npswpout 20\npgfault 3000\npgmajfault 40\n");
        assert_eq!(
            vm,
            VmStat {
                pswpin: 10,
                pswpout: 20,
                pgfault: 3000,
                pgmajfault: 40,
            }
        );
        assert_eq!(parse_vmstat(b"pgfault x\n"), VmStat::default());
        // A malformed value does not count as found; a later valid line still does.
        assert_eq!(
            parse_vmstat(b"pgfault x\r\n  pgfault\t+7\r\npgfault 8\npswpin 18446744073709551616\n")
                .pgfault,
            7
        );
        assert_eq!(parse_vmstat(b"pswpin -1\npswpout 1 2\n").pswpin, 0);
    }

    #[test]
    fn memory_stat_first_sample_has_zero_rates() {
        let mem = parse_meminfo(MEMINFO.as_bytes());
        let cur = VmStat {
            pswpin: 5,
            pswpout: 6,
            pgfault: 7,
            pgmajfault: 8,
        };
        let stat = memory_stat(&mem, None, &cur, Duration::from_secs(100));
        assert_eq!(
            stat,
            MemoryStat {
                mem_total: 2_029_876,
                mem_unused: 812_340,
                mem_free: 812_340 + 52_312 + 621_000,
                mem_buffers: 52_312,
                mem_cached: 621_000,
                swap_total: 1_048_572,
                swap_usage: 100_000,
                swap_in: 0,
                swap_out: 0,
                pageflt: 0,
                majflt: 0,
            }
        );
    }

    #[test]
    fn memory_stat_rates_are_per_second_and_truncated() {
        let mem = MemInfo::default();
        let old = VmStat {
            pswpin: 100,
            pswpout: 200,
            pgfault: 1000,
            pgmajfault: 50,
        };
        let cur = VmStat {
            pswpin: 110,
            pswpout: 200,
            pgfault: 1999,
            pgmajfault: 40, // went backwards
        };
        let stat = memory_stat(
            &mem,
            Some((&old, Duration::from_secs(10))),
            &cur,
            Duration::from_millis(14_000),
        );
        assert_eq!(stat.swap_in, 2); // 10 / 4 s = 2.5
        assert_eq!(stat.swap_out, 0);
        assert_eq!(stat.pageflt, 249); // 999 / 4 s = 249.75
        assert_eq!(stat.majflt, 0);
        assert_eq!(stat.swap_usage, 0);
    }

    #[test]
    fn memory_stat_zero_or_negative_elapsed_gives_zero_rates() {
        let mem = MemInfo::default();
        let old = VmStat::default();
        let cur = VmStat {
            pswpin: 10,
            pswpout: 10,
            pgfault: 10,
            pgmajfault: 10,
        };
        let t = Duration::from_secs(5);
        let same = memory_stat(&mem, Some((&old, t)), &cur, t);
        let earlier = memory_stat(&mem, Some((&old, t)), &cur, Duration::from_secs(1));
        for stat in [same, earlier] {
            assert_eq!(
                (stat.swap_in, stat.swap_out, stat.pageflt, stat.majflt),
                (0, 0, 0, 0)
            );
        }
    }

    #[test]
    fn swap_usage_saturates() {
        let mem = MemInfo {
            swap_total: 10,
            swap_free: 20,
            ..MemInfo::default()
        };
        let stat = memory_stat(&mem, None, &VmStat::default(), Duration::ZERO);
        assert_eq!(stat.swap_usage, 0);
    }

    #[test]
    fn reads_fixture_tree() {
        let root = fixtures().join("memory-basic");
        let mem = read_meminfo(&root).unwrap();
        assert_eq!(mem.mem_total, 4_012_344);
        assert_eq!(mem.mem_free, 2_500_000);
        assert_eq!(mem.buffers, 100_000);
        assert_eq!(mem.cached, 600_000);
        assert_eq!(mem.swap_total, 2_097_148);
        assert_eq!(mem.swap_free, 2_000_000);
        assert_eq!(mem.free_ram_mib(), 3125);
        let vm = read_vmstat(&root).unwrap();
        assert_eq!(
            vm,
            VmStat {
                pswpin: 12,
                pswpout: 34,
                pgfault: 567_890,
                pgmajfault: 1234,
            }
        );
    }

    #[test]
    fn meminfo_without_memtotal_is_parse_error() {
        for name in ["memory-nototal", "memory-empty"] {
            let root = fixtures().join(name);
            match read_meminfo(&root) {
                Err(Error::Parse { path, .. }) => assert_eq!(path, root.join("proc/meminfo")),
                other => panic!("{name}: expected parse error, got {other:?}"),
            }
        }
    }

    #[test]
    fn empty_vmstat_is_all_zero() {
        let root = fixtures().join("memory-empty");
        assert_eq!(read_vmstat(&root).unwrap(), VmStat::default());
    }

    #[test]
    fn missing_files_are_read_errors() {
        let root = fixtures().join("memory-missing");
        assert!(read_meminfo(&root).unwrap_err().is_not_found());
        assert!(read_vmstat(&root).unwrap_err().is_not_found());
    }
}
