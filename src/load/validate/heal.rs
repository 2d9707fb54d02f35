//! `[jobs.NAME.heal]`: the healer, checked against the job's sources.

use std::sync::Arc;

use super::source::Broken;
use crate::config::{DEFAULT_HEAL_SCHEDULE, Heal, SourceConfig, raw};
use crate::engine::Database;
use crate::schedule::Schedule;
use crate::zone::Zone;

pub(super) fn heal_config(
    key: &str,
    raw: &raw::RawHeal,
    tz: Zone,
    sources: &[SourceConfig],
    broken: &Broken,
    problems: &mut Vec<String>,
) -> Option<Heal> {
    let key = format!("{key}.heal");
    let mark = problems.len();
    let expr = raw.schedule.as_deref().unwrap_or(DEFAULT_HEAL_SCHEDULE);
    let schedule = Schedule::parse(expr, tz)
        .map_err(|e| problems.push(format!("{key}.schedule: {e}")))
        .ok();
    let healable: Vec<&Arc<dyn Database>> = sources
        .iter()
        .filter_map(SourceConfig::database)
        .filter(|d| d.selects_objects() && d.own_target().is_some())
        .collect();
    let source = match &raw.source {
        // A source that did not validate: its own problems are reported, and whether the
        // healer could watch it is not known.
        Some(name) if broken.may_be(name) && !sources.iter().any(|s| s.name() == name) => None,
        Some(name) => named_source(&key, name, sources, &healable, problems),
        None if healable.is_empty() && !broken.is_empty() => None,
        None => only_source(&key, &healable, problems),
    };
    watch(&key, &raw.watch, problems);
    let backups = match raw.backups {
        Some(0) => {
            problems.push(format!(
                "{key}.backups: 0 searches nothing; give how many of the newest backups to search (default 3)"
            ));
            None
        }
        Some(n) => usize::try_from(n).ok(),
        None => Some(3),
    };
    if problems.len() > mark {
        return None;
    }
    Some(Heal {
        schedule: schedule?,
        source: source?,
        watch: raw.watch.clone(),
        backups: backups?,
        dry_run: raw.dry_run,
    })
}

/// `source = "NAME"`: a source of the job the healer can check table by table.
fn named_source(
    key: &str,
    name: &str,
    sources: &[SourceConfig],
    healable: &[&Arc<dyn Database>],
    problems: &mut Vec<String>,
) -> Option<String> {
    match sources.iter().find(|s| s.name() == name) {
        Some(SourceConfig::Database(d)) if healable.iter().any(|h| h.name() == name) => {
            Some(d.name().to_string())
        }
        Some(s) => {
            problems.push(format!(
                "{key}.source: source \"{name}\" is a {} source, which the healer cannot check table by table; it watches sources of type {}",
                match s {
                    SourceConfig::Database(d) => d.kind(),
                    SourceConfig::Files(_) => "files",
                },
                healable_kinds()
            ));
            None
        }
        None => {
            problems.push(format!(
                "{key}.source: the job has no source \"{name}\"{}",
                if healable.is_empty() {
                    String::new()
                } else {
                    format!("; its sources with tables: {}", names(healable))
                }
            ));
            None
        }
    }
}

/// No `source`: the job's one source with tables.
fn only_source(
    key: &str,
    healable: &[&Arc<dyn Database>],
    problems: &mut Vec<String>,
) -> Option<String> {
    match healable {
        [one] => Some(one.name().to_string()),
        [] => {
            problems.push(format!(
                "{key}: the job has no database source with tables or collections to watch; the healer watches sources of type {}",
                healable_kinds()
            ));
            None
        }
        several => {
            problems.push(format!(
                "{key}.source: the job has {} sources with tables ({}); name the one to watch, e.g. source = \"{}\"",
                several.len(),
                names(several),
                several[0].name()
            ));
            None
        }
    }
}

fn watch(key: &str, watch: &[String], problems: &mut Vec<String>) {
    if watch.is_empty() {
        problems.push(format!(
            "{key}.watch: missing or empty; list the tables that must exist, e.g. watch = [\"orders\", \"public.customers\"], or watch = [\"*\"] for every table in the newest backup"
        ));
    }
    for (i, w) in watch.iter().enumerate() {
        if w.trim().is_empty() {
            problems.push(format!("{key}.watch[{i}]: empty name"));
        } else if w == "*" && watch.len() > 1 {
            problems.push(format!(
                "{key}.watch: \"*\" already means every table in the newest backup; give it alone, or list names without it"
            ));
        }
    }
}

fn names(v: &[&Arc<dyn Database>]) -> String {
    v.iter()
        .map(|d| format!("\"{}\"", d.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn healable_kinds() -> String {
    crate::source::registered()
        .iter()
        .filter(|e| e.unconfigured("-").selects_objects())
        .map(|e| format!("\"{}\"", e.kind()))
        .collect::<Vec<_>>()
        .join(", ")
}
