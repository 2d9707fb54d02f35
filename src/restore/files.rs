//! Put a files source back into a directory. Only what is missing or different is
//! downloaded; each file is written to a temporary name, checked against its sha256, then
//! renamed into place. Local files the backup does not contain (and the old version of a
//! file that is replaced, and a link or anything else in the way of the backup's paths) are
//! moved into `orphan_files/<restore time>/`, keeping their relative path: a restore never
//! deletes anything.
//!
//! The target is written only beneath its own directory: paths are resolved from its
//! descriptor without following links ([`beneath`]), because whoever can write in the
//! target (a local user, the app itself) can plant a link where the backup has a directory.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Utc;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

use super::RestoreError;
use crate::repo::Repository;
use crate::repo::blobs;
use crate::repo::index::{self, IndexEntry};
use crate::repo::packing::Packing;

use crate::pathfilter::PathPatterns;
use crate::repo::manifest::SourceEntry;
use crate::source::files::{self as tree, FileMeta, Found, PathFilter};
use crate::storage::{Storage, StorageError};
use crate::units::human_bytes;

const CONCURRENCY: usize = 8;

/// Why restoring (or comparing) a files source failed, on one destination.
#[derive(Debug, thiserror::Error)]
pub enum FilesRestoreError {
    #[error("files {name}: {source}")]
    Tree {
        name: String,
        #[source]
        source: Box<TreeError>,
    },
    /// The copy failed part way and no other destination holds one to finish from.
    #[error(
        "{source}; no other destination of job {job} holds this backup's file index intact and every blob it names"
    )]
    NoIntactCopy {
        job: String,
        #[source]
        source: Box<FilesRestoreError>,
    },
    /// The copy on the destination the user chose failed part way; `destination` holds one.
    #[error(
        "{source}; destination {destination} holds this backup's file index intact and every blob it names: run the restore again with --from {destination} (or without --from to let stowage pick it); the files restored so far are kept and are not fetched again"
    )]
    IntactOn {
        destination: String,
        #[source]
        source: Box<FilesRestoreError>,
    },
}

/// One step of a files restore that failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The backup's file index is unreadable or damaged.
    #[error(transparent)]
    Index(#[from] blobs::BlobError),
    #[error(transparent)]
    Filter(#[from] crate::pathfilter::GlobError),
    /// The walk of the target directory failed.
    #[error(transparent)]
    Walk(#[from] tree::WalkError),
    /// An index entry stowage never writes (the layout check's message).
    #[error("{0}; refusing to restore it")]
    Unsafe(String),
    #[error("{what} aborted: {source}")]
    Aborted {
        what: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("cannot create {}: {source}", dir.display())]
    CreateDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open {}: {source}", dir.display())]
    Open {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the target directory is not open")]
    NotOpen,
    /// Reading the local file, to compare it with the backup's.
    #[error("cannot read {path}: {source}")]
    ReadLocal {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot move {path} to {}: {source}", to.display())]
    Move {
        path: String,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a temporary file for {path}: {source}")]
    CreateTemp {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fetch {blob} for {path}: {source}")]
    Fetch {
        blob: String,
        path: String,
        #[source]
        source: StorageError,
    },
    #[error("cannot read {blob} for {path}: {source}")]
    Unpack {
        blob: String,
        path: String,
        #[source]
        source: Box<crate::crypt::CryptError>,
    },
    #[error("cannot read {blob} for {path}: {source}")]
    ReadBlob {
        blob: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "blob {blob} for {path} is corrupt: expected {size} bytes with sha256 {sha256}, got {got_size} bytes with {got_sha256}"
    )]
    Corrupt {
        blob: String,
        path: String,
        size: u64,
        sha256: String,
        got_size: u64,
        got_sha256: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot sync {path}: {source}")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set mode/mtime on {path}: {source}")]
    SetMode {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The file index of `name` could not be read.
pub(super) fn index_error(name: &str, e: blobs::BlobError) -> RestoreError {
    TreeError::from(e).of(name)
}

impl TreeError {
    fn aborted(what: impl Into<String>) -> impl FnOnce(tokio::task::JoinError) -> TreeError {
        let what = what.into();
        move |source| TreeError::Aborted { what, source }
    }

    fn open(dir: &Path) -> impl FnOnce(std::io::Error) -> TreeError {
        let dir = dir.to_path_buf();
        move |source| TreeError::Open { dir, source }
    }

    /// This error, in the files source `name`.
    fn of(self, name: &str) -> RestoreError {
        RestoreError::Files(FilesRestoreError::Tree {
            name: name.to_string(),
            source: Box::new(self),
        })
    }
}

pub struct Target {
    /// Where to restore: `--files-to` or the configured source's path. None (neither is
    /// known) is refused: the directory recorded in the backup's index is not trusted.
    pub dir: Option<PathBuf>,
    /// Where orphans go; default: `<dir>/../orphan_files`.
    pub orphans: Option<PathBuf>,
    pub dry_run: bool,
    /// Keep setuid, setgid and sticky bits as recorded (default: dropped).
    pub keep_special_modes: bool,
    /// Leave local files the backup lacks where they are (`--keep-extra`).
    pub keep_extra: bool,
    /// Only the paths these match (`--path`): the rest of the tree is neither restored nor
    /// moved.
    pub paths: Option<Arc<PathPatterns>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fetch,
    Replace,
}

/// A files source's backup held against the directory it would be restored into.
pub(super) struct Compared {
    pub index: index::FileIndex,
    /// Paths whose local file has the backup's content: nothing to download.
    pub same: HashSet<String>,
}

/// Read the index and compare every file with what `dir` (default: the backup's root)
/// holds, by size, then by sha256 of the local file (nothing is downloaded). In memory:
/// for surveys of archived backups, which list every object anyway; `restore` streams.
pub(super) async fn compare(
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
    dir: Option<PathBuf>,
) -> Result<Compared, RestoreError> {
    let name = entry.name.as_str();
    let err = |e: TreeError| e.of(name);
    let index = repo
        .read_index(entry, packing)
        .await
        .map_err(|e| err(e.into()))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&index.root));
    if !dir.is_absolute() {
        return Err(RestoreError::Usage(format!(
            "--files-to {}: give an absolute path",
            dir.display()
        )));
    }
    // What is there now, seen through the same filters the backup used.
    let filter = PathFilter::new(&index.include, &index.exclude).map_err(|e| err(e.into()))?;
    for f in &index.files {
        crate::repo::layout::check_index_path(&f.path).map_err(|e| err(TreeError::Unsafe(e)))?;
    }
    let local: HashMap<String, FileMeta> = if dir.exists() {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || tree::scan(&d, &filter))
            .await
            .map_err(|e| err(TreeError::aborted("scan")(e)))?
            .map_err(|e| err(TreeError::Walk(e)))?
            .files
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect()
    } else {
        HashMap::new()
    };
    let root = match local.is_empty() {
        true => None,
        false => {
            let d = dir.clone();
            let t = tokio::task::spawn_blocking(move || beneath::Tree::open(&d))
                .await
                .map_err(|e| err(TreeError::aborted("opening")(e)))?
                .map_err(|e| err(TreeError::open(&dir)(e)))?;
            Some(Arc::new(t))
        }
    };

    // Same size: compare content (reading the local file, no download). Items are owned
    // so the future stays `Send`.
    let checks = futures::stream::iter(index.files.iter().filter_map(|f| {
        let here = local.get(&f.path)?;
        Some((f.path.clone(), f.sha256.clone(), f.size, here.size))
    }))
    .map(|(rel, sha256, size, here)| {
        let root = root.clone();
        async move {
            let Some(root) = root.filter(|_| size == here) else {
                return Ok((rel, false));
            };
            let r = rel.clone();
            match tokio::task::spawn_blocking(move || root.hash(&r)).await {
                Ok(Ok(sha)) => Ok((rel, sha.as_ref() == Some(&sha256))),
                Ok(Err(source)) => Err(TreeError::ReadLocal { path: rel, source }),
                Err(e) => Err(TreeError::aborted("hashing")(e)),
            }
        }
    })
    .buffer_unordered(4)
    .collect::<Vec<_>>()
    .await;
    let mut same = HashSet::new();
    for c in checks {
        let (p, equal) = c.map_err(err)?;
        if equal {
            same.insert(p);
        }
    }
    Ok(Compared { index, same })
}

/// One step of a restore, from merging the index with the local tree.
enum Step {
    /// An index entry, with the size of the local file at its path (if any).
    Entry(IndexEntry, Option<u64>),
    /// A local file the backup does not have.
    Orphan(String),
}

/// The index merged with a walk of the target directory (both in `path_order`), one step
/// at a time: neither is held whole.
struct Merge {
    index: Option<index::IndexEntries>,
    local: Option<LocalWalk>,
    head: Option<FileMeta>,
    entry: Option<IndexEntry>,
    /// `--path`: what the patterns do not match is passed over, on both sides.
    paths: Option<Arc<PathPatterns>>,
    /// Paths passed over: entries of the backup, local files.
    passed: (usize, usize),
}

impl Merge {
    async fn local_head(&mut self) -> Result<Option<&FileMeta>, TreeError> {
        while self.head.is_none() {
            let Some(rx) = self.local.as_mut() else {
                return Ok(None);
            };
            match rx.recv().await {
                Some(Ok(Found::File(m)))
                    if self.paths.as_ref().is_some_and(|p| !p.is_match(&m.path)) =>
                {
                    self.passed.1 += 1;
                }
                Some(Ok(Found::File(m))) => self.head = Some(m),
                Some(Ok(Found::Skipped(_))) => {}
                Some(Err(e)) => return Err(TreeError::Walk(e)),
                None => self.local = None,
            }
        }
        Ok(self.head.as_ref())
    }

    async fn index_head(&mut self) -> Result<Option<&IndexEntry>, TreeError> {
        while self.entry.is_none()
            && let Some(ix) = self.index.as_mut()
        {
            match ix.next().await? {
                Some(e) if self.paths.as_ref().is_some_and(|p| !p.is_match(&e.path)) => {
                    self.passed.0 += 1;
                }
                Some(e) => self.entry = Some(e),
                None => self.index = None,
            }
        }
        Ok(self.entry.as_ref())
    }

    /// Orphans come before the entries that follow them, so a local file is out of the
    /// way before a directory of the backup is made where it is; and the files of a local
    /// directory where the backup has a file come before that file.
    async fn next(&mut self) -> Result<Option<Step>, TreeError> {
        let entry_path = self.index_head().await?.map(|e| e.path.clone());
        let local = self.local_head().await?.map(|m| (m.path.clone(), m.size));
        Ok(match (entry_path, local) {
            (None, None) => None,
            (None, Some(_)) => self.head.take().map(|m| Step::Orphan(m.path)),
            (Some(_), None) => self.entry.take().map(|e| Step::Entry(e, None)),
            (Some(e), Some((l, size))) => {
                let under = l.starts_with(&e) && l.as_bytes().get(e.len()) == Some(&b'/');
                match index::path_order(&l, &e) {
                    _ if under => self.head.take().map(|m| Step::Orphan(m.path)),
                    std::cmp::Ordering::Less => self.head.take().map(|m| Step::Orphan(m.path)),
                    std::cmp::Ordering::Equal => {
                        self.head = None;
                        self.entry.take().map(|e| Step::Entry(e, Some(size)))
                    }
                    std::cmp::Ordering::Greater => self.entry.take().map(|e| Step::Entry(e, None)),
                }
            }
        })
    }
}

/// Restore a files source, streaming: the index is merged with a walk of the directory,
/// orphans are moved as they are met, and files are compared and fetched a few at a
/// time. Nothing per file is kept for the whole tree.
pub async fn restore(
    repo: Repository<'_>,
    entry: &SourceEntry,
    packing: &Packing,
    target: Target,
) -> Result<Vec<String>, RestoreError> {
    let storage = repo.storage();
    let name = entry.name.as_str();
    let (header, entries) = repo
        .open_index(entry, packing)
        .await
        .map_err(|e| TreeError::from(e).of(name))?;
    let (dir, orphan_dir) = target_dirs(name, &header, &target)?;
    if let Some(paths) = &target.paths {
        // Every pattern must match something before anything is touched: a typo must not
        // restore nothing and say it went well.
        super::select::check_patterns(repo, entry, packing, paths).await?;
    }
    let (local, root) = open_target(&header, &dir, target.dry_run)
        .await
        .map_err(|e| e.of(name))?;
    let ctx = TreeCtx {
        storage,
        packing,
        entry,
        root,
        aside: Arc::new(beneath::Orphans::new(orphan_dir.clone())),
        orphan_dir,
        dry_run: target.dry_run,
        keep_special_modes: target.keep_special_modes,
        keep_extra: target.keep_extra,
        paths: target.paths.clone(),
        progress: crate::progress::Progress::new(format!("restore {name}: files"), None),
    };
    let mut merge = Merge {
        index: Some(entries),
        local,
        head: None,
        entry: None,
        paths: target.paths.clone(),
        passed: (0, 0),
    };
    let mut tally = Tally::default();
    walk(&ctx, &mut merge, &mut tally).await;
    tally.passed = merge.passed;
    ctx.progress.finish();
    let in_the_way =
        std::mem::take(&mut *ctx.aside.moved.lock().unwrap_or_else(|p| p.into_inner()));
    tally.orphans += in_the_way.len();
    tally.lines.extend(in_the_way);
    if let Some(e) = tally.failure.take() {
        return Err(e.of(name));
    }
    Ok(tally.summary(name, &dir, &ctx))
}

/// Where the files go and where orphans are moved, both refused unless the operator
/// chose them safely.
fn target_dirs(
    name: &str,
    header: &index::FileIndex,
    target: &Target,
) -> Result<(PathBuf, PathBuf), RestoreError> {
    // The index is data from the destination: whoever can write there could point its
    // root at /etc. Only the operator (config, command line) chooses where files go.
    let Some(dir) = target.dir.clone() else {
        return Err(RestoreError::Usage(format!(
            "files {name}: the config has no files source \"{name}\", and the directory recorded in the backup ({:?}) is not trusted to choose where files are written; give the directory with --files-to DIR (e.g. --files-to {:?} after checking it)",
            header.root, header.root
        )));
    };
    if !dir.is_absolute() {
        return Err(RestoreError::Usage(format!(
            "--files-to {}: give an absolute path",
            dir.display()
        )));
    }
    let orphan_base = target
        .orphans
        .clone()
        .unwrap_or_else(|| dir.parent().unwrap_or(Path::new("/")).join("orphan_files"));
    if orphan_base.starts_with(&dir) {
        return Err(RestoreError::Usage(format!(
            "orphans would go to {}, inside the directory being restored ({}); choose another place with --orphans-to",
            orphan_base.display(),
            dir.display()
        )));
    }
    let orphan_dir = orphan_base.join(Utc::now().format("%Y%m%dT%H%M%SZ").to_string());
    Ok((dir, orphan_dir))
}

/// The files a walk finds, as they are found.
type LocalWalk = tokio::sync::mpsc::Receiver<Result<Found, tree::WalkError>>;

/// A walk of what is in `dir` now, and `dir` opened for writing beneath it (created
/// unless this is a dry run; a dry run of a missing directory has nothing to open).
async fn open_target(
    header: &index::FileIndex,
    dir: &Path,
    dry_run: bool,
) -> Result<(Option<LocalWalk>, Option<Arc<beneath::Tree>>), TreeError> {
    // What is there now, seen through the same filters the backup used.
    let filter = PathFilter::new(&header.include, &header.exclude)?;
    let exists = dir.exists();
    let local = exists.then(|| tree::spawn_walk(dir.to_path_buf(), filter));
    if !dry_run {
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|source| TreeError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?;
    }
    let root = if exists || !dry_run {
        let d = dir.to_path_buf();
        let t = tokio::task::spawn_blocking(move || beneath::Tree::open(&d))
            .await
            .map_err(TreeError::aborted("opening"))?
            .map_err(TreeError::open(dir))?;
        Some(Arc::new(t))
    } else {
        None
    };
    Ok((local, root))
}

/// What every step of one files restore reads.
struct TreeCtx<'a> {
    storage: &'a dyn Storage,
    packing: &'a Packing,
    entry: &'a SourceEntry,
    /// The target directory, opened; None only in a dry run of a missing directory.
    root: Option<Arc<beneath::Tree>>,
    aside: Arc<beneath::Orphans>,
    orphan_dir: PathBuf,
    dry_run: bool,
    keep_special_modes: bool,
    keep_extra: bool,
    paths: Option<Arc<PathPatterns>>,
    progress: Arc<crate::progress::Progress>,
}

impl TreeCtx<'_> {
    /// Move a local file the backup lacks into the orphans, never through a link. Returns
    /// the line to report, or why it failed.
    async fn move_orphan(&self, p: &str) -> Result<String, TreeError> {
        let to = self.orphan_dir.join(p);
        let Some(root) = self.root.clone() else {
            return Err(TreeError::NotOpen);
        };
        let (o, rel) = (self.aside.clone(), p.to_string());
        let moved = tokio::task::spawn_blocking(move || {
            let (parts, name) = rel
                .rsplit_once('/')
                .map_or((Vec::new(), rel.as_str()), |(d, n)| {
                    (d.split('/').collect(), n)
                });
            // Never through a link: a directory swapped for one since the walk fails the
            // move.
            let parent = root.dir(&parts, None)?;
            o.put(std::os::fd::AsFd::as_fd(&parent), name, &rel)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match moved {
            Ok(at) => Ok(format!("moved {p} to {}", at.display())),
            Err(source) => Err(TreeError::Move {
                path: p.to_string(),
                to,
                source,
            }),
        }
    }
}

/// What a files restore did so far: its lines, counts, and the first failure.
#[derive(Default)]
struct Tally {
    lines: Vec<String>,
    failure: Option<TreeError>,
    orphans: usize,
    /// Local files the backup lacks, left in place (`--keep-extra`).
    kept: usize,
    /// `--path`: entries of the backup and local files outside the patterns.
    passed: (usize, usize),
    same: usize,
    fetched: usize,
    replaced: usize,
    fetch_bytes: u64,
}

/// The index merged with the target, step by step: orphans moved as they are met, files
/// compared and fetched a few at a time. The first failure stops it, once what is in
/// flight has finished.
async fn walk(ctx: &TreeCtx<'_>, merge: &mut Merge, tally: &mut Tally) {
    let mut work = futures::stream::FuturesOrdered::new();
    loop {
        // Keep a few files in flight; collect what finished.
        while work.len() >= CONCURRENCY || (!work.is_empty() && tally.failure.is_some()) {
            match work.next().await {
                Some(r) => tally.note(r, &ctx.orphan_dir, ctx.dry_run),
                None => break,
            }
        }
        if tally.failure.is_some() {
            break;
        }
        let step = match merge.next().await {
            Ok(Some(s)) => s,
            Ok(None) => break,
            Err(e) => {
                tally.failure = Some(e);
                continue;
            }
        };
        match step {
            Step::Orphan(p) if ctx.keep_extra => {
                // What stands in the way of the backup's paths is still moved, by the
                // fetch that needs the place.
                tally.kept += 1;
                if ctx.dry_run {
                    tally.lines.push(format!("would keep {p} (--keep-extra)"));
                }
            }
            Step::Orphan(p) => {
                tally.orphans += 1;
                if ctx.dry_run {
                    let to = ctx.orphan_dir.join(&p);
                    tally
                        .lines
                        .push(format!("would move {p} to {}", to.display()));
                    continue;
                }
                // Everything before it in flight touches other paths; wait for them
                // anyway, so a file is never fetched into a directory being moved.
                while let Some(r) = work.next().await {
                    tally.note(r, &ctx.orphan_dir, ctx.dry_run);
                }
                if tally.failure.is_some() {
                    break;
                }
                match ctx.move_orphan(&p).await {
                    Ok(line) => tally.lines.push(line),
                    Err(e) => tally.failure = Some(e),
                }
            }
            Step::Entry(f, here) => {
                // Checked where the index is read too; the check that guards the writes
                // stays beside them.
                if let Err(e) =
                    crate::repo::layout::check_index_entry(&ctx.entry.key, &f.path, &f.blob)
                {
                    tally.failure = Some(TreeError::Unsafe(e));
                    continue;
                }
                work.push_back(restore_one(
                    ctx.storage,
                    ctx.packing,
                    ctx.root.as_ref(),
                    &ctx.aside,
                    f,
                    here,
                    ctx.dry_run,
                    ctx.keep_special_modes,
                    &ctx.progress,
                ));
            }
        }
    }
    while let Some(r) = work.next().await {
        tally.note(r, &ctx.orphan_dir, ctx.dry_run);
    }
}

impl Tally {
    /// The closing lines: what would happen (dry run), or what was done.
    fn summary(mut self, name: &str, dir: &Path, ctx: &TreeCtx<'_>) -> Vec<String> {
        let (same, fetched, replaced, orphans) =
            (self.same, self.fetched, self.replaced, self.orphans);
        let orphan_dir = &ctx.orphan_dir;
        let mut left = String::new();
        if ctx.keep_extra {
            left.push_str(&format!(
                "; {} {} the backup lacks left in place (--keep-extra)",
                self.kept,
                if self.kept == 1 { "file" } else { "files" }
            ));
        }
        if let Some(p) = &ctx.paths {
            left.push_str(&format!(
                "; only --path {}: {} of the backup's files and {} local files outside it left alone",
                p.patterns().join(" --path "),
                self.passed.0,
                self.passed.1
            ));
        }
        if ctx.dry_run {
            self.lines.push(format!(
                "files {name} into {}: would fetch {fetched}, replace {replaced} ({} to download), move {orphans} to {}; {same} unchanged{left}",
                dir.display(),
                human_bytes(self.fetch_bytes),
                orphan_dir.display(),
            ));
            return self.lines;
        }
        info!(
            source = name,
            "restored {} file(s) ({}) into {}",
            fetched + replaced,
            human_bytes(self.fetch_bytes),
            dir.display()
        );
        self.lines.push(format!(
            "files {name} into {}: {same} unchanged, {fetched} fetched, {replaced} replaced ({} downloaded), {orphans} moved to {}",
            dir.display(),
            human_bytes(self.fetch_bytes),
            if orphans == 0 && replaced == 0 {
                "orphan_files (none)".to_string()
            } else {
                orphan_dir.display().to_string()
            }
        ) + &left);
        self.lines
    }

    /// Counts one entry's outcome, and keeps the first failure.
    fn note(&mut self, r: Result<Outcome, TreeError>, orphan_dir: &Path, dry_run: bool) {
        match r {
            Err(e) => {
                self.failure.get_or_insert(e);
            }
            Ok(Outcome::Same) => self.same += 1,
            Ok(Outcome::Done(a, f)) => {
                self.fetch_bytes += f.size;
                match a {
                    Action::Fetch => self.fetched += 1,
                    Action::Replace => self.replaced += 1,
                }
                if dry_run {
                    let verb = match a {
                        Action::Fetch => "fetch",
                        Action::Replace => "replace",
                    };
                    self.lines
                        .push(format!("would {verb} {} ({})", f.path, human_bytes(f.size)));
                } else if a == Action::Replace {
                    self.lines.push(format!(
                        "replaced {} (old version moved to {})",
                        f.path,
                        orphan_dir.join(&f.path).display()
                    ));
                }
            }
        }
    }
}

/// What happened to one entry of the index.
enum Outcome {
    Same,
    Done(Action, IndexEntry),
}

/// Compare one file with its local copy (same size: by sha256 of the local file), and
/// fetch it when it differs or is missing.
#[allow(clippy::too_many_arguments)]
async fn restore_one(
    storage: &dyn Storage,
    packing: &Packing,
    root: Option<&Arc<beneath::Tree>>,
    orphans: &Arc<beneath::Orphans>,
    f: IndexEntry,
    here: Option<u64>,
    dry_run: bool,
    keep_special_modes: bool,
    progress: &crate::progress::Progress,
) -> Result<Outcome, TreeError> {
    let action = match (here, root) {
        (None, _) | (_, None) => Action::Fetch,
        (Some(size), _) if size != f.size => Action::Replace,
        (Some(_), Some(root)) => {
            let (root, rel) = (root.clone(), f.path.clone());
            match tokio::task::spawn_blocking(move || root.hash(&rel)).await {
                Ok(Ok(Some(sha))) if sha == f.sha256 => return Ok(Outcome::Same),
                Ok(Ok(_)) => Action::Replace,
                Ok(Err(source)) => {
                    return Err(TreeError::ReadLocal {
                        path: f.path,
                        source,
                    });
                }
                Err(e) => return Err(TreeError::aborted("hashing")(e)),
            }
        }
    };
    if dry_run {
        return Ok(Outcome::Done(action, f));
    }
    let Some(root) = root else {
        return Err(TreeError::NotOpen);
    };
    fetch(storage, packing, root, orphans, &f, keep_special_modes).await?;
    progress.add(f.size);
    debug!("restored {}", f.path);
    Ok(Outcome::Done(action, f))
}

/// The mode a restored file gets: setuid, setgid and sticky are dropped unless asked for
/// (a backup's writer must not be able to plant a setuid binary by restoring one).
fn final_mode(mode: u32, keep_special_modes: bool) -> u32 {
    if keep_special_modes {
        mode & 0o7777
    } else {
        mode & 0o777
    }
}

/// Download one file into an exclusive temporary file beside its place (0600 while it is
/// written), verify it, apply its mode and mtime, then rename it into place within its
/// directory. Whatever is in the way (a link, a directory, the old version) goes to the
/// orphans; nothing is followed.
async fn fetch(
    storage: &dyn Storage,
    packing: &Packing,
    root: &Arc<beneath::Tree>,
    orphans: &Arc<beneath::Orphans>,
    f: &IndexEntry,
    keep_special_modes: bool,
) -> Result<(), TreeError> {
    let (r, o, rel) = (root.clone(), orphans.clone(), f.path.clone());
    let (parent, tmp, file) =
        tokio::task::spawn_blocking(move || r.create_temp(&rel, &|p, n, at| o.take(p, n, at)))
            .await
            .map_err(TreeError::aborted(format!("creating {}", f.path)))?
            .map_err(|source| TreeError::CreateTemp {
                path: f.path.clone(),
                source,
            })?;
    let parent = Arc::new(parent);
    let result = async {
        let raw = storage
            .get(&f.blob)
            .await
            .map_err(|source| TreeError::Fetch {
                blob: f.blob.clone(),
                path: f.path.clone(),
                source,
            })?;
        let mut r = packing
            .unpack(raw, &f.blob)
            .await
            .map_err(|e| TreeError::Unpack {
                blob: f.blob.clone(),
                path: f.path.clone(),
                source: Box::new(e),
            })?;
        let mut out = tokio::fs::File::from_std(file);
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = r
                .read(&mut buf)
                .await
                .map_err(|source| TreeError::ReadBlob {
                    blob: f.blob.clone(),
                    path: f.path.clone(),
                    source,
                })?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
            out.write_all(&buf[..k])
                .await
                .map_err(|source| TreeError::Write {
                    path: f.path.clone(),
                    source,
                })?;
        }
        let sha = hex::encode(h.finalize());
        if sha != f.sha256 || n != f.size {
            return Err(TreeError::Corrupt {
                blob: f.blob.clone(),
                path: f.path.clone(),
                size: f.size,
                sha256: f.sha256.clone(),
                got_size: n,
                got_sha256: sha,
            });
        }
        out.sync_all().await.map_err(|source| TreeError::Sync {
            path: f.path.clone(),
            source,
        })?;
        let std_file = out.into_std().await;
        let mode = final_mode(f.mode, keep_special_modes);
        let mtime = tree::system_time(f.mtime);
        let (parent, o, rel, tmp) = (parent.clone(), orphans.clone(), f.path.clone(), tmp.clone());
        tokio::task::spawn_blocking(move || -> Result<(), TreeError> {
            use std::os::unix::fs::PermissionsExt;
            // On the open file: the mode is applied last, to the bytes just verified.
            std_file
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .and_then(|()| std_file.set_modified(mtime))
                .map_err(|source| TreeError::SetMode {
                    path: rel.clone(),
                    source,
                })?;
            drop(std_file);
            beneath::commit(&parent, &tmp, &rel, &|p, n, at| o.take(p, n, at))
                .map_err(|source| TreeError::Write { path: rel, source })
        })
        .await
        .map_err(TreeError::aborted(format!("writing {}", f.path)))?
    }
    .await;
    if result.is_err() {
        let (parent, tmp) = (parent.clone(), tmp.clone());
        let _ = tokio::task::spawn_blocking(move || beneath::remove(&parent, &tmp)).await;
    }
    result
}

/// Paths beneath a directory, resolved without following any link: every path of an index
/// is opened component by component from the directory's descriptor (`openat2` with
/// `RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS` where the kernel has it, else `openat` with
/// `O_NOFOLLOW` for each part), directories are made with `mkdirat`, files with
/// `O_CREAT|O_EXCL|O_NOFOLLOW`, and renamed with `renameat` within their directory. A
/// link swapped in by another local user at any moment is met as a link, never crossed.
/// Blocking calls: run them on a blocking thread.
pub(super) mod beneath {
    use std::io;
    use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
    use rustix::io::Errno;
    use sha2::{Digest, Sha256};

    /// Takes what is in the way at `name` in the directory `parent` (at `rel` of the
    /// tree): after it returns Ok, `name` is free or a directory.
    pub type InTheWay<'a> = &'a dyn Fn(BorrowedFd<'_>, &str, &str) -> io::Result<()>;

    const DIR: OFlags = OFlags::DIRECTORY
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC)
        .union(OFlags::RDONLY);
    const READ: OFlags = OFlags::NOFOLLOW
        .union(OFlags::CLOEXEC)
        .union(OFlags::RDONLY)
        .union(OFlags::NONBLOCK);
    /// A name that keeps changing under a restore (another process racing it) fails it
    /// after this many tries, rather than looping.
    const TRIES: usize = 8;

    /// Cleared the first time the kernel refuses openat2 (before 5.6, gVisor, a seccomp
    /// filter): from then on each path is opened a part at a time.
    pub(super) static OPENAT2: AtomicBool = AtomicBool::new(true);

    fn openat2_beneath(
        dir: BorrowedFd<'_>,
        rel: &str,
        flags: OFlags,
    ) -> Option<io::Result<OwnedFd>> {
        #[cfg(target_os = "linux")]
        {
            use rustix::fs::ResolveFlags;
            if !OPENAT2.load(Ordering::Relaxed) {
                return None;
            }
            let how =
                ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rfs::openat2(dir, rel, flags, Mode::empty(), how) {
                Ok(fd) => Some(Ok(fd)),
                Err(Errno::NOSYS | Errno::PERM) => {
                    OPENAT2.store(false, Ordering::Relaxed);
                    None
                }
                Err(e) => Some(Err(e.into())),
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (dir, rel, flags);
            None
        }
    }

    fn kind(parent: BorrowedFd<'_>, name: &str) -> io::Result<Option<FileType>> {
        match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode as _))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn describe(t: FileType) -> &'static str {
        match t {
            FileType::Symlink => "a symbolic link, not followed",
            FileType::Directory => "a directory",
            FileType::RegularFile => "a file",
            FileType::Fifo => "a fifo",
            FileType::Socket => "a socket",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            _ => "not a regular file",
        }
    }

    fn split(rel: &str) -> (Vec<&str>, &str) {
        let mut parts: Vec<&str> = rel.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        (parts, name)
    }

    /// A directory opened by the path the operator gave (config or command line): that
    /// path is trusted; nothing beneath it is.
    pub struct Tree {
        fd: OwnedFd,
        path: PathBuf,
    }

    impl Tree {
        pub fn open(path: &Path) -> io::Result<Tree> {
            let fd = rfs::open(
                path,
                OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::RDONLY,
                Mode::empty(),
            )?;
            Ok(Tree {
                fd,
                path: path.to_path_buf(),
            })
        }

        pub fn path(&self) -> &Path {
            &self.path
        }

        /// The directory `parts` beneath the tree; with `in_the_way`, missing parts are made
        /// and whatever else stands where a directory belongs is handed to it; without,
        /// anything but a directory fails.
        pub fn dir(&self, parts: &[&str], in_the_way: Option<InTheWay<'_>>) -> io::Result<OwnedFd> {
            if parts.is_empty() {
                return self.fd.try_clone();
            }
            if let Some(Ok(fd)) = openat2_beneath(self.fd.as_fd(), &parts.join("/"), DIR) {
                return Ok(fd);
            }
            let mut cur = self.fd.try_clone()?;
            for (i, name) in parts.iter().enumerate() {
                cur = step(cur.as_fd(), name, &parts[..=i].join("/"), in_the_way)?;
            }
            Ok(cur)
        }

        /// sha256 of the regular file at `rel`; None when there is none (or something else
        /// is there).
        pub fn hash(&self, rel: &str) -> io::Result<Option<String>> {
            let fd = match openat2_beneath(self.fd.as_fd(), rel, READ) {
                Some(Ok(fd)) => fd,
                Some(Err(e))
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::EXDEV)
                    ) =>
                {
                    return Ok(None);
                }
                Some(Err(e)) => return Err(e),
                None => {
                    let (parts, name) = split(rel);
                    let parent = match self.dir(&parts, None) {
                        Ok(p) => p,
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                            ) || e.raw_os_error() == Some(libc::ELOOP) =>
                        {
                            return Ok(None);
                        }
                        Err(e) => return Err(e),
                    };
                    match rfs::openat(&parent, name, READ, Mode::empty()) {
                        Ok(fd) => fd,
                        Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR) => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let mut file = std::fs::File::from(fd);
            if !file.metadata()?.is_file() {
                return Ok(None);
            }
            let mut h = Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = io::Read::read(&mut file, &mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
            }
            Ok(Some(hex::encode(h.finalize())))
        }

        /// A new file for `rel`'s content beside it: created exclusively, not through a
        /// link, 0600, under an unpredictable name. Its directory is made (beneath the
        /// tree) as needed. Returns the directory, the temporary name, and the file.
        pub fn create_temp(
            &self,
            rel: &str,
            in_the_way: InTheWay<'_>,
        ) -> io::Result<(OwnedFd, String, std::fs::File)> {
            let (parts, name) = split(rel);
            let parent = self.dir(&parts, Some(in_the_way))?;
            for _ in 0..TRIES {
                let tmp = temp_name(name);
                match rfs::openat(
                    &parent,
                    tmp.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                ) {
                    Ok(fd) => return Ok((parent, tmp, std::fs::File::from(fd))),
                    Err(Errno::EXIST) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "every temporary name tried exists already",
            ))
        }
    }

    /// Open (making it when told) the directory `name` in `parent`, never through a link.
    fn step(
        parent: BorrowedFd<'_>,
        name: &str,
        rel: &str,
        in_the_way: Option<InTheWay<'_>>,
    ) -> io::Result<OwnedFd> {
        for _ in 0..TRIES {
            match rfs::openat(parent, name, DIR, Mode::empty()) {
                Ok(fd) => return Ok(fd),
                Err(Errno::NOENT) if in_the_way.is_some() => {
                    match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                // O_NOFOLLOW|O_DIRECTORY on a link or a file.
                Err(Errno::NOTDIR | Errno::LOOP) => match in_the_way {
                    Some(take) => {
                        if kind(parent, name)? != Some(FileType::Directory) {
                            take(parent, name, rel)?;
                        }
                    }
                    None => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotADirectory,
                            format!("{rel} is not a directory (a link is never followed)"),
                        ));
                    }
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::other(format!(
            "{rel} keeps changing while it is being restored"
        )))
    }

    /// Not guessable by another local user (who could otherwise plant a link or a file
    /// there first: O_EXCL would then fail the restore instead of being exploited).
    fn temp_name(name: &str) -> String {
        use std::hash::{BuildHasher, Hasher};
        static N: AtomicU64 = AtomicU64::new(0);
        // SipHash under the process's random keys: unpredictable from outside.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(d.as_nanos());
        }
        // A long name plus the suffix must stay within NAME_MAX (255 bytes).
        let mut end = name.len().min(200);
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        format!(".{}.stowage-restore-{:016x}", &name[..end], h.finish())
    }

    /// Put the temporary file `tmp` in `parent` at `rel`'s name: whatever is there (the old
    /// version, a link, a directory whose files were orphaned) is taken out of the way
    /// first; an empty directory is removed.
    pub fn commit(
        parent: &OwnedFd,
        tmp: &str,
        rel: &str,
        in_the_way: InTheWay<'_>,
    ) -> io::Result<()> {
        let (_, name) = split(rel);
        for _ in 0..TRIES {
            match kind(parent.as_fd(), name)? {
                None => {}
                Some(FileType::Directory) => {
                    match rfs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(Errno::NOTEMPTY | Errno::EXIST) => {
                            in_the_way(parent.as_fd(), name, rel)?
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(_) => in_the_way(parent.as_fd(), name, rel)?,
            }
            // A name taken again meanwhile is tried again: a plain rename would replace
            // a file or a link silently, losing it.
            if kind(parent.as_fd(), name)?.is_none()
                && rename_free(parent.as_fd(), tmp, parent.as_fd(), name)?
            {
                return Ok(());
            }
        }
        Err(io::Error::other(format!(
            "{rel} keeps changing while it is being restored"
        )))
    }

    /// Rename where `to` is free; false when it was taken (`RENAME_NOREPLACE` where the
    /// kernel and file system have it; elsewhere the caller's check just before is all).
    fn rename_free(
        from_dir: BorrowedFd<'_>,
        from: &str,
        to_dir: BorrowedFd<'_>,
        to: &str,
    ) -> io::Result<bool> {
        #[cfg(target_os = "linux")]
        match rfs::renameat_with(from_dir, from, to_dir, to, rfs::RenameFlags::NOREPLACE) {
            Ok(()) => return Ok(true),
            Err(Errno::EXIST) => return Ok(false),
            Err(Errno::INVAL | Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
        rfs::renameat(from_dir, from, to_dir, to)?;
        Ok(true)
    }

    pub fn remove(parent: &OwnedFd, name: &str) {
        let _ = rfs::unlinkat(parent, name, AtFlags::empty());
    }

    /// Where what is in the way goes: `<orphans>/<restore time>/<its relative path>`, made
    /// when first needed, and walked beneath like the target.
    pub struct Orphans {
        dir: PathBuf,
        tree: Mutex<Option<std::sync::Arc<Tree>>>,
        /// One line per thing moved outside the merge (links, directories in the way).
        pub moved: Mutex<Vec<String>>,
    }

    static MOVES: AtomicU64 = AtomicU64::new(0);

    impl Orphans {
        pub fn new(dir: PathBuf) -> Orphans {
            Orphans {
                dir,
                tree: Mutex::new(None),
                moved: Mutex::new(Vec::new()),
            }
        }

        fn tree(&self) -> io::Result<std::sync::Arc<Tree>> {
            let mut t = self.tree.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(t) = t.as_ref() {
                return Ok(t.clone());
            }
            std::fs::create_dir_all(&self.dir)?;
            let tree = std::sync::Arc::new(Tree::open(&self.dir)?);
            *t = Some(tree.clone());
            Ok(tree)
        }

        /// Move `name` of `parent` (at `rel` of the target) into the orphans, as it is: a
        /// link is moved, not followed.
        pub fn take(&self, parent: BorrowedFd<'_>, name: &str, rel: &str) -> io::Result<()> {
            let Some(what) = kind(parent, name)? else {
                return Ok(());
            };
            let to = self.put(parent, name, rel)?;
            if what != FileType::RegularFile {
                self.moved
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(format!(
                        "moved {rel} ({}) to {}",
                        describe(what),
                        to.display()
                    ));
            }
            Ok(())
        }

        /// Move `name` of `parent` to `<orphans>/<rel>` (`.N` added when that is taken).
        pub fn put(&self, parent: BorrowedFd<'_>, name: &str, rel: &str) -> io::Result<PathBuf> {
            let tree = self.tree()?;
            let (parts, _) = split(rel);
            // In the orphans a non-directory in the way (a link moved there earlier) is
            // renamed aside within them.
            let aside = |p: BorrowedFd<'_>, n: &str, _: &str| -> io::Result<()> {
                let free = free_name(p, n)?;
                rename_free(p, n, p, &free)?;
                Ok(())
            };
            let dest_dir = tree.dir(&parts, Some(&aside))?;
            for _ in 0..TRIES {
                let dest = free_name(dest_dir.as_fd(), name)?;
                let mut at = tree.path().to_path_buf();
                at.extend(parts.iter());
                at.push(&dest);
                match rename_free(parent, name, dest_dir.as_fd(), &dest) {
                    Ok(true) => return Ok(at),
                    Ok(false) => continue,
                    Err(e) if e.kind() == io::ErrorKind::CrossesDevices => {
                        copy_across(parent, name, dest_dir.as_fd(), &dest)?;
                        return Ok(at);
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(io::Error::other(format!(
                "{rel}: every name tried in the orphans is taken"
            )))
        }
    }

    fn free_name(dir: BorrowedFd<'_>, name: &str) -> io::Result<String> {
        let mut dest = name.to_string();
        while kind(dir, &dest)?.is_some() {
            dest = format!("{name}.{}", MOVES.fetch_add(1, Ordering::Relaxed));
        }
        Ok(dest)
    }

    /// The orphans on another file system: a file is copied (synced, its mtime kept) and a
    /// link re-made, then the original removed. A directory is refused.
    fn copy_across(
        from_dir: BorrowedFd<'_>,
        name: &str,
        to_dir: BorrowedFd<'_>,
        dest: &str,
    ) -> io::Result<()> {
        match kind(from_dir, name)? {
            Some(FileType::RegularFile) => {
                let src = std::fs::File::from(rfs::openat(from_dir, name, READ, Mode::empty())?);
                let meta = src.metadata()?;
                let mut out = std::fs::File::from(rfs::openat(
                    to_dir,
                    dest,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?);
                io::copy(&mut (&src), &mut out)?;
                out.sync_all()?;
                if let Ok(m) = meta.modified() {
                    out.set_modified(m)?;
                }
                rfs::unlinkat(from_dir, name, AtFlags::empty())?;
                Ok(())
            }
            Some(FileType::Symlink) => {
                let target = rfs::readlinkat(from_dir, name, Vec::new())?;
                rfs::symlinkat(target.as_c_str(), to_dir, dest)?;
                rfs::unlinkat(from_dir, name, AtFlags::empty())?;
                Ok(())
            }
            Some(t) => Err(io::Error::new(
                io::ErrorKind::CrossesDevices,
                format!(
                    "{name} is {} and the orphans are on another file system; give --orphans-to a directory on the same one",
                    describe(t)
                ),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> IndexEntry {
        IndexEntry {
            path: path.to_string(),
            size: 1,
            mode: 0o644,
            mtime: 0,
            sha256: String::new(),
            blob: "test/blobs/00/x".to_string(),
        }
    }

    /// A link where the index has a directory, or where it has a file, is moved to the
    /// orphans and never crossed, with openat2 and with the part-by-part fallback (what
    /// old kernels and gVisor get).
    #[test]
    fn links_in_the_way_are_moved_aside_never_followed() {
        use std::os::fd::AsFd;
        let run = |use_openat2: bool| {
            let t = tempfile::tempdir().expect("tempdir");
            let (target, outside) = (t.path().join("target"), t.path().join("outside"));
            std::fs::create_dir_all(&target).expect("mkdir");
            std::fs::create_dir_all(&outside).expect("mkdir");
            std::fs::write(outside.join("victim"), b"victim").expect("victim");
            std::os::unix::fs::symlink(&outside, target.join("a")).expect("link a");
            std::os::unix::fs::symlink(outside.join("victim"), target.join("f")).expect("link f");
            let root = beneath::Tree::open(&target).expect("open");
            let orphans = beneath::Orphans::new(t.path().join("orphans"));
            let take = |p: std::os::fd::BorrowedFd<'_>, n: &str, at: &str| orphans.take(p, n, at);
            if !use_openat2 {
                beneath::OPENAT2.store(false, std::sync::atomic::Ordering::Relaxed);
            }
            assert_eq!(root.hash("a/victim").expect("hash through a link"), None);
            assert_eq!(root.hash("f").expect("hash of a link"), None);
            assert!(
                root.dir(&["a"], None).is_err(),
                "a link opened as a directory"
            );
            let (parent, tmp, mut file) = root.create_temp("a/x", &take).expect("temp a/x");
            std::io::Write::write_all(&mut file, b"x").expect("write");
            beneath::commit(&parent, &tmp, "a/x", &take).expect("commit a/x");
            let (parent, tmp, _) = root.create_temp("f", &take).expect("temp f");
            beneath::commit(&parent, &tmp, "f", &take).expect("commit f");
            let _ = parent.as_fd();
            assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 1);
            assert_eq!(
                std::fs::read(outside.join("victim")).expect("victim"),
                b"victim"
            );
            assert!(
                std::fs::symlink_metadata(target.join("a"))
                    .expect("a")
                    .is_dir()
            );
            assert_eq!(std::fs::read(target.join("a/x")).expect("a/x"), b"x");
            assert!(
                std::fs::symlink_metadata(target.join("f"))
                    .expect("f")
                    .is_file()
            );
            for l in ["a", "f"] {
                let m = std::fs::symlink_metadata(t.path().join("orphans").join(l)).expect(l);
                assert!(
                    m.file_type().is_symlink(),
                    "{l} was not moved aside as a link"
                );
            }
            let moved = orphans.moved.lock().expect("moved").clone();
            assert!(
                moved
                    .iter()
                    .any(|m| m.starts_with("moved a (a symbolic link")),
                "{moved:?}"
            );
        };
        run(true);
        run(false);
    }

    /// The merge of an index with the local tree: entries with the local size when both
    /// have the path, orphans for local-only files, and the files of a local directory
    /// where the backup has a file before that file.
    #[tokio::test]
    async fn index_and_tree_merge_in_path_order() {
        let index = index::IndexEntries::from_vec(
            ["a/x", "a.b", "c", "d/e", "f"]
                .into_iter()
                .map(entry)
                .collect(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        for (p, size) in [
            ("a/x", 5),
            ("a/y", 1),
            ("a0", 1),
            ("c/1", 1),
            ("c/2", 1),
            ("f", 7),
            ("g", 1),
        ] {
            tx.send(Ok(Found::File(FileMeta {
                path: p.to_string(),
                size,
                mode: 0o644,
                mtime: 0,
            })))
            .await
            .expect("send");
        }
        drop(tx);
        let mut m = Merge {
            index: Some(index),
            local: Some(rx),
            head: None,
            entry: None,
            paths: None,
            passed: (0, 0),
        };
        let mut steps = Vec::new();
        while let Some(s) = m.next().await.expect("step") {
            steps.push(match s {
                Step::Entry(e, here) => format!("{} {here:?}", e.path),
                Step::Orphan(p) => format!("orphan {p}"),
            });
        }
        assert_eq!(
            steps,
            vec![
                "a/x Some(5)",
                "orphan a/y",
                "a.b None",
                "orphan a0",
                "orphan c/1",
                "orphan c/2",
                "c None",
                "d/e None",
                "f Some(7)",
                "orphan g",
            ]
        );
    }
}
