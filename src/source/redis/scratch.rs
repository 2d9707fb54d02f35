//! Restore drills for Redis. The drill's `to` is a directory; each drill makes a private
//! directory in it (mode 0700, a fresh name), restores the RDB there, and starts a
//! `redis-server` of its own on a free loopback port that loads it: no persistence
//! (`--save ''`, `--appendonly no`), its own `--dir`, killed when the drill ends (and when
//! the drill is dropped: `kill_on_drop`). Each logical database's key count must equal the
//! one recorded at dump time ([`dump_counting_keys`]).
//!
//! The scratch server runs as a replica of a loopback port that stowage holds bound and
//! never listens on: a Redis master drops the keys whose TTL has passed while it loads an
//! RDB, a replica keeps every key the file holds, so the count is the file's, however long
//! ago the backup ran. The port cannot be taken by another process while it is held, so
//! the replica can never reach (and sync from) a real server.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::FutureExt;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use crate::source::{log_tail as tail, write_private};

use super::{RedisSource, parse_url};
use crate::engine::{
    Database, Dump, Scratch, ScratchSpace, ServerLost, SourceError, SpawnReason,
};

const SERVER: &str = "redis-server";
const SERVER_HINT: &str = "a Redis drill starts its own redis-server to load the backup: install it (Debian/Ubuntu: package redis-server; Alpine: package redis)";
const RDB: &str = "dump.rdb";
/// Until the server accepts connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Until it has loaded the RDB (a few GB take a minute or two).
const LOAD_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// One reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `INFO keyspace` as keys per logical database: "db0:keys=12,expires=1,avg_ttl=0".
pub(super) fn key_counts(text: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        let Some((db, stats)) = line.split_once(':') else {
            continue;
        };
        if !db
            .strip_prefix("db")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if let Some(n) = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .and_then(|k| k.parse::<u64>().ok())
        {
            counts.insert(db.to_string(), n);
        }
    }
    counts
}

/// `dump_counting_rows`: key counts per database from `INFO keyspace` just before the
/// snapshot starts and again once it has been transferred. Redis cannot report a count in
/// the fork's own instant, so the counts are recorded only when both readings agree (the
/// keyspace did not move while the snapshot was taken); otherwise the backup records none,
/// and the drill compares the databases only (and says so).
pub(super) async fn dump_counting_keys(source: &RedisSource) -> Result<Dump, SourceError> {
    let url = source.own_url()?.clone();
    let before = match source.info(&url, &["keyspace"]).await {
        Ok(text) => Some(key_counts(&text)),
        Err(e) => {
            tracing::warn!(source = %source.name, "cannot read the key counts for the drill ({e}); the backup records none");
            None
        }
    };
    let inner = source.dump().await?;
    let finish = inner.finish;
    // The source is not 'static; a second, equal source reads INFO after the transfer.
    let after_source = RedisSource {
        name: source.name.clone(),
        url: Some(url.clone()),
        priority: source.priority,
    };
    Ok(Dump {
        reader: inner.reader,
        finish: async move {
            let mut info = finish.await?;
            let Some(before) = before else {
                return Ok(info);
            };
            match after_source.info(&url, &["keyspace"]).await {
                Ok(text) if key_counts(&text) == before => info.rows = Some(before),
                Ok(text) => tracing::warn!(
                    source = %after_source.name,
                    "the key counts changed while the snapshot was taken ({before:?} before, {:?} after); the backup records none, and its drill compares the databases only",
                    key_counts(&text)
                ),
                Err(e) => tracing::warn!(
                    source = %after_source.name,
                    "cannot read the key counts after the snapshot ({e}); the backup records none"
                ),
            }
            Ok(info)
        }
        .boxed(),
    })
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[async_trait]
impl Scratch for RedisSource {
    /// A drill never loads anything into a server it did not start; `to` naming the
    /// source's server (or any redis:// URL) is refused.
    fn is_own_database(&self, target: &str) -> bool {
        match (&self.url, parse_url(target, None)) {
            (Some(own), Ok(t)) => {
                super::host(own) == super::host(&t) && super::port(own) == super::port(&t)
            }
            _ => false,
        }
    }

    fn noun(&self) -> &'static str {
        "server"
    }

    fn counted(&self) -> (&'static str, &'static str) {
        ("database", "key")
    }

    fn runs_checks(&self) -> bool {
        false
    }

    async fn space<'a>(&'a self, to: &str) -> Result<Box<dyn ScratchSpace + 'a>, SourceError> {
        if to.contains("://") {
            return Err(SourceError::Refused(format!(
                "{} is a URL; a Redis drill starts its own server: give a directory for its private scratch directory, e.g. to = \"/var/tmp\"",
                crate::source::url::redact(to)
            )));
        }
        // Before anything is made: the clearest error when the server cannot be started.
        let Some(program) = on_path(SERVER) else {
            return Err(SourceError::Spawn {
                tool: SERVER.to_string(),
                reason: SpawnReason::missing(format!("{SERVER} not found on PATH; {SERVER_HINT}")),
            });
        };
        let dir = crate::engine::scratch_dir(to)?;
        let target = dir.path().join(RDB).to_str().map(str::to_string).ok_or_else(|| {
            SourceError::Refused(format!(
                "{} is not valid UTF-8; give a drill directory whose path is",
                dir.path().display()
            ))
        })?;
        Ok(Box::new(RedisScratch {
            program,
            dir: Some(dir),
            target,
            server: None,
        }))
    }
}

struct RedisScratch {
    program: PathBuf,
    dir: Option<tempfile::TempDir>,
    target: String,
    server: Option<Running>,
}

/// The scratch server, killed when dropped.
struct Running {
    child: Child,
    port: u16,
    /// The server's `requirepass`: a local user who finds the loopback port must not read
    /// the backup's keys while the drill runs. Never on a command line (other users see
    /// those in /proc); in a config file inside the private scratch directory.
    password: String,
    /// The replica's "master": bound, never listening, held until the server is gone.
    _hold: tokio::net::TcpSocket,
    stderr: tokio::task::JoinHandle<String>,
    log: PathBuf,
}

/// A free loopback port: bound, read, released (the server's own bind says if it was taken
/// in between, and [`RedisScratch::start`] tries again).
fn free_port() -> Result<u16, SourceError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| SourceError::io("cannot find a free loopback port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| SourceError::io("cannot find a free loopback port", e))
}

fn held_port() -> Result<(tokio::net::TcpSocket, u16), SourceError> {
    let err = |e| SourceError::io("cannot hold a loopback port for the scratch server", e);
    let s = tokio::net::TcpSocket::new_v4().map_err(err)?;
    s.bind(SocketAddr::from(([127, 0, 0, 1], 0))).map_err(err)?;
    let port = s.local_addr().map_err(err)?.port();
    Ok((s, port))
}

/// 128 random bits, hex: the scratch server's password.
fn scratch_password() -> Result<String, SourceError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| SourceError::io("cannot read /dev/urandom for the scratch server's password", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

impl Running {
    /// What the server said: its log and stderr, last lines.
    async fn said(&mut self) -> String {
        let log = tokio::fs::read(&self.log).await.unwrap_or_default();
        let stderr = (&mut self.stderr)
            .now_or_never()
            .and_then(Result::ok)
            .unwrap_or_default();
        let both = format!("{}\n{}", String::from_utf8_lossy(&log), stderr);
        let t = tail(&both);
        if t.is_empty() {
            "no output".to_string()
        } else {
            t
        }
    }

    /// Kill the server: how it ended (when it did within 5 s), and what it said.
    async fn stop(&mut self) -> (Option<String>, String) {
        let _ = self.child.start_kill();
        let status = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        let ended = match status {
            Ok(Ok(s)) => Some(super::describe_status(s)),
            _ => None,
        };
        (ended, self.said().await)
    }

    async fn failed(&mut self, why: String) -> SourceError {
        let (ended, stderr) = self.stop().await;
        SourceError::Failed {
            tool: SERVER.to_string(),
            status: match ended {
                Some(s) => format!("{why}; {s}"),
                None => why,
            },
            stderr,
        }
    }

    /// The server stopped answering `asking`: it is stopped, and the error kept.
    async fn lost(&mut self, asking: &str, source: std::io::Error) -> SourceError {
        let (ended, stderr) = self.stop().await;
        SourceError::Lost(Box::new(ServerLost {
            tool: SERVER.to_string(),
            asking: asking.to_string(),
            source,
            ended,
            stderr,
        }))
    }

    /// One command (inline form), its reply as text: a bulk or simple string, or the
    /// server's error.
    async fn command(&self, cmd: &str) -> Result<Result<String, String>, std::io::Error> {
        let io = async {
            let mut s = TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(format!("AUTH {}\r\n{cmd}\r\n", self.password).as_bytes())
                .await?;
            let mut r = BufReader::new(s);
            let mut line = String::new();
            r.read_line(&mut line).await?;
            match line.trim_end().strip_prefix('-') {
                // LOADING and the like come back as the command's own error; anything else
                // (not our server, another password) fails the command.
                Some(e) if e.starts_with("LOADING") => return Ok(Err(e.to_string())),
                Some(e) => return Ok(Err(format!("AUTH: {e}"))),
                None if line.trim_end() == "+OK" => {}
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("unexpected reply to AUTH {:?}", line.trim_end()),
                    ));
                }
            }
            line.clear();
            r.read_line(&mut line).await?;
            let line = line.trim_end();
            if let Some(e) = line.strip_prefix('-') {
                return Ok(Err(e.to_string()));
            }
            if let Some(simple) = line.strip_prefix('+') {
                return Ok(Ok(simple.to_string()));
            }
            let len: usize = line
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("unexpected reply {line:?}"),
                    )
                })?;
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await?;
            Ok(Ok(String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(REPLY_TIMEOUT, io).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no reply within {} s", REPLY_TIMEOUT.as_secs()),
            )),
        }
    }
}

impl RedisScratch {
    fn dir(&self) -> Result<&Path, SourceError> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .ok_or_else(|| SourceError::Protocol("the scratch directory is gone".into()))
    }

    /// Start the server on the restored RDB and wait until it has loaded it.
    async fn start(&mut self) -> Result<(), SourceError> {
        let dir = self.dir()?.to_path_buf();
        let mut last = None;
        for _ in 0..3 {
            let mut running = self.spawn(&dir)?;
            match running.ready().await {
                Ok(()) => {
                    self.server = Some(running);
                    return Ok(());
                }
                // Someone took the port between our look and the server's bind.
                Err(e) if e.to_string().contains("Address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| SourceError::Protocol("no free port".into())))
    }

    fn spawn(&self, dir: &Path) -> Result<Running, SourceError> {
        let port = free_port()?;
        let (hold, hold_port) = held_port()?;
        let log = dir.join("redis.log");
        let password = scratch_password()?;
        let conf = dir.join(format!("scratch-{port}.conf"));
        write_private(&conf, format!("requirepass {password}\n").as_bytes())?;
        let mut cmd = Command::new(&self.program);
        // The config file must be the first argument; the options after it add to it.
        cmd.arg(&conf)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1", "--protected-mode", "yes"])
            .arg("--dir")
            .arg(dir)
            .args(["--dbfilename", RDB, "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--unixsocket", ""])
            .arg("--logfile")
            .arg(&log)
            .args(["--replicaof", "127.0.0.1"])
            .arg(hold_port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // kill_on_drop needs a drop: a stowage that is killed outright must not leave a
        // server behind, so the kernel kills it with its parent.
        let parent = std::process::id();
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe, and nothing shared with the parent is touched.
        #[cfg(target_os = "linux")]
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| super::spawn_error(SERVER, e, SERVER_HINT))?;
        let stderr = match child.stderr.take() {
            Some(s) => super::drain_stderr(s),
            None => tokio::spawn(async { String::new() }),
        };
        Ok(Running {
            child,
            port,
            password,
            _hold: hold,
            stderr,
            log,
        })
    }
}

impl Running {
    /// Until the server answers with its dataset loaded; it must be the process we started
    /// (INFO's process_id), not whatever else listens on the port.
    async fn ready(&mut self) -> Result<(), SourceError> {
        let t0 = Instant::now();
        let mut accepted = false;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let said = self.said().await;
                return Err(SourceError::Failed {
                    tool: SERVER.to_string(),
                    status: format!(
                        "exited ({}) before it had loaded the backup",
                        super::describe_status(status)
                    ),
                    stderr: said,
                });
            }
            let limit = if accepted { LOAD_TIMEOUT } else { START_TIMEOUT };
            if t0.elapsed() > limit {
                let why = if accepted {
                    format!("still loading the backup after {} s", limit.as_secs())
                } else {
                    format!("not accepting connections after {} s", limit.as_secs())
                };
                return Err(self.failed(why).await);
            }
            // INFO is served while the server loads (and KEYS counts what is loaded so
            // far): "loading:0" says the whole file is in.
            match self.command("INFO").await {
                Ok(Ok(text)) => {
                    let field = |name: &str| {
                        text.lines()
                            .find_map(|l| l.trim().strip_prefix(name).map(str::to_string))
                    };
                    let pid = field("process_id:").and_then(|p| p.parse::<u32>().ok());
                    if pid.is_some() && pid == self.child.id() {
                        match field("loading:").as_deref() {
                            Some("0") => return Ok(()),
                            Some("1") => accepted = true,
                            other => {
                                return Err(self
                                    .failed(format!(
                                        "INFO says loading:{other:?}, not whether it has loaded the backup"
                                    ))
                                    .await);
                            }
                        }
                    } else {
                        return Err(self
                        .failed(format!(
                            "another process answers on port {} (process_id {pid:?})",
                            self.port
                        ))
                        .await);
                    }
                }
                Ok(Err(e)) if e.starts_with("LOADING") => accepted = true,
                Ok(Err(e)) => return Err(self.failed(format!("INFO failed: {e}")).await),
                Err(_) => {}
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[async_trait]
impl ScratchSpace for RedisScratch {
    fn target(&self) -> &str {
        &self.target
    }

    async fn row_counts(&mut self) -> Result<BTreeMap<String, u64>, SourceError> {
        if self.server.is_none() {
            self.start().await?;
        }
        let Some(server) = self.server.as_mut() else {
            return Err(SourceError::Protocol("the scratch server is not running".into()));
        };
        match server.command("INFO keyspace").await {
            Ok(Ok(text)) => Ok(key_counts(&text)),
            Ok(Err(e)) => Err(server.failed(format!("INFO keyspace failed: {e}")).await),
            Err(e) => Err(server.lost("INFO keyspace", e).await),
        }
    }

    async fn check(&mut self, _query: &str) -> Result<bool, SourceError> {
        Err(SourceError::Refused(
            "a Redis drill runs no checks (checks are SQL); remove checks from the drill section"
                .to_string(),
        ))
    }

    async fn remove(mut self: Box<Self>) -> Result<(), SourceError> {
        if let Some(mut s) = self.server.take() {
            let _ = s.child.start_kill();
            match tokio::time::timeout(Duration::from_secs(10), s.child.wait()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(SourceError::io("waiting for the scratch redis-server", e)),
                Err(_) => {
                    return Err(SourceError::Protocol(
                        "the scratch redis-server did not exit within 10 s of SIGKILL".into(),
                    ));
                }
            }
        }
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        let shown = dir.path().display().to_string();
        tokio::task::spawn_blocking(move || dir.close())
            .await
            .map_err(|e| SourceError::internal("removing the scratch directory", e))?
            .map_err(|e| SourceError::io(format!("cannot remove {shown}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local user who finds the scratch server's port reads nothing: it wants the
    /// password, which is only in a 0600 file of the private directory. Skipped (visibly)
    /// without redis-server.
    #[tokio::test]
    async fn the_scratch_server_answers_only_with_its_password() {
        if std::process::Command::new(SERVER).arg("--version").output().is_err() {
            eprintln!("SKIP: {SERVER} not on PATH");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut scratch = RedisScratch {
            program: PathBuf::from(SERVER),
            dir: Some(dir),
            target: String::new(),
            server: None,
        };
        scratch.start().await.expect("start the scratch server");
        let server = scratch.server.as_ref().expect("running");
        assert!(server.command("INFO keyspace").await.expect("io").is_ok());

        let mut s = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .expect("connect");
        s.write_all(b"INFO keyspace\r\n").await.expect("write");
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.expect("read");
        assert!(line.starts_with("-NOAUTH"), "{line:?}");

        let conf = std::fs::read_dir(scratch.dir().expect("dir"))
            .expect("list")
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().ends_with(".conf"))
            .expect("the config file");
        use std::os::unix::fs::PermissionsExt;
        let mode = conf.metadata().expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", server.child.id().unwrap_or(0)))
            .unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(&server.password),
            "the password is on the command line"
        );
    }

    #[test]
    fn keyspace() {
        let text = "# Keyspace\r\ndb0:keys=12,expires=1,avg_ttl=0\r\ndb3:keys=1,expires=0,avg_ttl=0\r\ndbx:keys=4\r\n";
        let got = key_counts(text);
        assert_eq!(
            got,
            [("db0".to_string(), 12), ("db3".to_string(), 1)]
                .into_iter()
                .collect()
        );
        assert!(key_counts("# Keyspace\r\n").is_empty());
    }
}
