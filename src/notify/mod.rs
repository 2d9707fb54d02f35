//! Tell someone how a run went: webhooks (a JSON body, or Slack-compatible `{"text"}`)
//! for failures (and successes if asked), healthchecks.io-style pings (`/start`, the
//! URL itself on success, `/fail`), whose service alerts when the pings stop, and messages
//! people read, by email and ntfy: one per failure, per recovery, per run with warnings, and
//! a daily digest if asked. A notification that cannot be delivered is logged and never
//! changes the run's outcome.

mod digest;
mod email;
mod message;
mod ntfy;

pub use digest::run as digest_task;
pub use message::{Message, What};

use std::time::Duration;

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Job, Notify, raw::NotifyType, raw::WebhookFormat};
use crate::heal::{HealOutcome, HealReport};
use crate::pipeline::{Outcome, RunReport};
use crate::units::human_bytes;

const TIMEOUT: Duration = Duration::from_secs(10);
const ATTEMPTS: usize = 2;

/// The webhook JSON body.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub job: &'a str,
    pub id: &'a str,
    pub outcome: &'a str,
    pub duration_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub published: &'a [String],
    pub errors: Vec<String>,
    pub host: String,
}

pub(crate) fn client() -> Option<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(TIMEOUT)
        .user_agent(concat!("stowage/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| warn!("cannot build the HTTP client for notifications: {e}"))
        .ok()
}

/// Before a run: healthchecks `/start` pings (they measure the run's duration).
pub async fn started(job: &Job) {
    let pings: Vec<&Notify> = job
        .notify
        .iter()
        .filter(|n| n.kind == NotifyType::Healthchecks)
        .collect();
    if pings.is_empty() {
        return;
    }
    let Some(client) = client() else { return };
    for n in pings {
        let url = format!("{}/start", n.url.expose().trim_end_matches('/'));
        send(n, &job.name, client.post(&url).body(String::new())).await;
    }
}

/// Where a run stands among the attempts of one scheduled run (the job's `retries`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempt {
    /// 0 for the scheduled run itself, n for its n-th retry.
    pub retry: u32,
    /// The job's `retries`.
    pub retries: u32,
    /// This attempt failed and the next one follows in this long.
    pub next_in: Option<Duration>,
}

/// After a run. A run cancelled by a stop is not reported: it is neither a failure nor a
/// backup. `previous_failed`: the job's run before this one failed (this success is then a
/// recovery), as [`failed_last`] tells from the daemon's state.
pub async fn finished(job: &Job, report: &RunReport, previous_failed: bool) {
    finished_attempt(job, report, previous_failed, Attempt::default()).await;
}

/// [`finished`] for one attempt of a scheduled run. Messages people read tell a scheduled
/// run's failure once, on its first attempt, saying that retries follow: a retry that fails
/// again sends none (three mails a night for one outage teach people to ignore them), and
/// one that succeeds is the recovery. Webhooks and healthchecks, read by machines, hear of
/// every attempt.
pub async fn finished_attempt(
    job: &Job,
    report: &RunReport,
    previous_failed: bool,
    attempt: Attempt,
) {
    if job.notify.is_empty() || report.outcome == Outcome::Cancelled {
        return;
    }
    digest::note(job, report);
    let Some(client) = client() else { return };
    let ok = report.outcome == Outcome::Success;
    let summary = summary(report);
    let what = What::of(report, previous_failed);
    for n in &job.notify {
        let req = match n.kind {
            NotifyType::Email | NotifyType::Ntfy => {
                if what == What::Succeeded && !n.on_success {
                    continue;
                }
                if what == What::Failed && attempt.retry > 0 {
                    let kind = if n.kind == NotifyType::Email {
                        "email"
                    } else {
                        "ntfy"
                    };
                    info!(job = %job.name, "no {kind} message for retry {} of {}, which failed too: the run's first attempt told the failure", attempt.retry, attempt.retries);
                    continue;
                }
                let mut msg = Message::run(what, report, &host());
                if let Some(delay) = attempt.next_in {
                    msg.retries_follow(attempt.retry + 1, attempt.retries, delay);
                }
                if n.kind == NotifyType::Email {
                    email::send(n, &job.name, &msg).await;
                } else {
                    ntfy::send(&client, n, &job.name, &msg).await;
                }
                continue;
            }
            NotifyType::Healthchecks => {
                let base = n.url.expose().trim_end_matches('/').to_string();
                let url = if ok { base } else { format!("{base}/fail") };
                client.post(url).body(summary.clone())
            }
            NotifyType::Webhook => {
                if ok && !n.on_success {
                    continue;
                }
                match n.format {
                    WebhookFormat::Json => client.post(n.url.expose()).json(&event(report)),
                    WebhookFormat::Slack => client
                        .post(n.url.expose())
                        .json(&serde_json::json!({ "text": summary })),
                }
            }
        };
        send(n, &job.name, req).await;
    }
}

/// After a heal pass that found something missing, or could not check: webhooks get the
/// report (`"event": "heal"`), healthchecks pings `/fail` when the job is left unhealthy. A
/// pass that found everything present says nothing: it runs every few minutes.
pub async fn healed(job: &Job, report: &HealReport) {
    if report.outcome == HealOutcome::Ok {
        // Healthy again: the next failure is news.
        if let Ok(mut told) = HEAL_TOLD.lock() {
            told.remove(&(job.name.clone(), report.source.clone()));
        }
        return;
    }
    // Something was missing: worth telling webhooks even when it was put back.
    let ok = report.outcome.healthy();
    let body = serde_json::to_value(report).unwrap_or_default();
    let text = format!("stowage: {}", report.summary());
    let people = heal_message(job, report);
    send_pass(job, "heal", ok, true, body, text, people).await;
}

/// The message people read after a heal pass: something was put back (once: the next pass
/// finds it present), or something could not be; a failure said once until a healthy pass
/// or a different failure, since passes run every few minutes. None when the database was
/// unreachable: the backups' failures tell that.
fn heal_message(job: &Job, report: &HealReport) -> Option<Message> {
    let (what, headline) = match report.outcome {
        HealOutcome::Healed => (What::Warning, "healed: missing objects put back"),
        HealOutcome::Partial | HealOutcome::Failed => (What::Failed, "heal FAILED"),
        HealOutcome::Ok | HealOutcome::DryRun | HealOutcome::Unreachable => return None,
    };
    let summary = report.summary();
    if what == What::Failed {
        let mut told = HEAL_TOLD.lock().ok()?;
        let key = (job.name.clone(), report.source.clone());
        if told.get(&key) == Some(&summary) {
            return None;
        }
        told.insert(key, summary.clone());
    } else if let Ok(mut told) = HEAL_TOLD.lock() {
        told.remove(&(job.name.clone(), report.source.clone()));
    }
    let next = format!(
        "- find out what dropped them: the database's log around that time, the application's \
         migrations, who has DROP rights\n\
         - what was put back is as of the backup named above; rows written after it are not \
         in it\n\
         - `stowage heal {} --dry-run` shows what the healer watches and would do\n",
        job.name
    );
    Some(Message::pass(
        what,
        &job.name,
        headline,
        &[summary],
        &next,
        &host(),
    ))
}

/// The heal failure last told per (job, source), so a pass every few minutes that fails the
/// same way sends one message, not one each time.
static HEAL_TOLD: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<(String, String), String>>,
> = std::sync::LazyLock::new(Default::default);

/// A scheduled verify: webhooks and a healthchecks `/fail` when it found problems (and
/// webhooks with `on_success` when it found none).
pub async fn verified(job: &Job, report: &crate::verify::VerifyReport) {
    let ok = report.problems() == 0;
    let mut body = serde_json::to_value(report).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert("outcome".into(), if ok { "ok" } else { "failed" }.into());
    }
    let mut text = format!("stowage: {}", report.summary());
    if !ok {
        text.push('\n');
        text.push_str(&report.lines().join("\n"));
    }
    let people = (!ok).then(|| {
        let mut lines = vec![report.summary(), String::new()];
        lines.extend(report.lines());
        let next = format!(
            "- a backup named above may not restore: do not count on it; take a new one now: \
             `stowage run {job}`\n\
             - see which backups are whole: `stowage verify {job}`, then `stowage list {job}`\n\
             - a destination that could not be listed: check its credentials and that it is up\n",
            job = job.name
        );
        Message::pass(
            What::Failed,
            &job.name,
            "verify FAILED",
            &lines,
            &next,
            &host(),
        )
    });
    send_pass(job, "verify", ok, false, body, text, people).await;
}

/// A restore drill: like a verify, `/fail` and webhooks when it failed.
pub async fn drilled(job: &Job, report: &crate::drill::DrillReport) {
    let ok = report.passed();
    let mut body = serde_json::to_value(report).unwrap_or_default();
    if let Some(o) = body.as_object_mut() {
        o.insert("outcome".into(), if ok { "ok" } else { "failed" }.into());
        o.insert("summary".into(), report.summary().into());
    }
    let text = format!("stowage: {}", report.summary());
    let people = (!ok).then(|| {
        let mut lines = vec![report.summary(), String::new()];
        lines.extend(report.problems.iter().map(|p| format!("- {p}")));
        let next = format!(
            "- the backup drilled did not restore as it should: restore it by hand to see why \
             (README, \"Restore guide\"), and check the job's sources\n\
             - run the drill again: `stowage drill {job}`\n",
            job = job.name
        );
        Message::pass(
            What::Failed,
            &job.name,
            "restore drill FAILED",
            &lines,
            &next,
            &host(),
        )
    });
    send_pass(job, "drill", ok, false, body, text, people).await;
}

/// Send a pass beside the backups (heal, verify, drill) to the job's notifications: healthchecks
/// `/fail` when it leaves the job unhealthy (a success ping would tell the check a backup
/// ran), webhooks when not `ok`, when `always`, or when they ask for successes; JSON webhooks
/// get `body` with `"event"` and `"host"`, Slack ones `text`; email and ntfy `people`, if any.
async fn send_pass(
    job: &Job,
    event: &str,
    ok: bool,
    always: bool,
    body: serde_json::Value,
    text: String,
    people: Option<Message>,
) {
    if job.notify.is_empty() {
        return;
    }
    let Some(client) = client() else { return };
    let mut body = body;
    if let Some(o) = body.as_object_mut() {
        o.insert("event".into(), event.into());
        o.insert("host".into(), host().into());
    }
    for n in &job.notify {
        let req = match n.kind {
            NotifyType::Healthchecks if ok => continue,
            NotifyType::Healthchecks => {
                let url = format!("{}/fail", n.url.expose().trim_end_matches('/'));
                client.post(url).body(text.clone())
            }
            NotifyType::Email | NotifyType::Ntfy => {
                if let Some(msg) = &people {
                    if n.kind == NotifyType::Email {
                        email::send(n, &job.name, msg).await;
                    } else {
                        ntfy::send(&client, n, &job.name, msg).await;
                    }
                }
                continue;
            }
            NotifyType::Webhook if ok && !always && !n.on_success => continue,
            NotifyType::Webhook => match n.format {
                WebhookFormat::Json => client.post(n.url.expose()).json(&body),
                WebhookFormat::Slack => client
                    .post(n.url.expose())
                    .json(&serde_json::json!({ "text": text })),
            },
        };
        send(n, &job.name, req).await;
    }
}

/// Whether the job's newest run that finished (a cancelled one aside) failed, in the daemon's
/// state; `state` is read before this run is recorded in it.
pub fn failed_last(state: &crate::status::State, job: &str) -> bool {
    state
        .jobs
        .get(job)
        .and_then(|j| j.recent.iter().find(|r| r.outcome != "cancelled"))
        .is_some_and(|r| r.outcome == "failed" || r.outcome == "partial")
}

/// [`failed_last`] from the daemon's state file, for a `stowage run` beside the daemon (no
/// daemon, or no state file: nothing failed before).
pub fn failed_last_on_file(job: &str) -> bool {
    crate::status::load().is_ok_and(|s| failed_last(&s, job))
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

pub fn event(report: &RunReport) -> Event<'_> {
    Event {
        job: &report.job,
        id: &report.id,
        outcome: report.outcome.as_str(),
        duration_s: report.duration.as_secs_f64(),
        bytes_in: report.bytes_in,
        bytes_out: report.bytes_out,
        published: &report.published,
        errors: report
            .errors
            .iter()
            .map(|(what, why)| format!("{what}: {why}"))
            .collect(),
        host: host(),
    }
}

/// One line for chat and ping bodies.
pub fn summary(r: &RunReport) -> String {
    let mut s = format!(
        "stowage: backup {} for job {} (id {}, {:.1}s, {} in, {} stored, on {})",
        r.outcome.as_str(),
        r.job,
        r.id,
        r.duration.as_secs_f64(),
        human_bytes(r.bytes_in),
        human_bytes(r.bytes_out),
        if r.published.is_empty() {
            "no destination".to_string()
        } else {
            r.published.join(", ")
        }
    );
    for (what, why) in &r.errors {
        s.push_str(&format!("\n- {what}: {why}"));
    }
    s
}

async fn send(n: &Notify, job: &str, req: reqwest::RequestBuilder) {
    let kind = match n.kind {
        NotifyType::Healthchecks => "healthchecks ping",
        other => other.as_str(),
    };
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let Some(r) = req.try_clone() else { break };
        match r.send().await {
            Ok(resp) if resp.status().is_success() => {
                info!(job, "notified {kind} {}", n.redacted());
                return;
            }
            Ok(resp) => last = format!("HTTP {}", resp.status()),
            // Without the URL: reqwest's error text may include it.
            Err(e) => {
                last = if e.is_timeout() {
                    "timed out".to_string()
                } else if e.is_connect() {
                    "cannot connect".to_string()
                } else {
                    "request failed".to_string()
                }
            }
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    warn!(
        job,
        "could not notify {kind} {}: {last}; the run's outcome is unchanged",
        n.redacted()
    );
}
