//! Restore drills: prove that the newest backup restores. The drilled source's newest
//! backup is restored, through its engine, into a scratch the drill creates (a database on
//! the source's server for PostgreSQL and MariaDB, a file in a private directory for SQLite,
//! a server of its own for Redis: [`crate::engine::Scratch::space`]); its tables and row
//! counts (Redis: databases and key counts) are compared with what the manifest recorded in
//! the dump's own snapshot; the job's checks run there; the scratch is removed, also when
//! the drill fails. One summary line says how it went and how long the recovery took.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, Drill, Job};
use crate::crypt::Keys;
use crate::engine::{Database, RestoreOptions, Scratch, ScratchSpace};
use crate::repo::Repository;
use crate::repo::packing::Packing;
use crate::restore::{self, RestoreError};

#[derive(Debug, Clone, Default, Serialize)]
pub struct DrillReport {
    pub job: String,
    /// The backup drilled and where it was read from.
    pub id: Option<String>,
    pub destination: Option<String>,
    /// From the start of the restore to the end of the checks: the measured recovery time.
    pub duration: Duration,
    /// What was found good.
    pub ok: Vec<String>,
    /// What failed, each naming its table, check or step.
    pub problems: Vec<String>,
}

impl DrillReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn summary(&self) -> String {
        let what = match (&self.id, &self.destination) {
            (Some(id), Some(d)) => format!("backup {id} from {d}"),
            _ => "no backup".to_string(),
        };
        if self.passed() {
            format!(
                "drill {}: ok, {what} restored and checked in {:.1}s ({})",
                self.job,
                self.duration.as_secs_f64(),
                self.ok.join("; ")
            )
        } else {
            format!(
                "drill {}: FAILED, {what}: {}",
                self.job,
                self.problems.join("; ")
            )
        }
    }
}

/// Run the job's drill once. Never touches the source's own database: the target is
/// refused when it names it, at config time and again here.
/// `trust_unauthenticated`: drill a backup whose manifest fails the job's auth_key_file
/// too (the command's `--trust-unauthenticated`; never the daemon).
pub async fn drill(
    config: &Config,
    job: &Job,
    keys: Option<Arc<Keys>>,
    trust_unauthenticated: bool,
) -> DrillReport {
    let mut report = DrillReport {
        job: job.name.clone(),
        ..Default::default()
    };
    let d = match drillable(job) {
        Ok(d) => d,
        Err(problem) => {
            report.problems.push(problem);
            return report;
        }
    };

    let located = match newest(config, job).await {
        Ok(l) => l,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    report.id = Some(located.manifest.id.clone());
    report.destination = Some(located.destination.clone());
    let Some(entry) = located
        .manifest
        .sources
        .iter()
        .find(|s| s.name == d.settings.source)
    else {
        report.problems.push(format!(
            "the newest backup {} has no source \"{}\"",
            located.manifest.id, d.settings.source
        ));
        return report;
    };
    let packing = match packing_for(job, &located, entry, keys, trust_unauthenticated).await {
        Ok(p) => p,
        Err(problem) => {
            report.problems.push(problem.to_string());
            return report;
        }
    };
    run_in_scratch(job, &d, &located, entry, &packing, &mut report).await;
    report
}

/// What a drill needs of its job: its settings, the source, and the source's scratch
/// databases.
struct Drillable<'a> {
    settings: &'a Drill,
    db: &'a Arc<dyn Database>,
    scratch: &'a dyn Scratch,
}

/// The job's drill, or why the job cannot be drilled.
fn drillable(job: &Job) -> Result<Drillable<'_>, String> {
    let (Some(settings), Some(db)) = (&job.drill, job.drill_source()) else {
        return Err(format!(
            "job \"{}\" has no [jobs.{}.drill] section",
            job.name, job.name
        ));
    };
    let Some(scratch) = db.scratch() else {
        return Err(format!("{} sources cannot be drilled", db.kind()));
    };
    if scratch.is_own_database(&settings.to) {
        return Err(format!(
            "drill.to names the {} of source \"{}\"; refusing to drill into it",
            scratch.noun(),
            db.name()
        ));
    }
    Ok(Drillable {
        settings,
        db,
        scratch,
    })
}

/// The backup's packing, with the keys to read `entry` checked to be there.
async fn packing_for(
    job: &Job,
    located: &restore::Located,
    entry: &crate::repo::manifest::SourceEntry,
    keys: Option<Arc<Keys>>,
    trust_unauthenticated: bool,
) -> Result<Packing, RestoreError> {
    let expect = crate::repo::packing::Expect::of(job, trust_unauthenticated);
    let packing = Repository::new(located.storage.as_ref(), &job.name).packing(
        &located.manifest,
        &expect,
        keys,
    )?;
    restore::check_keys(located.storage.as_ref(), &packing, &[entry.key.as_str()]).await?;
    Ok(packing)
}

/// Restores `entry` into a scratch database, compares it and runs the checks, and removes
/// the scratch database.
async fn run_in_scratch(
    job: &Job,
    d: &Drillable<'_>,
    located: &restore::Located,
    entry: &crate::repo::manifest::SourceEntry,
    packing: &Packing,
    report: &mut DrillReport,
) {
    let noun = d.scratch.noun();
    info!(
        job = %job.name,
        id = %located.manifest.id,
        "drill: restoring {} from {} into a scratch {noun}",
        entry.name,
        located.destination
    );
    let mut space = match d.scratch.space(&d.settings.to).await {
        Ok(s) => s,
        Err(e) => {
            report
                .problems
                .push(format!("cannot create the scratch {noun}: {e}"));
            return;
        }
    };
    let t0 = Instant::now();
    let archive = Repository::new(located.storage.as_ref(), &job.name).archive(
        entry,
        packing,
        &located.destination,
    );
    let restored =
        d.db.restore(
            &archive,
            &RestoreOptions {
                target: space.target().to_string(),
                // The scratch server may lack the source's roles; ownership is not what a
                // drill proves.
                no_owner: d.scratch.restores_without_owners(),
                ..Default::default()
            },
        )
        .await;
    match restored {
        Ok(_) => {
            compare(space.as_mut(), d.scratch.counted(), entry, report).await;
            for check in &d.settings.checks {
                match space.check(check).await {
                    Ok(true) => report.ok.push(format!("check passed: {check}")),
                    Ok(false) => report
                        .problems
                        .push(format!("check returned false: {check}")),
                    Err(e) => report.problems.push(format!("check failed: {check}: {e}")),
                }
            }
        }
        Err(e) => report.problems.push(format!("restore failed: {e}")),
    }
    report.duration = t0.elapsed();
    if let Err(e) = space.remove().await {
        warn!(job = %job.name, "drill: cannot remove the scratch {noun}: {e}; remove it by hand if it is still there (a scratch database is also dropped by the next drill)");
    }
}

/// The newest published backup on the first destination that reads without a retrieval
/// (a drill never waits hours for an archive tier).
async fn newest(config: &Config, job: &Job) -> Result<restore::Located, RestoreError> {
    let readable: Vec<&String> = job
        .destinations
        .iter()
        .filter(|d| restore::archive_class(config, d).is_none())
        .collect();
    if readable.is_empty() {
        return Err(RestoreError::Usage(format!(
            "every destination of job \"{}\" is an archive tier that needs a retrieval; a drill reads from a destination that does not",
            job.name
        )));
    }
    let mut last = None;
    for d in readable {
        match restore::locate(config, job, Some(d), "latest").await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| RestoreError::NotFound("no backup".into())))
}

/// Tables and rows of the scratch database against the manifest: rows recorded in the
/// dump's snapshot when the backup has them, else the table list.
async fn compare(
    space: &mut (dyn ScratchSpace + '_),
    (object, unit): (&str, &str),
    entry: &crate::repo::manifest::SourceEntry,
    report: &mut DrillReport,
) {
    let restored = match space.row_counts().await {
        Ok(r) => r,
        Err(e) => {
            report
                .problems
                .push(format!("cannot count the restored {unit}s: {e}"));
            return;
        }
    };
    let problems = compare_counts(
        entry.rows.as_ref(),
        entry.objects.as_deref().unwrap_or_default(),
        &restored,
        (object, unit),
    );
    if problems.is_empty() {
        let rows: u64 = restored.values().sum();
        let n = restored.len();
        report.ok.push(match &entry.rows {
            Some(_) => format!("{n} {object}(s), {rows} {unit}(s), as in the backup"),
            None => format!(
                "{n} {object}(s) as in the backup, {rows} {unit}(s) (the backup recorded no {unit} counts)"
            ),
        });
    }
    report.problems.extend(problems);
}

/// Pure comparison, table-tested below.
fn compare_counts(
    recorded: Option<&BTreeMap<String, u64>>,
    objects: &[String],
    restored: &BTreeMap<String, u64>,
    (object, unit): (&str, &str),
) -> Vec<String> {
    let mut problems = Vec::new();
    match recorded {
        Some(rows) => {
            for (table, n) in rows {
                match restored.get(table) {
                    None => problems.push(format!("{object} {table} is missing from the restore")),
                    Some(got) if got != n => problems.push(format!(
                        "{object} {table}: {got} {unit}(s) restored, {n} in the backup"
                    )),
                    Some(_) => {}
                }
            }
        }
        None => {
            for table in objects {
                if !restored.contains_key(table) {
                    problems.push(format!("{object} {table} is missing from the restore"));
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn counts_are_compared_table_by_table() {
        let restored = map(&[("public.a", 3), ("public.b", 0)]);
        type Case = (
            Option<BTreeMap<String, u64>>,
            &'static [&'static str],
            Vec<&'static str>,
        );
        let cases: &[Case] = &[
            (Some(map(&[("public.a", 3), ("public.b", 0)])), &[], vec![]),
            (
                Some(map(&[("public.a", 4)])),
                &[],
                vec!["table public.a: 3 row(s) restored, 4 in the backup"],
            ),
            (
                Some(map(&[("public.c", 1)])),
                &[],
                vec!["table public.c is missing from the restore"],
            ),
            (None, &["public.a"], vec![]),
            (
                None,
                &["public.z"],
                vec!["table public.z is missing from the restore"],
            ),
        ];
        for (recorded, objects, want) in cases {
            let objects: Vec<String> = objects.iter().map(|s| s.to_string()).collect();
            assert_eq!(
                compare_counts(recorded.as_ref(), &objects, &restored, ("table", "row")),
                *want,
                "{recorded:?} {objects:?}"
            );
        }
    }

    #[test]
    fn summary_names_backup_time_and_problems() {
        let mut r = DrillReport {
            job: "app".into(),
            id: Some("X".into()),
            destination: Some("local".into()),
            duration: Duration::from_millis(1500),
            ok: vec!["2 table(s), 5 row(s), as in the backup".into()],
            problems: vec![],
        };
        assert_eq!(
            r.summary(),
            "drill app: ok, backup X from local restored and checked in 1.5s (2 table(s), 5 row(s), as in the backup)"
        );
        r.problems.push("check returned false: select false".into());
        assert!(
            r.summary()
                .starts_with("drill app: FAILED, backup X from local: check returned false")
        );
    }
}
