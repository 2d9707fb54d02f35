//! A stop signal sent to a `stowage restore` process alone (a supervisor, `kill`; not the
//! terminal's Ctrl-C, which reaches the whole process group) stops it cleanly: the target
//! is rolled back, the tools it ran are gone, its temporary files and the job's restore
//! lock are removed, and it says so (issue 25).

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::pg_job::PgJob;
use common::{Running, text};

/// Children of `pid` (pg_restore, psql) with their names.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        // "pid (comm) state ppid ...": comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|f| f.parse::<u32>().ok());
        if ppid == Some(pid) {
            let comm = head
                .split_once('(')
                .map(|(_, c)| c)
                .unwrap_or("")
                .to_string();
            out.push((p, comm));
        }
    }
    out
}

/// Alive and not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn psql_backends(job: &PgJob) -> usize {
    job.pg
        .psql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where datname = '{}' and application_name = 'psql' and pid <> pg_backend_pid()",
                job.db
            ),
        )
        .trim()
        .parse()
        .expect("count")
}

fn interrupt_mid_way(job: &PgJob, tmp: &Path, signal: &str) {
    let before_data = job.data();
    let before_schema = job.schema();
    let url = job.pg.url(&job.db);
    let mut restore: Running = common::spawn_stowage_with_env(
        &job.config,
        [
            "restore",
            "app",
            "latest",
            "--clean",
            "--force-into-source",
            "--to",
            url.as_str(),
        ],
        &[("TMPDIR", tmp.as_os_str())],
    );
    // Mid-way: psql is loading the big table inside the restore's transaction.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let copying = job.pg.psql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where datname = '{}' and query like 'COPY public.big%' and state = 'active'",
                job.db
            ),
        );
        if copying.trim() != "0" {
            break;
        }
        assert!(
            restore.exited().is_none(),
            "the restore ended before it could be interrupted (make the table bigger):\n{}",
            restore.output_so_far()
        );
        assert!(
            Instant::now() < deadline,
            "the restore never started loading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let kids = children(restore.pid());
    assert!(
        kids.iter().any(|(_, c)| c == "psql") && kids.iter().any(|(_, c)| c == "pg_restore"),
        "{kids:?}"
    );
    let signalled = Instant::now();
    restore.signal(signal);
    let out = restore.wait(Duration::from_secs(30));
    let took = signalled.elapsed();
    let said = text(&out);
    eprintln!("SIG{signal}: stopped in {took:?}: {said}");
    assert!(
        !out.status.success(),
        "an interrupted restore exits non-zero: {said}"
    );
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(
        said.contains(&format!("interrupted by SIG{signal}"))
            && said.contains("rolled back")
            && said.contains("nothing was changed"),
        "the message says it was interrupted and nothing was changed: {said}"
    );
    // Stopped, not run to the end: the restore of this table takes far longer.
    assert!(took < Duration::from_secs(10), "took {took:?} to stop");

    common::wait_for(
        "the restore's tools to exit",
        Duration::from_secs(10),
        || kids.iter().all(|(p, _)| !alive(*p)),
    );
    common::wait_for(
        "the restore's psql session to end",
        Duration::from_secs(10),
        || psql_backends(job) == 0,
    );
    assert_eq!(job.data(), before_data, "the target's rows changed");
    assert_eq!(
        job.schema(),
        before_schema,
        "{}",
        common::pg_job::diff(&before_schema, &job.schema())
    );
    let left: Vec<_> = std::fs::read_dir(tmp)
        .expect("tmp")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

/// SIGTERM, then SIGINT, each sent to the restore process alone, half-way through loading
/// a big table with --clean into the live database.
#[test]
fn a_stop_signal_sent_to_a_restore_rolls_it_back_and_leaves_nothing_behind() {
    let job = PgJob::start(
        "app",
        &[],
        "create table big (id int primary key, pad text);
         insert into big select g, md5(g::text) || md5((g * 7)::text) from generate_series(1, 600000) g;
         create table small (id int primary key, v text);
         insert into small values (1, 'one');",
    );
    // The live database differs from the backup: a restore that went through would show.
    job.psql("update small set v = 'changed since the backup'; delete from big where id <= 10");
    let tmp = tempfile::tempdir().expect("tmp");
    interrupt_mid_way(&job, tmp.path(), "TERM");
    interrupt_mid_way(&job, tmp.path(), "INT");
    // The job's restore lock went with it: nothing holds the job.
    let locks = job.config.parent().expect("dir").join("local/app/locks");
    let held: Vec<_> = std::fs::read_dir(&locks)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        held.is_empty(),
        "locks left in {}: {held:?}",
        locks.display()
    );
}
