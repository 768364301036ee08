// SPDX-License-Identifier: Apache-2.0
//! statvfs(3) of file systems that may hang (network, FUSE), measured off the loop: one
//! child process per mount (`guestd --statvfs-probe PATH`, i.e. `/proc/self/exe` in its
//! hidden probe mode), driven by the loop as an `exec::Child` whose group is SIGKILLed after
//! `TIMEOUT`. When every probe of a batch answered, was killed and reaped, or the batch's end
//! passed, the batch's file systems come back as `Notice::Measured` for the link that asked;
//! a mount that did not answer is left out, logged once (until it answers again).
//!
//! A probe that survives SIGKILL (a process stuck where the kernel does not let it die) is
//! kept and reaped whenever it ends; no new probe is started for its mount meanwhile, and at
//! most `MAX_RUNNING` probes exist at a time, so stuck ones cannot pile up.

use std::io::Write;
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::exec::{Child, Spec};
use crate::facts::disks::{self, Filesystem};
use crate::facts::mounts::Mount;
use crate::facts::under;
use crate::services::{LinkId, Notice, Requester};
use crate::sys::{self, FsStats};

/// How long one statvfs may take.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// After `TIMEOUT`, how long a killed probe has to be reaped before its batch is sent without
/// it.
const GRACE: Duration = Duration::from_millis(500);
/// Probes existing at most (running, or killed and not reaped yet).
pub const MAX_RUNNING: usize = 16;
/// The hidden command-line flag of the probe mode.
pub const FLAG: &str = "--statvfs-probe";
/// Bytes of a probe's answer kept.
const ANSWER_LIMIT: usize = 256;

/// The probe mode: statvfs(3) of `path`, printed on stdout as `ok FRSIZE BLOCKS BFREE BAVAIL`,
/// `file` (a bind-mounted regular file, not reported, as in the reference agent) or
/// `error TEXT`; the exit status is 0, 0 and 1.
pub fn run_probe(path: &Path) -> u8 {
    let (line, status) = if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        ("file".to_owned(), 0)
    } else {
        match sys::statvfs(path) {
            Ok(st) => {
                let FsStats {
                    frsize,
                    blocks,
                    bfree,
                    bavail,
                } = st;
                (format!("ok {frsize} {blocks} {bfree} {bavail}"), 0)
            }
            Err(e) => (format!("error {e}"), 1),
        }
    };
    let _ = writeln!(std::io::stdout(), "{line}");
    status
}

/// What a probe's output says: its statvfs numbers, `None` for a regular file, or why not.
fn parse_answer(out: &[u8]) -> Result<Option<FsStats>, String> {
    let text = String::from_utf8_lossy(out);
    let line = text.lines().next().unwrap_or_default();
    if line == "file" {
        return Ok(None);
    }
    if let Some(e) = line.strip_prefix("error ") {
        return Err(e.to_owned());
    }
    let n: Vec<u64> = (line.strip_prefix("ok ").unwrap_or_default())
        .split(' ')
        .filter_map(|x| x.parse().ok())
        .collect();
    match n[..] {
        [frsize, blocks, bfree, bavail] => Ok(Some(FsStats {
            frsize,
            blocks,
            bfree,
            bavail,
        })),
        _ => Err(format!("unexpected answer {line:?}")),
    }
}

/// The probes measuring the mounts one link asked about.
struct Batch {
    to: LinkId,
    probes: Vec<(Mount, Child)>,
    found: Vec<Filesystem>,
    /// Mount points that did not answer.
    silent: Vec<String>,
    /// When it is sent, whatever is missing.
    ends: Duration,
}

/// The probes under way.
pub struct Probes {
    /// The program and the arguments before the path: guestd's own probe mode.
    helper: (PathBuf, Vec<String>),
    timeout: Duration,
    batches: Vec<Batch>,
    /// Killed probes not reaped yet, with their mount points.
    stuck: Vec<(String, Child)>,
    /// Mount points that did not answer last time: logged once.
    silent: Vec<String>,
}

impl Default for Probes {
    fn default() -> Probes {
        Probes::with_helper("/proc/self/exe".into(), vec![FLAG.into()], TIMEOUT)
    }
}

impl Probes {
    /// Probes run as `program args... PATH`, each killed after `timeout`.
    pub fn with_helper(program: PathBuf, args: Vec<String>, timeout: Duration) -> Probes {
        Probes {
            helper: (program, args),
            timeout,
            batches: Vec::new(),
            stuck: Vec::new(),
            silent: Vec::new(),
        }
    }

    fn running(&self) -> usize {
        self.stuck.len() + self.batches.iter().map(|b| b.probes.len()).sum::<usize>()
    }

    /// Starts measuring `mounts` (mount points under `root`) for link `to`; their file systems
    /// come back as one `Notice::Measured` (at once when no probe could start).
    pub fn measure(&mut self, to: LinkId, mounts: Vec<Mount>, root: &Path, n: &mut Vec<Notice>) {
        let now = sys::monotonic_now();
        let mut batch = Batch {
            to,
            probes: Vec::new(),
            found: Vec::new(),
            silent: Vec::new(),
            ends: now + self.timeout + GRACE,
        };
        for m in mounts {
            if self.stuck.iter().any(|(p, _)| *p == m.mount_point) {
                log::debug!("statvfs {}: the last probe is still stuck", m.mount_point);
                batch.silent.push(m.mount_point);
                continue;
            }
            if self.running() + batch.probes.len() >= MAX_RUNNING {
                log::warn!(
                    "statvfs {}: {MAX_RUNNING} probes already run; left out",
                    m.mount_point
                );
                continue;
            }
            let mut args = self.helper.1.clone();
            args.push(under(root, &m.mount_point).to_string_lossy().into_owned());
            let spec = Spec {
                program: self.helper.0.clone(),
                args,
                cwd: Some("/".into()),
                limit: ANSWER_LIMIT,
                timeout: Some(self.timeout),
                ..Spec::default()
            };
            match Child::start(spec) {
                Ok(c) => batch.probes.push((m, c)),
                Err(e) => log::warn!("statvfs {}: {e}", m.mount_point),
            }
        }
        self.batches.push(batch);
        self.settle(now, n);
    }

    /// The pipes to poll, with their events.
    pub fn poll_fds(&self, out: &mut Vec<(RawFd, i16)>) {
        for b in &self.batches {
            for (_, c) in &b.probes {
                out.extend(c.poll_fds());
            }
        }
    }

    /// poll(2) reported `revents` on `fd`; descriptors not its own are ignored.
    pub fn on_ready(&mut self, fd: RawFd, revents: i16, n: &mut Vec<Notice>) {
        for b in &mut self.batches {
            for (_, c) in &mut b.probes {
                c.on_ready(fd, revents);
            }
        }
        self.settle(sys::monotonic_now(), n);
    }

    /// A SIGCHLD arrived: reaps the probes that ended.
    pub fn on_sigchld(&mut self, n: &mut Vec<Notice>) {
        self.on_timer(sys::monotonic_now(), n);
    }

    /// Kills probes past their time, reaps ended ones, sends the batches that are complete.
    pub fn on_timer(&mut self, now: Duration, n: &mut Vec<Notice>) {
        for b in &mut self.batches {
            for (_, c) in &mut b.probes {
                c.on_timer(now);
            }
        }
        for (_, c) in &mut self.stuck {
            c.on_sigchld();
        }
        self.settle(now, n);
    }

    /// The earliest deadline: a probe's kill or drain, a batch's end.
    pub fn deadline(&self) -> Option<Duration> {
        let batches = self.batches.iter();
        let probes = batches.clone().flat_map(|b| &b.probes);
        probes
            .filter_map(|(_, c)| c.next_deadline())
            .chain(batches.map(|b| b.ends))
            .min()
    }

    /// Collects the answers of finished probes; sends each batch whose probes all finished or
    /// whose end passed; forgets stuck probes that were reaped at last.
    fn settle(&mut self, now: Duration, n: &mut Vec<Notice>) {
        self.stuck.retain(|(p, c)| {
            let done = c.is_done();
            if done {
                log::info!("statvfs {p}: the stuck probe ended");
            }
            !done
        });
        let mut i = 0;
        while i < self.batches.len() {
            let b = &mut self.batches[i];
            let mut j = 0;
            while j < b.probes.len() {
                let Some(out) = b.probes[j].1.take_output() else {
                    j += 1;
                    continue;
                };
                let (m, _) = b.probes.swap_remove(j);
                if out.killed {
                    b.silent.push(m.mount_point);
                    continue;
                }
                match parse_answer(&out.stdout.bytes) {
                    Ok(Some(st)) => {
                        let fs = disks::filesystem(&m, &st);
                        if fs.total != 0 || fs.used != 0 {
                            b.found.push(fs);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => log::debug!("statvfs {}: {e}", m.mount_point),
                }
            }
            if !b.probes.is_empty() && now < b.ends {
                i += 1;
                continue;
            }
            let mut b = self.batches.swap_remove(i);
            for (m, c) in b.probes.drain(..) {
                b.silent.push(m.mount_point.clone());
                self.stuck.push((m.mount_point, c));
            }
            self.log_silent(&b.silent, &b.found);
            n.push(Notice::Measured {
                to: Requester {
                    link: b.to,
                    id: None,
                },
                filesystems: b.found,
            });
        }
    }

    /// Logs each mount point that stopped answering once, and when it answers again.
    fn log_silent(&mut self, silent: &[String], found: &[Filesystem]) {
        for p in silent.iter().filter(|p| !self.silent.contains(p)) {
            log::warn!(
                "statvfs {p} did not answer within {} ms: left out of disks-usage while it \
                 does not answer",
                self.timeout.as_millis()
            );
        }
        for p in self
            .silent
            .iter()
            .filter(|p| found.iter().any(|f| f.mount_point == **p))
        {
            log::info!("statvfs {p} answers again");
        }
        self.silent = silent.to_vec();
    }
}

#[cfg(test)]
mod tests;
