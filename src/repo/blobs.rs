//! Content-addressed file storage shared by all backups of a job, the index that maps a
//! backup's paths to it, and the lock protocol that keeps blob sweeps from deleting what a
//! backup being written is about to reference.
//!
//! Keys (`crate::repo::layout`): blobs at `<job>/blobs/<aa>/<sha256>[.zst|.gz]` (sha256 of the raw
//! bytes), one index per files source and backup, and locks at `<job>/locks/<id>.backup`
//! (a backup that may reuse blobs is running) or `.sweep` (unreferenced blobs are being
//! deleted).
//!
//! The lock protocol (both sides write their lock, then list the others'): a sweep that
//! sees a live backup lock postpones itself; a backup that sees a live sweep lock waits
//! for it before listing which blobs exist. With read-after-write consistent listings (S3
//! since 2020, local directories) at least one side sees the other, so a blob is never
//! deleted between a backup deciding to reuse it and the backup's manifest being published.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::codec;
use crate::codec::Compression;
use crate::crypt::{Keys, Sealer};
use crate::repo::layout::Form;
use crate::repo::manifest::{self, JobListing, Manifest, SourceEntry};
use crate::repo::packing::{self, Packing};
use crate::storage::{Storage, StorageError};
use std::sync::Arc;

pub use crate::repo::layout::{BLOBS_DIR, LOCKS_DIR, blob_key};
/// 2: JSON Lines (a header line, then one entry per line in [`path_order`]); 1: one JSON
/// document with every entry in `files`, sorted by path string (still read).
pub const INDEX_FORMAT: u32 = 2;

/// Where the store gives no last-modified time: a backup lock whose id is older than this
/// belongs to a crashed run and no longer blocks sweeps.
const BACKUP_LOCK_STALE: Duration = Duration::from_secs(24 * 3600);
/// Likewise for sweeps, which stop deleting well before this.
const SWEEP_LOCK_STALE: Duration = Duration::from_secs(15 * 60);
/// A held lock is written again this often (`STOWAGE_LOCK_REFRESH` shortens it), so its
/// last-modified time says its holder is alive, on any host.
pub const LOCK_REFRESH: Duration = Duration::from_secs(60);
/// A lock not written for this long is a dead holder's, whatever host it ran on: five
/// missed refreshes, so a slow store or a busy host does not lose a live lock.
pub const LOCK_DEAD: Duration = Duration::from_secs(5 * 60);
/// A sweep stops (and leaves the rest for next time) after this long.
const SWEEP_BUDGET: Duration = Duration::from_secs(5 * 60);

/// The index of one files source in one backup. Stored as JSON Lines (compressed like the
/// rest of the job), so it can be read with `zstd -dc | jq` when restoring by hand: this
/// struct without `files` is the first line, then one [`IndexEntry`] per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileIndex {
    pub format: u32,
    pub source: String,
    /// The directory as configured when the backup was taken.
    pub root: String,
    /// The source's filters then: a restore only orphans files these would have included.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Format 1 only (format 2 has the entries on the following lines); in memory, in
    /// [`path_order`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<IndexEntry>,
}

/// The order of paths in a scan and an index: component by component, each compared as
/// bytes. It is the order of a depth-first walk with sorted directories (walkdir's
/// `sort_by_file_name`), so a scan and an index can be merged without holding either; it
/// differs from the order of whole strings ("a.b" < "a/b" as strings, not here).
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// One line of a format-2 index, newline included.
pub fn index_line<T: Serialize>(item: &T) -> Result<Vec<u8>, BlobError> {
    let mut line = serde_json::to_vec(item).map_err(BlobError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// Relative to the root, '/'-separated.
    pub path: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// sha256 of the raw content, hex.
    pub sha256: String,
    /// Key of the blob holding the content (relative to the destination's root).
    pub blob: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A stored object is not what stowage writes; the text says what and where.
    #[error("{0}")]
    Corrupt(String),
    /// Reading a stored object (its bytes, decompressed, checked against its sha256).
    #[error("reading {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("file index {key} is not valid: {source}")]
    Invalid {
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding the file index: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("compressing: {0}")]
    Compress(#[source] std::io::Error),
    #[error("encrypting: {0}")]
    Encrypt(#[source] std::io::Error),
    #[error(transparent)]
    Crypt(Box<crate::crypt::CryptError>),
    #[error("cancelled")]
    Cancelled,
    /// A sweep reads every published backup's manifest before it deletes anything.
    #[error("sweep stopped, backup {id} unreadable: {source}")]
    SweepUnreadable {
        id: String,
        #[source]
        source: Box<crate::repo::manifest::ManifestError>,
    },
    /// ... and every blob reference of it.
    #[error("sweep stopped, backup {id}: {source}")]
    SweepStopped {
        id: String,
        #[source]
        source: Box<BlobError>,
    },
}

/// Serialize, compress and (for an encrypting job) encrypt an index.
pub async fn encode_index(
    index: &FileIndex,
    c: Compression,
    sealer: Option<&Arc<Sealer>>,
) -> Result<(Bytes, u64), BlobError> {
    let json = serde_json::to_vec(index).map_err(BlobError::Encode)?;
    let raw = json.len() as u64;
    let packed = pack_bytes(Bytes::from(json), c, None, sealer).await?;
    Ok((packed, raw))
}

/// Compress, then encrypt when the job encrypts: a small object as it is stored.
pub async fn pack_bytes(
    data: Bytes,
    c: Compression,
    level: Option<i32>,
    sealer: Option<&Arc<Sealer>>,
) -> Result<Bytes, BlobError> {
    let packed = compress_bytes(data, c, level).await?;
    let Some(sealer) = sealer else {
        return Ok(packed);
    };
    let mut r = crate::crypt::seal(Box::new(std::io::Cursor::new(packed)), sealer.clone());
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.map_err(BlobError::Encrypt)?;
    Ok(Bytes::from(out))
}

/// The clear list of blob keys an encrypted index references (`layout::refs_key`), one a
/// line in index order, so a sweep can mark without a key: it reveals only names the blob
/// listing shows anyway.
pub async fn read_refs(
    storage: &dyn Storage,
    r: &crate::repo::manifest::StoredRef,
    c: Compression,
) -> Result<Vec<String>, BlobError> {
    let raw = storage.get(&r.key).await?;
    let verified = codec::Verify::new(raw, &r.sha256, r.size, &r.key);
    let mut text = String::new();
    codec::decompress(Box::new(verified), c)
        .read_to_string(&mut text)
        .await
        .map_err(|source| BlobError::Read {
            key: r.key.clone(),
            source,
        })?;
    // Written in index order since format 2: duplicates are possible.
    let mut keys: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

pub async fn compress_bytes(
    data: Bytes,
    c: Compression,
    level: Option<i32>,
) -> Result<Bytes, BlobError> {
    if c == Compression::None {
        return Ok(data);
    }
    let mut r = codec::compress(Box::new(std::io::Cursor::new(data)), c, level);
    let mut out = Vec::new();
    r.read_to_end(&mut out).await.map_err(BlobError::Compress)?;
    Ok(Bytes::from(out))
}

/// Read a whole index into memory (what `verify` and archive surveys use; backups and
/// restores stream it with [`open_index`]).
pub async fn read_index(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<FileIndex, BlobError> {
    let (mut header, mut entries) = open_index(storage, entry, packing).await?;
    let mut files = Vec::new();
    while let Some(f) = entries.next().await? {
        files.push(f);
    }
    header.files = files;
    Ok(header)
}

/// The entries of an index, one at a time, in [`path_order`].
pub struct IndexEntries {
    source: EntrySource,
    key: String,
    last: Option<String>,
    line: String,
}

enum EntrySource {
    Lines(tokio::io::BufReader<codec::Reader>),
    /// A format-1 index: one document, so it is in memory anyway (sorted into path order).
    Loaded(std::vec::IntoIter<IndexEntry>),
}

impl IndexEntries {
    /// Entries already in memory (in `path_order`): for tests of the merges.
    #[cfg(test)]
    pub(crate) fn from_vec(entries: Vec<IndexEntry>) -> IndexEntries {
        IndexEntries {
            source: EntrySource::Loaded(entries.into_iter()),
            key: "test".to_string(),
            last: None,
            line: String::new(),
        }
    }

    /// The next entry; `None` at the end, once the stored object's sha256 was checked.
    pub async fn next(&mut self) -> Result<Option<IndexEntry>, BlobError> {
        let entry =
            match &mut self.source {
                EntrySource::Loaded(it) => it.next(),
                EntrySource::Lines(r) => loop {
                    self.line.clear();
                    let n = tokio::io::AsyncBufReadExt::read_line(r, &mut self.line)
                        .await
                        .map_err(|source| BlobError::Read {
                            key: self.key.clone(),
                            source,
                        })?;
                    if n == 0 {
                        break None;
                    }
                    if self.line.trim().is_empty() {
                        continue;
                    }
                    break Some(serde_json::from_str::<IndexEntry>(&self.line).map_err(
                        |source| BlobError::Invalid {
                            key: self.key.clone(),
                            source,
                        },
                    )?);
                },
            };
        if let Some(e) = &entry {
            // Merges with a scan rely on the order: an index out of order is refused
            // rather than merged wrongly.
            if let Some(last) = &self.last
                && path_order(last, &e.path) != std::cmp::Ordering::Less
            {
                return Err(BlobError::Corrupt(format!(
                    "file index {} is not in path order at \"{}\"",
                    self.key, e.path
                )));
            }
            self.last = Some(e.path.clone());
            // Paths and blob keys are untrusted: none may lead out of the restored
            // directory, the destination's root or the job's prefix.
            crate::repo::layout::check_index_entry(&self.key, &e.path, &e.blob)
                .map_err(BlobError::Corrupt)?;
        }
        Ok(entry)
    }
}

/// Open a backup's index: its header (`files` empty) and its entries, streamed. The
/// stored object is checked against the manifest's sha256 when the last entry is read.
/// A format-1 index is one JSON document: it is read whole (as before format 2).
pub async fn open_index(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<(FileIndex, IndexEntries), BlobError> {
    let raw = storage.get(&entry.key).await?;
    let verified = codec::Verify::new(raw, &entry.sha256, entry.size, &entry.key);
    let r = packing
        .unpack(Box::new(verified), &entry.key)
        .await
        .map_err(|e| BlobError::Crypt(Box::new(e)))?;
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    let read_err = |source| BlobError::Read {
        key: entry.key.clone(),
        source,
    };
    let invalid = |source| BlobError::Invalid {
        key: entry.key.clone(),
        source,
    };
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut r, &mut first)
        .await
        .map_err(read_err)?;
    let mut header: FileIndex = match serde_json::from_str(&first) {
        Ok(h) => h,
        // Not one line: a format-1 document written over several lines.
        Err(_) => {
            let mut rest = first.into_bytes();
            r.read_to_end(&mut rest).await.map_err(read_err)?;
            serde_json::from_slice(&rest).map_err(invalid)?
        }
    };
    let source = match header.format {
        1 => {
            let mut files = std::mem::take(&mut header.files);
            files.sort_by(|a, b| path_order(&a.path, &b.path));
            // Drain to the end, so the sha256 is checked.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.map_err(read_err)?;
            EntrySource::Loaded(files.into_iter())
        }
        2 => EntrySource::Lines(r),
        n => {
            return Err(BlobError::Corrupt(format!(
                "file index {} has format {n}, newer than this stowage reads ({INDEX_FORMAT}); use a newer stowage",
                entry.key
            )));
        }
    };
    Ok((
        header,
        IndexEntries {
            source,
            key: entry.key.clone(),
            last: None,
            line: String::new(),
        },
    ))
}

use crate::repo::layout::hash_of_blob;

/// A blob's name (hex) as a number, its first 64 bits: what a backup keeps of each blob a
/// destination holds (8 bytes, not a key string). Two contents sharing 64 bits (odds of
/// about n²/2⁶⁵) would leave the second unuploaded; verify would then report it.
pub fn name_id(name: &str) -> Option<u64> {
    u64::from_str_radix(name.get(..16)?, 16).ok()
}

/// The blobs stored on `storage` in `form`, as [`name_id`]s, from a paged listing.
pub async fn blob_ids(
    storage: &dyn Storage,
    job: &str,
    form: Form,
) -> Result<HashSet<u64>, StorageError> {
    let mut ids = HashSet::new();
    storage
        .list_pages(&format!("{job}/{BLOBS_DIR}/"), &mut |page| {
            ids.extend(
                page.iter()
                    .filter_map(|o| hash_of_blob(job, &o.key, form))
                    .filter_map(|h| name_id(&h)),
            );
        })
        .await?;
    Ok(ids)
}

pub fn lock_key(job: &str, id: &str, kind: LockKind) -> String {
    crate::repo::layout::lock_key(job, id, kind.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Backup,
    Sweep,
    /// A restore of the job is writing into its database or files.
    Restore,
}

impl LockKind {
    fn as_str(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Sweep => "sweep",
            LockKind::Restore => "restore",
        }
    }
}

/// A lock seen in a listing: its id (the holder's start time), kind, and when it was
/// last written (refreshed), where the store says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub id: String,
    pub kind: LockKind,
    pub since: DateTime<Utc>,
    pub modified: Option<DateTime<Utc>>,
}

pub fn parse_locks(
    job: &str,
    objects: impl IntoIterator<Item = crate::storage::ObjectMeta>,
) -> Vec<Lock> {
    let prefix = crate::repo::layout::locks_prefix(job);
    objects
        .into_iter()
        .filter_map(|o| {
            let name = o.key.strip_prefix(&prefix)?.to_string();
            let (id, kind) = name.rsplit_once('.')?;
            let kind = match kind {
                "backup" => LockKind::Backup,
                "sweep" => LockKind::Sweep,
                "restore" => LockKind::Restore,
                _ => return None,
            };
            let since = crate::repo::layout::parse_id(id)?;
            Some(Lock {
                id: id.to_string(),
                kind,
                since,
                modified: o.modified,
            })
        })
        .collect()
}

/// Whether a lock still counts (its holder may be alive). `now` is the store's clock where
/// known (the last-modified time of a lock this process just wrote), so a host whose clock
/// is off does not misjudge others' locks. A lock the holder has refreshed within
/// [`LOCK_DEAD`] is live however long ago it was taken (a long backup stays locked); one
/// not refreshed for that long is dead (a crashed holder frees the job within minutes).
/// Only where the store gives no last-modified time does the taken-at time decide.
pub fn is_live(lock: &Lock, now: DateTime<Utc>) -> bool {
    let (from, limit) = match (lock.modified, lock.kind) {
        (Some(m), _) => (m, LOCK_DEAD),
        (None, LockKind::Backup | LockKind::Restore) => (lock.since, BACKUP_LOCK_STALE),
        (None, LockKind::Sweep) => (lock.since, SWEEP_LOCK_STALE),
    };
    now.signed_duration_since(from)
        .to_std()
        .map(|age| age < limit)
        // Written "after now": a clock step, not a dead holder.
        .unwrap_or(true)
}

/// The job's locks, and the store's "now": the last-modified time of `own` (a lock this
/// process has just written) when the listing has it, else this host's clock.
async fn list_locks(
    storage: &dyn Storage,
    job: &str,
    own: Option<&str>,
) -> Result<(Vec<Lock>, DateTime<Utc>), StorageError> {
    let objs = storage
        .list(&crate::repo::layout::locks_prefix(job))
        .await?;
    let now = own
        .and_then(|k| objs.iter().find(|o| o.key == k))
        .and_then(|o| o.modified)
        .unwrap_or_else(Utc::now);
    Ok((parse_locks(job, objs), now))
}

/// How often a held lock is written again: [`LOCK_REFRESH`], or `STOWAGE_LOCK_REFRESH`
/// ("5s", "500ms") when shorter.
pub fn lock_refresh() -> Duration {
    std::env::var("STOWAGE_LOCK_REFRESH")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .map_or(LOCK_REFRESH, |d| {
            d.clamp(Duration::from_millis(100), LOCK_REFRESH)
        })
}

/// Write the lock again on every storage each [`lock_refresh`] until `done`; a write in
/// flight when `done` fires is finished first, so a refresh never re-creates a lock after
/// its holder removed it.
async fn refresh_until(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    done: &CancellationToken,
) {
    let key = lock_key(job, id, kind);
    let period = lock_refresh();
    let mut failing = vec![false; storages.len()];
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        for (st, failing) in storages.iter().zip(failing.iter_mut()) {
            match st.put_bytes(&key, lock_body()).await {
                Ok(()) => *failing = false,
                Err(e) => {
                    if !*failing {
                        warn!(
                            job,
                            "cannot refresh lock {key} on {}: {e}; other processes will take the job for free after {} without a refresh",
                            st.location(),
                            humantime::format_duration(LOCK_DEAD)
                        );
                    }
                    *failing = true;
                }
            }
        }
    }
}

/// Run `work` while keeping the lock `id` of `kind` fresh on `storages`.
pub async fn refreshing<F: std::future::Future>(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    work: F,
) -> F::Output {
    let done = CancellationToken::new();
    let work = async {
        let out = work.await;
        done.cancel();
        out
    };
    let (out, ()) = tokio::join!(work, refresh_until(storages, job, id, kind, &done));
    out
}

/// A held lock kept fresh by a task of its own, for holders that cannot wrap their work
/// in [`refreshing`]. [`Heartbeat::stop`] before removing the lock.
pub struct Heartbeat {
    done: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(
        storages: Vec<Arc<dyn Storage>>,
        job: &str,
        id: &str,
        kind: LockKind,
    ) -> Heartbeat {
        let done = CancellationToken::new();
        let (job, id, stop) = (job.to_string(), id.to_string(), done.clone());
        let task = tokio::spawn(async move {
            let refs: Vec<&dyn Storage> = storages.iter().map(|s| s.as_ref()).collect();
            refresh_until(&refs, &job, &id, kind, &stop).await;
        });
        Heartbeat {
            done,
            task: Some(task),
        }
    }

    /// Stop refreshing; returns once no refresh is in flight.
    pub async fn stop(mut self) {
        self.done.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// The lock's content: who holds it, so a later start can tell a crashed holder.
fn lock_body() -> Bytes {
    Bytes::from(serde_json::to_vec(crate::owner::Owner::current()).unwrap_or_default())
}

/// The holder recorded in a lock, if it can be read.
pub async fn lock_owner(storage: &dyn Storage, key: &str) -> Option<crate::owner::Owner> {
    let body = storage.get_bytes(key).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Announce a running backup (every run holds one, so a later start can recognise the
/// leftovers of a crashed run). With `reuses_blobs`, also wait out any sweep in progress
/// before the backup looks at which blobs exist.
pub async fn lock_backup(
    storage: &dyn Storage,
    job: &str,
    id: &str,
    reuses_blobs: bool,
    cancel: &CancellationToken,
) -> Result<(), BlobError> {
    let own = lock_key(job, id, LockKind::Backup);
    storage.put_bytes(&own, lock_body()).await?;
    if !reuses_blobs {
        return Ok(());
    }
    let mut waited = false;
    loop {
        let (locks, now) = list_locks(storage, job, Some(&own)).await?;
        let sweeping: Vec<Lock> = locks
            .into_iter()
            .filter(|l| l.kind == LockKind::Sweep && is_live(l, now))
            .collect();
        if sweeping.is_empty() {
            if waited {
                info!(job, "blob sweep finished; continuing");
            }
            return Ok(());
        }
        if !waited {
            info!(
                job,
                "waiting for the blob sweep started at {} on {} to finish",
                sweeping[0].id,
                storage.location()
            );
            waited = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BlobError::Cancelled),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Another process's backup or restore of the job, holding a live lock here.
#[derive(Debug, Clone)]
pub struct Holder {
    pub lock: Lock,
    pub owner: Option<crate::owner::Owner>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.lock.kind {
            LockKind::Restore => "restore",
            _ => "backup",
        };
        match &self.owner {
            Some(o) => write!(
                f,
                "a {what} by stowage on host {}, pid {}, since {}",
                o.host,
                o.pid,
                self.lock.since.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            None => write!(
                f,
                "a {what} since {}",
                self.lock.since.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
    }
}

/// Backups and restores of `job` by other live processes (their locks here), oldest
/// first. This process's own locks, stale locks and locks of processes known to be gone
/// do not count.
pub async fn holders(
    storage: &dyn Storage,
    job: &str,
    own_id: &str,
) -> Result<Vec<Holder>, StorageError> {
    let me = crate::owner::Owner::current();
    let mut out = Vec::new();
    let (locks, now) = list_locks(storage, job, None).await?;
    // Our own lock (any kind) was just written: its time is the store's now.
    let now = locks
        .iter()
        .find(|l| l.id == own_id)
        .and_then(|l| l.modified)
        .unwrap_or(now);
    for lock in locks {
        if lock.id == own_id || lock.kind == LockKind::Sweep || !is_live(&lock, now) {
            continue;
        }
        let owner = lock_owner(storage, &lock_key(job, &lock.id, lock.kind)).await;
        match &owner {
            Some(o) if o == me => continue,
            Some(o) if o.is_alive() == Some(false) => continue,
            _ => {}
        }
        out.push(Holder { lock, owner });
    }
    out.sort_by(|a, b| a.lock.id.cmp(&b.lock.id));
    Ok(out)
}

/// Take the job's lock of `kind` on every storage: write it, then look for another
/// process's. On a conflict the lock is taken back (so two starting at once never both
/// proceed), and the holder is returned; with `wait`, it waits for the holder to finish
/// and tries again instead. `Ok(None)`: the lock is held.
pub async fn claim_job(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    wait: bool,
    cancel: &CancellationToken,
) -> Result<Option<Holder>, BlobError> {
    let mut announced = false;
    loop {
        for st in storages {
            st.put_bytes(&lock_key(job, id, kind), lock_body()).await?;
        }
        let mut holder = None;
        for st in storages {
            if let Some(h) = holders(*st, job, id).await?.into_iter().next() {
                holder = Some(h);
                break;
            }
        }
        let Some(holder) = holder else {
            if announced {
                info!(job, "the other run of {job} finished; continuing");
            }
            return Ok(None);
        };
        for st in storages {
            unlock(*st, job, id, kind).await;
        }
        if !wait {
            return Ok(Some(holder));
        }
        if !announced {
            info!(job, "waiting for {holder} of job {job} to finish");
            announced = true;
        }
        // Jittered, so two waiting processes do not keep colliding.
        let pause = Duration::from_millis(2000 + u64::from(std::process::id() % 1000));
        tokio::select! {
            _ = cancel.cancelled() => return Err(BlobError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

pub async fn unlock(storage: &dyn Storage, job: &str, id: &str, kind: LockKind) {
    let key = lock_key(job, id, kind);
    if let Err(e) = storage.delete(std::slice::from_ref(&key)).await {
        warn!(
            job,
            "could not remove lock {key} from {}: {e}",
            storage.location()
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SweepOutcome {
    /// Unreferenced blobs deleted / still present (budget exhausted).
    Swept {
        deleted: usize,
        kept: usize,
        left: usize,
    },
    /// Another backup of the job is running; its blobs may not be referenced yet.
    Postponed { by: String },
}

/// Mark and sweep: delete the blobs no published backup of the job references.
/// `own_id` is the calling run (its own backup lock does not block it).
/// `min_age`: unreferenced blobs younger than this stay (an archive class's minimum
/// storage duration: deleting them earlier saves nothing).
pub async fn sweep(
    storage: &dyn Storage,
    job: &str,
    own_id: &str,
    min_age: Option<chrono::TimeDelta>,
) -> Result<SweepOutcome, BlobError> {
    let sweep_id = crate::repo::layout::new_id(Utc::now());
    let own = lock_key(job, &sweep_id, LockKind::Sweep);
    storage.put_bytes(&own, lock_body()).await?;
    let result = refreshing(
        &[storage],
        job,
        &sweep_id,
        LockKind::Sweep,
        sweep_locked(storage, job, own_id, &own, min_age),
    )
    .await;
    unlock(storage, job, &sweep_id, LockKind::Sweep).await;
    result
}

/// References one sweep round holds at most (16 bytes each): more, and the blobs are
/// swept in several rounds, each over a share of the fan-out directories.
const SWEEP_ROUND_REFS: u64 = 500_000;

/// A blob key as a sweep remembers it: a 128-bit hash (a collision only keeps garbage).
fn ref_id(key: &str) -> u128 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    u128::from_le_bytes(b)
}

/// The fan-out directory of a blob key (`<job>/blobs/<aa>/…`), as a number.
fn fan_of(job: &str, key: &str) -> Option<usize> {
    let rest = key.strip_prefix(&format!("{job}/{BLOBS_DIR}/"))?;
    let (fan, _) = rest.split_once('/')?;
    if fan.len() != 2 {
        return None;
    }
    usize::from_str_radix(fan, 16).ok()
}

/// The files sources of the published backups: what a sweep must keep.
struct Marked {
    /// Per files source: its manifest (how it is stored) and entry.
    sources: Vec<(Manifest, SourceEntry)>,
    /// Sum of their file counts: an upper bound of the references.
    refs: u64,
}

async fn sweep_locked(
    storage: &dyn Storage,
    job: &str,
    own_id: &str,
    own_lock: &str,
    min_age: Option<chrono::TimeDelta>,
) -> Result<SweepOutcome, BlobError> {
    let started = std::time::Instant::now();
    // Backups and locks only: the blobs are listed a fan-out directory at a time.
    let listing = JobListing::read_backups(storage, job).await?;
    let (locks, store_now) = list_locks(storage, job, Some(own_lock)).await?;
    if let Some(other) = locks
        .iter()
        .find(|l| l.kind == LockKind::Backup && l.id != own_id && is_live(l, store_now))
    {
        return Ok(SweepOutcome::Postponed {
            by: other.id.clone(),
        });
    }
    // Every published backup's files sources. Any unreadable manifest or index stops the
    // sweep: deleting on incomplete knowledge could destroy a backup.
    let mut marked = Marked {
        sources: Vec::new(),
        refs: 0,
    };
    for p in listing.published(job) {
        let m: Manifest = match manifest::read_manifest(storage, job, &p.id).await {
            Ok(m) => m,
            // Deleted by a concurrent retention after the listing: references nothing now.
            Err(manifest::ManifestError::Storage(StorageError::NotFound(_))) => continue,
            Err(e) => {
                return Err(BlobError::SweepUnreadable {
                    id: p.id.clone(),
                    source: Box::new(e),
                });
            }
        };
        for e in m.sources.iter().filter(|s| s.files.is_some()) {
            if e.refs.is_none() && m.encryption.is_some() {
                return Err(BlobError::Corrupt(format!(
                    "sweep stopped, backup {}: encrypted files source {} lists no blob references",
                    p.id, e.name
                )));
            }
            marked.refs += e.files.as_ref().map_or(0, |f| f.count);
            marked.sources.push((m.clone(), e.clone()));
        }
    }
    drop(listing);
    // Rounds over shares of the 256 fan-out directories, so the references held at once
    // stay bounded: each round reads every kept backup's references (streamed) and keeps
    // those in its share, then lists its directories and deletes what is not kept.
    let rounds = [1usize, 2, 4, 8, 16, 32, 64, 128, 256]
        .into_iter()
        .find(|r| marked.refs / (*r as u64) <= SWEEP_ROUND_REFS)
        .unwrap_or(256);
    let per_round = 256 / rounds;
    let young = |o: &crate::storage::ObjectMeta| {
        min_age.is_some_and(|min| o.modified.is_none_or(|t| Utc::now() - t < min))
    };
    let (mut deleted, mut kept, mut left) = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        let fans = round * per_round..(round + 1) * per_round;
        let mut referenced: HashSet<u128> = HashSet::new();
        for (m, e) in &marked.sources {
            let stop = |e| BlobError::SweepStopped {
                id: m.id.clone(),
                source: Box::new(e),
            };
            let mut keep = |key: &str| {
                if fan_of(job, key).is_none_or(|f| fans.contains(&f)) {
                    referenced.insert(ref_id(key));
                }
            };
            match &e.refs {
                Some(r) => for_each_ref(storage, r, m.compression, &mut keep)
                    .await
                    .map_err(stop)?,
                None => {
                    let (_, mut entries) = open_index(storage, e, &Packing::as_stored(m, None))
                        .await
                        .map_err(stop)?;
                    while let Some(f) = entries.next().await.map_err(stop)? {
                        keep(&f.blob);
                    }
                }
            }
        }
        for fan in fans {
            let objects = storage
                .list(&format!("{job}/{BLOBS_DIR}/{fan:02x}/"))
                .await?;
            let garbage: Vec<String> = objects
                .iter()
                .filter(|o| !young(o))
                .map(|o| o.key.clone())
                .filter(|k| {
                    !referenced.contains(&ref_id(k))
                        && !k.ends_with(crate::storage::local::PARTIAL_SUFFIX)
                })
                .collect();
            kept += objects.len() - garbage.len();
            for batch in garbage.chunks(1000) {
                if started.elapsed() > SWEEP_BUDGET {
                    left += batch.len();
                    continue;
                }
                storage.delete(batch).await?;
                deleted += batch.len();
            }
        }
    }
    Ok(SweepOutcome::Swept {
        deleted,
        kept,
        left,
    })
}

/// Each blob key of a stored refs list (checked against its sha256 at the end).
pub async fn for_each_ref(
    storage: &dyn Storage,
    r: &crate::repo::manifest::StoredRef,
    c: Compression,
    each: &mut (dyn FnMut(&str) + Send),
) -> Result<(), BlobError> {
    let raw = storage.get(&r.key).await?;
    let verified = codec::Verify::new(raw, &r.sha256, r.size, &r.key);
    let mut lines = tokio::io::BufReader::new(codec::decompress(Box::new(verified), c));
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
            .await
            .map_err(|source| BlobError::Read {
                key: r.key.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        let key = line.trim_end();
        if !key.is_empty() {
            each(key);
        }
    }
}

/// The newest published backup of this source on `storage`: its id and its index,
/// streamed, to merge with a scan.
pub async fn previous_index(
    storage: &dyn Storage,
    listing: &JobListing,
    job: &str,
    source: &str,
    keys: Option<Arc<Keys>>,
    expect: &packing::Expect,
) -> Option<(String, IndexEntries)> {
    for p in listing.published(job) {
        let Ok(m) = manifest::read_manifest(storage, job, &p.id).await else {
            continue;
        };
        let Some(e) = m
            .sources
            .iter()
            .find(|s| s.name == source && s.files.is_some())
        else {
            continue;
        };
        // A fake index would have the backup trust its hashes for files it does not read
        // again: only one the job itself wrote is merged.
        let packing = match Packing::of(&m, expect, keys.clone()) {
            Ok(p) => p,
            Err(err) => {
                warn!(
                    job,
                    source, "not using backup {}'s index of {source}: {err}", p.id
                );
                continue;
            }
        };
        if m.encryption.is_some() && keys.is_none() {
            // Without the identity the index cannot be read: every file is hashed again
            // (nothing is uploaded again: blob names still match).
            return None;
        }
        return match open_index(storage, e, &packing).await {
            Ok((_, entries)) => Some((p.id, entries)),
            Err(err) => {
                warn!(
                    job,
                    source,
                    "cannot read the previous index of {source} ({err}); re-reading every file"
                );
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// Unreferenced blobs go, unless younger than the sweep's minimum age (an archive
    /// class's minimum storage duration).
    #[tokio::test]
    async fn sweep_keeps_young_blobs_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::local::LocalStorage::new(dir.path().to_path_buf());
        let put = |n: u8| {
            let key = blob_key("app", &format!("{n:02x}").repeat(32), Compression::Zstd);
            let storage = &storage;
            async move {
                storage
                    .put_data(&key, Bytes::from_static(b"x"))
                    .await
                    .expect("put");
                key
            }
        };
        let (a, b) = (put(1).await, put(2).await);
        let swept = |min: Option<chrono::TimeDelta>| {
            let storage = &storage;
            async move {
                match sweep(storage, "app", "none", min).await.expect("sweep") {
                    SweepOutcome::Swept { deleted, kept, .. } => (deleted, kept),
                    SweepOutcome::Postponed { by } => panic!("postponed by {by}"),
                }
            }
        };
        // Written just now: a day's minimum keeps both (nothing references them).
        assert_eq!(swept(Some(chrono::TimeDelta::days(1))).await, (0, 2));
        assert_eq!(swept(None).await, (2, 0));
        for k in [a, b] {
            assert!(!dir.path().join(&k).exists(), "{k}");
        }
    }

    #[test]
    fn paths_order_component_by_component() {
        use std::cmp::Ordering::*;
        assert_eq!(path_order("a/b", "a.b"), Less);
        assert!("a/b" > "a.b", "as whole strings it is the other way");
        assert_eq!(path_order("a/z/z", "a0"), Less);
        assert_eq!(path_order("a", "a/b"), Less);
        assert_eq!(path_order("a-c/x", "a/x"), Greater);
        assert_eq!(path_order("x/y", "x/y"), Equal);
        let mut v = vec!["a0", "a.b/c", "a/b/c", "a-c", "a/b", "b", "a/b.c"];
        v.sort_by(|a, b| path_order(a, b));
        assert_eq!(v, vec!["a/b", "a/b/c", "a/b.c", "a-c", "a.b/c", "a0", "b"]);
    }

    fn entry(path: &str) -> IndexEntry {
        IndexEntry {
            path: path.to_string(),
            size: 1,
            mode: 0o644,
            mtime: 0,
            sha256: "ab".repeat(32),
            blob: blob_key("app", &"ab".repeat(32), Compression::Zstd),
        }
    }

    fn header(format: u32, files: Vec<IndexEntry>) -> FileIndex {
        FileIndex {
            format,
            source: "uploads".into(),
            root: "/data".into(),
            include: vec![],
            exclude: vec![],
            files,
        }
    }

    /// Store `body` (zstd) as an index and open it as its manifest entry would.
    async fn stored(
        storage: &crate::storage::local::LocalStorage,
        body: Vec<u8>,
    ) -> Result<(FileIndex, IndexEntries), BlobError> {
        let packed = compress_bytes(Bytes::from(body.clone()), Compression::Zstd, None)
            .await
            .expect("compress");
        let key = "app/x/uploads.files.json.zst";
        storage.put_bytes(key, packed.clone()).await.expect("put");
        let entry = SourceEntry {
            key: key.into(),
            size: packed.len() as u64,
            raw_size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&packed)),
            ..Default::default()
        };
        open_index(storage, &entry, &Packing::plain(Compression::Zstd)).await
    }

    async fn all(mut e: IndexEntries) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        while let Some(f) = e.next().await? {
            out.push(f.path);
        }
        Ok(out)
    }

    /// Format 2 streams line by line in path order; format 1 (sorted by whole strings) is
    /// read whole and put in path order; an index out of order is refused.
    #[tokio::test]
    async fn indexes_of_both_formats_read_in_path_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::local::LocalStorage::new(dir.path().to_path_buf());
        let mut body = index_line(&header(2, vec![])).expect("header");
        for p in ["a/b", "a.b", "b"] {
            body.extend(index_line(&entry(p)).expect("line"));
        }
        let (h, e) = stored(&storage, body).await.expect("open");
        assert_eq!((h.format, h.files.len()), (2, 0));
        assert_eq!(all(e).await.expect("entries"), vec!["a/b", "a.b", "b"]);

        let old = header(1, vec![entry("a.b"), entry("a/b"), entry("b")]);
        let (h, e) = stored(&storage, serde_json::to_vec(&old).expect("json"))
            .await
            .expect("open");
        assert_eq!(h.format, 1);
        assert_eq!(all(e).await.expect("entries"), vec!["a/b", "a.b", "b"]);

        let mut body = index_line(&header(2, vec![])).expect("header");
        for p in ["a.b", "a/b"] {
            body.extend(index_line(&entry(p)).expect("line"));
        }
        let (_, e) = stored(&storage, body).await.expect("open");
        let err = all(e).await.expect_err("out of order");
        assert!(err.to_string().contains("not in path order"), "{err}");

        let newer = index_line(&header(3, vec![])).expect("header");
        let err = stored(&storage, newer).await.err().expect("format 3");
        assert!(err.to_string().contains("newer"), "{err}");
    }

    #[test]
    fn blob_keys_round_trip() {
        let h = "ab".repeat(32);
        let k = blob_key("app", &h, Compression::Zstd);
        assert_eq!(k, format!("app/blobs/ab/{h}.zst"));
        assert_eq!(hash_of_blob("app", &k, Compression::Zstd), Some(h.clone()));
        // Another compression's blob is not this compression's content.
        assert_eq!(hash_of_blob("app", &k, Compression::Gzip), None);
        assert_eq!(
            hash_of_blob("app", &format!("{k}.1-0.partial"), Compression::Zstd),
            None
        );
        assert_eq!(
            hash_of_blob("app", "app/blobs/ab/short.zst", Compression::Zstd),
            None
        );
    }

    #[test]
    fn locks_parse_and_go_stale() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid");
        // Without a last-modified time (a store that gives none): the taken-at time decides.
        let keys = [
            "app/locks/20261122T115900.000Z.sweep",
            "app/locks/20261122T100000.000Z.sweep",
            "app/locks/20261121T130000.000Z.backup",
            "app/locks/20261120T120000.000Z.backup",
            "app/locks/garbage",
        ];
        let objects = keys.iter().map(|k| crate::storage::ObjectMeta {
            key: k.to_string(),
            size: 1,
            modified: None,
        });
        let locks = parse_locks("app", objects);
        assert_eq!(locks.len(), 4);
        let live: Vec<(&str, LockKind)> = locks
            .iter()
            .filter(|l| is_live(l, now))
            .map(|l| (l.id.as_str(), l.kind))
            .collect();
        assert_eq!(
            live,
            vec![
                ("20261122T115900.000Z", LockKind::Sweep),
                ("20261121T130000.000Z", LockKind::Backup)
            ]
        );
    }

    #[test]
    fn a_lock_lives_by_its_refreshes_whatever_its_age() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid");
        let lock = |kind, taken_min: i64, written_min: i64| Lock {
            id: "x".into(),
            kind,
            since: now - chrono::TimeDelta::minutes(taken_min),
            modified: Some(now - chrono::TimeDelta::minutes(written_min)),
        };
        // A backup running for two days, refreshed a minute ago: still held.
        assert!(is_live(&lock(LockKind::Backup, 2 * 24 * 60, 1), now));
        // Taken ten minutes ago and never refreshed since: its holder died.
        assert!(!is_live(&lock(LockKind::Backup, 10, 10), now));
        assert!(!is_live(&lock(LockKind::Restore, 10, 10), now));
        assert!(!is_live(&lock(LockKind::Sweep, 6, 6), now));
        // The boundary: dead from LOCK_DEAD on.
        let dead_min = i64::try_from(LOCK_DEAD.as_secs() / 60).expect("minutes");
        assert!(is_live(&lock(LockKind::Backup, 60, dead_min - 1), now));
        assert!(!is_live(&lock(LockKind::Backup, 60, dead_min), now));
        // Written "in the future" (the store's clock ahead of ours): not dead.
        assert!(is_live(&lock(LockKind::Backup, 0, -3), now));
        // Several refreshes fit in the dead limit.
        assert!(LOCK_REFRESH * 4 < LOCK_DEAD);
    }
}
