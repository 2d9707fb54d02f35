//! The MariaDB/MySQL engine end to end, through the real binary, against a real MariaDB
//! server (Debian's 10.11, one per test) and moto for S3. Round trips are verified by
//! restoring into another database and comparing every table's rows, and the objects that
//! are not rows (view, trigger, routines, event, foreign key) by using them.

mod common;

use common::text;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use common::mariadb::{MariaDbServer, quote_string};
use common::{Job, S3Server, read_tree, run_stowage, spawn_stowage, toml_str};

const BUCKET: &str = "backups";
const BACKUP_USER: &str = "backup";
/// Quotes, a backslash, a '#' and spaces: everything an option file must escape or quote.
const BACKUP_PASSWORD: &str = "pa\"ss\\w#rd 'x";

/// Every byte value once, as a hex literal.
fn all_bytes_hex() -> String {
    (0..=255u8).map(|b| format!("{b:02X}")).collect()
}

/// A database with what a dump must carry: utf8mb4 text (emoji, quotes, backslashes,
/// newlines), NULLs, binary blobs with every byte value, a foreign key, a view, a trigger,
/// a function, a procedure, an event, and a table whose name needs quoting. `rows`
/// customers, twice as many orders.
fn seed(db: &MariaDbServer, name: &str, rows: usize) {
    db.create_db(name);
    db.sql(
        name,
        &format!(
            r#"
create table customers (
  id int primary key,
  name varchar(200) character set utf8mb4 not null,
  note text character set utf8mb4 null,
  score decimal(10,2),
  created datetime(6)
) engine=innodb default charset=utf8mb4;
insert into customers
  select seq,
         concat('customer ', seq, ' 😀 Zoë ''q'' "dq" \\ back'),
         if(seq % 3 = 0, null, concat('note\nline two\t', seq)),
         seq * 1.25,
         '2024-01-01' + interval seq second
  from seq_1_to_{rows};
create table orders (
  id bigint primary key,
  customer_id int not null,
  payload blob,
  amount decimal(12,2),
  foreign key (customer_id) references customers(id)
) engine=innodb;
insert into orders
  select seq, 1 + seq % {rows}, if(seq % 5 = 0, null, random_bytes(16 + seq % 300)), seq / 7
  from seq_1_to_{orders};
insert into orders values (0, 1, unhex('{bytes}'), 0);
create table audit (id int auto_increment primary key, order_id bigint, at datetime) engine=innodb;
create table `odd``name here` (id int primary key, v varchar(10)) engine=innodb;
insert into `odd``name here` values (1, 'x'), (2, null);
create view customer_orders as
  select c.id, c.name, count(o.id) as n from customers c left join orders o on o.customer_id = c.id
  group by c.id, c.name;
create trigger orders_audit after insert on orders for each row
  insert into audit (order_id, at) values (new.id, now());
create function order_total(cid int) returns decimal(14,2) reads sql data
  return (select coalesce(sum(amount), 0) from orders where customer_id = cid);
create procedure count_orders(out n int) select count(*) into n from orders;
create event purge_audit on schedule every 1 day starts '2030-01-01 00:00:00'
  do delete from audit where at < now() - interval 30 day;
"#,
            orders = rows * 2,
            bytes = all_bytes_hex(),
        ),
    );
}

/// A job `app` with a local destination (and moto, when given) and one source of `kind`
/// ("mariadb" or "mysql") with the given extra keys.
fn setup(kind: &str, url: &str, source_extra: &str, s3: Option<&S3Server>) -> Job {
    let mut job = Job::with_prefix("app", "stowage-mariadb-test-")
        .top("[log]\nlevel = \"info\"")
        .local("local", Some(10));
    if let Some(s3) = s3 {
        let keys = format!(
            "{}prefix = \"nightly\"\nretention = {{ keep_last = 10 }}\n",
            job.s3_keys(s3, BUCKET)
        );
        job = job.destination("offsite", &keys);
    }
    job.database(kind, "db", url, source_extra).write()
}

/// A file holding `password` in the job's directory, and the `password_file` key naming it.
fn password_file(s: &Job, name: &str, password: &str) -> String {
    let p = s.path(name);
    std::fs::write(&p, format!("{password}\n")).expect("password file");
    format!("password_file = {}", toml_str(p.display()))
}

fn run_ok(cfg: &Path) -> Output {
    let out = run_stowage(cfg, ["run", "app"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out));
    out
}

/// Published backup ids on `dest`, newest first, from `stowage list`.
fn ids_on(cfg: &Path, dest: &str) -> Vec<String> {
    let out = run_stowage(cfg, ["list", "app"]);
    assert!(out.status.success(), "list failed:\n{}", text(&out));
    common::parse_listing(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .find(|(d, _)| d == dest)
        .map(|(_, ids)| ids)
        .unwrap_or_default()
}

fn restore(cfg: &Path, args: &[&str]) -> Output {
    let mut all = vec!["restore", "app"];
    all.extend_from_slice(args);
    run_stowage(cfg, all)
}

fn restore_ok(cfg: &Path, args: &[&str]) -> String {
    let out = restore(cfg, args);
    assert!(out.status.success(), "restore {args:?}:\n{}", text(&out));
    text(&out)
}

fn restore_refused(cfg: &Path, args: &[&str], expect: &str) -> String {
    let out = restore(cfg, args);
    let t = text(&out);
    assert!(!out.status.success(), "restore {args:?} should fail:\n{t}");
    assert!(t.contains(expect), "expected {expect:?} in:\n{t}");
    t
}

/// What is not rows: the view answers, the trigger fires, the routines run, the event and
/// the foreign key exist. Returns a summary that must be equal between copies.
fn objects_work(db: &MariaDbServer, name: &str) -> BTreeMap<&'static str, String> {
    let mut m = BTreeMap::new();
    m.insert(
        "view",
        db.sql(name, "select count(*), sum(n) from customer_orders"),
    );
    m.insert("function", db.sql(name, "select order_total(1)"));
    m.insert(
        "procedure",
        db.sql(name, "call count_orders(@n); select @n"),
    );
    m.insert(
        "event",
        db.sql(
            name,
            "select event_name, event_definition from information_schema.events \
             where event_schema = database()",
        ),
    );
    m.insert(
        "foreign key",
        db.sql(
            name,
            "select constraint_name, table_name, referenced_table_name \
             from information_schema.referential_constraints where constraint_schema = database()",
        ),
    );
    // The trigger: an insert into orders leaves a row in audit.
    let before: u64 = db
        .sql(name, "select count(*) from audit")
        .parse()
        .expect("count");
    db.sql(
        name,
        "insert into orders values (999999, 1, 'x', 1); delete from orders where id = 999999",
    );
    let after: u64 = db
        .sql(name, "select count(*) from audit")
        .parse()
        .expect("count");
    db.sql(name, "delete from audit where order_id = 999999");
    m.insert("trigger", format!("{}", after - before));
    m
}

/// Backup through a local and an S3 destination as a user with a password (from
/// password_file, with characters an option file must escape), restore from S3 into a
/// fresh database: every table equal, every object there and working, the manifest
/// recording the engine, tool, server version and tables, and the password nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_through_s3_keeps_rows_and_objects() {
    let db = MariaDbServer::start();
    seed(&db, "shop", 300);
    db.create_user(BACKUP_USER, BACKUP_PASSWORD);
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let s = setup("mariadb", &db.url_as(BACKUP_USER, "shop"), "", Some(&s3));
    let pw = password_file(&s, "db_password", BACKUP_PASSWORD);
    let body = std::fs::read_to_string(&s.config).expect("config") + &pw + "\n";
    std::fs::write(&s.config, body).expect("config");

    let out = run_ok(&s.config);
    assert!(
        !text(&out).contains(BACKUP_PASSWORD),
        "password in the output:\n{}",
        text(&out)
    );
    let ids = ids_on(&s.config, "offsite");
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(ids_on(&s.config, "local"), ids);
    let id = &ids[0];

    let m = s.manifest("local", id);
    let src = &m["sources"][0];
    assert_eq!(src["type"], "mariadb", "{m:#}");
    assert_eq!(src["format"], "mariadb-dump SQL", "{m:#}");
    assert!(
        src["key"]
            .as_str()
            .is_some_and(|k| k.ends_with("/db.sql.zst")),
        "{m:#}"
    );
    let tool = src["tool"].as_str().expect("tool version");
    assert!(
        tool.contains("mariadb-dump") && tool.contains("10.11"),
        "{tool}"
    );
    assert_eq!(m["tools"]["mariadb-dump"], tool, "{m:#}");
    let version = src["server_version"].as_str().expect("server version");
    let live_version = db.sql("mysql", "select version()");
    assert_eq!(version, live_version);
    let objects: Vec<&str> = src["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    assert_eq!(objects, ["audit", "customers", "odd`name here", "orders"]);

    // The stored object is the plain dump: zstd -d gives mariadb-dump's SQL text.
    let stored =
        std::fs::read(s.path("local").join("app").join(id).join("db.sql.zst")).expect("dump");
    let sql = common::zstd_decompress(&stored);
    assert!(sql.starts_with(b"/*M!999999\\- enable the sandbox mode */"));
    assert!(
        String::from_utf8_lossy(&sql[sql.len() - 100..]).contains("-- Dump completed"),
        "incomplete dump stored"
    );

    // Restore from S3 as the same user: the target on the same server takes the source's
    // password (no password in --to).
    db.create_db("copy");
    restore_ok(
        &s.config,
        &[
            "latest",
            "--from",
            "offsite",
            "--to",
            &db.url_as(BACKUP_USER, "copy"),
        ],
    );
    let want = db.table_checksums("shop");
    assert_eq!(want.len(), 4);
    assert!(want["orders"].starts_with("601:"), "{want:?}");
    assert_eq!(db.table_checksums("copy"), want);
    assert_eq!(db.view_names("copy"), ["customer_orders"]);
    assert_eq!(objects_work(&db, "copy"), objects_work(&db, "shop"));
    assert_eq!(objects_work(&db, "copy")["trigger"], "1");
    // Binary data byte for byte, and text that needs utf8mb4.
    assert_eq!(
        db.sql("copy", "select hex(payload) from orders where id = 0"),
        all_bytes_hex()
    );
    assert_eq!(
        db.sql("copy", "select name from customers where id = 7"),
        "customer 7 😀 Zoë 'q' \"dq\" \\\\ back"
    );
    assert_eq!(
        db.sql("copy", "select count(*) from customers where note is null"),
        "100"
    );
}

/// A whole restore refuses a target with tables unless --clean, which puts the backup's
/// data back over changed rows; `type = "mysql"` is the same engine.
#[test]
fn restore_refuses_a_non_empty_target_unless_clean_and_mysql_is_an_alias() {
    let db = MariaDbServer::start();
    seed(&db, "app", 50);
    let bad = setup("mysql", "mysql://root@127.0.0.1:1", "path = \"/x\"", None);
    let out = run_stowage(&bad.config, ["check-config"]);
    let t = text(&out);
    assert!(!out.status.success(), "check-config accepted:\n{t}");
    assert!(
        t.contains("sources[0].path: only valid for type = \"sqlite\" or \"files\""),
        "{t}"
    );
    let bad = setup(
        "mysql",
        "mysql://root@127.0.0.1:1",
        "exclude_tables = [\"app.orders\"]",
        None,
    );
    let out = run_stowage(&bad.config, ["check-config"]);
    let t = text(&out);
    assert!(!out.status.success(), "check-config accepted:\n{t}");
    for e in [
        "sources[0].url: invalid mariadb URL: the URL names no database",
        "sources[0].exclude_tables[0]: \"app.orders\": give the table name without its database, e.g. \"orders\"",
    ] {
        assert!(t.contains(e), "expected {e:?} in:\n{t}");
    }
    let s = setup("mysql", &db.url("app"), "", None);
    let out = run_stowage(&s.config, ["check-config"]);
    assert!(out.status.success(), "check-config:\n{}", text(&out));
    run_ok(&s.config);
    let id = ids_on(&s.config, "local").remove(0);
    assert_eq!(s.manifest("local", &id)["sources"][0]["type"], "mariadb");
    let want = db.table_checksums("app");

    // The application changes rows after the backup.
    db.sql(
        "app",
        "update customers set name = 'changed' where id = 1; delete from orders where id > 90",
    );
    let changed = db.table_checksums("app");
    assert_ne!(changed, want);
    restore_refused(
        &s.config,
        &["latest", "--to", &db.url("app")],
        "target database \"app\" already has 5 table(s)",
    );
    assert_eq!(
        db.table_checksums("app"),
        changed,
        "a refused restore wrote"
    );

    restore_ok(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("app"),
            "--clean",
            "--force-into-source",
        ],
    );
    assert_eq!(db.table_checksums("app"), want);
    assert_eq!(objects_work(&db, "app")["trigger"], "1");

    // A database that does not exist: the client's message and what to do; a dry run
    // connects and fails the same way; --create makes it.
    restore_refused(
        &s.config,
        &["latest", "--to", &db.url("missing")],
        "Unknown database 'missing'",
    );
    let said = restore_refused(
        &s.config,
        &["latest", "--dry-run", "--to", &db.url("missing")],
        "Unknown database 'missing'",
    );
    assert!(said.contains("add --create"), "{said}");
    let said = restore_ok(
        &s.config,
        &[
            "latest",
            "--dry-run",
            "--create",
            "--to",
            &db.url("created"),
        ],
    );
    assert!(said.contains("would create database \"created\""), "{said}");
    let said = restore_ok(
        &s.config,
        &["latest", "--create", "--to", &db.url("created")],
    );
    assert!(said.contains("created database \"created\""), "{said}");
    assert_eq!(db.table_checksums("created"), want);
    // A dry run into a non-empty database fails like the restore.
    restore_refused(
        &s.config,
        &["latest", "--dry-run", "--to", &db.url("created")],
        "target database \"created\" already has 5 table(s)",
    );
    // A bad URL is refused before any work.
    restore_refused(
        &s.config,
        &["latest", "--to", "postgres://h/app"],
        "is not mariadb",
    );

    // A stored dump cut short: the whole object is checked before the first statement
    // runs (issue 23), so the restore fails and nothing at all reaches the target.
    let key = s.path("local").join("app").join(&id).join("db.sql.zst");
    let stored = std::fs::read(&key).expect("stored dump");
    std::fs::write(&key, &stored[..stored.len() / 2]).expect("cut the dump");
    db.create_db("damaged");
    let t = restore_refused(
        &s.config,
        &["latest", "--to", &db.url("damaged")],
        "nothing was restored",
    );
    assert!(t.contains("db.sql.zst is corrupt"), "{t}");
    assert!(db.table_names("damaged").is_empty(), "{t}");
    assert!(db.view_names("damaged").is_empty(), "{t}");
}

/// `--table orders` into the existing database where orders was dropped: orders back with
/// its rows and trigger, other tables untouched; an existing table is not replaced without
/// --clean; a table the backup lacks is refused naming the ones it has. `--exclude-table`
/// leaves out the table and the view that reads it.
#[test]
fn selected_tables_restore_into_an_existing_database() {
    let db = MariaDbServer::start();
    seed(&db, "app", 100);
    let s = setup("mariadb", &db.url("app"), "", None);
    run_ok(&s.config);
    let want = db.table_checksums("app");

    db.sql(
        "app",
        "drop table orders; insert into customers (id, name) values (100000, 'after the backup')",
    );
    let customers_now = db.table_checksums("app")["customers"].clone();
    let out = restore_ok(
        &s.config,
        &["latest", "--to", &db.url("app"), "--table", "orders"],
    );
    assert!(out.contains("only table(s) orders"), "{out}");
    let got = db.table_checksums("app");
    assert_eq!(got["orders"], want["orders"]);
    assert_eq!(got["customers"], customers_now, "another table was touched");
    assert_eq!(got["audit"], want["audit"]);
    assert_eq!(objects_work(&db, "app")["trigger"], "1");

    // orders exists now: replacing it needs --clean.
    restore_refused(
        &s.config,
        &["latest", "--to", &db.url("app"), "--table", "orders"],
        "already has table(s) orders; pass --clean",
    );
    db.sql("app", "delete from orders where id < 10");
    restore_ok(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("app"),
            "--table",
            "orders",
            "--clean",
            "--force-into-source",
        ],
    );
    assert_eq!(db.table_checksums("app")["orders"], want["orders"]);

    let t = restore_refused(
        &s.config,
        &["latest", "--to", &db.url("app"), "--table", "ordres"],
        "table(s) not in this backup: ordres (closest: orders; 4 tables in this backup)",
    );
    assert!(!t.contains("panicked"), "{t}");
    restore_refused(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("app"),
            "--table",
            "orders",
            "--exclude-table",
            "orders",
        ],
        "no table left to restore",
    );
    // A dry run fails where the restore would (orders exists, no --clean); with --clean it
    // says what it would do and does nothing.
    let before = db.table_checksums("app");
    restore_refused(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("app"),
            "--table",
            "orders",
            "--dry-run",
        ],
        "already has table(s) orders",
    );
    let out = restore_ok(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("app"),
            "--table",
            "orders",
            "--clean",
            "--force-into-source",
            "--dry-run",
        ],
    );
    assert!(
        out.contains("only table(s) orders") && out.contains("would restore db into"),
        "{out}"
    );
    assert_eq!(db.table_checksums("app"), before);

    // Everything but customers, into a fresh database: the view over customers cannot be
    // created and is left out (and said so); orders still references customers by its key.
    db.create_db("partial");
    let out = restore_ok(
        &s.config,
        &[
            "latest",
            "--to",
            &db.url("partial"),
            "--exclude-table",
            "customers",
        ],
    );
    assert!(
        out.contains("3 table(s); skipped: customers") && out.contains("view(s) customer_orders"),
        "{out}"
    );
    assert_eq!(
        db.table_names("partial"),
        ["audit", "odd`name here", "orders"]
    );
    assert!(db.view_names("partial").is_empty());
    let got = db.table_checksums("partial");
    for t in ["audit", "odd`name here", "orders"] {
        assert_eq!(got[t], want[t], "{t}");
    }
    assert_eq!(
        db.sql("partial", "select order_total(1)"),
        db.sql("app", "select order_total(1)")
    );

    // A source's exclude_tables: dumped, recorded in the manifest, left out of a restore
    // unless --all-tables.
    let body = std::fs::read_to_string(&s.config).expect("config");
    std::fs::write(&s.config, format!("{body}exclude_tables = [\"audit\"]\n")).expect("config");
    run_ok(&s.config);
    let id = ids_on(&s.config, "local").remove(0);
    let m = s.manifest("local", &id);
    assert_eq!(m["sources"][0]["exclude_tables"][0], "audit", "{m:#}");
    db.create_db("no_audit");
    let out = restore_ok(&s.config, &["latest", "--to", &db.url("no_audit")]);
    assert!(out.contains("skipped: audit"), "{out}");
    assert!(!db.table_names("no_audit").contains(&"audit".to_string()));
    assert_eq!(db.view_names("no_audit"), ["customer_orders"]);
    db.create_db("all");
    restore_ok(
        &s.config,
        &["latest", "--to", &db.url("all"), "--all-tables"],
    );
    assert_eq!(db.table_checksums("all"), db.table_checksums("app"));
}

/// Wrong password, missing database, and the server killed while mariadb-dump is
/// mid-stream: the run fails naming the tool and quoting it, nothing is published, the
/// earlier backup's files stay byte for byte, and it still restores.
#[test]
fn failed_dumps_publish_nothing_and_leave_earlier_backups_intact() {
    let mut db = MariaDbServer::start();
    seed(&db, "app", 2000);
    db.create_user(BACKUP_USER, "right password");
    // Sorts last: the dump blocks on it while the session holds it locked, after some
    // megabytes of the tables before it (incompressible) have gone to the destination.
    db.sql(
        "app",
        "create table bulk (id int primary key, b blob); \
         insert into bulk select seq, random_bytes(1000) from seq_1_to_4000; \
         create table zz_last (id int primary key); insert into zz_last values (1)",
    );
    let s = setup("mariadb", &db.url_as(BACKUP_USER, "app"), "", None);
    let base = std::fs::read_to_string(&s.config).expect("config");
    let good = password_file(&s, "good_pw", "right password");
    std::fs::write(&s.config, format!("{base}{good}\n")).expect("config");
    run_ok(&s.config);
    let ids = ids_on(&s.config, "local");
    assert_eq!(ids.len(), 1);
    let before = read_tree(&s.path("local"));
    let want = db.table_checksums("app");

    let assert_clean_failure = |s: &Job, out: &Output, expect: &[&str]| {
        let t = text(out);
        assert!(!out.status.success(), "run should fail:\n{t}");
        for e in expect {
            assert!(t.contains(e), "expected {e:?} in:\n{t}");
        }
        assert!(
            t.contains("backup failed: job=app"),
            "no failure summary:\n{t}"
        );
        assert_eq!(ids_on(&s.config, "local"), ids, "something was published");
        assert!(
            read_tree(&s.path("local")) == before,
            "the earlier backup changed"
        );
    };

    // 1. Wrong password.
    let bad = password_file(&s, "bad_pw", "wrong password");
    std::fs::write(&s.config, format!("{base}{bad}\n")).expect("config");
    let out = run_stowage(&s.config, ["run", "app"]);
    assert_clean_failure(
        &s,
        &out,
        &["mariadb-dump failed", "Access denied for user 'backup'"],
    );
    assert!(!text(&out).contains("wrong password"), "password shown");

    // 2. A database that does not exist.
    let missing = setup("mariadb", &db.url_as(BACKUP_USER, "nope"), "", None);
    let body = std::fs::read_to_string(&missing.config)
        .expect("config")
        .replace(
            &toml_str(missing.path("local").display()),
            &toml_str(s.path("local").display()),
        );
    std::fs::write(&missing.config, format!("{body}{good}\n")).expect("config");
    let out = run_stowage(&missing.config, ["run", "app"]);
    assert_clean_failure(
        &s,
        &out,
        &["mariadb-dump failed", "Unknown database 'nope'"],
    );

    // 3. The server dies while the dump is under way: the dump has written the tables
    // before zz_last and waits for the lock on it when the server is killed.
    std::fs::write(&s.config, format!("{base}{good}\n")).expect("config");
    let mut lock = db.session("app");
    lock.exec("lock tables zz_last write");
    let mut running = spawn_stowage(&s.config, ["run", "app"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let waiting = db.sql(
            "mysql",
            "select count(*) from information_schema.processlist \
             where state = 'Waiting for table metadata lock' and info like '%zz_last%'",
        );
        if waiting == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "the dump never reached zz_last");
        assert!(
            running.exited().is_none(),
            "stowage exited early:\n{}",
            running.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Data was on its way to the destination when the server died.
    let streamed = || -> u64 {
        common::list_tree(&s.path("local"))
            .iter()
            .filter(|p| p.ends_with(".partial"))
            .filter_map(|p| std::fs::metadata(s.path("local").join(p)).ok())
            .map(|m| m.len())
            .sum()
    };
    common::wait_for(
        "dump bytes at the destination",
        Duration::from_secs(30),
        || streamed() > 1024 * 1024,
    );
    db.kill();
    drop(lock);
    let out = running.wait(Duration::from_secs(60));
    assert_clean_failure(&s, &out, &["mariadb-dump failed", "Lost connection"]);

    // The earlier backup restores (into a new server: this one is gone).
    let fresh = MariaDbServer::start();
    fresh.create_db("back");
    restore_ok(&s.config, &[&ids[0], "--to", &fresh.url("back")]);
    assert_eq!(fresh.table_checksums("back"), want);
    assert_eq!(
        fresh.sql("back", &format!("select {}", quote_string("ok"))),
        "ok"
    );
}
