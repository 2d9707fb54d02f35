//! Drives tokio-cron-scheduler without its ticker.
//!
//! `JobScheduler::start` spawns a loop that wakes every 500 ms to look for due jobs: about
//! 250 wakeups a minute (both of its wakes and the runtime's) for a daemon that has nothing
//! to do for hours. On a Raspberry Pi that is the difference between idling like cron and
//! not. The scheduler stays the schedule engine (its job store, its runner, one-shots as
//! the daemon arms them); this module takes the ticker's place: it sleeps until the next
//! job's time in the scheduler's store, or until the daemon arms something new, and then
//! does what the ticker does for the jobs that are due: activate them and retire them.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_cron_scheduler::JobScheduler;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Longest single sleep. Timers run on the monotonic clock while schedules are wall-clock
/// times: a board without a real-time clock boots with a stale time that NTP later moves
/// forward, and a sleep computed before that jump would end late. Waking this often to
/// look again costs nothing measurable (12 wakeups an hour).
const MAX_SLEEP: Duration = Duration::from_secs(5 * 60);

/// A fired one-shot is removed from the store this long after it fired, not at once: the
/// runner looks the job's code up after the activation, and removing it first loses the
/// run ("Error getting … from job code").
const RETIRE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Runs the scheduler's due jobs until `stop`. `armed` must be notified after every job
/// added to `sched`, so that a job due earlier than the current sleep is not missed.
/// `after_idle_look` runs right after each look that only the [`MAX_SLEEP`] timer caused
/// (the daemon gives back there what the look took: `crate::footprint::shed`), in this
/// same wake-up rather than in a second one.
pub async fn drive(
    sched: JobScheduler,
    armed: Arc<Notify>,
    after_idle_look: fn(),
    stop: CancellationToken,
) {
    let mut idle_look = false;
    loop {
        let next = fire_due(&sched, Utc::now()).await;
        // To the due second itself, not `time_till_next_job`'s whole seconds counted from
        // the current one, which would start a run up to a second late.
        let wait = match next {
            Some(t) => (t - Utc::now()).to_std().unwrap_or_default().min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        // Last thing before sleeping: what runs after it is mapped back in.
        if std::mem::take(&mut idle_look) {
            after_idle_look();
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => idle_look = wait == MAX_SLEEP,
            _ = armed.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// What the scheduler's tick does, for the jobs due at `now`: mark each as run (a
/// one-shot then has no next tick), activate it, and delete those retired a while ago.
/// Returns the earliest time a job is due after `now`.
async fn fire_due(sched: &JobScheduler, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let ctx = sched.context();
    let ticks = {
        let mut store = ctx.metadata_storage.write().await;
        match store.list_next_ticks().await {
            Ok(t) => t,
            Err(e) => {
                warn!("scheduler: cannot list the jobs: {e}; looking again in a minute");
                return Some(now + chrono::TimeDelta::minutes(1));
            }
        }
    };
    let mut earliest: Option<DateTime<Utc>> = None;
    for tick in ticks {
        let Some(id) = tick.id.as_ref().map(uuid::Uuid::from) else {
            continue;
        };
        // 0 for a one-shot that has fired.
        let next = (tick.next_tick != 0).then(|| utc(tick.next_tick)).flatten();
        match next {
            Some(next) if next <= now => {
                let mut store = ctx.metadata_storage.write().await;
                // Marked before the activation: a second pass can never fire it twice.
                if let Err(e) = store.set_next_and_last_tick(id, None, Some(now)).await {
                    warn!("scheduler: cannot mark job {id} as run: {e}");
                    continue;
                }
                drop(store);
                debug!("scheduler: job {id} due at {next} fires");
                if ctx.job_activation_tx.send(id).is_err() {
                    warn!("scheduler: its runner is gone; job {id} did not fire");
                }
            }
            Some(later) => earliest = Some(earliest.map_or(later, |e| e.min(later))),
            // No next tick: a one-shot that has fired.
            None => {
                let fired_long_ago = tick
                    .last_tick
                    .and_then(utc)
                    .is_none_or(|last| now - last >= RETIRE_AFTER);
                if fired_long_ago {
                    let _ = ctx.job_delete_tx.send(id);
                }
            }
        }
    }
    earliest
}

/// The scheduler's store keeps times as whole seconds since the epoch.
fn utc(secs: u64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(i64::try_from(secs).ok()?, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio_cron_scheduler::Job;

    /// A one-shot due in `secs` that counts its runs.
    fn counting_one_shot(secs: u64) -> (Job, Arc<AtomicUsize>) {
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let job = Job::new_one_shot_async(Duration::from_secs(secs), move |_, _| {
            let f = f.clone();
            Box::pin(async move {
                f.fetch_add(1, Ordering::SeqCst);
            })
        })
        .expect("job");
        (job, fired)
    }

    fn start(
        sched: &JobScheduler,
        armed: &Arc<Notify>,
        stop: &CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(drive(sched.clone(), armed.clone(), || {}, stop.clone()))
    }

    /// A one-shot fires once, on time, and is retired; nothing fires before its time.
    #[tokio::test]
    async fn fires_due_one_shots_once_and_retires_them() {
        let sched = JobScheduler::new().await.expect("scheduler");
        let armed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        // The store keeps whole seconds, so a one-shot "in 3 s" is due 2–3 s from now.
        let (job, fired) = counting_one_shot(3);
        let id = sched.add(job).await.expect("add");
        armed.notify_one();
        let driver = start(&sched, &armed, &stop);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0, "fired early");
        tokio::time::sleep(Duration::from_millis(3500)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1, "did not fire, or twice");
        // Retired on a later pass (arming anything wakes the driver).
        tokio::time::sleep(Duration::from_secs(5)).await;
        armed.notify_one();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let left = sched
            .context()
            .metadata_storage
            .write()
            .await
            .list_next_ticks()
            .await
            .expect("list");
        assert!(
            left.iter()
                .all(|t| t.id.as_ref().map(uuid::Uuid::from) != Some(id)),
            "the fired one-shot was not retired"
        );
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        stop.cancel();
        driver.await.expect("driver");
    }

    /// A job armed while the driver sleeps towards a later one still fires on time.
    #[tokio::test]
    async fn an_earlier_job_armed_during_a_long_sleep_fires() {
        let sched = JobScheduler::new().await.expect("scheduler");
        let armed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let later = Job::new_one_shot_async(Duration::from_secs(3600), |_, _| Box::pin(async {}))
            .expect("job");
        sched.add(later).await.expect("add");
        let driver = start(&sched, &armed, &stop);
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (soon, fired) = counting_one_shot(1);
        sched.add(soon).await.expect("add");
        armed.notify_one();
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        stop.cancel();
        driver.await.expect("driver");
    }
}
