//! The long-running mode: every job on its schedule until shutdown.
//!
//! tokio-cron-scheduler's own cron jobs freeze the job's UTC offset when the job is
//! created, so a container started in winter would fire an hour off all summer. Instead,
//! each next fire time is computed by [`crate::schedule`] in the job's real timezone and
//! armed as a one-shot job; when it fires it arms the next one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job as SchedJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::{Config, Job};
use crate::status;
use crate::{pipeline, storage};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(#[from] tokio_cron_scheduler::JobSchedulerError),
    #[error("{0}")]
    Server(#[from] crate::server::ListenError),
}

/// How long abandoned runs get to clean up once the grace is over. The shipped compose
/// file's `stop_grace_period` covers `shutdown_grace` plus this.
pub const ABANDON_CLEANUP: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a run's runtime gets to drop its tasks once abandoned (see [`on_own_runtime`]),
/// and the daemon waits for that.
const RUNTIME_DROP: std::time::Duration = std::time::Duration::from_secs(2);

struct Ctx {
    /// Swapped by a reload; each run keeps the snapshot it started with.
    config: std::sync::RwLock<Arc<Config>>,
    /// Bumped by a reload: timers armed under an older generation die quietly.
    generation: AtomicU64,
    /// The pending one-shot of each (job, task) of the current generation, so that a
    /// reload removes them from the one scheduler instead of leaving them to wait there.
    timers: std::sync::Mutex<std::collections::HashMap<(String, Task), uuid::Uuid>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    /// Cancelled when abandoned runs are out of cleanup time: each run's runtime is then
    /// dropped, which kills its child processes (see [`on_own_runtime`]).
    drop_now: CancellationToken,
    /// Set on the first stop signal: nothing new starts from then on.
    stopping: AtomicBool,
    /// Cancelled on the first stop signal: ends waits between retries.
    stop: CancellationToken,
    /// Runs the stop abandoned: nothing of them published.
    abandoned: AtomicUsize,
    /// Runs whose backup was published but whose retention the stop interrupted.
    pruning_cut: AtomicUsize,
    /// For `stowage health` (saved to the state file on every change).
    state: std::sync::Mutex<status::State>,
    metrics: crate::server::Metrics,
    /// Every job's published backups, read from its destinations.
    history: crate::history::History,
    /// Notified after each job armed in the scheduler, so its driver looks again.
    armed: Arc<tokio::sync::Notify>,
    /// Notified when a run, a pass or a history refresh ends: memory is shed once quiet.
    work_done: Arc<tokio::sync::Notify>,
    /// Bumped when the status page or the metrics are read.
    looked_at: tokio::sync::watch::Sender<()>,
    /// The continuous WAL archiving of the current config: its stop and its tasks.
    wal: std::sync::Mutex<Option<(CancellationToken, Vec<tokio::task::JoinHandle<()>>)>>,
}

impl crate::server::View for Ctx {
    fn config(&self) -> Arc<Config> {
        Ctx::config(self)
    }
    fn state(&self) -> status::State {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
    fn metrics(&self) -> &crate::server::Metrics {
        &self.metrics
    }
    fn history(&self, job: &str) -> crate::history::JobHistory {
        self.history.get(job)
    }
    fn looked_at(&self) {
        self.looked_at.send_replace(());
    }
}

impl Ctx {
    fn config(&self) -> Arc<Config> {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn update(&self, job: &str, f: impl FnOnce(&mut status::JobStatus)) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        f(state.jobs.entry(job.to_string()).or_default());
        if let Err(e) = status::save(&state) {
            warn!(
                "cannot write {}: {e}; `stowage health` cannot see the jobs' state",
                status::state_file().display()
            );
        }
    }
}

impl Ctx {
    /// What finished, this daemon's or a command's: into the state (and its file) and the
    /// metrics.
    fn take_in(&self, r: &status::Record) {
        self.update(&r.job, |s| s.apply(&r.done));
        self.metrics.record_done(r);
    }

    /// The shrink warnings of the job's newest backup as its destinations hold it (a
    /// backup made by hand too), written down only when they changed.
    fn shrunk_now(&self, job: &str, h: &crate::history::JobHistory) {
        if h.backups.is_empty() {
            return;
        }
        let now = h.shrunk_sources();
        let same = self
            .state
            .lock()
            .map(|s| s.jobs.get(job).map_or(now.is_empty(), |j| j.shrunk == now))
            .unwrap_or(true);
        if !same {
            self.update(job, |s| s.shrunk = now);
        }
    }
}

/// The shipper reports after every pass (every second while files wait): its figures reach
/// the state file at most this often, a failure beginning or ending at once.
const WAL_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// That a quiet shipper is alive reaches the state file at most this often (`health` finds
/// a shipper that stopped reporting by it).
const WAL_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// When a stream's state was last written, and the largest change since.
struct WalSaved {
    at: Option<std::time::Instant>,
    unsaved: status::WalChange,
}

impl Default for WalSaved {
    fn default() -> Self {
        WalSaved {
            at: None,
            unsaved: status::WalChange::Alive,
        }
    }
}

impl Ctx {
    /// A stream of `job`'s `source` starts: `health` gives it time to report.
    fn wal_started(&self, job: &str, source: &str) {
        self.update(job, |s| {
            s.wal.entry(source.to_string()).or_default().started_at = Some(Utc::now());
        });
    }

    /// The shipper of `job`'s `source` reported `status`: kept in memory for the page and
    /// the metrics at once, written to the state file as [`WAL_SAVE_EVERY`] and
    /// [`WAL_ALIVE_EVERY`] allow (`saved`: when this stream last wrote it).
    fn record_wal(
        &self,
        job: &str,
        source: &str,
        status: &crate::wal::WalStatus,
        saved: &mut WalSaved,
    ) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let w = state
            .jobs
            .entry(job.to_string())
            .or_default()
            .wal
            .entry(source.to_string())
            .or_default();
        let change = w.observe(status, Utc::now()).max(saved.unsaved);
        let since = saved.at.map_or(std::time::Duration::MAX, |t| t.elapsed());
        let due = match change {
            status::WalChange::Verdict => true,
            status::WalChange::Figures => since >= WAL_SAVE_EVERY,
            status::WalChange::Alive => since >= WAL_ALIVE_EVERY,
        };
        if !due {
            saved.unsaved = change;
            return;
        }
        *saved = WalSaved {
            at: Some(std::time::Instant::now()),
            unsaved: status::WalChange::Alive,
        };
        if let Err(e) = status::save(&state) {
            warn!(
                "cannot write {}: {e}; `stowage health` cannot see the jobs' state",
                status::state_file().display()
            );
        }
    }
}

/// What the daemon is told from outside (signals, in production).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM/SIGINT: the first lets running backups finish within the grace, the second
    /// abandons them.
    Stop(&'static str),
    /// SIGHUP.
    Reload,
}

/// How the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every running backup finished (published or failed on its own).
    Clean,
    /// The stop cut work short (grace over, or a second signal): a running backup was
    /// abandoned, nothing of it published and its partial uploads removed; or retention
    /// after a published backup was interrupted, to be finished by the next run.
    Abandoned,
}

struct JobSlot {
    name: String,
    running: AtomicBool,
    healing: AtomicBool,
    verifying: AtomicBool,
    drilling: AtomicBool,
    /// Held by a backup attempt, a heal pass and a verify: the healer never restores while
    /// the job's backup runs, a backup never dumps a database the healer is restoring, and
    /// a verify never reads a backup that retention is deleting. Whichever comes second
    /// waits its turn.
    turn: tokio::sync::Mutex<()>,
}

impl Ctx {
    fn new(config: Arc<Config>) -> Arc<Ctx> {
        Arc::new(Ctx {
            config: std::sync::RwLock::new(config),
            generation: AtomicU64::new(0),
            timers: Default::default(),
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
            drop_now: CancellationToken::new(),
            stopping: AtomicBool::new(false),
            stop: CancellationToken::new(),
            abandoned: AtomicUsize::new(0),
            pruning_cut: AtomicUsize::new(0),
            state: std::sync::Mutex::new(status::State {
                pid: std::process::id(),
                started_at: Some(Utc::now()),
                jobs: Default::default(),
            }),
            metrics: crate::server::Metrics::new(),
            history: crate::history::History::default(),
            armed: Arc::new(tokio::sync::Notify::new()),
            work_done: Arc::new(tokio::sync::Notify::new()),
            looked_at: tokio::sync::watch::Sender::new(()),
            wal: std::sync::Mutex::new(None),
        })
    }
}

/// What a timer starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Task {
    Backup,
    Heal,
    Verify,
    Drill,
}

/// Run until a stop signal. Scheduling then stops and running backups get the config's
/// `shutdown_grace` to finish; past it, or on a second stop signal, they are cancelled,
/// which abandons them cleanly (child processes killed, uploads aborted, nothing
/// published). Returns once every task has stopped.
pub async fn run(
    config: Arc<Config>,
    mut signals: mpsc::Receiver<Signal>,
) -> Result<Stopped, DaemonError> {
    let ctx = Ctx::new(config.clone());
    // Password files a killed run left (its tools never ran to remove them).
    for gone in crate::owner::remove_stale_secret_files(&std::env::temp_dir()) {
        info!(
            "removed {}, a password file left by a stopped run",
            gone.display()
        );
    }
    let server_stop = CancellationToken::new();
    let server = match config.listen {
        Some(addr) => Some(
            crate::server::start(addr, ctx.clone(), server_stop.clone())
                .await
                .map_err(DaemonError::Server)?,
        ),
        None => None,
    };
    if let Ok(state) = ctx.state.lock()
        && let Err(e) = status::save(&state)
    {
        warn!(
            "cannot write {}: {e}; `stowage health` will report the daemon as unhealthy",
            status::state_file().display()
        );
    }
    {
        let ctx2 = ctx.clone();
        ctx.tracker
            .spawn(async move { take_in_commands(&ctx2).await });
    }
    let mut slots: BTreeMap<String, Arc<JobSlot>> = BTreeMap::new();
    for name in config.jobs.keys() {
        slots.insert(name.clone(), new_slot(name));
    }
    let mut sched = start_scheduler(&ctx, &slots).await?;
    let pid_file = pid_file();
    if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
        warn!(
            "cannot write {}: {e}; `stowage health` will report the daemon as down",
            pid_file.display()
        );
    }
    info!(
        "stowage {} running {} job(s) from {}",
        env!("CARGO_PKG_VERSION"),
        config.jobs.len(),
        config.path.display()
    );
    spawn_background(&ctx, &slots);

    let reason = loop {
        match signals.recv().await {
            Some(Signal::Stop(name)) => break name.to_string(),
            Some(Signal::Reload) => {
                if let Err(e) = reload(&ctx, &mut sched, &mut slots).await {
                    error!("{e}");
                }
            }
            None => break "end of signals".to_string(),
        }
    };
    wind_down(&ctx, &mut sched, &mut signals, &reason).await;
    // Health and metrics stay available until the last backup has stopped.
    server_stop.cancel();
    if let Some(h) = server {
        let _ = h.await;
    }
    let _ = std::fs::remove_file(&pid_file);
    let _ = std::fs::remove_file(status::state_file());
    // Commands run by hand from now on have no daemon to tell.
    // Only the daemon's own: not a directory someone else made there.
    let inbox = status::inbox_dir();
    if status::inbox_trusted(&inbox, Some(rustix::process::geteuid().as_raw())).is_ok() {
        let _ = std::fs::remove_dir_all(inbox);
    }
    let abandoned = ctx.abandoned.load(Ordering::SeqCst);
    let pruning_cut = ctx.pruning_cut.load(Ordering::SeqCst);
    if abandoned > 0 {
        warn!("stopped; {abandoned} running backup(s) abandoned, nothing of them published");
    }
    if pruning_cut > 0 {
        warn!(
            "stopped; retention after {pruning_cut} published backup(s) cut short; the next run prunes what it did not"
        );
    }
    if abandoned + pruning_cut > 0 {
        Ok(Stopped::Abandoned)
    } else {
        info!("stopped");
        Ok(Stopped::Clean)
    }
}

/// At start: each job's leftover cleanup then catch-up, the history re-read while someone
/// looks, and memory given back once quiet.
fn spawn_background(ctx: &Arc<Ctx>, slots: &BTreeMap<String, Arc<JobSlot>>) {
    let started = Utc::now();
    for slot in slots.values() {
        let (ctx2, slot2) = (ctx.clone(), slot.clone());
        ctx.tracker.spawn(async move {
            tokio::select! {
                _ = recover(&ctx2, &slot2, started) => {}
                _ = ctx2.cancel.cancelled() => return,
            }
            catch_up(&ctx2, &slot2).await;
        });
    }
    // The history also changes without this daemon (`stowage run`, another host's
    // retention): read it again while someone reads the page or the metrics, which are all
    // it feeds. Not on a timer of its own: re-reading every 15 minutes with nobody looking
    // was most of an idle daemon's wakeups.
    let ctx2 = ctx.clone();
    let looks = ctx.looked_at.subscribe();
    ctx.tracker.spawn(async move {
        // Ends with the first stop signal: a stop waits for backups, not for this.
        refresh_when_looked_at(looks, HISTORY_REFRESH, &ctx2.stop, || async {
            let names: Vec<String> = ctx2.config().jobs.keys().cloned().collect();
            for name in names {
                refresh_history(&ctx2, &name).await;
            }
        })
        .await
    });

    let ctx2 = ctx.clone();
    ctx.tracker.spawn(async move { restart_wal(&ctx2).await });

    let ctx2 = ctx.clone();
    let view = move || (ctx2.config(), crate::server::View::state(&*ctx2));
    ctx.tracker
        .spawn(crate::notify::digest_task(view, ctx.stop.clone()));

    ctx.tracker.spawn(crate::footprint::shed_when_quiet(
        ctx.work_done.clone(),
        ctx.stop.clone(),
    ));
}

/// How often the inbox of commands run by hand is read where it cannot be watched.
const INBOX_POLL: std::time::Duration = std::time::Duration::from_secs(60);

/// What `stowage run`, `heal`, `verify` and `drill` run by hand beside this daemon did
/// ([`status::post`]): on the page, in the metrics and for `health` as the daemon's own.
/// Sleeps on an inotify watch of the inbox, which only those commands write: an idle
/// daemon does not wake for it. Ends with the first stop signal.
async fn take_in_commands(ctx: &Arc<Ctx>) {
    let dir = status::inbox_dir();
    if let Err(e) = private_dir(&dir) {
        warn!(
            "cannot create {}: {}; runs, heals, verifies and drills run by hand will not show on the status page or in the metrics",
            dir.display(),
            crate::units::io_reason(&e)
        );
        return;
    }
    let me = Some(rustix::process::geteuid().as_raw());
    if let Err(why) = status::inbox_trusted(&dir, me) {
        warn!(
            "not taking in records of commands run by hand: {why}; runs, heals, verifies and drills run by hand will not show on the status page or in the metrics"
        );
        return;
    }
    // A record lands by a rename (`status::post`); nothing else wakes this.
    let mut watch = crate::dirwatch::DirWatch::new(&dir, crate::dirwatch::WatchFlags::MOVED_TO);
    loop {
        let (records, bad) = status::take_posted();
        for b in bad {
            warn!("ignored {b}: not a record a stowage command wrote");
        }
        for r in records {
            take_in_command(ctx, &r).await;
        }
        let changed = async {
            match &mut watch {
                Some(w) => {
                    if w.changed().await.is_err() {
                        watch = None;
                    }
                }
                None => tokio::time::sleep(INBOX_POLL).await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = ctx.stop.cancelled() => return,
        }
    }
}

/// One command's record, said in the log; a backup made by hand also brings the job's
/// history (plot, sizes, shrink warning) up to date.
async fn take_in_command(ctx: &Arc<Ctx>, r: &status::Record) {
    let (what, line, published) = match &r.done {
        status::Done::Run { run, published, .. } => (
            "run",
            format!("backup {} {}", run.id, run.outcome),
            !published.is_empty(),
        ),
        status::Done::Heal { heal, .. } => ("heal", heal.summary.clone(), false),
        status::Done::Verify { verify, .. } => ("verify", verify.summary.clone(), false),
        status::Done::Drill { drill, .. } => ("drill", drill.summary.clone(), false),
    };
    info!(job = %r.job, "{what} of {} run by hand: {line}", r.job);
    ctx.take_in(r);
    if published {
        tokio::select! {
            _ = refresh_history(ctx, &r.job) => {}
            _ = ctx.stop.cancelled() => {}
        }
    }
    ctx.work_done.notify_one();
}

/// `dir`, readable and writable by this user only: what lands there shows on the page.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Continuous WAL archiving for every physical source of the current config: the previous
/// config's streams stop first (each ships what it holds), then the new ones start. Ends
/// with the first stop signal, after a last shipping pass.
async fn restart_wal(ctx: &Arc<Ctx>) {
    let old = match ctx.wal.lock() {
        Ok(mut w) => w.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some((stop, tasks)) = old {
        stop.cancel();
        for task in tasks {
            // A stream that cannot finish its last pass in time must not block the new one
            // forever; what it did not ship stays in the spool for the next.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(60), task).await;
        }
    }
    if ctx.stopping.load(Ordering::SeqCst) {
        return;
    }
    let config = ctx.config();
    let stop = ctx.stop.child_token();
    let mut tasks = Vec::new();
    for stream in crate::wal::run::streams(&config) {
        let (tx, mut rx) = tokio::sync::watch::channel(crate::wal::WalStatus::default());
        let spool = crate::wal::run::spool_dir(
            &crate::wal::run::spool_root(&crate::instance::state_dir()),
            &stream.job,
            &stream.source,
        );
        let (job, source, ctx2) = (stream.job.clone(), stream.source.clone(), ctx.clone());
        ctx.wal_started(&job, &source);
        // Ends when the stream drops its sender.
        ctx.tracker.spawn(async move {
            let mut saved = WalSaved::default();
            while rx.changed().await.is_ok() {
                let status = rx.borrow_and_update().clone();
                ctx2.record_wal(&job, &source, &status, &mut saved);
                // Shipping allocates (buffers, the client's connections): given back once
                // the stream has been quiet a while, like after a run.
                if status.passing_since.is_none() {
                    ctx2.work_done.notify_one();
                }
            }
        });
        tasks.push(ctx.tracker.spawn(crate::wal::run::run(
            config.clone(),
            stream,
            spool,
            tx,
            stop.clone(),
        )));
    }
    match ctx.wal.lock() {
        Ok(mut w) => *w = Some((stop, tasks)),
        Err(poisoned) => *poisoned.into_inner() = Some((stop, tasks)),
    }
}

/// Stops scheduling, gives running work the config's `shutdown_grace` (or until a second stop
/// signal), then cancels it and waits for its cleanup, bounded by [`ABANDON_CLEANUP`].
async fn wind_down(
    ctx: &Arc<Ctx>,
    sched: &mut Scheduler,
    signals: &mut mpsc::Receiver<Signal>,
    reason: &str,
) {
    ctx.stopping.store(true, Ordering::SeqCst);
    ctx.stop.cancel();
    info!("{reason}: stopping; no new runs will start");
    sched.shutdown().await;
    ctx.tracker.close();
    let grace = ctx.config().shutdown_grace;
    if !ctx.tracker.is_empty() {
        info!(
            "waiting up to {} for running backups to finish (send the signal again to abandon them now)",
            humantime::format_duration(grace)
        );
        tokio::select! {
            _ = ctx.tracker.wait() => {}
            _ = tokio::time::sleep(grace) => {
                warn!("shutdown grace of {} is over: abandoning running backups", humantime::format_duration(grace));
            }
            s = next_stop(signals) => {
                warn!("{s} again: abandoning running backups now");
            }
        }
    }
    ctx.cancel.cancel();
    // Abandoned runs clean up after themselves (kill children, abort uploads, remove what
    // they wrote). Against a store that stopped answering that could take forever; what is
    // left then is removed by the next start's recovery.
    if tokio::time::timeout(ABANDON_CLEANUP, ctx.tracker.wait())
        .await
        .is_err()
    {
        ctx.abandoned.fetch_add(1, Ordering::SeqCst);
        warn!(
            "abandoned runs did not finish their cleanup within {}; the next start removes what they left",
            humantime::format_duration(ABANDON_CLEANUP)
        );
        // Their runtimes drop what is left (children killed) within a second.
        ctx.drop_now.cancel();
        let _ = tokio::time::timeout(RUNTIME_DROP, ctx.tracker.wait()).await;
    }
}

/// The next stop signal (reloads are ignored while stopping).
async fn next_stop(signals: &mut mpsc::Receiver<Signal>) -> String {
    loop {
        match signals.recv().await {
            Some(Signal::Stop(name)) => return name.to_string(),
            Some(Signal::Reload) => {}
            // No more signals can come: wait out the grace instead.
            None => std::future::pending::<()>().await,
        }
    }
}

fn new_slot(name: &str) -> Arc<JobSlot> {
    Arc::new(JobSlot {
        name: name.to_string(),
        running: AtomicBool::new(false),
        healing: AtomicBool::new(false),
        verifying: AtomicBool::new(false),
        drilling: AtomicBool::new(false),
        turn: tokio::sync::Mutex::new(()),
    })
}

/// A scheduler with every job armed under the current generation.
/// The one scheduler of the daemon's life, with every job armed. Reloads re-arm it rather
/// than replace it: a `JobScheduler` starts a dozen tasks of its own that its `shutdown`
/// does not end (about 190 KiB each time).
async fn start_scheduler(
    ctx: &Arc<Ctx>,
    slots: &BTreeMap<String, Arc<JobSlot>>,
) -> Result<Scheduler, DaemonError> {
    let sched = JobScheduler::new().await.map_err(DaemonError::Scheduler)?;
    arm_all(ctx, &sched, slots).await?;
    // Not `sched.start()`: its ticker wakes every 500 ms; `ticker::drive` sleeps until
    // the next job is due.
    let driver = ctx.cancel.child_token();
    ctx.tracker.spawn(crate::ticker::drive(
        sched.clone(),
        ctx.armed.clone(),
        driver.clone(),
    ));
    Ok(Scheduler { sched, driver })
}

/// Arm every task of every job for the current generation.
async fn arm_all(
    ctx: &Arc<Ctx>,
    sched: &JobScheduler,
    slots: &BTreeMap<String, Arc<JobSlot>>,
) -> Result<(), DaemonError> {
    let generation = ctx.generation.load(Ordering::SeqCst);
    let config = ctx.config();
    for slot in slots.values() {
        let Some(job) = config.jobs.get(&slot.name) else {
            continue;
        };
        for task in [Task::Backup, Task::Heal, Task::Verify, Task::Drill] {
            let armed = match task {
                Task::Backup => true,
                Task::Heal => job.heal.is_some(),
                Task::Verify => job.verify.is_some(),
                Task::Drill => job.drill.is_some(),
            };
            if !armed {
                continue;
            }
            arm(
                sched.clone(),
                ctx.clone(),
                slot.clone(),
                Utc::now(),
                generation,
                task,
            )
            .await?;
        }
    }
    Ok(())
}

/// The schedule engine and the task that drives it.
struct Scheduler {
    sched: JobScheduler,
    driver: CancellationToken,
}

impl Scheduler {
    async fn shutdown(&mut self) {
        self.driver.cancel();
        if let Err(e) = self.sched.shutdown().await {
            warn!("scheduler shutdown: {e}");
        }
    }
}

/// SIGHUP: read the config file again. An invalid file is rejected as a whole and the
/// running config stays in effect. A valid one replaces the schedule: runs in progress
/// finish with the config they started with; jobs new to the file get the start-up
/// treatment (leftover cleanup, catch-up).
async fn reload(
    ctx: &Arc<Ctx>,
    sched: &mut Scheduler,
    slots: &mut BTreeMap<String, Arc<JobSlot>>,
) -> Result<(), DaemonError> {
    let old = ctx.config();
    let new = match crate::load::load(&old.path) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            error!("SIGHUP: config reload rejected, the running config stays in effect: {e}");
            return Ok(());
        }
    };
    for w in &new.warnings {
        warn!("config {}: {w}", new.path.display());
    }
    if new.log != old.log {
        warn!("SIGHUP: [log] settings take effect on the next restart");
    }
    match ctx.config.write() {
        Ok(mut c) => *c = new.clone(),
        Err(poisoned) => *poisoned.into_inner() = new.clone(),
    }
    ctx.generation.fetch_add(1, Ordering::SeqCst);
    // The old generation's timers: a one-shot being armed right now sees the new
    // generation under this lock and removes itself (see `arm`).
    let stale: Vec<uuid::Uuid> = match ctx.timers.lock() {
        Ok(mut t) => t.drain().map(|(_, id)| id).collect(),
        Err(poisoned) => poisoned.into_inner().drain().map(|(_, id)| id).collect(),
    };
    for id in stale {
        // Already fired and gone is fine: its run checks the generation anyway.
        let _ = sched.sched.remove(&id).await;
    }
    slots.retain(|name, _| new.jobs.contains_key(name));
    let mut added = Vec::new();
    for name in new.jobs.keys() {
        if !slots.contains_key(name) {
            slots.insert(name.clone(), new_slot(name));
            added.push(name.clone());
        }
    }
    arm_all(ctx, &sched.sched, slots).await?;
    info!(
        "SIGHUP: config reloaded from {}: {} job(s){}",
        new.path.display(),
        new.jobs.len(),
        if added.is_empty() {
            String::new()
        } else {
            format!(", new: {}", added.join(", "))
        }
    );
    // What a reload leaves behind shows here: the count is flat across reloads unless
    // the old schedule's tasks outlive it.
    tracing::debug!(
        "SIGHUP: {} task(s) alive after the reload",
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    );
    let ctx2 = ctx.clone();
    ctx.tracker.spawn(async move { restart_wal(&ctx2).await });
    let started = Utc::now();
    for name in added {
        let Some(slot) = slots.get(&name).cloned() else {
            continue;
        };
        let ctx2 = ctx.clone();
        ctx.tracker.spawn(async move {
            tokio::select! {
                _ = recover(&ctx2, &slot, started) => {}
                _ = ctx2.cancel.cancelled() => return,
            }
            catch_up(&ctx2, &slot).await
        });
    }
    Ok(())
}

fn arm(
    sched: JobScheduler,
    ctx: Arc<Ctx>,
    slot: Arc<JobSlot>,
    after: DateTime<Utc>,
    generation: u64,
    task: Task,
) -> BoxFuture<'static, Result<(), DaemonError>> {
    Box::pin(async move {
        let config = ctx.config();
        let Some(job) = config.jobs.get(&slot.name) else {
            return Ok(());
        };
        let schedule = match task {
            Task::Backup => &job.schedule,
            Task::Heal => match &job.heal {
                Some(h) => &h.schedule,
                None => return Ok(()),
            },
            Task::Verify => match &job.verify {
                Some(v) => v,
                None => return Ok(()),
            },
            Task::Drill => match &job.drill {
                Some(d) => &d.schedule,
                None => return Ok(()),
            },
        };
        let Some(next) = schedule.next_after(after) else {
            warn!(job = %slot.name, "schedule \"{}\" has no future run; the job will not run", schedule.expr());
            return Ok(());
        };
        // tokio-cron-scheduler stores a one-shot's time in whole seconds, as now + wait with
        // both truncated: handed the exact wait, it fires up to a second early. Hand it the
        // whole seconds from this second to the fire time (cron times are whole seconds),
        // plus half a second so that its truncation of the wait lands on them.
        let secs = u64::try_from(next.timestamp() - Utc::now().timestamp()).unwrap_or(0);
        let instant = std::time::Instant::now()
            + std::time::Duration::from_secs(secs)
            + std::time::Duration::from_millis(500);
        let (c2, s2) = (ctx.clone(), slot.clone());
        let one_shot = SchedJob::new_one_shot_at_instant_async(instant, move |_, sched| {
            let (ctx, slot) = (c2.clone(), s2.clone());
            Box::pin(async move {
                if ctx.generation.load(Ordering::SeqCst) != generation {
                    // Armed before a reload: the new schedule has its own timer.
                    return;
                }
                match task {
                    Task::Backup => fire(&ctx, &slot),
                    Task::Heal => fire_heal(&ctx, &slot),
                    Task::Verify => fire_verify(&ctx, &slot),
                    Task::Drill => fire_drill(&ctx, &slot),
                }
                // No remove here: the scheduler drops a one-shot once it has run, and
                // removing it first races that bookkeeping ("Could not get job metadata").
                // Re-arm from the later of the planned time and now: a late wake-up
                // (suspended host) skips missed fires instead of firing them in a burst.
                let after = next.max(Utc::now());
                if !ctx.cancel.is_cancelled()
                    && let Err(e) =
                        arm(sched, ctx.clone(), slot.clone(), after, generation, task).await
                {
                    error!(job = %slot.name, "cannot schedule the next run: {e}");
                }
            })
        })
        .map_err(DaemonError::Scheduler)?;
        let id = sched.add(one_shot).await.map_err(DaemonError::Scheduler)?;
        let current = {
            let mut timers = match ctx.timers.lock() {
                Ok(t) => t,
                Err(poisoned) => poisoned.into_inner(),
            };
            let current = ctx.generation.load(Ordering::SeqCst) == generation;
            if current {
                timers.insert((slot.name.clone(), task), id);
            }
            current
        };
        if !current {
            // Armed by a timer of the old schedule as a reload replaced it.
            let _ = sched.remove(&id).await;
            return Ok(());
        }
        ctx.armed.notify_one();
        let when = format!(
            "{} ({})",
            next.with_timezone(schedule.tz())
                .format("%Y-%m-%d %H:%M:%S %Z"),
            next.format("%Y-%m-%dT%H:%M:%SZ")
        );
        match task {
            Task::Backup => info!(job = %slot.name, "next run of {} at {when}", slot.name),
            // Heals come every few minutes: their timers are not worth a line each.
            Task::Heal => tracing::debug!(job = %slot.name, "next heal of {} at {when}", slot.name),
            Task::Verify => info!(job = %slot.name, "next verify of {} at {when}", slot.name),
            Task::Drill => info!(job = %slot.name, "next restore drill of {} at {when}", slot.name),
        }
        Ok(())
    })
}

fn fire(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    if ctx.stopping.load(Ordering::SeqCst) {
        return;
    }
    if slot.running.swap(true, Ordering::SeqCst) {
        warn!(job = %slot.name, "job {} is still running from its previous start; skipping this run", slot.name);
        return;
    }
    let (ctx2, slot2) = (ctx.clone(), slot.clone());
    ctx.tracker.spawn(async move {
        let config = ctx2.config();
        if let Some(job) = config.jobs.get(&slot2.name) {
            run_with_retries(&ctx2, &config, job, &slot2).await;
        }
        slot2.running.store(false, Ordering::SeqCst);
        ctx2.work_done.notify_one();
    });
}

/// Start a heal pass unless one is still going; it waits for a running backup of the job.
fn fire_heal(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    fire_in_turn(
        ctx,
        slot,
        |s| &s.healing,
        "heal",
        |config, job| Box::pin(crate::heal::heal(config, job, false, false)),
        |ctx, job, report| {
            record_heal(ctx, &report);
            Box::pin(async move { crate::notify::healed(&job, &report).await })
        },
    );
}

/// Start a verify of the newest backup on every destination unless one is still going.
fn fire_verify(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    fire_in_turn(
        ctx,
        slot,
        |s| &s.verifying,
        "verify",
        |config, job| {
            Box::pin(async move {
                crate::verify::verify_with(
                    config,
                    job,
                    &crate::verify::Which::One("latest".into()),
                    None,
                    job.encryption.as_ref().and_then(|e| e.keys.clone()),
                    crate::verify::Options {
                        read_data: job.verify_read_data,
                        // The daemon never reads a backup it cannot authenticate.
                        trust_unauthenticated: false,
                    },
                )
                .await
                .unwrap_or_else(|e| crate::verify::VerifyReport {
                    job: job.name.clone(),
                    unreachable: vec![e.to_string()],
                    ..Default::default()
                })
            })
        },
        |ctx, job, report| {
            record_verify(ctx, &report);
            Box::pin(async move { crate::notify::verified(&job, &report).await })
        },
    );
}

/// Start a restore drill unless one is still going.
fn fire_drill(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    fire_in_turn(
        ctx,
        slot,
        |s| &s.drilling,
        "drill",
        |config, job| {
            Box::pin(crate::drill::drill(
                config,
                job,
                job.encryption.as_ref().and_then(|e| e.keys.clone()),
                false,
            ))
        },
        |ctx, job, report| {
            record_drill(ctx, &report);
            Box::pin(async move { crate::notify::drilled(&job, &report).await })
        },
    );
}

fn record_drill(ctx: &Arc<Ctx>, report: &crate::drill::DrillReport) {
    let line = report.summary();
    if report.passed() {
        info!(job = %report.job, "{line}");
    } else {
        error!(job = %report.job, "{line}");
    }
    ctx.take_in(&status::Record::drill(report));
}

/// A pass beside the backups (heal, verify, drill): one at a time (`busy`), in turn with the
/// job's backups, dropped by a stop past the grace. On a runtime of its own like a backup
/// ([`on_own_runtime`]), which also suits the restore and verify futures: they are not
/// provably `Send` (rustc#102211: their streams borrow), and `block_on` does not ask for that.
fn fire_in_turn<R: Send + 'static>(
    ctx: &Arc<Ctx>,
    slot: &Arc<JobSlot>,
    busy: fn(&JobSlot) -> &AtomicBool,
    what: &'static str,
    pass: for<'a> fn(&'a Config, &'a Job) -> futures::future::LocalBoxFuture<'a, R>,
    done: fn(&Arc<Ctx>, Job, R) -> BoxFuture<'static, ()>,
) {
    if ctx.stopping.load(Ordering::SeqCst) || busy(slot).swap(true, Ordering::SeqCst) {
        return;
    }
    let (ctx2, slot2) = (ctx.clone(), slot.clone());
    ctx.tracker.spawn(async move {
        let config = ctx2.config();
        if let Some(job) = config.jobs.get(&slot2.name) {
            let turn = match slot2.turn.try_lock() {
                Ok(t) => Some(t),
                Err(_) => {
                    info!(job = %job.name, "{what} {}: waiting for the job's backup to finish", job.name);
                    tokio::select! {
                        t = slot2.turn.lock() => Some(t),
                        _ = ctx2.stop.cancelled() => None,
                    }
                }
            };
            if turn.is_some() && !ctx2.stopping.load(Ordering::SeqCst) {
                let (config3, name, cancel) =
                    (config.clone(), job.name.clone(), ctx2.cancel.clone());
                let result = on_own_runtime(what, ctx2.drop_now.clone(), move || async move {
                    let job = config3.jobs.get(&name)?;
                    tokio::select! {
                        r = pass(&config3, job) => Some(r),
                        _ = cancel.cancelled() => None,
                    }
                })
                .await
                .flatten();
                drop(turn);
                if let Some(result) = result {
                    done(&ctx2, job.clone(), result).await;
                }
            }
        }
        busy(&slot2).store(false, Ordering::SeqCst);
        ctx2.work_done.notify_one();
    });
}

fn record_verify(ctx: &Arc<Ctx>, report: &crate::verify::VerifyReport) {
    let problems = report.problem_lines();
    let line = report.summary();
    if problems.is_empty() {
        info!(job = %report.job, "{line}");
    } else {
        for p in &problems {
            error!(job = %report.job, "verify {}: {p}", report.job);
        }
        error!(job = %report.job, "{line}");
    }
    ctx.take_in(&status::Record::verify(report));
}

fn record_heal(ctx: &Arc<Ctx>, report: &crate::heal::HealReport) {
    ctx.take_in(&status::Record::heal(report));
}

/// Runs the future `work` makes on a multi-threaded runtime of its own, on a thread of its own,
/// and returns its output; `None` if `drop_now` came first (the runtime is then shut down,
/// dropping every task of the work, whose child processes are killed on drop) or the thread
/// or runtime could not start (logged).
///
/// Why not on the daemon's runtime: a thread keeps every stack page it ever touched. A backup
/// polls deep futures (the S3 SDK's above all) on every worker, and the workers live as long
/// as the daemon, so a few hundred KiB of stack stayed resident through every idle hour
/// after the first backup (bench/README.md, "Idle footprint"). Here the run's threads end
/// with it and their stacks are unmapped; the daemon's own runtime is one thread that only
/// schedules, serves the status page and reads the history.
async fn on_own_runtime<R, F, Fut>(what: &str, drop_now: CancellationToken, work: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R>,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    let what = what.to_string();
    let spawned = std::thread::Builder::new()
        .name(format!("stowage-{what}"))
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(format!("stowage-{what}"))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    error!("cannot start a runtime for the {what}: {e}");
                    return;
                }
            };
            let out = rt.block_on(async {
                tokio::select! {
                    r = work() => Some(r),
                    _ = drop_now.cancelled() => None,
                }
            });
            // Tasks the work left (none when it finished on its own) are dropped here.
            rt.shutdown_timeout(RUNTIME_DROP / 2);
            let _ = tx.send(out);
        });
    if let Err(e) = spawned {
        error!("cannot start a thread for a run: {e}");
        return None;
    }
    rx.await.ok().flatten()
}

/// One scheduled run, tried again up to `retries` times while it fails (never while the
/// daemon is stopping). Each attempt is a full, independent run with its own id.
async fn run_with_retries(ctx: &Arc<Ctx>, config: &Arc<Config>, job: &Job, slot: &JobSlot) {
    let mut attempt = 0;
    loop {
        let turn = match slot.turn.try_lock() {
            Ok(t) => t,
            Err(_) => {
                info!(job = %job.name, "run of {}: waiting for the healer to finish", job.name);
                tokio::select! {
                    t = slot.turn.lock() => t,
                    _ = ctx.stop.cancelled() => return,
                }
            }
        };
        crate::notify::started(job).await;
        // A `stowage run` of the same job in another process: wait for it, then run.
        let opts = pipeline::RunOptions { wait_lock: true };
        let (config2, name, cancel) = (config.clone(), job.name.clone(), ctx.cancel.child_token());
        let report = on_own_runtime("run", ctx.drop_now.clone(), move || async move {
            let job = config2.jobs.get(&name)?;
            Some(pipeline::run_job(&config2, job, opts, cancel).await)
        })
        .await
        .flatten();
        drop(turn);
        // Dropped past the cleanup time: counted as abandoned already, nothing to record.
        let Some(report) = report else { return };
        let failed_last = ctx
            .state
            .lock()
            .is_ok_and(|s| crate::notify::failed_last(&s, &job.name));
        record(ctx, &report);
        tokio::select! {
            _ = refresh_history(ctx, &job.name) => {}
            _ = ctx.stop.cancelled() => {}
        }
        let failed = matches!(
            report.outcome,
            pipeline::Outcome::Failed | pipeline::Outcome::Partial
        );
        let retry = failed && attempt < job.retries && !ctx.stopping.load(Ordering::SeqCst);
        let told = crate::notify::Attempt {
            retry: attempt,
            retries: job.retries,
            next_in: retry.then_some(job.retry_delay),
        };
        crate::notify::finished_attempt(job, &report, failed_last, told).await;
        if !retry {
            return;
        }
        attempt += 1;
        warn!(
            job = %job.name,
            "run {} of {} {}; retry {attempt}/{} in {}",
            report.id,
            job.name,
            report.outcome.as_str(),
            job.retries,
            humantime::format_duration(job.retry_delay)
        );
        tokio::select! {
            _ = tokio::time::sleep(job.retry_delay) => {}
            _ = ctx.stop.cancelled() => return,
        }
    }
}

/// Runs `refresh` for the looks (sends on `looks`' channel) it has not served yet: each
/// refresh serves every look before it starts. At most every `every`, the first time
/// `every` after the start; ends with `stop`, also in the middle of a refresh.
async fn refresh_when_looked_at<F, Fut>(
    mut looks: tokio::sync::watch::Receiver<()>,
    every: std::time::Duration,
    stop: &CancellationToken,
    mut refresh: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut read_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = looks.changed() => if changed.is_err() { return },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(read_at + every) => {}
        }
        looks.borrow_and_update();
        read_at = tokio::time::Instant::now();
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = refresh() => {}
        }
    }
}

/// How often the daemon re-reads its jobs' histories from their destinations while the
/// page or the metrics are being read.
const HISTORY_REFRESH: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Read the job's published backups again (newest from the destinations' own listings,
/// not local state, which a fresh container does not have); the page and the metrics
/// follow.
async fn refresh_history(ctx: &Arc<Ctx>, job: &str) -> crate::history::JobHistory {
    let config = ctx.config();
    let Some(job) = config.jobs.get(job) else {
        return Default::default();
    };
    let h = ctx.history.refresh(&config, job).await;
    ctx.metrics.record_history(&job.name, &h);
    ctx.shrunk_now(&job.name, &h);
    ctx.work_done.notify_one();
    h
}

fn record(ctx: &Arc<Ctx>, report: &pipeline::RunReport) {
    if report.outcome == pipeline::Outcome::Cancelled {
        ctx.abandoned.fetch_add(1, Ordering::SeqCst);
    } else if report.retention_interrupted {
        ctx.pruning_cut.fetch_add(1, Ordering::SeqCst);
    }
    ctx.take_in(&status::Record::run(report));
}

/// Where the daemon records its pid for `stowage health` (`$STOWAGE_PID_FILE`, default
/// `stowage-daemon.pid` in the state directory, beside the lock that makes it the only
/// daemon there: a shared default would let daemons of different state directories
/// overwrite one another's).
pub fn pid_file() -> std::path::PathBuf {
    std::env::var_os("STOWAGE_PID_FILE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::instance::state_dir().join("stowage-daemon.pid"))
}

/// Before anything else, remove what runs killed by a crash left on the job's destinations.
async fn recover(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>, started: DateTime<Utc>) {
    let config = ctx.config();
    let Some(job) = config.jobs.get(&slot.name) else {
        return;
    };
    for js in storage::open_job(&config, job).await {
        let name = js.name;
        if let Err(e) = crate::recover::clean(js.storage.as_ref(), &job.name, started).await {
            warn!(job = %job.name, destination = %name, "cannot check {name} for leftovers of interrupted runs: {e}");
        }
    }
}

/// A restart (config edit, host reboot, crash) must not cost a backup: when the newest
/// published backup is older than one schedule period, or there is none, run now.
async fn catch_up(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    let config = ctx.config();
    let Some(job) = config.jobs.get(&slot.name) else {
        return;
    };
    let now = Utc::now();
    // One read of the destinations serves catch-up, health, the page and the metrics.
    let h = tokio::select! {
        h = refresh_history(ctx, &slot.name) => h,
        // Listing an unreachable S3 endpoint can take a while; a stop should not wait.
        _ = ctx.stop.cancelled() => return,
    };
    for (name, held) in &h.held {
        if let Err(e) = held {
            warn!(job = %job.name, destination = %name, "catch-up: cannot list {name}: {e}");
        }
    }
    let newest = h.newest_published;
    // Known for `health` even when catch-up is off.
    ctx.update(&slot.name, |s| {
        s.newest_backup = s.newest_backup.max(newest)
    });
    if !job.catch_up {
        return;
    }
    let period = job.schedule.period(now);
    if catch_up_due(newest, period, now) {
        match newest {
            None => {
                info!(job = %slot.name, "catch-up: job {} has no published backup yet; running now", slot.name)
            }
            Some(t) => info!(
                job = %slot.name,
                "catch-up: newest backup of {} is from {}, older than its schedule period; running now",
                slot.name,
                t.format("%Y-%m-%dT%H:%M:%SZ")
            ),
        }
        fire(ctx, slot);
    }
}

/// Pure: is a catch-up run due? A schedule without a computable period never catches up.
pub fn catch_up_due(
    newest: Option<DateTime<Utc>>,
    period: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> bool {
    match (newest, period) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(t), Some(p)) => now - t > p,
    }
}

#[cfg(test)]
mod tests {
    use super::{catch_up_due, refresh_when_looked_at};
    use chrono::{Duration, TimeZone, Utc};
    use std::sync::Arc;

    /// The history re-read with the clock paused: `looks` are the minutes at which someone
    /// reads the page; returns the minutes at which it was re-read before `until`.
    async fn refreshes(looks: &[u64], until: u64) -> Vec<u64> {
        let looked = tokio::sync::watch::Sender::new(());
        let stop = tokio_util::sync::CancellationToken::new();
        let start = tokio::time::Instant::now();
        let at = Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let (looks, stop, at) = (looked.subscribe(), stop.clone(), at.clone());
            tokio::spawn(async move {
                refresh_when_looked_at(
                    looks,
                    std::time::Duration::from_secs(15 * 60),
                    &stop,
                    || {
                        let at = at.clone();
                        async move {
                            if let Ok(mut v) = at.lock() {
                                v.push(start.elapsed().as_secs() / 60);
                            }
                        }
                    },
                )
                .await
            })
        };
        for minute in 0..until {
            if looks.contains(&minute) {
                looked.send_replace(());
            }
            // Stop half a minute before `until`, clear of a read due at that minute.
            let step = if minute + 1 == until { 30 } else { 60 };
            tokio::time::sleep(std::time::Duration::from_secs(step)).await;
        }
        stop.cancel();
        task.await.expect("the refresher ends with stop");
        at.lock().map(|v| v.clone()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn history_is_reread_only_while_someone_looks() {
        assert_eq!(
            refreshes(&[], 180).await,
            Vec::<u64>::new(),
            "nobody looks: no wake"
        );
        assert_eq!(
            refreshes(&[1], 180).await,
            vec![15],
            "one look: one read, when due"
        );
        assert_eq!(
            refreshes(&[40], 180).await,
            vec![40],
            "long overdue: at once"
        );
        let scraped: Vec<u64> = (0..60).collect();
        assert_eq!(
            refreshes(&scraped, 60).await,
            vec![15, 30, 45],
            "scraped every minute: every 15 minutes"
        );
        assert_eq!(
            refreshes(&[2, 16, 17], 60).await,
            vec![15, 30],
            "a look after a read waits for the next, which serves every look before it"
        );
    }

    #[test]
    fn catch_up_rules() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
            .single()
            .expect("valid");
        let day = Some(Duration::hours(24));
        assert!(catch_up_due(None, day, now), "no backup at all");
        assert!(
            catch_up_due(Some(now - Duration::hours(25)), day, now),
            "stale"
        );
        assert!(
            !catch_up_due(Some(now - Duration::hours(23)), day, now),
            "fresh"
        );
        assert!(
            !catch_up_due(Some(now - Duration::hours(24)), day, now),
            "exactly one period"
        );
        assert!(!catch_up_due(None, None, now), "no period");
    }
}
