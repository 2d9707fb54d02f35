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

use crate::config::{Config, Job};
use crate::engine::{Database, SourceError};
use crate::repo::Repository;
use crate::repo::manifest::{self, Manifest};
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
    /// Some missing objects were restored, others could not be (`failed` says which, each
    /// with its own error).
    Partial,
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
            HealOutcome::Partial => "partial",
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
        if self.outcome == HealOutcome::Partial {
            s.push_str(", partially healed");
        }
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
        HealOutcome::Partial | HealOutcome::Failed | HealOutcome::Unreachable => {
            error!(job = %job.name, "{line}")
        }
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
    let newest_objects = candidates.iter().find_map(|c| objects_of(db, c));
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

    let plan = plan_restores(db, &candidates, report);
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
        let live = Live {
            config,
            job,
            db,
            target: &target,
            candidates: &candidates,
            trust,
        };
        run_plan(live, plan, report).await;
    }
    settle(db, dry_run, report);
}

/// What a source's entry in backup `c` lists as its objects.
fn objects_of(db: &dyn Database, c: &Candidate) -> Option<Vec<String>> {
    c.manifest
        .sources
        .iter()
        .find(|s| s.name == db.name() && s.files.is_none())
        .and_then(|s| s.objects.clone())
}

/// Each missing object from the newest candidate that holds it: (candidate, objects);
/// those none holds go into `report.failed`.
fn plan_restores(
    db: &dyn Database,
    candidates: &[Candidate],
    report: &mut HealReport,
) -> Vec<(usize, Vec<String>)> {
    let mut plan: Vec<(usize, Vec<String>)> = Vec::new();
    for object in report.missing.clone() {
        let found = candidates.iter().enumerate().find_map(|(i, c)| {
            objects_of(db, c)?
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
    plan
}

/// Runs the restores of `plan`, into `report`.
async fn run_plan(mut live: Live<'_>, plan: Vec<(usize, Vec<String>)>, report: &mut HealReport) {
    let groups = plan.len();
    let objects: usize = plan.iter().map(|(_, o)| o.len()).sum();
    let done = restore_plan(&mut live, plan).await;
    if done.attempts > groups {
        info!(
            job = %live.job.name,
            "heal {}: {} restores tried for {objects} object(s) from {groups} backup(s) (a restore that failed is tried again after the others, and its objects one by one, so that one object cannot hold back another)",
            live.job.name,
            done.attempts
        );
    }
    report.restored.extend(
        done.restored
            .iter()
            .map(|(i, o)| healed(o, &live.candidates[*i])),
    );
    report.incomplete.extend(done.incomplete);
    report.failed.extend(done.failed);
}

/// Orders the failures and sets the outcome.
fn settle(db: &dyn Database, dry_run: bool, report: &mut HealReport) {
    // Failures in the order the objects are watched, whichever round gave up on them.
    let rank = |o: &str| report.missing.iter().position(|m| db.same_object(m, o));
    let mut failed = std::mem::take(&mut report.failed);
    failed.sort_by_key(|(o, _)| rank(o));
    report.failed = failed;
    report.outcome = if !report.failed.is_empty() && !report.restored.is_empty() && !dry_run {
        HealOutcome::Partial
    } else if !report.failed.is_empty() || !report.incomplete.is_empty() {
        HealOutcome::Failed
    } else if dry_run {
        HealOutcome::DryRun
    } else {
        HealOutcome::Healed
    };
}

/// Restores for the healer's plan, so that the order of attempts can be tested without a
/// database.
trait Restorer {
    /// Why a restore failed; the report gives its text on one line.
    type Error: std::fmt::Display;
    /// Restore `objects` from candidate `backup` in one restore: Ok with what it could not
    /// finish although the objects are back (a foreign key not re-added), Err with why.
    async fn restore(
        &mut self,
        backup: usize,
        objects: &[String],
    ) -> Result<Option<String>, Self::Error>;
    /// Which of `objects` exist in the live database now (none when it cannot be asked).
    async fn present(&mut self, objects: &[String]) -> Vec<String>;
}

/// The live database and the job's backups.
struct Live<'a> {
    config: &'a Config,
    job: &'a Job,
    db: &'a dyn Database,
    target: &'a str,
    candidates: &'a [Candidate],
    trust: bool,
}

impl Restorer for Live<'_> {
    type Error = RestoreError;

    async fn restore(
        &mut self,
        backup: usize,
        objects: &[String],
    ) -> Result<Option<String>, RestoreError> {
        restore_group(
            self.config,
            self.job,
            self.db,
            self.target,
            &self.candidates[backup],
            objects,
            self.trust,
        )
        .await
    }

    async fn present(&mut self, objects: &[String]) -> Vec<String> {
        match self.db.live_objects(None).await {
            Ok(live) => objects
                .iter()
                .filter(|o| live.iter().any(|l| self.db.same_object(o, l)))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// What the restores of a plan did.
#[derive(Debug, Default)]
struct Done {
    /// (candidate, object), in the order they came back.
    restored: Vec<(usize, String)>,
    incomplete: Vec<String>,
    /// (object, its own error).
    failed: Vec<(String, String)>,
    /// Restores tried: each reads its backup again.
    attempts: usize,
}

/// Bookkeeping of one plan's attempts.
#[derive(Default)]
struct Tries {
    done: Done,
    /// Each object's own error: from its attempt alone when it had one, else from the last
    /// attempt it was part of.
    own: std::collections::HashMap<String, String>,
    /// Attempts that failed since the last one that restored something: the database has not
    /// changed since, so they would fail again.
    failed_since: Vec<(usize, Vec<String>)>,
}

impl Tries {
    /// One restore of `objects` from `backup`, unless it failed already with nothing
    /// restored since. Returns the objects still missing: none when it worked.
    async fn attempt<R: Restorer>(
        &mut self,
        r: &mut R,
        backup: usize,
        objects: Vec<String>,
    ) -> Vec<String> {
        let same =
            |o: &Vec<String>| o.len() == objects.len() && o.iter().all(|x| objects.contains(x));
        if self
            .failed_since
            .iter()
            .any(|(b, o)| *b == backup && same(o))
        {
            return objects;
        }
        self.done.attempts += 1;
        match r.restore(backup, &objects).await {
            Ok(incomplete) => {
                self.failed_since.clear();
                self.done.incomplete.extend(incomplete);
                self.done
                    .restored
                    .extend(objects.into_iter().map(|o| (backup, o)));
                Vec::new()
            }
            Err(e) => {
                let why = one_line(&e.to_string());
                for o in &objects {
                    if objects.len() == 1 {
                        self.own.insert(o.clone(), why.clone());
                    } else {
                        self.own.entry(o.clone()).or_insert_with(|| why.clone());
                    }
                }
                // An engine that cannot restore in one transaction may have put some of them
                // back before it failed (and the application may have created one since the
                // pass looked): an object that exists now is not restored over, and what
                // the failed restore left of it is not vouched for.
                let there = r.present(&objects).await;
                let (there, missing): (Vec<String>, Vec<String>) =
                    objects.into_iter().partition(|o| there.contains(o));
                for o in there {
                    self.done.failed.push((
                        o,
                        format!(
                            "it exists again, but a restore it was part of failed ({why}); check that its rows are complete"
                        ),
                    ));
                }
                if !missing.is_empty() {
                    self.failed_since.push((backup, missing.clone()));
                }
                missing
            }
        }
    }

    /// `units` in rounds while a round restores something (one unit may need another that
    /// comes later, or from an older backup); the units still failing, in the order of
    /// their last failure.
    async fn rounds<R: Restorer>(
        &mut self,
        r: &mut R,
        mut units: Vec<(usize, Vec<String>)>,
    ) -> Vec<(usize, Vec<String>)> {
        loop {
            let mut failing = Vec::new();
            let mut progress = false;
            for (backup, objects) in units {
                let n = objects.len();
                let left = self.attempt(r, backup, objects).await;
                progress |= left.len() < n;
                if !left.is_empty() {
                    failing.push((backup, left));
                }
            }
            if failing.is_empty() || !progress {
                return failing;
            }
            // The last to fail were tried after the most was restored; a chain of tables
            // that each need the next, watched in the wrong order, then heals in two rounds
            // instead of one round per table.
            failing.reverse();
            units = failing;
        }
    }
}

/// Restore the plan ((candidate, objects) per backup). Each backup's objects first in one
/// restore (one transaction where the engine has them: the fast path, one restore per
/// backup); groups that fail are tried again while others are restored (a table from an
/// older backup may need one from the newest). What still fails is taken apart, so that one
/// object that cannot be restored never holds back another: its objects one by one, in
/// rounds while a round restores something (which sorts out the order of tables whose
/// foreign keys point at other missing ones), then those still stalled from one backup
/// together once (tables whose foreign keys point at each other), and if that fails too,
/// all of them but one, each in turn (such tables held back by one that cannot be
/// restored). Then rounds again while anything came back. Each object that is left is
/// reported with its own error.
///
/// Cost: each restore reads its backup again (and an engine that does not verify before it
/// commits reads it twice). n objects missing from one backup: 1 restore when they can all
/// be restored; with k ≥ 1 of them that cannot be, among independent ones, at most 1 + n + k,
/// plus 1 when k ≥ 2 (together) and k more when k ≥ 3 (all but one). An attempt is never
/// repeated unless something was restored since it failed, which bounds the worst case
/// (dependencies that defeat the alternating order of the rounds) at about n² restores.
async fn restore_plan<R: Restorer>(r: &mut R, plan: Vec<(usize, Vec<String>)>) -> Done {
    let mut t = Tries::default();
    let left = t.rounds(r, plan).await;
    let mut singles: Vec<(usize, Vec<String>)> = left
        .into_iter()
        .flat_map(|(b, objects)| objects.into_iter().map(move |o| (b, vec![o])))
        .collect();
    loop {
        singles = t.rounds(r, singles).await;
        let mut together: Vec<(usize, Vec<String>)> = Vec::new();
        for (b, objects) in std::mem::take(&mut singles) {
            match together.iter_mut().find(|(c, _)| *c == b) {
                Some((_, all)) => all.extend(objects),
                None => together.push((b, objects)),
            }
        }
        let mut progress = false;
        for (b, objects) in together {
            let n = objects.len();
            let mut left = if n > 1 {
                t.attempt(r, b, objects).await
            } else {
                objects
            };
            // Tables that need each other, held back by one more object that cannot be
            // restored: all but one, each in turn.
            if left.len() > 2 {
                for i in 0..left.len() {
                    let mut rest = left.clone();
                    let out = rest.remove(i);
                    let m = rest.len();
                    let mut still = t.attempt(r, b, rest).await;
                    if still.len() < m {
                        still.push(out);
                        left = still;
                        break;
                    }
                }
            }
            progress |= left.len() < n;
            singles.extend(left.into_iter().map(|o| (b, vec![o])));
        }
        if !progress || singles.is_empty() {
            break;
        }
    }
    for (_, objects) in singles {
        for o in objects {
            let why = t.own.remove(&o).unwrap_or_default();
            t.done.failed.push((o, why));
        }
    }
    t.done
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
) -> Result<Option<String>, RestoreError> {
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
            Err(e)
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
/// is skipped, and so is a backup the job must not read (`crate::repo::packing::Expect`): a fake
/// newer backup neither takes a slot nor is restored from.
async fn candidates(
    config: &Config,
    job: &Job,
    source: &str,
    n: usize,
    trust: bool,
) -> Vec<Candidate> {
    let expect = crate::repo::packing::Expect::of(job, trust);
    let mut stores = storage::open_job(config, job).await;
    // An archive tier needs a retrieval (hours) before a restore: not a source for healing.
    stores.retain(|s| restore::archive_class(config, s.name).is_none());
    // Stable: the job's order among local ones and among the others.
    stores.sort_by_key(|s| !s.destination.settings.is_nearby());
    let mut ids: Vec<(manifest::Published, Vec<usize>)> = Vec::new();
    for (d, st) in stores.iter().enumerate() {
        match Repository::new(st.storage.as_ref(), &job.name)
            .backups()
            .await
        {
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
            match Repository::new(st.storage.as_ref(), &job.name)
                .manifest(&id)
                .await
            {
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

        let mut some = report(HealOutcome::Partial);
        some.missing = vec!["orders".into(), "shops".into()];
        some.restored = vec![from("public.orders", "B2")];
        some.failed = vec![("public.shops".into(), "needs public.regions".into())];
        assert_eq!(
            some.summary(),
            "heal app: db: 2 missing (orders, shops), partially healed; restored public.orders from B2 on local; \
             cannot heal public.shops (needs public.regions)"
        );
        assert!(!some.outcome.healthy());
        assert_eq!(some.outcome.as_str(), "partial");

        let mut no_list = report(HealOutcome::Failed);
        no_list.watched.clear();
        no_list.failed = vec![("*".into(), "no object list".into())];
        assert_eq!(
            no_list.summary(),
            "heal app: db; cannot heal * (no object list)"
        );
    }

    /// A database whose restores behave like PostgreSQL's: all or nothing, refused while a
    /// table a restored one needs is neither there nor restored with it. `atomic: false`
    /// behaves like a client fed a dump: the objects before the failing one stay.
    struct Fake {
        live: Vec<String>,
        /// (table, table it needs)
        needs: Vec<(&'static str, &'static str)>,
        broken: Vec<&'static str>,
        atomic: bool,
        tried: Vec<Vec<String>>,
    }

    fn fake(needs: &[(&'static str, &'static str)], broken: &[&'static str]) -> Fake {
        Fake {
            live: Vec::new(),
            needs: needs.to_vec(),
            broken: broken.to_vec(),
            atomic: true,
            tried: Vec::new(),
        }
    }

    impl Restorer for Fake {
        type Error = String;

        async fn restore(
            &mut self,
            _: usize,
            objects: &[String],
        ) -> Result<Option<String>, String> {
            self.tried.push(objects.to_vec());
            for (i, o) in objects.iter().enumerate() {
                let why = if self.broken.contains(&o.as_str()) {
                    Some(format!("{o} is broken"))
                } else {
                    self.needs
                        .iter()
                        .find(|(t, n)| {
                            t == o
                                && !self.live.iter().any(|l| l == n)
                                && !objects.iter().any(|x| x == n)
                        })
                        .map(|(_, n)| format!("{o} needs {n}"))
                };
                if let Some(why) = why {
                    if !self.atomic {
                        self.live.extend(objects[..i].iter().cloned());
                    }
                    return Err(why);
                }
            }
            self.live.extend(objects.iter().cloned());
            Ok(None)
        }

        async fn present(&mut self, objects: &[String]) -> Vec<String> {
            objects
                .iter()
                .filter(|o| self.live.contains(o))
                .cloned()
                .collect()
        }
    }

    fn plan(groups: &[(usize, &[&str])]) -> Vec<(usize, Vec<String>)> {
        groups
            .iter()
            .map(|(b, o)| (*b, o.iter().map(|x| x.to_string()).collect()))
            .collect()
    }

    fn names(done: &Done) -> (Vec<&str>, Vec<(&str, &str)>) {
        let mut restored: Vec<&str> = done.restored.iter().map(|(_, o)| o.as_str()).collect();
        restored.sort();
        let mut failed: Vec<(&str, &str)> = done
            .failed
            .iter()
            .map(|(o, w)| (o.as_str(), w.as_str()))
            .collect();
        failed.sort();
        (restored, failed)
    }

    #[tokio::test]
    async fn everything_restorable_is_one_restore_per_backup() {
        let mut db = fake(&[("orders", "customers"), ("a", "b"), ("b", "a")], &[]);
        let done = restore_plan(&mut db, plan(&[(0, &["orders", "customers", "a", "b"])])).await;
        assert_eq!(done.attempts, 1);
        assert_eq!(names(&done).1, []);
        // A table from an older backup needing one from the newest: the older group waits.
        let mut db = fake(&[("events", "orders")], &[]);
        let done = restore_plan(&mut db, plan(&[(1, &["events"]), (0, &["orders"])])).await;
        assert_eq!(names(&done), (vec!["events", "orders"], vec![]));
        assert_eq!(done.attempts, 3);
    }

    #[tokio::test]
    async fn one_unrestorable_object_holds_back_no_other() {
        let mut db = fake(&[], &["bad"]);
        let done = restore_plan(&mut db, plan(&[(0, &["bad", "good"])])).await;
        assert_eq!(names(&done), (vec!["good"], vec![("bad", "bad is broken")]));
        // The group, each alone, and `bad` again after `good` came back.
        assert_eq!(done.attempts, 4);

        // k = 2 and k = 3 of n = 5: 1 + n + (up to) k, + 1 together, + k all but one.
        let mut db = fake(&[], &["x", "y"]);
        let done = restore_plan(&mut db, plan(&[(0, &["x", "a", "y", "b", "c"])])).await;
        assert_eq!(names(&done).0, ["a", "b", "c"]);
        assert_eq!(done.attempts, 1 + 5 + 2 + 1, "{:?}", db.tried);
        let mut db = fake(&[], &["x", "y", "z"]);
        let done = restore_plan(&mut db, plan(&[(0, &["x", "a", "y", "b", "z"])])).await;
        assert_eq!(names(&done).0, ["a", "b"]);
        // z failed after the last restore that worked: not tried again alone.
        assert_eq!(done.attempts, 1 + 5 + 2 + 1 + 3, "{:?}", db.tried);
    }

    #[tokio::test]
    async fn chains_heal_in_order_and_each_failure_has_its_own_error() {
        // a → b → c, watched in the worst order, next to two that cannot be restored.
        let mut db = fake(&[("a", "b"), ("b", "c"), ("y", "gone")], &["x"]);
        let done = restore_plan(&mut db, plan(&[(0, &["a", "b", "c", "x", "y"])])).await;
        assert_eq!(
            names(&done),
            (
                vec!["a", "b", "c"],
                vec![("x", "x is broken"), ("y", "y needs gone")]
            )
        );
        // The group; each alone (c back); b and a (x and y failed after c came back);
        // x and y again; x and y together.
        assert_eq!(done.attempts, 1 + 5 + 2 + 2 + 1, "{:?}", db.tried);
    }

    #[tokio::test]
    async fn tables_that_need_each_other_come_back_together() {
        // p ↔ q, held back by x; r needs p.
        let mut db = fake(&[("p", "q"), ("q", "p"), ("r", "p")], &["x"]);
        let done = restore_plan(&mut db, plan(&[(0, &["p", "q", "r", "x"])])).await;
        assert_eq!(
            names(&done),
            (vec!["p", "q", "r"], vec![("x", "x is broken")]),
            "{:?}",
            db.tried
        );
        // Without the blocker they were one restore; with two blockers they stay (each
        // with its own error, which names the table it needs).
        let mut db = fake(&[("p", "q"), ("q", "p")], &["x", "y"]);
        let done = restore_plan(&mut db, plan(&[(0, &["p", "q", "x", "y"])])).await;
        assert_eq!(
            names(&done).1,
            [
                ("p", "p needs q"),
                ("q", "q needs p"),
                ("x", "x is broken"),
                ("y", "y is broken")
            ]
        );
        assert!(done.attempts <= 1 + 4 + 1 + 4, "{:?}", db.tried);
    }

    #[tokio::test]
    async fn a_partly_restored_object_is_not_restored_over_nor_called_healed() {
        let mut db = fake(&[], &["z"]);
        db.atomic = false;
        let done = restore_plan(&mut db, plan(&[(0, &["a", "z"])])).await;
        let (restored, failed) = names(&done);
        assert!(restored.is_empty(), "{restored:?}");
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(
            failed[0].0 == "a"
                && failed[0].1.starts_with(
                    "it exists again, but a restore it was part of failed (z is broken)"
                ),
            "{failed:?}"
        );
        assert_eq!(failed[1], ("z", "z is broken"));
        assert!(!db.tried.iter().any(|t| t == &["a"]), "{:?}", db.tried);
    }

    #[test]
    fn one_line_joins_tool_output() {
        assert_eq!(
            one_line("psql failed:\n  ERROR: x\n\n  DETAIL: y\n"),
            "psql failed: / ERROR: x / DETAIL: y"
        );
    }
}
