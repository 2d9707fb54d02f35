//! What a running daemon shows of work it did not do itself, and of a backup that worked
//! but holds much less than before: a dump that shrank is said in the run's summary, in
//! `/metrics` (`stowage_backup_shrunk`) and by `health` (a warning, still healthy); runs,
//! heals, verifies and drills run by hand beside the daemon (same state directory) show on
//! its page and in its metrics within a minute.

mod common;

use std::time::Duration;

use common::{Job, PgServer, seed_sample_db, toml_str};

/// Generous: the daemon wakes on the inbox at once; this only bounds a slow machine.
const SHOWN_WITHIN: Duration = Duration::from_secs(60);

fn server(port: u16) -> String {
    format!("[server]\nlisten = \"127.0.0.1:{port}\"\n")
}

/// The value of the sample `name` (with its labels) in `metrics`.
fn sample<'a>(metrics: &'a str, name: &str) -> Option<&'a str> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last())
}

/// Waits until `/metrics` has `name` at `value`; the metrics last read.
fn wait_for_sample(port: u16, name: &str, value: &str) -> String {
    let mut metrics = String::new();
    common::wait_for(&format!("{name} {value}"), SHOWN_WITHIN, || {
        metrics = common::http_get(port, "/metrics").1;
        sample(&metrics, name) == Some(value)
    });
    metrics
}

/// The warnings `stowage list app` shows, checked to be the ones `list --json` gives.
fn listed_warnings(job: &Job) -> Vec<String> {
    let (code, text) = job.stowage(&["list", "app"]);
    assert_eq!(code, Some(0), "{text}");
    let (code, json) = job.stowage(&["list", "app", "--json"]);
    assert_eq!(code, Some(0), "{json}");
    let doc: serde_json::Value = serde_json::from_str(&json).expect("list --json is JSON");
    let warnings: Vec<String> = doc["jobs"][0]["destinations"][0]["warnings"]
        .as_array()
        .expect("warnings is an array")
        .iter()
        .map(|w| w.as_str().expect("a sentence").to_string())
        .collect();
    let shown: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("warning: "))
        .map(str::to_string)
        .collect();
    assert_eq!(shown, warnings, "text and JSON:\n{text}");
    warnings
}

#[test]
fn a_dump_that_shrinks_is_said_in_the_summary_metrics_and_health() {
    let port = common::free_port();
    let builder = Job::new("app").top(&server(port)).local("local", Some(10));
    let data = builder.dir().join("dump.bin");
    let job = builder
        .command("dump", &["cat", &data.display().to_string()])
        .write();
    let fill = |kib: usize| {
        let bytes: Vec<u8> = (0..kib * 1024).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&data, bytes).expect("write the dump's data");
    };
    fill(300);
    for _ in 0..3 {
        let (code, out) = job.stowage(&["run", "app"]);
        assert_eq!(code, Some(0), "{out}");
        assert!(!out.contains("warning: the dump"), "a stable size: {out}");
    }

    let mut daemon = job.daemon();
    daemon.wait_for_output("HTTP listener on", Duration::from_secs(30));
    wait_for_sample(port, "stowage_backup_shrunk{job=\"app\"}", "0");
    let (code, out) = job.stowage(&["health"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning:"), "{out}");

    // The database (here: the command's output) lost most of its data.
    fill(30);
    let (code, out) = job.stowage(&["run", "app"]);
    assert_eq!(
        code,
        Some(0),
        "a shrunk dump is still a backup that worked: {out}"
    );
    let summary = out
        .lines()
        .find(|l| l.contains("backup success: job=app"))
        .unwrap_or_else(|| panic!("no summary line in:\n{out}"));
    assert!(
        summary.contains(
            "warning: the dump of app/dump is 30.0 KiB, 10% of the usual 300.0 KiB (the median of the 3 backups before it): check that the database still holds its data"
        ),
        "{summary}"
    );
    let id = summary
        .split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("an id")
        .to_string();

    // The daemon did not run it, yet shows it: the run, its counter, the warning.
    let metrics = wait_for_sample(port, "stowage_backup_shrunk{job=\"app\"}", "1");
    assert_eq!(
        sample(
            &metrics,
            "stowage_runs_total{job=\"app\",outcome=\"success\"}"
        ),
        Some("1"),
        "{metrics}"
    );
    // Polled like the metrics: one page read can be slow on a loaded machine.
    let mut page = String::new();
    // The run's row comes with its record, the warning with the history read after it.
    common::wait_for(
        &format!("run {id} and its warning on the page"),
        SHOWN_WITHIN,
        || {
            page = common::http_get(port, "/").1;
            page.contains(&format!("<td>{id}</td>"))
                && page.contains("⚠ the dump of app/dump is 30.0 KiB, 10% of the usual")
        },
    );
    assert!(
        !page.contains("(no run by this daemon since its start)"),
        "{page}"
    );

    let (code, out) = job.stowage(&["health"]);
    assert_eq!(code, Some(0), "a warning, not a failure: {out}");
    assert!(
        out.contains("warning: the dump of app/dump is 30.0 KiB") && out.contains("healthy:"),
        "{out}"
    );
    // Where people look at 3 a.m., and where scripts do.
    assert_eq!(listed_warnings(&job), vec!["the dump of app/dump is 30.0 KiB, 10% of the usual 300.0 KiB (the median of the 3 backups before it): check that the database still holds its data".to_string()]);

    // Back to its usual size: the warning goes.
    fill(300);
    let (code, out) = job.stowage(&["run", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning: the dump"), "{out}");
    assert!(listed_warnings(&job).is_empty());
    wait_for_sample(port, "stowage_backup_shrunk{job=\"app\"}", "0");
    let (code, out) = job.stowage(&["health"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning:"), "{out}");

    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", common::text(&out));
    assert!(
        !job.path("stowage-done").exists(),
        "the daemon removes its inbox when it stops"
    );
}

#[test]
fn heal_verify_and_drill_run_by_hand_show_on_the_running_daemons_page() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 50);
    let port = common::free_port();
    let job = Job::new("app")
        .top(&server(port))
        .local("local", None)
        .postgres("db", &pg.url("app"))
        .drill(&format!(
            "schedule = \"0 5 * * 0\"\nto = {}\nchecks = [\"select count(*) > 0 from orders\"]\n",
            toml_str(pg.url("stowage_drill"))
        ))
        .heal("schedule = \"0 5 * * 0\"\nwatch = [\"orders\"]\n")
        .write();
    job.backup();
    let mut daemon = job.daemon();
    daemon.wait_for_output("HTTP listener on", Duration::from_secs(30));
    let page = common::http_get(port, "/").1;
    assert!(
        page.contains("<th>last verify</th><td>-</td>")
            && page.contains("<th>last drill</th><td>scheduled (0 5 * * 0)</td>")
            && page.contains("<th>last heal</th><td>watching "),
        "nothing yet: {page}"
    );

    for what in ["verify", "heal", "drill"] {
        let (code, out) = job.stowage(&[what, "app"]);
        assert_eq!(code, Some(0), "{what}: {out}");
    }
    let metrics = wait_for_sample(
        port,
        "stowage_drills_total{job=\"app\",outcome=\"ok\"}",
        "1",
    );
    assert_eq!(
        sample(
            &metrics,
            "stowage_verifies_total{job=\"app\",outcome=\"ok\"}"
        ),
        Some("1"),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "stowage_heals_total{job=\"app\",outcome=\"ok\"}"),
        Some("1"),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "stowage_drill_duration_seconds{job=\"app\"}")
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(|v| v > 0.0),
        "{metrics}"
    );
    let page = common::http_get(port, "/").1;
    assert!(page.contains("<th>last verify</th><td>ok at "), "{page}");
    assert!(page.contains("<th>last drill</th><td>ok at "), "{page}");
    assert!(page.contains("<th>last heal</th><td>ok at "), "{page}");
    let log = daemon.output_so_far();
    for what in ["verify", "heal", "drill"] {
        assert!(
            log.contains(&format!("{what} of app run by hand: ")),
            "{what}: {log}"
        );
    }

    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", common::text(&out));
    // No daemon: a command by hand leaves nothing behind for one.
    let (code, out) = job.stowage(&["verify", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!job.path("stowage-done").exists());
}

/// The state directory is /tmp outside Docker. A `stowage-done` someone else put there before
/// the daemon started (here: a link to a directory holding a `.json` file) is not used: the
/// daemon says so, takes nothing in, deletes nothing through the link, and commands do not
/// write there.
#[test]
fn an_inbox_planted_before_the_daemon_is_not_used() {
    let port = common::free_port();
    let builder = Job::new("app").top(&server(port)).local("local", Some(10));
    let data = builder.dir().join("dump.bin");
    std::fs::write(&data, b"some data").expect("write");
    let job = builder
        .command("dump", &["cat", &data.display().to_string()])
        .write();
    let elsewhere = job.path("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::fs::write(elsewhere.join("precious.json"), b"not a record").expect("write");
    std::os::unix::fs::symlink(&elsewhere, job.path("stowage-done")).expect("symlink");

    let mut daemon = job.daemon();
    daemon.wait_for_output("not taking in records", Duration::from_secs(30));
    // The daemon's catch-up run of the job may be under way.
    let (code, out) = job.stowage(&["run", "--wait-lock", "app"]);
    assert_eq!(code, Some(0), "{out}");
    let planted = job.path("stowage-done").display().to_string();
    assert!(
        out.contains("cannot tell the running daemon")
            && out.contains(&format!(
                "{planted} is not a directory (a link?); remove it"
            )),
        "the command says why the page will not show it, quoting the path as it is:\n{out}"
    );
    daemon.signal("TERM");
    let done = daemon.wait(Duration::from_secs(30));
    assert!(done.status.success(), "{}", common::text(&done));
    assert!(
        std::fs::symlink_metadata(job.path("stowage-done"))
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the link is left as it was"
    );
    let left: Vec<_> = std::fs::read_dir(&elsewhere)
        .expect("read")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("precious.json")]);
}
