//! A directory on a mounted volume. Objects are written as `<key>.partial` and renamed
//! into place after an fsync, so a crash never leaves a truncated file under a real name.
//! Objects are 0600 and directories 0700 (before the umask): another local user must not
//! read a job's dumps.

mod config;

pub use config::{Local, LocalConfig};

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::fs;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, Storage, StorageError};

pub use crate::backend::{PARTIAL_SUFFIX, partial_owner_alive};

pub struct LocalStorage {
    root: PathBuf,
}

impl LocalStorage {
    pub fn new(root: PathBuf) -> Self {
        LocalStorage { root }
    }

    /// Keys come from manifests and indexes, which whoever can write here can forge: one
    /// that could leave the root (absolute, "..") is refused before it becomes a path.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        super::check_key(key).map_err(|why| StorageError::Denied(why.into()))?;
        Ok(self.root.join(key))
    }

    fn io_err(&self, what: &str, path: &Path, e: std::io::Error) -> StorageError {
        let reason = crate::units::io_reason(&e);
        let err = match e.kind() {
            std::io::ErrorKind::NotFound => {
                StorageError::NotFound(format!("{what} {path:?}: {reason}").into())
            }
            std::io::ErrorKind::PermissionDenied => StorageError::Denied(format!(
                "{what} {path:?}: {reason}; the volume must be writable by the user stowage runs as"
            ).into()),
            _ => StorageError::Io(format!("{what} {path:?}: {reason}").into()),
        };
        err.caused_by(e)
    }

    async fn write_partial(
        &self,
        partial: &Path,
        mut body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        let file = create_private(partial)
            .await
            .map_err(|e| self.io_err("cannot create", partial, e))?;
        let mut w = BufWriter::with_capacity(256 * 1024, file);
        let written = crate::backend::write_chunks(&mut body, &mut w, |e| {
            self.io_err("cannot write", partial, e)
        })
        .await?;
        w.get_ref()
            .sync_all()
            .await
            .map_err(|e| self.io_err("cannot sync", partial, e))?;
        Ok(written)
    }

    async fn commit(&self, partial: &Path, target: &Path) -> Result<(), StorageError> {
        fs::rename(partial, target)
            .await
            .map_err(|e| self.io_err("cannot rename", partial, e))?;
        // The rename is only durable once the directory entry is on disk.
        if let Some(dir) = target.parent()
            && let Ok(d) = fs::File::open(dir).await
        {
            let _ = d.sync_all().await;
        }
        Ok(())
    }

    /// Remove the now-empty directories above `path`, up to (not including) the root, so a
    /// deleted or abandoned backup leaves no empty `<job>/<id>/` behind. `remove_dir` refuses
    /// a non-empty directory, so anything still holding files (another backup) stays.
    async fn prune_empty_dirs(&self, path: &Path) {
        let mut d = path.parent();
        while let Some(dir) = d {
            if dir == self.root
                || !dir.starts_with(&self.root)
                || fs::remove_dir(dir).await.is_err()
            {
                break;
            }
            d = dir.parent();
        }
    }

    async fn ensure_parent(&self, path: &Path) -> Result<(), StorageError> {
        if let Some(parent) = path.parent() {
            create_private_dirs(parent)
                .await
                .map_err(|e| self.io_err("cannot create directory", parent, e))?;
        }
        Ok(())
    }
}

/// A new file only its owner can read (0600): a `.partial` name is unique to its writer,
/// so it is created exclusively.
async fn create_private(path: &Path) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .await
}

/// Directories only their owner can enter (0700), parents included.
async fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true).mode(0o700);
    b.create(dir).await
}

/// `<target>.<pid>-<start>-<n>.partial` (see [`crate::backend::partial_tag`]).
fn partial_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(crate::backend::partial_tag());
    PathBuf::from(s)
}

impl LocalStorage {
    async fn walk(&self, prefix: &str, end: Option<&str>) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.walk_pages(prefix, end, &mut |page| out.extend(page))
            .await?;
        Ok(out)
    }

    /// The walk behind listings, one directory's files at a time.
    async fn walk_pages(
        &self,
        prefix: &str,
        end: Option<&str>,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        // Walk only the directory the prefix points into: a job's backups live under
        // "<job>/", so a listing never scans other jobs' trees.
        let (dir_part, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let start = self.root.join(dir_part);
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let mut out = Vec::new();
            let mut rd = match fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_err("cannot list", &dir, e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| self.io_err("cannot list", &dir, e))?
            {
                let path = entry.path();
                let ft = entry
                    .file_type()
                    .await
                    .map_err(|e| self.io_err("cannot stat", &path, e))?;
                if ft.is_dir() {
                    // Below `end` only: a job's backups without walking its blobs.
                    let beyond = end.is_some_and(|e| {
                        path.strip_prefix(&self.root).is_ok_and(|rel| {
                            let mut k = rel
                                .components()
                                .map(|c| c.as_os_str().to_string_lossy())
                                .collect::<Vec<_>>()
                                .join("/");
                            k.push('/');
                            k.as_str() >= e
                        })
                    });
                    if !beyond {
                        stack.push(path);
                    }
                } else if ft.is_file() {
                    let Ok(rel) = path.strip_prefix(&self.root) else {
                        continue;
                    };
                    let key = rel
                        .components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    if key.starts_with(prefix) && end.is_none_or(|e| key.as_str() < e) {
                        let meta = entry.metadata().await.ok();
                        out.push(ObjectMeta {
                            key,
                            size: meta.as_ref().map_or(0, |m| m.len()),
                            modified: meta
                                .and_then(|m| m.modified().ok())
                                .map(chrono::DateTime::<chrono::Utc>::from),
                        });
                    }
                }
            }
            if !out.is_empty() {
                each(out);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        create_private_dirs(&self.root)
            .await
            .map_err(|e| self.io_err("cannot create backup directory", &self.root, e))?;
        let probe = self.root.join(".stowage-write-test");
        let _ = fs::remove_file(&probe).await;
        let mut f = create_private(&probe)
            .await
            .map_err(|e| self.io_err("cannot write in", &self.root, e))?;
        f.write_all(b"ok")
            .await
            .map_err(|e| self.io_err("cannot write in", &self.root, e))?;
        drop(f);
        let _ = fs::remove_file(&probe).await;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        let target = self.path(key)?;
        self.ensure_parent(&target).await?;
        let partial = partial_path(&target);
        match self.write_partial(&partial, body).await {
            Ok(n) => {
                self.commit(&partial, &target).await?;
                Ok(n)
            }
            Err(e) => {
                let _ = fs::remove_file(&partial).await;
                self.prune_empty_dirs(&target).await;
                Err(e)
            }
        }
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let target = self.path(key)?;
        self.ensure_parent(&target).await?;
        let partial = partial_path(&target);
        let result = async {
            let mut f = create_private(&partial)
                .await
                .map_err(|e| self.io_err("cannot create", &partial, e))?;
            f.write_all(&data)
                .await
                .map_err(|e| self.io_err("cannot write", &partial, e))?;
            f.sync_all()
                .await
                .map_err(|e| self.io_err("cannot sync", &partial, e))?;
            self.commit(&partial, &target).await
        }
        .await;
        if result.is_err() {
            let _ = fs::remove_file(&partial).await;
        }
        result
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.path(key)?;
        let f = fs::File::open(&path)
            .await
            .map_err(|e| self.io_err("cannot open", &path, e))?;
        Ok(Box::new(f))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.walk(prefix, None).await
    }

    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        self.walk_pages(prefix, None, each).await
    }

    async fn list_until(&self, prefix: &str, end: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.walk(prefix, Some(end)).await
    }

    async fn empty_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        let mut rd = match fs::read_dir(&dir).await {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io_err("cannot list", &dir, e)),
        };
        let mut out = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| self.io_err("cannot list", &dir, e))?
        {
            // The entry's own type: a link to a directory is not one of ours.
            let is_dir = entry.file_type().await.is_ok_and(|t| t.is_dir());
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !is_dir {
                continue;
            }
            let empty = match fs::read_dir(entry.path()).await {
                Ok(mut sub) => matches!(sub.next_entry().await, Ok(None)),
                Err(_) => false,
            };
            if empty {
                out.push(format!("{prefix}{name}/"));
            }
        }
        Ok(out)
    }

    async fn remove_empty_dir(&self, dir: &str) -> Result<(), StorageError> {
        let path = self.path(dir.trim_end_matches('/'))?;
        if path == self.root {
            return Ok(());
        }
        match fs::remove_dir(&path).await {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(self.io_err("cannot remove directory", &path, e)),
        }
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        let mut dirs = Vec::new();
        for key in keys {
            let path = self.path(key)?;
            match fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io_err("cannot delete", &path, e)),
            }
            if let Some(parent) = path.parent() {
                dirs.push(parent.to_path_buf());
            }
        }
        dirs.sort();
        dirs.dedup();
        for dir in dirs.into_iter().rev() {
            self.prune_empty_dirs(&dir.join("_")).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only real, empty directories are named, and only such a one is removed: one with a
    /// file stays, and a link to an empty directory elsewhere is never followed.
    #[tokio::test]
    async fn empty_directories_are_found_and_removed_and_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let job = dir.path().join("app");
        std::fs::create_dir_all(job.join("empty")).expect("mkdir");
        std::fs::create_dir_all(job.join("full")).expect("mkdir");
        std::fs::write(job.join("full/x"), b"x").expect("write");
        std::fs::write(job.join("file"), b"x").expect("write");
        std::os::unix::fs::symlink(outside.path(), job.join("link")).expect("symlink");
        let st = LocalStorage::new(dir.path().to_path_buf());
        assert_eq!(
            st.empty_dirs("app/").await.expect("list"),
            vec!["app/empty/".to_string()]
        );
        assert!(st.empty_dirs("none/").await.expect("list").is_empty());
        for d in ["app/empty/", "app/full/", "app/gone/"] {
            st.remove_empty_dir(d).await.expect("remove");
        }
        assert!(!job.join("empty").exists());
        assert!(job.join("full/x").exists() && outside.path().is_dir());
        assert!(st.remove_empty_dir("app/link/").await.is_err());
        assert!(st.remove_empty_dir("../app/").await.is_err());
    }

    /// A failure keeps its kind and the I/O error under it; the message stays one line that
    /// names the path.
    #[tokio::test]
    async fn a_missing_object_is_not_found_with_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = LocalStorage::new(dir.path().to_path_buf());
        let Err(e) = st.get("job/missing").await else {
            panic!("a missing object was read");
        };
        assert!(matches!(e, StorageError::NotFound(_)), "{e:?}");
        assert!(e.to_string().contains("job/missing"), "{e}");
        let source = std::error::Error::source(&e).expect("the io error is kept");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("an io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    }
}
