//! The manifest that publishes a backup, and listings of a job's backups. Key names are in
//! `crate::repo::layout`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Compression;
use crate::repo::layout::{self, KeyKind};
use crate::storage::{ObjectMeta, Storage, StorageError};

pub const FORMAT_VERSION: u32 = 1;

pub(crate) use crate::repo::layout::manifest_key;
pub use crate::repo::layout::{compression_suffix, new_id, parse_id};

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
    /// The MAC under the job's `auth_key_file` (absent without one). Written by [`signed`]
    /// over everything else, never set by hand.
    #[serde(rename = "auth", default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ManifestAuth>,
    /// What the MAC must cover, kept from reading the stored manifest.
    #[serde(skip)]
    pub proof: Proof,
}

/// `"auth": {"scheme": "hmac-sha256", "key_id": "1a2b3c4d", "mac": "<64 hex>"}`: HMAC-SHA256
/// under the job's key over the manifest's canonical JSON (every field but `auth`, keys
/// sorted, no whitespace; see [`canonical`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestAuth {
    pub scheme: String,
    /// First 8 hex digits of the key's sha256.
    pub key_id: String,
    /// hex
    pub mac: String,
}

/// The only scheme: HMAC-SHA256.
pub const AUTH_SCHEME: &str = "hmac-sha256";

/// The canonical bytes of a manifest as it was stored: the MAC is checked against these,
/// not against a re-serialization, so fields this version does not know are covered too.
#[derive(Clone, Default, PartialEq)]
pub struct Proof(Option<std::sync::Arc<[u8]>>);

impl std::fmt::Debug for Proof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(b) => write!(f, "Proof({} bytes)", b.len()),
            None => f.write_str("Proof(none)"),
        }
    }
}

/// Whether a manifest was written by a holder of the job's `auth_key_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// The job has no auth key: nothing to check.
    NotChecked,
    /// The MAC matches under the job's key.
    Authentic,
    /// No MAC: written without a key (before `auth_key_file` was set), or by someone else.
    Unsigned,
    /// Signed with a key of another id.
    OtherKey { key_id: String },
    /// A MAC under the job's key id that does not match: edited after it was written.
    Forged,
}

impl Authenticity {
    /// Why a manifest fails `key`, for messages.
    pub fn describe(&self, key: Option<&crate::crypt::AuthKey>) -> String {
        let (from, ours) = key.map_or(("-", "-"), |k| (k.from(), k.id()));
        match self {
            Authenticity::NotChecked => "not checked (the job has no auth_key_file)".to_string(),
            Authenticity::Authentic => format!("authenticated by {from}"),
            Authenticity::Unsigned => format!(
                "not authenticated: it carries no MAC (\"auth\"), and the job authenticates its manifests with {from}"
            ),
            Authenticity::OtherKey { key_id } => format!(
                "not authenticated: it was signed with another key (key id {key_id}; the job's key, {from}, has key id {ours})"
            ),
            Authenticity::Forged => format!(
                "forged or damaged: its MAC does not match its content under the job's key, {from} (key id {ours}); it was changed after it was written"
            ),
        }
    }

    /// True unless the job has a key and the manifest fails it.
    pub fn accepted(&self) -> bool {
        matches!(self, Authenticity::NotChecked | Authenticity::Authentic)
    }
}

/// Sorted keys, no whitespace, whatever serde_json's map type is: two serializations of
/// the same JSON value give the same bytes.
pub fn canonical(v: &serde_json::Value) -> Result<Vec<u8>, serde_json::Error> {
    fn write(v: &serde_json::Value, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push(b'{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    serde_json::to_writer(&mut *out, k)?;
                    out.push(b':');
                    if let Some(v) = map.get(k) {
                        write(v, out)?;
                    }
                }
                out.push(b'}');
            }
            serde_json::Value::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write(item, out)?;
                }
                out.push(b']');
            }
            other => serde_json::to_writer(&mut *out, other)?,
        }
        Ok(())
    }
    let mut out = Vec::new();
    write(v, &mut out)?;
    Ok(out)
}

/// The stored form of `m`: pretty JSON, with `auth` computed under `key` when there is one.
/// Generic so that what is signed like a manifest (WAL records) is signed by this code.
pub fn signed<T: Serialize + ?Sized>(
    m: &T,
    key: Option<&crate::crypt::AuthKey>,
) -> Result<Vec<u8>, serde_json::Error> {
    let mut value = serde_json::to_value(m)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.remove("auth");
        if let Some(key) = key {
            let mac = key.sign(&canonical(&serde_json::Value::Object(map.clone()))?);
            map.insert(
                "auth".to_string(),
                serde_json::to_value(ManifestAuth {
                    scheme: AUTH_SCHEME.to_string(),
                    key_id: key.id().to_string(),
                    mac,
                })?,
            );
        }
    }
    serde_json::to_vec_pretty(&value)
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
    /// PostgreSQL base backups (`mode = "physical"`): the write-ahead log span a restore
    /// must replay, and the timeline it is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::engine::WalPosition>,
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
    /// Parse a stored manifest, keeping what its MAC covers.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
        let covered = match &mut value {
            serde_json::Value::Object(map) => {
                let auth = map.remove("auth");
                let covered = canonical(&serde_json::Value::Object(map.clone()))?;
                if let Some(a) = auth {
                    map.insert("auth".to_string(), a);
                }
                Some(covered)
            }
            _ => None,
        };
        let mut m: Manifest = serde_json::from_value(value)?;
        m.proof = Proof(covered.map(std::sync::Arc::from));
        Ok(m)
    }

    /// Whether this manifest, as it was read, was written by a holder of `key`.
    pub fn authenticity(&self, key: Option<&crate::crypt::AuthKey>) -> Authenticity {
        let Some(key) = key else {
            return Authenticity::NotChecked;
        };
        let (Some(auth), Some(body)) = (&self.auth, &self.proof.0) else {
            return Authenticity::Unsigned;
        };
        if auth.key_id != key.id() {
            return Authenticity::OtherKey {
                key_id: auth.key_id.clone(),
            };
        }
        if auth.scheme == AUTH_SCHEME && key.verify(body, &auth.mac) {
            Authenticity::Authentic
        } else {
            Authenticity::Forged
        }
    }

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
                KeyKind::Wal | KeyKind::Other => {}
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
    Ok(read_manifest_body(storage, job, id).await?.0)
}

/// [`read_manifest`], with the bytes as stored (what a copy writes elsewhere unchanged, so
/// its MAC still holds).
pub async fn read_manifest_body(
    storage: &dyn Storage,
    job: &str,
    id: &str,
) -> Result<(Manifest, bytes::Bytes), ManifestError> {
    let key = manifest_key(job, id);
    let bytes = storage.get_bytes(&key).await?;
    let m = Manifest::parse(&bytes).map_err(|e| ManifestError::Corrupt {
        key: key.clone(),
        reason: e.to_string(),
    })?;
    // The MAC covers job and id: a genuine manifest copied to another backup's key (to pass
    // as a newer backup, or as another job's) is refused here.
    if m.job != job || m.id != id {
        return Err(ManifestError::Corrupt {
            key,
            reason: format!(
                "it says it is backup {} of job {}, not backup {id} of job {job}; it was copied from elsewhere",
                m.id, m.job
            ),
        });
    }
    // Every key a restore, verify or drill will read: under the job's prefix, nothing
    // that could leave the destination's root.
    for s in &m.sources {
        for k in std::iter::once(&s.key).chain(s.refs.as_ref().map(|r| &r.key)) {
            crate::repo::layout::check_job_key(job, k).map_err(|reason| {
                ManifestError::Corrupt {
                    key: key.clone(),
                    reason,
                }
            })?;
        }
    }
    Ok((m, bytes))
}

/// A backup the job must not read (see `crate::repo::packing::Expect::admit`).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "manifest {key}: {why}; refusing backup {id}: whoever can write to the destination could have made it. If you trust what this destination holds (disaster recovery, or a backup written before auth_key_file was set), pass --trust-unauthenticated"
    )]
    Unauthenticated {
        key: String,
        id: String,
        why: String,
    },
    #[error(
        "backup {id} of job {job} ({key}, encryption {}): the job is configured to encrypt, and this backup says it is not: refusing it; whoever can write to the destination can remove the manifest's encryption field and store clear objects. A clear backup written before encryption was turned on is accepted when its manifest is authenticated (auth_key_file); to read it anyway, pass --trust-unauthenticated",
        says.as_deref().map_or("absent".to_string(), |s| format!("\"{s}\""))
    )]
    NotEncrypted {
        key: String,
        id: String,
        job: String,
        says: Option<String>,
    },
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

    fn key(text: &str) -> crate::crypt::AuthKey {
        crate::crypt::AuthKey::new(crate::secret::Secret::new(text.into()), "k").expect("key")
    }

    /// A MAC survives fields this version does not know, and catches any edit, a missing
    /// MAC and another key, each by name.
    #[test]
    fn manifests_are_authenticated() {
        let t = Utc
            .with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
            .single()
            .expect("valid");
        let m = Manifest {
            format: FORMAT_VERSION,
            job: "app".into(),
            id: new_id(t),
            started_at: t,
            finished_at: t,
            compression: Compression::Zstd,
            encryption: Some("age".into()),
            sources: vec![SourceEntry {
                name: "db".into(),
                sha256: "ab".repeat(32),
                size: 7,
                ..Default::default()
            }],
            tools: BTreeMap::new(),
            auth: None,
            proof: Proof::default(),
        };
        let k = key(&"k".repeat(44));
        let body = signed(&m, Some(&k)).expect("sign");
        let read = Manifest::parse(&body).expect("parse");
        assert_eq!(read.authenticity(Some(&k)), Authenticity::Authentic);
        assert_eq!(read.authenticity(None), Authenticity::NotChecked);
        let other = key(&"o".repeat(44));
        assert!(matches!(
            read.authenticity(Some(&other)),
            Authenticity::OtherKey { .. }
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        // A field from a newer version, added before signing, stays covered.
        v["future_field"] = serde_json::json!({"b": 1, "a": [true, null]});
        let obj = v.as_object_mut().expect("object");
        obj.remove("auth");
        let mac = k.sign(&canonical(&serde_json::Value::Object(obj.clone())).expect("canon"));
        obj.insert(
            "auth".into(),
            serde_json::json!({"scheme": AUTH_SCHEME, "key_id": k.id(), "mac": mac}),
        );
        let newer = serde_json::to_vec(&v).expect("json");
        let read = Manifest::parse(&newer).expect("parse");
        assert_eq!(read.authenticity(Some(&k)), Authenticity::Authentic);
        for (path, value) in [
            ("/sources/0/sha256", serde_json::json!("cd".repeat(32))),
            ("/encryption", serde_json::Value::Null),
            ("/future_field/b", serde_json::json!(2)),
        ] {
            let mut edited = v.clone();
            *edited.pointer_mut(path).expect("path") = value;
            let read = Manifest::parse(&serde_json::to_vec(&edited).expect("json")).expect("parse");
            assert_eq!(read.authenticity(Some(&k)), Authenticity::Forged, "{path}");
        }
        let plain = signed(&m, None).expect("unsigned");
        let read = Manifest::parse(&plain).expect("parse");
        assert_eq!(read.authenticity(Some(&k)), Authenticity::Unsigned);
        assert!(
            crate::crypt::AuthKey::new(crate::secret::Secret::new("short".into()), "f")
                .expect_err("short key")
                .contains("head -c 32 /dev/urandom")
        );
    }

    #[test]
    fn keys() {
        assert_eq!(
            layout::object_key("replay", "X", "db", "pgdump", Compression::Zstd),
            "replay/X/db.pgdump.zst"
        );
        assert_eq!(manifest_key("replay", "X"), "replay/X/manifest.json");
    }
}
