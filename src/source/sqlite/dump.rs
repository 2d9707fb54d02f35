//! The dump: one read transaction pins a snapshot, and `sqlite_dbpage` hands its pages over
//! in file order. The pager serves each page from the database file or, in WAL mode, from
//! the `-wal` frames the snapshot includes, so the pages put end to end are the file a
//! checkpoint at that moment would have produced: a byte-exact database image. Pages go
//! through a bounded channel, so memory stays small whatever the database's size.
//!
//! The header is streamed unchanged, WAL flag included (see the module documentation):
//! rewriting offsets 18/19 to rollback mode would make a restore silently switch an
//! application that enabled WAL once (it is a persistent setting) back to rollback
//! journaling, and a WAL-mode file without a `-wal` beside it is a complete database.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use rusqlite::{Connection, InterruptHandle};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::StreamReader;

use super::{header, open_read_only, sql_error, tables};
use crate::section::Priority;
use crate::engine::{Dump, DumpInfo, SourceError};

/// Pages are sent in batches of this size, at most `DEPTH` batches ahead of the reader.
const BATCH: usize = 256 * 1024;
const DEPTH: usize = 16;

const PAGES: &str = "SELECT data FROM sqlite_dbpage('main') ORDER BY pgno";

/// Start a dump of `path`: the snapshot is taken (and every error about the file reported)
/// before this returns.
pub(super) async fn start(path: PathBuf, priority: Priority) -> Result<Dump, SourceError> {
    start_counting(path, priority, false).await
}

/// [`start`], and with `count_rows` each table's rows counted in the dump's snapshot.
pub(super) async fn start_counting(
    path: PathBuf,
    priority: Priority,
    count_rows: bool,
) -> Result<Dump, SourceError> {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(DEPTH);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (done_tx, done_rx) = oneshot::channel();
    // A thread of its own rather than the blocking pool: the job's nice/ionice apply per
    // thread, and a pooled thread would keep them for whatever it runs next.
    std::thread::Builder::new()
        .name("stowage-sqlite-dump".into())
        .spawn(move || {
            lower_thread_priority(priority);
            let snapshot = match Snapshot::take(&path, count_rows) {
                Ok(s) => s,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if ready_tx
                .send(Ok(snapshot.conn.get_interrupt_handle()))
                .is_err()
            {
                return; // the dump was abandoned before it began
            }
            let result = snapshot.stream(&tx);
            // The read transaction ends (the connection closes) before the reader can see
            // the end of the stream, which comes only when `tx` is dropped: once the
            // pipeline has read everything, the database is no longer held.
            drop(snapshot);
            let _ = done_tx.send(result);
            drop(tx);
        })
        .map_err(|e| SourceError::io("cannot start the SQLite dump thread", e))?;
    let interrupt = match ready_rx.await {
        Ok(Ok(handle)) => Interrupt(handle),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ended_early()),
    };
    let pages = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Dump {
        reader: Box::new(SnapshotReader {
            inner: StreamReader::new(pages),
            _interrupt: interrupt,
        }),
        finish: async move { done_rx.await.map_err(|_| ended_early())? }.boxed(),
    })
}

fn ended_early() -> SourceError {
    SourceError::Protocol("the SQLite dump thread ended without a result".into())
}

/// A read transaction on the database, with what it holds.
struct Snapshot {
    conn: Connection,
    path: PathBuf,
    tables: Vec<String>,
    rows: Option<std::collections::BTreeMap<String, u64>>,
    page_size: usize,
    page_count: u64,
}

impl Snapshot {
    fn take(path: &Path, count_rows: bool) -> Result<Snapshot, SourceError> {
        let shown = path.display();
        let conn = open_read_only(path)?;
        let context = || format!("cannot read SQLite database {shown}");
        // A deferred transaction takes its snapshot at its first read: the table list below
        // and every page after it come from the same state of the database.
        conn.execute_batch("BEGIN")
            .map_err(|e| sql_error(context(), e))?;
        let tables = tables(&conn).map_err(|e| sql_error(context(), e))?;
        let page_size: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sql_error(context(), e))?;
        let page_count: i64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(|e| sql_error(context(), e))?;
        if page_count == 0 {
            return Err(SourceError::Refused(format!(
                "{shown} is empty (0 bytes, no tables): nothing to back up; check the source's path, or let the application create its database first"
            )));
        }
        if let Err(e) = conn.prepare(PAGES) {
            return Err(if e.to_string().contains("sqlite_dbpage") {
                SourceError::Build {
                    missing: "SQLite's sqlite_dbpage table".to_string(),
                    fix: "build it from its repository, whose .cargo/config.toml sets LIBSQLITE3_FLAGS=-DSQLITE_ENABLE_DBPAGE_VTAB".to_string(),
                    source: Box::new(e),
                }
            } else {
                sql_error(context(), e)
            });
        }
        // In the same read transaction as the pages: the counts are the image's.
        let rows = count_rows
            .then(|| super::scratch::counted(&conn, &tables, path))
            .flatten();
        Ok(Snapshot {
            conn,
            path: path.to_path_buf(),
            tables,
            rows,
            page_size: usize::try_from(page_size).unwrap_or(0),
            page_count: u64::try_from(page_count).unwrap_or(0),
        })
    }

    /// Send every page, in batches; the reader going away ends the dump.
    fn stream(&self, tx: &mpsc::Sender<io::Result<Bytes>>) -> Result<DumpInfo, SourceError> {
        let context = || format!("reading SQLite database {}", self.path.display());
        let mut stmt = self
            .conn
            .prepare(PAGES)
            .map_err(|e| sql_error(context(), e))?;
        let mut rows = stmt.query([]).map_err(|e| sql_error(context(), e))?;
        let mut batch = BytesMut::with_capacity(BATCH + self.page_size);
        let mut pages = 0u64;
        let mut written_by = None;
        let send = |batch: &mut BytesMut| {
            let full = std::mem::replace(batch, BytesMut::with_capacity(BATCH + self.page_size));
            tx.blocking_send(Ok(full.freeze())).map_err(|_| abandoned())
        };
        loop {
            let row = match rows.next() {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) if tx.is_closed() => return Err(abandoned_by(e)),
                Err(e) => return Err(sql_error(context(), e)),
            };
            let page = row
                .get_ref(0)
                .and_then(|v| v.as_blob().map_err(Into::into))
                .map_err(|e| sql_error(context(), e))?;
            if page.len() != self.page_size {
                return Err(SourceError::Protocol(format!(
                    "{}: page {} has {} bytes, the page size is {}",
                    context(),
                    pages + 1,
                    page.len(),
                    self.page_size
                )));
            }
            if pages == 0 {
                written_by = header::written_by(page);
            }
            batch.extend_from_slice(page);
            pages += 1;
            if batch.len() >= BATCH {
                send(&mut batch)?;
            }
        }
        if !batch.is_empty() {
            send(&mut batch)?;
        }
        if pages != self.page_count {
            return Err(SourceError::Protocol(format!(
                "{}: read {pages} pages, the snapshot has {}",
                context(),
                self.page_count
            )));
        }
        Ok(DumpInfo {
            server_version: written_by.or_else(|| Some(rusqlite::version().to_string())),
            objects: Some(self.tables.clone()),
            rows: self.rows.clone(),
            wal: None,
        })
    }
}

fn abandoned() -> SourceError {
    SourceError::io(
        "SQLite dump",
        io::Error::new(io::ErrorKind::BrokenPipe, "abandoned by its reader"),
    )
}

fn abandoned_by(e: rusqlite::Error) -> SourceError {
    SourceError::io(
        "SQLite dump abandoned by its reader",
        io::Error::new(io::ErrorKind::BrokenPipe, e),
    )
}

/// Interrupts the dump's SQLite statement when the reader is dropped, so a cancelled run
/// does not wait for the next page to notice.
struct Interrupt(InterruptHandle);

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.0.interrupt();
    }
}

struct SnapshotReader<S> {
    inner: StreamReader<S, Bytes>,
    _interrupt: Interrupt,
}

impl<S> AsyncRead for SnapshotReader<S>
where
    S: futures::Stream<Item = io::Result<Bytes>> + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

/// The job's nice/ionice, for the calling thread only (Linux applies both per thread).
fn lower_thread_priority(p: Priority) {
    if p == Priority::default() {
        return;
    }
    // SAFETY: gettid, setpriority and ioprio_set take plain integers and only affect the
    // calling thread.
    unsafe {
        let tid = libc::gettid();
        if let Some(n) = p.nice {
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, n);
        }
        if let Some(io) = p.io {
            // ioprio_set(IOPRIO_WHO_PROCESS, tid, class << 13 | level)
            let (class, level) = match io {
                crate::section::IoPriority::Idle => (3i64, 0i64),
                crate::section::IoPriority::BestEffort(l) => (2, i64::from(l)),
            };
            libc::syscall(
                libc::SYS_ioprio_set,
                1i64,
                i64::from(tid),
                (class << 13) | level,
            );
        }
    }
    // Best effort, as for child processes: a refused priority change must not stop the
    // backup.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::AsyncReadExt;

    fn db(dir: &Path, name: &str, wal: bool) -> (PathBuf, Connection) {
        let path = dir.join(name);
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(if wal {
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0;"
        } else {
            "PRAGMA journal_mode = DELETE;"
        })
        .expect("mode");
        conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);")
            .expect("schema");
        (path, conn)
    }

    fn fill(conn: &Connection, rows: usize, size: usize) {
        conn.execute_batch("BEGIN").expect("begin");
        for _ in 0..rows {
            conn.execute("INSERT INTO t(v) VALUES (randomblob(?1))", [size as i64])
                .expect("insert");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }

    async fn read_all(dump: Dump) -> (Vec<u8>, Result<DumpInfo, SourceError>) {
        let mut reader = dump.reader;
        let mut image = Vec::new();
        reader.read_to_end(&mut image).await.expect("read");
        (image, dump.finish.await)
    }

    /// The pages come in file order from the table itself: no sort (which would hold the
    /// whole database in a temporary b-tree).
    #[test]
    fn pages_are_not_sorted() {
        let conn = Connection::open_in_memory().expect("open");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PAGES}"))
            .and_then(|mut s| s.query_map([], |r| r.get(3))?.collect())
            .expect("plan");
        assert!(!plan.iter().any(|p| p.contains("TEMP B-TREE")), "{plan:?}");
    }

    /// The image is the database as of the dump's start, WAL frames included, even while a
    /// writer commits during the dump; the header (and its WAL flag) is kept.
    #[tokio::test]
    async fn image_is_the_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = db(dir.path(), "wal.db", true);
        fill(&writer, 300, 3000);
        assert!(
            std::fs::metadata(dir.path().join("wal.db-wal"))
                .expect("wal")
                .len()
                > 500_000,
            "the rows are still in the -wal only"
        );
        let dump = start(path.clone(), Priority::default())
            .await
            .expect("dump");
        fill(&writer, 50, 3000);
        let (image, info) = read_all(dump).await;
        let info = info.expect("finish");
        assert_eq!(info.objects, Some(vec!["t".to_string()]));
        assert_eq!(info.server_version.as_deref(), Some(rusqlite::version()));
        assert!(header::wal_mode(&image));
        let copy = dir.path().join("copy.db");
        std::fs::write(&copy, &image).expect("write");
        let restored = Connection::open(&copy).expect("open copy");
        let n: i64 = restored
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 300);
        let ok: String = restored
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(ok, "ok");
        let page_size = header::page_size(&image).expect("page size") as usize;
        assert_eq!(image.len() % page_size, 0);
    }

    /// A reader that goes away mid-dump ends the read transaction: a writer in rollback
    /// mode (which cannot commit while a reader holds the file) then commits at once.
    #[tokio::test]
    async fn dropping_the_reader_releases_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = db(dir.path(), "big.db", false);
        // Larger than everything buffered between the producer and this reader.
        fill(&writer, 3000, 4000);
        writer
            .busy_timeout(Duration::from_millis(50))
            .expect("timeout");
        let dump = start(path.clone(), Priority::default())
            .await
            .expect("dump");
        let mut reader = dump.reader;
        let mut first = vec![0u8; 4096];
        reader.read_exact(&mut first).await.expect("first page");
        assert_eq!(&first[..16], header::MAGIC);
        let e = writer
            .execute("INSERT INTO t(v) VALUES (x'00')", [])
            .expect_err("the dump holds the file");
        assert_eq!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseBusy)
        );
        drop(reader);
        assert!(dump.finish.await.is_err(), "an abandoned dump is no backup");
        writer
            .busy_timeout(Duration::from_secs(5))
            .expect("timeout");
        writer
            .execute("INSERT INTO t(v) VALUES (x'00')", [])
            .expect("the dump let go");
    }

    #[tokio::test]
    async fn files_that_are_no_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = |p: &Path| {
            let p = p.to_path_buf();
            async move {
                match start(p, Priority::default()).await {
                    Ok(_) => panic!("dumped"),
                    Err(e) => e.to_string(),
                }
            }
        };
        let e = err(&dir.path().join("missing.db")).await;
        assert!(
            e.contains("missing.db") && e.contains("No such file"),
            "{e}"
        );
        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 8192]).expect("junk");
        let e = err(&junk).await;
        assert!(e.contains("junk.db") && e.contains("not a database"), "{e}");
        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("empty");
        let e = err(&empty).await;
        assert!(e.contains("empty.db") && e.contains("empty"), "{e}");
        let e = err(dir.path()).await;
        assert!(e.contains("not a file"), "{e}");
    }
}
