// SPDX-License-Identifier: Apache-2.0
//! Per-source failure logging: which fact sources are failing, so a source that stays broken
//! is reported once at warn level (then at debug level) instead of on every period.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The fact sources currently failing, by name. The owner calls `failed` or `ok` after each
/// attempt to read a source.
#[derive(Debug, Default)]
pub struct Health {
    failing: BTreeSet<&'static str>,
    /// The last `note` of each source.
    notes: BTreeMap<&'static str, String>,
}

impl Health {
    pub fn new() -> Health {
        Health::default()
    }

    /// Logs that `source` failed with `err`: at warn level the first time, at debug level
    /// while it keeps failing.
    pub fn failed(&mut self, source: &'static str, err: &dyn fmt::Display) {
        if self.failing.insert(source) {
            log::warn!("{source}: {err}");
        } else {
            log::debug!("{source}: {err}");
        }
    }

    /// Notes that `source` was read; logs "readable again" (info level) if it was failing.
    pub fn ok(&mut self, source: &'static str) {
        if self.failing.remove(source) {
            log::info!("{source}: readable again");
        }
    }

    /// Logs `what` about `source` at debug level when it differs from the last note (e.g.
    /// which file a fact is read from): said once, not on every period.
    pub fn note(&mut self, source: &'static str, what: &dyn fmt::Display) {
        let what = what.to_string();
        if self.notes.get(source) != Some(&what) {
            log::debug!("{source}: {what}");
            self.notes.insert(source, what);
        }
    }

    /// Whether `source` failed at its last attempt.
    pub fn is_failing(&self, source: &str) -> bool {
        self.failing.contains(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_failing_sources_until_they_recover() {
        let mut h = Health::new();
        h.ok("meminfo");
        assert!(!h.is_failing("meminfo"));
        h.failed("meminfo", &"gone");
        h.failed("meminfo", &"still gone");
        h.failed("users", &"gone");
        assert!(h.is_failing("meminfo") && h.is_failing("users"));
        h.ok("meminfo");
        assert!(!h.is_failing("meminfo") && h.is_failing("users"));
        h.failed("meminfo", &"gone again");
        assert!(h.is_failing("meminfo"));
    }
}
