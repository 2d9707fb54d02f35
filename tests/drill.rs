//! Restore drills against a real PostgreSQL: the newest backup restores into a scratch
//! database, its tables and row counts match what the dump's snapshot held, checks run,
//! the scratch database is dropped; a failed drill is named, exit 1, makes health fail
//! and is sent to the job's webhook. A drill never targets the source's own database.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{PgServer, Receiver, seed_sample_db, text};

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn stowage(&self, args: &[&str]) -> (Option<i32>, String) {
        common::stowage_says(&self.config, args)
    }

    /// `stowage run app`; the new backup's id.
    fn backup(&self) -> String {
        common::backup_of(&self.config, "app")
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let path = self.manifest_path(id);
        serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("json")
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("local/app")
            .join(id)
            .join("manifest.json")
    }

    fn dump_path(&self, id: &str) -> PathBuf {
        self.dir
            .path()
            .join("local/app")
            .join(id)
            .join("db.pgdump.zst")
    }
}

fn stack(drill: &str) -> (PgServer, Setup) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 200);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[destinations.local]
type = "local"
path = "{local}"

[jobs.app]
schedule = "0 3 * * *"
destinations = ["local"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "{url}"

{drill}
"#,
            local = dir.path().join("local").display(),
            url = pg.url("app"),
            drill = drill
                .replace("SCRATCH", &pg.url("stowage_drill"))
                .replace("SOURCE_DB", &pg.url("app")),
        ),
    )
    .expect("config");
    (pg, Setup { dir, config })
}

const DRILL: &str = r#"
[jobs.app.drill]
schedule = "0 5 * * 0"
to = "SCRATCH"
checks = ["select count(*) > 0 from orders", "select not exists (select 1 from orders where total < 0)"]
"#;

fn count(pg: &PgServer, table: &str) -> u64 {
    pg.psql("app", &format!("select count(*) from {table}"))
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn drill_restores_compares_rows_runs_checks_and_drops_the_scratch_database() {
    let (pg, setup) = stack(DRILL);
    let id = setup.backup();

    // The manifest holds the row counts of the dump's snapshot.
    let m = setup.manifest(&id);
    let db = m["sources"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "db"))
        .expect("db source");
    for table in ["public.customers", "public.orders", "audit.events"] {
        assert_eq!(
            db["rows"][table].as_u64(),
            Some(count(&pg, table)),
            "rows of {table} in {db}"
        );
    }

    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "drill app: ok, backup {id} from local restored and checked in"
        )),
        "{out}"
    );
    assert!(
        out.contains("3 table(s)") && out.contains("as in the backup"),
        "{out}"
    );
    assert!(
        out.contains("check passed: select count(*) > 0 from orders"),
        "{out}"
    );
    assert!(
        !pg.db_exists("stowage_drill"),
        "the scratch database is dropped"
    );
    // The source was never touched.
    assert!(count(&pg, "public.orders") > 0);

    // Rows that differ from what the backup recorded are named, exit 1.
    let mut m = setup.manifest(&id);
    for s in m["sources"].as_array_mut().expect("sources") {
        if s["name"] == "db" {
            s["rows"]["public.orders"] = 999_999u64.into();
        }
    }
    std::fs::write(
        setup.manifest_path(&id),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("write");
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("table public.orders: ")
            && out.contains("row(s) restored, 999999 in the backup"),
        "{out}"
    );
    assert!(
        !pg.db_exists("stowage_drill"),
        "dropped after a failed drill too"
    );
}

#[test]
fn a_check_that_returns_false_fails_the_drill() {
    let (pg, setup) = stack(
        r#"
[jobs.app.drill]
schedule = "0 5 * * 0"
to = "SCRATCH"
checks = ["select count(*) > 1000000 from orders"]
"#,
    );
    setup.backup();
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("drill app: FAILED")
            && out.contains("check returned false: select count(*) > 1000000 from orders"),
        "{out}"
    );
    assert!(!pg.db_exists("stowage_drill"));
}

#[test]
fn a_drill_into_the_source_database_is_refused() {
    let (_pg, setup) = stack("[jobs.app.drill]\nschedule = \"0 5 * * 0\"\nto = \"SOURCE_DB\"\n");
    let (code, out) = setup.stowage(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("jobs.app.drill.to:") && out.contains("is the database of source \"db\""),
        "{out}"
    );
}

/// The daemon's scheduled drill: a passing one sets the success metric and duration; after
/// the backup is made unreadable, the drill fails, health names it, the webhook hears it.
#[test]
fn scheduled_drills_report_to_metrics_health_and_webhook() {
    let rx = Receiver::start();
    let port = common::free_port();
    let (_pg, setup) = stack(&format!(
        "[jobs.app.drill]\nschedule = \"*/3 * * * * *\"\nto = \"SCRATCH\"\n\n[[jobs.app.notify]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n",
        rx.port
    ));
    let id = setup.backup();

    let pid = setup.dir.path().join("stowage.pid");
    let state = setup.dir.path().join("state.json");
    let envs = [
        ("STOWAGE_PID_FILE", pid.as_os_str()),
        ("STOWAGE_STATE_FILE", state.as_os_str()),
    ];
    let mut daemon = common::spawn_stowage_with_env(&setup.config, ["daemon"], &envs);
    daemon.wait_for_output("drill app: ok", Duration::from_secs(60));
    let mut metrics = String::new();
    common::wait_for("the drill metrics", Duration::from_secs(20), || {
        metrics = common::http_get(port, "/metrics").1;
        metrics.contains("stowage_drill_last_success_timestamp_seconds{job=\"app\"}")
    });
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{job=\"app\"}}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let now = chrono::Utc::now().timestamp() as f64;
    assert!((now - value("stowage_drill_last_success_timestamp_seconds")).abs() < 120.0);
    assert!(value("stowage_drill_duration_seconds") > 0.0);

    // Unreadable: the dump's bytes no longer match the manifest.
    let dump = setup.dump_path(&id);
    let mut bytes = std::fs::read(&dump).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&dump, bytes).expect("write");

    daemon.wait_for_output("drill app: FAILED", Duration::from_secs(60));
    let str_envs: Vec<(&str, &str)> = envs
        .iter()
        .map(|(k, v)| (*k, v.to_str().expect("utf-8 path")))
        .collect();
    let health = || {
        let out = common::run_stowage_with_env(&setup.config, ["health"], &str_envs);
        (out.status.code(), text(&out))
    };
    common::wait_for("unhealthy after the drill", Duration::from_secs(20), || {
        health().0 == Some(1)
    });
    let (_, said) = health();
    assert!(
        said.contains("restore drill at") && said.contains("failed"),
        "{said}"
    );
    let mut hooks = Vec::new();
    common::wait_for("the drill webhook", Duration::from_secs(20), || {
        hooks.extend(rx.take());
        hooks.iter().any(|(_, path, body)| {
            path == "/hook"
                && body.contains("\"event\":\"drill\"")
                && body.contains("\"outcome\":\"failed\"")
        })
    });
    let page = common::http_get(port, "/").1;
    assert!(
        page.contains("last drill") && page.contains("drill app: FAILED"),
        "{page}"
    );
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}
