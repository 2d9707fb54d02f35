//! A [`Storage`] held in memory, with faults that can be injected per operation and key.
//!
//! It keeps the contract of the trait as `local.rs` implements it: a streamed upload
//! becomes visible only when its stream ends with [`Chunk::End`], and one whose stream
//! closes early, or that fails, leaves nothing. While an upload is in flight it shows the
//! way the chosen [`InFlight`] model says: as a `<key>.<owner>-<n>.partial` object in
//! listings (a local directory; the default), or only through
//! [`Storage::open_uploads`] (an S3 multipart upload). An upload whose future is dropped
//! mid-stream stays in flight, as a crashed writer's would.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::storage::local::PARTIAL_SUFFIX;
use crate::storage::{Chunk, ObjectMeta, ObjectReader, OpenUpload, Storage, StorageError};

/// A storage operation, as faults name it and calls are counted. Operations the trait
/// implements through others by default (`get_bytes`, `list_pages`, `list_until`,
/// `put_stream_plain`) count as the one they call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Op {
    Preflight,
    PutStream,
    PutBytes,
    PutRecord,
    PutData,
    Get,
    List,
    Delete,
    OpenUploads,
    AbortUpload,
}

impl Op {
    const PUTS: [Op; 4] = [Op::PutStream, Op::PutBytes, Op::PutRecord, Op::PutData];
}

/// The kind of [`StorageError`] an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Unreachable,
    Denied,
    NotFound,
    Io,
}

/// A rule that makes matching calls fail: by operation, key pattern (`*` matches any run
/// of characters), which matching call (`nth`, from 1; every one without it), and for
/// writes, after how many bytes (a stream fails once it has received more than that; a
/// whole-object put of more than that fails without writing; a read yields that many bytes,
/// then fails).
#[derive(Debug, Clone)]
pub(crate) struct Fault {
    ops: Vec<Op>,
    pattern: Option<String>,
    nth: Option<usize>,
    after_bytes: Option<u64>,
    kind: FaultKind,
}

impl Fault {
    pub(crate) fn on(op: Op) -> Fault {
        Fault {
            ops: vec![op],
            pattern: None,
            nth: None,
            after_bytes: None,
            kind: FaultKind::Io,
        }
    }

    /// Every kind of write: streams, small objects, records (manifests) and data.
    pub(crate) fn on_puts() -> Fault {
        Fault {
            ops: Op::PUTS.to_vec(),
            ..Fault::on(Op::PutStream)
        }
    }

    pub(crate) fn key(mut self, pattern: &str) -> Fault {
        self.pattern = Some(pattern.to_string());
        self
    }

    pub(crate) fn nth(mut self, n: usize) -> Fault {
        self.nth = Some(n);
        self
    }

    pub(crate) fn after_bytes(mut self, n: u64) -> Fault {
        self.after_bytes = Some(n);
        self
    }

    pub(crate) fn kind(mut self, kind: FaultKind) -> Fault {
        self.kind = kind;
        self
    }

    fn matches(&self, op: Op, key: &str) -> bool {
        self.ops.contains(&op) && self.pattern.as_deref().is_none_or(|p| glob(p, key))
    }
}

/// How an upload in flight shows (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InFlight {
    /// A `.partial` object in listings, which `delete` removes (the commit then fails).
    Partial,
    /// Only in `open_uploads`, which `abort_upload` removes (the commit then fails).
    Multipart,
}

/// An object as stored.
#[derive(Debug, Clone)]
pub(crate) struct Object {
    pub(crate) data: Bytes,
    pub(crate) modified: DateTime<Utc>,
    /// The operation that wrote it; `None` for what a test put there itself.
    pub(crate) written_by: Option<Op>,
}

struct Upload {
    key: String,
    partial: String,
    data: BytesMut,
    initiated: DateTime<Utc>,
}

struct Rule {
    fault: Fault,
    seen: usize,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    uploads: BTreeMap<u64, Upload>,
    next_upload: u64,
    rules: Vec<Rule>,
    calls: BTreeMap<Op, usize>,
    /// Every key an operation stored an object at, in order, deleted or not since.
    writes: Vec<String>,
}

/// A destination in memory. Clones share their contents: keep one to inspect what a run
/// left after handing another to it.
#[derive(Clone)]
pub(crate) struct MemoryStorage {
    name: String,
    in_flight: InFlight,
    state: Arc<Mutex<State>>,
}

/// What an operation must do about the faults that match it.
enum Armed {
    Clear,
    Now(StorageError),
    After(u64, StorageError),
}

impl MemoryStorage {
    /// Uploads in flight show as `.partial` objects, as on a local destination.
    pub(crate) fn new(name: &str) -> MemoryStorage {
        MemoryStorage {
            name: name.to_string(),
            in_flight: InFlight::Partial,
            state: Arc::default(),
        }
    }

    /// Uploads in flight show only as open uploads, as on S3.
    pub(crate) fn multipart(name: &str) -> MemoryStorage {
        MemoryStorage {
            in_flight: InFlight::Multipart,
            ..MemoryStorage::new(name)
        }
    }

    pub(crate) fn fail(&self, fault: Fault) {
        self.state().rules.push(Rule { fault, seen: 0 });
    }

    /// Every stored key, sorted (uploads in flight are not objects).
    pub(crate) fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    pub(crate) fn object(&self, key: &str) -> Option<Object> {
        self.state().objects.get(key).cloned()
    }

    /// Keys of the uploads in flight (started, neither completed nor thrown away).
    pub(crate) fn in_flight(&self) -> Vec<String> {
        self.state()
            .uploads
            .values()
            .map(|u| u.key.clone())
            .collect()
    }

    /// Store an object as if something else had written it.
    pub(crate) fn insert(&self, key: &str, data: impl Into<Bytes>) {
        self.state().objects.insert(
            key.to_string(),
            Object {
                data: data.into(),
                modified: Utc::now(),
                written_by: None,
            },
        );
    }

    /// Every key an operation stored an object at, in order, including those deleted since:
    /// whether something was ever visible, not only what is left.
    pub(crate) fn writes(&self) -> Vec<String> {
        self.state().writes.clone()
    }

    /// How many times `op` was called.
    pub(crate) fn calls(&self, op: Op) -> usize {
        self.state().calls.get(&op).copied().unwrap_or(0)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it has failed already; its state still reads.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts the call and finds the first fault that fires on it.
    fn arm(&self, op: Op, key: &str) -> Armed {
        let mut st = self.state();
        *st.calls.entry(op).or_default() += 1;
        for rule in st.rules.iter_mut().filter(|r| r.fault.matches(op, key)) {
            rule.seen += 1;
            if rule.fault.nth.is_some_and(|n| n != rule.seen) {
                continue;
            }
            let err = self.error(rule.fault.kind, op, key);
            return match rule.fault.after_bytes {
                None => Armed::Now(err),
                Some(n) => Armed::After(n, err),
            };
        }
        Armed::Clear
    }

    fn error(&self, kind: FaultKind, op: Op, key: &str) -> StorageError {
        let msg = format!("injected fault: {op:?} {key:?} on {}", self.location()).into();
        match kind {
            FaultKind::Unreachable => StorageError::Unreachable(msg),
            FaultKind::Denied => StorageError::Denied(msg),
            FaultKind::NotFound => StorageError::NotFound(msg),
            FaultKind::Io => StorageError::Io(msg),
        }
    }

    /// Keys are refused as the local storage refuses them, before anything is written.
    fn check(key: &str) -> Result<(), StorageError> {
        crate::storage::check_key(key).map_err(|why| StorageError::Denied(why.into()))
    }

    /// A whole-object write: atomic, like `put_bytes` on every storage.
    fn put_whole(&self, op: Op, key: &str, data: Bytes) -> Result<(), StorageError> {
        Self::check(key)?;
        match self.arm(op, key) {
            Armed::Now(e) => return Err(e),
            Armed::After(n, e) if data.len() as u64 > n => return Err(e),
            _ => {}
        }
        let mut st = self.state();
        st.writes.push(key.to_string());
        st.objects.insert(
            key.to_string(),
            Object {
                data,
                modified: Utc::now(),
                written_by: Some(op),
            },
        );
        Ok(())
    }

    fn start_upload(&self, key: &str) -> u64 {
        let mut st = self.state();
        let id = st.next_upload;
        st.next_upload += 1;
        // Named like the local storage's, so recovery reads its owner the same way.
        let partial = format!(
            "{key}.{}-{id}{PARTIAL_SUFFIX}",
            crate::owner::Owner::current().token()
        );
        st.uploads.insert(
            id,
            Upload {
                key: key.to_string(),
                partial,
                data: BytesMut::new(),
                initiated: Utc::now(),
            },
        );
        id
    }

    async fn receive(
        &self,
        id: u64,
        mut body: mpsc::Receiver<Chunk>,
        limit: Option<(u64, StorageError)>,
    ) -> Result<u64, StorageError> {
        let mut written = 0u64;
        loop {
            match body.recv().await {
                Some(Chunk::Data(b)) => {
                    if let Some((n, _)) = &limit
                        && written + b.len() as u64 > *n
                    {
                        let keep = (*n - written) as usize;
                        self.append(id, &b[..keep]);
                        return Err(limit.map_or(StorageError::Abandoned, |(_, e)| e));
                    }
                    self.append(id, &b);
                    written += b.len() as u64;
                }
                Some(Chunk::End) => return Ok(written),
                None => return Err(StorageError::Abandoned),
            }
        }
    }

    /// Bytes of an upload whose partial was deleted go nowhere, as they would into an
    /// unlinked file.
    fn append(&self, id: u64, b: &[u8]) {
        if let Some(u) = self.state().uploads.get_mut(&id) {
            u.data.extend_from_slice(b);
        }
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn location(&self) -> String {
        format!("memory://{}", self.name)
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        match self.arm(Op::Preflight, "") {
            Armed::Clear => Ok(()),
            Armed::Now(e) | Armed::After(_, e) => Err(e),
        }
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        Self::check(key)?;
        let limit = match self.arm(Op::PutStream, key) {
            Armed::Now(e) => return Err(e),
            Armed::After(n, e) => Some((n, e)),
            Armed::Clear => None,
        };
        let id = self.start_upload(key);
        let received = self.receive(id, body, limit).await;
        let mut st = self.state();
        let upload = st.uploads.remove(&id);
        let n = received?;
        let Some(upload) = upload else {
            // Its partial was deleted, or its multipart upload aborted, while it streamed.
            return Err(StorageError::NotFound(
                format!(
                    "cannot complete {key:?} on {}: the upload was removed while it ran",
                    self.location()
                )
                .into(),
            ));
        };
        st.writes.push(upload.key.clone());
        st.objects.insert(
            upload.key,
            Object {
                data: upload.data.freeze(),
                modified: Utc::now(),
                written_by: Some(Op::PutStream),
            },
        );
        Ok(n)
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_whole(Op::PutBytes, key, data)
    }

    async fn put_record(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_whole(Op::PutRecord, key, data)
    }

    async fn put_data(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        self.put_whole(Op::PutData, key, data)
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        Self::check(key)?;
        let armed = self.arm(Op::Get, key);
        if let Armed::Now(e) = armed {
            return Err(e);
        }
        let Some(data) = self.state().objects.get(key).map(|o| o.data.clone()) else {
            return Err(StorageError::NotFound(
                format!("cannot open {key:?} on {}: no such object", self.location()).into(),
            ));
        };
        match armed {
            Armed::After(n, e) => {
                let head = data.slice(..(n as usize).min(data.len()));
                let parts: Vec<std::io::Result<Bytes>> =
                    vec![Ok(head), Err(std::io::Error::other(e.to_string()))];
                Ok(Box::new(tokio_util::io::StreamReader::new(
                    futures::stream::iter(parts),
                )))
            }
            _ => Ok(Box::new(std::io::Cursor::new(data))),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        if let Armed::Now(e) | Armed::After(_, e) = self.arm(Op::List, prefix) {
            return Err(e);
        }
        let st = self.state();
        let mut out: Vec<ObjectMeta> = st
            .objects
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ObjectMeta {
                key: k.clone(),
                size: o.data.len() as u64,
                modified: Some(o.modified),
            })
            .collect();
        if self.in_flight == InFlight::Partial {
            out.extend(
                st.uploads
                    .values()
                    .filter(|u| u.partial.starts_with(prefix))
                    .map(|u| ObjectMeta {
                        key: u.partial.clone(),
                        size: u.data.len() as u64,
                        modified: Some(u.initiated),
                    }),
            );
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        for key in keys {
            Self::check(key)?;
            if let Armed::Now(e) | Armed::After(_, e) = self.arm(Op::Delete, key) {
                return Err(e);
            }
            let mut st = self.state();
            st.objects.remove(key);
            if self.in_flight == InFlight::Partial {
                st.uploads.retain(|_, u| u.partial != *key);
            }
        }
        Ok(())
    }

    async fn open_uploads(&self, prefix: &str) -> Result<Vec<OpenUpload>, StorageError> {
        if let Armed::Now(e) | Armed::After(_, e) = self.arm(Op::OpenUploads, prefix) {
            return Err(e);
        }
        if self.in_flight == InFlight::Partial {
            return Ok(Vec::new());
        }
        Ok(self
            .state()
            .uploads
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| OpenUpload {
                key: u.key.clone(),
                id: id.to_string(),
                initiated: Some(u.initiated),
            })
            .collect())
    }

    async fn abort_upload(&self, upload: &OpenUpload) -> Result<(), StorageError> {
        if let Armed::Now(e) | Armed::After(_, e) = self.arm(Op::AbortUpload, &upload.key) {
            return Err(e);
        }
        if self.in_flight == InFlight::Multipart
            && let Ok(id) = upload.id.parse::<u64>()
        {
            self.state().uploads.remove(&id);
        }
        Ok(())
    }
}

/// `*` matches any run of characters (slashes included); everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let Some((head, rest)) = pattern.split_once('*') else {
        return pattern == text;
    };
    let Some(mut text) = text.strip_prefix(head) else {
        return false;
    };
    // Each further literal piece is found leftmost; the last must end the text.
    let pieces: Vec<&str> = rest.split('*').collect();
    for (i, piece) in pieces.iter().enumerate() {
        if i == pieces.len() - 1 {
            return text.ends_with(piece);
        }
        match text.find(piece) {
            Some(at) => text = &text[at + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn stream(
        st: &MemoryStorage,
        key: &str,
        parts: &[&[u8]],
        end: bool,
    ) -> Result<u64, StorageError> {
        let (tx, rx) = mpsc::channel(parts.len() + 1);
        for p in parts {
            tx.send(Chunk::Data(Bytes::copy_from_slice(p)))
                .await
                .expect("send");
        }
        if end {
            tx.send(Chunk::End).await.expect("send");
        }
        drop(tx);
        st.put_stream(key, rx).await
    }

    #[test]
    fn glob_matches_stars_anywhere() {
        assert!(glob("*/manifest.json", "app/1/manifest.json"));
        assert!(glob("app/*", "app/x/y"));
        assert!(glob("a*b*c", "aXbYc"));
        assert!(!glob("a*b*c", "aXbYcd"));
        assert!(!glob("*/manifest.json", "app/1/db.fake"));
        assert!(glob("exact", "exact"));
        assert!(!glob("exact", "exact2"));
    }

    #[tokio::test]
    async fn a_stream_is_stored_only_when_it_ends() {
        let st = MemoryStorage::new("m");
        assert_eq!(
            stream(&st, "j/1/a", &[b"ab", b"cd"], true)
                .await
                .expect("put"),
            4
        );
        assert_eq!(
            st.object("j/1/a").expect("stored").data,
            Bytes::from_static(b"abcd")
        );
        let e = stream(&st, "j/1/b", &[b"ab"], false)
            .await
            .expect_err("abandoned");
        assert!(matches!(e, StorageError::Abandoned), "{e:?}");
        assert_eq!(st.keys(), vec!["j/1/a".to_string()]);
        assert!(st.in_flight().is_empty());
    }

    #[tokio::test]
    async fn a_stream_in_flight_shows_as_a_partial_or_an_open_upload() {
        for st in [MemoryStorage::new("l"), MemoryStorage::multipart("s")] {
            let (tx, rx) = mpsc::channel(4);
            tx.send(Chunk::Data(Bytes::from_static(b"xy")))
                .await
                .expect("send");
            let put = st.put_stream("j/1/a", rx);
            // Polled until it waits for more, then dropped: a writer that died mid-stream.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(20), put).await;
            let listed: Vec<String> = st
                .list("j/")
                .await
                .expect("list")
                .into_iter()
                .map(|o| o.key)
                .collect();
            let open = st.open_uploads("j/").await.expect("open uploads");
            match st.in_flight {
                InFlight::Partial => {
                    assert_eq!(listed.len(), 1, "{listed:?}");
                    assert!(
                        listed[0].starts_with("j/1/a.") && listed[0].ends_with(PARTIAL_SUFFIX),
                        "{listed:?}"
                    );
                    assert!(open.is_empty());
                    st.delete(&listed).await.expect("delete");
                }
                InFlight::Multipart => {
                    assert!(listed.is_empty(), "{listed:?}");
                    assert_eq!(open.len(), 1);
                    st.abort_upload(&open[0]).await.expect("abort");
                }
            }
            assert!(st.in_flight().is_empty());
            assert!(st.keys().is_empty());
        }
    }

    #[tokio::test]
    async fn faults_fire_by_op_key_call_and_bytes() {
        let st = MemoryStorage::new("m");
        st.fail(
            Fault::on(Op::PutBytes)
                .key("*/lock")
                .nth(2)
                .kind(FaultKind::Denied),
        );
        st.put_bytes("j/lock", Bytes::new()).await.expect("first");
        let e = st
            .put_bytes("j/lock", Bytes::new())
            .await
            .expect_err("second");
        assert!(matches!(e, StorageError::Denied(_)), "{e:?}");
        st.put_bytes("j/lock", Bytes::new()).await.expect("third");
        st.put_bytes("j/other", Bytes::new())
            .await
            .expect("other key");

        st.fail(Fault::on(Op::PutStream).key("*.fake").after_bytes(3));
        let e = stream(&st, "j/1/db.fake", &[b"ab", b"cd"], true)
            .await
            .expect_err("after 3 bytes");
        assert!(matches!(e, StorageError::Io(_)), "{e:?}");
        assert!(st.object("j/1/db.fake").is_none());
        assert!(st.in_flight().is_empty());

        st.insert("j/x", Bytes::from_static(b"hello"));
        st.fail(Fault::on(Op::Get).after_bytes(2));
        let mut r = st.get("j/x").await.expect("opens");
        let mut buf = Vec::new();
        assert!(r.read_to_end(&mut buf).await.is_err());
        assert_eq!(buf, b"he");
        assert_eq!(st.calls(Op::PutBytes), 4);
    }
}
