//! S3 Object Lock as backups see it: which backups are still locked (so retention plans
//! around them), and keeping a reused file blob locked as long as the newest backup that
//! references it.
//!
//! A file blob is content-addressed: uploaded once, then referenced by every later backup
//! of the same content. Its own lock ends `days` after that first upload, so a backup
//! made later would hold a blob whose lock ends before the backup's, and whoever can
//! delete object versions could destroy that backup while its manifest is still locked.
//! So a backup extends the lock of every blob it references to its own retain-until date
//! before its manifest is published. That costs one PutObjectRetention per referenced
//! blob per backup (a request, not a transfer).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::config::ObjectLock;
use crate::repo::blobs::BlobError;
use crate::repo::index;
use crate::repo::manifest::Manifest;
use crate::repo::packing::Packing;
use crate::storage::{Storage, StorageError};

/// Extension requests in flight at once, per destination.
const IN_FLIGHT: usize = 16;
/// Blob keys gathered before they are sent.
const BATCH: usize = 1000;

/// Until when each backup of `doomed` (id, time) is locked, where it is: the date its
/// manifest reports (written last, so its lock is the latest of the backup's objects), or,
/// on a destination with `object_lock`, `days` after the backup started if that is later.
/// The estimate covers a store that hides the lock from HeadObject (AWS does, to a caller
/// without s3:GetObjectRetention) at the cost of keeping a backup written before the lock
/// was configured a little longer.
pub async fn read_locks(
    storage: &dyn Storage,
    job: &str,
    doomed: &[(&str, DateTime<Utc>)],
    configured: Option<ObjectLock>,
) -> Result<Vec<(String, DateTime<Utc>)>, StorageError> {
    let mut out = Vec::new();
    for (id, time) in doomed {
        let key = crate::repo::layout::manifest_key(job, id);
        let reported = storage.locked_until(&key).await?;
        let assumed = configured.map(|l| l.until(*time));
        if let Some(until) = reported.max(assumed) {
            out.push((id.to_string(), until));
        }
    }
    Ok(out)
}

/// Lock every blob the files sources of `m` reference until at least `until`; returns
/// how many blob keys were sent.
pub async fn extend_blob_locks(
    storage: &dyn Storage,
    m: &Manifest,
    until: DateTime<Utc>,
) -> Result<u64, BlobError> {
    let mut sent = 0u64;
    for e in m.sources.iter().filter(|s| s.files.is_some()) {
        let mut keys: Vec<String> = Vec::new();
        match &e.refs {
            // An encrypting job's clear list of references (its index is sealed).
            Some(r) => {
                index::for_each_ref(storage, r, m.compression, &mut |k| keys.push(k.to_string()))
                    .await?;
                for chunk in keys.chunks(BATCH) {
                    sent += extend(storage, chunk, until).await?;
                }
            }
            None => {
                let (_, mut entries) =
                    index::open_index(storage, e, &Packing::as_stored(m, None)).await?;
                while let Some(f) = entries.next().await? {
                    keys.push(f.blob);
                    if keys.len() >= BATCH {
                        sent += extend(storage, &keys, until).await?;
                        keys.clear();
                    }
                }
                sent += extend(storage, &keys, until).await?;
            }
        }
    }
    Ok(sent)
}

async fn extend(
    storage: &dyn Storage,
    keys: &[String],
    until: DateTime<Utc>,
) -> Result<u64, StorageError> {
    // Files of equal content share a blob: once is enough.
    let unique: HashSet<&str> = keys
        .iter()
        .map(String::as_str)
        .filter(|k| !k.is_empty())
        .collect();
    let unique: Vec<&str> = unique.into_iter().collect();
    for group in unique.chunks(IN_FLIGHT) {
        let results =
            futures::future::join_all(group.iter().map(|k| storage.extend_lock(k, until))).await;
        for r in results {
            r?;
        }
    }
    Ok(unique.len() as u64)
}
