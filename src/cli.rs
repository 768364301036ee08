// SPDX-License-Identifier: Apache-2.0
//! The command line, parsed by hand (no argument-parsing crate, to keep the static binary
//! small). It takes ovmd's options with ovmd's meanings and getopt_long's conventions:
//! `-t 5`, `-t5`, `--time-period=5`, `--time-period 5`, clustered flags (`-xl`), and
//! unambiguous prefixes of long options (`--list` for `--list-params`).

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{self, Config};
use crate::kv::ops::Op;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Help,
    Version,
    /// `--block-rpcs=help` or `--allow-rpcs=help`: list the QGA commands.
    ListRpcs,
    /// Run as the agent (none of `-p -g -r -x -l -e -s`).
    Agent(Box<Config>),
    /// Perform key-value operations, in the order given, and exit.
    Ops(Box<Config>, Vec<Op>),
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
    /// Key-value operations in command-line order.
    pub ops: Vec<Op>,
}

/// What an option does once its value (if any) is known.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Help,
    Version,
    Config,
    Setting(&'static str),
    SetParam,
    GetParam,
    DeleteParam,
    DeleteParams,
    ListParams,
    Event,
    Script,
}

impl Kind {
    fn takes_value(self) -> bool {
        !matches!(
            self,
            Kind::Help | Kind::Version | Kind::DeleteParams | Kind::ListParams
        )
    }
}

/// The ovmd options: (short, long, kind).
const OVMD: &[(char, &str, Kind)] = &[
    ('p', "set-param", Kind::SetParam),
    ('g', "get-param", Kind::GetParam),
    ('r', "delete-param", Kind::DeleteParam),
    ('x', "delete-params", Kind::DeleteParams),
    ('l', "list-params", Kind::ListParams),
    ('e', "event", Kind::Event),
    ('s', "script", Kind::Script),
    ('d', "debug", Kind::Setting("debug")),
    ('f', "pid-file", Kind::Setting("pid-file")),
    ('t', "time-period", Kind::Setting("time-period")),
    ('v', "version", Kind::Version),
    ('h', "help", Kind::Help),
];

fn by_short(c: char) -> Option<Kind> {
    OVMD.iter().find(|(s, _, _)| *s == c).map(|(_, _, k)| *k)
}

/// Resolves a long option name: exact match, else a unique prefix (getopt_long rules).
fn by_long(name: &str) -> Result<Kind, UsageError> {
    let mut all: Vec<(&str, Kind)> = OVMD.iter().map(|(_, l, k)| (*l, *k)).collect();
    all.push(("config", Kind::Config));
    for (key, _) in config::KEYS {
        if !all.iter().any(|(l, _)| l == key) {
            all.push((key, Kind::Setting(key)));
        }
    }
    if let Some((_, k)) = all.iter().find(|(l, _)| *l == name) {
        return Ok(*k);
    }
    let matches: Vec<&(&str, Kind)> = all.iter().filter(|(l, _)| l.starts_with(name)).collect();
    match matches.as_slice() {
        [(_, k)] if !name.is_empty() => Ok(*k),
        [] | [_] => Err(UsageError(format!("unknown option --{name}"))),
        many => Err(UsageError(format!(
            "option --{name} is ambiguous ({})",
            many.iter()
                .map(|(l, _)| format!("--{l}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

impl Args {
    fn apply(&mut self, kind: Kind, value: Option<String>) -> Result<(), UsageError> {
        let v = value.unwrap_or_default();
        match kind {
            Kind::Help => self.help = true,
            Kind::Version => self.version = true,
            Kind::Config => self.config = Some(PathBuf::from(v)),
            Kind::Setting(key) => self.settings.push((key.to_owned(), v)),
            Kind::SetParam => {
                let Some((key, value)) = v.split_once('=') else {
                    return Err(UsageError(format!("-p needs KEY=VALUE, not '{v}'")));
                };
                self.ops.push(Op::Set {
                    key: key.to_owned(),
                    value: value.to_owned(),
                });
            }
            Kind::GetParam => self.ops.push(Op::Get { key: v }),
            Kind::DeleteParam => self.ops.push(Op::Delete { key: v }),
            Kind::DeleteParams => self.ops.push(Op::DeleteAll),
            Kind::ListParams => self.ops.push(Op::List),
            Kind::Event => self.ops.push(Op::Event { name: v }),
            Kind::Script => self.ops.push(Op::Script { name: v }),
        }
        Ok(())
    }
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Args, UsageError> {
    let mut out = Args::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let arg = arg
            .into_string()
            .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))?;
        let mut next_value = |shown: &str| -> Result<String, UsageError> {
            match it.next() {
                Some(v) => v
                    .into_string()
                    .map_err(|a| UsageError(format!("value {a:?} of {shown} is not valid UTF-8"))),
                None => Err(UsageError(format!("option {shown} needs a value"))),
            }
        };
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            let kind = by_long(name)?;
            let value = match (kind.takes_value(), inline) {
                (true, Some(v)) => Some(v),
                (true, None) => Some(next_value(&format!("--{name}"))?),
                (false, Some(_)) => {
                    return Err(UsageError(format!("option --{name} takes no value")));
                }
                (false, None) => None,
            };
            out.apply(kind, value)?;
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for (i, c) in shorts.char_indices() {
                let kind = by_short(c).ok_or_else(|| UsageError(format!("unknown option -{c}")))?;
                if !kind.takes_value() {
                    out.apply(kind, None)?;
                    continue;
                }
                let rest = &shorts[i + c.len_utf8()..];
                let value = if rest.is_empty() {
                    next_value(&format!("-{c}"))?
                } else {
                    rest.to_owned()
                };
                out.apply(kind, Some(value))?;
                break;
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

/// Parses the command line, checks every operation's limits and reads the config file.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Invocation, UsageError> {
    let mut args = parse_args(args)?;
    if args.help {
        return Ok(Invocation::Help);
    }
    if args.version {
        return Ok(Invocation::Version);
    }
    let rpcs_help = |(k, v): &(String, String)| k.ends_with("-rpcs") && v == "help";
    if args.settings.iter().any(rpcs_help) {
        return Ok(Invocation::ListRpcs);
    }
    // INVARIANT: every operation is checked before any runs, so a bad one leaves nothing
    // stored and nothing sent.
    for op in &args.ops {
        op.validate().map_err(UsageError)?;
    }
    let ops = std::mem::take(&mut args.ops);
    let cfg = Box::new(args.into_config()?);
    Ok(if ops.is_empty() {
        Invocation::Agent(cfg)
    } else {
        Invocation::Ops(cfg, ops)
    })
}

/// The `--help` text.
pub fn help() -> String {
    let mut s = format!(
        "guestd {} - guest agent for minimal Linux VMs (oVirt guest-agent protocol)\n\n\
         Usage: guestd [OPTIONS]                run the agent\n\
         \x20      guestd -p KEY=VALUE | -g KEY | -r KEY | -x | -l | -e EVENT | -s SCRIPT ...\n\n\
         Options (ovmd's):\n\
         \x20 -p, --set-param=KEY=VALUE  set a param and send it to the host\n\
         \x20 -g, --get-param=KEY        print a param's value (exit 1 if absent)\n\
         \x20 -r, --delete-param=KEY     delete a param\n\
         \x20 -x, --delete-params        delete all params\n\
         \x20 -l, --list-params          list all params, one {{\"key\":\"value\"}} per line, oldest first\n\
         \x20 -e, --event=EVENT          send an event to the host and run its hooks\n\
         \x20 -s, --script=SCRIPT        run the SCRIPT hooks with the params on stdin\n\
         \x20 -d, --debug=LEVEL          0 = no log, 1 = stderr, 2 = syslog via /dev/log (default 2)\n\
         \x20 -f, --pid-file=FILE        write the pid to FILE; refuse to start if a live guestd holds it\n\
         \x20 -t, --time-period=SECS     heartbeat period in seconds (default 5)\n\
         \x20 -v, --version              print the version and exit\n\
         \x20 -h, --help                 print this help and exit\n\n\
         More options (each is also a key of the config file, default {}):\n\
         \x20     --config=FILE                      read FILE instead\n",
        env!("CARGO_PKG_VERSION"),
        config::DEFAULT_CONFIG
    );
    for (k, h) in config::KEYS {
        if !OVMD.iter().any(|(_, l, _)| l == k) {
            // KEYS help reads "ARG: what it does".
            let (arg, what) = h.split_once(": ").unwrap_or(("VALUE", h));
            let opt = format!("--{k}={arg}");
            s.push_str(&format!("      {opt:<34} {what}\n"));
        }
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
    fn ovmd_operations_keep_their_order_and_prefixes_work() {
        let a = args(&[
            "-p",
            "k1=v=1",
            "-xl",
            "--list",
            "-gk1",
            "--delete-param=k2",
            "-e",
            "up",
            "-sconfigure",
        ])
        .unwrap();
        assert_eq!(
            a.ops,
            vec![
                Op::Set {
                    key: "k1".into(),
                    value: "v=1".into()
                },
                Op::DeleteAll,
                Op::List,
                Op::List,
                Op::Get { key: "k1".into() },
                Op::Delete { key: "k2".into() },
                Op::Event { name: "up".into() },
                Op::Script {
                    name: "configure".into()
                },
            ]
        );
        assert_eq!(
            args(&["--set=a=b"]).unwrap().ops,
            vec![Op::Set {
                key: "a".into(),
                value: "b".into()
            }]
        );
        assert!(args(&["--delete"]).unwrap_err().0.contains("ambiguous"));
    }

    #[test]
    fn rejects_unknown_incomplete_and_out_of_limit_options() {
        assert_eq!(args(&["-q"]).unwrap_err().0, "unknown option -q");
        assert_eq!(args(&["--nope"]).unwrap_err().0, "unknown option --nope");
        assert_eq!(args(&["-t"]).unwrap_err().0, "option -t needs a value");
        assert_eq!(args(&["x"]).unwrap_err().0, "unexpected argument 'x'");
        assert_eq!(
            args(&["-p", "novalue"]).unwrap_err().0,
            "-p needs KEY=VALUE, not 'novalue'"
        );
        assert_eq!(
            args(&["--list-params=3"]).unwrap_err().0,
            "option --list-params takes no value"
        );
        let long = format!("{}=v", "k".repeat(256));
        let e = parse(["-p", "ok=1", "-p", &long].map(OsString::from)).unwrap_err();
        assert_eq!(e.0, "key is longer than 255 bytes");
        let big = format!("k={}", "v".repeat(8193));
        assert!(parse(["-p", &big].map(OsString::from)).is_err());
        assert!(parse(["-p", "=v"].map(OsString::from)).is_err());
        assert!(parse(["-p", "a\u{1}b=v"].map(OsString::from)).is_err());
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
