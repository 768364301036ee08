// SPDX-License-Identifier: Apache-2.0
//! How `guestctl` prints: the `info` table of the facts collected, values as text, and
//! timestamps for `watch`.

use std::time::{SystemTime, UNIX_EPOCH};

use guestd::facts::calendar::civil_from_days;
use serde_json::{Map, Value};

pub fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

pub fn print_table(f: &Map<String, Value>) {
    let g = |msg: &str, field: &str| {
        f.get(msg)
            .map(|m| s(&m[field]))
            .unwrap_or_else(|| "-".into())
    };
    let row = |k: &str, v: String| println!("{k:<13} {v}");
    row("host name", g("host-name", "name"));
    row("fqdn", g("fqdn", "fqdn"));
    if let Some(o) = f.get("os-info") {
        row(
            "os",
            format!(
                "{} {} ({}) {} {}",
                s(&o["distribution"]),
                s(&o["version"]),
                s(&o["codename"]),
                s(&o["type"]),
                s(&o["arch"])
            ),
        );
    }
    row("kernel", g("os-version", "version"));
    if let Some(t) = f.get("timezone") {
        row(
            "timezone",
            format!(
                "{} (UTC{:+} min)",
                s(&t["zone"]),
                t["offset"].as_i64().unwrap_or(0)
            ),
        );
    }
    if let Some(h) = f.get("heartbeat") {
        let ms = &h["memory-stat"];
        row(
            "memory",
            format!(
                "{} MiB free of {} MiB (unused {} KiB, cached {} KiB, swap used {} KiB)",
                s(&h["free-ram"]),
                ms["mem_total"].as_u64().unwrap_or(0) / 1024,
                s(&ms["mem_unused"]),
                s(&ms["mem_cached"]),
                s(&ms["swap_usage"])
            ),
        );
    }
    row("users", g("active-user", "name"));
    for (i, iface) in f
        .get("network-interfaces")
        .and_then(|m| m["interfaces"].as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mut addrs: Vec<String> = Vec::new();
        for key in ["inet", "inet6"] {
            addrs.extend(iface[key].as_array().into_iter().flatten().map(s));
        }
        let hw = s(&iface["hw"]);
        let hw = if hw.is_empty() { "-".to_owned() } else { hw };
        row(
            if i == 0 { "interfaces" } else { "" },
            format!("{:<8} {hw:<17} {}", s(&iface["name"]), addrs.join(" ")),
        );
    }
    for (i, d) in f
        .get("disks-usage")
        .and_then(|m| m["disks"].as_array())
        .into_iter()
        .flatten()
        .enumerate()
    {
        let mib = |k: &str| d[k].as_u64().unwrap_or(0) / (1024 * 1024);
        row(
            if i == 0 { "disks" } else { "" },
            format!(
                "{:<12} {:<6} {} of {} MiB used",
                s(&d["path"]),
                s(&d["fs"]),
                mib("used"),
                mib("total")
            ),
        );
    }
    let apps: Vec<String> = f
        .get("applications")
        .and_then(|m| m["applications"].as_array())
        .into_iter()
        .flatten()
        .map(s)
        .collect();
    row(
        "applications",
        if apps.is_empty() {
            "-".into()
        } else {
            apps.join(" ")
        },
    );
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for now (UTC, no time crate).
pub fn timestamp() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}
