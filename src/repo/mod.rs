//! The repository: what a job keeps on a destination and how. Key names (`layout`),
//! manifests, the content-addressed blob store and its sweep, the file index, locks, how an
//! object is packed (compression + encryption) and object-lock retention.

pub mod blobs;
pub mod copy;
pub mod index;
pub mod layout;
pub mod locks;
pub mod manifest;
pub mod objlock;
pub mod packing;
pub mod wal;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::codec::{Compression, Reader, Verify};
use crate::config::ObjectLock;
use crate::crypt::{CryptError, Keys};
use crate::engine::{Archive, SourceError};
use crate::progress::Progress;
use crate::storage::{Storage, StorageError};
use blobs::{BlobError, SweepOutcome};
use index::{FileIndex, IndexEntries};
pub use layout::Form;
use locks::{Holder, Lock, LockKind};
use manifest::{JobListing, Manifest, ManifestError, SourceEntry, StoredRef};
use packing::{Expect, Packing};

/// The keys of one backup of a job, the same on every destination: a run builds them once
/// for all its destinations, without a storage.
#[derive(Clone, Copy)]
pub struct Names<'a> {
    job: &'a str,
    id: &'a str,
    form: Form,
}

impl<'a> Names<'a> {
    /// Backup `id` of `job`, its objects stored the way the job stores new ones.
    pub fn new(job: &'a crate::config::Job, id: &'a str) -> Names<'a> {
        Names {
            job: &job.name,
            id,
            form: Form::of(job),
        }
    }

    /// The object of a dumped source whose dump has extension `ext`.
    pub fn object(self, source: &str, ext: &str) -> String {
        layout::object_key(self.job, self.id, source, ext, self.form)
    }

    /// The file index of a files source.
    pub fn index(self, source: &str) -> String {
        layout::index_key(self.job, self.id, source, self.form)
    }

    /// The clear list of blob keys a files source's index references.
    pub fn refs(self, source: &str) -> String {
        layout::refs_key(self.job, self.id, source, self.form.compression)
    }

    /// The key of the blob named `name` (its content's sha256, or keyed name).
    pub fn blob(self, name: &str) -> String {
        layout::blob_key(self.job, name, self.form)
    }

    /// The key of a lock of `kind` taken by this run.
    pub fn lock(self, kind: &str) -> String {
        layout::lock_key(self.job, self.id, kind)
    }
}

/// A run's lock of the job on several destinations at once: they are claimed together (a
/// conflict on one takes back the others) and refreshed together.
#[derive(Clone, Copy)]
pub struct JobLocks<'a> {
    job: &'a str,
    id: &'a str,
    kind: LockKind,
}

impl<'a> JobLocks<'a> {
    /// Run `id`'s lock of `kind` on the job.
    pub fn new(job: &'a str, id: &'a str, kind: LockKind) -> JobLocks<'a> {
        JobLocks { job, id, kind }
    }

    /// Claim the job on every storage of `storages` (see [`locks::claim_job`]).
    /// `Ok(None)`: the lock is held.
    pub async fn claim(
        self,
        storages: &[&dyn Storage],
        wait: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Holder>, BlobError> {
        locks::claim_job(storages, self.job, self.id, self.kind, wait, cancel).await
    }

    /// Rewrite the lock on `storages` until the returned heartbeat is stopped.
    pub fn heartbeat(self, storages: Vec<std::sync::Arc<dyn Storage>>) -> locks::Heartbeat {
        locks::Heartbeat::start(storages, self.job, self.id, self.kind)
    }
}

/// One job's repository on one destination: every key of the job is built here, and every
/// read, write and delete of its backups, blobs, indexes and locks goes through it.
/// A view (it borrows the storage and the job's name), so callers holding an
/// `Arc<dyn Storage>` or a `&dyn Storage` make one where they need it; it is `Copy`, and its
/// methods take it by value so their futures do not borrow a temporary.
#[derive(Clone, Copy)]
pub struct Repository<'a> {
    storage: &'a dyn Storage,
    job: &'a str,
}

impl<'a> Repository<'a> {
    pub fn new(storage: &'a dyn Storage, job: &'a str) -> Repository<'a> {
        Repository { storage, job }
    }

    pub fn storage(self) -> &'a dyn Storage {
        self.storage
    }

    pub fn job(self) -> &'a str {
        self.job
    }

    /// Everything the job holds here: backups, blobs and locks.
    pub async fn listing(self) -> Result<JobListing, StorageError> {
        JobListing::read(self.storage, self.job).await
    }

    /// The job's backups only (stops before the blobs and locks).
    pub async fn backups(self) -> Result<JobListing, StorageError> {
        JobListing::read_backups(self.storage, self.job).await
    }

    /// A backup's manifest, checked to be this job's and this backup's.
    pub async fn manifest(self, id: &str) -> Result<Manifest, ManifestError> {
        manifest::read_manifest(self.storage, self.job, id).await
    }

    /// A backup's manifest as [`Repository::manifest`] reads it, with its bytes as stored
    /// (a copy publishes them unchanged elsewhere: its MAC still holds).
    pub async fn manifest_body(self, id: &str) -> Result<(Manifest, bytes::Bytes), ManifestError> {
        manifest::read_manifest_body(self.storage, self.job, id).await
    }

    /// Copy a recorded object (a database dump, an index, a refs list) from `from` to
    /// here, read through its size and sha256 check as it streams; it appears here only
    /// once every byte passed. `class`: stored in this destination's storage class, or
    /// never archived (what stowage reads to plan). Returns the bytes stored; with
    /// `progress`, they are counted there.
    pub async fn copy_object_from<'e>(
        self,
        from: Repository<'_>,
        object: impl Into<Recorded<'e>>,
        class: copy::Class,
        progress: Option<&Arc<Progress>>,
    ) -> Result<u64, copy::CopyError> {
        let object = object.into();
        let verified = read_recorded(from.storage, object, None)
            .await
            .map_err(|source| copy::CopyError::Read {
                key: object.key.to_string(),
                source,
            })?;
        copy::copy_stream(
            verified,
            self.storage,
            object.key,
            class,
            progress,
            None,
            async { Ok(()) },
        )
        .await
    }

    /// Copy the blob at `key` from `from` to here, its content (unpacked with `packing`)
    /// checked against the `sha256` and `size` the file index records as it streams; it
    /// appears here only if they match.
    pub async fn copy_blob_from(
        self,
        from: Repository<'_>,
        key: &str,
        packing: &Packing,
        sha256: &str,
        size: u64,
        progress: Option<&Arc<Progress>>,
    ) -> Result<u64, copy::CopyError> {
        copy::copy_blob(
            from.storage,
            self.storage,
            key,
            packing,
            sha256,
            size,
            progress,
        )
        .await
    }

    /// The [`blobs::name_id`] of the blob at `key`, stored in `form` (what
    /// [`Repository::blob_ids`] holds); None when `key` is no such blob of the job.
    pub fn blob_id(self, key: &str, form: Form) -> Option<u64> {
        layout::hash_of_blob(self.job, key, form).and_then(|h| blobs::name_id(&h))
    }

    /// How to read backup `m` for a job that expects `expect` (see [`Packing::of`]): Err
    /// when the job must not read it at all.
    pub fn packing(
        self,
        m: &Manifest,
        expect: &Expect,
        keys: Option<std::sync::Arc<Keys>>,
    ) -> Result<Packing, manifest::Refused> {
        Packing::of(m, expect, keys)
    }

    /// Write a backup's manifest (signed and serialized by the caller): the backup is
    /// published once it is there.
    pub async fn publish_manifest(self, id: &str, body: bytes::Bytes) -> Result<(), StorageError> {
        self.storage
            .put_record(&layout::manifest_key(self.job, id), body)
            .await
    }

    /// Delete a backup, manifest first (see [`manifest::delete_backup`]).
    pub async fn delete_backup(self, listing: &JobListing, id: &str) -> Result<(), StorageError> {
        manifest::delete_backup(self.storage, listing, self.job, id).await
    }

    /// Remove what is stored of backup `id` here while it has no manifest (a copy that
    /// failed part way); a published backup is left alone. Returns how many objects went.
    pub async fn discard_unpublished(self, id: &str) -> Result<usize, StorageError> {
        let listing = self.backups().await?;
        let keys = listing.keys_of(id);
        let mk = layout::manifest_key(self.job, id);
        if keys.is_empty() || keys.contains(&mk) {
            return Ok(0);
        }
        self.storage.delete(&keys).await?;
        Ok(keys.len())
    }

    /// Where everything of one backup is (`<job>/<id>/`).
    pub fn backup_prefix(self, id: &str) -> String {
        layout::backup_prefix(self.job, id)
    }

    /// The object of a dumped source in a backup.
    pub fn object_key(self, id: &str, source: &str, ext: &str, form: Form) -> String {
        layout::object_key(self.job, id, source, ext, form)
    }

    /// The file index of a files source in a backup.
    pub fn index_key(self, id: &str, source: &str, form: Form) -> String {
        layout::index_key(self.job, id, source, form)
    }

    /// The clear list of blob keys a files source's index references.
    pub fn refs_key(self, id: &str, source: &str, c: Compression) -> String {
        layout::refs_key(self.job, id, source, c)
    }

    /// The key of the blob named `name` (its content's sha256, or keyed name).
    pub fn blob_key(self, name: &str, form: Form) -> String {
        layout::blob_key(self.job, name, form)
    }

    /// The blobs stored here in `form`, as [`blobs::name_id`]s.
    pub async fn blob_ids(
        self,
        form: Form,
    ) -> Result<std::collections::HashSet<u64>, StorageError> {
        blobs::blob_ids(self.storage, self.job, form).await
    }

    /// Take the backup lock of run `id` (see [`locks::lock_backup`]).
    pub async fn lock_backup(
        self,
        id: &str,
        reuses_blobs: bool,
        cancel: &CancellationToken,
    ) -> Result<(), BlobError> {
        locks::lock_backup(self.storage, self.job, id, reuses_blobs, cancel).await
    }

    /// Where everything of the job is (`<job>/`).
    pub fn job_prefix(self) -> String {
        layout::job_prefix(self.job)
    }

    /// Where the job's locks are (`<job>/locks/`).
    pub fn locks_prefix(self) -> String {
        layout::locks_prefix(self.job)
    }

    /// Where the job's blobs are (`<job>/blobs/`).
    pub fn blobs_prefix(self) -> String {
        format!("{}{}/", layout::job_prefix(self.job), layout::BLOBS_DIR)
    }

    /// A key among the job's locks for a probe object, whose last-modified time tells the
    /// store's clock (lock listings skip it: it is no lock).
    pub fn clock_probe_key(self) -> String {
        format!(
            "{}{}.clock",
            layout::locks_prefix(self.job),
            layout::new_id(Utc::now())
        )
    }

    /// Where the WAL of every source of the job is kept.
    pub fn wal_root(self) -> String {
        layout::wal_root(self.job)
    }

    /// What an open upload at `key` (under the job's prefix) was writing.
    pub fn upload_of<'k>(self, key: &'k str) -> UploadOf<'k> {
        let rest = key.get(self.job.len().min(key.len())..).unwrap_or("");
        match rest.trim_start_matches('/').split('/').next().unwrap_or("") {
            layout::BLOBS_DIR => UploadOf::Blob,
            layout::WAL_DIR => UploadOf::Wal,
            id => UploadOf::Run(id),
        }
    }

    /// The key of run `id`'s lock of `kind`.
    pub fn lock_key(self, id: &str, kind: LockKind) -> String {
        locks::lock_key(self.job, id, kind)
    }

    /// The locks among a listing's lock objects.
    pub fn locks(self, listing: &JobListing) -> Vec<Lock> {
        locks::parse_locks(self.job, listing.locks.iter().cloned())
    }

    /// Who wrote the lock at `key`, if it says.
    pub async fn lock_owner(self, key: &str) -> Option<crate::owner::Owner> {
        locks::lock_owner(self.storage, key).await
    }

    /// Claim the job here for run `id` (see [`locks::claim_job`]; a run on several
    /// destinations claims them together through it). `Ok(None)`: the lock is held.
    pub async fn claim(
        self,
        id: &str,
        kind: LockKind,
        wait: bool,
        cancel: &CancellationToken,
    ) -> Result<Option<Holder>, BlobError> {
        JobLocks::new(self.job, id, kind)
            .claim(&[self.storage], wait, cancel)
            .await
    }

    /// Run `work` while run `id`'s lock is rewritten here (see [`locks::refreshing`]).
    pub async fn refreshing<F: std::future::Future>(
        self,
        id: &str,
        kind: LockKind,
        work: F,
    ) -> F::Output {
        locks::refreshing(&[self.storage], self.job, id, kind, work).await
    }

    /// Remove run `id`'s lock (a failure is logged, not returned).
    pub async fn unlock(self, id: &str, kind: LockKind) {
        locks::unlock(self.storage, self.job, id, kind).await
    }

    /// Who else holds a live lock of the job here.
    pub async fn holders(self, own_id: &str) -> Result<Vec<Holder>, StorageError> {
        locks::holders(self.storage, self.job, own_id).await
    }

    /// Delete the blobs no published backup references (see [`blobs::sweep`]).
    pub async fn sweep(
        self,
        own_id: &str,
        min_age: Option<chrono::TimeDelta>,
    ) -> Result<SweepOutcome, BlobError> {
        blobs::sweep(self.storage, self.job, own_id, min_age).await
    }

    /// Until when each backup of `doomed` is under object lock here.
    pub async fn object_locks(
        self,
        doomed: &[(&str, DateTime<Utc>)],
        configured: Option<ObjectLock>,
    ) -> Result<Vec<(String, DateTime<Utc>)>, StorageError> {
        objlock::read_locks(self.storage, self.job, doomed, configured).await
    }

    /// Extend the object lock of every blob `m` references to at least `until`.
    pub async fn extend_blob_locks(
        self,
        m: &Manifest,
        until: DateTime<Utc>,
    ) -> Result<u64, BlobError> {
        objlock::extend_blob_locks(self.storage, m, until).await
    }

    /// The newest published backup's index of `source`, to merge with a scan.
    pub async fn previous_index(
        self,
        listing: &JobListing,
        source: &str,
        keys: Option<std::sync::Arc<Keys>>,
        expect: &Expect,
    ) -> Option<(String, IndexEntries)> {
        index::previous_index(self.storage, listing, self.job, source, keys, expect).await
    }

    /// A backup's stored object, read from here through its manifest entry's size and
    /// sha256 check (the stored bytes: neither decompressed nor decrypted). With
    /// `progress`, what is read is counted there, from zero again on each read.
    pub async fn read_verified<'e>(
        self,
        object: impl Into<Recorded<'e>>,
        progress: Option<&Arc<Progress>>,
    ) -> Result<Verify, StorageError> {
        read_recorded(self.storage, object.into(), progress).await
    }

    /// A backup's stored object as its source wrote it: read through its size and sha256
    /// check (see [`Repository::read_verified`]), decrypted and decompressed.
    pub async fn open_verified<'e>(
        self,
        object: impl Into<Recorded<'e>>,
        packing: &Packing,
        progress: Option<&Arc<Progress>>,
    ) -> Result<Reader, OpenError> {
        open_recorded(self.storage, object.into(), packing, progress).await
    }

    /// A dumped source's object in a backup, for its engine to read (as many times as it
    /// needs); `place` names this destination in its errors.
    pub fn archive(self, entry: &SourceEntry, packing: &Packing, place: &str) -> StoredArchive<'a> {
        StoredArchive {
            repo: self,
            key: entry.key.clone(),
            sha256: entry.sha256.clone(),
            size: entry.size,
            packing: packing.clone(),
            place: place.to_string(),
            progress: None,
        }
    }

    /// A backup's whole file index, verified against its manifest entry.
    pub async fn read_index(
        self,
        entry: &SourceEntry,
        packing: &Packing,
    ) -> Result<FileIndex, BlobError> {
        index::read_index(self.storage, entry, packing).await
    }

    /// A backup's file index, streamed (checked when its last entry is read).
    pub async fn open_index(
        self,
        entry: &SourceEntry,
        packing: &Packing,
    ) -> Result<(FileIndex, IndexEntries), BlobError> {
        index::open_index(self.storage, entry, packing).await
    }

    /// The blob keys an index references, from its clear refs list.
    pub async fn read_refs(self, r: &StoredRef, c: Compression) -> Result<Vec<String>, BlobError> {
        index::read_refs(self.storage, r, c).await
    }
}

/// What an open upload was writing: a blob (which carries no run id), or an object of the
/// run with this id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOf<'k> {
    Blob,
    /// A WAL file the daemon's shipper was storing (it ships it again from its spool).
    Wal,
    Run(&'k str),
}

/// A stored object as its backup recorded it: its key, and the size and sha256 its bytes
/// must have.
#[derive(Debug, Clone, Copy)]
pub struct Recorded<'e> {
    pub key: &'e str,
    pub sha256: &'e str,
    pub size: u64,
}

impl<'e> From<&'e SourceEntry> for Recorded<'e> {
    fn from(e: &'e SourceEntry) -> Recorded<'e> {
        Recorded {
            key: &e.key,
            sha256: &e.sha256,
            size: e.size,
        }
    }
}

impl<'e> From<&'e StoredRef> for Recorded<'e> {
    fn from(r: &'e StoredRef) -> Recorded<'e> {
        Recorded {
            key: &r.key,
            sha256: &r.sha256,
            size: r.size,
        }
    }
}

/// Why a stored object could not be opened: the destination's error, or the unpacking's
/// (a wrong or missing identity).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Unpack(#[from] CryptError),
}

impl OpenError {
    /// The error itself, unwrapped: callers look through a boxed source for the
    /// destination's own error (an object not retrieved from an archive class).
    pub fn into_inner(self) -> Box<dyn std::error::Error + Send + Sync> {
        match self {
            OpenError::Storage(e) => Box::new(e),
            OpenError::Unpack(e) => Box::new(e),
        }
    }
}

/// Every read of a recorded object goes through here: the stored bytes, counted into
/// `progress` (restarted: a second pass counts from zero), checked against the recorded
/// size and sha256 as they stream (failing before the reader sees the end).
async fn read_recorded(
    storage: &dyn Storage,
    object: Recorded<'_>,
    progress: Option<&Arc<Progress>>,
) -> Result<Verify, StorageError> {
    let raw = storage.get(object.key).await?;
    let raw = match progress {
        Some(p) => {
            p.restart();
            crate::progress::counted(raw, p.clone())
        }
        None => raw,
    };
    Ok(Verify::new(raw, object.sha256, object.size, object.key))
}

/// [`read_recorded`], then unpacked (decrypted, decompressed).
async fn open_recorded(
    storage: &dyn Storage,
    object: Recorded<'_>,
    packing: &Packing,
    progress: Option<&Arc<Progress>>,
) -> Result<Reader, OpenError> {
    let verified = read_recorded(storage, object, progress).await?;
    Ok(packing.unpack(Box::new(verified), object.key).await?)
}

/// A dumped source's object on a destination, opened afresh for each pass of a restore
/// (see [`Repository::archive`]): checked against its manifest entry, decrypted and
/// decompressed.
pub struct StoredArchive<'a> {
    repo: Repository<'a>,
    key: String,
    sha256: String,
    size: u64,
    packing: Packing,
    place: String,
    progress: Option<Arc<Progress>>,
}

impl StoredArchive<'_> {
    /// Show the progress of reading it (each pass from the start).
    pub fn with_progress(mut self, what: impl Into<String>) -> Self {
        self.progress = Some(Progress::new(what, Some(self.size)));
        self
    }
}

#[async_trait::async_trait]
impl Archive for StoredArchive<'_> {
    async fn open(&self) -> Result<Reader, SourceError> {
        let object = Recorded {
            key: &self.key,
            sha256: &self.sha256,
            size: self.size,
        };
        self.repo
            .open_verified(object, &self.packing, self.progress.as_ref())
            .await
            .map_err(|e| SourceError::Archive {
                place: self.place.clone(),
                source: e.into_inner(),
            })
    }
}
