//! Diagnosis: what a serde error or a validation problem means to the user. Unknown keys
//! with a "did you mean", types in the config file's words, which environment variable
//! set a value, and the order problems are listed in.

use std::collections::BTreeSet;

use super::OWN_VARIABLES;
use super::read::{KeyPath, Reading, STAND_IN, find};
use crate::config::raw;
use crate::section::serde_fields;
use crate::section::words::{ENV_PREFIX, closest, strsim_distance};

/// Whether `STOWAGE_<name>` is read as config: any name with `__` (a key in a section), a
/// top-level key, or a near miss of one (so that a typo is reported, not ignored). Other
/// `STOWAGE_…` variables (the test harness's, a user's own) are none of config's business.
pub(super) fn is_config_variable(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    if name.contains("__") {
        return true;
    }
    if OWN_VARIABLES.contains(&name.as_str()) {
        return false;
    }
    serde_fields::<raw::RawConfig>().iter().any(|key| {
        let d = strsim_distance(&name, key);
        // Stricter than "did you mean" on short keys: STOWAGE_PG is not a typo of "log".
        d == 0 || (d <= 2 && 2 * d < key.len())
    })
}

impl Reading<'_> {
    /// " (from environment variable STOWAGE_…)" when the value at `key` was set by the
    /// environment: by one variable, or (a table) by variables for all its keys.
    pub(super) fn env_origin(&self, key: &[String]) -> String {
        let Some(value) = find(&self.tree, key) else {
            return String::new();
        };
        let mut leaves = Vec::new();
        collect_leaves(value, key.to_vec(), &mut leaves);
        let from_env = |v: &figment::value::Value| {
            self.figment
                .get_metadata(v.tag())
                .is_some_and(|m| m.name.contains("environment"))
        };
        if leaves.is_empty() || !leaves.iter().all(|(_, v)| from_env(v)) {
            return String::new();
        }
        let mut names: Vec<String> = leaves
            .iter()
            .map(|(path, _)| self.variable_name(path))
            .collect();
        names.dedup();
        format!(
            " (from environment variable{} {})",
            if names.len() > 1 { "s" } else { "" },
            names.join(", ")
        )
    }

    /// The variable that sets `key`: STOWAGE_ and the key's names joined by `__`, up to
    /// an array (a variable sets a whole array, e.g. `STOWAGE_JOBS__APP__DESTINATIONS`).
    fn variable_name(&self, key: &[String]) -> String {
        let mut names = Vec::new();
        let mut value = Some(&self.tree);
        for seg in key {
            match value {
                Some(figment::value::Value::Array(..)) => break,
                Some(v) => value = find(v, std::slice::from_ref(seg)),
                None => {}
            }
            names.push(seg.to_uppercase());
        }
        format!("{ENV_PREFIX}{}", names.join("__"))
    }

    /// Whether a validation problem is about a key already reported, a key a "did you
    /// mean" named, or a stand-in (its value, or, for a stand-in `type`, what that type
    /// allows), and so adds nothing.
    pub(super) fn is_consequence(&self, line: &str) -> bool {
        if line.contains(STAND_IN) {
            return true;
        }
        let key = problem_key(line);
        self.is_settled(&key)
            || self.suggested.iter().any(|s| key.starts_with(s))
            || self.stand_ins.iter().any(|s| {
                s.last().is_some_and(|k| k == "type")
                    && key.starts_with(&s[..s.len() - 1])
                    && line.contains("type = ")
            })
    }

    /// A validation problem about a key set from the environment says which variable.
    pub(super) fn with_origin(&self, line: &str) -> String {
        let key = problem_key(line);
        if line.contains("(from environment variable") {
            return line.to_string();
        }
        format!("{line}{}", self.env_origin(&key))
    }
}

/// A job that only environment variables define (the config file has no `[jobs.NAME]`),
/// with the variables that made it: a typo in a job name (`STOWAGE_JOBS__APPP__SCHEDULE`)
/// makes a new, empty job.
pub(super) struct EnvOnlyJob {
    name: String,
    variables: Vec<String>,
}

/// The jobs the environment (`env`, its config keys) sets that are not in `file` (the
/// config file's own tree), each with the variables that set it.
pub(super) fn env_only_jobs(
    file: &figment::value::Value,
    env: &figment::value::Value,
) -> Vec<EnvOnlyJob> {
    let Some(figment::value::Value::Dict(_, jobs)) = find(env, &["jobs".to_string()]) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for (name, value) in jobs {
        let key = vec!["jobs".to_string(), name.clone()];
        if find(file, &key).is_some() {
            continue;
        }
        let mut leaves = Vec::new();
        collect_leaves(value, key, &mut leaves);
        // A variable sets one leaf (an array is one value): its name is the leaf's path.
        let mut variables: Vec<String> = leaves
            .iter()
            .map(|(path, _)| {
                let names: Vec<String> = path.iter().map(|s| s.to_uppercase()).collect();
                format!("{ENV_PREFIX}{}", names.join("__"))
            })
            .collect();
        variables.sort();
        variables.dedup();
        found.push(EnvOnlyJob {
            name: name.clone(),
            variables,
        });
    }
    found
}

/// Every problem about a job only the environment defines, as one line that names its
/// variables and the job of the file they were probably meant for: "no destination" and
/// "no source" about a job nobody meant to define would send the user looking in the file.
/// A job the environment defines without a problem is left alone (that is allowed).
pub(super) fn report_env_only_jobs(
    problems: &mut Vec<String>,
    jobs: &[EnvOnlyJob],
    file: &figment::value::Value,
) {
    let in_file: Vec<&str> = match find(file, &["jobs".to_string()]) {
        Some(figment::value::Value::Dict(_, d)) => d.keys().map(String::as_str).collect(),
        _ => Vec::new(),
    };
    for job in jobs {
        let before = problems.len();
        problems.retain(|line| {
            let key = problem_key(line);
            !(key.len() >= 2 && key[0] == "jobs" && key[1] == job.name)
        });
        if problems.len() < before {
            problems.push(env_only_line(job, &in_file));
        }
    }
}

fn env_only_line(job: &EnvOnlyJob, in_file: &[&str]) -> String {
    let name = &job.name;
    let prefix = format!("{ENV_PREFIX}JOBS__{}__", name.to_uppercase());
    let meant = in_file
        .iter()
        .copied()
        .find(|j| j.eq_ignore_ascii_case(name))
        .or_else(|| closest(name, in_file));
    let fix = match meant {
        // figment reads variable names in lower case.
        Some(j) if j.eq_ignore_ascii_case(name) => format!(
            "; the file's job \"{j}\" has upper-case letters, which a variable cannot name (its name is read in lower case): rename the job to \"{name}\" in the file"
        ),
        Some(j) => format!(
            " (did you mean \"{j}\"? its variables begin {ENV_PREFIX}JOBS__{}__, not {prefix})",
            j.to_uppercase()
        ),
        None => format!(
            "; add a [jobs.{name}] section to the file, or remove the variable{}",
            if job.variables.len() > 1 { "s" } else { "" }
        ),
    };
    format!(
        "jobs.{name}: job \"{name}\" is not in the config file, only in environment variable{} {}{fix}; jobs in the file: {}",
        if job.variables.len() > 1 { "s" } else { "" },
        job.variables.join(", "),
        if in_file.is_empty() {
            "none".to_string()
        } else {
            in_file.join(", ")
        }
    )
}

/// The key a problem line names ("jobs.app.sources[1].url: …"), as a key path.
fn problem_key(line: &str) -> KeyPath {
    let key = line.split_once(": ").map_or(line, |(k, _)| k);
    let mut path = Vec::new();
    for part in key.split('.') {
        let mut pieces = part.split('[');
        if let Some(name) = pieces.next()
            && !name.is_empty()
        {
            path.push(name.to_string());
        }
        for index in pieces {
            path.push(index.trim_end_matches(']').to_string());
        }
    }
    path
}

/// The values under `value` that are not tables, with their keys.
fn collect_leaves<'v>(
    value: &'v figment::value::Value,
    key: KeyPath,
    out: &mut Vec<(KeyPath, &'v figment::value::Value)>,
) {
    match value {
        figment::value::Value::Dict(_, d) if !d.is_empty() => {
            for (k, v) in d {
                let mut sub = key.clone();
                sub.push(k.clone());
                collect_leaves(v, sub, out);
            }
        }
        _ => out.push((key, value)),
    }
}

/// Every problem once, sorted by the key it names (section by section, entry by entry,
/// then key by key; array elements by index), so one mistake's lines stay together and
/// the order does not depend on which check found a problem first. Lines naming the
/// same key keep their order.
pub(super) fn sort_problems(problems: &mut Vec<String>) {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    enum Seg {
        Index(usize),
        Name(String),
    }
    let mut seen = BTreeSet::new();
    problems.retain(|p| seen.insert(p.clone()));
    problems.sort_by_cached_key(|line| {
        problem_key(line)
            .into_iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Seg::Index(i),
                Err(_) => Seg::Name(s),
            })
            .collect::<Vec<_>>()
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_variables_from_the_environment() {
        // Keys in sections, top-level keys (any case), and near misses of those.
        for name in [
            "jobs__app__schedule",
            "LOG__LEVEL",
            "shutdown_grace",
            "SHUTDOWN_GRACE",
            "shutdown_gracee",
            "SHUTDOWN_GRCE",
            "log",
            "jobz",
        ] {
            assert!(is_config_variable(name), "{name}");
        }
        // stowage's own variables, the test harness's, and anything not close to a key.
        for name in [
            "CONFIG",
            "PID_FILE",
            "STATE_FILE",
            "RESTORE_TARGET",
            "RESTORE_CLEAN",
            "BIN",
            "PG_BIN",
            "CI_CONFIG",
            "MOTO_SERVER",
            "REDIS_SERVER",
            "S3S_FS",
            "MARIADB_BIN",
            "AWS_CLI",
            "SOAK_LOG",
            "TIMEOUT",
        ] {
            assert!(!is_config_variable(name), "{name}");
        }
        // A top-level key named like one of stowage's own variables could never be set.
        for key in serde_fields::<raw::RawConfig>() {
            assert!(!OWN_VARIABLES.contains(key), "{key}");
        }
    }

    #[test]
    fn problems_are_sorted_by_key_and_listed_once() {
        let mut p: Vec<String> = [
            "jobs.app.sources[10].url: b",
            "jobs.app.sources[2].url: a",
            "jobs.app.schedule: c",
            "destinations.local.path: d",
            "jobs.app.sources[2].url: a",
            "jobs.app.destinations: second",
            "jobs: e",
            "jobs.app.destinations: first",
            "jobs.app.sources: f",
        ]
        .map(String::from)
        .to_vec();
        // Same key: the order found (validation's) is kept.
        p.swap(5, 7);
        sort_problems(&mut p);
        assert_eq!(
            p,
            [
                "destinations.local.path: d",
                "jobs: e",
                "jobs.app.destinations: first",
                "jobs.app.destinations: second",
                "jobs.app.schedule: c",
                "jobs.app.sources: f",
                "jobs.app.sources[2].url: a",
                "jobs.app.sources[10].url: b",
            ]
        );
        assert_eq!(
            problem_key("jobs.app.sources[1].exclude[0]: invalid glob"),
            ["jobs", "app", "sources", "1", "exclude", "0"]
        );
    }
}
