//! Table restore and heal on MariaDB, on a schema with every kind of object mariadb-dump
//! writes (`tests/fixtures/mariadb_torture.sql`): every table in turn is dropped (foreign key
//! checks off, as MariaDB needs to drop a referenced table) and brought back by `restore
//! --table`, by `restore --table --clean` over the live table, and by `heal` (with the views
//! over it dropped too); after each, every object's `SHOW CREATE` and every table's rows are
//! what they were, the views answer and the foreign keys reject orphans. Then what cannot be
//! put back is named, with exit 1: a view that no longer works, a trigger made after the
//! backup, a foreign key the restored table cannot serve. One real MariaDB 10.11 per test.

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use common::mariadb::{MariaDbServer, quote_name, quote_string};
use common::{Job, text};

const TORTURE: &str = include_str!("fixtures/mariadb_torture.sql");

/// A job "app" backing up database `db` of `server` to a local destination, healing all its
/// tables.
struct Setup {
    job: Job,
    url: String,
}

impl Setup {
    fn new(server: &MariaDbServer, db: &str) -> Setup {
        let url = server.url(db);
        let job = Job::new("app")
            .top("[log]\nlevel = \"info\"")
            .local("local", Some(10))
            .database("mariadb", "db", &url, "")
            .heal(r#"watch = ["*"]"#)
            .write();
        Setup { job, url }
    }

    fn stowage(&self, args: &[&str]) -> Output {
        self.job.output(args)
    }

    fn backup(&self) {
        self.job.backup();
    }

    /// `restore app latest --to <own db> ARGS`: exit code and output.
    fn restore(&self, args: &[&str]) -> (Option<i32>, String) {
        let mut all = vec!["restore", "app", "latest", "--to", &self.url];
        all.extend_from_slice(args);
        self.job.stowage(&all)
    }

    fn heal(&self) -> (Option<i32>, String) {
        self.job.stowage(&["heal", "app"])
    }
}

fn hex_names(server: &MariaDbServer, sql: &str) -> Vec<String> {
    server
        .sql("mysql", sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|h| String::from_utf8(hex::decode(h).expect("hex")).expect("utf8"))
        .collect()
}

/// Every object of `db` as the server shows it: `SHOW CREATE` of each table, view, trigger
/// (and its place in the firing order), routine and event, and what each view answers.
/// Nothing is normalised away but a trigger's `Created` time (a re-created trigger is new:
/// the column is left out); AUTO_INCREMENT counters are compared as they are (the dump
/// carries them).
fn snapshot(server: &MariaDbServer, db: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let q = quote_string(db);
    for t in server.table_names(db) {
        let out = server.sql(db, &format!("show create table {}", quote_name(&t)));
        m.insert(format!("table {t}"), out);
    }
    for v in server.view_names(db) {
        let out = server.sql(db, &format!("show create view {}", quote_name(&v)));
        m.insert(format!("view {v}"), out);
        let rows = server.sql(db, &format!("select count(*) from {}", quote_name(&v)));
        m.insert(format!("view {v} rows"), rows);
    }
    for t in hex_names(
        server,
        &format!(
            "select hex(trigger_name) from information_schema.triggers where trigger_schema = {q}"
        ),
    ) {
        let out = server.sql(db, &format!("show create trigger {}", quote_name(&t)));
        let kept: Vec<&str> = out.split('\t').take(6).collect();
        m.insert(format!("trigger {t}"), kept.join("\t"));
    }
    m.insert(
        "trigger order".into(),
        server.sql(
            "mysql",
            &format!(
                "select event_object_table, action_timing, event_manipulation, action_order, trigger_name \
                 from information_schema.triggers where trigger_schema = {q} order by 1, 2, 3, 4"
            ),
        ),
    );
    for row in server
        .sql(
            "mysql",
            &format!(
                "select routine_type, hex(routine_name) from information_schema.routines \
                 where routine_schema = {q}"
            ),
        )
        .lines()
    {
        let (kind, name) = row.split_once('\t').expect("routine row");
        let name = String::from_utf8(hex::decode(name).expect("hex")).expect("utf8");
        let out = server.sql(db, &format!("show create {kind} {}", quote_name(&name)));
        m.insert(format!("{kind} {name}"), out);
    }
    for e in hex_names(
        server,
        &format!("select hex(event_name) from information_schema.events where event_schema = {q}"),
    ) {
        let out = server.sql(db, &format!("show create event {}", quote_name(&e)));
        m.insert(format!("event {e}"), out);
    }
    m
}

/// The differences between two snapshots, for a readable failure.
fn diff(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    for k in a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))) {
        if a.get(k) != b.get(k) {
            out.push_str(&format!(
                "{k}:\n  before: {:?}\n  after:  {:?}\n",
                a.get(k),
                b.get(k)
            ));
        }
    }
    out
}

/// Each foreign key of the torture schema rejects a row that points at nothing (updates,
/// so no AUTO_INCREMENT counter moves).
fn foreign_keys_enforced(server: &MariaDbServer, after: &str) {
    for (key, sql) in [
        (
            "orders_customer",
            "update orders set customer_id = 424242 where id = 10",
        ),
        (
            "items_order",
            "update order_items set order_id = 424242 where order_id = 10 and line = 1",
        ),
        (
            "cat_parent",
            "update categories set parent_id = 424242 where id = 2",
        ),
        (
            "weird_cat",
            "update `weird ``name`` ü 表` set category_id = 424242 where `col ``q``` = 1",
        ),
    ] {
        let out = server.try_sql("app", sql);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("foreign key constraint fails"),
            "after {after}: {key} is not enforced: {sql}: {err}"
        );
    }
}

/// The views that read each table, directly or through another view (what `DROP TABLE …
/// CASCADE` would take in PostgreSQL; MariaDB leaves them, invalid).
fn views_over(table: &str) -> &'static [&'static str] {
    match table {
        "customers" => &["customer_totals"],
        "orders" => &["big_paid", "paid_orders", "customer_totals"],
        "order_items" | "places" => &["item_view"],
        "categories" | "weird `name` ü 表" => &["view `over` weird"],
        _ => &[],
    }
}

fn drop_table(server: &MariaDbServer, table: &str, views: &[&str]) {
    let mut sql = String::from("set foreign_key_checks = 0;\n");
    for v in views {
        sql.push_str(&format!("drop view {};\n", quote_name(v)));
    }
    sql.push_str(&format!("drop table {};\n", quote_name(table)));
    server.sql("app", &sql);
}

#[test]
fn every_table_of_the_torture_schema_comes_back_whole_by_restore_and_by_heal() {
    let server = MariaDbServer::start();
    server.create_db("app");
    server.sql("app", TORTURE);
    let setup = Setup::new(&server, "app");
    setup.backup();
    let want = snapshot(&server, "app");
    let sums = server.table_checksums("app");
    let tables = server.table_names("app");
    assert_eq!(tables.len(), 11, "{tables:?}");
    assert_eq!(server.view_names("app").len(), 5);
    foreign_keys_enforced(&server, "the backup");
    let check = |how: &str, t: &str| {
        let after = format!("{how} of {t}");
        let got = snapshot(&server, "app");
        assert!(
            got == want,
            "after {after}, the schema differs:\n{}",
            diff(&want, &got)
        );
        assert_eq!(server.table_checksums("app"), sums, "after {after}");
        foreign_keys_enforced(&server, &after);
    };

    for t in &tables {
        // Dropped alone: MariaDB keeps the views (invalid) and the keys of other tables.
        drop_table(&server, t, &[]);
        let (code, out) = setup.restore(&["--table", t]);
        assert_eq!(code, Some(0), "restore --table {t}:\n{out}");
        check("restore --table", t);

        let (code, out) = setup.restore(&["--table", t, "--clean", "--force-into-source"]);
        assert_eq!(code, Some(0), "restore --table {t} --clean:\n{out}");
        check("restore --table --clean", t);

        // Dropped with the views over it: the heal puts those back too.
        drop_table(&server, t, views_over(t));
        let (code, out) = setup.heal();
        assert_eq!(code, Some(0), "heal after dropping {t}:\n{out}");
        assert!(out.contains(&format!("restored {t} from")), "{out}");
        if !views_over(t).is_empty() {
            assert!(out.contains("put back view(s)"), "{out}");
        }
        check("heal", t);
    }

    // One table into another database: a view over it that also reads a table that
    // database does not have is not "missing" there; it is left out, and said so.
    server.create_db("scratch");
    let out = setup.stowage(&[
        "restore",
        "app",
        "latest",
        "--to",
        &server.url("scratch"),
        "--table",
        "places",
    ]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("view(s) item_view over the restored table(s) not created: they also read"),
        "{t}"
    );
    assert_eq!(server.table_names("scratch"), ["places"]);
    assert!(server.view_names("scratch").is_empty());
}

/// A small schema: `c.pid → p.id`, a trigger on p, a view over p with its options and a
/// view over that view.
const SMALL: &str = "
create table p (id int primary key, name varchar(20) not null) engine=innodb;
create table c (id int primary key, pid int, constraint c_p foreign key (pid) references p (id)) engine=innodb;
insert into p values (1, 'one'), (2, 'two');
insert into c values (10, 1), (11, 2);
create trigger p_name before insert on p for each row set new.name = lower(new.name);
create algorithm=merge definer=`root`@`localhost` sql security invoker view `p ``v1``` as
  select id, name from p where id < 100 with cascaded check option;
create view v2 as select id from `p ``v1``` where id > 0 with local check option;
";

fn small(server: &MariaDbServer) -> Setup {
    server.create_db("app");
    server.sql("app", SMALL);
    let setup = Setup::new(server, "app");
    setup.backup();
    setup
}

/// Views over a restored table that are missing come back from the backup exactly (algorithm,
/// definer, SQL SECURITY, check option), a view before the views over it, by restore and by
/// heal.
#[test]
fn missing_views_over_a_restored_table_are_put_back_exactly() {
    let server = MariaDbServer::start();
    let setup = small(&server);
    let want = snapshot(&server, "app");
    assert!(
        want["view p `v1`"].contains("SQL SECURITY INVOKER")
            && want["view p `v1`"].contains("WITH CASCADED CHECK OPTION")
            && want["view v2"].contains("WITH LOCAL CHECK OPTION"),
        "{want:#?}"
    );

    // The views dropped with the table: put back, in dependency order.
    drop_table(&server, "p", &["v2", "p `v1`"]);
    let (code, out) = setup.restore(&["--table", "p"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("put back view(s) p `v1`, v2"), "{out}");
    assert!(
        snapshot(&server, "app") == want,
        "{}",
        diff(&want, &snapshot(&server, "app"))
    );
    let e = server.try_sql("app", "insert into `p ``v1``` values (500, 'x')");
    assert!(
        String::from_utf8_lossy(&e.stderr).contains("CHECK OPTION failed"),
        "{}",
        text(&e)
    );

    // The same by heal.
    drop_table(&server, "p", &["v2"]);
    let (code, out) = setup.heal();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("restored p from"), "{out}");
    assert!(
        snapshot(&server, "app") == want,
        "{}",
        diff(&want, &snapshot(&server, "app"))
    );
}

/// A view over the restored table that does not work on it (made after the backup, over a
/// column the backup's table does not have) is named, with exit 1 ("restored, incomplete"),
/// by restore and by heal.
#[test]
fn a_view_that_no_longer_works_is_named() {
    let server = MariaDbServer::start();
    let setup = small(&server);
    // A view made after the backup over a column the backup's table does not have.
    server.sql(
        "app",
        "alter table p add column extra int; create view late_v as select extra from p;",
    );
    drop_table(&server, "p", &[]);
    let (code, out) = setup.restore(&["--table", "p"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("restored table(s) p, but")
            && out.contains("view `late_v` over the restored table(s) does not work")
            && out.contains("ERROR 1356"),
        "{out}"
    );
    assert!(server.table_names("app").contains(&"p".to_string()));
    server.sql("app", "drop view late_v");

    // The same by heal: the healer reports the job failed and names the view.
    server.sql(
        "app",
        "create view late_v as select name, id + 1 as n from p",
    );
    server.sql("app", "alter table p change name label varchar(20)");
    server.sql("app", "create view late_v2 as select label from p");
    drop_table(&server, "p", &[]);
    let (code, out) = setup.heal();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("view `late_v2` over the restored table(s) does not work"),
        "{out}"
    );
    assert!(
        !out.contains("`late_v` over"),
        "late_v works on the restored p:\n{out}"
    );
    server.sql("app", "drop view late_v, late_v2");
}

/// A view over the restored table that is missing and cannot be made from the backup's
/// definition (it calls a function that is gone too: routines are not part of a table
/// restore) is named, with exit 1; the views that can be made are.
#[test]
fn a_missing_view_that_cannot_be_put_back_is_named() {
    let server = MariaDbServer::start();
    server.create_db("app");
    server.sql("app", SMALL);
    server.sql(
        "app",
        "create function twice(x int) returns int deterministic return x * 2;
         create view doubled as select twice(id) as d from p;",
    );
    let setup = Setup::new(&server, "app");
    setup.backup();
    server.sql("app", "drop function twice");
    drop_table(&server, "p", &["doubled", "v2"]);
    let (code, out) = setup.restore(&["--table", "p"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("and put back view(s) v2")
            && out.contains(
                "view `doubled` reads a restored table and is missing, but cannot be put back from the backup: ERROR 1305"
            ),
        "{out}"
    );
    assert_eq!(server.view_names("app"), ["p `v1`", "v2"]);
}

/// `--clean` over a table with a trigger made after the backup: DROP TABLE takes it, the
/// backup cannot give it back; it is named, with exit 1.
#[test]
fn a_trigger_lost_to_clean_is_named() {
    let server = MariaDbServer::start();
    let setup = small(&server);
    let want = snapshot(&server, "app");
    server.sql(
        "app",
        "create trigger `late ``t``` after insert on p for each row set @x = 1",
    );
    let (code, out) = setup.restore(&["--table", "p", "--clean", "--force-into-source"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "trigger `late ``t``` on `p` was there before --clean and is not in this backup"
        ),
        "{out}"
    );
    assert!(
        snapshot(&server, "app") == want,
        "{}",
        diff(&want, &snapshot(&server, "app"))
    );
}

/// A key of another table that the restored table cannot serve is named, with exit 1: InnoDB
/// keeps it (the dump restores with foreign key checks off) and rejects every row.
#[test]
fn a_foreign_key_the_restored_table_cannot_serve_is_named() {
    let server = MariaDbServer::start();
    let setup = small(&server);
    // A key of another table that the restored table cannot serve (p.id was made bigint,
    // and c.pid with it, after the backup): InnoDB keeps it and rejects every row.
    server.sql(
        "app",
        "set foreign_key_checks = 0; drop view v2, `p ``v1```; drop table p;
         create table p (id bigint primary key, name varchar(20) not null);
         insert into p values (1, 'one'), (2, 'two');
         alter table c drop foreign key c_p, modify pid bigint;
         alter table c add constraint c_p foreign key (pid) references p (id);",
    );
    let (code, out) = setup.restore(&["--table", "p", "--clean", "--force-into-source"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("foreign key `c_p` on `c` → `p` is kept but cannot be enforced")
            && out.contains("`c`.`pid` is bigint(20) but `p`.`id` is int(11)"),
        "{out}"
    );
    // The views came back with it, and say so.
    assert!(out.contains("put back view(s) p `v1`, v2"), "{out}");
}

/// `--table` naming a table the backup does not have: the closest names and the count.
#[test]
fn unknown_table_names_the_closest_and_the_count() {
    let server = MariaDbServer::start();
    server.create_db("app");
    let mut sql = String::new();
    for i in 0..40 {
        sql.push_str(&format!(
            "create table filler_{i:02} (id int primary key);\n"
        ));
    }
    sql.push_str(
        "create table orders (id int primary key); create table order_lines (id int primary key);",
    );
    server.sql("app", &sql);
    let setup = Setup::new(&server, "app");
    setup.backup();
    let (code, out) = setup.restore(&["--table", "ordres", "--clean", "--force-into-source"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "table(s) not in this backup: ordres (closest: orders; 42 tables in this backup)"
        ),
        "{out}"
    );
    assert!(!out.contains("filler_07"), "every name listed:\n{out}");
}

/// `--create` whose restore then fails leaves no database behind.
#[test]
fn failed_restore_drops_the_database_it_created() {
    let server = MariaDbServer::start();
    server.create_db("app");
    // One row bigger than the packet limit set below: its INSERT fails on restore.
    server.sql(
        "app",
        "create table big (id int primary key, body longtext);
         create table small (id int primary key);
         insert into big values (1, repeat('x', 3000000));",
    );
    let setup = Setup::new(&server, "app");
    setup.backup();
    server.sql("mysql", "set global max_allowed_packet = 1048576");
    let target = server.url("fresh");
    let out = setup.stowage(&["restore", "app", "latest", "--to", &target, "--create"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("dropped database \"fresh\", which this restore had created"),
        "{t}"
    );
    assert!(
        !server.db_exists("fresh"),
        "the database --create made is left behind:\n{t}"
    );
    server.sql("mysql", "set global max_allowed_packet = 16777216");
    // It works once the cause is gone, and a database that was there is never dropped.
    server.create_db("kept");
    server.sql("mysql", "set global max_allowed_packet = 1048576");
    let out = setup.stowage(&[
        "restore",
        "app",
        "latest",
        "--to",
        &server.url("kept"),
        "--create",
    ]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(server.db_exists("kept"), "{}", text(&out));
    server.sql("mysql", "set global max_allowed_packet = 16777216");
    let out = setup.stowage(&["restore", "app", "latest", "--to", &target, "--create"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        server.table_checksums("fresh"),
        server.table_checksums("app")
    );
}
