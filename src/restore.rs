//! Find a published backup and stream it back: storage → sha256 check → decompress → the
//! source's restore tool. Nothing is written to disk on the way.

use std::time::Instant;

use tracing::{info, warn};

use crate::codec;
use crate::config::{Config, Job, PostgresConfig, SourceConfig};
use crate::manifest::{self, JobListing, Manifest};
use crate::pipeline::human_bytes;
use crate::source::{self, RestoreOptions, SourceError};
use crate::storage::{self, Storage};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub job: String,
    /// An id, a unique prefix of one, or "latest".
    pub id: String,
    pub to: String,
    pub from: Option<String>,
    pub only: Option<String>,
    pub clean: bool,
    pub no_owner: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Storage(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

pub fn find_job<'a>(config: &'a Config, name: &str) -> Result<&'a Job, RestoreError> {
    config.jobs.get(name).ok_or_else(|| {
        RestoreError::Usage(format!(
            "unknown job \"{name}\"; jobs in {}: {}",
            config.path.display(),
            config.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Resolve "latest", a full id or a unique id prefix against a newest-first list.
pub fn resolve_id(ids: &[String], wanted: &str) -> Result<Option<String>, String> {
    if wanted == "latest" {
        return Ok(ids.first().cloned());
    }
    if ids.iter().any(|i| i == wanted) {
        return Ok(Some(wanted.to_string()));
    }
    let matches: Vec<&String> = ids.iter().filter(|i| i.starts_with(wanted)).collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(Some(matches[0].clone())),
        _ => Err(format!(
            "\"{wanted}\" matches {} backups ({}); give more of the id",
            matches.len(),
            matches
                .iter()
                .take(5)
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

pub async fn restore(config: &Config, req: &RestoreRequest) -> Result<Manifest, RestoreError> {
    let job = find_job(config, &req.job)?;
    let candidates: Vec<String> = match &req.from {
        Some(d) => {
            if !config.destinations.contains_key(d) {
                return Err(RestoreError::Usage(format!(
                    "unknown destination \"{d}\" in --from; destinations: {}",
                    config
                        .destinations
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            vec![d.clone()]
        }
        None => job.destinations.clone(),
    };

    // First destination (in the job's order) that has the backup wins; an unreachable
    // one is skipped so a dead S3 endpoint does not block a restore from the local volume.
    let mut found: Option<(Box<dyn Storage>, String, String)> = None;
    let mut tried = Vec::new();
    for name in &candidates {
        let Some(dest) = config.destinations.get(name) else {
            continue;
        };
        let st = storage::open(dest).await;
        let listing = match JobListing::read(st.as_ref(), &job.name).await {
            Ok(l) => l,
            Err(e) => {
                warn!(destination = %name, "cannot list {name}: {e}");
                tried.push(format!("{name} (unreachable: {e})"));
                continue;
            }
        };
        let ids: Vec<String> = listing
            .published(&job.name)
            .into_iter()
            .map(|p| p.id)
            .collect();
        match resolve_id(&ids, &req.id).map_err(RestoreError::Usage)? {
            Some(id) => {
                found = Some((st, name.clone(), id));
                break;
            }
            None => tried.push(format!("{name} ({} backups)", ids.len())),
        }
    }
    let Some((st, dest_name, id)) = found else {
        return Err(RestoreError::NotFound(format!(
            "no published backup \"{}\" of job \"{}\" in: {}; see `stowage list {}`",
            req.id,
            job.name,
            tried.join(", "),
            job.name
        )));
    };

    let manifest = manifest::read_manifest(st.as_ref(), &job.name, &id)
        .await
        .map_err(|e| RestoreError::Storage(e.to_string()))?;
    let pg: Vec<&manifest::SourceEntry> = manifest
        .sources
        .iter()
        .filter(|s| s.kind == "postgres")
        .filter(|s| req.only.as_ref().is_none_or(|o| *o == s.name))
        .collect();
    let entry = match pg.as_slice() {
        [one] => *one,
        [] => {
            return Err(RestoreError::NotFound(format!(
                "backup {id} has no postgres source{}",
                req.only
                    .as_ref()
                    .map(|o| format!(" named \"{o}\""))
                    .unwrap_or_default()
            )));
        }
        many => {
            return Err(RestoreError::Usage(format!(
                "backup {id} has {} postgres sources ({}); choose one with --only NAME",
                many.len(),
                many.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    };

    // Restore with the job's own tool settings when the source still exists in config.
    let bin_dir = job.sources.iter().find_map(|s| match s {
        SourceConfig::Postgres(p) if p.name == entry.name => p.bin_dir.clone(),
        _ => None,
    });
    let target = crate::config::PgUrl::from_target(&req.to)
        .map_err(|e| RestoreError::Usage(format!("invalid --to URL \"{}\": {e}", req.to)))?;
    let src = source::build(&SourceConfig::Postgres(PostgresConfig {
        name: entry.name.clone(),
        url: target,
        bin_dir,
    }));

    info!(
        job = %job.name,
        id = %id,
        destination = %dest_name,
        "restoring {} ({}, {}) from {} into {}",
        entry.name,
        entry.format,
        human_bytes(entry.size),
        dest_name,
        crate::config::PgUrl::from_target(&req.to).map(|u| u.to_string()).unwrap_or_default()
    );
    let t0 = Instant::now();
    let raw = st
        .get(&entry.key)
        .await
        .map_err(|e| RestoreError::Storage(format!("{dest_name}: {e}")))?;
    let verified = codec::Verify::new(raw, &entry.sha256, entry.size, &entry.key);
    let data = codec::decompress(Box::new(verified), manifest.compression);
    src.restore(
        data,
        &RestoreOptions {
            target: req.to.clone(),
            clean: req.clean,
            no_owner: req.no_owner,
        },
    )
    .await?;
    info!(
        job = %job.name,
        id = %id,
        "restore finished: {} restored in {:.1}s (sha256 verified)",
        entry.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::resolve_id;

    #[test]
    fn ids() {
        let ids = vec![
            "20261122T030000.000Z".to_string(),
            "20261121T030000.000Z".to_string(),
        ];
        assert_eq!(resolve_id(&ids, "latest"), Ok(Some(ids[0].clone())));
        assert_eq!(resolve_id(&ids, "20261121"), Ok(Some(ids[1].clone())));
        assert_eq!(resolve_id(&ids, "2027"), Ok(None));
        assert!(resolve_id(&ids, "2026").is_err());
        assert_eq!(resolve_id(&[], "latest"), Ok(None));
    }
}
