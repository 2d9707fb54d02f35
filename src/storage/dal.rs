//! A [`Storage`] over an Apache OpenDAL [`Operator`]: what the destination types reached
//! through OpenDAL (Azure Blob, WebDAV) share. Each type's folder builds its operator and
//! says how an object becomes visible ([`Publish`]); this file turns keys, streams, listings
//! and errors into stowage's terms once.
//!
//! Objects are streamed in bounded chunks (never held whole), and the operator retries a
//! failed request with backoff and gives each one a timeout, as the S3 client does.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use opendal::{ErrorKind, Operator};
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, Storage, StorageError};
use crate::backend::partial_tag;

/// How much of an upload is sent per request (an Azure block): with [`CONCURRENT`] in
/// flight, what one upload holds in memory. 8 MiB blocks allow objects of 390 GiB (Azure's
/// 50,000 blocks).
const CHUNK: usize = 8 * 1024 * 1024;
const CONCURRENT: usize = 2;

/// How an uploaded object becomes visible under its key, all or nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Publish {
    /// Written under a temporary `.partial` name, then renamed (a WebDAV `MOVE`).
    Rename,
    /// The protocol commits the object whole when the upload ends (an Azure block list):
    /// written under its own key.
    InPlace,
}

/// Sends one object's bytes to `path`, for a destination whose OpenDAL writer does not
/// stream (WebDAV's holds the whole object until it is closed).
#[async_trait]
pub trait Upload: Send + Sync {
    async fn upload(&self, path: &str, body: mpsc::Receiver<Chunk>) -> Result<u64, StorageError>;
}

pub struct DalStorage {
    op: Operator,
    location: String,
    publish: Publish,
    upload: Option<Arc<dyn Upload>>,
}

impl DalStorage {
    /// `op` as built by a destination type; `location` is how messages name it
    /// ("azblob://container/prefix").
    pub fn new(op: Operator, location: String, publish: Publish) -> DalStorage {
        // OpenDAL's HTTP services send through a process-wide transport (reqwest, its client
        // built at the first request): installed here, when a destination is first opened,
        // so an idle daemon carries none. Installing again is a no-op.
        opendal::install_default();
        let op = op
            .layer(
                opendal::layers::TimeoutLayer::new()
                    .with_timeout(Duration::from_secs(120))
                    .with_io_timeout(Duration::from_secs(60)),
            )
            // As the S3 client's writes: about a minute of retries before a backup gives up
            // on a destination that stopped answering.
            .layer(
                opendal::layers::RetryLayer::new()
                    .with_max_times(8)
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_delay(Duration::from_secs(16))
                    .with_jitter(),
            );
        DalStorage {
            op,
            location,
            publish,
            upload: None,
        }
    }

    /// Uploads go through `upload` instead of OpenDAL's writer.
    pub fn with_upload(mut self, upload: Arc<dyn Upload>) -> DalStorage {
        self.upload = Some(upload);
        self
    }

    pub fn operator(&self) -> &Operator {
        &self.op
    }

    /// `what` failed for `key`: one line naming the key and the destination, OpenDAL's
    /// error kept as the source.
    pub fn error(&self, what: &str, key: &str, e: opendal::Error) -> StorageError {
        let message = format!("{what} {key} on {}: {}", self.location, describe(&e));
        let err = match e.kind() {
            ErrorKind::NotFound => StorageError::NotFound(message.into()),
            ErrorKind::PermissionDenied => StorageError::Denied(
                format!("{message}; check the destination's credentials and their rights").into(),
            ),
            ErrorKind::ConfigInvalid => StorageError::Denied(message.into()),
            _ if e.is_temporary() => StorageError::Unreachable(message.into()),
            _ => StorageError::Io(message.into()),
        };
        err.caused_by(e)
    }

    async fn write(
        &self,
        path: &str,
        mut body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        if let Some(upload) = &self.upload {
            return upload.upload(path, body).await;
        }
        let mut w = self
            .op
            .writer_with(path)
            .chunk(CHUNK)
            .concurrent(CONCURRENT)
            .await
            .map_err(|e| self.error("cannot write", path, e))?;
        let mut written = 0u64;
        let fed = loop {
            match body.recv().await {
                Some(Chunk::Data(b)) => {
                    written += b.len() as u64;
                    if let Err(e) = w.write(b).await {
                        break Err(self.error("cannot write", path, e));
                    }
                }
                Some(Chunk::End) => break Ok(()),
                None => break Err(StorageError::Abandoned),
            }
        };
        match fed {
            Ok(()) => match w.close().await {
                Ok(_) => Ok(written),
                Err(e) => Err(self.error("cannot complete", path, e)),
            },
            Err(e) => {
                // Uncommitted blocks are never visible; abort frees them at once.
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    async fn publish(&self, key: &str, body: mpsc::Receiver<Chunk>) -> Result<u64, StorageError> {
        super::check_key(key).map_err(|why| StorageError::Denied(why.into()))?;
        match self.publish {
            Publish::InPlace => self.write(key, body).await,
            Publish::Rename => {
                let partial = format!("{key}{}", partial_tag());
                let moved = match self.write(&partial, body).await {
                    Ok(n) => self
                        .op
                        .rename(&partial, key)
                        .await
                        .map(|()| n)
                        .map_err(|e| self.error("cannot rename into place", &partial, e)),
                    Err(e) => Err(e),
                };
                if moved.is_err() {
                    let _ = self.op.delete(&partial).await;
                }
                moved
            }
        }
    }

    /// Entries under `prefix` in pages, files only; a missing directory is an empty listing.
    async fn walk(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        // OpenDAL lists directories: list the one holding the prefix, keep what matches.
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..=i],
            None => "",
        };
        let lister = match self.op.lister_with(dir).recursive(true).await {
            Ok(l) => l,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error("cannot list", dir, e)),
        };
        let mut pages = lister.try_chunks(1000);
        loop {
            match pages.try_next().await {
                Ok(Some(entries)) => {
                    let page: Vec<ObjectMeta> = entries
                        .into_iter()
                        .filter(|e| e.metadata().is_file() && e.path().starts_with(prefix))
                        .map(|e| ObjectMeta {
                            key: e.path().trim_start_matches('/').to_string(),
                            size: e.metadata().content_length(),
                            modified: e.metadata().last_modified().map(|t| {
                                chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::from(
                                    t,
                                ))
                            }),
                        })
                        .collect();
                    if !page.is_empty() {
                        each(page);
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) if e.1.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(self.error("cannot list", dir, e.1)),
            }
        }
    }
}

/// `data` as a complete upload.
async fn whole(data: Bytes) -> mpsc::Receiver<Chunk> {
    let (tx, rx) = mpsc::channel(2);
    // The channel has room for both and the receiver is alive: these sends cannot fail.
    let _ = tx.send(Chunk::Data(data)).await;
    let _ = tx.send(Chunk::End).await;
    rx
}

/// OpenDAL's message without its context dump: what it was doing and the causes.
fn describe(e: &opendal::Error) -> String {
    let mut text = e.message().to_string();
    if let Some(source) = std::error::Error::source(e) {
        let causes = crate::units::error_chain(source);
        text = if text.is_empty() {
            causes
        } else {
            format!("{text}: {causes}")
        };
    }
    if text.is_empty() {
        e.kind().to_string()
    } else {
        text
    }
}

#[async_trait]
impl Storage for DalStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        // Written the way backups are (a WebDAV upload names a refused login precisely).
        let probe = ".stowage-write-test";
        self.write(probe, whole(Bytes::from_static(b"ok")).await)
            .await?;
        let _ = self.op.delete(probe).await;
        Ok(())
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.publish(key, body).await
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.publish(key, whole(data).await).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        super::check_key(key).map_err(|why| StorageError::Denied(why.into()))?;
        // A stat first, so a missing object is NotFound here, not an I/O error mid-stream.
        let meta = self
            .op
            .stat(key)
            .await
            .map_err(|e| self.error("cannot read", key, e))?;
        let reader = self
            .op
            .reader(key)
            .await
            .map_err(|e| self.error("cannot read", key, e))?;
        let stream = reader
            .into_bytes_stream(0..meta.content_length())
            .await
            .map_err(|e| self.error("cannot read", key, e))?;
        Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
    }

    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        self.walk(prefix, each).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.walk(prefix, &mut |page| out.extend(page)).await?;
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            super::check_key(key).map_err(|why| StorageError::Denied(why.into()))?;
        }
        // Batched where the service has batches (Azure); a key already gone is no error.
        self.op
            .delete_iter(keys.iter().map(String::as_str))
            .await
            .map_err(|e| self.error("cannot delete", &format!("{} object(s)", keys.len()), e))
    }
}

/// The storage of a destination whose client could not be built (settings that passed
/// validation but that OpenDAL refused): every operation fails with why.
pub struct Unavailable {
    pub location: String,
    pub why: String,
}

impl Unavailable {
    fn fail(&self) -> StorageError {
        StorageError::Denied(format!("{}: {}", self.location, self.why).into())
    }
}

#[async_trait]
impl Storage for Unavailable {
    fn location(&self) -> String {
        self.location.clone()
    }
    async fn preflight(&self) -> Result<(), StorageError> {
        Err(self.fail())
    }
    async fn put_stream(&self, _: &str, _: mpsc::Receiver<Chunk>) -> Result<u64, StorageError> {
        Err(self.fail())
    }
    async fn put_bytes(&self, _: &str, _: Bytes) -> Result<(), StorageError> {
        Err(self.fail())
    }
    async fn get(&self, _: &str) -> Result<ObjectReader, StorageError> {
        Err(self.fail())
    }
    async fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        Err(self.fail())
    }
    async fn delete(&self, _: &[String]) -> Result<(), StorageError> {
        Err(self.fail())
    }
}

/// The storage over `built`, or one that says why it could not be built.
pub fn open(
    built: opendal::Result<Operator>,
    location: String,
    publish: Publish,
) -> Box<dyn Storage> {
    match built {
        Ok(op) => Box::new(DalStorage::new(op, location, publish)),
        Err(e) => Box::new(Unavailable {
            location,
            why: describe(&e),
        }),
    }
}
