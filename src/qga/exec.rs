// SPDX-License-Identifier: Apache-2.0
//! QGA commands: exec.

use super::commands::Command;

pub const COMMANDS: &[Command] = &[];
