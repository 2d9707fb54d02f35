//! The start of a dump kept while it streams past: `pg_restore --list` reads the archive's
//! header and table of contents from it after the dump, for the manifest's object list.
//!
//! A custom-format archive written to a pipe holds its header and table of contents
//! first, then the data. Keeping a fixed 4 MiB of the stream (as this once did) held 4 MiB
//! of table rows in memory for the whole backup when the table of contents of a typical
//! database is a few KiB; so the table of contents is walked as the bytes arrive (lengths
//! only, nothing is interpreted) and the rest is let go once it is complete. An archive
//! version this walker does not know keeps the old fixed amount, so a new pg_dump costs
//! memory, never the object list.

/// The most kept: a table of contents bigger than this only loses the object list in the
/// manifest.
pub const HEADER_KEEP: usize = 4 * 1024 * 1024;

/// What the first bytes of a dump say about where its table of contents ends.
#[derive(Debug, PartialEq, Eq)]
pub enum TocEnd {
    /// The header and table of contents are the first this many bytes.
    At(usize),
    /// They go on past the bytes given.
    Incomplete,
    /// Not a custom-format archive of a version known here.
    Unknown,
}

/// Archive versions walked here: 1.10 (PostgreSQL 9.0) to 1.16 (PostgreSQL 17). Their
/// layout is pg_backup_archiver.c's `ReadHead`/`ReadToc` and pg_backup_custom.c's
/// `_ReadExtraToc`.
const MIN_MINOR: u8 = 10;
const MAX_MINOR: u8 = 16;
/// `archCustom` in pg_backup.h.
const FORMAT_CUSTOM: u8 = 1;

pub fn toc_end(b: &[u8]) -> TocEnd {
    match walk(b) {
        Ok(end) => TocEnd::At(end),
        Err(Stop::Incomplete) => TocEnd::Incomplete,
        Err(Stop::Unknown) => TocEnd::Unknown,
    }
}

enum Stop {
    Incomplete,
    Unknown,
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    int_size: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, Stop> {
        let v = *self.b.get(self.pos).ok_or(Stop::Incomplete)?;
        self.pos += 1;
        Ok(v)
    }

    fn skip(&mut self, n: usize) -> Result<(), Stop> {
        let end = self.pos.checked_add(n).ok_or(Stop::Unknown)?;
        if end > self.b.len() {
            return Err(Stop::Incomplete);
        }
        self.pos = end;
        Ok(())
    }

    /// `ReadInt`: a sign byte, then `int_size` bytes, least significant first.
    fn int(&mut self) -> Result<i64, Stop> {
        let negative = self.byte()? != 0;
        let mut v: i64 = 0;
        for i in 0..self.int_size {
            let byte = i64::from(self.byte()?);
            // Only the low 4 bytes carry a value pg_dump writes (an int).
            if i < 4 {
                v |= byte << (8 * i);
            } else if byte != 0 {
                return Err(Stop::Unknown);
            }
        }
        Ok(if negative { -v } else { v })
    }

    /// `ReadStr`: a length (negative for NULL), then that many bytes. Whether it was NULL.
    fn str(&mut self) -> Result<bool, Stop> {
        let len = self.int()?;
        if len < 0 {
            return Ok(false);
        }
        self.skip(usize::try_from(len).map_err(|_| Stop::Unknown)?)?;
        Ok(true)
    }
}

fn walk(b: &[u8]) -> Result<usize, Stop> {
    const MAGIC: &[u8] = b"PGDMP";
    let head = &b[..b.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] {
        return Err(Stop::Unknown);
    }
    let mut c = Cursor {
        b,
        pos: 0,
        int_size: 0,
    };
    c.skip(MAGIC.len())?;
    let (major, minor, _rev) = (c.byte()?, c.byte()?, c.byte()?);
    if major != 1 || !(MIN_MINOR..=MAX_MINOR).contains(&minor) {
        return Err(Stop::Unknown);
    }
    c.int_size = usize::from(c.byte()?);
    let off_size = usize::from(c.byte()?);
    if !(1..=8).contains(&c.int_size) || !(1..=8).contains(&off_size) {
        return Err(Stop::Unknown);
    }
    if c.byte()? != FORMAT_CUSTOM {
        return Err(Stop::Unknown);
    }
    if minor >= 15 {
        c.byte()?; // compression algorithm
    } else {
        c.int()?; // compression level
    }
    for _ in 0..7 {
        c.int()?; // creation time: sec, min, hour, mday, mon, year, isdst
    }
    c.str()?; // database name
    c.str()?; // server version
    c.str()?; // pg_dump version
    let entries = c.int()?;
    if entries < 0 {
        return Err(Stop::Unknown);
    }
    for _ in 0..entries {
        if c.int()? <= 0 {
            return Err(Stop::Unknown); // dump ids start at 1
        }
        c.int()?; // had a data dumper
        c.str()?; // catalog table oid
        c.str()?; // oid
        c.str()?; // tag
        c.str()?; // desc
        if minor >= 11 {
            c.int()?; // section
        }
        c.str()?; // defn
        c.str()?; // drop statement
        c.str()?; // copy statement
        c.str()?; // namespace
        c.str()?; // tablespace
        if minor >= 14 {
            c.str()?; // table access method
        }
        if minor >= 16 {
            c.int()?; // relkind
        }
        c.str()?; // owner
        c.str()?; // "with oids"
        while c.str()? {} // dependencies, up to a NULL
        // The data offset: a flag (not set, set, no data), then `off_size` bytes.
        if !(1..=3).contains(&c.byte()?) {
            return Err(Stop::Unknown);
        }
        c.skip(off_size)?;
    }
    Ok(c.pos)
}

/// The dump's start as it streams past: up to the end of its table of contents, or the
/// first [`HEADER_KEEP`] bytes when its end cannot be told.
#[derive(Debug, Default)]
pub struct HeaderKeep {
    bytes: Vec<u8>,
    done: bool,
    /// The walk cannot tell (an unknown version): keep up to the limit without walking.
    blind: bool,
}

impl HeaderKeep {
    pub fn push(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let n = data.len().min(HEADER_KEEP - self.bytes.len());
        self.bytes.extend_from_slice(&data[..n]);
        if !self.blind {
            match toc_end(&self.bytes) {
                TocEnd::At(end) => {
                    self.bytes.truncate(end);
                    self.bytes.shrink_to_fit();
                    self.done = true;
                    return;
                }
                TocEnd::Unknown => self.blind = true,
                TocEnd::Incomplete => {}
            }
        }
        if self.bytes.len() >= HEADER_KEEP {
            self.done = true;
        }
    }

    /// What is held now (for a test, or a look at memory).
    pub fn held(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A custom-format archive of `minor` with `entries` TOC entries and `data` after it,
    /// laid out as pg_dump's `WriteHead`/`WriteToc` write it (4-byte ints, 8-byte offsets).
    fn archive(minor: u8, entries: &[(&str, &str, &[&str])], data: &[u8]) -> (Vec<u8>, usize) {
        fn int(out: &mut Vec<u8>, v: i64) {
            out.push(u8::from(v < 0));
            out.extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }
        fn s(out: &mut Vec<u8>, v: Option<&str>) {
            match v {
                None => int(out, -1),
                Some(t) => {
                    int(out, t.len() as i64);
                    out.extend_from_slice(t.as_bytes());
                }
            }
        }
        let mut a = b"PGDMP".to_vec();
        a.extend_from_slice(&[1, minor, 0, 4, 8, FORMAT_CUSTOM]);
        if minor >= 15 {
            a.push(0);
        } else {
            int(&mut a, 0);
        }
        for v in [1, 2, 3, 4, 5, 126, 0] {
            int(&mut a, v);
        }
        s(&mut a, Some("db"));
        s(&mut a, Some("15.18"));
        s(&mut a, Some("15.18"));
        int(&mut a, entries.len() as i64);
        for (i, (tag, desc, deps)) in entries.iter().enumerate() {
            int(&mut a, i as i64 + 1);
            int(&mut a, 1);
            s(&mut a, Some("1259"));
            s(&mut a, Some("16384"));
            s(&mut a, Some(tag));
            s(&mut a, Some(desc));
            if minor >= 11 {
                int(&mut a, 2);
            }
            s(&mut a, Some("CREATE TABLE x (a int);\n"));
            s(&mut a, Some(""));
            s(&mut a, None);
            s(&mut a, Some("public"));
            s(&mut a, Some(""));
            if minor >= 14 {
                s(&mut a, Some("heap"));
            }
            if minor >= 16 {
                int(&mut a, i64::from(b'r'));
            }
            s(&mut a, Some("postgres"));
            s(&mut a, Some("false"));
            for d in deps.iter() {
                s(&mut a, Some(d));
            }
            s(&mut a, None);
            a.push(1);
            a.extend_from_slice(&[0; 8]);
        }
        let end = a.len();
        a.extend_from_slice(data);
        (a, end)
    }

    #[test]
    fn the_end_is_found_for_every_known_version_and_not_before() {
        let entries: &[(&str, &str, &[&str])] = &[
            ("ENCODING", "ENCODING", &[]),
            ("events", "TABLE", &["1"]),
            ("events", "TABLE DATA", &["2", "1"]),
        ];
        for minor in MIN_MINOR..=MAX_MINOR {
            let (a, end) = archive(minor, entries, &[0x01; 1000]);
            assert_eq!(toc_end(&a), TocEnd::At(end), "1.{minor}");
            for cut in 0..end {
                assert_eq!(toc_end(&a[..cut]), TocEnd::Incomplete, "1.{minor}, cut {cut}");
            }
        }
    }

    #[test]
    fn other_archives_are_unknown() {
        let (mut a, _) = archive(17, &[], b"");
        assert_eq!(toc_end(&a), TocEnd::Unknown);
        a[6] = 9;
        assert_eq!(toc_end(&a), TocEnd::Unknown);
        let (mut tar, _) = archive(14, &[], b"");
        tar[10] = 3; // archTar
        assert_eq!(toc_end(&tar), TocEnd::Unknown);
        assert_eq!(toc_end(b"--\n-- PostgreSQL database dump"), TocEnd::Unknown);
        assert_eq!(toc_end(b"PGD"), TocEnd::Incomplete);
    }

    #[test]
    fn only_the_table_of_contents_is_kept() {
        let (a, end) = archive(14, &[("events", "TABLE", &[])], &vec![7u8; 9 << 20]);
        let mut keep = HeaderKeep::default();
        for chunk in a.chunks(64 * 1024) {
            keep.push(chunk);
        }
        assert!(keep.held() <= end, "held {} of a {end}-byte header", keep.held());
        assert_eq!(keep.into_bytes(), a[..end]);
    }

    #[test]
    fn an_unknown_archive_keeps_the_fixed_amount() {
        let (a, _) = archive(17, &[], &vec![7u8; 9 << 20]);
        let mut keep = HeaderKeep::default();
        for chunk in a.chunks(64 * 1024) {
            keep.push(chunk);
        }
        assert_eq!(keep.into_bytes(), a[..HEADER_KEEP]);
    }
}
