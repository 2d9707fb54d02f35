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
//! <root>/<job>/wal/<source>/<name>[.zst|.gz][.age]   a WAL segment or timeline history file
//! <root>/<job>/wal/<source>/index/<name>.json        its record: sizes and sha256 (repo/wal.rs)
//! <root>/<job>/wal/<source>/partial/<name>.<ms>[…]   the segment being written, as last shipped
//! <root>/<job>/wal/<source>/partial.json             the record pointing at it
//! ```
//! `<id>` is the UTC start time (`20261122T030000.123Z`), so ids sort by time as strings, and
//! before `blobs/` and `locks/` (digits sort before letters): a listing of backups can stop
//! at `<job>/a`. A directory/prefix without `manifest.json` is a failed or running backup:
//! `list`, `restore` and retention never see it.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::codec::Compression;
use crate::storage::bad_part;
use crate::storage::check_key;

pub const MANIFEST: &str = "manifest.json";
pub const BLOBS_DIR: &str = "blobs";
pub const LOCKS_DIR: &str = "locks";
/// Continuous WAL of a job's sources: after `blobs/` and `locks/`, so backup listings that
/// stop at `<job>/a` never page through it.
pub const WAL_DIR: &str = "wal";
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
pub(super) fn job_prefix(job: &str) -> String {
    format!("{job}/")
}

/// Listing from [`job_prefix`] up to this key returns backups only.
pub(super) fn backups_end(job: &str) -> String {
    format!("{job}/a")
}

pub(super) fn backup_prefix(job: &str, id: &str) -> String {
    format!("{job}/{id}/")
}

pub(crate) fn manifest_key(job: &str, id: &str) -> String {
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
    /// How the job stores new objects.
    pub fn of(job: &crate::config::Job) -> Form {
        Form {
            compression: job.compression,
            encrypted: job.encryption.is_some(),
        }
    }

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

pub(super) fn object_key(
    job: &str,
    id: &str,
    source: &str,
    ext: &str,
    form: impl Into<Form>,
) -> String {
    format!("{job}/{id}/{source}.{ext}{}", form.into().suffix())
}

/// The index of a files source: `<job>/<id>/<source>.files.json.zst`.
pub(super) fn index_key(job: &str, id: &str, source: &str, form: impl Into<Form>) -> String {
    object_key(job, id, source, "files.json", form)
}

/// The clear list of blob keys a files source's index references (one a line, in index
/// order; encrypted jobs too, so sweeps need no key).
pub(super) fn refs_key(job: &str, id: &str, source: &str, c: Compression) -> String {
    object_key(job, id, source, "blobs.txt", c)
}

/// `name`: the content's sha256, or its keyed name when the job has a blob key.
pub(super) fn blob_key(job: &str, name: &str, form: impl Into<Form>) -> String {
    let fan = name.get(..2).unwrap_or("00");
    format!("{job}/{BLOBS_DIR}/{fan}/{name}{}", form.into().suffix())
}

/// The name a blob key carries, if it is a blob stored in `form`.
pub(super) fn hash_of_blob(job: &str, key: &str, form: impl Into<Form>) -> Option<String> {
    let rest = key.strip_prefix(&format!("{job}/{BLOBS_DIR}/"))?;
    let (_, name) = rest.split_once('/')?;
    let hash = name.strip_suffix(form.into().suffix().as_str())?;
    (hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hash.to_string())
}

pub(super) fn locks_prefix(job: &str) -> String {
    format!("{job}/{LOCKS_DIR}/")
}

/// `<job>/locks/<id>.<kind>`, kind "backup" or "sweep".
pub(super) fn lock_key(job: &str, id: &str, kind: &str) -> String {
    format!("{job}/{LOCKS_DIR}/{id}.{kind}")
}

/// The WAL of every source of `job`: `<job>/wal/`.
pub(super) fn wal_root(job: &str) -> String {
    format!("{job}/{WAL_DIR}/")
}

/// The WAL of `source` (`<job>/wal/<source>/`): segments, history files and their records.
pub(super) fn wal_prefix(job: &str, source: &str) -> String {
    format!("{}{source}/", wal_root(job))
}

/// A shipped segment or history file: `<job>/wal/<source>/<name><suffix>`.
pub(super) fn wal_key(job: &str, source: &str, name: &str, form: Form) -> String {
    format!("{}{name}{}", wal_prefix(job, source), form.suffix())
}

pub(super) fn wal_index_prefix(job: &str, source: &str) -> String {
    format!("{}index/", wal_prefix(job, source))
}

/// The record of a shipped file: `<job>/wal/<source>/index/<name>.json`.
pub(super) fn wal_index_key(job: &str, source: &str, name: &str) -> String {
    format!("{}{name}.json", wal_index_prefix(job, source))
}

/// The name a key of [`wal_index_prefix`] records, when it is one.
pub(super) fn wal_name_of_index(job: &str, source: &str, key: &str) -> Option<String> {
    let name = key
        .strip_prefix(&wal_index_prefix(job, source))?
        .strip_suffix(".json")?;
    is_wal_name(name).then(|| name.to_string())
}

pub(super) fn wal_partial_prefix(job: &str, source: &str) -> String {
    format!("{}partial/", wal_prefix(job, source))
}

/// One shipped state of the segment being written: `partial/<name>.<unix millis><suffix>`
/// (a new key each time, so the pointer never names an object being overwritten).
pub(super) fn wal_partial_key(
    job: &str,
    source: &str,
    name: &str,
    millis: i64,
    form: Form,
) -> String {
    format!(
        "{}{name}.{millis}{}",
        wal_partial_prefix(job, source),
        form.suffix()
    )
}

/// The record of the last shipped partial segment: `<job>/wal/<source>/partial.json`.
pub(super) fn wal_pointer_key(job: &str, source: &str) -> String {
    format!("{}partial.json", wal_prefix(job, source))
}

/// Every form an object may be stored in, for reading back what a record names.
const FORMS: [Form; 6] = [
    Form {
        compression: Compression::Zstd,
        encrypted: false,
    },
    Form {
        compression: Compression::Zstd,
        encrypted: true,
    },
    Form {
        compression: Compression::Gzip,
        encrypted: false,
    },
    Form {
        compression: Compression::Gzip,
        encrypted: true,
    },
    Form {
        compression: Compression::None,
        encrypted: false,
    },
    Form {
        compression: Compression::None,
        encrypted: true,
    },
];

/// The form of `key` if it is the key of WAL file `name` of `source` (whole, or a shipped
/// partial state); `None` for any other key: a record never makes stowage read elsewhere.
pub(super) fn wal_form_of(job: &str, source: &str, name: &str, key: &str) -> Option<Form> {
    let whole = key
        .strip_prefix(&wal_prefix(job, source))
        .and_then(|r| r.strip_prefix(name))
        .and_then(|suffix| FORMS.into_iter().find(|f| f.suffix() == suffix));
    if whole.is_some() {
        return whole;
    }
    let rest = key
        .strip_prefix(&wal_partial_prefix(job, source))?
        .strip_prefix(name)?
        .strip_prefix('.')?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let suffix = &rest[digits..];
    FORMS.into_iter().find(|f| f.suffix() == suffix)
}

/// A name PostgreSQL gives WAL files that are shipped: a segment (24 hex digits) or a
/// timeline history file (8 hex digits, `.history`).
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    hex(name, 24) || name.strip_suffix(".history").is_some_and(|t| hex(t, 8))
}

/// What a key under a job's prefix is.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyKind<'a> {
    Blob,
    Lock,
    /// Continuous WAL (`<job>/wal/…`): no backup's, never removed with one.
    Wal,
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
        Some((WAL_DIR, _)) => KeyKind::Wal,
        Some((id, _)) => KeyKind::Backup(id),
        None => KeyKind::Other,
    }
}

/// [`check_key`], and the key is under the job's prefix (`<job>/`): a manifest or index of
/// one job never makes stowage read another job's objects.
pub fn check_job_key(job: &str, key: &str) -> Result<(), String> {
    check_key(key)?;
    if !key.starts_with(&job_prefix(job)) {
        return Err(format!(
            "refusing object key \"{}\": it is not under job {job}'s prefix \"{}\"",
            key.escape_debug(),
            job_prefix(job)
        ));
    }
    Ok(())
}

/// A file's path in a files index: relative to the restored directory, '/' separated,
/// with no absolute path, "..", empty or "." part, nor NUL.
pub fn check_index_path(path: &str) -> Result<(), String> {
    match bad_part(path) {
        None => Ok(()),
        Some(why) => Err(format!(
            "unsafe path \"{}\": {why}; paths in an index are relative to the restored directory",
            path.escape_debug()
        )),
    }
}

/// One entry of the files index stored at `index_key` (`<job>/<id>/…`): its path, and its
/// blob key under the same job.
pub fn check_index_entry(index_key: &str, path: &str, blob: &str) -> Result<(), String> {
    let job = index_key.split('/').next().unwrap_or_default();
    check_index_path(path)
        .and_then(|()| check_job_key(job, blob))
        .map_err(|e| {
            format!(
                "file index {index_key}: {e}; stowage never writes such an entry (was the index altered on the destination?): restore another backup, or from another destination with --from"
            )
        })
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn keys_and_paths_from_storage_stay_beneath() {
        assert!(check_job_key("app", "app/20261122T030000.000Z/db.pgdump.zst").is_ok());
        assert!(
            check_job_key("app", &blob_key("app", &"ab".repeat(32), Compression::Zstd)).is_ok()
        );
        for bad in [
            "",
            "/etc/passwd",
            "app/../other/x",
            "app/./x",
            "app//x",
            "app/x/",
            "app/x\0y",
            "..",
        ] {
            let e = check_key(bad).expect_err(bad);
            assert!(e.contains("refusing object key"), "{e}");
        }
        let e = check_job_key("app", "other/blobs/ab/x").expect_err("other job");
        assert!(e.contains("\"app/\""), "{e}");
        assert!(check_index_path("a/b.jpg").is_ok());
        assert!(check_index_path(".hidden/..x").is_ok());
        for bad in [
            "../escape",
            "/abs/path",
            "a/../b",
            "a//b",
            "",
            "a/./b",
            "a\0",
        ] {
            let e = check_index_path(bad).expect_err(bad);
            assert!(e.starts_with("unsafe path"), "{e}");
        }
        let e = check_index_entry("app/X/u.files.json.zst", "ok", "../../etc/shadow")
            .expect_err("blob outside");
        assert!(
            e.contains("app/X/u.files.json.zst") && e.contains("../../etc/shadow"),
            "{e}"
        );
    }
}
