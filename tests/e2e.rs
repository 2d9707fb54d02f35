//! End to end, through the real binary, against a real PostgreSQL and real S3-compatible
//! servers (moto, and s3s-fs which checks request signatures). Round trips are verified by
//! restoring and comparing every table's rows.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{
    Job, JobBuilder, PgServer, Receiver, S3Server, http_get, run_stowage, seed_sample_db, text,
    toml_str,
};

const BUCKET: &str = "backups";
/// Rows of sample data: big enough that the compressed dump spans two 5 MiB parts.
const ROWS: usize = 40_000;

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    local: PathBuf,
}

/// A config with a local destination and an S3 destination ("offsite").
fn write_config(
    pg_url: &str,
    s3: &S3Server,
    local_retention: &str,
    s3_retention: &str,
    bucket: &str,
) -> Setup {
    write_config_with(pg_url, s3, local_retention, s3_retention, bucket, |c| c)
}

/// Like [`write_config`], `more` adding to the config (a schedule, job keys, sections).
fn write_config_with(
    pg_url: &str,
    s3: &S3Server,
    local_retention: &str,
    s3_retention: &str,
    bucket: &str,
    more: impl FnOnce(JobBuilder) -> JobBuilder,
) -> Setup {
    let job = Job::new("app");
    let local = job.path("local");
    let offsite = format!(
        "{}prefix = \"nightly\"\npart_size = \"5MiB\"\nretention = {s3_retention}\n",
        job.s3_keys(s3, bucket)
    );
    let job = job
        .log()
        .destination(
            "local",
            &format!(
                "type = \"local\"\npath = {}\nretention = {local_retention}\n",
                toml_str(local.display())
            ),
        )
        .destination("offsite", &offsite)
        .job("timezone = \"Europe/Stockholm\"")
        .postgres("db", pg_url);
    let job = more(job).write();
    // The secret as an editor leaves it, with a newline.
    std::fs::write(job.path("s3_secret"), format!("{}\n", s3.secret_key())).expect("secret");
    let Job { dir, config, .. } = job;
    Setup { dir, config, local }
}

/// The usual fixture: PostgreSQL seeded with `rows`, moto with the bucket, and a config
/// with both destinations under the same retention rule.
async fn moto_stack(rows: usize, retention: &str) -> (PgServer, S3Server, Setup) {
    moto_stack_with(rows, retention, |c| c).await
}

/// Like [`moto_stack`], `more` adding to the config.
async fn moto_stack_with(
    rows: usize,
    retention: &str,
    more: impl FnOnce(JobBuilder) -> JobBuilder,
) -> (PgServer, S3Server, Setup) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", rows);
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let setup = write_config_with(&pg.url("app"), &s3, retention, retention, BUCKET, more);
    (pg, s3, setup)
}

fn run_ok(cfg: &Path) -> Output {
    let out = run_stowage(cfg, ["run", "app"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out));
    out
}

/// Published backup ids per destination, from `stowage list`.
fn listed(cfg: &Path) -> Vec<(String, Vec<String>)> {
    listed_maybe_failing(cfg, false)
}

fn listed_maybe_failing(cfg: &Path, may_fail: bool) -> Vec<(String, Vec<String>)> {
    let out = run_stowage(cfg, ["list", "app"]);
    assert!(
        may_fail || out.status.success(),
        "list failed:\n{}",
        text(&out)
    );
    common::parse_listing(&String::from_utf8_lossy(&out.stdout))
}

fn ids_on(cfg: &Path, dest: &str) -> Vec<String> {
    listed(cfg)
        .into_iter()
        .find(|(d, _)| d == dest)
        .map(|(_, ids)| ids)
        .unwrap_or_default()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// A stowage child process that is killed if the test panics before stopping it, so a
/// failed test never leaves a daemon running backups in the background.
struct Running(Option<Child>);

impl Running {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already taken")
    }
    fn take(mut self) -> Child {
        self.0.take().expect("child already taken")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn_stowage(cfg: &Path, args: &[&str]) -> Running {
    let mut cmd = Command::new(common::stowage_bin());
    // One daemon per state directory: each test's own, not the shared /tmp.
    common::own_state_dir(&mut cmd, cfg);
    let child = cmd
        .arg("--config")
        .arg(cfg)
        .args(args)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stowage");
    Running(Some(child))
}

/// Block until the running backup has streamed more than `bytes` into its local `.partial`
/// file: the dump is well under way and S3 multipart parts are going up.
fn wait_until_streaming(setup: &Setup, child: &mut Running, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let streamed: u64 = partials(&setup.local)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        if streamed > bytes {
            return;
        }
        assert!(Instant::now() < deadline, "no backup got going");
        assert!(
            child.child().try_wait().expect("try_wait").is_none(),
            "stowage exited before it could be interrupted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn partials(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect()
}

/// What `docker stop` does: SIGTERM, then wait.
fn sigterm(running: Running) -> Output {
    let child = running.take();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    child.wait_with_output().expect("wait")
}

fn signal(running: &Running, sig: &str) {
    let child = running.0.as_ref().expect("running");
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Poll `done` until it holds, failing after `secs` or as soon as stowage exits.
fn poll_running(running: &mut Running, what: &str, secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        assert!(
            running.child().try_wait().expect("try_wait").is_none(),
            "stowage exited while waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times `needle` occurs in the daemon's log files (the config's `[log] dir`).
fn log_count(setup: &Setup, needle: &str) -> usize {
    files_under(&setup.dir.path().join("logs"))
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|t| t.matches(needle).count())
        .sum()
}

/// Wait until the daemon's log files have a line with `needle`.
fn wait_for_log(setup: &Setup, running: &mut Running, needle: &str) {
    poll_running(running, &format!("a log line with {needle:?}"), 30, || {
        log_count(setup, needle) > 0
    });
}

fn set_schedule(setup: &Setup, schedule: &str) {
    let body = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace(
            "schedule = \"0 3 * * *\"",
            &format!("schedule = \"{schedule}\""),
        );
    std::fs::write(&setup.config, body).expect("write");
}

fn restore(cfg: &Path, args: &[&str]) -> Output {
    let mut all = vec!["restore", "app"];
    all.extend_from_slice(args);
    run_stowage(cfg, all)
}

/// Each of `ids` restores into a fresh database on `pg` with every table equal to `want`,
/// from the two destinations in turn.
fn assert_all_restore(
    cfg: &Path,
    pg: &PgServer,
    ids: &[String],
    want: &std::collections::BTreeMap<String, String>,
) {
    for (i, id) in ids.iter().enumerate() {
        let dest = ["local", "offsite"][i % 2];
        let db = format!("earlier_{i}");
        pg.create_db(&db);
        let out = restore(cfg, &[id, "--from", dest, "--to", &pg.url(&db)]);
        assert!(
            out.status.success(),
            "restore of {id} from {dest}:\n{}",
            text(&out)
        );
        assert_eq!(&pg.table_checksums(&db), want, "{id} from {dest}");
        pg.drop_db(&db);
    }
}

async fn round_trip(s3: S3Server) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", ROWS);
    s3.create_bucket(BUCKET).await;
    let setup = write_config(
        &pg.url("app"),
        &s3,
        "{ keep_last = 5 }",
        "{ keep_last = 5 }",
        BUCKET,
    );

    let out = run_ok(&setup.config);
    let log = text(&out);
    assert!(
        log.contains("backup success: job=app"),
        "no summary line:\n{log}"
    );

    // Listed on both destinations, same id.
    let list = listed(&setup.config);
    assert_eq!(list.len(), 2, "{list:?}");
    let id = list[0].1.first().cloned().expect("one backup");
    for (dest, ids) in &list {
        assert_eq!(ids, &vec![id.clone()], "destination {dest}");
    }

    // The S3 object and the local file are byte-identical, and multipart was used.
    let key = format!("app/{id}/db.pgdump.zst");
    let local_bytes = std::fs::read(setup.local.join(&key)).expect("local file");
    let s3_bytes = s3.get(BUCKET, &format!("nightly/{key}")).await;
    assert!(
        local_bytes.len() > 5 * 1024 * 1024,
        "dump too small to exercise multipart: {}",
        local_bytes.len()
    );
    assert!(
        local_bytes == s3_bytes,
        "S3 object differs from the local file"
    );

    // Restore from each destination into a fresh database: every table equal.
    let want = pg.table_checksums("app");
    assert!(want.len() >= 3, "{want:?}");
    for (dest, db) in [("offsite", "from_s3"), ("local", "from_local")] {
        pg.create_db(db);
        let out = restore(&setup.config, &[&id, "--to", &pg.url(db), "--from", dest]);
        assert!(
            out.status.success(),
            "restore from {dest} failed:\n{}",
            text(&out)
        );
        assert_eq!(pg.table_checksums(db), want, "restored from {dest}");
    }

    // A target that already has tables is refused unless --clean.
    pg.psql(
        "app",
        "update public.customers set name = 'changed' where id % 7 = 0",
    );
    let out = restore(&setup.config, &["latest", "--to", &pg.url("app")]);
    assert!(!out.status.success(), "restore over data must be refused");
    assert!(
        text(&out).contains("already has") && text(&out).contains("--clean"),
        "{}",
        text(&out)
    );
    assert_ne!(
        pg.table_checksums("app"),
        want,
        "refused restore must not touch the target"
    );
    let out = restore(
        &setup.config,
        &[
            "latest",
            "--to",
            &pg.url("app"),
            "--clean",
            "--force-into-source",
        ],
    );
    assert!(
        out.status.success(),
        "restore --clean failed:\n{}",
        text(&out)
    );
    assert_eq!(pg.table_checksums("app"), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_moto() {
    round_trip(S3Server::moto()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_s3s_fs_checks_signatures() {
    round_trip(S3Server::s3s_fs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_last_five_after_seven_runs() {
    let (_pg, s3, setup) = moto_stack(500, "{ keep_last = 5 }").await;
    let mut all = Vec::new();
    for _ in 0..7 {
        run_ok(&setup.config);
        all = ids_on(&setup.config, "local");
    }
    let local = ids_on(&setup.config, "local");
    let remote = ids_on(&setup.config, "offsite");
    assert_eq!(local.len(), 5, "{local:?}");
    assert_eq!(local, remote);
    assert_eq!(local, all);
    let mut sorted = local.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(local, sorted, "newest first");
    // No leftovers: exactly a manifest and a dump per kept backup, on both sides.
    let keys = s3.list_keys(BUCKET, "nightly/").await;
    assert_eq!(keys.len(), 10, "{keys:?}");
    assert_eq!(files_under(&setup.local).len(), 10);
    let dirs: BTreeSet<String> = std::fs::read_dir(setup.local.join("app"))
        .expect("job dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(dirs, local.iter().cloned().collect());
}

/// Snapshot of everything stored: (key, bytes) on both destinations.
async fn stored(setup: &Setup, s3: &S3Server) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for p in files_under(&setup.local) {
        let rel = p
            .strip_prefix(&setup.local)
            .expect("under")
            .display()
            .to_string();
        out.push((format!("local:{rel}"), std::fs::read(&p).expect("read")));
    }
    for k in s3.list_keys(BUCKET, "").await {
        let body = s3.get(BUCKET, &k).await;
        out.push((format!("s3:{k}"), body));
    }
    out
}

async fn assert_clean_failure(
    setup: &Setup,
    s3: &S3Server,
    before: &[(String, Vec<u8>)],
    out: &Output,
    expect_in_log: &str,
) {
    let log = text(out);
    assert!(!out.status.success(), "run should fail:\n{log}");
    assert!(
        log.contains(expect_in_log),
        "expected {expect_in_log:?} in:\n{log}"
    );
    assert!(
        log.contains("backup failed: job=app"),
        "no failure summary:\n{log}"
    );
    assert_eq!(
        s3.open_multipart_uploads(BUCKET).await,
        0,
        "multipart upload left open"
    );
    let left = partials(&setup.local);
    assert!(left.is_empty(), "{left:?}");
    // No debris either: every backup directory left is a published one.
    for dir in std::fs::read_dir(setup.local.join("app"))
        .expect("job dir")
        .flatten()
    {
        assert!(
            dir.path().join("manifest.json").exists(),
            "unpublished leftover {:?}",
            dir.path()
        );
    }
    let after = stored(setup, s3).await;
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(names(&after), names(before), "stored objects changed");
    assert!(after == before, "an earlier backup's bytes changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_dumps_publish_nothing_and_touch_nothing() {
    // Big enough that the dump is still streaming (multipart under way) when it is killed.
    let (mut pg, s3, setup) = moto_stack(150_000, "{ keep_last = 5 }").await;
    for _ in 0..5 {
        run_ok(&setup.config);
    }
    let before = stored(&setup, &s3).await;
    let ids = ids_on(&setup.config, "local");
    assert_eq!(ids.len(), 5);
    let want = pg.table_checksums("app");

    // 1. A database that does not exist: pg_dump fails at once, its stderr is in the log.
    let bad = write_config(
        &pg.url("nope"),
        &s3,
        "{ keep_last = 5 }",
        "{ keep_last = 5 }",
        BUCKET,
    );
    let bad_cfg = bad.dir.path().join("bad.toml");
    let body = std::fs::read_to_string(&bad.config).expect("read").replace(
        &bad.local.display().to_string(),
        &setup.local.display().to_string(),
    );
    std::fs::write(&bad_cfg, body).expect("write");
    let out = run_stowage(&bad_cfg, ["run", "app"]);
    assert_clean_failure(
        &setup,
        &s3,
        &before,
        &out,
        "database \"nope\" does not exist",
    )
    .await;

    // 2. The backend is terminated mid-stream, after multipart parts have gone up.
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    let killed = pg.terminate_backends("app");
    assert!(killed >= 1, "no backend to terminate");
    let out = child.take().wait_with_output().expect("wait");
    assert_clean_failure(&setup, &s3, &before, &out, "pg_dump failed").await;

    // 3. pg_dump itself is killed (kill -9) mid-stream.
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    let pkill = Command::new("pkill")
        .args([
            "-KILL",
            "-x",
            "-P",
            &child.child().id().to_string(),
            "pg_dump",
        ])
        .status()
        .expect("pkill");
    assert!(pkill.success(), "no pg_dump child to kill");
    let out = child.take().wait_with_output().expect("wait");
    assert_clean_failure(&setup, &s3, &before, &out, "killed by signal 9").await;

    // 4. PostgreSQL is stopped mid-dump (pg_ctl stop -m fast).
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    pg.stop();
    let out = child.take().wait_with_output().expect("wait");
    assert_clean_failure(&setup, &s3, &before, &out, "pg_dump failed").await;

    // 5. The server is down before the run: connection refused, clean failure.
    let out = run_stowage(&setup.config, ["run", "app"]);
    assert_clean_failure(&setup, &s3, &before, &out, "pg_dump failed").await;

    // The five earlier backups are still listed on both sides, and restore (into a fresh
    // server: this one was stopped).
    assert_eq!(ids_on(&setup.config, "local"), ids);
    assert_eq!(ids_on(&setup.config, "offsite"), ids);
    assert_all_restore(&setup.config, &PgServer::start(), &ids, &want);
}

/// S3 problems: one line naming the destination and the cause; the local copy still publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_name_destination_and_cause() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 500);
    let s3 = S3Server::s3s_fs();
    s3.create_bucket(BUCKET).await;

    let unreachable = common::free_port();
    type Edit = Box<dyn Fn(String) -> String>;
    let cases: Vec<(String, Edit, &str)> = vec![
        (
            "unreachable".into(),
            Box::new(move |c: String| {
                c.replace(
                    &format!("http://127.0.0.1:{}", s3_port(&c)),
                    &format!("http://127.0.0.1:{unreachable}"),
                )
            }),
            "cannot reach",
        ),
        (
            "wrong bucket".into(),
            Box::new(|c: String| c.replace("bucket = \"backups\"", "bucket = \"no-such-bucket\"")),
            "bucket \"no-such-bucket\" does not exist",
        ),
        (
            "wrong credentials".into(),
            Box::new(|c: String| c.replace(common::TEST_ACCESS_KEY, "wrongkey")),
            "access denied",
        ),
    ];
    for (name, edit, cause) in cases {
        let setup = write_config(
            &pg.url("app"),
            &s3,
            "{ keep_last = 5 }",
            "{ keep_last = 5 }",
            BUCKET,
        );
        let body = edit(std::fs::read_to_string(&setup.config).expect("read"));
        std::fs::write(&setup.config, body).expect("write");
        let started = Instant::now();
        let out = run_stowage(&setup.config, ["run", "app"]);
        let log = text(&out);
        assert!(!out.status.success(), "{name}: run must fail\n{log}");
        let line = log
            .lines()
            .find(|l| l.starts_with("error: offsite:"))
            .unwrap_or_else(|| panic!("{name}: no error line for the destination:\n{log}"));
        assert!(line.contains(cause), "{name}: {line}");
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{name}: took {:?}",
            started.elapsed()
        );
        // The healthy destination still got its backup; list reports the broken one.
        let list = listed_maybe_failing(&setup.config, true);
        let local = list
            .iter()
            .find(|(d, _)| d == "local")
            .map(|(_, ids)| ids.len());
        assert_eq!(local, Some(1), "{name}: {list:?}");
    }
}

fn s3_port(config: &str) -> String {
    config
        .split("endpoint = \"http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_env_override_and_no_secrets() {
    let config = Job::new("app");
    let pw = config.path("pw");
    std::fs::write(&pw, "file-secret-123\n").expect("pw");
    let job = config
        .local_at("local", Path::new("/var/backups/stowage"), None)
        .database(
            "postgres",
            "db",
            "postgres://app:url-secret-456@db:5432/app",
            &format!("password_file = {}", toml_str(pw.display())),
        )
        .write();
    let cfg = &job.config;
    let out = common::run_stowage_with_env(
        cfg,
        ["check-config"],
        &[("STOWAGE_JOBS__APP__SCHEDULE", "30 4 * * *")],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("schedule \"30 4 * * *\""),
        "env override not applied:\n{t}"
    );
    assert!(t.contains("04:30:00 UTC"), "{t}");
    assert!(
        !t.contains("secret-123") && !t.contains("url-secret-456"),
        "secret leaked:\n{t}"
    );
    assert!(t.contains("postgres://app@db:5432/app"), "{t}");

    // A bad override is reported with the variable's name.
    let out = common::run_stowage_with_env(
        cfg,
        ["check-config"],
        &[("STOWAGE_JOBS__APP__COMPRESSION", "xz")],
    );
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("jobs.app.compression") && t.contains("STOWAGE_JOBS__APP__COMPRESSION"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_runs_on_schedule_logs_to_files_and_stops_on_sigterm() {
    let (_pg, s3, setup) =
        moto_stack_with(500, "{ keep_last = 3 }", |c| c.schedule("*/2 * * * * *")).await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    // Count finished runs in the log file (retention keeps the listing at 3).
    poll_running(&mut child, "4 backups", 60, || {
        log_count(&setup, "backup success: job=app") >= 4
    });
    let stopped = Instant::now();
    let out = sigterm(child);
    assert!(
        stopped.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        stopped.elapsed()
    );
    let log = text(&out);
    assert!(out.status.success(), "daemon exit: {:?}\n{log}", out.status);
    assert!(log.contains("next run of app"), "{log}");
    assert!(log.contains("backup success: job=app"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    // Retention held while running, and nothing half-written is listed or left behind.
    assert_eq!(ids_on(&setup.config, "local").len(), 3);
    assert_eq!(ids_on(&setup.config, "offsite").len(), 3);
    assert!(partials(&setup.local).is_empty());
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0);
    // The log volume got a log file with the same lines.
    let logs = files_under(&setup.dir.path().join("logs"));
    assert_eq!(logs.len(), 1, "{logs:?}");
    let file_log = std::fs::read_to_string(&logs[0]).expect("log file");
    assert!(file_log.contains("backup success: job=app"), "{file_log}");
}

/// A job due again while its previous run is still going is skipped with a warning; a
/// second SIGTERM in the middle of a run abandons it without publishing or leaving debris.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_run_is_skipped_and_second_sigterm_abandons_cleanly() {
    // A dump that takes several seconds, against a schedule firing every second.
    let (_pg, s3, setup) =
        moto_stack_with(100_000, "{ keep_last = 3 }", |c| c.schedule("* * * * * *")).await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, "TERM");
    wait_for_log(&setup, &mut child, "waiting up to 30s for running backups");
    let out = sigterm(child);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(
        log.contains("still running from its previous start; skipping"),
        "{log}"
    );
    assert!(
        log.contains("SIGTERM again: abandoning running backups now"),
        "{log}"
    );
    assert!(log.contains("backup cancelled: job=app"), "{log}");
    // Whatever had been published before stays; the abandoned run left nothing behind.
    let published = ids_on(&setup.config, "local").len();
    assert_eq!(ids_on(&setup.config, "offsite").len(), published);
    let files = files_under(&setup.local);
    assert!(partials(&setup.local).is_empty(), "{files:?}");
    assert_eq!(files.len(), 2 * published, "{files:?}");
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0);
    assert_eq!(s3.list_keys(BUCKET, "").await.len(), 2 * published);
}

/// The first SIGTERM lets a running backup finish (and publish) within the grace; past the
/// grace it is abandoned, with exit code 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_backup_finish_within_the_grace() {
    let (_pg, s3, setup) = moto_stack(100_000, "{ keep_last = 5 }").await;
    // The catch-up run at start is the backup being stopped.
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_until_streaming(&setup, &mut child, 2 * 1024 * 1024);
    let out = sigterm(child);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("SIGTERM: stopping; no new runs will start"),
        "{log}"
    );
    assert!(log.contains("backup success: job=app"), "{log}");
    assert_eq!(ids_on(&setup.config, "local").len(), 1);
    assert_eq!(ids_on(&setup.config, "offsite").len(), 1);

    // A grace too short for the dump: abandoned, nothing published, nothing left.
    let body = std::fs::read_to_string(&setup.config).expect("read");
    std::fs::write(&setup.config, format!("shutdown_grace = \"1s\"\n{body}")).expect("write");
    // Every second: the backup just taken is already stale, so catch-up runs at once.
    set_schedule(&setup, "* * * * * *");
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_until_streaming(&setup, &mut child, 2 * 1024 * 1024);
    let out = sigterm(child);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("shutdown grace of 1s is over"), "{log}");
    assert!(log.contains("backup cancelled: job=app"), "{log}");
    assert!(partials(&setup.local).is_empty());
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0);
}

/// kill -9 in the middle of an upload leaves a `.partial` file, an open multipart upload,
/// an unpublished prefix and a lock; the next start removes them all before its catch-up run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_upload_then_restart_cleans_the_leftovers() {
    let (_pg, s3, setup) = moto_stack(100_000, "{ keep_last = 5 }").await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    // Wait for the first multipart part, so an upload is open at the server.
    let deadline = Instant::now() + Duration::from_secs(30);
    while s3.open_multipart_uploads(BUCKET).await == 0 {
        assert!(Instant::now() < deadline, "no multipart upload started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut killed = child.take();
    killed.kill().expect("kill -9");
    let _ = killed.wait();
    assert!(
        !partials(&setup.local).is_empty(),
        "a crash leaves a .partial file"
    );
    assert!(s3.open_multipart_uploads(BUCKET).await > 0);
    assert!(ids_on(&setup.config, "local").is_empty());
    let locks = |dir: &Path| files_under(&dir.join("app/locks")).len();
    assert_eq!(locks(&setup.local), 1, "the dead run's lock is left");

    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_for_log(&setup, &mut child, "backup success: job=app");
    let out = sigterm(child);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("recovered leftovers of interrupted runs on")
            && log.contains("1 unpublished backup(s)")
            && log.contains("1 open upload(s)"),
        "{log}"
    );
    // The restart's catch-up run published; nothing of the killed run is left anywhere.
    assert_eq!(ids_on(&setup.config, "local").len(), 1);
    assert_eq!(ids_on(&setup.config, "offsite").len(), 1);
    assert!(partials(&setup.local).is_empty());
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0);
    assert_eq!(locks(&setup.local), 0);
    let files = files_under(&setup.local);
    assert_eq!(files.len(), 2, "{files:?}");
    assert_eq!(s3.list_keys(BUCKET, "").await.len(), 2);
}

/// tokio-cron-scheduler keeps one-shot times in whole seconds; a scheduled run must still
/// never start before the time the daemon announced for it ("next run of app at …").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_runs_never_start_early() {
    let (_pg, _s3, setup) = moto_stack_with(200, "{ keep_last = 3 }", |c| {
        c.schedule("*/2 * * * * *").job("catch_up = false")
    })
    .await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    poll_running(&mut child, "four scheduled runs", 60, || {
        log_count(&setup, "backup success: job=app") >= 4
    });
    let out = sigterm(child);
    let log = text(&out);
    // The announcement of the next run and the start of the current one come from two
    // tasks and may be logged in either order: each run is matched with the announced
    // time nearest to its start, which it must not precede.
    let mut announced: Vec<chrono::NaiveDateTime> = Vec::new();
    let mut starts: Vec<(String, chrono::NaiveDateTime)> = Vec::new();
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once("next run of app at ") {
            let utc = rest
                .split_once(" (")
                .and_then(|(_, r)| r.split_once(')'))
                .map(|(t, _)| t)
                .expect("announced time in UTC");
            announced.push(
                chrono::NaiveDateTime::parse_from_str(utc, "%Y-%m-%dT%H:%M:%SZ")
                    .expect("announced time"),
            );
        } else if line.contains("backup started:") {
            let id = line
                .split_once(" id=")
                .map(|(_, r)| r.trim_start_matches('"'))
                .and_then(|r| r.get(..20))
                .expect("run id");
            let started =
                chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ").expect("id time");
            starts.push((id.to_string(), started));
        }
    }
    let mut checked = 0;
    for (id, started) in &starts {
        let due = announced
            .iter()
            .min_by_key(|a| (**a - *started).num_milliseconds().abs())
            .expect("runs are announced");
        assert!(
            started >= due,
            "run {id} started before its announced time {due}:\n{log}"
        );
        checked += 1;
    }
    assert!(checked >= 4, "{log}");
}

/// `health` is healthy after a good run, goes unhealthy once the newest backup is older
/// than `max_staleness` or the last run failed, and recovers after the next good run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_staleness_and_failures() {
    let (pg, _s3, setup) = moto_stack_with(500, "{ keep_last = 5 }", |c| {
        c.job("max_staleness = \"4s\"")
    })
    .await;
    let pid_file = setup.dir.path().join("stowage.pid");
    let state_file = setup.dir.path().join("state.json");
    let envs = [
        ("STOWAGE_PID_FILE", pid_file.as_os_str()),
        ("STOWAGE_STATE_FILE", state_file.as_os_str()),
    ];
    let daemon = || {
        let child = Command::new(common::stowage_bin())
            .arg("--config")
            .arg(&setup.config)
            .arg("daemon")
            .envs(envs)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn daemon");
        Running(Some(child))
    };
    let health = || {
        let out = Command::new(common::stowage_bin())
            .arg("--config")
            .arg(&setup.config)
            .arg("health")
            .envs(envs)
            .output()
            .expect("health");
        (out.status.code(), text(&out))
    };
    let wait_health = |code: i32, what: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (c, t) = health();
            if c == Some(code) {
                return t;
            }
            assert!(Instant::now() < deadline, "health never became {what}: {t}");
            std::thread::sleep(Duration::from_millis(250));
        }
    };

    assert_eq!(health().0, Some(1), "no daemon yet: unhealthy");
    // The catch-up run makes it healthy; 4 s later the backup is stale.
    let mut child = daemon();
    wait_for_log(&setup, &mut child, "backup success: job=app");
    let t = wait_health(0, "healthy");
    assert!(t.contains("healthy: daemon running"), "{t}");
    let t = wait_health(1, "unhealthy (stale)");
    assert!(
        t.contains("newest backup is from") && t.contains("older than max_staleness 4s"),
        "{t}"
    );
    assert!(sigterm(child).status.success());

    // A restart (now every second, so the stale backup is due) runs and is healthy again.
    set_schedule(&setup, "* * * * * *");
    let mut child = daemon();
    wait_for_log(&setup, &mut child, "catch-up: newest backup of app");
    wait_health(0, "healthy again");
    assert!(sigterm(child).status.success());

    // A failing run: unhealthy, naming the job and the cause.
    pg.psql("postgres", "alter database app rename to app_gone");
    let mut child = daemon();
    wait_for_log(&setup, &mut child, "backup failed: job=app");
    let t = wait_health(1, "unhealthy (failed)");
    assert!(
        t.contains("job app: last run") && t.contains("failed"),
        "{t}"
    );
    assert!(sigterm(child).status.success());
    assert_eq!(health().0, Some(1), "stopped daemon: unhealthy");
}

/// A scheduled run that fails is tried again after `retry_delay`; the retry succeeds once
/// the cause is gone, and the failed attempt left nothing behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_scheduled_run_is_retried() {
    let (pg, s3, setup) = moto_stack_with(500, "{ keep_last = 5 }", |c| {
        c.job("retries = 2\nretry_delay = \"2s\"")
    })
    .await;
    pg.psql("postgres", "alter database app rename to app_away");
    // No backup yet: the catch-up run at start fails, then waits 2 s.
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_for_log(&setup, &mut child, "retry 1/2 in 2s");
    pg.psql("postgres", "alter database app_away rename to app");
    wait_for_log(&setup, &mut child, "backup success: job=app");
    let out = sigterm(child);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("backup failed: job=app"), "{log}");
    assert_eq!(ids_on(&setup.config, "local").len(), 1);
    assert_eq!(ids_on(&setup.config, "offsite").len(), 1);
    assert_eq!(files_under(&setup.local).len(), 2);
    assert_eq!(s3.list_keys(BUCKET, "").await.len(), 2);
}

/// `nice`/`ionice` put the job's pg_dump at low CPU and I/O priority (seen in /proc while
/// the dump is held up by a table lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nice_and_ionice_apply_to_pg_dump() {
    let (pg, _s3, setup) = moto_stack_with(500, "{ keep_last = 5 }", |c| {
        c.job("nice = 19\nionice = \"idle\"")
    })
    .await;
    let mut lock = pg.session("app");
    lock.exec("begin; lock table public.orders in access exclusive mode");
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    let stowage_pid = child.child().id();
    // The pg_dump child of this stowage process.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dump_pid = loop {
        let found = std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
            .find(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let fields: Vec<&str> = stat
                    .rsplit_once(')')
                    .map(|(_, rest)| rest.split_whitespace().collect())
                    .unwrap_or_default();
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                // The dump itself, not the `pg_dump --version` run before it.
                stat.contains("(pg_dump)")
                    && fields.get(1) == Some(&stowage_pid.to_string().as_str())
                    && String::from_utf8_lossy(&cmdline).contains("--format=custom")
            });
        if let Some(pid) = found {
            break pid;
        }
        assert!(Instant::now() < deadline, "no pg_dump child of stowage");
        std::thread::sleep(Duration::from_millis(20));
    };
    let stat = std::fs::read_to_string(format!("/proc/{dump_pid}/stat")).expect("stat");
    let after_comm: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // Field 19 (nice) is the 17th after the command name.
    assert_eq!(after_comm.get(16), Some(&"19"), "{stat}");
    let io = Command::new("ionice")
        .args(["-p", &dump_pid.to_string()])
        .output()
        .expect("ionice");
    assert_eq!(String::from_utf8_lossy(&io.stdout).trim(), "idle");
    lock.exec("commit");
    lock.close();
    let out = child.take().wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", text(&out));
}

/// SIGHUP applies a valid edited config without a restart (a new job runs), and rejects an
/// invalid one with a clear log line while the running config keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_rejects_an_invalid_one() {
    let (_pg, _s3, setup) = moto_stack(500, "{ keep_last = 3 }").await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_for_log(&setup, &mut child, "backup success: job=app");

    // A second job, every 2 seconds, to the local destination only.
    let body = std::fs::read_to_string(&setup.config).expect("read");
    let db_url = body
        .lines()
        .find_map(|l| l.strip_prefix("url = "))
        .expect("url line")
        .to_string();
    let good = format!(
        "{body}\n[jobs.second]\nschedule = \"*/2 * * * * *\"\ndestinations = [\"local\"]\n\n[[jobs.second.sources]]\ntype = \"postgres\"\nname = \"db\"\nurl = {db_url}\n"
    );
    std::fs::write(&setup.config, &good).expect("write");
    signal(&child, "HUP");
    wait_for_log(&setup, &mut child, "config reloaded from");
    wait_for_log(&setup, &mut child, "backup success: job=second");

    // An invalid edit is rejected; the running config (with job second) goes on.
    std::fs::write(&setup.config, good.replace("*/2 * * * * *", "0 25 * * *")).expect("write");
    signal(&child, "HUP");
    wait_for_log(&setup, &mut child, "config reload rejected");
    let second = "backup success: job=second ";
    let before = log_count(&setup, second);
    poll_running(
        &mut child,
        "job second to go on after a rejected reload",
        30,
        || log_count(&setup, second) > before,
    );
    let out = sigterm(child);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("new: second"), "{log}");
    assert!(
        log.contains("jobs.second.schedule: invalid schedule \"0 25 * * *\""),
        "the rejection names the key: {log}"
    );
}

/// Poll /healthz until it answers `code`; returns that answer's body.
fn healthz_becomes(port: u16, code: u16, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (got, body) = http_get(port, "/healthz");
        if got == code {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {code}: {got} {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The HTTP listener: /healthz follows the same verdict as `stowage health`, /metrics is
/// valid Prometheus text with the per-job figures, / is a status page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_listener_serves_health_metrics_and_status() {
    let port = common::free_port();
    let (_pg, _s3, setup) = moto_stack_with(500, "{ keep_last = 3 }", |c| {
        c.top(&format!("[server]\nlisten = \"127.0.0.1:{port}\""))
            .job("max_staleness = \"5s\"")
    })
    .await;
    let mut child = spawn_stowage(&setup.config, &["daemon"]);
    wait_for_log(&setup, &mut child, "backup success: job=app");

    healthz_becomes(port, 200, 20);

    let (code, metrics) = http_get(port, "/metrics");
    assert_eq!(code, 200);
    let scrape = prometheus_parse::Scrape::parse(
        metrics
            .lines()
            .map(|l| Ok::<_, std::io::Error>(l.to_string())),
    )
    .expect("valid Prometheus text format");
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{metrics}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => panic!("unexpected type for {name}"),
        }
    };
    assert_eq!(
        value(
            "stowage_runs_total",
            &[("job", "app"), ("outcome", "success")]
        ),
        1.0
    );
    let last = value("stowage_last_success_timestamp_seconds", &[("job", "app")]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(now - last < 60.0 && now >= last, "{last} vs {now}");
    assert!(value("stowage_last_run_duration_seconds", &[("job", "app")]) > 0.0);
    assert!(value("stowage_read_bytes_total", &[("job", "app")]) > 0.0);
    assert!(value("stowage_stored_bytes_total", &[("job", "app")]) > 0.0);
    assert_eq!(
        value(
            "stowage_backups",
            &[("job", "app"), ("destination", "local")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "stowage_backups",
            &[("job", "app"), ("destination", "offsite")]
        ),
        1.0
    );
    assert!(value("stowage_process_resident_memory_bytes", &[]) > 1_000_000.0);

    let (code, page) = http_get(port, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("<td>app</td>") && page.contains("success"),
        "{page}"
    );

    // Stale after 5 s: /healthz says so with the reason.
    let body = healthz_becomes(port, 503, 30);
    assert!(body.contains("older than max_staleness 5s"), "{body}");
    assert!(sigterm(child).status.success());
}

/// Notifications: healthchecks-style pings around every run (/start, then success or
/// /fail), webhooks (JSON and Slack-compatible) for failures, and for successes if asked;
/// URLs (which hold tokens) never reach the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_report_runs() {
    let rx = Receiver::start();
    let p = rx.port;
    let notify = format!(
        "[[jobs.app.notify]]\ntype = \"healthchecks\"\nurl = \"http://127.0.0.1:{p}/ping/sekrit-uuid\"\n\n\
         [[jobs.app.notify]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{p}/hook/sekrit\"\non_success = true\n\n\
         [[jobs.app.notify]]\ntype = \"webhook\"\nformat = \"slack\"\nurl = \"http://127.0.0.1:{p}/slack/sekrit\"\n"
    );
    let (pg, _s3, setup) = moto_stack_with(500, "{ keep_last = 3 }", |c| c.section(&notify)).await;

    let out = run_stowage(&setup.config, ["run", "app"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(!log.contains("sekrit"), "a URL reached the log: {log}");
    let got = rx.take();
    let paths: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/ping/sekrit-uuid/start",
            "/ping/sekrit-uuid",
            "/hook/sekrit"
        ],
        "{got:#?}"
    );
    assert!(got.iter().all(|(m, _, _)| m == "POST"));
    let event: serde_json::Value = serde_json::from_str(&got[2].2).expect("json body");
    assert_eq!(event["job"], "app");
    assert_eq!(event["outcome"], "success");
    assert_eq!(event["published"], serde_json::json!(["local", "offsite"]));

    pg.psql("postgres", "alter database app rename to app_away");
    let out = run_stowage(&setup.config, ["run", "app"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let got = rx.take();
    let paths: Vec<&str> = got.iter().map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "/ping/sekrit-uuid/start",
            "/ping/sekrit-uuid/fail",
            "/hook/sekrit",
            "/slack/sekrit"
        ],
        "{got:#?}"
    );
    assert!(
        got[1].2.contains("backup failed for job app"),
        "{}",
        got[1].2
    );
    let event: serde_json::Value = serde_json::from_str(&got[2].2).expect("json body");
    assert_eq!(event["outcome"], "failed");
    assert!(
        event["errors"][0]
            .as_str()
            .unwrap_or("")
            .contains("app_away")
            || event["errors"][0]
                .as_str()
                .unwrap_or("")
                .contains("does not exist"),
        "{event}"
    );
    let slack: serde_json::Value = serde_json::from_str(&got[3].2).expect("json body");
    assert!(
        slack["text"]
            .as_str()
            .unwrap_or("")
            .starts_with("stowage: backup failed for job app"),
        "{slack}"
    );
}

/// A tmpfs mounted for the test, unmounted even when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and needs root: {}",
            text(&out)
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The local volume fills up in the middle of a write: that destination fails with the
/// cause named, the other still publishes, nothing half-written stays on the full volume
/// and the backup already there is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_local_destination_fails_cleanly() {
    let (pg, s3, setup) = moto_stack(500, "{ keep_last = 5 }").await;
    let _fs = Tmpfs::mount(&setup.local, "3m");
    run_ok(&setup.config);
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(&setup.local)
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read");
            (p, data)
        })
        .collect();
    assert_eq!(before.len(), 2);
    let want = pg.table_checksums("app");
    // Grow the database well past the volume's free space (random text barely compresses).
    pg.psql(
        "app",
        "create table filler as select g, md5(random()::text) || md5(random()::text) as v \
         from generate_series(1, 200000) g",
    );
    let out = run_stowage(&setup.config, ["run", "app"]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("backup partial: job=app"), "{log}");
    assert!(
        log.contains("destination local failed") && log.contains("no space left on device"),
        "the cause is named: {log}"
    );
    let after: Vec<(PathBuf, Vec<u8>)> = files_under(&setup.local)
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).expect("read");
            (p, data)
        })
        .collect();
    assert_eq!(
        after, before,
        "the full volume holds exactly the earlier backup"
    );
    let earlier = ids_on(&setup.config, "local");
    assert_eq!(earlier.len(), 1);
    assert_eq!(ids_on(&setup.config, "offsite").len(), 2);
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0);
    assert_all_restore(&setup.config, &pg, &earlier, &want);
}

/// The S3 server goes down in the middle of a multipart upload. Back within seconds: the
/// SDK's per-part retries carry the upload through and the backup restores. Down for good:
/// that destination fails cleanly (after its retries) and the local copy still publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_mid_upload_is_retried_or_fails_cleanly() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 100_000);
    let mut s3 = S3Server::s3s_fs();
    s3.create_bucket(BUCKET).await;
    let setup = write_config(
        &pg.url("app"),
        &s3,
        "{ keep_last = 5 }",
        "{ keep_last = 5 }",
        BUCKET,
    );

    // Back after 3 s.
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    s3.stop();
    std::thread::sleep(Duration::from_secs(3));
    s3.start_again();
    let out = child.take().wait_with_output().expect("wait");
    let log = text(&out);
    assert!(
        out.status.success(),
        "the upload should survive a 3 s outage: {log}"
    );
    assert_eq!(ids_on(&setup.config, "offsite").len(), 1);
    pg.create_db("restored");
    let r = restore(
        &setup.config,
        &["--from", "offsite", "--to", &pg.url("restored")],
    );
    assert!(r.status.success(), "{}", text(&r));
    assert_eq!(pg.table_checksums("restored"), pg.table_checksums("app"));

    // Down for good: offsite fails with the cause, local publishes, nothing else changes.
    let mut child = spawn_stowage(&setup.config, &["run", "app"]);
    wait_until_streaming(&setup, &mut child, 6 * 1024 * 1024);
    s3.stop();
    let out = child.take().wait_with_output().expect("wait");
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("backup partial: job=app"), "{log}");
    assert!(log.contains("destination offsite failed"), "{log}");
    assert!(partials(&setup.local).is_empty());
    s3.start_again();
    assert_eq!(ids_on(&setup.config, "local").len(), 2);
    assert_eq!(
        ids_on(&setup.config, "offsite").len(),
        1,
        "no new backup on offsite"
    );
}

/// On start, a job with no backup (or only a stale one) runs at once; a fresh one does not;
/// `catch_up = false` turns it off. Restarting the container must never cost a backup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_runs_at_start_only_when_due() {
    let (_pg, _s3, setup) = moto_stack(500, "{ keep_last = 5 }").await;

    let start_and_stop = |wait: Duration| -> String {
        let mut child = spawn_stowage(&setup.config, &["daemon"]);
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            assert!(
                child.child().try_wait().expect("try_wait").is_none(),
                "daemon exited early"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        text(&sigterm(child))
    };

    // No backup yet: the daily job runs right away.
    let first = start_and_stop(Duration::from_secs(8));
    assert!(
        first.contains("catch-up: job app has no published backup yet"),
        "{first}"
    );
    assert!(first.contains("backup success: job=app"), "{first}");
    assert_eq!(ids_on(&setup.config, "local").len(), 1);

    // Fresh backup: a restart does not run it again.
    let second = start_and_stop(Duration::from_secs(4));
    assert!(!second.contains("catch-up"), "{second}");
    assert_eq!(ids_on(&setup.config, "local").len(), 1);

    // Turned off: no run even with nothing fresh (a new, empty destination prefix).
    let body = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace("timezone = ", "catch_up = false\ntimezone = ")
        .replace("prefix = \"nightly\"", "prefix = \"other\"")
        .replace(
            "local\"\npath = \"",
            "local\"\npath = \"/nonexistent-unused",
        );
    std::fs::write(&setup.config, body).expect("write");
    let third = start_and_stop(Duration::from_secs(4));
    assert!(
        !third.contains("catch-up") && !third.contains("backup started"),
        "{third}"
    );
}
