//! The healer: tables (or collections) that must exist are checked in the live database,
//! and each one that is missing is restored from the newest of the job's last few published
//! backups that holds it. The manifests say which backup holds what, so nothing is
//! downloaded to decide; only the chosen tables are restored, through the engine's
//! selective restore (which also brings back the foreign keys of other tables that point at
//! them).
//!
//! What it never does: restore when the database cannot be reached (an unreachable
//! database is not a database without tables), or touch an object that exists (an empty
//! table exists).

use std::time::Instant;

use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::{Config, DestinationKind, Job};
use crate::engine::{Database, SourceError};
use crate::manifest::{self, JobListing, Manifest};
use crate::restore::{self, RestoreError, RestoreRequest};
use crate::storage;

/// How a heal pass ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealOutcome {
    /// Every watched object exists.
    Ok,
    /// Something was missing, and all of it was restored.
    Healed,
    /// A dry run found something missing (and says where it would come from).
    DryRun,
    /// Something missing could not be restored (or only partly: a foreign key that could
    /// not be re-added).
    Failed,
    /// The database could not be reached: nothing was checked or restored.
    Unreachable,
}

impl HealOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            HealOutcome::Ok => "ok",
            HealOutcome::Healed => "healed",
            HealOutcome::DryRun => "dry_run",
            HealOutcome::Failed => "failed",
            HealOutcome::Unreachable => "unreachable",
        }
    }

    /// Whether the job is healthy after this pass.
    pub fn healthy(self) -> bool {
        matches!(
            self,
            HealOutcome::Ok | HealOutcome::Healed | HealOutcome::DryRun
        )
    }
}

/// One object restored (or, in a dry run, to be restored).
#[derive(Debug, Clone, Serialize)]
pub struct Healed {
    pub object: String,
    pub backup: String,
    pub destination: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct HealReport {
    pub job: String,
    pub source: String,
    pub dry_run: bool,
    pub outcome: HealOutcome,
    /// Objects watched (after "*" was expanded); empty when unreachable.
    pub watched: Vec<String>,
    pub missing: Vec<String>,
    pub restored: Vec<Healed>,
    /// (object, why) for each missing object not restored.
    pub failed: Vec<(String, String)>,
    /// Problems after a restore that put the objects back (a foreign key not re-added).
    pub incomplete: Vec<String>,
    /// Live objects the newest backup does not know: a missing one may have been renamed.
    pub new_since_backup: Vec<String>,
    /// Why the database was unreachable.
    pub unreachable: Option<String>,
    pub duration_s: f64,
}

impl HealReport {
    fn new(job: &str, source: &str, dry_run: bool) -> HealReport {
        HealReport {
            job: job.to_string(),
            source: source.to_string(),
            dry_run,
            outcome: HealOutcome::Ok,
            watched: Vec::new(),
            missing: Vec::new(),
            restored: Vec::new(),
            failed: Vec::new(),
            incomplete: Vec::new(),
            new_since_backup: Vec::new(),
            unreachable: None,
            duration_s: 0.0,
        }
    }

    /// The one line a heal is logged with, and the notification's text.
    pub fn summary(&self) -> String {
        let head = format!(
            "heal {}{}: {}",
            self.job,
            if self.dry_run { " (dry run)" } else { "" },
            self.source
        );
        if let Some(why) = &self.unreachable {
            return format!("{head} unreachable, nothing checked or restored: {why}");
        }
        if self.missing.is_empty() && self.failed.is_empty() {
            return if self.watched.is_empty() {
                format!("{head}: no published backup yet to take the tables to watch from")
            } else {
                format!(
                    "{head}: all {} watched object(s) present",
                    self.watched.len()
                )
            };
        }
        let from = |h: &Healed| format!("{} from {} on {}", h.object, h.backup, h.destination);
        let mut s = if self.missing.is_empty() {
            head
        } else {
            format!(
                "{head}: {} missing ({})",
                self.missing.len(),
                self.missing.join(", ")
            )
        };
        if !self.restored.is_empty() {
            s.push_str(&format!(
                "; {} {}",
                if self.dry_run {
                    "would restore"
                } else {
                    "restored"
                },
                self.restored
                    .iter()
                    .map(from)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!(
                "; cannot heal {}",
                self.failed
                    .iter()
                    .map(|(o, why)| format!("{o} ({why})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !self.incomplete.is_empty() {
            s.push_str(&format!("; but: {}", self.incomplete.join("; ")));
        }
        if !self.new_since_backup.is_empty() {
            s.push_str(&format!(
                "; note: {} not in the newest backup (if a missing table was renamed, the restored one is a second copy)",
                self.new_since_backup.join(", ")
            ));
        }
        s
    }
}

/// A published backup the healer may restore from.
struct Candidate {
    manifest: Manifest,
    destination: String,
}

/// One pass of the healer for `job` (which must have `[jobs.NAME.heal]`). `dry_run` adds to
/// the config's own `dry_run`. Logs one summary line.
/// `trust_unauthenticated`: heal from backups whose manifest fails the job's auth_key_file
/// too (the command's `--trust-unauthenticated`; never the daemon).
pub async fn heal(
    config: &Config,
    job: &Job,
    dry_run: bool,
    trust_unauthenticated: bool,
) -> HealReport {
    let t0 = Instant::now();
    let (Some(settings), Some(db)) = (job.heal.as_ref(), job.heal_source()) else {
        // Config validation makes this unreachable for a loaded config.
        let mut r = HealReport::new(&job.name, "-", dry_run);
        r.outcome = HealOutcome::Failed;
        r.failed
            .push(("-".into(), "the job has no [heal] section".into()));
        return r;
    };
    let dry_run = dry_run || settings.dry_run;
    let mut report = HealReport::new(&job.name, db.name(), dry_run);
    pass(
        config,
        job,
        settings,
        db.as_ref(),
        dry_run,
        trust_unauthenticated,
        &mut report,
    )
    .await;
    report.duration_s = t0.elapsed().as_secs_f64();
    let line = report.summary();
    match report.outcome {
        HealOutcome::Ok => info!(job = %job.name, "{line}"),
        HealOutcome::Healed | HealOutcome::DryRun => warn!(job = %job.name, "{line}"),
        HealOutcome::Failed | HealOutcome::Unreachable => error!(job = %job.name, "{line}"),
    }
    report
}

async fn pass(
    config: &Config,
    job: &Job,
    settings: &crate::config::Heal,
    db: &dyn Database,
    dry_run: bool,
    trust: bool,
    report: &mut HealReport,
) {
    let live = match db.live_objects(None).await {
        Ok(l) => l,
        Err(e) => {
            report.outcome = HealOutcome::Unreachable;
            report.unreachable = Some(one_line(&e.to_string()));
            return;
        }
    };
    let candidates = candidates(config, job, db.name(), settings.backups, trust).await;
    let objects_of = |c: &Candidate| -> Option<Vec<String>> {
        c.manifest
            .sources
            .iter()
            .find(|s| s.name == db.name() && s.files.is_none())
            .and_then(|s| s.objects.clone())
    };
    let newest_objects = candidates.iter().find_map(objects_of);
    report.watched = if settings.watches_all() {
        newest_objects.clone().unwrap_or_default()
    } else {
        settings.watch.clone()
    };
    report.missing = report
        .watched
        .iter()
        .filter(|w| !live.iter().any(|l| db.same_object(w, l)))
        .cloned()
        .collect();
    if report.missing.is_empty() {
        // No backup yet (a new deployment): nothing to compare with, and nothing wrong.
        if settings.watches_all() && newest_objects.is_none() && !candidates.is_empty() {
            report.outcome = HealOutcome::Failed;
            report.failed.push((
                "*".into(),
                format!(
                    "no object list in the last {} backup(s) to watch; list the tables in watch",
                    settings.backups
                ),
            ));
        }
        return;
    }
    if let Some(newest) = &newest_objects {
        report.new_since_backup = live
            .iter()
            .filter(|l| !newest.iter().any(|o| db.same_object(o, l)))
            .cloned()
            .collect();
    }

    // Each missing object from the newest candidate that holds it.
    let mut plan: Vec<(usize, Vec<String>)> = Vec::new();
    for object in report.missing.clone() {
        let found = candidates.iter().enumerate().find_map(|(i, c)| {
            objects_of(c)?
                .into_iter()
                .find(|o| db.same_object(&object, o))
                .map(|o| (i, o))
        });
        match found {
            Some((i, name)) => match plan.iter_mut().find(|(c, _)| *c == i) {
                Some((_, names)) => names.push(name),
                None => plan.push((i, vec![name])),
            },
            None => report.failed.push((
                object,
                if candidates.is_empty() {
                    "no published backup could be read".to_string()
                } else {
                    format!(
                        "not in the last {} backup(s): {}",
                        candidates.len(),
                        candidates
                            .iter()
                            .map(|c| c.manifest.id.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            )),
        }
    }
    let Some(target) = db.own_target() else {
        report.outcome = HealOutcome::Failed;
        return;
    };
    if dry_run {
        for (i, objects) in plan {
            let c = &candidates[i];
            report.restored.extend(objects.iter().map(|o| healed(o, c)));
        }
    } else {
        // Groups from different backups may depend on each other (a table restored from an
        // older backup with a foreign key to one from the newest): a group that fails is
        // tried again after the others, as long as a round makes progress.
        let mut pending = plan;
        loop {
            let mut failed_now = Vec::new();
            let mut progress = false;
            for (i, objects) in pending {
                let c = &candidates[i];
                match restore_group(config, job, db, &target, c, &objects, trust).await {
                    Ok(incomplete) => {
                        progress = true;
                        report.restored.extend(objects.iter().map(|o| healed(o, c)));
                        report.incomplete.extend(incomplete);
                    }
                    Err(why) => failed_now.push((i, objects, why)),
                }
            }
            if failed_now.is_empty() {
                break;
            }
            if !progress {
                for (_, objects, why) in failed_now {
                    report
                        .failed
                        .extend(objects.into_iter().map(|o| (o, why.clone())));
                }
                break;
            }
            pending = failed_now.into_iter().map(|(i, o, _)| (i, o)).collect();
        }
    }
    report.outcome = if !report.failed.is_empty() || !report.incomplete.is_empty() {
        HealOutcome::Failed
    } else if dry_run {
        HealOutcome::DryRun
    } else {
        HealOutcome::Healed
    };
}

fn healed(object: &str, c: &Candidate) -> Healed {
    Healed {
        object: object.to_string(),
        backup: c.manifest.id.clone(),
        destination: c.destination.clone(),
    }
}

/// Restore `objects` from backup `c` into the live database. Ok carries what the restore
/// could not finish (a foreign key not re-added) although the objects are back.
async fn restore_group(
    config: &Config,
    job: &Job,
    db: &dyn Database,
    target: &str,
    c: &Candidate,
    objects: &[String],
    trust: bool,
) -> Result<Option<String>, String> {
    info!(
        job = %job.name,
        "heal {}: restoring {} into {} from backup {} on {}",
        job.name,
        objects.join(", "),
        db.name(),
        c.manifest.id,
        c.destination
    );
    let req = RestoreRequest {
        job: job.name.clone(),
        id: c.manifest.id.clone(),
        to: vec![format!("{}={target}", db.name())],
        from: Some(c.destination.clone()),
        only: vec![db.name().to_string()],
        tables: objects.to_vec(),
        trust_unauthenticated: trust,
        // The candidate's destination is a preference: a damaged copy there is read from
        // another destination instead.
        fallback: true,
        ..RestoreRequest::default()
    };
    match restore::restore(config, &req).await {
        Ok(summary) => {
            for line in summary.lines {
                info!(job = %job.name, "heal {}: {line}", job.name);
            }
            Ok(None)
        }
        Err(RestoreError::Database {
            source: SourceError::Incomplete(why),
            ..
        }) => Ok(Some(one_line(&why))),
        Err(e) => {
            let why = one_line(&e.to_string());
            warn!(job = %job.name, "heal {}: restoring {} failed: {why}", job.name, objects.join(", "));
            Err(why)
        }
    }
}

/// Error text on one line (tools' stderr has several), for the summary.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The newest `n` published backups of the job over all its destinations, newest first,
/// each read from the preferred destination that has it: local volumes before object
/// stores (fast, and no egress), then the job's order. A destination that cannot be read
/// is skipped, and so is a backup the job must not read (`crate::codec::Expect`): a fake
/// newer backup neither takes a slot nor is restored from.
async fn candidates(
    config: &Config,
    job: &Job,
    source: &str,
    n: usize,
    trust: bool,
) -> Vec<Candidate> {
    let expect = crate::codec::Expect::of(job, trust);
    let mut stores = storage::open_job(config, job).await;
    // An archive tier needs a retrieval (hours) before a restore: not a source for healing.
    stores.retain(|s| restore::archive_class(config, s.name).is_none());
    // Stable: the job's order among local ones and among the others.
    stores.sort_by_key(|s| !matches!(s.destination.kind, DestinationKind::Local(_)));
    let mut ids: Vec<(manifest::Published, Vec<usize>)> = Vec::new();
    for (d, st) in stores.iter().enumerate() {
        match JobListing::read_backups(st.storage.as_ref(), &job.name).await {
            Ok(listing) => {
                for p in listing.published(&job.name) {
                    match ids.iter_mut().find(|(q, _)| q.id == p.id) {
                        Some((_, holders)) => holders.push(d),
                        None => ids.push((p, vec![d])),
                    }
                }
            }
            Err(e) => warn!(
                job = %job.name,
                destination = %st.name,
                "heal {}: cannot list {}: {e}",
                job.name,
                st.name
            ),
        }
    }
    ids.sort_by(|a, b| b.0.time.cmp(&a.0.time).then_with(|| b.0.id.cmp(&a.0.id)));
    let mut out = Vec::new();
    // Backups read and admitted: the newest n of those are the candidates.
    let mut taken = 0;
    for (published, holders) in ids.into_iter() {
        if taken >= n {
            break;
        }
        let id = published.id;
        for d in holders {
            let st = &stores[d];
            match manifest::read_manifest(st.storage.as_ref(), &job.name, &id).await {
                Ok(m) => {
                    // Another destination may hold the genuine copy.
                    if let Err(e) = expect.admit(&m) {
                        warn!(job = %job.name, "heal {}: not using backup {id} on {}: {e}", job.name, st.name);
                        continue;
                    }
                    taken += 1;
                    if !m.sources.iter().any(|s| s.name == source) {
                        break;
                    }
                    out.push(Candidate {
                        manifest: m,
                        destination: st.name.to_string(),
                    });
                    break;
                }
                Err(e) => warn!(
                    job = %job.name,
                    "heal {}: cannot read backup {id} on {}: {e}",
                    job.name,
                    st.name
                ),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: HealOutcome) -> HealReport {
        HealReport {
            outcome,
            watched: vec!["orders".into(), "customers".into()],
            ..HealReport::new("app", "db", false)
        }
    }

    fn from(object: &str, backup: &str) -> Healed {
        Healed {
            object: object.into(),
            backup: backup.into(),
            destination: "local".into(),
        }
    }

    #[test]
    fn summary_lines() {
        let ok = report(HealOutcome::Ok);
        assert_eq!(
            ok.summary(),
            "heal app: db: all 2 watched object(s) present"
        );

        let mut none_yet = report(HealOutcome::Ok);
        none_yet.watched.clear();
        assert_eq!(
            none_yet.summary(),
            "heal app: db: no published backup yet to take the tables to watch from"
        );

        let mut down = report(HealOutcome::Unreachable);
        down.watched.clear();
        down.unreachable = Some("connection refused".into());
        assert_eq!(
            down.summary(),
            "heal app: db unreachable, nothing checked or restored: connection refused"
        );
        assert!(!down.outcome.healthy());

        let mut healed = report(HealOutcome::Healed);
        healed.missing = vec!["orders".into(), "customers".into()];
        healed.restored = vec![from("public.orders", "B2"), from("public.customers", "B1")];
        assert_eq!(
            healed.summary(),
            "heal app: db: 2 missing (orders, customers); restored public.orders from B2 on local, public.customers from B1 on local"
        );
        assert!(healed.outcome.healthy());

        let mut dry = healed.clone();
        dry.dry_run = true;
        dry.outcome = HealOutcome::DryRun;
        assert!(dry.summary().starts_with(
            "heal app (dry run): db: 2 missing (orders, customers); would restore public.orders from B2"
        ));

        let mut partly = report(HealOutcome::Failed);
        partly.missing = vec!["orders".into(), "gone".into()];
        partly.restored = vec![from("public.orders", "B2")];
        partly.failed = vec![(
            "gone".into(),
            "not in the last 3 backup(s): B3, B2, B1".into(),
        )];
        partly.incomplete = vec!["events_order_id_fkey on audit.events: 1 row".into()];
        partly.new_since_backup = vec!["public.orders_v2".into()];
        assert_eq!(
            partly.summary(),
            "heal app: db: 2 missing (orders, gone); restored public.orders from B2 on local; \
             cannot heal gone (not in the last 3 backup(s): B3, B2, B1); \
             but: events_order_id_fkey on audit.events: 1 row; \
             note: public.orders_v2 not in the newest backup (if a missing table was renamed, the restored one is a second copy)"
        );
        assert!(!partly.outcome.healthy());

        let mut no_list = report(HealOutcome::Failed);
        no_list.watched.clear();
        no_list.failed = vec![("*".into(), "no object list".into())];
        assert_eq!(
            no_list.summary(),
            "heal app: db; cannot heal * (no object list)"
        );
    }

    #[test]
    fn one_line_joins_tool_output() {
        assert_eq!(
            one_line("psql failed:\n  ERROR: x\n\n  DETAIL: y\n"),
            "psql failed: / ERROR: x / DETAIL: y"
        );
    }
}
