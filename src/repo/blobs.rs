//! Content-addressed file storage shared by all backups of a job, and the sweep that deletes
//! what no published backup references (the file index is in `index`, locks in `locks`).
//!
//! Keys (`crate::repo::layout`): blobs at `<job>/blobs/<aa>/<sha256>[.zst|.gz]` (sha256 of the
//! raw bytes).
//!
//! The lock protocol (both sides write their lock, then list the others'): a sweep that
//! sees a live backup lock postpones itself; a backup that sees a live sweep lock waits
//! for it before listing which blobs exist. With read-after-write consistent listings (S3
//! since 2020, local directories) at least one side sees the other, so a blob is never
//! deleted between a backup deciding to reuse it and the backup's manifest being published.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::codec;
use crate::codec::Compression;
use crate::crypt::Sealer;
use crate::repo::layout::Form;
use crate::repo::manifest::{self, JobListing, Manifest, SourceEntry};
use crate::repo::packing::Packing;
use crate::storage::{Storage, StorageError};
use std::sync::Arc;

use super::index::{for_each_ref, open_index};
use super::locks::{LockKind, is_live, list_locks, lock_body, lock_key, refreshing, unlock};

use crate::repo::layout::BLOBS_DIR;

/// A sweep stops (and leaves the rest for next time) after this long.
const SWEEP_BUDGET: Duration = Duration::from_secs(5 * 60);

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

impl From<super::OpenError> for BlobError {
    /// A stored object that could not be opened keeps the kind of what failed.
    fn from(e: super::OpenError) -> BlobError {
        match e {
            super::OpenError::Storage(e) => BlobError::Storage(e),
            super::OpenError::Unpack(e) => BlobError::Crypt(Box::new(e)),
        }
    }
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

/// The youngest an unreferenced blob may be swept on `destination`: under its class's
/// minimum storage duration a delete saves nothing, and under its Object Lock a delete
/// would only hide the blob behind a delete marker.
pub fn sweep_min_age(destination: &crate::config::Destination) -> Option<chrono::TimeDelta> {
    destination
        .min_storage()
        .map(|(_, days)| days)
        .into_iter()
        .chain(destination.object_lock().map(|l| l.days))
        .max()
        .map(|days| chrono::TimeDelta::days(days.into()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::layout::blob_key;

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
}
