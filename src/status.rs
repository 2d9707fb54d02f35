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

fn human(d: Duration) -> String {
    let secs = d.num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stowage.toml");
        std::fs::write(
            &path,
            format!(
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
            ),
        )
        .expect("write");
        crate::load::load_with_env(&path, false).expect("valid")
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
}
