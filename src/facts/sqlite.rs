// SPDX-License-Identifier: Apache-2.0
//! A read-only reader of SQLite 3 database files (<https://www.sqlite.org/fileformat.html>),
//! just enough to list the rows of one table: the 100-byte header, `sqlite_master` on page 1
//! to find a table's root page, table b-tree interior and leaf pages, varints, record headers
//! and overflow page chains.
//!
//! A database in WAL mode (rpm's) is read as a reader would see it: the frames of the
//! `-wal` file up to its last valid commit (salts and running checksums checked) replace the
//! pages of the main file, so a database whose writer has not checkpointed yet is not read
//! stale. The file is untrusted: every offset, length and page number is checked, each page
//! is read at most once per `Db` (so a cycle ends in an error), and a row's payload is
//! bounded by `MAX_PAYLOAD`.

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Error;

/// Largest row payload read (an RPM header is at most a few MiB).
pub const MAX_PAYLOAD: u64 = super::MAX_FILE;
/// Deepest b-tree followed (a real one of a few GiB is 5 levels deep).
const MAX_DEPTH: usize = 20;
/// WAL frames indexed at most.
const MAX_WAL_FRAMES: u64 = 1 << 18;

/// `n` bytes at `at` of `b` as a big-endian number, if they are there.
pub(super) fn be(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let bytes = b.get(at..at.checked_add(n)?)?;
    Some(bytes.iter().fold(0, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Like `be`, as a `usize` (`n` is at most 4).
fn be_usize(b: &[u8], at: usize, n: usize) -> Option<usize> {
    usize::try_from(be(b, at, n)?).ok()
}

/// The SQLite varint at `at`: its value and the offset after it.
fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for i in 0..9 {
        let byte = *b.get(at.checked_add(i)?)?;
        if i == 8 {
            return Some(((v << 8) | u64::from(byte), at + 9));
        }
        v = (v << 7) | u64::from(byte & 0x7f);
        if byte & 0x80 == 0 {
            return Some((v, at + i + 1));
        }
    }
    None
}

/// One column value of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// NULL (and floating-point values, which nothing here needs).
    Null,
    Int(i64),
    /// A text or blob value.
    Bytes(&'a [u8]),
}

/// Column `index` of a record, `None` when the record is malformed. Columns past the end of
/// a shorter record are NULL, as in SQLite.
pub fn column(record: &[u8], index: usize) -> Option<Value<'_>> {
    let (header_len, mut at) = varint(record, 0)?;
    let header_len = usize::try_from(header_len).ok()?;
    let mut body = header_len;
    for i in 0..=index {
        if at >= header_len {
            return Some(Value::Null);
        }
        let (serial, next) = varint(record, at)?;
        at = next;
        let len = match serial {
            0 | 8 | 9 => 0,
            1..=4 => serial,
            5 => 6,
            6 | 7 => 8,
            10 | 11 => return None,
            n => (n - 12) / 2,
        };
        let len = usize::try_from(len).ok()?;
        let bytes = record.get(body..body.checked_add(len)?)?;
        if i == index {
            return Some(match serial {
                0 | 7 => Value::Null,
                8 => Value::Int(0),
                9 => Value::Int(1),
                1..=6 => {
                    let sign = if bytes.first()? & 0x80 != 0 { -1 } else { 0 };
                    Value::Int(bytes.iter().fold(sign, |a, &b| (a << 8) | i64::from(b)))
                }
                _ => Value::Bytes(bytes),
            });
        }
        body += len;
    }
    None
}

/// The WAL's committed pages: at each page number, the offset of its newest content (0: not
/// in the WAL).
type WalPages = Vec<u64>;

/// An open database.
#[derive(Debug)]
pub struct Db {
    path: PathBuf,
    file: File,
    wal: Option<(File, WalPages)>,
    page_size: usize,
    usable: usize,
    pages: u32,
    /// Page reads left: each page of a sound database is read at most once.
    budget: Cell<u32>,
}

impl Db {
    /// Opens the database at `path`, with its `-wal` file if that holds committed frames.
    pub fn open(path: &Path) -> Result<Db, Error> {
        let read_err = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_err)?;
        let bad = |reason: &str| Error::Parse {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let mut head = [0u8; 100];
        read_at(&file, &mut head, 0)
            .map_err(read_err)?
            .then_some(())
            .ok_or_else(|| bad("shorter than the 100-byte header"))?;
        if !head.starts_with(b"SQLite format 3\0") {
            return Err(bad("not an SQLite 3 database"));
        }
        let page_size = match be_usize(&head, 16, 2) {
            Some(1) => 65536,
            Some(n) if n >= 512 && n.is_power_of_two() => n,
            _ => return Err(bad("bad page size")),
        };
        let usable = page_size - usize::from(head[20]);
        if usable < 480 {
            return Err(bad("bad reserved space"));
        }
        let size = file.metadata().map_err(read_err)?.len();
        let mut pages = u32::try_from(size / page_size as u64).unwrap_or(u32::MAX);
        let wal = read_wal(path, page_size, u64::from(pages))?.map(|(f, map, commit_pages)| {
            pages = commit_pages;
            (f, map)
        });
        Ok(Db {
            path: path.to_owned(),
            file,
            wal,
            page_size,
            usable,
            pages,
            budget: Cell::new(pages),
        })
    }

    fn bad(&self, reason: String) -> Error {
        Error::Parse {
            path: self.path.clone(),
            reason,
        }
    }

    /// Page `n` (1-based), from the WAL if committed there.
    fn page(&self, n: u32) -> Result<Vec<u8>, Error> {
        if n == 0 || n > self.pages {
            return Err(self.bad(format!("page {n} out of range")));
        }
        let left = self.budget.get();
        if left == 0 {
            return Err(self.bad(format!("page {n} read twice: the b-tree has a cycle")));
        }
        self.budget.set(left - 1);
        let mut buf = vec![0; self.page_size];
        let in_wal = self.wal.as_ref().and_then(|(f, map)| {
            let at = *map.get(usize::try_from(n).ok()?)?;
            (at != 0).then_some((f, at))
        });
        let (file, off) = in_wal.unwrap_or((&self.file, u64::from(n - 1) * buf.len() as u64));
        match read_at(file, &mut buf, off) {
            Ok(true) => Ok(buf),
            Ok(false) => Err(self.bad(format!("page {n} is past the end of the file"))),
            Err(source) => Err(Error::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The root page of table `name`, from `sqlite_master`.
    pub fn table_root(&self, name: &str) -> Result<u32, Error> {
        let mut root = None;
        self.rows(1, &mut |rec| {
            if let (Some(Value::Bytes(b"table")), Some(Value::Bytes(n)), Some(Value::Int(r))) =
                (column(rec, 0), column(rec, 1), column(rec, 3))
            {
                if n == name.as_bytes() {
                    root = u32::try_from(r).ok();
                }
            }
            Ok(())
        })?;
        root.ok_or_else(|| self.bad(format!("no table {name}")))
    }

    /// Calls `row` with the record of each row of the table whose b-tree starts at page
    /// `root`, in rowid order.
    pub fn rows(
        &self,
        root: u32,
        row: &mut dyn FnMut(&[u8]) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut stack = vec![(root, 0)];
        while let Some((n, depth)) = stack.pop() {
            if depth > MAX_DEPTH {
                return Err(self.bad(format!("b-tree deeper than {MAX_DEPTH} at page {n}")));
            }
            let page = self.page(n)?;
            let bad = || self.bad(format!("page {n}: bad b-tree page"));
            let h = if n == 1 { 100 } else { 0 };
            let cells = be_usize(&page, h + 3, 2).ok_or_else(bad)?;
            let kind = page.get(h).copied().ok_or_else(bad)?;
            let cell = |i: usize| be_usize(&page, h + if kind == 5 { 12 } else { 8 } + 2 * i, 2);
            match kind {
                5 => {
                    let right = be(&page, h + 8, 4).ok_or_else(bad)?;
                    stack.push((u32::try_from(right).map_err(|_| bad())?, depth + 1));
                    for i in (0..cells).rev() {
                        let child = cell(i).and_then(|at| be(&page, at, 4)).ok_or_else(bad)?;
                        stack.push((u32::try_from(child).map_err(|_| bad())?, depth + 1));
                    }
                }
                13 => {
                    for i in 0..cells {
                        let (len, at) = cell(i).and_then(|at| varint(&page, at)).ok_or_else(bad)?;
                        let (_rowid, at) = varint(&page, at).ok_or_else(bad)?;
                        row(&self.payload(n, &page, at, len)?)?;
                    }
                }
                _ => return Err(self.bad(format!("page {n}: not a table b-tree page"))),
            }
        }
        Ok(())
    }

    /// The `len`-byte payload of the cell whose payload starts at `at` of page `n`, with its
    /// overflow chain.
    fn payload(&self, n: u32, page: &[u8], at: usize, len: u64) -> Result<Vec<u8>, Error> {
        let bad = || self.bad(format!("page {n}: bad cell payload"));
        if len > MAX_PAYLOAD {
            return Err(self.bad(format!("page {n}: a row of {len} bytes")));
        }
        let len = usize::try_from(len).map_err(|_| bad())?;
        let u = self.usable;
        let max_local = u - 35;
        let local = if len <= max_local {
            len
        } else {
            let min_local = (u - 12) * 32 / 255 - 23;
            let k = min_local + (len - min_local) % (u - 4);
            if k <= max_local { k } else { min_local }
        };
        let end = at.checked_add(local).ok_or_else(bad)?;
        let mut out = page.get(at..end).ok_or_else(bad)?.to_vec();
        let mut next = if local < len {
            be(page, end, 4).ok_or_else(bad)?
        } else {
            0
        };
        while out.len() < len {
            let ov = self.page(u32::try_from(next).map_err(|_| bad())?)?;
            next = be(&ov, 0, 4).ok_or_else(bad)?;
            let take = (len - out.len()).min(u - 4);
            out.extend_from_slice(ov.get(4..4 + take).ok_or_else(bad)?);
        }
        Ok(out)
    }
}

/// Fills `buf` from `off`; `Ok(false)` when the file ends first.
fn read_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<bool> {
    match file.read_exact_at(buf, off) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The WAL checksum of `data` (a multiple of 8 bytes), continuing from `s`.
fn wal_sum(mut s: (u32, u32), data: &[u8], big: bool) -> (u32, u32) {
    for w in data.chunks_exact(8) {
        if let &[a, b, c, d, e, f, g, h] = w {
            let (x, y) = if big {
                (
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                )
            } else {
                (
                    u32::from_le_bytes([a, b, c, d]),
                    u32::from_le_bytes([e, f, g, h]),
                )
            };
            s.0 = s.0.wrapping_add(x).wrapping_add(s.1);
            s.1 = s.1.wrapping_add(y).wrapping_add(s.0);
        }
    }
    s
}

/// The committed frames of `<path>-wal`, with the database size in pages at the last commit;
/// `None` when there is no WAL or it holds no valid commit.
fn read_wal(
    path: &Path,
    page_size: usize,
    pages: u64,
) -> Result<Option<(File, WalPages, u32)>, Error> {
    let mut name = path.as_os_str().to_owned();
    name.push("-wal");
    let wal_path = PathBuf::from(name);
    let read_err = |source| Error::Read {
        path: wal_path.clone(),
        source,
    };
    let file = match File::open(&wal_path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let mut head = [0u8; 32];
    if !read_at(&file, &mut head, 0).map_err(read_err)? {
        return Ok(None);
    }
    let big = match be(&head, 0, 4) {
        Some(0x377f_0682) => false,
        Some(0x377f_0683) => true,
        _ => return Ok(None),
    };
    let sum = |b: &[u8], at| be(b, at, 4).and_then(|v| u32::try_from(v).ok());
    let pair = |b: &[u8], at| Some((sum(b, at)?, sum(b, at + 4)?));
    let mut s = wal_sum((0, 0), &head[..24], big);
    if be_usize(&head, 8, 4) != Some(page_size) || pair(&head, 24) != Some(s) {
        return Ok(None);
    }
    let frame = 24 + page_size as u64;
    let frames = file.metadata().map_err(read_err)?.len().saturating_sub(32) / frame;
    if frames > MAX_WAL_FRAMES {
        return Err(Error::Parse {
            path: wal_path,
            reason: format!("{frames} frames, more than {MAX_WAL_FRAMES}"),
        });
    }
    let (mut committed, mut pending, mut size) = (WalPages::new(), Vec::new(), None);
    let mut buf = vec![0u8; 24 + page_size];
    for i in 0..frames {
        let off = 32 + i * frame;
        if !read_at(&file, &mut buf, off).map_err(read_err)? || buf[8..16] != head[16..24] {
            break;
        }
        s = wal_sum(wal_sum(s, &buf[..8], big), &buf[24..], big);
        let (Some(n), Some(commit)) = (sum(&buf, 0), sum(&buf, 4)) else {
            break;
        };
        if pair(&buf, 16) != Some(s) {
            break;
        }
        pending.push((n, off + 24));
        if commit != 0 {
            for (n, at) in pending.drain(..) {
                // A sound WAL only grows the database by the pages it holds.
                let i = usize::try_from(n)
                    .ok()
                    .filter(|_| u64::from(n) <= pages + frames);
                let Some(i) = i else { return Ok(None) };
                if committed.len() <= i {
                    committed.resize(i + 1, 0);
                }
                committed[i] = at;
            }
            size = Some(commit);
        }
    }
    Ok(size.map(|size| (file, committed, size)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x05], 0), Some((5, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((128, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
        assert_eq!(varint(&[], 0), None);
    }

    #[test]
    fn record_columns() {
        // header 4 bytes: NULL, 1-byte int, text of 2; body: -2, "hi"
        let rec = [4, 0, 1, 17, 0xfe, b'h', b'i'];
        assert_eq!(column(&rec, 0), Some(Value::Null));
        assert_eq!(column(&rec, 1), Some(Value::Int(-2)));
        assert_eq!(column(&rec, 2), Some(Value::Bytes(b"hi")));
        assert_eq!(column(&rec, 3), Some(Value::Null));
        assert_eq!(column(&rec[..6], 2), None, "truncated body");
        assert_eq!(column(&[4, 10, 0, 0], 0), None, "reserved serial type");
    }
}
