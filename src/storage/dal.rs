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
use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use opendal::{ErrorKind, Operator};
use tokio::sync::mpsc;

use super::{Chunk, ObjectMeta, ObjectReader, Storage, StorageError};
use crate::backend::{part_size_for, partial_tag};

/// How much of an upload is sent per request (an Azure block) at first: with
/// [`CONCURRENT`] in flight, one more queued and one being filled, what one upload holds in
/// memory (16 MiB). Blocks double after every 5,000 (Azure allows 50,000 per blob), so the
/// first 19.5 GiB go in 4 MiB blocks and an object can grow far past any dump.
const BLOCK: usize = 4 * 1024 * 1024;
const MAX_BLOCKS: u32 = 50_000;
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
        // No `chunk` option: OpenDAL would buffer one more block to cut exact sizes. The
        // blocks are cut here instead, and copied out of the stream's chunks: a block held as
        // the chunks it came in keeps each chunk's whole read buffer alive, and the blocks in
        // flight then held several times their size (a 1 GiB backup to Azurite peaked at
        // 110-200 MiB of RSS, against 25 MiB for a local one).
        let mut w = self
            .op
            .writer_with(path)
            .concurrent(CONCURRENT)
            .await
            .map_err(|e| self.error("cannot write", path, e))?;
        let mut blocks = Blocks::new(BLOCK, MAX_BLOCKS);
        let mut written = 0u64;
        let fed = 'feed: loop {
            match body.recv().await {
                Some(Chunk::Data(b)) => {
                    written += b.len() as u64;
                    for full in blocks.feed(&b) {
                        if let Err(e) = w.write(full).await {
                            break 'feed Err(self.error("cannot write", path, e));
                        }
                    }
                }
                Some(Chunk::End) => {
                    if let Some(last) = blocks.last()
                        && let Err(e) = w.write(last).await
                    {
                        break Err(self.error("cannot write", path, e));
                    }
                    break Ok(());
                }
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

/// Cuts a stream into upload blocks: copies, so a block owns exactly its bytes; sizes from
/// [`part_size_for`], growing for objects that need more than a tenth of the allowed blocks.
struct Blocks {
    base: usize,
    max_blocks: u32,
    cut: u32,
    filling: BytesMut,
}

impl Blocks {
    fn new(base: usize, max_blocks: u32) -> Blocks {
        Blocks {
            base,
            max_blocks,
            cut: 0,
            filling: BytesMut::with_capacity(base),
        }
    }

    fn size(&self) -> usize {
        part_size_for(self.cut + 1, self.base, self.max_blocks)
    }

    /// The blocks `data` completes.
    fn feed(&mut self, mut data: &[u8]) -> Vec<Bytes> {
        let mut full = Vec::new();
        while !data.is_empty() {
            let size = self.size();
            let take = (size - self.filling.len()).min(data.len());
            self.filling.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.filling.len() == size {
                self.cut += 1;
                let next = BytesMut::with_capacity(self.size());
                full.push(std::mem::replace(&mut self.filling, next).freeze());
            }
        }
        full
    }

    /// What is left at the end of the stream.
    fn last(&mut self) -> Option<Bytes> {
        (!self.filling.is_empty()).then(|| self.filling.split().freeze())
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

#[cfg(test)]
mod tests {
    use super::Blocks;

    #[test]
    fn blocks_are_cut_exactly_and_grow_after_a_tenth_of_the_limit() {
        // 10 bytes at first, doubling every 2 blocks (a limit of 20 blocks).
        let mut blocks = Blocks::new(10, 20);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let mut out = Vec::new();
        for piece in data.chunks(7) {
            out.extend(blocks.feed(piece));
        }
        let sizes: Vec<usize> = out.iter().map(|b| b.len()).collect();
        assert_eq!(sizes[..7], [10, 10, 20, 20, 40, 40, 80]);
        out.extend(blocks.last());
        assert!(blocks.last().is_none(), "the rest is handed out once");
        let joined: Vec<u8> = out.iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, data);
        // One piece larger than several blocks.
        let mut blocks = Blocks::new(4, 1000);
        assert_eq!(blocks.feed(&[1; 13]).len(), 3);
        assert_eq!(blocks.last().map(|b| b.len()), Some(1));
    }
}
