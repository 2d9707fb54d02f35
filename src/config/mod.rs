//! Configuration: the types the scheduler, the pipeline and the commands use, as
//! `crate::load` builds them from the config file (reading and validation live there, above
//! the engine and storage registries; these types stay below them). A job's databases are
//! `Arc<dyn Database>` (`crate::engine`), built by their engines; `raw` is the file as serde
//! sees it.

pub mod raw;
mod read_data;

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use crate::codec::Compression;
pub use crate::section::{IoPriority, Priority};
pub use raw::{ContainerMode, HookFailure, LogFormat, Rotation};
pub use read_data::ReadData;

use std::sync::Arc;

use crate::backend::Place;
use crate::backend::class::StorageClass;
pub use crate::backend::{LockMode, ObjectLock};
use crate::engine::Database;
use crate::retention::RetentionPolicy;
use crate::schedule::Schedule;
use crate::secret::Secret;

pub const DEFAULT_RETRIES: u32 = 2;
pub const DEFAULT_RETRY_DELAY: std::time::Duration = std::time::Duration::from_secs(60);
/// Docker's own default stop timeout is 10 s; compose.yaml raises it above this.
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "config file {path:?} not found: create it (see the examples in config/) or point --config / STOWAGE_CONFIG at it"
    )]
    NotFound { path: PathBuf },
    #[error("config file {path:?} has an unsupported extension: use .toml, .yaml or .yml")]
    Extension { path: PathBuf },
    #[error("invalid config {path:?}:\n{}", bullet(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

fn bullet(problems: &[String]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    /// After SIGTERM, running backups get this long to finish before they are abandoned.
    pub shutdown_grace: std::time::Duration,
    /// Address of the HTTP listener (/healthz, /metrics, /), if any.
    pub listen: Option<std::net::SocketAddr>,
    /// `[server] token_file`: the bearer token `/` and `/metrics` require.
    pub server_token: Option<Secret>,
    pub log: LogConfig,
    pub destinations: BTreeMap<String, Destination>,
    pub jobs: BTreeMap<String, Job>,
    /// Valid but probably unintended settings, logged at start and shown by check-config.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
    pub dir: Option<PathBuf>,
    pub rotation: Rotation,
    pub keep_files: usize,
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    /// Its type's settings, validated by that type (`src/storage/<kind>/`).
    pub settings: Arc<dyn Place>,
    pub retention: RetentionPolicy,
}

impl Destination {
    /// The storage class of its data objects, where its type sets one.
    pub fn storage_class(&self) -> Option<StorageClass> {
        self.settings.storage_class()
    }

    /// The Object Lock every backup object written here carries, if any.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        self.settings.object_lock()
    }

    /// How young a backup retention must keep whatever its rules say: the class's minimum
    /// storage duration, unless `early_delete = true`.
    pub fn min_storage(&self) -> Option<(StorageClass, u32)> {
        self.settings.min_storage()
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub schedule: Schedule,
    pub compression: Compression,
    pub compression_level: Option<i32>,
    pub catch_up: bool,
    pub max_staleness: Option<std::time::Duration>,
    pub notify: Vec<Notify>,
    /// Further attempts of a failed scheduled run, `retry_delay` apart.
    pub retries: u32,
    pub retry_delay: std::time::Duration,
    pub destinations: Vec<String>,
    pub sources: Vec<SourceConfig>,
    pub heal: Option<Heal>,
    /// When the daemon verifies the newest backup on every destination.
    pub verify: Option<Schedule>,
    /// What share of blob contents a scheduled verify reads back (`[jobs.NAME.verify]
    /// read_data`); `None` (presence only) by default.
    pub verify_read_data: ReadData,
    pub encryption: Option<crate::crypt::Encryption>,
    pub drill: Option<Drill>,
    /// `auth_key_file`: manifests are written with a MAC under it and refused without one.
    pub auth_key: Option<Arc<crate::crypt::AuthKey>>,
    /// `before`/`after` of the job: commands run around the whole run.
    pub hooks: Hooks,
    /// Source name → the `before`/`after` around that source's dump (sources with hooks only).
    pub source_hooks: BTreeMap<String, Hooks>,
    /// `[jobs.NAME.containers]`: containers stopped or paused around the files sources.
    pub containers: Option<Containers>,
}

/// How long a labelled container gets to stop when `timeout` is not set.
pub const DEFAULT_CONTAINER_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `[jobs.NAME.containers]`, validated: see `crate::containers`.
#[derive(Debug, Clone, PartialEq)]
pub struct Containers {
    /// `jobs.NAME.containers`, which messages name.
    pub key: String,
    /// The value of the `stowage.stop-during` label that picks the containers.
    pub group: String,
    pub mode: ContainerMode,
    /// `socket` as configured (a path; `unix://` removed); `None`: `DOCKER_HOST` or the default.
    pub socket: Option<PathBuf>,
    /// `docker stop`'s timeout: after it, Docker kills the container.
    pub stop_timeout: std::time::Duration,
}

/// How long a hook may run when its `timeout` is not set.
pub const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The `before` and `after` hooks of a job or a source.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hooks {
    pub before: Option<Hook>,
    pub after: Option<Hook>,
}

/// One hook, validated: see `crate::hook`.
#[derive(Debug, Clone, PartialEq)]
pub struct Hook {
    /// Its key in the config (`jobs.app.before`, `jobs.app.sources[0].after`), which
    /// messages name.
    pub key: String,
    pub command: HookCommand,
    pub timeout: std::time::Duration,
    /// `before` hooks only; an `after` hook never changes the run's outcome.
    pub on_failure: HookFailure,
}

#[derive(Debug, Clone, PartialEq)]
pub enum HookCommand {
    /// Run directly: no shell sees the arguments.
    Argv(Vec<String>),
    /// `sh -c TEXT`, asked for with `shell = "…"`.
    Shell(String),
}

impl HookCommand {
    /// The program and its arguments as executed.
    pub fn argv(&self) -> Vec<&str> {
        match self {
            HookCommand::Argv(a) => a.iter().map(String::as_str).collect(),
            HookCommand::Shell(line) => vec!["sh", "-c", line.as_str()],
        }
    }

    /// For messages: the arguments, each quoted where a space or quote would blur it.
    pub fn describe(&self) -> String {
        self.argv()
            .iter()
            .map(|a| {
                if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                {
                    format!("{a:?}")
                } else {
                    a.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// `[jobs.NAME.drill]`, validated: see [`crate::drill`].
#[derive(Debug, Clone)]
pub struct Drill {
    pub schedule: Schedule,
    /// A database source of the job whose engine can drill.
    pub source: String,
    /// The scratch database, as `restore --to` takes it.
    pub to: String,
    pub checks: Vec<String>,
}

/// `[jobs.NAME.heal]`, validated: see [`crate::heal`].
#[derive(Debug, Clone)]
pub struct Heal {
    pub schedule: Schedule,
    /// A database source of the job whose engine selects objects.
    pub source: String,
    /// Objects that must exist; `["*"]` = every one in the newest backup.
    pub watch: Vec<String>,
    pub backups: usize,
    pub dry_run: bool,
}

/// The healer's schedule when `[jobs.NAME.heal]` gives none: every 5 minutes.
pub const DEFAULT_HEAL_SCHEDULE: &str = "*/5 * * * *";

impl Heal {
    /// Whether the watch list is "every object of the newest backup".
    pub fn watches_all(&self) -> bool {
        self.watch.iter().any(|w| w == "*")
    }
}

impl Job {
    /// The names of the sources archived continuously (PostgreSQL in physical mode).
    pub fn wal_sources(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|s| s.database().is_some_and(|d| d.wal_source().is_some()))
            .map(|s| s.name())
            .collect()
    }

    /// The database source the healer watches.
    pub fn heal_source(&self) -> Option<&Arc<dyn Database>> {
        let heal = self.heal.as_ref()?;
        self.sources
            .iter()
            .filter_map(SourceConfig::database)
            .find(|d| d.name() == heal.source)
    }

    /// The drilled source.
    pub fn drill_source(&self) -> Option<&Arc<dyn Database>> {
        let drill = self.drill.as_ref()?;
        self.sources
            .iter()
            .filter_map(SourceConfig::database)
            .find(|d| d.name() == drill.source)
    }

    /// Whether the job stores files as shared blobs (and so needs blob locks and sweeps).
    pub fn has_files(&self) -> bool {
        self.sources
            .iter()
            .any(|s| matches!(s, SourceConfig::Files(_)))
    }

    /// How old the newest backup may get before `health` fails: the configured value, or
    /// twice the longest gap between the job's runs.
    pub fn staleness_limit(&self, now: chrono::DateTime<chrono::Utc>) -> Option<chrono::Duration> {
        match self.max_staleness {
            Some(d) => chrono::Duration::from_std(d).ok(),
            None => self.schedule.longest_gap(now).map(|g| g * 2),
        }
    }
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// A database, configured and validated by its engine (`src/source/<engine>/`).
    Database(Arc<dyn Database>),
    Files(FilesConfig),
}

impl SourceConfig {
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::Database(d) => d.name(),
            SourceConfig::Files(f) => &f.name,
        }
    }
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Database(d) => d.kind(),
            SourceConfig::Files(_) => "files",
        }
    }
    pub fn database(&self) -> Option<&Arc<dyn Database>> {
        match self {
            SourceConfig::Database(d) => Some(d),
            SourceConfig::Files(_) => None,
        }
    }
}

/// One place a job reports its runs to.
#[derive(Debug, Clone)]
pub struct Notify {
    pub kind: raw::NotifyType,
    /// Webhooks, healthchecks and ntfy (empty for email). May hold a token: shown only
    /// through [`Notify::redacted`].
    pub url: Secret,
    pub format: raw::WebhookFormat,
    /// Webhooks, email, ntfy: also report successful runs (failures always are).
    pub on_success: bool,
    /// `type = "email"`: the server and the addresses.
    pub email: Option<Email>,
    /// `type = "ntfy"`: `token_file`'s token.
    pub token: Option<Secret>,
    /// `type = "ntfy"`: the priority of failure messages, 1 (min) to 5 (urgent).
    pub priority: u8,
    /// Email and ntfy: a daily summary at this wall-clock time in the job's timezone.
    pub digest: Option<DailyAt>,
}

/// A time of day, "HH:MM".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DailyAt {
    pub hour: u8,
    pub minute: u8,
}

/// An email notifier's SMTP server and addresses.
#[derive(Debug, Clone)]
pub struct Email {
    pub to: Vec<lettre::message::Mailbox>,
    pub from: lettre::message::Mailbox,
    pub host: String,
    pub port: u16,
    pub tls: raw::SmtpTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Notify {
    /// Where it goes, without secrets, for logs: scheme://host[:port]/… for URLs, the server
    /// and the recipients for email.
    pub fn redacted(&self) -> String {
        if let Some(e) = &self.email {
            let to: Vec<String> = e.to.iter().map(|m| m.email.to_string()).collect();
            return format!("smtp://{}:{} to {}", e.host, e.port, to.join(", "));
        }
        match url::Url::parse(self.url.expose()) {
            Ok(u) => format!(
                "{}://{}{}/…",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => "…".to_string(),
        }
    }
}

/// A directory tree backed up file by file into content-addressed blobs.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    pub name: String,
    pub path: PathBuf,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub immutable: bool,
}

/// Where the config is read from when `--config` is not given.
pub fn default_path() -> PathBuf {
    std::env::var_os("STOWAGE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/config/stowage.toml"))
}
