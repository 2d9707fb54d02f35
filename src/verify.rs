//! `stowage verify`: prove that published backups are whole and readable, without
//! restoring them. Per backup and destination, every object is re-read, streamed: its size
//! and sha256 against the manifest; a database dump also through its engine's own reader
//! (`pg_restore --list` for PostgreSQL); a files source's index, and that every blob it
//! names exists. On an archive tier an object not retrieved is checked by size only.
//!
//! Blob presence says nothing of a blob's bytes: `--read-data` (and a scheduled verify's
//! `read_data = "10%"`) also reads blobs back, decrypted and decompressed as a restore
//! does, and checks each one's size and sha256 against the index. A fraction is a fresh
//! random sample on every run, so over runs every blob is read.

use std::collections::{BTreeMap, HashMap};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use serde::Serialize;

use std::sync::Arc;

use crate::codec;
pub use crate::config::ReadData;
use crate::config::{Config, Job};
use crate::crypt::Keys;
use crate::engine::ArchiveCheck;
use crate::repo::Repository;
use crate::repo::manifest::{self, Manifest, SourceEntry};
use crate::repo::packing::{self, Packing};
use crate::restore::{self, RestoreError};
use crate::storage::{self, Retrieval, Storage};
use crate::units::human_bytes;
use crate::wal::chain;

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
    /// Blobs whose content was read back (`--read-data`), all files sources together.
    #[serde(skip_serializing_if = "ReadTally::is_empty")]
    pub read_data: ReadTally,
}

/// What `--read-data` read of one backup copy's blobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReadTally {
    /// Distinct blobs the backup's indexes name.
    pub blobs: u64,
    /// Of those, read back and checked (the sample, for a fraction).
    pub read: u64,
    /// Bytes of content read back intact.
    pub bytes: u64,
    /// Found damaged or unreadable.
    pub bad: u64,
}

impl ReadTally {
    pub fn is_empty(&self) -> bool {
        *self == ReadTally::default()
    }

    fn add(&mut self, other: ReadTally) {
        self.blobs += other.blobs;
        self.read += other.read;
        self.bytes += other.bytes;
        self.bad += other.bad;
    }
}

/// What to check beyond sizes, sha256 and presence.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    pub read_data: ReadData,
    /// Read backups whose manifest fails the job's auth_key_file (disaster recovery).
    pub trust_unauthenticated: bool,
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

    /// Blob contents read back, over every copy checked.
    pub fn read_data(&self) -> ReadTally {
        let mut t = ReadTally::default();
        for c in &self.checked {
            t.add(c.read_data);
        }
        t
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
        let t = self.read_data();
        let read = if t.is_empty() {
            String::new()
        } else {
            format!(
                "; blob data: {} of {} blob(s) read ({}), {} bad",
                t.read,
                t.blobs,
                human_bytes(t.bytes),
                t.bad
            )
        };
        match self.problems() {
            0 => format!(
                "verify {}: {n} backup copy(ies) checked, all whole and readable{read}",
                self.job
            ),
            p => format!(
                "verify {}: {n} backup copy(ies) checked, {p} problem(s){read}",
                self.job
            ),
        }
    }
}

/// Verify `which` backups of `job` on `from` (default: every destination of the job).
/// `keys` read encrypted backups; without them an encrypted object is checked by its
/// size and sha256 only (and a files source by its clear blob list). A backup the job must
/// not read (`packing::Expect`) is a problem, unless `trust_unauthenticated`.
pub async fn verify(
    config: &Config,
    job: &Job,
    which: &Which,
    from: Option<&str>,
    keys: Option<Arc<Keys>>,
    trust_unauthenticated: bool,
) -> Result<VerifyReport, RestoreError> {
    verify_with(
        config,
        job,
        which,
        from,
        keys,
        Options {
            trust_unauthenticated,
            ..Options::default()
        },
    )
    .await
}

/// [`verify`], also reading blob contents as `opts` asks.
pub async fn verify_with(
    config: &Config,
    job: &Job,
    which: &Which,
    from: Option<&str>,
    keys: Option<Arc<Keys>>,
    opts: Options,
) -> Result<VerifyReport, RestoreError> {
    let expect = packing::Expect::of(job, opts.trust_unauthenticated);
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
        let repo = Repository::new(st.storage.as_ref(), &job.name);
        let listing = match repo.listing().await {
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
        // Each source's WAL on this destination, read once for all its backups.
        let mut shipped = HashMap::new();
        for id in chosen {
            let mut c = Checked {
                id: id.clone(),
                destination: st.name.to_string(),
                ok: Vec::new(),
                problems: Vec::new(),
                read_data: ReadTally::default(),
            };
            match repo.manifest(&id).await {
                Ok(m) => match repo.packing(&m, &expect, keys.clone()) {
                    Ok(packing) => {
                        check_backup(
                            job,
                            st.storage.as_ref(),
                            &m,
                            &packing,
                            Listed {
                                sizes: &sizes,
                                archived,
                            },
                            opts,
                            &mut c,
                        )
                        .await;
                        let wal = WalCheck {
                            expect: &expect,
                            keys: packing.keys.as_ref(),
                        };
                        check_wal(job, st.storage.as_ref(), &m, wal, &mut shipped, &mut c).await;
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

/// What a destination's listing says: stored sizes by key, and whether it is an archive
/// tier (objects there may need a retrieval before they can be read).
#[derive(Clone, Copy)]
struct Listed<'a> {
    sizes: &'a HashMap<&'a str, u64>,
    archived: bool,
}

async fn check_backup(
    job: &Job,
    storage: &dyn Storage,
    m: &Manifest,
    packing: &Packing,
    listed: Listed<'_>,
    opts: Options,
    c: &mut Checked,
) {
    let Listed { sizes, archived } = listed;
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
        let checked = if entry.files.is_some() {
            check_files(
                Repository::new(storage, &job.name),
                entry,
                packing,
                sizes,
                archived,
                opts.read_data,
            )
            .await
        } else {
            SourceChecked::from(
                check_database(job, Repository::new(storage, &job.name), entry, packing).await,
            )
        };
        c.read_data.add(checked.read);
        match checked.result {
            Ok(ok) => c.ok.push(format!("{name}: {ok}")),
            Err(problems) => c
                .problems
                .extend(problems.into_iter().map(|p| format!("{name}: {p}"))),
        }
    }
}

/// A physical source's WAL on this destination: the chain from the backup's first WAL file
/// to the newest shipped must be whole, or every point-in-time restore from the backup stops
/// at the hole.
/// How shipped WAL is read: records checked as a fetch would, history files decrypted with
/// the keys when the job encrypts (they give the timelines' switch points).
#[derive(Clone, Copy)]
struct WalCheck<'a> {
    expect: &'a packing::Expect,
    keys: Option<&'a std::sync::Arc<crate::crypt::Keys>>,
}

async fn check_wal(
    job: &Job,
    storage: &dyn Storage,
    m: &Manifest,
    wal: WalCheck<'_>,
    shipped: &mut HashMap<String, Result<chain::Shipped, String>>,
    c: &mut Checked,
) {
    for entry in &m.sources {
        let Some(pos) = &entry.wal else { continue };
        let name = &entry.name;
        let Some(first) = pos.first_file() else {
            c.problems.push(format!(
                "{name}: the backup's WAL start \"{}\" is not an LSN: its WAL cannot be checked",
                pos.start_lsn.escape_debug()
            ));
            continue;
        };
        if !shipped.contains_key(name) {
            let read = chain::shipped_on_with(storage, &job.name, name, wal.expect, wal.keys)
                .await
                .map_err(|e| e.to_string());
            shipped.insert(name.clone(), read);
        }
        let on = match shipped.get(name) {
            Some(Ok(on)) => on,
            Some(Err(e)) => {
                c.problems
                    .push(format!("{name}: the shipped WAL cannot be read: {e}"));
                continue;
            }
            None => continue,
        };
        let chain = match on.chain_from(&first) {
            Ok(chain) => chain,
            Err(e) => {
                c.problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        let stop = pos.stop_time.format("%Y-%m-%d %H:%M:%S UTC");
        if chain.missing_count > 0 {
            c.problems.push(format!(
                "{name}: WAL has a gap: {} between base backup {} and the newest WAL{}; point-in-time recovery from this backup stops before {}",
                chain.describe_missing(),
                m.id,
                chain
                    .newest
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                chain.missing[0]
            ));
            continue;
        }
        c.ok.push(match (&chain.newest, on.newest_at) {
            (Some(newest), Some(at)) => format!(
                "{name}: WAL whole from {first} to {newest}, recoverable from {stop} to {}",
                at.format("%Y-%m-%d %H:%M:%S UTC")
            ),
            _ => format!(
                "{name}: no WAL shipped from {first} on, recoverable to the end of the base backup ({stop}) only"
            ),
        });
    }
}

/// One source's outcome: a phrase for what is good, or its problems; and what was read
/// of its blobs.
struct SourceChecked {
    result: Result<String, Vec<String>>,
    read: ReadTally,
}

impl From<Result<String, Vec<String>>> for SourceChecked {
    fn from(result: Result<String, Vec<String>>) -> SourceChecked {
        SourceChecked {
            result,
            read: ReadTally::default(),
        }
    }
}

/// The dump: its bytes against the manifest, then through the engine's reader.
async fn check_database(
    job: &Job,
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<String, Vec<String>> {
    let progress =
        crate::progress::Progress::new(format!("verify {}: read", entry.key), Some(entry.size));
    let verified = repo
        .read_verified(entry, Some(&progress))
        .await
        .map_err(|e| vec![format!("{} cannot be read: {e}", entry.key)])?;
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
    let archive = repo.archive(entry, packing, "verify");
    let checked = db
        .check_archive(&archive)
        .await
        .map_err(|e| vec![format!("{} is unreadable by {}: {e}", entry.key, db.kind())])?;
    Ok(match checked {
        ArchiveCheck::Objects(objects) => format!(
            "{}, sha256 ok, {} reads it ({} table(s) or collection(s))",
            human_bytes(entry.size),
            db.kind(),
            objects.len()
        ),
        ArchiveCheck::Whole(what) => format!("{}, sha256 ok, {what}", human_bytes(entry.size)),
    })
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

/// A files source: the index (its sha256), every blob it names present, and with
/// `read_data` the content of every blob (or a random share of them) read back.
async fn check_files(
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
    sizes: &HashMap<&str, u64>,
    archived: bool,
    read_data: ReadData,
) -> SourceChecked {
    // Without the key, an encrypted index is checked by its sha256 and the blobs by the
    // clear list the backup keeps for sweeps.
    if packing.encrypted
        && packing.keys.is_none()
        && let Some(r) = &entry.refs
    {
        let result = check_index_without_key(repo, entry, packing, sizes, r, read_data).await;
        return SourceChecked::from(result);
    }
    let index = match repo.read_index(entry, packing).await {
        Ok(i) => i,
        Err(e) => return SourceChecked::from(Err(vec![format!("index {}: {e}", entry.key)])),
    };
    let mut problems = Vec::new();
    let blobs = blob_uses(&index, entry, &mut problems);
    for f in &index.files {
        if !sizes.contains_key(f.blob.as_str()) {
            problems.push(format!("blob {} is missing (file {})", f.blob, f.path));
        }
    }
    let present: Vec<(&str, &BlobUse<'_>)> = blobs
        .iter()
        .filter(|(b, _)| sizes.contains_key(*b))
        .map(|(b, u)| (*b, u))
        .collect();
    let (read, archived_blobs) = read_blobs(
        repo.storage(),
        packing,
        &blobs,
        present,
        archived,
        read_data,
        &mut problems,
    )
    .await;
    let result = if problems.is_empty() {
        let mut ok = format!(
            "index ok, {} file(s), all {} blob(s) present",
            index.files.len(),
            blobs.len()
        );
        if read_data != ReadData::None {
            ok.push_str(&format!(
                ", {} read back intact ({}; read_data {read_data})",
                read.read,
                human_bytes(read.bytes)
            ));
            if archived_blobs > 0 {
                ok.push_str(&format!(
                    ", {archived_blobs} archived and not read (retrieve them for a full check)"
                ));
            }
        }
        Ok(ok)
    } else {
        Err(problems)
    };
    SourceChecked { result, read }
}

/// Checks an encrypted files source without its key: the index by its sha256, the blobs
/// by the clear list the backup keeps for sweeps.
async fn check_index_without_key(
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
    sizes: &HashMap<&str, u64>,
    r: &manifest::StoredRef,
    read_data: ReadData,
) -> Result<String, Vec<String>> {
    let verified = repo
        .read_verified(entry, None)
        .await
        .map_err(|e| vec![format!("index {} cannot be read: {e}", entry.key)])?;
    read_checked(verified, packing, &entry.key).await?;
    let blobs = repo
        .read_refs(r, packing.compression)
        .await
        .map_err(|e| vec![format!("blob list {}: {e}", r.key)])?;
    let mut problems: Vec<String> = blobs
        .iter()
        .filter(|b| !sizes.contains_key(b.as_str()))
        .map(|b| format!("blob {b} is missing"))
        .collect();
    // Asked to read the blobs and unable to: that is not a pass.
    if read_data != ReadData::None {
        problems.push(format!(
            "blob data not read: the backup is encrypted and no identity was given (--identity FILE, or identity_file in the job's encryption) to decrypt its {} blob(s)",
            blobs.len()
        ));
    }
    if problems.is_empty() {
        Ok(format!(
            "index sha256 ok (encrypted: give --identity to read it), all {} blob(s) present",
            blobs.len()
        ))
    } else {
        Err(problems)
    }
}

/// Each distinct blob of `index`, with the content the index records for it and the files
/// using it; a blob recorded with two contents goes into `problems`.
fn blob_uses<'a>(
    index: &'a crate::repo::index::FileIndex,
    entry: &SourceEntry,
    problems: &mut Vec<String>,
) -> BTreeMap<&'a str, BlobUse<'a>> {
    let mut blobs: BTreeMap<&str, BlobUse<'_>> = BTreeMap::new();
    for f in &index.files {
        let use_ = blobs.entry(f.blob.as_str()).or_insert_with(|| BlobUse {
            sha256: &f.sha256,
            size: f.size,
            files: Vec::new(),
        });
        if use_.sha256 != f.sha256 || use_.size != f.size {
            problems.push(format!(
                "index {} records blob {} with two contents ({} and {})",
                entry.key, f.blob, use_.files[0], f.path
            ));
        }
        use_.files.push(&f.path);
    }
    blobs
}

/// With `read_data`, reads back the `present` blobs (or a sample of them); the damaged ones
/// go into `problems`. Returns the tally and how many were archived and not read.
async fn read_blobs(
    storage: &dyn Storage,
    packing: &Packing,
    blobs: &BTreeMap<&str, BlobUse<'_>>,
    present: Vec<(&str, &BlobUse<'_>)>,
    archived: bool,
    read_data: ReadData,
    problems: &mut Vec<String>,
) -> (ReadTally, u64) {
    let mut read = ReadTally::default();
    let mut archived_blobs = 0u64;
    if read_data != ReadData::None {
        read.blobs = blobs.len() as u64;
        let chosen = sample(present, read_data);
        let outcomes: Vec<(&str, &BlobUse<'_>, BlobRead)> =
            futures::stream::iter(chosen.into_iter().map(|(key, use_)| async move {
                let outcome = read_blob(storage, packing, key, use_, archived).await;
                (key, use_, outcome)
            }))
            .buffer_unordered(READ_CONCURRENCY)
            .collect()
            .await;
        let mut bad: Vec<String> = Vec::new();
        for (key, use_, outcome) in outcomes {
            match outcome {
                BlobRead::Intact(n) => {
                    read.read += 1;
                    read.bytes += n;
                }
                BlobRead::Archived => archived_blobs += 1,
                BlobRead::Bad(why) => {
                    read.read += 1;
                    read.bad += 1;
                    bad.push(format!("blob {key} {why} (used by {})", use_.named()));
                }
            }
        }
        bad.sort();
        problems.extend(bad);
    }
    (read, archived_blobs)
}

/// Blobs read at once: small blobs on S3 are bound by round trips, not bandwidth.
const READ_CONCURRENCY: usize = 8;
/// Files named per damaged blob; the rest are counted.
const FILES_NAMED: usize = 5;

/// One blob as an index uses it.
struct BlobUse<'a> {
    sha256: &'a str,
    size: u64,
    files: Vec<&'a str>,
}

impl BlobUse<'_> {
    fn named(&self) -> String {
        let mut s = self.files[..self.files.len().min(FILES_NAMED)].join(", ");
        if self.files.len() > FILES_NAMED {
            s.push_str(&format!(
                " and {} more file(s)",
                self.files.len() - FILES_NAMED
            ));
        }
        s
    }
}

/// The blobs to read: all, or a share drawn at random. Each run draws afresh (a new
/// random hash key per call), so a blob's chance of going unread for k runs at share p is
/// (1-p)^k: at 10%, 1% after 44 runs.
fn sample<T>(mut items: Vec<(&str, T)>, read_data: ReadData) -> Vec<(&str, T)> {
    let k = read_data.count(items.len());
    if k < items.len() {
        use std::hash::BuildHasher;
        let key = std::collections::hash_map::RandomState::new();
        items.sort_by_cached_key(|(name, _)| key.hash_one(name));
        items.truncate(k);
    }
    items
}

enum BlobRead {
    /// Read to the end, size and sha256 as the index records: its content bytes.
    Intact(u64),
    /// On an archive tier and not retrieved: not readable now, not damaged either.
    Archived,
    Bad(BlobFault),
}

/// Why a blob read back is not intact, phrased to follow "blob KEY".
#[derive(Debug, thiserror::Error)]
enum BlobFault {
    #[error("cannot be checked: {0}")]
    Unchecked(#[source] storage::StorageError),
    #[error("cannot be read: {0}")]
    Unreadable(#[source] storage::StorageError),
    #[error("cannot be decrypted: {0}")]
    Undecryptable(#[source] Box<crate::crypt::CryptError>),
    #[error("is corrupt: {0}")]
    Damaged(#[source] std::io::Error),
    #[error(
        "is corrupt: expected {size} bytes with sha256 {sha256}, got {got_size} bytes with sha256 {got_sha256}"
    )]
    Mismatch {
        size: u64,
        sha256: String,
        got_size: u64,
        got_sha256: String,
    },
}

/// Read one blob back as a restore would (decrypted, decompressed) and check its content.
async fn read_blob(
    storage: &dyn Storage,
    packing: &Packing,
    key: &str,
    use_: &BlobUse<'_>,
    archived: bool,
) -> BlobRead {
    if archived {
        match storage.retrieval(key).await {
            Ok(Retrieval::Archived | Retrieval::Pending) => return BlobRead::Archived,
            Ok(_) => {}
            Err(e) => return BlobRead::Bad(BlobFault::Unchecked(e)),
        }
    }
    let raw = match storage.get(key).await {
        Ok(r) => r,
        Err(e) => return BlobRead::Bad(BlobFault::Unreadable(e)),
    };
    let mut r = match packing.unpack(raw, key).await {
        Ok(r) => r,
        Err(e) => return BlobRead::Bad(BlobFault::Undecryptable(Box::new(e))),
    };
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) => break,
            Ok(k) => {
                h.update(&buf[..k]);
                n += k as u64;
            }
            Err(e) => return BlobRead::Bad(BlobFault::Damaged(e)),
        }
    }
    let sha = hex::encode(h.finalize());
    if sha != use_.sha256 || n != use_.size {
        return BlobRead::Bad(BlobFault::Mismatch {
            size: use_.size,
            sha256: use_.sha256.to_string(),
            got_size: n,
            got_sha256: sha,
        });
    }
    BlobRead::Intact(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_data_values() {
        assert_eq!(ReadData::parse("10%"), Ok(ReadData::Share(1000)));
        assert_eq!(ReadData::parse(" 2.5% "), Ok(ReadData::Share(250)));
        assert_eq!(ReadData::parse("0.01%"), Ok(ReadData::Share(1)));
        assert_eq!(ReadData::parse("100%"), Ok(ReadData::All));
        assert_eq!(ReadData::parse("all"), Ok(ReadData::All));
        assert_eq!(ReadData::parse("ALL"), Ok(ReadData::All));
        let e = ReadData::parse("110%").expect_err("over 100");
        assert!(
            e.contains("\"110%\" is more than 100%") && e.contains("\"10%\""),
            "{e}"
        );
        let e = ReadData::parse("ten").expect_err("words");
        assert!(e.contains("\"ten\" is not a percentage"), "{e}");
        for bad in [
            "10", "%", "", "-5%", "1e2%", "1.2.3%", "NaN%", "inf%", "10 %x",
        ] {
            assert!(ReadData::parse(bad).is_err(), "{bad}");
        }
        for nothing in ["0%", "0.001%"] {
            let e = ReadData::parse(nothing).expect_err("nothing");
            assert!(e.contains("reads nothing"), "{e}");
        }
        assert_eq!(ReadData::Share(1000).to_string(), "10%");
        assert_eq!(ReadData::Share(250).to_string(), "2.50%");
    }

    #[test]
    fn read_data_counts_round_up() {
        assert_eq!(ReadData::None.count(50), 0);
        assert_eq!(ReadData::All.count(50), 50);
        assert_eq!(ReadData::Share(1000).count(50), 5);
        assert_eq!(ReadData::Share(1000).count(51), 6);
        assert_eq!(ReadData::Share(1).count(3), 1);
        assert_eq!(ReadData::Share(1000).count(0), 0);
    }

    /// A share is drawn afresh each run, so runs together reach every blob.
    #[test]
    fn samples_differ_and_cover_everything() {
        let names: Vec<String> = (0..100).map(|i| format!("blob-{i:03}")).collect();
        let items = || names.iter().map(|n| (n.as_str(), ())).collect::<Vec<_>>();
        let mut seen = std::collections::BTreeSet::new();
        let mut samples = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let s: Vec<&str> = sample(items(), ReadData::Share(1000))
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            assert_eq!(s.len(), 10);
            samples.insert(s.clone());
            seen.extend(s);
        }
        assert!(samples.len() > 150, "samples repeat: {}", samples.len());
        // 200 draws of 10%: a given blob is missed with odds 0.9^200, about 7e-10.
        assert_eq!(seen.len(), 100);
        assert_eq!(sample(items(), ReadData::All).len(), 100);
    }
}
