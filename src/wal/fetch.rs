//! `stowage wal-fetch`: one WAL file from the job's destinations to the path PostgreSQL's
//! `restore_command` names, every byte checked first. The caller tells "not shipped" (the
//! server asks for files that do not exist, and takes that as the end of the archive) from
//! any other failure (a damaged object must stop recovery, never end it quietly).

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::codec::Verify;
use crate::config::{Config, Job};
use crate::crypt::CryptError;
use crate::repo::packing::{Expect, Packing};
use crate::repo::wal::{self, Verified, WalError, is_wal_name};
use crate::repo::{OpenError, Recorded, Repository};
use crate::storage::{JobStorage, StorageError};
use crate::units::io_reason;

/// What `wal-fetch` was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// The WAL file's name (`%f`).
    pub name: String,
    /// Where to write it (`%p`), relative to the working directory (the data directory).
    pub path: PathBuf,
    /// Only this destination.
    pub from: Option<String>,
    /// The source whose WAL it is (default: the job's WAL source, or its only source).
    pub source: Option<String>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub destination: String,
    pub key: String,
    pub bytes: u64,
    /// The content of the partial segment as last shipped (not a whole segment).
    pub partial: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Not shipped to any destination, each of which answered: the archive has no such file.
    #[error("WAL file {name} of source {wal_source} is on none of job {job}'s destinations")]
    NotFound {
        job: String,
        wal_source: String,
        name: String,
    },
    #[error("{0}")]
    Usage(String),
    /// A destination could not say whether it holds the file.
    #[error(
        "WAL file {name}: destination {destination} cannot be read: {source}; fetch from another with --from, or repair it and run recovery again"
    )]
    Unreachable {
        name: String,
        destination: String,
        #[source]
        source: StorageError,
    },
    /// A record that fails its checks.
    #[error("WAL file {name} on destination {destination}: {source}")]
    Record {
        name: String,
        destination: String,
        #[source]
        source: WalError,
    },
    /// The object does not read back as its record says (or cannot be read at all).
    #[error(
        "WAL file {name}: object {key} on destination {destination} is damaged or unreadable: {reason}; nothing was written: fetch it from another destination with --from"
    )]
    Damaged {
        name: String,
        key: String,
        destination: String,
        reason: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The object is encrypted and the job's identity cannot open it: no damage, and no
    /// other destination would do better.
    #[error(
        "WAL file {name}: object {key} on destination {destination} cannot be decrypted: {hint}; nothing was written"
    )]
    Keys {
        name: String,
        key: String,
        destination: String,
        hint: String,
        #[source]
        source: Box<CryptError>,
    },
    #[error("cannot write {path}: {reason}")]
    Write {
        path: String,
        reason: String,
        #[source]
        source: std::io::Error,
    },
}

/// Fetch WAL file `req.name` of `job` into `req.path`: its record from the first
/// destination (config order, or `--from`) that has one, else the partial segment when it
/// is the one asked for; the object read through its stored size and sha256, unpacked, and
/// checked against the file's own sha256 before `req.path` appears (written beside it,
/// synced, renamed).
pub async fn fetch(config: &Config, job: &Job, req: &Request) -> Result<Fetched, FetchError> {
    let source = source_of(job, req.source.as_deref())?;
    let target = Target::check(&req.path)?;
    if let Some(from) = &req.from
        && !job.destinations.iter().any(|d| d == from)
    {
        return Err(FetchError::Usage(format!(
            "--from {from}: job {} has no destination \"{from}\"; its destinations: {}",
            job.name,
            job.destinations.join(", ")
        )));
    }
    let not_found = || FetchError::NotFound {
        job: job.name.clone(),
        wal_source: source.clone(),
        name: req.name.clone(),
    };
    // Never a key built from a name PostgreSQL does not give a shipped file.
    if !is_wal_name(&req.name) {
        return Err(not_found());
    }
    let storages: Vec<JobStorage<'_>> = crate::storage::open_job(config, job)
        .await
        .into_iter()
        .filter(|s| req.from.as_deref().is_none_or(|f| f == s.name))
        .collect();
    let expect = Expect::of(job, false);
    let record_error = |destination: &str, e: WalError| match e {
        WalError::Storage(source) => FetchError::Unreachable {
            name: req.name.clone(),
            destination: destination.to_string(),
            source,
        },
        source => FetchError::Record {
            name: req.name.clone(),
            destination: destination.to_string(),
            source,
        },
    };
    // A destination that cannot answer makes "not shipped" unknowable: recovery must stop,
    // not end early at a point the user did not choose.
    let mut unreachable: Option<FetchError> = None;
    let mut found: Option<(&JobStorage<'_>, Verified, bool)> = None;
    for st in &storages {
        match wal::read_record(st.storage.as_ref(), &job.name, &source, &req.name, &expect).await {
            Ok(Some(v)) => {
                found = Some((st, v, false));
                break;
            }
            Ok(None) => {}
            Err(e @ WalError::Storage(_)) => {
                unreachable.get_or_insert(record_error(st.name, e));
            }
            Err(e) => return Err(record_error(st.name, e)),
        }
    }
    if found.is_none() && req.name.len() == 24 {
        for st in &storages {
            match wal::read_pointer(st.storage.as_ref(), &job.name, &source, &expect).await {
                Ok(Some(v)) if v.record.name == req.name => {
                    let newer = found
                        .as_ref()
                        .is_none_or(|(_, f, _)| v.record.shipped_at > f.record.shipped_at);
                    if newer {
                        found = Some((st, v, true));
                    }
                }
                Ok(_) => {}
                Err(e @ WalError::Storage(_)) => {
                    unreachable.get_or_insert(record_error(st.name, e));
                }
                Err(e) => return Err(record_error(st.name, e)),
            }
        }
    }
    let Some((st, v, partial)) = found else {
        return Err(unreachable.unwrap_or_else(not_found));
    };
    let keys = job.encryption.as_ref().and_then(|e| e.keys.clone());
    let bytes = write_verified(st, &job.name, &v, keys, &target, &req.name).await?;
    Ok(Fetched {
        destination: st.name.to_string(),
        key: v.record.key,
        bytes,
        partial,
    })
}

/// The source named, or the job's one WAL source, or its only source.
fn source_of(job: &Job, named: Option<&str>) -> Result<String, FetchError> {
    let names: Vec<&str> = job.sources.iter().map(|s| s.name()).collect();
    if let Some(n) = named {
        if names.contains(&n) {
            return Ok(n.to_string());
        }
        return Err(FetchError::Usage(format!(
            "--source {n}: job {} has no source \"{n}\"; its sources: {}",
            job.name,
            names.join(", ")
        )));
    }
    let wal: Vec<&str> = job
        .sources
        .iter()
        .filter(|s| s.database().is_some_and(|d| d.wal_source().is_some()))
        .map(|s| s.name())
        .collect();
    match (wal.as_slice(), names.as_slice()) {
        ([one], _) | ([], [one]) => Ok(one.to_string()),
        _ => Err(FetchError::Usage(format!(
            "job {} has several sources ({}): name the one whose WAL to fetch with --source",
            job.name,
            names.join(", ")
        ))),
    }
}

/// Where the file goes: its directory must exist; the file is written beside it under a
/// temporary name and renamed over it.
struct Target {
    path: PathBuf,
    tmp: PathBuf,
    dir: PathBuf,
}

impl Target {
    fn check(path: &Path) -> Result<Target, FetchError> {
        let Some(file) = path.file_name() else {
            return Err(FetchError::Usage(format!(
                "{}: not a file name; give the path of the file to write (%p)",
                path.display()
            )));
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(FetchError::Usage(format!(
                "{}: its directory {} does not exist; create it, or give the path inside the data directory (%p)",
                path.display(),
                dir.display()
            )));
        }
        let mut tmp_name = file.to_os_string();
        tmp_name.push(".stowage-tmp");
        Ok(Target {
            path: path.to_path_buf(),
            tmp: dir.join(tmp_name),
            dir,
        })
    }
}

async fn write_verified(
    st: &JobStorage<'_>,
    job: &str,
    v: &Verified,
    keys: Option<std::sync::Arc<crate::crypt::Keys>>,
    target: &Target,
    name: &str,
) -> Result<u64, FetchError> {
    let r = &v.record;
    let damaged =
        |reason: String, source: Box<dyn std::error::Error + Send + Sync>| FetchError::Damaged {
            name: name.to_string(),
            key: r.key.clone(),
            destination: st.name.to_string(),
            reason,
            source,
        };
    let write_err = |path: &Path, e: std::io::Error| FetchError::Write {
        path: path.display().to_string(),
        reason: io_reason(&e),
        source: e,
    };
    let packing = Packing {
        compression: v.form.compression,
        encrypted: v.form.encrypted,
        keys,
    };
    let repo = Repository::new(st.storage.as_ref(), job);
    let object = Recorded {
        key: &r.key,
        sha256: &r.sha256,
        size: r.size,
    };
    let reader = repo
        .open_verified(object, &packing, None)
        .await
        .map_err(|e| match e {
            OpenError::Unpack(
                source @ (CryptError::NoIdentity { .. }
                | CryptError::WrongIdentity { .. }
                | CryptError::WrongPassphrase { .. }),
            ) => undecryptable(job, name, &r.key, st.name, source),
            e => damaged(e.to_string(), e.into_inner()),
        })?;
    let mut reader = Verify::new(reader, &r.raw_sha256, r.raw_size, &r.key);

    // A leftover of an interrupted fetch (or anything else there) goes first; create_new
    // then never follows a link planted at the temporary name.
    match tokio::fs::remove_file(&target.tmp).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(&target.tmp, e)),
    }
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&target.tmp)
        .await
        .map_err(|e| write_err(&target.tmp, e))?;
    let copied = async {
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .await
                .map_err(|e| damaged(e.to_string(), Box::new(e)))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .await
                .map_err(|e| write_err(&target.tmp, e))?;
            total += n as u64;
        }
        file.sync_all()
            .await
            .map_err(|e| write_err(&target.tmp, e))?;
        Ok::<u64, FetchError>(total)
    }
    .await;
    let total = match copied {
        Ok(t) => t,
        Err(e) => {
            drop(file);
            let _ = tokio::fs::remove_file(&target.tmp).await;
            return Err(e);
        }
    };
    drop(file);
    // rename replaces whatever is at the path (a link included) without following it.
    if let Err(e) = tokio::fs::rename(&target.tmp, &target.path).await {
        let _ = tokio::fs::remove_file(&target.tmp).await;
        return Err(write_err(&target.path, e));
    }
    if let Ok(d) = tokio::fs::File::open(&target.dir).await {
        let _ = d.sync_all().await;
    }
    Ok(total)
}

/// The job's identity cannot open an object: nothing is damaged, and no other destination
/// would do better.
fn undecryptable(
    job: &str,
    name: &str,
    key: &str,
    destination: &str,
    source: CryptError,
) -> FetchError {
    let hint = match source {
        // wal-fetch runs as the server's restore_command: it has no --identity.
        CryptError::NoIdentity { .. } => format!(
            "job {job} has no identity; set encryption.identity_file (or passphrase_file) in the job, in the config wal-fetch is given"
        ),
        // A destination writer can replace an object with one for another key, too.
        _ => format!(
            "{source}; if it is the right identity, the object was replaced on the destination: fetch it from another with --from"
        ),
    };
    FetchError::Keys {
        name: name.to_string(),
        key: key.to_string(),
        destination: destination.to_string(),
        hint,
        source: Box::new(source),
    }
}

/// Where `restore --copy-wal` puts WAL, inside the data directory: the server's
/// `restore_command` runs there, so `cp stowage_wal/%f %p` needs no stowage.
pub const COPIED_WAL_DIR: &str = "stowage_wal";

/// Every WAL file of `source` that a recovery from a base backup whose WAL starts in file
/// `first` (on its timeline) may ask for: the timeline history files, the segments from
/// `first` on (later timelines included) and the partial segment, each fetched and
/// checked as [`fetch`] does, into `dir`. For a server that cannot run stowage (a postgres
/// container): its restore command then copies from `dir`. The names written, in order.
pub async fn fetch_from(
    config: &Config,
    job: &Job,
    source: &str,
    first: &str,
    dir: &Path,
) -> Result<Vec<String>, FetchError> {
    let mut names = std::collections::BTreeSet::new();
    let mut listed = 0;
    let mut last_error = None;
    for js in crate::storage::open_job(config, job).await {
        match wal::shipped(js.storage.as_ref(), &job.name, source).await {
            Ok(n) => {
                listed += 1;
                names.extend(n);
            }
            Err(e) => {
                tracing::warn!(job = %job.name, "cannot list the WAL on {}: {e}", js.name);
                last_error = Some((js.name.to_string(), e));
            }
        }
        let expect = Expect::of(job, false);
        if let Ok(Some(p)) =
            wal::read_pointer(js.storage.as_ref(), &job.name, source, &expect).await
        {
            names.insert(p.record.name.clone());
        }
    }
    if listed == 0
        && let Some((destination, source_err)) = last_error
    {
        return Err(FetchError::Unreachable {
            name: first.to_string(),
            destination,
            source: source_err,
        });
    }
    let wanted: Vec<String> = names
        .into_iter()
        .filter(|n| needed_from(n, first))
        .collect();
    let mut written = Vec::with_capacity(wanted.len());
    for name in wanted {
        let req = Request {
            name: name.clone(),
            path: dir.join(&name),
            from: None,
            source: Some(source.to_string()),
        };
        fetch(config, job, &req).await?;
        written.push(name);
    }
    Ok(written)
}

/// Whether a recovery starting in WAL file `first` may need file `name`: every history
/// file; a segment on `first`'s timeline or a later one, at or after `first`'s position.
fn needed_from(name: &str, first: &str) -> bool {
    if name.ends_with(".history") {
        return true;
    }
    if name.len() != 24 || first.len() != 24 {
        return false;
    }
    // Fixed-width upper-case hex: text order is number order.
    name[..8] >= first[..8] && name[8..] >= first[8..]
}

#[cfg(test)]
mod needed_tests {
    use super::needed_from;

    #[test]
    fn history_files_and_segments_from_the_start_on() {
        let first = "000000010000000000000005";
        for (name, want) in [
            ("00000002.history", true),
            ("000000010000000000000004", false),
            ("000000010000000000000005", true),
            ("000000010000000100000000", true),
            ("000000020000000000000007", true),
            ("000000020000000000000004", false),
            ("garbage", false),
        ] {
            assert_eq!(needed_from(name, first), want, "{name}");
        }
    }
}
