//! `[[jobs.NAME.sources]]`: each source's name and type, then its section, validated by
//! its engine (`src/source/<engine>/`) or, for `type = "files"`, here.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{NAME_RULE, valid_name};
use crate::config::{FilesConfig, Priority, SourceConfig, raw};
use crate::section::words::suggest;
use crate::section::{Section, serde_fields};

/// The sources of a job that were declared but did not validate (their problems are
/// reported). What names one of them, or needs one of their kind (a healer, a drill, the
/// job's `exclude_tables`), is not checked against the sources that did: "the job has no
/// source \"db\"" would be false, and hide the real problem among lines that are not.
#[derive(Debug, Default)]
pub(super) struct Broken {
    names: BTreeSet<String>,
    /// A source whose name itself is missing or invalid (reported): any name may be meant
    /// for it.
    unnamed: bool,
}

impl Broken {
    /// Whether `name` may be a source that did not validate.
    pub(super) fn may_be(&self, name: &str) -> bool {
        self.unnamed || self.names.contains(name)
    }

    /// Whether every source validated (a kind that is needed may be a broken one's).
    pub(super) fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

pub(super) fn sources(
    key: &str,
    job: &str,
    raw: Vec<raw::RawSource>,
    priority: Priority,
    job_exclude_tables: &[String],
    problems: &mut Vec<String>,
) -> (Vec<SourceConfig>, Broken) {
    if raw.is_empty() {
        problems.push(format!(
            "{key}.sources: the job has no source; add a [[{key}.sources]] entry"
        ));
    }
    let mut names = BTreeSet::new();
    let mut sources = Vec::new();
    let owners = |field: &str| {
        let mut owners = crate::source::owners_of(field);
        if serde_fields::<RawFiles>().contains(&field) {
            owners.push("files");
        }
        owners
    };
    let mut used_job_excludes = false;
    let mut broken = Broken::default();
    for (i, s) in raw.into_iter().enumerate() {
        let skey = format!("{key}.sources[{i}]");
        let named = valid_name(&s.name);
        let name = s.name.clone();
        if !named {
            problems.push(format!(
                "{skey}.name: invalid source name \"{}\": {NAME_RULE}",
                s.name
            ));
        } else if !names.insert(s.name.clone()) {
            problems.push(format!(
                "{skey}.name: duplicate source name \"{}\" in job \"{job}\"; each source needs its own name",
                s.name
            ));
        }
        // "valid keys here" names every key this source may have, its type's and the
        // ones every source has: a misspelt `befre` is then pointed at `before`.
        let own: &[&str] = if s.kind == "files" {
            serde_fields::<RawFiles>()
        } else {
            crate::source::find(&s.kind).map_or(&[], |e| e.keys())
        };
        let valid = [&["type", "name", "before", "after"][..], own].concat();
        let mut section = Section::new(skey, s.name, s.rest, &mut *problems, &owners);
        section.valid_keys = Some(&valid);
        section.priority = priority;
        section.job_exclude_tables = job_exclude_tables;
        let (source, used) = source(&s.kind, &mut section);
        used_job_excludes |= used;
        broken.unnamed |= !named;
        match source {
            Some(source) => sources.push(source),
            None => {
                broken.names.insert(name);
            }
        }
    }
    if !job_exclude_tables.is_empty() && !used_job_excludes && broken.is_empty() {
        problems.push(format!(
            "{key}.exclude_tables: the job has no database source with tables; remove the key or add a source with type = {}",
            crate::source::registered()
                .iter()
                .filter(|e| e.has_tables())
                .map(|e| format!("\"{}\"", e.kind()))
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    (sources, broken)
}

/// One source by its `type`, and whether its engine took the job-level `exclude_tables`.
fn source(kind: &str, section: &mut Section<'_>) -> (Option<SourceConfig>, bool) {
    if kind == "files" {
        (files_source(section).map(SourceConfig::Files), false)
    } else if let Some(engine) = crate::source::find(kind) {
        let db = engine.configure(section);
        (db.map(SourceConfig::Database), section.used_job_excludes)
    } else {
        let mut kinds = crate::source::kinds();
        kinds.push("files");
        section.problems.push(format!(
            "{}.type: unknown value \"{kind}\"{}; expected one of: {}",
            section.key,
            suggest(kind, &kinds),
            kinds.join(", ")
        ));
        (None, false)
    }
}

/// Coherence rule: a database is dumped before the files its rows point at, so a restore
/// may bring back an orphan file but never a row whose file is missing.
pub(super) fn order_warning(key: &str, sources: &[SourceConfig], warnings: &mut Vec<String>) {
    if let (Some(f), Some(d)) = (
        sources
            .iter()
            .position(|s| matches!(s, SourceConfig::Files(_))),
        sources
            .iter()
            .rposition(|s| matches!(s, SourceConfig::Database(_))),
    ) && f < d
    {
        warnings.push(format!(
            "{key}.sources: files source \"{}\" runs before database source \"{}\"; list databases first so that every restored row finds its file",
            sources[f].name(),
            sources[d].name()
        ));
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFiles {
    path: Option<PathBuf>,
    include: Option<Vec<String>>,
    exclude: Option<Vec<String>>,
    /// Files are never modified in place (a new version gets a new name): a path whose
    /// size and mtime match the previous backup is not re-read.
    immutable: Option<bool>,
}

fn files_source(section: &mut Section<'_>) -> Option<FilesConfig> {
    let raw: RawFiles = section.parse()?;
    match &raw.path {
        None => section.problem(
            "path",
            "required for type = \"files\"; e.g. path = \"/data/uploads\"",
        ),
        Some(p) if !p.is_absolute() => section.problem(
            "path",
            format!("{p:?} must be an absolute path (the directory as mounted in this container)"),
        ),
        Some(_) => {}
    }
    let include = raw.include.unwrap_or_default();
    let exclude = raw.exclude.unwrap_or_default();
    for (field, globs) in [("include", &include), ("exclude", &exclude)] {
        for (n, g) in globs.iter().enumerate() {
            if let Err(e) = crate::pathfilter::PathFilter::check_glob(g) {
                section.problem(&format!("{field}[{n}]"), e);
            }
        }
    }
    Some(FilesConfig {
        name: section.name.clone(),
        path: raw.path?,
        include,
        exclude,
        immutable: raw.immutable.unwrap_or(false),
    })
}
