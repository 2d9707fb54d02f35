//! The 100-byte header at the start of an SQLite database file
//! (<https://www.sqlite.org/fileformat.html#the_database_header>): what the dump records and
//! what a restore checks before it trusts an image.

/// Every SQLite 3 database file starts with these 16 bytes.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Bytes needed for everything read here.
pub const LEN: usize = 100;

/// Page size in bytes (offset 16, big-endian; 1 means 65536), when valid.
pub fn page_size(header: &[u8]) -> Option<u32> {
    let raw = u16::from_be_bytes(header.get(16..18)?.try_into().ok()?);
    let size = if raw == 1 { 65536 } else { u32::from(raw) };
    (size.is_power_of_two() && (512..=65536).contains(&size)).then_some(size)
}

/// Whether the file is in WAL mode (offsets 18 and 19, the read and write versions, are 2).
pub fn wal_mode(header: &[u8]) -> bool {
    header.get(18..20) == Some(&[2, 2])
}

/// The SQLite version that last wrote the file (offset 96, e.g. 3040001 for "3.40.1"): the
/// application's SQLite, which is what "server version" means for a database without a
/// server.
pub fn written_by(header: &[u8]) -> Option<String> {
    let n = u32::from_be_bytes(header.get(96..100)?.try_into().ok()?);
    (n >= 3_000_000).then(|| format!("{}.{}.{}", n / 1_000_000, n / 1000 % 1000, n % 1000))
}

/// Why bytes are not the start of an SQLite database image, or `None` when they are.
pub fn problem(header: &[u8]) -> Option<String> {
    if header.len() < LEN || &header[..16] != MAGIC {
        return Some("it does not start with the SQLite header (\"SQLite format 3\")".into());
    }
    if page_size(header).is_none() {
        return Some("its header has an invalid page size".into());
    }
    None
}

/// Whether a rollback journal may hold changes SQLite would roll back into the database
/// file when it is next opened: SQLite itself ignores a journal whose first byte is zero
/// (a committed journal in PERSIST mode, or an empty one).
pub fn journal_may_be_hot(start: &[u8]) -> bool {
    start.first().is_some_and(|b| *b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(page: u16, mode: u8, version: u32) -> Vec<u8> {
        let mut h = vec![0u8; LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page.to_be_bytes());
        h[18] = mode;
        h[19] = mode;
        h[96..100].copy_from_slice(&version.to_be_bytes());
        h
    }

    #[test]
    fn fields() {
        let h = header(4096, 2, 3_040_001);
        assert_eq!(page_size(&h), Some(4096));
        assert!(wal_mode(&h));
        assert_eq!(written_by(&h).as_deref(), Some("3.40.1"));
        assert_eq!(problem(&h), None);
        let h = header(1, 1, 3_054_001);
        assert_eq!(page_size(&h), Some(65536));
        assert!(!wal_mode(&h));
        assert_eq!(written_by(&h).as_deref(), Some("3.54.1"));
        assert_eq!(written_by(&header(512, 1, 0)), None);
    }

    #[test]
    fn problems() {
        assert!(problem(b"").is_some());
        assert!(problem(&[0u8; 100]).is_some());
        assert!(problem(&header(4096, 1, 0)[..99]).is_some());
        for bad in [0u16, 256, 1000, 3] {
            let p = problem(&header(bad, 1, 0)).expect("bad page size");
            assert!(p.contains("page size"), "{bad}: {p}");
        }
        let mut gz = header(4096, 1, 0);
        gz[..2].copy_from_slice(&[0x1f, 0x8b]);
        assert!(
            problem(&gz)
                .expect("not sqlite")
                .contains("SQLite format 3")
        );
    }

    #[test]
    fn journals() {
        assert!(!journal_may_be_hot(b""));
        assert!(!journal_may_be_hot(&[0; 28]));
        assert!(journal_may_be_hot(&[0xd9, 0xd5, 0x05, 0xf9]));
    }

    /// The header of a real file, as SQLite writes it.
    #[test]
    fn real_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("h.db");
        let conn = rusqlite::Connection::open(&f).expect("open");
        conn.execute_batch(
            "PRAGMA page_size = 8192; PRAGMA journal_mode = WAL; CREATE TABLE t(x);",
        )
        .expect("create");
        drop(conn);
        let bytes = std::fs::read(&f).expect("read");
        assert_eq!(problem(&bytes), None);
        assert_eq!(page_size(&bytes), Some(8192));
        assert!(wal_mode(&bytes));
        assert_eq!(written_by(&bytes).as_deref(), Some(rusqlite::version()));
    }
}
