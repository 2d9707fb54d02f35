//! Which backups each destination of a job holds, changed by hand: `copy` puts published
//! backups of one destination on another (every object checked on the way, the manifest
//! last), `forget` deletes one chosen backup (manifest first, then its objects, then the
//! blobs nothing references any more). Both take the job's lock where they write, as a
//! run does, so neither overlaps a run, its retention or a restore.

pub mod copy;
pub mod forget;

use crate::config::{Config, Destination, Job};

/// A destination named on the command line, checked to be one of `job`'s; the error names
/// the job's destinations.
pub fn job_destination<'c>(
    config: &'c Config,
    job: &Job,
    flag: &str,
    name: &str,
) -> Result<&'c Destination, String> {
    let known = || job.destinations.join(", ");
    if !job.destinations.iter().any(|d| d == name) {
        return Err(format!(
            "{flag} {name}: \"{name}\" is not a destination of job {}; its destinations: {}",
            job.name,
            known()
        ));
    }
    config.destinations.get(name).ok_or_else(|| {
        format!(
            "{flag} {name}: no destination \"{name}\" in {}; job {}'s destinations: {}",
            config.path.display(),
            job.name,
            known()
        )
    })
}
