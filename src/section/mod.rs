//! What an engine or a destination type sees of its own section of the config, and what it
//! needs to read one: the job's process priority, secret files, and serde errors in the
//! config file's words (`words`). Below the engine and storage interfaces, so an engine or a
//! storage names config only through this.

pub mod words;

use std::fmt;
use std::path::Path;

use crate::secret::Secret;
use crate::units::io_reason;
use words::{closest, describe_figment_error, suggest};

/// A section of the config as the engine or destination type its `type` names sees it:
/// every key but `type` and `name` (a destination's: but `type` and `retention`), the
/// job-level settings that apply to it, and where to report problems (with the full key
/// path, so messages read like every other config error).
pub struct Section<'a> {
    pub(crate) key: String,
    /// The source's or destination's name (already checked by config).
    pub name: String,
    pub(crate) values: figment::value::Dict,
    /// The job's nice/ionice, for the engine's child processes.
    pub priority: Priority,
    pub(crate) job_exclude_tables: &'a [String],
    pub(crate) used_job_excludes: bool,
    pub(crate) problems: &'a mut Vec<String>,
    /// The other types that take a key (for "only valid for type = …"): the config reader
    /// knows the registries, this module does not.
    pub(crate) owners: &'a dyn Fn(&str) -> Vec<&'static str>,
    /// The keys an "unknown key" message lists and suggests from, when not the serde type's
    /// own (a destination's: every type's, as one table of the config file).
    pub(crate) valid_keys: Option<&'a [&'static str]>,
    /// Go on past a key of the wrong type (reported, taken out, the rest read again), as the
    /// config reader does with the tables it reads itself; otherwise parsing stops there.
    pub(crate) go_on: bool,
    /// With `go_on`: keys reported while parsing, and absent keys a "did you mean" named.
    /// What is said about them later adds nothing ([`Section::drop_consequences`]).
    settled: Vec<String>,
    /// How many problems there were when parsing ended.
    parsed_at: Option<usize>,
}

impl<'a> Section<'a> {
    /// A section at `key` (e.g. "jobs.app.sources[0]") with `values`, reporting into
    /// `problems`; job-level settings are the defaults until set.
    pub(crate) fn new(
        key: String,
        name: String,
        values: figment::value::Dict,
        problems: &'a mut Vec<String>,
        owners: &'a dyn Fn(&str) -> Vec<&'static str>,
    ) -> Section<'a> {
        Section {
            key,
            name,
            values,
            priority: Priority::default(),
            job_exclude_tables: &[],
            used_job_excludes: false,
            problems,
            owners,
            valid_keys: None,
            go_on: false,
            settled: Vec::new(),
            parsed_at: None,
        }
    }
}

impl Section<'_> {
    /// The section's own key path, e.g. "destinations.offsite".
    pub fn path(&self) -> &str {
        &self.key
    }

    /// Full key path of one of the section's keys, e.g. "jobs.app.sources[0].url".
    pub fn key(&self, field: &str) -> String {
        format!("{}.{field}", self.key)
    }

    /// Report a problem with one key: "jobs.app.sources[0].url: <message>".
    pub fn problem(&mut self, field: &str, message: impl fmt::Display) {
        let key = self.key(field);
        self.problems.push(format!("{key}: {message}"));
    }

    /// Whether a problem was reported for this section since `mark` ([`Section::mark`]).
    pub fn mark(&self) -> usize {
        self.problems.len()
    }
    pub fn failed_since(&self, mark: usize) -> bool {
        self.problems.len() > mark
    }

    /// Deserialize the section into the engine's own config type. Use
    /// `#[serde(deny_unknown_fields)]` on it: a key of another engine is then reported as
    /// "unknown key …; valid keys here: …", with a suggestion for a typo.
    pub fn parse<T: serde::de::DeserializeOwned>(&mut self) -> Option<T> {
        let mut values = self.values.clone();
        let mut unknown = Vec::new();
        // serde stops at the first unknown key: take each one out and try again, so every
        // stray key gets its own line.
        loop {
            let value = figment::value::Value::from(values.clone());
            match value.deserialize::<T>() {
                // With stray keys reported, the rest is still validated: every problem of
                // the section is listed at once (the config is invalid either way).
                Ok(t) => {
                    self.problems.extend(unknown);
                    self.parsed_at = Some(self.problems.len());
                    return Some(t);
                }
                Err(errors) => {
                    let mut progressed = false;
                    for e in errors {
                        if let figment::error::Kind::UnknownField(field, expected) = &e.kind
                            && values.remove(field).is_some()
                        {
                            unknown.push(self.unknown_key(field, expected, &values));
                            progressed = true;
                        } else if self.go_on && self.take_out(&mut values, &e) {
                            progressed = true;
                        } else {
                            let msg = describe_figment_error(&e);
                            self.problems.push(format!("{}.{msg}", self.key));
                        }
                    }
                    if !progressed {
                        break;
                    }
                }
            }
        }
        self.problems.extend(unknown);
        self.parsed_at = Some(self.problems.len());
        None
    }

    /// With `go_on`: report a bad key below the section's top level, or a key of the wrong
    /// type, and take it out. `false` when there is nothing to take out.
    fn take_out(&mut self, values: &mut figment::value::Dict, e: &figment::Error) -> bool {
        use figment::error::Kind;
        let mut path = e.path.clone();
        match &e.kind {
            Kind::MissingField(_) => return false,
            Kind::UnknownField(field, expected) => {
                if path.last() != Some(field) {
                    path.push(field.clone());
                }
                if let Some(meant) = closest(field, expected) {
                    let mut meant_path = path[..path.len() - 1].to_vec();
                    meant_path.push(meant.to_string());
                    if find(values, &meant_path).is_none() {
                        self.settled.push(self.key(&meant_path.join(".")));
                    }
                }
            }
            _ => {}
        }
        if !remove(values, &path) {
            return false;
        }
        let msg = describe_figment_error(e);
        self.problems.push(format!("{}.{msg}", self.key));
        self.settled.push(self.key(&path.join(".")));
        true
    }

    /// Drop the problems reported since parsing about a key parsing reported, or that a
    /// "did you mean" named (its absence is no news), as the config reader does.
    pub(crate) fn drop_consequences(&mut self) {
        let Some(from) = self.parsed_at else {
            return;
        };
        let settled = std::mem::take(&mut self.settled);
        let mut index = 0;
        self.problems.retain(|line| {
            let keep = index < from || !settled.iter().any(|key| is_at_or_under(line, key));
            index += 1;
            keep
        });
    }

    /// "unknown key", or "only valid for type = …" when another type takes it.
    fn unknown_key(
        &mut self,
        field: &str,
        expected: &[&str],
        values: &figment::value::Dict,
    ) -> String {
        let key = self.key(field);
        let owners = (self.owners)(field);
        let valid: &[&str] = self.valid_keys.unwrap_or(expected);
        if owners.is_empty() {
            if self.go_on
                && let Some(meant) = closest(field, valid)
                && !values.contains_key(meant)
            {
                self.settled.push(self.key(meant));
            }
            format!(
                "{key}: unknown key \"{field}\"{}; valid keys here: {}",
                suggest(field, valid),
                valid.join(", ")
            )
        } else {
            format!(
                "{key}: only valid for type = {}; remove it or change the type",
                owners
                    .iter()
                    .map(|o| format!("\"{o}\""))
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        }
    }

    /// Read a secret file named by key `field`; `None` (and a problem) when unreadable.
    pub fn secret(&mut self, field: &str, path: &Path) -> Option<Secret> {
        let key = self.key(field);
        read_secret(path, &key, self.problems)
    }

    /// The job-level `exclude_tables`, for engines whose objects are tables. Asking for
    /// them marks them as used (the job-level key is an error when no source uses it).
    pub fn job_exclude_tables(&mut self) -> Vec<String> {
        self.used_job_excludes = true;
        self.job_exclude_tables.to_vec()
    }

    /// Report problems of the job-level `exclude_tables` entries (validated by the engine
    /// that uses them), named by the job-level key.
    pub fn job_exclude_problem(&mut self, index: usize, message: impl fmt::Display) {
        let job_key = self
            .key
            .rsplit_once(".sources[")
            .map_or(self.key.as_str(), |(j, _)| j);
        let line = format!("{job_key}.exclude_tables[{index}]: {message}");
        if !self.problems.contains(&line) {
            self.problems.push(line);
        }
    }
}

/// Scheduling priority for child processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Priority {
    /// 0 (normal) ..= 19 (lowest).
    pub nice: Option<i32>,
    pub io: Option<IoPriority>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPriority {
    /// Only when no one else uses the disk.
    Idle,
    /// 0 (highest) ..= 7 (lowest) within the normal class.
    BestEffort(u8),
}

impl IoPriority {
    pub fn parse(text: &str) -> Result<IoPriority, String> {
        let t = text.trim().to_ascii_lowercase();
        match t.split_once(':') {
            None if t == "idle" => Ok(IoPriority::Idle),
            None if t == "best-effort" => Ok(IoPriority::BestEffort(7)),
            Some(("best-effort", level)) => match level.parse::<u8>() {
                Ok(l) if l <= 7 => Ok(IoPriority::BestEffort(l)),
                _ => Err(format!(
                    "invalid ionice \"{text}\": the best-effort level is 0 (highest) to 7 (lowest)"
                )),
            },
            _ => Err(format!(
                "invalid ionice \"{text}\"; use \"idle\", \"best-effort\" or \"best-effort:0\"..\"best-effort:7\""
            )),
        }
    }
}

/// Whether problem `line` names `key` or a key under it.
fn is_at_or_under(line: &str, key: &str) -> bool {
    line.strip_prefix(key)
        .is_some_and(|rest| rest.starts_with([':', '.', '[']))
}

fn find<'v>(
    values: &'v figment::value::Dict,
    path: &[String],
) -> Option<&'v figment::value::Value> {
    let (first, rest) = path.split_first()?;
    let mut value = values.get(first)?;
    for seg in rest {
        value = match value {
            figment::value::Value::Dict(_, d) => d.get(seg)?,
            _ => return None,
        };
    }
    Some(value)
}

fn remove(values: &mut figment::value::Dict, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut dict = values;
    for seg in parents {
        dict = match dict.get_mut(seg) {
            Some(figment::value::Value::Dict(_, d)) => d,
            _ => return false,
        };
    }
    dict.remove(last).is_some()
}

/// The content of a secret file named by `key`, its trailing newline dropped; `None` (and
/// a problem naming the key) when it is empty or unreadable.
pub fn read_secret(path: &Path, key: &str, problems: &mut Vec<String>) -> Option<Secret> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim_end_matches(['\n', '\r']).to_string();
            if s.is_empty() {
                problems.push(format!("{key}: file {path:?} is empty"));
                None
            } else {
                Some(Secret::new(s))
            }
        }
        Err(e) => {
            problems.push(format!(
                "{key}: cannot read {path:?}: {}; mount the secret there or remove the key",
                io_reason(&e)
            ));
            None
        }
    }
}

/// The keys a serde struct accepts (its fields, as `deserialize_struct` is told them), so
/// that an engine's key list is its config type and never a second list to keep in step.
pub fn serde_fields<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    struct Capture(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl fmt::Display for Stop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> serde::Deserializer<'de> for &mut Capture {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut c = Capture(None);
    let _ = T::deserialize(&mut c);
    c.0.unwrap_or(&[])
}
