// SPDX-License-Identifier: Apache-2.0
//! guestd: a guest agent for minimal Linux VMs. The module list is the architecture:
//!
//! - `sys`: every libc call and every block the compiler cannot check, behind fd-owning types.
//! - `facts`: protocol-neutral facts about the guest, pure parsers over a root directory.
//! - `proto`: shared wire plumbing: line and JSON-stream framing, the bounded outbound queue.
//! - `channel`: the host channels (virtio-serial, unix-listen, serial) and their attach state.
//! - `link`: a channel with its framer, queue and protocol session; the `Session` trait.
//! - `agent`: the single-threaded poll(2) loop over links and services, dispatch only.
//! - `services`: what sessions share: config, fact health, store, hook lanes, power.
//! - `ovirt`: the oVirt guest-agent protocol session, its messages and schedule.
//! - `qga`: the QEMU guest-agent protocol session and its command table.
//! - `power`: the shutdown, reboot and log-off state machines, hibernation, CPU hot-plug.
//! - `exec`: one child process (fork/exec, process group, bounded output capture, timeout,
//!   reaping), driven from a poll loop; used by `hooks` and, next, by `guest-exec`.
//! - `probe`: statvfs(3) of network and FUSE file systems in bounded child processes.
//! - `hooks`: the hook runner (job queue, follow-ups, logged reports) shared by agent and
//!   command line.
//! - `actions`: argument parsing and the pure parts of the host's actions.
//! - `kv`: the crash-safe key-value store, its outbox records and operations.
//! - `control`, `ops`: the agent's control socket and the one-shot ovmd-style command line.
//! - `cli`, `config`, `logger`, `pidfile`: the command line, the config file, the log
//!   backends and the pid file.

pub mod actions;
pub mod agent;
pub mod channel;
pub mod cli;
pub mod config;
pub mod control;
pub mod exec;
pub mod facts;
pub mod hooks;
pub mod kv;
pub mod link;
pub mod logger;
pub mod ops;
pub mod ovirt;
pub mod pidfile;
pub mod power;
pub mod probe;
pub mod proto;
pub mod qga;
pub mod services;
pub mod sys;
