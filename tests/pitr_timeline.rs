//! The WAL receiver resumes where it must, on a real PostgreSQL 15:
//! - after a point-in-time restore of the very server it streams from (the daemon keeps
//!   running; the server comes back on timeline 2), streaming goes on on timeline 2 and a
//!   later `--latest` restore follows the switch: the timeline-1 rows before the target,
//!   the timeline-2 rows, none of the abandoned ones;
//! - after the daemon is stopped with SIGTERM while rows are inserted and started again,
//!   from its slot without a hole;
//! - when the slot holds more than `max_slot_wal`, or the server invalidated it
//!   (`max_slot_wal_keep_size`), the slot is dropped, the loss logged, and streaming goes
//!   on from a new slot (verify names the hole).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Job, PgServer, S3Server, free_port, toml_str};

const JOB: &str = "pitr";
const FLUSH_SECS: u64 = 1;

fn open_to_postgres(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn chown_postgres(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown: {out:?}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// An empty data directory the `postgres` user owns, in `parent`.
fn empty_data_dir(parent: &Path, name: &str) -> PathBuf {
    let data = parent.join(name);
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&data);
    data
}

/// A PostgreSQL server on a restored data directory, stopped on drop.
struct Recovered {
    pg_bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
}

impl Recovered {
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

    /// Starts it and waits for the end of recovery.
    fn start(pg_bin: &Path, data: &Path, socket: &Path) -> Recovered {
        let r = Recovered {
            pg_bin: pg_bin.to_path_buf(),
            data: data.to_path_buf(),
            socket: socket.to_path_buf(),
            port: free_port(),
        };
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            r.port,
            socket.display()
        );
        let out = r
            .pg("pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(r.log_path())
            .args(["-w", "-t", "120", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "the restored data directory does not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            r.log()
        );
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

    fn sql(&self, query: &str) -> String {
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

    fn log(&self) -> String {
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

/// The stowage binary where `postgres` can run it (the restore command names it).
fn public_stowage(dir: &Path) -> PathBuf {
    let to = dir.join("stowage");
    std::fs::copy(common::stowage_bin(), &to).expect("copy stowage");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

fn stowage_public(bin: &Path, config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    let out = common::run_with_timeout(&mut cmd, Duration::from_secs(300));
    (out.status.code(), common::text(&out))
}

/// Insert row `id` into `ticks`; when it was committed (UTC, RFC 3339).
fn insert(pg: &PgServer, id: u32) -> String {
    pg.psql(
        "app",
        &format!(
            "insert into ticks (id) values ({id}) returning to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ),
    )
    .lines()
    .next()
    .unwrap_or_default()
    .trim()
    .to_string()
}

fn parse_utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

fn physical_source(pg: &PgServer, extra: &str) -> String {
    format!(
        "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"{FLUSH_SECS}s\"\n{extra}",
        toml_str(pg.url("postgres"))
    )
}

fn new_ticks(pg: &PgServer) {
    pg.create_db("app");
    pg.psql(
        "app",
        "create table ticks (id int primary key, at timestamptz not null default clock_timestamp())",
    );
}

/// The partial segment's pointer on the local destination: (name, shipped at).
fn local_partial(job: &Job) -> Option<(String, chrono::DateTime<chrono::Utc>)> {
    let path = job.path("local").join(JOB).join("wal/db/partial.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    Some((
        v["name"].as_str()?.to_string(),
        parse_utc(v["shipped_at"].as_str()?),
    ))
}

/// Wait until the local destination's partial segment is on `timeline` (8 hex digits) and
/// was shipped after `after`.
fn wait_shipped(
    job: &Job,
    daemon: &common::Running,
    timeline: &str,
    after: chrono::DateTime<chrono::Utc>,
) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some((name, at)) = local_partial(job)
            && name.starts_with(timeline)
            && at > after + chrono::TimeDelta::seconds(1)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no partial segment on timeline {timeline} shipped after {after} within 180 s ({:?}):\n{}",
            local_partial(job),
            daemon.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn wait_until_promoted(pg: &PgServer) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while pg.psql("postgres", "select pg_is_in_recovery()") != "f" {
        assert!(
            Instant::now() < deadline,
            "still recovering after 120 s:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_the_streamed_server_goes_on_on_the_new_timeline() {
    let mut pg = PgServer::start();
    new_ticks(&pg);
    let s3 = S3Server::moto();
    s3.create_bucket(JOB).await;
    let job = Job::new(JOB)
        .log()
        .job("catch_up = false")
        .s3("s3", &s3, JOB, "")
        .local("local", None)
        .source(&physical_source(&pg, ""))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();

    let mut at = Vec::new();
    for id in 1..=6 {
        at.push(insert(&pg, id));
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_shipped(&job, &daemon, "00000001", parse_utc(&at[5]));

    // The server and the recovery run as postgres: the binary, config and secret readable.
    let public = tempfile::tempdir().expect("tempdir");
    open_to_postgres(public.path());
    let bin = public_stowage(public.path());
    open_to_postgres(job.dir.path());
    for f in ["stowage.toml", "s3_secret"] {
        std::fs::set_permissions(job.path(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }

    // The compose way: stop the database, restore over it, start it; the daemon runs on.
    let (t3, t4) = (parse_utc(&at[2]), parse_utc(&at[3]));
    let target = (t3 + (t4 - t3) / 2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    pg.stop();
    let data = pg.data_dir();
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            JOB,
            "--time",
            &target,
            "--clean",
            "--to-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(0), "restore --time {target} --clean:\n{out}");
    chown_postgres(&data);
    pg.start_again();
    wait_until_promoted(&pg);
    assert_eq!(
        pg.psql(
            "app",
            "select string_agg(id::text, ',' order by id) from ticks"
        ),
        "1,2,3",
        "rows up to {target}:\n{}",
        pg.log()
    );
    assert_eq!(
        pg.psql(
            "postgres",
            "select timeline_id from pg_control_checkpoint()"
        ),
        "2",
        "{}",
        pg.log()
    );

    // Timeline 2 is streamed and shipped.
    let mut last = String::new();
    for id in 101..=104 {
        last = insert(&pg, id);
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_shipped(&job, &daemon, "00000002", parse_utc(&last));
    let log = daemon.output_so_far();
    assert!(
        log.contains("which left timeline 1 at") && log.contains("set aside 00000001"),
        "the abandoned timeline-1 file is set aside, by name:\n{log}"
    );
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));
    assert!(
        std::fs::read_dir(job.path("local").join(JOB).join("wal/db/index"))
            .expect("index")
            .flatten()
            .any(|e| e.file_name() == "00000002.history.json"),
        "the history file of timeline 2 is shipped"
    );

    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "verify across the switch:\n{out}");
    assert!(
        out.contains("db: WAL whole from ") && !out.contains("gap"),
        "{out}"
    );

    let scratch = tempfile::tempdir().expect("tempdir");
    open_to_postgres(scratch.path());
    let run = scratch.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chown_postgres(&run);
    let latest = empty_data_dir(scratch.path(), "latest");
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            JOB,
            "--latest",
            "--to-dir",
            latest.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(0), "restore --latest:\n{out}");
    let recovered = Recovered::start(pg.bin_dir(), &latest, &run);
    assert_eq!(
        recovered.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2,3,101,102,103,104",
        "timeline 1 up to {target}, then timeline 2:\n{}",
        recovered.log()
    );
}

/// `stowage restore --latest --copy-wal` into a fresh directory, started: the ids in `ticks`.
fn restored_ids(job: &Job, pg: &PgServer) -> Vec<u32> {
    let scratch = tempfile::tempdir().expect("tempdir");
    open_to_postgres(scratch.path());
    let run = scratch.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chown_postgres(&run);
    let data = empty_data_dir(scratch.path(), "latest");
    let (code, out) = job.stowage(&[
        "restore",
        JOB,
        "--latest",
        "--copy-wal",
        "--to-dir",
        data.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore --latest --copy-wal:\n{out}");
    chown_postgres(&data);
    let recovered = Recovered::start(pg.bin_dir(), &data, &run);
    recovered
        .sql("select coalesce(string_agg(id::text, ',' order by id), '') from ticks")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("an id"))
        .collect()
}

#[test]
fn a_restarted_daemon_resumes_from_its_slot_without_a_hole() {
    let pg = PgServer::start();
    new_ticks(&pg);
    let job = Job::new(JOB)
        .log()
        .job("catch_up = false")
        .local("local", None)
        .source(&physical_source(&pg, ""))
        .write();
    let mut first = job.daemon();
    first.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();

    // Rows go in all along, with a segment switch now and then, while the daemon is
    // stopped and started again.
    let stop = AtomicBool::new(false);
    let (inserted, daemon) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut id = 0u32;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                insert(&pg, id);
                if id.is_multiple_of(15) {
                    pg.psql("app", "select pg_switch_wal()");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            id
        });
        std::thread::sleep(Duration::from_secs(4));
        first.signal("TERM");
        let out = first.wait(Duration::from_secs(30));
        assert!(
            out.status.success(),
            "the daemon stops cleanly on SIGTERM: {}",
            common::text(&out)
        );
        // The database writes on while no daemon runs: the slot keeps its WAL.
        std::thread::sleep(Duration::from_secs(4));
        let mut daemon = job.daemon();
        daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        (writer.join().expect("writer"), daemon)
    });
    let last = pg.psql(
        "app",
        "select to_char(max(at) at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') from ticks",
    );
    wait_shipped(&job, &daemon, "00000001", parse_utc(&last));
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "verify after a restart:\n{out}");
    assert!(
        out.contains("db: WAL whole from ") && !out.contains("gap"),
        "{out}"
    );
    let ids = restored_ids(&job, &pg);
    assert_eq!(
        ids,
        (1..=inserted).collect::<Vec<u32>>(),
        "every committed row, none missing"
    );
}

#[test]
fn a_slot_past_max_slot_wal_is_given_up_and_streaming_goes_on() {
    let pg = PgServer::start();
    new_ticks(&pg);
    let job = Job::new(JOB)
        .log()
        .job("catch_up = false")
        .local("local", None)
        .source(&physical_source(&pg, "max_slot_wal = \"32MiB\"\n"))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();
    let first = insert(&pg, 1);
    wait_shipped(&job, &daemon, "00000001", parse_utc(&first));
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));
    let restart_before = pg.psql(
        "postgres",
        "select restart_lsn from pg_replication_slots where slot_name = 'stowage'",
    );
    assert!(!restart_before.is_empty(), "the slot holds WAL");

    // While no daemon runs, the server writes more than the cap.
    for id in 2..=6 {
        insert(&pg, id);
        pg.psql("app", "select pg_switch_wal()");
    }
    let mut daemon = job.daemon();
    daemon.wait_for_output("lost to point-in-time recovery", Duration::from_secs(60));
    let log = daemon.output_so_far();
    assert!(
        log.contains("more than max_slot_wal (32.0 MiB)")
            && log.contains("dropped replication slot \"stowage\""),
        "{log}"
    );
    // Streaming goes on from a new slot.
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    let last = insert(&pg, 7);
    wait_shipped(&job, &daemon, "00000001", parse_utc(&last));
    let restart_after = pg.psql(
        "postgres",
        "select restart_lsn is not null or active from pg_replication_slots where slot_name = 'stowage'",
    );
    assert_eq!(restart_after, "t", "a new slot streams");
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "verify names the hole:\n{out}");
    assert!(out.contains("WAL has a gap: "), "{out}");
}

#[test]
fn a_slot_the_server_invalidated_is_given_up_and_streaming_goes_on() {
    let pg = PgServer::start();
    new_ticks(&pg);
    pg.psql(
        "postgres",
        "alter system set max_slot_wal_keep_size = '1MB'; select pg_reload_conf();",
    );
    let job = Job::new(JOB)
        .log()
        .job("catch_up = false")
        .local("local", None)
        .source(&physical_source(&pg, ""))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();
    let first = insert(&pg, 1);
    wait_shipped(&job, &daemon, "00000001", parse_utc(&first));
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    // Past the server's cap, a checkpoint invalidates the slot and removes its WAL.
    for id in 2..=6 {
        insert(&pg, id);
        pg.psql("app", "select pg_switch_wal()");
    }
    pg.psql("postgres", "checkpoint");
    assert_eq!(
        pg.psql(
            "postgres",
            "select wal_status from pg_replication_slots where slot_name = 'stowage'"
        ),
        "lost"
    );
    let mut daemon = job.daemon();
    daemon.wait_for_output("lost to point-in-time recovery", Duration::from_secs(90));
    let log = daemon.output_so_far();
    assert!(
        log.contains("the server no longer has the WAL the receiver resumes from")
            && log.contains("dropped replication slot \"stowage\""),
        "{log}"
    );
    let last = insert(&pg, 7);
    wait_shipped(&job, &daemon, "00000001", parse_utc(&last));
    assert_eq!(
        pg.psql(
            "postgres",
            "select wal_status <> 'lost' from pg_replication_slots where slot_name = 'stowage'"
        ),
        "t",
        "a new slot streams"
    );
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));
    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "verify names the hole:\n{out}");
    assert!(out.contains("WAL has a gap: "), "{out}");
}
