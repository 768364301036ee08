// SPDX-License-Identifier: Apache-2.0
//! guest-file-open, -read, -write, -seek, -flush, -close, and the table of open handles
//! (`Files`), which the services own so that a handle outlives the connection that opened it
//! (Proxmox opens, writes and closes on separate connections).
//!
//! Handles count up from 1000 and are never reused while guestd runs (qemu-ga also keeps the
//! counter across restarts in a state file; guestd writes nothing for it). At most
//! `MAX_FILES` are open. Files are opened `O_NOCTTY | O_NONBLOCK | O_CLOEXEC`, so a FIFO or
//! a device with nothing to read never stalls the loop: a read returns what is there.
//! Hardening against qemu-ga: a file the command creates gets mode 0600 (less the umask),
//! not 0666 regardless of the umask; a caller that wants other permissions can chmod it
//! with guest-exec. A read asks for at most `MAX_READ` bytes, so its reply stays under the
//! 8 MiB reply cap.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;

use serde_json::{Value, json};

use super::commands::{Answer, Command, Ctx};
use super::exec::errno_text;
use super::wire::{Args, Error};
use crate::proto::base64;

/// Handles open at most.
pub const MAX_FILES: usize = 64;
/// The first handle number, as in qemu-ga.
pub const FIRST_HANDLE: i64 = 1000;
/// `count` of guest-file-read when not given.
pub const DEFAULT_READ: i64 = 4096;
/// The largest `count` of guest-file-read: 4 MiB, under 6 MiB as base64.
pub const MAX_READ: i64 = 4 << 20;
/// The mode of a file guest-file-open creates (before the umask).
pub const CREATE_MODE: u32 = 0o600;

pub const COMMANDS: &[Command] = &[
    Command::new("guest-file-open", &["path", "mode"], open),
    Command::new("guest-file-close", &["handle"], close),
    Command::new("guest-file-read", &["handle", "count"], read),
    Command::new("guest-file-write", &["handle", "buf-b64", "count"], write),
    Command::new("guest-file-seek", &["handle", "offset", "whence"], seek),
    Command::new("guest-file-flush", &["handle"], flush),
];

/// One open file.
struct Handle {
    id: i64,
    file: File,
    /// The last read reached end of file.
    eof: bool,
}

/// The open handles.
pub struct Files {
    open: Vec<Handle>,
    next: i64,
}

impl Default for Files {
    fn default() -> Files {
        Files {
            open: Vec::new(),
            next: FIRST_HANDLE,
        }
    }
}

impl Files {
    /// Handles open now.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// No handle is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn get(&mut self, id: i64) -> Result<&mut Handle, Error> {
        (self.open.iter_mut().find(|h| h.id == id))
            .ok_or_else(|| Error::generic(format!("handle '{id}' has not been found")))
    }
}

/// The open(2) options of an fopen(3) mode, as qemu-ga accepts them.
fn options(mode: &str) -> Option<OpenOptions> {
    let mut o = OpenOptions::new();
    match mode {
        "r" | "rb" => o.read(true),
        "w" | "wb" => o.write(true).create(true).truncate(true),
        "a" | "ab" => o.append(true).create(true),
        "r+" | "rb+" | "r+b" => o.read(true).write(true),
        "w+" | "wb+" | "w+b" => o.read(true).write(true).create(true).truncate(true),
        "a+" | "ab+" | "a+b" => o.read(true).append(true).create(true),
        _ => return None,
    };
    o.mode(CREATE_MODE)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK);
    Some(o)
}

fn invalid_count(n: i64) -> Error {
    Error::generic(format!("value '{n}' is invalid for argument count"))
}

fn open(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let path = args.str("path")?;
        let mode = args.opt_str("mode")?.unwrap_or("r");
        let opts = options(mode)
            .ok_or_else(|| Error::generic(format!("invalid file open mode '{mode}'")))?;
        let files = &mut cx.svc.files;
        if files.open.len() >= MAX_FILES {
            return Err(Error::generic(format!(
                "failed to open file '{path}': {MAX_FILES} handles are open already; close some"
            )));
        }
        let file = opts.open(path).map_err(|e| {
            Error::generic(format!(
                "failed to open file '{path}' (mode: '{mode}'): {}",
                errno_text(&e)
            ))
        })?;
        let id = files.next;
        files.next += 1;
        files.open.push(Handle {
            id,
            file,
            eof: false,
        });
        log::info!("guest-file-open: '{path}' (mode '{mode}') is handle {id}");
        Ok(Value::from(id))
    })();
    r.into()
}

fn close(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let id = args.i64("handle")?;
        cx.svc.files.get(id)?;
        cx.svc.files.open.retain(|h| h.id != id);
        log::debug!("guest-file-close: handle {id}");
        Ok(json!({}))
    })();
    r.into()
}

/// Reads up to `count` bytes: until then, end of file, or nothing more is there yet.
fn read_some(f: &mut File, count: usize) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = vec![0u8; count];
    let mut got = 0;
    let mut eof = false;
    while got < count {
        match f.read(&mut buf[got..]) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok((buf, eof))
}

fn read(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let id = args.i64("handle")?;
        let count = args.opt_i64("count")?.unwrap_or(DEFAULT_READ);
        let h = cx.svc.files.get(id)?;
        if !(0..=MAX_READ).contains(&count) {
            return Err(invalid_count(count));
        }
        let count = usize::try_from(count).map_err(|_| invalid_count(count))?;
        let (data, eof) = read_some(&mut h.file, count).map_err(|e| {
            Error::generic(format!(
                "failed to read file (handle {id}): {}",
                errno_text(&e)
            ))
        })?;
        h.eof = eof;
        Ok(json!({"count": data.len(), "buf-b64": base64::encode(&data), "eof": eof}))
    })();
    r.into()
}

fn write(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let id = args.i64("handle")?;
        let text = args.str("buf-b64")?;
        let count = args.opt_i64("count")?;
        let h = cx.svc.files.get(id)?;
        let data = base64::decode(text).map_err(|e| Error::generic(e.to_string()))?;
        let n = match count {
            None => data.len(),
            Some(c) => usize::try_from(c)
                .ok()
                .filter(|&c| c <= data.len())
                .ok_or_else(|| invalid_count(c))?,
        };
        let mut done = 0;
        while done < n {
            match h.file.write(&data[done..n]) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Err(Error::generic(format!(
                        "failed to write to file (handle {id}): {}",
                        errno_text(&e)
                    )));
                }
            }
        }
        h.eof = false;
        Ok(json!({"count": done, "eof": false}))
    })();
    r.into()
}

fn seek(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let id = args.i64("handle")?;
        let offset = args.i64("offset")?;
        let whence = match args.raw("whence") {
            None => return Err(Error::generic("Parameter 'whence' is missing")),
            Some(Value::String(s)) => match s.as_str() {
                "set" => 0,
                "cur" => 1,
                "end" => 2,
                _ => {
                    return Err(Error::generic(format!(
                        "Parameter 'whence' does not accept value '{s}'"
                    )));
                }
            },
            Some(v) => v.as_i64().ok_or_else(|| {
                Error::generic("Invalid parameter type for 'whence', expected: integer or string")
            })?,
        };
        let h = cx.svc.files.get(id)?;
        let pos = match whence {
            0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| {
                Error::generic(format!(
                    "failed to seek file (handle {id}): Invalid argument"
                ))
            })?),
            1 => SeekFrom::Current(offset),
            2 => SeekFrom::End(offset),
            n => return Err(Error::generic(format!("invalid whence code {n}"))),
        };
        let at = h.file.seek(pos).map_err(|e| {
            Error::generic(format!(
                "failed to seek file (handle {id}): {}",
                errno_text(&e)
            ))
        })?;
        h.eof = false;
        Ok(json!({"position": at, "eof": false}))
    })();
    r.into()
}

/// Nothing is buffered in guestd: what guest-file-write wrote is in the kernel already.
fn flush(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let id = args.i64("handle")?;
        cx.svc.files.get(id)?;
        Ok(json!({}))
    })();
    r.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_qemus() {
        for m in [
            "r", "rb", "w", "wb", "a", "ab", "r+", "rb+", "r+b", "w+", "wb+", "w+b", "a+", "ab+",
            "a+b",
        ] {
            assert!(options(m).is_some(), "{m}");
        }
        for m in ["", "x", "rw", "r+x", "W"] {
            assert!(options(m).is_none(), "{m}");
        }
    }

    #[test]
    fn reads_stop_at_end_of_file_and_at_an_empty_pipe() {
        let d = std::env::temp_dir().join(format!("guestd-file-{}", std::process::id()));
        std::fs::write(&d, b"0123456789").unwrap();
        let mut f = File::open(&d).unwrap();
        assert_eq!(read_some(&mut f, 4).unwrap(), (b"0123".to_vec(), false));
        assert_eq!(read_some(&mut f, 100).unwrap(), (b"456789".to_vec(), true));
        assert_eq!(read_some(&mut f, 100).unwrap(), (Vec::new(), true));
        std::fs::remove_file(&d).unwrap();
    }
}
