// SPDX-License-Identifier: Apache-2.0
//! A read-only reader of Berkeley DB hash databases, the format of rpm's `Packages` on RHEL 7
//! and 8, walked as rpm's own read-only backend (`lib/backend/bdb_ro.c`) does.
//!
//! Page 0 is the meta page: magic 0x061561 at offset 12 (its byte order is the file's),
//! version at 16, page size at 20, last page at 32, highest bucket at 72 and the 32
//! `spares` at 96. Bucket `b` starts on page `b + spares[bit length of b]`; each page has
//! its number at 8, the next page of the bucket at 16, the entry count at 20 and the type
//! at 25, then the entry offsets from 26, key and value alternating. An entry is a type byte:
//! 1 (the data follows) or 3 (off-page: the first overflow page at +4 and the length at +8).
//! Overflow pages (type 7) hold their data length at 22 and the data from 26. The file is
//! untrusted: offsets are checked and each page is read at most once (a cycle is an error).

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::Error;
use super::sqlite::MAX_PAYLOAD;

const HASH_MAGIC: u32 = 0x0006_1561;

struct Bdb {
    path: PathBuf,
    file: File,
    swapped: bool,
    page_size: usize,
    last: u32,
    budget: Cell<u32>,
}

impl Bdb {
    fn bad(&self, reason: String) -> Error {
        Error::Parse {
            path: self.path.clone(),
            reason,
        }
    }

    /// The `n`-byte number (2 or 4) at `at`, in the file's byte order.
    fn num(&self, b: &[u8], at: usize, n: usize) -> Option<usize> {
        let bytes = b.get(at..at.checked_add(n)?)?;
        let fold = |acc: usize, &x: &u8| (acc << 8) | usize::from(x);
        Some(if self.swapped {
            bytes.iter().fold(0, fold)
        } else {
            bytes.iter().rev().fold(0, fold)
        })
    }

    fn page(&self, n: usize) -> Result<Vec<u8>, Error> {
        let left = self.budget.get();
        let n32 = u32::try_from(n).ok().filter(|&n| n != 0 && n <= self.last);
        let Some(n32) = n32 else {
            return Err(self.bad(format!("page {n} out of range")));
        };
        if left == 0 {
            return Err(self.bad(format!("page {n} read twice: a page chain has a cycle")));
        }
        self.budget.set(left - 1);
        let mut buf = vec![0; self.page_size];
        let off = u64::from(n32) * buf.len() as u64;
        match self.file.read_exact_at(&mut buf, off) {
            Ok(()) if self.num(&buf, 8, 4) == Some(n) => Ok(buf),
            Ok(()) => Err(self.bad(format!("page {n} does not carry its number"))),
            Err(source) => Err(Error::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// The item of `len` bytes at `off` of `page`: inline, or gathered from overflow pages.
    fn item(&self, page: &[u8], off: usize, len: usize) -> Result<Vec<u8>, Error> {
        let bad = || self.bad("bad hash entry".into());
        let item = page.get(off..off.checked_add(len).ok_or_else(bad)?);
        match (item, item.and_then(|i| i.first())) {
            (Some(item), Some(1)) => Ok(item.get(1..).unwrap_or_default().to_vec()),
            (Some(item), Some(3)) if len == 12 => {
                let mut next = self.num(item, 4, 4).ok_or_else(bad)?;
                let total = self.num(item, 8, 4).ok_or_else(bad)?;
                if total as u64 > MAX_PAYLOAD {
                    return Err(self.bad(format!("an item of {total} bytes")));
                }
                let mut out = Vec::with_capacity(total);
                while out.len() < total {
                    let ov = self.page(next)?;
                    let plen = self.num(&ov, 22, 2).ok_or_else(bad)?;
                    let data = ov.get(26..26 + plen).filter(|_| ov.get(25) == Some(&7));
                    let data = data.ok_or_else(|| self.bad(format!("bad overflow page {next}")))?;
                    out.extend_from_slice(data);
                    next = self.num(&ov, 16, 4).ok_or_else(bad)?;
                }
                out.truncate(total);
                Ok(out)
            }
            _ => Err(bad()),
        }
    }
}

/// What `for_each` calls with each (key, value).
pub type Pair<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), Error> + 'a;

/// Calls `pair` with each (key, value) of the hash database at `path`.
pub fn for_each(path: &Path, pair: &mut Pair<'_>) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_err)?;
    let mut meta = [0u8; 512];
    let mut db = Bdb {
        path: path.to_owned(),
        file,
        swapped: false,
        page_size: 0,
        last: 0,
        budget: Cell::new(0),
    };
    let size = db.file.metadata().map_err(read_err)?.len();
    match db.file.read_exact_at(&mut meta, 0) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(db.bad("shorter than its meta page".into()));
        }
        r => r.map_err(read_err)?,
    }
    db.swapped = db.num(&meta, 12, 4) != Some(HASH_MAGIC as usize);
    let meta_num = |at| db.num(&meta, at, 4).unwrap_or(0);
    if meta_num(12) != HASH_MAGIC as usize || !(8..=10).contains(&meta_num(16)) {
        return Err(db.bad("not a Berkeley DB hash database (versions 8 to 10)".into()));
    }
    let page_size = meta_num(20);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return Err(db.bad("bad page size".into()));
    }
    let last = u32::try_from(meta_num(32)).unwrap_or(u32::MAX);
    if (u64::from(last) + 1) * page_size as u64 > size {
        return Err(db.bad(format!("truncated: page {last} is past the end")));
    }
    let max_bucket = meta_num(72);
    let spares: Vec<usize> = (0..32).map(|i| meta_num(96 + 4 * i)).collect();
    (db.page_size, db.last) = (page_size, last);
    db.budget.set(last);
    for bucket in 0..=max_bucket {
        let bits = (usize::BITS - bucket.leading_zeros()) as usize;
        let spare = spares.get(bits).copied().unwrap_or(0);
        let mut n = bucket.checked_add(spare).unwrap_or(0);
        loop {
            let page = db.page(n)?;
            let bad = || db.bad(format!("page {n}: bad hash page"));
            if !matches!(page.get(25), Some(2 | 8 | 13)) {
                return Err(bad());
            }
            let entries = db.num(&page, 20, 2).ok_or_else(bad)?;
            for i in (0..entries.saturating_sub(1)).step_by(2) {
                let off = |j: usize| db.num(&page, 26 + 2 * j, 2).ok_or_else(bad);
                let (k, v) = (off(i)?, off(i + 1)?);
                let key_end = if i == 0 { page_size } else { off(i - 1)? };
                let key = db.item(&page, k, key_end.checked_sub(k).ok_or_else(bad)?)?;
                let value = db.item(&page, v, k.checked_sub(v).ok_or_else(bad)?)?;
                pair(&key, &value)?;
            }
            n = db.num(&page, 16, 4).ok_or_else(bad)?;
            if n == 0 {
                break;
            }
        }
    }
    Ok(())
}
