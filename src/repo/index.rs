//! The file index of a backup's files source: which paths it holds, each with the blob of
//! its content (`<job>/backups/<id>/<source>.index[.zst|.gz]`), and the clear list of blob
//! keys an encrypted index references.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tracing::warn;

use crate::codec;
use crate::codec::Compression;
use crate::crypt::{Keys, Sealer};
use crate::repo::manifest::{self, JobListing, SourceEntry};
use crate::repo::packing::{self, Packing};
use crate::storage::Storage;
use std::sync::Arc;

use super::blobs::{BlobError, pack_bytes};

/// 2: JSON Lines (a header line, then one entry per line in [`path_order`]); 1: one JSON
/// document with every entry in `files`, sorted by path string (still read).
pub const INDEX_FORMAT: u32 = 2;

/// The index of one files source in one backup. Stored as JSON Lines (compressed like the
/// rest of the job), so it can be read with `zstd -dc | jq` when restoring by hand: this
/// struct without `files` is the first line, then one [`IndexEntry`] per line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileIndex {
    pub format: u32,
    pub source: String,
    /// The directory as configured when the backup was taken.
    pub root: String,
    /// The source's filters then: a restore only orphans files these would have included.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Format 1 only (format 2 has the entries on the following lines); in memory, in
    /// [`path_order`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<IndexEntry>,
}

/// The order of paths in a scan and an index: component by component, each compared as
/// bytes. It is the order of a depth-first walk with sorted directories (walkdir's
/// `sort_by_file_name`), so a scan and an index can be merged without holding either; it
/// differs from the order of whole strings ("a.b" < "a/b" as strings, not here).
pub fn path_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.split('/').cmp(b.split('/'))
}

/// One line of a format-2 index, newline included.
pub fn index_line<T: Serialize>(item: &T) -> Result<Vec<u8>, BlobError> {
    let mut line = serde_json::to_vec(item).map_err(BlobError::Encode)?;
    line.push(b'\n');
    Ok(line)
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IndexEntry {
    /// Relative to the root, '/'-separated.
    pub path: String,
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime: i64,
    /// sha256 of the raw content, hex.
    pub sha256: String,
    /// Key of the blob holding the content (relative to the destination's root).
    pub blob: String,
}

/// Serialize, compress and (for an encrypting job) encrypt an index.
pub async fn encode_index(
    index: &FileIndex,
    c: Compression,
    sealer: Option<&Arc<Sealer>>,
) -> Result<(Bytes, u64), BlobError> {
    let json = serde_json::to_vec(index).map_err(BlobError::Encode)?;
    let raw = json.len() as u64;
    let packed = pack_bytes(Bytes::from(json), c, None, sealer).await?;
    Ok((packed, raw))
}

/// The clear list of blob keys an encrypted index references (`layout::refs_key`), one a
/// line in index order, so a sweep can mark without a key: it reveals only names the blob
/// listing shows anyway.
pub async fn read_refs(
    storage: &dyn Storage,
    r: &crate::repo::manifest::StoredRef,
    c: Compression,
) -> Result<Vec<String>, BlobError> {
    let verified = super::read_recorded(storage, r.into(), None).await?;
    let mut text = String::new();
    codec::decompress(Box::new(verified), c)
        .read_to_string(&mut text)
        .await
        .map_err(|source| BlobError::Read {
            key: r.key.clone(),
            source,
        })?;
    // Written in index order since format 2: duplicates are possible.
    let mut keys: Vec<String> = text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    Ok(keys)
}

/// Read a whole index into memory (what `verify` and archive surveys use; backups and
/// restores stream it with [`open_index`]).
pub async fn read_index(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<FileIndex, BlobError> {
    let (mut header, mut entries) = open_index(storage, entry, packing).await?;
    let mut files = Vec::new();
    while let Some(f) = entries.next().await? {
        files.push(f);
    }
    header.files = files;
    Ok(header)
}

/// The entries of an index, one at a time, in [`path_order`].
pub struct IndexEntries {
    source: EntrySource,
    key: String,
    last: Option<String>,
    line: String,
}

enum EntrySource {
    Lines(tokio::io::BufReader<codec::Reader>),
    /// A format-1 index: one document, so it is in memory anyway (sorted into path order).
    Loaded(std::vec::IntoIter<IndexEntry>),
}

impl IndexEntries {
    /// Entries already in memory (in `path_order`): for tests of the merges.
    #[cfg(test)]
    pub(crate) fn from_vec(entries: Vec<IndexEntry>) -> IndexEntries {
        IndexEntries {
            source: EntrySource::Loaded(entries.into_iter()),
            key: "test".to_string(),
            last: None,
            line: String::new(),
        }
    }

    /// The next entry; `None` at the end, once the stored object's sha256 was checked.
    pub async fn next(&mut self) -> Result<Option<IndexEntry>, BlobError> {
        let entry =
            match &mut self.source {
                EntrySource::Loaded(it) => it.next(),
                EntrySource::Lines(r) => loop {
                    self.line.clear();
                    let n = tokio::io::AsyncBufReadExt::read_line(r, &mut self.line)
                        .await
                        .map_err(|source| BlobError::Read {
                            key: self.key.clone(),
                            source,
                        })?;
                    if n == 0 {
                        break None;
                    }
                    if self.line.trim().is_empty() {
                        continue;
                    }
                    break Some(serde_json::from_str::<IndexEntry>(&self.line).map_err(
                        |source| BlobError::Invalid {
                            key: self.key.clone(),
                            source,
                        },
                    )?);
                },
            };
        if let Some(e) = &entry {
            // Merges with a scan rely on the order: an index out of order is refused
            // rather than merged wrongly.
            if let Some(last) = &self.last
                && path_order(last, &e.path) != std::cmp::Ordering::Less
            {
                return Err(BlobError::Corrupt(format!(
                    "file index {} is not in path order at \"{}\"",
                    self.key, e.path
                )));
            }
            self.last = Some(e.path.clone());
            // Paths and blob keys are untrusted: none may lead out of the restored
            // directory, the destination's root or the job's prefix.
            crate::repo::layout::check_index_entry(&self.key, &e.path, &e.blob)
                .map_err(BlobError::Corrupt)?;
        }
        Ok(entry)
    }
}

/// Open a backup's index: its header (`files` empty) and its entries, streamed. The
/// stored object is checked against the manifest's sha256 when the last entry is read.
/// A format-1 index is one JSON document: it is read whole (as before format 2).
pub async fn open_index(
    storage: &dyn Storage,
    entry: &SourceEntry,
    packing: &Packing,
) -> Result<(FileIndex, IndexEntries), BlobError> {
    let r = super::open_recorded(storage, entry.into(), packing, None).await?;
    let mut r = tokio::io::BufReader::with_capacity(64 * 1024, r);
    let read_err = |source| BlobError::Read {
        key: entry.key.clone(),
        source,
    };
    let invalid = |source| BlobError::Invalid {
        key: entry.key.clone(),
        source,
    };
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut r, &mut first)
        .await
        .map_err(read_err)?;
    let mut header: FileIndex = match serde_json::from_str(&first) {
        Ok(h) => h,
        // Not one line: a format-1 document written over several lines.
        Err(_) => {
            let mut rest = first.into_bytes();
            r.read_to_end(&mut rest).await.map_err(read_err)?;
            serde_json::from_slice(&rest).map_err(invalid)?
        }
    };
    let source = match header.format {
        1 => {
            let mut files = std::mem::take(&mut header.files);
            files.sort_by(|a, b| path_order(&a.path, &b.path));
            // Drain to the end, so the sha256 is checked.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).await.map_err(read_err)?;
            EntrySource::Loaded(files.into_iter())
        }
        2 => EntrySource::Lines(r),
        n => {
            return Err(BlobError::Corrupt(format!(
                "file index {} has format {n}, newer than this stowage reads ({INDEX_FORMAT}); use a newer stowage",
                entry.key
            )));
        }
    };
    Ok((
        header,
        IndexEntries {
            source,
            key: entry.key.clone(),
            last: None,
            line: String::new(),
        },
    ))
}

/// Each blob key of a stored refs list (checked against its sha256 at the end).
pub async fn for_each_ref(
    storage: &dyn Storage,
    r: &crate::repo::manifest::StoredRef,
    c: Compression,
    each: &mut (dyn FnMut(&str) + Send),
) -> Result<(), BlobError> {
    let verified = super::read_recorded(storage, r.into(), None).await?;
    let mut lines = tokio::io::BufReader::new(codec::decompress(Box::new(verified), c));
    let mut line = String::new();
    loop {
        line.clear();
        let n = tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line)
            .await
            .map_err(|source| BlobError::Read {
                key: r.key.clone(),
                source,
            })?;
        if n == 0 {
            return Ok(());
        }
        let key = line.trim_end();
        if !key.is_empty() {
            each(key);
        }
    }
}

/// streamed, to merge with a scan.
pub async fn previous_index(
    storage: &dyn Storage,
    listing: &JobListing,
    job: &str,
    source: &str,
    keys: Option<Arc<Keys>>,
    expect: &packing::Expect,
) -> Option<(String, IndexEntries)> {
    for p in listing.published(job) {
        let Ok(m) = manifest::read_manifest(storage, job, &p.id).await else {
            continue;
        };
        let Some(e) = m
            .sources
            .iter()
            .find(|s| s.name == source && s.files.is_some())
        else {
            continue;
        };
        // A fake index would have the backup trust its hashes for files it does not read
        // again: only one the job itself wrote is merged.
        let packing = match Packing::of(&m, expect, keys.clone()) {
            Ok(p) => p,
            Err(err) => {
                warn!(
                    job,
                    source, "not using backup {}'s index of {source}: {err}", p.id
                );
                continue;
            }
        };
        if m.encryption.is_some() && keys.is_none() {
            // Without the identity the index cannot be read: every file is hashed again
            // (nothing is uploaded again: blob names still match).
            return None;
        }
        return match open_index(storage, e, &packing).await {
            Ok((_, entries)) => Some((p.id, entries)),
            Err(err) => {
                warn!(
                    job,
                    source,
                    "cannot read the previous index of {source} ({err}); re-reading every file"
                );
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blobs::compress_bytes;
    use crate::repo::layout::blob_key;
    use sha2::{Digest, Sha256};

    #[test]
    fn paths_order_component_by_component() {
        use std::cmp::Ordering::*;
        assert_eq!(path_order("a/b", "a.b"), Less);
        assert!("a/b" > "a.b", "as whole strings it is the other way");
        assert_eq!(path_order("a/z/z", "a0"), Less);
        assert_eq!(path_order("a", "a/b"), Less);
        assert_eq!(path_order("a-c/x", "a/x"), Greater);
        assert_eq!(path_order("x/y", "x/y"), Equal);
        let mut v = vec!["a0", "a.b/c", "a/b/c", "a-c", "a/b", "b", "a/b.c"];
        v.sort_by(|a, b| path_order(a, b));
        assert_eq!(v, vec!["a/b", "a/b/c", "a/b.c", "a-c", "a.b/c", "a0", "b"]);
    }

    fn entry(path: &str) -> IndexEntry {
        IndexEntry {
            path: path.to_string(),
            size: 1,
            mode: 0o644,
            mtime: 0,
            sha256: "ab".repeat(32),
            blob: blob_key("app", &"ab".repeat(32), Compression::Zstd),
        }
    }

    fn header(format: u32, files: Vec<IndexEntry>) -> FileIndex {
        FileIndex {
            format,
            source: "uploads".into(),
            root: "/data".into(),
            include: vec![],
            exclude: vec![],
            files,
        }
    }

    /// Store `body` (zstd) as an index and open it as its manifest entry would.
    async fn stored(
        storage: &crate::storage::local::LocalStorage,
        body: Vec<u8>,
    ) -> Result<(FileIndex, IndexEntries), BlobError> {
        let packed = compress_bytes(Bytes::from(body.clone()), Compression::Zstd, None)
            .await
            .expect("compress");
        let key = "app/x/uploads.files.json.zst";
        storage.put_bytes(key, packed.clone()).await.expect("put");
        let entry = SourceEntry {
            key: key.into(),
            size: packed.len() as u64,
            raw_size: body.len() as u64,
            sha256: hex::encode(Sha256::digest(&packed)),
            ..Default::default()
        };
        open_index(storage, &entry, &Packing::plain(Compression::Zstd)).await
    }

    async fn all(mut e: IndexEntries) -> Result<Vec<String>, BlobError> {
        let mut out = Vec::new();
        while let Some(f) = e.next().await? {
            out.push(f.path);
        }
        Ok(out)
    }

    /// Format 2 streams line by line in path order; format 1 (sorted by whole strings) is
    /// read whole and put in path order; an index out of order is refused.
    #[tokio::test]
    async fn indexes_of_both_formats_read_in_path_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = crate::storage::local::LocalStorage::new(dir.path().to_path_buf());
        let mut body = index_line(&header(2, vec![])).expect("header");
        for p in ["a/b", "a.b", "b"] {
            body.extend(index_line(&entry(p)).expect("line"));
        }
        let (h, e) = stored(&storage, body).await.expect("open");
        assert_eq!((h.format, h.files.len()), (2, 0));
        assert_eq!(all(e).await.expect("entries"), vec!["a/b", "a.b", "b"]);

        let old = header(1, vec![entry("a.b"), entry("a/b"), entry("b")]);
        let (h, e) = stored(&storage, serde_json::to_vec(&old).expect("json"))
            .await
            .expect("open");
        assert_eq!(h.format, 1);
        assert_eq!(all(e).await.expect("entries"), vec!["a/b", "a.b", "b"]);

        let mut body = index_line(&header(2, vec![])).expect("header");
        for p in ["a.b", "a/b"] {
            body.extend(index_line(&entry(p)).expect("line"));
        }
        let (_, e) = stored(&storage, body).await.expect("open");
        let err = all(e).await.expect_err("out of order");
        assert!(err.to_string().contains("not in path order"), "{err}");

        let newer = index_line(&header(3, vec![])).expect("header");
        let err = stored(&storage, newer).await.err().expect("format 3");
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
