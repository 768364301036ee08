// SPDX-License-Identifier: Apache-2.0
//! guestd: a guest agent for minimal Linux VMs. The module list is the architecture:
//!
//! - `sys`: every libc call and every block the compiler cannot check, behind fd-owning types.
//! - `facts`: pure parsers and root-relative readers, one module per fact family.
//! - `proto`: wire framing, message building and the bounded outbound queue, generic over
//!   `Read`/`Write`.
//! - `channel`: finding and opening the host channel (virtio-serial, UNIX socket, serial).
//! - `schedule`: the periodic report deadlines.
//! - `agent`: the single-threaded poll(2) loop, and the host's actions it carries out.
//! - `actions`: argument parsing and the pure parts of those actions.
//! - `kv`, `params`: the crash-safe key-value store and the key-value operations and messages.
//! - `control`, `ops`: the agent's control socket and the one-shot ovmd-style command line.
//! - `exec`: one child process (fork/exec, process group, bounded output capture, timeout,
//!   reaping), driven from a poll loop.
//! - `hooks`: the hook runner (job queue, follow-ups, logged reports) shared by agent and
//!   command line.
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
pub mod logger;
pub mod ops;
pub mod params;
pub mod pidfile;
pub mod proto;
pub mod schedule;
pub mod sys;
