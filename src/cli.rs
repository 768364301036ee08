// SPDX-License-Identifier: Apache-2.0
//! The command line, parsed by hand (no argument-parsing crate, to keep the static binary
//! small). Accepts ovmd's option style: `-t 5`, `-t5`, `--time-period=5`, `--time-period 5`.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{self, Config};

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Help,
    Version,
    Agent(Box<Config>),
}

/// A command-line or config-file error: printed to stderr, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The parsed arguments, before the config file is read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Args {
    pub help: bool,
    pub version: bool,
    pub config: Option<PathBuf>,
    /// `(key, value)` settings in command-line order.
    pub settings: Vec<(String, String)>,
}

/// Short options that take a value, and the long name they stand for.
const SHORT_WITH_VALUE: &[(char, &str)] =
    &[('t', "time-period"), ('d', "debug"), ('f', "pid-file")];

fn long_takes_value(name: &str) -> bool {
    name == "config" || config::KEYS.iter().any(|(k, _)| *k == name)
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, UsageError> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))?;
        let mut value_of = |name: &str, inline: Option<String>| -> Result<String, UsageError> {
            match inline {
                Some(v) => Ok(v),
                None => it
                    .next()
                    .and_then(|v| v.into_string().ok())
                    .ok_or_else(|| UsageError(format!("option {name} needs a value"))),
            }
        };
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            match name {
                "help" => out.help = true,
                "version" => out.version = true,
                _ if long_takes_value(name) => {
                    let v = value_of(&format!("--{name}"), inline)?;
                    if name == "config" {
                        out.config = Some(PathBuf::from(v));
                    } else {
                        out.settings.push((name.to_owned(), v));
                    }
                }
                _ => return Err(UsageError(format!("unknown option --{name}"))),
            }
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                match c {
                    'h' => out.help = true,
                    'v' => out.version = true,
                    _ => {
                        let Some((_, long)) = SHORT_WITH_VALUE.iter().find(|(s, _)| *s == c) else {
                            return Err(UsageError(format!("unknown option -{c}")));
                        };
                        let rest = &shorts[i + c.len_utf8()..];
                        let inline = (!rest.is_empty()).then(|| rest.to_owned());
                        let v = value_of(&format!("-{c}"), inline)?;
                        out.settings.push(((*long).to_owned(), v));
                        break;
                    }
                }
            }
        } else {
            return Err(UsageError(format!("unexpected argument '{arg}'")));
        }
    }
    Ok(out)
}

impl Args {
    /// The configuration: defaults, then the config file, then the command line.
    pub fn into_config(self) -> Result<Config, UsageError> {
        let mut cfg = Config::default();
        let (path, required) = match &self.config {
            Some(p) => (p.as_path(), true),
            None => (Path::new(config::DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => cfg.apply_file_text(path, &text).map_err(UsageError)?,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(UsageError(format!(
                    "reading config file {}: {e}",
                    path.display()
                )));
            }
        }
        for (k, v) in &self.settings {
            cfg.set(k, v)
                .map_err(|e| UsageError(format!("option --{k}: {e}")))?;
        }
        Ok(cfg)
    }
}

/// Parses the command line and reads the config file.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Invocation, UsageError> {
    let args = parse_args(args)?;
    if args.help {
        return Ok(Invocation::Help);
    }
    if args.version {
        return Ok(Invocation::Version);
    }
    Ok(Invocation::Agent(Box::new(args.into_config()?)))
}

/// The `--help` text.
pub fn help() -> String {
    let mut s = format!(
        "guestd {} - guest agent for minimal Linux VMs (oVirt guest-agent protocol)\n\n\
         Usage: guestd [OPTIONS]\n\n\
         Options:\n\
         \x20 -t, --time-period=SECS   heartbeat period in seconds (default 5)\n\
         \x20 -d, --debug=LEVEL        0 = no log, 1 = stderr, 2 = syslog via /dev/log (default 2)\n\
         \x20 -f, --pid-file=FILE      write the pid to FILE; refuse to start if a live guestd holds it\n\
         \x20     --channel=SPEC       virtio-serial[:NAME] (default), unix-listen:PATH, serial:DEVICE\n\
         \x20     --config=FILE        config file (default {}; key = value lines)\n\
         \x20 -v, --version            print the version and exit\n\
         \x20 -h, --help               print this help and exit\n\n\
         Every config-file key is also a long option:\n",
        env!("CARGO_PKG_VERSION"),
        config::DEFAULT_CONFIG
    );
    for (k, h) in config::KEYS {
        s.push_str(&format!("  --{k:<24} {h}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args, UsageError> {
        parse_args(v.iter().map(OsString::from))
    }

    #[test]
    fn accepts_every_option_style() {
        let a = args(&[
            "-t",
            "1",
            "-d1",
            "--channel=unix-listen:/x",
            "--pid-file",
            "/p",
            "-f/q",
        ])
        .unwrap();
        assert_eq!(
            a.settings,
            vec![
                ("time-period".into(), "1".into()),
                ("debug".into(), "1".into()),
                ("channel".into(), "unix-listen:/x".into()),
                ("pid-file".into(), "/p".into()),
                ("pid-file".into(), "/q".into()),
            ]
        );
        assert!(args(&["-hv"]).unwrap().help);
        assert_eq!(
            args(&["--config", "/c"]).unwrap().config,
            Some(PathBuf::from("/c"))
        );
    }

    #[test]
    fn rejects_unknown_and_incomplete_options() {
        assert_eq!(args(&["-q"]).unwrap_err().0, "unknown option -q");
        assert_eq!(args(&["--nope"]).unwrap_err().0, "unknown option --nope");
        assert_eq!(args(&["-t"]).unwrap_err().0, "option -t needs a value");
        assert_eq!(args(&["x"]).unwrap_err().0, "unexpected argument 'x'");
    }

    #[test]
    fn command_line_overrides_config_file_and_errors_name_the_option() {
        let dir = std::env::temp_dir().join(format!("guestd-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("guestd.conf");
        std::fs::write(&conf, "time-period = 9\nreport-user-rate = 20\n").unwrap();
        let c = conf.to_str().unwrap();
        let Invocation::Agent(cfg) = parse(["--config", c, "-t", "2"].map(OsString::from)).unwrap()
        else {
            panic!("not an agent invocation");
        };
        assert_eq!(cfg.heartbeat.as_secs(), 2);
        assert_eq!(cfg.user_rate.as_secs(), 20);
        let e = parse(["--config", c, "-t", "x"].map(OsString::from)).unwrap_err();
        assert!(e.0.starts_with("option --time-period: "), "{e}");
        let e = parse(["--config", "/nonexistent/guestd.conf"].map(OsString::from)).unwrap_err();
        assert!(e.0.contains("/nonexistent/guestd.conf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
