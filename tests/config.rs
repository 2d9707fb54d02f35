//! Config loading: every shipped example parses, and bad configs get specific messages,
//! one line per problem naming its key, every problem at once (snapshotted, so a change
//! in wording is a reviewed change); top-level keys from the environment.

use std::path::{Path, PathBuf};

use stowage::config::{self, ConfigError};
use stowage::load;

#[path = "common/check_config.rs"]
mod check_config;
use check_config::check_config_with_env;

/// The shipped examples name secrets under /run/secrets; point those at dummy files so
/// the example is tested exactly as shipped otherwise.
fn load_example(name: &str) -> Result<config::Config, ConfigError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    for f in ["pg_password", "minio_secret", "mariadb_password"] {
        std::fs::write(secrets.join(f), "dummy\n").expect("write secret");
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    let text = std::fs::read_to_string(&src).expect("read example");
    let text = text.replace("/run/secrets/", &format!("{}/", secrets.display()));
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write example");
    load::load_with_env(&path, false)
}

#[test]
fn every_shipped_example_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("config/ exists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml") || n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 3,
        "expected the shipped examples, found {names:?}"
    );
    for name in names {
        let cfg =
            load_example(&name).unwrap_or_else(|e| panic!("config/{name} does not load: {e}"));
        assert!(!cfg.jobs.is_empty(), "config/{name} has no job");
    }
}

#[test]
fn main_example_matches_the_documented_shape() {
    let cfg = load_example("stowage.toml").expect("loads");
    let job = &cfg.jobs["replay"];
    assert_eq!(job.destinations, vec!["local", "offsite"]);
    assert_eq!(job.schedule.tz().name(), "Europe/Stockholm");
    assert_eq!(cfg.destinations["local"].retention.keep_last, Some(5));
    assert_eq!(cfg.destinations["offsite"].retention.keep_monthly, Some(6));
    match &job.sources[0] {
        config::SourceConfig::Database(d) => {
            assert_eq!(d.kind(), "postgres");
            // The password file was read (the example's is "dummy") and is never shown.
            assert!(!d.describe().contains("dummy") && !format!("{d:?}").contains("dummy"));
            assert_eq!(d.default_excludes(), vec!["application_data_backups"]);
        }
        other => panic!("the first source should be the database, got {other:?}"),
    }
    match &job.sources[1] {
        config::SourceConfig::Files(f) => {
            assert_eq!(f.path, Path::new("/data/uploads"));
            assert!(f.immutable);
            assert_eq!(f.exclude, vec!["tmp", "*.part"]);
        }
        other => panic!("the second source should be the files, got {other:?}"),
    }
    let heal = job.heal.as_ref().expect("the example has a healer");
    assert_eq!(heal.source, "db");
    assert_eq!(heal.watch, vec!["users", "public.replays"]);
    assert_eq!(heal.backups, 3);
    assert!(!heal.dry_run);
    let drill = job.drill.as_ref().expect("the example has a drill");
    assert_eq!(drill.source, "db");
    assert_eq!(drill.checks.len(), 1);
    assert!(job.verify.is_some());
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
}

#[test]
fn files_before_database_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    let text = BASE.replace(
        "[[jobs.app.sources]]\ntype = \"postgres\"",
        "[[jobs.app.sources]]\ntype = \"files\"\nname = \"media\"\npath = \"/data/media\"\n\n[[jobs.app.sources]]\ntype = \"postgres\"",
    );
    std::fs::write(&path, text).expect("write");
    let cfg = load::load_with_env(&path, false).expect("valid, with a warning");
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(
        cfg.warnings[0].contains("files source \"media\" runs before database source \"db\""),
        "{}",
        cfg.warnings[0]
    );
}

/// A retention rule that deletes backups younger than the storage class bills for is a
/// warning naming both and the usual pattern; a rule that keeps them long enough is not.
#[test]
fn retention_shorter_than_the_minimum_storage_duration_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    let with = |class: &str, retention: &str, extra: &str| {
        let text = BASE.replace(
            "destinations = [\"local\"]",
            "destinations = [\"local\", \"cold\"]",
        ) + &format!(
            "\n[destinations.cold]\ntype = \"s3\"\nbucket = \"archive\"\nstorage_class = \"{class}\"\nretention = {retention}\n{extra}"
        );
        std::fs::write(&path, text).expect("write");
        load::load_with_env(&path, false)
            .expect("valid, maybe with a warning")
            .warnings
    };
    let w = with("DEEP_ARCHIVE", "{ keep_daily = 7 }", "");
    assert_eq!(
        w,
        [
            "destinations.cold: DEEP_ARCHIVE bills every object for at least 180 days, but retention (keep_daily=7) keeps backups only about 7 days: they are kept 180 days instead (early_delete = true deletes them earlier and still pays for 180 days). The usual pattern: recent backups on a local or STANDARD destination, monthly ones in the archive tier with their own retention, e.g. retention = { keep_monthly = 12 }"
        ]
    );
    let w = with("GLACIER", "{ keep_last = 30 }", "early_delete = true\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("keeps backups only about 30 days: early_delete = true deletes them earlier, and each is still billed for 90 days"),
        "{w:?}"
    );
    assert!(with("DEEP_ARCHIVE", "{ keep_monthly = 12 }", "").is_empty());
    assert!(with("STANDARD_IA", "{ keep_daily = 30 }", "").is_empty());
    assert!(with("STANDARD", "{ keep_last = 1 }", "").is_empty());
}

const FILES: &str = "\n[[jobs.app.sources]]\ntype = \"files\"\nname = \"media\"\n";

const BASE: &str = r#"
[destinations.local]
type = "local"
path = "/var/backups/stowage"
retention = { keep_last = 5 }

[jobs.app]
schedule = "0 3 * * *"
destinations = ["local"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "postgres://postgres@db:5432/app"
"#;

struct Case {
    name: &'static str,
    file: &'static str,
    text: String,
}

fn case(name: &'static str, text: impl Into<String>) -> Case {
    Case {
        name,
        file: "stowage.toml",
        text: text.into(),
    }
}

fn cases() -> Vec<Case> {
    vec![
        case("unknown top-level key", format!("{BASE}\n[jobz]\n")),
        case("misspelt job key", BASE.replace("schedule =", "scedule =")),
        case("unknown key in destination", BASE.replace("type = \"local\"", "type = \"local\"\ncompress = true")),
        case("unknown key in retention", BASE.replace("keep_last = 5", "keep_lats = 5")),
        case("cron with 4 fields", BASE.replace("0 3 * * *", "0 3 * *")),
        case("cron value out of range", BASE.replace("0 3 * * *", "0 25 * * *")),
        case("unknown alias", BASE.replace("0 3 * * *", "@fortnightly")),
        case("unknown timezone", BASE.replace("destinations = [\"local\"]", "timezone = \"Europe/Stokholm\"\ndestinations = [\"local\"]")),
        case("unknown destination in job", BASE.replace("destinations = [\"local\"]", "destinations = [\"local\", \"ofsite\"]")),
        case("destination listed twice", BASE.replace("destinations = [\"local\"]", "destinations = [\"local\", \"local\"]")),
        case("job without destinations", BASE.replace("destinations = [\"local\"]", "destinations = []")),
        case(
            "duplicate source name",
            format!("{BASE}\n[[jobs.app.sources]]\ntype = \"postgres\"\nname = \"db\"\nurl = \"postgres://postgres@db2/app\"\n"),
        ),
        case("missing password file", BASE.replace("url = \"postgres://postgres@db:5432/app\"", "url = \"postgres://postgres@db:5432/app\"\npassword_file = \"/nonexistent/pg_password\"")),
        case("not a postgres url", BASE.replace("postgres://postgres@db:5432/app", "mysql://root@db/app")),
        case("postgres url without database", BASE.replace("postgres://postgres@db:5432/app", "postgres://postgres@db:5432")),
        case("unknown destination type", BASE.replace("type = \"local\"", "type = \"ftp\"")),
        case("unknown source type", BASE.replace("type = \"postgres\"", "type = \"oracle\"")),
        case("unknown compression", BASE.replace("destinations = [\"local\"]", "compression = \"xz\"\ndestinations = [\"local\"]")),
        case("compression level out of range", BASE.replace("destinations = [\"local\"]", "compression_level = 30\ndestinations = [\"local\"]")),
        case("s3 key on a local destination", BASE.replace("type = \"local\"", "type = \"local\"\nbucket = \"backups\"")),
        case("relative local path", BASE.replace("/var/backups/stowage", "backups")),
        case("keep_last zero", BASE.replace("keep_last = 5", "keep_last = 0")),
        case("keep_last wrong type", BASE.replace("keep_last = 5", "keep_last = \"five\"")),
        case("bad max_age", BASE.replace("keep_last = 5", "max_age = \"a month\"")),
        case("bad log level", format!("[log]\nlevel = \"stowage=loud\"\n{BASE}")),
        case("bad nice and ionice", BASE.replace("destinations = [\"local\"]", "nice = -5\nionice = \"realtime\"\nretry_delay = \"soon\"\ndestinations = [\"local\"]")),
        case("bad server listen", format!("[server]\nlisten = \"localhost\"\n{BASE}")),
        case(
            "bad notify entries",
            format!(
                "{BASE}\n[[jobs.app.notify]]\ntype = \"healthchecks\"\nurl = \"hc-ping.com/x\"\non_success = true\n\n[[jobs.app.notify]]\ntype = \"webhook\"\n"
            ),
        ),
        case(
            "unknown notify type",
            format!("{BASE}\n[[jobs.app.notify]]\ntype = \"pager\"\nurl = \"https://x\"\n"),
        ),
        case("bad shutdown_grace", format!("shutdown_grace = \"half a minute\"\n{BASE}")),
        case("bad log format", format!("[log]\nformat = \"xml\"\n{BASE}")),
        case("relative log dir", format!("[log]\ndir = \"logs\"\n{BASE}")),
        case("no jobs", "[destinations.local]\ntype = \"local\"\npath = \"/b\"\n".to_string()),
        case("job without sources", BASE.split("[[jobs.app.sources]]").next().unwrap_or_default().to_string()),
        case("invalid job name", BASE.replace("jobs.app", "jobs.\"my app\"")),
        case(
            "s3 bad bucket and endpoint",
            format!("{BASE}\n[destinations.s3]\ntype = \"s3\"\nbucket = \"My_Bucket\"\nendpoint = \"minio:9000\"\n"),
        ),
        case(
            "s3 key id without secret file",
            format!("{BASE}\n[destinations.s3]\ntype = \"s3\"\nbucket = \"backups\"\naccess_key_id = \"AKIA\"\n"),
        ),
        case(
            "s3 part size too small",
            format!("{BASE}\n[destinations.s3]\ntype = \"s3\"\nbucket = \"backups\"\npart_size = \"1MiB\"\n"),
        ),
        case(
            "s3 unknown storage class",
            format!("{BASE}\n[destinations.s3]\ntype = \"s3\"\nbucket = \"backups\"\nstorage_class = \"COLD\"\n"),
        ),
        case("files source without path", format!("{BASE}{FILES}")),
        case("files source with relative path", format!("{BASE}{FILES}path = \"media\"\n")),
        case("files source with bad glob", format!("{BASE}{FILES}path = \"/data/media\"\nexclude = [\"tmp/[a\", \"\"]\n")),
        case("postgres key on a files source", format!("{BASE}{FILES}path = \"/data/media\"\nurl = \"postgres://db/app\"\nexclude_tables = [\"x\"]\n")),
        case("files key on a postgres source", BASE.replace("url = \"postgres://postgres@db:5432/app\"", "url = \"postgres://postgres@db:5432/app\"\npath = \"/data\"\nimmutable = true")),
        case("bad exclude_tables", BASE.replace("url = \"postgres://postgres@db:5432/app\"", "url = \"postgres://postgres@db:5432/app\"\nexclude_tables = [\"a.b.c\", \"\"]")),
        case(
            "exclude_tables on a job without database",
            format!(
                "[destinations.local]\ntype = \"local\"\npath = \"/b\"\n[jobs.files]\nschedule = \"@daily\"\ndestinations = [\"local\"]\nexclude_tables = [\"x\"]\n{}path = \"/data/media\"\n",
                {FILES}.replace("jobs.app", "jobs.files")
            ),
        ),
        case("unknown source type close to an engine", BASE.replace("type = \"postgres\"", "type = \"mysq\"")),
        case("mariadb with a postgres url", BASE.replace("type = \"postgres\"", "type = \"mariadb\"")),
        case("mariadb without url", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"mysql\"\nname = \"shop\"\npassword_file = \"/nonexistent/mariadb_password\"\n")),
        case("unknown key on a mariadb source", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"mariadb\"\nname = \"shop\"\nurl = \"mysql://root@shop-db:3306/shop\"\nbin_dir = \"/usr/lib/postgresql/15/bin\"\nsslmode = \"require\"\n")),
        case("misspelt hook on a files source", format!("{BASE}{FILES}path = \"/data/media\"\nbefre = [\"true\"]\n")),
        case("sqlite without path", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"sqlite\"\nname = \"local\"\n")),
        case("sqlite with relative path and a url", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"sqlite\"\nname = \"local\"\npath = \"data/app.db\"\nurl = \"sqlite:///data/app.db\"\n")),
        case("redis with a database url", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"http://cache:6379\"\n")),
        case("redis with tables to exclude", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"redis://cache:6379\"\nexclude_tables = [\"sessions\"]\n")),
        case("mongodb with a bad scheme", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"mongodb\"\nname = \"docs\"\nurl = \"mongo://docs:27017/app\"\n")),
        case("command with empty dump", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"command\"\nname = \"ldap\"\ndump = []\n")),
        case("command with a shell string", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"command\"\nname = \"ldap\"\ndump = \"slapcat -n 1 | gzip\"\n")),
        case("files key on a command source", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"command\"\nname = \"ldap\"\ndump = [\"slapcat\"]\npath = \"/var/lib/ldap\"\n")),
        case("exclude_tables on a job with only redis", format!("{BASE}\n[[jobs.cache.sources]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"redis://cache:6379\"\n\n[jobs.cache]\nschedule = \"@daily\"\ndestinations = [\"local\"]\nexclude_tables = [\"x\"]\n")),
        case("heal without watch", format!("{BASE}\n[jobs.app.heal]\nschedule = \"*/5 * * * *\"\n")),
        case("heal with bad schedule, star among names and zero backups", format!("{BASE}\n[jobs.app.heal]\nschedule = \"every 5 minutes\"\nwatch = [\"*\", \"orders\", \"\"]\nbackups = 0\n")),
        case("heal of an unknown source", format!("{BASE}\n[jobs.app.heal]\nsource = \"dbb\"\nwatch = [\"orders\"]\n")),
        case("heal of a files source", format!("{BASE}{FILES}path = \"/data/media\"\n\n[jobs.app.heal]\nsource = \"media\"\nwatch = [\"orders\"]\n")),
        case("heal with two database sources and no source", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"mariadb\"\nname = \"shop\"\nurl = \"mysql://root@shop-db:3306/shop\"\n\n[jobs.app.heal]\nwatch = [\"orders\"]\n")),
        case("heal of a redis source", format!("{BASE}\n[[jobs.app.sources]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"redis://cache:6379\"\n\n[jobs.app.heal]\nsource = \"cache\"\nwatch = [\"orders\"]\n")),
        case("misspelt heal key", format!("{BASE}\n[jobs.app.heal]\nwatched = [\"orders\"]\n")),
        case(
            "archive retrieval problems",
            format!(
                "{BASE}\n[destinations.cold]\ntype = \"s3\"\nbucket = \"archive\"\nstorage_class = \"DEEP_ARCHIVE\"\nretrieval = {{ days = 0, tier = \"Expedited\" }}\n\n\
                 [destinations.ir]\ntype = \"s3\"\nbucket = \"archive\"\nstorage_class = \"GLACIER_IR\"\nretrieval = {{ tier = \"Fast\" }}\n"
            ),
        ),
        case("retrieval on a local destination", BASE.replace("type = \"local\"", "type = \"local\"\nretrieval = { days = 3 }\nearly_delete = true")),
        case("unknown retrieval key", format!("{BASE}\n[destinations.cold]\ntype = \"s3\"\nbucket = \"archive\"\nstorage_class = \"GLACIER\"\nretrieval = {{ day = 3 }}\n")),
        case("bad verify schedule", BASE.replace("destinations = [\"local\"]", "verify = \"sundays\"\ndestinations = [\"local\"]")),
        case("toml syntax error", BASE.replace("schedule = \"0 3 * * *\"", "schedule = \"0 3 * * *")),
        Case {
            name: "yaml unknown key",
            file: "stowage.yaml",
            text: "jobs:\n  app:\n    schedule: '@daily'\n    retries: 3\n".to_string(),
        },
        case(
            "encryption without recipients",
            BASE.replace("destinations = [\"local\"]", "destinations = [\"local\"]\nencryption = { identity_file = \"/nonexistent/key.txt\" }"),
        ),
        case(
            "encryption recipient that is not age",
            BASE.replace("destinations = [\"local\"]", "destinations = [\"local\"]\nencryption = { recipients = [\"age1notakey\", \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\"] }"),
        ),
        case(
            "encryption with recipients and a passphrase",
            BASE.replace("destinations = [\"local\"]", "destinations = [\"local\"]\nencryption = { recipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"], passphrase_file = \"/nonexistent/pass\" }"),
        ),
        case(
            "drill into the source database",
            format!("{BASE}\n[jobs.app.drill]\nschedule = \"0 5 * * 0\"\nto = \"postgres://postgres@127.0.0.1:5432/app\"\n"),
        ),
        case(
            "drill with a bad target and an empty check",
            format!("{BASE}\n[jobs.app.drill]\nschedule = \"0 5 * * 0\"\nto = \"mysql://db/scratch\"\nchecks = [\" \"]\n"),
        ),
        case("misspelt job key and unknown destination", BASE.replace("schedule =", "scedule =").replace("[\"local\"]", "[\"locl\"]")),
        case(
            "misspelt retention and job keys",
            BASE.replace("retention =", "retension =").replace("schedule =", "scedule ="),
        ),
        case(
            "missing required keys and other problems",
            BASE.replace("schedule = \"0 3 * * *\"\n", "compression = \"xz\"\n")
                + "\n[jobs.app.drill]\nschedule = \"0 5 * * 0\"\nchecks = [\" \"]\n\n[[jobs.app.notify]]\nurl = \"https://hc-ping.com/x\"\n",
        ),
        case(
            "wrong types in several places",
            format!("shutdown_grace = 30\n[server]\nlisten = 9090\n{BASE}")
                .replace("keep_last = 5", "keep_last = \"five\", keep_daily = -1")
                .replace("destinations = [\"local\"]", "destinations = [\"local\", 3, \"ofsite\"]\ncatch_up = \"yes\"\nexclude_tables = \"sessions\""),
        ),
        case(
            "a destination that is not a table",
            BASE.replace("[destinations.local]\ntype = \"local\"\npath = \"/var/backups/stowage\"\nretention = { keep_last = 5 }", "[destinations]\nlocal = \"/var/backups/stowage\"")
                .replace("[\"local\"]", "[\"local\", \"ofsite\"]"),
        ),
        case(
            "unknown destination type and its keys",
            format!("{BASE}\n[destinations.cold]\ntype = \"glacier\"\nbucket = \"archive\"\nretention = {{ keep_last = 0 }}\n"),
        ),
        case(
            "source with a name of the wrong type and no type",
            format!("{BASE}\n[[jobs.app.sources]]\ntype = \"files\"\nname = 7\npath = \"/data\"\n\n[[jobs.app.sources]]\nname = \"other\"\nurl = \"x\"\n"),
        ),
        Case {
            name: "yaml with empty sections",
            file: "stowage.yaml",
            text: "log:\njobs:\n  app:\n  other:\n    schedule: '@daily'\n    destinations: [nowhere]\n    sources:\n      - {type: files, name: f, path: /data}\n".to_string(),
        },
        Case {
            name: "unsupported extension",
            file: "stowage.ini",
            text: BASE.to_string(),
        },
    ]
}

fn message(dir: &Path, c: &Case) -> String {
    let path: PathBuf = dir.join(c.file);
    std::fs::write(&path, &c.text).expect("write case");
    let err = match load::load_with_env(&path, false) {
        Ok(_) => panic!("case {:?} was accepted", c.name),
        Err(e) => e.to_string(),
    };
    std::fs::remove_file(&path).expect("remove case");
    err.replace(&dir.display().to_string(), "<dir>")
}

#[test]
fn bad_configs_get_specific_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = String::new();
    for c in cases() {
        let msg = message(dir.path(), &c);
        all.push_str(&format!("## {}\n{msg}\n\n", c.name));
    }
    insta::assert_snapshot!(all);
}

#[test]
fn missing_file_says_how_to_fix() {
    let err = load::load_with_env(Path::new("/nonexistent/stowage.toml"), false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("\"/nonexistent/stowage.toml\" not found"),
        "{err}"
    );
    assert!(err.contains("STOWAGE_CONFIG"), "{err}");
}

#[test]
fn base_case_is_valid() {
    // Guards the table above: each case must fail because of its own change.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, BASE).expect("write");
    load::load_with_env(&path, false).expect("the base config is valid");
}

/// Several mistakes in one file, in several sections: every one is reported, each on its
/// own line naming its key, in the order of the keys, and nothing else (no "required key
/// is missing" for a key a "did you mean" names, no problem about a removed value).
#[test]
fn every_problem_is_reported_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(
        &path,
        r#"
shutdown_grace = 30

[destinations.local]
type = "local"
path = "/var/backups/stowage"
retension = { keep_last = 5 }

[jobs.app]
scedule = "0 3 * * *"
destinations = ["locl"]
compression_level = "high"

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "postgres://postgres@db:5432/app"
sslmod = "require"

[jobs.other]
schedule = "0 4 * * *"
timezone = "Mars/Olympus"
destinations = ["local", 3]
retries = "three"

[[jobs.other.sources]]
type = "files"
name = "media"
path = "media"
"#,
    )
    .expect("write");
    let err = load::load_with_env(&path, false)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let expected = [
        (
            "destinations.local.retension",
            "unknown key \"retension\" (did you mean \"retention\"?)",
        ),
        (
            "jobs.app.compression_level",
            "expected an integer, found string \"high\"",
        ),
        (
            "jobs.app.destinations",
            "unknown destination \"locl\" (did you mean \"local\"?)",
        ),
        (
            "jobs.app.scedule",
            "unknown key \"scedule\" (did you mean \"schedule\"?)",
        ),
        ("jobs.app.sources[0].sslmod", "unknown key \"sslmod\""),
        (
            "jobs.other.destinations[1]",
            "expected a string, found the number 3",
        ),
        (
            "jobs.other.retries",
            "expected a whole number, found string \"three\"",
        ),
        (
            "jobs.other.sources[0].path",
            "\"media\" must be an absolute path",
        ),
        ("jobs.other.timezone", "unknown timezone \"Mars/Olympus\""),
        ("shutdown_grace", "expected a string, found the number 30"),
    ];
    let lines: Vec<&str> = err.lines().skip(1).collect();
    assert!(
        err.lines()
            .next()
            .unwrap_or_default()
            .starts_with("invalid config"),
        "{err}"
    );
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, (key, what)) in lines.iter().zip(expected) {
        let (k, message) = line
            .strip_prefix("  - ")
            .and_then(|l| l.split_once(": "))
            .unwrap_or_else(|| panic!("not a problem line: {line:?}\n{err}"));
        assert_eq!(k, key, "{err}");
        assert!(message.starts_with(what), "{key}: {message:?}\n{err}");
    }
}

/// A top-level key is overridden by `STOWAGE_<KEY>` (no `__`): a bad value is reported
/// naming the variable, a near miss of the key is an unknown key naming the variable, and
/// stowage's own variables (`STOWAGE_CONFIG`, `STOWAGE_PID_FILE`, …) and unrelated ones
/// are not config.
#[test]
fn top_level_keys_come_from_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, BASE).expect("write");

    let (code, out) = check_config_with_env(
        &path,
        &[
            ("STOWAGE_SHUTDOWN_GRACE", "2s"),
            ("STOWAGE_CONFIG", "/nonexistent/other.toml"),
            ("STOWAGE_PID_FILE", "/nonexistent/stowage.pid"),
            ("STOWAGE_STATE_FILE", "/nonexistent/state.json"),
            ("STOWAGE_RESTORE_TARGET", "x"),
            ("STOWAGE_PG_BIN", "/usr/lib/postgresql/15/bin"),
        ],
    );
    assert_eq!(code, Some(0), "{out}");

    let (code, out) = check_config_with_env(&path, &[("STOWAGE_SHUTDOWN_GRACE", "soon")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("  - shutdown_grace: invalid duration \"soon\"")
            && out.contains("(from environment variable STOWAGE_SHUTDOWN_GRACE)\n"),
        "{out}"
    );

    let (code, out) = check_config_with_env(&path, &[("STOWAGE_SHUTDOWN_GRACEE", "2s")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(
            "  - shutdown_gracee: unknown key \"shutdown_gracee\" (did you mean \"shutdown_grace\"?); valid keys here: shutdown_grace, log, server, destinations, jobs (from environment variable STOWAGE_SHUTDOWN_GRACEE)\n"
        ),
        "{out}"
    );

    // A bad override and a mistake in the file: both, each naming its origin.
    std::fs::write(&path, BASE.replace("schedule =", "scedule =")).expect("write");
    let (code, out) = check_config_with_env(
        &path,
        &[
            ("STOWAGE_SHUTDOWN_GRACE", "soon"),
            ("STOWAGE_LOG__LEVEL", "loud=1=2"),
        ],
    );
    assert_eq!(code, Some(2), "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  - ")).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("  - jobs.app.scedule: unknown key"),
        "{out}"
    );
    assert!(
        lines[1].starts_with("  - log.level: invalid filter \"loud=1=2\"")
            && lines[1].ends_with("(from environment variable STOWAGE_LOG__LEVEL)"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("  - shutdown_grace: invalid duration \"soon\"")
            && lines[2].ends_with("(from environment variable STOWAGE_SHUTDOWN_GRACE)"),
        "{out}"
    );
}

/// The value of `STOWAGE_SHUTDOWN_GRACE` is the one loaded: checked in a child process
/// (this test binary, running only `shutdown_grace_from_the_environment_child`), so that
/// no variable is set in this process, whose other tests run in parallel threads.
#[test]
fn shutdown_grace_from_the_environment_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stowage.toml");
    std::fs::write(&path, format!("shutdown_grace = \"1m\"\n{BASE}")).expect("write");
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("current_exe"));
    cmd.args([
        "--exact",
        "shutdown_grace_from_the_environment_child",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("STOWAGE_")
        {
            cmd.env_remove(k);
        }
    }
    cmd.env(CHILD_CONFIG, &path)
        .env("STOWAGE_SHUTDOWN_GRACE", "2s")
        .env("STOWAGE_CONFIG", "/nonexistent/other.toml");
    let out = cmd.output().expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("child: shutdown_grace 2s"), "{text}");
}

/// Names the config file of `shutdown_grace_from_the_environment_is_applied`'s child.
const CHILD_CONFIG: &str = "CONFIG_TEST_CHILD_CONFIG";

#[test]
fn shutdown_grace_from_the_environment_child() {
    let Some(path) = std::env::var_os(CHILD_CONFIG) else {
        return; // not the child: nothing to do
    };
    let cfg = load::load_with_env(Path::new(&path), true).expect("loads");
    assert_eq!(cfg.shutdown_grace, std::time::Duration::from_secs(2));
    // The file's value is what applies without the environment.
    let cfg = load::load_with_env(Path::new(&path), false).expect("loads");
    assert_eq!(cfg.shutdown_grace, std::time::Duration::from_secs(60));
    println!("child: shutdown_grace 2s");
}
