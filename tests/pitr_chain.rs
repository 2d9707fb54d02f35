//! The WAL chain behind point-in-time recovery, on a real PostgreSQL and a local
//! destination: with every segment shipped `stowage verify` passes and says the recoverable
//! window; with one segment lost from the destination (object and record), verify fails
//! naming it, and a `--latest` restore warns that recovery stops before it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Job, PgServer, toml_str};

const JOB: &str = "pitr";

/// The base backup's first WAL file, from its manifest (16 MiB segments).
fn first_wal_file(job: &Job, id: &str) -> String {
    let m = job.manifest("local", id);
    let wal = &m["sources"][0]["wal"];
    let tli = wal["timeline"].as_u64().expect("timeline");
    let lsn = wal["start_lsn"].as_str().expect("start_lsn");
    let (hi, lo) = lsn.split_once('/').expect("an LSN");
    let hi = u64::from_str_radix(hi, 16).expect("hex");
    let lo = u64::from_str_radix(lo, 16).expect("hex");
    format!("{tli:08X}{hi:08X}{:08X}", lo >> 24)
}

/// Segment names with a record on the local destination, sorted.
fn shipped_segments(index: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(index)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let n = n.strip_suffix(".json")?.to_string();
                    (n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit())).then_some(n)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The job of these tests: one local destination, a physical source streaming from slot
/// `stowage` and no catch-up run (the base backups are the test's own).
fn chain_job(pg: &PgServer) -> Job {
    Job::new(JOB)
        .log()
        .job("catch_up = false")
        .local("local", None)
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"1s\"\n",
            toml_str(pg.url("postgres"))
        ))
        .write()
}

/// Insert a row and switch WAL every 1.5 s until `count` segments that `wanted` picks are
/// in the WAL index `index`; fails after 120 s, with the daemon's output.
fn write_until_shipped(
    pg: &PgServer,
    daemon: &common::Running,
    index: &std::path::Path,
    wanted: impl Fn(&String) -> bool,
    count: usize,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut i = 0;
    loop {
        let shipped: Vec<String> = shipped_segments(index)
            .into_iter()
            .filter(|n| wanted(n))
            .collect();
        if shipped.len() >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {shipped:?} of the wanted segments shipped after 120 s (all: {:?}):\n{}",
            shipped_segments(index),
            daemon.output_so_far()
        );
        i += 1;
        pg.psql(
            "app",
            &format!("insert into t values ({i}); select pg_switch_wal();"),
        );
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// A base backup taken before the receiver ever ran (the daemon's first catch-up run and
/// its receiver start together; here the backup simply wins the race): the WAL from the
/// backup's first segment on is still received and shipped, so the chain is whole from it.
/// The slot the backup needs must hold that WAL before pg_basebackup starts; created only
/// by the receiver, without reserving WAL, it would start at the server's position then,
/// past the backup's start.
#[test]
fn a_backup_before_the_receiver_starts_is_covered_from_its_first_segment() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int)");
    let job = chain_job(&pg);
    let id = job.backup();
    let first = first_wal_file(&job, &id);
    // The database writes on before the daemon starts: the slot must hold that WAL too.
    pg.psql("app", "insert into t values (0); select pg_switch_wal();");

    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    let index = job.path("local").join(JOB).join("wal/db/index");
    // Segments after the backup's first are shipped whether or not the first is: wait for
    // a few of them, then look whether the first and all between came too.
    write_until_shipped(&pg, &daemon, &index, |n| *n > first, 3);
    daemon.signal("TERM");
    let output = daemon.wait(Duration::from_secs(30));
    let shipped = shipped_segments(&index);
    assert!(
        shipped.contains(&first),
        "the backup's first segment {first} was never shipped, only {shipped:?}:\n{}",
        common::text(&output)
    );

    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(
        code,
        Some(0),
        "verify from the backup's first segment:\n{out}"
    );
    assert!(
        out.contains(&format!("db: WAL whole from {first} to ")),
        "the chain is whole from the backup's first segment {first}:\n{out}"
    );
}

#[test]
fn a_lost_segment_fails_verify_and_is_named_by_restore() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int)");
    // One base backup, taken below: a catch-up run would race it.
    let job = chain_job(&pg);
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    let id = job.backup();
    let first = first_wal_file(&job, &id);

    // Several segments completed and shipped from the backup's first one on.
    let index = job.path("local").join(JOB).join("wal/db/index");
    write_until_shipped(&pg, &daemon, &index, |n| *n >= first, 4);
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    // Whole: verify passes and says how far back and forward recovery reaches.
    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "verify with the whole chain:\n{out}");
    assert!(
        out.contains(&format!("db: WAL whole from {first} to "))
            && out.contains("recoverable from "),
        "the recoverable window is said:\n{out}"
    );

    // One segment between the backup's first and the newest lost: object and record.
    let segments: Vec<String> = shipped_segments(&index)
        .into_iter()
        .filter(|n| *n > first)
        .collect();
    let lost = segments[segments.len() - 2].clone();
    let wal_dir = job.path("local").join(JOB).join("wal/db");
    let mut removed = 0;
    for e in std::fs::read_dir(&wal_dir).expect("wal dir").flatten() {
        if e.file_name().to_string_lossy().starts_with(&lost) {
            std::fs::remove_file(e.path()).expect("remove the segment");
            removed += 1;
        }
    }
    assert_eq!(removed, 1, "one object of {lost} in {}", wal_dir.display());
    std::fs::remove_file(index.join(format!("{lost}.json"))).expect("remove the record");

    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "verify with a gap:\n{out}");
    assert!(
        out.contains(&format!("WAL has a gap: {lost} missing (1 file)"))
            && out.contains("on local"),
        "the gap is named, with its destination:\n{out}"
    );

    // A restore still works, and says where recovery will stop.
    let scratch = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod");
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&data)
        .output()
        .expect("chown");
    assert!(chown.status.success(), "chown: {chown:?}");
    let (code, out) = job.stowage(&[
        "restore",
        JOB,
        "--latest",
        "--to-dir",
        data.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore --latest with a gap:\n{out}");
    assert!(
        out.contains(&format!("recovery will stop before {lost}")),
        "the restore names the gap:\n{out}"
    );
}
