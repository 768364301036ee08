// SPDX-License-Identifier: Apache-2.0
//! Tests of the time zone facts, against fixture trees and hand-built TZif data.

use super::*;
use crate::facts::fixtures;

fn zoneinfo(root: &str, zone: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(root).join("usr/share/zoneinfo").join(zone)).unwrap()
}

/// A TZif file with the given transitions `(time, type)`, types `(utoff, isdst)` and
/// footer TZ string (`None`: version 1, no footer).
fn tzif(transitions: &[(i64, u8)], types: &[(i32, bool)], footer: Option<&str>) -> Vec<u8> {
    let header = |version: u8| {
        let mut h = b"TZif".to_vec();
        h.push(version);
        h.extend([0; 15]);
        let counts = [0, 0, 0, transitions.len(), types.len(), 4];
        for n in counts {
            h.extend(u32::try_from(n).unwrap().to_be_bytes());
        }
        h
    };
    let block = |wide: bool| {
        let mut b = Vec::new();
        for &(t, _) in transitions {
            if wide {
                b.extend(t.to_be_bytes());
            } else {
                b.extend(i32::try_from(t).unwrap_or(i32::MAX).to_be_bytes());
            }
        }
        b.extend(transitions.iter().map(|&(_, i)| i));
        for &(utoff, dst) in types {
            b.extend(utoff.to_be_bytes());
            b.extend([u8::from(dst), 0]);
        }
        b.extend(b"XYZ\0");
        b
    };
    match footer {
        None => [header(0), block(false)].concat(),
        Some(tz) => [
            header(b'2'),
            block(false),
            header(b'2'),
            block(true),
            format!("\n{tz}\n").into_bytes(),
        ]
        .concat(),
    }
}

#[test]
fn zone_from_link_targets() {
    let z = |s: &str| zone_from_link_target(Path::new(s));
    assert_eq!(
        z("/usr/share/zoneinfo/Europe/Prague").as_deref(),
        Some("Europe/Prague")
    );
    assert_eq!(
        z("/usr/share/zoneinfo/America/Argentina/Buenos_Aires").as_deref(),
        Some("America/Argentina/Buenos_Aires")
    );
    assert_eq!(
        z("../usr/share/zoneinfo/posix/Europe/Prague").as_deref(),
        Some("Europe/Prague")
    );
    assert_eq!(
        z("/usr/share/zoneinfo/right/Asia/Tokyo").as_deref(),
        Some("Asia/Tokyo")
    );
    assert_eq!(z("/usr/share/zoneinfo/UTC").as_deref(), Some("UTC"));
    assert_eq!(z("/opt/tz/Europe/Berlin").as_deref(), Some("Europe/Berlin"));
    assert_eq!(z("Berlin").as_deref(), Some("Berlin"));
    assert_eq!(z("/usr/share/zoneinfo/"), None);
    assert_eq!(z("/"), None);
}

#[test]
fn posix_tz_strings() {
    assert_eq!(
        parse_posix_tz_std_offset("CET-1CEST,M3.5.0,M10.5.0/3"),
        Some(60)
    );
    assert_eq!(
        parse_posix_tz_std_offset("EST5EDT,M3.2.0,M11.1.0"),
        Some(-300)
    );
    assert_eq!(parse_posix_tz_std_offset("<+0530>-5:30"), Some(330));
    assert_eq!(parse_posix_tz_std_offset("IST-5:30"), Some(330));
    assert_eq!(parse_posix_tz_std_offset("UTC0"), Some(0));
    assert_eq!(parse_posix_tz_std_offset("<-03>3"), Some(-180));
    assert_eq!(parse_posix_tz_std_offset("NST+3:30NDT"), Some(-210));
    assert_eq!(
        parse_posix_tz_std_offset("<+1245>-12:45<+1345>,M9.5.0/2:45"),
        Some(765)
    );
    assert_eq!(parse_posix_tz_std_offset("XXX-0:20:30"), Some(20));
}

#[test]
fn bad_posix_tz_strings() {
    for bad in [
        "", "UTC", "U0", "<+05", "<>5", "<a b>5", "EST", "EST5:", "EST5:60", "EST200", "EST5;x",
        "EST-",
    ] {
        assert_eq!(parse_posix_tz_std_offset(bad), None, "{bad:?}");
    }
}

#[test]
fn real_tzif_files() {
    assert_eq!(
        parse_tzif_std_offset(&zoneinfo("tz-prague", "Europe/Prague")),
        Some(60)
    );
    assert_eq!(
        parse_tzif_std_offset(&zoneinfo("tz-newyork", "posix/America/New_York")),
        Some(-300)
    );
    assert_eq!(
        parse_tzif_std_offset(&zoneinfo("tz-kolkata-link", "Asia/Kolkata")),
        Some(330)
    );
}

#[test]
fn v1_data_uses_last_standard_transition() {
    // LMT, then standard +1h, a DST period, back to standard +1h.
    let data = tzif(
        &[(-2_000_000_000, 1), (0, 2), (100, 1)],
        &[(3000, false), (3600, false), (7200, true)],
        None,
    );
    assert_eq!(parse_tzif_std_offset(&data), Some(60));
    // The last transition is into DST: the one before it counts.
    let data = tzif(
        &[(0, 0), (100, 1)],
        &[(-18000, false), (-14400, true)],
        None,
    );
    assert_eq!(parse_tzif_std_offset(&data), Some(-300));
}

#[test]
fn data_without_transitions() {
    let data = tzif(&[], &[(7200, true), (19800, false)], None);
    assert_eq!(parse_tzif_std_offset(&data), Some(330));
    let data = tzif(&[], &[(7200, true)], None);
    assert_eq!(parse_tzif_std_offset(&data), Some(120));
}

#[test]
fn v2_footer_wins_and_unusable_footer_falls_back() {
    let types = [(3600, false), (7200, true)];
    let trans = [(0, 0), (5_000_000_000, 1)];
    assert_eq!(
        parse_tzif_std_offset(&tzif(&trans, &types, Some("<+03>-3"))),
        Some(180)
    );
    assert_eq!(
        parse_tzif_std_offset(&tzif(&trans, &types, Some(""))),
        Some(60)
    );
    assert_eq!(
        parse_tzif_std_offset(&tzif(&trans, &types, Some("garbage"))),
        Some(60)
    );
}

#[test]
fn malformed_tzif_is_none() {
    assert_eq!(parse_tzif_std_offset(b""), None);
    assert_eq!(
        parse_tzif_std_offset(b"this is not a tzif file at all, just some text\n"),
        None
    );
    // No types at all.
    assert_eq!(parse_tzif_std_offset(&tzif(&[], &[], None)), None);
    // A transition to a type that does not exist.
    assert_eq!(
        parse_tzif_std_offset(&tzif(&[(0, 5)], &[(3600, false)], None)),
        None
    );
    // Huge counts.
    let mut data = tzif(&[], &[(3600, false)], None);
    data[32..36].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(parse_tzif_std_offset(&data), None);
}

#[test]
fn truncated_tzif_never_panics() {
    let data = zoneinfo("tz-prague", "Europe/Prague");
    let v1_end = HEADER_LEN + Header::parse(&data).unwrap().block_len(4).unwrap();
    for len in 0..data.len() {
        let got = parse_tzif_std_offset(&data[..len]);
        if len < v1_end + HEADER_LEN {
            assert_eq!(got, None, "length {len}");
        }
    }
}

#[test]
fn reads_absolute_symlink() {
    let tz = read_timezone(&fixtures().join("tz-prague"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "Europe/Prague".into(),
            offset: 60
        }
    );
}

#[test]
fn reads_relative_posix_symlink() {
    let tz = read_timezone(&fixtures().join("tz-newyork"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "America/New_York".into(),
            offset: -300
        }
    );
}

#[test]
fn follows_symlink_chain_under_root() {
    // etc/localtime -> /usr/share/zoneinfo/Asia/Calcutta -> /usr/share/zoneinfo/Asia/Kolkata
    let tz = read_timezone(&fixtures().join("tz-kolkata-link"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "Asia/Calcutta".into(),
            offset: 330
        }
    );
}

#[test]
fn dangling_symlink_is_not_resolved_on_the_host() {
    // The target exists on most hosts, but not under this root.
    let tz = read_timezone(&fixtures().join("tz-dangling"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "Asia/Kolkata".into(),
            offset: 0
        }
    );
}

#[test]
fn regular_localtime_with_etc_timezone() {
    let tz = read_timezone(&fixtures().join("tz-kolkata-copy"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "Asia/Kolkata".into(),
            offset: 330
        }
    );
}

#[test]
fn missing_localtime_uses_etc_timezone_and_zoneinfo() {
    let tz = read_timezone(&fixtures().join("tz-timezone-file"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "Europe/Prague".into(),
            offset: 60
        }
    );
}

#[test]
fn sysconfig_clock_zone() {
    let tz = read_timezone(&fixtures().join("tz-sysconfig"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "America/New_York".into(),
            offset: -300
        }
    );
}

#[test]
fn garbage_localtime_without_zone() {
    let tz = read_timezone(&fixtures().join("tz-garbage"));
    assert_eq!(
        tz,
        TimeZone {
            zone: String::new(),
            offset: 0
        }
    );
}

#[test]
fn nothing_at_all_is_utc() {
    let tz = read_timezone(&fixtures().join("tz-missing"));
    assert_eq!(
        tz,
        TimeZone {
            zone: "UTC".into(),
            offset: 0
        }
    );
}

#[test]
fn zone_names_cannot_escape_zoneinfo() {
    assert_eq!(
        zoneinfo_rel("Europe/Prague").as_deref(),
        Some("usr/share/zoneinfo/Europe/Prague")
    );
    assert_eq!(zoneinfo_rel("../../etc/shadow"), None);
    assert_eq!(zoneinfo_rel("/etc/shadow"), None);
    assert_eq!(zoneinfo_rel(""), None);
}

#[test]
fn local_type_follows_dst_in_the_footer_rule() {
    let data = zoneinfo("tz-prague", "Europe/Prague");
    // 2026-01-15 12:00 UTC and 2026-07-15 12:00 UTC.
    let winter = parse_tzif_at(&data, 1_768_478_400).unwrap();
    assert_eq!(
        (winter.offset, winter.abbrev.as_str(), winter.dst),
        (3600, "CET", false)
    );
    let summer = parse_tzif_at(&data, 1_784_116_800).unwrap();
    assert_eq!(
        (summer.offset, summer.abbrev.as_str(), summer.dst),
        (7200, "CEST", true)
    );
    // 2040, past any transition table: the footer rule decides.
    let later = parse_tzif_at(&data, 2_225_966_400).unwrap();
    assert_eq!(later.abbrev, "CEST");
    // 1900, before the first transition: type 0 (local mean time).
    assert!(parse_tzif_at(&data, -2_208_988_800).is_some());
}

#[test]
fn local_type_of_kolkata_and_rules() {
    let data = zoneinfo("tz-kolkata-link", "Asia/Kolkata");
    let t = parse_tzif_at(&data, 1_768_478_400).unwrap();
    assert_eq!((t.offset, t.abbrev.as_str()), (19800, "IST"));
    let at = |tz: &str, now: i64| posix_tz_at(tz, now).map(|t| (t.offset, t.abbrev));
    let eu = "CET-1CEST,M3.5.0,M10.5.0/3";
    // 2026-03-29 01:00 UTC is the switch to CEST; one second before is still CET.
    assert_eq!(at(eu, 1_774_746_000), Some((7200, "CEST".into())));
    assert_eq!(at(eu, 1_774_745_999), Some((3600, "CET".into())));
    // 2026-10-25 01:00 UTC is the switch back.
    assert_eq!(at(eu, 1_792_890_000), Some((3600, "CET".into())));
    assert_eq!(at(eu, 1_792_889_999), Some((7200, "CEST".into())));
    // Southern hemisphere: DST spans the new year.
    let nz = "NZST-12NZDT,M9.5.0,M4.1.0/3";
    assert_eq!(at(nz, 1_768_478_400), Some((46800, "NZDT".into())));
    assert_eq!(at(nz, 1_784_116_800), Some((43200, "NZST".into())));
    assert_eq!(at("UTC0", 0), Some((0, "UTC".into())));
    assert_eq!(at("<+0530>-5:30", 0), Some((19800, "+0530".into())));
    // US default rules when none are given; July is daylight time.
    assert_eq!(at("EST5EDT", 1_784_116_800), Some((-14400, "EDT".into())));
    assert_eq!(at("J60", 0), None);
    assert_eq!(at("CET-1CEST,M3.5.0", 0), None);
}

#[test]
fn civil_dates() {
    assert_eq!(days_from_civil(1970, 1, 1), 0);
    assert_eq!(days_from_civil(2000, 3, 1), 11017);
    assert_eq!(year_of_days(11016), 2000);
    assert_eq!(year_of_days(-1), 1969);
    // 2026-03-29 is the last Sunday of March 2026.
    assert_eq!(
        rule_day(2026, RuleDate::Month(3, 5, 0)),
        days_from_civil(2026, 3, 29)
    );
    assert_eq!(
        rule_day(2024, RuleDate::Julian1(60)),
        days_from_civil(2024, 3, 1)
    );
    assert_eq!(
        rule_day(2024, RuleDate::Julian0(59)),
        days_from_civil(2024, 2, 29)
    );
}

#[test]
fn local_type_under_a_root() {
    let t = read_local_type(&fixtures().join("tz-kolkata-link"), 0).unwrap();
    assert_eq!(t.abbrev, "IST");
    // No etc/localtime at all: UTC.
    let t = read_local_type(&fixtures().join("no-such-root"), 0).unwrap();
    assert_eq!((t.offset, t.abbrev.as_str()), (0, "UTC"));
}
