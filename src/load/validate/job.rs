//! `[jobs.NAME]`: its schedule and run settings, its destinations, and (each in its own
//! file) its notifications, sources, healer, drill and encryption.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use super::{NAME_RULE, containers, drill, encryption, heal, hooks, notify, source, valid_name};
use crate::config::{
    Compression, DEFAULT_RETRIES, DEFAULT_RETRY_DELAY, Drill, Heal, IoPriority, Job, Priority,
    ReadData, SourceConfig, raw,
};
use crate::crypt::{AuthKey, Encryption};
use crate::schedule::{Schedule, parse_timezone};
use crate::section::read_secret;
use crate::section::words::suggest;
use crate::zone::Zone;

pub(super) fn jobs(
    raw: BTreeMap<String, raw::RawJob>,
    defined: &BTreeSet<String>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, Job> {
    let mut jobs = BTreeMap::new();
    if raw.is_empty() {
        problems.push("jobs: no job is defined; add a [jobs.NAME] section (see config/)".into());
    }
    for (name, j) in raw {
        if let Some(job) = job(name.clone(), j, defined, problems, warnings) {
            jobs.insert(name, job);
        }
    }
    jobs
}

/// One job, every key checked; `None` when its schedule is invalid (already reported).
fn job(
    name: String,
    mut j: raw::RawJob,
    defined: &BTreeSet<String>,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Job> {
    let key = format!("jobs.{name}");
    if !valid_name(&name) {
        problems.push(format!("{key}: invalid job name \"{name}\": {NAME_RULE}"));
    }
    let tz = timezone(&key, &j.timezone, problems);
    let schedule = Schedule::parse(&j.schedule, tz.clone())
        .map_err(|e| problems.push(format!("{key}.schedule: {e}")))
        .ok();
    let max_staleness = j
        .max_staleness
        .as_deref()
        .and_then(|text| max_staleness(&key, text, problems));
    let priority = priority(&key, &j, problems);
    let notify = notify::notify(&key, &j.notify, problems);
    let (retries, retry_delay) = retries(&key, &j, problems);
    compression_level(&key, j.compression, j.compression_level, problems);
    job_destinations(&key, &j.destinations, defined, problems);
    let mut raw_sources = std::mem::take(&mut j.sources);
    let source_hooks = hooks::source_hooks(&key, &mut raw_sources, problems);
    let (sources, broken) = source::sources(
        &key,
        &name,
        raw_sources,
        priority,
        &j.exclude_tables,
        problems,
    );
    source::order_warning(&key, &sources, warnings);
    let checks = checks(&key, &j, tz, &sources, &broken, problems, warnings);
    let hooks = hooks::hooks(&key, j.before.take(), j.after.take(), problems);
    let containers =
        containers::containers(&key, j.containers.take(), &sources, problems, warnings);
    Some(Job {
        name,
        schedule: schedule?,
        compression: j.compression,
        compression_level: j.compression_level,
        catch_up: j.catch_up,
        max_staleness,
        notify,
        retries,
        retry_delay,
        destinations: j.destinations,
        sources,
        heal: checks.heal,
        verify: checks.verify,
        verify_read_data: checks.verify_read_data,
        encryption: checks.encryption,
        drill: checks.drill,
        auth_key: checks.auth_key,
        hooks,
        source_hooks,
        containers,
    })
}

/// An unknown timezone is reported; the job's times are then checked in UTC.
fn timezone(key: &str, text: &str, problems: &mut Vec<String>) -> Zone {
    match parse_timezone(text) {
        Ok(tz) => tz,
        Err(e) => {
            problems.push(format!("{key}.timezone: {e}"));
            Zone::UTC
        }
    }
}

fn max_staleness(key: &str, text: &str, problems: &mut Vec<String>) -> Option<std::time::Duration> {
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
}

/// `nice` and `ionice`.
fn priority(key: &str, j: &raw::RawJob, problems: &mut Vec<String>) -> Priority {
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
    Priority { nice: j.nice, io }
}

/// `retries` and `retry_delay`.
fn retries(key: &str, j: &raw::RawJob, problems: &mut Vec<String>) -> (u32, std::time::Duration) {
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
    (retries, retry_delay)
}

fn compression_level(
    key: &str,
    compression: Compression,
    level: Option<i32>,
    problems: &mut Vec<String>,
) {
    let Some(level) = level else {
        return;
    };
    let range = match compression {
        Compression::Zstd => 1..=19,
        Compression::Gzip => 1..=9,
        Compression::None => 0..=0,
    };
    if !range.contains(&level) {
        problems.push(format!(
            "{key}.compression_level: {level} is out of range for {} ({}..={})",
            compression.as_str(),
            range.start(),
            range.end()
        ));
    }
}

/// The job's `destinations`: at least one, each defined, none twice.
fn job_destinations(
    key: &str,
    listed: &[String],
    defined: &BTreeSet<String>,
    problems: &mut Vec<String>,
) {
    if listed.is_empty() {
        problems.push(format!(
            "{key}.destinations: the job has no destination; add e.g. destinations = [\"local\"]"
        ));
    }
    let mut seen = BTreeSet::new();
    for d in listed {
        if !seen.insert(d.as_str()) {
            problems.push(format!("{key}.destinations: \"{d}\" is listed twice"));
        } else if !defined.contains(d) {
            let defined: Vec<&str> = defined.iter().map(String::as_str).collect();
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
}

/// What the daemon does with a job's backups besides taking them, and the keys for it.
struct Checks {
    heal: Option<Heal>,
    verify: Option<Schedule>,
    verify_read_data: ReadData,
    encryption: Option<Encryption>,
    drill: Option<Drill>,
    auth_key: Option<Arc<AuthKey>>,
}

/// The healer, verify, encryption, drill and authentication key of a job, checked
/// against its sources and each other.
fn checks(
    key: &str,
    j: &raw::RawJob,
    tz: Zone,
    sources: &[SourceConfig],
    broken: &source::Broken,
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Checks {
    let heal = j
        .heal
        .as_ref()
        .and_then(|h| heal::heal_config(key, h, tz.clone(), sources, broken, problems));
    let (verify, verify_read_data) = verify(key, j.verify.as_ref(), tz.clone(), problems);
    let drill = j
        .drill
        .as_ref()
        .and_then(|d| drill::drill_config(key, d, tz, sources, broken, problems));
    let reads_blobs = verify.is_some() && verify_read_data != ReadData::None;
    let readers = [
        ("heal", heal.is_some()),
        ("drill", drill.is_some()),
        ("verify.read_data", reads_blobs),
    ];
    let reading: Vec<&str> = readers.iter().filter(|r| r.1).map(|r| r.0).collect();
    let encryption = j
        .encryption
        .as_ref()
        .and_then(|e| encryption::encryption_config(key, e, sources, &reading, problems, warnings));
    if let Some(e) = &encryption
        && e.keys.is_none()
    {
        no_key_to_read(key, &readers, problems);
    }
    let auth_key = j
        .auth_key_file
        .as_deref()
        .and_then(|f| auth_key(key, f, problems));
    if encryption.is_some() && auth_key.is_none() {
        warnings.push(format!(
            "{key}: the job encrypts but has no auth_key_file: whoever can write to a destination can replace a backup with a manifest and clear dumps of their own (which a restore or the healer would apply), or add a newer fake backup that makes retention delete real ones; add auth_key_file = \"/run/secrets/stowage_auth_key\" (make it with `head -c 32 /dev/urandom | base64 > FILE`)"
        ));
    }
    Checks {
        heal,
        verify,
        verify_read_data,
        encryption,
        drill,
        auth_key,
    }
}

/// `verify = "CRON"`, or `[jobs.NAME.verify]` with a schedule and `read_data`.
fn verify(
    key: &str,
    raw: Option<&raw::RawVerify>,
    tz: Zone,
    problems: &mut Vec<String>,
) -> (Option<Schedule>, ReadData) {
    let schedule = raw.and_then(|v| {
        Schedule::parse(&v.schedule, tz)
            .map_err(|e| {
                // The short form's key is `verify`, the table's `verify.schedule`.
                let at = if v.table { ".schedule" } else { "" };
                problems.push(format!("{key}.verify{at}: {e}"))
            })
            .ok()
    });
    let read_data = match raw.and_then(|v| v.read_data.as_deref()) {
        Some(text) => ReadData::parse(text).unwrap_or_else(|e| {
            problems.push(format!("{key}.verify.read_data: {e}"));
            ReadData::None
        }),
        None => ReadData::None,
    };
    (schedule, read_data)
}

/// An encrypted job whose daemon has no identity cannot read its backups back.
fn no_key_to_read(key: &str, readers: &[(&str, bool)], problems: &mut Vec<String>) {
    for (what, on) in readers {
        if *on {
            problems.push(format!(
                "{key}.{what}: the job's backups are encrypted and the daemon has no key to read them; add identity_file = \"/run/secrets/age_identity\" to {key}.encryption (or remove the {what})"
            ));
        }
    }
}

/// `auth_key_file`.
fn auth_key(key: &str, file: &Path, problems: &mut Vec<String>) -> Option<Arc<AuthKey>> {
    let what = format!("{key}.auth_key_file");
    let secret = read_secret(file, &what, problems)?;
    AuthKey::new(secret, &format!("{what} ({})", file.display()))
        .map_err(|e| problems.push(e))
        .ok()
        .map(Arc::new)
}
