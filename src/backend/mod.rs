//! The interface between stowage and a storage, as `engine.rs` is for engines: the
//! `Storage` trait (bytes and keys), its errors and object types, S3 storage classes
//! (`class`), and the two traits a destination type implements: [`Kind`] (its `type` value
//! and its config section) and [`Place`] (a configured destination's settings, which opens
//! its `Storage`). The implementations live in `src/storage/<kind>/` and register in
//! `crate::storage::STORAGES`; config keeps a destination as an `Arc<dyn Place>`.
//!
//! Adding a destination type: a folder `src/storage/<kind>/` with a unit struct
//! implementing [`Kind`], a settings type implementing [`Place`], and a type implementing
//! [`Storage`] (retrieval, Object Lock and open uploads have default methods); then one line
//! in the `storages!` list in `src/storage/mod.rs`.

pub mod class;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::Utc;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::section::Section;
use class::StorageClass;

/// One kind of destination (a `type` value), registered in `crate::storage::STORAGES`.
pub trait Kind: Send + Sync {
    /// Its `type` value in `[destinations.NAME]`.
    fn kind(&self) -> &'static str;

    /// The keys its section accepts besides `type` and `retention`:
    /// `crate::section::serde_fields::<ItsRawConfig>()`.
    fn keys(&self) -> &'static [&'static str];

    /// Read and validate its section (`section.parse()` into its own serde type, problems
    /// through `section.problem`, with their full key path). `None` only when a problem was
    /// reported.
    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Place>>;
}

/// A configured destination's settings, as its [`Kind`] validated them: what the rest of
/// stowage asks of a destination without knowing its type.
#[async_trait]
pub trait Place: fmt::Debug + Send + Sync {
    /// Its `type` value.
    fn kind(&self) -> &'static str;

    /// One line for `check-config`: where it is and how it is set up.
    fn describe(&self) -> String;

    /// The storage class of its data objects, where it sets one.
    fn storage_class(&self) -> Option<StorageClass> {
        None
    }

    /// The Object Lock every backup object written here carries, if any.
    fn object_lock(&self) -> Option<ObjectLock> {
        None
    }

    /// How young a backup retention must keep whatever its rules say (a storage class's
    /// minimum storage duration), if it must.
    fn min_storage(&self) -> Option<(StorageClass, u32)> {
        None
    }

    /// How a retrieval is requested from its archive class, where it has one.
    fn retrieval(&self) -> Option<class::Retrieval> {
        None
    }

    /// Whether reading it is cheap and quick (a local disk): readers that may choose take
    /// such destinations first.
    fn is_nearby(&self) -> bool {
        false
    }

    /// Its storage. Clients (an S3 HTTP stack) are built here, when a command needs them,
    /// not at start-up: an idle daemon should not carry them.
    async fn open(&self) -> Box<dyn Storage>;
}

/// `object_lock = { mode = "GOVERNANCE" | "COMPLIANCE", days = N }` of an S3 destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// Each object is retained until `days` after it is written (or referenced again).
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with s3:BypassGovernanceRetention can still delete or shorten the lock.
    Governance,
    /// Nobody, the root account included, can delete a version before its date.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl ObjectLock {
    /// The retain-until date of an object written (or referenced again) at `now`.
    pub fn until(&self, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        now + chrono::TimeDelta::days(self.days.into())
    }
}

/// One item of a streamed upload. The object only becomes visible after `End`: a channel
/// that closes without it means the producer failed, and the upload is thrown away.
#[derive(Debug)]
pub enum Chunk {
    Data(Bytes),
    End,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// When it was written, where the store says.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// An upload that was started and neither completed nor aborted (S3 multipart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenUpload {
    /// Relative to the destination's root, like every key.
    pub key: String,
    pub id: String,
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
}

pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// Where an object stands with respect to reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieval {
    /// Readable now (any class that needs no retrieval).
    Readable,
    /// In an archive class, no retrieval requested (or the retrieved copy expired).
    Archived,
    /// A retrieval is under way.
    Pending,
    /// Retrieved: readable until the copy expires.
    Retrieved,
}

/// What a storage failure says (one line naming the key or bucket and what to check), and
/// the error underneath when there is one (the I/O error, the S3 SDK's), kept as its
/// `source` so a caller can walk to it.
#[derive(Debug)]
pub struct Failure {
    /// A storage may reword it once it knows more (S3 names the object's own class).
    pub(crate) message: String,
    cause: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Failure {
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure {
            message,
            cause: None,
        }
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        message.to_string().into()
    }
}

/// Write an upload's chunks to `w` until [`Chunk::End`] (flushed), returning how many bytes
/// went in; a channel that closes first is [`StorageError::Abandoned`]. `fail` turns a write
/// error into the storage's own.
pub async fn write_chunks<W: tokio::io::AsyncWrite + Unpin>(
    body: &mut mpsc::Receiver<Chunk>,
    w: &mut W,
    fail: impl Fn(std::io::Error) -> StorageError,
) -> Result<u64, StorageError> {
    use tokio::io::AsyncWriteExt;
    let mut written = 0u64;
    loop {
        match body.recv().await {
            Some(Chunk::Data(b)) => {
                w.write_all(&b).await.map_err(&fail)?;
                written += b.len() as u64;
            }
            Some(Chunk::End) => break,
            None => return Err(StorageError::Abandoned),
        }
    }
    w.flush().await.map_err(&fail)?;
    Ok(written)
}

/// The suffix of an object being written under a temporary name (a local file, an SFTP or
/// WebDAV upload) until it is renamed into place.
pub const PARTIAL_SUFFIX: &str = ".partial";

/// `.<pid>-<start>-<n>.partial`, appended to a key to name its temporary upload: unique per
/// writer, because two runs may write the same content-addressed blob at once and must not
/// interleave in one temporary object; and naming its process, so that the next start can
/// tell a crashed writer's leftovers (see [`partial_owner_alive`]).
pub fn partial_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!(
        ".{}-{n}{PARTIAL_SUFFIX}",
        crate::owner::Owner::current().token()
    )
}

/// Whether the process that is writing this `.partial` key is still running.
pub fn partial_owner_alive(key: &str) -> bool {
    let Some(stem) = key.strip_suffix(PARTIAL_SUFFIX) else {
        return false;
    };
    // "<name>.<pid>-<start>-<n>"
    let Some((_, tag)) = stem.rsplit_once('.') else {
        return false;
    };
    let mut parts = tag.splitn(3, '-');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(pid), Some(start), Some(_)) => crate::owner::token_alive(&format!("{pid}-{start}")),
        _ => false,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Unreachable(Failure),
    #[error(transparent)]
    Denied(Failure),
    #[error(transparent)]
    NotFound(Failure),
    #[error(transparent)]
    Io(Failure),
    #[error("upload abandoned: the data stream ended early")]
    Abandoned,
    /// An object in an archive class that has not been retrieved.
    #[error(transparent)]
    NotRetrieved(Failure),
}

impl StorageError {
    /// The same failure, with the error that caused it as its source (the message already
    /// says what it needs of it).
    pub fn caused_by(mut self, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        match &mut self {
            StorageError::Unreachable(f)
            | StorageError::Denied(f)
            | StorageError::NotFound(f)
            | StorageError::Io(f)
            | StorageError::NotRetrieved(f) => f.cause = Some(cause.into()),
            StorageError::Abandoned => {}
        }
        self
    }
}

#[async_trait]
pub trait Storage: Send + Sync {
    /// Human-readable location, e.g. "/var/backups/stowage" or "s3://bucket/prefix".
    fn location(&self) -> String;

    /// Cheap check that the destination exists and is writable, run before any dump.
    async fn preflight(&self) -> Result<(), StorageError>;

    /// Stream `body` into `key`. Nothing is visible at `key` unless the stream ends with
    /// [`Chunk::End`]; on any failure, partial data (files, multipart uploads) is removed.
    async fn put_stream(&self, key: &str, body: mpsc::Receiver<Chunk>)
    -> Result<u64, StorageError>;

    /// Like `put_stream`, for what stowage reads to plan (a file index): never in an
    /// archive class, like `put_bytes`.
    async fn put_stream_plain(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.put_stream(key, body).await
    }

    /// Write a small object atomically (readers see the old state or the whole new one).
    /// For what stowage reads to plan (manifests, indexes, locks): never in an archive class.
    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError>;

    /// Like `put_bytes`, for a small object that is part of a backup (its manifest):
    /// written under the destination's Object Lock where one is set. `put_bytes` stays
    /// unlocked: run locks and probes are removed again within the run.
    async fn put_record(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_bytes(key, data).await
    }

    /// Until when `key` cannot be deleted (its Object Lock retain-until date), if it is
    /// locked at all. Stores without locks have none.
    async fn locked_until(
        &self,
        _key: &str,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, StorageError> {
        Ok(None)
    }

    /// Keep `key` locked until at least `until` (a later backup references it). A lock
    /// that already lasts longer is left as it is. Stores without locks do nothing.
    async fn extend_lock(
        &self,
        _key: &str,
        _until: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// Whether the store has Object Lock enabled where this destination writes (`None`:
    /// the store has no such thing).
    async fn object_lock_enabled(&self) -> Result<Option<bool>, StorageError> {
        Ok(None)
    }

    /// Like `put_bytes`, for backup data (a small file blob): stored in the destination's
    /// class, like `put_stream`.
    async fn put_data(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_bytes(key, data).await
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError>;

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StorageError> {
        use tokio::io::AsyncReadExt;
        let mut r = self.get(key).await?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::Io(format!("reading {key}: {e}").into()).caused_by(e))?;
        Ok(Bytes::from(buf))
    }

    /// Every object whose key starts with `prefix`, a page at a time (no particular
    /// order): a listing of millions of blobs is never held whole.
    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        each(self.list(prefix).await?);
        Ok(())
    }

    /// Every object whose key starts with `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError>;

    /// Keys under `prefix` that sort before `end`. Stores that list in key order stop
    /// there, so a job's backups can be listed without paging through its blobs.
    async fn list_until(&self, prefix: &str, end: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        Ok(self
            .list(prefix)
            .await?
            .into_iter()
            .filter(|o| o.key.as_str() < end)
            .collect())
    }

    /// Delete these keys; keys that are already gone are not an error.
    async fn delete(&self, keys: &[String]) -> Result<(), StorageError>;

    /// Whether `key` can be read now, or must (or is being) retrieved first.
    async fn retrieval(&self, _key: &str) -> Result<Retrieval, StorageError> {
        Ok(Retrieval::Readable)
    }

    /// Ask for an archived `key` to be made readable for `days`. Asking again while a
    /// retrieval is under way, or for a readable object, is not an error.
    async fn request_retrieval(
        &self,
        _key: &str,
        _days: u32,
        _tier: class::RetrievalTier,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// Uploads under `prefix` left open (by a crashed process). Stores without such a
    /// thing have none.
    async fn open_uploads(&self, _prefix: &str) -> Result<Vec<OpenUpload>, StorageError> {
        Ok(Vec::new())
    }

    /// Abort an open upload, freeing what its parts occupy.
    async fn abort_upload(&self, _upload: &OpenUpload) -> Result<(), StorageError> {
        Ok(())
    }

    /// The directories directly under `prefix` with nothing in them, as prefixes
    /// (`"<prefix><name>/"`). On a store with directories, a process killed between
    /// creating an object's directory and its file leaves one, which no listing of objects
    /// shows. Stores without directories have none.
    async fn empty_dirs(&self, _prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    /// Remove the directory `dir` (a prefix ending in '/') if it is empty; one that is not
    /// (a writer got there first), or is gone, stays as it is without error.
    async fn remove_empty_dir(&self, _dir: &str) -> Result<(), StorageError> {
        Ok(())
    }
}

/// Append `data` without ever growing `buf` past one part (BytesMut would reallocate by
/// doubling, holding up to twice the part size): full parts are handed back, and a fresh
/// buffer of exactly one part is started for the rest.
pub fn push_parts(buf: &mut BytesMut, mut data: &[u8], part_size: usize) -> Vec<Bytes> {
    let mut parts = Vec::new();
    loop {
        let room = part_size.saturating_sub(buf.len());
        if data.len() < room {
            buf.extend_from_slice(data);
            return parts;
        }
        buf.extend_from_slice(&data[..room]);
        data = &data[room..];
        parts.push(std::mem::replace(buf, BytesMut::with_capacity(part_size)).freeze());
    }
}

#[cfg(test)]
mod push_parts_tests {
    use super::push_parts;
    use bytes::BytesMut;

    #[test]
    fn parts_are_exact_and_the_buffer_never_outgrows_one() {
        let part = 1000;
        let mut buf = BytesMut::with_capacity(part);
        let mut parts = Vec::new();
        let mut sent = Vec::new();
        for i in 0..37u32 {
            let chunk: Vec<u8> = (0..(97 + i * 13)).map(|k| (k + i) as u8).collect();
            sent.extend_from_slice(&chunk);
            parts.extend(push_parts(&mut buf, &chunk, part));
            assert!(buf.capacity() <= part, "buffer grew to {}", buf.capacity());
        }
        assert!(parts.iter().all(|p| p.len() == part));
        let mut got: Vec<u8> = parts.iter().flat_map(|p| p.to_vec()).collect();
        got.extend_from_slice(&buf);
        assert_eq!(got, sent);
        // A chunk spanning several parts.
        let mut buf = BytesMut::with_capacity(part);
        let big = vec![7u8; 2500];
        let parts = push_parts(&mut buf, &big, part);
        assert_eq!(parts.len(), 2);
        assert_eq!(buf.len(), 500);
    }
}

/// The size of part number `part` (from 1) of a streamed upload to a store that allows
/// `max_parts` parts. S3 allows 10,000: at a fixed 8 MiB an object could not exceed 80
/// GiB, and the size of a streamed dump is not known in advance. So the part size doubles
/// after every tenth of the allowed parts: 8 MiB parts for the first 8 GiB, 16 MiB for the
/// next 16 GiB, …, about 8 TiB in all (S3's own limit is 5 TiB). Memory grows with the part
/// size only for objects that need it.
pub fn part_size_for(part: u32, base: usize, max_parts: u32) -> usize {
    // In u64: 5 GiB does not fit a 32-bit usize (armv7).
    const MAX_PART: u64 = 5 << 30;
    let step = (max_parts / 10).max(1);
    let doublings = (part.saturating_sub(1) / step).min(20);
    let size = (base as u64).saturating_mul(1 << doublings).min(MAX_PART);
    usize::try_from(size).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod part_size_tests {
    use super::part_size_for;

    #[test]
    fn parts_double_after_each_tenth_of_the_limit() {
        let mib = 1 << 20;
        assert_eq!(part_size_for(1, 8 * mib, 10_000), 8 * mib);
        assert_eq!(part_size_for(1000, 8 * mib, 10_000), 8 * mib);
        assert_eq!(part_size_for(1001, 8 * mib, 10_000), 16 * mib);
        assert_eq!(part_size_for(2001, 8 * mib, 10_000), 32 * mib);
        // 10,000 parts hold more than S3's 5 TiB object limit.
        let total: u64 = (1..=10_000)
            .map(|p| part_size_for(p, 8 * mib, 10_000) as u64)
            .sum();
        assert!(total > 5 * (1u64 << 40), "{total}");
        // Never above S3's 5 GiB part limit.
        assert_eq!(part_size_for(10_000, 1 << 30, 10) as u64, 5u64 << 30);
        // A tiny limit doubles at every part.
        assert_eq!(part_size_for(3, 5 * mib, 4), 20 * mib);
    }
}
