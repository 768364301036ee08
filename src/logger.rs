// SPDX-License-Identifier: Apache-2.0
//! Log backends for `-d`: none, stderr (simple_logger), or syslog written straight to the
//! `/dev/log` datagram socket (`--syslog-socket`) (RFC 3164 framing, facility daemon), so no syslog crate and no
//! libc syslog(3) state is needed. Without `/dev/log` the log goes to stderr.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use log::{Level, LevelFilter, Log, Metadata, Record};

use crate::config::LogTarget;

/// Longest record sent to syslog; longer messages are cut.
const MAX_RECORD: usize = 4096;
const FACILITY_DAEMON: u8 = 3 << 3;

/// Installs the logger for `target` at `level`; syslog records go to the datagram socket
/// `syslog` (normally /dev/log). Safe to call once per process.
pub fn init(target: LogTarget, level: LevelFilter, syslog: &Path) {
    match target {
        LogTarget::Off => log::set_max_level(LevelFilter::Off),
        LogTarget::Stderr => init_stderr(level),
        LogTarget::Syslog => match UnixDatagram::unbound() {
            // Non-blocking: a stalled syslog daemon must not stall the agent's loop; a record
            // it cannot take now goes to stderr instead.
            Ok(sock) if sock.connect(syslog).is_ok() && sock.set_nonblocking(true).is_ok() => {
                let logger = Syslog {
                    sock: Mutex::new(sock),
                    path: syslog.to_owned(),
                    pid: std::process::id(),
                };
                if log::set_boxed_logger(Box::new(logger)).is_ok() {
                    log::set_max_level(level);
                }
            }
            _ => init_stderr(level),
        },
    }
}

/// Whether logging is off because the file systems are frozen.
static FROZEN: AtomicBool = AtomicBool::new(false);
/// The level to restore at thaw (a `LevelFilter` as usize).
static SAVED_LEVEL: AtomicUsize = AtomicUsize::new(0);

/// Turns logging off while the guest's file systems are frozen (a record written to a frozen
/// file system, by a syslog daemon or through stderr redirected to a file, would block its
/// writer), and back on at thaw, saying so at warning level. Records logged meanwhile are
/// dropped. Idempotent.
pub fn set_frozen(frozen: bool) {
    if frozen {
        if !FROZEN.swap(true, Ordering::SeqCst) {
            SAVED_LEVEL.store(log::max_level() as usize, Ordering::SeqCst);
            log::set_max_level(LevelFilter::Off);
        }
    } else if FROZEN.swap(false, Ordering::SeqCst) {
        let saved = SAVED_LEVEL.load(Ordering::SeqCst);
        let level = LevelFilter::iter()
            .find(|l| *l as usize == saved)
            .unwrap_or(LevelFilter::Info);
        log::set_max_level(level);
        log::warn!("logging re-enabled after thaw (records of the frozen time were dropped)");
    }
}

fn init_stderr(level: LevelFilter) {
    // Fails only if a logger is already installed, in which case that one stays.
    let _ = simple_logger::SimpleLogger::new().with_level(level).init();
}

struct Syslog {
    sock: Mutex<UnixDatagram>,
    path: PathBuf,
    pid: u32,
}

fn severity(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

impl Log for Syslog {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut msg = format!(
            "<{}>guestd[{}]: {}",
            FACILITY_DAEMON | severity(record.level()),
            self.pid,
            record.args()
        );
        if msg.len() > MAX_RECORD {
            let mut cut = MAX_RECORD;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        let Ok(sock) = self.sock.lock() else {
            return;
        };
        if sock.send(msg.as_bytes()).is_err() {
            // syslogd restarted: reconnect once; if that fails too, keep the line on stderr.
            if sock.connect(&self.path).is_err() || sock.send(msg.as_bytes()).is_err() {
                let _ = writeln!(std::io::stderr(), "{msg}");
            }
        }
    }

    fn flush(&self) {}
}
