//! What a new user tripped on (issue 29), tried as one would: a job with PostgreSQL,
//! MariaDB, Redis and an uploads directory to a local and an S3 destination, checked with
//! `check-config`. One mistake gets one line (not false ones about what names the broken
//! part), an identity that reads none of the job's backups is said before a drill finds
//! out, a job only a mistyped environment variable made says so, and check-config speaks
//! the config file's words.

use std::path::Path;

use age::secrecy::ExposeSecret as _;
use chrono::{TimeZone as _, Utc};
use stowage::load;

#[path = "common/check_config.rs"]
mod check_config_run;
use check_config_run::check_config_with_env as check_config;

/// The new user's config: every engine of the stack, a healer and a drill of `db`.
const STACK: &str = r#"
[log]
dir = "/var/log/stowage"
rotation = "hourly"
keep_files = 14

[destinations.local]
type = "local"
path = "/var/backups/stowage"
retention = { keep_daily = 14, keep_weekly = 4 }

[destinations.s3]
type = "s3"
bucket = "backups"
retention = { keep_monthly = 6, max_age = "400d" }

[jobs.app]
schedule = "0 3 * * *"
destinations = ["local", "s3"]
compression_level = 9
verify = { schedule = "0 6 * * 0", read_data = "10%" }
ENCRYPTION

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "postgres://postgres@db:5432/app"

[[jobs.app.sources]]
type = "mariadb"
name = "shop"
url = "mysql://root@shop:3306/shop"

[[jobs.app.sources]]
type = "redis"
name = "cache"
url = "redis://cache:6379"

[[jobs.app.sources]]
type = "files"
name = "uploads"
path = "/data/uploads"

[jobs.app.heal]
source = "db"
watch = ["users", "public.orders"]

[jobs.app.drill]
schedule = "0 5 * * 0"
source = "db"
to = "postgres://postgres@db:5432/stowage_drill"
checks = ["select count(*) > 0 from users"]
"#;

fn stack() -> String {
    STACK.replace("ENCRYPTION\n", "")
}

/// The problem lines of loading `text` (without the environment), `<dir>` for the
/// config's directory.
fn problems(dir: &Path, text: &str) -> Vec<String> {
    let path = dir.join("stowage.toml");
    std::fs::write(&path, text).expect("write config");
    match load::load_with_env(&path, false) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e
            .to_string()
            .lines()
            .skip(1)
            .map(|l| l.replace(&dir.display().to_string(), "<dir>"))
            .collect(),
    }
}

#[test]
fn the_stack_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, stack()).expect("write");
    let config = load::load_with_env(&path, false).expect("the new user's stack is valid");
    let job = &config.jobs["app"];
    assert_eq!(job.heal.as_ref().map(|h| h.source.as_str()), Some("db"));
    assert_eq!(job.drill.as_ref().map(|d| d.source.as_str()), Some("db"));
}

/// A source with a mistake is reported once: the healer, the drill and the job's
/// `exclude_tables` that name or need it are not also errors ("the job has no source
/// \"db\"" was false, and hid the real line among others).
#[test]
fn a_broken_source_is_its_only_problem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = "url = \"postgres://postgres@db:5432/app\"";
    for (what, text, want) in [
        (
            "a url without a database",
            stack().replace(url, "url = \"postgres://postgres@db:5432\""),
            "jobs.app.sources[0].url: invalid postgres URL: the URL names no database",
        ),
        (
            "a misspelt type",
            stack().replace("type = \"postgres\"", "type = \"postgress\""),
            "jobs.app.sources[0].type: unknown value \"postgress\" (did you mean \"postgres\"?)",
        ),
        (
            "a password file that is not there",
            stack().replace(
                url,
                &format!("{url}\npassword_file = \"/nonexistent/pg_password\""),
            ),
            "jobs.app.sources[0].password_file: ",
        ),
    ] {
        let lines = problems(dir.path(), &text);
        assert_eq!(lines.len(), 1, "{what}: {lines:#?}");
        assert!(
            lines[0].starts_with(&format!("  - {want}")),
            "{what}: {lines:#?}"
        );
    }

    // The only database source broken: a healer and drill that name none, and the job's
    // exclude_tables, are not "the job has no database source".
    let only = |body: &str| {
        format!(
            "[destinations.local]\ntype = \"local\"\npath = \"/b\"\n\n[jobs.app]\nschedule = \"@daily\"\ndestinations = [\"local\"]\nexclude_tables = [\"sessions\"]\n\n[[jobs.app.sources]]\ntype = \"postgres\"\nname = \"db\"\n{body}\n\n[jobs.app.heal]\nwatch = [\"users\"]\n\n[jobs.app.drill]\nschedule = \"0 5 * * 0\"\nto = \"postgres://postgres@db:5432/stowage_drill\"\n"
        )
    };
    let lines = problems(dir.path(), &only("url = \"postgres://db\""));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].starts_with("  - jobs.app.sources[0].url: "),
        "{lines:#?}"
    );

    // What is wrong with the reference itself is still said.
    let lines = problems(
        dir.path(),
        &stack()
            .replace(url, "url = \"postgres://postgres@db:5432\"")
            .replace("source = \"db\"\nwatch", "source = \"uploads\"\nwatch"),
    );
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].starts_with("  - jobs.app.heal.source: source \"uploads\" is a files source"),
        "{lines:#?}"
    );
}

/// An age identity file and its public key, written in `dir`.
fn identity(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "# created by the test\n{}\n",
            id.to_string().expose_secret()
        ),
    )
    .expect("write identity");
    (path, id.to_public().to_string())
}

/// An identity file that reads none of the job's backups: an error naming the file, the
/// job, its key and the recipients when the daemon reads backups (drill, heal,
/// verify.read_data), a warning otherwise (a restore can still take --identity); one that
/// matches passes. check-config prints it either way.
#[test]
fn an_identity_that_is_no_recipient_is_said_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (right, right_public) = identity(dir.path(), "right.txt");
    let (wrong, wrong_public) = identity(dir.path(), "wrong.txt");
    let (_, other_public) = identity(dir.path(), "other.txt");
    let recipients = dir.path().join("recipients.txt");
    std::fs::write(&recipients, format!("# offsite key\n{other_public}\n")).expect("write");
    let encrypted = |identity: &Path| {
        STACK.replace(
            "ENCRYPTION",
            &format!(
                "encryption = {{ recipients = [\"{right_public}\"], recipients_file = \"{}\", identity_file = \"{}\" }}",
                recipients.display(),
                identity.display()
            ),
        )
    };
    let path = dir.path().join("stowage.toml");

    std::fs::write(&path, encrypted(&right)).expect("write");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("encryption: age, 2 recipient(s); identity configured"),
        "{out}"
    );

    std::fs::write(&path, encrypted(&wrong)).expect("write");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    let line = lines[0];
    for want in [
        "  - jobs.app.encryption.identity_file: ",
        &wrong.display().to_string(),
        "job \"app\"",
        &wrong_public,
        &format!("{right_public} from recipients[0]"),
        &format!("{other_public} from recipients_file"),
        "line 2",
        "the job's heal, drill, verify.read_data would fail",
    ] {
        assert!(line.contains(want), "{want:?} in {line}");
    }

    // Without a reader in the daemon: a warning, and the encryption line says so.
    let no_readers = encrypted(&wrong)
        .replace(
            "verify = { schedule = \"0 6 * * 0\", read_data = \"10%\" }\n",
            "",
        )
        .split("[jobs.app.heal]")
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(&path, no_readers).expect("write");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: jobs.app.encryption.identity_file: ")
            && out.contains(&wrong_public)
            && out.contains("restore, download and wal-fetch without --identity would fail"),
        "{out}"
    );
    assert!(
        out.contains("identity_file reads none of its backups (see the warning above)"),
        "{out}"
    );

    // What a passphrase encrypted, no identity reads.
    let pass = dir.path().join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").expect("write");
    std::fs::write(
        &path,
        STACK.replace(
            "ENCRYPTION",
            &format!(
                "encryption = {{ passphrase_file = \"{}\", identity_file = \"{}\" }}",
                pass.display(),
                right.display()
            ),
        ),
    )
    .expect("write");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "  - jobs.app.encryption.identity_file: job \"app\" encrypts with passphrase_file"
        ) && out.contains("remove identity_file"),
        "{out}"
    );
    std::fs::write(
        &path,
        STACK.replace(
            "ENCRYPTION",
            &format!(
                "encryption = {{ passphrase_file = \"{}\" }}",
                pass.display()
            ),
        ),
    )
    .expect("write");
    let (code, out) = check_config(&path, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("encryption: age, passphrase; the passphrase reads backups"),
        "{out}"
    );
}

/// A mistyped job name in a variable makes a job of its own: one line naming the variable
/// and the job meant, not "no destination" and "no source" about a job nobody wrote.
#[test]
fn a_job_only_the_environment_defines_names_its_variables() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, stack()).expect("write");

    let (code, out) = check_config(&path, &[("STOWAGE_JOBS__APP__SCHEDULE", "0 4 * * *")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("schedule \"0 4 * * *\""), "{out}");

    let (code, out) = check_config(
        &path,
        &[
            ("STOWAGE_JOBS__APPP__SCHEDULE", "0 4 * * *"),
            ("STOWAGE_JOBS__APPP__RETRIES", "three"),
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(
        lines,
        [
            "  - jobs.appp: job \"appp\" is not in the config file, only in environment variables STOWAGE_JOBS__APPP__RETRIES, STOWAGE_JOBS__APPP__SCHEDULE (did you mean \"app\"? its variables begin STOWAGE_JOBS__APP__, not STOWAGE_JOBS__APPP__); jobs in the file: app"
        ],
        "{out}"
    );

    // Nothing close: how to fix it either way. A problem in the file is still its own.
    std::fs::write(&path, stack().replace("keep_daily = 14", "keep_daily = 0")).expect("write");
    let (code, out) = check_config(&path, &[("STOWAGE_JOBS__NIGHTLY__SCEDULE", "@daily")]);
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("  - destinations.local.retention"),
        "{out}"
    );
    assert_eq!(
        lines[1],
        "  - jobs.nightly: job \"nightly\" is not in the config file, only in environment variable STOWAGE_JOBS__NIGHTLY__SCEDULE; add a [jobs.nightly] section to the file, or remove the variable; jobs in the file: app",
        "{out}"
    );

    // Upper case in the file's job name: no variable can name it.
    std::fs::write(&path, stack().replace("jobs.app", "jobs.App")).expect("write");
    let (code, out) = check_config(&path, &[("STOWAGE_JOBS__APP__SCHEDULE", "0 4 * * *")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the file's job \"App\" has upper-case letters")
            && out.contains("rename the job to \"app\""),
        "{out}"
    );
}

/// check-config in the config file's words (no `Text`, `Daily` or `Zstd`), with the
/// verify, heal and drill schedules and their next runs.
#[test]
fn check_config_speaks_the_config_files_words() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, stack()).expect("write");
    let config = load::load_with_env(&path, false).expect("valid");
    // Saturday 2026-12-05 12:00 UTC.
    let now = Utc
        .with_ymd_and_hms(2026, 12, 5, 12, 0, 0)
        .single()
        .expect("time");
    let out = stowage::commands::check_config::summary(&config, now);
    for want in [
        "log: level = \"info\", format = \"text\", files in /var/log/stowage (rotation = \"hourly\", keep_files = 14)",
        "retention = { keep_daily = 14, keep_weekly = 4 }",
        "retention = { keep_monthly = 6, max_age = \"400d\" }",
        "schedule \"0 3 * * *\" (UTC), compression = \"zstd\", compression_level = 9",
        "verify: schedule \"0 6 * * 0\", read_data = \"10%\"; next run 2026-12-06 06:00:00 UTC",
        "heal: source \"db\", watch = [\"users\", \"public.orders\"], backups = 3, schedule \"*/5 * * * *\"; next run 2026-12-05 12:05:00 UTC",
        "drill: source \"db\" into a scratch database, 1 check(s), schedule \"0 5 * * 0\"; next run 2026-12-06 05:00:00 UTC",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    for debug in ["Text", "Hourly", "Zstd", "Some(", "keep_daily=", "Share("] {
        assert!(!out.contains(debug), "{debug:?} in:\n{out}");
    }
    // The binary prints the same.
    let (code, printed) = check_config(&path, &[]);
    assert_eq!(code, Some(0), "{printed}");
    assert!(printed.contains("format = \"text\""), "{printed}");
    assert!(printed.contains("heal: source \"db\""), "{printed}");
}
