//! Configuration: read (figment: file + `STOWAGE_…` environment overrides), then
//! validated purely into the types the scheduler and pipeline use. The only I/O here is
//! reading the config file and checking that the secret files it names are readable.
//! Every problem is reported at once, one line each naming its key.

pub mod raw;
mod read_data;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::zone::Zone;
use chrono::{DateTime, TimeDelta, Utc};
use figment::Figment;
use figment::providers::{Env, Format, Toml, Yaml};

pub use crate::codec::Compression;
pub use raw::{Checksums, LogFormat, Rotation};
pub use read_data::ReadData;

use std::sync::Arc;

use crate::engine::Database;
use crate::retention::RetentionPolicy;
use crate::schedule::{Schedule, parse_timezone};
use crate::secret::Secret;
use crate::storage::class::{Retrieval, RetrievalTier, StorageClass};
use crate::units::io_reason;

/// S3 rejects multipart parts under 5 MiB (except the last one).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const DEFAULT_PART_SIZE: u64 = 8 * 1024 * 1024;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
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
    pub kind: DestinationKind,
    pub retention: RetentionPolicy,
}

impl Destination {
    /// The storage class of its data objects, for S3 destinations that set one.
    pub fn storage_class(&self) -> Option<StorageClass> {
        match &self.kind {
            DestinationKind::S3(s) => s.storage_class,
            DestinationKind::Local(_) => None,
        }
    }

    /// The Object Lock every backup object written here carries, if any.
    pub fn object_lock(&self) -> Option<ObjectLock> {
        match &self.kind {
            DestinationKind::S3(s) => s.object_lock,
            DestinationKind::Local(_) => None,
        }
    }

    /// How young a backup retention must keep whatever its rules say: the class's minimum
    /// storage duration, unless `early_delete = true`.
    pub fn min_storage(&self) -> Option<(StorageClass, u32)> {
        match &self.kind {
            DestinationKind::S3(s) if !s.early_delete => s
                .storage_class
                .filter(|c| c.min_storage_days() > 0)
                .map(|c| (c, c.min_storage_days())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum DestinationKind {
    Local(LocalConfig),
    S3(S3Config),
}

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub path: PathBuf,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    pub bucket: String,
    /// Normalised: no leading or trailing slash, may be empty.
    pub prefix: String,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub force_path_style: bool,
    /// Of data objects (dumps, file blobs); manifests and indexes are always STANDARD.
    pub storage_class: Option<StorageClass>,
    pub retrieval: Retrieval,
    /// Retention may delete a backup younger than the class's minimum storage duration.
    pub early_delete: bool,
    pub credentials: Option<StaticCredentials>,
    pub part_size: u64,
    pub max_in_flight: usize,
    /// Parts a multipart upload may have; past a tenth of them each, parts double.
    pub max_parts: u32,
    pub checksums: Checksums,
    /// S3 Object Lock on every data object and manifest written here.
    pub object_lock: Option<ObjectLock>,
}

/// `object_lock = { mode = "GOVERNANCE" | "COMPLIANCE", days = N }` of an S3 destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLock {
    pub mode: LockMode,
    /// Each object is retained until `days` after it is written (or referenced again).
    pub days: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Users with s3:BypassGovernanceRetention can still delete or shorten the lock.
    Governance,
    /// Nobody, the root account included, can delete a version before its date.
    Compliance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Governance => "GOVERNANCE",
            LockMode::Compliance => "COMPLIANCE",
        }
    }
}

impl ObjectLock {
    /// The retain-until date of an object written (or referenced again) at `now`.
    pub fn until(&self, now: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
        now + chrono::TimeDelta::days(self.days.into())
    }
}

#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticCredentials({}, ***)", self.access_key_id)
    }
}

/// Validate `[jobs.NAME.heal]` against the job's sources.
fn heal_config(
    key: &str,
    raw: &raw::RawHeal,
    tz: Zone,
    sources: &[SourceConfig],
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
    let names = |v: &[&Arc<dyn Database>]| {
        v.iter()
            .map(|d| format!("\"{}\"", d.name()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let source = match &raw.source {
        Some(name) => match sources.iter().find(|s| s.name() == name) {
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
                        format!("; its sources with tables: {}", names(&healable))
                    }
                ));
                None
            }
        },
        None => match healable.as_slice() {
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
        },
    };
    if raw.watch.is_empty() {
        problems.push(format!(
            "{key}.watch: missing or empty; list the tables that must exist, e.g. watch = [\"orders\", \"public.customers\"], or watch = [\"*\"] for every table in the newest backup"
        ));
    }
    for (i, w) in raw.watch.iter().enumerate() {
        if w.trim().is_empty() {
            problems.push(format!("{key}.watch[{i}]: empty name"));
        } else if w == "*" && raw.watch.len() > 1 {
            problems.push(format!(
                "{key}.watch: \"*\" already means every table in the newest backup; give it alone, or list names without it"
            ));
        }
    }
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

/// Validate `encryption = { … }`: recipients (inline and from a file) or a passphrase,
/// and the optional identity and blob key. Reads the files it names.
fn encryption_config(
    key: &str,
    raw: &raw::RawEncryption,
    sources: &[SourceConfig],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<crate::crypt::Encryption> {
    use crate::crypt::{Keys, Sealer, recipients_in};
    let key = format!("{key}.encryption");
    let mark = problems.len();
    let mut listed: Vec<(String, String)> = raw
        .recipients
        .iter()
        .enumerate()
        .map(|(i, r)| (format!("{key}.recipients[{i}]"), r.trim().to_string()))
        .collect();
    if let Some(f) = &raw.recipients_file {
        let fkey = format!("{key}.recipients_file");
        if let Some(text) = read_secret(f, &fkey, problems) {
            let found = recipients_in(text.expose(), &format!("{fkey} ({})", f.display()));
            if found.is_empty() {
                problems.push(format!(
                    "{fkey}: {} holds no recipient (age1… lines, as age-keygen -y prints them)",
                    f.display()
                ));
            }
            listed.extend(found);
        }
    }
    let passphrase = raw
        .passphrase_file
        .as_ref()
        .and_then(|f| read_secret(f, &format!("{key}.passphrase_file"), problems));
    let sealer = match (listed.is_empty(), raw.passphrase_file.is_some()) {
        (false, true) => {
            problems.push(format!(
                "{key}: give recipients (or recipients_file) or passphrase_file, not both; age cannot mix a passphrase with recipients"
            ));
            None
        }
        (true, false) => {
            if raw.recipients_file.is_none() {
                problems.push(format!(
                    "{key}: no recipient; give recipients = [\"age1…\"] (age-keygen -y key.txt prints it), recipients_file, or passphrase_file"
                ));
            }
            None
        }
        (false, false) => Sealer::recipients(&listed)
            .map_err(|e| problems.extend(e))
            .ok(),
        (true, true) => passphrase.as_ref().map(|p| Sealer::passphrase(p.expose())),
    };
    let keys = match (&raw.identity_file, &raw.passphrase_file) {
        (Some(f), _) => {
            let ikey = format!("{key}.identity_file");
            read_secret(f, &ikey, problems).and_then(|text| {
                Keys::identity_file(text.expose(), &format!("{ikey} ({})", f.display()))
                    .map_err(|e| problems.push(e))
                    .ok()
            })
        }
        (None, Some(f)) => passphrase.as_ref().map(|p| {
            Keys::passphrase(
                p.expose(),
                &format!("{key}.passphrase_file ({})", f.display()),
            )
        }),
        (None, None) => None,
    };
    let blob_key = raw
        .blob_key_file
        .as_ref()
        .and_then(|f| read_secret(f, &format!("{key}.blob_key_file"), problems));
    if problems.len() > mark {
        return None;
    }
    if raw.passphrase_file.is_some() && sources.iter().any(|s| matches!(s, SourceConfig::Files(_)))
    {
        warnings.push(format!(
            "{key}: a passphrase costs about a second of scrypt per object, and a files source stores one object per new file; use recipients for jobs with files"
        ));
    }
    Some(crate::crypt::Encryption::new(sealer?, keys, blob_key))
}

/// Validate `[jobs.NAME.drill]` against the job's sources.
fn drill_config(
    key: &str,
    raw: &raw::RawDrill,
    tz: Zone,
    sources: &[SourceConfig],
    problems: &mut Vec<String>,
) -> Option<Drill> {
    let key = format!("{key}.drill");
    let mark = problems.len();
    let schedule = Schedule::parse(&raw.schedule, tz)
        .map_err(|e| problems.push(format!("{key}.schedule: {e}")))
        .ok();
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
    let source = match (&raw.source, drillable.as_slice()) {
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
    };
    if let Some(db) = &source {
        if let Err(e) = db.check_target(&raw.to) {
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
    }
    if let Some(db) = &source
        && !raw.checks.is_empty()
        && db.scratch().is_some_and(|s| !s.runs_checks())
    {
        problems.push(format!(
            "{key}.checks: a {} drill runs no checks (they are SQL); remove them",
            db.kind()
        ));
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

/// About how long destination `d`'s retention keeps backups: the most frequent job writing
/// to it decides how young its oldest kept backup is. None when it keeps them for ever, or no
/// job writes there.
fn retention_horizon(
    d: &Destination,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Option<TimeDelta> {
    let gap = jobs
        .values()
        .filter(|j| j.destinations.contains(&d.name))
        .filter_map(|j| j.schedule.period(now))
        .min()?;
    crate::retention::horizon(&d.retention, gap)
}

/// Destinations in a class with a minimum storage duration whose retention would delete
/// backups younger than it: they are kept that long anyway (or, with early_delete, deleted
/// and billed as if kept), which is rarely what the rule's author meant.
fn early_delete_warnings(
    destinations: &BTreeMap<String, Destination>,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for d in destinations.values() {
        let Some(class) = d.storage_class() else {
            continue;
        };
        let days = class.min_storage_days();
        if days == 0 {
            continue;
        }
        let Some(horizon) = retention_horizon(d, jobs, now) else {
            continue;
        };
        if horizon >= TimeDelta::days(days.into()) {
            continue;
        }
        let then = if d.min_storage().is_some() {
            format!(
                "they are kept {days} days instead (early_delete = true deletes them earlier and still pays for {days} days)"
            )
        } else {
            format!(
                "early_delete = true deletes them earlier, and each is still billed for {days} days"
            )
        };
        out.push(format!(
            "destinations.{}: {class} bills every object for at least {days} days, but retention ({}) keeps backups only about {} days: {then}. The usual pattern: recent backups on a local or STANDARD destination, monthly ones in the archive tier with their own retention, e.g. retention = {{ keep_monthly = 12 }}",
            d.name,
            d.retention.describe(),
            horizon.num_days().max(1)
        ));
    }
    out
}

/// A lock longer than what retention keeps: retention keeps the locked backups anyway.
fn object_lock_warnings(
    destinations: &BTreeMap<String, Destination>,
    jobs: &BTreeMap<String, Job>,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for d in destinations.values() {
        let Some(lock) = d.object_lock() else {
            continue;
        };
        let Some(horizon) = retention_horizon(d, jobs, now) else {
            continue;
        };
        if horizon >= TimeDelta::days(lock.days.into()) {
            continue;
        }
        out.push(format!(
            "destinations.{}.object_lock: every backup is locked for {} days, but retention ({}) keeps backups only about {} days: retention keeps each backup until its lock ends (run --dry-run lists them), so expect about {} days of backups; lower days or widen retention to match",
            d.name,
            lock.days,
            d.retention.describe(),
            horizon.num_days().max(1),
            lock.days
        ));
    }
    out
}

fn healable_kinds() -> String {
    crate::source::registered()
        .iter()
        .filter(|e| e.unconfigured("-").selects_objects())
        .map(|e| format!("\"{}\"", e.kind()))
        .collect::<Vec<_>>()
        .join(", ")
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
    /// May hold a token: shown only through [`Notify::redacted`].
    pub url: Secret,
    pub format: raw::WebhookFormat,
    /// Webhooks: also report successful runs (failures always are).
    pub on_success: bool,
}

impl Notify {
    /// scheme://host[:port]/… for logs.
    pub fn redacted(&self) -> String {
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

/// Read and validate. Environment overrides are `STOWAGE_<KEY>__<KEY>…` (for example
/// `STOWAGE_JOBS__REPLAY__SCHEDULE`), and `STOWAGE_<KEY>` for a top-level key (for example
/// `STOWAGE_SHUTDOWN_GRACE`). Other `STOWAGE_…` variables without `__` are not config:
/// those stowage reads for itself ([`OWN_VARIABLES`]) and any others are ignored, except
/// near misses of a top-level key, which are reported like an unknown key in the file.
///
/// Every problem is reported at once: see `read_raw` for how parsing goes on past the
/// first bad key, and `sort_problems` for the order.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with_env(path, true)
}

pub fn load_with_env(path: &Path, use_env: bool) -> Result<Config, ConfigError> {
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
        figment = figment.merge(
            Env::prefixed(ENV_PREFIX)
                .filter(|k| is_config_variable(k.as_str()))
                .split("__"),
        );
    }
    let invalid = |mut problems: Vec<String>| {
        sort_problems(&mut problems);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    };
    let (raw, reading) = read_raw(&figment).map_err(invalid)?;
    match validate(path, raw) {
        Ok(config) if reading.problems.is_empty() => Ok(config),
        Ok(_) => Err(invalid(reading.problems)),
        Err(found) => {
            let mut problems = reading.problems.clone();
            problems.extend(
                found
                    .iter()
                    .filter(|line| !reading.is_consequence(line))
                    .map(|line| reading.with_origin(line)),
            );
            if problems.is_empty() {
                // Cannot happen (a stand-in comes with a reported problem), but never
                // turn an invalid config into an empty list.
                problems = found;
            }
            Err(invalid(problems))
        }
    }
}

const ENV_PREFIX: &str = "STOWAGE_";

/// `STOWAGE_<NAME>` variables stowage reads for itself (`STOWAGE_CONFIG`, the daemon's pid
/// and state files) or sets for its child processes: never config keys.
pub const OWN_VARIABLES: [&str; 6] = [
    "config",
    "pid_file",
    "state_file",
    "restore_target",
    "restore_clean",
    "progress_interval",
];

/// Whether `STOWAGE_<name>` is read as config: any name with `__` (a key in a section), a
/// top-level key, or a near miss of one (so that a typo is reported, not ignored). Other
/// `STOWAGE_…` variables (the test harness's, a user's own) are none of config's business.
fn is_config_variable(name: &str) -> bool {
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

/// A required key's stand-in while the rest of the config is checked; a problem that
/// mentions it is a consequence of the missing key, already reported.
const STAND_IN: &str = "\u{2026}missing\u{2026}";

/// How many bad keys one load takes out before it gives up (each is one more pass).
const MAX_PASSES: usize = 1000;

/// A key path as figment gives it: names, and array indices as decimal text.
type KeyPath = Vec<String>;

/// What [`read_raw`] found on its way to a `RawConfig`.
struct Reading<'f> {
    figment: &'f Figment,
    /// The merged config (file and environment), minus the bad keys taken out.
    tree: figment::value::Value,
    problems: Vec<String>,
    /// Keys reported, or set to a stand-in: a later problem at or under one of them is a
    /// consequence (of a value taken out or made up), not news.
    settled: Vec<KeyPath>,
    /// Required keys set to a stand-in.
    stand_ins: Vec<KeyPath>,
    /// Absent keys a "did you mean" pointed at: that they are missing (to serde or to
    /// validation) adds nothing.
    suggested: BTreeSet<KeyPath>,
}

/// Deserialize the merged config, going on past every bad key: serde stops at the first
/// error, so each error's key is reported and taken out of the value tree (or, for a
/// table of the wrong type, replaced by an empty one) and the rest parsed again. A
/// required key that is missing then is reported once (unless a "did you mean" already
/// named it) and set to a stand-in, so that the rest of its section is still validated;
/// the problems validation finds about stand-ins are dropped by
/// [`Reading::is_consequence`]. `Err` when parsing cannot go on (a syntax error, a bad
/// top level); validation then does not run.
fn read_raw(figment: &Figment) -> Result<(raw::RawConfig, Reading<'_>), Vec<String>> {
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
            Ok(raw) => return Ok((raw, reading)),
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

    /// " (from environment variable STOWAGE_…)" when the value at `key` was set by the
    /// environment: by one variable, or (a table) by variables for all its keys.
    fn env_origin(&self, key: &[String]) -> String {
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

    fn is_settled(&self, key: &[String]) -> bool {
        self.settled.iter().any(|s| key.starts_with(s))
    }

    fn is_stand_in_value(&self, key: &[String], value: &figment::value::Value) -> bool {
        find(&self.tree, key).is_some_and(|v| v == value)
    }

    /// Whether a validation problem is about a key already reported, a key a "did you
    /// mean" named, or a stand-in (its value, or, for a stand-in `type`, what that type
    /// allows), and so adds nothing.
    fn is_consequence(&self, line: &str) -> bool {
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
    fn with_origin(&self, line: &str) -> String {
        let key = problem_key(line);
        if line.contains("(from environment variable") {
            return line.to_string();
        }
        format!("{line}{}", self.env_origin(&key))
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

fn find<'v>(
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

/// serde's name for what a table (struct or map) deserializes from.
fn expects_table(expected: &str) -> bool {
    expected.starts_with("struct ") || expected == "a map"
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
fn sort_problems(problems: &mut Vec<String>) {
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

fn describe_figment_error(e: &figment::Error) -> String {
    // Name the variable the user actually set, e.g. STOWAGE_JOBS__APP__COMPRESSION.
    let origin = if e
        .metadata
        .as_ref()
        .is_some_and(|m| m.name.contains("environment"))
    {
        format!(
            " (from environment variable {ENV_PREFIX}{})",
            e.path.join("__").to_uppercase()
        )
    } else {
        String::new()
    };
    describe_error(e, &origin)
}

/// One line for a serde error: the key, what is wrong, and how to fix it, then `origin`
/// (which environment variable set the value, if one did).
fn describe_error(e: &figment::Error, origin: &str) -> String {
    use figment::error::Kind;
    let key = e.path.iter().fold(String::new(), |mut acc, seg| {
        if seg.parse::<usize>().is_ok() {
            acc.push_str(&format!("[{seg}]"));
        } else {
            if !acc.is_empty() {
                acc.push('.');
            }
            acc.push_str(seg);
        }
        acc
    });
    let msg = match &e.kind {
        Kind::UnknownField(field, expected) => {
            let full = if key.is_empty() {
                field.clone()
            } else if key.ends_with(field.as_str()) {
                key.clone()
            } else {
                format!("{key}.{field}")
            };
            format!(
                "{full}: unknown key \"{field}\"{}; valid keys here: {}",
                suggest(field, expected),
                expected.join(", ")
            )
        }
        Kind::MissingField(field) => {
            let full = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            format!("{full}: required key is missing")
        }
        Kind::UnknownVariant(value, expected) => format!(
            "{}: unknown value \"{value}\"{}; expected one of: {}",
            if key.is_empty() { "(top level)" } else { &key },
            suggest(value, expected),
            expected.join(", ")
        ),
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => format!(
            "{}: expected {}, found {}",
            if key.is_empty() { "(top level)" } else { &key },
            friendly_type(expected),
            friendly_actual(actual)
        ),
        Kind::Message(m) => {
            if key.is_empty() {
                m.clone()
            } else {
                format!("{key}: {m}")
            }
        }
        other => {
            if key.is_empty() {
                other.to_string()
            } else {
                format!("{key}: {other}")
            }
        }
    };
    format!("{msg}{origin}")
}

fn friendly_type(expected: &str) -> &str {
    match expected {
        "u32" | "u64" | "usize" => "a whole number",
        "i32" | "i64" => "an integer",
        "a boolean" | "bool" => "true or false",
        "a sequence" => "an array",
        e if expects_table(e) => "a table",
        other => other,
    }
}

/// What was found instead, in the config file's words.
fn friendly_actual(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Unsigned(n) => format!("the number {n}"),
        Actual::Signed(n) => format!("the number {n}"),
        Actual::Float(n) => format!("the number {n}"),
        Actual::Bool(b) => format!("{b}"),
        Actual::Seq => "an array".to_string(),
        Actual::Map => "a table".to_string(),
        Actual::Unit | Actual::Option => "nothing".to_string(),
        other => other.to_string(),
    }
}

/// "did you mean" for a mistyped key or value.
fn suggest(got: &str, expected: &[&str]) -> String {
    closest(got, expected)
        .map(|e| format!(" (did you mean \"{e}\"?)"))
        .unwrap_or_default()
}

/// The expected name closest to `got`, if close enough to be a typo of it.
fn closest<'e>(got: &str, expected: &[&'e str]) -> Option<&'e str> {
    expected
        .iter()
        .map(|e| (strsim_distance(got, e), *e))
        .filter(|(d, e)| *d <= 2 && *d < e.len())
        .min()
        .map(|(_, e)| e)
}

/// Levenshtein distance; tiny inputs only (key names).
fn strsim_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const NAME_RULE: &str = "use 1-64 characters from a-z, A-Z, 0-9, '-' and '_'";

fn read_secret(path: &Path, key: &str, problems: &mut Vec<String>) -> Option<Secret> {
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

/// Parse "8MiB", "16MB", "5242880" into bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn retention(raw: raw::RawRetention, key: &str, problems: &mut Vec<String>) -> RetentionPolicy {
    let mut check = |name: &str, v: Option<u32>| {
        if v == Some(0) {
            problems.push(format!(
                "{key}.retention.{name}: must be at least 1 (remove the key to not use this rule)"
            ));
        }
        v
    };
    RetentionPolicy {
        keep_last: check("keep_last", raw.keep_last),
        keep_hourly: check("keep_hourly", raw.keep_hourly),
        keep_daily: check("keep_daily", raw.keep_daily),
        keep_weekly: check("keep_weekly", raw.keep_weekly),
        keep_monthly: check("keep_monthly", raw.keep_monthly),
        keep_yearly: check("keep_yearly", raw.keep_yearly),
        max_age: raw.max_age.as_deref().and_then(|text| {
            match humantime::parse_duration(text) {
                Ok(d) if !d.is_zero() => Some(d),
                Ok(_) => {
                    problems.push(format!("{key}.retention.max_age: must be longer than 0"));
                    None
                }
                Err(e) => {
                    problems.push(format!(
                        "{key}.retention.max_age: invalid duration \"{text}\" ({e}); use e.g. \"30d\", \"12h\" or \"8w\""
                    ));
                    None
                }
            }
        }),
    }
}

fn validate(path: &Path, raw: raw::RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        problems.push(format!(
            "log.level: invalid filter \"{}\" ({e}); use e.g. \"info\", \"debug\" or \"stowage=debug,info\"",
            raw.log.level
        ));
    }
    if raw.log.keep_files == 0 {
        problems.push("log.keep_files: must be at least 1".to_string());
    }
    if let Some(dir) = &raw.log.dir
        && !dir.is_absolute()
    {
        problems.push(format!("log.dir: {dir:?} must be an absolute path"));
    }
    let shutdown_grace = match raw.shutdown_grace.as_deref() {
        None => DEFAULT_SHUTDOWN_GRACE,
        Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!(
                "shutdown_grace: invalid duration \"{text}\" ({e}); use e.g. \"30s\" or \"2m\" (\"0s\": abandon at once)"
            ));
            DEFAULT_SHUTDOWN_GRACE
        }),
    };
    let listen = raw.server.as_ref().and_then(|s| {
        s.listen
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                problems.push(format!(
                    "server.listen: invalid address \"{}\" ({e}); use IP:PORT, e.g. \"0.0.0.0:9090\"",
                    s.listen
                ))
            })
            .ok()
    });
    let server_token = raw
        .server
        .as_ref()
        .and_then(|s| s.token_file.as_deref())
        .and_then(|f| read_secret(f, "server.token_file", &mut problems));
    let log = LogConfig {
        level: raw.log.level,
        format: raw.log.format,
        dir: raw.log.dir,
        rotation: raw.log.rotation,
        keep_files: raw.log.keep_files,
    };

    let mut destinations = BTreeMap::new();
    for (name, d) in raw.destinations {
        let key = format!("destinations.{name}");
        if !valid_name(&name) {
            problems.push(format!(
                "{key}: invalid destination name \"{name}\": {NAME_RULE}"
            ));
        }
        let kind = match d.kind {
            raw::DestinationType::Local => {
                only_for(
                    &key,
                    "s3",
                    &[
                        ("bucket", d.bucket.is_some()),
                        ("prefix", d.prefix.is_some()),
                        ("region", d.region.is_some()),
                        ("endpoint", d.endpoint.is_some()),
                        ("force_path_style", d.force_path_style.is_some()),
                        ("storage_class", d.storage_class.is_some()),
                        ("access_key_id", d.access_key_id.is_some()),
                        ("secret_access_key_file", d.secret_access_key_file.is_some()),
                        ("part_size", d.part_size.is_some()),
                        ("max_in_flight", d.max_in_flight.is_some()),
                        ("max_parts", d.max_parts.is_some()),
                        ("checksums", d.checksums.is_some()),
                        ("retrieval", d.retrieval.is_some()),
                        ("early_delete", d.early_delete.is_some()),
                        ("object_lock", d.object_lock.is_some()),
                    ],
                    &mut problems,
                );
                match &d.path {
                    None => problems.push(format!(
                        "{key}.path: required for type = \"local\"; e.g. path = \"/var/backups/stowage\""
                    )),
                    Some(p) if !p.is_absolute() => problems.push(format!(
                        "{key}.path: {p:?} must be an absolute path (a mounted volume such as \"/var/backups/stowage\")"
                    )),
                    Some(_) => {}
                }
                DestinationKind::Local(LocalConfig {
                    path: d.path.clone().unwrap_or_default(),
                })
            }
            raw::DestinationType::S3 => {
                only_for(&key, "local", &[("path", d.path.is_some())], &mut problems);
                DestinationKind::S3(validate_s3(&key, &d, &mut problems))
            }
        };
        let retention = retention(d.retention, &key, &mut problems);
        destinations.insert(
            name.clone(),
            Destination {
                name,
                kind,
                retention,
            },
        );
    }

    let mut jobs = BTreeMap::new();
    if raw.jobs.is_empty() {
        problems.push("jobs: no job is defined; add a [jobs.NAME] section (see config/)".into());
    }
    for (name, j) in raw.jobs {
        let key = format!("jobs.{name}");
        if !valid_name(&name) {
            problems.push(format!("{key}: invalid job name \"{name}\": {NAME_RULE}"));
        }
        let tz: Zone = match parse_timezone(&j.timezone) {
            Ok(tz) => tz,
            Err(e) => {
                problems.push(format!("{key}.timezone: {e}"));
                Zone::UTC
            }
        };
        let schedule = match Schedule::parse(&j.schedule, tz.clone()) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(format!("{key}.schedule: {e}"));
                None
            }
        };
        let max_staleness = j.max_staleness.as_deref().and_then(|text| {
            match humantime::parse_duration(text) {
                Ok(d) if d.is_zero() => {
                    problems.push(format!("{key}.max_staleness: must be longer than 0"));
                    None
                }
                Ok(d) => Some(d),
                Err(e) => {
                    problems.push(format!(
                        "{key}.max_staleness: invalid duration \"{text}\" ({e}); use e.g. \"36h\" or \"3d\""
                    ));
                    None
                }
            }
        });
        if let Some(n) = j.nice
            && !(0..=19).contains(&n)
        {
            problems.push(format!(
                "{key}.nice: {n} is out of range; use 0 (normal) to 19 (lowest priority)"
            ));
        }
        let io = j.ionice.as_deref().and_then(|t| {
            IoPriority::parse(t)
                .map_err(|e| problems.push(format!("{key}.ionice: {e}")))
                .ok()
        });
        let priority = Priority { nice: j.nice, io };
        let mut notify = Vec::new();
        for (n, raw_n) in j.notify.iter().enumerate() {
            let nkey = format!("{key}.notify[{n}]");
            let url = match (&raw_n.url, &raw_n.url_file) {
                (Some(u), None) => Some(Secret::new(u.clone())),
                (None, Some(f)) => read_secret(f, &format!("{nkey}.url_file"), &mut problems),
                (Some(_), Some(_)) => {
                    problems.push(format!("{nkey}: give url or url_file, not both"));
                    None
                }
                (None, None) => {
                    problems.push(format!(
                        "{nkey}.url: required; e.g. url = \"https://hc-ping.com/<uuid>\", or url_file = \"/run/secrets/webhook\""
                    ));
                    None
                }
            };
            if let Some(u) = &url {
                match url::Url::parse(u.expose()) {
                    Ok(p) if p.scheme() == "http" || p.scheme() == "https" => {}
                    _ => problems.push(format!(
                        "{nkey}.url: not an http(s) URL{}",
                        if raw_n.url.is_some() {
                            format!(" (\"{}\")", raw_n.url.as_deref().unwrap_or(""))
                        } else {
                            String::new()
                        }
                    )),
                }
            }
            if raw_n.kind == raw::NotifyType::Healthchecks {
                if raw_n.format.is_some() {
                    problems.push(format!(
                        "{nkey}.format: only valid for type = \"webhook\"; remove it or change the type"
                    ));
                }
                if raw_n.on_success.is_some() {
                    problems.push(format!(
                        "{nkey}.on_success: healthchecks pings always report success (that is how the check knows the job is alive); remove the key"
                    ));
                }
            }
            if let Some(url) = url {
                notify.push(Notify {
                    kind: raw_n.kind,
                    url,
                    format: raw_n.format.unwrap_or_default(),
                    on_success: raw_n.on_success.unwrap_or(false),
                });
            }
        }
        let retries = j.retries.unwrap_or(DEFAULT_RETRIES);
        if retries > 100 {
            problems.push(format!(
                "{key}.retries: {retries} is too many; use 0..=100 (each waits retry_delay)"
            ));
        }
        let retry_delay = match j.retry_delay.as_deref() {
            None => DEFAULT_RETRY_DELAY,
            Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
                problems.push(format!(
                    "{key}.retry_delay: invalid duration \"{text}\" ({e}); use e.g. \"1m\" or \"30s\""
                ));
                DEFAULT_RETRY_DELAY
            }),
        };
        if let Some(level) = j.compression_level {
            let range = match j.compression {
                Compression::Zstd => 1..=19,
                Compression::Gzip => 1..=9,
                Compression::None => 0..=0,
            };
            if !range.contains(&level) {
                problems.push(format!(
                    "{key}.compression_level: {level} is out of range for {} ({}..={})",
                    j.compression.as_str(),
                    range.start(),
                    range.end()
                ));
            }
        }
        if j.destinations.is_empty() {
            problems.push(format!(
                "{key}.destinations: the job has no destination; add e.g. destinations = [\"local\"]"
            ));
        }
        let mut seen = BTreeSet::new();
        for d in &j.destinations {
            if !seen.insert(d.as_str()) {
                problems.push(format!("{key}.destinations: \"{d}\" is listed twice"));
            } else if !destinations.contains_key(d) {
                let defined: Vec<&str> = destinations.keys().map(String::as_str).collect();
                problems.push(format!(
                    "{key}.destinations: unknown destination \"{d}\"{}; defined destinations: {}",
                    suggest(d, &defined),
                    if defined.is_empty() {
                        "none (add a [destinations.NAME] section)".to_string()
                    } else {
                        defined.join(", ")
                    }
                ));
            }
        }
        if j.sources.is_empty() {
            problems.push(format!(
                "{key}.sources: the job has no source; add a [[{key}.sources]] entry"
            ));
        }
        let mut names = BTreeSet::new();
        let mut sources = Vec::new();
        let mut used_job_excludes = false;
        for (i, s) in j.sources.into_iter().enumerate() {
            let skey = format!("{key}.sources[{i}]");
            if !valid_name(&s.name) {
                problems.push(format!(
                    "{skey}.name: invalid source name \"{}\": {NAME_RULE}",
                    s.name
                ));
            } else if !names.insert(s.name.clone()) {
                problems.push(format!(
                    "{skey}.name: duplicate source name \"{}\" in job \"{name}\"; each source needs its own name",
                    s.name
                ));
            }
            let mut section = Section {
                key: skey.clone(),
                name: s.name.clone(),
                values: s.rest,
                priority,
                job_exclude_tables: &j.exclude_tables,
                used_job_excludes: false,
                problems: &mut problems,
            };
            if s.kind == "files" {
                if let Some(f) = files_source(&mut section) {
                    sources.push(SourceConfig::Files(f));
                }
            } else if let Some(engine) = crate::source::find(&s.kind) {
                let db = engine.configure(&mut section);
                used_job_excludes |= section.used_job_excludes;
                if let Some(db) = db {
                    sources.push(SourceConfig::Database(db));
                }
            } else {
                let mut kinds = crate::source::kinds();
                kinds.push("files");
                problems.push(format!(
                    "{skey}.type: unknown value \"{}\"{}; expected one of: {}",
                    s.kind,
                    suggest(&s.kind, &kinds),
                    kinds.join(", ")
                ));
            }
        }
        if !j.exclude_tables.is_empty() && !used_job_excludes {
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
        // Coherence rule: a database is dumped before the files its rows point at, so a
        // restore may bring back an orphan file but never a row whose file is missing.
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
        let heal = j
            .heal
            .as_ref()
            .and_then(|h| heal_config(&key, h, tz.clone(), &sources, &mut problems));
        let verify = j.verify.as_ref().and_then(|v| {
            Schedule::parse(&v.schedule, tz.clone())
                .map_err(|e| {
                    // The short form's key is `verify`, the table's `verify.schedule`.
                    let at = if v.table { ".schedule" } else { "" };
                    problems.push(format!("{key}.verify{at}: {e}"))
                })
                .ok()
        });
        let verify_read_data = match j.verify.as_ref().and_then(|v| v.read_data.as_deref()) {
            Some(text) => ReadData::parse(text).unwrap_or_else(|e| {
                problems.push(format!("{key}.verify.read_data: {e}"));
                ReadData::None
            }),
            None => ReadData::None,
        };
        let encryption = j
            .encryption
            .as_ref()
            .and_then(|e| encryption_config(&key, e, &sources, &mut problems, &mut warnings));
        let drill = j
            .drill
            .as_ref()
            .and_then(|d| drill_config(&key, d, tz.clone(), &sources, &mut problems));
        if let Some(e) = &encryption
            && e.keys.is_none()
        {
            let reads_blobs = verify.is_some() && verify_read_data != ReadData::None;
            for (what, on) in [
                ("heal", heal.is_some()),
                ("drill", drill.is_some()),
                ("verify.read_data", reads_blobs),
            ] {
                if on {
                    problems.push(format!(
                        "{key}.{what}: the job's backups are encrypted and the daemon has no key to read them; add identity_file = \"/run/secrets/age_identity\" to {key}.encryption (or remove the {what})"
                    ));
                }
            }
        }
        let auth_key = j.auth_key_file.as_ref().and_then(|f| {
            let what = format!("{key}.auth_key_file");
            let secret = read_secret(f, &what, &mut problems)?;
            crate::crypt::AuthKey::new(secret, &format!("{what} ({})", f.display()))
                .map_err(|e| problems.push(e))
                .ok()
                .map(Arc::new)
        });
        if encryption.is_some() && auth_key.is_none() {
            warnings.push(format!(
                "{key}: the job encrypts but has no auth_key_file: whoever can write to a destination can replace a backup with a manifest and clear dumps of their own (which a restore or the healer would apply), or add a newer fake backup that makes retention delete real ones; add auth_key_file = \"/run/secrets/stowage_auth_key\" (make it with `head -c 32 /dev/urandom | base64 > FILE`)"
            ));
        }
        if let Some(schedule) = schedule {
            jobs.insert(
                name.clone(),
                Job {
                    name,
                    schedule,
                    compression: j.compression,
                    compression_level: j.compression_level,
                    catch_up: j.catch_up,
                    max_staleness,
                    notify,
                    retries,
                    retry_delay,
                    destinations: j.destinations,
                    sources,
                    heal,
                    verify,
                    verify_read_data,
                    encryption,
                    drill,
                    auth_key,
                },
            );
        }
    }

    warnings.extend(early_delete_warnings(&destinations, &jobs, Utc::now()));
    warnings.extend(object_lock_warnings(&destinations, &jobs, Utc::now()));
    if problems.is_empty() {
        Ok(Config {
            path: path.to_path_buf(),
            shutdown_grace,
            listen,
            server_token,
            log,
            destinations,
            jobs,
            warnings,
        })
    } else {
        Err(problems)
    }
}

/// A source's section of the config as its engine sees it: every key but `type` and
/// `name`, the job-level settings that apply to it, and where to report problems (with
/// the full key path, so messages read like every other config error).
pub struct Section<'a> {
    key: String,
    /// The source's name (already checked by config).
    pub name: String,
    values: figment::value::Dict,
    /// The job's nice/ionice, for the engine's child processes.
    pub priority: Priority,
    job_exclude_tables: &'a [String],
    used_job_excludes: bool,
    problems: &'a mut Vec<String>,
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
        let mut owners: Vec<&str> = crate::source::registered()
            .iter()
            .filter(|e| e.keys().contains(&field))
            .map(|e| e.kind())
            .collect();
        if serde_fields::<RawFiles>().contains(&field) {
            owners.push("files");
        }
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

/// Keys that belong to another destination type are errors, not silently ignored.
fn only_for(key: &str, other: &str, keys: &[(&str, bool)], problems: &mut Vec<String>) {
    for (k, present) in keys {
        if *present {
            problems.push(format!(
                "{key}.{k}: only valid for type = \"{other}\"; remove it or change the type"
            ));
        }
    }
}

/// Days above this are a typo (S3 itself allows up to 100 years): a lock cannot be taken back.
const MAX_LOCK_DAYS: u32 = 36_500;

fn object_lock(
    key: &str,
    l: &raw::RawObjectLock,
    problems: &mut Vec<String>,
) -> Option<ObjectLock> {
    let key = format!("{key}.object_lock");
    let mode = match l.mode.as_deref() {
        None => {
            problems.push(format!(
                "{key}.mode: required; give mode = \"GOVERNANCE\" (an account with s3:BypassGovernanceRetention can still delete) or \"COMPLIANCE\" (nobody can)"
            ));
            None
        }
        Some(m) if m.eq_ignore_ascii_case("GOVERNANCE") => Some(LockMode::Governance),
        Some(m) if m.eq_ignore_ascii_case("COMPLIANCE") => Some(LockMode::Compliance),
        Some(m) => {
            problems.push(format!(
                "{key}.mode: unknown mode \"{m}\"; expected \"GOVERNANCE\" or \"COMPLIANCE\""
            ));
            None
        }
    };
    let days = match l.days {
        None => {
            problems.push(format!(
                "{key}.days: required; give the days each object stays locked, e.g. days = 30 (at least as long as retention keeps backups)"
            ));
            None
        }
        Some(0) => {
            problems.push(format!(
                "{key}.days: 0 locks nothing; give the days each object stays locked, e.g. days = 30, or remove object_lock"
            ));
            None
        }
        Some(d) if d > MAX_LOCK_DAYS => {
            problems.push(format!(
                "{key}.days: {d} is more than {MAX_LOCK_DAYS} (100 years); a lock cannot be shortened once written, so check the value"
            ));
            None
        }
        Some(d) => Some(d),
    };
    Some(ObjectLock {
        mode: mode?,
        days: days?,
    })
}

fn validate_s3(key: &str, s: &raw::RawDestination, problems: &mut Vec<String>) -> S3Config {
    let bucket = s.bucket.clone().unwrap_or_default();
    if s.bucket.is_none() {
        problems.push(format!(
            "{key}.bucket: required for type = \"s3\"; e.g. bucket = \"my-backups\""
        ));
    } else {
        let ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            problems.push(format!(
                "{key}.bucket: \"{bucket}\" is not a valid bucket name (3-63 characters: a-z, 0-9, '-', '.')"
            ));
        }
    }
    if let Some(ep) = &s.endpoint {
        match url::Url::parse(ep) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => problems.push(format!(
                "{key}.endpoint: \"{ep}\" is not an http(s) URL; use e.g. \"http://minio:9000\""
            )),
        }
    }
    let storage_class = s.storage_class.as_ref().and_then(|c| {
        let class = StorageClass::parse(c);
        if class.is_none() {
            problems.push(format!(
                "{key}.storage_class: unknown storage class \"{c}\"; expected one of: {}",
                StorageClass::ALL.map(StorageClass::as_str).join(", ")
            ));
        }
        class
    });
    let mut retrieval = Retrieval::default();
    if let Some(r) = &s.retrieval {
        match r.days {
            Some(0) => problems.push(format!(
                "{key}.retrieval.days: 0 leaves no time to download a retrieved copy; give the days it stays readable, e.g. 3"
            )),
            Some(d) => retrieval.days = d,
            None => {}
        }
        if let Some(t) = &r.tier {
            match RetrievalTier::parse(t) {
                Some(tier) => retrieval.tier = tier,
                None => problems.push(format!(
                    "{key}.retrieval.tier: unknown tier \"{t}\"; expected one of: {}",
                    RetrievalTier::ALL.map(RetrievalTier::as_str).join(", ")
                )),
            }
        }
        match storage_class {
            Some(c) if c.needs_retrieval() => {
                if retrieval.tier.usual_delay(c).is_none() {
                    problems.push(format!(
                        "{key}.retrieval.tier: {c} has no {} retrieval; use \"Standard\" (within 12 hours) or \"Bulk\" (within 48 hours)",
                        retrieval.tier
                    ));
                }
            }
            _ => problems.push(format!(
                "{key}.retrieval: only storage classes GLACIER and DEEP_ARCHIVE need a retrieval{}; remove it",
                storage_class
                    .map(|c| format!(" ({c} is read directly)"))
                    .unwrap_or_default()
            )),
        }
    }
    let credentials = match (&s.access_key_id, &s.secret_access_key_file) {
        (Some(id), Some(file)) => {
            read_secret(file, &format!("{key}.secret_access_key_file"), problems).map(|secret| {
                StaticCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret,
                }
            })
        }
        (Some(_), None) => {
            problems.push(format!(
                "{key}.access_key_id: needs secret_access_key_file as well (or remove both to use the AWS credential chain)"
            ));
            None
        }
        (None, Some(_)) => {
            problems.push(format!(
                "{key}.secret_access_key_file: needs access_key_id as well (or remove both to use the AWS credential chain)"
            ));
            None
        }
        (None, None) => None,
    };
    let part_size = match s.part_size.as_deref().map(|t| (t, parse_size(t))) {
        None => DEFAULT_PART_SIZE,
        Some((_, Some(n))) if n >= MIN_PART_SIZE => n,
        Some((t, Some(_))) => {
            problems.push(format!(
                "{key}.part_size: \"{t}\" is below S3's minimum part size of 5MiB"
            ));
            DEFAULT_PART_SIZE
        }
        Some((t, None)) => {
            problems.push(format!(
                "{key}.part_size: \"{t}\" is not a size; use e.g. \"8MiB\""
            ));
            DEFAULT_PART_SIZE
        }
    };
    let max_in_flight = match s.max_in_flight {
        None => DEFAULT_MAX_IN_FLIGHT,
        Some(n) if (1..=16).contains(&n) => n,
        Some(n) => {
            problems.push(format!("{key}.max_in_flight: {n} is out of range (1..=16)"));
            DEFAULT_MAX_IN_FLIGHT
        }
    };
    let max_parts = match s.max_parts {
        None => 10_000,
        Some(n) if (2..=10_000).contains(&n) => n,
        Some(n) => {
            problems.push(format!(
                "{key}.max_parts: {n} is out of range (2..=10000; AWS allows 10000)"
            ));
            10_000
        }
    };
    let object_lock = s
        .object_lock
        .as_ref()
        .and_then(|l| object_lock(key, l, problems));
    S3Config {
        object_lock,
        bucket,
        prefix: s
            .prefix
            .as_deref()
            .unwrap_or("")
            .trim_matches('/')
            .to_string(),
        region: s.region.clone(),
        endpoint: s.endpoint.clone(),
        force_path_style: s.force_path_style.unwrap_or(false),
        storage_class,
        retrieval,
        early_delete: s.early_delete.unwrap_or(false),
        credentials,
        part_size,
        max_in_flight,
        max_parts,
        checksums: s.checksums.unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB"), Some(8 << 20));
        assert_eq!(parse_size("5242880"), Some(5 << 20));
        assert_eq!(parse_size("1 GB"), Some(1 << 30));
        assert_eq!(parse_size("lots"), None);
    }

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

    #[test]
    fn suggestions() {
        assert_eq!(
            suggest("scedule", &["schedule", "timezone"]),
            " (did you mean \"schedule\"?)"
        );
        assert_eq!(suggest("xyz", &["schedule"]), "");
    }
}
