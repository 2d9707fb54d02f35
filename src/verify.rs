//! `stowage verify`: prove that published backups are whole and readable, without
//! restoring them. Per backup and destination, every object is re-read, streamed: its size
//! and sha256 against the manifest; a database dump also through its engine's own reader
//! (`pg_restore --list` for PostgreSQL); a files source's index, and that every blob it
//! names exists. On an archive tier an object not retrieved is checked by size only.

use std::collections::HashMap;

use serde::Serialize;

use std::sync::Arc;

use crate::codec::{self, Packing};
use crate::config::{Config, Job};
use crate::crypt::Keys;
use crate::manifest::{self, JobListing, Manifest, SourceEntry};
use crate::pipeline::human_bytes;
use crate::restore::{self, RestoreError};
use crate::storage::{self, Retrieval, Storage};

/// Which backups to verify.
#[derive(Debug, Clone)]
pub enum Which {
    /// An id, a unique prefix of one, or "latest".
    One(String),
    All,
}

#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    pub id: String,
    pub destination: String,
    /// What was found good, one phrase per source.
    pub ok: Vec<String>,
    /// Each missing, corrupt or unreadable object, named.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub job: String,
    pub checked: Vec<Checked>,
    /// Destinations that could not be listed.
    pub unreachable: Vec<String>,
}

impl VerifyReport {
    pub fn problems(&self) -> usize {
        self.problem_lines().len()
    }

    /// Every problem, each naming its backup and destination.
    pub fn problem_lines(&self) -> Vec<String> {
        self.checked
            .iter()
            .flat_map(|c| {
                c.problems
                    .iter()
                    .map(move |p| format!("{} on {}: {p}", c.id, c.destination))
            })
            .chain(self.unreachable.iter().cloned())
            .collect()
    }

    /// One line per backup and destination, then its problems indented.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.checked {
            if c.problems.is_empty() {
                out.push(format!(
                    "verify {} {} on {}: ok ({})",
                    self.job,
                    c.id,
                    c.destination,
                    c.ok.join("; ")
                ));
            } else {
                out.push(format!(
                    "verify {} {} on {}: {} problem(s)",
                    self.job,
                    c.id,
                    c.destination,
                    c.problems.len()
                ));
                out.extend(c.problems.iter().map(|p| format!("  {p}")));
            }
        }
        out.extend(
            self.unreachable
                .iter()
                .map(|u| format!("verify {}: {u}", self.job)),
        );
        out
    }

    /// The one summary line.
    pub fn summary(&self) -> String {
        let n = self.checked.len();
        match self.problems() {
            0 => format!(
                "verify {}: {n} backup copy(ies) checked, all whole and readable",
                self.job
            ),
            p => format!(
                "verify {}: {n} backup copy(ies) checked, {p} problem(s)",
                self.job
            ),
        }
    }
}

/// Verify `which` backups of `job` on `from` (default: every destination of the job).
/// `keys` read encrypted backups; without them an encrypted object is checked by its
/// size and sha256 only (and a files source by its clear blob list). A backup the job must
/// not read (`codec::Expect`) is a problem, unless `trust_unauthenticated`.
pub async fn verify(
    config: &Config,
    job: &Job,
    which: &Which,
    from: Option<&str>,
    keys: Option<Arc<Keys>>,
    trust_unauthenticated: bool,
) -> Result<VerifyReport, RestoreError> {
    let expect = codec::Expect::of(job, trust_unauthenticated);
    let mut report = VerifyReport {
        job: job.name.clone(),
        ..VerifyReport::default()
    };
    let mut stores = storage::open_job(config, job).await;
    if let Some(f) = from {
        if !job.destinations.iter().any(|d| d == f) {
            return Err(RestoreError::Usage(format!(
                "--from {f}: job \"{}\" has no destination \"{f}\"; its destinations: {}",
                job.name,
                job.destinations.join(", ")
            )));
        }
        stores.retain(|s| s.name == f);
    }
    for st in &stores {
        let listing = match JobListing::read(st.storage.as_ref(), &job.name).await {
            Ok(l) => l,
            Err(e) => {
                report
                    .unreachable
                    .push(format!("{} could not be listed: {e}", st.name));
                continue;
            }
        };
        let ids: Vec<String> = listing
            .published(&job.name)
            .into_iter()
            .map(|p| p.id)
            .collect();
        let chosen: Vec<String> = match which {
            Which::All => ids.clone(),
            Which::One(want) => {
                match restore::resolve_id(&ids, want).map_err(RestoreError::Usage)? {
                    Some(id) => vec![id],
                    // Verifying one id on every destination: one that lacks it is not checked.
                    None if from.is_none() && want != "latest" => continue,
                    None => {
                        report.unreachable.push(format!(
                            "{} has no published backup \"{want}\" ({} backup{})",
                            st.name,
                            ids.len(),
                            if ids.len() == 1 { "" } else { "s" }
                        ));
                        continue;
                    }
                }
            }
        };
        let sizes: HashMap<&str, u64> = listing
            .backups
            .values()
            .flatten()
            .chain(&listing.blobs)
            .map(|o| (o.key.as_str(), o.size))
            .collect();
        let archived = restore::archive_class(config, st.name).is_some();
        for id in chosen {
            let mut c = Checked {
                id: id.clone(),
                destination: st.name.to_string(),
                ok: Vec::new(),
                problems: Vec::new(),
            };
            match manifest::read_manifest(st.storage.as_ref(), &job.name, &id).await {
                Ok(m) => match Packing::of(&m, &expect, keys.clone()) {
                    Ok(packing) => {
                        check_backup(
                            job,
                            st.storage.as_ref(),
                            &m,
                            &packing,
                            &sizes,
                            archived,
                            &mut c,
                        )
                        .await
                    }
                    Err(e) => c.problems.push(format!("manifest: {e}")),
                },
                Err(e) => c.problems.push(format!("manifest: unreadable: {e}")),
            }
            report.checked.push(c);
        }
    }
    if report.checked.is_empty() && report.unreachable.is_empty() {
        return Err(RestoreError::NotFound(format!(
            "no published backup \"{}\" of job \"{}\" to verify; see `stowage list {}`",
            match which {
                Which::One(id) => id.as_str(),
                Which::All => "*",
            },
            job.name,
            job.name
        )));
    }
    Ok(report)
}

async fn check_backup(
    job: &Job,
    storage: &dyn Storage,
    m: &Manifest,
    packing: &Packing,
    sizes: &HashMap<&str, u64>,
    archived: bool,
    c: &mut Checked,
) {
    for entry in &m.sources {
        let name = &entry.name;
        let Some(&stored) = sizes.get(entry.key.as_str()) else {
            c.problems.push(format!("{name}: {} is missing", entry.key));
            continue;
        };
        if stored != entry.size {
            c.problems.push(format!(
                "{name}: {} is corrupt: {stored} bytes stored, the manifest says {}",
                entry.key, entry.size
            ));
            continue;
        }
        if archived && entry.files.is_none() {
            match storage.retrieval(&entry.key).await {
                Ok(Retrieval::Archived | Retrieval::Pending) => {
                    c.ok.push(format!(
                        "{name}: {} archived, size checked only (retrieve it for a full check)",
                        human_bytes(entry.size)
                    ));
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    c.problems.push(format!("{name}: cannot check: {e}"));
                    continue;
                }
            }
        }
        let result = if entry.files.is_some() {
            check_files(storage, entry, packing, sizes).await
        } else {
            check_database(job, storage, entry, packing).await
        };
        match result {
            Ok(ok) => c.ok.push(format!("{name}: {ok}")),
            Err(problems) => c
                .problems
                .extend(problems.into_iter().map(|p| format!("{name}: {p}"))),
        }
    }
}

/// The dump: its bytes against the manifest, then through the engine's reader.
async fn check_database(
    job: &Job,
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<String, Vec<String>> {
    let raw = storage
        .get(&entry.key)
        .await
        .map_err(|e| vec![format!("{} cannot be read: {e}", entry.key)])?;
    let progress =
        crate::progress::Progress::new(format!("verify {}: read", entry.key), Some(entry.size));
    let raw = crate::progress::counted(raw, progress.clone());
    let verified = codec::Verify::new(raw, &entry.sha256, entry.size, &entry.key);
    read_checked(verified, packing, &entry.key).await?;
    let Some(db) = restore::database_for(job, entry) else {
        return Ok(format!(
            "{}, sha256 ok (engine \"{}\" unknown here: not read further)",
            human_bytes(entry.size),
            entry.kind
        ));
    };
    if packing.encrypted && packing.keys.is_none() {
        return Ok(format!(
            "{}, sha256 ok (encrypted: give --identity to also check that {} reads it)",
            human_bytes(entry.size),
            db.kind()
        ));
    }
    let archive = restore::StoredArchive::new(storage, entry, packing, "verify");
    let objects = db
        .archive_objects(&archive)
        .await
        .map_err(|e| vec![format!("{} is unreadable by {}: {e}", entry.key, db.kind())])?;
    Ok(format!(
        "{}, sha256 ok, {} reads it ({} table(s) or collection(s))",
        human_bytes(entry.size),
        db.kind(),
        objects.len()
    ))
}

/// Read `r` to its end (so its sha256 is checked); an object of an encrypted backup must
/// also be an age file, which is checked here even without the key to open it: a clear
/// object with a matching sha256 is what a bucket writer would plant.
async fn read_checked(
    mut r: codec::Verify,
    packing: &Packing,
    key: &str,
) -> Result<(), Vec<String>> {
    use tokio::io::AsyncReadExt;
    let magic = crate::crypt::MAGIC;
    let mut head = Vec::with_capacity(magic.len());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| vec![e.to_string()])?;
        if n == 0 {
            break;
        }
        if head.len() < magic.len() {
            let take = n.min(magic.len() - head.len());
            head.extend_from_slice(&buf[..take]);
        }
    }
    if packing.encrypted && head != magic {
        return Err(vec![format!(
            "{key} is not an age file, and the backup says it is encrypted: refusing it (a clear object planted by whoever can write to the destination, or damage)"
        )]);
    }
    Ok(())
}

/// A files source: the index (its sha256), and every blob it names present.
async fn check_files(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
    sizes: &HashMap<&str, u64>,
) -> Result<String, Vec<String>> {
    // Without the key, an encrypted index is checked by its sha256 and the blobs by the
    // clear list the backup keeps for sweeps.
    if packing.encrypted
        && packing.keys.is_none()
        && let Some(r) = &entry.refs
    {
        let raw = storage
            .get(&entry.key)
            .await
            .map_err(|e| vec![format!("index {} cannot be read: {e}", entry.key)])?;
        let verified = codec::Verify::new(raw, &entry.sha256, entry.size, &entry.key);
        read_checked(verified, packing, &entry.key).await?;
        let blobs = crate::blobs::read_refs(storage, r, packing.compression)
            .await
            .map_err(|e| vec![format!("blob list {}: {e}", r.key)])?;
        let problems: Vec<String> = blobs
            .iter()
            .filter(|b| !sizes.contains_key(b.as_str()))
            .map(|b| format!("blob {b} is missing"))
            .collect();
        return if problems.is_empty() {
            Ok(format!(
                "index sha256 ok (encrypted: give --identity to read it), all {} blob(s) present",
                blobs.len()
            ))
        } else {
            Err(problems)
        };
    }
    let index = crate::blobs::read_index(storage, entry, packing)
        .await
        .map_err(|e| vec![format!("index {}: {e}", entry.key)])?;
    let mut problems = Vec::new();
    let mut blobs: Vec<&str> = index.files.iter().map(|f| f.blob.as_str()).collect();
    blobs.sort_unstable();
    blobs.dedup();
    for f in &index.files {
        if !sizes.contains_key(f.blob.as_str()) {
            problems.push(format!("blob {} is missing (file {})", f.blob, f.path));
        }
    }
    if problems.is_empty() {
        Ok(format!(
            "index ok, {} file(s), all {} blob(s) present",
            index.files.len(),
            blobs.len()
        ))
    } else {
        Err(problems)
    }
}
