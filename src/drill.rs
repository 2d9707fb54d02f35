//! Restore drills: prove that the newest backup restores. The drilled source's newest
//! backup is restored, through its engine, into a scratch the drill creates (a database on
//! the source's server for PostgreSQL and MariaDB, a file in a private directory for SQLite,
//! a server of its own for Redis: [`crate::engine::Scratch::space`]); its tables and row
//! counts (Redis: databases and key counts) are compared with what the manifest recorded in
//! the dump's own snapshot; the job's checks run there; the scratch is removed, also when
//! the drill fails. One summary line says how it went and how long the recovery took.
//!
//! A physical PostgreSQL source is drilled as a point-in-time recovery: its newest base
//! backup is restored into a private scratch data directory with recovery to the newest
//! archived WAL, which the scratch server fetches through `stowage wal-fetch` (the path a
//! real recovery takes, each file checked); once its recovery has ended it must have
//! replayed at least to the start of the newest WAL file shipped when the drill began (and
//! to the base backup's end), and the summary names the point it reached.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, Drill, Job};
use crate::crypt::Keys;
use crate::engine::{Database, Recovery, RecoveryTarget, RestoreOptions, Scratch, ScratchSpace};
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
    /// Where the restored copy ended up, when the engine can say (a point-in-time drill:
    /// the LSN and the last commit replayed).
    pub point: Option<String>,
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
            let restored = match &self.point {
                Some(p) => format!("recovered to {p}"),
                None => "restored".to_string(),
            };
            format!(
                "drill {}: ok, {what} {restored} and checked in {:.1}s ({})",
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
    run_in_scratch(config, job, &d, &located, entry, &packing, &mut report).await;
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
    config: &Config,
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
    let recovery = match d.db.wal_source() {
        Some(_) => match replay_goal(job, located, entry).await {
            Ok((at_least, what, gap)) => {
                space.expect_replay(at_least, &what);
                report.problems.extend(gap);
                // The scratch server fetches WAL as a real recovery does: through
                // `stowage wal-fetch`, from the destination the base backup came from.
                Some(Recovery {
                    target: RecoveryTarget::Latest,
                    restore_command: restore::wal_fetch_command(
                        config,
                        &job.name,
                        &entry.name,
                        &located.destination,
                    ),
                })
            }
            Err(problem) => {
                report.problems.push(problem);
                if let Err(e) = space.remove().await {
                    warn!(job = %job.name, "drill: cannot remove the scratch {noun}: {e}; remove it by hand if it is still there");
                }
                return;
            }
        },
        None => None,
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
                recovery,
                ..Default::default()
            },
        )
        .await;
    let ready = match restored {
        Ok(_) => space
            .ready()
            .await
            .map_err(|e| format!("recovery failed: {e}")),
        Err(e) => Err(format!("restore failed: {e}")),
    };
    match ready {
        Ok(()) => {
            report.point = space.reached();
            if entry.wal.is_some() {
                count_recovered(space.as_mut(), report).await;
            } else {
                compare(space.as_mut(), d.scratch.counted(), entry, report).await;
            }
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
        Err(problem) => report.problems.push(problem),
    }
    report.duration = t0.elapsed();
    if let Err(e) = space.remove().await {
        warn!(job = %job.name, "drill: cannot remove the scratch {noun}: {e}; remove it by hand if it is still there (a scratch database is also dropped by the next drill)");
    }
}

/// A point-in-time drill's goal, read when the drill begins from the destination the base
/// backup came from: the least LSN the scratch server must replay to, what it is, and a
/// problem when the shipped WAL has a hole after the base backup. The goal is the start of
/// the newest WAL file shipped (complete or partial), or the base backup's end when no WAL
/// after it was shipped: reaching into the newest file proves every earlier one was fetched,
/// checked and replayed. (How far into the partial segment the shipper got is not recorded
/// in a form the drill can compare with, so the last few seconds of WAL are taken on trust.)
async fn replay_goal(
    job: &Job,
    located: &restore::Located,
    entry: &crate::repo::manifest::SourceEntry,
) -> Result<(u64, String, Option<String>), String> {
    let Some(wal) = &entry.wal else {
        return Err(format!(
            "backup {} records no WAL position for source \"{}\"; it is not a base backup a point-in-time drill can recover",
            located.manifest.id, entry.name
        ));
    };
    let stop = crate::engine::parse_lsn(&wal.stop_lsn).ok_or_else(|| {
        format!(
            "backup {} records the base backup's end as \"{}\", which is not an LSN",
            located.manifest.id, wal.stop_lsn
        )
    })?;
    let first = wal.first_file().unwrap_or_default();
    let expect = crate::repo::packing::Expect::of(job, false);
    let shipped =
        crate::wal::chain::shipped_on(located.storage.as_ref(), &job.name, &entry.name, &expect)
            .await
            .map_err(|e| {
                format!(
                    "cannot read the WAL shipped to {} for source \"{}\": {e}",
                    located.destination, entry.name
                )
            })?;
    let gap = match shipped.chain_from(&first) {
        Ok(chain) if chain.missing_count > 0 => Some(format!(
            "the WAL shipped to {} has a gap after the base backup: {}",
            located.destination,
            chain.describe_missing()
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "the WAL shipped to {} cannot be checked for gaps: {e}",
            located.destination
        )),
    };
    let newest = shipped
        .names
        .iter()
        .chain(shipped.partial.iter())
        .filter_map(|n| crate::wal::chain::parse(n).map(|(_, segno)| (segno, n)))
        .max();
    Ok(match newest {
        Some((segno, name)) if segno.saturating_mul(SEGMENT) > stop => (
            segno * SEGMENT,
            format!("the start of WAL file {name}, the newest shipped when the drill began"),
            gap,
        ),
        _ => (
            stop,
            format!(
                "the end of base backup {}, with no WAL shipped after it",
                located.manifest.id
            ),
            gap,
        ),
    })
}

/// The default WAL segment size (PostgreSQL's `--wal-segsize`), which the shipped names
/// are read with.
const SEGMENT: u64 = 16 * 1024 * 1024;

/// A recovered cluster's tables: a base backup records no counts to compare with, so what
/// is proved is that every table of every database can be read to its end.
async fn count_recovered(space: &mut (dyn ScratchSpace + '_), report: &mut DrillReport) {
    match space.row_counts().await {
        Ok(counts) => {
            let databases: std::collections::BTreeSet<&str> =
                counts.keys().filter_map(|k| k.split('.').next()).collect();
            let rows: u64 = counts.values().sum();
            report.ok.push(format!(
                "{} table(s) in {} database(s), {rows} row(s), each read to its end (a base backup records no counts to compare with)",
                counts.len(),
                databases.len()
            ));
        }
        Err(e) => report
            .problems
            .push(format!("cannot count the recovered rows: {e}")),
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
            point: None,
        };
        assert_eq!(
            r.summary(),
            "drill app: ok, backup X from local restored and checked in 1.5s (2 table(s), 5 row(s), as in the backup)"
        );
        r.point = Some("LSN 0/7000000".into());
        assert_eq!(
            r.summary(),
            "drill app: ok, backup X from local recovered to LSN 0/7000000 and checked in 1.5s (2 table(s), 5 row(s), as in the backup)"
        );
        r.problems.push("check returned false: select false".into());
        assert!(
            r.summary()
                .starts_with("drill app: FAILED, backup X from local: check returned false")
        );
    }
}
