// SPDX-License-Identifier: Apache-2.0
//! `make budget` (run by `make test`): guestd's instruction counts under callgrind for one
//! heartbeat tick (oVirt, host attached and silent) and one QGA `guest-ping`, against the
//! budgets in tests/budgets.txt. Fails when a count exceeds its budget by more than 20%.
//! Instruction counts do not depend on machine speed or load. Skips, saying so, where
//! valgrind is not installed or GUESTD_BIN (the size-report build `make budget` makes) is
//! not set: a debug build's counts are not comparable with the budgets.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::callgrind::{self, Callgrind};
use common::{Dir, Peer};

/// How far over its budget a measure may go.
const SLACK: f64 = 1.20;

fn budgets() -> Vec<(String, u64)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/budgets.txt");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l
                .split_once(char::is_whitespace)
                .expect("NAME INSTRUCTIONS");
            (k.to_owned(), v.trim().parse().expect("a whole number"))
        })
        .collect()
}

#[test]
#[ignore = "callgrind budget; run with `make budget`"]
fn instruction_budgets() {
    if !callgrind::available() {
        println!("budget: SKIPPED: valgrind (with callgrind_control) is not installed");
        return;
    }
    let Some(bin) = std::env::var_os("GUESTD_BIN").map(PathBuf::from) else {
        println!("budget: SKIPPED: GUESTD_BIN is not set (run `make budget`)");
        return;
    };
    let dir = Dir::new("budget");
    let d = dir.path();
    let ovirt = d.join("g.sock");
    let qga = d.join("qga.sock");
    let mut args = vec![
        "--config".to_owned(),
        "/dev/null".to_owned(),
        "-d".to_owned(),
        "0".to_owned(),
        "-t".to_owned(),
        "1".to_owned(),
        format!("--channel=unix-listen:{}", ovirt.display()),
        format!("--qga-channel=unix-listen:{}", qga.display()),
    ];
    args.extend(common::isolation(d));
    let mut cg = Callgrind::spawn(d, &bin, &args);

    let mut measured = vec![(
        "guest-ping",
        callgrind::qga_request(&mut cg, &qga, "guest-ping", 50, 200),
    )];
    let mut peer = connect(&ovirt);
    measured.push((
        "heartbeat-tick",
        callgrind::ovirt_tick(&mut cg, &mut peer, 3),
    ));

    let budgets = budgets();
    println!(
        "\n{:<16} {:>12} {:>12} {:>8}",
        "measure", "measured", "budget", "ratio"
    );
    let mut over = Vec::new();
    for (name, n) in &measured {
        let budget = budgets
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("tests/budgets.txt has no budget for {name}"));
        let ratio = *n as f64 / budget as f64;
        println!("{name:<16} {n:>12} {budget:>12} {ratio:>8.2}");
        if ratio > SLACK {
            over.push(format!(
                "{name}: {n} instructions, budget {budget} (+20% allowed)"
            ));
        }
    }
    assert!(over.is_empty(), "over budget:\n{}", over.join("\n"));
}

fn connect(path: &Path) -> Peer {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never accepted",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Peer::connect(path)
}
