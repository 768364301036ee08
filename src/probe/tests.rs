// SPDX-License-Identifier: Apache-2.0
//! Tests of `probe` with a shell script standing in for guestd's probe mode: it answers
//! for `*ok`, `*zero`, `*file` and `*bad` paths and never answers for `*hang` ones.

use std::time::Instant;

use super::*;
use crate::exec::testing::{assert_no_children, serial};
use crate::facts::mounts::{mount, on};

const SCRIPT: &str = r#"case "$1" in
*hang) exec /bin/sleep 30;;
*ok) echo ok 4096 1000 250 200;;
*zero) echo ok 4096 0 0 0;;
*file) echo file;;
*) echo "error No such file or directory"; exit 1;;
esac"#;

fn probes(timeout: Duration) -> Probes {
    let args = vec!["-c".into(), SCRIPT.into(), "sh".into()];
    Probes::with_helper("/bin/sh".into(), args, timeout)
}

/// Drives `p` as the loop would (no SIGCHLD is caught here: it looks every 20 ms) until it
/// sends a notice; the notice and how long that took.
fn drive(p: &mut Probes, mut n: Vec<Notice>) -> (Notice, Duration) {
    let t = Instant::now();
    while n.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "no notice");
        let mut fds = Vec::new();
        p.poll_fds(&mut fds);
        let mut fds: Vec<_> = fds.iter().map(|&(fd, ev)| sys::pollfd(fd, ev)).collect();
        let now = sys::monotonic_now();
        let tick = Duration::from_millis(20);
        let wait = p
            .deadline()
            .map_or(tick, |d| d.saturating_sub(now).min(tick));
        sys::poll(&mut fds, Some(wait)).unwrap();
        for f in &fds {
            p.on_ready(f.fd, f.revents, &mut n);
        }
        p.on_sigchld(&mut n);
    }
    assert_eq!(n.len(), 1, "{n:?}");
    (n.remove(0), t.elapsed())
}

#[test]
fn answers_are_kept_and_a_mount_that_never_answers_is_left_out_in_time() {
    let _g = serial();
    let mut p = probes(Duration::from_millis(300));
    let mounts = vec![
        on(0, 50, mount("/srv/hang", "nfs4", "dead:/x")),
        on(0, 51, mount("/mnt/ok", "fuse.sshfs", "u@h:")),
        on(0, 52, mount("/mnt/zero", "fuse", "z")),
        on(0, 53, mount("/etc/file", "nfs", "h:/f")),
        on(0, 54, mount("/mnt/bad", "cifs", "//h/s")),
    ];
    let mut n = Vec::new();
    let t = Instant::now();
    p.measure(7, mounts, Path::new("/root"), &mut n);
    assert!(n.is_empty(), "nothing can be in yet");
    let (notice, _) = drive(&mut p, n);
    let took = t.elapsed();
    let Notice::Measured { to, filesystems } = notice else {
        panic!("{notice:?}");
    };
    assert_eq!(to, Requester { link: 7, id: None });
    assert_eq!(
        filesystems,
        [Filesystem {
            device: "u@h:".into(),
            fs_type: "fuse.sshfs".into(),
            mount_point: "/mnt/ok".into(),
            major_minor: Some((0, 51)),
            total: 4_096_000,
            used: 3_072_000,
            available: 819_200,
        }]
    );
    // Sent once the hanging probe was killed and reaped: after its 300 ms, well before the
    // 30 s it would take.
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(p.batches.is_empty() && p.stuck.is_empty());
    assert_eq!(p.silent, ["/srv/hang"]);
    assert_eq!(p.deadline(), None);
    assert_no_children();
}

#[test]
fn nothing_to_measure_is_answered_at_once() {
    let mut p = probes(TIMEOUT);
    let mut n = Vec::new();
    p.measure(1, Vec::new(), Path::new("/"), &mut n);
    assert_eq!(
        n,
        [Notice::Measured {
            to: Requester { link: 1, id: None },
            filesystems: Vec::new()
        }]
    );
    assert_eq!(p.deadline(), None);
}

#[test]
fn at_most_max_running_probes_exist() {
    let _g = serial();
    let mut p = probes(Duration::from_millis(200));
    let many = (0..MAX_RUNNING + 3)
        .map(|i| on(0, 60, mount(&format!("/m/{i}/hang"), "nfs", "h:/")))
        .collect();
    let mut n = Vec::new();
    p.measure(0, many, Path::new("/"), &mut n);
    assert_eq!(p.running(), MAX_RUNNING);
    let (notice, _) = drive(&mut p, n);
    assert!(matches!(notice, Notice::Measured { filesystems, .. } if filesystems.is_empty()));
    assert_eq!(p.silent.len(), MAX_RUNNING);
    assert_no_children();
}

#[test]
fn probe_answers_parse() {
    let st = parse_answer(b"ok 4096 10 5 4\n").unwrap().unwrap();
    assert_eq!(
        (st.frsize, st.blocks, st.bfree, st.bavail),
        (4096, 10, 5, 4)
    );
    assert_eq!(parse_answer(b"file\n"), Ok(None));
    assert_eq!(
        parse_answer(b"error Permission denied (os error 13)\n"),
        Err("Permission denied (os error 13)".into())
    );
    assert!(parse_answer(b"ok 1 2 3\n").is_err());
    assert!(parse_answer(b"").is_err());
}
