//! The storage layout and the manifest that publishes a backup.
//!
//! ```text
//! <root>/<job>/<id>/<source>.<ext>[.zst|.gz]   data, one object per source
//! <root>/<job>/<id>/<source>.files.json[.zst]  files source: index of path → content hash
//! <root>/<job>/<id>/manifest.json              written last: the backup exists once it does
//! <root>/<job>/blobs/<aa>/<sha256>[.zst]       file contents, shared by all backups of the job
//! <root>/<job>/locks/<id>.backup|.sweep        a backup or a blob sweep in progress
//! ```
//! `<id>` is the UTC start time (`20261122T030000.123Z`), so ids sort by time as strings.
//! A directory/prefix without `manifest.json` is a failed or running backup: `list`,
//! `restore` and retention never see it.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Compression;
use crate::storage::{ObjectMeta, Storage, StorageError};

pub const MANIFEST: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;
const ID_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

pub fn new_id(now: DateTime<Utc>) -> String {
    now.format(ID_FORMAT).to_string()
}

pub fn parse_id(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, ID_FORMAT)
        .ok()
        .map(|n| n.and_utc())
}

pub fn backup_prefix(job: &str, id: &str) -> String {
    format!("{job}/{id}/")
}

pub fn manifest_key(job: &str, id: &str) -> String {
    format!("{job}/{id}/{MANIFEST}")
}

pub fn compression_suffix(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => ".zst",
        Compression::Gzip => ".gz",
        Compression::None => "",
    }
}

pub fn object_key(job: &str, id: &str, source: &str, ext: &str, c: Compression) -> String {
    format!("{job}/{id}/{source}.{ext}{}", compression_suffix(c))
}

/// The index of a files source: `<job>/<id>/<source>.files.json.zst`.
pub fn index_key(job: &str, id: &str, source: &str, c: Compression) -> String {
    object_key(job, id, source, "files.json", c)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub format: u32,
    pub job: String,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub compression: Compression,
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
        let objects = storage.list(&format!("{job}/")).await?;
        Ok(Self::from_objects(job, objects))
    }

    /// Backups only. Ids start with a digit and sort before `blobs/` and `locks/`, so the
    /// listing stops before paging through thousands of file blobs.
    pub async fn read_backups(
        storage: &dyn Storage,
        job: &str,
    ) -> Result<JobListing, StorageError> {
        let objects = storage
            .list_until(&format!("{job}/"), &format!("{job}/a"))
            .await?;
        Ok(Self::from_objects(job, objects))
    }

    fn from_objects(job: &str, objects: Vec<ObjectMeta>) -> JobListing {
        let mut listing = JobListing::default();
        for o in objects {
            let rest = &o.key[job.len() + 1..];
            if let Some((dir, _)) = rest.split_once('/') {
                match dir {
                    crate::blobs::BLOBS_DIR => listing.blobs.push(o),
                    crate::blobs::LOCKS_DIR => listing.locks.push(o),
                    id => listing.backups.entry(id.to_string()).or_default().push(o),
                }
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
    serde_json::from_slice(&bytes).map_err(|e| ManifestError::Corrupt {
        key,
        reason: e.to_string(),
    })
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
