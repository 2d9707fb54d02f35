//! A storage whose reads go through a local directory: an object read once is kept there
//! and read from there next time. For archive classes (`restore --download-to DIR`), so
//! that a restore can be repeated without another retrieval (hours, and a fee). Writes,
//! listings and deletes go to the wrapped storage unchanged.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::class::RetrievalTier;
use super::{Chunk, ObjectMeta, ObjectReader, OpenUpload, Retrieval, Storage, StorageError};

pub struct Cached {
    inner: Box<dyn Storage>,
    dir: PathBuf,
}

impl Cached {
    pub fn new(inner: Box<dyn Storage>, dir: PathBuf) -> Cached {
        Cached { inner, dir }
    }
}

/// Where `key` is kept under `dir`; None for a key that would leave it.
pub fn path_for(dir: &Path, key: &str) -> Option<PathBuf> {
    let rel = Path::new(key);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

impl Cached {
    async fn download(&self, key: &str, path: &Path) -> Result<(), StorageError> {
        let io = |what: &str, e: std::io::Error| {
            StorageError::Io(format!("{what} {}: {e}", path.display()).into()).caused_by(e)
        };
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io("cannot create", e))?;
        }
        // A temporary name, renamed when complete: a file under its own name is whole.
        let tmp = path.with_extension(format!("partial-{}", std::process::id()));
        let result = async {
            let mut r = self.inner.get(key).await?;
            let mut f = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io("cannot create", e))?;
            tokio::io::copy(&mut r, &mut f).await.map_err(|e| {
                StorageError::Io(format!("downloading {key}: {e}").into()).caused_by(e)
            })?;
            f.flush().await.map_err(|e| io("cannot write", e))?;
            f.sync_all().await.map_err(|e| io("cannot write", e))?;
            tokio::fs::rename(&tmp, path)
                .await
                .map_err(|e| io("cannot rename into", e))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }
}

#[async_trait]
impl Storage for Cached {
    fn location(&self) -> String {
        format!(
            "{} (downloads kept in {})",
            self.inner.location(),
            self.dir.display()
        )
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        self.inner.preflight().await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.inner.put_stream(key, body).await
    }

    async fn put_stream_plain(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.inner.put_stream_plain(key, body).await
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put_bytes(key, data).await
    }

    async fn put_data(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put_data(key, data).await
    }

    async fn put_record(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.inner.put_record(key, data).await
    }

    async fn locked_until(
        &self,
        key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        self.inner.locked_until(key).await
    }

    async fn extend_lock(
        &self,
        key: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        self.inner.extend_lock(key, until).await
    }

    async fn object_lock_enabled(&self) -> Result<Option<bool>, StorageError> {
        self.inner.object_lock_enabled().await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let Some(path) = path_for(&self.dir, key) else {
            return Err(StorageError::Io(
                format!("key {key:?} cannot be kept under {}", self.dir.display()).into(),
            ));
        };
        if tokio::fs::metadata(&path).await.is_err() {
            self.download(key, &path).await?;
        }
        let f = tokio::fs::File::open(&path).await.map_err(|e| {
            StorageError::Io(format!("cannot open {}: {e}", path.display()).into()).caused_by(e)
        })?;
        Ok(Box::new(f))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list(prefix).await
    }

    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        self.inner.list_pages(prefix, each).await
    }

    async fn list_until(&self, prefix: &str, end: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        self.inner.list_until(prefix, end).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        self.inner.delete(keys).await
    }

    async fn retrieval(&self, key: &str) -> Result<Retrieval, StorageError> {
        match path_for(&self.dir, key) {
            Some(p) if tokio::fs::metadata(&p).await.is_ok() => Ok(Retrieval::Readable),
            _ => self.inner.retrieval(key).await,
        }
    }

    async fn request_retrieval(
        &self,
        key: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<(), StorageError> {
        self.inner.request_retrieval(key, days, tier).await
    }

    async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StorageError> {
        self.inner.open_uploads(prefix).await
    }

    async fn abort_upload(&self, upload: &OpenUpload) -> Result<(), StorageError> {
        self.inner.abort_upload(upload).await
    }

    async fn empty_dirs(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        self.inner.empty_dirs(prefix).await
    }

    async fn remove_empty_dir(&self, dir: &str) -> Result<(), StorageError> {
        self.inner.remove_empty_dir(dir).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_directory() {
        let d = Path::new("/restore/cache");
        assert_eq!(
            path_for(d, "app/20261202T030000.000Z/db.pgdump.zst"),
            Some(PathBuf::from(
                "/restore/cache/app/20261202T030000.000Z/db.pgdump.zst"
            ))
        );
        assert_eq!(path_for(d, "app/../../etc/passwd"), None);
        assert_eq!(path_for(d, "/etc/passwd"), None);
        assert_eq!(path_for(d, "./app/x"), None);
    }

    #[tokio::test]
    async fn a_read_keeps_the_object_and_the_next_one_uses_it() {
        use tokio::io::AsyncReadExt;
        let store = tempfile::tempdir().expect("tempdir");
        let keep = tempfile::tempdir().expect("tempdir");
        let inner = super::super::local::LocalStorage::new(store.path().to_path_buf());
        inner
            .put_bytes("app/1/db.sql", Bytes::from_static(b"select 1;"))
            .await
            .expect("put");
        let cached = Cached::new(Box::new(inner), keep.path().to_path_buf());
        async fn read(c: &Cached) -> String {
            let mut out = String::new();
            c.get("app/1/db.sql")
                .await
                .expect("get")
                .read_to_string(&mut out)
                .await
                .expect("read");
            out
        }
        assert_eq!(read(&cached).await, "select 1;");
        assert!(keep.path().join("app/1/db.sql").is_file());
        // Gone from the store: still readable from the directory.
        std::fs::remove_file(store.path().join("app/1/db.sql")).expect("rm");
        assert_eq!(read(&cached).await, "select 1;");
        assert_eq!(
            cached.retrieval("app/1/db.sql").await.expect("state"),
            Retrieval::Readable
        );
    }
}
