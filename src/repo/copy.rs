//! Copying a backup's objects from one destination to another: each object streamed from
//! the one into the other's `put_stream`, checked on the way, and completed on the target
//! only once the check passed (a damaged object never becomes visible there).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::packing::Packing;
use crate::crypt::CryptError;
use crate::progress::Progress;
use crate::storage::{Chunk, Storage, StorageError};

const READ_CHUNK: usize = 256 * 1024;
/// Chunks buffered toward the target: a slow target slows the read instead of growing memory.
const CHANNEL_DEPTH: usize = 8;

/// Why an object was not copied. A failure leaves nothing at the key on the target.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The object cannot be read where it is (missing, unreachable, not retrieved from an
    /// archive class).
    #[error("reading {key}: {source}")]
    Read {
        key: String,
        #[source]
        source: StorageError,
    },
    /// Its bytes are not what the backup recorded (size or sha256), or cannot be read to
    /// the end.
    #[error("{key} is damaged where it is copied from: {source}")]
    Damaged {
        key: String,
        #[source]
        source: std::io::Error,
    },
    /// A blob whose content is not what the backup's file index records.
    #[error(
        "blob {key} is damaged where it is copied from: expected content of {size} bytes with sha256 {sha256}, got {got_size} bytes with sha256 {got_sha256}"
    )]
    Mismatch {
        key: String,
        size: u64,
        sha256: String,
        got_size: u64,
        got_sha256: String,
    },
    /// A blob that cannot be decrypted to check its content (a wrong or missing identity).
    #[error("blob {key} cannot be decrypted to check it: {source}")]
    Unpack {
        key: String,
        #[source]
        source: CryptError,
    },
    #[error("writing {key}: {source}")]
    Write {
        key: String,
        #[source]
        source: StorageError,
    },
}

impl CopyError {
    /// The store's own "archived, not retrieved" answer, when that is why the read failed.
    pub fn not_retrieved(&self) -> Option<&StorageError> {
        match self {
            CopyError::Read {
                source: e @ StorageError::NotRetrieved(_),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

/// Where a copied object goes on the target: in the destination's storage class (data),
/// or never archived (what stowage reads to plan: an index, a refs list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Data,
    Plain,
}

/// Stream `reader` (the checked stored bytes of `key`) into `key` on `to`, each chunk also
/// sent to `tee` when given. The upload is completed only when the reader ends cleanly and
/// `check` (awaited once it has, and `tee` is closed) passes; otherwise it is abandoned.
/// Returns the bytes stored.
pub(super) async fn copy_stream<R, F>(
    mut reader: R,
    to: &dyn Storage,
    key: &str,
    class: Class,
    progress: Option<&Arc<Progress>>,
    tee: Option<mpsc::Sender<Bytes>>,
    check: F,
) -> Result<u64, CopyError>
where
    R: AsyncRead + Unpin,
    F: std::future::Future<Output = Result<(), CopyError>>,
{
    let (tx, rx) = mpsc::channel::<Chunk>(CHANNEL_DEPTH);
    let upload = async move {
        match class {
            Class::Data => to.put_stream(key, rx).await,
            Class::Plain => to.put_stream_plain(key, rx).await,
        }
    };
    let pump = async move {
        let mut tee = tee;
        let mut n = 0u64;
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            buf.reserve(READ_CHUNK);
            let k = reader
                .read_buf(&mut buf)
                .await
                .map_err(|source| CopyError::Damaged {
                    key: key.to_string(),
                    source,
                })?;
            if k == 0 {
                break;
            }
            let chunk = buf.split().freeze();
            if let Some(t) = &tee {
                // The other side stopped reading: its own result says why.
                if t.send(chunk.clone()).await.is_err() {
                    tee = None;
                }
            }
            n += chunk.len() as u64;
            if let Some(p) = progress {
                p.add(chunk.len() as u64);
            }
            // A failed send means the upload gave up; it says why.
            if tx.send(Chunk::Data(chunk)).await.is_err() {
                return Ok(n);
            }
        }
        drop(tee);
        check.await?;
        let _ = tx.send(Chunk::End).await;
        Ok(n)
    };
    let (pumped, uploaded) = tokio::join!(pump, upload);
    let n = pumped?;
    uploaded.map_err(|source| CopyError::Write {
        key: key.to_string(),
        source,
    })?;
    Ok(n)
}

/// Copy blob `key` from `from` to `to`, its content (decrypted and decompressed as a
/// restore reads it) checked against `sha256` and `size` as it streams: the stored bytes go
/// to the target unchanged, and the upload completes only if the content matched.
pub(super) async fn copy_blob(
    from: &dyn Storage,
    to: &dyn Storage,
    key: &str,
    packing: &Packing,
    sha256: &str,
    size: u64,
    progress: Option<&Arc<Progress>>,
) -> Result<u64, CopyError> {
    let raw = from.get(key).await.map_err(|source| CopyError::Read {
        key: key.to_string(),
        source,
    })?;
    // The stored bytes, fed through a pipe to the unpacker as they go to the target.
    let (mut feed, pipe) = tokio::io::duplex(READ_CHUNK);
    let (tee, mut chunks) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let feeding = async move {
        while let Some(chunk) = chunks.recv().await {
            // The unpacker stopped reading (its stream ended, or it failed): its result
            // decides; the rest is drained so the copy never waits on it.
            if feed.write_all(&chunk).await.is_err() {
                while chunks.recv().await.is_some() {}
                break;
            }
        }
        let _ = feed.shutdown().await;
    };
    let (content_tx, content_rx) = tokio::sync::oneshot::channel();
    let hashing = async move {
        let _ = content_tx.send(content_of(pipe, packing, key).await);
    };
    let check = async move {
        let (got_sha256, got_size) = content_rx.await.map_err(|_| CopyError::Damaged {
            key: key.to_string(),
            source: std::io::Error::other("the content check stopped"),
        })??;
        if got_sha256 != sha256 || got_size != size {
            return Err(CopyError::Mismatch {
                key: key.to_string(),
                size,
                sha256: sha256.to_string(),
                got_size,
                got_sha256,
            });
        }
        Ok(())
    };
    let copy = copy_stream(raw, to, key, Class::Data, progress, Some(tee), check);
    let (copied, (), ()) = tokio::join!(copy, feeding, hashing);
    copied
}

/// The sha256 and size of a stored blob's content, unpacked as a restore reads it.
async fn content_of(
    stored: tokio::io::DuplexStream,
    packing: &Packing,
    key: &str,
) -> Result<(String, u64), CopyError> {
    let mut r = packing
        .unpack(Box::new(stored), key)
        .await
        .map_err(|source| CopyError::Unpack {
            key: key.to_string(),
            source,
        })?;
    let mut h = Sha256::new();
    let mut n = 0u64;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let k = r
            .read(&mut buf)
            .await
            .map_err(|source| CopyError::Damaged {
                key: key.to_string(),
                source,
            })?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex::encode(h.finalize()), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Compression;
    use crate::repo::{Recorded, Repository};
    use crate::storage::local::LocalStorage;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    /// An object or blob whose bytes are not what was recorded never appears on the
    /// target; an intact one arrives byte for byte.
    #[tokio::test]
    async fn only_checked_bytes_arrive() {
        let (a_dir, b_dir) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let a_st = LocalStorage::new(a_dir.path().to_path_buf());
        let b_st = LocalStorage::new(b_dir.path().to_path_buf());
        let (a, b) = (Repository::new(&a_st, "app"), Repository::new(&b_st, "app"));
        let dump = Bytes::from(vec![7u8; 600_000]);
        let key = "app/X/db.pgdump";
        a_st.put_data(key, dump.clone()).await.expect("put");
        let wrong = sha(b"something else");
        let bad = Recorded {
            key,
            sha256: &wrong,
            size: dump.len() as u64,
        };
        let e = b
            .copy_object_from(a, bad, Class::Data, None)
            .await
            .expect_err("wrong sha256");
        assert!(matches!(e, CopyError::Damaged { .. }), "{e}");
        assert!(b_st.list("app/").await.expect("list").is_empty());
        let right = sha(&dump);
        let good = Recorded {
            key,
            sha256: &right,
            size: dump.len() as u64,
        };
        let n = b
            .copy_object_from(a, good, Class::Plain, None)
            .await
            .expect("copy");
        assert_eq!(n, dump.len() as u64);
        assert_eq!(b_st.get_bytes(key).await.expect("get"), dump);

        // A blob: its content checked, through its compression.
        let content = Bytes::from(vec![3u8; 300_000]);
        let name = sha(&content);
        let blob = b.blob_key(&name, Compression::Zstd.into());
        let packed = crate::repo::blobs::compress_bytes(content.clone(), Compression::Zstd, None)
            .await
            .expect("compress");
        a_st.put_data(&blob, packed.clone()).await.expect("put");
        let packing = Packing::plain(Compression::Zstd);
        let size = content.len() as u64;
        let e = b
            .copy_blob_from(a, &blob, &packing, &name, size + 1, None)
            .await
            .expect_err("wrong size");
        assert!(matches!(e, CopyError::Mismatch { .. }), "{e}");
        assert!(b_st.list("app/blobs/").await.expect("list").is_empty());
        b.copy_blob_from(a, &blob, &packing, &name, size, None)
            .await
            .expect("copy");
        assert_eq!(b_st.get_bytes(&blob).await.expect("get"), packed);
    }
}
