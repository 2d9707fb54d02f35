//! A directory tree, backed up file by file. Unlike a database it is not one byte stream:
//! each file's content is stored once per destination as a content-addressed blob (see
//! `blobs.rs`) and a backup is an index of path → content hash. This module knows the
//! tree: which files the source's globs select, their metadata, and their hashes.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use crate::pathfilter::PathFilter;
use sha2::{Digest, Sha256};

/// One regular file of the tree, as seen by the scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMeta {
    /// Relative, '/'-separated.
    pub path: String,
    pub size: u64,
    pub mode: u32,
    /// Nanoseconds since the Unix epoch.
    pub mtime: i64,
}

#[derive(Debug, Default)]
pub struct Scan {
    /// In [`crate::repo::index::path_order`].
    pub files: Vec<FileMeta>,
    /// Symlinks, sockets, fifos, devices and names that are not UTF-8: not backed up.
    pub skipped: Vec<String>,
}

pub fn mtime_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

pub fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + std::time::Duration::from_nanos(ns.unsigned_abs())
    } else {
        UNIX_EPOCH - std::time::Duration::from_nanos(ns.unsigned_abs())
    }
}

/// What a walk finds, one entry at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File(FileMeta),
    /// Not a regular file, or a name that is not UTF-8: not backed up.
    Skipped(String),
}

/// Why a walk of a files source's tree stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error(
        "directory {} does not exist; check the source's path and the container's volume mounts",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot read {}: {source}", .path.display())]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {at}: {source}")]
    Read {
        at: String,
        #[source]
        source: walkdir::Error,
    },
    #[error("cannot stat {}: {source}", .path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: walkdir::Error,
    },
}

/// The whole tree in memory: for small uses (`check`, tests). Backups and restores
/// stream it with [`spawn_walk`].
pub fn scan(root: &Path, filter: &PathFilter) -> Result<Scan, WalkError> {
    let mut out = Scan::default();
    walk(root, filter, |f| {
        match f {
            Found::File(m) => out.files.push(m),
            Found::Skipped(s) => out.skipped.push(s),
        }
        true
    })?;
    Ok(out)
}

/// Walk `root` in a blocking thread, sending what it finds (in
/// [`crate::repo::index::path_order`]) through a bounded channel: the tree is never held.
/// An error ends the stream.
pub fn spawn_walk(
    root: PathBuf,
    filter: PathFilter,
) -> tokio::sync::mpsc::Receiver<Result<Found, WalkError>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tokio::task::spawn_blocking(move || {
        // A send fails only when the receiver is gone: the walk is no longer wanted.
        if let Err(e) = walk(&root, &filter, |f| tx.blocking_send(Ok(f)).is_ok()) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    rx
}

/// Walk `root` (blocking: run it on a blocking thread), depth first with each directory's
/// entries sorted by name, calling `each` until it returns false. Files that vanish during
/// the walk are simply not there; a directory that cannot be read fails the walk, because
/// a backup silently missing part of the tree is worse than a failed one.
pub fn walk(
    root: &Path,
    filter: &PathFilter,
    mut each: impl FnMut(Found) -> bool,
) -> Result<(), WalkError> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(WalkError::NotADirectory(root.to_path_buf())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(WalkError::Missing(root.to_path_buf()));
        }
        Err(source) => {
            return Err(WalkError::Root {
                path: root.to_path_buf(),
                source,
            });
        }
    }
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
                {
                    continue;
                }
                let at = e
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| root.display().to_string());
                return Err(WalkError::Read { at, source: e });
            }
        };
        if entry.depth() == 0 || entry.file_type().is_dir() {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel_string(rel) else {
            if !each(Found::Skipped(format!(
                "{} (name is not UTF-8)",
                entry.path().display()
            ))) {
                return Ok(());
            }
            continue;
        };
        if !filter.matches(&rel) {
            continue;
        }
        if !entry.file_type().is_file() {
            if !each(Found::Skipped(rel)) {
                return Ok(());
            }
            continue;
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e)
                if e.io_error()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(source) => {
                return Err(WalkError::Stat {
                    path: entry.path().to_path_buf(),
                    source,
                });
            }
        };
        let found = Found::File(FileMeta {
            path: rel,
            size: meta.len(),
            mode: meta.permissions().mode() & 0o7777,
            mtime: meta.modified().map(mtime_ns).unwrap_or(0),
        });
        if !each(found) {
            return Ok(());
        }
    }
    Ok(())
}

fn rel_string(rel: &Path) -> Option<String> {
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts.map(|p| p.join("/"))
}

/// The path of a relative '/'-separated key under `root`, refusing anything that could
/// escape it (an index is data read from storage, so it is not trusted blindly).
pub fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for part in rel.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\0') {
            return None;
        }
        out.push(part);
    }
    Some(out)
}

/// sha256 and size of a file (blocking).
pub fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

pub fn hash_bytes(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(include: &[&str], exclude: &[&str]) -> PathFilter {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        PathFilter::new(&s(include), &s(exclude)).expect("valid globs")
    }

    #[test]
    fn globs_follow_gitignore_habits() {
        let all = f(&[], &[]);
        assert!(all.matches("a/b/c.jpg"));

        let ex = f(&[], &["*.tmp", "cache", "media/tmp/**", "/top.txt"]);
        assert!(!ex.matches("x.tmp"));
        assert!(!ex.matches("deep/er/x.tmp"));
        assert!(!ex.matches("cache/a/b"));
        assert!(!ex.matches("a/cache/b"));
        assert!(!ex.matches("media/tmp/1.jpg"));
        assert!(ex.matches("other/media/tmp/1.jpg"));
        assert!(!ex.matches("top.txt"));
        assert!(ex.matches("a/top.txt.keep"));
        assert!(ex.matches("a/b.jpg"));

        let inc = f(&["*.jpg", "docs"], &["private/**"]);
        assert!(inc.matches("a.jpg"));
        assert!(inc.matches("x/y/a.jpg"));
        assert!(inc.matches("docs/readme.txt"));
        assert!(!inc.matches("a.png"));
        assert!(!inc.matches("private/a.jpg"));
        // '*' does not cross directories in anchored patterns.
        let anchored = f(&["media/*.jpg"], &[]);
        assert!(anchored.matches("media/a.jpg"));
        assert!(!anchored.matches("media/sub/a.jpg"));
    }

    #[test]
    fn bad_globs_are_named() {
        let e = PathFilter::check_glob("a/[b").expect_err("unclosed class");
        assert!(e.contains("\"a/[b\""), "{e}");
        assert!(PathFilter::check_glob("  ").is_err());
    }

    #[test]
    fn joins_refuse_escapes() {
        let root = Path::new("/data");
        assert_eq!(
            safe_join(root, "a/b.jpg"),
            Some(PathBuf::from("/data/a/b.jpg"))
        );
        assert_eq!(safe_join(root, "../etc/passwd"), None);
        assert_eq!(safe_join(root, "a//b"), None);
        assert_eq!(safe_join(root, "/abs"), None);
        assert_eq!(safe_join(root, "a/./b"), None);
    }

    #[test]
    fn scans_sorted_filtered_regular_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        std::fs::create_dir_all(r.join("b/c")).expect("mkdir");
        std::fs::create_dir_all(r.join("tmp")).expect("mkdir");
        std::fs::write(r.join("b/c/2.jpg"), b"two").expect("write");
        std::fs::write(r.join("a.jpg"), b"one").expect("write");
        std::fs::write(r.join("tmp/x"), b"skip").expect("write");
        std::os::unix::fs::symlink(r.join("a.jpg"), r.join("link.jpg")).expect("symlink");
        let s = scan(r, &f(&[], &["tmp"])).expect("scan");
        let paths: Vec<&str> = s.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["a.jpg", "b/c/2.jpg"]);
        assert_eq!(s.files[0].size, 3);
        assert_eq!(s.skipped, vec!["link.jpg".to_string()]);
        let missing = scan(&r.join("nope"), &f(&[], &[])).expect_err("missing root");
        assert!(missing.to_string().contains("does not exist"), "{missing}");
    }

    #[test]
    fn mtimes_round_trip() {
        let t = UNIX_EPOCH + std::time::Duration::new(1_763_795_000, 123_456_789);
        assert_eq!(system_time(mtime_ns(t)), t);
    }
}
