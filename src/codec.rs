//! Compression on the way out, decompression and integrity checks on the way back.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::Level;
use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZstdDecoder, ZstdEncoder};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

pub type Reader = Box<dyn AsyncRead + Send + Unpin>;

/// How a stream is compressed: a job's `compression` setting, and part of every stored
/// object's form (its key suffix, the manifest).
#[derive(Debug, serde::Deserialize, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

const BUF: usize = 256 * 1024;

pub fn compress(r: Reader, c: Compression, level: Option<i32>) -> Reader {
    match c {
        Compression::Zstd => Box::new(ZstdEncoder::with_quality(
            BufReader::with_capacity(BUF, r),
            Level::Precise(level.unwrap_or(3)),
        )),
        Compression::Gzip => Box::new(GzipEncoder::with_quality(
            BufReader::with_capacity(BUF, r),
            Level::Precise(level.unwrap_or(6)),
        )),
        Compression::None => r,
    }
}

/// Decompress `r`, reading it to its very end. A decoder otherwise stops at the end of
/// its frame without asking for the end of the stream, and a [`Verify`] beneath it, which
/// checks size and sha256 only when it sees that end, would never speak: a damaged archive
/// would restore as if it were whole.
pub fn decompress(r: Reader, c: Compression) -> Reader {
    match c {
        Compression::Zstd => {
            let mut d = ZstdDecoder::new(BufReader::with_capacity(BUF, r));
            d.multiple_members(true);
            Box::new(d)
        }
        Compression::Gzip => {
            let mut d = GzipDecoder::new(BufReader::with_capacity(BUF, r));
            d.multiple_members(true);
            Box::new(d)
        }
        Compression::None => r,
    }
}

/// Drain `r` in its own task into a bounded queue of up to `chunks` × 256 KiB, and read
/// from that queue. The producer behind `r` (a dump tool writing into a 64 KiB pipe) then keeps
/// running while the consumer compresses, instead of blocking on every chunk.
pub fn read_ahead(mut r: Reader, chunks: usize) -> Reader {
    use tokio::io::AsyncReadExt;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<bytes::Bytes>>(chunks.max(1));
    tokio::spawn(async move {
        loop {
            let mut buf = bytes::BytesMut::with_capacity(BUF);
            match r.read_buf(&mut buf).await {
                Ok(0) => break,
                Ok(_) => {
                    if tx.send(Ok(buf.freeze())).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    break;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(stream)))
}

/// Passes bytes through and, at end of stream, fails with `InvalidData` unless their size
/// and sha256 match what the manifest recorded. The error surfaces *before* the consumer
/// sees end-of-file, so a restore can be killed before it commits corrupt data.
pub struct Verify {
    inner: Reader,
    hasher: Sha256,
    seen: u64,
    expected_sha256: String,
    expected_size: u64,
    what: String,
}

impl Verify {
    pub fn new(inner: Reader, expected_sha256: &str, expected_size: u64, what: &str) -> Self {
        Verify {
            inner,
            hasher: Sha256::new(),
            seen: 0,
            expected_sha256: expected_sha256.to_ascii_lowercase(),
            expected_size,
            what: what.to_string(),
        }
    }
}

impl AsyncRead for Verify {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                if new.is_empty() {
                    let got = hex::encode(this.hasher.clone().finalize());
                    if this.seen != this.expected_size || got != this.expected_sha256 {
                        return Poll::Ready(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!(
                                "{} is corrupt: expected {} bytes with sha256 {}, got {} bytes with sha256 {}",
                                this.what, this.expected_size, this.expected_sha256, this.seen, got
                            ),
                        )));
                    }
                } else {
                    this.seen += new.len() as u64;
                    this.hasher.update(new);
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn roundtrip(c: Compression) {
        let data: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut packed = Vec::new();
        compress(Box::new(std::io::Cursor::new(data.clone())), c, None)
            .read_to_end(&mut packed)
            .await
            .expect("compress");
        let sha = hex::encode(Sha256::digest(&packed));
        let verified = Verify::new(
            Box::new(std::io::Cursor::new(packed.clone())),
            &sha,
            packed.len() as u64,
            "x",
        );
        let mut out = Vec::new();
        decompress(Box::new(verified), c)
            .read_to_end(&mut out)
            .await
            .expect("decompress");
        assert_eq!(out, data);
    }

    #[tokio::test]
    async fn read_ahead_passes_everything_and_errors_through() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let mut out = Vec::new();
        read_ahead(Box::new(std::io::Cursor::new(data.clone())), 4)
            .read_to_end(&mut out)
            .await
            .expect("read");
        assert_eq!(out, data);

        let failing = tokio_util::io::StreamReader::new(futures::stream::iter(vec![
            Ok(bytes::Bytes::from_static(b"abc")),
            Err(std::io::Error::other("pipe broke")),
        ]));
        let mut out = Vec::new();
        let err = read_ahead(Box::new(failing), 4)
            .read_to_end(&mut out)
            .await
            .expect_err("error must pass through");
        assert!(err.to_string().contains("pipe broke"));
    }

    #[tokio::test]
    async fn roundtrips() {
        roundtrip(Compression::Zstd).await;
        roundtrip(Compression::Gzip).await;
        roundtrip(Compression::None).await;
    }

    /// A byte flipped inside the compressed object is caught through the decoder, for both
    /// codecs: the decoder must read to the end so that the check runs.
    #[tokio::test]
    async fn damaged_compressed_objects_fail_through_the_decoder() {
        use tokio::io::AsyncReadExt;
        for c in [Compression::Zstd, Compression::Gzip] {
            let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
            let mut packed = Vec::new();
            compress(Box::new(std::io::Cursor::new(data.clone())), c, None)
                .read_to_end(&mut packed)
                .await
                .expect("compress");
            let sha = hex::encode(Sha256::digest(&packed));
            let size = packed.len() as u64;
            let open = |bytes: Vec<u8>| {
                decompress(
                    Box::new(Verify::new(
                        Box::new(std::io::Cursor::new(bytes)),
                        &sha,
                        size,
                        "db.sql",
                    )),
                    c,
                )
            };
            let mut out = Vec::new();
            open(packed.clone())
                .read_to_end(&mut out)
                .await
                .expect("intact object reads");
            assert_eq!(out, data);
            // The last byte of the object, where a decoder that stops at its frame's end
            // never looks (for gzip: the trailer's size field).
            let mut damaged = packed.clone();
            let last = damaged.len() - 1;
            damaged[last] ^= 0x01;
            let mut out = Vec::new();
            let e = open(damaged).read_to_end(&mut out).await;
            assert!(e.is_err(), "{c:?}: a damaged last byte went unnoticed");
            // Trailing bytes after a whole frame are damage too.
            let mut longer = packed.clone();
            longer.extend_from_slice(b"junk");
            let mut out = Vec::new();
            assert!(
                open(longer).read_to_end(&mut out).await.is_err(),
                "{c:?}: trailing bytes went unnoticed"
            );
        }
    }

    #[tokio::test]
    async fn verify_rejects_tampering() {
        let data = b"hello world".to_vec();
        let sha = hex::encode(Sha256::digest(&data));
        let mut tampered = data.clone();
        tampered[0] = b'j';
        let mut v = Verify::new(
            Box::new(std::io::Cursor::new(tampered)),
            &sha,
            11,
            "db.pgdump",
        );
        let mut out = Vec::new();
        let err = v.read_to_end(&mut out).await.expect_err("must fail");
        assert!(err.to_string().contains("db.pgdump is corrupt"), "{err}");
    }
}
