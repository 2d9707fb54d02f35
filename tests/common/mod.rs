//! Shared integration-test harness: real PostgreSQL and S3-compatible servers started per test on
//! random loopback ports, torn down on `Drop`.
//!
//! Run `tests/setup.sh` once on a fresh machine to install the binaries used here.
//!
//! Sync vs async: server constructors (`PgServer::start`, `S3Server::moto`, `S3Server::s3s_fs`), all
//! `PgServer` methods and `run_stowage` are synchronous (they block briefly on child processes and are
//! fine to call from inside a tokio test). The S3 helpers (`client`, `create_bucket`, `put`,
//! `list_keys`, `get`, `open_multipart_uploads`) are `async`: write S3 tests as `#[tokio::test]`.
//! No `block_on` helper is provided.
//!
//! Also here: `S3Server::requests()` (moto's own access log, for server-side request counts),
//! `spawn_stowage` + `Running` (a background stowage whose output can be read while it runs),
//! `PgServer::session` (a psql session kept open, e.g. to hold a lock), and file helpers (seeded
//! `Rng`, `write_random_files`, `read_tree`, `sha256_hex`, `zstd_decompress`, `wait_for`).
//!
//! Overrides: `STOWAGE_PG_BIN` (PostgreSQL bin dir), `STOWAGE_MOTO_SERVER`, `STOWAGE_S3S_FS`,
//! `STOWAGE_BIN` (stowage binary).
#![allow(dead_code)]

pub mod mariadb;
pub mod pg_job;
pub mod proxy;
pub mod redis;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::Digest;

/// Access key the S3 test servers are started with (moto accepts any credentials).
pub const TEST_ACCESS_KEY: &str = "stowagetestaccesskey";
/// Secret key the S3 test servers are started with (s3s-fs checks SigV4 against it).
pub const TEST_SECRET_KEY: &str = "stowage-test-secret-key-0123456789";
/// Region used by the test clients.
pub const TEST_REGION: &str = "us-east-1";

const SETUP_HINT: &str = "run tests/setup.sh to install the integration-test tools";

// ---------------------------------------------------------------------------------------------
// Generic helpers
// ---------------------------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound to port 0, then released). Never hands out the same port
/// twice within one test process, so parallel tests don't race each other.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if given.lock().unwrap_or_else(|e| e.into_inner()).insert(port) {
            return port;
        }
    }
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Find a tool: `$env_var`, else `name` on PATH, else the first executable fallback.
fn find_tool(env_var: &str, name: &str, fallbacks: &[PathBuf]) -> PathBuf {
    if let Some(v) = std::env::var_os(env_var) {
        let p = PathBuf::from(v);
        assert!(
            is_executable(&p),
            "{env_var}={} is not an executable file; {SETUP_HINT}",
            p.display()
        );
        return p;
    }
    // The locations tests/setup.sh installs to come first: they hold the pinned versions
    // (a moto_server elsewhere on PATH may be one with a known S3 incompatibility).
    if let Some(p) = fallbacks.iter().find(|p| is_executable(p)) {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    }) {
        return p;
    }
    let looked: Vec<String> = fallbacks.iter().map(|p| p.display().to_string()).collect();
    panic!(
        "{name} not found (looked at ${env_var}, PATH, {}); {SETUP_HINT}",
        looked.join(", ")
    );
}

/// Remove every inherited `AWS_*` variable from a command's environment.
fn strip_aws_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
}

/// A command's stdout then stderr, for assertions on what a user would see.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn describe(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn read_tail(path: &Path, max: usize) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let start = s.len().saturating_sub(max);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(s.len());
    s[start..].to_string()
}

/// Quote an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

// ---------------------------------------------------------------------------------------------
// stowage binary
// ---------------------------------------------------------------------------------------------

/// Path of the stowage binary: `$STOWAGE_BIN`, else cargo's `CARGO_BIN_EXE_stowage` (set when
/// compiled as an integration test of the stowage crate), else `<target>/<profile>/stowage` next
/// to the test executable's `deps/` dir.
pub fn stowage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STOWAGE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_stowage") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("stowage"))
        .expect("test executable has no target dir")
}

/// Timeout for `run_stowage*`.
pub const STOWAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `stowage --config <config_path> <args...>` and return its output (status not checked).
/// Inherited `AWS_*` variables are removed; `NO_COLOR=1` is set. Panics after 120 s.
pub fn run_stowage<I, S>(config_path: impl AsRef<Path>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_stowage_with_env(config_path, args, &[])
}

/// Like `run_stowage`, with extra environment variables (set after the `AWS_*` scrub).
pub fn run_stowage_with_env<I, S>(
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &str)],
) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = stowage_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(config_path.as_ref()).args(args);
    strip_aws_env(&mut cmd);
    own_state_dir(&mut cmd, config_path.as_ref());
    cmd.env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, STOWAGE_TIMEOUT)
}

/// Run a command with piped stdout/stderr; kill it and panic if it exceeds `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------------

/// Directory of the PostgreSQL binaries: `$STOWAGE_PG_BIN`, else `/usr/lib/postgresql/15/bin`.
pub fn pg_bin_dir() -> PathBuf {
    std::env::var_os("STOWAGE_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
}

/// A throw-away PostgreSQL cluster (trust auth, superuser `postgres`, TCP on 127.0.0.1:port,
/// fsync off, TimeZone UTC, C locale). Stopped (`-m immediate`) and deleted on drop.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
    running: bool,
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = pg_bin_dir();
        for tool in ["initdb", "pg_ctl", "psql"] {
            assert!(
                is_executable(&bin.join(tool)),
                "{} not found; {SETUP_HINT} (or set STOWAGE_PG_BIN)",
                bin.join(tool).display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("stowage-pg-")
            .tempdir()
            .expect("create temp dir for PostgreSQL");
        if is_root() {
            let out = Command::new("chown")
                .arg("-R")
                .arg("postgres:postgres")
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(out.status.success(), "chown failed: {}", describe(&out));
        }
        let mut server = PgServer {
            dir,
            bin,
            port: 0,
            running: false,
        };
        let out = server
            .pg_tool("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8"])
            .args(["--locale=C", "--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", describe(&out));

        let mut errors = Vec::new();
        for _ in 0..5 {
            let port = free_port();
            match server.try_start(port) {
                Ok(()) => {
                    server.port = port;
                    server.running = true;
                    return server;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!(
            "PostgreSQL failed to start 5 times:\n{}",
            errors.join("\n----\n")
        );
    }

    /// Command for a PostgreSQL server tool, run as `postgres` when we are root.
    fn pg_tool(&self, tool: &str) -> Command {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(tool));
            c
        } else {
            Command::new(self.bin.join(tool))
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    fn try_start(&self, port: u16) -> Result<(), String> {
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off -c TimeZone=UTC -c log_timezone=UTC",
            self.dir.path().display()
        );
        let out = self
            .pg_tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "30", "-o", &opts, "start"])
            .output()
            .map_err(|e| format!("spawn pg_ctl: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        // Make sure nothing half-started lingers before retrying on another port.
        let _ = self
            .pg_tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        Err(format!(
            "pg_ctl start on port {port} failed: {}\n--- log tail ---\n{}",
            describe(&out),
            read_tail(&self.log_path(), 2000)
        ))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/<db>`
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Directory holding the PostgreSQL binaries (pg_dump, pg_restore, psql, ...).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Path of one PostgreSQL client binary, e.g. `pg.bin("pg_dump")`.
    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bin.join(tool)
    }

    /// Unix socket directory (also the temp root of this cluster).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Server log contents (for debugging failed tests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Run SQL through `psql -X -A -t -q -v ON_ERROR_STOP=1` (fed on stdin, so several statements
    /// are fine). Panics with stderr on failure; returns trimmed stdout (`|` separates columns).
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .args(["-f", "-"])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        let input = sql.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
        let out = child.wait_with_output().expect("wait for psql");
        let _ = writer.join();
        if !out.status.success() {
            let shown: String = sql.chars().take(2000).collect();
            panic!(
                "psql on database {db:?} failed: {}\n--- sql ---\n{shown}",
                describe(&out)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn create_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("create database {}", quote_ident(name)),
        );
    }

    /// `drop database if exists ... with (force)`.
    pub fn drop_db(&self, name: &str) {
        self.psql(
            "postgres",
            &format!("drop database if exists {} with (force)", quote_ident(name)),
        );
    }

    pub fn db_exists(&self, name: &str) -> bool {
        self.psql(
            "postgres",
            &format!(
                "select count(*) from pg_database where datname = {}",
                quote_literal(name)
            ),
        ) == "1"
    }

    /// User tables as `schema.table`, sorted (pg_catalog / information_schema excluded).
    pub fn table_names(&self, db: &str) -> Vec<String> {
        self.psql(
            db,
            "select schemaname || '.' || tablename from pg_tables \
             where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        )
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// For every user table: `schema.table` -> `"<row count>:<md5 of rows as text, sorted>"`.
    /// Equal maps mean equal contents (independent of physical row order).
    pub fn table_checksums(&self, db: &str) -> BTreeMap<String, String> {
        let tables = self.psql(
            db,
            "select schemaname || '.' || tablename || E'\\t' || \
             quote_ident(schemaname) || '.' || quote_ident(tablename) from pg_tables \
             where schemaname not in ('pg_catalog', 'information_schema') order by 1",
        );
        let parts: Vec<String> = tables
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(key, quoted)| {
                format!(
                    "select {} || E'\\t' || count(*) || ':' || \
                     md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) from {quoted} t",
                    quote_literal(key)
                )
            })
            .collect();
        if parts.is_empty() {
            return BTreeMap::new();
        }
        self.psql(db, &parts.join("\nunion all\n"))
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Terminate all other sessions connected to `db`; returns how many were signalled.
    pub fn terminate_backends(&self, db: &str) -> usize {
        self.psql(
            "postgres",
            &format!(
                "select count(pg_terminate_backend(pid)) from pg_stat_activity \
                 where datname = {} and pid <> pg_backend_pid()",
                quote_literal(db)
            ),
        )
        .parse()
        .expect("count of terminated backends")
    }

    /// Stop the server (`pg_ctl stop -m fast`). Idempotent; the data dir stays until drop.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let out = self
            .pg_tool("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "fast", "-w", "stop"])
            .output()
            .expect("run pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            describe(&out)
        );
        self.running = false;
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Start a stopped server again on the same port (clients keep their URLs).
    pub fn start_again(&mut self) {
        if self.running {
            return;
        }
        if let Err(e) = self.try_start(self.port) {
            panic!("PostgreSQL did not start again: {e}");
        }
        self.running = true;
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let _ = self
                .pg_tool("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .args(["-m", "immediate", "-w", "stop"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            self.running = false;
        }
    }
}

/// Create (if missing) and fill `db` with a small realistic schema. `rows` = number of customers;
/// there are 2×rows orders and rows audit events. Data is pseudo-random but deterministic
/// (`setseed`) and compresses ~3.5× (zstd/gzip) like real data; ~0.8 KB of plain pg_dump output
/// per `rows`
/// (20 000 rows: 15.6 MB dump, seeded in ~2 s).
///
/// Objects: `public.customers` (serial id, text, unique email, numeric, jsonb, timestamptz),
/// `public.orders` (bigserial, FK → customers, default from sequence `public.invoice_no_seq`,
/// jsonb items, nullable text, index `orders_customer_idx`), `audit.events` (FK → orders, bytea
/// digest), view `public.customer_totals`. The database must not already contain these objects.
pub fn seed_sample_db(pg: &PgServer, db: &str, rows: usize) {
    if !pg.db_exists(db) {
        pg.create_db(db);
    }
    let n = rows.max(1);
    let sql = format!(
        r#"
select setseed(0.4242);
create function pg_temp.lorem(n int) returns text language sql volatile as $f$
  select string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
  from (select array['lorem','ipsum','dolor','sit','amet','backup','restore','archive','delivery',
                     'invoice','customer','order','shipping','payment','refund','warehouse','berlin',
                     'paris','tokyo','express','standard','priority','fragile','gift','returned',
                     'pending','the','a','and','of','to','with','for','please','call','before',
                     'monday','friday','box','parcel','blue','green','large','small'] as w) words,
       generate_series(1, greatest(n, 1))
$f$;

create schema if not exists audit;
create sequence public.invoice_no_seq start with 100000;

create table public.customers (
    id serial primary key,
    name text not null,
    email text not null unique,
    country char(2) not null,
    balance numeric(12,2) not null,
    profile jsonb not null,
    created_at timestamptz not null
);

create table public.orders (
    id bigserial primary key,
    customer_id integer not null references public.customers(id),
    invoice_no bigint not null default nextval('public.invoice_no_seq'),
    status text not null,
    total numeric(12,2) not null,
    items jsonb not null,
    note text,
    ordered_at timestamptz not null
);
create index orders_customer_idx on public.orders (customer_id, ordered_at);

create table audit.events (
    id bigserial primary key,
    order_id bigint not null references public.orders(id),
    kind text not null,
    payload jsonb not null,
    digest bytea not null,
    at timestamptz not null
);

create view public.customer_totals as
  select c.id, c.name, count(o.id) as orders, coalesce(sum(o.total), 0) as spent
  from public.customers c left join public.orders o on o.customer_id = c.id
  group by c.id, c.name;

insert into public.customers (name, email, country, balance, profile, created_at)
select initcap(pg_temp.lorem(2)),
       'user' || g || '.' || substr(md5(random()::text), 1, 6) || '@example.com',
       (array['DE','FR','US','GB','NL','SE','JP','BR'])[1 + floor(random() * 8)::int],
       round((random() * 10000 - 2000)::numeric, 2),
       jsonb_build_object(
         'tier', (array['free','pro','team','enterprise'])[1 + floor(random() * 4)::int],
         'newsletter', random() < 0.3,
         'tags', to_jsonb(string_to_array(pg_temp.lorem(1 + floor(random() * 3)::int), ' ')),
         'score', floor(random() * 100)::int),
       timestamptz '2023-01-01 00:00:00+00' + random() * interval '700 days'
from generate_series(1, {n}) g;

insert into public.orders (customer_id, status, total, items, note, ordered_at)
select 1 + floor(random() * {n})::int,
       (array['new','paid','shipped','delivered','cancelled'])[1 + floor(random() * 5)::int],
       round((random() * 500)::numeric, 2),
       (select jsonb_agg(jsonb_build_object(
                 'sku', 'SKU-' || lpad(floor(random() * 5000)::text, 5, '0'),
                 'qty', 1 + floor(random() * 5)::int,
                 'price', round((random() * 100)::numeric, 2)))
          from generate_series(1, 1 + g % 4)),
       case when random() < 0.4 then pg_temp.lorem(4 + floor(random() * 12)::int) end,
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'
from generate_series(1, {orders}) g;

insert into audit.events (order_id, kind, payload, digest, at)
select 1 + floor(random() * {orders})::bigint,
       (array['created','updated','paid','shipped','emailed'])[1 + floor(random() * 5)::int],
       jsonb_build_object(
         'ip', '10.' || floor(random() * 256) || '.' || floor(random() * 256) || '.' || g % 256,
         'agent', (array['web','ios','android','api'])[1 + floor(random() * 4)::int],
         'message', pg_temp.lorem(6 + g % 6)),
       decode(md5(g::text || random()::text), 'hex'),
       timestamptz '2024-01-01 00:00:00+00' + random() * interval '365 days'
from generate_series(1, {n}) g;

analyze;
"#,
        orders = 2 * n
    );
    pg.psql(db, &sql);
}

// ---------------------------------------------------------------------------------------------
// S3-compatible servers
// ---------------------------------------------------------------------------------------------

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

/// A local S3-compatible server (moto or s3s-fs) on a random loopback port, killed on drop.
/// Started with `TEST_ACCESS_KEY` / `TEST_SECRET_KEY`.
pub struct S3Server {
    kind: &'static str,
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
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

    /// s3s-fs (file-system backed, checks SigV4). No ListMultipartUploads, storage classes,
    /// versioning or RestoreObject. Data lives in `data_dir()`.
    pub fn s3s_fs() -> S3Server {
        Self::spawn("s3s-fs", s3s_fs_command)
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
            Duration::from_secs(20),
        )
        .unwrap_or_else(|e| panic!("s3s-fs did not come back: {e}"));
    }

    fn spawn(kind: &'static str, make: impl Fn(u16, &Path) -> Command) -> S3Server {
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
            match wait_ready(&mut child, kind, port, Duration::from_secs(20)) {
                Ok(()) => {
                    return S3Server {
                        kind,
                        port,
                        child,
                        dir,
                        log,
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

    /// `"moto"` or `"s3s-fs"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
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

    /// ListMultipartUploads works (moto only).
    pub fn supports_multipart_listing(&self) -> bool {
        self.kind == "moto"
    }

    /// Storage classes (GLACIER, DEEP_ARCHIVE, ...), RestoreObject and versioning (moto only).
    pub fn supports_storage_classes(&self) -> bool {
        self.kind == "moto"
    }

    /// s3s-fs object store directory (`<data_dir>/<bucket>/<key>`); None for moto.
    pub fn data_dir(&self) -> Option<PathBuf> {
        (self.kind == "s3s-fs").then(|| self.dir.path().join("data"))
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
                .await
                .unwrap_or_else(|e| {
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
    }
}

/// Poll until the server answers HTTP, failing early if it exits.
fn wait_ready(child: &mut Child, kind: &str, port: u16, timeout: Duration) -> Result<(), String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    let mut last = String::from("never connected");
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Err(format!("{kind} exited early with {status}"));
        }
        match http_probe(&addr) {
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

/// Connect and send a bare HTTP request; any HTTP response (even 403) means the server is up.
fn http_probe(addr: &SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(500))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 8 {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    if buf[..got].starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(format!(
            "unexpected reply {:?}",
            String::from_utf8_lossy(&buf[..got])
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// moto's request log (server-side request counts)
// ---------------------------------------------------------------------------------------------

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

/// Published backup ids per destination, newest first, from `stowage list` output.
pub fn parse_listing(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut result: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("destination ") {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            result.push((name, Vec::new()));
        } else if let Some(id) = line.split_whitespace().next()
            && id.len() == 20
            && id.ends_with('Z')
            && let Some(last) = result.last_mut()
        {
            last.1.push(id.to_string());
        }
    }
    result
}

// ---------------------------------------------------------------------------------------------
// A stowage process in the background
// ---------------------------------------------------------------------------------------------

/// A background stowage process whose stdout/stderr are collected as they come (so a test can
/// wait for a log line), killed if the test panics before waiting for it.
pub struct Running {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

fn collect_into(mut pipe: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(k) => buf
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&chunk[..k]),
            }
        }
    })
}

/// A daemon claims its state directory (one daemon each): tests running in parallel get
/// the config's directory rather than the shared `/tmp`, unless they name one.
pub fn own_state_dir(cmd: &mut Command, config_path: &Path) {
    // Only a test's own scratch directory: a config in tests/fixtures must not get state
    // files written beside it.
    if let Some(dir) = config_path
        .parent()
        .filter(|d| d.starts_with(std::env::temp_dir()))
    {
        cmd.env("STOWAGE_STATE_FILE", dir.join("stowage-state.json"));
    }
}

/// Start `stowage --config <config> <args...>` in the background (same environment as
/// `run_stowage`: no inherited `AWS_*`, `NO_COLOR=1`).
pub fn spawn_stowage<I, S>(config_path: impl AsRef<Path>, args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_stowage_with_env(config_path, args, &[])
}

/// Like `spawn_stowage`, with extra environment variables (e.g. the daemon's
/// `STOWAGE_PID_FILE` / `STOWAGE_STATE_FILE`, so parallel tests do not share them).
pub fn spawn_stowage_with_env<I, S>(
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &OsStr)],
) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_binary_with_env(stowage_bin(), config_path, args, envs)
}

/// Like `spawn_stowage_with_env`, running the stowage binary at `bin`.
pub fn spawn_binary_with_env<I, S>(
    bin: impl AsRef<OsStr>,
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &OsStr)],
) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config_path.as_ref()).args(args);
    strip_aws_env(&mut cmd);
    own_state_dir(&mut cmd, config_path.as_ref());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect_into(child.stdout.take().expect("stdout"), stdout.clone()),
        collect_into(child.stderr.take().expect("stderr"), stderr.clone()),
    ];
    Running {
        child: Some(child),
        stdout,
        stderr,
        readers,
        what,
    }
}

impl Running {
    /// The process id (while it has not been waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Send a signal (`"TERM"`, `"KILL"`, `"HUP"`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Wait until the output so far contains `needle`; panics after `timeout` or when the
    /// process exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output_so_far().contains(needle) {
            assert!(
                self.exited().is_none(),
                "{} exited before printing {needle:?}:\n{}",
                self.what,
                self.output_so_far()
            );
            assert!(
                Instant::now() < deadline,
                "{} printed no {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.output_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// stdout as far as written (the daemon logs there).
    pub fn stdout_so_far(&self) -> String {
        let out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// stdout then stderr, as far as written.
    pub fn output_so_far(&self) -> String {
        let out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    }

    /// Exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Wait for the process (at most `timeout`; then it is killed and this panics).
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() >= deadline {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "{} did not finish within {timeout:?}\n--- output ---\n{}",
                    self.what,
                    self.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| {
            std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()))
        };
        Output {
            status,
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// An open psql session (to hold a transaction or a lock across steps)
// ---------------------------------------------------------------------------------------------

/// A psql process kept open: statements run one `exec` at a time in the same session, so a
/// `begin; lock table ...` holds its lock until a later `exec("commit")`. Killed on drop (the
/// server then rolls back and releases the locks).
pub struct PsqlSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
    seq: u64,
    db: String,
}

impl PgServer {
    /// Open a psql session on `db` (`-X -A -t -q -v ON_ERROR_STOP=1`, statements fed on stdin).
    pub fn session(&self, db: &str) -> PsqlSession {
        let mut child = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-U", "postgres"])
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-d")
            .arg(db)
            .args(["-f", "-"])
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .env_remove("PGOPTIONS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn psql session");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("psql stdout");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        collect_into(child.stderr.take().expect("psql stderr"), stderr.clone());
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PsqlSession {
            child,
            stdin,
            lines,
            stderr,
            seq: 0,
            db: db.to_string(),
        }
    }
}

impl PsqlSession {
    /// Run `sql` (one or more statements) and wait until psql has finished it; returns its
    /// output lines joined by `\n`. Panics (with psql's stderr) if psql fails or takes > 60 s.
    pub fn exec(&mut self, sql: &str) -> String {
        self.seq += 1;
        let marker = format!("__stowage_session_done_{}__", self.seq);
        let input = format!("{sql}\n;\n\\echo {marker}\n");
        let stdin = self.stdin.as_mut().expect("session closed");
        stdin
            .write_all(input.as_bytes())
            .and_then(|_| stdin.flush())
            .unwrap_or_else(|e| panic!("write to psql on {}: {e}\n{}", self.db, self.stderr()));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == marker => return out.join("\n"),
                Ok(line) => out.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "psql session on {} did not finish {sql:?} within 60 s\n{}",
                    self.db,
                    self.stderr()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "psql session on {} exited during {sql:?}: {}",
                    self.db,
                    self.stderr()
                ),
            }
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// End the session (stdin closed, process waited for).
    pub fn close(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for PsqlSession {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Files: seeded randomness, trees, hashes, zstd
// ---------------------------------------------------------------------------------------------

/// Small deterministic PRNG (splitmix64): reproducible test data without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo < hi, "empty range {lo}..{hi}");
        lo + self.below((hi - lo) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `n` lowercase hex characters.
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = hex::encode(self.bytes(n.div_ceil(2)));
        s.truncate(n);
        s
    }

    /// `k` distinct elements of `items`, in a random order.
    pub fn pick<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        assert!(k <= items.len(), "cannot pick {k} of {}", items.len());
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..k {
            let j = i + self.below((idx.len() - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx[..k].iter().map(|&i| items[i].clone()).collect()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Write `data` at `root/rel` (parents created).
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Write one random file (size in `sizes`) per relative path; returns path -> content.
pub fn write_random_files(
    rng: &mut Rng,
    root: &Path,
    rels: impl IntoIterator<Item = String>,
    sizes: std::ops::Range<usize>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for rel in rels {
        let len = rng.range(sizes.start, sizes.end);
        let data = rng.bytes(len);
        write_file(root, &rel, &data);
        out.insert(rel, data);
    }
    out
}

/// Every regular file under `root`, recursively, as `/`-separated relative paths, sorted.
/// A missing `root` is empty.
pub fn list_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).expect("under root");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// Contents of every regular file under `root` (see `list_tree`).
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    list_tree(root)
        .into_iter()
        .map(|rel| {
            let data = std::fs::read(root.join(&rel))
                .unwrap_or_else(|e| panic!("read {}/{rel}: {e}", root.display()));
            (rel, data)
        })
        .collect()
}

/// Decompress a zstd frame with the `zstd` CLI (installed by tests/setup.sh).
pub fn zstd_decompress(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn zstd: {e}; {SETUP_HINT}"));
    let mut stdin = child.stdin.take().expect("zstd stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for zstd");
    let _ = writer.join();
    assert!(out.status.success(), "zstd -d failed: {}", describe(&out));
    out.stdout
}

/// Poll `cond` every 50 ms until it holds; panic naming `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A tiny HTTP server recording every request (method, path, body); answers 200.
pub struct Receiver {
    pub port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<(String, String, String)>>>,
}

impl Receiver {
    pub fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let mut reader = BufReader::new(conn);
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut len = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':')
                        && k.eq_ignore_ascii_case("content-length")
                    {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                log.lock().expect("lock").push((
                    method,
                    path,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        Receiver { port, seen }
    }

    pub fn take(&self) -> Vec<(String, String, String)> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

/// POST a JSON body; the status code and body of the answer.
pub fn http_post(port: u16, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("response");
    let (head, answer) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, answer.to_string())
}

pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let (code, _, body) = http_get_with(port, path, "");
    (code, body)
}

/// A GET with extra header lines (each ending in "\r\n"): (status, head, body).
pub fn http_get_with(port: u16, path: &str, headers: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )
    .expect("request");
    let mut raw = String::new();
    conn.read_to_string(&mut raw).expect("response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, head.to_string(), body.to_string())
}

impl PgServer {
    /// A login role that must give `password` over TCP (scram-sha-256), superuser so it can
    /// create databases; every other connection stays trusted.
    pub fn require_password(&self, role: &str, password: &str) {
        self.psql(
            "postgres",
            &format!(
                "create role {} login superuser password '{}'",
                quote_ident(role),
                password.replace('\'', "''")
            ),
        );
        let hba = self.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .expect("write pg_hba.conf");
        self.psql("postgres", "select pg_reload_conf()");
    }
}

/// Exit code and all output of `stowage --config CONFIG ARGS…`.
pub fn stowage_says(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run_stowage(config, args);
    (out.status.code(), text(&out))
}

/// `stowage run JOB`, which must succeed; the new backup's id (from its summary line).
pub fn backup_of(config: &Path, job: &str) -> String {
    let (code, out) = stowage_says(config, &["run", job]);
    assert_eq!(code, Some(0), "{out}");
    out.split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("backup id")
        .to_string()
}
