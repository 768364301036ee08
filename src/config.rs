// SPDX-License-Identifier: Apache-2.0
//! Agent configuration: defaults, `/etc/guestd.conf` (`key = value` lines, `#` comments), and
//! the command line, all applied through one `Config::set`, so every key has one meaning.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::channel::ChannelSpec;
use crate::facts::disks::DEFAULT_IGNORED_FS;

/// The config file read when `--config` is not given (a missing default file is fine).
pub const DEFAULT_CONFIG: &str = "/etc/guestd.conf";

/// Where log records go (`-d`), as in ovmd: 0 off, 1 stderr, 2 syslog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stderr,
    Syslog,
}

/// When guestd's key-value extension messages (`param`, `param-deleted`, `params-deleted`,
/// `event`) go to an oVirt host unasked (`ovirt-kv-messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OvirtKv {
    /// Once the host has sent a key-value command on its connection: VDSM never does, and
    /// logs `Unknown message type` for each such message.
    Auto,
    /// Always.
    Yes,
    /// Never; they stay in the store's outbox (QGA's message commands can take them).
    No,
}

/// Everything the agent's behaviour depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The oVirt protocol's channel.
    pub channel: ChannelSpec,
    /// Whether the oVirt protocol is served.
    pub ovirt: bool,
    /// Whether the QEMU guest-agent protocol is served.
    pub qga: bool,
    /// When key-value extension messages go to an oVirt host unasked.
    pub ovirt_kv: OvirtKv,
    /// The QGA channel; `None` serves `org.qemu.guest_agent.0` when that port exists.
    pub qga_channel: Option<ChannelSpec>,
    /// QGA commands refused (`--block-rpcs`); wins over the allow list.
    pub block_rpcs: Vec<String>,
    /// When set, the only QGA commands served (`--allow-rpcs`).
    pub allow_rpcs: Option<Vec<String>>,
    /// File systems frozen this long are thawed by guestd itself; zero never.
    pub fsfreeze_timeout: Duration,
    /// Heartbeat period (`-t`, `--time-period`).
    pub heartbeat: Duration,
    pub user_rate: Duration,
    pub application_rate: Duration,
    pub cpu_rate: Duration,
    pub disk_rate: Duration,
    pub log_target: LogTarget,
    pub log_level: log::LevelFilter,
    /// The syslog datagram socket for `-d 2`.
    pub syslog_socket: PathBuf,
    pub pid_file: Option<PathBuf>,
    /// Package names (or `prefix*` patterns) reported in `applications`.
    pub applications: Vec<String>,
    pub ignored_nics: Vec<String>,
    pub ignored_fs: Vec<String>,
    /// Directory the facts are read under (`/` except in tests and containers).
    pub root: PathBuf,
    /// Where the key-value store lives.
    pub state_dir: PathBuf,
    /// Where event, script and param hooks live.
    pub hooks_dir: PathBuf,
    /// The agent's control socket, used by the command line while the agent runs.
    pub control_socket: PathBuf,
    /// A group whose members may use the control socket besides root.
    pub control_group: Option<String>,
    /// How long a hook may run before its process group is killed.
    pub hook_timeout: Duration,
    /// The same for lifecycle-event hooks, which VDSM waits for at most 10 s.
    pub lifecycle_timeout: Duration,
    /// Commands that power off or reboot the guest, instead of the built-in methods.
    pub poweroff_command: Option<String>,
    pub reboot_command: Option<String>,
    /// Bytes of each of stdout and stderr a QGA `guest-exec` keeps (the rest is dropped).
    pub exec_output_limit: usize,
    /// A finished `guest-exec` whose status nobody took is forgotten this long after it ended.
    pub exec_expiry: Duration,
}

/// The largest `exec-output-limit`: two streams of it, in base64, stay under QGA's reply cap.
pub const MAX_EXEC_OUTPUT: usize = 2 << 20;

impl Default for Config {
    fn default() -> Self {
        Config {
            channel: ChannelSpec::default(),
            ovirt: true,
            qga: true,
            ovirt_kv: OvirtKv::Auto,
            qga_channel: None,
            block_rpcs: Vec::new(),
            allow_rpcs: None,
            fsfreeze_timeout: Duration::from_secs(600),
            heartbeat: Duration::from_secs(5),
            user_rate: Duration::from_secs(10),
            application_rate: Duration::from_secs(120),
            cpu_rate: Duration::from_secs(60),
            disk_rate: Duration::from_secs(300),
            log_target: LogTarget::Syslog,
            log_level: log::LevelFilter::Info,
            syslog_socket: PathBuf::from("/dev/log"),
            pid_file: None,
            applications: words(DEFAULT_APPLICATIONS),
            ignored_nics: words("lo docker0"),
            ignored_fs: DEFAULT_IGNORED_FS.iter().map(|s| (*s).to_owned()).collect(),
            root: PathBuf::from("/"),
            state_dir: PathBuf::from("/var/lib/guestd"),
            hooks_dir: PathBuf::from("/etc/guestd/hooks.d"),
            control_socket: PathBuf::from("/run/guestd.sock"),
            control_group: None,
            hook_timeout: Duration::from_secs(60),
            lifecycle_timeout: Duration::from_secs(8),
            poweroff_command: None,
            reboot_command: None,
            exec_output_limit: 1 << 20,
            exec_expiry: Duration::from_secs(600),
        }
    }
}

/// The default `applications`: the reference agent's `applications_list` (ovirt-protocol.md
/// §6.1), plus guestd and qemu-guest-agent, and the kernel packages of each distribution:
/// `kernel-core` (Fedora, EL8+), `kernel-uek` (Oracle Linux), `linux-image-*` (Debian,
/// Ubuntu), `linux-virt` and `linux-lts` (Alpine).
pub const DEFAULT_APPLICATIONS: &str = "guestd ovirt-guest-agent ovirt-guest-agent-common \
    qemu-guest-agent cloud-init kernel kernel-core kernel-uek kernel-default kernel-desktop \
    kernel-trace kernel-vanilla kernel-debug kernel-ec2 kernel-xen kernel-ppc64 linux-image \
    linux-image-* linux-virt linux-lts xorg-x11-drv-qxl xserver-xorg-video-qxl xf86-video-qxl";

/// The keys `Config::set` accepts, with their help text; each is also a long option.
pub const KEYS: &[(&str, &str)] = &[
    (
        "channel",
        "SPEC: virtio-serial[:NAME] | unix-listen:PATH | vsock-listen:[CID:]PORT | serial:DEVICE",
    ),
    (
        "qga-channel",
        "SPEC: the QEMU guest-agent channel, same forms (default: virtio-serial \
         org.qemu.guest_agent.0 when that port exists)",
    ),
    (
        "ovirt",
        "yes|no: serve the oVirt guest-agent protocol (default yes)",
    ),
    (
        "qga",
        "yes|no: serve the QEMU guest-agent protocol (default yes)",
    ),
    (
        "ovirt-kv-messages",
        "auto|yes|no: send key-value messages (param, event, ...) to an oVirt host unasked: \
         once it has sent a key-value command (auto, the default), always, or never",
    ),
    (
        "block-rpcs",
        "LIST: QGA commands to refuse ('help' lists them); wins over allow-rpcs",
    ),
    (
        "allow-rpcs",
        "LIST: the only QGA commands to serve ('help' lists them)",
    ),
    (
        "fsfreeze-timeout",
        "SECS: thaw file systems still frozen after SECS; 0 never (default 600)",
    ),
    ("time-period", "SECS: heartbeat period (default 5)"),
    (
        "debug",
        "LEVEL: 0 no log, 1 stderr, 2 syslog via /dev/log (default 2)",
    ),
    (
        "log-level",
        "LEVEL: error, warn, info, debug or trace (default info)",
    ),
    (
        "syslog-socket",
        "PATH: the syslog socket for -d 2 (default /dev/log)",
    ),
    (
        "pid-file",
        "FILE: write the pid here; refuse to start if a live guestd holds it",
    ),
    (
        "report-user-rate",
        "SECS: active-user check period (default 10)",
    ),
    (
        "report-application-rate",
        "SECS: applications, host-name, os-version, network-interfaces, fqdn (default 120)",
    ),
    (
        "report-num-cpu-rate",
        "SECS: number-of-cpus period (default 60)",
    ),
    (
        "report-disk-usage-rate",
        "SECS: disks-usage period (default 300)",
    ),
    (
        "applications",
        "LIST: package names or prefix* patterns to report",
    ),
    (
        "ignored-nics",
        "LIST: interfaces left out of network-interfaces (default: lo docker0)",
    ),
    (
        "ignored-fs",
        "LIST: file-system types left out of disks-usage",
    ),
    (
        "root",
        "DIR: read /proc, /sys and /etc under DIR (tests, containers)",
    ),
    (
        "state-dir",
        "DIR: the key-value store (default /var/lib/guestd)",
    ),
    (
        "hooks-dir",
        "DIR: event, script and param hooks (default /etc/guestd/hooks.d)",
    ),
    (
        "control-socket",
        "PATH: socket for command-line calls to the agent (default /run/guestd.sock)",
    ),
    (
        "control-group",
        "GROUP: members may use the control socket too (default: root only)",
    ),
    (
        "hook-timeout",
        "SECS: a hook still running after SECS is killed (default 60)",
    ),
    (
        "lifecycle-hook-timeout",
        "SECS: the same for lifecycle-event hooks (default 8)",
    ),
    (
        "poweroff-command",
        "CMD: run CMD (no shell) to power off, instead of the built-in methods",
    ),
    (
        "reboot-command",
        "CMD: run CMD (no shell) to reboot, instead of the built-in methods",
    ),
    (
        "exec-output-limit",
        "BYTES: QGA guest-exec keeps this much of each of stdout and stderr (default 1048576, \
         at most 2097152)",
    ),
    (
        "exec-expiry",
        "SECS: a finished QGA guest-exec nobody asked about is forgotten after SECS (default \
         600)",
    ),
];

/// A bad key or value; `Display` gives the reason, the caller adds where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSetting(pub String);

impl fmt::Display for BadSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn words(s: &str) -> Vec<String> {
    s.split([' ', ',', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect()
}

fn seconds(key: &str, value: &str) -> Result<Duration, BadSetting> {
    match value.parse::<u64>() {
        Ok(n) if (1..=86_400).contains(&n) => Ok(Duration::from_secs(n)),
        _ => Err(BadSetting(format!(
            "{key} must be a whole number of seconds from 1 to 86400, not '{value}'"
        ))),
    }
}

impl Config {
    /// Applies one `key = value` setting.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), BadSetting> {
        match key {
            "channel" => self.channel = value.parse().map_err(BadSetting)?,
            "qga-channel" => self.qga_channel = Some(value.parse().map_err(BadSetting)?),
            "ovirt" => self.ovirt = yes_no(key, value)?,
            "qga" => self.qga = yes_no(key, value)?,
            "ovirt-kv-messages" => {
                self.ovirt_kv = match value {
                    "auto" => OvirtKv::Auto,
                    "yes" => OvirtKv::Yes,
                    "no" => OvirtKv::No,
                    _ => {
                        return Err(BadSetting(format!(
                            "{key} must be auto, yes or no, not '{value}'"
                        )));
                    }
                }
            }
            "block-rpcs" => self.block_rpcs.extend(words(value)),
            "allow-rpcs" => self
                .allow_rpcs
                .get_or_insert_with(Vec::new)
                .extend(words(value)),
            "fsfreeze-timeout" => {
                self.fsfreeze_timeout = match value.parse::<u64>() {
                    Ok(n) if n <= 86_400 => Duration::from_secs(n),
                    _ => {
                        return Err(BadSetting(format!(
                            "{key} must be a whole number of seconds from 0 to 86400, not \
                             '{value}'"
                        )));
                    }
                }
            }
            "time-period" => self.heartbeat = seconds(key, value)?,
            "report-user-rate" => self.user_rate = seconds(key, value)?,
            "report-application-rate" => self.application_rate = seconds(key, value)?,
            "report-num-cpu-rate" => self.cpu_rate = seconds(key, value)?,
            "report-disk-usage-rate" => self.disk_rate = seconds(key, value)?,
            "debug" => {
                self.log_target = match value {
                    "0" => LogTarget::Off,
                    "1" => LogTarget::Stderr,
                    "2" => LogTarget::Syslog,
                    _ => {
                        return Err(BadSetting(format!(
                            "debug must be 0, 1 or 2, not '{value}'"
                        )));
                    }
                }
            }
            "log-level" => {
                self.log_level = value.parse().map_err(|_| {
                    BadSetting(format!(
                        "log-level must be error, warn, info, debug or trace, not '{value}'"
                    ))
                })?
            }
            "pid-file" => self.pid_file = Some(non_empty_path(key, value)?),
            "syslog-socket" => self.syslog_socket = non_empty_path(key, value)?,
            "applications" => self.applications = words(value),
            "ignored-nics" => self.ignored_nics = words(value),
            "ignored-fs" => self.ignored_fs = words(value),
            "root" => self.root = non_empty_path(key, value)?,
            "state-dir" => self.state_dir = non_empty_path(key, value)?,
            "hooks-dir" => self.hooks_dir = non_empty_path(key, value)?,
            "control-socket" => self.control_socket = non_empty_path(key, value)?,
            "control-group" => self.control_group = (!value.is_empty()).then(|| value.to_owned()),
            "hook-timeout" => self.hook_timeout = seconds(key, value)?,
            "lifecycle-hook-timeout" => self.lifecycle_timeout = seconds(key, value)?,
            "poweroff-command" => {
                self.poweroff_command = (!value.is_empty()).then(|| value.to_owned())
            }
            "reboot-command" => self.reboot_command = (!value.is_empty()).then(|| value.to_owned()),
            "exec-output-limit" => {
                self.exec_output_limit = match value.parse::<usize>() {
                    Ok(n) if n <= MAX_EXEC_OUTPUT => n,
                    _ => {
                        return Err(BadSetting(format!(
                            "{key} must be a number of bytes from 0 to {MAX_EXEC_OUTPUT}, not \
                             '{value}'"
                        )));
                    }
                }
            }
            "exec-expiry" => self.exec_expiry = seconds(key, value)?,
            _ => return Err(BadSetting(format!("unknown key '{key}'"))),
        }
        Ok(())
    }

    /// Applies a config file's text; errors name `path` and the line number.
    pub fn apply_file_text(&mut self, path: &Path, text: &str) -> Result<(), String> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            let Some((key, value)) = line.split_once('=') else {
                return Err(format!("{at}: expected 'key = value', found '{line}'"));
            };
            self.set(key.trim(), value.trim())
                .map_err(|e| format!("{at}: {e}"))?;
        }
        Ok(())
    }
}

fn yes_no(key: &str, value: &str) -> Result<bool, BadSetting> {
    match value {
        "yes" | "on" | "true" | "1" => Ok(true),
        "no" | "off" | "false" | "0" => Ok(false),
        _ => Err(BadSetting(format!(
            "{key} must be yes or no, not '{value}'"
        ))),
    }
}

fn non_empty_path(key: &str, value: &str) -> Result<PathBuf, BadSetting> {
    if value.is_empty() {
        Err(BadSetting(format!("{key} needs a path")))
    } else {
        Ok(PathBuf::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_sets_values_and_ignores_comments() {
        let mut c = Config::default();
        let text = "# comment\n\n time-period = 7\nchannel=unix-listen:/tmp/x.sock\n\
                    ignored-nics = lo, eth9\ndebug = 1\nlog-level = debug\n";
        c.apply_file_text(Path::new("/etc/guestd.conf"), text)
            .unwrap();
        assert_eq!(c.heartbeat, Duration::from_secs(7));
        assert_eq!(
            c.channel,
            ChannelSpec::UnixListen(PathBuf::from("/tmp/x.sock"))
        );
        assert_eq!(c.ignored_nics, vec!["lo", "eth9"]);
        assert_eq!(c.log_target, LogTarget::Stderr);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let mut c = Config::default();
        let p = Path::new("/etc/guestd.conf");
        assert_eq!(
            c.apply_file_text(p, "time-period = 5\nbogus = 1\n")
                .unwrap_err(),
            "/etc/guestd.conf:2: unknown key 'bogus'"
        );
        assert_eq!(
            c.apply_file_text(p, "time-period = 0\n").unwrap_err(),
            "/etc/guestd.conf:1: time-period must be a whole number of seconds from 1 to 86400, not '0'"
        );
        assert_eq!(
            c.apply_file_text(p, "\n\njust words\n").unwrap_err(),
            "/etc/guestd.conf:3: expected 'key = value', found 'just words'"
        );
        assert!(
            c.apply_file_text(p, "debug = 3")
                .unwrap_err()
                .contains("0, 1 or 2")
        );
        assert!(
            c.apply_file_text(p, "channel = tcp:1")
                .unwrap_err()
                .contains("channel")
        );
    }
}
