//! Restore drills of a physical PostgreSQL source, on a real PostgreSQL: the daemon streams
//! WAL to a local destination while a job takes a base backup; rows are inserted after it;
//! `stowage drill` restores the base backup into a scratch data directory, starts a
//! postgres of its own that fetches the WAL through `stowage wal-fetch`, and must reach the
//! newest shipped WAL, see every row, pass its check, name the point it reached and leave
//! nothing behind. A check that returns false and a hole in the shipped WAL fail visibly.
//!
//! PostgreSQL refuses to run as root, and the drill will not start it as another user: run
//! as root, the drill fails saying so, and the rest runs it as `postgres` (with the job's
//! files handed over to that user), as the daemon runs in its image as a user of its own.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::pitr::{
    chown_postgres, create_ticks, first_wal_file, open_to_postgres, public_stowage,
};
use common::{Job, PgServer, toml_str};

const FLUSH_SECS: u64 = 2;

fn is_root() -> bool {
    common::tools::is_root()
}

/// `stowage --config CONFIG drill pitr`, as `postgres` when the test runs as root.
fn drill(bin: &Path, job: &Job, config: &Path) -> (Option<i32>, String) {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.arg("--config")
        .arg(config)
        .args(["drill", "pitr"])
        .current_dir("/");
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in job.envs() {
        cmd.env(k, v);
    }
    cmd.env("NO_COLOR", "1");
    let out = common::run_with_timeout(&mut cmd, Duration::from_secs(300));
    (out.status.code(), common::text(&out))
}

fn hand_to_postgres(path: &Path) {
    if is_root() {
        chown_postgres(path);
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_physical_drill_recovers_to_the_newest_wal_and_fails_on_a_false_check_or_a_gap() {
    let pg = PgServer::start();
    create_ticks(&pg, "");
    let to = tempfile::tempdir().expect("tempdir");
    let drill_dir = to.path().to_str().expect("utf-8").to_string();
    let builder = Job::new("pitr")
        // One base backup, taken below: a catch-up backup of the daemon's, taken later,
        // would be the one drilled, and its WAL would not need the hole made below.
        .job("catch_up = false")
        .local("local", None)
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nbin_dir = {}\nwal_flush = \"{FLUSH_SECS}s\"\n",
            toml_str(pg.url("app")),
            toml_str(pg.bin_dir().display())
        ))
        .drill(&format!(
            "schedule = \"0 5 * * 0\"\nto = {}\nchecks = [\"select count(*) = 12 from ticks\"]",
            toml_str(&drill_dir)
        ));
    let failing = builder.render().replace("count(*) = 12", "count(*) = 13");
    let job = builder.write();
    let failing_config = job.path("failing.toml");
    std::fs::write(&failing_config, failing).expect("write");

    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    let (code, out) = job.stowage(&["run", "pitr", "--wait-lock"]);
    assert_eq!(code, Some(0), "run:\n{out}");
    let id = out
        .split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no backup id in:\n{out}"))
        .to_string();
    // Rows after the base backup, over three WAL files: only WAL replay brings them back.
    for id in 1..=12 {
        pg.psql("app", &format!("insert into ticks (id) values ({id})"));
        if id % 5 == 0 {
            pg.psql("app", "select pg_switch_wal()");
        }
    }
    // The last insert reaches the destination within one wal_flush (and a scan).
    std::thread::sleep(Duration::from_secs(FLUSH_SECS * 2 + 2));
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    if is_root() {
        let (code, out) = job.stowage(&["drill", "pitr"]);
        assert_eq!(code, Some(1), "a drill as root fails:\n{out}");
        assert!(
            out.contains("which refuses to run as root")
                && out.contains("run the drill as an unprivileged user"),
            "it says why and what to do:\n{out}"
        );
        assert!(leftovers(to.path()).is_empty(), "nothing made as root");
    }

    let public = tempfile::tempdir().expect("tempdir");
    let bin = public_stowage(public.path());
    open_to_postgres(job.dir.path());
    hand_to_postgres(job.dir.path());
    open_to_postgres(to.path());
    hand_to_postgres(to.path());

    let (code, out) = drill(&bin, &job, &job.config);
    assert_eq!(code, Some(0), "the drill passes:\n{out}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("drill pitr: ok, backup "))
        .unwrap_or_else(|| panic!("a summary line:\n{out}"));
    assert!(
        summary.contains(" recovered to LSN "),
        "the summary names the point reached: {summary}"
    );
    assert!(
        out.contains("ok: check passed: select count(*) = 12 from ticks"),
        "every row inserted after the base backup is back:\n{out}"
    );
    assert!(
        out.contains("database(s),") && out.contains("each read to its end"),
        "the tables are counted:\n{out}"
    );
    assert!(
        leftovers(to.path()).is_empty(),
        "the scratch is removed: {:?}",
        leftovers(to.path())
    );

    // A check that returns false fails the drill, after a recovery that worked.
    let (code, out) = drill(&bin, &job, &failing_config);
    assert_eq!(code, Some(1), "a false check fails the drill:\n{out}");
    assert!(
        out.contains("problem: check returned false: select count(*) = 13 from ticks")
            && out.contains("drill pitr: FAILED"),
        "{out}"
    );
    assert!(leftovers(to.path()).is_empty(), "removed on failure too");

    // A hole in the shipped WAL: the file after the base backup's first, record and object.
    let wal_pos = job.manifest("local", &id)["sources"][0]["wal"].clone();
    let first = first_wal_file(&wal_pos);
    let wal = job.path("local").join("pitr").join("wal").join("db");
    let mut segments: Vec<String> = leftovers(&wal)
        .into_iter()
        .filter_map(|n| n.strip_suffix(".zst").map(str::to_string))
        .filter(|n| n.len() == 24 && *n > first)
        .collect();
    segments.sort();
    let hole = segments
        .first()
        .unwrap_or_else(|| panic!("no WAL file shipped after {first}"));
    std::fs::remove_file(wal.join(format!("{hole}.zst"))).expect("remove the object");
    std::fs::remove_file(wal.join("index").join(format!("{hole}.json")))
        .expect("remove the record");
    let (code, out) = drill(&bin, &job, &job.config);
    assert_eq!(code, Some(1), "a gap fails the drill:\n{out}");
    assert!(
        out.contains("has a gap after the base backup") && out.contains(hole.as_str()),
        "the gap is named:\n{out}"
    );
    assert!(
        out.contains("recovery failed: ") && out.contains("recovery ended at LSN "),
        "recovery is seen to stop short of the newest WAL:\n{out}"
    );
    assert!(leftovers(to.path()).is_empty(), "removed on failure too");
}
