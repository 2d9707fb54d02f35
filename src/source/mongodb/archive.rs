//! The start of a `mongodump --archive` stream: a magic number, a header document (archive
//! format, server and tool versions), one metadata document per collection, and a
//! terminator; the collections' data follows. Reading only this prelude tells what a dump
//! holds (for the manifest, for `--table`) without a server and without downloading the
//! data. Format: mongo-tools' `common/archive/spec.md`.

use tokio::io::AsyncReadExt;

use super::SourceError;
use crate::engine::Archive;

/// 0x8199e26d, little-endian.
const MAGIC: [u8; 4] = [0x6d, 0xe2, 0x99, 0x81];
const TERMINATOR: i32 = -1;
/// BSON's own limit (16 MiB) plus room for the document overhead.
const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;
/// How much of an archive a restore reads looking for the end of the prelude.
pub const PRELUDE_LIMIT: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Prelude {
    pub server_version: Option<String>,
    pub tool_version: Option<String>,
    pub namespaces: Vec<Namespace>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Namespace {
    pub db: String,
    pub collection: String,
}

impl Namespace {
    pub fn name(&self) -> String {
        format!("{}.{}", self.db, self.collection)
    }

    /// Collections users think of as theirs: not an oplog (no database) and not
    /// `system.*` (users, roles, views, version), which mongorestore handles itself.
    pub fn is_user(&self) -> bool {
        !self.db.is_empty() && !self.collection.starts_with("system.")
    }
}

#[derive(Debug, PartialEq)]
pub enum PreludeError {
    /// More bytes are needed.
    Incomplete,
    NotAnArchive,
    Invalid(String),
}

impl Prelude {
    /// The collections, as "db.collection", sorted.
    pub fn objects(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .namespaces
            .iter()
            .filter(|n| n.is_user())
            .map(Namespace::name)
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

pub fn parse_prelude(bytes: &[u8]) -> Result<Prelude, PreludeError> {
    if bytes.len() < 4 {
        return Err(PreludeError::Incomplete);
    }
    if bytes[..4] != MAGIC {
        return Err(PreludeError::NotAnArchive);
    }
    let mut pos = 4;
    let mut prelude = Prelude::default();
    let mut header_seen = false;
    loop {
        let Some(len) = bytes.get(pos..pos + 4) else {
            return Err(PreludeError::Incomplete);
        };
        let len = i32::from_le_bytes([len[0], len[1], len[2], len[3]]);
        if len == TERMINATOR {
            if !header_seen {
                return Err(PreludeError::Invalid("the archive has no header".into()));
            }
            return Ok(prelude);
        }
        let len = usize::try_from(len)
            .ok()
            .filter(|l| (5..=MAX_DOCUMENT).contains(l))
            .ok_or_else(|| PreludeError::Invalid(format!("document length {len} at byte {pos}")))?;
        let Some(doc) = bytes.get(pos..pos + len) else {
            return Err(PreludeError::Incomplete);
        };
        let fields = strings(doc).map_err(PreludeError::Invalid)?;
        let get = |k: &str| {
            fields
                .iter()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
        };
        if header_seen {
            prelude.namespaces.push(Namespace {
                db: get("db").unwrap_or_default(),
                collection: get("collection").unwrap_or_default(),
            });
        } else {
            prelude.server_version = get("server_version").filter(|v| !v.is_empty());
            prelude.tool_version = get("tool_version").filter(|v| !v.is_empty());
            header_seen = true;
        }
        pos += len;
    }
}

/// Read an archive's prelude from its start; the rest of the stream is never read.
pub async fn read_prelude(archive: &dyn Archive) -> Result<Prelude, SourceError> {
    let mut data = archive.open().await?;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match parse_prelude(&buf) {
            Ok(p) => return Ok(p),
            Err(PreludeError::NotAnArchive) => {
                return Err(SourceError::Protocol(
                    "the backup is not a mongodump archive (wrong magic number)".into(),
                ));
            }
            Err(PreludeError::Invalid(why)) => {
                return Err(SourceError::Protocol(format!(
                    "the backup's mongodump archive header is damaged: {why}"
                )));
            }
            Err(PreludeError::Incomplete) => {}
        }
        if buf.len() >= PRELUDE_LIMIT {
            return Err(SourceError::Refused(format!(
                "the archive's list of collections is longer than {} MiB; restore it by hand with mongorestore --archive",
                PRELUDE_LIMIT / 1024 / 1024
            )));
        }
        let n = data
            .read(&mut chunk)
            .await
            .map_err(|e| SourceError::io("reading the backup", e))?;
        if n == 0 {
            return Err(SourceError::Protocol(
                "the backup ends inside its mongodump archive header".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The top-level string fields of one BSON document; every other field is skipped.
fn strings(doc: &[u8]) -> Result<Vec<(String, String)>, String> {
    let end = doc.len() - 1;
    if doc[end] != 0 {
        return Err("a document does not end with a zero byte".into());
    }
    let mut out = Vec::new();
    let mut pos = 4;
    while pos < end {
        let kind = doc[pos];
        pos += 1;
        let name = cstring(doc, &mut pos)?;
        let at = |p: usize| -> Result<i32, String> {
            doc.get(p..p + 4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| format!("field \"{name}\" is cut off"))
        };
        let size = |n: i32| -> Result<usize, String> {
            usize::try_from(n).map_err(|_| format!("field \"{name}\" has a negative length"))
        };
        let skip = match kind {
            0x01 | 0x09 | 0x11 | 0x12 => 8,
            0x02 | 0x0D | 0x0E => {
                let n = size(at(pos)?)?;
                if n == 0 {
                    return Err(format!("string \"{name}\" has length 0"));
                }
                let bytes = doc
                    .get(pos + 4..pos + 4 + n)
                    .ok_or_else(|| format!("string \"{name}\" is cut off"))?;
                if kind == 0x02 {
                    out.push((
                        name.clone(),
                        String::from_utf8_lossy(&bytes[..n - 1]).into_owned(),
                    ));
                }
                4 + n
            }
            0x03 | 0x04 | 0x0F => size(at(pos)?)?,
            0x05 => 4 + 1 + size(at(pos)?)?,
            0x06 | 0x0A | 0x7F | 0xFF => 0,
            0x07 => 12,
            0x08 => 1,
            0x0B => {
                let mut p = pos;
                cstring(doc, &mut p)?;
                cstring(doc, &mut p)?;
                p - pos
            }
            0x0C => 4 + size(at(pos)?)? + 12,
            0x10 => 4,
            0x13 => 16,
            other => {
                return Err(format!(
                    "unknown BSON type 0x{other:02x} in field \"{name}\""
                ));
            }
        };
        pos += skip;
        if pos > end {
            return Err(format!("field \"{name}\" runs past its document"));
        }
    }
    Ok(out)
}

fn cstring(doc: &[u8], pos: &mut usize) -> Result<String, String> {
    let rest = doc.get(*pos..).unwrap_or_default();
    let n = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or("a field name has no end")?;
    let s = String::from_utf8_lossy(&rest[..n]).into_owned();
    *pos += n + 1;
    Ok(s)
}

/// Build archives the way mongodump lays them out, for tests.
#[cfg(test)]
pub mod testing {
    pub enum Field<'a> {
        Str(&'a str),
        I32(i32),
        I64(i64),
        Bool(bool),
        Doc(Vec<(&'a str, Field<'a>)>),
    }

    pub fn document(fields: Vec<(&str, Field<'_>)>) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, f) in fields {
            let (kind, value) = match f {
                Field::Str(s) => {
                    let mut v = ((s.len() + 1) as i32).to_le_bytes().to_vec();
                    v.extend_from_slice(s.as_bytes());
                    v.push(0);
                    (0x02u8, v)
                }
                Field::I32(i) => (0x10, i.to_le_bytes().to_vec()),
                Field::I64(i) => (0x12, i.to_le_bytes().to_vec()),
                Field::Bool(b) => (0x08, vec![u8::from(b)]),
                Field::Doc(d) => (0x03, document(d)),
            };
            body.push(kind);
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&value);
        }
        let mut doc = ((body.len() + 5) as i32).to_le_bytes().to_vec();
        doc.extend_from_slice(&body);
        doc.push(0);
        doc
    }

    /// A prelude for these (db, collection) pairs, then one data segment.
    pub fn archive(server_version: &str, namespaces: &[(&str, &str)]) -> Vec<u8> {
        let mut out = super::MAGIC.to_vec();
        out.extend(document(vec![
            ("concurrent_collections", Field::I32(4)),
            ("version", Field::Str("0.1")),
            ("server_version", Field::Str(server_version)),
            ("tool_version", Field::Str("100.9.4")),
        ]));
        for (db, c) in namespaces {
            let metadata = format!(
                "{{\"indexes\":[{{\"v\":{{\"$numberInt\":\"2\"}},\"key\":{{\"_id\":{{\"$numberInt\":\"1\"}}}},\"name\":\"_id_\"}}],\"uuid\":\"0123\",\"collectionName\":\"{c}\",\"type\":\"collection\"}}"
            );
            out.extend(document(vec![
                ("db", Field::Str(db)),
                ("collection", Field::Str(c)),
                ("metadata", Field::Str(&metadata)),
                ("size", Field::I32(123)),
                ("type", Field::Str("collection")),
            ]));
        }
        out.extend_from_slice(&(-1i32).to_le_bytes());
        if let Some((db, c)) = namespaces.first() {
            out.extend(document(vec![
                ("db", Field::Str(db)),
                ("collection", Field::Str(c)),
                ("EOF", Field::Bool(false)),
                ("CRC", Field::I64(0)),
            ]));
            out.extend(document(vec![(
                "_id",
                Field::Doc(vec![("n", Field::I32(1))]),
            )]));
            out.extend_from_slice(&(-1i32).to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::testing::archive;
    use super::*;

    #[test]
    fn reads_what_mongodump_writes() {
        let a = archive(
            "7.0.14",
            &[
                ("shop", "users"),
                ("shop", "orders"),
                ("admin", "system.version"),
                ("shop", "with.dots"),
            ],
        );
        let p = parse_prelude(&a).expect("prelude");
        assert_eq!(p.server_version.as_deref(), Some("7.0.14"));
        assert_eq!(p.tool_version.as_deref(), Some("100.9.4"));
        assert_eq!(p.namespaces.len(), 4);
        assert_eq!(
            p.objects(),
            vec!["shop.orders", "shop.users", "shop.with.dots"]
        );
    }

    #[test]
    fn every_cut_is_incomplete_never_wrong() {
        let a = archive("6.0.1", &[("shop", "users"), ("shop", "orders")]);
        let whole = parse_prelude(&a).expect("whole");
        let end = a.len() - 1;
        let mut complete_at = None;
        for cut in 0..end {
            match parse_prelude(&a[..cut]) {
                Err(PreludeError::Incomplete) => {}
                Ok(p) => {
                    assert_eq!(p, whole, "cut at {cut}");
                    complete_at.get_or_insert(cut);
                }
                Err(e) => panic!("cut at {cut}: {e:?}"),
            }
        }
        assert!(
            complete_at.is_some_and(|c| c < end),
            "the prelude ends before the data"
        );
    }

    #[test]
    fn empty_dump_and_foreign_bytes() {
        let p = parse_prelude(&archive("7.0.0", &[])).expect("empty dump");
        assert!(p.namespaces.is_empty() && p.objects().is_empty());
        assert_eq!(
            parse_prelude(b"PGDMP\x01\x0e"),
            Err(PreludeError::NotAnArchive)
        );
        let mut bad = MAGIC.to_vec();
        bad.extend_from_slice(&3i32.to_le_bytes());
        assert!(matches!(parse_prelude(&bad), Err(PreludeError::Invalid(_))));
    }

    #[tokio::test]
    async fn reads_only_the_prelude_of_a_stream() {
        struct Bytes(Vec<u8>);
        #[async_trait::async_trait]
        impl Archive for Bytes {
            async fn open(
                &self,
            ) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, SourceError> {
                Ok(Box::new(std::io::Cursor::new(self.0.clone())))
            }
        }
        let mut a = archive("7.0.2", &[("shop", "users")]);
        // Garbage after the prelude is never looked at.
        a.extend(std::iter::repeat_n(0xAB, 1_000_000));
        let p = read_prelude(&Bytes(a)).await.expect("prelude");
        assert_eq!(p.objects(), vec!["shop.users"]);
        let e = read_prelude(&Bytes(b"not an archive".to_vec()))
            .await
            .expect_err("foreign");
        assert!(e.to_string().contains("not a mongodump archive"), "{e}");
        let cut = archive("7.0.2", &[("shop", "users")]);
        let e = read_prelude(&Bytes(cut[..20].to_vec()))
            .await
            .expect_err("cut");
        assert!(e.to_string().contains("ends inside"), "{e}");
    }
}
