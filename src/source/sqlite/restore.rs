//! Restore: the image is written to a hidden file beside the target, synced, checked with
//! `PRAGMA integrity_check`, and renamed over the target. Whatever fails before the rename
//! leaves the old file as it was and no partial file (the temporary file is removed when
//! dropped).
//!
//! The files SQLite keeps beside a database (`-wal`, `-journal`, `-shm`) belong to the old
//! file, but SQLite finds them by name: a leftover `-wal` with frames or a hot `-journal`
//! would be applied to the restored file and corrupt it, and an application that still has
//! the old file open would go on writing them. So a file that is replaced must not be in
//! use (checked by taking SQLite's exclusive lock on it, which any open WAL connection or
//! any transaction in progress prevents), and once that lock has been held and released,
//! SQLite has folded a committed `-wal` into the old file and removed it, and rolled back a
//! hot journal. What is left must be harmless: an empty `-wal` (no frames) or a stale
//! `-shm`, which the next connection resets because no one holds it.

use std::ffi::OsString;
use std::fs::{self, Metadata, Permissions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{header, sql_error, tables};
use crate::engine::{Archive, RestoreOptions, SourceError};
use crate::units::human_bytes;

/// How long the check that no one uses a file to be replaced waits for a lock.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// The files SQLite keeps beside a database, found by appending these to its name.
const SIDECARS: [&str; 3] = ["-wal", "-journal", "-shm"];

pub(super) async fn restore(
    name: &str,
    archive: &dyn Archive,
    opts: &RestoreOptions,
) -> Result<Vec<String>, SourceError> {
    if !opts.tables.is_empty() || !opts.exclude_tables.is_empty() {
        return Err(SourceError::Refused(
            "a sqlite backup is one database file and is restored whole; remove --table and --exclude-table".into(),
        ));
    }
    let target = Target::inspect(&opts.target)?;
    let mut lines = Vec::new();
    if let Some(link) = &target.linked_from {
        lines.push(format!(
            "{name}: {} is a symbolic link; {} into {}",
            link.display(),
            if opts.dry_run { "would restore" } else { "restoring" },
            target.path.display()
        ));
    }
    target.refuse_unsafe(opts.clean)?;
    let replaces = target.existing.as_ref().is_some_and(|m| m.len() > 0);
    if opts.dry_run {
        lines.push(format!(
            "would restore {name} into {}: written beside it, checked with PRAGMA integrity_check, then renamed into place{}",
            target.path.display(),
            match &target.existing {
                Some(m) if m.len() > 0 => format!(
                    ", replacing the existing file ({}) once no process has it open (--clean)",
                    human_bytes(m.len())
                ),
                Some(_) => ", replacing the existing empty file".to_string(),
                None => String::new(),
            }
        ));
        return Ok(lines);
    }
    if replaces {
        let path = target.path.clone();
        tokio::task::spawn_blocking(move || ensure_unused(&path))
            .await
            .map_err(|e| SourceError::internal("checking the restore target", e))??;
        target.refuse_leftovers()?;
    }

    let (tmp, file, shown) = create_partial(name, &target, &mut lines)?;
    let written = copy_image(archive, tokio::fs::File::from_std(file), &shown).await?;

    let check = tmp.path().to_path_buf();
    let tables = tokio::task::spawn_blocking(move || verify(&check))
        .await
        .map_err(|e| SourceError::internal("checking the restored file", e))??;

    place(tmp, &target)?;

    lines.push(format!(
        "{name}: {} ({} pages, {} table(s)) written to {}{}; PRAGMA integrity_check: ok",
        human_bytes(written.bytes),
        written.bytes / u64::from(written.page_size),
        tables.len(),
        target.path.display(),
        if replaces {
            ", replacing the old file"
        } else {
            ""
        }
    ));
    if written.wal {
        lines.push(format!(
            "{name}: the database is in WAL mode, as when it was backed up: SQLite creates {0}-wal and {0}-shm beside it when it is opened",
            target.path.display()
        ));
    }
    Ok(lines)
}

/// The hidden file beside the target that the image is written to, with the old file's
/// mode (and owner, when allowed); a handle to write it, and its name for messages.
fn create_partial(
    name: &str,
    target: &Target,
    lines: &mut Vec<String>,
) -> Result<(tempfile::NamedTempFile, fs::File, String), SourceError> {
    let mode = target
        .existing
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let mut prefix = OsString::from(".");
    prefix.push(&target.file_name);
    prefix.push(".stowage-partial-");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .rand_bytes(6)
        .permissions(Permissions::from_mode(mode))
        .tempfile_in(&target.dir)
        .map_err(|e| {
            SourceError::io(
                format!("cannot create a file in {}", target.dir.display()),
                e,
            )
        })?;
    let shown = tmp.path().display().to_string();
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| SourceError::io(format!("cannot write {shown}"), e))?;
    if let Some(old) = &target.existing {
        // The application may run as another user: give the new file the old one's mode
        // and (when allowed, e.g. as root) its owner.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| SourceError::io(format!("cannot set the mode of {shown}"), e))?;
        let new = file
            .metadata()
            .map_err(|e| SourceError::io(format!("cannot write {shown}"), e))?;
        if (new.uid(), new.gid()) != (old.uid(), old.gid())
            && std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid())).is_err()
        {
            lines.push(format!(
                "{name}: note: the old file was owned by uid {} gid {}, the restored one is owned by uid {} gid {} (stowage may not change owners); fix with chown if the application runs as another user",
                old.uid(),
                old.gid(),
                new.uid(),
                new.gid()
            ));
        }
    }
    Ok((tmp, file, shown))
}

/// Renames the checked file over the target and syncs the directory.
fn place(tmp: tempfile::NamedTempFile, target: &Target) -> Result<(), SourceError> {
    let placed = if target.existing.is_some() {
        tmp.persist(&target.path)
    } else {
        // Nothing was there when checked: never overwrite a file that appeared since.
        tmp.persist_noclobber(&target.path)
    };
    placed.map_err(|e| {
        SourceError::io(
            format!(
                "cannot move the restored file into place as {}",
                target.path.display()
            ),
            e.error,
        )
    })?;
    // The rename is durable only once the directory is synced; the file is in place either
    // way, so a failure here is worth a warning, not a failed restore.
    if let Err(e) = fs::File::open(&target.dir).and_then(|d| d.sync_all()) {
        tracing::warn!("cannot sync directory {}: {e}", target.dir.display());
    }
    Ok(())
}

/// Where the restored file goes and what is there now.
#[derive(Debug)]
struct Target {
    /// The file that is replaced: the target, or the file it links to.
    path: PathBuf,
    /// Set when the target is a symbolic link (the link stays, its file is replaced).
    linked_from: Option<PathBuf>,
    dir: PathBuf,
    file_name: OsString,
    existing: Option<Metadata>,
}

impl Target {
    fn inspect(target: &str) -> Result<Target, SourceError> {
        let given = PathBuf::from(target);
        let (path, linked_from) = match fs::symlink_metadata(&given) {
            Ok(m) if m.file_type().is_symlink() => {
                let resolved = fs::canonicalize(&given).map_err(|e| {
                    SourceError::io(
                        format!("{target} is a symbolic link that cannot be followed"),
                        e,
                    )
                })?;
                (resolved, Some(given))
            }
            _ => (given, None),
        };
        let Some(file_name) = path.file_name().map(OsString::from) else {
            return Err(SourceError::Refused(format!(
                "{} does not end in a file name; give the database file, e.g. /data/app.db",
                path.display()
            )));
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SourceError::Refused(format!(
                    "{} is not a directory",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(SourceError::io(
                    format!(
                        "cannot restore into {}: directory {}",
                        path.display(),
                        dir.display()
                    ),
                    e,
                ));
            }
        }
        let existing = match fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                return Err(SourceError::Refused(format!(
                    "{0} is a directory; give the database file to restore into, e.g. {0}/{1}",
                    path.display(),
                    "app.db"
                )));
            }
            Ok(m) => Some(m),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(SourceError::io(
                    format!("cannot restore into {}", path.display()),
                    e,
                ));
            }
        };
        Ok(Target {
            path,
            linked_from,
            dir,
            file_name,
            existing,
        })
    }

    /// Files beside the target that SQLite would take as the target's own.
    fn sidecars(&self) -> Result<Vec<Sidecar>, SourceError> {
        let mut found = Vec::new();
        for suffix in SIDECARS {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let path = PathBuf::from(p);
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(SourceError::io(
                        format!("cannot check {}", path.display()),
                        e,
                    ));
                }
            };
            let mut start = Vec::new();
            if suffix == "-journal" && meta.len() > 0 {
                fs::File::open(&path)
                    .and_then(|f| f.take(1).read_to_end(&mut start))
                    .map_err(|e| SourceError::io(format!("cannot read {}", path.display()), e))?;
            }
            found.push(Sidecar {
                harmful: harmful(suffix, meta.len(), &start),
                path,
                len: meta.len(),
            });
        }
        Ok(found)
    }

    /// Refuse what would lose data or corrupt the restored file, before any work.
    fn refuse_unsafe(&self, clean: bool) -> Result<(), SourceError> {
        match &self.existing {
            Some(m) if m.len() > 0 => {
                if !clean {
                    return Err(SourceError::Refused(format!(
                        "{} already exists and is not empty ({}); pass --clean to replace it (the whole file is replaced), or restore into another file",
                        self.path.display(),
                        human_bytes(m.len())
                    )));
                }
                // Its -wal and -journal are dealt with once it is known to be unused.
                Ok(())
            }
            _ => match self.sidecars()?.first() {
                Some(s) => Err(SourceError::Refused(format!(
                    "{} exists ({}) but {} {}: it is left from an earlier database, and SQLite would take it for the restored file's own; delete it (and any other {}-wal, -shm, -journal) and retry",
                    s.path.display(),
                    human_bytes(s.len),
                    self.path.display(),
                    if self.existing.is_some() {
                        "is empty"
                    } else {
                        "does not exist"
                    },
                    self.file_name.to_string_lossy()
                ))),
                None => Ok(()),
            },
        }
    }

    /// After the old file was found unused: anything SQLite would still apply to it.
    fn refuse_leftovers(&self) -> Result<(), SourceError> {
        match self.sidecars()?.into_iter().find(|s| s.harmful) {
            Some(s) => Err(SourceError::Refused(format!(
                "{} ({}) still holds changes of {} that SQLite did not apply, and would apply them to the restored file; open the old database once with sqlite3 to settle it, or delete {} if its changes are not wanted, and retry",
                s.path.display(),
                human_bytes(s.len),
                self.path.display(),
                s.path.display()
            ))),
            None => Ok(()),
        }
    }
}

struct Sidecar {
    path: PathBuf,
    len: u64,
    /// SQLite would apply it to a database of the same name.
    harmful: bool,
}

/// Whether a file beside a database holds changes SQLite would apply to it: WAL frames (a
/// `-wal` with more than its header) or a hot journal. A stale `-shm` is rebuilt by the
/// first connection that finds no one else holding it.
fn harmful(suffix: &str, len: u64, start: &[u8]) -> bool {
    match suffix {
        "-wal" => len > 32,
        "-journal" => header::journal_may_be_hot(start),
        _ => false,
    }
}

/// Refuse to replace a database that a process has open: take SQLite's exclusive lock on
/// it, which fails while any WAL-mode connection is open or any transaction runs. Holding
/// it also lets SQLite settle the old file: a committed `-wal` is checkpointed into it and
/// removed when this connection closes, a hot journal is rolled back.
fn ensure_unused(path: &Path) -> Result<(), SourceError> {
    let shown = path.display();
    let check = || format!("cannot check whether {shown} is in use");
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(check(), e))?;
    conn.busy_timeout(PROBE_WAIT)
        .map_err(|e| sql_error(check(), e))?;
    match conn.execute_batch("PRAGMA locking_mode = EXCLUSIVE; BEGIN EXCLUSIVE; ROLLBACK;") {
        Ok(()) => {}
        // Not a database: nothing can be using it as one, and --clean replaces it.
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {}
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
            ) =>
        {
            return Err(SourceError::InUse {
                what: shown.to_string(),
                fix: "stop the application that uses it and retry",
                source: Box::new(e),
            });
        }
        Err(e) => return Err(sql_error(check(), e)),
    }
    conn.close().map_err(|(_, e)| sql_error(check(), e))
}

struct Written {
    bytes: u64,
    page_size: u32,
    wal: bool,
}

/// Copy the archive into `out`, checking that it is a whole SQLite image, and sync it.
async fn copy_image(
    archive: &dyn Archive,
    mut out: tokio::fs::File,
    shown: &str,
) -> Result<Written, SourceError> {
    let mut data = archive.open().await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut head = Vec::with_capacity(header::LEN);
    let mut bytes = 0u64;
    loop {
        let n = data
            .read(&mut buf)
            .await
            .map_err(|e| SourceError::io("reading the backup", e))?;
        if n == 0 {
            break;
        }
        if head.len() < header::LEN {
            let take = n.min(header::LEN - head.len());
            head.extend_from_slice(&buf[..take]);
            if head.len() == header::LEN
                && let Some(p) = header::problem(&head)
            {
                return Err(not_an_image(&p));
            }
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| SourceError::io(format!("writing {shown}"), e))?;
        bytes += n as u64;
    }
    if let Some(p) = header::problem(&head) {
        return Err(not_an_image(&format!("{p} ({bytes} bytes)")));
    }
    let page_size = header::page_size(&head).unwrap_or(1);
    if !bytes.is_multiple_of(u64::from(page_size)) {
        return Err(not_an_image(&format!(
            "{bytes} bytes is not a whole number of its {page_size}-byte pages"
        )));
    }
    out.flush()
        .await
        .map_err(|e| SourceError::io(format!("writing {shown}"), e))?;
    out.sync_all()
        .await
        .map_err(|e| SourceError::io(format!("syncing {shown}"), e))?;
    Ok(Written {
        bytes,
        page_size,
        wal: header::wal_mode(&head),
    })
}

fn not_an_image(why: &str) -> SourceError {
    SourceError::Protocol(format!("the backup is not an SQLite database image: {why}"))
}

/// Characters with a meaning in an SQLite URI's path.
const URI_PATH: &AsciiSet = &CONTROLS.add(b'%').add(b'?').add(b'#');

/// `file:` URI of a path, opened `immutable` so that checking a file creates no `-wal` or
/// `-shm` beside it (nothing else can be using the temporary file).
fn immutable_uri(path: &Path) -> Result<String, SourceError> {
    let abs = std::path::absolute(path)
        .map_err(|e| SourceError::io(format!("cannot resolve {}", path.display()), e))?;
    let text = abs.to_str().ok_or_else(|| {
        SourceError::Refused(format!(
            "{} is not valid UTF-8; restore into a path that is",
            abs.display()
        ))
    })?;
    Ok(format!(
        "file://{}?immutable=1",
        utf8_percent_encode(text, URI_PATH)
    ))
}

/// `PRAGMA integrity_check` of the written file; its tables when it is "ok".
fn verify(path: &Path) -> Result<Vec<String>, SourceError> {
    let context = || format!("cannot check the restored file {}", path.display());
    let conn = Connection::open_with_flags(
        immutable_uri(path)?,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| sql_error(context(), e))?;
    let report: Vec<String> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| sql_error(context(), e))?;
    if report != ["ok"] {
        return Err(SourceError::Protocol(format!(
            "the restored database fails PRAGMA integrity_check: {}",
            report.join("; ")
        )));
    }
    tables(&conn).map_err(|e| sql_error(context(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmful_sidecars() {
        assert!(!harmful("-wal", 0, &[]));
        assert!(!harmful("-wal", 32, &[]));
        assert!(harmful("-wal", 4096 + 56, &[]));
        assert!(!harmful("-shm", 32768, &[]));
        assert!(!harmful("-journal", 512, &[0]));
        assert!(harmful("-journal", 512, &[0xd9]));
    }

    #[test]
    fn uris_escape_what_sqlite_would_parse() {
        let u = immutable_uri(Path::new("/tmp/a b/x?y#z%.db")).expect("uri");
        assert_eq!(u, "file:///tmp/a b/x%3Fy%23z%25.db?immutable=1");
        let rel = immutable_uri(Path::new("rel.db")).expect("uri");
        assert!(
            rel.starts_with("file:///") && rel.ends_with("/rel.db?immutable=1"),
            "{rel}"
        );
    }

    /// A restore target whose name needs escaping is checked as itself, and checking it
    /// leaves nothing beside it, even for a WAL-mode image.
    #[test]
    fn verify_leaves_no_sidecars() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("odd ?#% name.db");
        let conn = Connection::open(&f).expect("create");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .expect("fill");
        drop(conn);
        let before: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(verify(&f).expect("verify"), ["t"]);
        let after: Vec<_> = fs::read_dir(dir.path())
            .expect("ls")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(after, before);
        fs::write(dir.path().join("junk.db"), vec![7u8; 4096]).expect("junk");
        assert!(verify(&dir.path().join("junk.db")).is_err());
    }

    #[test]
    fn targets_are_inspected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        let t = Target::inspect(&p("new.db")).expect("new");
        assert!(t.existing.is_none());
        assert_eq!(t.dir, dir.path());
        t.refuse_unsafe(false).expect("a new file");

        fs::write(p("old.db"), b"data").expect("old");
        let t = Target::inspect(&p("old.db")).expect("old");
        let e = t.refuse_unsafe(false).expect_err("not empty").to_string();
        assert!(e.contains("old.db") && e.contains("--clean"), "{e}");
        t.refuse_unsafe(true).expect("--clean");

        fs::write(p("empty.db"), b"").expect("empty");
        Target::inspect(&p("empty.db"))
            .expect("empty")
            .refuse_unsafe(false)
            .expect("an empty file is replaced");

        fs::write(p("gone.db-wal"), vec![1u8; 100]).expect("wal");
        let e = Target::inspect(&p("gone.db"))
            .expect("gone")
            .refuse_unsafe(true)
            .expect_err("stale wal")
            .to_string();
        assert!(
            e.contains("gone.db-wal") && e.contains("does not exist"),
            "{e}"
        );

        std::os::unix::fs::symlink(p("old.db"), p("link.db")).expect("symlink");
        let t = Target::inspect(&p("link.db")).expect("link");
        assert_eq!(t.path, fs::canonicalize(p("old.db")).expect("canonical"));
        assert!(t.linked_from.is_some());

        fs::create_dir(p("sub")).expect("mkdir");
        let e = Target::inspect(&p("sub"))
            .expect_err("directory")
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = Target::inspect(&p("missing/x.db"))
            .expect_err("no directory")
            .to_string();
        assert!(e.contains("missing"), "{e}");
        assert_eq!(
            Target::inspect("x.db").expect("relative").dir,
            Path::new(".")
        );
    }

    /// The in-use check: a WAL connection that has read holds a lock that stops it; once
    /// that connection is gone the check passes and folds the old `-wal` in.
    #[test]
    fn files_in_use_are_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("live.db");
        let app = Connection::open(&f).expect("create");
        app.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA wal_autocheckpoint = 0; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
        )
        .expect("fill");
        // POSIX locks are per process, so the check runs in a child: the test binary itself.
        let probe = |path: &Path| {
            std::process::Command::new(std::env::current_exe().expect("exe"))
                .args([
                    "--exact",
                    "source::sqlite::restore::tests::probe_child",
                    "--nocapture",
                ])
                .env("STOWAGE_SQLITE_PROBE", path)
                .output()
                .expect("probe child")
        };
        let out = probe(&f);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("probe: in use"), "{text}");
        drop(app);
        // A crashed application's -wal: frames that only a checkpoint puts in the file.
        let app = Connection::open(&f).expect("reopen");
        app.execute_batch("PRAGMA wal_autocheckpoint = 0; INSERT INTO t VALUES (2);")
            .expect("write");
        let wal = dir.path().join("live.db-wal");
        let copy = dir.path().join("crashed.db");
        fs::copy(&f, &copy).expect("copy db");
        fs::copy(&wal, dir.path().join("crashed.db-wal")).expect("copy wal");
        drop(app);
        let out = probe(&copy);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("probe: unused"), "{text}");
        let t = Target::inspect(&copy.to_string_lossy()).expect("inspect");
        t.refuse_leftovers().expect("the -wal was folded in");
        let n: i64 = Connection::open(&copy)
            .expect("open")
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 2);
    }

    /// Run by `files_in_use_are_not_replaced` in a child process.
    #[test]
    fn probe_child() {
        let Some(path) = std::env::var_os("STOWAGE_SQLITE_PROBE") else {
            return;
        };
        match ensure_unused(Path::new(&path)) {
            Ok(()) => println!("probe: unused"),
            Err(SourceError::InUse { .. }) => println!("probe: in use"),
            Err(e) => println!("probe: error {e}"),
        }
    }
}
