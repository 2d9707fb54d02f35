//! The manifest that publishes a backup, and listings of a job's backups. Key names are in
//! `crate::layout`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::layout::{self, KeyKind};
use crate::storage::{ObjectMeta, Storage, StorageError};

pub const FORMAT_VERSION: u32 = 1;

pub use crate::layout::{
    backup_prefix, compression_suffix, index_key, manifest_key, new_id, object_key, parse_id,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub job: String,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub compression: Compression,
    /// "age" when every object holding data is an age file (`crate::crypt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    pub sources: Vec<SourceEntry>,
    /// e.g. {"stowage": "0.1.0", "pg_dump": "pg_dump (PostgreSQL) 15.18"}
    pub tools: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// What the object holds once decompressed, e.g. "pg_dump custom".
    pub format: String,
    /// Relative to the destination's root; the same on every destination.
    pub key: String,
    /// Bytes stored (after compression).
    pub size: u64,
    /// Bytes produced by the source (before compression).
    pub raw_size: u64,
    /// sha256 of the stored object, hex.
    pub sha256: String,
    /// Databases: tables dumped but skipped by default on restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_tables: Vec<String>,
    /// Databases: the dump tool and its version, e.g. "pg_dump (PostgreSQL) 15.18".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Databases: the server's version, when the engine can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// Databases: the tables or collections the dump holds, so `list` (and the healer) can
    /// tell which backup has an object without downloading it. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<String>>,
    /// files: what the index references and what this run uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FilesStats>,
    /// Files sources: the clear list of blob keys the index references, so blob sweeps
    /// need no key and no index (encrypted files sources always have one; others since
    /// index format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refs: Option<StoredRef>,
    /// Databases: rows per table (or collection) in the dump's snapshot, when the engine
    /// counts them; a drill compares a restore against these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<BTreeMap<String, u64>>,
}

/// A further stored object of a source, with what checks it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StoredRef {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FilesStats {
    /// Files in the index.
    pub count: u64,
    /// Their total size: what a restore into an empty directory writes.
    pub bytes: u64,
    /// Files whose content no destination had yet (uploaded by this run).
    pub new_files: u64,
    /// Raw size of that new content.
    pub new_bytes: u64,
    /// Bytes this run stored for them (compressed), per destination.
    pub uploaded: u64,
}

impl Manifest {
    /// How this backup's objects are stored.
    pub fn form(&self) -> layout::Form {
        layout::Form {
            compression: self.compression,
            encrypted: self.encryption.is_some(),
        }
    }
    /// Bytes this backup added to a destination (shared blobs it reuses not counted).
    pub fn stored_size(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.size + s.files.as_ref().map_or(0, |f| f.uploaded))
            .sum()
    }
    /// Bytes the sources produced (for files: the size of the tree).
    pub fn raw_size(&self) -> u64 {
        self.sources
            .iter()
            .map(|s| s.files.as_ref().map_or(s.raw_size, |f| f.bytes))
            .sum()
    }
}

/// A published backup as seen in one destination's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub time: DateTime<Utc>,
}

/// What a destination holds for one job, from a single listing.
#[derive(Debug, Default)]
pub struct JobListing {
    /// id → every key under that backup's prefix
    pub backups: BTreeMap<String, Vec<ObjectMeta>>,
    /// Content-addressed file blobs shared by the job's backups (`<job>/blobs/…`).
    pub blobs: Vec<ObjectMeta>,
    /// Lock objects of running backups and sweeps (`<job>/locks/…`).
    pub locks: Vec<ObjectMeta>,
}

impl JobListing {
    /// Everything under `<job>/`: backups, blobs and locks.
    pub async fn read(storage: &dyn Storage, job: &str) -> Result<JobListing, StorageError> {
        let objects = storage.list(&layout::job_prefix(job)).await?;
        Ok(Self::from_objects(job, objects))
    }

    /// Backups only. Ids start with a digit and sort before `blobs/` and `locks/`, so the
    /// listing stops before paging through thousands of file blobs.
    pub async fn read_backups(
        storage: &dyn Storage,
        job: &str,
    ) -> Result<JobListing, StorageError> {
        let objects = storage
            .list_until(&layout::job_prefix(job), &layout::backups_end(job))
            .await?;
        Ok(Self::from_objects(job, objects))
    }

    fn from_objects(job: &str, objects: Vec<ObjectMeta>) -> JobListing {
        let mut listing = JobListing::default();
        for o in objects {
            match layout::classify(job, &o.key) {
                KeyKind::Blob => listing.blobs.push(o),
                KeyKind::Lock => listing.locks.push(o),
                KeyKind::Backup(id) => {
                    let id = id.to_string();
                    listing.backups.entry(id).or_default().push(o)
                }
                KeyKind::Other => {}
            }
        }
        listing
    }

    /// Published backups (those with a manifest), newest first.
    pub fn published(&self, job: &str) -> Vec<Published> {
        let mut out: Vec<Published> = self
            .backups
            .iter()
            .filter(|(id, objs)| {
                let mk = manifest_key(job, id);
                objs.iter().any(|o| o.key == mk)
            })
            .filter_map(|(id, _)| {
                parse_id(id).map(|time| Published {
                    id: id.clone(),
                    time,
                })
            })
            .collect();
        out.sort_by(|a, b| b.id.cmp(&a.id));
        out
    }

    pub fn keys_of(&self, id: &str) -> Vec<String> {
        self.backups
            .get(id)
            .map(|v| v.iter().map(|o| o.key.clone()).collect())
            .unwrap_or_default()
    }
}

pub async fn read_manifest(
    storage: &dyn Storage,
    job: &str,
    id: &str,
) -> Result<Manifest, ManifestError> {
    let key = manifest_key(job, id);
    let bytes = storage.get_bytes(&key).await?;
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| ManifestError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    // Every key a restore, verify or drill will read: under the job's prefix, nothing
    // that could leave the destination's root.
    for s in &m.sources {
        for k in std::iter::once(&s.key).chain(s.refs.as_ref().map(|r| &r.key)) {
            crate::layout::check_job_key(job, k).map_err(|reason| ManifestError::Corrupt {
                key: key.clone(),
                reason,
            })?;
        }
    }
    Ok(m)
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("manifest {key} is not valid: {reason}")]
    Corrupt { key: String, reason: String },
}

/// Delete a backup so that no crash can leave a half-deleted backup looking valid:
/// the manifest goes first (unpublishing it), then the data.
pub async fn delete_backup(
    storage: &dyn Storage,
    listing: &JobListing,
    job: &str,
    id: &str,
) -> Result<(), StorageError> {
    let mk = manifest_key(job, id);
    storage.delete(std::slice::from_ref(&mk)).await?;
    let rest: Vec<String> = listing
        .keys_of(id)
        .into_iter()
        .filter(|k| *k != mk)
        .collect();
    if !rest.is_empty() {
        storage.delete(&rest).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_by_time_and_round_trip() {
        let a = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("valid");
        let b = a + chrono::Duration::milliseconds(1);
        let (ia, ib) = (new_id(a), new_id(b));
        assert_eq!(ia, "20260102T030405.000Z");
        assert!(ia < ib);
        assert_eq!(parse_id(&ib), Some(b));
        assert_eq!(parse_id("garbage"), None);
    }

    #[test]
    fn keys() {
        assert_eq!(
            object_key("replay", "X", "db", "pgdump", Compression::Zstd),
            "replay/X/db.pgdump.zst"
        );
        assert_eq!(manifest_key("replay", "X"), "replay/X/manifest.json");
    }
}
