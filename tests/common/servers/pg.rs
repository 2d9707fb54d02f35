//! A throw-away PostgreSQL cluster (`PgServer`), a psql session kept open
//! (`PgServer::session`), the sample database (`seed_sample_db`) and SQL quoting.
//!
//! Override: `STOWAGE_PG_BIN` (PostgreSQL bin dir).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::common::tools::{
    SETUP_HINT, collect_into, describe, free_port, is_executable, is_root, read_tail,
};

/// Quote an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quote an SQL string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

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
