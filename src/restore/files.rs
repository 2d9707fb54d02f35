//! Put a files source back into a directory. Only what is missing or different is
//! downloaded; each file is written to a temporary name, checked against its sha256, then
//! renamed into place. Local files the backup does not contain (and the old version of a
//! file that is replaced) are moved into `orphan_files/<restore time>/`, keeping their
//! relative path: a restore never deletes anything.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info};

use super::RestoreError;
use crate::blobs::{self, IndexEntry};
use crate::codec::Packing;

use crate::manifest::SourceEntry;
use crate::pipeline::human_bytes;
use crate::source::files::{self as tree, FileMeta, Found, PathFilter};
use crate::storage::Storage;

const CONCURRENCY: usize = 8;

pub struct Target {
    /// Where to restore; default: the directory recorded in the backup.
    pub dir: Option<PathBuf>,
    /// Where orphans go; default: `<dir>/../orphan_files`.
    pub orphans: Option<PathBuf>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Fetch,
    Replace,
}

/// A files source's backup held against the directory it would be restored into.
pub(super) struct Compared {
    pub index: blobs::FileIndex,
    /// Paths whose local file has the backup's content: nothing to download.
    pub same: HashSet<String>,
}

/// Read the index and compare every file with what `dir` (default: the backup's root)
/// holds, by size, then by sha256 of the local file (nothing is downloaded). In memory:
/// for surveys of archived backups, which list every object anyway; `restore` streams.
pub(super) async fn compare(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
    dir: Option<PathBuf>,
) -> Result<Compared, RestoreError> {
    let name = entry.name.as_str();
    let err = |e: String| RestoreError::Files(format!("files {name}: {e}"));
    let index = blobs::read_index(storage, entry, packing)
        .await
        .map_err(|e| err(e.to_string()))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(&index.root));
    if !dir.is_absolute() {
        return Err(RestoreError::Usage(format!(
            "--files-to {}: give an absolute path",
            dir.display()
        )));
    }
    // What is there now, seen through the same filters the backup used.
    let filter = PathFilter::new(&index.include, &index.exclude).map_err(err)?;
    let local: HashMap<String, FileMeta> = if dir.exists() {
        let d = dir.clone();
        tokio::task::spawn_blocking(move || tree::scan(&d, &filter))
            .await
            .map_err(|e| err(format!("scan aborted: {e}")))?
            .map_err(err)?
            .files
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect()
    } else {
        HashMap::new()
    };
    for f in &index.files {
        if tree::safe_join(&dir, &f.path).is_none() {
            return Err(err(format!(
                "the index names an unsafe path \"{}\"; refusing to restore it",
                f.path
            )));
        }
    }

    // Same size: compare content (reading the local file, no download). Items are owned
    // so the future stays `Send`.
    let checks = futures::stream::iter(index.files.iter().filter_map(|f| {
        let here = local.get(&f.path)?;
        Some((f.path.clone(), f.sha256.clone(), f.size, here.size))
    }))
    .map(|(rel, sha256, size, here)| {
        let path = dir.join(&rel);
        async move {
            if size != here {
                return Ok((rel, false));
            }
            let p = path.clone();
            match tokio::task::spawn_blocking(move || tree::hash_file(&p)).await {
                Ok(Ok((sha, _))) => Ok((rel, sha == sha256)),
                Ok(Err(e)) => Err(format!("cannot read {}: {e}", path.display())),
                Err(e) => Err(format!("hashing aborted: {e}")),
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
    index: Option<blobs::IndexEntries>,
    local: Option<tokio::sync::mpsc::Receiver<Result<Found, String>>>,
    head: Option<FileMeta>,
    entry: Option<IndexEntry>,
}

impl Merge {
    async fn local_head(&mut self) -> Result<Option<&FileMeta>, String> {
        while self.head.is_none() {
            let Some(rx) = self.local.as_mut() else {
                return Ok(None);
            };
            match rx.recv().await {
                Some(Ok(Found::File(m))) => self.head = Some(m),
                Some(Ok(Found::Skipped(_))) => {}
                Some(Err(e)) => return Err(e),
                None => self.local = None,
            }
        }
        Ok(self.head.as_ref())
    }

    async fn index_head(&mut self) -> Result<Option<&IndexEntry>, String> {
        if self.entry.is_none()
            && let Some(ix) = self.index.as_mut()
        {
            match ix.next().await.map_err(|e| e.to_string())? {
                Some(e) => self.entry = Some(e),
                None => self.index = None,
            }
        }
        Ok(self.entry.as_ref())
    }

    /// Orphans come before the entries that follow them, so a local file is out of the
    /// way before a directory of the backup is made where it is; and the files of a local
    /// directory where the backup has a file come before that file.
    async fn next(&mut self) -> Result<Option<Step>, String> {
        let entry_path = self.index_head().await?.map(|e| e.path.clone());
        let local = self.local_head().await?.map(|m| (m.path.clone(), m.size));
        Ok(match (entry_path, local) {
            (None, None) => None,
            (None, Some(_)) => self.head.take().map(|m| Step::Orphan(m.path)),
            (Some(_), None) => self.entry.take().map(|e| Step::Entry(e, None)),
            (Some(e), Some((l, size))) => {
                let under = l.starts_with(&e) && l.as_bytes().get(e.len()) == Some(&b'/');
                match blobs::path_order(&l, &e) {
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
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
    target: Target,
) -> Result<Vec<String>, RestoreError> {
    let name = entry.name.as_str();
    let err = |e: String| RestoreError::Files(format!("files {name}: {e}"));
    let (header, entries) = blobs::open_index(storage, entry, packing)
        .await
        .map_err(|e| err(e.to_string()))?;
    let dir = target
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&header.root));
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
    // What is there now, seen through the same filters the backup used.
    let filter = PathFilter::new(&header.include, &header.exclude).map_err(err)?;
    let local = dir.exists().then(|| tree::spawn_walk(dir.clone(), filter));
    if !target.dry_run {
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut merge = Merge {
        index: Some(entries),
        local,
        head: None,
        entry: None,
    };

    let mut lines = Vec::new();
    let mut orphans = 0usize;
    let (mut same, mut fetched, mut replaced, mut fetch_bytes) = (0usize, 0usize, 0usize, 0u64);
    let progress = crate::progress::Progress::new(format!("restore {name}: files"), None);
    let dry_run = target.dry_run;
    let mut failure: Option<String> = None;
    {
        let mut work = futures::stream::FuturesOrdered::new();
        loop {
            // Keep a few files in flight; collect what finished.
            while work.len() >= CONCURRENCY || (!work.is_empty() && failure.is_some()) {
                match work.next().await {
                    Some(r) => note(
                        r,
                        &mut lines,
                        &mut failure,
                        &mut same,
                        &mut fetched,
                        &mut replaced,
                        &mut fetch_bytes,
                        &orphan_dir,
                        dry_run,
                    ),
                    None => break,
                }
            }
            if failure.is_some() {
                break;
            }
            let step = match merge.next().await {
                Ok(Some(s)) => s,
                Ok(None) => break,
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            match step {
                Step::Orphan(p) => {
                    orphans += 1;
                    let to = orphan_dir.join(&p);
                    if dry_run {
                        lines.push(format!("would move {p} to {}", to.display()));
                        continue;
                    }
                    // Everything before it in flight touches other paths; wait for them
                    // anyway, so a file is never fetched into a directory being moved.
                    while let Some(r) = work.next().await {
                        note(
                            r,
                            &mut lines,
                            &mut failure,
                            &mut same,
                            &mut fetched,
                            &mut replaced,
                            &mut fetch_bytes,
                            &orphan_dir,
                            dry_run,
                        );
                    }
                    if failure.is_some() {
                        break;
                    }
                    match move_aside(&dir.join(&p), &to).await {
                        Ok(()) => lines.push(format!("moved {p} to {}", to.display())),
                        Err(e) => {
                            failure = Some(format!("cannot move {p} to {}: {e}", to.display()));
                        }
                    }
                }
                Step::Entry(f, here) => {
                    if tree::safe_join(&dir, &f.path).is_none() {
                        failure = Some(format!(
                            "the index names an unsafe path \"{}\"; refusing to restore it",
                            f.path
                        ));
                        continue;
                    }
                    let (dir, orphan_dir, progress) = (&dir, &orphan_dir, &progress);
                    work.push_back(async move {
                        restore_one(
                            storage, packing, dir, orphan_dir, f, here, dry_run, progress,
                        )
                        .await
                    });
                }
            }
        }
        while let Some(r) = work.next().await {
            note(
                r,
                &mut lines,
                &mut failure,
                &mut same,
                &mut fetched,
                &mut replaced,
                &mut fetch_bytes,
                &orphan_dir,
                dry_run,
            );
        }
    }
    progress.finish();
    if let Some(e) = failure {
        return Err(err(e));
    }
    if dry_run {
        lines.push(format!(
            "files {name} into {}: would fetch {fetched}, replace {replaced} ({} to download), move {orphans} to {}; {same} unchanged",
            dir.display(),
            human_bytes(fetch_bytes),
            orphan_dir.display(),
        ));
        return Ok(lines);
    }
    info!(
        source = name,
        "restored {} file(s) ({}) into {}",
        fetched + replaced,
        human_bytes(fetch_bytes),
        dir.display()
    );
    lines.push(format!(
        "files {name} into {}: {same} unchanged, {fetched} fetched, {replaced} replaced ({} downloaded), {orphans} moved to {}",
        dir.display(),
        human_bytes(fetch_bytes),
        if orphans == 0 && replaced == 0 {
            "orphan_files (none)".to_string()
        } else {
            orphan_dir.display().to_string()
        }
    ));
    Ok(lines)
}

/// What happened to one entry of the index.
enum Outcome {
    Same,
    Done(Action, IndexEntry),
}

#[allow(clippy::too_many_arguments)]
fn note(
    r: Result<Outcome, String>,
    lines: &mut Vec<String>,
    failure: &mut Option<String>,
    same: &mut usize,
    fetched: &mut usize,
    replaced: &mut usize,
    fetch_bytes: &mut u64,
    orphan_dir: &Path,
    dry_run: bool,
) {
    match r {
        Err(e) => {
            failure.get_or_insert(e);
        }
        Ok(Outcome::Same) => *same += 1,
        Ok(Outcome::Done(a, f)) => {
            *fetch_bytes += f.size;
            match a {
                Action::Fetch => *fetched += 1,
                Action::Replace => *replaced += 1,
            }
            if dry_run {
                let verb = match a {
                    Action::Fetch => "fetch",
                    Action::Replace => "replace",
                };
                lines.push(format!("would {verb} {} ({})", f.path, human_bytes(f.size)));
            } else if a == Action::Replace {
                lines.push(format!(
                    "replaced {} (old version moved to {})",
                    f.path,
                    orphan_dir.join(&f.path).display()
                ));
            }
        }
    }
}

/// Compare one file with its local copy (same size: by sha256 of the local file), and
/// fetch it when it differs or is missing.
#[allow(clippy::too_many_arguments)]
async fn restore_one(
    storage: &dyn Storage,
    packing: &Packing,
    dir: &Path,
    orphan_dir: &Path,
    f: IndexEntry,
    here: Option<u64>,
    dry_run: bool,
    progress: &crate::progress::Progress,
) -> Result<Outcome, String> {
    let path = dir.join(&f.path);
    let action = match here {
        None => Action::Fetch,
        Some(size) if size != f.size => Action::Replace,
        Some(_) => {
            let p = path.clone();
            match tokio::task::spawn_blocking(move || tree::hash_file(&p)).await {
                Ok(Ok((sha, _))) if sha == f.sha256 => return Ok(Outcome::Same),
                Ok(Ok(_)) => Action::Replace,
                Ok(Err(e)) => return Err(format!("cannot read {}: {e}", path.display())),
                Err(e) => return Err(format!("hashing aborted: {e}")),
            }
        }
    };
    if dry_run {
        return Ok(Outcome::Done(action, f));
    }
    fetch(storage, packing, dir, &f).await?;
    progress.add(f.size);
    if action == Action::Replace {
        let to = orphan_dir.join(&f.path);
        move_aside(&path, &to)
            .await
            .map_err(|e| format!("cannot move the old {} to {}: {e}", f.path, to.display()))?;
    }
    let tmp = temp_path(&path);
    commit(&tmp, &path)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    debug!("restored {}", f.path);
    Ok(Outcome::Done(action, f))
}

/// Temporary name next to the target (same directory, so the rename is atomic).
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.stowage-restore-{}", std::process::id()))
}

/// Download one file into its temporary name, verified, with mode and mtime set.
async fn fetch(
    storage: &dyn Storage,
    packing: &Packing,
    dir: &Path,
    f: &IndexEntry,
) -> Result<(), String> {
    let path = dir.join(&f.path);
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let tmp = temp_path(&path);
    let result = async {
        let raw = storage
            .get(&f.blob)
            .await
            .map_err(|e| format!("cannot fetch {} for {}: {e}", f.blob, f.path))?;
        let mut r = packing
            .unpack(raw, &f.blob)
            .await
            .map_err(|e| format!("cannot read {} for {}: {e}", f.blob, f.path))?;
        let mut out = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let k = r
                .read(&mut buf)
                .await
                .map_err(|e| format!("cannot read {} for {}: {e}", f.blob, f.path))?;
            if k == 0 {
                break;
            }
            h.update(&buf[..k]);
            n += k as u64;
            out.write_all(&buf[..k])
                .await
                .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        }
        let sha = hex::encode(h.finalize());
        if sha != f.sha256 || n != f.size {
            return Err(format!(
                "blob {} for {} is corrupt: expected {} bytes with sha256 {}, got {n} bytes with {sha}",
                f.blob, f.path, f.size, f.sha256
            ));
        }
        out.sync_all()
            .await
            .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
        let std_file = out.into_std().await;
        let mode = f.mode;
        let mtime = tree::system_time(f.mtime);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::PermissionsExt;
            std_file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            std_file.set_modified(mtime)
        })
        .await
        .map_err(|e| format!("setting attributes aborted: {e}"))?
        .map_err(|e| format!("cannot set mode/mtime on {}: {e}", tmp.display()))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    result
}

async fn commit(tmp: &Path, path: &Path) -> std::io::Result<()> {
    // An empty directory where the backup has a file (its contents were orphaned).
    if tokio::fs::symlink_metadata(path)
        .await
        .is_ok_and(|m| m.is_dir())
    {
        tokio::fs::remove_dir(path).await?;
    }
    let r = tokio::fs::rename(tmp, path).await;
    if r.is_err() {
        let _ = tokio::fs::remove_file(tmp).await;
    }
    r
}

static MOVES: AtomicU64 = AtomicU64::new(0);

/// Move a file out of the way, keeping it. Across file systems (the orphan directory on
/// another volume) it is copied, synced, then removed.
async fn move_aside(from: &Path, to: &Path) -> std::io::Result<()> {
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    let mut dest = to.to_path_buf();
    if tokio::fs::symlink_metadata(&dest).await.is_ok() {
        let n = MOVES.fetch_add(1, Ordering::Relaxed);
        let mut s = dest.into_os_string();
        s.push(format!(".{n}"));
        dest = PathBuf::from(s);
    }
    match tokio::fs::rename(from, &dest).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            let (f, d) = (from.to_path_buf(), dest.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let meta = std::fs::metadata(&f)?;
                std::fs::copy(&f, &d)?;
                let out = std::fs::OpenOptions::new().write(true).open(&d)?;
                out.sync_all()?;
                if let Ok(m) = meta.modified() {
                    out.set_modified(m)?;
                }
                std::fs::remove_file(&f)
            })
            .await
            .map_err(std::io::Error::other)?
        }
        Err(e) => Err(e),
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
            blob: String::new(),
        }
    }

    /// The merge of an index with the local tree: entries with the local size when both
    /// have the path, orphans for local-only files, and the files of a local directory
    /// where the backup has a file before that file.
    #[tokio::test]
    async fn index_and_tree_merge_in_path_order() {
        let index = blobs::IndexEntries::from_vec(
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
