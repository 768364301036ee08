// SPDX-License-Identifier: Apache-2.0
//! Wire protocols, independent of real file descriptors: framing is generic over `Read` and
//! `Write`, so tests drive it with `Vec<u8>` and `UnixStream::pair()`.

pub mod ovirt;
pub mod queue;
