// SPDX-License-Identifier: Apache-2.0
//! Running hook jobs to the end in a blocking loop of its own, for the one-shot command line
//! (and the tests): poll(2) over the runners' descriptors and a SIGCHLD signalfd.

use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Finished, Job, Outcome, Runner};
use crate::sys::{self, POLLIN, Signal, SignalFd};

/// The longest `drive` sleeps without looking at its children (a SIGCHLD taken by another
/// thread would otherwise go unnoticed).
const TICK: Duration = Duration::from_millis(100);

/// Runs `job` to the end, blocking, and returns its outcomes: for the one-shot command line.
/// SIGCHLD is blocked in the calling thread and read through a signalfd.
pub fn run_blocking(job: Job) -> Vec<Outcome> {
    let mut r = Runner::new();
    let sigs = child_signals();
    // An empty runner always takes a job.
    let _ = r.submit(job, ());
    let mut done = drive(sigs.as_ref(), &mut [&mut r]);
    done.pop().map(|f| f.outcomes).unwrap_or_default()
}

/// A signalfd for SIGCHLD; without one, `drive` still looks every `TICK`.
pub(super) fn child_signals() -> Option<SignalFd> {
    SignalFd::new(&[Signal::Child])
        .map_err(|e| log::warn!("creating a signalfd for SIGCHLD: {e}"))
        .ok()
}

/// Runs the loop until every runner is idle; returns their finished jobs as they finished.
pub(super) fn drive<F>(
    sigs: Option<&SignalFd>,
    runners: &mut [&mut Runner<F>],
) -> Vec<Finished<F>> {
    let mut finished = Vec::new();
    loop {
        for r in runners.iter_mut() {
            finished.extend(r.take_finished());
        }
        if runners.iter().all(|r| r.is_idle()) {
            return finished;
        }
        let mut fds = Vec::new();
        for r in runners.iter() {
            fds.extend(r.poll_fds().into_iter().map(|(fd, ev)| sys::pollfd(fd, ev)));
        }
        fds.extend(sigs.map(|s| sys::pollfd(s.as_raw_fd(), POLLIN)));
        let now = sys::monotonic_now();
        let next = runners.iter().filter_map(|r| r.next_deadline()).min();
        let wait = next.map_or(TICK, |d| d.saturating_sub(now).min(TICK));
        // On a poll error the loop goes on by the clock; the timeout still ends every program.
        if let Err(e) = sys::poll(&mut fds, Some(wait)) {
            log::error!("poll: {e}");
        }
        if let Some(s) = sigs {
            let _ = s.read_all();
        }
        for r in runners.iter_mut() {
            for f in fds.iter().filter(|f| f.revents != 0) {
                r.on_ready(f.fd, f.revents);
            }
            r.on_sigchld();
            r.on_timer(sys::monotonic_now());
        }
    }
}
