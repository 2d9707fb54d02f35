//! The config file as serde sees it. Every struct denies unknown keys so a typo is an
//! error naming the key, never a silently ignored setting. Nothing here is validated
//! beyond its type: `super::validate` turns these into the types the rest of stowage uses.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::codec::Compression;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How long a running backup may take to finish after SIGTERM ("30s", "2m").
    pub shutdown_grace: Option<String>,
    #[serde(default)]
    pub log: RawLog,
    pub server: Option<RawServer>,
    #[serde(default)]
    pub destinations: BTreeMap<String, RawDestination>,
    #[serde(default)]
    pub jobs: BTreeMap<String, RawJob>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum NotifyType {
    /// POST a JSON body (or a Slack-compatible one) to a URL.
    Webhook,
    /// healthchecks.io-style pings: URL/start, URL (success), URL/fail.
    Healthchecks,
    /// A mail through an SMTP server.
    Email,
    /// A POST to an ntfy topic URL (push to phones).
    Ntfy,
}

impl NotifyType {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyType::Webhook => "webhook",
            NotifyType::Healthchecks => "healthchecks",
            NotifyType::Email => "email",
            NotifyType::Ntfy => "ntfy",
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    #[default]
    Json,
    /// `{"text": "..."}`, which Slack, Mattermost, Rocket.Chat and Discord's /slack accept.
    Slack,
}

/// How an email notifier talks to its SMTP server.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS", port 465).
    Tls,
    /// No encryption at all: for a relay on the same host or network.
    None,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        }
    }
}

/// `to = "a@example.com"` or `to = ["a@example.com", "b@example.com"]`.
#[derive(Debug)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

// By hand rather than `#[serde(untagged)]`, whose error says only that no variant matched.
impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an email address, or a list of them")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<OneOrMany, A::Error> {
                Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(OneOrMany::Many)
            }
        }
        d.deserialize_any(Either)
    }
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// ntfy's priority: 1..5, or its name.
#[derive(Debug, Clone)]
pub enum RawPriority {
    Number(i64),
    Name(String),
}

impl<'de> Deserialize<'de> for RawPriority {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawPriority, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawPriority;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a priority 1-5, or \"min\", \"low\", \"default\", \"high\", \"urgent\"",
                )
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawPriority, E> {
                Ok(RawPriority::Number(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawPriority, E> {
                Ok(RawPriority::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawPriority, E> {
                Ok(RawPriority::Name(v.to_string()))
            }
        }
        d.deserialize_any(Either)
    }
}

/// One `[[jobs.NAME.notify]]`: the keys of every type, checked against `type` when validated
/// (a key of another type is an error saying which type it belongs to).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    #[serde(rename = "type")]
    pub kind: NotifyType,
    /// The URL, or a file holding it (webhook URLs are secrets).
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub format: Option<WebhookFormat>,
    pub on_success: Option<bool>,
    /// Email: recipients, sender, server, encryption, login.
    pub to: Option<OneOrMany>,
    pub from: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i64>,
    pub tls: Option<SmtpTls>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// ntfy: an access token (a file), the priority of failure messages.
    pub token_file: Option<PathBuf>,
    pub priority: Option<RawPriority>,
    /// Email and ntfy: "HH:MM", a daily summary at that time in the job's timezone.
    pub digest: Option<String>,
}

/// The optional HTTP listener: /healthz, /metrics, and a status page.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: String,
    /// A file holding the bearer token `/` and `/metrics` require (`/healthz` stays open).
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default = "default_level")]
    pub level: String,
    #[serde(default)]
    pub format: LogFormat,
    pub dir: Option<PathBuf>,
    #[serde(default)]
    pub rotation: Rotation,
    #[serde(default = "default_keep_files")]
    pub keep_files: usize,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: default_level(),
            format: LogFormat::default(),
            dir: None,
            rotation: Rotation::default(),
            keep_files: default_keep_files(),
        }
    }
}

fn default_level() -> String {
    "info".to_string()
}

fn default_keep_files() -> usize {
    14
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    #[default]
    Daily,
    Hourly,
    Never,
}

/// `[destinations.NAME]`: `type` picks who validates the rest, the destination type
/// registered under that name (`src/storage/<kind>/`), which reads the remaining keys into
/// its own serde type (unknown keys are errors there, with their full path). `retention` is
/// config's own. Other keys pass serde here and are handed over as `rest`, taken from the
/// config's value tree by the reader (not through `#[serde(flatten)]`, which would lose the
/// key paths of errors under `retention`).
#[derive(Debug, Deserialize)]
pub struct RawDestination {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub retention: RawRetention,
    #[serde(skip)]
    pub rest: figment::value::Dict,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub schedule: String,
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub compression: Compression,
    pub compression_level: Option<i32>,
    /// On start, run at once when the newest backup is older than one schedule period.
    #[serde(default = "default_true")]
    pub catch_up: bool,
    /// `health` fails when the newest backup is older than this (default: 2× the longest
    /// gap between runs).
    pub max_staleness: Option<String>,
    /// Scheduled runs that fail are tried again this many times, `retry_delay` apart.
    pub retries: Option<u32>,
    pub retry_delay: Option<String>,
    /// CPU and I/O priority of the job's dump processes, so a backup does not
    /// starve the application on a small box: nice 0..19, ionice "idle" or
    /// "best-effort[:0-7]".
    pub nice: Option<i32>,
    pub ionice: Option<String>,
    /// Where to say how runs went: failures always, successes if asked.
    #[serde(default)]
    pub notify: Vec<RawNotify>,
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Tables of every database source that are dumped but skipped by default on restore
    /// (the application's own backup bookkeeping, for instance).
    #[serde(default)]
    pub exclude_tables: Vec<String>,
    #[serde(default)]
    pub sources: Vec<RawSource>,
    /// Put missing tables (or collections) back from the newest backups that hold them.
    pub heal: Option<RawHeal>,
    /// Cron schedule of `stowage verify` for the newest backup on every destination, or
    /// `[jobs.NAME.verify]` with that `schedule` and a share of blobs to read back.
    pub verify: Option<RawVerify>,
    /// Encrypt every object holding data with age.
    pub encryption: Option<RawEncryption>,
    /// Restore the newest backup into a scratch database on a schedule, and check it.
    pub drill: Option<RawDrill>,
    /// A secret file (at least 32 bytes) whose key authenticates the job's manifests.
    pub auth_key_file: Option<PathBuf>,
    /// A command run before the job's sources are dumped, and one after the run.
    pub before: Option<RawHook>,
    pub after: Option<RawHook>,
    /// `[jobs.NAME.containers]`: Docker containers stopped or paused while the job's files
    /// sources are read.
    pub containers: Option<RawContainers>,
}

/// `[jobs.NAME.containers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawContainers {
    /// The containers labelled `stowage.stop-during=<this>`.
    pub stop_during_files: String,
    #[serde(default)]
    pub mode: ContainerMode,
    /// The Docker Engine's unix socket (default: `DOCKER_HOST` when it is `unix://…`, else
    /// /var/run/docker.sock).
    pub socket: Option<String>,
    /// How long a container gets to stop before Docker kills it ("1m").
    pub timeout: Option<String>,
}

/// What is done to the labelled containers while the files are read.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ContainerMode {
    /// `docker stop`, then `docker start`: the processes exit and flush what they hold.
    #[default]
    Stop,
    /// `docker pause`, then `docker unpause`: frozen (cgroup freezer), nothing flushed.
    Pause,
}

impl ContainerMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerMode::Stop => "stop",
            ContainerMode::Pause => "pause",
        }
    }
}

/// `encryption = { … }` on a job.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    /// age recipients (`age1…`).
    #[serde(default)]
    pub recipients: Vec<String>,
    /// A file of recipients, one per line.
    pub recipients_file: Option<PathBuf>,
    /// A passphrase instead of recipients (scrypt; about a second per object).
    pub passphrase_file: Option<PathBuf>,
    /// The identity that reads backups back, for heal, verify, drills and restore.
    pub identity_file: Option<PathBuf>,
    /// A secret that keys blob names, so they do not reveal the content's sha256.
    pub blob_key_file: Option<PathBuf>,
}

/// `verify = "CRON"` on a job, or `[jobs.NAME.verify]` (`schedule`, `read_data`): the
/// short form stays valid.
#[derive(Debug)]
pub struct RawVerify {
    pub schedule: String,
    /// Share of the blobs whose content each scheduled verify reads back: "10%", "all".
    pub read_data: Option<String>,
    /// Written as a table (its schedule's key is then `verify.schedule`).
    pub table: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerifyTable {
    schedule: String,
    read_data: Option<String>,
}

impl<'de> Deserialize<'de> for RawVerify {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawVerify, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawVerify;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a cron schedule, or a table with schedule and read_data")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawVerify, E> {
                Ok(RawVerify {
                    schedule: v.to_string(),
                    read_data: None,
                    table: false,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawVerify, A::Error> {
                // Through the derived table, so unknown keys get their "did you mean".
                let t =
                    RawVerifyTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawVerify {
                    schedule: t.schedule,
                    read_data: t.read_data,
                    table: true,
                })
            }
        }
        d.deserialize_any(Either)
    }
}

/// `[jobs.NAME.drill]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    pub schedule: String,
    /// The scratch database, created and dropped by each drill.
    pub to: String,
    /// The database source to drill (default: the job's only one that can be drilled).
    pub source: Option<String>,
    /// SQL that must return true in the restored database.
    #[serde(default)]
    pub checks: Vec<String>,
}

/// `[jobs.NAME.heal]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeal {
    /// How often to look (default every 5 minutes), in the job's timezone.
    pub schedule: Option<String>,
    /// The database source to watch (default: the job's only one with tables).
    pub source: Option<String>,
    /// Tables or collections that must exist; ["*"] = every one in the newest backup.
    #[serde(default)]
    pub watch: Vec<String>,
    /// How many of the newest published backups to search (default 3).
    pub backups: Option<u32>,
    /// Only report what would be restored.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_true() -> bool {
    true
}

fn default_timezone() -> String {
    "UTC".to_string()
}

/// One source of a job. `type` picks who validates the rest: "files" is config's own,
/// any other value names a database engine (`crate::engine`), which reads the remaining
/// keys into its own serde type (unknown keys are errors there, with their full path).
#[derive(Debug, Deserialize)]
pub struct RawSource {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    /// Commands run around this source's dump; named here so that the engine, which
    /// rejects keys it does not know, never sees them.
    pub before: Option<RawHook>,
    pub after: Option<RawHook>,
    #[serde(flatten)]
    pub rest: figment::value::Dict,
}

/// `before`/`after`: an argv (`["redis-cli", "BGSAVE"]`), or a table with `command` or
/// `shell` and the hook's settings.
#[derive(Debug)]
pub enum RawHook {
    Argv(Vec<String>),
    Table(RawHookTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHookTable {
    pub command: Option<Vec<String>>,
    /// A command line for `sh -c`.
    pub shell: Option<String>,
    pub timeout: Option<String>,
    pub on_failure: Option<HookFailure>,
}

/// What a failing `before` hook does to the run.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    /// The run (or the source) fails.
    #[default]
    Fail,
    /// Logged and shown in the summary; the run goes on.
    Continue,
}

impl<'de> Deserialize<'de> for RawHook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RawHook, D::Error> {
        struct Either;
        impl<'de> serde::de::Visitor<'de> for Either {
            type Value = RawHook;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a list of arguments (e.g. [\"redis-cli\", \"BGSAVE\"]) or a table with command or shell",
                )
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawHook, A::Error> {
                let argv =
                    Vec::<String>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(RawHook::Argv(argv))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawHook, A::Error> {
                // Through the derived table, so unknown keys get their "did you mean".
                let t =
                    RawHookTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RawHook::Table(t))
            }
        }
        d.deserialize_any(Either)
    }
}
