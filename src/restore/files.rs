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
use crate::source::files::{self as tree, FileMeta, PathFilter};
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
    pub dir: PathBuf,
    /// Local files the source's filters cover, by relative path.
    local: HashMap<String, FileMeta>,
    /// Paths whose local file has the backup's content: nothing to download.
    pub same: HashSet<String>,
}

/// Read the index and compare every file with what `dir` (default: the backup's root)
/// holds, by size, then by sha256 of the local file (nothing is downloaded).
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
    Ok(Compared {
        index,
        dir,
        local,
        same,
    })
}

pub async fn restore(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
    target: Target,
) -> Result<Vec<String>, RestoreError> {
    let name = entry.name.as_str();
    let err = |e: String| RestoreError::Files(format!("files {name}: {e}"));
    let Compared {
        index,
        dir,
        local,
        same,
    } = compare(storage, entry, packing, target.dir.clone()).await?;
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
    let wanted: HashSet<&str> = index.files.iter().map(|f| f.path.as_str()).collect();
    let mut orphans: Vec<&String> = local
        .keys()
        .filter(|p| !wanted.contains(p.as_str()))
        .collect();
    orphans.sort();

    let work: Vec<(&IndexEntry, Action)> = index
        .files
        .iter()
        .filter(|f| !same.contains(f.path.as_str()))
        .map(|f| {
            let a = if local.contains_key(&f.path) {
                Action::Replace
            } else {
                Action::Fetch
            };
            (f, a)
        })
        .collect();
    let fetch_bytes: u64 = work.iter().map(|(f, _)| f.size).sum();
    let replaced = work.iter().filter(|(_, a)| *a == Action::Replace).count();
    let fetched = work.len() - replaced;

    let mut lines = Vec::new();
    if target.dry_run {
        for (f, a) in &work {
            let verb = match a {
                Action::Fetch => "fetch",
                Action::Replace => "replace",
            };
            lines.push(format!("would {verb} {} ({})", f.path, human_bytes(f.size)));
        }
        for p in &orphans {
            lines.push(format!(
                "would move {p} to {}",
                orphan_dir.join(p.as_str()).display()
            ));
        }
        lines.push(format!(
            "files {name} into {}: would fetch {fetched}, replace {replaced} ({} to download), move {} to {}; {} unchanged",
            dir.display(),
            human_bytes(fetch_bytes),
            orphans.len(),
            orphan_dir.display(),
            same.len()
        ));
        return Ok(lines);
    }

    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    // Orphans first: a local file may sit where the backup has a directory.
    for p in &orphans {
        let to = orphan_dir.join(p.as_str());
        move_aside(&dir.join(p.as_str()), &to)
            .await
            .map_err(|e| err(format!("cannot move {p} to {}: {e}", to.display())))?;
        lines.push(format!("moved {p} to {}", to.display()));
    }
    info!(
        source = name,
        "restoring {} file(s) ({}) into {}",
        work.len(),
        human_bytes(fetch_bytes),
        dir.display()
    );
    let progress =
        crate::progress::Progress::new(format!("restore {name}: files"), Some(fetch_bytes));
    let results = futures::stream::iter(work.iter())
        .map(|(f, a)| {
            let dir = &dir;
            let orphan_dir = &orphan_dir;
            let progress = &progress;
            async move {
                fetch(storage, packing, dir, f).await?;
                progress.add(f.size);
                let path = dir.join(&f.path);
                if *a == Action::Replace {
                    let to = orphan_dir.join(&f.path);
                    move_aside(&path, &to).await.map_err(|e| {
                        format!("cannot move the old {} to {}: {e}", f.path, to.display())
                    })?;
                }
                let tmp = temp_path(&path);
                commit(&tmp, &path)
                    .await
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                debug!(source = name, "restored {}", f.path);
                Ok::<_, String>((f.path.as_str(), *a))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await;
    progress.finish();
    for r in results {
        let (p, a) = r.map_err(err)?;
        if a == Action::Replace {
            lines.push(format!(
                "replaced {p} (old version moved to {})",
                orphan_dir.join(p).display()
            ));
        }
    }
    lines.push(format!(
        "files {name} into {}: {} unchanged, {fetched} fetched, {replaced} replaced ({} downloaded), {} moved to {}",
        dir.display(),
        same.len(),
        human_bytes(fetch_bytes),
        orphans.len(),
        if orphans.is_empty() && replaced == 0 {
            "orphan_files (none)".to_string()
        } else {
            orphan_dir.display().to_string()
        }
    ));
    Ok(lines)
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
