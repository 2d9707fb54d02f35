//! Reading the config: the file and the `STOWAGE_…` environment merged by figment, then
//! validated purely into `crate::config`'s types. The only I/O here is reading the config
//! file and checking that the secret files it names are readable. Every problem is reported
//! at once, one line each naming its key.
//!
//! The steps, one file each: `read` (figment, going on past bad keys), `diagnose` (what a
//! serde error means to the user: unknown keys, typos, which environment variable set a
//! value) and `validate` (one function per section). A source's section goes to its engine
//! through the registry (`crate::source::find`), as a `crate::section::Section`: this module
//! sits above the registries, the config types below them.

mod diagnose;
mod read;
mod validate;

use std::path::Path;

use crate::config::{Config, ConfigError};

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
    let figment = read::figment(path, use_env)?;
    let invalid = |mut problems: Vec<String>| {
        diagnose::sort_problems(&mut problems);
        ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        }
    };
    let (raw, reading) = read::read_raw(&figment).map_err(invalid)?;
    let env_only = |mut problems: Vec<String>| {
        // What the file and the environment each define, to tell a job only the
        // environment made.
        if let Some((file, env)) = use_env.then(|| read::origins(path)).flatten() {
            let jobs = diagnose::env_only_jobs(&file, &env);
            diagnose::report_env_only_jobs(&mut problems, &jobs, &file);
        }
        invalid(problems)
    };
    match validate::validate(path, raw) {
        Ok(config) if reading.problems.is_empty() => Ok(config),
        Ok(_) => Err(env_only(reading.problems.clone())),
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
            Err(env_only(problems))
        }
    }
}

/// `STOWAGE_<NAME>` variables stowage reads for itself (`STOWAGE_CONFIG`, the daemon's pid
/// and state files) or sets for its child processes (restore commands, hooks: a hook may
/// well run `stowage` itself): never config keys.
pub const OWN_VARIABLES: [&str; 13] = [
    "config",
    "pid_file",
    "state_file",
    "restore_target",
    "restore_clean",
    "progress_interval",
    "job",
    "run_id",
    "source",
    "hook",
    "outcome",
    "bytes_in",
    "bytes_out",
];
