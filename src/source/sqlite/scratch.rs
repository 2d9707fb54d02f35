//! Restore drills for SQLite. The drill's `to` is a directory; each drill makes a private
//! directory in it (mode 0700, a fresh name), restores the image there as a new file (the
//! restore checks it with `PRAGMA integrity_check` before it renames it into place), checks
//! it again, counts each table's rows and removes the directory, also when the drill fails
//! or is cancelled. Nothing is written beside a file the user owns, and the source's own
//! file or directory is refused as `to`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags, types::ValueRef};

use super::{SqliteSource, sql_error, tables};
use crate::engine::{Scratch, ScratchSpace, SourceError};

/// Rows of each table in `tables`, read through `conn` (inside the dump's read transaction);
/// `None`, with a warning, when a table cannot be counted (a virtual table whose module this
/// build lacks): the backup is kept, without counts.
pub(super) fn counted(
    conn: &Connection,
    tables: &[String],
    path: &Path,
) -> Option<BTreeMap<String, u64>> {
    match count_rows(conn, tables) {
        Ok(rows) => Some(rows),
        Err(e) => {
            tracing::warn!(
                "cannot count the rows of {} for the drill ({e}); the backup records no row counts",
                path.display()
            );
            None
        }
    }
}

fn count_rows(conn: &Connection, tables: &[String]) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut rows = BTreeMap::new();
    for t in tables {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM main.{}", quote(t)),
            [],
            |r| r.get(0),
        )?;
        rows.insert(t.clone(), u64::try_from(n).unwrap_or(0));
    }
    Ok(rows)
}

/// An identifier quoted for SQLite (a name from the database's own schema).
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A path as the drill compares it: resolved when it exists, else absolute.
fn resolved(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

#[async_trait]
impl Scratch for SqliteSource {
    /// `to` is the source's file, or the directory it lives in (the drill writes nothing
    /// beside the application's files).
    fn is_own_database(&self, target: &str) -> bool {
        let Some(own) = &self.path else {
            return false;
        };
        let to = resolved(Path::new(target));
        let own = resolved(own);
        to == own || own.parent() == Some(to.as_path())
    }

    fn noun(&self) -> &'static str {
        "file"
    }

    async fn space<'a>(&'a self, to: &str) -> Result<Box<dyn ScratchSpace + 'a>, SourceError> {
        if self.is_own_database(to) {
            return Err(SourceError::Refused(format!(
                "{to} is the file of source \"{}\" or its directory; give a directory for the drill's private scratch directory, e.g. to = \"/var/tmp\"",
                self.name
            )));
        }
        let dir = crate::engine::scratch_dir(to)?;
        let file = dir.path().join(format!("{}.db", file_name(&self.name)));
        let target = file.to_str().map(str::to_string).ok_or_else(|| {
            SourceError::Refused(format!(
                "{} is not valid UTF-8; give a drill directory whose path is",
                dir.path().display()
            ))
        })?;
        Ok(Box::new(SqliteScratch {
            dir: Some(dir),
            file,
            target,
        }))
    }
}

/// The source's name as a file name: letters, digits, '-' and '_' kept.
fn file_name(name: &str) -> String {
    let kept: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if kept.is_empty() {
        "drill".to_string()
    } else {
        kept
    }
}

/// Characters with a meaning in an SQLite URI's path.
const URI_PATH: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b'%').add(b'?').add(b'#');

/// The private directory (removed when dropped) and the restored file in it.
struct SqliteScratch {
    dir: Option<tempfile::TempDir>,
    file: PathBuf,
    target: String,
}

impl SqliteScratch {
    /// Read-only and immutable: nothing else has the file, and nothing is written beside it.
    fn open(&self) -> Result<Connection, SourceError> {
        let uri = format!(
            "file:{}?immutable=1",
            percent_encoding::utf8_percent_encode(&self.target, URI_PATH)
        );
        Connection::open_with_flags(
            uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_URI
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| sql_error(format!("cannot open the restored file {}", self.file.display()), e))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(Connection) -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SourceError> {
        let conn = self.open()?;
        tokio::task::spawn_blocking(move || work(conn))
            .await
            .map_err(|e| SourceError::internal("the SQLite drill task failed", e))?
    }
}

#[async_trait]
impl ScratchSpace for SqliteScratch {
    fn target(&self) -> &str {
        &self.target
    }

    /// `PRAGMA integrity_check` first: counts of a damaged file mean nothing.
    async fn row_counts(&mut self) -> Result<BTreeMap<String, u64>, SourceError> {
        let shown = self.file.display().to_string();
        self.blocking(move |conn| {
            let context = || format!("cannot check the restored file {shown}");
            let report: Vec<String> = conn
                .prepare("PRAGMA integrity_check(20)")
                .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
                .map_err(|e| sql_error(context(), e))?;
            if report != ["ok"] {
                return Err(SourceError::Protocol(format!(
                    "the restored file fails PRAGMA integrity_check: {}",
                    report.join("; ")
                )));
            }
            let names = tables(&conn).map_err(|e| sql_error(context(), e))?;
            count_rows(&conn, &names).map_err(|e| sql_error(context(), e))
        })
        .await
    }

    async fn check(&mut self, query: &str) -> Result<bool, SourceError> {
        let query = query.to_string();
        self.blocking(move |conn| {
            let mut stmt = conn
                .prepare(&query)
                .map_err(|e| sql_error("the check does not compile", e))?;
            if stmt.column_count() != 1 {
                return Err(SourceError::Refused(format!(
                    "the check returns {} column(s); it must return one boolean, e.g. select count(*) > 0 from orders",
                    stmt.column_count()
                )));
            }
            let mut rows = stmt.query([]).map_err(|e| sql_error("the check failed", e))?;
            let mut values = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sql_error("the check failed", e))? {
                values.push(match row.get_ref(0).map_err(|e| sql_error("the check failed", e))? {
                    ValueRef::Integer(1) => Some(true),
                    ValueRef::Integer(0) => Some(false),
                    _ => None,
                });
                if values.len() > 1 {
                    break;
                }
            }
            match values.as_slice() {
                [Some(b)] => Ok(*b),
                [None] => Err(SourceError::Refused(
                    "the check returned a value that is not a boolean (1 or 0); write it to return true or false, e.g. select count(*) > 0 from orders".to_string(),
                )),
                _ => Err(SourceError::Refused(
                    "the check must return exactly one row holding one boolean, e.g. select count(*) > 0 from orders".to_string(),
                )),
            }
        })
        .await
    }

    async fn remove(mut self: Box<Self>) -> Result<(), SourceError> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let shown = dir.path().display().to_string();
        tokio::task::spawn_blocking(move || dir.close())
            .await
            .map_err(|e| SourceError::internal("removing the scratch directory", e))?
            .map_err(|e| SourceError::io(format!("cannot remove {shown}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_and_its_directory_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"").expect("file");
        let s = SqliteSource {
            name: "db".into(),
            path: Some(db.clone()),
            priority: Default::default(),
        };
        assert!(s.is_own_database(db.to_str().expect("utf-8")));
        assert!(s.is_own_database(dir.path().to_str().expect("utf-8")));
        assert!(s.is_own_database(&format!("{}/./app.db", dir.path().display())));
        let other = tempfile::tempdir().expect("tempdir");
        assert!(!s.is_own_database(other.path().to_str().expect("utf-8")));
        assert_eq!(file_name("my db/../x"), "my_db____x");
    }
}
