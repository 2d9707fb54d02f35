//! Restore drills against a real PostgreSQL: the newest backup restores into a scratch
//! database, its tables and row counts match what the dump's snapshot held, checks run,
//! the scratch database is dropped; a failed drill is named, exit 1, makes health fail
//! and is sent to the job's webhook. A drill never targets the source's own database.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Job, JobBuilder, PgServer, Receiver, seed_sample_db, text};

/// What the drill tests read of a job's backups on its local destination.
trait Drilled {
    fn dump_path(&self, id: &str) -> PathBuf;
    fn source_entry(&self, id: &str) -> serde_json::Value;
    fn tamper_count(&self, id: &str, object: &str, n: u64);
}

impl Drilled for Job {
    fn dump_path(&self, id: &str) -> PathBuf {
        self.backup_dir("local", id).join("db.pgdump.zst")
    }

    fn source_entry(&self, id: &str) -> serde_json::Value {
        let m = self.manifest("local", id);
        m["sources"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "db"))
            .cloned()
            .expect("db source")
    }

    /// Change the count the manifest recorded for `object` (the job has no auth key: the
    /// manifest is plain JSON, as in the PostgreSQL test above).
    fn tamper_count(&self, id: &str, object: &str, n: u64) {
        let mut m = self.manifest("local", id);
        for s in m["sources"].as_array_mut().expect("sources") {
            if s["name"] == "db" {
                assert!(s["rows"][object].is_u64(), "{object} recorded in {s}");
                s["rows"][object] = n.into();
            }
        }
        std::fs::write(
            self.manifest_path("local", id),
            serde_json::to_vec(&m).expect("json"),
        )
        .expect("write");
    }
}

/// Job "app" backing up PostgreSQL database "app", with `drill` as the keys of its drill
/// (`SCRATCH` and `SOURCE_DB` standing for the scratch and the source database's URL).
fn stack(drill: &str) -> (PgServer, Job) {
    stack_with(drill, |job| job)
}

/// Like [`stack`], `more` adding to the config.
fn stack_with(drill: &str, more: impl FnOnce(JobBuilder) -> JobBuilder) -> (PgServer, Job) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 200);
    let drill = drill
        .replace("SCRATCH", &pg.url("stowage_drill"))
        .replace("SOURCE_DB", &pg.url("app"));
    let setup = more(
        Job::new("app")
            .local("local", None)
            .postgres("db", &pg.url("app"))
            .drill(&drill),
    )
    .write();
    (pg, setup)
}

const DRILL: &str = r#"schedule = "0 5 * * 0"
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
    let m = setup.manifest("local", &id);
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
    let mut m = setup.manifest("local", &id);
    for s in m["sources"].as_array_mut().expect("sources") {
        if s["name"] == "db" {
            s["rows"]["public.orders"] = 999_999u64.into();
        }
    }
    std::fs::write(
        setup.manifest_path("local", &id),
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
        r#"schedule = "0 5 * * 0"
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
    let (_pg, setup) = stack("schedule = \"0 5 * * 0\"\nto = \"SOURCE_DB\"\n");
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
    let (_pg, setup) = stack_with("schedule = \"*/3 * * * * *\"\nto = \"SCRATCH\"\n", |job| {
        job.webhook(&format!("http://127.0.0.1:{}/hook", rx.port))
            .top(&format!("[server]\nlisten = \"127.0.0.1:{port}\""))
    });
    let id = setup.backup();

    let mut daemon = setup.daemon();
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
    let health = || setup.stowage(&["health"]);
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

// ---------------------------------------------------------------------------------------------
// MariaDB, SQLite and Redis: each engine's own scratch (a database on the source's server, a
// file in a private directory, a redis-server of its own), the counts recorded at dump time
// compared, the scratch gone afterwards whether the drill passed or failed.
// ---------------------------------------------------------------------------------------------

/// A job `app` with one source and a drill; `to` is the drill's target as written in config.
fn setup_with(source: &str, drill: &str) -> Job {
    Job::new("app")
        .local("local", None)
        .source(&format!("name = \"db\"\n{source}"))
        .drill(&format!("schedule = \"0 5 * * 0\"\n{drill}"))
        .write()
}

/// Entries left in a directory.
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Rows whose strings hold what a text search would take for row separators or quotes,
/// binary data, a trigger whose body inserts, a view and an empty table.
const MARIADB_SEED: &str = r#"
create table customers (id int primary key, name varchar(200), note text);
create table orders (id int primary key, customer_id int, total int, data blob);
create table empty_one (id int primary key);
create view big_orders as select * from orders where total > 100;
create table audit (id int auto_increment primary key, what varchar(100));
create trigger orders_audit after insert on orders for each row insert into audit (what) values ('x'),('y');
create sequence seq1;
"#;

fn seed_mariadb(db: &common::mariadb::MariaDbServer) {
    db.create_db("app");
    db.sql("app", MARIADB_SEED);
    let mut customers = Vec::new();
    for i in 0..300 {
        customers.push(format!(
            "({i}, 'c{i} ),( it''s \\'quoted\\' ),(', 'line\\nbreak ),(\\\\ {i}')"
        ));
    }
    db.sql(
        "app",
        &format!("insert into customers values {};", customers.join(",")),
    );
    let mut orders = Vec::new();
    for i in 0..120 {
        orders.push(format!(
            "({i}, {}, {}, unhex('292C28275C00{i:02X}'))",
            i % 300,
            i * 3
        ));
    }
    // The trigger adds 2 audit rows per order: 240.
    db.sql(
        "app",
        &format!("insert into orders values {};", orders.join(",")),
    );
}

#[test]
fn mariadb_drill_restores_into_a_scratch_database_and_fails_on_a_tampered_count() {
    let db = common::mariadb::MariaDbServer::start();
    seed_mariadb(&db);
    let setup = setup_with(
        &format!("type = \"mariadb\"\nurl = \"{}\"", db.url("app")),
        &format!(
            "to = \"{}\"\nchecks = [\"select count(*) > 0 from orders\", \"select not exists (select 1 from customers where name not like '%),(%')\"]",
            db.url("stowage_drill")
        ),
    );
    let id = setup.backup();
    let entry = setup.source_entry(&id);
    for (table, n) in [
        ("customers", 300),
        ("orders", 120),
        ("audit", 240),
        ("empty_one", 0),
    ] {
        assert_eq!(entry["rows"][table].as_u64(), Some(n), "{table} in {entry}");
    }
    assert!(
        entry["rows"].get("big_orders").is_none(),
        "a view has no rows: {entry}"
    );

    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "drill app: ok, backup {id} from local restored and checked in"
        )) && out.contains("4 table(s), 660 row(s), as in the backup")
            && out.contains("check passed: select count(*) > 0 from orders"),
        "{out}"
    );
    assert!(
        !db.db_exists("stowage_drill"),
        "the scratch database is dropped"
    );
    assert_eq!(db.sql("app", "select count(*) from orders"), "120");

    setup.tamper_count(&id, "customers", 299);
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("drill app: FAILED")
            && out.contains("table customers: 300 row(s) restored, 299 in the backup"),
        "{out}"
    );
    assert!(
        !db.db_exists("stowage_drill"),
        "dropped after a failed drill too"
    );
}

#[test]
fn a_mariadb_drill_into_the_source_or_a_system_database_is_refused() {
    let db = common::mariadb::MariaDbServer::start();
    db.create_db("app");
    let source = format!("type = \"mariadb\"\nurl = \"{}\"", db.url("app"));
    let setup = setup_with(&source, &format!("to = \"{}\"", db.url("APP")));
    let (code, out) = setup.stowage(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is the database of source \"db\""), "{out}");

    db.sql(
        "app",
        "create table t (id int primary key); insert into t values (1);",
    );
    let setup = setup_with(&source, &format!("to = \"{}\"", db.url("mysql")));
    setup.backup();
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("\"mysql\" is a system database of the server"),
        "{out}"
    );
    assert!(db.db_exists("mysql"));
}

fn sqlite_source(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let path = data.join("app.db");
    let c = rusqlite::Connection::open(&path).expect("open");
    c.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE \"odd \"\"name\"(x);
         CREATE TABLE empty_one(x);
         CREATE VIEW v AS SELECT * FROM customers;
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 250)
           INSERT INTO customers(name) SELECT 'c' || i FROM n;
         INSERT INTO \"odd \"\"name\" VALUES (1), (2);",
    )
    .expect("seed");
    path
}

#[test]
fn sqlite_drill_restores_into_a_private_file_and_fails_on_a_tampered_count() {
    let home = tempfile::tempdir().expect("tempdir");
    let path = sqlite_source(home.path());
    let drills = home.path().join("drills");
    std::fs::create_dir(&drills).expect("drills dir");
    let setup = setup_with(
        &format!("type = \"sqlite\"\npath = \"{}\"", path.display()),
        &format!(
            "to = \"{}\"\nchecks = [\"select count(*) = 250 from customers\"]",
            drills.display()
        ),
    );
    let id = setup.backup();
    // (A dump of a WAL database no application has open leaves its -wal and -shm: the
    // backup's doing, documented in the engine; the drill must add nothing.)
    let before = entries(path.parent().expect("data"));
    let entry = setup.source_entry(&id);
    for (table, n) in [("customers", 250), ("odd \"name", 2), ("empty_one", 0)] {
        assert_eq!(entry["rows"][table].as_u64(), Some(n), "{table} in {entry}");
    }

    // What a killed drill left (its process, pid 999999999, is gone) goes; a link is kept.
    std::fs::create_dir_all(drills.join("stowage-drill-999999999-5-abc/sub")).expect("leftover");
    std::os::unix::fs::symlink(home.path(), drills.join("stowage-drill-999999999-6-lnk"))
        .expect("link");
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(entries(&drills), ["stowage-drill-999999999-6-lnk"], "{out}");
    std::fs::remove_file(drills.join("stowage-drill-999999999-6-lnk")).expect("unlink");
    assert!(path.exists());
    assert!(
        out.contains("3 table(s), 252 row(s), as in the backup")
            && out.contains("check passed: select count(*) = 250 from customers"),
        "{out}"
    );
    assert_eq!(
        entries(&drills),
        Vec::<String>::new(),
        "the scratch directory is removed"
    );
    let mut after = entries(path.parent().expect("data"));
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "nothing written beside the source");

    setup.tamper_count(&id, "odd \"name", 3);
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("table odd \"name: 2 row(s) restored, 3 in the backup"),
        "{out}"
    );
    assert_eq!(
        entries(&drills),
        Vec::<String>::new(),
        "removed after a failed drill too"
    );

    // The source's own directory is refused as the drill's directory.
    let setup = setup_with(
        &format!("type = \"sqlite\"\npath = \"{}\"", path.display()),
        &format!("to = \"{}\"", path.parent().expect("data").display()),
    );
    let (code, out) = setup.stowage(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("jobs.app.drill.to:") && out.contains("source \"db\""),
        "{out}"
    );
}

fn seed_redis(r: &common::redis::RedisServer) {
    for i in 0..40 {
        r.cmd(&[b"SET", format!("k{i}").as_bytes(), b"v"]);
    }
    r.cmd(&[b"HSET", b"h", b"f", b"v"]);
    // Expires before the drill: a server that drops expired keys on load would count 41.
    r.cmd(&[b"SET", b"brief", b"v", b"PX", b"1500"]);
    let mut c = r.conn();
    c.cmd(&[b"SELECT", b"3"]);
    for i in 0..5 {
        c.cmd(&[b"SET", format!("d3-{i}").as_bytes(), b"v"]);
    }
}

#[test]
fn redis_drill_loads_the_rdb_into_its_own_server_and_fails_on_a_tampered_count() {
    let r = common::redis::RedisServer::start();
    seed_redis(&r);
    let home = tempfile::tempdir().expect("tempdir");
    let drills = home.path().join("drills");
    std::fs::create_dir(&drills).expect("drills dir");
    let setup = setup_with(
        &format!("type = \"redis\"\nurl = \"{}\"", r.url()),
        &format!("to = \"{}\"", drills.display()),
    );
    let id = setup.backup();
    let entry = setup.source_entry(&id);
    assert_eq!(entry["rows"]["db0"].as_u64(), Some(42), "{entry}");
    assert_eq!(entry["rows"]["db3"].as_u64(), Some(5), "{entry}");

    std::thread::sleep(Duration::from_millis(2000));
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!(
            "drill app: ok, backup {id} from local restored and checked in"
        )) && out.contains("2 database(s), 47 key(s), as in the backup"),
        "{out}"
    );
    assert_eq!(
        entries(&drills),
        Vec::<String>::new(),
        "the scratch directory is removed"
    );

    setup.tamper_count(&id, "db3", 6);
    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("drill app: FAILED")
            && out.contains("database db3: 5 key(s) restored, 6 in the backup"),
        "{out}"
    );
    assert_eq!(
        entries(&drills),
        Vec::<String>::new(),
        "removed after a failed drill too"
    );

    // Without redis-server, the drill says what to install, and leaves nothing behind.
    let out =
        common::run_stowage_with_env(&setup.config, ["drill", "app"], &[("PATH", "/nonexistent")]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("redis-server not found on PATH") && said.contains("package redis-server"),
        "{said}"
    );
    assert_eq!(entries(&drills), Vec::<String>::new());
}

#[test]
fn a_redis_drill_refuses_checks_and_a_server_url() {
    let r = common::redis::RedisServer::start();
    let source = format!("type = \"redis\"\nurl = \"{}\"", r.url());
    let setup = setup_with(&source, "to = \"/var/tmp\"\nchecks = [\"select 1\"]");
    let (code, out) = setup.stowage(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("jobs.app.drill.checks: a redis drill runs no checks"),
        "{out}"
    );
    let setup = setup_with(&source, &format!("to = \"{}\"", r.url()));
    let (code, out) = setup.stowage(&["check-config"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("jobs.app.drill.to:"), "{out}");
}

/// The process ids whose parent is `parent` and whose name is `comm`, from /proc.
fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if &stat[open + 1..close] == comm && ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// Gone, or a zombie nobody has reaped yet (it no longer runs).
fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|c| stat[c + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// A stowage killed outright (no destructor runs) while its drill's redis-server loads
/// the backup: the kernel kills the server with it, and the next drill removes the
/// directory it left.
#[test]
fn a_killed_redis_drill_leaves_no_server_running_and_its_directory_goes_next_time() {
    let r = common::redis::RedisServer::start_with(common::redis::RedisOptions {
        args: vec!["--enable-debug-command".into(), "yes".into()],
        ..Default::default()
    });
    // Enough keys that loading them takes a while.
    r.cmd(&[b"DEBUG", b"POPULATE", b"2000000"]);
    let home = tempfile::tempdir().expect("tempdir");
    let drills = home.path().join("drills");
    std::fs::create_dir(&drills).expect("drills dir");
    let setup = setup_with(
        &format!("type = \"redis\"\nurl = \"{}\"", r.url()),
        &format!("to = \"{}\"", drills.display()),
    );
    setup.backup();

    let drill = common::spawn_stowage(&setup.config, ["drill", "app"]);
    let mut server = Vec::new();
    common::wait_for("the drill's redis-server", Duration::from_secs(120), || {
        server = children_named(drill.pid(), "redis-server");
        !server.is_empty()
    });
    drill.signal("KILL");
    let pid = server[0];
    common::wait_for(
        "the scratch server to die with stowage",
        Duration::from_secs(10),
        || process_gone(pid),
    );
    let _ = drill.wait(Duration::from_secs(10));
    assert_eq!(
        entries(&drills).len(),
        1,
        "the killed drill's directory is still there"
    );

    let (code, out) = setup.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 database(s), 2000000 key(s), as in the backup"),
        "{out}"
    );
    assert_eq!(entries(&drills), Vec::<String>::new(), "{out}");
}
