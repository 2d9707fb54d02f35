//! The write-ahead log span of a base backup, read from the tar as it streams past: with
//! `-X none`, pg_basebackup does not print its start and end points, but the
//! `backup_manifest` it appends as the tar's last member ends with them (`WAL-Ranges`).

use super::wal::Lsn;
use super::SourceError;

/// How much of the end of `backup_manifest` is kept: its `WAL-Ranges` and checksum take a
/// few hundred bytes, while the whole manifest grows with the number of files.
const KEEP: usize = 64 * 1024;
const BLOCK: usize = 512;

/// Follows a tar stream fed in chunks of any size and keeps the end of `backup_manifest`.
#[derive(Debug, Default)]
pub(super) struct ManifestTail {
    header: Vec<u8>,
    /// Data bytes (with padding) of the current member still to pass.
    left: u64,
    /// Of those, the member's own bytes (the rest is padding).
    data_left: u64,
    capturing: bool,
    /// In `PG_VERSION`'s data: the server's major version.
    in_version: bool,
    version: Vec<u8>,
    ended: bool,
    seen: bool,
    tail: Vec<u8>,
    broken: Option<String>,
}

impl ManifestTail {
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.ended && self.broken.is_none() {
            if self.left > 0 {
                let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(bytes.len());
                let data = usize::try_from(self.data_left).unwrap_or(usize::MAX).min(n);
                if self.in_version && self.version.len() < 16 {
                    let room = 16 - self.version.len();
                    self.version.extend_from_slice(&bytes[..data.min(room)]);
                }
                if self.capturing {
                    self.tail.extend_from_slice(&bytes[..data]);
                    if self.tail.len() > KEEP {
                        self.tail.drain(..self.tail.len() - KEEP);
                    }
                }
                self.data_left -= data as u64;
                self.left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let n = (BLOCK - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == BLOCK {
                let header = std::mem::take(&mut self.header);
                self.start_member(&header);
            }
        }
    }

    fn start_member(&mut self, h: &[u8]) {
        if h.iter().all(|b| *b == 0) {
            self.ended = true;
            return;
        }
        let Some(size) = member_size(&h[124..136]) else {
            self.broken = Some("a tar header with an unreadable size".to_string());
            return;
        };
        let name = cstr(&h[..100]);
        let name = name.strip_prefix(b"./").unwrap_or(name);
        // A later member of the same name would replace the manifest: keep only the last.
        self.capturing = name == b"backup_manifest" && matches!(h[156], b'0' | 0);
        if self.capturing {
            self.seen = true;
            self.tail.clear();
        }
        self.in_version = name == b"PG_VERSION" && matches!(h[156], b'0' | 0);
        if self.in_version {
            self.version.clear();
        }
        self.data_left = size;
        self.left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
    }

    /// The major version `PG_VERSION` holds, e.g. "15".
    pub fn server_version(&self) -> Option<String> {
        let v = String::from_utf8_lossy(&self.version).trim().to_string();
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')).then_some(v)
    }

    /// Timeline, start and end of the backup, from the manifest's `WAL-Ranges`.
    pub fn wal_range(&self) -> Result<(u32, Lsn, Lsn), SourceError> {
        if let Some(why) = &self.broken {
            return Err(SourceError::Protocol(format!(
                "cannot follow pg_basebackup's tar ({why}); its WAL span is unknown and the backup cannot be recovered"
            )));
        }
        if !self.seen {
            return Err(SourceError::Protocol(
                "pg_basebackup's tar holds no backup_manifest (PostgreSQL 13 or later writes one unless --no-manifest); without its WAL-Ranges the backup cannot be recovered".to_string(),
            ));
        }
        wal_ranges(&self.tail)
    }
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    &field[..end]
}

/// A tar size field: octal digits, or base-256 (high bit set) for large members.
fn member_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        let mut n: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            n = n.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(n);
    }
    let text = std::str::from_utf8(cstr(field)).ok()?.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

#[derive(serde::Deserialize)]
struct Range {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

/// `"WAL-Ranges": [ { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" } ]`
/// near the end of a manifest: the first range's timeline and start (where replay begins;
/// a backup taken from a standby that was promoted meanwhile has more than one range) and
/// the last range's end.
fn wal_ranges(tail: &[u8]) -> Result<(u32, Lsn, Lsn), SourceError> {
    let bad = |why: &str| {
        SourceError::Protocol(format!(
            "cannot read the WAL-Ranges of the base backup's backup_manifest ({why}); the backup cannot be recovered"
        ))
    };
    let text = String::from_utf8_lossy(tail);
    let at = text.rfind("\"WAL-Ranges\"").ok_or_else(|| bad("not found"))?;
    let rest = &text[at..];
    let open = rest.find('[').ok_or_else(|| bad("no list"))?;
    let close = rest[open..].find(']').ok_or_else(|| bad("unterminated list"))?;
    let ranges: Vec<Range> = serde_json::from_str(&rest[open..open + close + 1])
        .map_err(|e| bad(&e.to_string()))?;
    let (Some(first), Some(last)) = (ranges.first(), ranges.last()) else {
        return Err(bad("an empty list"));
    };
    let start = Lsn::parse(&first.start).map_err(|e| bad(&e))?;
    let end = Lsn::parse(&last.end).map_err(|e| bad(&e))?;
    if end < start {
        return Err(bad(&format!("end {end} before start {start}")));
    }
    Ok((first.timeline, start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n\
        { \"Path\": \"PG_VERSION\", \"Size\": 3 }\n],\n\"WAL-Ranges\": [\n\
        { \"Timeline\": 1, \"Start-LSN\": \"0/2000028\", \"End-LSN\": \"0/2000100\" }\n],\n\
        \"Manifest-Checksum\": \"b5ce\"}\n";

    fn tar_with(manifest: Option<&[u8]>, big: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in [("PG_VERSION", b"15\n".to_vec()), ("base/1/1259", vec![7u8; big])] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        if let Some(m) = manifest {
            let mut h = tar::Header::new_ustar();
            h.set_size(m.len() as u64);
            h.set_mode(0o600);
            b.append_data(&mut h, "backup_manifest", m).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn the_wal_span_is_read_in_any_chunks() {
        let tar = tar_with(Some(MANIFEST.as_bytes()), 70_000);
        for chunk in [1, 7, 511, 512, 513, 65536, tar.len()] {
            let mut f = ManifestTail::default();
            for c in tar.chunks(chunk) {
                f.push(c);
            }
            let (tli, start, end) = f.wal_range().expect("found");
            assert_eq!(f.server_version().as_deref(), Some("15"));
            assert_eq!((tli, start.to_string(), end.to_string()), (1, "0/2000028".into(), "0/2000100".into()), "{chunk}");
        }
    }

    #[test]
    fn a_long_manifest_keeps_its_end() {
        let mut m = String::from("{ \"Files\": [\n");
        for i in 0..5000 {
            m.push_str(&format!("{{ \"Path\": \"base/1/{i}\", \"Size\": 8192 }},\n"));
        }
        m.push_str(&MANIFEST[MANIFEST.find("\"WAL-Ranges\"").unwrap()..]);
        let mut f = ManifestTail::default();
        f.push(&tar_with(Some(m.as_bytes()), 10));
        assert!(f.tail.len() <= KEEP);
        assert_eq!(f.wal_range().unwrap().2, Lsn(0x0200_0100));
    }

    #[test]
    fn without_a_manifest_or_ranges_the_backup_fails() {
        let mut f = ManifestTail::default();
        f.push(&tar_with(None, 10));
        assert!(f.wal_range().unwrap_err().to_string().contains("holds no backup_manifest"));
        let mut f = ManifestTail::default();
        f.push(&tar_with(Some(b"{ \"Files\": [] }"), 10));
        assert!(f.wal_range().unwrap_err().to_string().contains("WAL-Ranges of the base backup's backup_manifest (not found)"));
        let mut f = ManifestTail::default();
        f.push(&tar_with(Some(MANIFEST.replace("0/2000100", "0/1000000").as_bytes()), 10));
        assert!(f.wal_range().unwrap_err().to_string().contains("before start"));
    }

    #[test]
    fn base_256_sizes() {
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[10] = 0x01;
        field[11] = 0x02;
        assert_eq!(member_size(&field), Some(0x102));
        assert_eq!(member_size(b"00000001000\0"), Some(512));
        assert_eq!(member_size(b"0000000100x\0"), None);
    }
}
