//! Validation: the raw config, section by section, into the types the rest of stowage
//! uses. One function per section; each reports its problems with the full key path and
//! goes on, so that every problem is listed at once.

mod containers;
mod destination;
mod drill;
mod encryption;
mod heal;
mod hooks;
mod horizon;
mod job;
mod notify;
mod source;

use std::path::Path;

use chrono::Utc;

use crate::config::{Config, DEFAULT_SHUTDOWN_GRACE, LogConfig, raw};
use crate::secret::Secret;
use crate::section::read_secret;

pub(super) fn validate(path: &Path, raw: raw::RawConfig) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();

    let log = log(raw.log, &mut problems);
    let shutdown_grace = shutdown_grace(raw.shutdown_grace.as_deref(), &mut problems);
    let (listen, server_token) = server(raw.server.as_ref(), &mut problems);
    let (destinations, defined) = destination::destinations(raw.destinations, &mut problems);
    let jobs = job::jobs(raw.jobs, &defined, &mut problems, &mut warnings);

    warnings.extend(horizon::early_delete_warnings(
        &destinations,
        &jobs,
        Utc::now(),
    ));
    warnings.extend(horizon::object_lock_warnings(
        &destinations,
        &jobs,
        Utc::now(),
    ));
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

/// `[log]`.
fn log(raw: raw::RawLog, problems: &mut Vec<String>) -> LogConfig {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.level) {
        problems.push(format!(
            "log.level: invalid filter \"{}\" ({e}); use e.g. \"info\", \"debug\" or \"stowage=debug,info\"",
            raw.level
        ));
    }
    if raw.keep_files == 0 {
        problems.push("log.keep_files: must be at least 1".to_string());
    }
    if let Some(dir) = &raw.dir
        && !dir.is_absolute()
    {
        problems.push(format!("log.dir: {dir:?} must be an absolute path"));
    }
    LogConfig {
        level: raw.level,
        format: raw.format,
        dir: raw.dir,
        rotation: raw.rotation,
        keep_files: raw.keep_files,
    }
}

/// The top-level `shutdown_grace`.
fn shutdown_grace(text: Option<&str>, problems: &mut Vec<String>) -> std::time::Duration {
    match text {
        None => DEFAULT_SHUTDOWN_GRACE,
        Some(text) => humantime::parse_duration(text).unwrap_or_else(|e| {
            problems.push(format!(
                "shutdown_grace: invalid duration \"{text}\" ({e}); use e.g. \"30s\" or \"2m\" (\"0s\": abandon at once)"
            ));
            DEFAULT_SHUTDOWN_GRACE
        }),
    }
}

/// `[server]`: the listen address and the token file.
fn server(
    raw: Option<&raw::RawServer>,
    problems: &mut Vec<String>,
) -> (Option<std::net::SocketAddr>, Option<Secret>) {
    let listen = raw.and_then(|s| {
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
        .and_then(|s| s.token_file.as_deref())
        .and_then(|f| read_secret(f, "server.token_file", problems));
    (listen, server_token)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

const NAME_RULE: &str = "use 1-64 characters from a-z, A-Z, 0-9, '-' and '_'";
