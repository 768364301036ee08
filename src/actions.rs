// SPDX-License-Identifier: Apache-2.0
//! Host-requested actions (oVirt §3): argument parsing and the pure parts of carrying them
//! out — what to tell logged-in terminals, which power-off method to try in which order,
//! which CPUs to switch. The agent does the I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

/// The longest grace period accepted for `shutdown` (a day).
const MAX_GRACE: u64 = 86_400;

/// The lifecycle events VDSM sends (API >= 3); each names a hooks directory.
pub const LIFECYCLE_TYPES: &[&str] = &[
    "before_hibernation",
    "after_hibernation",
    "before_migration",
    "after_migration",
];

/// A parsed `shutdown` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shutdown {
    pub grace: Duration,
    pub message: String,
    pub reboot: bool,
}

/// Parses `shutdown {timeout, message, reboot}` with the reference agent's defaults
/// (0 s, "System is going down", no reboot). `reboot` arrives from VDSM as the string
/// "True"/"False"; JSON booleans are accepted too.
pub fn parse_shutdown(args: &Map<String, Value>) -> Result<Shutdown, String> {
    let grace = match args.get("timeout") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| format!("timeout {n} is not a whole number of seconds"))?,
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map_err(|_| format!("timeout '{s}' is not a whole number of seconds"))?,
        Some(other) => return Err(format!("timeout {other} is not a number")),
    };
    let reboot = match args.get("reboot") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        Some(other) => return Err(format!("reboot {other} is not \"True\" or \"False\"")),
    };
    let message = match args.get("message") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => "System is going down".to_owned(),
    };
    Ok(Shutdown {
        grace: Duration::from_secs(grace.min(MAX_GRACE)),
        message,
        reboot,
    })
}

/// The text written to logged-in terminals when a shutdown is announced.
pub fn wall_text(s: &Shutdown) -> String {
    let what = if s.reboot { "reboot" } else { "power-off" };
    // Terminals get printable text only.
    let message: String = s
        .message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "\r\nBroadcast message from guestd (host request):\r\n{message}\r\nThe system goes down for {what} in {} s.\r\n",
        s.grace.as_secs()
    )
}

/// A utmp line that names a terminal under /dev (no absolute path, no `..`).
pub fn tty_path(line: &str) -> Option<PathBuf> {
    let ok = !line.is_empty()
        && !line.starts_with('/')
        && line
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    ok.then(|| Path::new("dev").join(line))
}

/// The init system running as PID 1, for the signal fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// busybox init: SIGUSR2 powers off, SIGTERM reboots.
    Busybox,
    /// systemd: SIGRTMIN+4 powers off, SIGRTMIN+5 reboots (glibc numbering, see below).
    Systemd,
    Unknown,
}

/// Recognises PID 1 from its executable (`/proc/1/exe`) and name (`/proc/1/comm`).
pub fn init_kind(exe: Option<&Path>, comm: Option<&str>) -> Init {
    let exe_name = exe
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match (exe_name, comm.map(str::trim)) {
        ("busybox", _) => Init::Busybox,
        ("systemd", _) | (_, Some("systemd")) => Init::Systemd,
        _ => Init::Unknown,
    }
}

/// systemd's SIGRTMIN+4 (power off) and SIGRTMIN+5 (reboot), with glibc's SIGRTMIN of 34.
pub const SYSTEMD_POWEROFF: i32 = 38;
pub const SYSTEMD_REBOOT: i32 = 39;

/// One way of powering off or rebooting, tried in order until one works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PowerStep {
    /// Run this program with these arguments; success is exit status 0.
    Command(PathBuf, Vec<String>),
    /// Send this signal to PID 1.
    SignalInit(i32),
    /// sync(2) and reboot(2).
    Syscall,
}

/// The power-off (or reboot) methods to try, in the order issue #5 gives: a configured
/// command (and then nothing else: an administrator's choice is final), `/sbin/poweroff` or
/// `/sbin/reboot`, `/bin/busybox poweroff|reboot`, a signal PID 1 understands, and last
/// `sync()` + `reboot(2)`.
pub fn power_plan(
    configured: Option<&str>,
    reboot: bool,
    exists: impl Fn(&Path) -> bool,
    init: Init,
) -> Vec<PowerStep> {
    if let Some(cmd) = configured {
        let mut words = cmd.split_whitespace().map(str::to_owned);
        return match words.next() {
            Some(prog) => vec![PowerStep::Command(PathBuf::from(prog), words.collect())],
            None => Vec::new(),
        };
    }
    let verb = if reboot { "reboot" } else { "poweroff" };
    let mut plan = Vec::new();
    let sbin = PathBuf::from("/sbin").join(verb);
    if exists(&sbin) {
        plan.push(PowerStep::Command(sbin, Vec::new()));
    }
    let busybox = PathBuf::from("/bin/busybox");
    if exists(&busybox) {
        plan.push(PowerStep::Command(busybox, vec![verb.to_owned()]));
    }
    match init {
        Init::Busybox => plan.push(PowerStep::SignalInit(if reboot {
            libc::SIGTERM
        } else {
            libc::SIGUSR2
        })),
        // systemd is a glibc program: its SIGRTMIN is 34, while musl's (ours) is 35, so the
        // numbers are spelled out rather than computed from our SIGRTMIN.
        Init::Systemd => plan.push(PowerStep::SignalInit(if reboot {
            SYSTEMD_REBOOT
        } else {
            SYSTEMD_POWEROFF
        })),
        Init::Unknown => {}
    }
    plan.push(PowerStep::Syscall);
    plan
}

/// CPU numbers in a kernel cpu-list such as "0-3,5" (none for a malformed list).
pub fn cpu_list(text: &str) -> Vec<u32> {
    let ranges = crate::facts::cpus::parse_cpu_ranges(text).unwrap_or_default();
    // Bounded: no machine has more than 8192 CPUs.
    ranges
        .into_iter()
        .flat_map(|(a, b)| a..=b)
        .take(8192)
        .collect()
}

/// Which CPUs to switch to reach `count` online: `(cpu, online)` writes, bringing the
/// lowest-numbered present CPUs online first and taking the highest offline first; cpu0 is
/// never touched. Also the count reached, which is less than asked when too few are present.
pub fn cpu_plan(present: &[u32], online: &[u32], count: u32) -> (Vec<(u32, bool)>, u32) {
    let mut present: Vec<u32> = present.to_vec();
    present.sort_unstable();
    let want = usize::try_from(count).unwrap_or(usize::MAX).max(1);
    let target: Vec<u32> = present.iter().copied().take(want).collect();
    let mut writes = Vec::new();
    for &cpu in present.iter().rev() {
        let is_on = online.contains(&cpu) || cpu == 0;
        let want_on = target.contains(&cpu) || cpu == 0;
        if cpu != 0 && is_on != want_on {
            writes.push((cpu, want_on));
        }
    }
    // Online before offline, so the count never dips below what is asked.
    writes.sort_by_key(|&(cpu, on)| (!on, if on { cpu } else { u32::MAX - cpu }));
    let reached = u32::try_from(target.len().max(usize::from(present.contains(&0)))).unwrap_or(0);
    (writes, reached)
}

/// Whether `/sys/power/state` (its text) offers `state`.
pub fn power_state_supported(state_file: &str, state: &str) -> bool {
    state_file.split_whitespace().any(|s| s == state)
}

/// What a `login` hook reads on stdin: the user name, a newline, then the password (no
/// newline after it).
pub fn login_stdin(username: &str, password: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(username.len() + password.len() + 1);
    v.extend_from_slice(username.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(password.as_bytes());
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn shutdown_accepts_vdsm_strings_and_booleans() {
        let s = parse_shutdown(&args(
            json!({"timeout": 30, "message": "bye", "reboot": "True"}),
        ))
        .unwrap();
        assert_eq!(
            s,
            Shutdown {
                grace: Duration::from_secs(30),
                message: "bye".into(),
                reboot: true
            }
        );
        let s = parse_shutdown(&args(json!({"reboot": "False"}))).unwrap();
        assert_eq!(
            s,
            Shutdown {
                grace: Duration::ZERO,
                message: "System is going down".into(),
                reboot: false
            }
        );
        assert!(
            parse_shutdown(&args(json!({"reboot": true})))
                .unwrap()
                .reboot
        );
        assert!(parse_shutdown(&args(json!({"timeout": "5"}))).is_ok());
        assert!(parse_shutdown(&args(json!({"timeout": -1}))).is_err());
        assert!(parse_shutdown(&args(json!({"timeout": "soon"}))).is_err());
        assert!(parse_shutdown(&args(json!({"reboot": 1}))).is_err());
        let s = parse_shutdown(&args(json!({"timeout": 10_000_000}))).unwrap();
        assert_eq!(s.grace, Duration::from_secs(86_400));
    }

    #[test]
    fn wall_text_is_printable() {
        let s = Shutdown {
            grace: Duration::from_secs(60),
            message: "maint\u{1b}[2J".into(),
            reboot: true,
        };
        let t = wall_text(&s);
        assert!(
            t.contains("maint [2J") && t.contains("reboot in 60 s"),
            "{t}"
        );
        assert_eq!(tty_path("pts/3"), Some(PathBuf::from("dev/pts/3")));
        assert_eq!(tty_path("tty1"), Some(PathBuf::from("dev/tty1")));
        for bad in ["", "/dev/tty1", "../etc/passwd", "pts/../../x", "a//b"] {
            assert_eq!(tty_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn power_plan_follows_the_documented_order() {
        let all = |_: &Path| true;
        assert_eq!(
            power_plan(None, false, all, Init::Busybox),
            vec![
                PowerStep::Command("/sbin/poweroff".into(), vec![]),
                PowerStep::Command("/bin/busybox".into(), vec!["poweroff".into()]),
                PowerStep::SignalInit(libc::SIGUSR2),
                PowerStep::Syscall,
            ]
        );
        assert_eq!(
            power_plan(None, true, |_: &Path| false, Init::Busybox),
            vec![PowerStep::SignalInit(libc::SIGTERM), PowerStep::Syscall]
        );
        assert_eq!(
            power_plan(None, true, |_: &Path| false, Init::Systemd),
            vec![PowerStep::SignalInit(SYSTEMD_REBOOT), PowerStep::Syscall]
        );
        // A configured command is the only method.
        assert_eq!(
            power_plan(Some("/usr/bin/vm-off --now"), false, all, Init::Busybox),
            vec![PowerStep::Command(
                "/usr/bin/vm-off".into(),
                vec!["--now".into()]
            )]
        );
        assert_eq!(
            init_kind(Some(Path::new("/bin/busybox")), Some("init\n")),
            Init::Busybox
        );
        assert_eq!(
            init_kind(Some(Path::new("/usr/lib/systemd/systemd")), None),
            Init::Systemd
        );
        assert_eq!(init_kind(None, Some("runit")), Init::Unknown);
    }

    #[test]
    fn cpu_plans_never_touch_cpu0() {
        assert_eq!(cpu_list("0-3,5\n"), vec![0, 1, 2, 3, 5]);
        assert_eq!(cpu_list(""), Vec::<u32>::new());
        let present = cpu_list("0-3");
        assert_eq!(
            cpu_plan(&present, &present, 1),
            (vec![(3, false), (2, false), (1, false)], 1)
        );
        assert_eq!(cpu_plan(&present, &[0], 3), (vec![(1, true), (2, true)], 3));
        assert_eq!(
            cpu_plan(&present, &[0, 1], 8),
            (vec![(2, true), (3, true)], 4)
        );
        assert_eq!(
            cpu_plan(&present, &[0, 3], 2),
            (vec![(1, true), (3, false)], 2)
        );
        assert_eq!(
            cpu_plan(&present, &present, 0),
            (vec![(3, false), (2, false), (1, false)], 1)
        );
    }

    #[test]
    fn power_states_and_login_input() {
        assert!(power_state_supported("freeze mem disk\n", "disk"));
        assert!(!power_state_supported("freeze mem\n", "disk"));
        assert_eq!(
            login_stdin("alice@dom", "p w\n"),
            b"alice@dom\np w\n".to_vec()
        );
    }
}
