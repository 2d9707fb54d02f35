//! A throw-away redis-server on a random loopback port (no persistence unless asked, no
//! diskless-sync delay), a binary-safe RESP client for seeding and reading it, and a
//! full-content snapshot to compare a restored server with the original.
//!
//! Needs `redis-server` and `redis-cli` (Debian: redis-server, redis-tools); override with
//! `STOWAGE_REDIS_SERVER` / `STOWAGE_REDIS_CLI`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{describe, find_tool, free_port, read_tail};

const HINT: &str =
    "install redis-server and redis-tools (Debian: apt-get install redis-server redis-tools)";

pub fn redis_server_bin() -> PathBuf {
    find_tool("STOWAGE_REDIS_SERVER", "redis-server", &[])
}

pub fn redis_cli_bin() -> PathBuf {
    find_tool("STOWAGE_REDIS_CLI", "redis-cli", &[])
}

/// How a server is started beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct RedisOptions {
    /// `--requirepass`.
    pub password: Option<String>,
    /// `--dir` (default: a temp dir owned by the server).
    pub dir: Option<PathBuf>,
    /// `--dbfilename` (default: dump.rdb).
    pub dbfilename: Option<String>,
    /// More `redis-server` arguments, after the defaults (so they override them), e.g.
    /// `["--save", "3600 1"]` to persist on shutdown like a stock server.
    pub args: Vec<String>,
}

/// A redis-server child process. Killed (SIGKILL) on drop.
pub struct RedisServer {
    tmp: tempfile::TempDir,
    dir: PathBuf,
    dbfilename: String,
    password: Option<String>,
    args: Vec<String>,
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Empty, no persistence (`--save "" --appendonly no`), `--repl-diskless-sync-delay 0`.
    pub fn start() -> RedisServer {
        Self::start_with(RedisOptions::default())
    }

    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_with(RedisOptions {
            password: Some(password.to_string()),
            ..Default::default()
        })
    }

    /// A server that loads `path` at start (its directory as `--dir`, its name as
    /// `--dbfilename`).
    pub fn start_with_rdb(path: &Path) -> RedisServer {
        Self::start_with(RedisOptions {
            dir: Some(
                path.parent()
                    .expect("rdb path has a directory")
                    .to_path_buf(),
            ),
            dbfilename: Some(
                path.file_name()
                    .expect("rdb path names a file")
                    .to_string_lossy()
                    .into_owned(),
            ),
            ..Default::default()
        })
    }

    pub fn start_with(opts: RedisOptions) -> RedisServer {
        let tmp = tempfile::Builder::new()
            .prefix("stowage-redis-")
            .tempdir()
            .expect("temp dir for redis");
        let dir = opts.dir.unwrap_or_else(|| tmp.path().join("data"));
        std::fs::create_dir_all(&dir).expect("redis data dir");
        let mut server = RedisServer {
            tmp,
            dir,
            dbfilename: opts.dbfilename.unwrap_or_else(|| "dump.rdb".to_string()),
            password: opts.password,
            args: opts.args,
            port: 0,
            child: None,
        };
        let mut errors = Vec::new();
        for _ in 0..5 {
            match server.spawn(free_port()) {
                Ok(()) => return server,
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "redis-server failed to start 5 times:\n{}",
            errors.join("\n----\n")
        );
    }

    fn log_path(&self) -> PathBuf {
        self.tmp.path().join("redis.log")
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        read_tail(&self.log_path(), 4000)
    }

    fn spawn(&mut self, port: u16) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("redis log file");
        let mut cmd = Command::new(redis_server_bin());
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--dbfilename", &self.dbfilename])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0", "--logfile", ""]);
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        cmd.args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn redis-server: {e}; {HINT}"));
        self.port = port;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait redis-server") {
                return Err(format!(
                    "redis-server on port {port} exited ({status}):\n{}",
                    self.log()
                ));
            }
            if self.ping() {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "redis-server on port {port} did not answer PING:\n{}",
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers PONG (not LOADING, not refusing).
    fn ping(&self) -> bool {
        let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut conn = RedisConn::new(stream);
        if let Some(pw) = &self.password
            && !matches!(conn.try_cmd(&[b"AUTH", pw.as_bytes()]), Ok(Resp::Simple(_)))
        {
            return false;
        }
        matches!(conn.try_cmd(&[b"PING"]), Ok(Resp::Simple(s)) if s == "PONG")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (no password).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The data directory (`--dir`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/dbfilename`: the file the server loads at start and saves to.
    pub fn rdb_path(&self) -> PathBuf {
        self.dir.join(&self.dbfilename)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// A connection, authenticated when the server has a password.
    pub fn conn(&self) -> RedisConn {
        let stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("connect to redis on {}: {e}", self.port));
        let mut conn = RedisConn::new(stream);
        if let Some(pw) = &self.password {
            conn.cmd(&[b"AUTH", pw.as_bytes()]);
        }
        conn
    }

    /// One command on a fresh connection (binary-safe); panics on an error reply.
    pub fn cmd(&self, args: &[&[u8]]) -> Resp {
        self.conn().cmd(args)
    }

    /// Run `redis-cli -e ARGS` against the server (password through REDISCLI_AUTH);
    /// panics on failure, returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new(redis_cli_bin());
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-e"])
            .args(args)
            .env_remove("REDISCLI_AUTH");
        if let Some(pw) = &self.password {
            cmd.env("REDISCLI_AUTH", pw);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("run redis-cli: {e}; {HINT}"));
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A value of `INFO <section>`, e.g. `info_field("persistence", "rdb_bgsave_in_progress")`.
    pub fn info_field(&self, section: &str, field: &str) -> Option<String> {
        let Resp::Bulk(Some(text)) = self.cmd(&[b"INFO", section.as_bytes()]) else {
            panic!("INFO {section} did not answer a bulk string");
        };
        String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.strip_prefix(&format!("{field}:"))
                .map(|v| v.trim().to_string())
        })
    }

    /// Stop the server as `docker stop` does (SIGTERM; it saves first when save points
    /// are configured) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if child.try_wait().expect("try_wait").is_some() {
                    break;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server did not stop on SIGTERM:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// SIGKILL: a crash, nothing saved.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port, directory and options (loads `rdb_path()`).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running redis-server");
        let port = self.port;
        if let Err(e) = self.spawn(port) {
            panic!("restart of redis-server failed: {e}");
        }
    }

    /// Start again on the same port and directory with other extra arguments (in place of
    /// the ones given at start), e.g. `["--appendonly", "yes"]`.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart();
    }

    /// Every key of every logical database: type, value, TTL.
    pub fn snapshot(&self) -> Snapshot {
        let mut conn = self.conn();
        let databases = match conn.cmd(&[b"CONFIG", b"GET", b"databases"]) {
            Resp::Array(Some(v)) => v
                .get(1)
                .map(Resp::text)
                .and_then(|s| s.parse::<u32>().ok())
                .expect("CONFIG GET databases"),
            other => panic!("CONFIG GET databases: {other:?}"),
        };
        let mut keys = BTreeMap::new();
        for db in 0..databases {
            conn.cmd(&[b"SELECT", db.to_string().as_bytes()]);
            let names = conn.cmd(&[b"KEYS", b"*"]).bulks();
            for key in names {
                let k = key.as_slice();
                let kind = conn.cmd(&[b"TYPE", k]).text();
                let value = match kind.as_str() {
                    "string" => Value::String(conn.cmd(&[b"GET", k]).bulk()),
                    "list" => Value::List(conn.cmd(&[b"LRANGE", k, b"0", b"-1"]).bulks()),
                    "set" => Value::Set(conn.cmd(&[b"SMEMBERS", k]).bulks().into_iter().collect()),
                    "zset" => {
                        let flat = conn
                            .cmd(&[b"ZRANGE", k, b"0", b"-1", b"WITHSCORES"])
                            .bulks();
                        Value::ZSet(
                            flat.chunks(2)
                                .map(|p| (p[0].clone(), String::from_utf8_lossy(&p[1]).into()))
                                .collect(),
                        )
                    }
                    "hash" => {
                        let flat = conn.cmd(&[b"HGETALL", k]).bulks();
                        Value::Hash(
                            flat.chunks(2)
                                .map(|p| (p[0].clone(), p[1].clone()))
                                .collect(),
                        )
                    }
                    "stream" => {
                        let entries = conn.cmd(&[b"XRANGE", k, b"-", b"+"]);
                        let groups = match conn.cmd(&[b"XINFO", b"GROUPS", k]) {
                            Resp::Array(Some(gs)) => gs
                                .iter()
                                .map(|g| {
                                    let fields = g.fields();
                                    (
                                        fields["name"].text(),
                                        fields["last-delivered-id"].text(),
                                        fields["pending"].int(),
                                    )
                                })
                                .collect(),
                            other => panic!("XINFO GROUPS: {other:?}"),
                        };
                        Value::Stream { entries, groups }
                    }
                    other => panic!("unexpected type {other} of key {key:?}"),
                };
                let pttl = match conn.cmd(&[b"PTTL", k]) {
                    Resp::Int(ms) if ms >= 0 => Some(ms),
                    Resp::Int(-1) => None,
                    other => panic!("PTTL of {key:?}: {other:?}"),
                };
                keys.insert((db, key), Entry { value, pttl });
            }
        }
        Snapshot { keys }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A key's content as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Vec<u8>),
    List(Vec<Vec<u8>>),
    Set(BTreeSet<Vec<u8>>),
    /// Members in score order, scores as Redis prints them.
    ZSet(Vec<(Vec<u8>, String)>),
    Hash(BTreeMap<Vec<u8>, Vec<u8>>),
    /// XRANGE - + and each group's (name, last-delivered-id, pending count).
    Stream {
        entries: Resp,
        groups: Vec<(String, String, i64)>,
    },
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "string",
            Value::List(_) => "list",
            Value::Set(_) => "set",
            Value::ZSet(_) => "zset",
            Value::Hash(_) => "hash",
            Value::Stream { .. } => "stream",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub value: Value,
    /// Milliseconds left, `None` for a key without expiry.
    pub pttl: Option<i64>,
}

/// Every key of a server: (database, key) → content.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub keys: BTreeMap<(u32, Vec<u8>), Entry>,
}

impl Snapshot {
    /// Databases holding keys, as "db0", "db3".
    pub fn databases(&self) -> Vec<String> {
        let set: BTreeSet<u32> = self.keys.keys().map(|(db, _)| *db).collect();
        set.into_iter().map(|d| format!("db{d}")).collect()
    }

    /// Panics unless `restored` has exactly these keys with the same types and values, and
    /// a TTL exactly where the original had one: still running (> 0) and not longer than
    /// the original's (the RDB stores the expiry time, so it can only have shrunk).
    pub fn assert_restored_in(&self, restored: &Snapshot) {
        let ours: Vec<&(u32, Vec<u8>)> = self.keys.keys().collect();
        let theirs: Vec<&(u32, Vec<u8>)> = restored.keys.keys().collect();
        assert_eq!(ours, theirs, "the restored server has other keys");
        for (k, want) in &self.keys {
            let got = &restored.keys[k];
            assert_eq!(
                got.value.kind(),
                want.value.kind(),
                "type of key {k:?} changed"
            );
            assert!(got.value == want.value, "value of key {k:?} changed");
            match (want.pttl, got.pttl) {
                (None, None) => {}
                (Some(w), Some(g)) => assert!(
                    g > 0 && g <= w,
                    "TTL of key {k:?}: {g} ms after restore, {w} ms before"
                ),
                (w, g) => panic!("TTL of key {k:?}: {g:?} after restore, {w:?} before"),
            }
        }
    }
}

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    pub fn text(&self) -> String {
        match self {
            Resp::Simple(s) => s.clone(),
            Resp::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            Resp::Int(i) => i.to_string(),
            other => panic!("not text: {other:?}"),
        }
    }

    pub fn int(&self) -> i64 {
        match self {
            Resp::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    pub fn bulk(&self) -> Vec<u8> {
        match self {
            Resp::Bulk(Some(b)) => b.clone(),
            other => panic!("not a bulk string: {other:?}"),
        }
    }

    /// An array of bulk strings.
    pub fn bulks(&self) -> Vec<Vec<u8>> {
        match self {
            Resp::Array(Some(v)) => v.iter().map(Resp::bulk).collect(),
            other => panic!("not an array: {other:?}"),
        }
    }

    /// A flat [name, value, name, value, …] array as a map.
    pub fn fields(&self) -> BTreeMap<String, Resp> {
        match self {
            Resp::Array(Some(v)) => v.chunks(2).map(|p| (p[0].text(), p[1].clone())).collect(),
            other => panic!("not an array: {other:?}"),
        }
    }
}

/// A plain RESP2 connection: commands as arrays of bulk strings, so any bytes go through.
pub struct RedisConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl RedisConn {
    fn new(stream: TcpStream) -> RedisConn {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("read timeout");
        let writer = stream.try_clone().expect("clone stream");
        RedisConn {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// Send a command; panics on an error reply or a broken connection.
    pub fn cmd(&mut self, args: &[&[u8]]) -> Resp {
        match self.try_cmd(args) {
            Ok(Resp::Error(e)) => panic!(
                "redis {:?}: {e}",
                String::from_utf8_lossy(args.first().copied().unwrap_or_default())
            ),
            Ok(r) => r,
            Err(e) => panic!("redis connection: {e}"),
        }
    }

    pub fn try_cmd(&mut self, args: &[&[u8]]) -> std::io::Result<Resp> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&req)?;
        self.read_reply()
    }

    fn read_line(&mut self) -> std::io::Result<String> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\r\n") {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        line.truncate(line.len() - 2);
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    fn read_reply(&mut self) -> std::io::Result<Resp> {
        let line = self.read_line()?;
        let Some(kind) = line.get(..1) else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "empty reply line",
            ));
        };
        let rest = &line[1..];
        let number = || {
            rest.parse::<i64>().map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{line}: {e}"))
            })
        };
        Ok(match kind {
            "+" => Resp::Simple(rest.to_string()),
            "-" => Resp::Error(rest.to_string()),
            ":" => Resp::Int(number()?),
            "$" => match number()? {
                n if n < 0 => Resp::Bulk(None),
                n => {
                    let mut buf = vec![0u8; n as usize + 2];
                    self.reader.read_exact(&mut buf)?;
                    buf.truncate(n as usize);
                    Resp::Bulk(Some(buf))
                }
            },
            "*" => match number()? {
                n if n < 0 => Resp::Array(None),
                n => {
                    let mut items = Vec::with_capacity(n as usize);
                    for _ in 0..n {
                        items.push(self.read_reply()?);
                    }
                    Resp::Array(Some(items))
                }
            },
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("unexpected reply line {line:?}"),
                ));
            }
        })
    }
}
