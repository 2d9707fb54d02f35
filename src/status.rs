//! What the daemon knows about its jobs (newest published backup, last run), kept in a
//! small JSON file so that `stowage health` — a separate process run by Docker's
//! HEALTHCHECK every 30 s — can judge it without listing every destination each time.
//! The verdict itself is a pure function of (config, state, now).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub jobs: BTreeMap<String, JobStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// Newest backup published on any destination (from their listings at start, then from
    /// this daemon's own runs).
    pub newest_backup: Option<DateTime<Utc>>,
    pub last_run: Option<RunStatus>,
    /// The last few runs, newest first (for the status page).
    #[serde(default)]
    pub recent: Vec<RunStatus>,
    /// The healer's last pass, when the job has one.
    #[serde(default)]
    pub last_heal: Option<HealStatus>,
    /// The healer's last passes that found something missing or could not check, newest
    /// first.
    #[serde(default)]
    pub heals: Vec<HealStatus>,
    /// The last scheduled verify, when the job has one.
    #[serde(default)]
    pub last_verify: Option<VerifyStatus>,
    /// The last restore drill, when the job has one (its summary carries the duration).
    #[serde(default)]
    pub last_drill: Option<VerifyStatus>,
    /// Continuous WAL shipping of each physical source, by source name.
    #[serde(default)]
    pub wal: BTreeMap<String, WalState>,
    /// The newest backup's sources that produced much less than before, one sentence each
    /// ([`crate::pipeline::shrink`]): a warning, not a failure.
    #[serde(default)]
    pub shrunk: Vec<String>,
}

/// How one source's WAL shipping stands, as the daemon saw its shipper report (after every
/// pass, at least every `wal_flush`). A failure opens an episode that only a clean pass
/// which shipped something, or two clean passes in a row, close: the shipper's own figures
/// drop back between two attempts at the partial segment, which would let a lasting
/// failure look healthy half of the time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WalState {
    /// The last WAL file stored on every destination, and when.
    #[serde(default)]
    pub last_shipped: Option<String>,
    #[serde(default)]
    pub last_shipped_at: Option<DateTime<Utc>>,
    /// When the partial segment was last stored on every destination.
    #[serde(default)]
    pub partial_shipped_at: Option<DateTime<Utc>>,
    /// Completed files in the spool that some destination still lacks.
    #[serde(default)]
    pub pending: usize,
    /// When the oldest WAL not yet on every destination was written, through the episode.
    #[serde(default)]
    pub oldest_unshipped: Option<DateTime<Utc>>,
    /// The episode's latest failure.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When the episode began.
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
    /// A clean pass came after the episode's last failure, without shipping anything.
    #[serde(default)]
    pub clean_once: bool,
    /// When this daemon started the stream.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When the shipper last reported.
    #[serde(default)]
    pub seen_at: Option<DateTime<Utc>>,
    /// Why the WAL receiver keeps stopping, and since when (none while it receives).
    #[serde(default)]
    pub receiver_error: Option<String>,
    #[serde(default)]
    pub receiver_failing_since: Option<DateTime<Utc>>,
    /// When the shipper's pass under way began.
    #[serde(default)]
    pub passing_since: Option<DateTime<Utc>>,
}

/// What one report changed in a [`WalState`], for how soon it must reach the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalChange {
    /// Only that the shipper is alive.
    Alive,
    /// What was shipped, or how much waits.
    Figures,
    /// A failure episode began or ended: what `health` judges (a new error text within one
    /// is [`WalChange::Figures`]: a failing shipper reports every second).
    Verdict,
}

impl WalState {
    /// Take in the shipper's report `s`, seen at `now`.
    pub fn observe(&mut self, s: &crate::wal::WalStatus, now: DateTime<Utc>) -> WalChange {
        let before = self.clone();
        // A restarted stream (a reload) reports from scratch: keep what the last one shipped.
        let advanced = s.last_shipped_at > self.last_shipped_at
            || s.partial_shipped_at > self.partial_shipped_at;
        if s.last_shipped_at > self.last_shipped_at {
            self.last_shipped.clone_from(&s.last_shipped);
            self.last_shipped_at = s.last_shipped_at;
        }
        self.partial_shipped_at = self.partial_shipped_at.max(s.partial_shipped_at);
        self.pending = s.pending;
        self.seen_at = Some(now);
        self.receiver_error.clone_from(&s.receiver_error);
        self.receiver_failing_since = s.receiver_failing_since;
        self.passing_since = s.passing_since;
        if s.last_error.is_some() || s.oldest_unshipped.is_some() || s.pending > 0 {
            self.failing_since = self.failing_since.or(Some(now));
            self.oldest_unshipped = match (self.oldest_unshipped, s.oldest_unshipped) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if s.last_error.is_some() {
                self.last_error.clone_from(&s.last_error);
            }
            self.clean_once = false;
        } else if self.failing_since.is_some() {
            if advanced || self.clean_once {
                self.failing_since = None;
                self.oldest_unshipped = None;
                self.last_error = None;
                self.clean_once = false;
            } else {
                self.clean_once = true;
            }
        }
        if self.failing_since != before.failing_since
            || self.last_error.is_some() != before.last_error.is_some()
            || self.receiver_failing_since != before.receiver_failing_since
            // `health` reads the file: a pass's start and end must reach it, the end
            // especially, since nothing may be reported for hours after it.
            || self.passing_since.is_some() != before.passing_since.is_some()
        {
            WalChange::Verdict
        } else if (WalState {
            seen_at: before.seen_at,
            ..self.clone()
        }) != before
        {
            WalChange::Figures
        } else {
            WalChange::Alive
        }
    }

    /// How long the oldest unshipped WAL has waited at `now`: zero when nothing waits.
    pub fn lag(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_unshipped
            .map_or(Duration::zero(), |t| (now - t).max(Duration::zero()))
    }
}

/// How far behind a physical source's WAL shipping may fall before it is unhealthy:
/// 5 minutes, or 3 × `wal_flush` when that is longer. Shipping retries a failed completed
/// segment within 16 s, but the partial segment only every `wal_flush`, and its age when
/// first found unshipped may already be one `wal_flush`: one failed attempt that the
/// next one repairs reaches 2 × `wal_flush`, which must not page anyone.
pub fn wal_lag_limit(flush: std::time::Duration) -> Duration {
    let floor = Duration::minutes(5);
    Duration::from_std(flush.saturating_mul(3))
        .unwrap_or(floor)
        .max(floor)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifyStatus {
    pub ok: bool,
    pub finished_at: DateTime<Utc>,
    /// The verify's summary line.
    pub summary: String,
    /// What was missing, corrupt or unreadable (empty when ok).
    #[serde(default)]
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealStatus {
    /// ok | healed | dry_run | partial | failed | unreachable
    pub outcome: String,
    pub finished_at: DateTime<Utc>,
    /// The heal's one-line summary.
    pub summary: String,
}

/// Runs kept in [`JobStatus::recent`].
pub const RECENT_RUNS: usize = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub id: String,
    /// success | partial | failed | cancelled
    pub outcome: String,
    pub finished_at: DateTime<Utc>,
    pub duration_s: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// "what: why" for each failure.
    pub errors: Vec<String>,
}

/// A run, heal pass, verify or drill that finished, as the daemon records it: its own, or
/// one a `stowage` command ran by hand beside it ([`post`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub job: String,
    pub done: Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Done {
    Run {
        run: RunStatus,
        /// Destinations that hold the backup now.
        published: Vec<String>,
        /// destination → published backups it holds after retention
        kept: Vec<(String, usize)>,
        /// The run's warnings ([`crate::pipeline::RunReport::warnings`]).
        warnings: Vec<String>,
    },
    Heal {
        heal: HealStatus,
        /// Objects put back (none on a dry run).
        restored: u64,
    },
    Verify {
        verify: VerifyStatus,
        /// Blob data read back: blobs, their bytes, and the bad ones.
        read: (u64, u64, u64),
    },
    Drill {
        drill: VerifyStatus,
        duration_s: f64,
    },
}

impl Record {
    pub fn run(r: &crate::pipeline::RunReport) -> Record {
        Record {
            job: r.job.clone(),
            done: Done::Run {
                run: RunStatus {
                    id: r.id.clone(),
                    outcome: r.outcome.as_str().to_string(),
                    finished_at: Utc::now(),
                    duration_s: r.duration.as_secs_f64(),
                    bytes_in: r.bytes_in,
                    bytes_out: r.bytes_out,
                    errors: r
                        .errors
                        .iter()
                        .map(|(what, why)| format!("{what}: {why}"))
                        .collect(),
                },
                published: r.published.clone(),
                kept: r.kept.clone(),
                warnings: r.warnings.clone(),
            },
        }
    }

    pub fn heal(r: &crate::heal::HealReport) -> Record {
        Record {
            job: r.job.clone(),
            done: Done::Heal {
                heal: HealStatus {
                    outcome: r.outcome.as_str().to_string(),
                    finished_at: Utc::now(),
                    summary: r.summary(),
                },
                restored: if r.dry_run {
                    0
                } else {
                    u64::try_from(r.restored.len()).unwrap_or(u64::MAX)
                },
            },
        }
    }

    pub fn verify(r: &crate::verify::VerifyReport) -> Record {
        let problems = r.problem_lines();
        let t = r.read_data();
        Record {
            job: r.job.clone(),
            done: Done::Verify {
                verify: VerifyStatus {
                    ok: problems.is_empty(),
                    finished_at: Utc::now(),
                    summary: r.summary(),
                    problems,
                },
                read: (t.read, t.bytes, t.bad),
            },
        }
    }

    pub fn drill(r: &crate::drill::DrillReport) -> Record {
        Record {
            job: r.job.clone(),
            done: Done::Drill {
                drill: VerifyStatus {
                    ok: r.passed(),
                    finished_at: Utc::now(),
                    summary: r.summary(),
                    problems: r.problems.clone(),
                },
                duration_s: r.duration.as_secs_f64(),
            },
        }
    }
}

impl JobStatus {
    /// Take in what finished.
    pub fn apply(&mut self, done: &Done) {
        match done {
            Done::Run {
                run,
                published,
                warnings,
                ..
            } => {
                if !published.is_empty() {
                    self.newest_backup = self
                        .newest_backup
                        .max(crate::repo::manifest::parse_id(&run.id));
                    self.shrunk.clone_from(warnings);
                }
                self.recent.insert(0, run.clone());
                self.recent.truncate(RECENT_RUNS);
                self.last_run = Some(run.clone());
            }
            Done::Heal { heal, .. } => {
                if heal.outcome != "ok" {
                    self.heals.insert(0, heal.clone());
                    self.heals.truncate(RECENT_RUNS);
                }
                self.last_heal = Some(heal.clone());
            }
            Done::Verify { verify, .. } => self.last_verify = Some(verify.clone()),
            Done::Drill { drill, .. } => self.last_drill = Some(drill.clone()),
        }
    }
}

/// Where `stowage` commands leave what they did for the daemon of the same state directory
/// (one file each, which the daemon takes in and removes): the daemon alone writes the
/// state file, so nothing a command records is lost to the daemon's next save. The daemon
/// creates it at start and removes it at stop; commands write only while it exists.
pub fn inbox_dir() -> PathBuf {
    let file = state_file();
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    dir.join("stowage-done")
}

/// Hand `record` to the daemon that uses this state directory, if one does: written under
/// a temporary name and renamed, so the daemon never reads half a record. `Ok(false)`: no
/// daemon to tell.
pub fn post(record: &Record) -> std::io::Result<bool> {
    post_to(&inbox_dir(), inbox_owner(), record)
}

fn post_to(dir: &std::path::Path, owner: Option<u32>, record: &Record) -> std::io::Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    // The state directory is /tmp outside Docker: a directory another local user made there
    // would read what commands record (job names, errors). Only the daemon's own.
    if let Err(why) = inbox_trusted(dir, owner) {
        return Err(std::io::Error::other(why));
    }
    let name = format!(
        "{}-{}",
        Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
        std::process::id()
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let body = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, dir.join(format!("{name}.json")))?;
    Ok(true)
}

/// [`post`], a failure said on stderr: what the command did stands, only the daemon's page
/// does not show it.
pub fn post_or_say(record: &Record) {
    if let Err(e) = post(record) {
        eprintln!(
            "warning: cannot tell the running daemon about this {} of job {} (its status page and metrics will not show it): cannot write to {}: {}",
            match record.done {
                Done::Run { .. } => "run",
                Done::Heal { .. } => "heal",
                Done::Verify { .. } => "verify",
                Done::Drill { .. } => "drill",
            },
            record.job,
            inbox_dir().display(),
            // Ours (an inbox not to be trusted) quotes a path: as it is, not lowercased.
            if e.kind() == std::io::ErrorKind::Other {
                e.to_string()
            } else {
                crate::units::io_reason(&e)
            }
        );
    }
}

/// Whether `dir` may serve as the inbox of a daemon running as `uid`: a directory itself
/// (not a link to one), owned by `uid`, open to no one else. Otherwise another local user
/// could have made it, before the daemon started, to feed it records (runs that never
/// happened, on the status page) or to have it delete files it points at.
pub fn inbox_trusted(dir: &std::path::Path, uid: Option<u32>) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir)
        .map_err(|e| format!("{}: {}", dir.display(), crate::units::io_reason(&e)))?;
    if !meta.file_type().is_dir() {
        return Err(format!(
            "{} is not a directory (a link?); remove it",
            dir.display()
        ));
    }
    if Some(meta.uid()) != uid {
        return Err(format!(
            "{} belongs to uid {}, not to the daemon's user; remove it",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} is open to other users (mode {:o}); remove it",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

/// The daemon's user as a command sees it: the owner of the state file the daemon writes,
/// or this process's when there is none (a command run as the daemon's user).
fn inbox_owner() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(state_file()) {
        Ok(m) if m.file_type().is_file() => Some(m.uid()),
        _ => Some(rustix::process::geteuid().as_raw()),
    }
}

/// The records commands left in the inbox, oldest first, each removed once read. A file
/// that is not a record (a partial write of a killed command) is removed and said.
pub fn take_posted() -> (Vec<Record>, Vec<String>) {
    take_from(&inbox_dir())
}

fn take_from(dir: &std::path::Path) -> (Vec<Record>, Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (Vec::new(), Vec::new());
    };
    let mut names: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    names.sort();
    let (mut records, mut bad) = (Vec::new(), Vec::new());
    for path in names {
        match std::fs::read(&path).map(|b| serde_json::from_slice::<Record>(&b)) {
            Ok(Ok(r)) => records.push(r),
            Ok(Err(e)) => bad.push(format!("{}: {e}", path.display())),
            Err(e) => {
                bad.push(format!(
                    "{}: {}",
                    path.display(),
                    crate::units::io_reason(&e)
                ));
                continue;
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    (records, bad)
}

/// What someone should look at although nothing failed: a dump that shrank. `health`
/// prints these and stays healthy.
pub fn warnings(config: &Config, state: &State) -> Vec<String> {
    config
        .jobs
        .values()
        .filter_map(|job| state.jobs.get(&job.name))
        .flat_map(|s| s.shrunk.iter().cloned())
        .collect()
}

/// `$STOWAGE_STATE_FILE`, default `/tmp/stowage-state.json` (next to the pid file).
pub fn state_file() -> PathBuf {
    std::env::var_os("STOWAGE_STATE_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/stowage-state.json"))
}

/// Write atomically: `health` may read at any moment.
pub fn save(state: &State) -> std::io::Result<()> {
    let path = state_file();
    let tmp = path.with_extension("json.tmp");
    let body = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, body)?;
    std::fs::rename(&tmp, &path)
}

/// Why the daemon's state file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{} unreadable: {}", path.display(), crate::units::io_reason(source))]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

pub fn load() -> Result<State, LoadError> {
    let path = state_file();
    let body = match std::fs::read(&path) {
        Ok(b) => b,
        Err(source) => return Err(LoadError::Unreadable { path, source }),
    };
    serde_json::from_slice(&body).map_err(|source| LoadError::Invalid { path, source })
}

/// Why the daemon's jobs are unhealthy; empty means healthy. A job is unhealthy when its
/// newest backup is older than its staleness limit, or when its last run did not publish
/// everywhere. A job without any backup yet gets the limit's time from the daemon's start
/// (its first run may be a long one).
pub fn problems(config: &Config, state: &State, now: DateTime<Utc>) -> Vec<String> {
    let mut out = Vec::new();
    for job in config.jobs.values() {
        let status = state.jobs.get(&job.name).cloned().unwrap_or_default();
        if let Some(run) = &status.last_run
            && run.outcome != "success"
            && run.outcome != "cancelled"
        {
            out.push(format!(
                "job {}: last run {} {} at {}{}",
                job.name,
                run.id,
                run.outcome,
                run.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                if run.errors.is_empty() {
                    String::new()
                } else {
                    format!(": {}", run.errors.join("; "))
                }
            ));
        }
        if let Some(heal) = &status.last_heal
            && (heal.outcome == "failed"
                || heal.outcome == "partial"
                || heal.outcome == "unreachable")
        {
            out.push(format!(
                "job {}: heal at {} {}: {}",
                job.name,
                heal.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                heal.outcome,
                heal.summary
            ));
        }
        if let Some(v) = &status.last_verify
            && !v.ok
        {
            out.push(format!(
                "job {}: verify at {} found problems: {}",
                job.name,
                v.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                v.problems.join("; ")
            ));
        }
        if let Some(d) = &status.last_drill
            && !d.ok
        {
            out.push(format!(
                "job {}: restore drill at {} failed: {}",
                job.name,
                d.finished_at.format("%Y-%m-%dT%H:%M:%SZ"),
                d.problems.join("; ")
            ));
        }
        out.extend(wal_problems(job, &status, state.started_at, now));
        let Some(limit) = job.staleness_limit(now) else {
            continue;
        };
        match status.newest_backup {
            Some(t) if now - t > limit => out.push(format!(
                "job {}: newest backup is from {} ({} ago), older than max_staleness {}",
                job.name,
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                human(now - t),
                human(limit)
            )),
            Some(_) => {}
            None => {
                let since = state.started_at.unwrap_or(now);
                if now - since > limit {
                    out.push(format!(
                        "job {}: no backup at all, {} after the daemon started (max_staleness {})",
                        job.name,
                        human(now - since),
                        human(limit)
                    ));
                }
            }
        }
    }
    out
}

/// Each physical source of `job` whose WAL is behind or failing longer than
/// [`wal_lag_limit`], or whose shipper stopped reporting. A source with nothing to ship is
/// fine however long it stays idle: only WAL that exists and did not reach every
/// destination counts as behind.
fn wal_problems(
    job: &crate::config::Job,
    status: &JobStatus,
    daemon_started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for db in job.sources.iter().filter_map(|s| s.database()) {
        let Some(ws) = db.wal_source() else {
            continue;
        };
        let source = db.name();
        let limit = wal_lag_limit(ws.flush_interval());
        let Some(w) = status.wal.get(source) else {
            let since = daemon_started.unwrap_or(now);
            if now - since > limit {
                out.push(format!(
                    "job {}: WAL of source {source} is not being archived: the daemon has run {} without starting its stream; reload it (SIGHUP) with this config, or see its log",
                    job.name,
                    human(now - since)
                ));
            }
            continue;
        };
        let error = w
            .last_error
            .as_deref()
            .map_or(String::new(), |e| format!(": {e}"));
        let lag = w.lag(now);
        // The shipper reports when it works and sleeps while the spool does not change: a
        // pass that does not end, or no report at all since the start, is a stuck shipper;
        // a long silence is an idle database.
        let stuck = match (w.passing_since, w.seen_at) {
            (Some(p), _) => Some(("has been in one pass for", now - p)),
            (None, None) => w.started_at.map(|t| ("has not reported for", now - t)),
            (None, Some(_)) => None,
        };
        if lag > limit {
            out.push(format!(
                "job {}: WAL of source {source} is {} behind (limit {}): the oldest WAL not on every destination was written at {}{error}",
                job.name,
                human(lag),
                human(limit),
                w.oldest_unshipped
                    .map_or(String::new(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            ));
        } else if let Some(since) = w.failing_since
            && now - since > limit
        {
            out.push(format!(
                "job {}: shipping WAL of source {source} has failed for {} (limit {}){error}",
                job.name,
                human(now - since),
                human(limit)
            ));
        } else if let Some(since) = w.receiver_failing_since
            && now - since > limit
        {
            out.push(format!(
                "job {}: WAL of source {source} is not being received: {} for {} (limit {}); the server's WAL since then is not archived",
                job.name,
                w.receiver_error.as_deref().unwrap_or("the WAL receiver keeps stopping"),
                human(now - since),
                human(limit)
            ));
        } else if let Some((what, long)) = stuck
            && long > limit
        {
            out.push(format!(
                "job {}: the WAL shipper of source {source} {what} {} (limit {}); see the daemon's log",
                job.name,
                human(long),
                human(limit)
            ));
        }
    }
    out
}

fn human(d: Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(extra: &str) -> Config {
        crate::testkit::config::load_toml(&format!(
            r#"
[destinations.local]
type = "local"
path = "/b"

[jobs.daily]
schedule = "0 3 * * *"
destinations = ["local"]
{extra}
[[jobs.daily.sources]]
type = "files"
name = "f"
path = "/data"

[jobs.weekdays]
schedule = "0 3 * * 1-5"
destinations = ["local"]
max_staleness = "4d"

[[jobs.weekdays.sources]]
type = "files"
name = "f"
path = "/data"
"#
        ))
    }

    fn run(outcome: &str, at: DateTime<Utc>) -> Option<RunStatus> {
        Some(RunStatus {
            id: "X".into(),
            outcome: outcome.into(),
            finished_at: at,
            duration_s: 1.0,
            bytes_in: 1,
            bytes_out: 1,
            errors: if outcome == "success" {
                vec![]
            } else {
                vec!["source db: pg_dump failed".into()]
            },
        })
    }

    #[test]
    fn verdicts() {
        // Monday 2026-11-23 12:00 UTC.
        let now = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid");
        let cfg = config("");
        let h = |hours: i64| Some(now - Duration::hours(hours));
        let state = |daily: JobStatus, weekdays: JobStatus| State {
            pid: 1,
            started_at: Some(now - Duration::days(30)),
            jobs: [
                ("daily".to_string(), daily),
                ("weekdays".to_string(), weekdays),
            ]
            .into(),
        };
        let fresh = JobStatus {
            newest_backup: h(9),
            last_run: run("success", now - Duration::hours(9)),
            recent: Vec::new(),
            ..JobStatus::default()
        };
        assert!(problems(&cfg, &state(fresh.clone(), fresh.clone()), now).is_empty());

        // Daily: 2 × 24 h by default. 47 h is fine, 49 h is not.
        let aged = |hours| JobStatus {
            newest_backup: h(hours),
            last_run: run("success", now - Duration::hours(hours)),
            recent: Vec::new(),
            ..JobStatus::default()
        };
        assert!(problems(&cfg, &state(aged(47), fresh.clone()), now).is_empty());
        let p = problems(&cfg, &state(aged(49), fresh.clone()), now);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with("job daily: newest backup is from"),
            "{p:?}"
        );
        assert!(p[0].contains("older than max_staleness 2days"), "{p:?}");

        // Weekdays: Friday 03:00 to Monday 03:00 is fine with max_staleness = 4d.
        assert!(problems(&cfg, &state(fresh.clone(), aged(81)), now).is_empty());

        // A failed or partial last run is unhealthy even if a backup is fresh; a run
        // cancelled by a stop is not.
        for (outcome, bad) in [("failed", true), ("partial", true), ("cancelled", false)] {
            let s = JobStatus {
                newest_backup: h(1),
                last_run: run(outcome, now),
                recent: Vec::new(),
                ..JobStatus::default()
            };
            let p = problems(&cfg, &state(s, fresh.clone()), now);
            assert_eq!(!p.is_empty(), bad, "{outcome}: {p:?}");
            if bad {
                assert!(p[0].contains("pg_dump failed"), "{p:?}");
            }
        }

        // The healer: a failed or unreachable last pass is unhealthy, with the
        // outcome named; a heal that put things back is not.
        for (outcome, bad) in [
            ("unreachable", true),
            ("failed", true),
            ("partial", true),
            ("healed", false),
            ("ok", false),
            ("dry_run", false),
        ] {
            let mut s = fresh.clone();
            s.last_heal = Some(HealStatus {
                outcome: outcome.to_string(),
                finished_at: now,
                summary: "heal daily: db unreachable, nothing checked or restored".into(),
            });
            let p = problems(&cfg, &state(s, fresh.clone()), now);
            assert_eq!(!p.is_empty(), bad, "{outcome}: {p:?}");
            if bad {
                assert!(p[0].contains(outcome), "{p:?}");
            }
        }

        // A verify that found problems is unhealthy, naming them.
        let mut s = fresh.clone();
        s.last_verify = Some(VerifyStatus {
            ok: false,
            finished_at: now,
            summary: "verify daily: 2 backup copy(ies) checked, 1 problem(s)".into(),
            problems: vec!["db: app/X/db.pgdump.zst is missing".into()],
        });
        let p = problems(&cfg, &state(s.clone(), fresh.clone()), now);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("verify at") && p[0].contains("db: app/X/db.pgdump.zst is missing"),
            "{p:?}"
        );
        s.last_verify = Some(VerifyStatus {
            ok: true,
            finished_at: now,
            summary: "verify daily: all whole".into(),
            problems: Vec::new(),
        });
        assert!(problems(&cfg, &state(s, fresh.clone()), now).is_empty());

        // No backup yet: fine while the daemon is young, not after the limit.
        let none = JobStatus::default();
        let mut young = state(none.clone(), fresh.clone());
        young.started_at = Some(now - Duration::hours(1));
        assert!(problems(&cfg, &young, now).is_empty());
        let p = problems(&cfg, &state(none, fresh), now);
        assert!(p[0].contains("no backup at all"), "{p:?}");

        // An explicit limit wins over the schedule's.
        let strict = config("max_staleness = \"2h\"");
        let p = problems(&strict, &state(aged(3), aged(3)), now);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("max_staleness 2h"), "{p:?}");
    }

    fn pitr_config() -> Config {
        crate::testkit::config::load_toml(
            r#"
[destinations.local]
type = "local"
path = "/b"

[jobs.pitr]
schedule = "0 3 * * *"
destinations = ["local"]

[[jobs.pitr.sources]]
type = "postgres"
name = "db"
mode = "physical"
url = "postgres://replicator@db/postgres"
wal_flush = "10s"

[[jobs.pitr.sources]]
type = "postgres"
name = "slow"
mode = "physical"
url = "postgres://replicator@db2/postgres"
slot = "slow"
wal_flush = "5min"
"#,
        )
    }

    #[test]
    fn the_lag_limit_is_five_minutes_or_three_flushes() {
        let secs = |s: u64| wal_lag_limit(std::time::Duration::from_secs(s)).num_seconds();
        assert_eq!(secs(1), 300);
        assert_eq!(secs(10), 300);
        assert_eq!(secs(100), 300);
        assert_eq!(secs(300), 900);
        assert_eq!(secs(600), 1800);
    }

    /// A physical source that ships, as of `now`.
    fn shipping(now: DateTime<Utc>) -> WalState {
        WalState {
            last_shipped: Some("000000010000000000000003".into()),
            last_shipped_at: Some(now - Duration::minutes(1)),
            started_at: Some(now - Duration::minutes(60)),
            seen_at: Some(now),
            ..WalState::default()
        }
    }

    const DENIED: &str = "cannot ship WAL 000000010000000000000004 to local: denied";

    /// (what db's state is, the daemon's age in minutes, the problem expected about db)
    type WalCase = (&'static str, Option<WalState>, i64, Option<&'static str>);

    fn wal_cases(now: DateTime<Utc>) -> Vec<WalCase> {
        let min = |m: i64| now - Duration::minutes(m);
        let ok = shipping(now);
        let err = Some(DENIED.to_string());
        vec![
            ("shipping", Some(ok.clone()), 60, None),
            (
                "idle for hours: nothing unshipped is not behind",
                Some(WalState {
                    last_shipped_at: Some(min(600)),
                    partial_shipped_at: Some(min(300)),
                    ..ok.clone()
                }),
                900,
                None,
            ),
            (
                "behind, within the limit",
                Some(WalState {
                    oldest_unshipped: Some(min(4)),
                    failing_since: Some(min(4)),
                    last_error: err.clone(),
                    pending: 1,
                    ..ok.clone()
                }),
                60,
                None,
            ),
            (
                "behind past the limit",
                Some(WalState {
                    oldest_unshipped: Some(min(6)),
                    failing_since: Some(min(2)),
                    last_error: err.clone(),
                    pending: 1,
                    ..ok.clone()
                }),
                60,
                Some(
                    "is 6m behind (limit 5m): the oldest WAL not on every destination was written at 2026-11-23T11:54:00Z: cannot ship WAL 000000010000000000000004 to local: denied",
                ),
            ),
            (
                "failing past the limit with nothing waiting (the spool unreadable)",
                Some(WalState {
                    failing_since: Some(min(7)),
                    last_error: Some("cannot read the WAL spool /s: denied".into()),
                    ..ok.clone()
                }),
                60,
                Some(
                    "shipping WAL of source db has failed for 7m (limit 5m): cannot read the WAL spool /s: denied",
                ),
            ),
            (
                "the receiver failing past the limit (nothing to ship looks idle)",
                Some(WalState {
                    receiver_error: Some(
                        "the WAL receiver stopped: pg_receivewal: could not connect".into(),
                    ),
                    receiver_failing_since: Some(min(6)),
                    ..ok.clone()
                }),
                60,
                Some(
                    "WAL of source db is not being received: the WAL receiver stopped: pg_receivewal: could not connect for 6m (limit 5m)",
                ),
            ),
            (
                "the receiver failing, within the limit",
                Some(WalState {
                    receiver_error: Some("the WAL receiver stopped: x".into()),
                    receiver_failing_since: Some(min(4)),
                    ..ok.clone()
                }),
                60,
                None,
            ),
            (
                "failing, within the limit",
                Some(WalState {
                    failing_since: Some(min(3)),
                    last_error: err.clone(),
                    ..ok.clone()
                }),
                60,
                None,
            ),
            (
                "idle: the shipper sleeps until the spool changes",
                Some(WalState {
                    seen_at: Some(min(300)),
                    ..ok.clone()
                }),
                600,
                None,
            ),
            (
                "a pass that does not end",
                Some(WalState {
                    seen_at: Some(min(8)),
                    passing_since: Some(min(8)),
                    ..ok.clone()
                }),
                60,
                Some("the WAL shipper of source db has been in one pass for 8m (limit 5m)"),
            ),
            (
                "started, never reported, within the limit",
                Some(WalState {
                    seen_at: None,
                    started_at: Some(min(2)),
                    ..WalState::default()
                }),
                60,
                None,
            ),
            (
                "started, never reported, past the limit",
                Some(WalState {
                    seen_at: None,
                    started_at: Some(min(9)),
                    ..WalState::default()
                }),
                60,
                Some("has not reported for 9m"),
            ),
            ("no stream, a young daemon", None, 2, None),
            (
                "no stream after the limit",
                None,
                6,
                Some("WAL of source db is not being archived: the daemon has run 6m"),
            ),
        ]
    }

    #[test]
    fn wal_verdicts() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid");
        let cfg = pitr_config();
        let min = |m: i64| now - Duration::minutes(m);
        for (what, db, age, expected) in wal_cases(now) {
            // `slow` (wal_flush 5min, limit 15 min) is 10 min behind: within its limit.
            let slow = WalState {
                oldest_unshipped: Some(min(10)),
                failing_since: Some(min(10)),
                last_error: Some(DENIED.to_string()),
                ..shipping(now)
            };
            let mut wal: BTreeMap<String, WalState> = [("slow".to_string(), slow)].into();
            if let Some(db) = db {
                wal.insert("db".into(), db);
            }
            let state = State {
                pid: 1,
                started_at: Some(min(age)),
                jobs: [(
                    "pitr".to_string(),
                    JobStatus {
                        newest_backup: Some(min(60)),
                        wal,
                        ..JobStatus::default()
                    },
                )]
                .into(),
            };
            let p = problems(&cfg, &state, now);
            match expected {
                None => assert!(p.is_empty(), "{what}: {p:?}"),
                Some(text) => {
                    assert_eq!(p.len(), 1, "{what}: {p:?}");
                    assert!(p[0].starts_with("job pitr: "), "{what}: {p:?}");
                    assert!(p[0].contains(text), "{what}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn a_failure_lasts_until_shipping_recovers() {
        use crate::wal::WalStatus;
        let t0 = Utc
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .single()
            .expect("valid");
        let at = |s: i64| t0 + Duration::seconds(s);
        let clean = |shipped: i64| WalStatus {
            last_shipped: Some("000000010000000000000003".into()),
            last_shipped_at: Some(at(shipped)),
            ..WalStatus::default()
        };
        let partial_failed = WalStatus {
            last_error: Some("cannot ship the partial WAL segment to local: denied".into()),
            oldest_unshipped: Some(at(-5)),
            ..clean(0)
        };
        let mut w = WalState::default();
        // (report, at second, change, failing since, oldest unshipped)
        type Step = (WalStatus, i64, WalChange, Option<i64>, Option<i64>);
        let steps: Vec<Step> = vec![
            (clean(0), 1, WalChange::Figures, None, None),
            (clean(0), 11, WalChange::Alive, None, None),
            (
                partial_failed.clone(),
                21,
                WalChange::Verdict,
                Some(21),
                Some(-5),
            ),
            // Another error within the episode: no hurry to write it down.
            (
                WalStatus {
                    last_error: Some(DENIED.into()),
                    ..partial_failed.clone()
                },
                21,
                WalChange::Figures,
                Some(21),
                Some(-5),
            ),
            // The shipper's next pass did not retry the partial: still failing.
            (clean(0), 22, WalChange::Figures, Some(21), Some(-5)),
            (
                WalStatus {
                    oldest_unshipped: Some(at(20)),
                    ..partial_failed.clone()
                },
                32,
                WalChange::Figures,
                Some(21),
                Some(-5),
            ),
            (clean(0), 33, WalChange::Figures, Some(21), Some(-5)),
            // A clean pass that shipped something ends it at once.
            (clean(40), 43, WalChange::Verdict, None, None),
            (
                partial_failed.clone(),
                53,
                WalChange::Verdict,
                Some(53),
                Some(-5),
            ),
            (clean(40), 54, WalChange::Figures, Some(53), Some(-5)),
            // Two clean passes in a row (the second retried the partial) end it too.
            (clean(40), 64, WalChange::Verdict, None, None),
        ];
        for (i, (report, s, change, since, oldest)) in steps.into_iter().enumerate() {
            assert_eq!(w.observe(&report, at(s)), change, "step {i}: {w:?}");
            assert_eq!(w.failing_since, since.map(at), "step {i}: {w:?}");
            assert_eq!(w.oldest_unshipped, oldest.map(at), "step {i}: {w:?}");
            assert_eq!(w.seen_at, Some(at(s)));
            assert_eq!(w.last_error.is_some(), since.is_some(), "step {i}: {w:?}");
        }
        assert_eq!(w.last_shipped_at, Some(at(40)));
        // A restarted stream reports nothing shipped yet: what was shipped stays.
        w.observe(&WalStatus::default(), at(70));
        assert_eq!(w.last_shipped.as_deref(), Some("000000010000000000000003"));
        assert_eq!(w.lag(at(70)), Duration::zero());
    }

    fn run_record(id: &str, published: bool, warnings: &[&str]) -> Record {
        Record {
            job: "daily".into(),
            done: Done::Run {
                run: RunStatus {
                    id: id.into(),
                    outcome: if published { "success" } else { "failed" }.into(),
                    finished_at: Utc::now(),
                    duration_s: 1.0,
                    bytes_in: 1,
                    bytes_out: 1,
                    errors: Vec::new(),
                },
                published: if published {
                    vec!["local".into()]
                } else {
                    Vec::new()
                },
                kept: Vec::new(),
                warnings: warnings.iter().map(|w| w.to_string()).collect(),
            },
        }
    }

    #[test]
    fn records_a_command_posts_reach_the_daemon_in_order_once() {
        let root = tempfile::tempdir().expect("tempdir");
        let inbox = root.path().join("stowage-done");
        let first = run_record("20261206T070000.000Z", true, &[]);
        let me = Some(rustix::process::geteuid().as_raw());
        // No daemon, no inbox: nothing is left behind.
        assert!(!post_to(&inbox, me, &first).expect("post"));
        assert!(!inbox.exists());
        std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
            .create(&inbox)
            .expect("inbox");
        let second = Record {
            job: "daily".into(),
            done: Done::Verify {
                verify: VerifyStatus {
                    ok: true,
                    finished_at: Utc::now(),
                    summary: "verify daily: all whole".into(),
                    problems: Vec::new(),
                },
                read: (1, 2, 0),
            },
        };
        assert!(post_to(&inbox, me, &first).expect("post"));
        assert!(post_to(&inbox, me, &second).expect("post"));
        // A killed command's half-written file, and one that is not a record.
        std::fs::write(inbox.join(".x.tmp"), b"{").expect("write");
        std::fs::write(inbox.join("zz.json"), b"{\"job\": 1}").expect("write");
        let (records, bad) = take_from(&inbox);
        assert_eq!(records, vec![first, second]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].contains("zz.json"), "{bad:?}");
        let left: Vec<_> = std::fs::read_dir(&inbox)
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from(".x.tmp")], "taken once");
        assert_eq!(take_from(&inbox), (Vec::new(), Vec::new()));
    }

    #[test]
    fn a_published_runs_warnings_stand_until_the_next_published_run() {
        let cfg = config("");
        let mut s = JobStatus::default();
        s.apply(
            &run_record(
                "20261206T070000.000Z",
                true,
                &["the dump of daily/db is 1 B"],
            )
            .done,
        );
        assert_eq!(
            s.last_run.as_ref().map(|r| r.id.as_str()),
            Some("20261206T070000.000Z")
        );
        assert!(s.newest_backup.is_some());
        let state = |s: &JobStatus| State {
            pid: 1,
            started_at: Some(Utc::now()),
            jobs: [("daily".to_string(), s.clone())].into(),
        };
        assert_eq!(
            warnings(&cfg, &state(&s)),
            vec!["the dump of daily/db is 1 B".to_string()]
        );
        // A warning is not a problem.
        assert!(problems(&cfg, &state(&s), Utc::now()).is_empty());
        // A failed run published nothing: the newest backup, and its warning, are the same.
        s.apply(&run_record("20261206T080000.000Z", false, &[]).done);
        assert_eq!(warnings(&cfg, &state(&s)).len(), 1);
        assert_eq!(s.recent.len(), 2);
        s.apply(&run_record("20261206T090000.000Z", true, &[]).done);
        assert!(warnings(&cfg, &state(&s)).is_empty());
    }

    #[test]
    fn a_state_file_of_an_older_daemon_still_reads() {
        let old =
            r#"{"pid":7,"started_at":null,"jobs":{"app":{"newest_backup":null,"last_run":null}}}"#;
        let s: State = serde_json::from_str(old).expect("reads");
        assert!(s.jobs["app"].wal.is_empty());
    }

    /// An inbox someone else could have made (in /tmp, before the daemon started) is not
    /// used: neither a link, nor a directory others may write to or own.
    #[test]
    fn an_inbox_another_user_could_have_made_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().expect("tempdir");
        let me = rustix::process::geteuid().as_raw();
        let inbox = root.path().join("stowage-done");
        std::fs::create_dir(&inbox).expect("inbox");
        std::fs::set_permissions(&inbox, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert_eq!(inbox_trusted(&inbox, Some(me)), Ok(()));
        let other = inbox_trusted(&inbox, Some(me.wrapping_add(1))).expect_err("another owner");
        assert!(other.contains("not to the daemon's user"), "{other}");
        std::fs::set_permissions(&inbox, std::fs::Permissions::from_mode(0o733)).expect("chmod");
        let open = inbox_trusted(&inbox, Some(me)).expect_err("open to others");
        assert!(open.contains("mode 733"), "{open}");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&inbox, &link).expect("symlink");
        let linked = inbox_trusted(&link, Some(me)).expect_err("a link");
        assert!(linked.contains("not a directory"), "{linked}");
        // A command does not write into it either.
        let record = run_record("20261206T070000.000Z", true, &[]);
        assert!(post_to(&inbox, Some(me), &record).is_err());
        assert!(post_to(&link, Some(me), &record).is_err());
        assert_eq!(std::fs::read_dir(&inbox).expect("read").count(), 0);
    }
}
