//! On start, finish what a crash (kill -9, OOM, power loss) interrupted: a run that died
//! leaves an unpublished `<job>/<id>/` prefix, its lock, `.partial` files on local volumes
//! and open multipart uploads on S3. None of it is visible as a backup, but it takes space
//! and a stale lock holds off blob sweeps. A run is known dead when its lock names a
//! process of this host and boot that is gone, or when its lock has not been refreshed
//! for `locks::LOCK_DEAD` (every holder rewrites its lock each minute), whatever the host.
//! Published backups are never touched.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::repo::locks::LockKind;
use crate::repo::manifest::{self, JobListing};
use crate::repo::{Repository, UploadOf};
use crate::storage::local::{PARTIAL_SUFFIX, partial_owner_alive};
use crate::storage::{Storage, StorageError};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Unpublished backups (ids) whose objects were removed.
    pub runs: Vec<String>,
    pub objects: usize,
    pub partials: usize,
    pub uploads: usize,
    pub locks: usize,
}

impl Recovered {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.objects == 0
            && self.partials == 0
            && self.uploads == 0
            && self.locks == 0
    }
}

/// Clean one job's leftovers on one destination. `started` is this process's start: an
/// unlocked, unpublished prefix older than it can only be a crashed run's (every run
/// takes its lock before writing anything).
pub async fn clean(
    storage: &dyn Storage,
    job: &str,
    started: DateTime<Utc>,
) -> Result<Recovered, StorageError> {
    let mut out = Recovered::default();
    let (listing, now) = read_listing(storage, job).await?;
    let lock_state = clear_dead_locks(storage, job, &listing, now, &mut out).await?;
    let published: BTreeSet<String> = listing.published(job).into_iter().map(|p| p.id).collect();
    let dead = remove_crashed_runs(
        storage,
        &listing,
        &published,
        &lock_state,
        started,
        &mut out,
    )
    .await?;
    remove_empty_runs(storage, job, &lock_state, started, &mut out).await?;
    remove_partials(storage, job, &listing, &mut out).await?;
    abort_uploads(
        storage,
        job,
        started,
        &published,
        &dead,
        &lock_state,
        &mut out,
    )
    .await?;
    if !out.is_empty() {
        info!(
            job,
            destination = %storage.location(),
            "recovered leftovers of interrupted runs on {}: {} unpublished backup(s) ({} object(s)){}, {} temporary file(s), {} open upload(s), {} stale lock(s)",
            storage.location(),
            out.runs.len(),
            out.objects,
            if out.runs.is_empty() {
                String::new()
            } else {
                format!(" [{}]", out.runs.join(", "))
            },
            out.partials,
            out.uploads,
            out.locks
        );
    }
    Ok(out)
}

/// The job's backups and locks; and the time to judge locks by: the store's clock, read
/// off a probe written among the locks, or this host's.
async fn read_listing(
    storage: &dyn Storage,
    job: &str,
) -> Result<(JobListing, DateTime<Utc>), StorageError> {
    // Backups and locks, then the blobs a page at a time: only their leftovers are kept.
    let repo = Repository::new(storage, job);
    let mut listing = repo.backups().await?;
    // Locks are judged by their last-modified time against the store's clock, read off a
    // probe written here: a host whose clock runs ahead must not take another host's live
    // lock for dead (and delete its run's objects). Without the probe, this host's clock.
    let probe = repo.clock_probe_key();
    let probed = storage
        .put_bytes(&probe, bytes::Bytes::from_static(b"{}"))
        .await
        .is_ok();
    let listed = storage.list(&repo.locks_prefix()).await;
    if probed {
        let _ = storage.delete(std::slice::from_ref(&probe)).await;
    }
    listing.locks = listed?;
    let now = listing
        .locks
        .iter()
        .find(|o| o.key == probe)
        .and_then(|o| o.modified)
        .unwrap_or_else(Utc::now);
    listing.locks.retain(|o| o.key != probe);
    Ok((listing, now))
}

/// Deletes the locks of dead holders; returns, for each backup lock's run id, whether its
/// holder is alive.
async fn clear_dead_locks(
    storage: &dyn Storage,
    job: &str,
    listing: &JobListing,
    now: DateTime<Utc>,
    out: &mut Recovered,
) -> Result<HashMap<String, bool>, StorageError> {
    let mut lock_state: HashMap<String, bool> = HashMap::new(); // id → holder alive
    let repo = Repository::new(storage, job);
    for lock in repo.locks(listing) {
        let key = repo.lock_key(&lock.id, lock.kind);
        let alive = match repo.lock_owner(&key).await.and_then(|o| o.is_alive()) {
            // A process of this host and boot that is gone.
            Some(false) => false,
            // Running here, on another host, or unreadable: alive while it is refreshed.
            Some(true) | None => lock.is_live(now),
        };
        if !alive {
            storage.delete(std::slice::from_ref(&key)).await?;
            out.locks += 1;
        }
        if lock.kind == LockKind::Backup {
            lock_state.insert(lock.id.clone(), alive);
        }
    }
    Ok(lock_state)
}

/// Deletes the objects of unpublished runs that crashed; returns their ids.
async fn remove_crashed_runs(
    storage: &dyn Storage,
    listing: &JobListing,
    published: &BTreeSet<String>,
    lock_state: &HashMap<String, bool>,
    started: DateTime<Utc>,
    out: &mut Recovered,
) -> Result<BTreeSet<String>, StorageError> {
    let mut dead: BTreeSet<String> = BTreeSet::new();
    for (id, objects) in &listing.backups {
        if published.contains(id) {
            continue;
        }
        let crashed = match lock_state.get(id) {
            Some(alive) => !alive,
            None => manifest::parse_id(id).is_none_or(|t| t < started),
        };
        if !crashed {
            continue;
        }
        let keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
        storage.delete(&keys).await?;
        out.objects += keys.len();
        out.runs.push(id.clone());
        dead.insert(id.clone());
    }
    Ok(dead)
}

/// Removes the directories of runs that died before their first file was in place (on a
/// store with directories): no listing of objects shows them, and they would stay for good.
/// The same rule as [`remove_crashed_runs`] tells a dead run's from a live one's.
async fn remove_empty_runs(
    storage: &dyn Storage,
    job: &str,
    lock_state: &HashMap<String, bool>,
    started: DateTime<Utc>,
    out: &mut Recovered,
) -> Result<(), StorageError> {
    let prefix = Repository::new(storage, job).job_prefix();
    for dir in storage.empty_dirs(&prefix).await? {
        let id = dir[prefix.len()..].trim_end_matches('/');
        let Some(time) = manifest::parse_id(id) else {
            continue;
        };
        let crashed = match lock_state.get(id) {
            Some(alive) => !alive,
            None => time < started,
        };
        if crashed {
            storage.remove_empty_dir(&dir).await?;
            out.runs.push(id.to_string());
        }
    }
    Ok(())
}

/// Deletes the temporary files of blob and WAL uploads whose process is gone.
async fn remove_partials(
    storage: &dyn Storage,
    job: &str,
    listing: &JobListing,
    out: &mut Recovered,
) -> Result<(), StorageError> {
    // Blob uploads of dead writers: temporary files whose process is gone.
    let dead_partial = |k: &str| k.ends_with(PARTIAL_SUFFIX) && !partial_owner_alive(k);
    let mut partials: Vec<String> = listing
        .locks
        .iter()
        .map(|o| o.key.clone())
        .filter(|k| dead_partial(k))
        .collect();
    // Blobs, and WAL files of a shipper that died: the new one ships them again from its
    // spool.
    let repo = Repository::new(storage, job);
    for prefix in [repo.blobs_prefix(), repo.wal_root()] {
        storage
            .list_pages(&prefix, &mut |page| {
                partials.extend(page.into_iter().map(|o| o.key).filter(|k| dead_partial(k)))
            })
            .await?;
    }
    if !partials.is_empty() {
        storage.delete(&partials).await?;
        out.partials = partials.len();
    }
    Ok(())
}

/// Aborts the open multipart uploads of dead runs, begun before `started`.
async fn abort_uploads(
    storage: &dyn Storage,
    job: &str,
    started: DateTime<Utc>,
    published: &BTreeSet<String>,
    dead: &BTreeSet<String>,
    lock_state: &HashMap<String, bool>,
    out: &mut Recovered,
) -> Result<(), StorageError> {
    // Open multipart uploads: of a dead run's prefix, or of blobs when no other run of the
    // job is alive (a blob upload carries no run id). Only those begun before this start.
    let others_alive = lock_state.values().any(|alive| *alive);
    let repo = Repository::new(storage, job);
    for u in storage.open_uploads(&repo.job_prefix()).await? {
        if u.initiated.is_some_and(|t| t >= started) {
            continue;
        }
        let abandon = match repo.upload_of(&u.key) {
            UploadOf::Blob => !others_alive,
            // Begun before this process: the shipper of a daemon that is gone (one runs
            // per state directory), whose spool still holds the file.
            UploadOf::Wal => true,
            UploadOf::Run(id) => {
                dead.contains(id)
                    || published.contains(id)
                    || !lock_state.get(id).copied().unwrap_or(false)
            }
        };
        if abandon {
            match storage.abort_upload(&u).await {
                Ok(()) => out.uploads += 1,
                Err(e) => warn!(job, "cannot abort the open upload of {}: {e}", u.key),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::clean;
    use crate::storage::local::LocalStorage;

    /// A shipper killed mid-upload leaves a temporary WAL file; the next start removes it
    /// and nothing else of the WAL.
    #[tokio::test]
    async fn a_dead_shippers_temporary_wal_file_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = dir.path().join("app/wal/db");
        std::fs::create_dir_all(wal.join("index")).expect("mkdir");
        let shipped = wal.join("000000010000000000000003.zst");
        let record = wal.join("index/000000010000000000000003.json");
        // pid 0 with an impossible start time: no such process.
        let dead = wal.join("000000010000000000000004.zst.0-0-7.partial");
        for f in [&shipped, &record, &dead] {
            std::fs::write(f, b"x").expect("write");
        }
        let st = LocalStorage::new(dir.path().to_path_buf());
        let out = clean(&st, "app", chrono::Utc::now()).await.expect("clean");
        assert_eq!(out.partials, 1, "{out:?}");
        assert!(!dead.exists());
        assert!(shipped.exists() && record.exists());
    }

    /// A run killed between making its backup's directory and writing its first file
    /// leaves an empty directory no listing shows: the next start removes it, and leaves
    /// a newer run's (this process's own) and directories that are not runs'.
    #[tokio::test]
    async fn a_crashed_runs_empty_directory_is_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = chrono::Utc::now();
        let crashed = crate::repo::manifest::new_id(started - chrono::Duration::minutes(3));
        let running = crate::repo::manifest::new_id(started + chrono::Duration::seconds(1));
        let app = dir.path().join("app");
        for d in [crashed.as_str(), running.as_str(), "notes"] {
            std::fs::create_dir_all(app.join(d)).expect("mkdir");
        }
        let st = LocalStorage::new(dir.path().to_path_buf());
        let out = clean(&st, "app", started).await.expect("clean");
        assert_eq!(out.runs, vec![crashed.clone()], "{out:?}");
        assert!(!out.is_empty(), "a removed directory is reported");
        assert!(!app.join(&crashed).exists());
        assert!(app.join(&running).is_dir() && app.join("notes").is_dir());
    }
}
