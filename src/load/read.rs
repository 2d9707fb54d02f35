//! Reading: the config file and the `STOWAGE_…` environment merged by figment, and
//! deserialized into [`raw::RawConfig`] past every bad key.

use std::collections::BTreeSet;
use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml, Yaml};

use super::diagnose::is_config_variable;
use crate::config::{ConfigError, raw};
use crate::section::words::{
    ENV_PREFIX, closest, describe_error, describe_figment_error, expects_table,
};

/// The config file (by its extension) with, when `use_env`, the environment over it.
pub(super) fn figment(path: &Path, use_env: bool) -> Result<Figment, ConfigError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let mut figment = match ext.as_deref() {
        Some("toml") => Figment::from(Toml::file_exact(path)),
        Some("yaml") | Some("yml") => Figment::from(Yaml::file_exact(path)),
        _ => {
            return Err(ConfigError::Extension {
                path: path.to_path_buf(),
            });
        }
    };
    if !path.exists() {
        return Err(ConfigError::NotFound {
            path: path.to_path_buf(),
        });
    }
    if use_env {
        figment = figment.merge(environment());
    }
    Ok(figment)
}

/// The config keys the `STOWAGE_…` environment sets.
fn environment() -> Env {
    Env::prefixed(ENV_PREFIX)
        .filter(|k| is_config_variable(k.as_str()))
        .split("__")
}

/// The config file and the environment each on its own, for telling which one defines a
/// table (`None` when either cannot be read: then the merged config's errors say why).
pub(super) fn origins(path: &Path) -> Option<(figment::value::Value, figment::value::Value)> {
    let file = figment(path, false).ok()?.find_value("").ok()?;
    let env = Figment::from(environment()).find_value("").ok()?;
    Some((file, env))
}

/// A required key's stand-in while the rest of the config is checked; a problem that
/// mentions it is a consequence of the missing key, already reported.
pub(super) const STAND_IN: &str = "\u{2026}missing\u{2026}";

/// How many bad keys one load takes out before it gives up (each is one more pass).
const MAX_PASSES: usize = 1000;

/// A key path as figment gives it: names, and array indices as decimal text.
pub(super) type KeyPath = Vec<String>;

/// What [`read_raw`] found on its way to a `RawConfig`.
pub(super) struct Reading<'f> {
    pub(super) figment: &'f Figment,
    /// The merged config (file and environment), minus the bad keys taken out.
    pub(super) tree: figment::value::Value,
    pub(super) problems: Vec<String>,
    /// Keys reported, or set to a stand-in: a later problem at or under one of them is a
    /// consequence (of a value taken out or made up), not news.
    pub(super) settled: Vec<KeyPath>,
    /// Required keys set to a stand-in.
    pub(super) stand_ins: Vec<KeyPath>,
    /// Absent keys a "did you mean" pointed at: that they are missing (to serde or to
    /// validation) adds nothing.
    pub(super) suggested: BTreeSet<KeyPath>,
}

/// Deserialize the merged config, going on past every bad key: serde stops at the first
/// error, so each error's key is reported and taken out of the value tree (or, for a
/// table of the wrong type, replaced by an empty one) and the rest parsed again. A
/// required key that is missing then is reported once (unless a "did you mean" already
/// named it) and set to a stand-in, so that the rest of its section is still validated;
/// the problems validation finds about stand-ins are dropped by
/// [`Reading::is_consequence`]. `Err` when parsing cannot go on (a syntax error, a bad
/// top level); validation then does not run.
pub(super) fn read_raw(figment: &Figment) -> Result<(raw::RawConfig, Reading<'_>), Vec<String>> {
    let tree = figment.find_value("").map_err(|e| {
        e.into_iter()
            .map(|e| describe_figment_error(&e))
            .collect::<Vec<_>>()
    })?;
    let mut reading = Reading {
        figment,
        tree,
        problems: Vec::new(),
        settled: Vec::new(),
        stand_ins: Vec::new(),
        suggested: BTreeSet::new(),
    };
    for _ in 0..MAX_PASSES {
        let errors = match reading.tree.deserialize::<raw::RawConfig>() {
            Ok(mut raw) => {
                reading.hand_over_destinations(&mut raw);
                return Ok((raw, reading));
            }
            Err(errors) => errors,
        };
        let mut progressed = false;
        for e in errors {
            progressed |= reading.take_out(&e);
        }
        if !progressed {
            break;
        }
    }
    Err(reading.problems)
}

impl Reading<'_> {
    /// Each destination's keys but `type` and `retention`, from the value tree, for the
    /// destination type to read into its own serde type.
    fn hand_over_destinations(&self, raw: &mut raw::RawConfig) {
        use figment::value::Value;
        for (name, d) in &mut raw.destinations {
            let key = ["destinations".to_string(), name.clone()];
            if let Some(Value::Dict(_, dict)) = find(&self.tree, &key) {
                d.rest = dict
                    .iter()
                    .filter(|(k, _)| k.as_str() != "type" && k.as_str() != "retention")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
            }
        }
    }

    /// Report `e` (unless it is a consequence of an earlier problem) and change the tree
    /// so that the next pass gets past it. `false`: no way past it.
    fn take_out(&mut self, e: &figment::Error) -> bool {
        use figment::error::Kind;
        use figment::value::{Dict, Value};
        let path: KeyPath = e.path.clone();
        if self.stand_ins.contains(&path) {
            // The stand-in's type was wrong: an enum needs one of its values, another
            // type a value of its own. Nothing to report (the key is).
            let value = match &e.kind {
                Kind::UnknownVariant(_, expected) => expected.first().map(|v| Value::from(*v)),
                Kind::InvalidType(_, expected) => stand_in_for(expected),
                _ => None,
            };
            return match value {
                Some(v) if !self.is_stand_in_value(&path, &v) => self.set(&path, v),
                _ => self.give_up(e),
            };
        }
        match &e.kind {
            Kind::MissingField(field) => {
                let mut key = path.clone();
                key.push(field.to_string());
                if !self.is_settled(&key) && !self.suggested.contains(&key) {
                    self.report(e, None);
                }
                self.settled.push(key.clone());
                self.stand_ins.push(key.clone());
                self.set(&key, Value::from(STAND_IN))
            }
            _ if path.is_empty() => self.give_up(e),
            Kind::UnknownField(field, expected) => {
                let mut key = path.clone();
                if key.last() != Some(field) {
                    key.push(field.clone());
                }
                self.report(e, Some(&key));
                if let Some(s) = closest(field, expected) {
                    let mut meant = key[..key.len() - 1].to_vec();
                    meant.push(s.to_string());
                    if find(&self.tree, &meant).is_none() {
                        self.suggested.insert(meant);
                    }
                }
                self.remove(&key)
            }
            Kind::InvalidType(_, expected) if expects_table(expected) => {
                // Keep the table (a destination that is not a table still exists, for
                // the jobs that name it); its keys are consequences.
                self.report(e, Some(&path));
                self.set(&path, Value::from(Dict::new()))
            }
            Kind::InvalidType(_, expected) if is_index(&path) => {
                // Taking an element out would shift the indices of later ones.
                self.report(e, Some(&path));
                match stand_in_for(expected) {
                    Some(v) => {
                        self.stand_ins.push(path.clone());
                        self.set(&path, v)
                    }
                    // No stand-in of this type (none in the config today): take it out.
                    None => self.remove(&path),
                }
            }
            _ => {
                self.report(e, Some(&path));
                self.remove(&path)
            }
        }
    }

    /// Report what could not be got past, once; parsing stops.
    fn give_up(&mut self, e: &figment::Error) -> bool {
        if self.problems.is_empty() || !self.is_settled(&e.path) {
            self.report(e, Some(&e.path));
        }
        false
    }

    /// One line for `e`, naming the environment variable when the value came from one.
    fn report(&mut self, e: &figment::Error, at: Option<&KeyPath>) {
        let origin = at.map(|key| self.env_origin(key)).unwrap_or_default();
        let line = describe_error(e, &origin);
        if !self.problems.contains(&line) {
            self.problems.push(line);
        }
        let mut key = e.path.clone();
        if let figment::error::Kind::MissingField(field) = &e.kind {
            key.push(field.to_string());
        }
        self.settled.push(at.cloned().unwrap_or(key));
    }

    pub(super) fn is_settled(&self, key: &[String]) -> bool {
        self.settled.iter().any(|s| key.starts_with(s))
    }

    fn is_stand_in_value(&self, key: &[String], value: &figment::value::Value) -> bool {
        find(&self.tree, key).is_some_and(|v| v == value)
    }

    fn set(&mut self, key: &[String], value: figment::value::Value) -> bool {
        use figment::value::Value;
        let Some((last, parent)) = key.split_last() else {
            return false;
        };
        match find_mut(&mut self.tree, parent) {
            Some(Value::Dict(_, d)) => {
                d.insert(last.clone(), value);
                true
            }
            Some(Value::Array(_, a)) => match last.parse::<usize>().ok().and_then(|i| a.get_mut(i))
            {
                Some(slot) => {
                    *slot = value;
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    fn remove(&mut self, key: &[String]) -> bool {
        use figment::value::Value;
        let Some((last, parent)) = key.split_last() else {
            return false;
        };
        match find_mut(&mut self.tree, parent) {
            Some(Value::Dict(_, d)) => d.remove(last).is_some(),
            Some(Value::Array(_, a)) => match last.parse::<usize>() {
                Ok(i) if i < a.len() => {
                    a.remove(i);
                    true
                }
                _ => false,
            },
            _ => false,
        }
    }
}

pub(super) fn find<'v>(
    mut value: &'v figment::value::Value,
    key: &[String],
) -> Option<&'v figment::value::Value> {
    use figment::value::Value;
    for seg in key {
        value = match value {
            Value::Dict(_, d) => d.get(seg)?,
            Value::Array(_, a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn find_mut<'v>(
    mut value: &'v mut figment::value::Value,
    key: &[String],
) -> Option<&'v mut figment::value::Value> {
    use figment::value::Value;
    for seg in key {
        value = match value {
            Value::Dict(_, d) => d.get_mut(seg)?,
            Value::Array(_, a) => a.get_mut(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

fn is_index(key: &[String]) -> bool {
    key.last().is_some_and(|k| k.parse::<usize>().is_ok())
}

/// A stand-in of the type serde expected, for the types it can be made up for.
fn stand_in_for(expected: &str) -> Option<figment::value::Value> {
    use figment::value::{Dict, Value};
    match expected {
        "a string" | "path string" => Some(Value::from(STAND_IN)),
        "a sequence" => Some(Value::from(Vec::<Value>::new())),
        e if expects_table(e) => Some(Value::from(Dict::new())),
        _ => None,
    }
}
