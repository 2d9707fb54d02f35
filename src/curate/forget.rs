//! `forget`: delete one chosen backup from a destination (or every destination of the job
//! that has it). Everything that could refuse is checked on every destination before
//! anything is deleted anywhere: the job's lock (no run, retention or restore beside it),
//! the newest backup of a destination (only with `--force`), the class's minimum storage
//! duration (as retention holds it; `--force` deletes anyway) and Object Lock (never). The
//! manifest goes first, so the backup stops being one at once; then its objects; then the
//! blob sweep retention runs removes the blobs no remaining backup references.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Destination, Job};
use crate::repo::blobs::{BlobError, SweepOutcome};
use crate::repo::locks::LockKind;
use crate::repo::manifest::JobListing;
use crate::repo::{JobLocks, Repository};
use crate::retention::Decision;
use crate::storage::{Storage, StorageError};

#[derive(Debug, Clone)]
pub struct Request {
    pub job: String,
    /// An id, a unique prefix of one, or "latest".
    pub id: String,
    /// Only this destination (default: every destination of the job that has the backup).
    pub from: Option<String>,
    pub force: bool,
    pub dry_run: bool,
}

/// Why nothing was deleted.
#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    /// Bad usage: an unknown destination, an ambiguous id.
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    /// Refused unless `--force`: the newest backup of a destination, or one younger than
    /// its class's minimum storage duration.
    #[error("{0}; nothing was deleted")]
    NeedsForce(String),
    /// Under Object Lock: it cannot be deleted before the date.
    #[error(
        "backup {id} on {destination} is under object lock until {until}: it cannot be deleted before then; nothing was deleted",
        until = until.format("%Y-%m-%d %H:%M:%S UTC")
    )]
    Locked {
        id: String,
        destination: String,
        until: DateTime<Utc>,
    },
    /// Another process runs, retains or restores the job.
    #[error(
        "job {job} is busy: {holder}; nothing was deleted. Wait for it to finish and run forget again"
    )]
    Busy { job: String, holder: String },
    #[error("cannot take the lock of job {job}: {source}; nothing was deleted")]
    Lock {
        job: String,
        #[source]
        source: BlobError,
    },
    #[error("{destination}: {source}")]
    Storage {
        destination: String,
        #[source]
        source: StorageError,
    },
}

/// What was (or, in a dry run, would be) deleted on one destination.
#[derive(Debug)]
pub struct Forgotten {
    pub destination: String,
    /// Keys of the backup: its manifest, then its objects.
    pub keys: Vec<String>,
    pub bytes: u64,
    /// The blob sweep after the delete (None: a dry run, or a job without files).
    pub sweep: Option<Result<SweepOutcome, BlobError>>,
}

pub struct Outcome {
    pub id: String,
    pub dry_run: bool,
    pub destinations: Vec<Forgotten>,
}

/// One destination the backup is on.
struct Place<'a> {
    name: String,
    dest: &'a Destination,
    storage: Arc<dyn Storage>,
    listing: JobListing,
}

impl Place<'_> {
    fn repo<'r>(&'r self, job: &'r str) -> Repository<'r> {
        Repository::new(self.storage.as_ref(), job)
    }
}

pub async fn forget(config: &Config, job: &Job, req: &Request) -> Result<Outcome, ForgetError> {
    let names: Vec<String> = match &req.from {
        Some(d) => {
            super::job_destination(config, job, "--from", d).map_err(ForgetError::Usage)?;
            vec![d.clone()]
        }
        None => job.destinations.clone(),
    };
    let mut places = Vec::new();
    for name in names {
        let Some(dest) = config.destinations.get(&name) else {
            continue;
        };
        let storage: Arc<dyn Storage> = Arc::from(crate::storage::open(dest).await);
        let listing = Repository::new(storage.as_ref(), &job.name)
            .backups()
            .await
            .map_err(|source| ForgetError::Storage {
                destination: name.clone(),
                source,
            })?;
        places.push(Place {
            name,
            dest,
            storage,
            listing,
        });
    }
    let id = resolve(job, &places, &req.id)?;
    places.retain(|p| p.listing.published(&job.name).iter().any(|b| b.id == id));
    let time = crate::repo::manifest::parse_id(&id).unwrap_or_else(Utc::now);
    for p in &places {
        refusal(job, p, &id, time, req.force).await?;
    }
    if req.dry_run {
        for p in &places {
            busy(job, p, "").await?;
        }
        let destinations = places.iter().map(|p| planned(job, p, &id)).collect();
        return Ok(Outcome {
            id,
            dry_run: true,
            destinations,
        });
    }
    let lock_id = crate::repo::manifest::new_id(Utc::now());
    let storages: Vec<&dyn Storage> = places.iter().map(|p| p.storage.as_ref()).collect();
    let never = CancellationToken::new();
    let locks = JobLocks::new(&job.name, &lock_id, LockKind::Backup);
    match locks.claim(&storages, false, &never).await {
        Ok(None) => {}
        Ok(Some(holder)) => {
            return Err(ForgetError::Busy {
                job: job.name.clone(),
                holder: holder.to_string(),
            });
        }
        Err(source) => {
            return Err(ForgetError::Lock {
                job: job.name.clone(),
                source,
            });
        }
    }
    let heartbeat = locks.heartbeat(places.iter().map(|p| p.storage.clone()).collect());
    let result = delete_all(job, &places, &id, &lock_id).await;
    heartbeat.stop().await;
    for p in &places {
        p.repo(&job.name).unlock(&lock_id, LockKind::Backup).await;
    }
    Ok(Outcome {
        id,
        dry_run: false,
        destinations: result?,
    })
}

/// The id asked for, among the published backups of the destinations looked at.
fn resolve(job: &Job, places: &[Place<'_>], wanted: &str) -> Result<String, ForgetError> {
    let mut ids: Vec<String> = places
        .iter()
        .flat_map(|p| p.listing.published(&job.name))
        .map(|b| b.id)
        .collect();
    ids.sort_by(|a, b| b.cmp(a));
    ids.dedup();
    match crate::restore::resolve_id(&ids, wanted).map_err(ForgetError::Usage)? {
        Some(id) => Ok(id),
        None => Err(ForgetError::NotFound(format!(
            "no published backup \"{wanted}\" of job {} on {}; see `stowage list {}`",
            job.name,
            places
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            job.name
        ))),
    }
}

/// Why the backup must not go from `p`, if it must not.
async fn refusal(
    job: &Job,
    p: &Place<'_>,
    id: &str,
    time: DateTime<Utc>,
    force: bool,
) -> Result<(), ForgetError> {
    let published = p.listing.published(&job.name);
    if !force && published.first().is_some_and(|b| b.id == id) {
        return Err(ForgetError::NeedsForce(format!(
            "backup {id}: it is the newest backup on {}; the last good backup is never deleted without --force",
            p.name
        )));
    }
    let now = Utc::now();
    // The same holds as retention's: one decision, "remove", put through them.
    let mut decision = [Decision {
        id: id.to_string(),
        time,
        keep: false,
        reasons: Vec::new(),
        locked_until: None,
    }];
    if let Some((class, days)) = p.dest.min_storage() {
        crate::retention::hold_minimum(&mut decision, chrono::TimeDelta::days(days.into()), now);
        if !force && decision[0].keep {
            return Err(ForgetError::NeedsForce(format!(
                "backup {id} on {} is younger than {class}'s minimum storage duration of {days} days: deleting it now saves nothing (the rest is billed anyway); pass --force to delete it anyway",
                p.name
            )));
        }
    }
    let locks = p
        .repo(&job.name)
        .object_locks(&[(id, time)], p.dest.object_lock())
        .await
        .map_err(|source| ForgetError::Storage {
            destination: p.name.clone(),
            source,
        })?;
    crate::retention::hold_locked(&mut decision, &locks, now);
    if let Some(until) = decision[0].locked_until {
        return Err(ForgetError::Locked {
            id: id.to_string(),
            destination: p.name.clone(),
            until,
        });
    }
    Ok(())
}

/// A live holder of the job on `p` (a dry run, which writes no lock, only looks).
async fn busy(job: &Job, p: &Place<'_>, own_id: &str) -> Result<(), ForgetError> {
    let holders =
        p.repo(&job.name)
            .holders(own_id)
            .await
            .map_err(|source| ForgetError::Storage {
                destination: p.name.clone(),
                source,
            })?;
    match holders.into_iter().next() {
        Some(holder) => Err(ForgetError::Busy {
            job: job.name.clone(),
            holder: holder.to_string(),
        }),
        None => Ok(()),
    }
}

/// What deleting the backup from `p` removes: the manifest first, then the rest.
fn planned(job: &Job, p: &Place<'_>, id: &str) -> Forgotten {
    let objects = p.listing.backups.get(id).map(Vec::as_slice).unwrap_or(&[]);
    let manifest = crate::repo::manifest::manifest_key(&job.name, id);
    let mut keys: Vec<String> = objects.iter().map(|o| o.key.clone()).collect();
    keys.sort_by_key(|k| *k != manifest);
    Forgotten {
        destination: p.name.clone(),
        keys,
        bytes: objects.iter().map(|o| o.size).sum(),
        sweep: None,
    }
}

async fn delete_all(
    job: &Job,
    places: &[Place<'_>],
    id: &str,
    lock_id: &str,
) -> Result<Vec<Forgotten>, ForgetError> {
    let mut out = Vec::new();
    for p in places {
        let repo = p.repo(&job.name);
        let mut done = planned(job, p, id);
        repo.delete_backup(&p.listing, id)
            .await
            .map_err(|source| ForgetError::Storage {
                destination: p.name.clone(),
                source,
            })?;
        if job.has_files() {
            let min_age = crate::repo::blobs::sweep_min_age(p.dest);
            done.sweep = Some(repo.sweep(lock_id, min_age).await);
        }
        out.push(done);
    }
    Ok(out)
}
