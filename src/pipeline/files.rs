//! The files stage of a run: scan the tree, hash each file, upload the contents no
//! destination has yet as blobs, then write the backup's index. A file's content goes to
//! a destination once, ever: later backups only reference it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::future::join_all;
use sha2::{Digest, Sha256};
use tokio_util::io::InspectReader;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{StreamError, Target, fan_out, seal};
use crate::blobs::{self, FileIndex, INDEX_FORMAT, IndexEntry};
use crate::config::{FilesConfig, Job};
use crate::manifest::{self, FilesStats, JobListing, SourceEntry};
use crate::source::files::{self as tree, FileMeta, PathFilter};
use crate::storage::{Storage, StorageError};

/// Files up to this size are read once into memory (hash, compress, upload from the same
/// buffer); bigger ones are hashed first, then streamed.
const SMALL_FILE: u64 = 1024 * 1024;
/// Files in flight: uploads of small objects are latency-bound, so overlap them. Memory
/// stays bounded: at most this many small files, and big files stream in parts.
const CONCURRENCY: usize = 8;
/// Big files stream one at a time: each S3 multipart upload holds
/// (max_in_flight + 1) × part_size in memory, which must stay bounded on a 1 GB board.
const BIG_AT_ONCE: usize = 1;
/// A file rewritten while it is being read is retried this many times, then fails the run.
const ATTEMPTS: usize = 3;

/// One destination as the files stage sees it.
struct Dest<'a> {
    storage: &'a dyn Storage,
    /// Contents present (or claimed by an upload of this run).
    have: Mutex<HashSet<String>>,
    failed: Mutex<Option<String>>,
}

impl Dest<'_> {
    fn is_failed(&self) -> bool {
        self.failed.lock().map(|f| f.is_some()).unwrap_or(true)
    }
    fn fail(&self, why: String) {
        if let Ok(mut f) = self.failed.lock()
            && f.is_none()
        {
            *f = Some(why);
        }
    }
    /// True when this caller should upload `sha` here (nobody has or is uploading it).
    fn claim(&self, sha: &str) -> bool {
        !self.is_failed()
            && self
                .have
                .lock()
                .map(|mut h| h.insert(sha.to_string()))
                .unwrap_or(false)
    }
    fn unclaim(&self, sha: &str) {
        if let Ok(mut h) = self.have.lock() {
            h.remove(sha);
        }
    }
}

struct Ctx<'a> {
    cfg: &'a FilesConfig,
    job: &'a Job,
    dests: Vec<Dest<'a>>,
    previous: Option<HashMap<String, IndexEntry>>,
    cancel: &'a CancellationToken,
    big: tokio::sync::Semaphore,
}

/// What one file contributed.
struct Done {
    entry: IndexEntry,
    /// Whether its content was new to at least one destination.
    new: bool,
    uploaded: u64,
}

pub(super) async fn backup(
    cfg: &FilesConfig,
    job: &Job,
    id: &str,
    targets: &mut [Target],
    cancel: &CancellationToken,
) -> Result<SourceEntry, StreamError> {
    let name = cfg.name.as_str();
    let fail = |e: String| StreamError::Files(format!("files source {name}: {e}"));
    let filter = PathFilter::new(&cfg.include, &cfg.exclude).map_err(fail)?;
    let root = cfg.path.clone();
    let scan = tokio::task::spawn_blocking(move || tree::scan(&root, &filter))
        .await
        .map_err(|e| fail(format!("scan aborted: {e}")))?
        .map_err(fail)?;
    if !scan.skipped.is_empty() {
        warn!(
            job = %job.name,
            source = name,
            "{} entr{} in {} not backed up (only regular files are): {}{}",
            scan.skipped.len(),
            if scan.skipped.len() == 1 { "y" } else { "ies" },
            cfg.path.display(),
            scan.skipped.iter().take(5).cloned().collect::<Vec<_>>().join(", "),
            if scan.skipped.len() > 5 { ", …" } else { "" }
        );
    }

    // What each destination already holds, from one listing each.
    let live: Vec<usize> = (0..targets.len())
        .filter(|i| targets[*i].error.is_none())
        .collect();
    let listings = join_all(
        live.iter()
            .map(|i| JobListing::read(targets[*i].storage.as_ref(), &job.name)),
    )
    .await;
    let mut dests = Vec::new();
    let mut dest_targets = Vec::new();
    let mut first_listing = None;
    for (i, l) in live.iter().zip(listings) {
        match l {
            Ok(listing) => {
                let have = blobs::existing_blobs(&listing, &job.name, job.form());
                dests.push(Dest {
                    storage: targets[*i].storage.as_ref(),
                    have: Mutex::new(have),
                    failed: Mutex::new(None),
                });
                dest_targets.push(*i);
                if first_listing.is_none() {
                    first_listing = Some((*i, listing));
                }
            }
            Err(e) => targets[*i].error = Some(format!("cannot list existing blobs: {e}")),
        }
    }
    if dests.is_empty() {
        return Err(StreamError::NoDestinationLeft);
    }
    let previous = match (&first_listing, cfg.immutable) {
        (Some((i, listing)), true) => {
            let keys = job.encryption.as_ref().and_then(|e| e.keys.clone());
            blobs::previous_index(targets[*i].storage.as_ref(), listing, &job.name, name, keys)
                .await
        }
        _ => None,
    };
    drop(first_listing);

    let ctx = Ctx {
        cfg,
        job,
        dests,
        previous,
        cancel,
        big: tokio::sync::Semaphore::new(BIG_AT_ONCE),
    };
    let total = scan.files.len();
    let mut results = futures::stream::iter(scan.files)
        .map(|meta| process(&ctx, meta))
        .buffer_unordered(CONCURRENCY);
    let mut entries = Vec::with_capacity(total);
    let mut stats = FilesStats::default();
    let mut failure = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(Some(done)) => {
                stats.count += 1;
                stats.bytes += done.entry.size;
                if done.new {
                    stats.new_files += 1;
                    stats.new_bytes += done.entry.size;
                }
                stats.uploaded += done.uploaded;
                entries.push(done.entry);
            }
            Ok(None) => {}
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
        if ctx.dests.iter().all(Dest::is_failed) {
            failure = Some(StreamError::NoDestinationLeft);
            break;
        }
    }
    drop(results);
    for (d, i) in ctx.dests.iter().zip(&dest_targets) {
        if let Ok(f) = d.failed.lock()
            && let Some(why) = f.as_ref()
        {
            targets[*i].error.get_or_insert_with(|| why.clone());
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }

    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let index = FileIndex {
        format: INDEX_FORMAT,
        source: name.to_string(),
        root: cfg.path.display().to_string(),
        include: cfg.include.clone(),
        exclude: cfg.exclude.clone(),
        files: entries,
    };
    let sealer = job.encryption.as_ref().map(|e| &e.sealer);
    let (packed, raw_size) = blobs::encode_index(&index, job.compression, sealer)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let key = manifest::index_key(&job.name, id, name, job.form());
    let refs = match sealer {
        Some(_) => {
            let body = blobs::encode_refs(&index, job.compression)
                .await
                .map_err(|e| fail(e.to_string()))?;
            Some((
                crate::layout::refs_key(&job.name, id, name, job.compression),
                body,
            ))
        }
        None => None,
    };
    let writers: Vec<usize> = dest_targets
        .iter()
        .copied()
        .filter(|i| targets[*i].error.is_none())
        .collect();
    let written = join_all(writers.iter().map(|i| async {
        let st = targets[*i].storage.as_ref();
        if let Some((rk, body)) = &refs {
            st.put_bytes(rk, body.clone()).await?;
        }
        st.put_bytes(&key, packed.clone()).await
    }))
    .await;
    let mut any = false;
    for (i, r) in writers.iter().zip(written) {
        match r {
            Ok(()) => any = true,
            Err(e) => targets[*i].error = Some(format!("writing the file index: {e}")),
        }
    }
    if !any {
        return Err(StreamError::NoDestinationLeft);
    }
    info!(
        job = %job.name,
        source = name,
        "index {key}: {} files",
        index.files.len()
    );
    Ok(SourceEntry {
        name: name.to_string(),
        kind: "files".to_string(),
        format: "stowage file index (JSON)".to_string(),
        key,
        size: packed.len() as u64,
        raw_size,
        sha256: hex::encode(Sha256::digest(&packed)),
        files: Some(stats),
        refs: refs.map(|(key, body)| manifest::StoredRef {
            key,
            size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&body)),
        }),
        ..Default::default()
    })
}

/// Hash one file and upload its content where it is missing. `Ok(None)`: the file was
/// deleted since the scan, so it is not part of this backup.
async fn process(ctx: &Ctx<'_>, meta: FileMeta) -> Result<Option<Done>, StreamError> {
    let path = match tree::safe_join(&ctx.cfg.path, &meta.path) {
        Some(p) => p,
        None => return Ok(None),
    };
    let mut trust_previous = true;
    for _ in 0..ATTEMPTS {
        if ctx.cancel.is_cancelled() {
            return Err(StreamError::Cancelled);
        }
        let reused = ctx
            .previous
            .as_ref()
            .filter(|_| trust_previous)
            .and_then(|p| p.get(&meta.path))
            .filter(|p| p.size == meta.size && p.mtime == meta.mtime)
            .map(|p| p.sha256.clone());
        let (sha, size, data) = match reused {
            Some(sha) => (sha, meta.size, None),
            None if meta.size <= SMALL_FILE => match tokio::fs::read(&path).await {
                Ok(d) => (tree::hash_bytes(&d), d.len() as u64, Some(Bytes::from(d))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(read_error(ctx, &path, e)),
            },
            None => {
                let p = path.clone();
                match tokio::task::spawn_blocking(move || tree::hash_file(&p)).await {
                    Ok(Ok((sha, size))) => (sha, size, None),
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Ok(Err(e)) => return Err(read_error(ctx, &path, e)),
                    Err(e) => return Err(StreamError::Files(format!("hashing aborted: {e}"))),
                }
            }
        };
        let name = match &ctx.job.encryption {
            Some(e) => e.blob_name(&sha),
            None => sha.clone(),
        };
        let key = blobs::blob_key(&ctx.job.name, &name, ctx.job.form());
        let need: Vec<&Dest> = ctx.dests.iter().filter(|d| d.claim(&name)).collect();
        let entry = IndexEntry {
            path: meta.path.clone(),
            size,
            mode: meta.mode,
            mtime: meta.mtime,
            sha256: sha.clone(),
            blob: key.clone(),
        };
        if need.is_empty() {
            return Ok(Some(Done {
                entry,
                new: false,
                uploaded: 0,
            }));
        }
        let uploaded = match data {
            Some(d) => upload_small(ctx, &key, d, &need).await?,
            None => match upload_streamed(ctx, &path, &key, &sha, &need).await? {
                Some(n) => n,
                None => {
                    // The content changed under us: what was read is not `sha`.
                    for d in &need {
                        d.unclaim(&name);
                    }
                    trust_previous = false;
                    continue;
                }
            },
        };
        return Ok(Some(Done {
            entry,
            new: true,
            uploaded,
        }));
    }
    Err(StreamError::Files(format!(
        "files source {}: {} kept changing while it was read ({ATTEMPTS} attempts); exclude it, or back it up when it is not being written",
        ctx.cfg.name,
        path.display()
    )))
}

fn read_error(ctx: &Ctx<'_>, path: &Path, e: std::io::Error) -> StreamError {
    StreamError::Files(format!(
        "files source {}: cannot read {}: {e}",
        ctx.cfg.name,
        path.display()
    ))
}

async fn upload_small(
    ctx: &Ctx<'_>,
    key: &str,
    data: Bytes,
    need: &[&Dest<'_>],
) -> Result<u64, StreamError> {
    let sealer = ctx.job.encryption.as_ref().map(|e| &e.sealer);
    let packed = blobs::pack_bytes(data, ctx.job.compression, ctx.job.compression_level, sealer)
        .await
        .map_err(|e| StreamError::Files(e.to_string()))?;
    let results = join_all(need.iter().map(|d| d.storage.put_data(key, packed.clone()))).await;
    for (d, r) in need.iter().zip(results) {
        if let Err(e) = r {
            d.fail(format!("uploading {key}: {e}"));
        }
    }
    Ok(packed.len() as u64)
}

/// Stream a big file into its blob on each destination that needs it. `Ok(None)` when
/// the bytes read do not hash to `sha` (the file changed): nothing was published.
async fn upload_streamed(
    ctx: &Ctx<'_>,
    path: &PathBuf,
    key: &str,
    sha: &str,
    need: &[&Dest<'_>],
) -> Result<Option<u64>, StreamError> {
    let _permit = ctx
        .big
        .acquire()
        .await
        .map_err(|_| StreamError::Cancelled)?;
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_error(ctx, path, e)),
    };
    let hasher = Arc::new(Mutex::new(Sha256::new()));
    let h = hasher.clone();
    let inspected = InspectReader::new(file, move |b: &[u8]| {
        if let Ok(mut h) = h.lock() {
            h.update(b);
        }
    });
    let reader = seal(
        ctx.job,
        crate::codec::compress(
            Box::new(inspected),
            ctx.job.compression,
            ctx.job.compression_level,
        ),
    );
    let storages: Vec<&dyn Storage> = need.iter().map(|d| d.storage).collect();
    let expected = sha.to_string();
    let check = async move {
        let got = hasher
            .lock()
            .map(|h| hex::encode(h.clone().finalize()))
            .unwrap_or_default();
        if got == expected {
            Ok(())
        } else {
            Err(StreamError::Changed)
        }
    };
    let (pumped, results) = fan_out(reader, key, &storages, ctx.cancel, check).await;
    for (d, r) in need.iter().zip(results) {
        if let Err(e) = r
            && !matches!(e, StorageError::Abandoned)
        {
            d.fail(format!("uploading {key}: {e}"));
        }
    }
    match pumped {
        Ok((_, stored, ())) => Ok(Some(stored)),
        Err(StreamError::Changed) => Ok(None),
        Err(StreamError::Read(e)) => Err(StreamError::Files(format!(
            "files source {}: cannot read {}: {e}",
            ctx.cfg.name,
            path.display()
        ))),
        Err(StreamError::NoDestinationLeft) => Ok(Some(0)),
        Err(e) => Err(e),
    }
}
