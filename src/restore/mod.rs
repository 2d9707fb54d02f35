//! Find a published backup and put it back: databases first (storage → sha256 check →
//! decompress → the engine's restore tool, streamed), then files (only what is missing or different is
//! downloaded; local files the backup lacks are moved aside, never deleted).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

// The memory tests build their objects with it, through `super::*`.
#[cfg(test)]
use crate::codec;
use crate::config::{Config, Job, SourceConfig};
use crate::engine::{COMMITTING, Database, Recovery, RecoveryTarget, RestoreOptions, SourceError};
use crate::repo::Repository;
use crate::repo::locks::LockKind;
use crate::repo::manifest::{self, Manifest, SourceEntry};
use crate::repo::packing;
use crate::storage::class::StorageClass;
use crate::storage::{self, JobStorage, Storage};
use crate::units::human_bytes;

mod files;
mod into_source;
pub mod lifecycle;
mod select;

#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    pub job: String,
    /// An id, a unique prefix of one, or "latest".
    pub id: String,
    /// Where databases go: "TARGET" (one database restored) or "SOURCE=TARGET" each.
    pub to: Vec<String>,
    pub from: Option<String>,
    /// Sources to restore (default: all, databases first).
    pub only: Vec<String>,
    pub clean: bool,
    pub no_owner: bool,
    pub tables: Vec<String>,
    pub exclude_tables: Vec<String>,
    /// Also restore the tables the backup marks as excluded.
    pub all_tables: bool,
    pub files_to: Option<PathBuf>,
    pub orphans_to: Option<PathBuf>,
    pub dry_run: bool,
    /// Archive destinations: wait for a retrieval instead of exiting with "pending".
    pub wait: bool,
    /// Keep downloaded objects here and read them from here next time.
    pub download_to: Option<PathBuf>,
    /// The age identity file for encrypted backups (else the job's identity_file or
    /// passphrase_file).
    pub identity: Option<PathBuf>,
    /// Wait for another process's backup or restore of the job instead of refusing.
    pub wait_lock: bool,
    /// Create a target database that does not exist.
    pub create: bool,
    /// Files: keep setuid, setgid and sticky bits as recorded (default: dropped).
    pub keep_special_modes: bool,
    /// Read a backup whose manifest fails the job's auth_key_file (or is clear where the
    /// job encrypts) anyway: disaster recovery.
    pub trust_unauthenticated: bool,
    /// With `from`: still read an object from another destination of the job when the
    /// copy on `from` is missing or damaged (the healer: its choice of destination is a
    /// preference). Without it, `--from` is the user's word: such a restore fails and names
    /// the destination that holds an intact copy.
    pub fallback: bool,
    /// Point-in-time recovery of a physical PostgreSQL source: where WAL replay stops, as
    /// given on the command line (parsed by [`Point::target`]).
    pub point: Point,
    /// Physical PostgreSQL: fetch the WAL into the data directory now, and have the server
    /// copy it from there, instead of running `stowage wal-fetch` (for a server that cannot
    /// run stowage, such as a postgres container).
    pub copy_wal: bool,
    /// `--clean` into the database the backup was taken from (the source's own): meant.
    pub force_into_source: bool,
    /// Files: leave local files the backup lacks where they are (default: moved to the
    /// orphans).
    pub keep_extra: bool,
    /// Files: restore only the paths these patterns match (the files source's include
    /// syntax); the rest of the tree is neither restored nor moved.
    pub paths: Vec<String>,
}

/// `--time`, `--lsn`, `--name` or `--latest` of a restore, as given.
#[derive(Debug, Clone, Default)]
pub struct Point {
    pub time: Option<String>,
    pub lsn: Option<String>,
    pub name: Option<String>,
    pub latest: bool,
}

impl Point {
    /// The recovery target asked for; `None` when none was.
    pub fn target(&self) -> Result<Option<RecoveryTarget>, String> {
        if let Some(t) = &self.time {
            return parse_point_time(t).map(|t| Some(RecoveryTarget::Time(t)));
        }
        if let Some(l) = &self.lsn {
            return match crate::engine::parse_lsn(l) {
                Some(_) => Ok(Some(RecoveryTarget::Lsn(l.to_ascii_uppercase()))),
                None => Err(format!(
                    "--lsn \"{}\" is not an LSN; PostgreSQL writes them as two hex numbers, e.g. 0/3000060 (see pg_current_wal_lsn())",
                    l.escape_debug()
                )),
            };
        }
        if let Some(n) = &self.name {
            // PostgreSQL's limit for restore point names (MAXFNAMELEN - 1).
            if n.is_empty() || n.len() > 63 || n.chars().any(char::is_control) {
                return Err(format!(
                    "--name \"{}\" is not a restore point name: 1-63 characters, as given to pg_create_restore_point()",
                    n.escape_debug()
                ));
            }
            return Ok(Some(RecoveryTarget::Name(n.clone())));
        }
        Ok(self.latest.then_some(RecoveryTarget::Latest))
    }
}

/// A `--time`: a date and time with an explicit offset ("2026-12-05 08:14:03+01",
/// "2026-12-05T07:14:03Z"). Without an offset the same digits name different instants on
/// the host, in the container and in PostgreSQL, and a restore at 3 a.m. must not guess.
fn parse_point_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let t = text.trim();
    let normalized = t.replacen(' ', "T", 1);
    let with_minutes = |s: &str| -> String {
        // "+01" → "+01:00", so RFC 3339 takes PostgreSQL's short offsets.
        let tail = s.rfind(['+', '-']).filter(|&i| i > 10);
        match tail {
            Some(i) if s.len() - i == 3 => format!("{s}:00"),
            _ => s.to_string(),
        }
    };
    chrono::DateTime::parse_from_rfc3339(&with_minutes(&normalized))
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            format!(
                "--time \"{}\" is not a time with its offset; e.g. --time \"2026-12-05 08:14:03+01\" or --time 2026-12-05T07:14:03Z",
                text.escape_debug()
            )
        })
}

/// What a restore did (or would do), for the command to print.
#[derive(Debug)]
pub struct RestoreSummary {
    pub manifest: Manifest,
    pub destination: String,
    pub lines: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    /// A destination failed (unreachable, denied, not found, not retrieved): the kind stays
    /// matchable.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
    /// The same, for one object.
    #[error("{key}: {source}")]
    Object {
        key: String,
        #[source]
        source: storage::StorageError,
    },
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("cannot take the restore lock on {destination}: {source}")]
    Lock {
        destination: String,
        #[source]
        source: crate::repo::blobs::BlobError,
    },
    /// An object of the backup is missing or damaged where the restore must read it.
    #[error("{0}")]
    NoIntactCopy(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("database {source_name}: {source}")]
    Database {
        source_name: String,
        #[source]
        source: SourceError,
    },
    #[error(transparent)]
    Files(#[from] files::FilesRestoreError),
    /// Objects of an archive destination are not retrieved yet (their retrieval has been
    /// requested): run again later.
    #[error("{0}")]
    RetrievalPending(String),
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
    /// The job must not read this backup: not authenticated, or clear where the job
    /// encrypts.
    #[error(transparent)]
    Refused(#[from] crate::repo::manifest::Refused),
    /// Another process is backing up or restoring the job.
    #[error("{0}")]
    Busy(String),
    /// A stop signal (SIGINT, SIGTERM) ended the restore; the text says what was changed.
    #[error("{0}")]
    Interrupted(String),
}

/// What a restore has done so far, for the message of one that is interrupted.
#[derive(Default)]
struct Progress {
    /// The current step passed its commit point (see [`crate::engine::commit_point`]).
    committing: Arc<std::sync::atomic::AtomicBool>,
    /// Steps finished ("database app", "files uploads"): their changes are in place.
    done: Vec<String>,
    /// The step under way, and whether it commits only at its end (nothing of it is in
    /// place until then).
    current: Option<(String, bool)>,
}

impl Progress {
    fn start(p: &std::sync::Mutex<Progress>, what: String, transactional: bool) {
        if let Ok(mut p) = p.lock() {
            p.committing
                .store(false, std::sync::atomic::Ordering::SeqCst);
            p.current = Some((what, transactional));
        }
    }

    fn finish(p: &std::sync::Mutex<Progress>) {
        if let Ok(mut p) = p.lock()
            && let Some((what, _)) = p.current.take()
        {
            p.done.push(what);
        }
    }

    fn interrupted(p: &std::sync::Mutex<Progress>, signal: &str, target: &str) -> String {
        let (done, current) = match p.lock() {
            Ok(p) => {
                let committing = p.committing.load(std::sync::atomic::Ordering::SeqCst);
                // Past its commit point, a step is as good as one that applies as it goes.
                let current = p.current.clone().map(|(w, t)| (w, t && !committing));
                (p.done.clone(), current)
            }
            Err(_) => (Vec::new(), Some(("the restore".to_string(), false))),
        };
        let mut text = format!("restore interrupted by {signal}");
        match (&done[..], current) {
            ([], None) => {
                text.push_str(&format!(": stopped before anything was written; nothing was changed, {target} is as it was"));
            }
            ([], Some((what, true))) => text.push_str(&format!(
                ": {what} was stopped before its commit and rolled back; nothing was changed, {target} is as it was"
            )),
            (done, current) => {
                if !done.is_empty() {
                    text.push_str(&format!(": {} already restored", done.join(", ")));
                }
                match current {
                    Some((what, true)) => text.push_str(&format!(
                        "; {what} was stopped before its commit and rolled back"
                    )),
                    Some((what, false)) => text.push_str(&format!(
                        "; {what} was stopped part way or as it committed, and may be partly or wholly restored: check it"
                    )),
                    None => {}
                }
                text.push_str("; run the restore again to complete it");
            }
        }
        text
    }
}

/// The keys that read `job`'s encrypted backups: `--identity FILE` when given, else the
/// job's own identity_file or passphrase_file.
pub fn keys_for(
    job: &Job,
    identity: Option<&PathBuf>,
) -> Result<Option<Arc<crate::crypt::Keys>>, RestoreError> {
    match identity {
        Some(path) => crate::crypt::Keys::read_identity_file(path)
            .map(|k| Some(Arc::new(k)))
            .map_err(RestoreError::Usage),
        None => Ok(job.encryption.as_ref().and_then(|e| e.keys.clone())),
    }
}

/// Open every encrypted object a restore will read, far enough to find its key: a wrong
/// or missing identity fails here, before anything is written to a target.
pub async fn check_keys(
    storage: &dyn Storage,
    packing: &packing::Packing,
    keys: &[&str],
) -> Result<(), RestoreError> {
    if !packing.encrypted {
        return Ok(());
    }
    for key in keys {
        let raw = storage
            .get(key)
            .await
            .map_err(|source| RestoreError::Object {
                key: key.to_string(),
                source,
            })?;
        crate::crypt::open(raw, packing.keys.as_ref(), key).await?;
    }
    Ok(())
}

/// A published backup, found on one destination.
pub struct Located {
    pub storage: Box<dyn Storage>,
    pub destination: String,
    pub manifest: Manifest,
}

pub fn find_job<'a>(config: &'a Config, name: &str) -> Result<&'a Job, RestoreError> {
    config.jobs.get(name).ok_or_else(|| {
        RestoreError::Usage(format!(
            "unknown job \"{name}\"; jobs in {}: {}",
            config.path.display(),
            config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Resolve "latest", a full id or a unique id prefix against a newest-first list.
pub fn resolve_id(ids: &[String], wanted: &str) -> Result<Option<String>, String> {
    if wanted == "latest" {
        return Ok(ids.first().cloned());
    }
    if ids.iter().any(|i| i == wanted) {
        return Ok(Some(wanted.to_string()));
    }
    let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(wanted)).collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(Some(matches[0].clone())),
        _ => Err(format!(
            "\"{wanted}\" matches {} backups ({}); give more of the id",
            matches.len(),
            matches
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The destinations a restore may read from: `from`, or the job's, in its order.
async fn candidates(
    config: &Config,
    job: &Job,
    from: Option<&String>,
) -> Result<Vec<(String, Box<dyn Storage>)>, RestoreError> {
    Ok(match from {
        Some(d) => {
            let Some(dest) = config.destinations.get(d) else {
                return Err(RestoreError::Usage(format!(
                    "unknown destination \"{d}\" in --from; destinations: {}",
                    config
                        .destinations
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            vec![(d.clone(), storage::open(dest).await)]
        }
        None => storage::open_job(config, job)
            .await
            .into_iter()
            .map(|js| (js.name.to_string(), js.storage))
            .collect(),
    })
}

/// For a point-in-time restore without an id: the newest backup, on `from` or the first
/// destination that has one, whose base backup was consistent before `target` (recovery
/// cannot start from a backup taken after the point it stops at).
async fn locate_point(
    config: &Config,
    job: &Job,
    from: Option<&String>,
    target: &RecoveryTarget,
) -> Result<Located, RestoreError> {
    let mut tried = Vec::new();
    for (name, st) in candidates(config, job, from).await? {
        let repo = Repository::new(st.as_ref(), &job.name);
        let Some(ids) = published_ids(&repo, &name, &mut tried).await else {
            continue;
        };
        for id in &ids {
            let manifest = match repo.manifest(id).await {
                Ok(m) => m,
                Err(e) => {
                    warn!(job = %job.name, destination = %name, "passing over backup {id} on {name}: {e}");
                    continue;
                }
            };
            let auth = manifest.authenticity(job.auth_key.as_deref());
            if job.auth_key.is_some() && !auth.accepted() {
                warn!(
                    job = %job.name,
                    destination = %name,
                    "passing over backup {id} on {name}: {}",
                    auth.describe(job.auth_key.as_deref())
                );
                continue;
            }
            let fits = manifest
                .sources
                .iter()
                .any(|s| s.wal.as_ref().is_some_and(|w| w.precedes(target)));
            if fits {
                return Ok(Located {
                    storage: st,
                    destination: name,
                    manifest,
                });
            }
        }
        tried.push(format!(
            "{name} ({}, none a base backup before the target)",
            backups(ids.len())
        ));
    }
    Err(RestoreError::NotFound(format!(
        "no base backup of job \"{}\" to recover to {} from, in: {}; see `stowage list {}`",
        job.name,
        describe_target(target),
        tried.join(", "),
        job.name
    )))
}

/// A recovery target as messages name it.
pub fn describe_target(target: &RecoveryTarget) -> String {
    match target {
        RecoveryTarget::Latest => "the newest archived WAL".to_string(),
        RecoveryTarget::Time(t) => t.format("%Y-%m-%d %H:%M:%S%.f UTC").to_string(),
        RecoveryTarget::Lsn(l) => format!("LSN {l}"),
        RecoveryTarget::Name(n) => format!("restore point \"{n}\""),
    }
}

/// The `restore_command` a recovering server runs: this binary's `wal-fetch`, with the
/// config this restore was given, so WAL is fetched and checked the way the base backup was,
/// from the destination the base backup came from: each destination keeps its own WAL to
/// its own retention, and one that cannot be read must not stop a recovery that does not
/// need it.
pub fn wal_fetch_command(
    config: &Config,
    job: &str,
    source: &str,
    destination: &str,
) -> Vec<String> {
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "stowage".to_string());
    let cfg = std::path::absolute(&config.path).unwrap_or_else(|_| config.path.clone());
    vec![
        exe,
        "--config".to_string(),
        cfg.display().to_string(),
        "wal-fetch".to_string(),
        job.to_string(),
        "%f".to_string(),
        "%p".to_string(),
        "--source".to_string(),
        source.to_string(),
        "--from".to_string(),
        destination.to_string(),
    ]
}

/// The backup `id` (an id, a unique prefix, or "latest") of `job`: from destination
/// `from`, or the first of the job's destinations, in its order, that has it.
pub async fn locate(
    config: &Config,
    job: &Job,
    from: Option<&String>,
    id: &str,
) -> Result<Located, RestoreError> {
    let candidates = candidates(config, job, from).await?;

    // First destination (in the job's order) that has the backup wins; an unreachable
    // one is skipped so a dead S3 endpoint does not block a restore from the local volume.
    let mut found: Option<(Box<dyn Storage>, String, String)> = None;
    let mut tried = Vec::new();
    for (name, st) in candidates {
        let repo = Repository::new(st.as_ref(), &job.name);
        let Some(ids) = published_ids(&repo, &name, &mut tried).await else {
            continue;
        };
        match resolve_id(&ids, id).map_err(RestoreError::Usage)? {
            Some(newest) if id == "latest" && job.auth_key.is_some() => {
                let chosen = newest_authentic(st.as_ref(), job, &name, &ids)
                    .await
                    .unwrap_or(newest);
                found = Some((st, name.clone(), chosen));
                break;
            }
            Some(id) => {
                found = Some((st, name.clone(), id));
                break;
            }
            None => tried.push(format!("{name} ({})", backups(ids.len()))),
        }
    }
    let Some((storage, destination, id)) = found else {
        return Err(RestoreError::NotFound(format!(
            "no published backup \"{}\" of job \"{}\" in: {}; see `stowage list {}`",
            id,
            job.name,
            tried.join(", "),
            job.name
        )));
    };

    let manifest = Repository::new(storage.as_ref(), &job.name)
        .manifest(&id)
        .await?;
    Ok(Located {
        storage,
        destination,
        manifest,
    })
}

/// The published backups of the job on destination `name`, newest first; `None` when it
/// cannot be listed (warned, and named in `tried` for the error if nothing is found).
async fn published_ids(
    repo: &Repository<'_>,
    name: &str,
    tried: &mut Vec<String>,
) -> Option<Vec<String>> {
    match repo.backups().await {
        Ok(listing) => Some(
            listing
                .published(repo.job())
                .into_iter()
                .map(|p| p.id)
                .collect(),
        ),
        Err(e) => {
            warn!(destination = %name, "cannot list {name}: {e}");
            tried.push(format!("{name} (unreachable: {e})"));
            None
        }
    }
}

/// "3 backups", "1 backup".
fn backups(n: usize) -> String {
    format!("{n} backup{}", if n == 1 { "" } else { "s" })
}

/// "latest" for a job with auth_key_file: the newest backup whose manifest is authenticated,
/// so a newer fake one planted by whoever can write to the destination is passed over (and
/// named in a warning) instead of hiding the real ones. None when none is.
async fn newest_authentic(
    storage: &dyn Storage,
    job: &Job,
    destination: &str,
    ids: &[String],
) -> Option<String> {
    for id in ids {
        let why = match Repository::new(storage, &job.name).manifest(id).await {
            Ok(m) => {
                let a = m.authenticity(job.auth_key.as_deref());
                if a.accepted() {
                    return Some(id.clone());
                }
                a.describe(job.auth_key.as_deref())
            }
            Err(e) => e.to_string(),
        };
        warn!(
            job = %job.name,
            destination = %destination,
            "latest: passing over backup {id} on {destination}: {why}"
        );
    }
    None
}

pub async fn restore(
    config: &Config,
    req: &RestoreRequest,
) -> Result<RestoreSummary, RestoreError> {
    restore_until(config, req, std::future::pending()).await
}

/// Like [`restore`], stopped when `stop` completes (with the signal's name): the work is
/// dropped, which kills the tools it runs (an engine's transaction is then never
/// committed) and removes its temporary files; the job's restore lock is released.
pub async fn restore_until(
    config: &Config,
    req: &RestoreRequest,
    stop: impl std::future::Future<Output = &'static str>,
) -> Result<RestoreSummary, RestoreError> {
    let job = find_job(config, &req.job)?;
    let point = req.point.target().map_err(RestoreError::Usage)?;
    let located = match &point {
        Some(target) if req.id == "latest" => {
            locate_point(config, job, req.from.as_ref(), target).await?
        }
        _ => locate(config, job, req.from.as_ref(), &req.id).await?,
    };
    if point.is_some() && !located.manifest.sources.iter().any(|s| s.wal.is_some()) {
        return Err(RestoreError::Usage(format!(
            "--time, --lsn, --name and --latest restore a physical PostgreSQL source (mode = \"physical\"); backup {} of job {} holds none",
            located.manifest.id, job.name
        )));
    }
    let Located {
        storage,
        destination: dest_name,
        manifest,
    } = located;
    let st: Box<dyn Storage> = match &req.download_to {
        Some(dir) => Box::new(storage::cached::Cached::new(storage, dir.clone())),
        None => storage,
    };
    let plan = plan(&manifest, req, &|e| database_for(job, e))?;
    // Refused before any database is touched: the directory recorded in a backup's index is
    // the destination's word, and only the operator chooses where files are written.
    if let Some(f) = plan
        .files
        .iter()
        .find(|f| files_dir_for(job, req.files_to.as_ref(), f).is_none())
    {
        return Err(RestoreError::Usage(format!(
            "files {name}: the config has no files source \"{name}\", and the directory recorded in the backup is not trusted to choose where files are written; give the directory with --files-to DIR (with --only {name})",
            name = f.name
        )));
    }
    let packing = Repository::new(st.as_ref(), &job.name).packing(
        &manifest,
        &packing::Expect::of(job, req.trust_unauthenticated),
        keys_for(job, req.identity.as_ref())?,
    )?;
    // The recovering server's WAL is fetched with the config's keys (`wal-fetch` is run by
    // the server; `--copy-wal` reads it the same way): refused before the base backup is
    // written, rather than after, when recovery would stop at its first segment.
    if point.is_some()
        && packing.encrypted
        && req.identity.is_some()
        && job
            .encryption
            .as_ref()
            .and_then(|e| e.keys.as_ref())
            .is_none()
    {
        return Err(RestoreError::Usage(format!(
            "--identity reads the base backup, but the WAL a point-in-time recovery fetches is read with the keys in {}, and job \"{}\" has no identity_file or passphrase_file there: add encryption.identity_file to the config, then restore again",
            config.path.display(),
            job.name
        )));
    }
    // A restore never runs beside another process's backup of the job (which would dump
    // a half-restored database) or another restore.
    let lock_id = manifest::new_id(chrono::Utc::now());
    if !req.dry_run {
        claim_restore_lock(st.as_ref(), job, &lock_id, req.wait_lock, &dest_name).await?;
    }
    let progress = std::sync::Mutex::new(Progress::default());
    let committing = match progress.lock() {
        Ok(p) => p.committing.clone(),
        Err(poisoned) => poisoned.into_inner().committing.clone(),
    };
    let work = async {
        let work = restore_locked(
            config,
            req,
            job,
            st.as_ref(),
            &dest_name,
            &manifest,
            plan,
            &packing,
            &progress,
        );
        tokio::select! {
            r = COMMITTING.scope(committing, work) => r,
            signal = stop => {
                Err(RestoreError::Interrupted(if req.dry_run {
                    format!("dry run interrupted by {signal}; nothing was changed")
                } else {
                    Progress::interrupted(&progress, signal, "the target")
                }))
            }
        }
    };
    // The lock is rewritten while the restore holds it, so a long restore keeps it and a
    // crashed one frees the job within minutes.
    let result = if req.dry_run {
        work.await
    } else {
        Repository::new(st.as_ref(), &job.name)
            .refreshing(&lock_id, LockKind::Restore, work)
            .await
    };
    if !req.dry_run {
        Repository::new(st.as_ref(), &job.name)
            .unlock(&lock_id, LockKind::Restore)
            .await;
    }
    result
}

/// Takes the job's restore lock on `st`, or says who holds the job.
async fn claim_restore_lock(
    st: &dyn Storage,
    job: &Job,
    lock_id: &str,
    wait_lock: bool,
    dest_name: &str,
) -> Result<(), RestoreError> {
    let never = tokio_util::sync::CancellationToken::new();
    match Repository::new(st, &job.name)
        .claim(lock_id, LockKind::Restore, wait_lock, &never)
        .await
    {
        Ok(None) => Ok(()),
        Ok(Some(holder)) => Err(RestoreError::Busy(format!(
            "job {} is busy: {holder}; nothing was restored. Wait for it to finish, or add --wait-lock to wait",
            job.name
        ))),
        Err(source) => Err(RestoreError::Lock {
            destination: dest_name.to_string(),
            source,
        }),
    }
}

#[allow(clippy::too_many_arguments)]
async fn restore_locked(
    config: &Config,
    req: &RestoreRequest,
    job: &Job,
    st: &dyn Storage,
    dest_name: &str,
    manifest: &Manifest,
    plan: Plan<'_>,
    packing: &packing::Packing,
    progress: &std::sync::Mutex<Progress>,
) -> Result<RestoreSummary, RestoreError> {
    let mut r = RestoreCtx {
        config,
        req,
        job,
        st,
        dest_name: dest_name.to_string(),
        id: manifest.id.clone(),
        packing,
        progress,
        lines: Vec::new(),
    };
    if req.dry_run {
        r.lines.push(format!(
            "dry run: nothing is changed; backup {} of job {} from {}",
            r.id, job.name, r.dest_name
        ));
    }
    if let Some((class, settings)) = archive_class(config, &r.dest_name) {
        r.retrieve_archived(&plan, class, settings).await?;
    }
    let copies = r.choose_copies(&plan).await?;
    r.check_all_keys(&plan, &copies).await?;
    r.check_paths(&plan).await?;
    // Databases first, then files: the order the set was taken in, so rows never point
    // at files that are not there yet.
    for (step, copy) in plan.databases.iter().zip(&copies) {
        r.restore_database(step, copy.as_ref()).await?;
    }
    for entry in &plan.files {
        r.restore_tree(entry).await?;
    }
    Ok(RestoreSummary {
        manifest: manifest.clone(),
        destination: r.dest_name,
        lines: r.lines,
    })
}

/// What the stages of one restore share, and the lines it reports.
struct RestoreCtx<'a> {
    config: &'a Config,
    req: &'a RestoreRequest,
    job: &'a Job,
    /// The destination chosen to read from.
    st: &'a dyn Storage,
    dest_name: String,
    id: String,
    packing: &'a packing::Packing,
    progress: &'a std::sync::Mutex<Progress>,
    lines: Vec<String>,
}

impl<'a> RestoreCtx<'a> {
    /// On an archive destination, the objects to read must be retrieved first: a dry run
    /// only reports, a restore requests the retrieval and waits or stops with "pending".
    async fn retrieve_archived(
        &mut self,
        plan: &Plan<'_>,
        class: StorageClass,
        settings: crate::storage::class::Retrieval,
    ) -> Result<(), RestoreError> {
        let (req, job, st, id, dest_name) =
            (self.req, self.job, self.st, &self.id, &self.dest_name);
        let sources: Vec<&SourceEntry> = plan
            .databases
            .iter()
            .map(|d| d.entry)
            .chain(plan.files.iter().copied())
            .collect();
        let files_dir = |e: &SourceEntry| files_dir_for(job, req.files_to.as_ref(), e);
        let mut survey = lifecycle::survey(
            Repository::new(st, &job.name),
            &sources,
            self.packing,
            &files_dir,
            req.download_to.as_deref(),
        )
        .await?;
        if req.dry_run {
            self.lines.push(format!(
                "{dest_name} is {class}: {} (a restore requests the retrieval of the {} available)",
                survey.counts(),
                survey.count(lifecycle::State::Available)
            ));
            return Ok(());
        }
        if survey.restorable() {
            return Ok(());
        }
        let requested = lifecycle::request(st, &mut survey, settings).await?;
        let delay = settings.tier.usual_delay(class).unwrap_or("hours");
        if requested > 0 {
            info!(
                job = %job.name,
                id = %id,
                destination = %dest_name,
                "requested the retrieval of {requested} object(s) from {dest_name} ({class}, {} tier, usually {delay}; readable for {} days)",
                settings.tier,
                settings.days
            );
        }
        if !req.wait {
            return Err(RestoreError::RetrievalPending(format!(
                "backup {id} on {dest_name} ({class}) is not retrieved yet: {}; {}retrieval takes {delay} ({} tier). Run this restore again then (or add --wait); `stowage status {} {id}` shows progress",
                survey.counts(),
                if requested > 0 {
                    format!("requested {requested} object(s) now; ")
                } else {
                    String::new()
                },
                settings.tier,
                job.name
            )));
        }
        wait_for_retrieval(st, &mut survey, dest_name).await
    }

    /// Where each database's object is read from, chosen before anything is written: an
    /// engine that applies statements as they stream gets an object whose sha256 was
    /// checked whole (the verify pass); the others an object that is at least there whole.
    async fn choose_copies(
        &self,
        plan: &Plan<'_>,
    ) -> Result<Vec<Option<JobStorage<'a>>>, RestoreError> {
        let mut copies = Vec::new();
        for step in &plan.databases {
            copies.push(if self.req.dry_run {
                None
            } else {
                let full = !step.database.verifies_before_commit();
                let (config, job, req) = (self.config, self.job, self.req);
                let (st, dest_name, id) = (self.st, &self.dest_name, &self.id);
                choose_copy(config, job, req, st, dest_name, id, step.entry, full).await?
            });
        }
        Ok(copies)
    }

    /// Every object about to be read can be opened with the keys at hand, before anything
    /// is written.
    async fn check_all_keys(
        &self,
        plan: &Plan<'_>,
        copies: &[Option<JobStorage<'a>>],
    ) -> Result<(), RestoreError> {
        let reads: Vec<&str> = plan.files.iter().map(|e| e.key.as_str()).collect();
        check_keys(self.st, self.packing, &reads).await?;
        for (step, copy) in plan.databases.iter().zip(copies) {
            let from = copy.as_ref().map_or(self.st, |c| c.storage.as_ref());
            check_keys(from, self.packing, &[step.entry.key.as_str()]).await?;
        }
        Ok(())
    }

    /// `--path`: a pattern that matches nothing in a files source's backup stops the
    /// restore before any database is touched. An index this destination cannot give is
    /// left to the files step, which reads it from another destination.
    async fn check_paths(&self, plan: &Plan<'_>) -> Result<(), RestoreError> {
        if self.req.paths.is_empty() {
            return Ok(());
        }
        let paths = crate::pathfilter::PathPatterns::new(&self.req.paths)
            .map_err(|e| RestoreError::Usage(format!("--path: {e}")))?;
        for entry in &plan.files {
            let repo = Repository::new(self.st, &self.job.name);
            match select::check_patterns(repo, entry, self.packing, &paths).await {
                Ok(()) | Err(RestoreError::Files(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// One database, from its chosen copy; a copy found damaged by an engine that had not
    /// committed is replaced by another destination's.
    async fn restore_database(
        &mut self,
        step: &DatabaseStep<'_>,
        copy: Option<&JobStorage<'a>>,
    ) -> Result<(), RestoreError> {
        let (req, job, id) = (self.req, self.job, self.id.clone());
        let entry = step.entry;
        let (from, from_name) = match copy {
            Some(c) => (c.storage.as_ref(), c.name.to_string()),
            None => (self.st, self.dest_name.clone()),
        };
        if from_name != self.dest_name {
            self.lines.push(format!(
                "database {}: read from {from_name}: the copy on {} is missing or damaged",
                entry.name, self.dest_name
            ));
        }
        let t0 = Instant::now();
        let opts = RestoreOptions {
            target: step.target.clone(),
            clean: req.clean,
            no_owner: req.no_owner,
            tables: req.tables.clone(),
            exclude_tables: excluded_tables(req, step),
            dry_run: req.dry_run,
            create: req.create,
            recovery: step.database.wal_source().map(|_| Recovery {
                // A base backup alone is not consistent: without a target, replay it all.
                target: req
                    .point
                    .target()
                    .ok()
                    .flatten()
                    .unwrap_or(RecoveryTarget::Latest),
                restore_command: if req.copy_wal {
                    // Run in the data directory. %f and %p stay words of their own (the
                    // engine quotes everything else), so the directory goes in the script.
                    vec![
                        "sh".to_string(),
                        "-c".to_string(),
                        format!(
                            "exec cp {}/\"$1\" \"$2\"",
                            crate::wal::fetch::COPIED_WAL_DIR
                        ),
                        "sh".to_string(),
                        "%f".to_string(),
                        "%p".to_string(),
                    ]
                } else {
                    wal_fetch_command(self.config, &job.name, &entry.name, &self.dest_name)
                },
            }),
        };
        Progress::start(
            self.progress,
            format!("database {}", entry.name),
            req.dry_run || step.database.verifies_before_commit(),
        );
        let out = match restore_from(job, &id, step, &opts, self.packing, from, &from_name).await {
            Ok(out) => out,
            Err(failed) => {
                self.retry_elsewhere(step, &opts, from, &from_name, failed)
                    .await?
            }
        };
        self.lines.extend(out);
        Progress::finish(self.progress);
        if req.copy_wal && !req.dry_run && opts.recovery.is_some() {
            self.copy_wal(step).await?;
        }
        if !req.dry_run
            && opts.recovery.is_some()
            && let Some(first) = entry.wal.as_ref().and_then(|w| w.first_file())
        {
            let expect = packing::Expect::of(job, req.trust_unauthenticated);
            let warning = crate::wal::chain::gap_warning(
                from,
                &job.name,
                &entry.name,
                &first,
                &expect,
                self.packing.keys.as_ref(),
            );
            self.lines.extend(warning.await);
        }
        if !req.dry_run {
            info!(
                job = %job.name,
                id = %id,
                "restore finished: {} restored in {:.1}s (sha256 verified)",
                entry.name,
                t0.elapsed().as_secs_f64()
            );
            self.lines.push(format!(
                "database {}: restored into {}",
                entry.name,
                crate::source::url::redact(&step.target)
            ));
        }
        Ok(())
    }

    /// `--copy-wal`: every WAL file the recovery may ask for, checked, into the restored
    /// data directory, owned like it.
    async fn copy_wal(&mut self, step: &DatabaseStep<'_>) -> Result<(), RestoreError> {
        let entry = step.entry;
        let Some(first) = entry.wal.as_ref().and_then(|w| w.first_file()) else {
            return Err(RestoreError::Usage(format!(
                "database {}: the backup records no WAL position; restore without --copy-wal",
                entry.name
            )));
        };
        let data = std::path::Path::new(&step.target);
        let dir = data.join(crate::wal::fetch::COPIED_WAL_DIR);
        let failed = |e: std::io::Error| {
            RestoreError::Usage(format!("cannot create {}: {e}", dir.display()))
        };
        std::fs::create_dir(&dir).map_err(failed)?;
        let names = crate::wal::fetch::fetch_from(self.config, self.job, &entry.name, &first, &dir)
            .await
            .map_err(|e| {
                RestoreError::Usage(format!("database {}: copying the WAL: {e}", entry.name))
            })?;
        // The server reads them as the data directory's owner.
        if let Ok(meta) = std::fs::metadata(data) {
            use std::os::unix::fs::MetadataExt;
            let own = |p: &std::path::Path| {
                std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid()))
            };
            own(&dir).map_err(failed)?;
            for n in &names {
                own(&dir.join(n)).map_err(failed)?;
            }
        }
        self.lines.push(match (names.first(), names.last()) {
            (Some(a), Some(b)) => format!(
                "copied {} WAL file(s), {a} to {b}, into {} (checked); the server copies them from there: remove the directory once recovery is done",
                names.len(),
                dir.display()
            ),
            _ => format!("no WAL shipped from {first} on: the server recovers to the end of the base backup only"),
        });
        Ok(())
    }

    /// An engine that checks the stream before it commits applied nothing: when its object
    /// is what failed, another destination's intact copy is tried. (A refusal — a target
    /// in the way — is no reason to read the object.)
    async fn retry_elsewhere(
        &mut self,
        step: &DatabaseStep<'_>,
        opts: &RestoreOptions,
        from: &dyn Storage,
        from_name: &str,
        failed: SourceError,
    ) -> Result<Vec<String>, RestoreError> {
        let (req, job, entry) = (self.req, self.job, step.entry);
        let damaged =
            if !req.dry_run && step.database.verifies_before_commit() && !failed.is_refusal() {
                match verify_object(Repository::new(from, &job.name), entry).await {
                    Err(Unusable::Damaged(why)) => Some(why),
                    Ok(()) | Err(Unusable::Unreadable(_)) => None,
                }
            } else {
                None
            };
        let Some(problem) = damaged else {
            return Err(RestoreError::Database {
                source_name: entry.name.clone(),
                source: failed,
            });
        };
        let text = problem.to_string();
        let damaged = Unusable::Damaged(problem);
        let alt = fallback(self.config, job, req, from_name, &self.id, entry, damaged).await?;
        check_keys(alt.storage.as_ref(), self.packing, &[entry.key.as_str()]).await?;
        self.lines.push(format!(
            "database {}: read from {}: the copy on {from_name} is damaged ({text}); the attempt from it left the target unchanged",
            entry.name, alt.name
        ));
        let from_name = alt.name.to_string();
        restore_from(
            job,
            &self.id,
            step,
            opts,
            self.packing,
            alt.storage.as_ref(),
            &from_name,
        )
        .await
        .map_err(|e| RestoreError::Database {
            source_name: entry.name.clone(),
            source: e,
        })
    }

    /// One files source. A blob or the index missing or damaged on this destination stops
    /// the tree part way: what was put back stays (a second pass finds it unchanged and
    /// fetches nothing for it), so the restore goes on from a destination that holds the
    /// index intact and every blob it names.
    async fn restore_tree(&mut self, entry: &SourceEntry) -> Result<(), RestoreError> {
        let (config, req, job, packing) = (self.config, self.req, self.job, self.packing);
        let paths = match req.paths.is_empty() {
            true => None,
            false => Some(Arc::new(
                crate::pathfilter::PathPatterns::new(&req.paths)
                    .map_err(|e| RestoreError::Usage(format!("--path: {e}")))?,
            )),
        };
        let target = || files::Target {
            dir: files_dir_for(job, req.files_to.as_ref(), entry),
            orphans: req.orphans_to.clone(),
            dry_run: req.dry_run,
            keep_special_modes: req.keep_special_modes,
            keep_extra: req.keep_extra,
            paths: paths.clone(),
        };
        Progress::start(self.progress, format!("files {}", entry.name), req.dry_run);
        let why = match files::restore(
            Repository::new(self.st, &job.name),
            entry,
            packing,
            target(),
        )
        .await
        {
            Ok(out) => {
                self.lines.extend(out);
                Progress::finish(self.progress);
                return Ok(());
            }
            Err(RestoreError::Files(why)) if !req.dry_run => why,
            Err(e) => return Err(e),
        };
        let dest_name = &self.dest_name;
        let Some(alt) = files_elsewhere(config, job, dest_name, entry, packing).await else {
            return Err(RestoreError::Files(
                files::FilesRestoreError::NoIntactCopy {
                    job: job.name.clone(),
                    source: Box::new(why),
                },
            ));
        };
        if req.from.is_some() && !req.fallback {
            return Err(RestoreError::Files(files::FilesRestoreError::IntactOn {
                destination: alt.name.to_string(),
                source: Box::new(why),
            }));
        }
        warn!(
            job = %job.name,
            id = %self.id,
            "files {}: {why}; going on from {}",
            entry.name,
            alt.name
        );
        self.lines.push(format!(
            "files {}: {dest_name} failed part way ({why}); finished from {}",
            entry.name, alt.name
        ));
        check_keys(alt.storage.as_ref(), packing, &[entry.key.as_str()]).await?;
        let repo = Repository::new(alt.storage.as_ref(), &job.name);
        let out = files::restore(repo, entry, packing, target()).await?;
        self.lines.extend(out);
        Progress::finish(self.progress);
        Ok(())
    }
}

/// The tables a database restore leaves out: those the backup marks as excluded (unless
/// `--all-tables`), then those the request excludes.
fn excluded_tables(req: &RestoreRequest, step: &DatabaseStep<'_>) -> Vec<String> {
    let mut exclude: Vec<String> = if req.all_tables {
        Vec::new()
    } else {
        // A table named with --table is wanted even if the job excludes it.
        step.entry
            .exclude_tables
            .iter()
            .filter(|t| !req.tables.iter().any(|n| step.database.same_object(n, t)))
            .cloned()
            .collect()
    };
    exclude.extend(req.exclude_tables.iter().cloned());
    exclude
}

/// One database restored from the copy on `from`.
async fn restore_from(
    job: &Job,
    id: &str,
    step: &DatabaseStep<'_>,
    opts: &RestoreOptions,
    packing: &packing::Packing,
    from: &dyn Storage,
    from_name: &str,
) -> Result<Vec<String>, SourceError> {
    let entry = step.entry;
    // A dry run reads the archive too (to check it), but must not read as if it wrote.
    info!(
        job = %job.name,
        id = %id,
        destination = %from_name,
        "{} {} ({}, {}) from {} into {}",
        if opts.dry_run {
            "would restore"
        } else {
            "restoring"
        },
        entry.name,
        entry.format,
        human_bytes(entry.size),
        from_name,
        crate::source::url::redact(&step.target)
    );
    let archive = Repository::new(from, &job.name)
        .archive(entry, packing, from_name)
        .with_progress(format!("restore {}: read", entry.name));
    step.database.restore(&archive, opts).await
}

/// What is wrong with a destination's copy of an object.
#[derive(Debug, thiserror::Error)]
pub enum Damage {
    #[error("{0} is missing")]
    Missing(String),
    #[error("{key} is {found} bytes where the backup recorded {recorded}")]
    Size {
        key: String,
        found: u64,
        recorded: u64,
    },
    /// Its bytes fail the recorded size or sha256 (the verifying reader's error).
    #[error("{0}")]
    Corrupt(#[source] std::io::Error),
}

/// Why a destination's copy of an object cannot be used.
#[derive(Debug)]
pub enum Unusable {
    /// Missing, the wrong size, or failing its sha256: the copy itself is bad.
    Damaged(Damage),
    /// The destination did not let it be read (unreachable, denied, not retrieved from an
    /// archive class): nothing is known about the copy.
    Unreadable(crate::storage::StorageError),
}

impl std::fmt::Display for Unusable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unusable::Damaged(why) => write!(f, "{why}"),
            Unusable::Unreadable(e) => write!(f, "cannot be read: {e}"),
        }
    }
}

fn unusable(key: &str, e: crate::storage::StorageError) -> Unusable {
    match e {
        crate::storage::StorageError::NotFound(_) => {
            Unusable::Damaged(Damage::Missing(key.to_string()))
        }
        other => Unusable::Unreadable(other),
    }
}

/// Whether `storage` holds `entry`'s object whole: present with the recorded size (a
/// listing; nothing is read).
async fn check_present(storage: &dyn Storage, entry: &SourceEntry) -> Result<(), Unusable> {
    let found = storage
        .list(&entry.key)
        .await
        .map_err(|e| unusable(&entry.key, e))?;
    match found.iter().find(|o| o.key == entry.key) {
        None => Err(Unusable::Damaged(Damage::Missing(entry.key.clone()))),
        Some(o) if o.size != entry.size => Err(Unusable::Damaged(Damage::Size {
            key: entry.key.clone(),
            found: o.size,
            recorded: entry.size,
        })),
        Some(_) => Ok(()),
    }
}

/// The verify pass: the whole stored object read through its size and sha256 check (the
/// stored bytes, so neither decompressed nor decrypted).
pub async fn verify_object(repo: Repository<'_>, entry: &SourceEntry) -> Result<(), Unusable> {
    let mut verified = repo
        .read_verified(entry, None)
        .await
        .map_err(|e| unusable(&entry.key, e))?;
    // Large reads: a local file is read on the blocking pool one request at a time, and
    // `tokio::io::copy`'s 8 KiB made the pass ten times slower than the restore's own read.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match tokio::io::AsyncReadExt::read(&mut verified, &mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return Err(Unusable::Damaged(Damage::Corrupt(e)));
            }
            Err(e) => {
                return Err(Unusable::Unreadable(
                    crate::storage::StorageError::Io(format!("reading {}: {e}", entry.key).into())
                        .caused_by(e),
                ));
            }
        }
    }
}

/// Where a database's object is read from: `None` for the located destination, when its
/// copy passes (`full`: the verify pass; else present with its size), else another
/// destination of the job holding an intact copy (see [`fallback`]).
#[allow(clippy::too_many_arguments)]
async fn choose_copy<'c>(
    config: &'c Config,
    job: &'c Job,
    req: &RestoreRequest,
    st: &dyn Storage,
    dest_name: &str,
    id: &str,
    entry: &SourceEntry,
    full: bool,
) -> Result<Option<JobStorage<'c>>, RestoreError> {
    let checked = if full {
        let t0 = Instant::now();
        let r = verify_object(Repository::new(st, &job.name), entry).await;
        info!(
            "verify pass: {} ({}) on {dest_name} read in {:.2}s before restoring (the engine applies what it reads as it reads it)",
            entry.key,
            human_bytes(entry.size),
            t0.elapsed().as_secs_f64()
        );
        r
    } else {
        check_present(st, entry).await
    };
    match checked {
        Ok(()) => Ok(None),
        Err(problem) => fallback(config, job, req, dest_name, id, entry, problem)
            .await
            .map(Some),
    }
}

/// Another destination of the job whose copy of `entry` is intact (present with its size,
/// then read whole through its sha256 check), in the job's order; archive classes, which
/// need a retrieval first, are not read. Without `--from` (or with `fallback`) it is
/// used; with `--from` the restore fails and names it.
async fn fallback<'c>(
    config: &'c Config,
    job: &'c Job,
    req: &RestoreRequest,
    bad: &str,
    id: &str,
    entry: &SourceEntry,
    problem: Unusable,
) -> Result<JobStorage<'c>, RestoreError> {
    let mut tried = Vec::new();
    let mut found = None;
    for js in storage::open_job(config, job).await {
        if js.name == bad {
            continue;
        }
        if archive_class(config, js.name).is_some() {
            tried.push(format!("{}: archive class, not read", js.name));
            continue;
        }
        let intact = match check_present(js.storage.as_ref(), entry).await {
            Ok(()) => verify_object(Repository::new(js.storage.as_ref(), &job.name), entry).await,
            Err(e) => Err(e),
        };
        match intact {
            Ok(()) => {
                found = Some(js);
                break;
            }
            Err(e) => tried.push(format!("{}: {e}", js.name)),
        }
    }
    let Some(alt) = found else {
        if let Unusable::Unreadable(e) = problem {
            // Nothing is known to be wrong with the copy: the destination's own error (an
            // archive class says what to run) is the one to act on.
            return Err(RestoreError::Database {
                source_name: entry.name.clone(),
                source: SourceError::Archive {
                    place: bad.to_string(),
                    source: Box::new(e),
                },
            });
        }
        return Err(RestoreError::NoIntactCopy(format!(
            "backup {id} of job {}: {problem} (on {bad}), and no other destination holds an intact copy{}; nothing was restored from it",
            job.name,
            if tried.is_empty() {
                String::new()
            } else {
                format!(" ({})", tried.join("; "))
            }
        )));
    };
    if req.from.is_some() && !req.fallback {
        return Err(RestoreError::NoIntactCopy(format!(
            "backup {id} of job {}: {problem} (on {bad}); destination {1} holds an intact copy (size and sha256 checked): run the restore again with --from {1}, or without --from to let stowage pick it; nothing was restored from it",
            job.name, alt.name
        )));
    }
    warn!(
        job = %job.name,
        id = %id,
        "{problem} (on {bad}); reading {} from {} instead, whose copy is intact",
        entry.key,
        alt.name
    );
    Ok(alt)
}

/// Another destination of the job holding `entry`'s file index intact and every blob the
/// index names (a listing: present, not read), for a files restore that stopped part way.
async fn files_elsewhere<'c>(
    config: &'c Config,
    job: &'c Job,
    bad: &str,
    entry: &SourceEntry,
    packing: &packing::Packing,
) -> Option<JobStorage<'c>> {
    for js in storage::open_job(config, job).await {
        if js.name == bad || archive_class(config, js.name).is_some() {
            continue;
        }
        let repo = Repository::new(js.storage.as_ref(), &job.name);
        let Ok(index) = repo.read_index(entry, packing).await else {
            continue;
        };
        let Ok(listed) = js.storage.list(&repo.blobs_prefix()).await else {
            continue;
        };
        let have: std::collections::HashSet<&str> = listed.iter().map(|o| o.key.as_str()).collect();
        if index.files.iter().all(|f| have.contains(f.blob.as_str())) {
            return Some(js);
        }
    }
    None
}

/// What `status` and `retrieve` look at: the objects the same restore would need.
#[derive(Debug, Clone, Default)]
pub struct SurveyRequest {
    pub job: String,
    pub id: String,
    pub from: Option<String>,
    pub only: Vec<String>,
    pub files_to: Option<PathBuf>,
    pub download_to: Option<PathBuf>,
    pub identity: Option<PathBuf>,
}

/// A backup's objects and their retrieval states.
pub struct Surveyed {
    pub located: Located,
    /// The destination's archive class and retrieval settings (None: reads directly).
    pub archive: Option<(StorageClass, crate::storage::class::Retrieval)>,
    pub survey: lifecycle::Survey,
}

pub async fn survey(config: &Config, req: &SurveyRequest) -> Result<Surveyed, RestoreError> {
    let job = find_job(config, &req.job)?;
    let located = locate(config, job, req.from.as_ref(), &req.id).await?;
    let m = &located.manifest;
    for o in &req.only {
        if !m.sources.iter().any(|s| &s.name == o) {
            return Err(RestoreError::Usage(format!(
                "--only {o}: backup {} has no source \"{o}\"; its sources: {}",
                m.id,
                m.sources
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let sources: Vec<&SourceEntry> = m
        .sources
        .iter()
        .filter(|s| req.only.is_empty() || req.only.contains(&s.name))
        .collect();
    let files_dir = |e: &SourceEntry| files_dir_for(job, req.files_to.as_ref(), e);
    // status and retrieve only count and request objects; they refuse what a restore
    // would refuse, so no retrieval is paid for a backup that cannot be restored.
    let packing = Repository::new(located.storage.as_ref(), &job.name).packing(
        m,
        &packing::Expect::of(job, false),
        keys_for(job, req.identity.as_ref())?,
    )?;
    let survey = lifecycle::survey(
        Repository::new(located.storage.as_ref(), &job.name),
        &sources,
        &packing,
        &files_dir,
        req.download_to.as_deref(),
    )
    .await?;
    Ok(Surveyed {
        archive: archive_class(config, &located.destination),
        located,
        survey,
    })
}

/// Where a files source is restored: `--files-to`, else the configured source's path; None
/// when neither says (the directory recorded in the backup is never used).
fn files_dir_for(job: &Job, files_to: Option<&PathBuf>, entry: &SourceEntry) -> Option<PathBuf> {
    files_to.cloned().or_else(|| {
        job.sources.iter().find_map(|s| match s {
            SourceConfig::Files(f) if f.name == entry.name => Some(f.path.clone()),
            _ => None,
        })
    })
}

/// The destination's storage class and retrieval settings, when reading it needs a
/// retrieval.
pub fn archive_class(
    config: &Config,
    destination: &str,
) -> Option<(StorageClass, crate::storage::class::Retrieval)> {
    let d = config.destinations.get(destination)?;
    let class = d.storage_class().filter(|c| c.needs_retrieval())?;
    Some((class, d.settings.retrieval()?))
}

/// Poll until every object is restorable: 1 s, doubling up to 10 minutes between checks
/// (a retrieval takes minutes to hours), with a progress line each time.
async fn wait_for_retrieval(
    storage: &dyn Storage,
    survey: &mut lifecycle::Survey,
    destination: &str,
) -> Result<(), RestoreError> {
    let mut delay = std::time::Duration::from_secs(1);
    let max = std::time::Duration::from_secs(600);
    loop {
        let total = survey.objects.len();
        let done = survey
            .objects
            .iter()
            .filter(|o| o.state.restorable())
            .count();
        if done == total {
            info!("retrieval from {destination} complete: {}", survey.counts());
            return Ok(());
        }
        info!(
            "waiting for the retrieval from {destination}: {done} of {total} object(s) restorable ({}); next check in {}",
            survey.counts(),
            humantime::format_duration(delay)
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(max);
        lifecycle::refresh(storage, survey).await?;
        // A retrieved copy that expired meanwhile is archived again: ask once more.
        if survey.count(lifecycle::State::Available) > 0 {
            return Err(RestoreError::RetrievalPending(format!(
                "{} object(s) on {destination} are archived again (their retrieved copy expired); run the restore again",
                survey.count(lifecycle::State::Available)
            )));
        }
    }
}

/// The source a backup's database is restored with: the job's own, when the config still
/// has a source of that name, engine and mode (a base backup with WAL, or a dump), else the
/// engine's defaults for that mode: a config changed from one mode to the other must not
/// hand a base backup to the dump's restore, or the reverse.
pub fn database_for(job: &Job, entry: &SourceEntry) -> Option<Arc<dyn Database>> {
    let base_backup = entry.wal.is_some();
    job.sources
        .iter()
        .filter_map(SourceConfig::database)
        .find(|d| {
            d.name() == entry.name
                && d.kind() == entry.kind
                && d.wal_source().is_some() == base_backup
        })
        .cloned()
        .or_else(|| {
            crate::source::find(&entry.kind)
                .and_then(|e| e.unconfigured_for(&entry.name, base_backup))
        })
}

struct DatabaseStep<'a> {
    entry: &'a SourceEntry,
    database: Arc<dyn Database>,
    target: String,
}

struct Plan<'a> {
    databases: Vec<DatabaseStep<'a>>,
    files: Vec<&'a SourceEntry>,
}

/// Split `--to` values into per-source targets ("SOURCE=TARGET") and one plain target. A
/// value is per-source when what precedes its first '=' is a source name (no ':' or '/',
/// which every URL and path has before any '=').
fn split_targets(values: &[String]) -> (BTreeMap<String, String>, Vec<String>) {
    let mut named = BTreeMap::new();
    let mut plain = Vec::new();
    for v in values {
        match v.split_once('=') {
            Some((name, target))
                if !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
            {
                named.insert(name.to_string(), target.to_string());
            }
            _ => plain.push(v.clone()),
        }
    }
    (named, plain)
}

/// Which of the backup's sources to restore, and where, checked against the request before
/// any work.
fn plan<'a>(
    manifest: &'a Manifest,
    req: &RestoreRequest,
    database_for: &dyn Fn(&SourceEntry) -> Option<Arc<dyn Database>>,
) -> Result<Plan<'a>, RestoreError> {
    let chosen = chosen_sources(manifest, req)?;
    let files: Vec<&SourceEntry> = chosen
        .iter()
        .copied()
        .filter(|s| s.files.is_some())
        .collect();
    let dbs = databases_of(manifest, &chosen, database_for)?;
    let (named, plain) = split_targets(&req.to);
    let db_names: Vec<&str> = dbs.iter().map(|(s, _)| s.name.as_str()).collect();
    check_targets(manifest, &named, &plain, &db_names)?;
    let mut databases = Vec::new();
    let mut missing = Vec::new();
    for (entry, database) in dbs {
        let Some(target) = named
            .get(&entry.name)
            .cloned()
            .or_else(|| plain.first().cloned())
        else {
            missing.push((entry, database));
            continue;
        };
        if let Err(e) = database.check_target(&target) {
            return Err(RestoreError::Usage(format!(
                "invalid --to for source \"{}\" ({}) \"{target}\": {e}",
                entry.name, entry.kind
            )));
        }
        databases.push(DatabaseStep {
            entry,
            database,
            target,
        });
    }
    if !missing.is_empty() {
        return Err(missing_targets(manifest, &missing, &files, &db_names));
    }
    for step in &databases {
        check_into_source(manifest, req, step)?;
    }
    check_options(manifest, req, &databases, &files, &db_names)?;
    Ok(Plan { databases, files })
}

/// The sources `--only` names (all of them without it), each of which must exist.
fn chosen_sources<'a>(
    manifest: &'a Manifest,
    req: &RestoreRequest,
) -> Result<Vec<&'a SourceEntry>, RestoreError> {
    let names: Vec<&str> = manifest.sources.iter().map(|s| s.name.as_str()).collect();
    for o in &req.only {
        if !names.contains(&o.as_str()) {
            return Err(RestoreError::Usage(format!(
                "backup {} has no source \"{o}\"; its sources: {}",
                manifest.id,
                names.join(", ")
            )));
        }
    }
    Ok(manifest
        .sources
        .iter()
        .filter(|s| req.only.is_empty() || req.only.contains(&s.name))
        .collect())
}

/// A database source with the engine that restores it.
type SourceEngine<'a> = (&'a SourceEntry, Arc<dyn Database>);

/// The engine of each chosen database source; one this version does not know stops the
/// restore.
fn databases_of<'a>(
    manifest: &Manifest,
    chosen: &[&'a SourceEntry],
    database_for: &dyn Fn(&SourceEntry) -> Option<Arc<dyn Database>>,
) -> Result<Vec<SourceEngine<'a>>, RestoreError> {
    let mut dbs = Vec::new();
    for s in chosen.iter().copied().filter(|s| s.files.is_none()) {
        match database_for(s) {
            Some(d) => dbs.push((s, d)),
            None => {
                return Err(RestoreError::NotFound(format!(
                    "backup {} has source \"{}\" of type \"{}\", which this version of stowage cannot restore; use a newer stowage, or restore it by hand (README: restore by hand)",
                    manifest.id, s.name, s.kind
                )));
            }
        }
    }
    Ok(dbs)
}

/// `--to` values fit the databases being restored: each named one is among them, and a
/// plain one is given once, for a single database.
fn check_targets(
    manifest: &Manifest,
    named: &BTreeMap<String, String>,
    plain: &[String],
    db_names: &[&str],
) -> Result<(), RestoreError> {
    for n in named.keys() {
        if !db_names.contains(&n.as_str()) {
            let all_dbs: Vec<&str> = manifest
                .sources
                .iter()
                .filter(|s| s.files.is_none())
                .map(|s| s.name.as_str())
                .collect();
            return Err(RestoreError::Usage(format!(
                "--to {n}=…: {}; database sources of backup {}: {}",
                if all_dbs.contains(&n.as_str()) {
                    format!("source \"{n}\" is not being restored (see --only)")
                } else {
                    format!("backup {} has no database source \"{n}\"", manifest.id)
                },
                manifest.id,
                if all_dbs.is_empty() {
                    "none".to_string()
                } else {
                    all_dbs.join(", ")
                }
            )));
        }
    }
    if plain.len() > 1 {
        return Err(RestoreError::Usage(format!(
            "--to is given {} times without a source name; give one target per database as --to SOURCE=TARGET",
            plain.len()
        )));
    }
    if !plain.is_empty() && db_names.len() > 1 {
        return Err(RestoreError::Usage(format!(
            "backup {} has {} database sources ({}); name each target as --to SOURCE=TARGET, or restore one with --only NAME",
            manifest.id,
            db_names.len(),
            db_names.join(", ")
        )));
    }
    Ok(())
}

/// The error for the database sources no `--to` gives a target, all of them at once, with
/// the flags that would give each its target.
fn missing_targets(
    manifest: &Manifest,
    missing: &[SourceEngine<'_>],
    files: &[&SourceEntry],
    db_names: &[&str],
) -> RestoreError {
    let others = if files.is_empty() {
        String::new()
    } else {
        format!(
            ", or restore only the files with --only {}",
            files
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(" --only ")
        )
    };
    // The engine's example without its remark ("/PATH/TO/dump.rdb (the stopped server's…)").
    let example = |d: &dyn Database| {
        let e = d.target_example();
        e.split_once(" (").map_or(e, |(head, _)| head).to_string()
    };
    if let ([(entry, database)], 1) = (missing, db_names.len()) {
        return RestoreError::Usage(format!(
            "backup {} has database source \"{}\" ({}): give --to {}{others}",
            manifest.id,
            entry.name,
            entry.kind,
            database.target_example(),
        ));
    }
    let listed: Vec<String> = missing
        .iter()
        .map(|(e, _)| format!("\"{}\" ({})", e.name, e.kind))
        .collect();
    let forms: Vec<String> = missing
        .iter()
        .map(|(e, _)| format!("--to {}=TARGET", e.name))
        .collect();
    let examples: Vec<String> = missing
        .iter()
        .map(|(e, d)| format!("--to {}={}", e.name, example(d.as_ref())))
        .collect();
    RestoreError::Usage(format!(
        "backup {} has {} database source{} with no target: {}; give one --to SOURCE=TARGET per database: {}, e.g. {}{others}",
        manifest.id,
        missing.len(),
        if missing.len() == 1 { "" } else { "s" },
        listed.join(", "),
        forms.join(" "),
        examples.join(" "),
    ))
}

/// `--clean` into the very database a backup was taken from drops the live objects and
/// replaces them with the backup's: refused unless `--force-into-source` says it is meant.
/// Without `--clean` nothing live is dropped (a non-empty target, or a table that exists,
/// is refused anyway), which is how the healer puts missing tables back.
fn check_into_source(
    manifest: &Manifest,
    req: &RestoreRequest,
    step: &DatabaseStep<'_>,
) -> Result<(), RestoreError> {
    if !req.clean || req.force_into_source {
        return Ok(());
    }
    let Some(own) = into_source::is_source(step.database.as_ref(), &step.target) else {
        return Ok(());
    };
    let (name, id) = (&step.entry.name, &manifest.id);
    let when = manifest.started_at.format("%Y-%m-%d %H:%M UTC");
    let target = crate::source::url::redact(&step.target);
    let server = step.database.own_target().is_some();
    let what = match (server, req.tables.is_empty()) {
        (true, true) => "the live database's objects that are in the backup are dropped and replaced by the backup's, and what was written to them".to_string(),
        (true, false) => format!(
            "the live tables {} are dropped and replaced by the backup's, and what was written to them",
            req.tables.join(", ")
        ),
        (false, _) => "the live database file is replaced by the backup's, and what was written to it".to_string(),
    };
    let own = if own == target {
        String::new()
    } else {
        format!(" ({own})")
    };
    let beside = if server {
        "a new database with --create"
    } else {
        "a new file"
    };
    Err(RestoreError::Usage(format!(
        "--to {target} is the live database of source \"{name}\"{own}, which backup {id} was taken from: with --clean, {what} since {when} is lost; nothing was changed; to restore beside it, give another --to (e.g. {beside}) and switch over; to replace the live data anyway (stop the application first), add --force-into-source"
    )))
}

/// The table and files options fit what is being restored, and something is.
fn check_options(
    manifest: &Manifest,
    req: &RestoreRequest,
    databases: &[DatabaseStep<'_>],
    files: &[&SourceEntry],
    db_names: &[&str],
) -> Result<(), RestoreError> {
    let selecting = !req.tables.is_empty() || !req.exclude_tables.is_empty() || req.all_tables;
    if selecting && databases.len() > 1 {
        return Err(RestoreError::Usage(format!(
            "--table, --exclude-table and --all-tables apply to one database; add --only NAME (one of: {})",
            db_names.join(", ")
        )));
    }
    if let Some(d) = databases.first()
        && (!req.tables.is_empty() || !req.exclude_tables.is_empty())
        && !d.database.selects_objects()
    {
        return Err(RestoreError::Usage(format!(
            "source \"{}\" is a {} backup, which is restored whole; remove --table and --exclude-table",
            d.entry.name, d.entry.kind
        )));
    }
    if databases.is_empty() {
        if !req.to.is_empty() {
            return Err(RestoreError::Usage(
                "--to is for database sources, and none is being restored; remove it".into(),
            ));
        }
        if !req.tables.is_empty() || !req.exclude_tables.is_empty() || req.all_tables {
            return Err(RestoreError::Usage(
                "--table, --exclude-table and --all-tables are for database sources, and none is being restored".into(),
            ));
        }
    }
    if files.len() > 1 && req.files_to.is_some() {
        return Err(RestoreError::Usage(format!(
            "backup {} has {} files sources; --files-to needs one: add --only NAME",
            manifest.id,
            files.len()
        )));
    }
    if files.is_empty() && (req.files_to.is_some() || req.orphans_to.is_some()) {
        return Err(RestoreError::Usage(
            "--files-to and --orphans-to are for files sources, and none is being restored".into(),
        ));
    }
    check_files_options(manifest, req, files)?;
    if databases.is_empty() && files.is_empty() {
        return Err(RestoreError::NotFound(format!(
            "backup {} has nothing this version of stowage can restore",
            manifest.id
        )));
    }
    Ok(())
}

/// `--keep-extra` and `--path` fit the files sources being restored; the patterns parse.
fn check_files_options(
    manifest: &Manifest,
    req: &RestoreRequest,
    files: &[&SourceEntry],
) -> Result<(), RestoreError> {
    if files.is_empty() && (req.keep_extra || !req.paths.is_empty()) {
        return Err(RestoreError::Usage(
            "--keep-extra and --path are for files sources, and none is being restored; remove them, or name a files source with --only".into(),
        ));
    }
    if files.len() > 1 && !req.paths.is_empty() {
        return Err(RestoreError::Usage(format!(
            "backup {} has {} files sources ({}); --path applies to one: add --only NAME",
            manifest.id,
            files.len(),
            files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if let Err(e) = crate::pathfilter::PathPatterns::new(&req.paths) {
        return Err(RestoreError::Usage(format!(
            "--path: {e}; patterns are globs as in a files source's include (\"*.jpg\", \"media/2026/**\")"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod memory_tests;

#[cfg(test)]
mod tests {
    use super::{RestoreError, RestoreRequest, plan, resolve_id};

    /// A destination's failure reaches the caller with its kind (not found, denied), and
    /// the message still quotes the object key.
    #[tokio::test]
    async fn a_storage_failure_keeps_its_kind_and_names_the_key() {
        use crate::storage::StorageError;
        let dir = tempfile::tempdir().expect("tempdir");
        let st = crate::storage::local::LocalStorage::new(dir.path().to_path_buf());
        let packing = crate::repo::packing::Packing {
            compression: crate::codec::Compression::Zstd,
            encrypted: true,
            keys: None,
        };
        let missing = "app/20260101T000000.000Z/db.pgdump.zst.age";
        match super::check_keys(&st, &packing, &[missing]).await {
            Err(
                e @ RestoreError::Object {
                    source: StorageError::NotFound(_),
                    ..
                },
            ) => {
                assert!(e.to_string().starts_with(&format!("{missing}: ")), "{e}");
            }
            other => panic!("want a not-found storage error, got {other:?}"),
        }
        let escaping = "../outside";
        match super::check_keys(&st, &packing, &[escaping]).await {
            Err(RestoreError::Object {
                key,
                source: StorageError::Denied(why),
            }) => {
                assert_eq!(key, escaping);
                assert!(why.message().contains("refusing object key"), "{why}");
            }
            other => panic!("want a denied storage error, got {other:?}"),
        }
    }

    /// An interrupted restore says "nothing was changed" only while nothing was: no step
    /// finished, and the one under way applies all or nothing and had not reached its
    /// commit point.
    #[tokio::test]
    async fn an_interrupted_restore_claims_no_change_only_before_any_commit() {
        use super::{COMMITTING, Progress};
        use crate::engine::commit_point;
        use std::sync::Mutex;
        let says = |p: &Mutex<Progress>| Progress::interrupted(p, "SIGTERM", "the target");
        let p = Mutex::new(Progress::default());
        assert!(says(&p).contains("nothing was changed"), "{}", says(&p));
        Progress::start(&p, "database db".into(), true);
        let t = says(&p);
        assert!(
            t.contains("rolled back") && t.contains("nothing was changed"),
            "{t}"
        );
        // The engine reaches its commit point inside the restore's scope.
        let flag = p.lock().expect("lock").committing.clone();
        COMMITTING.scope(flag, async { commit_point() }).await;
        let t = says(&p);
        assert!(
            !t.contains("nothing was changed")
                && t.contains("database db")
                && t.contains("check it"),
            "{t}"
        );
        Progress::finish(&p);
        Progress::start(&p, "files uploads".into(), false);
        let t = says(&p);
        assert!(
            t.contains("database db already restored")
                && t.contains("files uploads was stopped part way")
                && !t.contains("nothing was changed"),
            "{t}"
        );
        // A new step starts uncommitted; outside a restore, commit_point does nothing.
        commit_point();
        Progress::start(&p, "database other".into(), true);
        assert!(says(&p).contains("database other was stopped before its commit"));
    }
    use crate::repo::manifest::{FilesStats, Manifest, SourceEntry};

    fn entry(name: &str, kind: &str) -> SourceEntry {
        SourceEntry {
            name: name.into(),
            kind: kind.into(),
            format: String::new(),
            key: format!("app/X/{name}"),
            size: 1,
            raw_size: 1,
            sha256: String::new(),
            files: (kind == "files").then(FilesStats::default),
            ..Default::default()
        }
    }

    fn manifest(sources: &[(&str, &str)]) -> Manifest {
        Manifest {
            format: 1,
            job: "app".into(),
            id: "X".into(),
            started_at: chrono::Utc::now(),
            finished_at: chrono::Utc::now(),
            compression: crate::codec::Compression::Zstd,
            encryption: None,
            sources: sources.iter().map(|(n, k)| entry(n, k)).collect(),
            tools: Default::default(),
            auth: None,
            proof: Default::default(),
        }
    }

    fn req(f: impl FnOnce(&mut RestoreRequest)) -> RestoreRequest {
        let mut r = RestoreRequest {
            job: "app".into(),
            id: "latest".into(),
            ..Default::default()
        };
        f(&mut r);
        r
    }

    /// Which sources a request restores (databases, then files), or its usage error.
    fn outcome(m: &Manifest, r: &RestoreRequest) -> Result<(Vec<String>, Vec<String>), String> {
        let resolve =
            |e: &SourceEntry| crate::source::find(&e.kind).map(|x| x.unconfigured(&e.name));
        match plan(m, r, &resolve) {
            Ok(p) => Ok((
                p.databases.iter().map(|s| s.entry.name.clone()).collect(),
                p.files.iter().map(|s| s.name.clone()).collect(),
            )),
            Err(RestoreError::Usage(e) | RestoreError::NotFound(e)) => Err(e),
            Err(e) => Err(format!("unexpected: {e}")),
        }
    }

    #[test]
    fn plans_check_the_request_before_any_work() {
        let set = manifest(&[("db", "postgres"), ("uploads", "files"), ("media", "files")]);
        let to = |r: &mut RestoreRequest| r.to = vec!["postgres://h/db".into()];
        let ok = |d: &[&str], f: &[&str]| {
            Ok((
                d.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                f.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ))
        };
        assert_eq!(outcome(&set, &req(to)), ok(&["db"], &["uploads", "media"]));
        let e = outcome(&set, &req(|_| {})).expect_err("no --to");
        assert!(
            e.contains("--to") && e.contains("--only uploads --only media"),
            "{e}"
        );
        assert_eq!(
            outcome(&set, &req(|r| r.only = vec!["uploads".into()])),
            ok(&[], &["uploads"])
        );
        let e = outcome(&set, &req(|r| r.only = vec!["upload".into()])).expect_err("typo");
        assert!(
            e.contains("no source \"upload\"") && e.contains("db, uploads, media"),
            "{e}"
        );
        let e = outcome(
            &set,
            &req(|r| {
                r.only = vec!["uploads".into()];
                r.to = vec!["postgres://h/db".into()];
            }),
        )
        .expect_err("--to without a database");
        assert!(e.contains("--to"), "{e}");
        let e = outcome(
            &set,
            &req(|r| {
                to(r);
                r.files_to = Some("/x".into());
            }),
        )
        .expect_err("--files-to with two files sources");
        assert!(e.contains("--only"), "{e}");
        let e = outcome(
            &set,
            &req(|r| {
                r.only = vec!["media".into()];
                r.tables = vec!["orders".into()];
            }),
        )
        .expect_err("--table without a database");
        assert!(e.contains("--table"), "{e}");
        let two_dbs = manifest(&[("a", "postgres"), ("b", "postgres")]);
        let e = outcome(&two_dbs, &req(to)).expect_err("two databases, one --to");
        assert!(e.contains("--only NAME"), "{e}");
        assert_eq!(
            outcome(
                &two_dbs,
                &req(|r| {
                    to(r);
                    r.only = vec!["b".into()];
                })
            ),
            ok(&["b"], &[])
        );
    }

    #[test]
    fn several_databases_take_one_named_target_each() {
        let set = manifest(&[
            ("db", "postgres"),
            ("legacy", "postgres"),
            ("uploads", "files"),
        ]);
        let ok = |d: &[&str], f: &[&str]| {
            Ok((
                d.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                f.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ))
        };
        let named = |r: &mut RestoreRequest| {
            r.to = vec![
                "db=postgres://h/a".into(),
                "legacy=postgres://h/b?sslmode=disable".into(),
            ]
        };
        assert_eq!(
            outcome(&set, &req(named)),
            ok(&["db", "legacy"], &["uploads"])
        );
        let targets = {
            let resolve =
                |e: &SourceEntry| crate::source::find(&e.kind).map(|x| x.unconfigured(&e.name));
            let r = req(named);
            let p = plan(&set, &r, &resolve).expect("plan");
            p.databases
                .iter()
                .map(|d| (d.entry.name.clone(), d.target.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            targets,
            vec![
                ("db".to_string(), "postgres://h/a".to_string()),
                (
                    "legacy".to_string(),
                    "postgres://h/b?sslmode=disable".to_string()
                )
            ]
        );
        // One of two named: the other is missing, and the message says how to name it.
        let e = outcome(&set, &req(|r| r.to = vec!["db=postgres://h/a".into()]))
            .expect_err("legacy has no target");
        assert!(
            e.contains("\"legacy\"") && e.contains("--to legacy=TARGET"),
            "{e}"
        );
        // A name that is not a database source of the backup.
        let e =
            outcome(&set, &req(|r| r.to = vec!["dbb=postgres://h/a".into()])).expect_err("typo");
        assert!(
            e.contains("no database source \"dbb\"") && e.contains("db, legacy"),
            "{e}"
        );
        let e = outcome(&set, &req(|r| r.to = vec!["uploads=/x".into()])).expect_err("files");
        assert!(e.contains("no database source \"uploads\""), "{e}");
        // Named for a source left out by --only.
        let e = outcome(
            &set,
            &req(|r| {
                r.only = vec!["db".into()];
                r.to = vec!["db=postgres://h/a".into(), "legacy=postgres://h/b".into()];
            }),
        )
        .expect_err("legacy not restored");
        assert!(e.contains("not being restored"), "{e}");
        // A target the engine cannot take is refused before any work.
        let e = outcome(
            &set,
            &req(|r| {
                r.only = vec!["db".into()];
                r.to = vec!["db=mysql://h/a".into()];
            }),
        )
        .expect_err("wrong scheme");
        assert!(e.contains("invalid --to for source \"db\""), "{e}");
        // --table with two databases is ambiguous.
        let e = outcome(
            &set,
            &req(|r| {
                named(r);
                r.tables = vec!["orders".into()];
            }),
        )
        .expect_err("--table, two databases");
        assert!(e.contains("--only NAME"), "{e}");
        // A URL with '=' in its query is a plain target, not SOURCE=TARGET.
        assert_eq!(
            outcome(
                &set,
                &req(|r| {
                    r.only = vec!["db".into()];
                    r.to = vec!["postgres://h/a?options=-c%20x=1".into()];
                })
            ),
            ok(&["db"], &[])
        );
        // A backup made by an engine this build does not know.
        let odd = manifest(&[("q", "oracle")]);
        let e = outcome(&odd, &req(|r| r.to = vec!["x".into()])).expect_err("unknown engine");
        assert!(
            e.contains("type \"oracle\"") && e.contains("by hand"),
            "{e}"
        );
    }

    #[test]
    fn ids() {
        let ids = vec![
            "20261122T030000.000Z".to_string(),
            "20261121T030000.000Z".to_string(),
        ];
        assert_eq!(resolve_id(&ids, "latest"), Ok(Some(ids[0].clone())));
        assert_eq!(resolve_id(&ids, "20261121"), Ok(Some(ids[1].clone())));
        assert_eq!(resolve_id(&ids, "2027"), Ok(None));
        assert!(resolve_id(&ids, "2026").is_err());
        assert_eq!(resolve_id(&[], "latest"), Ok(None));
    }
}

#[cfg(test)]
mod engine_choice_tests {
    use super::database_for;
    use crate::engine::WalPosition;
    use crate::repo::manifest::SourceEntry;

    fn job_with(mode: Option<&str>) -> crate::config::Config {
        let mode = mode
            .map(|m| format!("mode = \"{m}\"\n"))
            .unwrap_or_default();
        crate::testkit::config::load_toml(&format!(
            r#"
[destinations.local]
type = "local"
path = "/b"

[jobs.app]
schedule = "0 3 * * *"
destinations = ["local"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "postgres://u@h:5432/app"
{mode}"#
        ))
    }

    fn entry(base_backup: bool) -> SourceEntry {
        SourceEntry {
            name: "db".into(),
            kind: "postgres".into(),
            wal: base_backup.then(|| WalPosition {
                timeline: 1,
                start_lsn: "0/2000028".into(),
                stop_lsn: "0/2000100".into(),
                stop_time: chrono::Utc::now(),
            }),
            ..Default::default()
        }
    }

    /// A base backup is restored by the physical engine and a dump by the logical one,
    /// whichever mode the config has now, or when it has no such source at all.
    #[test]
    fn the_backup_not_the_config_decides_the_mode() {
        for config_mode in [None, Some("logical"), Some("physical")] {
            let config = job_with(config_mode);
            let job = &config.jobs["app"];
            for base_backup in [true, false] {
                let db = database_for(job, &entry(base_backup)).expect("an engine");
                assert_eq!(
                    db.wal_source().is_some(),
                    base_backup,
                    "config mode {config_mode:?}, base backup {base_backup}"
                );
            }
        }
        let mut gone = job_with(None);
        let job = gone.jobs.get_mut("app").expect("job");
        job.sources.clear();
        for base_backup in [true, false] {
            let db = database_for(job, &entry(base_backup)).expect("an engine");
            assert_eq!(db.wal_source().is_some(), base_backup);
        }
    }
}
