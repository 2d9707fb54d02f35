//! `copy`: published backups of a job from one of its destinations to another. Each
//! backup is copied under the job's lock on the target (its id as the lock's, so a
//! daemon starting meanwhile takes its objects for a live run's, and a crashed copy's for
//! debris); every object streams through its check (the manifest's size and sha256; a
//! blob's content against the file index) into the target's `put_stream`, and the
//! manifest, as stored, is written last. A backup that fails leaves nothing visible.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Job};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::blobs::BlobError;
use crate::repo::copy::{Class, CopyError};
use crate::repo::locks::LockKind;
use crate::repo::manifest::{Manifest, ManifestError, Refused, StoredRef};
use crate::repo::packing::{Expect, Packing};
use crate::storage::{Retrieval, StorageError};

/// Which backups to copy.
#[derive(Debug, Clone)]
pub enum Which {
    /// An id, a unique prefix of one, or "latest".
    One(String),
    /// Every backup on the source the target lacks, oldest first.
    All,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub job: String,
    pub which: Which,
    pub from: String,
    pub to: String,
    pub dry_run: bool,
    /// The age identity that decrypts an encrypted files source's index and blobs, to
    /// check them (default: the job's).
    pub identity: Option<PathBuf>,
}

/// Why a copy did not start at all.
#[derive(Debug, thiserror::Error)]
pub enum CopyStart {
    /// Bad usage: an unknown destination, the same one twice, an ambiguous id.
    #[error("{0}")]
    Usage(String),
    /// No such backup on the source.
    #[error("{0}")]
    NotFound(String),
    #[error("cannot list {destination}: {source}")]
    Listing {
        destination: String,
        #[source]
        source: StorageError,
    },
}

/// Why one backup was not copied; nothing of it is visible on the target.
#[derive(Debug, thiserror::Error)]
pub enum BackupFailure {
    /// Objects on the source wait for a retrieval from an archive class.
    #[error(
        "{what}; run `stowage retrieve {job} {id} --from {from}` first, then copy again once `stowage status {job} {id} --from {from}` shows it ready"
    )]
    NotRetrieved {
        what: String,
        job: String,
        id: String,
        from: String,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The job must not read this backup (not authenticated, or clear where it encrypts).
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(
        "backup {id} is encrypted: copying checks every file blob's content, which needs the job's identity; set identity_file in its encryption or pass --identity FILE"
    )]
    NoIdentity { id: String },
    #[error(transparent)]
    Object(#[from] CopyError),
    /// A file index (or the blob list behind an Object Lock extension) that cannot be read;
    /// the source names the key.
    #[error("{source}")]
    Index {
        key: String,
        #[source]
        source: BlobError,
    },
    #[error(
        "job {job} is busy on {destination}: {holder}; nothing was copied. Wait for it to finish and copy again"
    )]
    Busy {
        job: String,
        destination: String,
        holder: String,
    },
    #[error("cannot take the lock of job {job} on {destination}: {source}")]
    Lock {
        job: String,
        destination: String,
        #[source]
        source: BlobError,
    },
    #[error("{destination}: {source}")]
    Storage {
        destination: String,
        #[source]
        source: StorageError,
    },
    /// A stop signal ended the copy; what it wrote on the target is removed.
    #[error("interrupted; nothing of it is on {destination}")]
    Interrupted { destination: String },
}

impl BackupFailure {
    /// Waiting for a retrieval, rather than failed.
    pub fn is_pending(&self) -> bool {
        matches!(self, BackupFailure::NotRetrieved { .. })
    }
}

/// What became of one backup.
#[derive(Debug)]
pub enum Done {
    /// The target already had it.
    Present,
    /// Copied (or, in a dry run, would be).
    Copied(Tally),
}

/// What a backup's copy moved (or would move).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Objects of the backup itself: dumps, indexes, refs lists, and the manifest.
    pub objects: u64,
    /// Their stored bytes.
    pub bytes: u64,
    /// File blobs the target lacked.
    pub blobs: u64,
    /// Bytes stored for them (in a dry run: their content's size).
    pub blob_bytes: u64,
    /// File blobs the target already had.
    pub blobs_present: u64,
}

pub struct Copied {
    pub from: String,
    pub to: String,
    pub backups: Vec<(String, Result<Done, BackupFailure>)>,
}

/// Copy what `req` asks, one backup after the other (a failed one does not stop the rest;
/// `cancel` stops the one under way, removing what it wrote, and the rest).
pub async fn copy(
    config: &Config,
    job: &Job,
    req: &Request,
    cancel: &CancellationToken,
) -> Result<Copied, CopyStart> {
    if req.from == req.to {
        return Err(CopyStart::Usage(format!(
            "--from and --to are both \"{}\": copy between two different destinations of job {} ({})",
            req.from,
            job.name,
            job.destinations.join(", ")
        )));
    }
    let from_dest =
        super::job_destination(config, job, "--from", &req.from).map_err(CopyStart::Usage)?;
    let to_dest = super::job_destination(config, job, "--to", &req.to).map_err(CopyStart::Usage)?;
    let keys = crate::restore::keys_for(job, req.identity.as_ref())
        .map_err(|e| CopyStart::Usage(e.to_string()))?;
    let from_st = crate::storage::open(from_dest).await;
    let to_st = crate::storage::open(to_dest).await;
    let a = Repository::new(from_st.as_ref(), &job.name);
    let b = Repository::new(to_st.as_ref(), &job.name);
    let listed = |destination: &str| {
        let destination = destination.to_string();
        move |source| CopyStart::Listing {
            destination,
            source,
        }
    };
    let on_a: Vec<String> = a
        .backups()
        .await
        .map_err(listed(&req.from))?
        .published(&job.name)
        .into_iter()
        .map(|p| p.id)
        .collect();
    let on_b: HashSet<String> = b
        .backups()
        .await
        .map_err(listed(&req.to))?
        .published(&job.name)
        .into_iter()
        .map(|p| p.id)
        .collect();
    let ids: Vec<String> = match &req.which {
        Which::One(wanted) => {
            match crate::restore::resolve_id(&on_a, wanted).map_err(CopyStart::Usage)? {
                Some(id) => vec![id],
                None => {
                    return Err(CopyStart::NotFound(format!(
                        "no published backup \"{wanted}\" of job {} on {} ({} backup(s)); see `stowage list {}`",
                        job.name,
                        req.from,
                        on_a.len(),
                        job.name
                    )));
                }
            }
        }
        // Oldest first: an interrupted backfill leaves the target with a gapless past.
        Which::All => on_a
            .iter()
            .rev()
            .filter(|id| !on_b.contains(*id))
            .cloned()
            .collect(),
    };
    let ctx = Ctx {
        config,
        job,
        req,
        a,
        b,
        keys,
        object_lock: to_dest.object_lock(),
        cancel,
    };
    let mut backups = Vec::new();
    for id in ids {
        if cancel.is_cancelled() {
            break;
        }
        let done = if on_b.contains(&id) {
            Ok(Done::Present)
        } else {
            ctx.copy_one(&id).await.map(Done::Copied)
        };
        backups.push((id, done));
    }
    Ok(Copied {
        from: req.from.clone(),
        to: req.to.clone(),
        backups,
    })
}

struct Ctx<'a> {
    config: &'a Config,
    job: &'a Job,
    req: &'a Request,
    a: Repository<'a>,
    b: Repository<'a>,
    keys: Option<Arc<crate::crypt::Keys>>,
    object_lock: Option<crate::config::ObjectLock>,
    cancel: &'a CancellationToken,
}

/// The objects of one backup to copy.
#[derive(Default)]
struct Plan {
    /// Recorded objects (key, sha256, size) and where they go.
    objects: Vec<(StoredRef, Class)>,
    /// Blobs the target lacks: key → the content's sha256 and size.
    blobs: BTreeMap<String, (String, u64)>,
    blobs_present: u64,
}

impl Ctx<'_> {
    async fn copy_one(&self, id: &str) -> Result<Tally, BackupFailure> {
        let (m, body) = self.a.manifest_body(id).await?;
        let packing = self
            .a
            .packing(&m, &Expect::of(self.job, false), self.keys.clone())?;
        if packing.encrypted
            && packing.keys.is_none()
            && m.sources.iter().any(|s| s.files.is_some())
        {
            return Err(BackupFailure::NoIdentity { id: id.to_string() });
        }
        if self.req.dry_run {
            let plan = self.plan(&m, &packing).await?;
            return Ok(plan.tally(body.len() as u64));
        }
        self.lock(id).await?;
        let work = async {
            tokio::select! {
                r = self.copy_locked(&m, &packing, body) => r,
                () = self.cancel.cancelled() => Err(BackupFailure::Interrupted {
                    destination: self.req.to.clone(),
                }),
            }
        };
        let result = self.b.refreshing(id, LockKind::Backup, work).await;
        if result.is_err()
            && let Err(e) = self.b.discard_unpublished(id).await
        {
            tracing::warn!(job = %self.job.name, "could not remove what the failed copy of backup {id} wrote on {}: {e}; the daemon's next start removes it", self.req.to);
        }
        self.b.unlock(id, LockKind::Backup).await;
        result
    }

    /// The job's lock on the target, as a run takes it (then any blob sweep there is
    /// waited out before its blobs are listed).
    async fn lock(&self, id: &str) -> Result<(), BackupFailure> {
        let never = CancellationToken::new();
        let lock_err = |source| BackupFailure::Lock {
            job: self.job.name.clone(),
            destination: self.req.to.clone(),
            source,
        };
        match self.b.claim(id, LockKind::Backup, false, &never).await {
            Ok(None) => {}
            Ok(Some(holder)) => {
                return Err(BackupFailure::Busy {
                    job: self.job.name.clone(),
                    destination: self.req.to.clone(),
                    holder: holder.to_string(),
                });
            }
            Err(e) => return Err(lock_err(e)),
        }
        if let Err(e) = self.b.lock_backup(id, true, &never).await {
            self.b.unlock(id, LockKind::Backup).await;
            return Err(lock_err(e));
        }
        Ok(())
    }

    async fn copy_locked(
        &self,
        m: &Manifest,
        packing: &Packing,
        body: bytes::Bytes,
    ) -> Result<Tally, BackupFailure> {
        let plan = self.plan(m, packing).await?;
        self.check_retrieved(m, &plan).await?;
        let mut tally = Tally {
            blobs_present: plan.blobs_present,
            ..Tally::default()
        };
        let total: u64 = plan.objects.iter().map(|(o, _)| o.size).sum();
        let progress = Progress::new(
            format!("copy {} {} → {}", self.job.name, m.id, self.req.to),
            plan.blobs.is_empty().then_some(total),
        );
        let pending = |e: CopyError| match e.not_retrieved() {
            Some(why) => self.not_retrieved(m, why.to_string()),
            None => BackupFailure::Object(e),
        };
        for (key, (sha256, size)) in &plan.blobs {
            tally.blob_bytes += self
                .b
                .copy_blob_from(self.a, key, packing, sha256, *size, Some(&progress))
                .await
                .map_err(pending)?;
            tally.blobs += 1;
        }
        for (o, class) in &plan.objects {
            tally.bytes += self
                .b
                .copy_object_from(self.a, o, *class, Some(&progress))
                .await
                .map_err(pending)?;
            tally.objects += 1;
        }
        progress.finish();
        // Blobs the target had are kept locked as long as this backup, like a run's reuse.
        if let Some(lock) = self.object_lock
            && m.sources.iter().any(|s| s.files.is_some())
        {
            self.b
                .extend_blob_locks(m, lock.until(Utc::now()))
                .await
                .map_err(|source| BackupFailure::Index {
                    key: m.id.clone(),
                    source,
                })?;
        }
        self.b
            .publish_manifest(&m.id, body.clone())
            .await
            .map_err(|source| BackupFailure::Storage {
                destination: self.req.to.clone(),
                source,
            })?;
        tally.objects += 1;
        tally.bytes += body.len() as u64;
        Ok(tally)
    }

    /// The backup's objects, and the blobs its file indexes name that the target lacks.
    async fn plan(&self, m: &Manifest, packing: &Packing) -> Result<Plan, BackupFailure> {
        let mut plan = Plan::default();
        let form = m.form();
        let present = self
            .b
            .blob_ids(form)
            .await
            .map_err(|source| BackupFailure::Storage {
                destination: self.req.to.clone(),
                source,
            })?;
        let mut seen: HashSet<String> = HashSet::new();
        for s in &m.sources {
            let recorded = StoredRef {
                key: s.key.clone(),
                size: s.size,
                sha256: s.sha256.clone(),
            };
            if s.files.is_none() {
                plan.objects.push((recorded, Class::Data));
                continue;
            }
            plan.objects.push((recorded, Class::Plain));
            if let Some(r) = &s.refs {
                plan.objects.push((r.clone(), Class::Plain));
            }
            let index_err = |source| BackupFailure::Index {
                key: s.key.clone(),
                source,
            };
            let (_, mut entries) = self.a.open_index(s, packing).await.map_err(index_err)?;
            while let Some(f) = entries.next().await.map_err(index_err)? {
                if !seen.insert(f.blob.clone()) {
                    continue;
                }
                if self
                    .b
                    .blob_id(&f.blob, form)
                    .is_some_and(|n| present.contains(&n))
                {
                    plan.blobs_present += 1;
                } else {
                    plan.blobs.insert(f.blob, (f.sha256, f.size));
                }
            }
        }
        Ok(plan)
    }

    /// On a source in an archive class: every object to copy must be readable now.
    async fn check_retrieved(&self, m: &Manifest, plan: &Plan) -> Result<(), BackupFailure> {
        let Some((class, _)) = crate::restore::archive_class(self.config, &self.req.from) else {
            return Ok(());
        };
        let data = plan
            .objects
            .iter()
            .filter(|(_, c)| *c == Class::Data)
            .map(|(o, _)| o.key.as_str());
        let mut waiting = 0usize;
        for key in data.chain(plan.blobs.keys().map(String::as_str)) {
            let state =
                self.a
                    .storage()
                    .retrieval(key)
                    .await
                    .map_err(|source| BackupFailure::Storage {
                        destination: self.req.from.clone(),
                        source,
                    })?;
            if matches!(state, Retrieval::Archived | Retrieval::Pending) {
                waiting += 1;
            }
        }
        if waiting > 0 {
            return Err(self.not_retrieved(
                m,
                format!(
                    "{waiting} object(s) of backup {} on {} ({class}) are not retrieved yet",
                    m.id, self.req.from
                ),
            ));
        }
        Ok(())
    }

    fn not_retrieved(&self, m: &Manifest, what: String) -> BackupFailure {
        BackupFailure::NotRetrieved {
            what,
            job: self.job.name.clone(),
            id: m.id.clone(),
            from: self.req.from.clone(),
        }
    }
}

impl Plan {
    /// What a dry run reports: the blobs' content sizes stand for what they store.
    fn tally(&self, manifest: u64) -> Tally {
        Tally {
            objects: self.objects.len() as u64 + 1,
            bytes: self.objects.iter().map(|(o, _)| o.size).sum::<u64>() + manifest,
            blobs: self.blobs.len() as u64,
            blob_bytes: self.blobs.values().map(|(_, n)| n).sum(),
            blobs_present: self.blobs_present,
        }
    }
}
