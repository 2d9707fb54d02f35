//! Point-in-time recovery harness shared by the `pitr*` tests: a PostgreSQL started on a
//! restored data directory (`Recovered`), the stowage binary where the `postgres` user can
//! run it, the `ticks` table rows are timed by, and the WAL file names a base backup starts
//! from. PostgreSQL refuses to run as root, so whatever a recovering server reads or runs
//! is handed to `postgres` (tests run as root in temp dirs of mode 0700).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::job::{Job, toml_str};
use super::run::{run_with_timeout, stowage_bin, text};
use super::servers::pg::PgServer;
use super::tools::{free_port, is_root};

/// A directory the `postgres` user can enter.
pub fn open_to_postgres(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

pub fn chown_postgres(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown: {out:?}");
}

/// An empty data directory for a restore, in `parent`, owned by `postgres`.
pub fn empty_data_dir(parent: &Path, name: &str) -> PathBuf {
    let data = parent.join(name);
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&data);
    data
}

/// A scratch directory `postgres` can enter, and in it `run/`, owned by `postgres`: the
/// recovered servers' sockets and logs.
pub fn recovery_scratch() -> (tempfile::TempDir, PathBuf) {
    let scratch = tempfile::tempdir().expect("tempdir");
    open_to_postgres(scratch.path());
    let run = scratch.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chown_postgres(&run);
    (scratch, run)
}

/// The job's directory open to `postgres` and `files` in it readable: the recovering
/// server's restore command reads the config (and what it names) as that user.
pub fn open_job_to_postgres(job: &Job, files: &[&str]) {
    open_to_postgres(job.dir.path());
    for f in files {
        std::fs::set_permissions(job.path(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }
}

/// The stowage binary where the `postgres` user can run it, in `dir` (opened to it): the
/// restore command written into a data directory is this binary's path.
pub fn public_stowage(dir: &Path) -> PathBuf {
    open_to_postgres(dir);
    let to = dir.join("stowage");
    std::fs::copy(stowage_bin(), &to).expect("copy stowage");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

/// `stowage --config CONFIG ARGS` with the public binary (same environment rules as the
/// test harness).
pub fn stowage_public(bin: &Path, config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    let out = run_with_timeout(&mut cmd, Duration::from_secs(300));
    (out.status.code(), text(&out))
}

/// A physical source `db` of `pg` streaming from slot `stowage`, then `extra` (TOML lines).
pub fn physical_source(pg: &PgServer, flush_secs: u64, extra: &str) -> String {
    format!(
        "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"{flush_secs}s\"\n{extra}",
        toml_str(pg.url("postgres"))
    )
}

/// Database `app` and its table `ticks` (id, at: when the row was committed), with
/// `extra_columns` (", name type …") after them.
pub fn create_ticks(pg: &PgServer, extra_columns: &str) {
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "create table ticks (id int primary key, at timestamptz not null default clock_timestamp(){extra_columns})"
        ),
    );
}

/// Insert row `id` into `ticks` (with `note`, for a table that has one); when it was
/// committed (UTC, RFC 3339).
pub fn insert_tick(pg: &PgServer, id: u32, note: Option<&str>) -> String {
    let (columns, values) = match note {
        Some(note) => ("id, note", format!("{id}, '{note}'")),
        None => ("id", id.to_string()),
    };
    pg.psql(
        "app",
        &format!(
            "insert into ticks ({columns}) values ({values}) returning to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ),
    )
    .lines()
    .next()
    .unwrap_or_default()
    .trim()
    .to_string()
}

/// Rows of `ticks` as (id, inserted at), inserted one at a time about a second apart, each
/// with `note(id)`.
pub fn insert_ticks(
    pg: &PgServer,
    ids: std::ops::RangeInclusive<u32>,
    note: impl Fn(u32) -> Option<String>,
) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for id in ids {
        out.push((id, insert_tick(pg, id, note(id).as_deref())));
        std::thread::sleep(Duration::from_millis(1000));
    }
    out
}

pub fn parse_utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// The instant halfway between two RFC 3339 times.
pub fn midway(a: &str, b: &str) -> chrono::DateTime<chrono::Utc> {
    let (a, b) = (parse_utc(a), parse_utc(b));
    a + (b - a) / 2
}

/// `t` as `restore --time` takes it, to the microsecond.
pub fn rfc3339_micros(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The name of the first WAL file a base backup needs, from its manifest's `wal` record
/// (`timeline`, `start_lsn`): recovery cannot do without it.
pub fn first_wal_file(wal: &serde_json::Value) -> String {
    let (hi, lo) = wal["start_lsn"]
        .as_str()
        .and_then(|l| l.split_once('/'))
        .expect("start_lsn");
    format!(
        "{:08X}{:08X}{:08X}",
        wal["timeline"].as_u64().expect("timeline"),
        u64::from_str_radix(hi, 16).expect("hex"),
        u64::from_str_radix(lo, 16).expect("hex") >> 24
    )
}

/// A PostgreSQL server on a restored data directory, stopped on drop.
pub struct Recovered {
    pg_bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
}

impl Recovered {
    fn new(pg_bin: &Path, data: &Path, socket: &Path) -> Recovered {
        Recovered {
            pg_bin: pg_bin.to_path_buf(),
            data: data.to_path_buf(),
            socket: socket.to_path_buf(),
            port: free_port(),
        }
    }

    fn pg(&self, tool: &str) -> Command {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.pg_bin.join(tool));
            c
        } else {
            Command::new(self.pg_bin.join(tool))
        };
        c.current_dir("/");
        c
    }

    /// `pg_ctl start -w`: whether the server came up (recovery may abort it) is in the status.
    fn try_start(&self) -> Output {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.socket.display()
        );
        self.pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .args(["-w", "-t", "120", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl")
    }

    /// Starts it; PostgreSQL replays WAL through the restore command, then promotes.
    pub fn start(pg_bin: &Path, data: &Path, socket: &Path) -> Recovered {
        let r = Recovered::new(pg_bin, data, socket);
        let out = r.try_start();
        assert!(
            out.status.success(),
            "the restored data directory does not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            r.log()
        );
        // Recovery ends with a promotion; until then the server answers read-only.
        let deadline = Instant::now() + Duration::from_secs(120);
        while r.sql("select pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "still recovering after 120 s:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        r
    }

    /// Starts it where recovery must fail: the server's log once it gave up.
    pub fn start_fails(pg_bin: &Path, data: &Path, socket: &Path) -> String {
        let r = Recovered::new(pg_bin, data, socket);
        let started = r.try_start().status.success();
        let log = r.log();
        assert!(
            !started,
            "recovery must stop, yet the server opened:\n{log}"
        );
        log
    }

    /// `psql -c QUERY` on database `app`: the unaligned, trimmed result.
    pub fn sql(&self, query: &str) -> String {
        let out = self
            .pg("psql")
            .args(["-X", "-A", "-t", "-h"])
            .arg(&self.socket)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-d", "app"])
            .args(["-c", query])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log_path(&self) -> PathBuf {
        let name = self.data.file_name().unwrap_or_default().to_string_lossy();
        self.socket.join(format!("{name}.log"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Recovered {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}
