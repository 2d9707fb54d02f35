//! The storage layout: every key stowage writes, in one place. Storages know bytes and
//! keys, not what they mean; the manifest, blob and lock code build their keys here.
//!
//! ```text
//! <root>/<job>/<id>/<source>.<ext>[.zst|.gz][.age]   data, one object per database source
//! <root>/<job>/<id>/<source>.files.json[.zst][.age]  files source: index of path → content hash
//! <root>/<job>/<id>/<source>.blobs.txt[.zst]         files source: the blob keys its index
//!                                                    references, in clear, for blob sweeps
//! <root>/<job>/<id>/manifest.json                    written last: the backup exists once it does
//! <root>/<job>/blobs/<aa>/<name>[.zst][.age]         file contents, shared by all backups of the job
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

/// How an object is stored: its compression, and whether it is an age file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    pub compression: Compression,
    pub encrypted: bool,
}

impl From<Compression> for Form {
    fn from(compression: Compression) -> Form {
        Form {
            compression,
            encrypted: false,
        }
    }
}

impl Form {
    pub fn suffix(self) -> String {
        format!(
            "{}{}",
            compression_suffix(self.compression),
            if self.encrypted {
                crate::crypt::SUFFIX
            } else {
                ""
            }
        )
    }
}

pub fn compression_suffix(c: Compression) -> &'static str {
    match c {
        Compression::Zstd => ".zst",
        Compression::Gzip => ".gz",
        Compression::None => "",
    }
}

pub fn object_key(job: &str, id: &str, source: &str, ext: &str, form: impl Into<Form>) -> String {
    format!("{job}/{id}/{source}.{ext}{}", form.into().suffix())
}

/// The index of a files source: `<job>/<id>/<source>.files.json.zst`.
pub fn index_key(job: &str, id: &str, source: &str, form: impl Into<Form>) -> String {
    object_key(job, id, source, "files.json", form)
}

/// The clear list of blob keys a files source's index references (one a line, in index
/// order; encrypted jobs too, so sweeps need no key).
pub fn refs_key(job: &str, id: &str, source: &str, c: Compression) -> String {
    object_key(job, id, source, "blobs.txt", c)
}

/// `name`: the content's sha256, or its keyed name when the job has a blob key.
pub fn blob_key(job: &str, name: &str, form: impl Into<Form>) -> String {
    let fan = name.get(..2).unwrap_or("00");
    format!("{job}/{BLOBS_DIR}/{fan}/{name}{}", form.into().suffix())
}

/// The name a blob key carries, if it is a blob stored in `form`.
pub fn hash_of_blob(job: &str, key: &str, form: impl Into<Form>) -> Option<String> {
    let rest = key.strip_prefix(&format!("{job}/{BLOBS_DIR}/"))?;
    let (_, name) = rest.split_once('/')?;
    let hash = name.strip_suffix(form.into().suffix().as_str())?;
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
