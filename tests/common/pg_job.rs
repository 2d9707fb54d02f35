//! A job "app" backing up one PostgreSQL database to a local destination, with a healer
//! watching every table, and what table-restore tests look at: the database's
//! `pg_dump --schema-only`, every table's and materialized view's rows.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::process::Command;

use super::job::Job;
use super::servers::pg::PgServer;

/// The job's commands (`stowage`, `backup`, `config`…) are [`Job`]'s, through `Deref`.
pub struct PgJob {
    pub pg: PgServer,
    pub db: String,
    pub job: Job,
}

impl Deref for PgJob {
    type Target = Job;

    fn deref(&self) -> &Job {
        &self.job
    }
}

impl PgJob {
    /// A server with roles `roles`, database `db` made by `sql`, the job, and one backup.
    pub fn start(db: &str, roles: &[&str], sql: &str) -> PgJob {
        let pg = PgServer::start();
        for r in roles {
            pg.psql("postgres", &format!("create role {r} nologin"));
        }
        pg.create_db(db);
        pg.psql(db, sql);
        let job = Job::new("app")
            .local("local", Some(5))
            .postgres("db", &pg.url(db))
            .heal(r#"watch = ["*"]"#)
            .write();
        let job = PgJob {
            pg,
            db: db.to_string(),
            job,
        };
        job.backup();
        job
    }

    pub fn psql(&self, sql: &str) -> String {
        self.pg.psql(&self.db, sql)
    }

    /// `pg_dump --schema-only` of the database, without the per-run `\restrict` keys.
    pub fn schema(&self) -> String {
        let out = Command::new(self.pg.bin("pg_dump"))
            .args(["--schema-only", "--no-password", "--dbname"])
            .arg(self.pg.url(&self.db))
            .output()
            .expect("run pg_dump");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Rows of every table and populated materialized view.
    pub fn data(&self) -> BTreeMap<String, String> {
        let mut all = self.pg.table_checksums(&self.db);
        for mv in self
            .psql(
                "select quote_ident(schemaname) || '.' || quote_ident(matviewname) from pg_matviews where ispopulated order by 1",
            )
            .lines()
        {
            let sum = self.psql(&format!(
                "select count(*) || ':' || md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from {mv} t"
            ));
            all.insert(format!("matview {mv}"), sum.trim().to_string());
        }
        all
    }

    /// `stowage restore app latest --to <the database> EXTRA`.
    pub fn restore(&self, extra: &[&str]) -> (Option<i32>, String) {
        let url = self.pg.url(&self.db);
        let mut args = vec!["restore", "app", "latest", "--to", url.as_str()];
        args.extend_from_slice(extra);
        self.stowage(&args)
    }
}

/// The lines only one of two schema dumps has, for assertion messages.
pub fn diff(before: &str, after: &str) -> String {
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let gone: Vec<&&str> = b.iter().filter(|l| !a.contains(l)).collect();
    let new: Vec<&&str> = a.iter().filter(|l| !b.contains(l)).collect();
    format!("missing after:\n{gone:#?}\nnew after:\n{new:#?}")
}
