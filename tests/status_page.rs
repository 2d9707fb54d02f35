//! The status page after a restart, built from what the destinations hold: backups made by
//! `stowage run` before the daemon started are there, with ages, sizes, durations, counts
//! per destination, a plot of the last backups, and a dump that suddenly shrank flagged.
//! Rendered in headless Chromium (Debian's `chromium`), which must lay the plot out; the
//! screenshot is kept as a test artefact.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{PgServer, run_stowage, seed_sample_db, text};

#[test]
fn status_page_after_a_restart_shows_cli_backups_and_a_shrinking_dump() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 3000);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stowage.toml");
    let port = common::free_port();
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[destinations.local]\ntype = \"local\"\npath = \"{local}\"\n\n[destinations.mirror]\ntype = \"local\"\npath = \"{mirror}\"\nretention = {{ keep_last = 2 }}\n\n[jobs.app]\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Stockholm\"\ndestinations = [\"local\", \"mirror\"]\n\n[[jobs.app.sources]]\ntype = \"postgres\"\nname = \"db\"\nurl = \"{url}\"\n",
            local = dir.path().join("local").display(),
            mirror = dir.path().join("mirror").display(),
            url = pg.url("app"),
        ),
    )
    .expect("config");
    let backup = || {
        let out = run_stowage(&config, ["run", "app"]);
        assert!(out.status.success(), "{}", text(&out));
    };
    for _ in 0..3 {
        backup();
    }
    // Most of the data gone: the next dump is much smaller than the usual.
    pg.psql(
        "app",
        "delete from audit.events; delete from public.orders where id > 100;",
    );
    backup();

    let pid = dir.path().join("stowage.pid");
    let state = dir.path().join("state.json");
    let envs = [
        ("STOWAGE_PID_FILE", pid.as_os_str()),
        ("STOWAGE_STATE_FILE", state.as_os_str()),
    ];
    let mut daemon = common::spawn_stowage_with_env(&config, ["daemon"], &envs);
    daemon.wait_for_output("HTTP listener on", Duration::from_secs(30));
    let mut page = String::new();
    common::wait_for("the history on the page", Duration::from_secs(30), || {
        page = common::http_get(port, "/").1;
        page.contains("local: 4 backups")
    });
    assert!(page.contains("mirror: 2 backups"), "{page}");
    assert!(page.contains("times in Europe/Stockholm"), "{page}");
    assert!(
        page.contains("s ago)") || page.contains("min ago)"),
        "an age: {page}"
    );
    assert!(
        page.contains("(no run by this daemon since its start)"),
        "{page}"
    );
    assert!(page.contains("<svg class=\"plot\""), "{page}");
    assert!(
        page.contains("<title>shrunk</title>") && page.contains("% of the usual"),
        "{page}"
    );
    assert!(page.contains("http-equiv=refresh"), "it refreshes itself");

    // Metrics from the same history: counts per destination right after the restart.
    let metrics = common::http_get(port, "/metrics").1;
    assert!(
        metrics.contains("stowage_backups{job=\"app\",destination=\"local\"} 4"),
        "{metrics}"
    );

    let Some(chromium) = ["chromium", "chromium-browser"].iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        eprintln!(
            "SKIP: headless rendering (chromium is not installed; tests/setup.sh installs it)"
        );
        daemon.signal("TERM");
        daemon.wait(Duration::from_secs(30));
        return;
    };
    let url = format!("http://127.0.0.1:{port}/");
    let profile = tempfile::tempdir().expect("profile dir");
    let headless = |extra: &[&str]| {
        Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium")
    };
    let dom = headless(&["--dump-dom", "--virtual-time-budget=2000"]);
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom_text.contains("data-plots-rendered=\"1\""),
        "chromium laid out the plot (status {:?}): {}\n{}",
        dom.status,
        dom_text,
        String::from_utf8_lossy(&dom.stderr)
    );
    let shot: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1100,1400",
    ]);
    let png = std::fs::read(&shot).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            shot.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real screenshot"
    );
    eprintln!("status page screenshot: {}", shot.display());

    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}
