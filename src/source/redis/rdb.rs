//! What stowage knows of the RDB format: its 9-byte header ("REDIS" and a 4-digit version)
//! and its end (RDB 5 and later: the end-of-file opcode 0xFF, then the CRC-64 of everything
//! before it as 8 little-endian bytes). Nothing in between is parsed.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, ReadBuf};

pub const HEADER_LEN: usize = 9;
const CHECKSUM_LEN: usize = 8;
/// The end-of-file opcode and the checksum after it.
const TRAILER_LEN: usize = 1 + CHECKSUM_LEN;
const EOF_OPCODE: u8 = 0xFF;
/// In diskless replication the server ends the snapshot with a 40-character random mark
/// (announced as `$EOF:<mark>`). `redis-cli --rdb FILE` truncates it away, but with
/// `--rdb -` it cannot truncate a pipe and the mark reaches its stdout.
const EOF_MARK_LEN: usize = 40;
const HOLD: usize = EOF_MARK_LEN + TRAILER_LEN;
const CHUNK: usize = 64 * 1024;

/// The RDB version in a header, or why the bytes are not one.
pub fn check_header(head: &[u8]) -> Result<u32, String> {
    let shown = || {
        head.iter()
            .flat_map(|b| std::ascii::escape_default(*b))
            .map(char::from)
            .collect::<String>()
    };
    if head.len() < HEADER_LEN {
        return Err(if head.is_empty() {
            "is empty".to_string()
        } else {
            format!(
                "ends after {} byte(s) (\"{}\"), before the RDB header",
                head.len(),
                shown()
            )
        });
    }
    let digits = &head[5..HEADER_LEN];
    if &head[..5] != b"REDIS" || !digits.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "does not start with an RDB header (\"REDIS\" and a 4-digit version) but with \"{}\"",
            shown()
        ));
    }
    Ok(digits
        .iter()
        .fold(0u32, |v, d| v * 10 + u32::from(d - b'0')))
}

/// Whether an RDB of `version` ending in `tail` looks complete: from version 5 on, every
/// RDB ends with the end-of-file opcode and an 8-byte checksum. (A quick look at the end
/// only, for the dump, where redis-cli has already checked the transfer's framing;
/// [`RdbCheck`] verifies the checksum.)
fn check_trailer(version: u32, tail: &[u8]) -> Result<(), String> {
    if version < 5 {
        return Ok(());
    }
    if tail.len() < TRAILER_LEN || tail[tail.len() - TRAILER_LEN] != EOF_OPCODE {
        return Err(
            "does not end with the RDB end-of-file opcode and checksum: the snapshot is incomplete"
                .to_string(),
        );
    }
    Ok(())
}

/// Redis's CRC-64 ("Jones" polynomial 0xad93d23594c935a9, reflected, no final xor), one
/// byte at a time from a table built at compile time.
const CRC_TABLE: [u64; 256] = {
    const REFLECTED_POLY: u64 = 0x95ac_9329_ac4b_c9b5;
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u64;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ REFLECTED_POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn crc64(mut crc: u64, data: &[u8]) -> u64 {
    for b in data {
        crc = CRC_TABLE[((crc ^ u64::from(*b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// Checks a whole RDB as it streams by, before a restore puts it in place: a file Redis
/// would refuse at start (incomplete, or failing its checksum) must never replace the
/// one it has. The last 8 bytes seen are held out of the sum: they are the checksum.
pub struct RdbCheck {
    version: u32,
    crc: u64,
    held: Vec<u8>,
    last_summed: Option<u8>,
}

impl RdbCheck {
    pub fn new(version: u32) -> RdbCheck {
        RdbCheck {
            version,
            crc: 0,
            held: Vec::with_capacity(2 * CHECKSUM_LEN),
            last_summed: None,
        }
    }

    /// Every byte of the file, header included, in order.
    pub fn update(&mut self, data: &[u8]) {
        if data.len() >= CHECKSUM_LEN {
            let held = std::mem::take(&mut self.held);
            self.sum(&held);
            let (body, last) = data.split_at(data.len() - CHECKSUM_LEN);
            self.sum(body);
            self.held.extend_from_slice(last);
        } else {
            self.held.extend_from_slice(data);
            if self.held.len() > CHECKSUM_LEN {
                let out: Vec<u8> = self.held.drain(..self.held.len() - CHECKSUM_LEN).collect();
                self.sum(&out);
            }
        }
    }

    fn sum(&mut self, data: &[u8]) {
        if let Some(b) = data.last() {
            self.last_summed = Some(*b);
            self.crc = crc64(self.crc, data);
        }
    }

    /// Whether the file carries a checksum (0 means it was written without one).
    pub fn checksum_recorded(&self) -> bool {
        self.held.len() == CHECKSUM_LEN && self.held.iter().any(|b| *b != 0)
    }

    /// Whether what was seen is a whole RDB. A stored checksum of 0 means the server
    /// runs with `rdbchecksum no`; Redis then skips the comparison, and so does this.
    pub fn finish(&self) -> Result<(), String> {
        if self.version < 5 {
            return Ok(());
        }
        let stored = <[u8; CHECKSUM_LEN]>::try_from(self.held.as_slice())
            .map(u64::from_le_bytes)
            .ok();
        match stored {
            Some(s) if self.last_summed == Some(EOF_OPCODE) && (s == 0 || s == self.crc) => Ok(()),
            _ => Err(
                "does not end with the RDB end-of-file opcode and a matching checksum: the snapshot is incomplete or damaged"
                    .to_string(),
            ),
        }
    }
}

/// Read a whole RDB from `r` and check it as Redis would before loading it: the header,
/// the end-of-file opcode and the CRC-64 of everything before the checksum. `Ok(Ok(what
/// was checked))`, `Ok(Err(why it is not a whole RDB))`; a read error (the stored
/// object's own sha256, decompression) is returned as it is, so it is named as such.
pub async fn check_stream<R: AsyncRead + Unpin>(mut r: R) -> io::Result<Result<String, String>> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; CHUNK];
    let mut head = Vec::with_capacity(HEADER_LEN);
    while head.len() < HEADER_LEN {
        let n = r.read(&mut buf[..HEADER_LEN - head.len()]).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let version = match check_header(&head) {
        Ok(v) => v,
        Err(why) => {
            // Drain, so a damaged object is reported by its sha256 rather than as a bad header.
            tokio::io::copy(&mut r, &mut tokio::io::sink()).await?;
            return Ok(Err(why));
        }
    };
    let mut check = RdbCheck::new(version);
    check.update(&head);
    let mut size = head.len() as u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        check.update(&buf[..n]);
        size += n as u64;
    }
    Ok(check.finish().map(|()| {
        if version < 5 {
            format!("RDB version {version}, {size} bytes: header ok (an RDB before version 5 has no checksum)")
        } else if check.checksum_recorded() {
            format!("RDB version {version}, {size} bytes: header, end marker and CRC-64 ok")
        } else {
            format!(
                "RDB version {version}, {size} bytes: header and end marker ok; no checksum recorded (the server runs with rdbchecksum no)"
            )
        }
    }))
}

fn is_eof_mark(b: &[u8]) -> bool {
    b.len() == EOF_MARK_LEN && b.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

/// What [`RdbStream`] found once its input ended: `None` until then, `Some(Ok(version))`
/// for a whole RDB, `Some(Err(why))` otherwise.
pub type Verdict = Arc<Mutex<Option<Result<u32, String>>>>;

/// Passes an RDB stream through unchanged except for a trailing diskless EOF mark, which
/// it removes, and judges the result (header and trailer) into a [`Verdict`].
///
/// The mark is recognised from the bytes alone, which is unambiguous: a mark is 40
/// lowercase hex characters after the RDB's end-of-file opcode, while a stream without
/// one ends with that opcode 9 bytes before its end, and 0xFF is not a hex character.
///
/// It never fails the read itself: a short or odd stream usually means redis-cli failed,
/// and its exit status and stderr say why far better, so the caller checks the tool
/// first and the verdict second.
pub struct RdbStream<R> {
    inner: R,
    /// Read from `inner`, not handed on yet; the last `HOLD` bytes wait for the end.
    pending: Vec<u8>,
    head: Vec<u8>,
    scratch: Box<[u8]>,
    eof: bool,
    verdict: Verdict,
}

impl<R> RdbStream<R> {
    pub fn new(inner: R) -> (RdbStream<R>, Verdict) {
        let verdict: Verdict = Arc::new(Mutex::new(None));
        (
            RdbStream {
                inner,
                pending: Vec::with_capacity(CHUNK + HOLD),
                head: Vec::with_capacity(HEADER_LEN),
                scratch: vec![0u8; CHUNK].into_boxed_slice(),
                eof: false,
                verdict: verdict.clone(),
            },
            verdict,
        )
    }

    fn at_end(&mut self) {
        let n = self.pending.len();
        if n >= HOLD
            && is_eof_mark(&self.pending[n - EOF_MARK_LEN..])
            && self.pending[n - HOLD] == EOF_OPCODE
        {
            self.pending.truncate(n - EOF_MARK_LEN);
        }
        let result =
            check_header(&self.head).and_then(|v| check_trailer(v, &self.pending).map(|()| v));
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(result);
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for RdbStream<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let ready = if this.eof {
                this.pending.len()
            } else {
                this.pending.len().saturating_sub(HOLD)
            };
            if ready > 0 {
                let n = ready.min(out.remaining());
                out.put_slice(&this.pending[..n]);
                this.pending.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut this.scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf))?;
            let got = buf.filled();
            if got.is_empty() {
                this.eof = true;
                this.at_end();
            } else {
                let want = HEADER_LEN - this.head.len();
                this.head.extend_from_slice(&got[..want.min(got.len())]);
                this.pending.extend_from_slice(got);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A small but well-formed RDB: header, one aux field, EOF opcode, checksum.
    fn rdb() -> Vec<u8> {
        let mut v = b"REDIS0010".to_vec();
        v.extend_from_slice(b"\xfa\x09redis-ver\x067.0.15");
        v.extend((0u8..200).map(|i| i.wrapping_mul(7)));
        v.push(EOF_OPCODE);
        let crc = crc64(0, &v);
        v.extend_from_slice(&crc.to_le_bytes());
        v
    }

    fn check_whole(data: &[u8], piece: usize) -> Result<(), String> {
        let version = check_header(data)?;
        let mut c = RdbCheck::new(version);
        for p in data.chunks(piece) {
            c.update(p);
        }
        c.finish()
    }

    #[test]
    fn checksums() {
        assert_eq!(crc64(0, b"123456789"), 0xe9c6_d914_c4b8_d9ca);
        let good = rdb();
        for piece in [1, 3, 8, 9, 100, 10_000] {
            assert_eq!(check_whole(&good, piece), Ok(()), "piece {piece}");
            let mut bad = good.clone();
            bad[50] ^= 1;
            assert!(check_whole(&bad, piece).is_err(), "piece {piece}");
            assert!(check_whole(&good[..good.len() - 1], piece).is_err());
            assert!(check_whole(&good[..good.len() - 20], piece).is_err());
        }
        let mut unsummed = good[..good.len() - 8].to_vec();
        unsummed.extend_from_slice(&[0; 8]);
        assert_eq!(check_whole(&unsummed, 7), Ok(()), "rdbchecksum no");
    }

    /// Feed `input` in pieces of `piece` bytes through an RdbStream read `read` bytes at a time.
    async fn pass(
        input: &[u8],
        piece: usize,
        read: usize,
    ) -> (Vec<u8>, Option<Result<u32, String>>) {
        let mut builder = pieces(input, piece);
        let (mut s, verdict) = RdbStream::new(&mut builder);
        let mut out = Vec::new();
        let mut buf = vec![0u8; read];
        loop {
            let n = s.read(&mut buf).await.expect("read");
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        let v = verdict.lock().expect("lock").clone();
        (out, v)
    }

    /// A reader that returns at most `piece` bytes per read.
    fn pieces(input: &[u8], piece: usize) -> impl AsyncRead + Unpin {
        let chunks: Vec<std::io::Result<bytes::Bytes>> = input
            .chunks(piece)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        tokio_util::io::StreamReader::new(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn strips_the_diskless_eof_mark_only() {
        let plain = rdb();
        let mut marked = plain.clone();
        marked.extend_from_slice(b"0123456789abcdef0123456789abcdef01234567");
        for (piece, read) in [(1, 1), (3, 7), (50, 4096), (4096, 2)] {
            let (out, v) = pass(&marked, piece, read).await;
            assert_eq!(out, plain, "piece {piece} read {read}");
            assert_eq!(v, Some(Ok(10)));
            let (out, v) = pass(&plain, piece, read).await;
            assert_eq!(out, plain, "piece {piece} read {read}");
            assert_eq!(v, Some(Ok(10)));
        }
    }

    #[tokio::test]
    async fn judges_what_is_not_a_whole_rdb() {
        let (out, v) = pass(b"", 10, 10).await;
        assert!(out.is_empty());
        assert_eq!(v, Some(Err("is empty".into())));
        let (_, v) = pass(b"REDIS", 10, 10).await;
        assert!(matches!(v, Some(Err(e)) if e.contains("before the RDB header")));
        let junk = b"-ERR unknown command 'SYNC'\r\n".repeat(10);
        let (out, v) = pass(&junk, 10, 10).await;
        assert_eq!(out, junk, "passed on unchanged");
        assert!(matches!(v, Some(Err(e)) if e.contains("\"-ERR unkn\"")));
        let whole = rdb();
        let (out, v) = pass(&whole[..whole.len() - 20], 10, 10).await;
        assert_eq!(out.len(), whole.len() - 20);
        assert!(matches!(v, Some(Err(e)) if e.contains("incomplete")));
    }

    #[tokio::test]
    async fn checks_a_whole_stream() {
        let good = rdb();
        for piece in [1, 7, 4096] {
            let said = check_stream(pieces(&good, piece))
                .await
                .expect("read")
                .expect("whole");
            assert!(
                said.contains("RDB version 10") && said.contains("CRC-64 ok"),
                "{said}"
            );
            let mut bad = good.clone();
            bad[100] ^= 0x40;
            let why = check_stream(pieces(&bad, piece))
                .await
                .expect("read")
                .expect_err("damaged");
            assert!(why.contains("matching checksum"), "{why}");
        }
        let mut unsummed = good[..good.len() - 8].to_vec();
        unsummed.extend_from_slice(&[0; 8]);
        let said = check_stream(pieces(&unsummed, 50))
            .await
            .expect("read")
            .expect("rdbchecksum no");
        assert!(said.contains("no checksum recorded"), "{said}");
        let why = check_stream(pieces(b"\x28\xb5\x2f\xfd zstd", 3))
            .await
            .expect("read")
            .expect_err("not an RDB");
        assert!(why.contains("does not start with an RDB header"), "{why}");
    }

    #[test]
    fn headers() {
        assert_eq!(check_header(b"REDIS0011"), Ok(11));
        assert_eq!(check_header(b"REDIS0003xyz"), Ok(3));
        assert!(check_header(b"REDIS00x1").is_err());
        assert!(check_header(b"\x28\xb5\x2f\xfd....").is_err());
        assert_eq!(check_trailer(3, b""), Ok(()));
        assert!(check_trailer(10, b"\xff12345678").is_ok());
        assert!(check_trailer(10, b"x12345678").is_err());
    }
}
