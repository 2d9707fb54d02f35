//! Messages people read: email through a real SMTP server (aiosmtpd; plain with AUTH on
//! loopback, STARTTLS, TLS) and ntfy to a local HTTP server. One message per failure, per
//! recovery and per run with warnings; successes only when asked; a daily digest; a server
//! that cannot be reached changes nothing about the run.

mod common;
#[path = "common/notify.rs"]
mod receivers;

use std::path::Path;
use std::time::Duration;

use common::{private_ca, run_stowage_with_env, spawn_stowage_with_env, text, toml_str};
use receivers::{HttpRecorder, SmtpServer};
use stowage::pipeline::{Outcome, RunReport};

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A config with one job `app` (a command source writing `dump`, or failing) and `notify`.
fn write_config(dir: &Path, dump: &str, notify: &str) -> std::path::PathBuf {
    write_config_on(dir, "0 3 * * *", dump, notify)
}

fn write_config_on(dir: &Path, schedule: &str, dump: &str, notify: &str) -> std::path::PathBuf {
    let keys = format!(
        "schedule = {}\nretries = 0\ncatch_up = false\n",
        toml_str(schedule)
    );
    write_config_keys(dir, &keys, dump, notify)
}

/// [`write_config`] with the job's own keys (`schedule`, `retries`, ...) as given.
fn write_config_keys(dir: &Path, keys: &str, dump: &str, notify: &str) -> std::path::PathBuf {
    let config = dir.join("stowage.toml");
    let body = format!(
        "[destinations.local]\ntype = \"local\"\npath = {}\n\n\
         [jobs.app]\n{keys}destinations = [\"local\"]\n\n\
         [[jobs.app.sources]]\ntype = \"command\"\nname = \"db\"\ndump = [\"sh\", \"-c\", {}]\n\n{notify}",
        toml_str(dir.join("store").display()),
        toml_str(dump),
    );
    std::fs::write(&config, body).expect("write config");
    config
}

fn job(config: &Path) -> stowage::config::Job {
    let c = stowage::load::load(config).expect("config loads");
    c.jobs.get("app").cloned().expect("job app")
}

fn report(outcome: Outcome, errors: &[(&str, &str)], warnings: &[&str]) -> RunReport {
    RunReport {
        job: "app".into(),
        id: "20261206T031500Z".into(),
        outcome,
        bytes_in: 2048,
        bytes_out: 1024,
        duration: Duration::from_millis(1500),
        published: if outcome == Outcome::Success {
            vec!["local".into()]
        } else {
            vec![]
        },
        errors: errors
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        kept: vec![],
        retention_interrupted: false,
        hooks: vec![],
        warnings: warnings.iter().map(|w| w.to_string()).collect(),
    }
}

fn email_notify(port: u16, to: &str, extra: &str) -> String {
    format!(
        "[[jobs.app.notify]]\ntype = \"email\"\nto = [{}]\nfrom = \"stowage <backups@example.com>\"\n\
         smtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n{extra}\n",
        toml_str(to)
    )
}

/// A failure sends one message; the success after it one "recovered"; a success after a
/// success none, except to a notifier with `on_success`; a success with warnings one
/// "warning". Over a plain loopback connection with AUTH from `password_file`.
#[tokio::test]
async fn email_failure_recovery_warning_and_quiet_successes() {
    let smtp = SmtpServer::start("plain", None, Some(("stowage", "s3cret pw")));
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("smtp-password");
    std::fs::write(&pw, "s3cret pw\n").expect("write password");
    let login = format!(
        "tls = \"none\"\nusername = \"stowage\"\npassword_file = {}\n",
        toml_str(pw.display())
    );
    let notify = email_notify(smtp.port, "ops@example.com", &login)
        + &email_notify(
            smtp.port,
            "Chatty <all@example.com>",
            &format!("{login}on_success = true\n"),
        );
    let job = job(&write_config(dir.path(), "echo hi", &notify));
    let host = hostname();

    let failed = report(
        Outcome::Failed,
        &[("source db", "connection refused (is the database up?)")],
        &[],
    );
    stowage::notify::finished(&job, &failed, false).await;
    let mails = smtp.mails();
    // Both notifiers get the failure: on_success adds successes, never takes failures away.
    assert_eq!(mails.len(), 2, "{mails:#?}");
    let m = &mails[0];
    assert_eq!(m.to, vec!["ops@example.com"]);
    assert_eq!(m.from, "backups@example.com");
    assert_eq!(m.login.as_deref(), Some("stowage"));
    assert_eq!(
        m.header("Subject").as_deref(),
        Some(format!("stowage: job app FAILED on {host}").as_str())
    );
    let body = m.body();
    assert!(
        body.contains("- source db: connection refused (is the database up?)"),
        "{body}"
    );
    assert!(body.contains("backup failed for job app"), "{body}");
    assert!(body.contains("stowage run app"), "{body}");
    assert!(body.contains("stowage list app"), "{body}");
    assert!(!m.data.contains("s3cret"), "the password reached a message");
    assert_eq!(mails[1].to, vec!["all@example.com"]);

    let ok = report(Outcome::Success, &[], &[]);
    stowage::notify::finished(&job, &ok, true).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 4, "{mails:#?}");
    assert_eq!(
        mails[2].header("Subject").as_deref(),
        Some(format!("stowage: job app recovered on {host}").as_str())
    );
    assert!(mails[2].body().contains("succeeded again after a failure"));

    // A success after a success: only the on_success notifier hears of it.
    stowage::notify::finished(&job, &ok, false).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 5, "{mails:#?}");
    assert_eq!(mails[4].to, vec!["all@example.com"]);
    assert_eq!(
        mails[4].header("Subject").as_deref(),
        Some(format!("stowage: job app succeeded on {host}").as_str())
    );

    let warned = report(
        Outcome::Success,
        &[],
        &["the dump of db is 40% of the previous one"],
    );
    stowage::notify::finished(&job, &warned, false).await;
    let mails = smtp.mails();
    assert_eq!(mails.len(), 7, "{mails:#?}");
    assert_eq!(mails[5].to, vec!["ops@example.com"]);
    assert_eq!(
        mails[5].header("Subject").as_deref(),
        Some(format!("stowage: job app succeeded with warnings on {host}").as_str())
    );
    let body = mails[5].body();
    assert!(
        body.contains("- the dump of db is 40% of the previous one"),
        "{body}"
    );

    // A cancelled run is neither a failure nor a backup.
    stowage::notify::finished(&job, &report(Outcome::Cancelled, &[], &[]), true).await;
    assert_eq!(smtp.mails().len(), 7);
}

/// `stowage run` of a failing job mails over STARTTLS (port of the server, CA from
/// `$SSL_CERT_FILE`) and over TLS from the first byte, with AUTH; the run's exit code is
/// the failure's.
#[test]
fn a_failed_run_mails_over_starttls_and_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_ca(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let login = Some(("ops@example.com", "pw-over-tls"));
    let starttls = SmtpServer::start("starttls", Some((&cert, &key)), login);
    let tls = SmtpServer::start("tls", Some((&cert, &key)), login);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pw-over-tls").expect("write password");
    let auth = format!(
        "username = \"ops@example.com\"\npassword_file = {}\n",
        toml_str(pw.display())
    );
    let notify = email_notify(starttls.port, "ops@example.com", &auth)
        + &email_notify(
            tls.port,
            "ops@example.com",
            &format!("{auth}tls = \"tls\"\n"),
        );
    let config = write_config(
        dir.path(),
        "echo 'no such table: users' >&2; exit 3",
        &notify,
    );
    let ca = dir.path().join("ca.pem");
    let state = dir.path().join("state.json");
    let out = run_stowage_with_env(
        &config,
        ["run", "app"],
        &[
            ("SSL_CERT_FILE", ca.to_str().expect("utf-8 path")),
            ("STOWAGE_STATE_FILE", state.to_str().expect("utf-8 path")),
        ],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    for server in [&starttls, &tls] {
        let mails = server.mails();
        assert_eq!(mails.len(), 1, "{log}\n{mails:#?}");
        assert!(mails[0].tls, "sent without TLS");
        assert_eq!(mails[0].login.as_deref(), Some("ops@example.com"));
        assert!(
            mails[0]
                .header("Subject")
                .is_some_and(|s| s.starts_with("stowage: job app FAILED on ")),
            "{:?}",
            mails[0].header("Subject")
        );
        let body = mails[0].body();
        assert!(body.contains("no such table: users"), "{body}");
    }
    assert!(!log.contains("pw-over-tls"), "{log}");
}

/// Without the CA, the STARTTLS server's certificate is refused: nothing is sent, the
/// failure is logged, and the run's outcome (a success) stands.
#[test]
fn an_unreachable_or_untrusted_server_is_logged_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    private_ca(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let untrusted = SmtpServer::start("starttls", Some((&cert, &key)), None);
    let closed = common::free_port();
    let notify = email_notify(
        closed,
        "ops@example.com",
        "on_success = true\ntls = \"none\"\n",
    ) + &email_notify(untrusted.port, "ops@example.com", "on_success = true\n");
    let config = write_config(dir.path(), "echo hello", &notify);
    let state = dir.path().join("state.json");
    let out = run_stowage_with_env(
        &config,
        ["run", "app"],
        &[("STOWAGE_STATE_FILE", state.to_str().expect("utf-8 path"))],
    );
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains(&format!(
            "could not notify email smtp://127.0.0.1:{closed} to ops@example.com"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "could not notify email smtp://127.0.0.1:{} to ops@example.com",
            untrusted.port
        )),
        "{log}"
    );
    assert!(log.contains("the run's outcome is unchanged"), "{log}");
    assert!(untrusted.mails().is_empty());
}

/// ntfy: a POST to the topic with Title, Priority and Tags headers, the token from
/// `token_file` as a bearer, the message as the body; failures at the configured priority.
#[tokio::test]
async fn ntfy_posts_to_the_topic_with_title_priority_and_token() {
    let rx = HttpRecorder::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("ntfy-token");
    std::fs::write(&token, "tk_sekrit\n").expect("write token");
    let notify = format!(
        "[[jobs.app.notify]]\ntype = \"ntfy\"\nurl = \"http://127.0.0.1:{}/backups-topic\"\n\
         token_file = {}\npriority = \"urgent\"\n",
        rx.port,
        toml_str(token.display())
    );
    let job = job(&write_config(dir.path(), "echo hi", &notify));
    let host = hostname();

    let failed = report(Outcome::Failed, &[("destination local", "disk full")], &[]);
    stowage::notify::finished(&job, &failed, false).await;
    let got = rx.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    let r = &got[0];
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/backups-topic")
    );
    assert_eq!(
        r.header("title"),
        Some(format!("stowage: job app FAILED on {host}").as_str())
    );
    assert_eq!(r.header("priority"), Some("5"));
    assert_eq!(r.header("tags"), Some("rotating_light"));
    assert_eq!(r.header("authorization"), Some("Bearer tk_sekrit"));
    assert!(
        r.body.contains("- destination local: disk full"),
        "{}",
        r.body
    );
    assert!(r.body.contains("stowage list app"), "{}", r.body);

    stowage::notify::finished(&job, &report(Outcome::Success, &[], &[]), true).await;
    let got = rx.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        got[0].header("title"),
        Some(format!("stowage: job app recovered on {host}").as_str())
    );
    assert_eq!(got[0].header("priority"), Some("3"));

    stowage::notify::finished(&job, &report(Outcome::Success, &[], &[]), false).await;
    assert!(
        rx.take().is_empty(),
        "a plain success was sent without on_success"
    );

    let warned = report(Outcome::Success, &[], &["db is 40% of the previous dump"]);
    stowage::notify::finished(&job, &warned, false).await;
    let got = rx.take();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(got[0].header("tags"), Some("warning"));
    assert!(got[0].body.contains("db is 40% of the previous dump"));
}

/// The digest: at `digest = "HH:MM"` one message listing the job's runs since the daemon
/// started (counts, warnings, the last error), sent by the daemon's digest task.
#[tokio::test]
async fn the_daily_digest_lists_the_runs_at_its_time() {
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    // The next whole minute (UTC, the job's timezone), at least 5 s away.
    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(65);
    let digest = format!("tls = \"none\"\ndigest = \"{}\"\n", at.format("%H:%M"));
    let notify = email_notify(smtp.port, "ops@example.com", &digest);
    let config = write_config(dir.path(), "echo hi", &notify);
    let loaded = std::sync::Arc::new(stowage::load::load(&config).expect("config loads"));
    let job = loaded.jobs["app"].clone();

    let stop = tokio_util::sync::CancellationToken::new();
    let view = {
        let c = loaded.clone();
        move || (c.clone(), stowage::status::State::default())
    };
    let task = tokio::spawn(stowage::notify::digest_task(view, stop.clone()));
    stowage::notify::finished(
        &job,
        &report(Outcome::Failed, &[("source db", "timeout")], &[]),
        false,
    )
    .await;
    let warned = report(Outcome::Success, &[], &["db is 40% of the previous dump"]);
    stowage::notify::finished(&job, &warned, true).await;
    // The failure and the recovery were mailed at once.
    assert_eq!(smtp.mails().len(), 2);

    let mails = tokio::task::spawn_blocking(move || {
        let m = smtp.wait_for(3, Duration::from_secs(150));
        (m, smtp)
    })
    .await
    .expect("wait");
    let (mails, smtp) = mails;
    stop.cancel();
    task.await.expect("digest task ends on stop");
    assert_eq!(mails.len(), 3, "{mails:#?}");
    let m = &mails[2];
    assert!(
        m.header("Subject")
            .is_some_and(|s| s.starts_with("stowage: daily digest for ")),
        "{:?}",
        m.header("Subject")
    );
    let body = m.body();
    assert!(
        body.contains("job app: 2 run(s): 1 succeeded, 1 failed, 0 partly failed"),
        "{body}"
    );
    assert!(
        body.contains("warning: db is 40% of the previous dump"),
        "{body}"
    );
    assert!(body.contains("last error: source db: timeout"), "{body}");
    drop(smtp);
}

/// The daemon: every failed run mails once, the first success after them mails "recovered"
/// (it knows the previous outcome from its state), and the successes after that mail nothing.
#[test]
fn the_daemon_mails_each_failure_then_one_recovery() {
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let down = dir.path().join("down");
    std::fs::write(&down, "").expect("flag");
    let dump = format!(
        "if [ -e '{}' ]; then echo 'db is down' >&2; exit 3; fi; echo data",
        down.display()
    );
    let notify = email_notify(smtp.port, "ops@example.com", "tls = \"none\"\n");
    let config = write_config_on(dir.path(), "*/2 * * * * *", &dump, &notify);
    let pid = dir.path().join("stowage.pid");
    let daemon = spawn_stowage_with_env(
        &config,
        ["daemon"],
        &[("STOWAGE_PID_FILE", pid.as_os_str())],
    );
    let first = smtp.wait_for(1, Duration::from_secs(60));
    assert!(
        first
            .first()
            .and_then(|m| m.header("Subject"))
            .is_some_and(|s| s.contains("FAILED")),
        "{}\n{first:#?}",
        daemon.output_so_far()
    );
    std::fs::remove_file(&down).expect("remove flag");
    let start = std::time::Instant::now();
    let successes = |log: &str| log.matches("outcome=\"success\"").count();
    while successes(&daemon.output_so_far()) < 3 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(60));
    let log = text(&out);
    assert!(successes(&log) >= 3, "{log}");
    let failures = log.matches("outcome=\"failed\"").count();
    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(subjects.len(), failures + 1, "{subjects:#?}\n{log}");
    let (last, before) = subjects.split_last().expect("mails");
    assert!(
        last.starts_with("stowage: job app recovered on "),
        "{subjects:#?}"
    );
    assert!(
        before.iter().all(|s| s.contains(" FAILED on ")),
        "{subjects:#?}"
    );
    assert!(
        mails[0].body().contains("db is down"),
        "{}",
        mails[0].body()
    );
}

/// Heals, verifies and drills that people should read reach email too: a failed drill, a
/// verify that found problems, missing tables put back, and a heal failure once until a
/// healthy pass; passes that found nothing wrong send nothing.
#[tokio::test]
async fn failed_drills_and_verifies_and_heals_are_mailed() {
    use stowage::heal::{HealOutcome, HealReport, Healed};
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = email_notify(smtp.port, "ops@example.com", "tls = \"none\"\n");
    let job = job(&write_config(dir.path(), "echo hi", &notify));
    let subjects = || -> Vec<String> {
        smtp.mails()
            .iter()
            .filter_map(|m| m.header("Subject"))
            .collect()
    };

    let mut drill = stowage::drill::DrillReport {
        job: "app".into(),
        id: Some("20261206T031500Z".into()),
        destination: Some("local".into()),
        duration: Duration::from_secs(3),
        ok: vec![],
        problems: vec!["table orders: 0 rows restored, the dump says 12".into()],
        point: None,
    };
    stowage::notify::drilled(&job, &drill).await;
    drill.problems.clear();
    drill.ok.push("table orders: 12 rows".into());
    stowage::notify::drilled(&job, &drill).await;
    let mails = smtp.mails();
    assert_eq!(subjects().len(), 1, "{:#?}", subjects());
    assert!(
        subjects()[0].starts_with("stowage: job app restore drill FAILED on "),
        "{:#?}",
        subjects()
    );
    assert!(
        mails[0]
            .body()
            .contains("0 rows restored, the dump says 12"),
        "{}",
        mails[0].body()
    );

    let mut verify = stowage::verify::VerifyReport {
        job: "app".into(),
        checked: vec![],
        unreachable: vec!["cannot list offsite: access denied".into()],
    };
    stowage::notify::verified(&job, &verify).await;
    verify.unreachable.clear();
    stowage::notify::verified(&job, &verify).await;
    assert_eq!(subjects().len(), 2, "{:#?}", subjects());
    assert!(
        subjects()[1].contains(" verify FAILED on "),
        "{:#?}",
        subjects()
    );
    assert!(
        smtp.mails()[1]
            .body()
            .contains("cannot list offsite: access denied")
    );

    let heal = |outcome: HealOutcome, why: &str| HealReport {
        job: "app".into(),
        source: "db".into(),
        dry_run: false,
        outcome,
        watched: vec!["public.orders".into()],
        missing: vec!["public.orders".into()],
        restored: if outcome == HealOutcome::Healed {
            vec![Healed {
                object: "public.orders".into(),
                backup: "20261206T031500Z".into(),
                destination: "local".into(),
            }]
        } else {
            vec![]
        },
        failed: if outcome == HealOutcome::Failed {
            vec![("public.orders".into(), why.into())]
        } else {
            vec![]
        },
        incomplete: vec![],
        new_since_backup: vec![],
        unreachable: None,
        duration_s: 1.0,
    };
    let ok = || {
        let mut r = heal(HealOutcome::Ok, "");
        r.missing.clear();
        r
    };
    stowage::notify::healed(&job, &heal(HealOutcome::Healed, "")).await;
    stowage::notify::healed(&job, &ok()).await;
    // Failing every pass the same way: one message; after a healthy pass, news again.
    stowage::notify::healed(&job, &heal(HealOutcome::Failed, "permission denied")).await;
    stowage::notify::healed(&job, &heal(HealOutcome::Failed, "permission denied")).await;
    stowage::notify::healed(&job, &heal(HealOutcome::Failed, "disk full")).await;
    stowage::notify::healed(&job, &ok()).await;
    stowage::notify::healed(&job, &heal(HealOutcome::Failed, "disk full")).await;
    let s = subjects();
    assert_eq!(s.len(), 6, "{s:#?}");
    assert!(
        s[2].contains(" healed: missing objects put back on "),
        "{s:#?}"
    );
    assert!(
        s[3..].iter().all(|x| x.contains(" heal FAILED on ")),
        "{s:#?}"
    );
    let mails = smtp.mails();
    assert!(
        mails[2]
            .body()
            .contains("public.orders from 20261206T031500Z on local"),
        "{}",
        mails[2].body()
    );
    assert!(
        mails[3].body().contains("permission denied"),
        "{}",
        mails[3].body()
    );
    assert!(mails[4].body().contains("disk full"), "{}", mails[4].body());
}

/// A daemon whose job has `retries = 2` and a dump that fails while the file `down` exists:
/// its catch-up run starts at once. Returns the daemon and the flag file.
fn retrying_daemon(
    dir: &Path,
    smtp: &SmtpServer,
    retry_delay: &str,
) -> (common::Running, std::path::PathBuf) {
    let down = dir.join("down");
    std::fs::write(&down, "").expect("flag");
    let dump = format!(
        "if [ -e '{}' ]; then echo 'db is down' >&2; exit 3; fi; echo data",
        down.display()
    );
    let notify = email_notify(smtp.port, "ops@example.com", "tls = \"none\"\n");
    let keys = format!(
        "schedule = \"0 3 * * *\"\ncatch_up = true\nretries = 2\nretry_delay = {}\n",
        toml_str(retry_delay)
    );
    let config = write_config_keys(dir, &keys, &dump, &notify);
    let pid = dir.join("stowage.pid");
    let daemon = spawn_stowage_with_env(
        &config,
        ["daemon"],
        &[("STOWAGE_PID_FILE", pid.as_os_str())],
    );
    (daemon, down)
}

/// With `retries`, a scheduled run's failure is mailed once, by its first attempt, saying
/// that retries follow; the retries that fail too send nothing more.
#[test]
fn a_run_whose_retries_all_fail_is_mailed_once() {
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, _down) = retrying_daemon(dir.path(), &smtp, "1s");
    let failures = |log: &str| log.matches("outcome=\"failed\"").count();
    let start = std::time::Instant::now();
    while failures(&daemon.output_so_far()) < 3 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
    }
    // The last attempt's notifications come right after its outcome is logged.
    std::thread::sleep(Duration::from_secs(2));
    daemon.signal("TERM");
    let log = text(&daemon.wait(Duration::from_secs(60)));
    assert_eq!(failures(&log), 3, "three attempts, all failed:\n{log}");
    let mails = smtp.mails();
    let subjects: Vec<String> = mails.iter().filter_map(|m| m.header("Subject")).collect();
    assert_eq!(subjects.len(), 1, "{subjects:#?}\n{log}");
    assert!(subjects[0].contains(" FAILED on "), "{subjects:#?}");
    let body = mails[0].body();
    assert!(
        body.contains("db is down") && body.contains("stowage tries again in 1s (retry 1 of 2)"),
        "{body}"
    );
    assert!(
        log.contains("no email message for retry 2 of 2, which failed too"),
        "{log}"
    );
}

/// A retry that succeeds after the mailed failure is the one "recovered" message.
#[test]
fn a_retry_that_succeeds_is_mailed_as_the_recovery() {
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let (daemon, down) = retrying_daemon(dir.path(), &smtp, "4s");
    let first = smtp.wait_for(1, Duration::from_secs(60));
    assert_eq!(first.len(), 1, "{}", daemon.output_so_far());
    std::fs::remove_file(&down).expect("remove flag");
    let recovered = smtp.wait_for(2, Duration::from_secs(60));
    daemon.signal("TERM");
    let log = text(&daemon.wait(Duration::from_secs(60)));
    let subjects: Vec<String> = recovered
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    assert_eq!(subjects.len(), 2, "{subjects:#?}\n{log}");
    assert!(subjects[0].contains(" FAILED on "), "{subjects:#?}");
    assert!(
        subjects[1].starts_with("stowage: job app recovered on "),
        "{subjects:#?}"
    );
    assert_eq!(log.matches("outcome=\"failed\"").count(), 1, "{log}");
    assert_eq!(log.matches("outcome=\"success\"").count(), 1, "{log}");
}

/// `stowage run` beside a daemon: whether the job failed last is read from the daemon's state
/// file, so a manual run that succeeds after a scheduled failure mails "recovered" (and,
/// after a success there, nothing).
#[test]
fn a_run_by_hand_reads_the_previous_outcome_from_the_daemons_state() {
    let smtp = SmtpServer::start("plain", None, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let notify = email_notify(smtp.port, "ops@example.com", "tls = \"none\"\n");
    let config = write_config(dir.path(), "echo data", &notify);
    let state_file = dir.path().join("state.json");
    let run =
        |outcome: &str| {
            let mut state = stowage::status::State::default();
            // A cancelled run after the failure does not hide it.
            for (id, o) in [("2", "cancelled"), ("1", outcome)] {
                state.jobs.entry("app".into()).or_default().recent.push(
                    stowage::status::RunStatus {
                        id: id.into(),
                        outcome: o.into(),
                        finished_at: chrono::Utc::now(),
                        duration_s: 1.0,
                        bytes_in: 0,
                        bytes_out: 0,
                        errors: vec![],
                    },
                );
            }
            std::fs::write(&state_file, serde_json::to_vec(&state).expect("json")).expect("state");
            let out = run_stowage_with_env(
                &config,
                ["run", "app"],
                &[(
                    "STOWAGE_STATE_FILE",
                    state_file.to_str().expect("utf-8 path"),
                )],
            );
            assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        };
    run("success");
    assert!(smtp.mails().is_empty(), "{:#?}", smtp.mails());
    run("failed");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    assert!(
        mails[0]
            .header("Subject")
            .is_some_and(|s| s.starts_with("stowage: job app recovered on ")),
        "{mails:#?}"
    );
}
