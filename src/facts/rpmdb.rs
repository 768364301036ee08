// SPDX-License-Identifier: Apache-2.0
//! The installed packages of an RPM database, read natively (guests often have no working
//! `rpm`): the header blobs of the `Packages` table of `rpmdb.sqlite` (RHEL 9, Fedora 33+),
//! of SUSE's ndb `Packages.db`, or of the Berkeley DB hash `Packages` (RHEL 7 and 8, see
//! `bdb`), each parsed for its name, version and release.
//!
//! A header blob is `il` (u32 BE, the index entry count), `dl` (u32 BE, the data length),
//! `il` 16-byte entries {tag, type, offset, count} and `dl` bytes of data. ndb
//! (`lib/backend/ndb/rpmpkg.c` in rpm) is a 32-byte header (`RpmP`, version 0, generation,
//! slot page count), 16-byte slots (`Slot`, package index, block offset, block count, all
//! little-endian) filling the slot pages, and blobs at block offset × 16 that start with
//! `BlbS`, the package index, a timestamp and the blob length.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::sqlite::{self, Db, MAX_PAYLOAD, be};
use super::{Error, bdb};

/// The database formats rpm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sqlite,
    Ndb,
    Bdb,
}

const TAG_NAME: u64 = 1000;
const TAG_RELEASE: u64 = 1002;
const TYPE_STRING: u64 = 6;

/// The (name, version, release) of an RPM header blob; `None` when it is malformed or lacks
/// one of them.
pub fn parse_header(blob: &[u8]) -> Option<(&str, &str, &str)> {
    let il = usize::try_from(be(blob, 0, 4)?).ok()?;
    let dl = usize::try_from(be(blob, 4, 4)?).ok()?;
    // rpm's own limits (hdrchkTags, hdrchkData).
    if il > 0xffff || dl > 0x0fff_ffff {
        return None;
    }
    let start = 8 + il * 16;
    let data = blob.get(start..start.checked_add(dl)?)?;
    let mut nvr = [None; 3];
    for i in 0..il {
        let e = 8 + i * 16;
        let tag = be(blob, e, 4)?;
        if (TAG_NAME..=TAG_RELEASE).contains(&tag) && be(blob, e + 4, 4)? == TYPE_STRING {
            let s = data.get(usize::try_from(be(blob, e + 8, 4)?).ok()?..)?;
            let s = s.get(..s.iter().position(|&b| b == 0)?)?;
            let slot = nvr.get_mut(usize::try_from(tag - TAG_NAME).ok()?)?;
            *slot = Some(std::str::from_utf8(s).ok()?);
        }
    }
    let [n, v, r] = nvr;
    Some((n?, v?, r?))
}

/// The installed packages of the database at `path`, as (name, `version-release`), keeping
/// those whose name `keep` accepts. A header that cannot be parsed is an error.
pub fn read(
    path: &Path,
    format: Format,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, Error> {
    let mut out = Vec::new();
    let mut add = |blob: &[u8]| {
        let (n, v, r) = parse_header(blob).ok_or_else(|| Error::Parse {
            path: path.to_owned(),
            reason: "a package header is malformed".into(),
        })?;
        if keep(n) {
            out.push((n.to_owned(), format!("{v}-{r}")));
        }
        Ok(())
    };
    match format {
        Format::Sqlite => read_sqlite(path, &mut add)?,
        Format::Ndb => read_ndb(path, &mut add)?,
        Format::Bdb => bdb::for_each(path, &mut |key, value| {
            // Record 0 holds rpm's next package number, not a header.
            if key.iter().any(|&b| b != 0) {
                add(value)?;
            }
            Ok(())
        })?,
    }
    Ok(out)
}

/// Calls `blob` with the `blob` column of each row of the `Packages` table.
fn read_sqlite(path: &Path, blob: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
    let db = Db::open(path)?;
    let root = db.table_root("Packages")?;
    db.rows(root, &mut |rec| match sqlite::column(rec, 1) {
        Some(sqlite::Value::Bytes(b)) => blob(b),
        _ => Err(Error::Parse {
            path: path.to_owned(),
            reason: "a Packages row has no blob".into(),
        }),
    })
}

/// Calls `blob` with each package blob of the ndb `Packages.db` at `path`.
fn read_ndb(path: &Path, blob: &mut dyn FnMut(&[u8]) -> Result<(), Error>) -> Result<(), Error> {
    let read_err = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let bad = |reason: &str| Error::Parse {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let le = |b: &[u8], at: usize| -> Option<u64> {
        let s = <[u8; 4]>::try_from(b.get(at..at + 4)?).ok()?;
        Some(u64::from(u32::from_le_bytes(s)))
    };
    let file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    let read = |len: u64, off: u64| -> Result<Vec<u8>, Error> {
        let mut buf = vec![0; usize::try_from(len).map_err(|_| bad("too large"))?];
        match off.checked_add(len) {
            Some(end) if end <= size => file.read_exact_at(&mut buf, off).map_err(read_err)?,
            _ => return Err(bad("a slot points past the end of the file")),
        }
        Ok(buf)
    };
    let head = read(32, 0)?;
    if !head.starts_with(b"RpmP\0\0\0\0") {
        return Err(bad("not an ndb Packages.db (version 0)"));
    }
    let slot_pages = le(&head, 12).unwrap_or(0);
    if slot_pages.saturating_mul(4096) > size {
        return Err(bad("more slot pages than the file holds"));
    }
    for page in 0..slot_pages {
        let slots = read(4096, page * 4096)?;
        for slot in slots.chunks_exact(16).skip(if page == 0 { 2 } else { 0 }) {
            let (Some(idx), Some(blk), Some(cnt)) = (le(slot, 4), le(slot, 8), le(slot, 12)) else {
                continue;
            };
            if !slot.starts_with(b"Slot") {
                return Err(bad("bad slot"));
            }
            if blk == 0 {
                continue; // free slot
            }
            let head = read(16, blk * 16)?;
            let len = le(&head, 12).unwrap_or(u64::MAX);
            if !head.starts_with(b"BlbS") || le(&head, 4) != Some(idx) {
                return Err(bad("bad blob header"));
            }
            if blk + cnt > size / 16 {
                return Err(bad("a slot points past the end of the file"));
            }
            if len > MAX_PAYLOAD || len + 28 > cnt * 16 {
                return Err(bad("a blob longer than its slot"));
            }
            blob(&read(len, blk * 16 + 16)?)?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)] // test blobs and files are a few KiB
mod tests {
    use super::*;
    use crate::facts::fixtures;

    /// A header blob with the given (tag, type, string) entries.
    fn header(entries: &[(u32, u32, &str)]) -> Vec<u8> {
        let mut index = Vec::new();
        let mut data = Vec::new();
        for (tag, ty, s) in entries {
            for v in [*tag, *ty, data.len() as u32, 1] {
                index.extend_from_slice(&v.to_be_bytes());
            }
            data.extend_from_slice(s.as_bytes());
            data.push(0);
        }
        let mut blob = (entries.len() as u32).to_be_bytes().to_vec();
        blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
        blob.extend(index);
        blob.extend(data);
        blob
    }

    #[test]
    fn header_name_version_release() {
        let blob = header(&[
            (100, 8, "C"),
            (1000, 6, "kernel-core"),
            (1001, 6, "5.14.0"),
            (1002, 6, "427.13.1.el9_4"),
            (1004, 9, "summary"),
        ]);
        assert_eq!(
            parse_header(&blob),
            Some(("kernel-core", "5.14.0", "427.13.1.el9_4"))
        );
    }

    #[test]
    fn header_malformed_is_none_never_a_panic() {
        let blob = header(&[(1000, 6, "a"), (1001, 6, "1"), (1002, 6, "2")]);
        assert!(parse_header(&blob).is_some());
        for len in 0..blob.len() {
            assert_eq!(parse_header(&blob[..len]), None, "cut at {len}");
        }
        assert_eq!(
            parse_header(&header(&[(1000, 6, "a"), (1001, 6, "1")])),
            None
        );
        assert_eq!(parse_header(&header(&[(1000, 4, "a")])), None, "wrong type");
        let mut huge = blob.clone();
        huge[..4].copy_from_slice(&0x0001_0000u32.to_be_bytes());
        assert_eq!(parse_header(&huge), None);
        for i in 8..blob.len() {
            for byte in [0x00, 0x7f, 0xff] {
                let mut m = blob.clone();
                m[i] = byte;
                let _ = parse_header(&m);
            }
        }
    }

    fn fedora_db() -> std::path::PathBuf {
        fixtures().join("apps-el9/var/lib/rpm/rpmdb.sqlite")
    }

    #[test]
    fn sqlite_fixture_made_by_rpm() {
        let mut got = read(&fedora_db(), Format::Sqlite, &|_| true).unwrap();
        got.sort();
        let names: Vec<String> = got.iter().map(|(n, v)| format!("{n}-{v}")).collect();
        assert!(
            names.contains(&"kernel-core-5.14.0-427.13.1.el9_4".to_owned()),
            "{names:?}"
        );
        assert!(
            names.contains(&"qemu-guest-agent-8.2.0-11.el9_4".to_owned()),
            "{names:?}"
        );
    }

    /// An ndb file holding `blobs`, laid out as rpm's rpmpkg.c writes it.
    fn ndb(blobs: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0u8; 4096];
        f[..4].copy_from_slice(b"RpmP");
        f[12..16].copy_from_slice(&1u32.to_le_bytes());
        for slot in f[32..].chunks_exact_mut(16) {
            slot[..4].copy_from_slice(b"Slot");
        }
        for (i, blob) in blobs.iter().enumerate() {
            let blk = f.len() / 16;
            let mut b = b"BlbS".to_vec();
            for v in [i as u32 + 1, 0, blob.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(blob);
            b.extend_from_slice(&[0; 12]); // tail: adler32, length, magic
            b.resize(b.len().div_ceil(16) * 16, 0);
            let slot = 32 + 16 * i;
            for (k, v) in [(i as u32 + 1), blk as u32, (b.len() / 16) as u32]
                .into_iter()
                .enumerate()
            {
                f[slot + 4 + 4 * k..slot + 8 + 4 * k].copy_from_slice(&v.to_le_bytes());
            }
            f.extend(b);
        }
        f
    }

    #[test]
    fn ndb_blobs_from_the_sqlite_fixture() {
        let mut blobs = Vec::new();
        read_sqlite(&fedora_db(), &mut |b| {
            blobs.push(b.to_vec());
            Ok(())
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("guestd-ndb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("Packages.db");
        std::fs::write(&path, ndb(&blobs)).unwrap();
        let mut want = read(&fedora_db(), Format::Sqlite, &|_| true).unwrap();
        let mut got = read(&path, Format::Ndb, &|_| true).unwrap();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        // Truncated or mutated copies: an error naming the file, never a panic.
        let good = ndb(&blobs);
        for cut in [0, 20, 40, 4096, 4200, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            let err = read(&path, Format::Ndb, &|_| true).unwrap_err();
            assert!(err.to_string().contains("Packages.db"), "{err}");
        }
        for at in [12, 36, 40, 44, 4096, 4108, 4112] {
            let mut m = good.clone();
            m[at] ^= 0xff;
            std::fs::write(&path, &m).unwrap();
            if let Err(e) = read(&path, Format::Ndb, &|_| true) {
                assert!(e.to_string().contains("Packages.db"), "{e}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
