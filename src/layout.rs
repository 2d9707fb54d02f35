//! The storage layout: every key stowage writes, in one place. Storages know bytes and
//! keys, not what they mean; the manifest, blob and lock code build their keys here.
//!
//! ```text
//! <root>/<job>/<id>/<source>.<ext>[.zst|.gz]   data, one object per database source
//! <root>/<job>/<id>/<source>.files.json[.zst]  files source: index of path → content hash
//! <root>/<job>/<id>/manifest.json              written last: the backup exists once it does
//! <root>/<job>/blobs/<aa>/<sha256>[.zst]       file contents, shared by all backups of the job
//! <root>/<job>/locks/<id>.backup|.sweep        a backup or a blob sweep in progress
//! ```
//! `<id>` is the UTC start time (`20261122T030000.123Z`), so ids sort by time as strings, and
//! before `blobs/` and `locks/` (digits sort before letters): a listing of backups can stop
//! at `<job>/a`. A directory/prefix without `manifest.json` is a failed or running backup:
//! `list`, `restore` and retention never see it.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::config::Compression;

pub const MANIFEST: &str = "manifest.json";
pub const BLOBS_DIR: &str = "blobs";
pub const LOCKS_DIR: &str = "locks";
const ID_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

pub fn new_id(now: DateTime<Utc>) -> String {
    now.format(ID_FORMAT).to_string()
}

pub fn parse_id(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, ID_FORMAT)
        .ok()
        .map(|n| n.and_utc())
}

/// Everything of a job: backups, blobs and locks.
pub fn job_prefix(job: &str) -> String {
    format!("{job}/")
}

/// Listing from [`job_prefix`] up to this key returns backups only.
pub fn backups_end(job: &str) -> String {
    format!("{job}/a")
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

pub fn blob_key(job: &str, sha256: &str, c: Compression) -> String {
    let fan = sha256.get(..2).unwrap_or("00");
    format!("{job}/{BLOBS_DIR}/{fan}/{sha256}{}", compression_suffix(c))
}

/// The content hash a blob key names, if it is one.
pub fn hash_of_blob(job: &str, key: &str, c: Compression) -> Option<String> {
    let rest = key.strip_prefix(&format!("{job}/{BLOBS_DIR}/"))?;
    let (_, name) = rest.split_once('/')?;
    let hash = name.strip_suffix(compression_suffix(c))?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash.to_string())
}

pub fn locks_prefix(job: &str) -> String {
    format!("{job}/{LOCKS_DIR}/")
}

/// `<job>/locks/<id>.<kind>`, kind "backup" or "sweep".
pub fn lock_key(job: &str, id: &str, kind: &str) -> String {
    format!("{job}/{LOCKS_DIR}/{id}.{kind}")
}

/// What a key under a job's prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Blob,
    Lock,
    /// An object of the backup with this id.
    Backup(&'a str),
    Other,
}

pub fn classify<'a>(job: &str, key: &'a str) -> KeyKind<'a> {
    let Some(rest) = key.strip_prefix(job).and_then(|r| r.strip_prefix('/')) else {
        return KeyKind::Other;
    };
    match rest.split_once('/') {
        Some((BLOBS_DIR, _)) => KeyKind::Blob,
        Some((LOCKS_DIR, _)) => KeyKind::Lock,
        Some((id, _)) => KeyKind::Backup(id),
        None => KeyKind::Other,
    }
}
