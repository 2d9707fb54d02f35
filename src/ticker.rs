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

/// Longest single sleep where the wall-clock timer is not available (see [`WallClock`]):
/// timers of the runtime run on the monotonic clock while schedules are wall-clock times,
/// and a board without a real-time clock boots with a stale time that NTP later moves
/// forward; a sleep computed before that jump would end late.
const MAX_SLEEP: Duration = Duration::from_secs(5 * 60);

/// A fired one-shot is removed from the store this long after it fired, not at once: the
/// runner looks the job's code up after the activation, and removing it first loses the
/// run ("Error getting … from job code").
const RETIRE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Runs the scheduler's due jobs until `stop`. `armed` must be notified after every job
/// added to `sched`, so that a job due earlier than the current sleep is not missed.
/// Between jobs nothing wakes: no periodic look (measured: each 5-minute look cost the
/// runtime's timer wheel four wakeups and mapped a megabyte of code back in).
pub async fn drive(sched: JobScheduler, armed: Arc<Notify>, stop: CancellationToken) {
    let clock = WallClock::new();
    loop {
        let next = fire_due(&sched, Utc::now()).await;
        tokio::select! {
            _ = clock.until(next) => {}
            _ = armed.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Sleeps until a wall-clock time. On Linux a `CLOCK_REALTIME` timerfd armed with
/// `TFD_TIMER_CANCEL_ON_SET`: it fires when the clock reads that time, however the clock
/// got there, and wakes at once when the clock is set (NTP's first step on a board without
/// a real-time clock), so the caller computes the next time again. Elsewhere, or if the
/// timerfd cannot be had, the runtime's timer, at most [`MAX_SLEEP`] at a time.
struct WallClock {
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl WallClock {
    fn new() -> Self {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            let timer = timerfd_create(
                TimerfdClockId::Realtime,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )
            .map_err(std::io::Error::from)
            .and_then(|fd| {
                // SAFETY: `fd` is an open timerfd the AsyncFd owns from here on, so it
                // stays open and the same for the AsyncFd's whole life.
                unsafe {
                    tokio::io::unix::AsyncFd::register_with_interest(
                        fd,
                        tokio::io::Interest::READABLE,
                    )
                }
                .map_err(std::io::Error::from)
            });
            match timer {
                Ok(t) => Self { timer: Some(t) },
                Err(e) => {
                    warn!(
                        "scheduler: no wall-clock timer ({e}); looking at the clock every {} min instead",
                        MAX_SLEEP.as_secs() / 60
                    );
                    Self { timer: None }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Self {}
    }

    /// Completes at `at`, or earlier: when the clock is set, or after [`MAX_SLEEP`]
    /// without the timerfd. `None` (nothing scheduled) never completes.
    async fn until(&self, at: Option<DateTime<Utc>>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        #[cfg(target_os = "linux")]
        if let Some(timer) = &self.timer {
            match wait_timerfd(timer, at).await {
                Ok(()) => return,
                Err(e) => warn!("scheduler: wall-clock timer failed ({e}); using the runtime's"),
            }
        }
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait.min(MAX_SLEEP)).await;
    }
}

/// Arms `timer` for `at` and waits for it to fire or be cancelled by a clock change.
#[cfg(target_os = "linux")]
async fn wait_timerfd(
    timer: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    at: DateTime<Utc>,
) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let spec = Itimerspec {
        it_interval: zero,
        // A time in the past fires at once; not before second 1 of the epoch, as an
        // all-zero value would disarm the timer instead.
        it_value: Timespec {
            tv_sec: at.timestamp().max(1),
            tv_nsec: at.timestamp_subsec_nanos().into(),
        },
    };
    // Re-arming also clears a cancellation the last clock change left.
    timerfd_settime(
        timer.get_ref(),
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &spec,
    )?;
    loop {
        let mut guard = timer.readable().await?;
        let mut expirations = [0u8; 8];
        match guard.try_io(|fd| {
            rustix::io::read(fd.get_ref(), &mut expirations).map_err(std::io::Error::from)
        }) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.raw_os_error() == Some(rustix::io::Errno::CANCELED.raw_os_error()) => {
                debug!("scheduler: the clock was set; looking at the jobs' times again");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            // Readiness without an expiration to read: wait again.
            Err(_would_block) => continue,
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
        // When this job next needs the driver awake.
        let wake = match next {
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
                // A one-shot now has to be retired (below), a repeating job's next time
                // computed: look again then.
                Some(now + RETIRE_AFTER)
            }
            Some(later) => Some(later),
            // No next tick: a one-shot that has fired. Retired on a pass after
            // RETIRE_AFTER, which counts as a due time: nothing else may wake the driver
            // for hours, and the store would keep the job (and its code) until then.
            None => match tick.last_tick.and_then(utc) {
                Some(last) if now - last < RETIRE_AFTER => Some(last + RETIRE_AFTER),
                _ => {
                    let _ = ctx.job_delete_tx.send(id);
                    None
                }
            },
        };
        earliest = earliest.into_iter().chain(wake).min();
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
        tokio::spawn(drive(sched.clone(), armed.clone(), stop.clone()))
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
        // Retired RETIRE_AFTER later by the driver's own wake: nothing else wakes it.
        tokio::time::sleep(Duration::from_millis(5500)).await;
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

    /// The wall-clock timer fires at its time, not before; a time passed fires at once;
    /// nothing scheduled never fires.
    #[tokio::test]
    async fn the_wall_clock_wakes_at_the_time() {
        let clock = WallClock::new();
        #[cfg(target_os = "linux")]
        assert!(clock.timer.is_some(), "no timerfd on Linux");
        let start = std::time::Instant::now();
        clock
            .until(Some(Utc::now() + chrono::TimeDelta::milliseconds(700)))
            .await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(650) && took < Duration::from_secs(5),
            "woke after {took:?} for a time 700 ms ahead"
        );
        let start = std::time::Instant::now();
        clock
            .until(Some(Utc::now() - chrono::TimeDelta::hours(1)))
            .await;
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "a past time waited"
        );
        // Before the epoch too (an all-zero timerfd value would disarm it instead).
        let before_epoch = DateTime::from_timestamp(-100, 0);
        let fired = tokio::time::timeout(Duration::from_secs(1), clock.until(before_epoch)).await;
        assert!(fired.is_ok(), "a time before the epoch never fired");
        // Re-armed for a later time, the earlier arming does not fire it early.
        let ahead = Utc::now() + chrono::TimeDelta::milliseconds(400);
        let start = std::time::Instant::now();
        clock.until(Some(ahead)).await;
        assert!(start.elapsed() >= Duration::from_millis(350));
        let never = tokio::time::timeout(Duration::from_millis(300), clock.until(None)).await;
        assert!(never.is_err(), "nothing scheduled, yet it woke");
    }
}
