//! What a user meets at 3 a.m., against real servers: dry runs that check the target like
//! the restore would, restore credentials and the hints when they are missing, `--create`,
//! one run per job across processes, S3's own error codes, and metrics that are right
//! after a daemon restart.

mod common;

use std::time::Duration;

use common::{Job, PgServer, run_stowage, seed_sample_db, text, toml_str};

/// A job `app` with a local destination and `sources` (TOML of `[[jobs.app.sources]]`
/// bodies), `extra` appended.
fn setup(sources: &[String], extra: &str) -> Job {
    let mut job = Job::new("app").local("local", None);
    for s in sources {
        job = job.source(s);
    }
    job.section(extra).write()
}

fn pg_source(url: &str) -> String {
    format!("type = \"postgres\"\nname = \"db\"\nurl = \"{url}\"")
}

/// A dry run connects and fails where the restore would: a non-empty target, a missing
/// database (with the hint to create it or pass --create); `--create` creates it.
#[test]
fn dry_runs_check_the_target_and_create_makes_it() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 50);
    let s = setup(&[pg_source(&pg.url("app"))], "");
    s.backup();

    let (code, out) = s.stowage(&["restore", "app", "--dry-run", "--to", &pg.url("app")]);
    assert_eq!(
        code,
        Some(1),
        "a dry run into a non-empty database fails: {out}"
    );
    assert!(out.contains("already has 3 table(s)"), "{out}");

    pg.create_db("empty");
    let (code, out) = s.stowage(&["restore", "app", "--dry-run", "--to", &pg.url("empty")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would restore db into"), "{out}");
    assert!(
        pg.psql(
            "empty",
            "select count(*) from pg_tables where schemaname = 'public'"
        ) == "0"
    );

    let (code, out) = s.stowage(&["restore", "app", "--dry-run", "--to", &pg.url("nowhere")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("database \"nowhere\" does not exist") && out.contains("add --create"),
        "{out}"
    );

    let (code, out) = s.stowage(&[
        "restore",
        "app",
        "--dry-run",
        "--create",
        "--to",
        &pg.url("nowhere"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would create database \"nowhere\""), "{out}");
    assert!(!pg.db_exists("nowhere"), "a dry run creates nothing");

    let (code, out) = s.stowage(&["restore", "app", "--create", "--to", &pg.url("nowhere")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("created database \"nowhere\""), "{out}");
    assert_eq!(pg.table_checksums("nowhere"), pg.table_checksums("app"));

    // --table: the dry run finds the clash the restore would.
    let (code, out) = s.stowage(&[
        "restore",
        "app",
        "--dry-run",
        "--table",
        "customers",
        "--to",
        &pg.url("app"),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("already exist in target database \"app\""),
        "{out}"
    );
}

/// `--to` without credentials restores as the job's source does (its password_file); a
/// user with no password given is told where to put one.
#[test]
fn restore_targets_use_the_sources_password_and_say_what_is_missing() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 30);
    pg.require_password("appuser", "s3cret-pw");
    pg.require_password("other", "other-pw");
    let job = Job::new("app");
    let secret = job.path("pg_password");
    std::fs::write(&secret, "s3cret-pw\n").expect("secret");
    let url = format!("postgres://appuser@127.0.0.1:{}/app", pg.port());
    let s = job
        .local("local", None)
        .source(&format!(
            "{}\npassword_file = {}",
            pg_source(&url),
            toml_str(secret.display())
        ))
        .write();
    s.backup();

    // Another database on the same server, and a target that names no user at all.
    let (code, out) = s.stowage(&[
        "restore",
        "app",
        "--create",
        "--to",
        &format!("postgres://appuser@127.0.0.1:{}/copy", pg.port()),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pg.table_checksums("copy"), pg.table_checksums("app"));
    let (code, out) = s.stowage(&[
        "restore",
        "app",
        "--create",
        "--to",
        &format!("postgres://127.0.0.1:{}/copy2", pg.port()),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pg.table_checksums("copy2"), pg.table_checksums("app"));

    // Another user: the source's password is not theirs; say where theirs goes.
    let (code, out) = s.stowage(&[
        "restore",
        "app",
        "--dry-run",
        "--to",
        &format!("postgres://other@127.0.0.1:{}/copy3", pg.port()),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("give the password of user \"other\"") && out.contains("PGPASSWORD"),
        "{out}"
    );
    assert!(!out.contains("s3cret-pw"), "never prints a password: {out}");
}

/// A `stowage run` while the daemon runs the same job is refused, naming the holder;
/// `--wait-lock` waits for it and then runs.
#[test]
fn a_second_run_of_a_job_waits_or_is_refused() {
    let s = setup(
        &[
            "type = \"command\"\nname = \"slow\"\ndump = [\"sh\", \"-c\", \"sleep 6; echo data\"]"
                .to_string(),
        ],
        "",
    );
    // No backup yet: the daemon catches up at once.
    let mut daemon = s.daemon();
    daemon.wait_for_output("backup started", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(500));

    let (code, out) = s.stowage(&["run", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("job app is already running: a backup by stowage on host")
            && out.contains(&format!("pid {}", daemon.pid()))
            && out.contains("--wait-lock"),
        "{out}"
    );

    let (code, out) = s.stowage(&["run", "app", "--wait-lock"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("waiting for a backup by stowage on host"),
        "{out}"
    );
    let (code, out) = s.stowage(&["list", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("2 backups"),
        "both runs published, one after the other: {out}"
    );
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}

/// Signature errors keep S3's own code: the HEAD of the preflight has no body, so the code
/// is fetched with a GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_keep_their_code() {
    let s3 = common::S3Server::s3s_fs();
    s3.create_bucket("codes").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Job::config_in(dir.path(), "app")
        .s3("s3", &s3, "codes", "")
        .command("x", &["echo", "hi"])
        .write_as("stowage.toml");
    // The builder wrote the right secret key; a wrong one makes the signatures fail.
    std::fs::write(dir.path().join("s3_secret"), "not-the-secret").expect("secret");
    let out = run_stowage(&config, ["run", "app"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("SignatureDoesNotMatch")
            && said.contains("access denied to bucket \"codes\""),
        "{said}"
    );
}

/// After a restart, before any run: the newest backup made by a CLI run sets
/// `stowage_last_success_timestamp_seconds`, so the README's staleness alert
/// (`time() - stowage_last_success_timestamp_seconds > 26 * 3600`) can be evaluated.
#[test]
fn a_restarted_daemon_exposes_the_last_success_of_cli_runs() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 20);
    let port = common::free_port();
    let s = setup(
        &[pg_source(&pg.url("app"))],
        &format!("\n[server]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let id = s.backup();
    let backup_time = chrono::NaiveDateTime::parse_from_str(&id, "%Y%m%dT%H%M%S%.3fZ")
        .expect("id is a time")
        .and_utc()
        .timestamp_millis() as f64
        / 1000.0;
    // A state file of the daemon's own, not the CLI's: the metric must come from what the
    // destination holds, not from what the CLI run recorded.
    let pid = s.path("stowage.pid");
    let state = s.path("state.json");
    let envs = [
        ("STOWAGE_PID_FILE", pid.as_os_str()),
        ("STOWAGE_STATE_FILE", state.as_os_str()),
    ];
    let mut daemon = common::spawn_stowage_with_env(&s.config, ["daemon"], &envs);
    daemon.wait_for_output("HTTP listener on", Duration::from_secs(30));
    let mut metrics = String::new();
    common::wait_for("the seeded metric", Duration::from_secs(30), || {
        metrics = common::http_get(port, "/metrics").1;
        metrics.contains("stowage_last_success_timestamp_seconds{job=\"app\"}")
    });
    let value: f64 = metrics
        .lines()
        .find(|l| l.starts_with("stowage_last_success_timestamp_seconds{job=\"app\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(
        (value - backup_time).abs() < 0.01,
        "{value} vs {backup_time}"
    );
    // The alert's expression, as Prometheus would evaluate it now: not firing.
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(now - value < 26.0 * 3600.0);
    assert!(
        !daemon.output_so_far().contains("backup started"),
        "no catch-up run was needed"
    );
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}

/// Long work is visible: in the logs (no terminal) a progress line every interval, with
/// bytes, percentage and rate; on a terminal, a bar with an ETA.
#[test]
fn backups_and_restores_show_progress() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 2000);
    let s = setup(&[pg_source(&pg.url("app"))], "");
    let every = [("STOWAGE_PROGRESS_INTERVAL", "1ms")];
    let out = common::run_stowage_with_env(&s.config, ["run", "app"], &every);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("backup app db: dumped: "), "{said}");

    pg.create_db("copy");
    let to = pg.url("copy");
    let out = common::run_stowage_with_env(&s.config, ["restore", "app", "--to", &to], &every);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let line = said
        .lines()
        .find(|l| l.contains("restore db: read: ") && l.contains("%)"))
        .unwrap_or_else(|| panic!("no progress line: {said}"));
    assert!(line.contains(" of ") && line.contains("/s"), "{line}");

    // On a terminal (a pty from script(1)): a bar with bytes and an ETA.
    pg.psql("postgres", "drop database copy");
    pg.create_db("copy");
    let cmd = format!(
        "{} --config {} restore app --to {to}",
        common::stowage_bin().display(),
        s.config.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .output()
        .expect("script");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("ETA"),
        "a progress bar on the terminal: {said}"
    );
}

/// `run --dry-run` checks every source and destination and says what the run would do,
/// retention included, changing nothing; `check-config --connect` runs the same checks for
/// every job and names what does not answer.
#[test]
fn dry_run_and_check_config_connect_check_everything() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 30);
    let s = Job::new("app")
        .local("local", Some(2))
        .source(&pg_source(&pg.url("app")))
        .write();
    let first = s.backup();
    s.backup();

    let (code, out) = s.stowage(&["run", "app", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would dump db (postgres"), "{out}");
    assert!(out.contains("3 table(s) or collection(s) now"), "{out}");
    assert!(
        out.contains(
            "reachable and writable, 2 backup(s); retention (keep_last=2) would then delete"
        ) && out.contains(&first),
        "{out}"
    );
    let (_, listed) = s.stowage(&["list", "app"]);
    assert!(listed.contains("(2 backups)"), "nothing ran: {listed}");

    // A second job whose database does not answer and whose destination is a file.
    let blocker = s.path("not-a-dir");
    std::fs::write(&blocker, "x").expect("file");
    let other = Job::config_in(s.dir.path(), "other")
        .local_at("broken", &blocker.join("sub"), None)
        .postgres(
            "db",
            &format!("postgres://postgres@127.0.0.1:{}/app", common::free_port()),
        )
        .render();
    let cfg = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&s.config, format!("{cfg}\n{other}")).expect("config");
    let (code, out) = s.stowage(&["check-config", "--connect"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("job app:") && out.contains("would dump db"),
        "{out}"
    );
    assert!(out.contains("problem: source db: cannot connect:"), "{out}");
    assert!(out.contains("problem: destination broken ("), "{out}");
    assert!(out.contains("connect: 2 problem(s)"), "{out}");
    let (code, _) = s.stowage(&["check-config"]);
    assert_eq!(code, Some(0), "without --connect nothing is contacted");
}
