//! Table restore and heal on a schema with the kinds of object pg_dump documents
//! (`tests/fixtures/pg_torture.sql`: types with their I/O functions, domains, collations,
//! operators, casts, aggregates, an access method, foreign tables, partitions several levels
//! deep, inheritance, identity and serial columns, exclusion constraints, statistics,
//! triggers of every kind, rules, policies, views with options and check options, views
//! over views, materialized views with and without data, a publication, comments and
//! grants, names that need quoting).
//!
//! For every table in turn: `DROP TABLE … CASCADE`, then `stowage restore --table` it (and,
//! in a second pass, let `stowage heal` do it): the database's `pg_dump --schema-only`
//! must be exactly what it was, and so must every table's rows and every materialized
//! view's. Then `--clean` over each existing table must leave the same, with views kept
//! exactly as they were (security_barrier, security_invoker, check options, owner, grants).

mod common;

use std::path::PathBuf;

use common::pg_job::{PgJob, diff};

const DB: &str = "tort";

fn stack() -> PgJob {
    let sql = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pg_torture.sql"),
    )
    .expect("read the torture schema");
    PgJob::start(DB, &["torture_reader", "torture_owner"], &sql)
}

trait Tables {
    fn tables(&self) -> Vec<String>;
    fn drop_cascade(&self, table: &str);
}

impl Tables for PgJob {
    /// Every table (and partition, and foreign table), schema-qualified and quoted.
    fn tables(&self) -> Vec<String> {
        self.psql(
            "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p', 'f') and n.nspname in ('app', 'Odd Schema') order by 1",
        )
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// `DROP [FOREIGN] TABLE … CASCADE`.
    fn drop_cascade(&self, table: &str) {
        let foreign = self.psql(&format!(
            "select relkind = 'f' from pg_class where oid = '{}'::regclass",
            table.replace('\'', "''")
        ));
        let kind = if foreign.trim() == "t" {
            "foreign table"
        } else {
            "table"
        };
        self.psql(&format!("drop {kind} {table} cascade"));
    }
}

/// Whether `after` differs from `before` only by grants the target's default privileges
/// (`ALTER DEFAULT PRIVILEGES … GRANT SELECT ON TABLES TO torture_reader`) gave to objects
/// the restore created one by one, and the restore said so. That is the one documented
/// difference (README, "Table restore and heal").
fn same_but_default_grants(before: &str, after: &str, out: &str) -> bool {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let gone = b.iter().any(|l| !a.contains(l));
    let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    !gone
        && out.contains("default privileges (ALTER DEFAULT PRIVILEGES)")
        && new.iter().all(|l| {
            (l.starts_with("GRANT SELECT ON TABLE ") && l.ends_with(" TO torture_reader;"))
                || (l.starts_with("-- Name: TABLE ") && l.contains("; Type: ACL;"))
        })
}

/// For every table in turn: `act` on it (it says what it did, and the exit code and output
/// of stowage), then the database's schema and rows must be as they were; a table that
/// fails is reported and the database restored whole before the next one.
fn each_table(s: &PgJob, act: impl Fn(&str) -> (String, Option<i32>, String)) {
    let schema = s.schema();
    let data = s.data();
    let tables = s.tables();
    assert!(tables.len() >= 15, "{tables:?}");
    let mut failures = Vec::new();
    for table in &tables {
        let (what, code, out) = act(table);
        let now = s.schema();
        if code != Some(0)
            || (now != schema && !same_but_default_grants(&schema, &now, &out))
            || s.data() != data
        {
            failures.push(format!(
                "{what}: exit {code:?}\n{out}\n{}",
                diff(&schema, &now)
            ));
            s.pg.psql("postgres", &format!("drop database {DB} with (force)"));
            s.pg.create_db(DB);
            let (code, out) = s.restore(&[]);
            assert_eq!(code, Some(0), "{out}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_table_dropped_with_cascade_comes_back_with_all_that_depended_on_it() {
    let s = stack();
    each_table(&s, |table| {
        s.drop_cascade(table);
        let (code, out) = s.restore(&["--table", table]);
        (format!("restore --table {table}"), code, out)
    });
}

#[test]
fn every_table_dropped_with_cascade_is_healed_with_all_that_depended_on_it() {
    let s = stack();
    each_table(&s, |table| {
        s.drop_cascade(table);
        let (code, out) = s.stowage(&["heal", "app"]);
        (format!("heal after dropping {table}"), code, out)
    });
}

/// `--clean` over each live table: the table is dropped with everything that depends on it
/// and all of that is re-created as it is in the target, in one transaction.
#[test]
fn clean_over_every_table_keeps_the_rest_exactly_as_it_was() {
    let s = stack();
    each_table(&s, |table| {
        let (code, out) = s.restore(&["--table", table, "--clean", "--force-into-source"]);
        (format!("restore --table {table} --clean"), code, out)
    });
}
