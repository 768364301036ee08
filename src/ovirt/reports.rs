// SPDX-License-Identifier: Apache-2.0
//! Facts read and sent as oVirt messages: the start-up and refresh bursts in the reference
//! order (§2.1), the periodic reports, and the user diffs that become `session-logon` and
//! `session-logoff`. A source that cannot be read is reported to `Health`, not sent.

use std::time::Duration;

use super::messages::{self, Message};
use super::schedule::Task;
use super::wire::{self, MAX_API_VERSION};
use super::{Ctx, Session};
use crate::facts::{
    self, apps, containers, cpus, disks, hostname, memory, net, osinfo, timezone, users,
};
use crate::proto::queue::Kind;
use crate::sys;

/// What earlier reports to this host said, for diffs.
#[derive(Debug, Default)]
pub struct Seen {
    vmstat: Option<(memory::VmStat, Duration)>,
    users: Option<Vec<String>>,
    active_user: Option<String>,
    /// The leader pids of the sessions guestd's own log-off ended: left out of the user
    /// checks while their records linger (a killed session's utmp record or logind file can
    /// outlive the kill for a moment), so the log-off is reported once, by the diff.
    ended: Vec<i32>,
    /// The last `applications` list, kept while the package databases are unchanged.
    apps: apps::Cache,
    /// A disks-usage report waiting for its network and FUSE file systems: the local ones
    /// and the disk mapping.
    disks: Option<(Vec<disks::Filesystem>, Vec<disks::DiskSerial>)>,
    /// The heartbeat's read buffer for `/proc/meminfo` and `/proc/vmstat`, kept between ticks
    /// so a tick does not allocate one.
    proc_buf: Vec<u8>,
}

/// Bytes a heartbeat line takes at most (eleven 20-digit counters and the keys).
const HEARTBEAT_CAPACITY: usize = 512;

impl Seen {
    /// A new host: forget what the previous one was told, but keep the package list cache
    /// (an unchanged database costs a `stat` per file, not a read, on every attach).
    pub(super) fn forget_host(&mut self) {
        let apps = std::mem::take(&mut self.apps);
        let proc_buf = std::mem::take(&mut self.proc_buf);
        *self = Seen {
            apps,
            proc_buf,
            ..Seen::default()
        };
    }

    /// The package list cache's read counter, to tell one cache from another in tests.
    #[cfg(test)]
    pub(super) fn package_reads(&mut self) -> &mut u64 {
        &mut self.apps.reads
    }
}

impl Session {
    /// The start-up burst, in the reference order (§2.1).
    pub(super) fn startup_burst(&mut self, cx: &mut Ctx<'_, '_>) {
        self.send(cx.out, Message::bare("session-startup"), Kind::Event);
        self.send_host_name(cx);
        self.send_os_version(cx);
        self.send_network_interfaces(cx);
        self.check_users(true, cx);
        self.send_applications(cx);
        self.send_containers(cx);
        self.send_fqdn(cx);
        self.send_timezone(cx);
        self.send_os_info(cx);
        // Not in the reference's burst, where they wait for their periods (300 s and 60 s):
        // VDSM shows a CPU count of -1 until then. Last, so the reference order stands.
        self.send_disks_usage(cx);
        self.send_number_of_cpus(cx);
    }

    /// The refresh burst, in the reference order (§2.1), then `number-of-cpus`, which the
    /// reference leaves to its 60 s period (it is due at once after the API negotiation that
    /// first allows it). No heartbeat.
    #[inline(never)]
    pub(super) fn refresh_burst(&mut self, cx: &mut Ctx<'_, '_>) {
        self.send(cx.out, Message::bare("session-startup"), Kind::Event);
        self.check_users(true, cx);
        self.send_applications(cx);
        self.send_containers(cx);
        self.send_host_name(cx);
        self.send_os_version(cx);
        self.send_network_interfaces(cx);
        self.send_disks_usage(cx);
        self.send_fqdn(cx);
        self.send_timezone(cx);
        self.send_os_info(cx);
        self.send_number_of_cpus(cx);
    }

    /// One periodic task that fell due.
    pub(super) fn run_task(&mut self, task: Task, cx: &mut Ctx<'_, '_>) {
        match task {
            Task::Heartbeat => self.send_heartbeat(cx),
            Task::Users => self.check_users(false, cx),
            Task::Applications => {
                self.send_applications(cx);
                self.send_containers(cx);
                self.send_host_name(cx);
                self.send_os_version(cx);
                self.send_network_interfaces(cx);
                self.send_fqdn(cx);
            }
            Task::Cpus => self.send_number_of_cpus(cx),
            Task::Disks => self.send_disks_usage(cx),
        }
    }

    // Not inlined: callgrind measures one tick by this symbol (`--toggle-collect`).
    #[inline(never)]
    fn send_heartbeat(&mut self, cx: &mut Ctx<'_, '_>) {
        let root = &cx.svc.cfg.root;
        let buf = &mut self.seen.proc_buf;
        let mem = match memory::read_meminfo_with(root, buf) {
            Ok(m) => {
                cx.svc.health.ok("meminfo");
                m
            }
            Err(e) => {
                // Still a heartbeat: it keeps the agent responsive; free-ram 0 makes VDSM
                // fall back to balloon statistics.
                cx.svc.health.failed("meminfo", &e);
                memory::MemInfo::default()
            }
        };
        let vm = match memory::read_vmstat_with(root, buf) {
            Ok(v) => {
                cx.svc.health.ok("vmstat");
                Some(v)
            }
            Err(e) => {
                cx.svc.health.failed("vmstat", &e);
                None
            }
        };
        let now = sys::monotonic_now();
        let cur = vm.unwrap_or_default();
        let prev = self.seen.vmstat.as_ref().map(|(v, t)| (v, *t));
        let prev = if vm.is_some() { prev } else { None };
        let stat = memory::memory_stat(&mem, prev, &cur, now);
        self.seen.vmstat = vm.map(|v| (v, now));
        // The renegotiation trick (§4 step 5): 0 until the first heartbeat has gone out.
        let api = if cx.out.heartbeats_written() == 0 {
            0
        } else {
            MAX_API_VERSION
        };
        if cx.out.is_attached() {
            let mut line = Vec::with_capacity(HEARTBEAT_CAPACITY);
            messages::encode_heartbeat(&mut line, mem.free_ram_mib(), &stat, api);
            cx.out.push("heartbeat", Kind::Heartbeat, line);
        }
    }

    /// Sends the report `build` makes of a fact that was read, or notes why it was not.
    fn report<T>(
        &self,
        cx: &mut Ctx<'_, '_>,
        source: &'static str,
        read: Result<T, facts::Error>,
        build: impl FnOnce(&T) -> Message,
    ) {
        match read {
            Ok(v) => {
                cx.svc.health.ok(source);
                self.send(cx.out, build(&v), Kind::Report);
            }
            Err(e) => cx.svc.health.failed(source, &e),
        }
    }

    fn send_host_name(&mut self, cx: &mut Ctx<'_, '_>) {
        let read = hostname::read_hostname(&cx.svc.cfg.root);
        self.report(cx, "host-name", read, |h| messages::host_name(h));
    }

    fn send_fqdn(&mut self, cx: &mut Ctx<'_, '_>) {
        let root = &cx.svc.cfg.root;
        let read = hostname::read_hostname(root).map(|h| hostname::read_fqdn(root, &h));
        self.report(cx, "fqdn", read, |f| messages::fqdn(f));
    }

    fn send_os_version(&mut self, cx: &mut Ctx<'_, '_>) {
        let read = hostname::read_os_release_kernel(&cx.svc.cfg.root);
        self.report(cx, "os-version", read, |v| messages::os_version(v));
    }

    fn send_os_info(&mut self, cx: &mut Ctx<'_, '_>) {
        if self.api_version < wire::min_api_version("os-info") {
            return;
        }
        let root = &cx.svc.cfg.root;
        let release = match osinfo::read_os_release(root) {
            Ok(r) => {
                cx.svc.health.ok("os-release");
                r
            }
            Err(e) => {
                cx.svc.health.failed("os-release", &e);
                osinfo::OsRelease::default()
            }
        };
        let machine = sys::machine().unwrap_or_default();
        let info = osinfo::read_os_info(&cx.svc.cfg.root, release, &machine);
        self.send(cx.out, messages::os_info(&info), Kind::Report);
    }

    fn send_timezone(&mut self, cx: &mut Ctx<'_, '_>) {
        if self.api_version < wire::min_api_version("timezone") {
            return;
        }
        let tz = timezone::read_timezone(&cx.svc.cfg.root);
        self.send(cx.out, messages::timezone(&tz), Kind::Report);
    }

    fn send_network_interfaces(&mut self, cx: &mut Ctx<'_, '_>) {
        let ifaces = match net::read_interfaces(&cx.svc.cfg.root) {
            Ok(n) => n,
            Err(e) => return cx.svc.health.failed("network-interfaces", &e),
        };
        let addrs = match sys::interface_addresses() {
            Ok(a) => {
                cx.svc.health.ok("network-interfaces");
                a
            }
            Err(e) => {
                let e = format!("getifaddrs: {e}");
                cx.svc.health.failed("network-interfaces", &e);
                Vec::new()
            }
        };
        let ifaces = net::up_non_loopback(ifaces, &cx.svc.cfg.ignored_nics);
        let list = net::attach_addresses(ifaces, &addrs, &[]);
        self.send(cx.out, messages::network_interfaces(&list), Kind::Report);
    }

    fn send_applications(&mut self, cx: &mut Ctx<'_, '_>) {
        let cfg = &cx.svc.cfg;
        let read = self.seen.apps.applications(&cfg.root, &cfg.applications);
        self.report(cx, "applications", read, |list| {
            messages::applications(list)
        });
    }

    /// `containers` (API 3): Docker's and Podman's, from their state directories; an empty
    /// list without a container engine, as the reference.
    fn send_containers(&mut self, cx: &mut Ctx<'_, '_>) {
        if self.api_version < wire::min_api_version("containers") {
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        let read = containers::read_containers(&cx.svc.cfg.root, now);
        self.report(cx, "containers", read, |l| messages::containers(l));
    }

    pub(super) fn send_number_of_cpus(&mut self, cx: &mut Ctx<'_, '_>) {
        if self.api_version < wire::min_api_version("number-of-cpus") {
            return;
        }
        let count = match cpus::read_online_count(&cx.svc.cfg.root) {
            Ok(n) => {
                cx.svc.health.ok("number-of-cpus");
                i64::from(n)
            }
            Err(e) => {
                cx.svc.health.failed("number-of-cpus", &e);
                -1
            }
        };
        self.send(cx.out, messages::number_of_cpus(count), Kind::Report);
    }

    /// Sends `disks-usage`: at once when no network or FUSE file system is mounted, else when
    /// `crate::probe` measured them (`disks_measured`). A report still waiting for them
    /// stands for this one too.
    fn send_disks_usage(&mut self, cx: &mut Ctx<'_, '_>) {
        if self.seen.disks.is_some() {
            log::debug!("disks-usage: the last report still waits for its measurements");
            return;
        }
        let cfg = &cx.svc.cfg;
        let (list, remote) = match disks::read_filesystems(&cfg.root, &cfg.ignored_fs) {
            Ok(l) => l,
            Err(e) => return cx.svc.health.failed("disks-usage", &e),
        };
        let mapping = match disks::read_disk_serials(&cx.svc.cfg.root) {
            Ok(m) => {
                cx.svc.health.ok("disk mapping");
                m
            }
            Err(e) => {
                cx.svc.health.failed("disk mapping", &e);
                Vec::new()
            }
        };
        cx.svc.health.ok("disks-usage");
        if remote.is_empty() {
            self.send(cx.out, messages::disks_usage(&list, &mapping), Kind::Report);
            return;
        }
        self.seen.disks = Some((list, mapping));
        let svc = &mut *cx.svc;
        (svc.probes).measure(self.link, remote, &svc.cfg.root, &mut svc.notices);
    }

    /// The network and FUSE file systems of the waiting `disks-usage` report were measured:
    /// they follow the local ones.
    pub(super) fn disks_measured(&mut self, remote: Vec<disks::Filesystem>, cx: &mut Ctx<'_, '_>) {
        let Some((mut list, mapping)) = self.seen.disks.take() else {
            return;
        };
        list.extend(remote);
        self.send(cx.out, messages::disks_usage(&list, &mapping), Kind::Report);
    }

    /// Reads the sessions (`users::current_sessions`); sends `session-logon`/`session-logoff`
    /// for users who came or went since the last check, and `active-user` when it changed
    /// (or always, when `force`).
    fn check_users(&mut self, force: bool, cx: &mut Ctx<'_, '_>) {
        let (mut sessions, source) = match users::current_sessions(&cx.svc.cfg.root) {
            Ok(s) => s,
            Err(e) => return cx.svc.health.failed("users", &e),
        };
        cx.svc.health.ok("users");
        cx.svc.health.note("users", &source);
        let ended = &mut self.seen.ended;
        ended.retain(|pid| sessions.iter().any(|s| s.pid == *pid));
        sessions.retain(|s| !ended.contains(&s.pid));
        let now = users::logged_in_users(&sessions);
        if let Some(before) = self.seen.users.take() {
            for _ in now.iter().filter(|u| !before.contains(u)) {
                self.send(cx.out, Message::bare("session-logon"), Kind::Event);
            }
            for _ in before.iter().filter(|u| !now.contains(u)) {
                self.send(cx.out, Message::bare("session-logoff"), Kind::Event);
            }
        }
        let active = messages::active_user_name(&now);
        if force || self.seen.active_user.as_deref() != Some(active.as_str()) {
            self.send(cx.out, messages::active_user(&active), Kind::Report);
        }
        self.seen.users = Some(now);
        self.seen.active_user = Some(active);
    }

    /// The built-in log-off ended the sessions led by `leaders`: the user check reports it
    /// now (`session-logoff`, then `active-user`), and leaves those sessions out from then on.
    pub(super) fn logged_off(&mut self, leaders: Vec<i32>, cx: &mut Ctx<'_, '_>) {
        self.seen.ended.extend(leaders);
        self.check_users(false, cx);
    }
}
