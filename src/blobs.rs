//! Content-addressed file storage shared by all backups of a job, the index that maps a
//! backup's paths to it, and the lock protocol that keeps blob sweeps from deleting what a
//! backup being written is about to reference.
//!
//! Keys (`crate::layout`): blobs at `<job>/blobs/<aa>/<sha256>[.zst|.gz]` (sha256 of the raw
//! bytes), one index per files source and backup, and locks at `<job>/locks/<id>.backup`
//! (a backup that may reuse blobs is running) or `.sweep` (unreferenced blobs are being
//! deleted).
//!
//! The lock protocol (both sides write their lock, then list the others'): a sweep that
//! sees a live backup lock postpones itself; a backup that sees a live sweep lock waits
//! for it before listing which blobs exist. With read-after-write consistent listings (S3
//! since 2020, local directories) at least one side sees the other, so a blob is never
//! deleted between a backup deciding to reuse it and the backup's manifest being published.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::codec::{self, Packing};
use crate::config::Compression;
use crate::crypt::{Keys, Sealer};
use crate::layout::Form;
use crate::manifest::{self, JobListing, Manifest, SourceEntry};
use crate::storage::{Storage, StorageError};
use std::sync::Arc;

pub use crate::layout::{BLOBS_DIR, LOCKS_DIR, blob_key};
pub const INDEX_FORMAT: u32 = 1;

/// A backup lock older than this belongs to a crashed run and no longer blocks sweeps.
const BACKUP_LOCK_STALE: Duration = Duration::from_secs(24 * 3600);
/// Sweeps stop deleting well before this, so an older sweep lock is a crashed sweep's.
const SWEEP_LOCK_STALE: Duration = Duration::from_secs(15 * 60);
/// A sweep stops (and leaves the rest for next time) after this long.
const SWEEP_BUDGET: Duration = Duration::from_secs(5 * 60);

/// The index of one files source in one backup. Stored as JSON (compressed like the rest
/// of the job), so it can be read with `zstd -dc | jq` when restoring by hand.
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
    /// Sorted by path.
    pub files: Vec<IndexEntry>,
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
    #[error("{0}")]
    Corrupt(String),
    #[error(transparent)]
    Crypt(Box<crate::crypt::CryptError>),
    #[error("cancelled")]
    Cancelled,
}

/// Serialize, compress and (for an encrypting job) encrypt an index.
pub async fn encode_index(
    index: &FileIndex,
    c: Compression,
    sealer: Option<&Arc<Sealer>>,
) -> Result<(Bytes, u64), BlobError> {
    let json = serde_json::to_vec(index)
        .map_err(|e| BlobError::Corrupt(format!("encoding the file index: {e}")))?;
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
    r.read_to_end(&mut out)
        .await
        .map_err(|e| BlobError::Corrupt(format!("encrypting: {e}")))?;
    Ok(Bytes::from(out))
}

/// The clear list of blob keys an encrypted index references (`layout::refs_key`), so a
/// sweep can mark without a key: it reveals only names the blob listing shows anyway.
pub async fn encode_refs(index: &FileIndex, c: Compression) -> Result<Bytes, BlobError> {
    let mut keys: Vec<&str> = index.files.iter().map(|f| f.blob.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    let mut text = keys.join("\n");
    text.push('\n');
    compress_bytes(Bytes::from(text), c, None).await
}

pub async fn read_refs(
    storage: &dyn Storage,
    r: &crate::manifest::StoredRef,
    c: Compression,
) -> Result<Vec<String>, BlobError> {
    let raw = storage.get(&r.key).await?;
    let verified = codec::Verify::new(raw, &r.sha256, r.size, &r.key);
    let mut text = String::new();
    codec::decompress(Box::new(verified), c)
        .read_to_string(&mut text)
        .await
        .map_err(|e| BlobError::Corrupt(format!("reading {}: {e}", r.key)))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
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
    r.read_to_end(&mut out)
        .await
        .map_err(|e| BlobError::Corrupt(format!("compressing: {e}")))?;
    Ok(Bytes::from(out))
}

/// Read a backup's index, checking the stored object against the manifest's sha256.
pub async fn read_index(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<FileIndex, BlobError> {
    let raw = storage.get(&entry.key).await?;
    let verified = codec::Verify::new(raw, &entry.sha256, entry.size, &entry.key);
    let mut r = packing
        .unpack(Box::new(verified), &entry.key)
        .await
        .map_err(|e| BlobError::Crypt(Box::new(e)))?;
    let mut json = Vec::new();
    r.read_to_end(&mut json)
        .await
        .map_err(|e| BlobError::Corrupt(format!("reading {}: {e}", entry.key)))?;
    serde_json::from_slice(&json)
        .map_err(|e| BlobError::Corrupt(format!("file index {} is not valid: {e}", entry.key)))
}

/// Hashes of the blobs a destination holds, from a job listing (keys in the current
/// compression only: the index names one key per content, the same on every destination).
pub fn existing_blobs(listing: &JobListing, job: &str, form: Form) -> HashSet<String> {
    listing
        .blobs
        .iter()
        .filter_map(|o| hash_of_blob(job, &o.key, form))
        .collect()
}

use crate::layout::hash_of_blob;

pub fn lock_key(job: &str, id: &str, kind: LockKind) -> String {
    crate::layout::lock_key(job, id, kind.as_str())
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

/// A lock seen in a listing: its id (the holder's start time) and kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub id: String,
    pub kind: LockKind,
    pub since: DateTime<Utc>,
}

pub fn parse_locks(job: &str, keys: impl IntoIterator<Item = String>) -> Vec<Lock> {
    let prefix = crate::layout::locks_prefix(job);
    keys.into_iter()
        .filter_map(|k| {
            let name = k.strip_prefix(&prefix)?.to_string();
            let (id, kind) = name.rsplit_once('.')?;
            let kind = match kind {
                "backup" => LockKind::Backup,
                "sweep" => LockKind::Sweep,
                "restore" => LockKind::Restore,
                _ => return None,
            };
            let since = crate::layout::parse_id(id)?;
            Some(Lock {
                id: id.to_string(),
                kind,
                since,
            })
        })
        .collect()
}

/// Whether a lock still counts (its holder may be alive).
pub fn is_live(lock: &Lock, now: DateTime<Utc>) -> bool {
    let limit = match lock.kind {
        LockKind::Backup | LockKind::Restore => BACKUP_LOCK_STALE,
        LockKind::Sweep => SWEEP_LOCK_STALE,
    };
    now.signed_duration_since(lock.since)
        .to_std()
        .map(|age| age < limit)
        .unwrap_or(true)
}

async fn list_locks(storage: &dyn Storage, job: &str) -> Result<Vec<Lock>, StorageError> {
    let objs = storage.list(&crate::layout::locks_prefix(job)).await?;
    Ok(parse_locks(job, objs.into_iter().map(|o| o.key)))
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
    storage
        .put_bytes(&lock_key(job, id, LockKind::Backup), lock_body())
        .await?;
    if !reuses_blobs {
        return Ok(());
    }
    let mut waited = false;
    loop {
        let sweeping: Vec<Lock> = list_locks(storage, job)
            .await?
            .into_iter()
            .filter(|l| l.kind == LockKind::Sweep && is_live(l, Utc::now()))
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
    for lock in list_locks(storage, job).await? {
        if lock.id == own_id || lock.kind == LockKind::Sweep || !is_live(&lock, Utc::now()) {
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
    let sweep_id = crate::layout::new_id(Utc::now());
    storage
        .put_bytes(&lock_key(job, &sweep_id, LockKind::Sweep), lock_body())
        .await?;
    let result = sweep_locked(storage, job, own_id, min_age).await;
    unlock(storage, job, &sweep_id, LockKind::Sweep).await;
    result
}

async fn sweep_locked(
    storage: &dyn Storage,
    job: &str,
    own_id: &str,
    min_age: Option<chrono::TimeDelta>,
) -> Result<SweepOutcome, BlobError> {
    let started = std::time::Instant::now();
    let now = Utc::now();
    let listing = JobListing::read(storage, job).await?;
    let locks = parse_locks(job, listing.locks.iter().map(|o| o.key.clone()));
    if let Some(other) = locks
        .iter()
        .find(|l| l.kind == LockKind::Backup && l.id != own_id && is_live(l, now))
    {
        return Ok(SweepOutcome::Postponed {
            by: other.id.clone(),
        });
    }
    // Mark: every blob referenced by a published backup. Any unreadable manifest or index
    // stops the sweep: deleting on incomplete knowledge could destroy a backup.
    let mut referenced: HashSet<String> = HashSet::new();
    for p in listing.published(job) {
        let m: Manifest = match manifest::read_manifest(storage, job, &p.id).await {
            Ok(m) => m,
            // Deleted by a concurrent retention after the listing: references nothing now.
            Err(manifest::ManifestError::Storage(StorageError::NotFound(_))) => continue,
            Err(e) => {
                return Err(BlobError::Corrupt(format!(
                    "sweep stopped, backup {} unreadable: {e}",
                    p.id
                )));
            }
        };
        for e in m.sources.iter().filter(|s| s.files.is_some()) {
            let stop = |err| BlobError::Corrupt(format!("sweep stopped, backup {}: {err}", p.id));
            match (&e.refs, m.encryption.is_some()) {
                (Some(r), _) => {
                    referenced.extend(read_refs(storage, r, m.compression).await.map_err(stop)?)
                }
                (None, true) => {
                    return Err(BlobError::Corrupt(format!(
                        "sweep stopped, backup {}: encrypted files source {} lists no blob references",
                        p.id, e.name
                    )));
                }
                (None, false) => {
                    let index = read_index(storage, e, &Packing::of(&m, None))
                        .await
                        .map_err(stop)?;
                    referenced.extend(index.files.into_iter().map(|f| f.blob));
                }
            }
        }
    }
    let young = |o: &crate::storage::ObjectMeta| {
        min_age.is_some_and(|min| o.modified.is_none_or(|t| Utc::now() - t < min))
    };
    let garbage: Vec<String> = listing
        .blobs
        .iter()
        .filter(|o| !young(o))
        .map(|o| o.key.clone())
        .filter(|k| !referenced.contains(k) && !k.ends_with(crate::storage::local::PARTIAL_SUFFIX))
        .collect();
    let kept = listing.blobs.len() - garbage.len();
    let mut deleted = 0;
    for batch in garbage.chunks(1000) {
        if started.elapsed() > SWEEP_BUDGET {
            break;
        }
        storage.delete(batch).await?;
        deleted += batch.len();
    }
    Ok(SweepOutcome::Swept {
        deleted,
        kept,
        left: garbage.len() - deleted,
    })
}

/// The previous backup's index of this source, for `immutable` sources: path → entry.
pub async fn previous_index(
    storage: &dyn Storage,
    listing: &JobListing,
    job: &str,
    source: &str,
    keys: Option<Arc<Keys>>,
) -> Option<HashMap<String, IndexEntry>> {
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
        if m.encryption.is_some() && keys.is_none() {
            // Without the identity the index cannot be read: every file is hashed again
            // (nothing is uploaded again: blob names still match).
            return None;
        }
        return match read_index(storage, e, &Packing::of(&m, keys.clone())).await {
            Ok(ix) => Some(ix.files.into_iter().map(|f| (f.path.clone(), f)).collect()),
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
        let keys = vec![
            "app/locks/20261122T115900.000Z.sweep".to_string(),
            "app/locks/20261122T100000.000Z.sweep".to_string(),
            "app/locks/20261121T130000.000Z.backup".to_string(),
            "app/locks/20261120T120000.000Z.backup".to_string(),
            "app/locks/garbage".to_string(),
        ];
        let locks = parse_locks("app", keys);
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
}
