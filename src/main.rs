// SPDX-License-Identifier: Apache-2.0
//! The `guestd` binary: parse the command line, then either run the key-value operations it
//! names (ovmd's `-p -g -r -x -l -e -s`) or set up logging and the pid file and run the
//! agent. Exit codes: 0 ok, 1 runtime failure (or `-g` of an absent key), 2 usage or
//! configuration error.

use std::process::ExitCode;

use guestd::cli::{self, Invocation};
use guestd::pidfile::PidFile;
use guestd::{agent, logger, ops};

fn main() -> ExitCode {
    // The release build aborts on panic; say why in the log first.
    std::panic::set_hook(Box::new(|info| {
        log::error!("panic: {info}");
        eprintln!("guestd: panic: {info}");
    }));
    // The hidden probe mode (`guestd::probe`): one statvfs, printed, off the agent's loop.
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let [flag, path] = &args[..] {
        if flag == guestd::probe::FLAG {
            return ExitCode::from(guestd::probe::run_probe(std::path::Path::new(path)));
        }
    }
    let cfg = match cli::parse(args) {
        Ok(Invocation::Help) => {
            print!("{}", cli::help());
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::ListRpcs) => {
            for c in guestd::qga::commands::all() {
                println!("{}", c.name);
            }
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version) => {
            println!("guestd {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Agent(cfg)) => cfg,
        Ok(Invocation::Ops(cfg, ops)) => {
            logger::init(cfg.log_target, cfg.log_level, &cfg.syslog_socket);
            return ExitCode::from(ops::run(&cfg, &ops));
        }
        Err(e) => {
            eprintln!("guestd: {e}\nTry 'guestd --help'.");
            return ExitCode::from(2);
        }
    };
    logger::init(cfg.log_target, cfg.log_level, &cfg.syslog_socket);
    let _pid = match cfg.pid_file.as_deref().map(PidFile::acquire).transpose() {
        Ok(p) => p,
        Err(e) => {
            log::error!("{e}");
            eprintln!("guestd: {e}");
            return ExitCode::from(1);
        }
    };
    match agent::run(*cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("guestd: {e}");
            ExitCode::from(1)
        }
    }
}
