//! Drives tokio-cron-scheduler without its ticker.
//!
//! `JobScheduler::start` spawns a loop that wakes every 500 ms to look for due jobs: about
//! 250 wakeups a minute (both of its wakes and the runtime's) for a daemon that has nothing
//! to do for hours. On a Raspberry Pi that is the difference between idling like cron and
//! not. The scheduler stays the schedule engine (its job store, its runner, one-shots as
//! the daemon arms them); this module takes the ticker's place: it sleeps until the next
//! job's time in the scheduler's store, or until the daemon arms something new, and then
//! does what the ticker does for the jobs that are due: activate them and retire them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_cron_scheduler::JobScheduler;
use tokio_cron_scheduler::job::job_data::JobType;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Longest single sleep where the wall-clock timer cannot also wake when the clock is set
/// (see [`Mode`]): a board without a real-time clock boots with a stale time that NTP
/// later moves, and a time computed before that jump is looked at again by then.
const MAX_SLEEP: Duration = Duration::from_secs(5 * 60);

/// A fired one-shot is removed from the store this long after it fired, not at once: the
/// runner looks the job's code up after the activation, and removing it first loses the
/// run ("Error getting … from job code"), and with it the daemon's re-arming of the next
/// one. Monotonic time: a clock set just after the fire must not shorten it.
const RETIRE_AFTER: Duration = Duration::from_secs(5);

/// Runs the scheduler's due jobs until `stop`. `armed` must be notified after every job
/// added to `sched`, so that a job due earlier than the current sleep is not missed.
/// Between jobs nothing wakes: no periodic look (measured: each 5-minute look cost the
/// runtime's timer wheel four wakeups and mapped a megabyte of code back in).
pub async fn drive(sched: JobScheduler, armed: Arc<Notify>, stop: CancellationToken) {
    drive_with(sched, armed, stop, WallClock::new()).await
}

/// The clock the driver reads and sleeps on: the system's ([`WallClock`]), or a test's
/// that can be set without setting the machine's.
trait Clock {
    fn now(&self) -> DateTime<Utc>;
    /// Completes at `at`, or earlier (the clock was set, or a capped sleep ended): the
    /// caller then looks at the jobs again. `None` (nothing scheduled) never completes.
    fn until(&mut self, at: Option<DateTime<Utc>>) -> impl Future<Output = ()> + Send;
}

async fn drive_with(
    sched: JobScheduler,
    armed: Arc<Notify>,
    stop: CancellationToken,
    mut clock: impl Clock,
) {
    // Fired one-shots waiting to be retired, with the (monotonic) time they fired.
    let mut fired: HashMap<Uuid, Instant> = HashMap::new();
    loop {
        let next = fire_due(&sched, clock.now(), Instant::now(), &mut fired).await;
        let retire = fired.values().min().map(|t| *t + RETIRE_AFTER);
        tokio::select! {
            _ = clock.until(next) => {}
            _ = async {
                match retire {
                    Some(t) => tokio::time::sleep_until(t.into()).await,
                    None => std::future::pending().await,
                }
            } => {}
            _ = armed.notified() => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// How [`WallClock`] sleeps; it only ever moves down this list, each step logged once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// A `CLOCK_REALTIME` timerfd armed with `TFD_TIMER_CANCEL_ON_SET`: fires when the
    /// clock reads the time, however it got there, and wakes at once when the clock is set.
    CancelOnSet,
    /// The same timerfd without `TFD_TIMER_CANCEL_ON_SET`, which some kernels refuse
    /// (gVisor: EINVAL): still fires when the clock reads the time, and sleeps at most
    /// [`MAX_SLEEP`] so that a set clock is seen within that.
    Plain,
    /// No timerfd: the runtime's timer (monotonic), at most [`MAX_SLEEP`] at a time.
    Runtime,
}

/// What to do after arming the timerfd failed with `errno` in `mode`.
#[derive(Debug, PartialEq, Eq)]
enum AfterArmError {
    /// ECANCELED: the clock was set since the last arming (the cancellation was not read
    /// yet). Nothing is wrong: arm again.
    Rearm,
    /// Go down to this mode, for good.
    FallBack(Mode),
}

fn after_arm_error(mode: Mode, errno: i32) -> AfterArmError {
    if errno == libc::ECANCELED {
        AfterArmError::Rearm
    } else if errno == libc::EINVAL && mode == Mode::CancelOnSet {
        AfterArmError::FallBack(Mode::Plain)
    } else {
        AfterArmError::FallBack(Mode::Runtime)
    }
}

/// Arms a timerfd for an absolute wall-clock time.
#[cfg(target_os = "linux")]
type Arm = fn(&std::os::fd::OwnedFd, DateTime<Utc>, bool) -> std::io::Result<()>;

/// Sleeps until a wall-clock time: a timerfd on Linux (see [`Mode`]), the runtime's timer
/// elsewhere or if the timerfd cannot be had.
struct WallClock {
    mode: Mode,
    #[cfg(target_os = "linux")]
    timer: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
    #[cfg(target_os = "linux")]
    arm: Arm,
    /// How many times it went down a mode (each logged once).
    fallbacks: u32,
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
                Ok(t) => Self {
                    mode: Mode::CancelOnSet,
                    timer: Some(t),
                    arm: arm_timerfd,
                    fallbacks: 0,
                },
                Err(e) => {
                    warn!(
                        "scheduler: no wall-clock timer ({e}); looking at the clock every {} min instead",
                        MAX_SLEEP.as_secs() / 60
                    );
                    Self {
                        mode: Mode::Runtime,
                        timer: None,
                        arm: arm_timerfd,
                        fallbacks: 0,
                    }
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        Self {
            mode: Mode::Runtime,
            fallbacks: 0,
        }
    }

    /// Goes down to `to` for good, saying so once.
    fn fall_back(&mut self, to: Mode, why: &std::io::Error) {
        if to == self.mode {
            return;
        }
        self.fallbacks += 1;
        match to {
            Mode::Plain => info!(
                "scheduler: the wall-clock timer cannot wake when the clock is set ({why}); it looks at the jobs' times at least every {} min instead",
                MAX_SLEEP.as_secs() / 60
            ),
            _ => warn!(
                "scheduler: wall-clock timer failed ({why}); using the runtime's, looking at the clock every {} min",
                MAX_SLEEP.as_secs() / 60
            ),
        }
        self.mode = to;
    }

    #[cfg(target_os = "linux")]
    async fn until_timerfd(&mut self, at: DateTime<Utc>) -> bool {
        // ECANCELED on arming: armed again at once, but not forever (a clock being set in
        // a loop); the caller then looks at the jobs again, which re-arms.
        for _ in 0..4 {
            let mode = self.mode;
            let Some(timer) = self.timer.as_ref() else {
                return false;
            };
            let (target, cancel_on_set) = match mode {
                Mode::CancelOnSet => (at, true),
                Mode::Plain => (at.min(Utc::now() + MAX_SLEEP), false),
                Mode::Runtime => return false,
            };
            let armed = (self.arm)(timer.get_ref(), target, cancel_on_set);
            let e = match armed {
                Ok(()) => match wait_timerfd(timer).await {
                    Ok(()) => return true,
                    Err(e) => {
                        self.fall_back(Mode::Runtime, &e);
                        return false;
                    }
                },
                Err(e) => e,
            };
            match after_arm_error(mode, e.raw_os_error().unwrap_or(0)) {
                AfterArmError::Rearm => {
                    debug!(
                        "scheduler: the clock was set since the timer was last armed; arming it again"
                    );
                }
                AfterArmError::FallBack(to) => self.fall_back(to, &e),
            }
        }
        true
    }
}

impl Clock for WallClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn until(&mut self, at: Option<DateTime<Utc>>) {
        let Some(at) = at else {
            return std::future::pending().await;
        };
        #[cfg(target_os = "linux")]
        if self.until_timerfd(at).await {
            return;
        }
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait.min(MAX_SLEEP)).await;
    }
}

/// Arms `timer` (ABSTIME) for `at`; with `cancel_on_set`, a clock set also wakes it.
#[cfg(target_os = "linux")]
fn arm_timerfd(
    timer: &std::os::fd::OwnedFd,
    at: DateTime<Utc>,
    cancel_on_set: bool,
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
    let mut flags = TimerfdTimerFlags::ABSTIME;
    if cancel_on_set {
        flags |= TimerfdTimerFlags::CANCEL_ON_SET;
    }
    // Re-arming also clears a cancellation the last clock change left.
    timerfd_settime(timer, flags, &spec)?;
    Ok(())
}

/// Waits for the armed `timer` to fire or be cancelled by a clock change.
#[cfg(target_os = "linux")]
async fn wait_timerfd(
    timer: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
) -> std::io::Result<()> {
    loop {
        let mut guard = timer.readable().await?;
        let mut expirations = [0u8; 8];
        match guard.try_io(|fd| {
            rustix::io::read(fd.get_ref(), &mut expirations).map_err(std::io::Error::from)
        }) {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ECANCELED) => {
                debug!("scheduler: the clock was set; looking at the jobs' times again");
                return Ok(());
            }
            Ok(Err(e)) => return Err(e),
            // Readiness without an expiration to read: wait again.
            Err(_would_block) => continue,
        }
    }
}

/// What the scheduler's tick does, for the jobs due at `now`: record the run and the
/// job's next time (none for a one-shot, which is then retired [`RETIRE_AFTER`] later,
/// counted on the monotonic `mono`), and activate it. `fired` holds the one-shots waiting
/// to be retired. Returns the earliest time a job is due after `now`.
async fn fire_due(
    sched: &JobScheduler,
    now: DateTime<Utc>,
    mono: Instant,
    fired: &mut HashMap<Uuid, Instant>,
) -> Option<DateTime<Utc>> {
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
    // Removed by someone else (the daemon's reload): nothing to retire.
    fired.retain(|id, _| {
        ticks
            .iter()
            .any(|t| t.id.as_ref().map(Uuid::from) == Some(*id))
    });
    let mut earliest: Option<DateTime<Utc>> = None;
    for tick in ticks {
        let Some(id) = tick.id.as_ref().map(Uuid::from) else {
            continue;
        };
        // 0 for a one-shot that has fired.
        let next = (tick.next_tick != 0).then(|| utc(tick.next_tick)).flatten();
        match next {
            Some(due) if due <= now => {
                let mut store = ctx.metadata_storage.write().await;
                let following = match store.get(id).await {
                    Ok(Some(job)) => following_tick(&job, due, now),
                    Ok(None) => continue,
                    Err(e) => {
                        warn!("scheduler: cannot read job {id}: {e}");
                        continue;
                    }
                };
                // Recorded before the activation: a second pass can never fire it twice.
                if let Err(e) = store.set_next_and_last_tick(id, following, Some(now)).await {
                    warn!("scheduler: cannot mark job {id} as run: {e}");
                    continue;
                }
                drop(store);
                debug!("scheduler: job {id} due at {due} fires");
                if ctx.job_activation_tx.send(id).is_err() {
                    warn!("scheduler: its runner is gone; job {id} did not fire");
                }
                match following {
                    Some(t) => earliest = earliest.into_iter().chain(Some(t)).min(),
                    None => {
                        fired.insert(id, mono);
                    }
                }
            }
            Some(later) => earliest = earliest.into_iter().chain(Some(later)).min(),
            // A one-shot that has fired: retired once RETIRE_AFTER has passed since this
            // driver saw it fire (or first saw it fired).
            None => {
                let at = *fired.entry(id).or_insert(mono);
                if mono.duration_since(at) >= RETIRE_AFTER {
                    fired.remove(&id);
                    let _ = ctx.job_delete_tx.send(id);
                }
            }
        }
    }
    earliest
}

/// A job's time after the run due at `due`, fired at `now`, as the scheduler's own tick
/// computes it: the schedule's next time after now for a cron job, none for a one-shot;
/// for a repeated job the next multiple of its period after `due` that is later than now
/// (the tick adds one period, firing every missed one in a burst after a long sleep).
fn following_tick(
    job: &tokio_cron_scheduler::job::job_data::JobStoredData,
    due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match JobType::from_i32(job.job_type)? {
        JobType::OneShot => None,
        JobType::Cron => {
            let offset = chrono::FixedOffset::east_opt(job.time_offset_seconds)
                .or_else(|| chrono::FixedOffset::east_opt(0))?;
            let after = job
                .schedule()?
                .iter_after(now.with_timezone(&offset))
                .next()?;
            Some(after.with_timezone(&Utc))
        }
        JobType::Repeated => {
            let every = i64::try_from(job.repeated_every()?).ok()?.max(1);
            let behind = (now - due).num_seconds().max(0);
            due.checked_add_signed(chrono::TimeDelta::seconds((behind / every + 1) * every))
        }
    }
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
        let mut clock = WallClock::new();
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
        assert_eq!(clock.mode, Mode::CancelOnSet);
    }

    /// Whether the store still holds job `id`.
    async fn in_store(sched: &JobScheduler, id: Uuid) -> bool {
        sched
            .context()
            .metadata_storage
            .write()
            .await
            .list_next_ticks()
            .await
            .expect("list")
            .iter()
            .any(|t| t.id.as_ref().map(Uuid::from) == Some(id))
    }

    /// A cron job fires on every one of its times, not once: its next time is computed
    /// when it fires (the driver used to clear every due job's next time, which retired a
    /// repeating job as if it were a fired one-shot).
    #[tokio::test]
    async fn a_repeating_job_keeps_repeating() {
        let sched = JobScheduler::new().await.expect("scheduler");
        let armed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = fired.clone();
        let every_second = Job::new_async("* * * * * *", move |_, _| {
            let f = f.clone();
            Box::pin(async move {
                f.fetch_add(1, Ordering::SeqCst);
            })
        })
        .expect("job");
        let id = sched.add(every_second).await.expect("add");
        let driver = start(&sched, &armed, &stop);
        tokio::time::sleep(Duration::from_millis(7500)).await;
        let n = fired.load(Ordering::SeqCst);
        // 7 on time; a loaded box may skip a second, never fire one twice.
        assert!(
            (3..=8).contains(&n),
            "fired {n} times in 7.5 s, every second"
        );
        assert!(in_store(&sched, id).await, "the repeating job was retired");
        stop.cancel();
        driver.await.expect("driver");
    }

    /// A wall clock a test can set: the system's plus an offset; setting it wakes a sleep
    /// as a `TFD_TIMER_CANCEL_ON_SET` timerfd does.
    #[derive(Clone, Default)]
    struct SettableClock {
        offset_ms: Arc<std::sync::atomic::AtomicI64>,
        set: Arc<Notify>,
    }

    impl SettableClock {
        fn step(&self, by: chrono::TimeDelta) {
            self.offset_ms
                .fetch_add(by.num_milliseconds(), Ordering::SeqCst);
            self.set.notify_one();
        }
    }

    impl Clock for SettableClock {
        fn now(&self) -> DateTime<Utc> {
            Utc::now() + chrono::TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
        }

        async fn until(&mut self, at: Option<DateTime<Utc>>) {
            let Some(at) = at else {
                return self.set.notified().await;
            };
            loop {
                let Ok(wait) = (at - self.now()).to_std() else {
                    return;
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(Duration::from_millis(50))) => {}
                    _ = self.set.notified() => return,
                }
            }
        }
    }

    /// The clock set forward just after a one-shot fired (NTP's first step on a board
    /// without a real-time clock): the one-shot still runs once, re-arms its successor (as
    /// the daemon's one-shots carry its schedule), and is retired RETIRE_AFTER after it
    /// fired by the monotonic clock, not at once because the wall clock says so.
    #[tokio::test]
    async fn a_clock_step_after_a_fire_neither_retires_the_job_early_nor_stops_its_schedule() {
        let sched = JobScheduler::new().await.expect("scheduler");
        let armed = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let clock = SettableClock::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let successor = Arc::new(std::sync::Mutex::new(None::<Uuid>));
        let (f, next, a) = (fired.clone(), successor.clone(), armed.clone());
        let job = Job::new_one_shot_async(Duration::from_secs(1), move |_, sched| {
            let (f, next, a) = (f.clone(), next.clone(), a.clone());
            Box::pin(async move {
                f.fetch_add(1, Ordering::SeqCst);
                let later =
                    Job::new_one_shot_async(Duration::from_secs(3600), |_, _| Box::pin(async {}))
                        .expect("job");
                let id = sched.add(later).await.expect("add");
                *next.lock().expect("lock") = Some(id);
                a.notify_one();
            })
        })
        .expect("job");
        let id = sched.add(job).await.expect("add");
        let driver = tokio::spawn(drive_with(
            sched.clone(),
            armed.clone(),
            stop.clone(),
            clock.clone(),
        ));
        let deadline = Instant::now() + Duration::from_secs(5);
        while fired.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the one-shot never fired");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let fired_at = Instant::now();
        clock.step(chrono::TimeDelta::minutes(10));
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            in_store(&sched, id).await,
            "retired within a second of firing, because the clock was set forward"
        );
        tokio::time::sleep((fired_at + RETIRE_AFTER + Duration::from_secs(3)) - Instant::now())
            .await;
        assert!(
            !in_store(&sched, id).await,
            "the fired one-shot was not retired"
        );
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        let next = successor
            .lock()
            .expect("lock")
            .expect("the successor was armed");
        assert!(
            in_store(&sched, next).await,
            "the schedule's next one-shot is gone"
        );
        stop.cancel();
        driver.await.expect("driver");
    }

    #[test]
    fn arming_errors_rearm_or_fall_back() {
        use AfterArmError::*;
        assert_eq!(after_arm_error(Mode::CancelOnSet, libc::ECANCELED), Rearm);
        assert_eq!(after_arm_error(Mode::Plain, libc::ECANCELED), Rearm);
        assert_eq!(
            after_arm_error(Mode::CancelOnSet, libc::EINVAL),
            FallBack(Mode::Plain)
        );
        assert_eq!(
            after_arm_error(Mode::Plain, libc::EINVAL),
            FallBack(Mode::Runtime)
        );
        assert_eq!(
            after_arm_error(Mode::CancelOnSet, libc::EBADF),
            FallBack(Mode::Runtime)
        );
    }

    /// Waits for a time 150 ms ahead, and checks it was not early.
    #[cfg(target_os = "linux")]
    async fn wait_150ms(clock: &mut WallClock) {
        let start = std::time::Instant::now();
        clock
            .until(Some(Utc::now() + chrono::TimeDelta::milliseconds(150)))
            .await;
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(120) && took < Duration::from_secs(3),
            "woke after {took:?} for a time 150 ms ahead"
        );
    }

    /// A kernel that refuses TFD_TIMER_CANCEL_ON_SET (gVisor: EINVAL): the clock falls back
    /// to the plain timerfd once, stays there (one log line, not one per sleep), and still
    /// wakes on time.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_refused_cancel_on_set_falls_back_once_and_stays() {
        let mut clock = WallClock::new();
        clock.arm = |fd, at, cancel_on_set| {
            if cancel_on_set {
                return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
            }
            arm_timerfd(fd, at, cancel_on_set)
        };
        for _ in 0..4 {
            wait_150ms(&mut clock).await;
        }
        assert_eq!(clock.mode, Mode::Plain);
        assert_eq!(clock.fallbacks, 1);
    }

    /// timerfd_settime answering ECANCELED (the clock was set since the last arming) is
    /// no failure: armed again, it keeps the wall-clock timer and wakes on time.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ecanceled_on_arming_rearms_without_falling_back() {
        static CANCELED_ONCE: std::sync::atomic::AtomicBool =
            std::sync::atomic::AtomicBool::new(false);
        let mut clock = WallClock::new();
        clock.arm = |fd, at, cancel_on_set| {
            if !CANCELED_ONCE.swap(true, Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc::ECANCELED));
            }
            arm_timerfd(fd, at, cancel_on_set)
        };
        wait_150ms(&mut clock).await;
        assert!(CANCELED_ONCE.load(Ordering::SeqCst));
        assert_eq!(clock.mode, Mode::CancelOnSet);
        assert_eq!(clock.fallbacks, 0);
    }
}
