//! A throw-away MariaDB server (Debian's mariadb-server 10.11) for tests: its own data
//! directory in a temp dir (`mariadb-install-db`), `mariadbd` on a random loopback port, root
//! without a password over TCP, killed and deleted on drop. Users with passwords are made
//! with [`MariaDbServer::create_user`] (for authentication failures).
//!
//! Overrides: `STOWAGE_MARIADB_BIN` (directory holding mariadbd, mariadb-install-db and the
//! mariadb client; default: PATH, then /usr/sbin and /usr/bin).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{describe, free_port, is_executable, read_tail, sha256_hex};

fn mariadb_tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("STOWAGE_MARIADB_BIN") {
        return PathBuf::from(dir).join(name);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| {
            panic!(
                "{name} not found (PATH, /usr/sbin, /usr/bin, $STOWAGE_MARIADB_BIN); \
                 apt-get install --no-install-recommends mariadb-server mariadb-client"
            )
        })
}

/// Small logs and buffers: a test server holds little data, and a dozen may run at once.
const SERVER_OPTS: &[&str] = &[
    "--innodb-log-file-size=16M",
    "--innodb-buffer-pool-size=64M",
    "--innodb-flush-log-at-trx-commit=0",
    "--skip-log-bin",
];

pub struct MariaDbServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl MariaDbServer {
    pub fn start() -> MariaDbServer {
        let dir = tempfile::Builder::new()
            .prefix("stowage-mariadb-")
            .tempdir()
            .expect("create temp dir for MariaDB");
        let data = dir.path().join("data");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).expect("create MariaDB tmpdir");
        let out = Command::new(mariadb_tool("mariadb-install-db"))
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            // Each its own: a starting server deletes the temporary tables it finds in its
            // tmpdir, which in the shared /tmp are another server's.
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(SERVER_OPTS)
            .stdin(Stdio::null())
            .output()
            .expect("run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            describe(&out)
        );
        let mut server = MariaDbServer {
            dir,
            port: 0,
            child: None,
        };
        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match server.try_start(port) {
                Ok(child) => {
                    server.port = port;
                    server.child = Some(child);
                    return server;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "MariaDB failed to start 5 times:\n{}",
            errors.join("\n----\n")
        );
    }

    fn try_start(&self, port: u16) -> Result<Child, String> {
        let log = std::fs::File::create(self.log_path()).map_err(|e| e.to_string())?;
        let mut child = Command::new(mariadb_tool("mariadbd"))
            .arg("--no-defaults")
            // mariadbd refuses to run as root unless told to.
            .arg("--user=root")
            .arg(format!("--datadir={}", self.data_dir().display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!(
                "--pid-file={}",
                self.dir.path().join("mariadbd.pid").display()
            ))
            .arg(format!(
                "--tmpdir={}",
                self.dir.path().join("tmp").display()
            ))
            .args(SERVER_OPTS)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn mariadbd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "mariadbd on port {port} exited ({status})\n--- log tail ---\n{}",
                    read_tail(&self.log_path(), 3000)
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                let probe = self
                    .client_on(port, "mysql")
                    .arg("-e")
                    .arg("select 1")
                    .output();
                if probe.is_ok_and(|o| o.status.success()) {
                    return Ok(child);
                }
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "mariadbd on port {port} not ready after 30 s\n--- log tail ---\n{}",
                    read_tail(&self.log_path(), 3000)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mariadb client as root over TCP, batch output without column names.
    fn client_on(&self, port: u16, db: &str) -> Command {
        let mut cmd = Command::new(mariadb_tool("mariadb"));
        cmd.arg("--no-defaults")
            .args(["--protocol=TCP", "--host=127.0.0.1", "--user=root"])
            .arg(format!("--port={port}"))
            .args([
                "--batch",
                "--skip-column-names",
                "--default-character-set=utf8mb4",
            ])
            .arg(db)
            .env_remove("MYSQL_PWD")
            .stdin(Stdio::null());
        cmd
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mysql://root@127.0.0.1:PORT/<db>` (root has no password).
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// `mysql://<user>@127.0.0.1:PORT/<db>`, without the password.
    pub fn url_as(&self, user: &str, db: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mariadbd.log")
    }

    /// Server log contents (for debugging failed tests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Run SQL as root (fed on stdin, so several statements are fine); the raw output.
    pub fn try_sql(&self, db: &str, sql: &str) -> Output {
        let mut child = self
            .client_on(self.port, db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mariadb");
        let mut stdin = child.stdin.take().expect("mariadb stdin");
        let input = sql.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for mariadb");
        let _ = writer.join();
        out
    }

    /// Run SQL as root; panics with stderr on failure; trimmed stdout (tabs between columns).
    pub fn sql(&self, db: &str, sql: &str) -> String {
        let out = self.try_sql(db, sql);
        if !out.status.success() {
            let shown: String = sql.chars().take(2000).collect();
            panic!(
                "mariadb on database {db:?} failed: {}\n--- sql ---\n{shown}",
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_db(&self, name: &str) {
        self.sql("mysql", &format!("create database {}", quote_name(name)));
    }

    pub fn db_exists(&self, name: &str) -> bool {
        self.sql(
            "mysql",
            &format!(
                "select count(*) from information_schema.schemata where schema_name = {}",
                quote_string(name)
            ),
        ) == "1"
    }

    /// A user that logs in from anywhere with `password` and may do everything.
    pub fn create_user(&self, user: &str, password: &str) {
        self.sql(
            "mysql",
            &format!(
                "create user {u}@'%' identified by {p}; grant all on *.* to {u}@'%';",
                u = quote_string(user),
                p = quote_string(password)
            ),
        );
    }

    /// Base tables of `db`, sorted.
    pub fn table_names(&self, db: &str) -> Vec<String> {
        self.names(db, "BASE TABLE")
    }

    /// Views of `db`, sorted.
    pub fn view_names(&self, db: &str) -> Vec<String> {
        self.names(db, "VIEW")
    }

    fn names(&self, db: &str, kind: &str) -> Vec<String> {
        self.sql(
            "mysql",
            &format!(
                "select hex(table_name) from information_schema.tables \
                 where table_schema = {} and table_type = {} order by table_name",
                quote_string(db),
                quote_string(kind)
            ),
        )
        .lines()
        .filter(|l| !l.is_empty())
        .map(|h| String::from_utf8(hex::decode(h).expect("hex name")).expect("utf8 name"))
        .collect()
    }

    /// For every base table: name -> "<row count>:<sha256 of all rows, ordered by every
    /// column>" (batch output: bytes as they are, only tab, newline, NUL and backslash
    /// escaped). Equal maps mean equal contents.
    pub fn table_checksums(&self, db: &str) -> BTreeMap<String, String> {
        let mut sums = BTreeMap::new();
        for table in self.table_names(db) {
            let columns: usize = self
                .sql(
                    "mysql",
                    &format!(
                        "select count(*) from information_schema.columns \
                         where table_schema = {} and table_name = {}",
                        quote_string(db),
                        quote_string(&table)
                    ),
                )
                .parse()
                .expect("column count");
            let order: Vec<String> = (1..=columns).map(|i| i.to_string()).collect();
            let out = self.try_sql(
                db,
                &format!(
                    "select * from {} order by {}",
                    quote_name(&table),
                    order.join(",")
                ),
            );
            assert!(
                out.status.success(),
                "checksum of {table}: {}",
                describe(&out)
            );
            let rows = out.stdout.iter().filter(|b| **b == b'\n').count();
            sums.insert(table, format!("{rows}:{}", sha256_hex(&out.stdout)));
        }
        sums
    }

    /// A client session kept open (e.g. to hold `LOCK TABLES`), as root on `db`.
    pub fn session(&self, db: &str) -> MariaDbSession {
        let mut child = self
            .client_on(self.port, db)
            // Flush after each statement, so `exec` sees its result at once.
            .arg("--unbuffered")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mariadb session");
        let stdin = child.stdin.take().expect("session stdin");
        let stdout = BufReader::new(child.stdout.take().expect("session stdout"));
        MariaDbSession {
            child,
            stdin,
            stdout,
        }
    }

    /// Kill the server at once (SIGKILL, as a crash would). The data dir stays until drop.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A mariadb client kept open; killed on drop (which ends its locks and transaction).
pub struct MariaDbSession {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl MariaDbSession {
    /// Run one statement and wait until it is done.
    pub fn exec(&mut self, sql: &str) {
        let marker = "stowage-session-done";
        writeln!(self.stdin, "{sql};\nselect '{marker}';").expect("write to session");
        self.stdin.flush().expect("flush session");
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read session");
            assert!(n > 0, "session ended while running {sql:?}");
            if line.trim() == marker {
                return;
            }
        }
    }
}

impl Drop for MariaDbSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Quote an identifier for MariaDB.
pub fn quote_name(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quote a string literal for MariaDB (default sql_mode: backslash escapes apply).
pub fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}
