//! A directory on an SSH server, over SFTP. The connection is the system's `ssh` client
//! (a master process, `openssh`'s process mux) with the configured key and known_hosts
//! file, and an SFTP session on it (`openssh-sftp-client`): opened at the first operation,
//! then shared by every operation of this storage; a connection found broken is dropped
//! and the next operation opens a new one.
//!
//! Objects are written under a temporary `.partial` name and renamed into place (the
//! `posix-rename@openssh.com` extension where the server has it, which replaces a target
//! atomically), so a reader never sees half an object under a real name. Objects are 0600
//! and the directories stowage creates 0700. Uploads and reads are streamed: at most
//! [`WRITE_IN_FLIGHT`] of an upload and one [`READ_CHUNK`] of a read are held.

mod config;

pub use config::{HostCheck, Sftp, SftpConfig};

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use openssh::{ControlPersist, KnownHosts, SessionBuilder};
use openssh_sftp_client::error::SftpErrorKind;
use openssh_sftp_client::file::TokioCompatFile;
use openssh_sftp_client::fs::Fs;
use openssh_sftp_client::metadata::Permissions;
use openssh_sftp_client::{Error as SftpError, Sftp as Client, SftpOptions};
use tokio::sync::{Mutex, mpsc};

use super::{Chunk, ObjectMeta, ObjectReader, Storage, StorageError};
use crate::backend::partial_tag;

/// How long `ssh` may take to reach the server and exchange banners.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of one upload sent and not yet acknowledged: enough to keep a long link busy.
const WRITE_IN_FLIGHT: usize = 4 * 1024 * 1024;
/// What one read request asks for (OpenSSH's server answers up to 255 KiB).
const READ_CHUNK: u32 = 255 * 1024;
/// Removals sent at once when deleting many objects (a retention pass).
const DELETES_IN_FLIGHT: usize = 32;

/// An SFTP session and the directory of its `ssh` master's control socket.
struct Connection {
    sftp: Client,
    control: tempfile::TempDir,
}

impl Drop for Connection {
    /// The `openssh` session would ask the master to exit only once its task is dropped,
    /// which a finishing command never waits for (and by then the socket may be gone): the
    /// master would linger for its `ControlPersist` time. Asked here, it exits at once.
    fn drop(&mut self) {
        let Ok(dirs) = std::fs::read_dir(self.control.path()) else {
            return;
        };
        for dir in dirs.flatten() {
            let socket = dir.path().join("master");
            if socket.exists() {
                let _ = std::process::Command::new("ssh")
                    .arg("-S")
                    .arg(&socket)
                    .args(["-O", "exit", "none"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
        }
    }
}

pub struct SftpStorage {
    cfg: SftpConfig,
    location: String,
    conn: Mutex<Option<Arc<Connection>>>,
}

/// What a failure means, before it becomes a [`StorageError`] with its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotFound,
    Denied,
    Unreachable,
    Io,
}

impl Class {
    fn error(self, message: String) -> StorageError {
        match self {
            Class::NotFound => StorageError::NotFound(message.into()),
            Class::Denied => StorageError::Denied(message.into()),
            Class::Unreachable => StorageError::Unreachable(message.into()),
            Class::Io => StorageError::Io(message.into()),
        }
    }
}

impl SftpStorage {
    pub fn new(cfg: SftpConfig) -> SftpStorage {
        SftpStorage {
            location: cfg.location(),
            cfg,
            conn: Mutex::new(None),
        }
    }

    /// The session, opened on first use. Callers wait for one connection attempt instead
    /// of each starting its own.
    async fn connection(&self) -> Result<Arc<Connection>, StorageError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Arc::new(self.connect().await?);
        *slot = Some(c.clone());
        Ok(c)
    }

    /// `result` of an operation on `c`; a lost connection is forgotten, so that the next
    /// operation connects again instead of failing the same way.
    async fn settle<T>(
        &self,
        c: &Arc<Connection>,
        result: Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        if let Err(StorageError::Unreachable(_)) = &result {
            let mut slot = self.conn.lock().await;
            if slot.as_ref().is_some_and(|held| Arc::ptr_eq(held, c)) {
                *slot = None;
            }
        }
        result
    }

    async fn connect(&self) -> Result<Connection, StorageError> {
        let control = tempfile::Builder::new()
            .prefix("stowage-ssh-")
            .tempdir()
            .map_err(|e| {
                StorageError::Io(
                    format!(
                        "cannot create a directory for ssh's control socket: {}",
                        crate::units::io_reason(&e)
                    )
                    .into(),
                )
                .caused_by(e)
            })?;
        let mut b = SessionBuilder::default();
        b.user(self.cfg.user.clone())
            .port(self.cfg.port)
            .keyfile(&self.cfg.key_file)
            .known_hosts_check(match self.cfg.host_check {
                HostCheck::Strict => KnownHosts::Strict,
                HostCheck::AcceptNew => KnownHosts::Add,
            })
            .user_known_hosts_file(&self.cfg.known_hosts)
            // The destination's settings are the whole of it: no ~/.ssh/config or
            // /etc/ssh/ssh_config of the machine (or image) stowage runs on.
            .config_file("/dev/null")
            .connect_timeout(CONNECT_TIMEOUT)
            .server_alive_interval(Duration::from_secs(15))
            .control_directory(control.path())
            // Should stowage be killed before it can close the master, the master still
            // exits once nothing uses it.
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(60).unwrap_or(NonZeroUsize::MIN),
            ));
        let session = b
            .connect(&self.cfg.host)
            .await
            .map_err(|e| connect_error(&self.cfg, &self.location, e))?;
        let options = SftpOptions::new().tokio_compat_file_write_limit(
            NonZeroUsize::new(WRITE_IN_FLIGHT).unwrap_or(NonZeroUsize::MIN),
        );
        let sftp = Client::from_session(session, options)
            .await
            .map_err(|e| self.error("cannot start SFTP on", "the server", e))?;
        Ok(Connection { sftp, control })
    }

    /// `what` failed for `subject` (a key, or "the backup directory"): one line naming it
    /// and the destination, the SFTP error kept as the source.
    fn error(&self, what: &str, subject: &str, e: SftpError) -> StorageError {
        failure(&self.location, &self.cfg, what, subject, e)
    }

    /// The remote path of `key`, once it is known not to leave the destination's directory.
    fn remote(&self, key: &str) -> Result<String, StorageError> {
        super::check_key(key).map_err(|why| StorageError::Denied(why.into()))?;
        Ok(self.join(key))
    }

    fn join(&self, rel: &str) -> String {
        match (rel, self.cfg.path.as_str()) {
            ("", root) => root.to_string(),
            (rel, "/") => format!("/{rel}"),
            (rel, root) => format!("{root}/{rel}"),
        }
    }

    /// A new 0600 file: a `.partial` name is unique to its writer, so it is created
    /// exclusively. Its directory is created when missing.
    async fn create(
        &self,
        c: &Connection,
        path: &str,
        key: &str,
    ) -> Result<openssh_sftp_client::file::File, StorageError> {
        let mut file = match open_new(c, path).await {
            Ok(f) => f,
            Err(e) if is(&e, SftpErrorKind::NoSuchFile) => {
                if let Some(dir) = parent(path) {
                    make_dirs(&mut c.sftp.fs(), dir)
                        .await
                        .map_err(|e| self.error("cannot create the directory of", key, e))?;
                }
                open_new(c, path)
                    .await
                    .map_err(|e| self.error("cannot create", key, e))?
            }
            Err(e) => return Err(self.error("cannot create", key, e)),
        };
        file.set_permissions(Permissions::from(0o600))
            .await
            .map_err(|e| self.error("cannot restrict the permissions of", key, e))?;
        Ok(file)
    }

    /// The upload's chunks into `partial`, flushed and synced: its size once
    /// [`Chunk::End`] came.
    async fn write_partial(
        &self,
        c: &Connection,
        key: &str,
        partial: &str,
        mut body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        let mut file = self.create(c, partial, key).await?;
        // A clone shares the handle: it syncs and closes it once the writer is done.
        let mut w = Box::pin(TokioCompatFile::new(file.clone()));
        let written = crate::backend::write_chunks(&mut body, &mut w, |e| {
            self.io_error("cannot write", key, e)
        })
        .await?;
        drop(w);
        if c.sftp.support_fsync() {
            file.sync_all()
                .await
                .map_err(|e| self.error("cannot sync", key, e))?;
        }
        file.close()
            .await
            .map_err(|e| self.error("cannot close", key, e))?;
        Ok(written)
    }

    /// A write error of the compat writer: the SFTP error inside when there is one.
    fn io_error(&self, what: &str, key: &str, e: std::io::Error) -> StorageError {
        let (class, reason) = describe_io(&e, &self.cfg);
        class
            .error(format!("{what} {key} on {}: {reason}", self.location))
            .caused_by(e)
    }

    /// `partial` under its real name, replacing what is there.
    async fn publish(
        &self,
        c: &Connection,
        key: &str,
        partial: &str,
        target: &str,
    ) -> Result<(), StorageError> {
        let mut fs = c.sftp.fs();
        // A plain SFTP rename refuses an existing target: without posix-rename the old
        // object goes first (a reader may then briefly find none, never a partial one).
        if !c.sftp.support_posix_rename() {
            match fs.remove_file(target).await {
                Ok(()) => {}
                Err(e) if is(&e, SftpErrorKind::NoSuchFile) => {}
                Err(e) => return Err(self.error("cannot replace", key, e)),
            }
        }
        fs.rename(partial, target)
            .await
            .map_err(|e| self.error("cannot rename into place", key, e))
    }

    async fn put(&self, key: &str, body: mpsc::Receiver<Chunk>) -> Result<u64, StorageError> {
        let target = self.remote(key)?;
        let c = self.connection().await?;
        let partial = format!("{target}{}", partial_tag());
        let result = async {
            let n = self.write_partial(&c, key, &partial, body).await?;
            self.publish(&c, key, &partial, &target).await?;
            Ok(n)
        }
        .await;
        if result.is_err() {
            let mut fs = c.sftp.fs();
            if fs.remove_file(&partial).await.is_ok()
                && let Some((dir, _)) = key.rsplit_once('/')
            {
                self.prune(&mut fs, dir).await;
            }
        }
        self.settle(&c, result).await
    }

    /// Remove the now-empty directories from `rel` up, the destination's own excluded, so a
    /// deleted backup leaves no empty `<job>/<id>/` behind. The server refuses to remove a
    /// directory that still holds something, which ends the climb.
    async fn prune(&self, fs: &mut Fs, rel: &str) {
        let mut dir = Some(rel);
        while let Some(d) = dir.filter(|d| !d.is_empty()) {
            if fs.remove_dir(self.join(d)).await.is_err() {
                break;
            }
            dir = d.rsplit_once('/').map(|(up, _)| up);
        }
    }

    /// The walk behind listings, one directory's files at a time, from the directory the
    /// prefix points into (a job's backups are under "<job>/": other jobs are not read).
    async fn walk(
        &self,
        c: &Connection,
        prefix: &str,
        end: Option<&str>,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        let (start, _) = prefix.rsplit_once('/').unwrap_or(("", prefix));
        let mut fs = c.sftp.fs();
        let mut stack = vec![start.to_string()];
        while let Some(rel) = stack.pop() {
            let subject = if rel.is_empty() { "the backup directory" } else { &rel };
            let dir = match fs.open_dir(self.join(&rel)).await {
                Ok(d) => d,
                Err(e) if is(&e, SftpErrorKind::NoSuchFile) => continue,
                Err(e) => return Err(self.error("cannot list", subject, e)),
            };
            let mut entries = std::pin::pin!(dir.read_dir());
            let mut page = Vec::new();
            while let Some(entry) = entries.next().await {
                let entry = entry.map_err(|e| self.error("cannot list", subject, e))?;
                let name = entry.filename().to_string_lossy();
                if name == "." || name == ".." {
                    continue;
                }
                let key = if rel.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel}/{name}")
                };
                let meta = entry.metadata();
                match meta.file_type() {
                    Some(t) if t.is_dir() => {
                        let below = format!("{key}/");
                        let wanted = below.starts_with(prefix) || prefix.starts_with(&below);
                        // Below `end` only: a job's backups without walking its blobs.
                        if wanted && end.is_none_or(|e| below.as_str() < e) {
                            stack.push(key);
                        }
                    }
                    Some(t)
                        if t.is_file()
                            && key.starts_with(prefix)
                            && end.is_none_or(|e| key.as_str() < e) =>
                    {
                        page.push(ObjectMeta {
                            key,
                            size: meta.len().unwrap_or(0),
                            modified: meta.modified().map(|t| {
                                chrono::DateTime::<chrono::Utc>::from(t.as_system_time())
                            }),
                        });
                    }
                    _ => {}
                }
            }
            if !page.is_empty() {
                each(page);
            }
        }
        Ok(())
    }

    async fn listing(
        &self,
        prefix: &str,
        end: Option<&str>,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        let c = self.connection().await?;
        let result = self.walk(&c, prefix, end, each).await;
        self.settle(&c, result).await
    }

    async fn probe(&self, c: &Connection) -> Result<(), StorageError> {
        let mut fs = c.sftp.fs();
        make_dirs(&mut fs, &self.cfg.path)
            .await
            .map_err(|e| self.error("cannot create", "the backup directory", e))?;
        let probe = self.join(".stowage-write-test");
        let _ = fs.remove_file(&probe).await;
        let mut file = open_new(c, &probe)
            .await
            .map_err(|e| self.error("cannot write in", "the backup directory", e))?;
        file.write_all(b"ok")
            .await
            .map_err(|e| self.error("cannot write in", "the backup directory", e))?;
        file.close()
            .await
            .map_err(|e| self.error("cannot write in", "the backup directory", e))?;
        fs.remove_file(&probe)
            .await
            .map_err(|e| self.error("cannot delete in", "the backup directory", e))
    }
}

/// A file that did not exist, opened for writing.
async fn open_new(
    c: &Connection,
    path: &str,
) -> Result<openssh_sftp_client::file::File, SftpError> {
    let mut options = c.sftp.options();
    options.write(true).create_new(true);
    options.open(path).await
}

/// `dir` and its missing parents, each 0700.
async fn make_dirs(fs: &mut Fs, dir: &str) -> Result<(), SftpError> {
    let mut pending = vec![dir.to_string()];
    while let Some(d) = pending.last().cloned() {
        let made = fs
            .dir_builder()
            .permissions(Permissions::from(0o700))
            .create(&d)
            .await;
        match made {
            Ok(()) => {
                pending.pop();
            }
            Err(e) if is(&e, SftpErrorKind::NoSuchFile) => match parent(&d) {
                Some(up) if pending.len() < 256 => pending.push(up.to_string()),
                _ => return Err(e),
            },
            // SFTP v3 has no "already exists": OpenSSH answers a plain failure.
            Err(e) => match fs.metadata(&d).await {
                Ok(m) if m.file_type().is_some_and(|t| t.is_dir()) => {
                    pending.pop();
                }
                _ => return Err(e),
            },
        }
    }
    Ok(())
}

/// The directory holding `path` ("/" for a top-level one), `None` for "/".
fn parent(path: &str) -> Option<&str> {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) if path != "/" => Some("/"),
        Some((up, _)) if !up.is_empty() => Some(up),
        _ => None,
    }
}

/// Whether the server answered `kind`.
fn is(e: &SftpError, kind: SftpErrorKind) -> bool {
    match e {
        SftpError::SftpError(k, _) => std::mem::discriminant(k) == std::mem::discriminant(&kind),
        SftpError::RecursiveErrors(r) => is(&r.original_error, kind),
        _ => false,
    }
}

fn failure(
    location: &str,
    cfg: &SftpConfig,
    what: &str,
    subject: &str,
    e: SftpError,
) -> StorageError {
    let (class, reason) = describe(&e, cfg);
    class
        .error(format!("{what} {subject} on {location}: {reason}"))
        .caused_by(e)
}

/// How an SFTP failure reads, and what it means.
fn describe(e: &SftpError, cfg: &SftpConfig) -> (Class, String) {
    match e {
        SftpError::SftpError(SftpErrorKind::NoSuchFile, _) => {
            (Class::NotFound, "no such file".to_string())
        }
        SftpError::SftpError(SftpErrorKind::PermDenied, _) => (
            Class::Denied,
            format!(
                "permission denied; user {} must be able to write in {} on the server",
                cfg.user, cfg.path
            ),
        ),
        SftpError::SftpError(_, msg) => {
            let (text, _) = msg.get();
            (Class::Io, format!("the server answered \"{}\"", text.escape_debug()))
        }
        SftpError::IOError(io) => describe_io(io, cfg),
        SftpError::RecursiveErrors(r) => describe(&r.original_error, cfg),
        SftpError::RemoteChildSpawnError(_)
        | SftpError::SftpServerFailure(_)
        | SftpError::BackgroundTaskFailure(_)
        | SftpError::AwaitableError(_)
        | SftpError::TaskJoinError(_) => (
            Class::Unreachable,
            format!(
                "the SSH connection was lost ({})",
                crate::units::error_chain(e)
            ),
        ),
        _ => (Class::Io, crate::units::error_chain(e)),
    }
}

fn describe_io(e: &std::io::Error, cfg: &SftpConfig) -> (Class, String) {
    use std::io::ErrorKind;
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<SftpError>()) {
        return describe(inner, cfg);
    }
    match e.kind() {
        ErrorKind::BrokenPipe
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::UnexpectedEof => (
            Class::Unreachable,
            format!(
                "the SSH connection was lost ({})",
                crate::units::io_reason(e)
            ),
        ),
        _ => (Class::Io, crate::units::io_reason(e)),
    }
}

/// Why `ssh` could not connect, from what it logged, with what to check.
fn connect_error(cfg: &SftpConfig, location: &str, e: openssh::Error) -> StorageError {
    let (kind, said) = match &e {
        openssh::Error::Connect(io) | openssh::Error::Master(io) => {
            (Some(io.kind()), io.to_string())
        }
        other => (None, crate::units::error_chain(other)),
    };
    let (class, message) = classify_connect(cfg, location, kind, &said);
    class.error(message).caused_by(e)
}

fn classify_connect(
    cfg: &SftpConfig,
    location: &str,
    kind: Option<std::io::ErrorKind>,
    said: &str,
) -> (Class, String) {
    use std::io::ErrorKind;
    let file = cfg.known_hosts.display();
    let last = said
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with('@'))
        .unwrap_or(said.trim());
    let has = |s: &str| said.contains(s);
    if kind == Some(ErrorKind::NotFound) {
        return (
            Class::Io,
            format!(
                "cannot connect to {location}: cannot run ssh ({said}); install the OpenSSH client (Debian: openssh-client)"
            ),
        );
    }
    if has("IDENTIFICATION HAS CHANGED") || has("has changed and you have requested strict checking") {
        return (
            Class::Denied,
            format!(
                "cannot connect to {location}: the server's host key does not match the one known_hosts {file} has for {name}; if the server was reinstalled, check its new key and replace the line (`ssh-keygen -R '{name}' -f {file}`, then `ssh-keyscan -p {port} {host} >> {file}`); otherwise someone may be intercepting the connection",
                name = cfg.known_hosts_name(),
                port = cfg.port,
                host = cfg.host,
            ),
        );
    }
    if has("Host key verification failed") || has("host key is known for") {
        return (
            Class::Denied,
            format!(
                "cannot connect to {location}: the server's host key is not in known_hosts {file}; add it with `ssh-keyscan -p {port} {host} >> {file}` (and check its fingerprint)",
                port = cfg.port,
                host = cfg.host,
            ),
        );
    }
    if has("Permission denied (") || kind == Some(ErrorKind::PermissionDenied) {
        return (
            Class::Denied,
            format!(
                "cannot log in to {location}: the server refused key_file {} for user {}; its public key must be in that user's authorized_keys on the server ({last})",
                cfg.key_file.display(),
                cfg.user
            ),
        );
    }
    if has("Load key") || has("UNPROTECTED PRIVATE KEY") || has("invalid format") {
        return (
            Class::Denied,
            format!(
                "cannot connect to {location}: ssh cannot use key_file {} ({last}); it must be an unencrypted private key only its owner can read",
                cfg.key_file.display()
            ),
        );
    }
    let unreachable = matches!(
        kind,
        Some(ErrorKind::ConnectionRefused | ErrorKind::TimedOut)
    ) || [
        "Connection refused",
        "timed out",
        "Could not resolve",
        "Network is unreachable",
        "No route to host",
        "Connection closed",
        "Connection reset",
    ]
    .iter()
    .any(|s| has(s));
    let class = if unreachable {
        Class::Unreachable
    } else {
        Class::Io
    };
    (class, format!("cannot connect to {location}: {last}"))
}

#[async_trait]
impl Storage for SftpStorage {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn preflight(&self) -> Result<(), StorageError> {
        let c = self.connection().await?;
        let result = self.probe(&c).await;
        self.settle(&c, result).await
    }

    async fn put_stream(
        &self,
        key: &str,
        body: mpsc::Receiver<Chunk>,
    ) -> Result<u64, StorageError> {
        self.put(key, body).await
    }

    async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let (tx, rx) = mpsc::channel(2);
        // The receiver is ours until `put` returns: these sends cannot fail.
        let _ = tx.send(Chunk::Data(data)).await;
        let _ = tx.send(Chunk::End).await;
        drop(tx);
        self.put(key, rx).await.map(|_| ())
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.remote(key)?;
        let c = self.connection().await?;
        let opened = c
            .sftp
            .open(&path)
            .await
            .map_err(|e| self.error("cannot read", key, e));
        let file = self.settle(&c, opened).await?;
        let (location, cfg, key) = (self.location.clone(), self.cfg.clone(), key.to_string());
        let chunks = futures::stream::try_unfold(file, move |mut f| {
            let (location, cfg, key) = (location.clone(), cfg.clone(), key.clone());
            // The reader may outlive this storage: it keeps the connection open.
            let _alive = &c;
            async move {
                match f
                    .read(READ_CHUNK, BytesMut::with_capacity(READ_CHUNK as usize))
                    .await
                {
                    Ok(Some(buf)) => Ok(Some((buf.freeze(), f))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(std::io::Error::other(failure(
                        &location, &cfg, "cannot read", &key, e,
                    ))),
                }
            }
        });
        Ok(Box::new(tokio_util::io::StreamReader::new(Box::pin(chunks))))
    }

    async fn list_pages(
        &self,
        prefix: &str,
        each: &mut (dyn FnMut(Vec<ObjectMeta>) + Send),
    ) -> Result<(), StorageError> {
        self.listing(prefix, None, each).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.listing(prefix, None, &mut |page| out.extend(page))
            .await?;
        Ok(out)
    }

    async fn list_until(&self, prefix: &str, end: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let mut out = Vec::new();
        self.listing(prefix, Some(end), &mut |page| out.extend(page))
            .await?;
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        let mut paths = Vec::with_capacity(keys.len());
        for key in keys {
            paths.push((key.clone(), self.remote(key)?));
        }
        if paths.is_empty() {
            return Ok(());
        }
        let c = self.connection().await?;
        let fs = c.sftp.fs();
        let removed = futures::stream::iter(paths)
            .map(|(key, path)| {
                let mut fs = fs.clone();
                async move {
                    match fs.remove_file(&path).await {
                        Ok(()) => Ok(()),
                        Err(e) if is(&e, SftpErrorKind::NoSuchFile) => Ok(()),
                        Err(e) => Err(self.error("cannot delete", &key, e)),
                    }
                }
            })
            .buffer_unordered(DELETES_IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await;
        let result = match removed {
            Ok(_) => {
                let dirs: BTreeSet<&str> = keys
                    .iter()
                    .filter_map(|k| k.rsplit_once('/').map(|(d, _)| d))
                    .collect();
                let mut fs = fs.clone();
                // Deepest first, so a backup's directory goes before its job's.
                for dir in dirs.into_iter().rev() {
                    self.prune(&mut fs, dir).await;
                }
                Ok(())
            }
            Err(e) => Err(e),
        };
        self.settle(&c, result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> SftpConfig {
        SftpConfig {
            host: "nas.lan".to_string(),
            port: 2222,
            user: "backup".to_string(),
            key_file: "/run/secrets/ssh_key".into(),
            known_hosts: "/config/known_hosts".into(),
            host_check: HostCheck::Strict,
            path: "/volume1/backups".to_string(),
        }
    }

    #[test]
    fn parents_and_joins() {
        assert_eq!(parent("/a/b/c"), Some("/a/b"));
        assert_eq!(parent("/a"), Some("/"));
        assert_eq!(parent("/"), None);
        let st = SftpStorage::new(cfg());
        assert_eq!(st.join("job/x"), "/volume1/backups/job/x");
        assert_eq!(st.join(""), "/volume1/backups");
        assert_eq!(st.location(), "sftp://backup@nas.lan:2222/volume1/backups");
        assert!(matches!(st.remote("../etc/passwd"), Err(StorageError::Denied(_))));
    }

    /// What ssh logs for each failure becomes a kind and a line that says what to check.
    #[test]
    fn ssh_failures_are_classified_with_a_hint() {
        use std::io::ErrorKind;
        let c = cfg();
        let loc = c.location();
        let unknown = "No ED25519 host key is known for [nas.lan]:2222 and you have requested strict checking.\r\nHost key verification failed.";
        let (class, msg) = classify_connect(&c, &loc, Some(ErrorKind::ConnectionAborted), unknown);
        assert_eq!(class, Class::Denied);
        assert_eq!(
            msg,
            "cannot connect to sftp://backup@nas.lan:2222/volume1/backups: the server's host key is not in known_hosts /config/known_hosts; add it with `ssh-keyscan -p 2222 nas.lan >> /config/known_hosts` (and check its fingerprint)"
        );

        let changed = "@@@@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@@@@\nHost key for [nas.lan]:2222 has changed and you have requested strict checking.\nHost key verification failed.";
        let (class, msg) = classify_connect(&c, &loc, Some(ErrorKind::ConnectionAborted), changed);
        assert_eq!(class, Class::Denied);
        assert!(msg.contains("does not match the one known_hosts /config/known_hosts has for [nas.lan]:2222"), "{msg}");
        assert!(msg.contains("ssh-keyscan -p 2222 nas.lan >> /config/known_hosts"), "{msg}");

        let refused_key = "backup@nas.lan: Permission denied (publickey).";
        let (class, msg) = classify_connect(&c, &loc, Some(ErrorKind::PermissionDenied), refused_key);
        assert_eq!(class, Class::Denied);
        assert!(msg.contains("refused key_file /run/secrets/ssh_key for user backup"), "{msg}");

        let refused = "connect to host nas.lan port 2222: Connection refused";
        let (class, msg) = classify_connect(&c, &loc, Some(ErrorKind::ConnectionRefused), refused);
        assert_eq!(class, Class::Unreachable);
        assert_eq!(msg, format!("cannot connect to {loc}: {refused}"));

        let timeout = "connect to host nas.lan port 2222: Connection timed out";
        assert_eq!(classify_connect(&c, &loc, Some(ErrorKind::TimedOut), timeout).0, Class::Unreachable);
        let dns = "Could not resolve hostname nas.lan: Name or service not known";
        assert_eq!(classify_connect(&c, &loc, Some(ErrorKind::Other), dns).0, Class::Unreachable);
        let banner = "Connection timed out during banner exchange";
        assert_eq!(classify_connect(&c, &loc, Some(ErrorKind::ConnectionAborted), banner).0, Class::Unreachable);

        let (class, msg) = classify_connect(&c, &loc, Some(ErrorKind::NotFound), "No such file or directory (os error 2)");
        assert_eq!(class, Class::Io);
        assert!(msg.contains("install the OpenSSH client"), "{msg}");
    }
}
