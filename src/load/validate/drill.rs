//! `[jobs.NAME.drill]`: a scheduled restore into a scratch database, checked against the
//! job's sources.

use std::sync::Arc;

use super::source::Broken;
use crate::config::{Drill, SourceConfig, raw};
use crate::engine::Database;
use crate::schedule::Schedule;
use crate::zone::Zone;

pub(super) fn drill_config(
    key: &str,
    raw: &raw::RawDrill,
    tz: Zone,
    sources: &[SourceConfig],
    broken: &Broken,
    problems: &mut Vec<String>,
) -> Option<Drill> {
    let key = format!("{key}.drill");
    let mark = problems.len();
    let schedule = Schedule::parse(&raw.schedule, tz)
        .map_err(|e| problems.push(format!("{key}.schedule: {e}")))
        .ok();
    let source = drill_source(&key, raw.source.as_deref(), sources, broken, problems);
    if let Some(db) = &source {
        target(&key, db, raw, problems);
    }
    for (i, c) in raw.checks.iter().enumerate() {
        if c.trim().is_empty() {
            problems.push(format!("{key}.checks[{i}]: empty query"));
        }
    }
    if problems.len() > mark {
        return None;
    }
    Some(Drill {
        schedule: schedule?,
        source: source?.name().to_string(),
        to: raw.to.clone(),
        checks: raw.checks.clone(),
    })
}

/// The drilled source: the one named, or the job's only one a drill can restore.
fn drill_source(
    key: &str,
    name: Option<&str>,
    sources: &[SourceConfig],
    broken: &Broken,
    problems: &mut Vec<String>,
) -> Option<Arc<dyn Database>> {
    let drillable: Vec<&Arc<dyn Database>> = sources
        .iter()
        .filter_map(SourceConfig::database)
        .filter(|d| d.scratch().is_some())
        .collect();
    let kinds = || {
        crate::source::registered()
            .iter()
            .filter(|e| e.unconfigured("x").scratch().is_some())
            .map(|e| format!("\"{}\"", e.kind()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (name, drillable.as_slice()) {
        // A source that did not validate: its own problems are reported, and whether a
        // drill could restore it is not known.
        (Some(name), _) if broken.may_be(name) && !sources.iter().any(|s| s.name() == name) => None,
        (None, []) if !broken.is_empty() => None,
        (Some(name), _) => match drillable.iter().find(|d| d.name() == name) {
            Some(d) => Some((*d).clone()),
            None => {
                problems.push(format!(
                    "{key}.source: \"{name}\" is not a database source of the job that can be drilled; drills restore sources of type {}",
                    kinds()
                ));
                None
            }
        },
        (None, [one]) => Some((*one).clone()),
        (None, []) => {
            problems.push(format!(
                "{key}: the job has no database source a drill can restore; drills restore sources of type {}",
                kinds()
            ));
            None
        }
        (None, several) => {
            problems.push(format!(
                "{key}.source: the job has {} sources a drill can restore; name one, e.g. source = \"{}\"",
                several.len(),
                several[0].name()
            ));
            None
        }
    }
}

/// `to` (a scratch database, never the source's own) and `checks` for the source's engine.
fn target(key: &str, db: &Arc<dyn Database>, raw: &raw::RawDrill, problems: &mut Vec<String>) {
    // An engine whose drill makes its own scratch inside `to` (a directory) says how it
    // takes it; the others take `to` as a restore target.
    let checked = db
        .scratch()
        .and_then(|s| s.check_to(&raw.to))
        .unwrap_or_else(|| db.check_target(&raw.to));
    if let Err(e) = checked {
        problems.push(format!("{key}.to: {e}"));
    } else if let Some(scratch) = db.scratch()
        && scratch.is_own_database(&raw.to)
    {
        problems.push(format!(
            "{key}.to: \"{}\" is the database of source \"{}\"; a drill creates and drops its target, so give a scratch database, e.g. .../stowage_drill",
            redact_url(&raw.to),
            db.name()
        ));
    }
    if !raw.checks.is_empty() && db.scratch().is_some_and(|s| !s.runs_checks()) {
        problems.push(format!(
            "{key}.checks: a {} drill runs no checks (they are SQL); remove them",
            db.kind()
        ));
    }
}

/// A URL without its password, for messages.
fn redact_url(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    /// The problems loading `drill` (the keys of `[jobs.pitr.drill]`) reports, for a job
    /// with one physical PostgreSQL source.
    fn physical_drill(drill: &str) -> Result<crate::config::Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stowage.toml");
        let text = format!(
            "[destinations.local]\ntype = \"local\"\npath = {:?}\n\n[jobs.pitr]\nschedule = \"0 2 * * *\"\ndestinations = [\"local\"]\n\n[[jobs.pitr.sources]]\ntype = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = \"postgres://replicator@db:5432/app\"\n\n[jobs.pitr.drill]\nschedule = \"0 5 * * 0\"\n{drill}\n",
            dir.path().join("backups").display().to_string()
        );
        std::fs::write(&path, text).expect("write");
        crate::load::load_with_env(&path, false).map_err(|e| e.to_string())
    }

    #[test]
    fn a_physical_drill_takes_a_directory() {
        let config =
            physical_drill("to = \"/var/tmp\"\nchecks = [\"select true\"]").expect("valid");
        let job = config.jobs.get("pitr").expect("job");
        let drill = job.drill.as_ref().expect("drill");
        assert_eq!(
            (drill.source.as_str(), drill.to.as_str()),
            ("db", "/var/tmp")
        );
        assert_eq!(drill.checks, vec!["select true".to_string()]);
    }

    #[test]
    fn a_physical_drill_refuses_what_is_not_a_directory() {
        for (to, want) in [
            (
                "postgres://replicator:secret@db:5432/app",
                "jobs.pitr.drill.to: \"postgres://replicator:***@db:5432/app\" is a URL; a physical drill starts its own scratch PostgreSQL server: give a directory for its private scratch data directory, e.g. to = \"/var/tmp\"",
            ),
            (
                "scratch",
                "jobs.pitr.drill.to: \"scratch\" is not an absolute path; give a directory for the drill's private scratch data directory, e.g. to = \"/var/tmp\"",
            ),
        ] {
            let e = physical_drill(&format!("to = {to:?}")).expect_err(to);
            assert!(e.contains(want), "{to}: {e}");
            assert!(!e.contains("secret"), "the password is not shown: {e}");
        }
    }
}
