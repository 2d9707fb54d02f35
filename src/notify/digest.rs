//! The daily digest: email and ntfy notifiers with `digest = "HH:MM"` get, once a day at that
//! time in the job's timezone, one message listing each of their jobs' runs since the
//! previous digest (or the daemon's start): how many succeeded and failed, the newest backup's
//! age, the warnings and the last error. Notifiers of several jobs that go to the same place
//! at the same time share one digest. The runs are kept in memory: a restart starts afresh.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::Message;
use crate::config::{Config, Job, Notify, raw::NotifyType};
use crate::pipeline::RunReport;
use crate::schedule::Schedule;
use crate::status::State;

/// Runs kept for the digests: older ones have been in one already (digests are daily).
const KEEP: chrono::TimeDelta = chrono::TimeDelta::hours(49);
/// The task looks at the config at least this often, so a reload's new digest times count.
const LOOK_EVERY: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
struct Noted {
    at: DateTime<Utc>,
    job: String,
    outcome: &'static str,
    warnings: Vec<String>,
    error: Option<String>,
}

static NOTED: Mutex<Vec<Noted>> = Mutex::new(Vec::new());

/// Keep a finished run for the digests of its job, if any notifier asks for one.
pub(super) fn note(job: &Job, r: &RunReport) {
    if !job.notify.iter().any(|n| n.digest.is_some()) {
        return;
    }
    let now = Utc::now();
    let mut noted = NOTED.lock().unwrap_or_else(|e| e.into_inner());
    noted.retain(|n| now - n.at < KEEP);
    noted.push(Noted {
        at: now,
        job: job.name.clone(),
        outcome: r.outcome.as_str(),
        warnings: r.warnings.clone(),
        error: r.errors.last().map(|(what, why)| format!("{what}: {why}")),
    });
}

/// Notifiers that send one digest together: the same place, time and timezone.
type Group = (String, String, (u8, u8), String);

fn group_of(job: &Job, n: &Notify) -> Option<Group> {
    let at = n.digest?;
    let place = match (&n.email, n.kind) {
        (Some(e), NotifyType::Email) => {
            let mut to: Vec<String> = e.to.iter().map(|m| m.to_string()).collect();
            to.sort();
            format!("{}:{} {} {}", e.host, e.port, e.from, to.join(","))
        }
        (_, NotifyType::Ntfy) => n.url.expose().to_string(),
        _ => return None,
    };
    Some((
        n.kind.as_str().to_string(),
        place,
        (at.hour, at.minute),
        job.schedule.tz().to_string(),
    ))
}

/// Every digest group of the config: one of its notifiers (to send with) and its jobs.
fn groups(config: &Config) -> BTreeMap<Group, (Notify, Vec<Job>)> {
    let mut out: BTreeMap<Group, (Notify, Vec<Job>)> = BTreeMap::new();
    for job in config.jobs.values() {
        for n in &job.notify {
            if let Some(g) = group_of(job, n) {
                out.entry(g)
                    .or_insert_with(|| (n.clone(), Vec::new()))
                    .1
                    .push(job.clone());
            }
        }
    }
    out
}

fn next_time(job: &Job, g: &Group, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (h, m) = g.2;
    Schedule::parse(&format!("{m} {h} * * *"), job.schedule.tz().clone())
        .ok()?
        .next_after(after)
}

/// The daemon's digest task: sleeps until the next digest is due (or an hour, to see a
/// reload's changes), sends the due ones, and ends with `stop`. `view` gives the current
/// config and the daemon's state (for the newest backups). The first digests cover the runs
/// since this is called.
pub fn run(
    view: impl Fn() -> (Arc<Config>, State),
    stop: CancellationToken,
) -> impl Future<Output = ()> {
    let started = Utc::now();
    digests(view, stop, started)
}

async fn digests(
    view: impl Fn() -> (Arc<Config>, State),
    stop: CancellationToken,
    started: DateTime<Utc>,
) {
    let mut due: BTreeMap<Group, DateTime<Utc>> = BTreeMap::new();
    let mut since: BTreeMap<Group, DateTime<Utc>> = BTreeMap::new();
    loop {
        let (config, state) = view();
        let now = Utc::now();
        let groups = groups(&config);
        due.retain(|g, _| groups.contains_key(g));
        for (g, (n, jobs)) in &groups {
            let Some(first) = jobs.first() else { continue };
            let at = *due
                .entry(g.clone())
                .or_insert_with(|| next_time(first, g, now).unwrap_or(now + KEEP));
            if at > now {
                continue;
            }
            let from = since.get(g).copied().unwrap_or(started);
            let msg = message(jobs, &state, from, now);
            send(n, &msg).await;
            since.insert(g.clone(), now);
            due.insert(g.clone(), next_time(first, g, now).unwrap_or(now + KEEP));
        }
        let wait = due
            .values()
            .map(|t| (*t - Utc::now()).to_std().unwrap_or(Duration::ZERO))
            .min()
            .unwrap_or(LOOK_EVERY)
            .min(LOOK_EVERY)
            // A second late, never early: the due time must have passed when it wakes.
            + Duration::from_secs(1);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn send(n: &Notify, msg: &Message) {
    match n.kind {
        NotifyType::Email => super::email::send(n, "digest", msg).await,
        NotifyType::Ntfy => match super::client() {
            Some(client) => super::ntfy::send(&client, n, "digest", msg).await,
            None => warn!("cannot send the digest to {}", n.redacted()),
        },
        _ => {}
    }
}

/// The digest of `jobs`' runs in `(from, to]`.
fn message(jobs: &[Job], state: &State, from: DateTime<Utc>, to: DateTime<Utc>) -> Message {
    let noted = NOTED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let host = super::host();
    let mut failing = 0;
    let mut body = format!(
        "Backups on {host} since {}:\n",
        from.format("%Y-%m-%d %H:%M UTC")
    );
    for job in jobs {
        let runs: Vec<&Noted> = noted
            .iter()
            .filter(|n| n.job == job.name && n.at > from && n.at <= to)
            .collect();
        let count = |o: &str| runs.iter().filter(|n| n.outcome == o).count();
        let (ok, failed, partial) = (count("success"), count("failed"), count("partial"));
        if runs.last().is_some_and(|n| n.outcome != "success") {
            failing += 1;
        }
        body.push_str(&format!(
            "\njob {}: {} run(s): {ok} succeeded, {failed} failed, {partial} partly failed\n",
            job.name,
            runs.len()
        ));
        let newest = state.jobs.get(&job.name).and_then(|s| s.newest_backup);
        body.push_str(&match newest {
            Some(t) => format!(
                "  newest backup: {} ago ({})\n",
                humantime::format_duration(Duration::from_secs(
                    (to - t).num_seconds().max(0).unsigned_abs()
                )),
                t.format("%Y-%m-%d %H:%M UTC")
            ),
            None => "  newest backup: none known to this daemon yet\n".to_string(),
        });
        for w in runs.iter().flat_map(|n| &n.warnings) {
            body.push_str(&format!("  warning: {w}\n"));
        }
        if let Some(e) = runs.iter().rev().find_map(|n| n.error.as_ref()) {
            body.push_str(&format!("  last error: {e}\n"));
        }
    }
    body.push_str("\nDetails: `stowage list JOB`, the status page, or the daemon's log.\n");
    let subject = if failing > 0 {
        format!("stowage: daily digest for {host}, {failing} job(s) FAILING")
    } else {
        format!("stowage: daily digest for {host}, all ok")
    };
    Message {
        what: None,
        subject,
        body,
    }
}
