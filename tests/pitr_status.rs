//! The daemon's view of continuous WAL archiving, on a real PostgreSQL in physical mode: the
//! status page shows the recoverable window per destination, the last shipped segment and
//! the lag; when the destination cannot take WAL, a short outage is not an alarm, WAL that
//! has waited past the limit makes `stowage health`, `/healthz` and
//! `stowage_wal_lag_seconds` say so, and all is healthy again once the destination is back.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{Job, PgServer, free_port, http_get, toml_str, wait_for};

/// Completed WAL files waiting in `spool` (not the partial segment).
fn waiting(spool: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(spool) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .collect()
}

/// A new WAL segment: a write, then a switch (the receiver completes the old one).
fn switch_wal(pg: &PgServer, n: u32) {
    pg.psql(
        "postgres",
        &format!("insert into ticks values ({n}); select pg_switch_wal();"),
    );
}

#[test]
fn page_and_health_follow_wal_shipping() {
    let pg = PgServer::start();
    pg.psql("postgres", "create table ticks (id int primary key)");
    let port = free_port();
    let job = Job::new("pitr")
        .top(&format!("[server]\nlisten = \"127.0.0.1:{port}\""))
        .log()
        .local("local", None)
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"1s\"\n",
            toml_str(pg.url("postgres"))
        ))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    // Catch-up takes the first base backup; the page reads the window after it.
    let mut page = String::new();
    let mut n = 0;
    wait_for(
        "the window and a shipped segment on the page",
        Duration::from_secs(180),
        || {
            if !page.contains("last shipped 00000001") {
                n += 1;
                switch_wal(&pg, n);
            }
            std::thread::sleep(Duration::from_millis(1000));
            page = http_get(port, "/").1;
            // All caught up: the receiver starts at the slot's position (the last
            // checkpoint before the base backup), so a few segments can arrive at once
            // and wait a pass before the lag reads 0.
            page.contains("recoverable window of db on local</th><td>from ")
                && page.contains("<th>WAL of db</th><td>last shipped 00000001")
                && page.contains("<th>WAL lag of db</th><td>0 s, 0 completed files waiting")
        },
    );
    assert!(
        page.contains("(oldest base backup) to ") && page.contains(" (newest WAL, "),
        "{page}"
    );
    assert!(
        page.contains("<th>WAL lag of db</th><td>0 s, 0 completed files waiting"),
        "{page}"
    );
    assert!(!page.contains("WAL error of db"), "{page}");
    let (code, out) = job.stowage(&["health"]);
    assert_eq!(code, Some(0), "{out}");

    // The destination cannot take files (its directory is a file now).
    let local = job.path("local");
    let away = job.path("local.away");
    std::fs::rename(&local, &away).expect("move local away");
    std::fs::write(&local, b"not a directory").expect("block local");
    let spool = job.path("wal").join("pitr").join("db");
    n += 1;
    switch_wal(&pg, n);
    wait_for(
        "a segment waiting in the spool",
        Duration::from_secs(60),
        || !waiting(&spool).is_empty(),
    );
    wait_for("the failure on the page", Duration::from_secs(60), || {
        page = http_get(port, "/").1;
        // Whichever failed last: the waiting segment or the partial one.
        page.contains("<th>WAL error of db</th><td class=bad>cannot ship ")
    });
    assert!(page.contains("(failing since "), "{page}");
    // Seconds behind is within the limit: no alarm for a short outage.
    let (code, out) = job.stowage(&["health"]);
    assert_eq!(code, Some(0), "a short outage is not an alarm: {out}");

    // The waiting segment was written ten minutes ago: past the 5 min limit.
    let long_ago = SystemTime::now() - Duration::from_secs(600);
    for f in waiting(&spool) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&f)
            .and_then(|h| h.set_modified(long_ago))
            .unwrap_or_else(|e| panic!("backdate {}: {e}", f.display()));
    }
    let mut out = String::new();
    wait_for("health to report the lag", Duration::from_secs(60), || {
        let (code, o) = job.stowage(&["health"]);
        out = o;
        code != Some(0)
    });
    assert!(
        out.contains("unhealthy: job pitr: WAL of source db is 10m")
            && out.contains(
                "behind (limit 5m): the oldest WAL not on every destination was written at "
            )
            && out.contains("to local: "),
        "{out}"
    );
    let (status, body) = http_get(port, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("WAL of source db is 10m"), "{body}");
    let metrics = http_get(port, "/metrics").1;
    let lag: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("stowage_wal_lag_seconds{job=\"pitr\",source=\"db\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no lag gauge: {metrics}"));
    assert!(lag > 590.0, "{lag}: {metrics}");
    let page = http_get(port, "/").1;
    assert!(
        page.contains("<th>WAL lag of db</th><td class=bad>10 min, "),
        "{page}"
    );

    // The destination is back: the spool empties and all is healthy again.
    std::fs::remove_file(&local).expect("unblock local");
    std::fs::rename(&away, &local).expect("move local back");
    wait_for(
        "health to recover and the spool to empty",
        Duration::from_secs(60),
        || {
            let (code, o) = job.stowage(&["health"]);
            out = o;
            code == Some(0)
                && waiting(&spool).is_empty()
                && http_get(port, "/")
                    .1
                    .contains("<th>WAL lag of db</th><td>0 s, 0 completed files waiting")
        },
    );
    assert!(waiting(&spool).is_empty(), "{:?}", waiting(&spool));
    let page = http_get(port, "/").1;
    assert!(!page.contains("WAL error of db"), "{page}");
    assert!(
        page.contains("<th>WAL lag of db</th><td>0 s, 0 completed files waiting"),
        "{page}"
    );
    let metrics = http_get(port, "/metrics").1;
    assert!(
        metrics.contains("stowage_wal_lag_seconds{job=\"pitr\",source=\"db\"} 0.0"),
        "{metrics}"
    );

    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(60));
    assert!(out.status.success(), "{}", common::text(&out));
}
