//! One run of a job: sources in order → compress → fan out to every destination at once →
//! publish a manifest per destination → retention on each destination that published.
//!
//! Failure rules: a source failure fails the whole run and nothing is published anywhere;
//! a destination failure only loses that destination (the others still publish, the run
//! still reports failure). Whatever a failed destination received is removed, and
//! retention never runs where the run did not publish.
//!
//! Hooks (`crate::hook`): the job's `before` runs once the run holds the job, before any
//! source, and its failure is the run's; each source's `before`/`after` wrap its dump, a
//! failing `before` failing the source; the job's `after` runs on every run that held the
//! job, whatever the outcome, before retention. An `after` never changes the outcome.

mod files;
pub mod shrink;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chrono::Utc;
use futures::future::join_all;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::io::InspectReader;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::codec;
use crate::config::{Config, Hook, HookFailure, Hooks, Job, SourceConfig};
use crate::engine::{Database, SourceError};
use crate::hook::{HookError, HookReport};
use crate::repo::blobs::{self, SweepOutcome};
use crate::repo::locks::{self, LockKind};
use crate::repo::manifest::{self, FORMAT_VERSION, Manifest, SourceEntry};
use crate::repo::{JobLocks, Repository};
use crate::retention;
use crate::storage::class::StorageClass;
use crate::storage::{self, Chunk, Storage};
use crate::units::human_bytes;

const READ_CHUNK: usize = 256 * 1024;
/// Chunks of the raw dump read ahead of the compressor (16 × 256 KiB = 4 MiB): a dump tool's
/// pipe holds only 64 KiB, so without this it stalls every time zstd works on a chunk.
const READ_AHEAD_CHUNKS: usize = 16;
/// Chunks buffered per destination: enough to absorb jitter, small enough that a slow
/// destination applies backpressure to the dump instead of growing memory.
const CHANNEL_DEPTH: usize = 8;
/// After a cancel, how long uploads get to abandon on their own (aborting their multipart
/// uploads) before they are dropped: one stuck on a hung request would hold the stop forever.
const ABANDON_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Published on every destination.
    Success,
    /// Published on some destinations only.
    Partial,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RunReport {
    pub job: String,
    pub id: String,
    pub outcome: Outcome,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub published: Vec<String>,
    /// destination (or "source") → reason
    pub errors: Vec<(String, String)>,
    /// destination → published backups it holds after retention
    pub kept: Vec<(String, usize)>,
    /// The stop cut retention short: the backup is published, the pruning it would have
    /// done waits for the next run.
    pub retention_interrupted: bool,
    /// Said in the run's summary and notified, but the run succeeded: a dump much smaller
    /// than the ones before it, for instance.
    pub warnings: Vec<String>,
    /// The job's and its sources' `before`/`after` hooks that ran, in the order they ran.
    pub hooks: Vec<HookReport>,
}

struct Target {
    name: String,
    /// Shared with the lock's heartbeat.
    storage: std::sync::Arc<dyn Storage>,
    policy: retention::RetentionPolicy,
    /// The storage class's minimum storage duration (days), unless early_delete.
    min_storage: Option<(StorageClass, u32)>,
    /// S3 Object Lock on what is written here.
    object_lock: Option<crate::config::ObjectLock>,
    error: Option<String>,
    /// Whether anything of this run may have been written here (so cleanup is needed).
    touched: bool,
    /// Whether this run holds a backup lock here (it reuses shared file blobs).
    locked: bool,
}

impl Target {
    /// The job's repository on this destination.
    fn repo<'a>(&'a self, job: &'a str) -> Repository<'a> {
        Repository::new(self.storage.as_ref(), job)
    }
}

#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cancelled")]
    Cancelled,
    #[error("every destination failed")]
    NoDestinationLeft,
    #[error("reading the dump: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Files(#[from] files::FilesError),
    #[error("the file changed while it was read")]
    Changed,
    #[error(transparent)]
    Hook(#[from] crate::hook::HookError),
}

/// How a run meets another process's run of the same job.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Wait for it to finish (the daemon; `run --wait-lock`) instead of refusing.
    pub wait_lock: bool,
}

/// A reason the whole run stops: what failed, why, and the outcome it gives the run.
type Fatal = (String, String, Outcome);

/// The run was stopped by a shutdown.
fn cancelled() -> Fatal {
    (
        "run".into(),
        "cancelled by shutdown".into(),
        Outcome::Cancelled,
    )
}

/// What the stages of one run share, filled in the order the data flows.
struct RunCtx<'a> {
    job: &'a Job,
    id: String,
    started: chrono::DateTime<Utc>,
    t0: Instant,
    cancel: CancellationToken,
    targets: Vec<Target>,
    /// One per source backed up, in the job's order.
    entries: Vec<SourceEntry>,
    /// Tool → version, for the manifest.
    tools: BTreeMap<String, String>,
    /// Set by the first stage that stops the run; the stages after it then do nothing
    /// but clean up.
    fatal: Option<Fatal>,
    bytes_in: u64,
    /// Destinations that hold this run's manifest.
    published: Vec<String>,
    errors: Vec<(String, String)>,
    kept: Vec<(String, usize)>,
    retention_interrupted: bool,
    /// The first destination retention listed, and the published backups it held then
    /// (newest first): the backups this one is compared with for [`shrink`].
    listed: Option<(Arc<dyn Storage>, Vec<manifest::Published>)>,
    /// The run holds the job (no other run of it is going on): its `after` hook runs.
    claimed: bool,
    hooks: Vec<HookReport>,
}

pub async fn run_job(
    config: &Config,
    job: &Job,
    opts: RunOptions,
    cancel: CancellationToken,
) -> RunReport {
    run_job_on(job, storage::open_job(config, job), opts, cancel).await
}

/// [`run_job`] on destinations `open` gives (unit tests hand in storages of their own).
/// `open` is awaited once the run is named and announced, where `run_job` opens the
/// configured destinations: the run's start time does not include opening them.
pub(crate) async fn run_job_on<'d>(
    job: &Job,
    open: impl Future<Output = Vec<storage::JobStorage<'d>>>,
    opts: RunOptions,
    cancel: CancellationToken,
) -> RunReport {
    let mut run = RunCtx::start(job, open, cancel).await;
    run.preflight().await;
    run.claim_job(opts).await;
    run.lock_destinations().await;
    let heartbeat = run.start_heartbeat();
    run.require_destination();
    run.job_before().await;
    run.dump_sources().await;
    // A stop that came while the last upload completed: abandon rather than publish.
    if run.fatal.is_none() && run.cancel.is_cancelled() {
        run.fatal = Some(cancelled());
    }
    run.publish_manifest().await;
    run.remove_leftovers().await;
    run.collect_errors();
    // Before retention, which can take long: the hook may end a maintenance window.
    run.job_after().await;
    run.prune_published().await;
    run.release_locks(heartbeat).await;
    let warnings = run.shrink_warnings().await;
    let mut report = run.into_report();
    report.warnings = warnings;
    report.warnings.extend(hook_warnings(&report.hooks));
    log_summary(&report);
    report
}

impl<'a> RunCtx<'a> {
    /// Names the run, then opens the job's destinations through `open`.
    async fn start<'d>(
        job: &'a Job,
        open: impl Future<Output = Vec<storage::JobStorage<'d>>>,
        cancel: CancellationToken,
    ) -> RunCtx<'a> {
        let started = Utc::now();
        let t0 = Instant::now();
        let id = manifest::new_id(started);
        info!(
            job = job.name.as_str(),
            id = %id,
            "backup started: {} source(s) → {}",
            job.sources.len(),
            job.destinations.join(", ")
        );
        let mut targets = Vec::new();
        for js in open.await {
            targets.push(Target {
                name: js.name.to_string(),
                storage: std::sync::Arc::from(js.storage),
                policy: js.destination.retention.clone(),
                min_storage: js.destination.min_storage(),
                object_lock: js.destination.object_lock(),
                error: None,
                touched: false,
                locked: false,
            });
        }
        let mut tools = BTreeMap::new();
        tools.insert("stowage".to_string(), env!("CARGO_PKG_VERSION").to_string());
        RunCtx {
            job,
            id,
            started,
            t0,
            cancel,
            targets,
            entries: Vec::new(),
            tools,
            fatal: None,
            bytes_in: 0,
            published: Vec::new(),
            errors: Vec::new(),
            kept: Vec::new(),
            retention_interrupted: false,
            listed: None,
            claimed: false,
            hooks: Vec::new(),
        }
    }

    fn jn(&self) -> &'a str {
        self.job.name.as_str()
    }

    /// A destination that cannot be written is left out before anything is dumped.
    async fn preflight(&mut self) {
        let jn = self.jn();
        info!(job = jn, id = %self.id, "stage: preflight");
        let checks = join_all(self.targets.iter().map(|t| t.storage.preflight())).await;
        for (t, r) in self.targets.iter_mut().zip(checks) {
            if let Err(e) = r {
                error!(job = jn, destination = %t.name, "destination {} ({}): {e}", t.name, t.storage.location());
                t.error = Some(e.to_string());
            }
        }
    }

    /// One run of a job at a time, across processes (`stowage run` beside the daemon): two
    /// dumps at once would double the load, and both runs' retention would prune the same
    /// backups.
    async fn claim_job(&mut self, opts: RunOptions) {
        if self.fatal.is_some() {
            return;
        }
        let jn = self.jn();
        let live: Vec<&dyn Storage> = self
            .targets
            .iter()
            .filter(|t| t.error.is_none())
            .map(|t| t.storage.as_ref())
            .collect();
        let claimed = JobLocks::new(jn, &self.id, LockKind::Backup)
            .claim(&live, opts.wait_lock, &self.cancel)
            .await;
        let fatal = match claimed {
            Ok(None) => {
                self.claimed = true;
                return;
            }
            Ok(Some(holder)) => (
                "run".into(),
                format!(
                    "job {jn} is already running: {holder}; nothing was started. Wait for it to finish, or run again with --wait-lock to wait"
                ),
                Outcome::Failed,
            ),
            Err(blobs::BlobError::Cancelled) => cancelled(),
            // Without the lock this run could overlap another (two dumps, two retentions
            // pruning the same backups): stop rather than run without exclusivity.
            Err(e) => (
                "run".into(),
                format!(
                    "cannot take the lock of job {jn} ({e}); nothing was started. Fix the destination's locks/ (writable, listable) and run again"
                ),
                Outcome::Failed,
            ),
        };
        self.fatal = Some(fatal);
    }

    /// Every run announces itself with a lock (a later start tells a crashed run's leftovers
    /// by it). A job with files also reuses blobs earlier backups uploaded, so no concurrent
    /// sweep may delete one of them before this backup's manifest references it.
    /// A run that will not start (another holds the job) announces nothing.
    async fn lock_destinations(&mut self) {
        let starting = self.fatal.is_none();
        let (jn, reuses_blobs) = (self.jn(), self.job.has_files());
        for t in self
            .targets
            .iter_mut()
            .filter(|t| t.error.is_none() && starting)
        {
            t.touched = true;
            // Even a failed attempt may have written the lock: always remove it at the end.
            t.locked = true;
            match t
                .repo(jn)
                .lock_backup(&self.id, reuses_blobs, &self.cancel)
                .await
            {
                Ok(()) => {}
                Err(blobs::BlobError::Cancelled) => {
                    self.fatal = Some(cancelled());
                }
                Err(e) => {
                    error!(job = jn, destination = %t.name, "destination {}: cannot take the backup lock: {e}", t.name);
                    t.error = Some(format!("cannot take the backup lock: {e}"));
                }
            }
        }
    }

    /// The lock is rewritten while the run holds it: a lock not refreshed for minutes is
    /// taken for a crashed run's, by any host.
    fn start_heartbeat(&self) -> locks::Heartbeat {
        JobLocks::new(self.jn(), &self.id, LockKind::Backup).heartbeat(
            self.targets
                .iter()
                .filter(|t| t.locked && t.error.is_none())
                .map(|t| t.storage.clone())
                .collect(),
        )
    }

    /// With no destination left there is nowhere to dump to.
    fn require_destination(&mut self) {
        if self.fatal.is_none() && self.targets.iter().all(|t| t.error.is_some()) {
            self.fatal = Some((
                "destinations".into(),
                "no destination is usable".into(),
                Outcome::Failed,
            ));
        }
    }

    /// The sources in the job's order, each streamed to every live destination; the first
    /// failure stops the run. With `[jobs.NAME.containers]`, the labelled containers are
    /// held from the first files source's read (after its `before` hook) to the end of the
    /// last one's (before its `after` hook), and released as soon as a source fails.
    async fn dump_sources(&mut self) {
        let job = self.job;
        let last_files = job
            .sources
            .iter()
            .rposition(|s| matches!(s, SourceConfig::Files(_)));
        let mut held = None;
        for (i, src_cfg) in job.sources.iter().enumerate() {
            if self.fatal.is_some() {
                break;
            }
            let hooks = job.source_hooks.get(src_cfg.name());
            let result = match self.source_before(src_cfg, hooks).await {
                Ok(()) if self.hold_containers(src_cfg, &mut held).await => {
                    self.back_up_source(src_cfg).await
                }
                Ok(()) => None,
                Err(e) => Some(Err(e)),
            };
            let failed = !matches!(result, Some(Ok(_)));
            if Some(i) == last_files || failed {
                self.release_containers(held.take(), failed).await;
            }
            self.source_after(src_cfg, hooks, result.as_ref()).await;
            let Some(result) = result else {
                break;
            };
            self.record_source(src_cfg.name(), result);
        }
        self.release_containers(held.take(), false).await;
    }

    /// Before a files source is read: the job's labelled containers stopped or paused,
    /// unless they already are (or the run is being stopped, which the read then reports).
    /// `false`: they could not be, and the run is stopped before any file is read.
    async fn hold_containers(
        &mut self,
        src: &SourceConfig,
        held: &mut Option<crate::containers::Held>,
    ) -> bool {
        let Some(settings) = &self.job.containers else {
            return true;
        };
        if held.is_some() || !matches!(src, SourceConfig::Files(_)) || self.cancel.is_cancelled() {
            return true;
        }
        match crate::containers::hold_for_job(settings).await {
            Ok(h) => {
                *held = Some(h);
                true
            }
            Err(e) => {
                self.fatal = Some(("containers".into(), e.to_string(), Outcome::Failed));
                false
            }
        }
    }

    /// The held containers started or unpaused again, whatever happened. One that would not
    /// fails the run, naming it: an application left stopped must not go unnoticed. With
    /// `source_failed` (that source's failure is about to stop the run), it is one more of
    /// the run's errors.
    async fn release_containers(
        &mut self,
        held: Option<crate::containers::Held>,
        source_failed: bool,
    ) {
        let Some(held) = held else {
            return;
        };
        let left = held.release().await;
        if left.is_empty() {
            return;
        }
        let why = left
            .iter()
            .map(crate::containers::NotResumed::describe)
            .collect::<Vec<_>>()
            .join("; ");
        if self.fatal.is_none() && !source_failed {
            self.fatal = Some(("containers".into(), why, Outcome::Failed));
        } else {
            error!(job = self.jn(), id = %self.id, "containers failed: {why}");
            self.errors.push(("containers".into(), why));
        }
    }

    /// The job's `before` hook, once the run holds the job and has somewhere to write: a
    /// failure (unless `on_failure = "continue"`) stops the run before any source is dumped.
    async fn job_before(&mut self) {
        let Some(hook) = &self.job.hooks.before else {
            return;
        };
        if self.fatal.is_some() {
            return;
        }
        let env = self.hook_env("before", None);
        if let Err(e) = self.run_hook(hook, true, env).await {
            self.fatal = Some(match e {
                HookError::Cancelled { .. } => cancelled(),
                e => ("before hook".into(), e.to_string(), Outcome::Failed),
            });
        }
    }

    /// The job's `after` hook, whatever the outcome, on every run that held the job. Never
    /// cut short by a stop (only by its timeout, or the daemon dropping the run).
    async fn job_after(&mut self) {
        let Some(hook) = &self.job.hooks.after else {
            return;
        };
        if !self.claimed {
            return;
        }
        let mut env = self.hook_env("after", None);
        env.extend([
            ("STOWAGE_OUTCOME", self.outcome().as_str().to_string()),
            ("STOWAGE_BYTES_IN", self.bytes_in.to_string()),
            ("STOWAGE_BYTES_OUT", self.bytes_out().to_string()),
        ]);
        // The outcome stays what it is: the failure is logged and in the summary.
        let _ = self.run_hook(hook, false, env).await;
    }

    /// A source's `before` hook: its failure fails the source as a failed dump would.
    async fn source_before(
        &mut self,
        src: &SourceConfig,
        hooks: Option<&'a Hooks>,
    ) -> Result<(), StreamError> {
        let Some(hook) = hooks.and_then(|h| h.before.as_ref()) else {
            return Ok(());
        };
        let env = self.hook_env("before", Some(src.name()));
        match self.run_hook(hook, true, env).await {
            Err(HookError::Cancelled { .. }) => Err(StreamError::Cancelled),
            r => r.map_err(StreamError::from),
        }
    }

    /// A source's `after` hook, however its dump went (`None`: it did not start).
    async fn source_after(
        &mut self,
        src: &SourceConfig,
        hooks: Option<&'a Hooks>,
        result: Option<&Result<SourceEntry, StreamError>>,
    ) {
        let Some(hook) = hooks.and_then(|h| h.after.as_ref()) else {
            return;
        };
        let (outcome, bytes_in, bytes_out) = match result {
            Some(Ok(e)) => (
                Outcome::Success,
                e.files.as_ref().map_or(e.raw_size, |f| f.bytes),
                e.size + e.files.as_ref().map_or(0, |f| f.uploaded),
            ),
            Some(Err(StreamError::Cancelled)) => (Outcome::Cancelled, 0, 0),
            _ => (Outcome::Failed, 0, 0),
        };
        let mut env = self.hook_env("after", Some(src.name()));
        env.extend([
            ("STOWAGE_OUTCOME", outcome.as_str().to_string()),
            ("STOWAGE_BYTES_IN", bytes_in.to_string()),
            ("STOWAGE_BYTES_OUT", bytes_out.to_string()),
        ]);
        let _ = self.run_hook(hook, false, env).await;
    }

    /// What every hook of this run is told.
    fn hook_env(&self, when: &str, source: Option<&str>) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("STOWAGE_JOB", self.jn().to_string()),
            ("STOWAGE_RUN_ID", self.id.clone()),
            ("STOWAGE_HOOK", when.to_string()),
        ];
        if let Some(s) = source {
            env.push(("STOWAGE_SOURCE", s.to_string()));
        }
        env
    }

    /// Runs a hook, logs how it went and keeps that for the summary. A `before` hook is
    /// killed by a stop; `Err` only for a `before` hook whose failure counts
    /// (`on_failure = "fail"`), which the caller turns into the run's or the source's.
    async fn run_hook(
        &mut self,
        hook: &Hook,
        before: bool,
        env: Vec<(&'static str, String)>,
    ) -> Result<(), HookError> {
        let (jn, id) = (self.jn(), self.id.clone());
        let done = crate::hook::run(hook, &env, before.then_some(&self.cancel)).await;
        // A stop ends the run whatever on_failure says.
        let stopped = matches!(done.result, Err(HookError::Cancelled { .. }));
        let counts = before && (hook.on_failure == HookFailure::Fail || stopped);
        let report = done.report(hook, before && !counts);
        match &done.result {
            Ok(()) => info!(job = jn, id = %id, hook = %hook.key, "hook {}", report.describe()),
            // Logged with the run's errors.
            Err(_) if counts => {}
            Err(e) if before => {
                warn!(job = jn, id = %id, hook = %hook.key, "{e}; on_failure = \"continue\": the run goes on")
            }
            Err(e) => {
                error!(job = jn, id = %id, hook = %hook.key, "{e}; the run's outcome stays as it is")
            }
        }
        self.hooks.push(report);
        match done.result {
            Err(e) if counts => Err(e),
            _ => Ok(()),
        }
    }

    /// One source to every live destination. `None`: its tool could not even tell its
    /// version, and the run is stopped.
    async fn back_up_source(
        &mut self,
        src_cfg: &'a SourceConfig,
    ) -> Option<Result<SourceEntry, StreamError>> {
        let jn = self.jn();
        match src_cfg {
            SourceConfig::Files(f) => {
                info!(job = jn, id = %self.id, source = %f.name, "stage: files {} from {}", f.name, f.path.display());
                self.touch_live();
                Some(files::backup(f, self.job, &self.id, &mut self.targets, &self.cancel).await)
            }
            SourceConfig::Database(db) => {
                let tool = match db.tool_version().await {
                    Ok((tool, version)) => {
                        self.tools.insert(tool, version.clone());
                        version
                    }
                    Err(e) => {
                        self.fatal = Some((
                            format!("source {}", db.name()),
                            e.to_string(),
                            Outcome::Failed,
                        ));
                        return None;
                    }
                };
                let key =
                    crate::repo::Names::new(self.job, &self.id).object(db.name(), db.extension());
                info!(job = jn, id = %self.id, source = db.name(), "stage: dump {} {} → {}", db.kind(), db.name(), key);
                self.touch_live();
                let streamed =
                    stream_source(db.as_ref(), &key, self.job, &mut self.targets, &self.cancel)
                        .await;
                Some(streamed.map(|mut entry| {
                    entry.tool = Some(tool);
                    entry
                }))
            }
        }
    }

    /// From here the live destinations may hold objects of this run, which the cleanup
    /// removes unless the run publishes there.
    fn touch_live(&mut self) {
        for t in self.targets.iter_mut().filter(|t| t.error.is_none()) {
            t.touched = true;
        }
    }

    /// Logs what a source stored and keeps its entry for the manifest, or stops the run.
    fn record_source(&mut self, name: &str, result: Result<SourceEntry, StreamError>) {
        let (jn, id) = (self.jn(), &self.id);
        match result {
            Ok(entry) => {
                self.bytes_in += entry.files.as_ref().map_or(entry.raw_size, |f| f.bytes);
                match &entry.files {
                    Some(f) => info!(
                        job = jn,
                        id = %id,
                        source = name,
                        "stage: source {name} done: {} files, {}; {} new ({}) uploaded as {}",
                        f.count,
                        human_bytes(f.bytes),
                        f.new_files,
                        human_bytes(f.new_bytes),
                        human_bytes(f.uploaded)
                    ),
                    None => info!(
                        job = jn,
                        id = %id,
                        source = name,
                        "stage: source {name} done: {} in, {} stored, sha256 {}",
                        human_bytes(entry.raw_size),
                        human_bytes(entry.size),
                        entry.sha256
                    ),
                }
                self.entries.push(entry);
            }
            Err(StreamError::Cancelled) => self.fatal = Some(cancelled()),
            Err(e) => self.fatal = Some((format!("source {name}"), e.to_string(), Outcome::Failed)),
        }
    }

    /// The manifest is what makes the backup exist: written last, on each destination
    /// that is still live.
    async fn publish_manifest(&mut self) {
        if self.fatal.is_some() {
            return;
        }
        info!(job = self.jn(), id = %self.id, "stage: publish manifest");
        let m = self.manifest();
        // Reused blobs locked as long as this backup, before it counts as published.
        if self.job.has_files() {
            self.lock_reused_blobs(&m).await;
        }
        match manifest::signed(&m, self.job.auth_key.as_deref()) {
            Ok(body) => self.put_manifest(Bytes::from(body)).await,
            Err(e) => self.fatal = Some(("manifest".into(), e.to_string(), Outcome::Failed)),
        }
    }

    /// The manifest of what the sources stored.
    fn manifest(&self) -> Manifest {
        Manifest {
            format: FORMAT_VERSION,
            job: self.jn().to_string(),
            id: self.id.clone(),
            started_at: self.started,
            finished_at: Utc::now(),
            compression: self.job.compression,
            encryption: self
                .job
                .encryption
                .as_ref()
                .map(|_| crate::crypt::SCHEME.to_string()),
            sources: self.entries.clone(),
            tools: self.tools.clone(),
            auth: None,
            proof: Default::default(),
        }
    }

    /// On destinations with Object Lock: the file blobs the backup references are locked
    /// as long as the backup is; a destination where that fails does not publish.
    async fn lock_reused_blobs(&mut self, m: &Manifest) {
        let (jn, id) = (self.jn(), &self.id);
        for t in self
            .targets
            .iter_mut()
            .filter(|t| t.error.is_none() && t.object_lock.is_some())
        {
            let Some(lock) = t.object_lock else { continue };
            let until = lock.until(Utc::now());
            match t.repo(jn).extend_blob_locks(m, until).await {
                Ok(n) => info!(
                    job = jn,
                    id = %id,
                    destination = %t.name,
                    "object lock on {}: {n} blob(s) this backup references locked until {}",
                    t.name,
                    until.format("%Y-%m-%d %H:%M:%S UTC")
                ),
                Err(e) => {
                    t.error = Some(format!(
                        "could not lock the file blobs this backup references until {}: {e}",
                        until.format("%Y-%m-%d %H:%M:%S UTC")
                    ))
                }
            }
        }
    }

    /// Writes the manifest on every live destination at once; those where it landed are
    /// published.
    async fn put_manifest(&mut self, body: Bytes) {
        let live: Vec<usize> = (0..self.targets.len())
            .filter(|i| self.targets[*i].error.is_none())
            .collect();
        let puts = join_all(live.iter().map(|i| {
            self.targets[*i]
                .repo(self.jn())
                .publish_manifest(&self.id, body.clone())
        }));
        // Dropped on a stop: a manifest that landed anyway is removed by the cleanup,
        // because nothing counts as published until every put has answered.
        let results = tokio::select! {
            r = puts => Some(r),
            _ = self.cancel.cancelled() => None,
        };
        let Some(results) = results else {
            self.fatal = Some(cancelled());
            return;
        };
        for (i, r) in live.into_iter().zip(results) {
            match r {
                Ok(()) => self.published.push(self.targets[i].name.clone()),
                Err(e) => self.targets[i].error = Some(e.to_string()),
            }
        }
    }

    /// Remove whatever this run left on destinations where it did not publish.
    async fn remove_leftovers(&self) {
        let abandoned = matches!(self.fatal, Some((_, _, Outcome::Cancelled)));
        for t in self
            .targets
            .iter()
            .filter(|t| t.touched && !self.published.contains(&t.name))
        {
            cleanup(t.storage.as_ref(), self.jn(), &self.id, &t.name, abandoned).await;
        }
    }

    /// Every destination's failure and the run's own, logged and kept for the report.
    fn collect_errors(&mut self) {
        let (jn, id) = (self.jn(), &self.id);
        for t in &self.targets {
            if let Some(e) = &t.error {
                error!(job = jn, id = %id, destination = %t.name, "destination {} failed: {e}", t.name);
                self.errors.push((t.name.clone(), e.clone()));
            }
        }
        if let Some((what, why, _)) = &self.fatal {
            error!(job = jn, id = %id, "{what} failed: {why}");
            self.errors.push((what.clone(), why.clone()));
        }
    }

    /// Retention, only on the destinations where this run published.
    async fn prune_published(&mut self) {
        let (jn, id) = (self.jn(), &self.id);
        if !self.published.is_empty() {
            info!(job = jn, id = %id, "stage: retention");
        }
        for t in self
            .targets
            .iter()
            .filter(|t| self.published.contains(&t.name))
        {
            // Cut short by a stop, retention leaves at worst a backup whose manifest is gone
            // and whose data is not: no longer listed, and removed by the next start's
            // recovery.
            let r = tokio::select! {
                biased;
                _ = self.cancel.cancelled() => None,
                r = async {
                    let r = apply_retention(t, self.job, id).await;
                    if r.is_ok() {
                        prune_wal(t, self.job).await;
                    }
                    r
                } => Some(r),
            };
            match r {
                Some(Ok((n, listed))) => {
                    self.kept.push((t.name.clone(), n));
                    if self.listed.is_none() {
                        self.listed = Some((t.storage.clone(), listed));
                    }
                }
                // The backup is published; a retention failure only delays pruning.
                Some(Err(e)) => {
                    warn!(job = jn, destination = %t.name, "retention on {} failed: {e}", t.name)
                }
                None => {
                    warn!(job = jn, destination = %t.name, "retention on {} interrupted by the stop; backup {id} is published, and the next run prunes what this one did not", t.name);
                    self.retention_interrupted = true;
                    break;
                }
            }
        }
    }

    /// The run is over: stop refreshing its locks, then remove them.
    async fn release_locks(&self, heartbeat: locks::Heartbeat) {
        heartbeat.stop().await;
        for t in self.targets.iter().filter(|t| t.locked) {
            t.repo(self.jn()).unlock(&self.id, LockKind::Backup).await;
        }
    }

    /// A published backup whose sources produced much less than the same sources did in
    /// the backups before it ([`shrink`]). Compared with what retention's listing of the
    /// first destination found and left (no listing of its own): up to [`shrink::EARLIER`]
    /// small manifest reads.
    async fn shrink_warnings(&self) -> Vec<String> {
        let Some((st, listed)) = &self.listed else {
            return Vec::new();
        };
        if self.fatal.is_some() || self.cancel.is_cancelled() {
            return Vec::new();
        }
        let mut earlier = Vec::new();
        for p in listed.iter().filter(|p| p.id != self.id) {
            if earlier.len() >= shrink::EARLIER {
                break;
            }
            // Removed by retention just now, or unreadable: not compared with.
            if let Ok(m) = Repository::new(st.as_ref(), self.jn())
                .manifest(&p.id)
                .await
            {
                earlier.push(shrink::manifest_sizes(&m));
            }
        }
        let warnings = shrink::warnings(self.jn(), &shrink::sizes(&self.entries), &earlier);
        for w in &warnings {
            warn!(job = self.jn(), id = %self.id, "backup {}: {w}", self.id);
        }
        warnings
    }

    /// The run's outcome, once it has published (or not).
    fn outcome(&self) -> Outcome {
        match &self.fatal {
            Some((_, _, o)) => *o,
            None if self.published.len() == self.targets.len() => Outcome::Success,
            None if !self.published.is_empty() => Outcome::Partial,
            None => Outcome::Failed,
        }
    }

    /// What the run stored, counted only where it published.
    fn bytes_out(&self) -> u64 {
        if self.published.is_empty() {
            0
        } else {
            self.entries
                .iter()
                .map(|e| e.size + e.files.as_ref().map_or(0, |f| f.uploaded))
                .sum()
        }
    }

    /// The run's outcome and figures.
    fn into_report(self) -> RunReport {
        let outcome = self.outcome();
        let bytes_out = self.bytes_out();
        RunReport {
            job: self.jn().to_string(),
            id: self.id,
            outcome,
            bytes_in: self.bytes_in,
            bytes_out,
            duration: self.t0.elapsed(),
            published: self.published,
            errors: self.errors,
            kept: self.kept,
            retention_interrupted: self.retention_interrupted,
            warnings: Vec::new(),
            hooks: self.hooks,
        }
    }
}

async fn stream_source(
    src: &dyn Database,
    key: &str,
    job: &Job,
    targets: &mut [Target],
    cancel: &CancellationToken,
) -> Result<SourceEntry, StreamError> {
    // Rows are counted only for a drill to compare with: counting reads every table once more.
    let dump = if job.drill.as_ref().is_some_and(|d| d.source == src.name()) {
        src.dump_counting_rows().await?
    } else {
        src.dump().await?
    };
    let raw = Arc::new(AtomicU64::new(0));
    let counter = raw.clone();
    let progress =
        crate::progress::Progress::new(format!("backup {} {}: dumped", job.name, src.name()), None);
    let shown = progress.clone();
    let counted = InspectReader::new(dump.reader, move |b: &[u8]| {
        counter.fetch_add(b.len() as u64, Ordering::Relaxed);
        shown.add(b.len() as u64);
    });
    let decoupled = codec::read_ahead(Box::new(counted), READ_AHEAD_CHUNKS);
    let reader = seal(
        job,
        codec::compress(decoupled, job.compression, job.compression_level),
    );

    let live: Vec<usize> = (0..targets.len())
        .filter(|i| targets[*i].error.is_none())
        .collect();
    let storages: Vec<&dyn Storage> = live.iter().map(|i| targets[*i].storage.as_ref()).collect();
    let finish = dump.finish;
    // The bytes are only a backup if the tool says the dump is complete.
    let (pumped, results) = fan_out(reader, key, &storages, cancel, async move {
        finish.await.map_err(StreamError::from)
    })
    .await;
    let mut any_ok = false;
    for (i, r) in live.iter().zip(results) {
        match r {
            Ok(_) => any_ok = true,
            Err(e) => {
                // "abandoned" only echoes a source failure, which is reported on its own.
                if targets[*i].error.is_none() && !matches!(e, storage::StorageError::Abandoned) {
                    targets[*i].error = Some(e.to_string());
                }
            }
        }
    }
    progress.finish();
    let (sha256, size, info) = pumped?;
    if !any_ok {
        return Err(StreamError::NoDestinationLeft);
    }
    Ok(SourceEntry {
        name: src.name().to_string(),
        kind: src.kind().to_string(),
        format: src.format().to_string(),
        key: key.to_string(),
        size,
        raw_size: raw.load(Ordering::Relaxed),
        sha256,
        exclude_tables: src.default_excludes(),
        tool: None,
        server_version: info.server_version,
        objects: info.objects,
        rows: info.rows,
        wal: info.wal,
        files: None,
        refs: None,
    })
}

/// The encryption stage, for a job that encrypts.
fn seal(job: &Job, r: codec::Reader) -> codec::Reader {
    match &job.encryption {
        Some(e) => crate::crypt::seal(r, e.sealer.clone()),
        None => r,
    }
}

/// Stream `reader` into `key` on every storage at once, through bounded channels (a slow
/// destination slows the producer instead of growing memory). The object is completed
/// only if `complete` succeeds once the reader is exhausted; otherwise every upload is
/// abandoned and nothing becomes visible. Returns the stored bytes' sha256 and size with
/// what `complete` returned, and each storage's result in order.
async fn fan_out<T>(
    reader: codec::Reader,
    key: &str,
    storages: &[&dyn Storage],
    cancel: &CancellationToken,
    complete: impl Future<Output = Result<T, StreamError>>,
) -> (
    Result<(String, u64, T), StreamError>,
    Vec<Result<u64, storage::StorageError>>,
) {
    fan_out_to(reader, key, storages, cancel, complete, true).await
}

/// [`fan_out`], `in_class` false: for an object stowage reads to plan (a file index),
/// kept out of archive classes.
async fn fan_out_to<T>(
    mut reader: codec::Reader,
    key: &str,
    storages: &[&dyn Storage],
    cancel: &CancellationToken,
    complete: impl Future<Output = Result<T, StreamError>>,
    in_class: bool,
) -> (
    Result<(String, u64, T), StreamError>,
    Vec<Result<u64, storage::StorageError>>,
) {
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for _ in storages {
        let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
        senders.push(tx);
        receivers.push(rx);
    }
    let uploads = join_all(storages.iter().zip(receivers).map(|(st, rx)| async move {
        if in_class {
            st.put_stream(key, rx).await
        } else {
            st.put_stream_plain(key, rx).await
        }
    }));
    let pump = async move {
        let mut hasher = Sha256::new();
        let mut stored = 0u64;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            let n = tokio::select! {
                _ = cancel.cancelled() => return Err(StreamError::Cancelled),
                r = reader.read_buf(&mut buf) => r.map_err(StreamError::Read)?,
            };
            if n == 0 {
                break;
            }
            let chunk: Bytes = buf.split().freeze();
            hasher.update(&chunk);
            stored += chunk.len() as u64;
            let mut alive = Vec::with_capacity(senders.len());
            for tx in senders.drain(..) {
                // A send fails only when that destination's upload gave up; it reports why.
                if tx.send(Chunk::Data(chunk.clone())).await.is_ok() {
                    alive.push(tx);
                }
            }
            senders = alive;
            if senders.is_empty() {
                return Err(StreamError::NoDestinationLeft);
            }
        }
        let done = complete.await?;
        for tx in &senders {
            let _ = tx.send(Chunk::End).await;
        }
        Ok((hex::encode(hasher.finalize()), stored, done))
    };
    let work = async { tokio::join!(pump, uploads) };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        _ = cancel.cancelled() => {
            // The pump stops at once and uploads still streaming abandon on their own; one
            // stuck at its store (a request that does not answer) is dropped after a moment,
            // and the run's cleanup removes what it left.
            match tokio::time::timeout(ABANDON_WAIT, &mut work).await {
                Ok((_, results)) => (Err(StreamError::Cancelled), results),
                Err(_) => (
                    Err(StreamError::Cancelled),
                    storages.iter().map(|_| Err(storage::StorageError::Abandoned)).collect(),
                ),
            }
        }
    }
}

async fn cleanup(storage: &dyn Storage, job: &str, id: &str, dest: &str, abandoned: bool) {
    let prefix = Repository::new(storage, job).backup_prefix(id);
    // An abandoned upload may have been dropped before it could abort itself.
    if abandoned {
        match storage.open_uploads(&prefix).await {
            Ok(open) => {
                for u in open {
                    if let Err(e) = storage.abort_upload(&u).await {
                        warn!(
                            job,
                            id,
                            destination = dest,
                            "could not abort the open upload of {} on {dest}: {e}; the next start retries",
                            u.key
                        );
                    }
                }
            }
            Err(e) => warn!(
                job,
                id,
                destination = dest,
                "could not list open uploads of the abandoned run on {dest}: {e}; the next start retries"
            ),
        }
    }
    match storage.list(&prefix).await {
        Ok(objs) if objs.is_empty() => {}
        Ok(objs) => {
            let keys: Vec<String> = objs.into_iter().map(|o| o.key).collect();
            match storage.delete(&keys).await {
                Ok(()) => info!(
                    job,
                    id,
                    destination = dest,
                    "removed {} object(s) of the failed run from {dest}",
                    keys.len()
                ),
                Err(e) => warn!(
                    job,
                    id,
                    destination = dest,
                    "could not remove leftovers of the failed run from {dest}: {e}"
                ),
            }
        }
        Err(e) => warn!(
            job,
            id,
            destination = dest,
            "could not list leftovers of the failed run on {dest}: {e}"
        ),
    }
    // An upload dropped between making the backup's directory and its first file leaves
    // the directory alone, which no listing shows.
    let _ = storage.remove_empty_dir(&prefix).await;
}

/// Returns how many published backups the destination holds afterwards.
/// The backups retention weighs, and those it leaves alone with why. Without
/// auth_key_file: every published one. With it, a manifest is read per backup (one small
/// GET each) and only authenticated backups count, so fake newer manifests written by
/// whoever can write to the destination cannot push real backups out of their slots;
/// unauthenticated backups older than the oldest authenticated one are the job's own from
/// before the key was set and are weighed like the rest (nothing newer depends on them).
pub(crate) async fn weighed(
    storage: &dyn Storage,
    job: &Job,
    published: &[manifest::Published],
) -> Result<WeighedBackups, storage::StorageError> {
    let all = || published.iter().map(|p| (p.id.clone(), p.time)).collect();
    let Some(key) = job.auth_key.as_deref() else {
        return Ok((all(), Vec::new()));
    };
    let mut verdicts = Vec::with_capacity(published.len());
    for chunk in published.chunks(8) {
        let read = join_all(
            chunk
                .iter()
                .map(|p| Repository::new(storage, &job.name).manifest(&p.id)),
        )
        .await;
        verdicts.extend(chunk.iter().zip(read));
    }
    let mut authentic = Vec::new();
    let mut doubtful = Vec::new();
    for (p, r) in verdicts {
        match r {
            Ok(m) => match m.authenticity(Some(key)) {
                manifest::Authenticity::Authentic => authentic.push((p.id.clone(), p.time)),
                a => doubtful.push((p, a.describe(Some(key)))),
            },
            // Deleted since the listing (another process's retention).
            Err(manifest::ManifestError::Storage(storage::StorageError::NotFound(_))) => {}
            Err(manifest::ManifestError::Storage(e)) => return Err(e),
            Err(e @ manifest::ManifestError::Corrupt { .. }) => doubtful.push((p, e.to_string())),
        }
    }
    let oldest = authentic.iter().map(|(_, t)| *t).min();
    let mut left_out = Vec::new();
    for (p, why) in doubtful {
        if oldest.is_none_or(|o| p.time < o) {
            authentic.push((p.id.clone(), p.time));
        } else {
            left_out.push((p.id.clone(), why));
        }
    }
    Ok((authentic, left_out))
}

/// (id, time) of the backups retention weighs; (id, why) of those it leaves alone.
pub(crate) type WeighedBackups = (Vec<(String, chrono::DateTime<Utc>)>, Vec<(String, String)>);

/// The published backups it holds afterwards, and those its listing found (newest first).
async fn apply_retention(
    t: &Target,
    job: &Job,
    own_id: &str,
) -> Result<(usize, Vec<manifest::Published>), storage::StorageError> {
    // From the destination's own listing, not local state: survives restarts and
    // counts backups written by other stowage processes too.
    let repo = t.repo(&job.name);
    let listing = repo.backups().await?;
    let published = listing.published(&job.name);
    if t.policy.is_keep_all() {
        return Ok((published.len(), published));
    }
    let (input, left_out) = weighed(t.storage.as_ref(), job, &published).await?;
    for (id, why) in &left_out {
        warn!(job = %job.name, destination = %t.name, "retention on {}: leaving backup {id} alone (not counted, not deleted): {why}; check it with `stowage list {}` and delete it by hand if it is not yours", t.name, job.name);
    }
    let now = Utc::now();
    let min = t
        .min_storage
        .map(|(_, days)| chrono::TimeDelta::days(days.into()));
    let mut decisions = retention::decide(&input, &t.policy, job.schedule.tz(), min, now);
    // Only what the rules would remove is asked about (a HEAD each).
    let doomed: Vec<(&str, chrono::DateTime<Utc>)> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| (d.id.as_str(), d.time))
        .collect();
    let locks = repo.object_locks(&doomed, t.object_lock).await?;
    retention::hold_locked(&mut decisions, &locks, now);
    for d in decisions.iter().filter(|d| d.reasons.contains(&"locked")) {
        info!(
            job = %job.name,
            destination = %t.name,
            "retention on {}: keeping backup {} the rules would remove: locked until {}",
            t.name,
            d.id,
            d.locked_until.map_or_else(String::new, |u| u.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        );
    }
    if let Some((class, days)) = t.min_storage {
        let held = decisions
            .iter()
            .filter(|d| d.reasons.contains(&"min_storage"))
            .count();
        if held > 0 {
            info!(
                job = %job.name,
                destination = %t.name,
                "retention on {}: keeping {held} backup(s) the rules would remove: younger than {class}'s minimum storage duration of {days} days (early_delete = true deletes them and pays the rest)",
                t.name
            );
        }
    }
    let mut removed = 0;
    for d in decisions.iter().filter(|d| !d.keep) {
        repo.delete_backup(&listing, &d.id).await?;
        removed += 1;
        info!(job = %job.name, destination = %t.name, "retention: removed backup {} from {}", d.id, t.name);
    }
    info!(
        job = %job.name,
        destination = %t.name,
        "retention on {} ({}): kept {}, removed {removed}",
        t.name,
        t.policy.describe(),
        decisions.len() - removed
    );
    // Blobs only become garbage when a backup referencing them goes.
    if removed > 0 && job.has_files() {
        sweep_blobs(t, job, own_id).await;
    }
    Ok((decisions.len() - removed, published))
}

/// After backup retention: the WAL no retained base backup of the destination can replay
/// (continuously archived sources only). A failure only delays it to the next run.
async fn prune_wal(t: &Target, job: &Job) {
    // As for blobs: a delete before the lock or minimum storage duration ends would only
    // hide the object behind a delete marker, or be billed anyway.
    let min_age = t
        .min_storage
        .map(|(_, days)| days)
        .into_iter()
        .chain(t.object_lock.map(|l| l.days))
        .max()
        .map(|days| chrono::TimeDelta::days(days.into()));
    match crate::wal::keep::apply(t.storage.as_ref(), job, min_age).await {
        Ok(kept) => {
            for k in kept {
                info!(job = %job.name, destination = %t.name, "WAL retention on {}: {}", t.name, k.describe());
            }
        }
        Err(e) => {
            warn!(job = %job.name, destination = %t.name, "WAL retention on {} failed: {e}; the WAL stays until the next run", t.name)
        }
    }
}

/// After retention removed backups: the file blobs no backup references any more.
async fn sweep_blobs(t: &Target, job: &Job, own_id: &str) {
    // A blob is locked at least `days` after its upload: a delete before then would only
    // hide it behind a delete marker.
    let min_age = t
        .min_storage
        .map(|(_, days)| days)
        .into_iter()
        .chain(t.object_lock.map(|l| l.days))
        .max()
        .map(|days| chrono::TimeDelta::days(days.into()));
    match t.repo(&job.name).sweep(own_id, min_age).await {
        Ok(SweepOutcome::Swept {
            deleted,
            kept,
            left,
        }) => info!(
            job = %job.name,
            destination = %t.name,
            "blob sweep on {}: deleted {deleted} unreferenced blob(s), kept {kept}{}",
            t.name,
            if left > 0 { format!(", {left} left for the next sweep (time budget)") } else { String::new() }
        ),
        Ok(SweepOutcome::Postponed { by }) => info!(
            job = %job.name,
            destination = %t.name,
            "blob sweep postponed on {}: backup {by} of this job is in progress and may reference them",
            t.name
        ),
        Err(e) => {
            warn!(job = %job.name, destination = %t.name, "blob sweep on {} failed: {e}; unreferenced blobs stay until the next sweep", t.name)
        }
    }
}

fn log_summary(r: &RunReport) {
    let secs = r.duration.as_secs_f64();
    let ratio = if r.bytes_out > 0 {
        r.bytes_in as f64 / r.bytes_out as f64
    } else {
        0.0
    };
    let throughput = if secs > 0.0 {
        r.bytes_in as f64 / secs / (1024.0 * 1024.0)
    } else {
        0.0
    };
    let line = format!(
        "backup {}: job={} id={} in={} out={} ratio={:.2} duration={:.1}s throughput={:.1}MiB/s destinations={}",
        r.outcome.as_str(),
        r.job,
        r.id,
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out),
        ratio,
        secs,
        throughput,
        if r.published.is_empty() {
            "none".to_string()
        } else {
            r.published.join(",")
        }
    );
    // The run succeeded, but someone should look: said on the summary line itself, which
    // is what a reader of the log (or of `docker logs`) sees of the run.
    let line = if r.warnings.is_empty() {
        line
    } else {
        format!("{line} warning: {}", r.warnings.join("; "))
    };
    let fields = (r.bytes_in, r.bytes_out, secs);
    match r.outcome {
        Outcome::Success => info!(
            summary = true,
            outcome = r.outcome.as_str(),
            bytes_in = fields.0,
            bytes_out = fields.1,
            duration_s = fields.2,
            "{line}"
        ),
        _ => error!(
            summary = true,
            outcome = r.outcome.as_str(),
            bytes_in = fields.0,
            bytes_out = fields.1,
            duration_s = fields.2,
            "{line}"
        ),
    }
    log_hooks(r);
}

/// Hooks that failed without failing the run (an `after`, or a `before` with `on_failure =
/// "continue"`): the backup is good, but an application may be left in maintenance mode or
/// a cache unflushed, which someone should hear of (notifications send warnings). A `before`
/// that failed the run is among its errors instead.
fn hook_warnings(hooks: &[HookReport]) -> Vec<String> {
    hooks
        .iter()
        .filter(|h| !h.ok && (h.ignored || h.key.ends_with(".after")))
        .map(|h| match &h.error {
            Some(e) => format!("hook {e}"),
            None => format!("hook {}", h.describe()),
        })
        .collect()
}

/// The hooks of the run, on one line after its summary: ok, or how each failed.
fn log_hooks(r: &RunReport) {
    if r.hooks.is_empty() {
        return;
    }
    let line = format!(
        "hooks of backup {}: {}",
        r.id,
        r.hooks
            .iter()
            .map(HookReport::describe)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.hooks.iter().all(|h| h.ok) {
        info!(summary = true, job = %r.job, "{line}");
    } else {
        warn!(summary = true, job = %r.job, "{line}");
    }
}

#[cfg(test)]
mod tests;
