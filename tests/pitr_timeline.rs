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

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::pitr::{
    Recovered, chown_postgres, create_ticks, empty_data_dir, insert_tick, midway,
    open_job_to_postgres, parse_utc, public_stowage, recovery_scratch, rfc3339_micros,
    stowage_public,
};
use common::{Job, PgServer, S3Server};

const JOB: &str = "pitr";
const FLUSH_SECS: u64 = 1;

/// Insert row `id` into `ticks`; when it was committed (UTC, RFC 3339).
fn insert(pg: &PgServer, id: u32) -> String {
    insert_tick(pg, id, None)
}

fn physical_source(pg: &PgServer, extra: &str) -> String {
    common::pitr::physical_source(pg, FLUSH_SECS, extra)
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

fn stop_daemon(daemon: common::Running) {
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));
}

/// A job streaming `pg` (`extra` in its source) to a local destination, its daemon
/// receiving WAL, and a base backup taken.
fn streaming_local_job(pg: &PgServer, extra: &str) -> (Job, common::Running) {
    let job = Job::new(JOB)
        .log()
        .job("catch_up = false")
        .local("local", None)
        .source(&physical_source(pg, extra))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();
    (job, daemon)
}

/// `streaming_local_job`, row 1 inserted and shipped, then the daemon stopped: the slot
/// holds WAL from here on.
fn first_row_shipped(pg: &PgServer, extra: &str) -> Job {
    let (job, daemon) = streaming_local_job(pg, extra);
    let first = insert(pg, 1);
    wait_shipped(&job, &daemon, "00000001", parse_utc(&first));
    stop_daemon(daemon);
    job
}

/// Rows 2..=6, each in a WAL segment of its own: more than either cap the slot tests set.
fn insert_past_the_cap(pg: &PgServer) {
    for id in 2..=6 {
        insert(pg, id);
        pg.psql("app", "select pg_switch_wal()");
    }
}

fn verify_whole(job: &Job, when: &str) {
    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "verify {when}:\n{out}");
    assert!(
        out.contains("db: WAL whole from ") && !out.contains("gap"),
        "{out}"
    );
}

fn verify_names_the_hole(job: &Job) {
    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "verify names the hole:\n{out}");
    assert!(out.contains("WAL has a gap: "), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_of_the_streamed_server_goes_on_on_the_new_timeline() {
    let mut pg = PgServer::start();
    create_ticks(&pg, "");
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
    let bin = public_stowage(public.path());
    open_job_to_postgres(&job, &["stowage.toml", "s3_secret"]);

    // The compose way: stop the database, restore over it, start it; the daemon runs on.
    let target = rfc3339_micros(midway(&at[2], &at[3]));
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
    stop_daemon(daemon);
    assert!(
        std::fs::read_dir(job.path("local").join(JOB).join("wal/db/index"))
            .expect("index")
            .flatten()
            .any(|e| e.file_name() == "00000002.history.json"),
        "the history file of timeline 2 is shipped"
    );

    verify_whole(&job, "across the switch");

    let (scratch, run) = recovery_scratch();
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
    let (scratch, run) = recovery_scratch();
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
    create_ticks(&pg, "");
    let (job, first) = streaming_local_job(&pg, "");

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
    stop_daemon(daemon);
    verify_whole(&job, "after a restart");
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
    create_ticks(&pg, "");
    let job = first_row_shipped(&pg, "max_slot_wal = \"32MiB\"\n");
    let restart_before = pg.psql(
        "postgres",
        "select restart_lsn from pg_replication_slots where slot_name = 'stowage'",
    );
    assert!(!restart_before.is_empty(), "the slot holds WAL");

    // While no daemon runs, the server writes more than the cap.
    insert_past_the_cap(&pg);
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
    stop_daemon(daemon);
    verify_names_the_hole(&job);
}

#[test]
fn a_slot_the_server_invalidated_is_given_up_and_streaming_goes_on() {
    let pg = PgServer::start();
    create_ticks(&pg, "");
    pg.psql(
        "postgres",
        "alter system set max_slot_wal_keep_size = '1MB'; select pg_reload_conf();",
    );
    let job = first_row_shipped(&pg, "");

    // Past the server's cap, a checkpoint invalidates the slot and removes its WAL.
    insert_past_the_cap(&pg);
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
    stop_daemon(daemon);
    verify_names_the_hole(&job);
}
