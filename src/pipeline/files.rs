//! The files stage of a run: walk the tree, hash each file, upload the contents a
//! destination lacks as blobs, and stream the backup's index to every destination as the
//! files complete. A file's content goes to a destination once, ever: later backups only
//! reference it. Nothing here holds per-file state for the whole tree: the walk, the
//! previous index and the new index are streams in `path_order`, merged as they go.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::future::join_all;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::io::InspectReader;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{StreamError, Target, fan_out, fan_out_to, seal};
use crate::config::{FilesConfig, Job};
use crate::repo::blobs;
use crate::repo::index::{self, INDEX_FORMAT, IndexEntries, IndexEntry};
use crate::repo::manifest::{self, FilesStats, JobListing, SourceEntry};
use crate::repo::{Form, Names, Repository};
use crate::source::files::{self as tree, FileMeta, Found, PathFilter};
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
struct Dest {
    storage: Arc<dyn Storage>,
    /// Contents present, or claimed by an upload of this run, as `blobs::name_id`s: 8
    /// bytes a blob, from a paged listing. Knowing every blob (not trusting the previous
    /// index) is what puts a blob lost on one destination back there on the next run.
    have: Mutex<HashSet<u64>>,
    failed: Mutex<Option<String>>,
}

impl Dest {
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
    /// True when this caller should upload `name` here (nobody has or is uploading it).
    /// A name that is not hex is never known: it goes up each time.
    fn claim(&self, name: &str) -> bool {
        let Some(id) = blobs::name_id(name) else {
            return !self.is_failed();
        };
        !self.is_failed() && self.have.lock().map(|mut h| h.insert(id)).unwrap_or(false)
    }
    fn unclaim(&self, name: &str) {
        if let Some(id) = blobs::name_id(name)
            && let Ok(mut h) = self.have.lock()
        {
            h.remove(&id);
        }
    }
}

struct Ctx<'a> {
    cfg: &'a FilesConfig,
    job: &'a Job,
    /// The keys this run writes.
    names: Names<'a>,
    dests: Vec<Dest>,
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

/// Entries not backed up (symlinks, sockets, names that are not UTF-8): a count and the
/// first few names, for one warning.
#[derive(Default)]
struct Skipped {
    count: usize,
    first: Vec<String>,
}

/// The walk merged with the previous index (both in `path_order`): each file with the
/// previous backup's entry for the same path, if any. Neither is held whole.
struct Merge {
    scan: mpsc::Receiver<Result<Found, tree::WalkError>>,
    previous: Option<IndexEntries>,
    head: Option<IndexEntry>,
    skipped: Arc<Mutex<Skipped>>,
    job: String,
    source: String,
}

impl Merge {
    async fn next_file(
        &mut self,
    ) -> Option<Result<(FileMeta, Option<IndexEntry>), tree::WalkError>> {
        loop {
            match self.scan.recv().await? {
                Err(e) => return Some(Err(e)),
                Ok(Found::Skipped(what)) => {
                    if let Ok(mut s) = self.skipped.lock() {
                        s.count += 1;
                        if s.first.len() < 5 {
                            s.first.push(what);
                        }
                    }
                }
                Ok(Found::File(meta)) => {
                    let prev = self.previous_of(&meta.path).await;
                    return Some(Ok((meta, prev)));
                }
            }
        }
    }

    /// The previous entry for `path`, skipping those of files gone since.
    async fn previous_of(&mut self, path: &str) -> Option<IndexEntry> {
        loop {
            if self.head.is_none() {
                let entries = self.previous.as_mut()?;
                match entries.next().await {
                    Ok(Some(e)) => self.head = Some(e),
                    Ok(None) => {
                        self.previous = None;
                        return None;
                    }
                    Err(e) => {
                        warn!(
                            job = %self.job,
                            source = %self.source,
                            "cannot read the rest of the previous index ({e}); re-reading the remaining files"
                        );
                        self.previous = None;
                        return None;
                    }
                }
            }
            let head = self.head.as_ref()?;
            match index::path_order(&head.path, path) {
                Ordering::Less => self.head = None,
                Ordering::Equal => return self.head.take(),
                Ordering::Greater => return None,
            }
        }
    }
}

/// Lines of an index (or a refs list) on their way to the uploads, in blocks of about
/// this size.
const LINES_BLOCK: usize = 64 * 1024;

/// A sink of lines feeding a streamed upload: a bounded channel read as an `AsyncRead`.
struct LineSink {
    tx: Option<mpsc::Sender<Result<Bytes, std::io::Error>>>,
    buf: BytesMut,
    raw: u64,
}

impl LineSink {
    fn new() -> (LineSink, crate::codec::Reader) {
        let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
        let stream = Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (b, rx))
        }));
        (
            LineSink {
                tx: Some(tx),
                buf: BytesMut::with_capacity(LINES_BLOCK),
                raw: 0,
            },
            Box::new(tokio_util::io::StreamReader::new(stream)),
        )
    }

    /// False when the upload reading the other end has stopped.
    async fn write(&mut self, line: &[u8]) -> bool {
        self.raw += line.len() as u64;
        self.buf.extend_from_slice(line);
        if self.buf.len() >= LINES_BLOCK {
            return self.flush().await;
        }
        true
    }

    async fn flush(&mut self) -> bool {
        let block = self.buf.split().freeze();
        match &self.tx {
            Some(tx) if !block.is_empty() => tx.send(Ok(block)).await.is_ok(),
            Some(_) => true,
            None => false,
        }
    }

    /// Flush and close: the reader sees the end.
    async fn finish(&mut self) -> bool {
        let ok = self.flush().await;
        self.tx = None;
        ok
    }
}

pub(super) async fn backup(
    cfg: &FilesConfig,
    job: &Job,
    id: &str,
    targets: &mut [Target],
    cancel: &CancellationToken,
) -> Result<SourceEntry, StreamError> {
    let name = cfg.name.as_str();
    let filter =
        PathFilter::new(&cfg.include, &cfg.exclude).map_err(|source| FilesError::Filter {
            name: name.to_string(),
            source,
        })?;
    let (dests, dest_targets, backups) = open_dests(job, targets).await;
    if dests.is_empty() {
        return Err(StreamError::NoDestinationLeft);
    }
    let previous = match cfg.immutable {
        true => read_previous_index(cfg, job, &dests, &backups).await,
        false => None,
    };
    drop(backups);

    let ctx = Ctx {
        cfg,
        job,
        names: Names::new(job, id),
        dests,
        cancel,
        big: tokio::sync::Semaphore::new(BIG_AT_ONCE),
    };
    let skipped = Arc::new(Mutex::new(Skipped::default()));
    let merge = Merge {
        scan: tree::spawn_walk(cfg.path.clone(), filter),
        previous,
        head: None,
        skipped: skipped.clone(),
        job: job.name.clone(),
        source: name.to_string(),
    };
    let written = write_index(&ctx, merge).await;

    for (d, i) in ctx.dests.iter().zip(&dest_targets) {
        if let Ok(f) = d.failed.lock()
            && let Some(why) = f.as_ref()
        {
            targets[*i].error.get_or_insert_with(|| why.clone());
        }
    }
    warn_skipped(cfg, job, &skipped);
    finish_entry(cfg, job, written, &dest_targets, targets)
}

/// Why a files source stopped the run.
#[derive(Debug, thiserror::Error)]
pub(super) enum FilesError {
    #[error("files source {name}: {source}")]
    Filter {
        name: String,
        #[source]
        source: crate::pathfilter::GlobError,
    },
    #[error("files source {name}: {source}")]
    Walk {
        name: String,
        #[source]
        source: tree::WalkError,
    },
    #[error("files source {name}: {source}")]
    Index {
        name: String,
        #[source]
        source: blobs::BlobError,
    },
    #[error("files source {name}: cannot read {}: {source}", path.display())]
    Read {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "files source {name}: {} kept changing while it was read ({attempts} attempts); exclude it, or back it up when it is not being written",
        path.display()
    )]
    KeptChanging {
        name: String,
        path: PathBuf,
        attempts: usize,
    },
    #[error("hashing aborted: {0}")]
    HashAborted(#[source] tokio::task::JoinError),
    /// Compressing or encrypting a small file.
    #[error(transparent)]
    Pack(blobs::BlobError),
}

impl FilesError {
    fn index(name: &str, source: blobs::BlobError) -> StreamError {
        StreamError::Files(FilesError::Index {
            name: name.to_string(),
            source,
        })
    }
}

/// Each live destination's backups, and which blobs it holds (paged, kept compact); a
/// destination that cannot be listed fails. Returns the destinations left with their
/// indexes in `targets` and their backups.
async fn open_dests(job: &Job, targets: &mut [Target]) -> (Vec<Dest>, Vec<usize>, Vec<JobListing>) {
    let live: Vec<usize> = (0..targets.len())
        .filter(|i| targets[*i].error.is_none())
        .collect();
    let listings = join_all(live.iter().map(|i| async {
        let repo = Repository::new(targets[*i].storage.as_ref(), &job.name);
        let backups = repo.backups().await?;
        let have = repo.blob_ids(Form::of(job)).await?;
        Ok::<_, StorageError>((backups, have))
    }))
    .await;
    let mut dests = Vec::new();
    let mut dest_targets = Vec::new();
    let mut backups = Vec::new();
    for (i, l) in live.iter().zip(listings) {
        match l {
            Ok((listing, have)) => {
                dests.push(Dest {
                    storage: targets[*i].storage.clone(),
                    have: Mutex::new(have),
                    failed: Mutex::new(None),
                });
                dest_targets.push(*i);
                backups.push(listing);
            }
            Err(e) => targets[*i].error = Some(format!("cannot list existing blobs: {e}")),
        }
    }
    (dests, dest_targets, backups)
}

/// `immutable`: the previous index (of the first destination that has one), streamed
/// and merged with the walk, gives the hashes of files whose size and mtime are
/// unchanged, without reading them.
async fn read_previous_index(
    cfg: &FilesConfig,
    job: &Job,
    dests: &[Dest],
    backups: &[JobListing],
) -> Option<IndexEntries> {
    let keys = job.encryption.as_ref().and_then(|e| e.keys.clone());
    for (d, listing) in dests.iter().zip(backups) {
        if let Some((_, entries)) = Repository::new(d.storage.as_ref(), &job.name)
            .previous_index(
                listing,
                &cfg.name,
                keys.clone(),
                &crate::repo::packing::Expect::of(job, false),
            )
            .await
        {
            return Some(entries);
        }
    }
    None
}

/// What a streamed upload returned: the stored bytes' sha256 and size, and each
/// destination's result.
type Uploaded = (
    Result<(String, u64, ()), StreamError>,
    Vec<Result<u64, StorageError>>,
);

/// The files stage's output before it is judged: the index lines' totals and both uploads.
struct Written {
    key: String,
    refs_key: String,
    produced: Result<(FilesStats, u64), StreamError>,
    index: Uploaded,
    refs: Uploaded,
}

/// The files, processed as the walk yields them, and the index streaming to every
/// destination as they complete; it is completed only if every file was, else abandoned.
async fn write_index(ctx: &Ctx<'_>, merge: Merge) -> Written {
    let (cfg, job) = (ctx.cfg, ctx.job);
    let files = Box::pin(futures::stream::unfold(merge, |mut m| async move {
        let item = m.next_file().await?;
        Some((item, m))
    }));
    // In order (`buffered`), so the index is written in path order as files complete.
    let mut results = files
        .map(|item| async move {
            match item {
                Ok((meta, prev)) => process(ctx, meta, prev).await,
                Err(source) => Err(StreamError::from(FilesError::Walk {
                    name: ctx.cfg.name.to_string(),
                    source,
                })),
            }
        })
        .buffered(CONCURRENCY);

    let key = ctx.names.index(&cfg.name);
    // The clear list of blob keys, for sweeps (which then need neither a key nor the
    // index's JSON).
    let refs_key = ctx.names.refs(&cfg.name);
    let writers: Vec<&dyn Storage> = ctx.dests.iter().map(|d| d.storage.as_ref()).collect();
    let (index, index_reader) = LineSink::new();
    let (refs, refs_reader) = LineSink::new();
    let (ok_tx, ok_rx) = tokio::sync::oneshot::channel::<()>();
    let (refs_ok_tx, refs_ok_rx) = tokio::sync::oneshot::channel::<()>();
    let completed = |rx: tokio::sync::oneshot::Receiver<()>| async move {
        rx.await.map_err(|_| StreamError::Cancelled)
    };
    let index_upload = fan_out_to(
        seal(
            job,
            crate::codec::compress(index_reader, job.compression, None),
        ),
        &key,
        &writers,
        ctx.cancel,
        completed(ok_rx),
        false,
    );
    let refs_upload = fan_out_to(
        crate::codec::compress(refs_reader, job.compression, None),
        &refs_key,
        &writers,
        ctx.cancel,
        completed(refs_ok_rx),
        false,
    );
    let produce = write_lines(ctx, &mut results, index, refs, [ok_tx, refs_ok_tx]);
    let (produced, index, refs) = tokio::join!(produce, index_upload, refs_upload);
    drop(results);
    Written {
        key,
        refs_key,
        produced,
        index,
        refs,
    }
}

/// The index's header, then a line per file in path order (and its blob on the refs
/// list); `complete` tells the uploads the lines are whole. The sinks are owned here, so
/// that however this ends, they close and the uploads see it.
async fn write_lines(
    ctx: &Ctx<'_>,
    results: &mut (impl futures::Stream<Item = Result<Option<Done>, StreamError>> + Unpin),
    mut index: LineSink,
    mut refs: LineSink,
    complete: [tokio::sync::oneshot::Sender<()>; 2],
) -> Result<(FilesStats, u64), StreamError> {
    let cfg = ctx.cfg;
    let mut stats = FilesStats::default();
    let header = index::FileIndex {
        format: INDEX_FORMAT,
        source: cfg.name.to_string(),
        root: cfg.path.display().to_string(),
        include: cfg.include.clone(),
        exclude: cfg.exclude.clone(),
        files: Vec::new(),
    };
    let line = index::index_line(&header).map_err(|e| FilesError::index(&cfg.name, e))?;
    if !index.write(&line).await {
        return Err(StreamError::NoDestinationLeft);
    }
    while let Some(r) = results.next().await {
        let Some(done) = r? else { continue };
        stats.count += 1;
        stats.bytes += done.entry.size;
        if done.new {
            stats.new_files += 1;
            stats.new_bytes += done.entry.size;
        }
        stats.uploaded += done.uploaded;
        let line = index::index_line(&done.entry).map_err(|e| FilesError::index(&cfg.name, e))?;
        if !index.write(&line).await {
            return Err(StreamError::NoDestinationLeft);
        }
        let mut r = done.entry.blob.into_bytes();
        r.push(b'\n');
        if !refs.write(&r).await {
            return Err(StreamError::NoDestinationLeft);
        }
        if ctx.dests.iter().all(Dest::is_failed) {
            return Err(StreamError::NoDestinationLeft);
        }
    }
    if !index.finish().await || !refs.finish().await {
        return Err(StreamError::NoDestinationLeft);
    }
    for tx in complete {
        let _ = tx.send(());
    }
    Ok((stats, index.raw))
}

/// One warning for every entry the walk did not back up.
fn warn_skipped(cfg: &FilesConfig, job: &Job, skipped: &Mutex<Skipped>) {
    if let Ok(s) = skipped.lock()
        && s.count > 0
    {
        warn!(
            job = %job.name,
            source = cfg.name.as_str(),
            "{} entr{} in {} not backed up (only regular files are): {}{}",
            s.count,
            if s.count == 1 { "y" } else { "ies" },
            cfg.path.display(),
            s.first.join(", "),
            if s.count > s.first.len() { ", …" } else { "" }
        );
    }
}

/// The source's manifest entry, if the index landed on some destination that did not
/// fail otherwise; a destination whose index or blob list failed fails.
fn finish_entry(
    cfg: &FilesConfig,
    job: &Job,
    written: Written,
    dest_targets: &[usize],
    targets: &mut [Target],
) -> Result<SourceEntry, StreamError> {
    let Written {
        key,
        refs_key,
        produced,
        index: (pumped, written),
        refs: (refs_pumped, refs_written),
    } = written;
    let (stats, raw_size) = produced?;
    let (sha256, size, ()) = pumped?;
    let mut any = false;
    for (i, r) in dest_targets.iter().zip(written) {
        match r {
            Ok(_) => any = true,
            Err(e) => {
                targets[*i]
                    .error
                    .get_or_insert_with(|| format!("writing the file index: {e}"));
            }
        }
    }
    let (refs_sha256, refs_size, ()) = refs_pumped?;
    for (i, r) in dest_targets.iter().zip(refs_written) {
        if let Err(e) = r {
            targets[*i]
                .error
                .get_or_insert_with(|| format!("writing the blob list: {e}"));
        }
    }
    let refs = manifest::StoredRef {
        key: refs_key,
        size: refs_size,
        sha256: refs_sha256,
    };
    if !any || dest_targets.iter().all(|i| targets[*i].error.is_some()) {
        return Err(StreamError::NoDestinationLeft);
    }
    info!(
        job = %job.name,
        source = cfg.name.as_str(),
        "index {key}: {} files",
        stats.count
    );
    Ok(SourceEntry {
        name: cfg.name.to_string(),
        kind: "files".to_string(),
        format: "stowage file index (JSON Lines)".to_string(),
        key,
        size,
        raw_size,
        sha256,
        files: Some(stats),
        refs: Some(refs),
        ..Default::default()
    })
}

/// Hash one file and upload its content where it is missing. `Ok(None)`: the file was
/// deleted since the scan, so it is not part of this backup.
async fn process(
    ctx: &Ctx<'_>,
    meta: FileMeta,
    prev: Option<IndexEntry>,
) -> Result<Option<Done>, StreamError> {
    let path = match tree::safe_join(&ctx.cfg.path, &meta.path) {
        Some(p) => p,
        None => return Ok(None),
    };
    let mut trust_previous = true;
    for _ in 0..ATTEMPTS {
        if ctx.cancel.is_cancelled() {
            return Err(StreamError::Cancelled);
        }
        let reused = prev
            .as_ref()
            .filter(|_| trust_previous)
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
                    Err(e) => return Err(FilesError::HashAborted(e).into()),
                }
            }
        };
        let name = match &ctx.job.encryption {
            Some(e) => e.blob_name(&sha),
            None => sha.clone(),
        };
        let key = ctx.names.blob(&name);
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
    Err(FilesError::KeptChanging {
        name: ctx.cfg.name.to_string(),
        path,
        attempts: ATTEMPTS,
    }
    .into())
}

fn read_error(ctx: &Ctx<'_>, path: &Path, source: std::io::Error) -> StreamError {
    StreamError::Files(FilesError::Read {
        name: ctx.cfg.name.to_string(),
        path: path.to_path_buf(),
        source,
    })
}

async fn upload_small(
    ctx: &Ctx<'_>,
    key: &str,
    data: Bytes,
    need: &[&Dest],
) -> Result<u64, StreamError> {
    let sealer = ctx.job.encryption.as_ref().map(|e| &e.sealer);
    let packed = blobs::pack_bytes(data, ctx.job.compression, ctx.job.compression_level, sealer)
        .await
        .map_err(FilesError::Pack)?;
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
    need: &[&Dest],
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
    let storages: Vec<&dyn Storage> = need.iter().map(|d| d.storage.as_ref()).collect();
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
        Err(StreamError::Read(e)) => Err(read_error(ctx, path, e)),
        Err(StreamError::NoDestinationLeft) => Ok(Some(0)),
        Err(e) => Err(e),
    }
}
