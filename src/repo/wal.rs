//! Continuous WAL on a destination: each shipped file (a segment or a timeline history
//! file) is an object beside a JSON record of its sizes and sha256 under `index/`; the
//! segment being written is shipped as ever new `partial/` objects, the newest named by
//! `partial.json`. Keys are in `layout`; what the files mean is the engine's business.
//!
//! A record is what a fetch trusts: it carries the sha256 of the stored bytes and of the
//! file itself, and, with the job's `auth_key_file`, a MAC like a manifest's, so whoever
//! can write to a destination cannot make stowage hand PostgreSQL WAL of their own.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypt::AuthKey;
use crate::repo::layout::{self, Form};
use crate::repo::manifest::{self, AUTH_SCHEME, Authenticity, ManifestAuth, canonical};
use crate::repo::packing::Expect;
use crate::storage::{Storage, StorageError};

pub use crate::repo::layout::is_wal_name;

/// The largest record read back.
const MAX_RECORD: u64 = 64 * 1024;

/// The record of one shipped WAL file (or of the last shipped state of the partial
/// segment, in `partial.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WalRecord {
    /// The WAL file's name, e.g. `000000010000000000000003` or `00000002.history` (for the
    /// partial: the segment's name, without `.partial`).
    pub name: String,
    /// The stored object, relative to the destination's root.
    pub key: String,
    /// Bytes stored (compressed, encrypted).
    pub size: u64,
    /// sha256 of the stored bytes, hex.
    pub sha256: String,
    /// The WAL file's own size and sha256, as PostgreSQL wrote it.
    pub raw_size: u64,
    pub raw_sha256: String,
    pub shipped_at: DateTime<Utc>,
    /// The MAC under the job's `auth_key_file` (absent without one), written by [`encode`].
    #[serde(rename = "auth", default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ManifestAuth>,
}

/// A record read back and checked: its MAC (when the job has a key), its name, and that its
/// key is this file's under the job and source; `form` says how to unpack the object.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub record: WalRecord,
    pub form: Form,
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(
        "WAL record {key} is not valid: {reason}; stowage never writes such a record (was it altered on the destination?)"
    )]
    Corrupt { key: String, reason: String },
    #[error(
        "WAL record {key}: {why}; refusing it: whoever can write to the destination could have made it"
    )]
    Unauthenticated { key: String, why: String },
    #[error("cannot encode the WAL record {key}: {source}")]
    Encode {
        key: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The keys of one source's WAL of a job: what the shipper writes, without a storage.
#[derive(Debug, Clone, Copy)]
pub struct WalNames<'a> {
    job: &'a str,
    source: &'a str,
}

impl<'a> WalNames<'a> {
    pub fn new(job: &'a str, source: &'a str) -> WalNames<'a> {
        WalNames { job, source }
    }

    /// Where everything of the source's WAL is (`<job>/wal/<source>/`).
    pub fn prefix(self) -> String {
        layout::wal_prefix(self.job, self.source)
    }

    /// A whole WAL file, stored in `form`.
    pub fn object(self, name: &str, form: Form) -> String {
        layout::wal_key(self.job, self.source, name, form)
    }

    /// The record of a whole WAL file.
    pub fn record(self, name: &str) -> String {
        layout::wal_index_key(self.job, self.source, name)
    }

    /// One shipped state of the partial segment `name`, shipped at `millis` (Unix ms).
    pub fn partial(self, name: &str, millis: i64, form: Form) -> String {
        layout::wal_partial_key(self.job, self.source, name, millis, form)
    }

    /// Where the shipped states of the partial segment are.
    pub fn partial_prefix(self) -> String {
        layout::wal_partial_prefix(self.job, self.source)
    }

    /// The record naming the last shipped partial state.
    pub fn pointer(self) -> String {
        layout::wal_pointer_key(self.job, self.source)
    }
}

/// The stored form of `r`: pretty JSON, its `auth` computed under `key` when there is one,
/// exactly as a manifest's.
pub fn encode(r: &WalRecord, key: Option<&AuthKey>) -> Result<Vec<u8>, serde_json::Error> {
    manifest::signed(r, key)
}

/// Parse a stored record and say whether `key` wrote it (the MAC over the canonical JSON of
/// everything but `auth`, as stored: fields this version does not know are covered too).
pub fn decode(
    bytes: &[u8],
    key: Option<&AuthKey>,
) -> Result<(WalRecord, Authenticity), serde_json::Error> {
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
    let record: WalRecord = serde_json::from_value(value)?;
    let authenticity = match key {
        None => Authenticity::NotChecked,
        Some(key) => match (&record.auth, &covered) {
            (Some(auth), Some(body)) if auth.key_id != key.id() => Authenticity::OtherKey {
                key_id: auth.key_id.clone(),
            },
            (Some(auth), Some(body))
                if auth.scheme == AUTH_SCHEME && key.verify(body, &auth.mac) =>
            {
                Authenticity::Authentic
            }
            (Some(_), Some(_)) => Authenticity::Forged,
            _ => Authenticity::Unsigned,
        },
    };
    Ok((record, authenticity))
}

/// Write the record of a whole WAL file; its object must be stored first.
pub async fn write_record(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    record: &WalRecord,
    auth: Option<&AuthKey>,
) -> Result<(), WalError> {
    let key = WalNames::new(job, source).record(&record.name);
    storage
        .put_record(&key, encoded(&key, record, auth)?)
        .await?;
    Ok(())
}

fn encoded(key: &str, record: &WalRecord, auth: Option<&AuthKey>) -> Result<Bytes, WalError> {
    encode(record, auth)
        .map(Bytes::from)
        .map_err(|source| WalError::Encode {
            key: key.to_string(),
            source,
        })
}

/// Point `partial.json` at a shipped partial state; its object must be stored first.
pub async fn write_pointer(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    record: &WalRecord,
    auth: Option<&AuthKey>,
) -> Result<(), WalError> {
    let key = WalNames::new(job, source).pointer();
    // Rewritten every flush: a plain object, not one kept under Object Lock.
    storage
        .put_bytes(&key, encoded(&key, record, auth)?)
        .await?;
    Ok(())
}

/// The record of WAL file `name`, checked (see [`Verified`]); `None` when it was not shipped
/// to this destination.
pub async fn read_record(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    name: &str,
    expect: &Expect,
) -> Result<Option<Verified>, WalError> {
    let key = WalNames::new(job, source).record(name);
    read_checked(storage, job, source, &key, Some(name), expect).await
}

/// The record of the last shipped partial segment, checked; `None` when there is none.
pub async fn read_pointer(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    expect: &Expect,
) -> Result<Option<Verified>, WalError> {
    let key = WalNames::new(job, source).pointer();
    read_checked(storage, job, source, &key, None, expect).await
}

async fn read_checked(
    storage: &dyn Storage,
    job: &str,
    source: &str,
    key: &str,
    name: Option<&str>,
    expect: &Expect,
) -> Result<Option<Verified>, WalError> {
    let corrupt = |reason: String| WalError::Corrupt {
        key: key.to_string(),
        reason,
    };
    let reader = match storage.get(key).await {
        Ok(r) => r,
        Err(StorageError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // A record is a few hundred bytes: a destination cannot make a fetch hold more.
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(
        &mut tokio::io::AsyncReadExt::take(reader, MAX_RECORD + 1),
        &mut bytes,
    )
    .await
    .map_err(|e| {
        WalError::Storage(
            StorageError::Io(format!("cannot read {key}: {}", e.to_string().to_lowercase()).into())
                .caused_by(e),
        )
    })?;
    if bytes.len() as u64 > MAX_RECORD {
        return Err(corrupt(format!("it is larger than {MAX_RECORD} bytes")));
    }
    let (record, authenticity) =
        decode(&bytes, expect.auth.as_deref()).map_err(|e| corrupt(e.to_string()))?;
    if !authenticity.accepted() && !expect.trust_unauthenticated {
        return Err(WalError::Unauthenticated {
            key: key.to_string(),
            why: authenticity.describe(expect.auth.as_deref()),
        });
    }
    if !is_wal_name(&record.name) {
        return Err(corrupt(format!(
            "\"{}\" is not the name of a WAL file",
            record.name.escape_debug()
        )));
    }
    if let Some(name) = name
        && record.name != name
    {
        return Err(corrupt(format!(
            "it records WAL file {}, not {name}; it was copied from elsewhere",
            record.name
        )));
    }
    let Some(form) = layout::wal_form_of(job, source, &record.name, &record.key) else {
        return Err(corrupt(format!(
            "its object key \"{}\" is not one of WAL file {} of source {source} of job {job}",
            record.key.escape_debug(),
            record.name
        )));
    };
    // As for a manifest: a job that encrypts reads a clear object only when its record was
    // written by the job itself (shipped before encryption was turned on).
    if expect.encrypted
        && !form.encrypted
        && authenticity != Authenticity::Authentic
        && !expect.trust_unauthenticated
    {
        return Err(WalError::Unauthenticated {
            key: key.to_string(),
            why: format!(
                "the job is configured to encrypt and its object {} is not encrypted",
                record.key
            ),
        });
    }
    Ok(Some(Verified { record, form }))
}

/// The names of the WAL files shipped here for `source` (those with a record), sorted.
pub async fn shipped(
    storage: &dyn Storage,
    job: &str,
    source: &str,
) -> Result<Vec<String>, StorageError> {
    let prefix = layout::wal_index_prefix(job, source);
    let mut names: Vec<String> = storage
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| layout::wal_name_of_index(job, source, &o.key))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::repo::Repository;
    use crate::storage::local::LocalStorage;

    /// A local destination in a fresh directory (repo sits below the test kit's memory one).
    fn local() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().expect("tempdir");
        let st = LocalStorage::new(dir.path().to_path_buf());
        (dir, st)
    }

    async fn insert(st: &LocalStorage, key: &str, data: impl Into<Vec<u8>>) {
        st.put_bytes(key, data.into().into()).await.expect("put");
    }

    fn key(text: &str) -> std::sync::Arc<AuthKey> {
        std::sync::Arc::new(
            AuthKey::new(crate::secret::Secret::new(text.into()), "k").expect("key"),
        )
    }

    const SEG: &str = "000000010000000000000003";

    fn record(form: Form) -> WalRecord {
        WalRecord {
            name: SEG.into(),
            key: WalNames::new("app", "db").object(SEG, form),
            size: 10,
            sha256: "ab".repeat(32),
            raw_size: 16 << 20,
            raw_sha256: "cd".repeat(32),
            shipped_at: Utc::now(),
            auth: None,
        }
    }

    #[test]
    fn keys_and_names() {
        let n = WalNames::new("app", "db");
        let zst = Form::from(Compression::Zstd);
        let age = Form {
            compression: Compression::Zstd,
            encrypted: true,
        };
        assert_eq!(n.object(SEG, zst), format!("app/wal/db/{SEG}.zst"));
        assert_eq!(n.object(SEG, age), format!("app/wal/db/{SEG}.zst.age"));
        assert_eq!(n.record(SEG), format!("app/wal/db/index/{SEG}.json"));
        assert_eq!(n.pointer(), "app/wal/db/partial.json");
        assert_eq!(
            n.partial(SEG, 1234, age),
            format!("app/wal/db/partial/{SEG}.1234.zst.age")
        );
        assert!(is_wal_name(SEG) && is_wal_name("0000000A.history"));
        for bad in [
            "",
            "0000000100000000000000031",
            "x.history",
            "../etc",
            "0000000G.history",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
        assert_eq!(
            layout::wal_form_of("app", "db", SEG, &n.partial(SEG, 5, age)),
            Some(age)
        );
        assert_eq!(
            layout::wal_form_of("app", "db", SEG, &n.object(SEG, zst)),
            Some(zst)
        );
        for bad in [
            format!("app/wal/other/{SEG}.zst"),
            format!("app/wal/db/{SEG}.zst.x"),
            format!("app/wal/db/partial/{SEG}..zst"),
            "app/20261122T030000.000Z/db.pgdump.zst".to_string(),
        ] {
            assert_eq!(layout::wal_form_of("app", "db", SEG, &bad), None, "{bad}");
        }
    }

    /// Records are read back checked: a MAC under the job's key, their own name, a key
    /// under their job and source; a missing one is `None`.
    #[tokio::test]
    async fn records_are_checked() {
        let (_dir, st) = local();
        let k = key(&"k".repeat(44));
        let form = Form::from(Compression::Zstd);
        let signed = Expect {
            auth: Some(k.clone()),
            ..Expect::default()
        };
        write_record(&st, "app", "db", &record(form), Some(&k))
            .await
            .expect("write");
        let got = read_record(&st, "app", "db", SEG, &signed)
            .await
            .expect("read")
            .expect("found");
        assert_eq!(got.form, form);
        assert_eq!(got.record.raw_size, 16 << 20);
        assert!(
            read_record(&st, "app", "db", "000000010000000000000004", &signed)
                .await
                .expect("read")
                .is_none()
        );
        assert_eq!(shipped(&st, "app", "db").await.expect("list"), vec![SEG]);

        // Edited after it was written: refused by its MAC.
        let rkey = WalNames::new("app", "db").record(SEG);
        let mut v: serde_json::Value =
            serde_json::from_slice(&st.get_bytes(&rkey).await.expect("stored")).expect("json");
        v["raw_sha256"] = serde_json::json!("ee".repeat(32));
        insert(&st, &rkey, serde_json::to_vec(&v).expect("json")).await;
        let e = read_record(&st, "app", "db", SEG, &signed)
            .await
            .expect_err("forged");
        assert!(matches!(e, WalError::Unauthenticated { .. }), "{e}");
        assert!(e.to_string().contains(&rkey), "{e}");

        // Unsigned while the job has a key.
        write_record(&st, "app", "db", &record(form), None)
            .await
            .expect("write");
        let e = read_record(&st, "app", "db", SEG, &signed)
            .await
            .expect_err("unsigned");
        assert!(e.to_string().contains("carries no MAC"), "{e}");

        // Without a key: a record of another name, or pointing elsewhere, is refused.
        let plain = Expect::default();
        let mut other = record(form);
        other.name = "000000010000000000000009".into();
        insert(&st, &rkey, encode(&other, None).expect("encode")).await;
        let e = read_record(&st, "app", "db", SEG, &plain)
            .await
            .expect_err("copied");
        assert!(e.to_string().contains("copied from elsewhere"), "{e}");
        let mut escape = record(form);
        escape.key = "other/wal/db/000000010000000000000003.zst".into();
        insert(&st, &rkey, encode(&escape, None).expect("encode")).await;
        let e = read_record(&st, "app", "db", SEG, &plain)
            .await
            .expect_err("elsewhere");
        assert!(e.to_string().contains("other/wal/db"), "{e}");

        // A job that encrypts refuses a clear object unless the job signed its record.
        insert(&st, &rkey, encode(&record(form), None).expect("encode")).await;
        let enc = Expect {
            encrypted: true,
            ..Expect::default()
        };
        let e = read_record(&st, "app", "db", SEG, &enc)
            .await
            .expect_err("clear");
        assert!(e.to_string().contains("not encrypted"), "{e}");
    }

    /// WAL keys under a job's prefix are neither backups nor blobs nor locks: listings,
    /// retention, recovery and sweeps see the job's backups exactly as without them.
    #[tokio::test]
    async fn job_listings_ignore_wal() {
        let (_dir, st) = local();
        let id = "20261122T030000.000Z";
        insert(&st, &format!("app/{id}/db.pgdump.zst"), "d").await;
        insert(&st, &format!("app/{id}/manifest.json"), "{}").await;
        insert(&st, "app/locks/20261122T030000.000Z.backup", "{}").await;
        let bare = Repository::new(&st, "app").listing().await.expect("list");
        let n = WalNames::new("app", "db");
        let zst = Form::from(Compression::Zstd);
        insert(&st, &n.object(SEG, zst), "w").await;
        insert(&st, &n.record(SEG), "{}").await;
        insert(&st, &n.partial(SEG, 1, zst), "p").await;
        insert(&st, &n.pointer(), "{}").await;
        insert(&st, "app/wal/db/00000002.history.zst", "h").await;
        for listing in [
            Repository::new(&st, "app").listing().await.expect("list"),
            Repository::new(&st, "app").backups().await.expect("list"),
        ] {
            assert_eq!(listing.backups.keys().collect::<Vec<_>>(), vec![id]);
            assert_eq!(listing.keys_of(id), bare.keys_of(id));
            assert!(listing.blobs.is_empty());
            assert!(listing.locks.iter().all(|o| !o.key.contains("/wal/")));
            assert_eq!(listing.published("app").len(), 1);
        }
        assert_eq!(
            layout::classify("app", &n.record(SEG)),
            layout::KeyKind::Wal
        );
    }
}
