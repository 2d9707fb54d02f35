//! SQLite, in process (rusqlite with SQLite compiled in: no `sqlite3` tool, no system
//! library). The dump is a byte-exact image of the database file as of one read
//! transaction, read page by page through SQLite's own pager (the `sqlite_dbpage` virtual
//! table), so it is consistent while the application writes, in WAL and in rollback-journal
//! mode, and it never touches the disk: pages go through a bounded channel to the pipeline.
//! Restore writes the image beside the target, checks it with `PRAGMA integrity_check` and
//! renames it into place: the target is either the old file or the whole new one.
//!
//! # Restore by hand
//!
//! The archive is the database file itself, compressed (`.gz` and `gzip -d` for jobs with
//! `compression = "gzip"`). Stop the application first, then:
//!
//! ```text
//! zstd -d < db.sqlite.zst > /data/app.db.new
//! sqlite3 /data/app.db.new 'PRAGMA integrity_check'   # prints: ok
//! rm -f /data/app.db-wal /data/app.db-shm /data/app.db-journal
//! mv /data/app.db.new /data/app.db
//! ```
//!
//! The `-wal`, `-shm` and `-journal` files beside the old database belong to it: SQLite
//! would apply a leftover `-wal` or `-journal` to the new file and corrupt it.
//!
//! A database that was in WAL mode when it was backed up is restored in WAL mode (its
//! header says so; the mode is a persistent property of the file): SQLite creates its
//! `-wal` and `-shm` files beside it when it is opened, so the directory must be writable.
//! For a single self-contained file: `sqlite3 app.db 'PRAGMA journal_mode=DELETE'`.
//!
//! # What the application sees during a dump
//!
//! The dump holds a read transaction from its first page to its last. In WAL mode writers
//! go on (the `-wal` file grows until the dump ends, then checkpoints catch up). In
//! rollback-journal mode a writer cannot commit while the dump reads: it waits for its own
//! busy timeout and then gets SQLITE_BUSY, so a large database in rollback mode delays the
//! application's writes for the length of the dump; WAL mode avoids that.
//!
//! Like any reader of a WAL database, stowage needs write access to its `-shm` file (or
//! to the directory, to create it). A dump of a WAL database that no application has open
//! leaves an empty `-wal` and a `-shm` beside it (a read-only connection cannot remove
//! them): they are harmless, and the application removes them when it next closes it.
//!
//! SQLite's locks are POSIX locks, which a process loses on a file as soon as it closes
//! any descriptor of that file: a `files` source that reads the database's directory
//! while a dump of it runs in the same daemon (two jobs at once) would release the
//! dump's lock. Leave the database files out of `files` sources.

mod dump;
mod header;
mod restore;
mod scratch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;

use super::{Archive, Database, Dump, Engine, RestoreOptions, SourceError};
use crate::section::{Priority, Section};

/// How long a read waits for a writer's lock (rollback-journal mode: a commit in progress;
/// WAL mode: a recovery) before the dump gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

const EXAMPLE: &str = "path = \"/data/app.db\"";

/// `type = "sqlite"`.
pub struct Sqlite;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSqlite {
    /// The database file, as stowage sees it (in a container: the application's volume).
    path: Option<PathBuf>,
}

impl Engine for Sqlite {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawSqlite>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawSqlite = section.parse()?;
        let path = match raw.path {
            Some(p) => match check_source_path(&p) {
                Ok(()) => p,
                Err(e) => {
                    section.problem("path", e);
                    return None;
                }
            },
            None => {
                section.problem(
                    "path",
                    format!("required for type = \"sqlite\"; e.g. {EXAMPLE}"),
                );
                return None;
            }
        };
        Some(Arc::new(SqliteSource {
            name: section.name.clone(),
            path: Some(path),
            priority: section.priority,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(SqliteSource {
            name: name.to_string(),
            path: None,
            priority: Priority::default(),
        })
    }
}

/// The configured database file: absolute, because a relative path would depend on the
/// directory the daemon happens to be started from.
fn check_source_path(p: &Path) -> Result<(), String> {
    let text = p.to_string_lossy();
    if text.is_empty() {
        return Err(format!("is empty; give the database file, e.g. {EXAMPLE}"));
    }
    if !p.is_absolute() {
        return Err(format!(
            "\"{text}\" is not an absolute path; give the database file's full path, e.g. {EXAMPLE}"
        ));
    }
    if text.ends_with('/') || !names_a_file(p) {
        return Err(format!(
            "\"{text}\" names a directory; give the database file in it, e.g. {EXAMPLE}"
        ));
    }
    Ok(())
}

/// Whether a path ends in a file name (not "/", "." or "..").
fn names_a_file(p: &Path) -> bool {
    matches!(
        p.components().next_back(),
        Some(std::path::Component::Normal(_))
    )
}

/// A restore target: a path (absolute or relative) to a file, never a URL.
fn check_target_path(target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("give the database file to restore into, e.g. /data/app.db".into());
    }
    if target.contains("://") {
        return Err(
            "is a URL; a sqlite backup is restored into a file: give its path, e.g. /data/app.db"
                .into(),
        );
    }
    if target.ends_with('/') || !names_a_file(Path::new(target)) {
        return Err(
            "does not end in a file name; give the database file, e.g. /data/app.db".into(),
        );
    }
    Ok(())
}

/// A configured SQLite source. `path` is `None` for a source made only to restore.
#[derive(Debug)]
pub struct SqliteSource {
    name: String,
    path: Option<PathBuf>,
    priority: Priority,
}

impl SqliteSource {
    fn own_path(&self) -> Result<&Path, SourceError> {
        self.path.as_deref().ok_or_else(|| {
            SourceError::Refused(format!(
                "source \"{}\" is not in the config; give the database file with --to",
                self.name
            ))
        })
    }
}

/// An SQLite error as an I/O error with context, so that its message and source are kept.
fn sql_error(context: impl Into<String>, e: rusqlite::Error) -> SourceError {
    SourceError::io(context, std::io::Error::other(e))
}

/// Open a database file read-only. It must exist: SQLite would otherwise report a missing
/// file only as "unable to open database file".
fn open_read_only(path: &Path) -> Result<Connection, SourceError> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| SourceError::io(format!("cannot open SQLite database {shown}"), e))?;
    if !meta.is_file() {
        return Err(SourceError::Refused(format!(
            "{shown} is not a file; give the SQLite database file itself"
        )));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(format!("cannot open SQLite database {shown}"), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| sql_error(format!("cannot open SQLite database {shown}"), e))?;
    Ok(conn)
}

/// User tables (views, indexes and SQLite's own tables left out), sorted.
fn tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names = stmt.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// Tables of the database at `path`; none when the file does not exist.
fn tables_at(path: &Path) -> Result<Vec<String>, SourceError> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let conn = open_read_only(path)?;
    tables(&conn).map_err(|e| {
        sql_error(
            format!(
                "cannot read the tables of SQLite database {}",
                path.display()
            ),
            e,
        )
    })
}

#[async_trait]
impl Database for SqliteSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn extension(&self) -> &'static str {
        "sqlite"
    }

    fn format(&self) -> &'static str {
        "SQLite database file"
    }

    fn describe(&self) -> String {
        match &self.path {
            Some(p) => format!("sqlite {}", p.display()),
            None => "sqlite".to_string(),
        }
    }

    fn target_example(&self) -> &'static str {
        "/PATH/TO/FILE.db"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        check_target_path(target)
    }

    /// The image is written to a temporary file beside the target and renamed over it only
    /// after `copy_image` has read the archive to its end (`read` returned 0), and the
    /// archive's reader fails *before* that end when size or sha256 differ (`codec::Verify`
    /// beneath a decoder that reads to the end of its input): a damaged object fails the
    /// restore before the rename, and the dropped temporary file is removed.
    fn verifies_before_commit(&self) -> bool {
        true
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        Ok(("sqlite".to_string(), rusqlite::version().to_string()))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        dump::start(self.own_path()?.to_path_buf(), self.priority).await
    }

    async fn dump_counting_rows(&self) -> Result<Dump, SourceError> {
        dump::start_counting(self.own_path()?.to_path_buf(), self.priority, true).await
    }

    fn scratch(&self) -> Option<&dyn crate::engine::Scratch> {
        Some(self)
    }

    /// Verify: the image read to its end (its sha256 checked beneath) must be an SQLite
    /// file whose header's page size divides its length; listing its tables would need it
    /// on disk, and the manifest's `objects` has them.
    async fn check_archive(
        &self,
        archive: &dyn Archive,
    ) -> Result<crate::engine::ArchiveCheck, SourceError> {
        use tokio::io::AsyncReadExt;
        let mut r = archive.open().await?;
        let mut head = Vec::with_capacity(HEADER_CHECKED);
        let mut total = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r
                .read(&mut buf)
                .await
                .map_err(|e| SourceError::io("reading the backup", e))?;
            if n == 0 {
                break;
            }
            if head.len() < HEADER_CHECKED {
                let take = n.min(HEADER_CHECKED - head.len());
                head.extend_from_slice(&buf[..take]);
            }
            total += n as u64;
        }
        image_check(&head, total)
            .map(crate::engine::ArchiveCheck::Whole)
            .map_err(SourceError::Protocol)
    }

    /// Listing a backup's tables would mean reading the whole image, and it cannot be
    /// opened without writing it to disk; the manifest's `objects` already has them.
    async fn archive_objects(&self, _archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        Err(SourceError::Refused(format!(
            "listing the tables of a sqlite backup is not supported: it is a whole database file; its tables are in the backup's manifest (objects), or restore it (source \"{}\") and run sqlite3 FILE .tables",
            self.name
        )))
    }

    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError> {
        let path = match target {
            Some(t) => {
                check_target_path(t).map_err(|e| {
                    SourceError::Refused(format!("invalid sqlite target \"{t}\": {e}"))
                })?;
                PathBuf::from(t)
            }
            None => self.own_path()?.to_path_buf(),
        };
        tokio::task::spawn_blocking(move || tables_at(&path))
            .await
            .map_err(|e| SourceError::internal("listing SQLite tables", e))?
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        restore::restore(&self.name, archive, opts).await
    }
}

/// The bytes of an image's header that [`image_check`] reads.
const HEADER_CHECKED: usize = 100;

/// What the file format promises of a whole database image of `total` bytes starting with
/// `head`: the magic string, a page size that is a power of two from 512 to 65536, and a
/// length that is a whole number of pages.
fn image_check(head: &[u8], total: u64) -> Result<String, String> {
    const MAGIC: &[u8] = b"SQLite format 3\0";
    if head.len() < HEADER_CHECKED || !head.starts_with(MAGIC) {
        return Err(format!(
            "not an SQLite database image: it does not start with the 100-byte header \"SQLite format 3\" ({total} bytes)"
        ));
    }
    let page = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536u64,
        p if p >= 512 && p.is_power_of_two() => u64::from(p),
        p => return Err(format!("SQLite header: invalid page size {p}")),
    };
    if !total.is_multiple_of(page) {
        return Err(format!(
            "SQLite image of {total} bytes is not a whole number of {page}-byte pages: it is cut short or padded"
        ));
    }
    Ok(format!(
        "SQLite image: header ok, {} page(s) of {page} bytes",
        total / page
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_check_reads_the_header() {
        let mut head = b"SQLite format 3\0".to_vec();
        head.resize(100, 0);
        head[16] = 0x10; // 4096
        assert!(image_check(&head, 8192).is_ok());
        assert!(image_check(&head, 8193).is_err());
        assert!(image_check(&head[..50], 8192).is_err());
        head[16] = 0;
        head[17] = 100;
        assert!(image_check(&head, 8192).is_err());
        head[16] = 0;
        head[17] = 1; // 65536
        assert!(image_check(&head, 65536).is_ok());
        let mut other = head.clone();
        other[0] = b'X';
        assert!(image_check(&other, 65536).is_err());
    }

    #[test]
    fn source_paths() {
        assert_eq!(check_source_path(Path::new("/data/app.db")), Ok(()));
        let e = check_source_path(Path::new("data/app.db")).expect_err("relative");
        assert!(
            e.contains("\"data/app.db\"") && e.contains("absolute") && e.contains("/data/app.db"),
            "{e}"
        );
        for dir in ["/data/", "/", "/data/.."] {
            let e = check_source_path(Path::new(dir)).expect_err(dir);
            assert!(e.contains("directory"), "{dir}: {e}");
        }
        assert!(check_source_path(Path::new(":memory:")).is_err());
        assert!(check_source_path(Path::new("")).is_err());
    }

    #[test]
    fn targets() {
        for ok in ["/data/app.db", "app.db", "./restored/app.db", "../x.sqlite"] {
            assert_eq!(check_target_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/data/",
            ".",
            "..",
            "/",
            "postgres://h/db",
            "file:///x.db",
        ] {
            assert!(check_target_path(bad).is_err(), "{bad}");
        }
        assert!(check_target_path("sqlite://x").unwrap_err().contains("URL"));
    }

    #[test]
    fn configuration() {
        assert_eq!(Sqlite.keys(), &["path"]);
        assert_eq!(Sqlite.kind(), "sqlite");
        assert!(!Sqlite.has_tables());
    }

    /// The dump depends on the `sqlite_dbpage` virtual table, which exists only when the
    /// bundled SQLite is compiled with SQLITE_ENABLE_DBPAGE_VTAB (.cargo/config.toml).
    #[test]
    fn bundled_sqlite_has_dbpage() {
        let conn = Connection::open_in_memory().expect("open");
        let options: Vec<String> = conn
            .prepare("PRAGMA compile_options")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("compile_options");
        assert!(
            options.iter().any(|o| o == "ENABLE_DBPAGE_VTAB"),
            "{options:?}"
        );
    }

    #[test]
    fn tables_of_a_missing_file_are_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            tables_at(&dir.path().join("nope.db")).expect("missing"),
            Vec::<String>::new()
        );
        let f = dir.path().join("t.db");
        let conn = Connection::open(&f).expect("create");
        conn.execute_batch(
            "CREATE TABLE b(x); CREATE TABLE a(y INTEGER PRIMARY KEY AUTOINCREMENT); \
             CREATE VIEW v AS SELECT 1; CREATE INDEX i ON b(x);",
        )
        .expect("schema");
        drop(conn);
        assert_eq!(tables_at(&f).expect("tables"), ["a", "b"]);
    }
}
