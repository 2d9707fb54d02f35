//! Locks at `<job>/locks/<id>.backup` (a backup that may reuse blobs is running),
//! `.sweep` (unreferenced blobs are being deleted) or `.restore`, kept alive by a heartbeat.
//!
//! The lock protocol (both sides write their lock, then list the others'): a sweep that
//! sees a live backup lock postpones itself; a backup that sees a live sweep lock waits
//! for it before listing which blobs exist. With read-after-write consistent listings (S3
//! since 2020, local directories) at least one side sees the other, so a blob is never
//! deleted between a backup deciding to reuse it and the backup's manifest being published.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::storage::{Storage, StorageError};
use std::sync::Arc;

use super::blobs::BlobError;

/// Where the store gives no last-modified time: a backup lock whose id is older than this
/// belongs to a crashed run and no longer blocks sweeps.
const BACKUP_LOCK_STALE: Duration = Duration::from_secs(24 * 3600);
/// Likewise for sweeps, which stop deleting well before this.
const SWEEP_LOCK_STALE: Duration = Duration::from_secs(15 * 60);
/// A held lock is written again this often (`STOWAGE_LOCK_REFRESH` shortens it), so its
/// last-modified time says its holder is alive, on any host.
pub const LOCK_REFRESH: Duration = Duration::from_secs(60);
/// A lock not written for this long is a dead holder's, whatever host it ran on: five
/// missed refreshes, so a slow store or a busy host does not lose a live lock.
pub const LOCK_DEAD: Duration = Duration::from_secs(5 * 60);

pub fn lock_key(job: &str, id: &str, kind: LockKind) -> String {
    crate::repo::layout::lock_key(job, id, kind.as_str())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Backup,
    Sweep,
    /// A restore of the job is writing into its database or files.
    Restore,
}

impl LockKind {
    fn as_str(self) -> &'static str {
        match self {
            LockKind::Backup => "backup",
            LockKind::Sweep => "sweep",
            LockKind::Restore => "restore",
        }
    }
}

/// A lock seen in a listing: its id (the holder's start time), kind, and when it was
/// last written (refreshed), where the store says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub id: String,
    pub kind: LockKind,
    pub since: DateTime<Utc>,
    pub modified: Option<DateTime<Utc>>,
}

impl Lock {
    /// Whether the lock still counts (its holder may be alive). `now` is the store's clock
    /// where known (the last-modified time of a lock this process just wrote), so a host
    /// whose clock is off does not misjudge others' locks. A lock the holder has refreshed
    /// within [`LOCK_DEAD`] is live however long ago it was taken (a long backup stays
    /// locked); one not refreshed for that long is dead (a crashed holder frees the job
    /// within minutes). Only where the store gives no last-modified time does the taken-at
    /// time decide.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        let (from, limit) = match (self.modified, self.kind) {
            (Some(m), _) => (m, LOCK_DEAD),
            (None, LockKind::Backup | LockKind::Restore) => (self.since, BACKUP_LOCK_STALE),
            (None, LockKind::Sweep) => (self.since, SWEEP_LOCK_STALE),
        };
        now.signed_duration_since(from)
            .to_std()
            .map(|age| age < limit)
            // Written "after now": a clock step, not a dead holder.
            .unwrap_or(true)
    }
}

pub fn parse_locks(
    job: &str,
    objects: impl IntoIterator<Item = crate::storage::ObjectMeta>,
) -> Vec<Lock> {
    let prefix = crate::repo::layout::locks_prefix(job);
    objects
        .into_iter()
        .filter_map(|o| {
            let name = o.key.strip_prefix(&prefix)?.to_string();
            let (id, kind) = name.rsplit_once('.')?;
            let kind = match kind {
                "backup" => LockKind::Backup,
                "sweep" => LockKind::Sweep,
                "restore" => LockKind::Restore,
                _ => return None,
            };
            let since = crate::repo::layout::parse_id(id)?;
            Some(Lock {
                id: id.to_string(),
                kind,
                since,
                modified: o.modified,
            })
        })
        .collect()
}

/// [`Lock::is_live`], as a function for filters.
pub(super) fn is_live(lock: &Lock, now: DateTime<Utc>) -> bool {
    lock.is_live(now)
}

/// The job's locks, and the store's "now": the last-modified time of `own` (a lock this
/// process has just written) when the listing has it, else this host's clock.
pub(super) async fn list_locks(
    storage: &dyn Storage,
    job: &str,
    own: Option<&str>,
) -> Result<(Vec<Lock>, DateTime<Utc>), StorageError> {
    let objs = storage
        .list(&crate::repo::layout::locks_prefix(job))
        .await?;
    let now = own
        .and_then(|k| objs.iter().find(|o| o.key == k))
        .and_then(|o| o.modified)
        .unwrap_or_else(Utc::now);
    Ok((parse_locks(job, objs), now))
}

/// How often a held lock is written again: [`LOCK_REFRESH`], or `STOWAGE_LOCK_REFRESH`
/// ("5s", "500ms") when shorter.
pub fn lock_refresh() -> Duration {
    std::env::var("STOWAGE_LOCK_REFRESH")
        .ok()
        .and_then(|v| humantime::parse_duration(&v).ok())
        .map_or(LOCK_REFRESH, |d| {
            d.clamp(Duration::from_millis(100), LOCK_REFRESH)
        })
}

/// Write the lock again on every storage each [`lock_refresh`] until `done`; a write in
/// flight when `done` fires is finished first, so a refresh never re-creates a lock after
/// its holder removed it.
async fn refresh_until(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    done: &CancellationToken,
) {
    let key = lock_key(job, id, kind);
    let period = lock_refresh();
    let mut failing = vec![false; storages.len()];
    loop {
        tokio::select! {
            _ = done.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        for (st, failing) in storages.iter().zip(failing.iter_mut()) {
            match st.put_bytes(&key, lock_body()).await {
                Ok(()) => *failing = false,
                Err(e) => {
                    if !*failing {
                        warn!(
                            job,
                            "cannot refresh lock {key} on {}: {e}; other processes will take the job for free after {} without a refresh",
                            st.location(),
                            humantime::format_duration(LOCK_DEAD)
                        );
                    }
                    *failing = true;
                }
            }
        }
    }
}

/// Run `work` while keeping the lock `id` of `kind` fresh on `storages`.
pub async fn refreshing<F: std::future::Future>(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    work: F,
) -> F::Output {
    let done = CancellationToken::new();
    let work = async {
        let out = work.await;
        done.cancel();
        out
    };
    let (out, ()) = tokio::join!(work, refresh_until(storages, job, id, kind, &done));
    out
}

/// A held lock kept fresh by a task of its own, for holders that cannot wrap their work
/// in [`refreshing`]. [`Heartbeat::stop`] before removing the lock.
pub struct Heartbeat {
    done: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Heartbeat {
    pub fn start(
        storages: Vec<Arc<dyn Storage>>,
        job: &str,
        id: &str,
        kind: LockKind,
    ) -> Heartbeat {
        let done = CancellationToken::new();
        let (job, id, stop) = (job.to_string(), id.to_string(), done.clone());
        let task = tokio::spawn(async move {
            let refs: Vec<&dyn Storage> = storages.iter().map(|s| s.as_ref()).collect();
            refresh_until(&refs, &job, &id, kind, &stop).await;
        });
        Heartbeat {
            done,
            task: Some(task),
        }
    }

    /// Stop refreshing; returns once no refresh is in flight.
    pub async fn stop(mut self) {
        self.done.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.done.cancel();
    }
}

/// The lock's content: who holds it, so a later start can tell a crashed holder.
pub(super) fn lock_body() -> Bytes {
    Bytes::from(serde_json::to_vec(crate::owner::Owner::current()).unwrap_or_default())
}

/// The holder recorded in a lock, if it can be read.
pub async fn lock_owner(storage: &dyn Storage, key: &str) -> Option<crate::owner::Owner> {
    let body = storage.get_bytes(key).await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Announce a running backup (every run holds one, so a later start can recognise the
/// leftovers of a crashed run). With `reuses_blobs`, also wait out any sweep in progress
/// before the backup looks at which blobs exist.
pub async fn lock_backup(
    storage: &dyn Storage,
    job: &str,
    id: &str,
    reuses_blobs: bool,
    cancel: &CancellationToken,
) -> Result<(), BlobError> {
    let own = lock_key(job, id, LockKind::Backup);
    storage.put_bytes(&own, lock_body()).await?;
    if !reuses_blobs {
        return Ok(());
    }
    let mut waited = false;
    loop {
        let (locks, now) = list_locks(storage, job, Some(&own)).await?;
        let sweeping: Vec<Lock> = locks
            .into_iter()
            .filter(|l| l.kind == LockKind::Sweep && is_live(l, now))
            .collect();
        if sweeping.is_empty() {
            if waited {
                info!(job, "blob sweep finished; continuing");
            }
            return Ok(());
        }
        if !waited {
            info!(
                job,
                "waiting for the blob sweep started at {} on {} to finish",
                sweeping[0].id,
                storage.location()
            );
            waited = true;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Err(BlobError::Cancelled),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Another process's backup or restore of the job, holding a live lock here.
#[derive(Debug, Clone)]
pub struct Holder {
    pub lock: Lock,
    pub owner: Option<crate::owner::Owner>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.lock.kind {
            LockKind::Restore => "restore",
            _ => "backup",
        };
        match &self.owner {
            Some(o) => write!(
                f,
                "a {what} by stowage on host {}, pid {}, since {}",
                o.host,
                o.pid,
                self.lock.since.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            None => write!(
                f,
                "a {what} since {}",
                self.lock.since.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
    }
}

/// Backups and restores of `job` by other live processes (their locks here), oldest
/// first. This process's own locks, stale locks and locks of processes known to be gone
/// do not count.
pub async fn holders(
    storage: &dyn Storage,
    job: &str,
    own_id: &str,
) -> Result<Vec<Holder>, StorageError> {
    let me = crate::owner::Owner::current();
    let mut out = Vec::new();
    let (locks, now) = list_locks(storage, job, None).await?;
    // Our own lock (any kind) was just written: its time is the store's now.
    let now = locks
        .iter()
        .find(|l| l.id == own_id)
        .and_then(|l| l.modified)
        .unwrap_or(now);
    for lock in locks {
        if lock.id == own_id || lock.kind == LockKind::Sweep || !is_live(&lock, now) {
            continue;
        }
        let owner = lock_owner(storage, &lock_key(job, &lock.id, lock.kind)).await;
        match &owner {
            Some(o) if o == me => continue,
            Some(o) if o.is_alive() == Some(false) => continue,
            _ => {}
        }
        out.push(Holder { lock, owner });
    }
    out.sort_by(|a, b| a.lock.id.cmp(&b.lock.id));
    Ok(out)
}

/// Take the job's lock of `kind` on every storage: write it, then look for another
/// process's. On a conflict the lock is taken back (so two starting at once never both
/// proceed), and the holder is returned; with `wait`, it waits for the holder to finish
/// and tries again instead. `Ok(None)`: the lock is held.
pub async fn claim_job(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
    wait: bool,
    cancel: &CancellationToken,
) -> Result<Option<Holder>, BlobError> {
    let mut announced = false;
    loop {
        let holder = match announce(storages, job, id, kind).await {
            Ok(holder) => holder,
            // A lock written on an earlier destination would otherwise stay until it is
            // dead (`LOCK_DEAD`), refusing other runs of the job until then.
            Err(e) => {
                for st in storages {
                    unlock(*st, job, id, kind).await;
                }
                return Err(e);
            }
        };
        let Some(holder) = holder else {
            if announced {
                info!(job, "the other run of {job} finished; continuing");
            }
            return Ok(None);
        };
        for st in storages {
            unlock(*st, job, id, kind).await;
        }
        if !wait {
            return Ok(Some(holder));
        }
        if !announced {
            info!(job, "waiting for {holder} of job {job} to finish");
            announced = true;
        }
        // Jittered, so two waiting processes do not keep colliding.
        let pause = Duration::from_millis(2000 + u64::from(std::process::id() % 1000));
        tokio::select! {
            _ = cancel.cancelled() => return Err(BlobError::Cancelled),
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// Writes this run's lock on every destination, then looks for another live holder.
async fn announce(
    storages: &[&dyn Storage],
    job: &str,
    id: &str,
    kind: LockKind,
) -> Result<Option<Holder>, BlobError> {
    for st in storages {
        st.put_bytes(&lock_key(job, id, kind), lock_body()).await?;
    }
    for st in storages {
        if let Some(h) = holders(*st, job, id).await?.into_iter().next() {
            return Ok(Some(h));
        }
    }
    Ok(None)
}

pub async fn unlock(storage: &dyn Storage, job: &str, id: &str, kind: LockKind) {
    let key = lock_key(job, id, kind);
    if let Err(e) = storage.delete(std::slice::from_ref(&key)).await {
        warn!(
            job,
            "could not remove lock {key} from {}: {e}",
            storage.location()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn locks_parse_and_go_stale() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid");
        // Without a last-modified time (a store that gives none): the taken-at time decides.
        let keys = [
            "app/locks/20261122T115900.000Z.sweep",
            "app/locks/20261122T100000.000Z.sweep",
            "app/locks/20261121T130000.000Z.backup",
            "app/locks/20261120T120000.000Z.backup",
            "app/locks/garbage",
        ];
        let objects = keys.iter().map(|k| crate::storage::ObjectMeta {
            key: k.to_string(),
            size: 1,
            modified: None,
        });
        let locks = parse_locks("app", objects);
        assert_eq!(locks.len(), 4);
        let live: Vec<(&str, LockKind)> = locks
            .iter()
            .filter(|l| is_live(l, now))
            .map(|l| (l.id.as_str(), l.kind))
            .collect();
        assert_eq!(
            live,
            vec![
                ("20261122T115900.000Z", LockKind::Sweep),
                ("20261121T130000.000Z", LockKind::Backup)
            ]
        );
    }

    #[test]
    fn a_lock_lives_by_its_refreshes_whatever_its_age() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid");
        let lock = |kind, taken_min: i64, written_min: i64| Lock {
            id: "x".into(),
            kind,
            since: now - chrono::TimeDelta::minutes(taken_min),
            modified: Some(now - chrono::TimeDelta::minutes(written_min)),
        };
        // A backup running for two days, refreshed a minute ago: still held.
        assert!(is_live(&lock(LockKind::Backup, 2 * 24 * 60, 1), now));
        // Taken ten minutes ago and never refreshed since: its holder died.
        assert!(!is_live(&lock(LockKind::Backup, 10, 10), now));
        assert!(!is_live(&lock(LockKind::Restore, 10, 10), now));
        assert!(!is_live(&lock(LockKind::Sweep, 6, 6), now));
        // The boundary: dead from LOCK_DEAD on.
        let dead_min = i64::try_from(LOCK_DEAD.as_secs() / 60).expect("minutes");
        assert!(is_live(&lock(LockKind::Backup, 60, dead_min - 1), now));
        assert!(!is_live(&lock(LockKind::Backup, 60, dead_min), now));
        // Written "in the future" (the store's clock ahead of ours): not dead.
        assert!(is_live(&lock(LockKind::Backup, 0, -3), now));
        // Several refreshes fit in the dead limit.
        assert!(LOCK_REFRESH * 4 < LOCK_DEAD);
    }
}
