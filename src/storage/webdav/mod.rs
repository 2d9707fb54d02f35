//! A WebDAV share. Listing, reading, moving and deleting go through OpenDAL's WebDAV
//! service; uploads are a streamed `PUT` of our own, because OpenDAL's WebDAV writer holds a
//! whole object in memory until it is closed (a 1 GiB dump would need 1 GiB of RAM).
//!
//! Each object is uploaded under a temporary `.partial` name and moved into place
//! (`MOVE` with `Overwrite: T`), so a reader never sees half an object under a real name.
//! A streamed upload cannot be replayed: a connection lost mid-upload fails that object
//! (and the run, for this destination) instead of being retried.

mod config;

pub use config::{Webdav, WebdavConfig};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use opendal::Operator;
use tokio::sync::mpsc;

use super::dal::{self, Publish, Upload};
use super::{Chunk, Storage, StorageError};
use crate::secret::Secret;

fn open(cfg: &WebdavConfig) -> Box<dyn Storage> {
    let location = cfg.url.to_string();
    let origin = cfg.url.origin().ascii_serialization();
    let root = cfg.url.path().to_string();
    let mut builder = opendal::services::Webdav::default()
        .endpoint(&origin)
        .root(&root);
    if let (Some(user), Some(password)) = (&cfg.username, &cfg.password) {
        builder = builder.username(user).password(password.expose());
    }
    let op = match Operator::new(builder) {
        Ok(op) => op,
        Err(e) => return dal::open(Err(e), location, Publish::Rename),
    };
    // No redirects: a redirected PUT would go on as a GET without its body (303), and an
    // answer from elsewhere must not count as the upload; a 3xx fails it instead.
    let client = match reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(30))
        .tcp_keepalive(Duration::from_secs(30))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            return Box::new(dal::Unavailable {
                location,
                why: format!("cannot build an HTTP client: {e}"),
            });
        }
    };
    let put = StreamingPut {
        client,
        base: cfg.url.clone(),
        auth: cfg.username.clone().zip(cfg.password.clone()),
        op: op.clone(),
        made: Default::default(),
    };
    Box::new(dal::DalStorage::new(op, location, Publish::Rename).with_upload(Arc::new(put)))
}

/// A `PUT` whose body is the upload's chunks as they come.
struct StreamingPut {
    client: reqwest::Client,
    base: url::Url,
    auth: Option<(String, Secret)>,
    /// For creating the parent collections (`MKCOL`), as OpenDAL's own writes do.
    op: Operator,
    /// Collections known to exist, so each upload does not ask again.
    made: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl StreamingPut {
    /// Make sure collection `dir` (relative to the root, "" for the root) exists: asked
    /// with a `PROPFIND` of our own, so a refused login is named as such, then created
    /// with its parents where missing.
    async fn collection(&self, dir: &str) -> Result<(), StorageError> {
        let known = |made: &std::collections::HashSet<String>| made.contains(dir);
        if known(&self.made.lock().unwrap_or_else(|e| e.into_inner())) {
            return Ok(());
        }
        let mut req = self
            .client
            .request(
                reqwest::Method::from_bytes(b"PROPFIND").unwrap_or(reqwest::Method::GET),
                self.collection_url(dir),
            )
            .header("Depth", "0");
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        let status = req
            .send()
            .await
            .map_err(|e| self.send_error(dir, e))?
            .status();
        match status.as_u16() {
            200..=299 => {}
            404 => self.op.create_dir(&format!("{dir}/")).await.map_err(|e| {
                StorageError::Io(
                    format!("cannot create collection \"{dir}\" at {}: {e}", self.base).into(),
                )
                .caused_by(e)
            })?,
            _ => return Err(self.refused(&format!("collection \"{dir}\""), status)),
        }
        self.made
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_string());
        Ok(())
    }

    fn send_error(&self, what: &str, e: reqwest::Error) -> StorageError {
        let message = format!(
            "cannot reach {} for {what}: {}",
            self.base,
            crate::units::error_chain(&e)
        );
        let err = if e.is_connect() || e.is_timeout() {
            StorageError::Unreachable(message.into())
        } else {
            StorageError::Io(message.into())
        };
        err.caused_by(e)
    }

    fn refused(&self, what: &str, status: reqwest::StatusCode) -> StorageError {
        let message = format!("{what} at {}: the server answered {status}", self.base);
        match status.as_u16() {
            401 | 403 => {
                StorageError::Denied(format!("{message}; check username and password_file").into())
            }
            404 | 409 => StorageError::NotFound(message.into()),
            _ => StorageError::Io(message.into()),
        }
    }

    /// A collection's address, with the trailing slash WebDAV servers expect.
    fn collection_url(&self, dir: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty();
            if !dir.is_empty() {
                segments.extend(dir.split('/'));
            }
            segments.push("");
        }
        url
    }

    fn url(&self, path: &str) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(path.split('/'));
        }
        url
    }
}

#[async_trait]
impl Upload for StreamingPut {
    async fn upload(&self, path: &str, body: mpsc::Receiver<Chunk>) -> Result<u64, StorageError> {
        let url = self.url(path);
        let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
        self.collection(parent).await?;
        let written = Arc::new(AtomicU64::new(0));
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stream = chunks(body, written.clone(), ended.clone());
        let mut req = self
            .client
            .put(url.clone())
            .body(reqwest::Body::wrap_stream(stream));
        if let Some((user, password)) = &self.auth {
            req = req.basic_auth(user, Some(password.expose()));
        }
        let sent = req.send().await;
        if !ended.load(Ordering::SeqCst) {
            return Err(StorageError::Abandoned);
        }
        let status = sent.map_err(|e| self.send_error(path, e))?.status();
        if status.is_success() {
            return Ok(written.load(Ordering::SeqCst));
        }
        Err(self.refused(&format!("cannot upload {path}"), status))
    }
}

/// The upload's chunks as a body stream: it ends at [`Chunk::End`] (setting `ended`) and
/// fails when the producer gives up, so the server never takes a cut-off body as whole.
fn chunks(
    body: mpsc::Receiver<Chunk>,
    written: Arc<AtomicU64>,
    ended: Arc<std::sync::atomic::AtomicBool>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(Some(body), move |rx| {
        let written = written.clone();
        let ended = ended.clone();
        async move {
            let mut rx = rx?;
            match rx.recv().await {
                Some(Chunk::Data(b)) => {
                    written.fetch_add(b.len() as u64, Ordering::SeqCst);
                    Some((Ok(b), Some(rx)))
                }
                Some(Chunk::End) => {
                    ended.store(true, Ordering::SeqCst);
                    None
                }
                None => Some((
                    Err(std::io::Error::other("upload abandoned: the data stream ended early")),
                    None,
                )),
            }
        }
    })
}
