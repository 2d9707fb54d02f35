//! Point-in-time recovery end to end, on a real PostgreSQL and a real S3 server (moto): the
//! daemon streams WAL while a job takes a base backup with `pg_basebackup`; rows are
//! inserted one a second; `stowage restore --time` between two inserts gives exactly the
//! rows before it, and `--latest` after the daemon was killed with SIGKILL loses at most
//! `wal_flush` of committed writes. The recovering server fetches WAL through `stowage
//! wal-fetch` (its `restore_command`), as a user's would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pitr::{
    Recovered, chown_postgres, create_ticks, empty_data_dir, first_wal_file, insert_ticks, midway,
    open_job_to_postgres, parse_utc, physical_source, public_stowage, recovery_scratch,
    rfc3339_micros, stowage_public,
};
use common::{Job, PgServer, S3Server};

const BUCKET: &str = "pitr";
const FLUSH_SECS: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_to_a_second_between_two_inserts_and_to_the_latest_after_sigkill() {
    let pg = PgServer::start();
    create_ticks(&pg, "");
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;

    let job = Job::new("pitr")
        .log()
        .s3("s3", &s3, BUCKET, "")
        .local("local", None)
        .source(&physical_source(&pg, FLUSH_SECS, ""))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();

    let ticks = insert_ticks(&pg, 1..=10, |_| None);
    // The last insert reaches the destination within one wal_flush (and a scan).
    std::thread::sleep(Duration::from_secs(FLUSH_SECS * 2 + 2));
    daemon.signal("KILL");
    let _ = daemon.wait(Duration::from_secs(10));

    // Everything the recovering server runs must be readable by `postgres`.
    let public = tempfile::tempdir().expect("tempdir");
    let bin = public_stowage(public.path());
    open_job_to_postgres(&job, &["stowage.toml", "s3_secret"]);

    // Between the 5th and the 6th insert: exactly five rows.
    let target = rfc3339_micros(midway(&ticks[4].1, &ticks[5].1));
    // The recovered servers' sockets and logs are in `run`.
    let (scratch, run) = recovery_scratch();
    let data = empty_data_dir(scratch.path(), "data");
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            "pitr",
            "--time",
            &target,
            "--to-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(0), "restore --time {target}:\n{out}");
    // The daemon's catch-up may have taken a base backup too: either precedes the target.
    assert!(
        out.contains("restored pitr backup "),
        "the base backup is named:\n{out}"
    );
    let recovered = Recovered::start(pg.bin_dir(), &data, &run);
    assert_eq!(
        recovered.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2,3,4,5",
        "rows up to {target}:\n{}",
        recovered.log()
    );
    drop(recovered);

    // --latest: every committed insert (the last one more than wal_flush before the kill).
    let latest = empty_data_dir(scratch.path(), "latest");
    let (code, out) = restore_latest(&bin, &job, &latest);
    assert_eq!(code, Some(0), "restore --latest:\n{out}");
    let recovered = Recovered::start(pg.bin_dir(), &latest, &run);
    assert_eq!(
        recovered.sql("select count(*) from ticks"),
        "10",
        "every committed row:\n{}",
        recovered.log()
    );

    drop(recovered);

    // --copy-wal: the WAL fetched into the data directory, for a server without stowage
    // (here: the restore runs as root with the harness's binary, which postgres cannot run).
    let target = rfc3339_micros(midway(&ticks[7].1, &ticks[8].1));
    let copied = empty_data_dir(scratch.path(), "copied");
    let (code, out) = job.stowage(&[
        "restore",
        "pitr",
        "--time",
        &target,
        "--copy-wal",
        "--to-dir",
        copied.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore --copy-wal:\n{out}");
    assert!(out.contains("WAL file(s)"), "{out}");
    let auto = std::fs::read_to_string(copied.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("stowage_wal/"), "{auto}");
    let recovered = Recovered::start(pg.bin_dir(), &copied, &run);
    assert_eq!(
        recovered.sql("select max(id) from ticks"),
        "8",
        "rows up to {target} from copied WAL:\n{}",
        recovered.log()
    );
    drop(recovered);

    // The README's recipe by hand, from the local destination's files: no stowage at all.
    let target = midway(&ticks[1].1, &ticks[2].1);
    let by_hand = scratch.path().join("by-hand");
    by_hand_recovery(&job, target, &by_hand, &run);
    let recovered = Recovered::start(pg.bin_dir(), &by_hand, &run);
    assert_eq!(
        recovered.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2",
        "rows up to {target} recovered by hand:\n{}",
        recovered.log()
    );
    drop(recovered);

    // A non-empty directory is refused without --clean, and nothing in it is touched.
    let (code, out) = restore_latest(&bin, &job, &latest);
    assert_ne!(
        code,
        Some(0),
        "a non-empty data directory must be refused:\n{out}"
    );
    assert!(out.contains("--clean"), "the refusal says how:\n{out}");
}

/// `stowage restore pitr --latest --to-dir DIR` with the public binary.
fn restore_latest(bin: &Path, job: &Job, dir: &Path) -> (Option<i32>, String) {
    stowage_public(
        bin,
        &job.config,
        &[
            "restore",
            "pitr",
            "--latest",
            "--to-dir",
            dir.to_str().expect("utf-8"),
        ],
    )
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// README "Point-in-time recovery", "By hand, without stowage", step by step, with shell
/// tools on the local destination's files.
fn by_hand_recovery(job: &Job, target: chrono::DateTime<chrono::Utc>, data: &Path, run: &Path) {
    let root = job.path("local").join("pitr");
    // 1. The newest base backup that ended before the target.
    let mut chosen = None;
    for id in job.ids("local") {
        let m = job.manifest("local", &id);
        let wal = m["sources"][0]["wal"].clone();
        let stop = parse_utc(wal["stop_time"].as_str().expect("stop_time"));
        if stop <= target {
            chosen = Some((id, wal));
            break;
        }
    }
    let (id, wal) = chosen.expect("a base backup before the target");
    // 2. Unpack it.
    std::fs::create_dir(data).expect("mkdir");
    sh(&format!(
        "zstd -dc '{}' | tar -x -C '{}'",
        root.join(&id).join("db.tar.zst").display(),
        data.display()
    ));
    chown_postgres(data);
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // 3. The WAL from the base backup's first file on, each checked against its record.
    let first = first_wal_file(&wal);
    let wal_dir = run.join("by-hand-wal");
    std::fs::create_dir(&wal_dir).expect("mkdir");
    let shipped = root.join("wal").join("db");
    let mut copied = 0;
    for entry in std::fs::read_dir(&shipped).expect("wal dir") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(name) = file.strip_suffix(".zst") else {
            continue;
        };
        if !(name.ends_with(".history") || name >= first.as_str()) {
            continue;
        }
        let out = wal_dir.join(name);
        sh(&format!(
            "zstd -q -d -c '{}' > '{}'",
            path.display(),
            out.display()
        ));
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(shipped.join("index").join(format!("{name}.json"))).expect("record"),
        )
        .expect("json");
        let sum = Command::new("sha256sum")
            .arg(&out)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            sum.split_whitespace().next(),
            record["raw_sha256"].as_str(),
            "{name}"
        );
        copied += 1;
    }
    assert!(copied > 0, "no WAL from {first} in {}", shipped.display());
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("partial.json")).expect("partial.json"))
            .expect("json");
    let partial_name = pointer["name"].as_str().expect("name");
    if !wal_dir.join(partial_name).exists() {
        let key = pointer["key"].as_str().expect("key");
        sh(&format!(
            "zstd -q -d -c '{}' > '{}'",
            job.path("local").join(key).display(),
            wal_dir.join(partial_name).display()
        ));
    }
    chown_postgres(&wal_dir);
    // 4. Recovery settings.
    std::fs::write(data.join("recovery.signal"), "").expect("recovery.signal");
    let mut auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("auto.conf");
    auto.push_str(&format!(
        "restore_command = 'cp {}/%f %p'\nrecovery_target_time = '{}'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n",
        wal_dir.display(),
        target.format("%Y-%m-%d %H:%M:%S%.6f+00")
    ));
    std::fs::write(data.join("postgresql.auto.conf"), auto).expect("auto.conf");
    chown_postgres(data);
}
