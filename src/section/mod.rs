//! What an engine sees of its own section of the config, and what it needs to read one: the
//! job's process priority, secret files, and serde errors in the config file's words
//! (`words`). Below the engine interface, so an engine names config only through this.

pub mod words;

use std::fmt;
use std::path::Path;

use crate::secret::Secret;
use crate::units::io_reason;
use words::{describe_figment_error, suggest};

/// A source's section of the config as its engine sees it: every key but `type` and
/// `name`, the job-level settings that apply to it, and where to report problems (with
/// the full key path, so messages read like every other config error).
pub struct Section<'a> {
    pub(crate) key: String,
    /// The source's name (already checked by config).
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
}

impl Section<'_> {
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
                    return Some(t);
                }
                Err(errors) => {
                    let mut progressed = false;
                    for e in errors {
                        if let figment::error::Kind::UnknownField(field, expected) = &e.kind
                            && values.remove(field).is_some()
                        {
                            unknown.push(self.unknown_key(field, expected));
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
        None
    }

    /// "unknown key", or "only valid for type = …" when another source type takes it.
    fn unknown_key(&self, field: &str, expected: &[&str]) -> String {
        let key = self.key(field);
        let owners = (self.owners)(field);
        if owners.is_empty() {
            format!(
                "{key}: unknown key \"{field}\"{}; valid keys here: {}",
                suggest(field, expected),
                expected.join(", ")
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
