// SPDX-License-Identifier: Apache-2.0
//! The periodic schedule (oVirt §2.1): one deadline per report, all counted from the same
//! start, so reports whose periods divide each other fall due together and the agent wakes
//! once for them. Deadlines advance by whole periods, so collection time never adds drift,
//! and missed ticks (a suspended guest) are skipped rather than replayed.

use std::time::Duration;

use crate::config::Config;

/// The periodic reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Heartbeat,
    Users,
    Applications,
    Cpus,
    Disks,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    task: Task,
    period: Duration,
    next: Duration,
}

/// Deadlines on the monotonic clock for every task.
#[derive(Debug, Clone)]
pub struct Schedule {
    entries: Vec<Entry>,
}

impl Schedule {
    /// A schedule whose tasks first fall due one period after `now`.
    pub fn new(now: Duration, periods: &[(Task, Duration)]) -> Schedule {
        Schedule {
            entries: periods
                .iter()
                .filter(|(_, p)| !p.is_zero())
                .map(|&(task, period)| Entry {
                    task,
                    period,
                    next: now + period,
                })
                .collect(),
        }
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.entries.iter().map(|e| e.next).min()
    }

    /// The tasks due at `now`, in schedule order; each moves to its next deadline after `now`.
    pub fn take_due(&mut self, now: Duration) -> Vec<Task> {
        let mut due = Vec::new();
        for e in &mut self.entries {
            if e.next <= now {
                due.push(e.task);
                let behind = (now - e.next).as_nanos() / e.period.as_nanos();
                let skip = u32::try_from(behind + 1).unwrap_or(u32::MAX);
                e.next += e.period.saturating_mul(skip);
            }
        }
        due
    }
}

/// The schedule the configuration asks for, counted from `now`.
pub fn for_config(now: Duration, c: &Config) -> Schedule {
    Schedule::new(
        now,
        &[
            (Task::Heartbeat, c.heartbeat),
            (Task::Users, c.user_rate),
            (Task::Applications, c.application_rate),
            (Task::Cpus, c.cpu_rate),
            (Task::Disks, c.disk_rate),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn tasks_with_dividing_periods_fall_due_together() {
        let mut sch = Schedule::new(s(100), &[(Task::Heartbeat, s(5)), (Task::Users, s(10))]);
        assert_eq!(sch.next_deadline(), Some(s(105)));
        assert_eq!(sch.take_due(s(104)), vec![]);
        assert_eq!(sch.take_due(s(105)), vec![Task::Heartbeat]);
        assert_eq!(sch.next_deadline(), Some(s(110)));
        assert_eq!(sch.take_due(s(110)), vec![Task::Heartbeat, Task::Users]);
        assert_eq!(sch.next_deadline(), Some(s(115)));
    }

    #[test]
    fn late_wakeups_do_not_drift_and_missed_ticks_are_skipped() {
        let mut sch = Schedule::new(s(0), &[(Task::Heartbeat, s(5))]);
        assert_eq!(
            sch.take_due(s(5) + Duration::from_millis(300)),
            vec![Task::Heartbeat]
        );
        assert_eq!(sch.next_deadline(), Some(s(10)));
        // Asleep for a minute: one heartbeat, then back on the 5 s grid.
        assert_eq!(sch.take_due(s(71)), vec![Task::Heartbeat]);
        assert_eq!(sch.next_deadline(), Some(s(75)));
    }
}
