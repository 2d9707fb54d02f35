//! The long-running mode: every job on its schedule until shutdown.
//!
//! tokio-cron-scheduler's own cron jobs freeze the job's UTC offset when the job is
//! created, so a container started in winter would fire an hour off all summer. Instead,
//! each next fire time is computed by [`crate::schedule`] in the job's real timezone and
//! armed as a one-shot job; when it fires it arms the next one.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use tokio_cron_scheduler::{Job as SchedJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::config::Config;
use crate::pipeline;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("scheduler: {0}")]
    Scheduler(String),
}

struct Ctx {
    config: Arc<Config>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

struct JobSlot {
    name: String,
    running: AtomicBool,
}

/// Run until `shutdown` completes. Running backups are then cancelled, which abandons
/// them cleanly (child processes killed, uploads aborted, nothing published), and this
/// returns once they have all stopped.
pub async fn run(
    config: Arc<Config>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let mut sched = JobScheduler::new()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    let ctx = Arc::new(Ctx {
        config: config.clone(),
        tracker: TaskTracker::new(),
        cancel: CancellationToken::new(),
    });
    for name in config.jobs.keys() {
        let slot = Arc::new(JobSlot {
            name: name.clone(),
            running: AtomicBool::new(false),
        });
        arm(sched.clone(), ctx.clone(), slot, Utc::now()).await?;
    }
    sched
        .start()
        .await
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
    info!(
        "stowage {} running {} job(s) from {}",
        env!("CARGO_PKG_VERSION"),
        config.jobs.len(),
        config.path.display()
    );

    shutdown.await;
    info!("shutdown requested: no new runs will start");
    if let Err(e) = sched.shutdown().await {
        warn!("scheduler shutdown: {e}");
    }
    ctx.cancel.cancel();
    ctx.tracker.close();
    if !ctx.tracker.is_empty() {
        info!("waiting for running backups to stop");
    }
    ctx.tracker.wait().await;
    info!("stopped");
    Ok(())
}

fn arm(
    sched: JobScheduler,
    ctx: Arc<Ctx>,
    slot: Arc<JobSlot>,
    after: DateTime<Utc>,
) -> BoxFuture<'static, Result<(), DaemonError>> {
    Box::pin(async move {
        let Some(job) = ctx.config.jobs.get(&slot.name) else {
            return Ok(());
        };
        let Some(next) = job.schedule.next_after(after) else {
            warn!(job = %slot.name, "schedule \"{}\" has no future run; the job will not run", job.schedule.expr());
            return Ok(());
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        let instant = std::time::Instant::now() + wait;
        let (c2, s2) = (ctx.clone(), slot.clone());
        let one_shot = SchedJob::new_one_shot_at_instant_async(instant, move |uuid, sched| {
            let (ctx, slot) = (c2.clone(), s2.clone());
            Box::pin(async move {
                fire(&ctx, &slot);
                let _ = sched.remove(&uuid).await;
                // Re-arm from the later of the planned time and now: a late wake-up
                // (suspended host) skips missed fires instead of firing them in a burst.
                let after = next.max(Utc::now());
                if !ctx.cancel.is_cancelled()
                    && let Err(e) = arm(sched, ctx.clone(), slot.clone(), after).await
                {
                    error!(job = %slot.name, "cannot schedule the next run: {e}");
                }
            })
        })
        .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        sched
            .add(one_shot)
            .await
            .map_err(|e| DaemonError::Scheduler(e.to_string()))?;
        info!(
            job = %slot.name,
            "next run of {} at {} ({})",
            slot.name,
            next.with_timezone(&job.schedule.tz()).format("%Y-%m-%d %H:%M:%S %Z"),
            next.format("%Y-%m-%dT%H:%M:%SZ")
        );
        Ok(())
    })
}

fn fire(ctx: &Arc<Ctx>, slot: &Arc<JobSlot>) {
    if ctx.cancel.is_cancelled() {
        return;
    }
    if slot.running.swap(true, Ordering::SeqCst) {
        warn!(job = %slot.name, "job {} is still running from its previous start; skipping this run", slot.name);
        return;
    }
    let (ctx2, slot2) = (ctx.clone(), slot.clone());
    ctx.tracker.spawn(async move {
        if let Some(job) = ctx2.config.jobs.get(&slot2.name) {
            let _ = pipeline::run_job(&ctx2.config, job, ctx2.cancel.child_token()).await;
        }
        slot2.running.store(false, Ordering::SeqCst);
    });
}
