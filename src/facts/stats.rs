// SPDX-License-Identifier: Apache-2.0
//! Kernel counters: the load average (`/proc/loadavg`), per-CPU times (`/proc/stat`) and
//! per-device I/O statistics (`/proc/diskstats`).

use std::path::Path;

use super::{Error, read_text, under};

/// Most entries read from one counter file (CPUs, block devices).
pub const MAX_ENTRIES: usize = 65536;

/// The 1, 5 and 15 minute load averages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    /// Over the last minute.
    pub load1: f64,
    /// Over the last 5 minutes.
    pub load5: f64,
    /// Over the last 15 minutes.
    pub load15: f64,
}

/// Parses `/proc/loadavg` (`0.16 0.25 0.46 1/87 24826`); `None` when malformed.
pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut f = text.split_whitespace().map(parse_decimal);
    let mut next = || f.next()?;
    Some(LoadAvg {
        load1: next()?,
        load5: next()?,
        load15: next()?,
    })
}

/// A non-negative decimal such as `12.34` (the kernel writes two decimals). Parsed by hand:
/// the general float parser and its tables would add 12 KB to the binary for this one use.
fn parse_decimal(word: &str) -> Option<f64> {
    let (int, frac) = word.split_once('.').unwrap_or((word, ""));
    let digits = |s: &str| !s.is_empty() && s.len() <= 15 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !(frac.is_empty() || digits(frac)) {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    let mut value = whole as f64;
    if !frac.is_empty() {
        let parts: u64 = frac.parse().ok()?;
        let scale = 10u64.checked_pow(u32::try_from(frac.len()).ok()?)?;
        value += parts as f64 / scale as f64;
    }
    Some(value)
}

/// Reads `proc/loadavg` under `root`.
pub fn read_loadavg(root: &Path) -> Result<LoadAvg, Error> {
    const REL: &str = "proc/loadavg";
    let text = read_text(root, REL)?;
    parse_loadavg(&text).ok_or_else(|| Error::Parse {
        path: under(root, REL),
        reason: format!("malformed load average {:?}", text.trim()),
    })
}

/// One CPU's times from a `cpuN` line of `/proc/stat`, in clock ticks. `times` holds the
/// columns present, in order: user, nice, system, idle, then (newer kernels) iowait, irq,
/// softirq, steal, guest, guest_nice; at least the first four.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuTimes {
    /// N of `cpuN`.
    pub cpu: u32,
    /// The columns, in `CPU_COLUMNS` order.
    pub times: Vec<u64>,
}

/// The column names of a `cpuN` line, in order.
pub const CPU_COLUMNS: [&str; 10] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "irq",
    "softirq",
    "steal",
    "guest",
    "guestnice",
];

/// The `cpuN` lines of `/proc/stat` (the aggregate `cpu` line is skipped); lines with
/// fewer than four numbers are skipped, and columns past the ten known ones ignored.
pub fn parse_cpu_stat(text: &str) -> Vec<CpuTimes> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let cpu = f.next()?.strip_prefix("cpu")?.parse().ok()?;
            let times: Vec<u64> = f
                .take(CPU_COLUMNS.len())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (times.len() >= 4).then_some(CpuTimes { cpu, times })
        })
        .take(MAX_ENTRIES)
        .collect()
}

/// Reads the per-CPU lines of `proc/stat` under `root`.
pub fn read_cpu_stat(root: &Path) -> Result<Vec<CpuTimes>, Error> {
    Ok(parse_cpu_stat(&read_text(root, "proc/stat")?))
}

/// Clock ticks as milliseconds (`ticks * 1000 / hz`), saturating; `hz` 0 counts as 100.
pub fn ticks_to_ms(ticks: u64, hz: u64) -> u64 {
    let hz = if hz == 0 { 100 } else { hz };
    u64::try_from(u128::from(ticks) * 1000 / u128::from(hz)).unwrap_or(u64::MAX)
}

/// One line of `/proc/diskstats`: the device and its counters, in the kernel's order after
/// the name (see `DISK_COLUMNS`, and `disk_stats` for what they mean).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStat {
    /// Device major number.
    pub major: u64,
    /// Device minor number.
    pub minor: u64,
    /// Kernel name, e.g. `vda1`.
    pub name: String,
    /// The counters, in `DISK_COLUMNS` order (at most 17).
    pub fields: Vec<u64>,
}

/// The counters of a full `/proc/diskstats` line, in order (Documentation/admin-guide/
/// iostats.rst), under their QGA names.
pub const DISK_COLUMNS: [&str; 17] = [
    "read-ios",
    "read-merges",
    "read-sectors",
    "read-ticks",
    "write-ios",
    "write-merges",
    "write-sectors",
    "write-ticks",
    "ios-pgr",
    "total-ticks",
    "weight-ticks",
    "discard-ios",
    "discard-merges",
    "discard-sectors",
    "discard-ticks",
    "flush-ios",
    "flush-ticks",
];

/// The `/proc/diskstats` lines; lines with a bad major, minor or counter, or fewer than four
/// counters, are skipped.
pub fn parse_diskstats(text: &str) -> Vec<DiskStat> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let major = f.next()?.parse().ok()?;
            let minor = f.next()?.parse().ok()?;
            let name = f.next()?.to_owned();
            let fields: Vec<u64> = f
                .take(DISK_COLUMNS.len())
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            (fields.len() >= 4).then_some(DiskStat {
                major,
                minor,
                name,
                fields,
            })
        })
        .take(MAX_ENTRIES)
        .collect()
}

/// The named counters of a device, by how many the kernel wrote (qemu-ga's rules): 4 is the
/// old partition format (read ios, read sectors, write ios, write sectors); 11 or more the
/// full set up to `weight-ticks`; 15 or more adds the discard counters; 17 or more the flush
/// counters. Any other count gives no counters.
pub fn disk_stats(fields: &[u64]) -> Vec<(&'static str, u64)> {
    if fields.len() == 4 {
        return ["read-ios", "read-sectors", "write-ios", "write-sectors"]
            .into_iter()
            .zip(fields.iter().copied())
            .collect();
    }
    let n = match fields.len() {
        17.. => 17,
        15.. => 15,
        11.. => 11,
        _ => 0,
    };
    DISK_COLUMNS
        .into_iter()
        .zip(fields.iter().copied())
        .take(n)
        .collect()
}

/// Reads `proc/diskstats` under `root`.
pub fn read_diskstats(root: &Path) -> Result<Vec<DiskStat>, Error> {
    Ok(parse_diskstats(&read_text(root, "proc/diskstats")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;

    #[test]
    fn load_average() {
        assert_eq!(
            parse_loadavg("0.16 0.25 12.46 1/87 24826\n"),
            Some(LoadAvg {
                load1: 0.16,
                load5: 0.25,
                load15: 12.46
            })
        );
        assert_eq!(parse_loadavg("0.16 0.25\n"), None);
        assert_eq!(parse_loadavg("a b c"), None);
        assert_eq!(parse_loadavg("-1 0 0"), None);
    }

    #[test]
    fn cpu_lines_skip_the_aggregate_and_keep_the_columns_present() {
        let text = "cpu  403802 4469 57716 1188400 7494 0 2137 10970 0 0\n\
                    cpu0 194409 1626 29409 601824 3943 0 769 5608 0 0\n\
                    cpu1 10 20 30 40\n\
                    cpu2 1 2 3\n\
                    cpu3 1 2 3 4 5 6 7 8 9 10 11 12\n\
                    cpuX 1 2 3 4\n\
                    intr 1 2 3 4\n";
        let got = parse_cpu_stat(text);
        assert_eq!(
            got,
            vec![
                CpuTimes {
                    cpu: 0,
                    times: vec![194409, 1626, 29409, 601824, 3943, 0, 769, 5608, 0, 0]
                },
                CpuTimes {
                    cpu: 1,
                    times: vec![10, 20, 30, 40]
                },
                CpuTimes {
                    cpu: 3,
                    times: (1..=10).collect()
                },
            ]
        );
    }

    #[test]
    fn ticks_become_milliseconds() {
        assert_eq!(ticks_to_ms(194409, 100), 1_944_090);
        assert_eq!(ticks_to_ms(3, 250), 12);
        assert_eq!(ticks_to_ms(5, 0), 50);
        assert_eq!(ticks_to_ms(u64::MAX, 1), u64::MAX);
    }

    #[test]
    fn diskstats_field_counts() {
        let text = "   7       0 loop0 40 0 684 0 6 0 4 0 0 0 1 0 0 0 0 6 0\n\
                    253 0 vda 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n\
                    253 1 vda1 1 2 3 4 5 6 7 8 9 10 11\n\
                    3 1 hda1 100 200 300 400\n\
                    8 0 sdz 1 2 3 4 5 6\n\
                    8 1 sdz1 1 2 3\n\
                    x 1 bad 1 2 3 4\n";
        let got = parse_diskstats(text);
        let names: Vec<&str> = got.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["loop0", "vda", "vda1", "hda1", "sdz"]);
        assert_eq!((got[0].major, got[0].minor), (7, 0));
        // 17 counters: everything.
        let all = disk_stats(&got[0].fields);
        assert_eq!(all.len(), 17);
        assert_eq!(all[2], ("read-sectors", 684));
        assert_eq!(all[15], ("flush-ios", 6));
        assert_eq!(all[16], ("flush-ticks", 0));
        // 15: discard but no flush.
        let d = disk_stats(&got[1].fields);
        assert_eq!(d.len(), 15);
        assert_eq!(d[14], ("discard-ticks", 15));
        // 11: up to weight-ticks.
        let d = disk_stats(&got[2].fields);
        assert_eq!(d.len(), 11);
        assert_eq!(d[10], ("weight-ticks", 11));
        // 4: the old partition format.
        assert_eq!(
            disk_stats(&got[3].fields),
            vec![
                ("read-ios", 100),
                ("read-sectors", 200),
                ("write-ios", 300),
                ("write-sectors", 400)
            ]
        );
        // 6: no counters.
        assert!(disk_stats(&got[4].fields).is_empty());
    }

    #[test]
    fn reads_the_fixture() {
        let root = fixtures().join("qga-info");
        assert_eq!(read_loadavg(&root).unwrap().load5, 0.25);
        assert_eq!(read_cpu_stat(&root).unwrap().len(), 2);
        assert_eq!(read_diskstats(&root).unwrap().len(), 3);
    }
}
