//! MariaDB and MySQL through their own tools: `mariadb-dump` (or `mysqldump`) streamed out as
//! SQL text, read in one consistent InnoDB snapshot (`--single-transaction`), binary columns
//! as hex so the text survives any charset handling, and fed back to the `mariadb` (or
//! `mysql`) client on restore. The archive is a plain dump, so
//! `zstd -d < db.sql.zst | mariadb -h HOST -u USER DB` restores it without stowage.
//!
//! Passwords reach the tools through a private option file (`--defaults-extra-file`, mode
//! 0600, removed when the tool is done) and never their command line, where `ps` shows it.

mod count;
mod scratch;
pub mod sql;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::process::Command;
use tokio_util::io::InspectReader;

use self::sql::{Filter, Scanner, Selection};
use super::url::{DbUrl, UrlSpec};
use super::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, SourceError, drain_stderr, feed,
    wait_child,
};
use crate::section::{Priority, Section};
use crate::secret::Secret;

const URL: UrlSpec = UrlSpec {
    engine: "mariadb",
    schemes: &["mysql", "mariadb"],
    example: "mysql://user@host:3306/dbname",
    database_required: true,
};

/// The dump tool, newest name first: MariaDB renamed mysqldump, and keeps the old name only
/// as a compatibility link that some images leave out (Oracle's MySQL has only the old one).
const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
const CLIENT_TOOLS: &[&str] = &["mariadb", "mysql"];

/// `--single-transaction`: one consistent snapshot of InnoDB tables without locking them.
/// `--hex-blob`: binary columns as hex literals, so no client charset setting can mangle them.
/// `--no-tablespaces`: the PROCESS privilege it needs is rarely granted to a backup user.
const DUMP_ARGS: &[&str] = &[
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--default-character-set=utf8mb4",
    "--no-tablespaces",
];

/// A dump is restored statement by statement, and MariaDB commits every DDL statement at
/// once: a restore that stops half-way cannot be rolled back.
const PARTLY_RESTORED: &str = "the target database is now partly restored (a MariaDB restore cannot run as one transaction); restore again into an empty database, or with --clean";

/// The client gives up on an unreachable server after this instead of the system's minutes
/// (mariadb-dump has no such option).
const CONNECT_TIMEOUT: &str = "--connect-timeout=15";

/// `type = "mariadb"` (also `type = "mysql"`).
pub struct MariaDb;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMariaDb {
    url: Option<String>,
    password_file: Option<PathBuf>,
    /// Directory holding mariadb-dump/mariadb (or mysqldump/mysql); default: found on PATH.
    bin_dir: Option<PathBuf>,
    exclude_tables: Option<Vec<String>>,
}

impl Engine for MariaDb {
    fn kind(&self) -> &'static str {
        "mariadb"
    }

    fn aliases(&self) -> &'static [&'static str] {
        &["mysql"]
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawMariaDb>()
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawMariaDb = section.parse()?;
        let mark = section.mark();
        let url = super::section_url(
            section,
            raw.url.as_deref(),
            raw.password_file.as_deref(),
            parse_url,
            "mariadb",
            "required for type = \"mariadb\" (or \"mysql\"); e.g. url = \"mysql://user@db:3306/app\"",
        );
        super::check_bin_dir(section, raw.bin_dir.as_deref(), "mariadb-dump");
        let exclude_tables =
            super::table_excludes(section, raw.exclude_tables, sql::check_table_name);
        if section.failed_since(mark) {
            return None;
        }
        Some(Arc::new(MariaDbSource {
            name: section.name.clone(),
            url: Some(url?),
            bin_dir: raw.bin_dir,
            priority: section.priority,
            exclude_tables,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(MariaDbSource {
            name: name.to_string(),
            url: None,
            bin_dir: None,
            priority: Priority::default(),
            exclude_tables: Vec::new(),
        })
    }
}

fn parse_url(text: &str, password: Option<Secret>) -> Result<DbUrl, String> {
    let url = DbUrl::parse(text, &URL, password)?;
    if url.database().contains('/') {
        return Err(format!(
            "\"{}\" is not a database name: expected a URL such as \"{}\"",
            url.database(),
            URL.example
        ));
    }
    Ok(url)
}

/// A configured MariaDB/MySQL source. `url` is `None` for a source made only to restore.
#[derive(Debug)]
pub struct MariaDbSource {
    name: String,
    url: Option<DbUrl>,
    bin_dir: Option<PathBuf>,
    priority: Priority,
    /// Dumped, but skipped by default on restore (job-level list + this source's own).
    exclude_tables: Vec<String>,
}

/// How a tool connects: its leading arguments, and the option file they name (kept alive
/// until the tool is done with it).
struct Connection {
    args: Vec<OsString>,
    _option_file: Option<tempfile::NamedTempFile>,
    /// When no option file could be written (a read-only /tmp): the client's own variable.
    env_password: Option<Secret>,
}

/// A password as an option-file value: quoted, with the escapes the client's option-file
/// reader undoes (a '#' inside quotes is not a comment).
fn option_value(password: &str) -> String {
    let mut v = String::with_capacity(password.len() + 2);
    v.push('"');
    for c in password.chars() {
        match c {
            '\\' => v.push_str("\\\\"),
            '"' => v.push_str("\\\""),
            '\n' => v.push_str("\\n"),
            '\r' => v.push_str("\\r"),
            '\t' => v.push_str("\\t"),
            '\u{8}' => v.push_str("\\b"),
            c => v.push(c),
        }
    }
    v.push('"');
    v
}

impl Connection {
    fn new(url: &DbUrl, password: Option<&Secret>) -> Connection {
        let mut args: Vec<OsString> = Vec::new();
        let mut option_file = None;
        let mut env_password = None;
        if let Some(pw) = password {
            match write_option_file(pw) {
                Ok(f) => {
                    // The tools only honour this option as their very first argument.
                    let mut a = OsString::from("--defaults-extra-file=");
                    a.push(f.path());
                    args.push(a);
                    option_file = Some(f);
                }
                Err(e) => {
                    tracing::debug!(
                        "cannot write a private option file ({e}); passing the password in MYSQL_PWD"
                    );
                    env_password = Some(pw.clone());
                }
            }
        }
        if let Some(socket) = url.query("socket") {
            args.push("--protocol=SOCKET".into());
            let mut a = OsString::from("--socket=");
            a.push(socket);
            args.push(a);
        } else {
            // Without it, "localhost" means the local socket, not the host the URL names.
            args.push("--protocol=TCP".into());
            let host = url.host().trim_start_matches('[').trim_end_matches(']');
            args.push(format!("--host={host}").into());
            if let Some(p) = url.port() {
                args.push(format!("--port={p}").into());
            }
        }
        if let Some(u) = url.user() {
            args.push(format!("--user={u}").into());
        }
        Connection {
            args,
            _option_file: option_file,
            env_password,
        }
    }
}

fn write_option_file(password: &Secret) -> std::io::Result<tempfile::NamedTempFile> {
    // tempfile creates it 0600; it is removed when dropped.
    let mut f = tempfile::Builder::new()
        // The writer in the name: a later start removes the file of a killed run.
        .prefix(&format!("stowage-my-{}-", crate::owner::Owner::current().token()))
        .suffix(".cnf")
        .tempfile()?;
    let body = format!("[client]\npassword={}\n", option_value(password.expose()));
    std::io::Write::write_all(&mut f, body.as_bytes())?;
    std::io::Write::flush(&mut f)?;
    Ok(f)
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

impl MariaDbSource {
    /// The first of `names` that exists (in bin_dir, else on PATH), with its name.
    fn tool(&self, names: &[&'static str]) -> (&'static str, PathBuf) {
        for n in names {
            let found = match &self.bin_dir {
                Some(dir) => Some(dir.join(n)).filter(|p| p.is_file()),
                None => on_path(n),
            };
            if let Some(p) = found {
                return (n, p);
            }
        }
        let first = names[0];
        match &self.bin_dir {
            Some(dir) => (first, dir.join(first)),
            None => (first, PathBuf::from(first)),
        }
    }

    fn own_url(&self) -> Result<&DbUrl, SourceError> {
        self.url.as_ref().ok_or_else(|| {
            SourceError::Refused(format!(
                "source \"{}\" is not in the config; give the database with --to",
                self.name
            ))
        })
    }

    /// A target's password: its own, else the source's when the target is the same server
    /// and user (restoring into another database next to the source).
    fn password_for<'a>(&'a self, target: &'a DbUrl) -> Option<&'a Secret> {
        target.password().or_else(|| {
            self.url
                .as_ref()
                .filter(|own| {
                    own.host() == target.host()
                        && own.port() == target.port()
                        && own.user() == target.user()
                })
                .and_then(DbUrl::password)
        })
    }

    fn command(&self, program: &Path, conn: &Connection) -> Command {
        let mut cmd = super::tool_command(program, self.priority);
        cmd.args(&conn.args);
        if let Some(pw) = &conn.env_password {
            cmd.env("MYSQL_PWD", pw.expose());
        }
        cmd
    }

    fn spawn_err(&self, tool: &str, e: std::io::Error) -> SourceError {
        super::spawn_error_in(tool, e, self.bin_dir.as_deref(), "install the MariaDB client tools (Debian: mariadb-client) or set bin_dir")
    }

    /// Tables and views of a live database, with their type ("BASE TABLE", "VIEW", ...).
    async fn relations(&self, url: &DbUrl) -> Result<Vec<(String, String)>, SourceError> {
        // Names in hex: any byte a name may hold survives the tab-separated output.
        let rows = self
            .rows(
                url,
                "select hex(table_name), table_type from information_schema.tables \
                 where table_schema = database() order by table_name",
            )
            .await
            .map_err(|e| match e {
                SourceError::Failed { stderr, .. } => SourceError::Refused(format!(
                    "cannot read the tables of {url}: {stderr}{}",
                    if stderr.contains("Unknown database") {
                        "\nhint: create it first (CREATE DATABASE …), or add --create to let restore create it"
                    } else if stderr.contains("Access denied") {
                        "\nhint: give the target's password in the URL (mysql://USER:PASSWORD@HOST/DB); a target that names the job source's user uses the source's password_file"
                    } else {
                        ""
                    }
                )),
                other => other,
            })?;
        let mut rels = Vec::new();
        for row in rows {
            let (name, kind) = match row.as_slice() {
                [name, kind, ..] => (name.as_str(), kind.as_str()),
                [name] => (name.as_str(), ""),
                [] => continue,
            };
            let decoded = hex::decode(name.trim()).map_err(|e| {
                SourceError::internal(format!("the server sent {name:?} for a table name"), e)
            })?;
            rels.push((
                String::from_utf8_lossy(&decoded).into_owned(),
                kind.trim().to_string(),
            ));
        }
        Ok(rels)
    }

    /// `--create`: create the target database when it does not exist. True when it was (or,
    /// in a dry run, would be) created.
    async fn ensure_database(
        &self,
        url: &DbUrl,
        opts: &RestoreOptions,
        lines: &mut Vec<String>,
    ) -> Result<bool, SourceError> {
        let name = url.database();
        let admin = url.with_database("information_schema");
        let exists = self
            .rows(
                &admin,
                &format!(
                    "select 1 from information_schema.schemata where schema_name = unhex('{}')",
                    hex::encode(&name)
                ),
            )
            .await?;
        if !exists.is_empty() {
            return Ok(false);
        }
        if opts.dry_run {
            lines.push(format!("would create database \"{name}\" (--create)"));
            return Ok(true);
        }
        self.rows(
            &admin,
            &format!(
                "create database `{}` character set utf8mb4",
                name.replace('`', "``")
            ),
        )
        .await?;
        lines.push(format!("created database \"{name}\""));
        Ok(true)
    }

    /// Run one statement; its rows, tab-separated fields (give binary-safe values as hex).
    async fn rows(&self, url: &DbUrl, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let (tool, path) = self.tool(CLIENT_TOOLS);
        let conn = Connection::new(url, self.password_for(url));
        let mut cmd = self.command(&path, &conn);
        cmd.args([
            CONNECT_TIMEOUT,
            "--batch",
            "--skip-column-names",
            "--execute",
        ])
        .arg(sql)
        .arg(url.database());
        let out = cmd.output().await.map_err(|e| self.spawn_err(tool, e))?;
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: tool.to_string(),
                status: super::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// Foreign keys to or from `tables` that rows of the target break, one line each:
    /// "constraint on child → parent: N row(s)".
    async fn broken_foreign_keys(
        &self,
        url: &DbUrl,
        tables: &[String],
    ) -> Result<Vec<String>, SourceError> {
        let names = tables
            .iter()
            .map(|t| format!("unhex('{}')", hex::encode(t)))
            .collect::<Vec<_>>()
            .join(", ");
        let keys = self
            .rows(
                url,
                &format!(
                    "select hex(constraint_name), hex(table_name), hex(referenced_table_name), \
                            group_concat(hex(column_name) order by ordinal_position), \
                            group_concat(hex(referenced_column_name) order by ordinal_position) \
                     from information_schema.key_column_usage \
                     where table_schema = database() and referenced_table_schema = database() \
                       and (table_name in ({names}) or referenced_table_name in ({names})) \
                     group by constraint_name, table_name, referenced_table_name \
                     order by table_name, constraint_name"
                ),
            )
            .await?;
        let text = |h: &str| {
            hex::decode(h)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .map_err(|e| SourceError::internal(format!("bad hex {h:?} from the server"), e))
        };
        let mut broken = Vec::new();
        for k in keys {
            let [name, child, parent, cols, refs] = k.as_slice() else {
                continue;
            };
            let (name, child, parent) = (text(name)?, text(child)?, text(parent)?);
            let cols = cols.split(',').map(text).collect::<Result<Vec<_>, _>>()?;
            let refs = refs.split(',').map(text).collect::<Result<Vec<_>, _>>()?;
            let q = sql::quote_name;
            let sql = format!(
                "select count(*) from {} c where {} and not exists (select 1 from {} p where {})",
                q(&child),
                cols.iter()
                    .map(|c| format!("c.{} is not null", q(c)))
                    .collect::<Vec<_>>()
                    .join(" and "),
                q(&parent),
                cols.iter()
                    .zip(&refs)
                    .map(|(c, r)| format!("p.{} = c.{}", q(r), q(c)))
                    .collect::<Vec<_>>()
                    .join(" and ")
            );
            let count = match self.rows(url, &sql).await {
                Ok(rows) => rows
                    .first()
                    .and_then(|r| r.first())
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0),
                Err(SourceError::Failed { stderr, .. }) => {
                    broken.push(format!(
                        "{name} on {child} → {parent}: cannot check: {}",
                        client_error(&stderr)
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            if count > 0 {
                broken.push(format!(
                    "{name} on {child} → {parent}: {count} row(s) of {child} point at no row of {parent}"
                ));
            }
        }
        Ok(broken)
    }

    /// Run a script of statements fed on stdin (as a restore is): Err carries the client's
    /// error text.
    async fn run_script(&self, url: &DbUrl, script: &[u8]) -> Result<Result<(), String>, SourceError> {
        let (tool, path) = self.tool(CLIENT_TOOLS);
        let conn = Connection::new(url, self.password_for(url));
        let mut cmd = self.command(&path, &conn);
        cmd.args([
            CONNECT_TIMEOUT,
            "--batch",
            "--binary-mode",
            "--default-character-set=utf8mb4",
        ])
        .arg(url.database())
        .stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(tool, e))?;
        if let Some(mut stdin) = child.stdin.take() {
            tokio::io::AsyncWriteExt::write_all(&mut stdin, script)
                .await
                .map_err(|e| SourceError::io(format!("writing to {tool}"), e))?;
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| SourceError::io(format!("waiting for {tool}"), e))?;
        drop(conn);
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(client_error(&String::from_utf8_lossy(&out.stderr)))
        })
    }

    /// Rows of a query whose every field is hex (names survive the tab-separated output).
    async fn hex_rows(&self, url: &DbUrl, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        self.rows(url, sql)
            .await?
            .into_iter()
            .map(|row| {
                row.iter()
                    .map(|h| {
                        hex::decode(h.trim())
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .map_err(|e| {
                                SourceError::internal(
                                    format!("the server sent {h:?} where hex was asked for"),
                                    e,
                                )
                            })
                    })
                    .collect()
            })
            .collect()
    }

    /// Triggers on `tables` in the target: (trigger, table).
    async fn triggers_on(
        &self,
        url: &DbUrl,
        tables: &[String],
    ) -> Result<Vec<(String, String)>, SourceError> {
        let rows = self
            .hex_rows(
                url,
                &format!(
                    "select hex(trigger_name), hex(event_object_table) from information_schema.triggers \
                     where trigger_schema = database() and event_object_table in ({}) order by 2, 1",
                    hex_list(tables)
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [t, on] => Some((t.clone(), on.clone())),
                _ => None,
            })
            .collect())
    }

    /// Triggers that were on the restored tables before a `--clean` restore and are not
    /// now (made after the backup: `DROP TABLE` took them, the backup does not have them).
    async fn lost_triggers(
        &self,
        url: &DbUrl,
        before: &[(String, String)],
    ) -> Result<Vec<String>, SourceError> {
        if before.is_empty() {
            return Ok(Vec::new());
        }
        let tables: Vec<String> = before.iter().map(|(_, t)| t.clone()).collect();
        let now = self.triggers_on(url, &tables).await?;
        Ok(before
            .iter()
            .filter(|b| !now.contains(b))
            .map(|(t, on)| {
                format!(
                    "trigger {} on {} was there before --clean and is not in this backup (made after it): re-create it",
                    sql::quote_name(t),
                    sql::quote_name(on)
                )
            })
            .collect())
    }

    /// Views of the backup that read the restored tables (or such views), missing from the
    /// target, created again from the backup's own definitions (algorithm, definer, SQL
    /// SECURITY, check option as dumped), a view before the views over it. Returns the views
    /// put back; those that fail are named in `problems`.
    /// A view that also reads a table or view of the backup that the target does not have
    /// (a single table restored into another database) is not one that went missing: it is
    /// left out, into `left_out`.
    async fn put_back_views(
        &self,
        url: &DbUrl,
        tables: &[String],
        backup_tables: &[String],
        held: &[(String, Vec<u8>)],
        problems: &mut Vec<String>,
        left_out: &mut Vec<String>,
    ) -> Result<Vec<String>, SourceError> {
        let reads: Vec<(String, Vec<String>)> = held
            .iter()
            .map(|(n, body)| (n.clone(), sql::view_reads(body)))
            .collect();
        let over = dependents(tables, &reads);
        if over.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.relations(url).await?;
        let is_live = |n: &String| live.iter().any(|(l, _)| l == n);
        let mut missing: Vec<&String> = over.iter().filter(|v| !is_live(v)).collect();
        // Inputs of the backup (its tables and views) that are neither in the target, nor
        // restored, nor put back: the view cannot stand there.
        loop {
            let stranded = missing.iter().position(|v| {
                reads.iter().find(|(n, _)| n == *v).is_some_and(|(_, r)| {
                    r.iter().any(|i| {
                        let in_backup = backup_tables.contains(i)
                            || held.iter().any(|(h, _)| h == i);
                        in_backup && !is_live(i) && !tables.contains(i) && !missing.contains(&i)
                    })
                })
            });
            match stranded {
                Some(k) => left_out.push(missing.remove(k).clone()),
                None => break,
            }
        }
        let mut done: Vec<String> = Vec::new();
        // Dependency order: a view whose missing inputs are all back goes next.
        while !missing.is_empty() {
            let ready = missing.iter().position(|v| {
                let inputs = reads.iter().find(|(n, _)| n == *v).map(|(_, r)| r);
                inputs.is_none_or(|r| {
                    r.iter()
                        .all(|i| i == *v || !missing.contains(&i))
                })
            });
            // A cycle cannot be created; take the first and let the server say why.
            let v = missing.remove(ready.unwrap_or(0));
            let Some((_, body)) = held.iter().find(|(n, _)| n == v) else {
                continue;
            };
            // The dump's header settings the section relies on.
            let mut script = b"SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO';\n".to_vec();
            script.extend_from_slice(body);
            match self.run_script(url, &script).await? {
                Ok(()) => done.push(v.clone()),
                Err(e) => problems.push(format!(
                    "view {} reads a restored table and is missing, but cannot be put back from the backup: {e}",
                    sql::quote_name(v)
                )),
            }
        }
        Ok(done)
    }

    /// Views of the target over the restored tables (directly or through other views) that
    /// do not work now, one line each.
    async fn broken_views(&self, url: &DbUrl, tables: &[String]) -> Result<Vec<String>, SourceError> {
        let rows = self
            .hex_rows(
                url,
                "select hex(table_name), hex(view_definition) from information_schema.views \
                 where table_schema = database() order by table_name",
            )
            .await?;
        let reads: Vec<(String, Vec<String>)> = rows
            .into_iter()
            .filter_map(|r| match r.as_slice() {
                [n, d] => Some((n.clone(), sql::view_reads(d.as_bytes()))),
                _ => None,
            })
            .collect();
        let mut broken = Vec::new();
        for v in dependents(tables, &reads) {
            let probe = format!("select 1 from {} limit 0", sql::quote_name(&v));
            match self.rows(url, &probe).await {
                Ok(_) => {}
                Err(SourceError::Failed { stderr, .. }) => broken.push(format!(
                    "view {} over the restored table(s) does not work: {}",
                    sql::quote_name(&v),
                    client_error(&stderr)
                )),
                Err(e) => return Err(e),
            }
        }
        Ok(broken)
    }

    /// Foreign keys to or from `tables` that InnoDB keeps but cannot enforce, because the
    /// restored table no longer matches them (restored with foreign key checks off, so the
    /// server did not refuse): no index on the referenced columns, or column types that
    /// differ. Such a key rejects every row.
    async fn unenforced_foreign_keys(
        &self,
        url: &DbUrl,
        tables: &[String],
    ) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        for ((name, child, parent), cols) in self.foreign_keys_of(url, tables).await? {
            if let Some(why) = self
                .why_unenforced(url, &name, &child, &parent, &cols)
                .await?
            {
                out.push(why);
            }
        }
        Ok(out)
    }

    /// Foreign keys to or from `tables`, each with its (column, referenced column) pairs.
    async fn foreign_keys_of(
        &self,
        url: &DbUrl,
        tables: &[String],
    ) -> Result<Vec<(ForeignKey, Vec<(String, String)>)>, SourceError> {
        let names = hex_list(tables);
        let keys = self
            .hex_rows(
                url,
                &format!(
                    "select hex(k.constraint_name), hex(k.table_name), hex(k.referenced_table_name), \
                            hex(k.column_name), hex(k.referenced_column_name) \
                     from information_schema.key_column_usage k \
                     where k.table_schema = database() and k.referenced_table_schema = database() \
                       and (k.table_name in ({names}) or k.referenced_table_name in ({names})) \
                     order by k.table_name, k.constraint_name, k.ordinal_position"
                ),
            )
            .await?;
        // (constraint, child, parent) -> [(column, referenced column)]
        let mut fks: Vec<(ForeignKey, Vec<(String, String)>)> = Vec::new();
        for k in keys {
            let [name, child, parent, col, refcol] = k.as_slice() else {
                continue;
            };
            let key = (name.clone(), child.clone(), parent.clone());
            match fks.iter_mut().find(|(k, _)| *k == key) {
                Some((_, cols)) => cols.push((col.clone(), refcol.clone())),
                None => fks.push((key, vec![(col.clone(), refcol.clone())])),
            }
        }
        Ok(fks)
    }

    /// Why foreign key `name` of `child` to `parent` cannot be enforced; `None` when it can,
    /// or when `parent` is not there (the row check names it).
    async fn why_unenforced(
        &self,
        url: &DbUrl,
        name: &str,
        child: &str,
        parent: &String,
        cols: &[(String, String)],
    ) -> Result<Option<String>, SourceError> {
        let column_types = self
            .hex_rows(
                url,
                &format!(
                    "select hex(table_name), hex(column_name), hex(lower(column_type)), \
                            hex(coalesce(collation_name, '')) \
                     from information_schema.columns where table_schema = database() \
                       and table_name in ({})",
                    hex_list(&[child.to_string(), parent.clone()])
                ),
            )
            .await?;
        let label = format!(
            "foreign key {} on {} → {}",
            sql::quote_name(name),
            sql::quote_name(child),
            sql::quote_name(parent)
        );
        let Some(_) = column_types.iter().find(|r| r.first() == Some(parent)) else {
            // No such table: the row check names it.
            return Ok(None);
        };
        let mut why = column_mismatches(child, parent, cols, &column_types);
        if !self.parent_indexed(url, parent, cols).await? {
            why.push(format!(
                "{} has no index starting with the referenced column(s)",
                sql::quote_name(parent)
            ));
        }
        if !why.is_empty() {
            return Ok(Some(format!(
                "{label} is kept but cannot be enforced (it rejects every row of {}): {}; the table differs from the one the key was made for: alter it (or the key) to match",
                sql::quote_name(child),
                why.join(", ")
            )));
        }
        Ok(None)
    }

    /// Whether `parent` has an index that starts with the referenced columns of `cols`.
    async fn parent_indexed(
        &self,
        url: &DbUrl,
        parent: &str,
        cols: &[(String, String)],
    ) -> Result<bool, SourceError> {
        let index = self
            .hex_rows(
                url,
                &format!(
                    "select hex(index_name), hex(column_name) from information_schema.statistics \
                     where table_schema = database() and table_name = unhex('{}') \
                     order by index_name, seq_in_index",
                    hex::encode(parent)
                ),
            )
            .await?;
        let mut indexes: Vec<(String, Vec<String>)> = Vec::new();
        for r in index {
            let [i, c] = r.as_slice() else { continue };
            match indexes.iter_mut().find(|(n, _)| n == i) {
                Some((_, cs)) => cs.push(c.clone()),
                None => indexes.push((i.clone(), vec![c.clone()])),
            }
        }
        let wanted: Vec<&String> = cols.iter().map(|(_, r)| r).collect();
        let indexed = indexes
            .iter()
            .any(|(_, cs)| cs.len() >= wanted.len() && cs.iter().zip(&wanted).all(|(a, b)| a == *b));
        Ok(indexed)
    }

    async fn base_tables(&self, url: &DbUrl) -> Result<Vec<String>, SourceError> {
        Ok(self
            .relations(url)
            .await?
            .into_iter()
            .filter(|(_, kind)| kind == "BASE TABLE")
            .map(|(name, _)| name)
            .collect())
    }
}

/// The client's error line, without the statement it echoes around it in batch mode.
fn client_error(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("ERROR"))
        .unwrap_or(stderr.trim())
        .to_string()
}

/// A foreign key: (constraint, child table, parent table).
type ForeignKey = (String, String, String);

/// Names as a SQL list of hex literals: `unhex('…'), unhex('…')`.
fn hex_list(names: &[String]) -> String {
    if names.is_empty() {
        return "null".to_string();
    }
    names
        .iter()
        .map(|t| format!("unhex('{}')", hex::encode(t)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Of `reads` (view, names it reads), the views over `tables`, directly or through other
/// such views, in the order given.
fn dependents(tables: &[String], reads: &[(String, Vec<String>)]) -> Vec<String> {
    let mut over: Vec<String> = Vec::new();
    loop {
        let before = over.len();
        for (v, r) in reads {
            if !over.contains(v)
                && !tables.contains(v)
                && r.iter().any(|n| n != v && (tables.contains(n) || over.contains(n)))
            {
                over.push(v.clone());
            }
        }
        if over.len() == before {
            break;
        }
    }
    reads
        .iter()
        .map(|(v, _)| v)
        .filter(|v| over.contains(v))
        .cloned()
        .collect()
}

/// Whether InnoDB can enforce a key between columns of these (type, collation): the same
/// type but for the length of a string (which it allows to differ), the same collation.
fn compatible(a: &(String, String), b: &(String, String)) -> bool {
    let base = |t: &str| -> String {
        let string_type = ["varchar(", "char(", "varbinary(", "binary("]
            .iter()
            .any(|p| t.starts_with(p));
        match (string_type, t.find('(')) {
            (true, Some(i)) => t[..i].to_string(),
            _ => t.to_string(),
        }
    };
    base(&a.0) == base(&b.0) && a.1 == b.1
}

/// The columns of `cols` (child column, parent column) whose types differ, or that are
/// missing, as rows of `column_types` (table, column, type, collation) say.
fn column_mismatches(
    child: &str,
    parent: &str,
    cols: &[(String, String)],
    column_types: &[Vec<String>],
) -> Vec<String> {
    let of = |t: &str, c: &str| {
        column_types
            .iter()
            .find(|r| r.len() == 4 && r[0] == t && r[1] == c)
            .map(|r| (r[2].clone(), r[3].clone()))
    };
    let mut why = Vec::new();
    for (c, r) in cols {
        match (of(child, c), of(parent, r)) {
            (Some(a), Some(b)) => {
                if !compatible(&a, &b) {
                    why.push(format!(
                        "{}.{} is {} but {}.{} is {}",
                        sql::quote_name(child),
                        sql::quote_name(c),
                        a.0,
                        sql::quote_name(parent),
                        sql::quote_name(r),
                        b.0
                    ));
                }
            }
            (None, _) => why.push(format!("{} has no column {}", sql::quote_name(child), sql::quote_name(c))),
            (_, None) => why.push(format!("{} has no column {}", sql::quote_name(parent), sql::quote_name(r))),
        }
    }
    why
}

/// Read an archive's tables; with `until`, stop reading as soon as all of those are seen
/// (for a selective restore that names few tables of a big dump).
async fn scan_archive(
    archive: &dyn Archive,
    until: Option<&[String]>,
) -> Result<Vec<String>, SourceError> {
    let mut data = archive.open().await?;
    let mut scanner = Scanner::default();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = data
            .read(&mut buf)
            .await
            .map_err(|e| SourceError::io("reading the backup", e))?;
        if n == 0 {
            break;
        }
        scanner.push(&buf[..n]);
        if let Some(want) = until
            && want.iter().all(|w| scanner.tables().contains(w))
        {
            break;
        }
    }
    Ok(scanner.finish().tables)
}

fn parse_target(target: &str) -> Result<DbUrl, String> {
    parse_url(target, None)
}

fn check_names(names: &[String]) -> Result<(), SourceError> {
    for n in names {
        sql::check_table_name(n).map_err(SourceError::Refused)?;
    }
    Ok(())
}

/// The archive read through a [`Filter`]: only the selected tables' sections reach the client.
struct Filtered<R> {
    inner: R,
    filter: Filter,
    buf: Box<[u8]>,
    /// How much of the filter's output has been handed out.
    taken: usize,
    done: bool,
}

impl<R> Filtered<R> {
    fn new(inner: R, filter: Filter) -> Self {
        Filtered {
            inner,
            filter,
            buf: vec![0u8; 64 * 1024].into_boxed_slice(),
            taken: 0,
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Filtered<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        loop {
            let out = me.filter.output();
            if me.taken < out.len() {
                let n = dst.remaining().min(out.len() - me.taken);
                dst.put_slice(&out[me.taken..me.taken + n]);
                me.taken += n;
                if me.taken == out.len() {
                    out.clear();
                    me.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if me.done {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut me.buf);
            ready!(Pin::new(&mut me.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            let r = if got.is_empty() {
                me.done = true;
                me.filter.finish()
            } else {
                me.filter.push(got)
            };
            r.map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
    }
}

#[async_trait]
impl Database for MariaDbSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mariadb"
    }

    fn extension(&self) -> &'static str {
        "sql"
    }

    fn format(&self) -> &'static str {
        "mariadb-dump SQL"
    }

    fn describe(&self) -> String {
        match &self.url {
            Some(u) => format!("mariadb {u}"),
            None => "mariadb".to_string(),
        }
    }

    fn target_example(&self) -> &'static str {
        "mysql://USER@HOST:PORT/DB"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        parse_target(target).map(|_| ())
    }

    fn default_excludes(&self) -> Vec<String> {
        self.exclude_tables.clone()
    }

    fn own_target(&self) -> Option<String> {
        self.url.as_ref().map(|u| u.to_string())
    }

    fn selects_objects(&self) -> bool {
        true
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        let (tool, path) = self.tool(DUMP_TOOLS);
        let out = Command::new(&path)
            .arg("--version")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.spawn_err(tool, e))?;
        // A dump tool that cannot even report its version will not dump either.
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: format!("{tool} --version"),
                status: super::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok((
            tool.to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        let url = self.own_url()?;
        let (tool, path) = self.tool(DUMP_TOOLS);
        let conn = Connection::new(url, url.password());
        let mut cmd = self.command(&path, &conn);
        cmd.args(DUMP_ARGS).arg(url.database());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(tool, e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(format!(
                "{tool} started without pipes"
            )));
        };
        let stderr = drain_stderr(stderr);
        let scanner = Arc::new(Mutex::new(Scanner::default()));
        let seen = scanner.clone();
        let reader = InspectReader::new(stdout, move |b: &[u8]| {
            if let Ok(mut s) = seen.lock() {
                s.push(b);
            }
        });
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                let result = wait_child(tool, child, stderr).await;
                // The option file goes only once the tool is done with it.
                drop(conn);
                result?;
                let scanned = scanner
                    .lock()
                    .map(|mut s| std::mem::take(&mut *s))
                    .unwrap_or_default()
                    .finish();
                // The exit status is the authority; this only catches a tool that exits 0
                // without finishing its output.
                if !scanned.completed {
                    return Err(SourceError::Protocol(format!(
                        "{tool} exited successfully but its output does not end with \"-- Dump completed\"; the dump is incomplete"
                    )));
                }
                Ok(DumpInfo {
                    server_version: scanned.server_version,
                    objects: Some(scanned.tables),
                    rows: None,
                    wal: None,
                })
            }
            .boxed(),
        })
    }

    /// Rows counted in the dump's own text as it streams (`count`): its one snapshot.
    async fn dump_counting_rows(&self) -> Result<Dump, SourceError> {
        count::dump(self).await
    }

    fn scratch(&self) -> Option<&dyn crate::engine::Scratch> {
        Some(self)
    }

    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        scan_archive(archive, None).await
    }

    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError> {
        match target {
            Some(t) => {
                let url = parse_target(t).map_err(SourceError::Refused)?;
                self.base_tables(&url).await
            }
            None => self.base_tables(self.own_url()?).await,
        }
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let url = parse_target(&opts.target)
            .map_err(|e| SourceError::Refused(format!("invalid --to URL: {e}")))?;
        check_names(&opts.tables)?;
        check_names(&opts.exclude_tables)?;
        if opts.no_owner {
            // Objects keep their DEFINER: restoring them as another user needs the SET USER
            // (or SUPER) privilege, or a user of that name on the target.
            tracing::warn!(
                "--no-owner has no effect on a MariaDB restore: views, triggers, routines and events keep their DEFINER"
            );
        }
        let selection = Selection {
            include: opts.tables.clone(),
            exclude: opts.exclude_tables.clone(),
        };
        let mut lines = Vec::new();
        let created = opts.create && self.ensure_database(&url, opts, &mut lines).await?;
        let result = self
            .restore_into(archive, opts, &url, selection, created, lines)
            .await;
        match result {
            Err(e) if created && !opts.dry_run && !matches!(e, SourceError::Incomplete(_)) => {
                // Nothing of what the restore created is worth keeping: an empty or half
                // database would pass for a restored one, and stop the next --create.
                let admin = url.with_database("information_schema");
                let drop = format!("drop database {}", sql::quote_name(&url.database()));
                match self.rows(&admin, &drop).await {
                    Ok(_) => tracing::warn!(
                        "dropped database \"{}\", which this restore had created (--create), because the restore failed",
                        url.database()
                    ),
                    Err(d) => tracing::warn!(
                        "the restore failed, and the database \"{}\" it created (--create) could not be dropped: {d}; drop it by hand: {drop}",
                        url.database()
                    ),
                }
                Err(e)
            }
            other => other,
        }
    }
}

impl MariaDbSource {
    /// The restore proper, once `--create` has made the target (`created`).
    async fn restore_into(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
        url: &DbUrl,
        selection: Selection,
        created: bool,
        mut lines: Vec<String>,
    ) -> Result<Vec<String>, SourceError> {
        let url = url.clone();
        // A dry run's --create: nothing to look at in a database that does not exist yet.
        let not_yet = created && opts.dry_run;
        let wanted: Vec<String> = selection
            .include
            .iter()
            .filter(|t| selection.wants(t))
            .cloned()
            .collect();
        if !selection.include.is_empty() {
            self.check_named_tables(archive, &selection, &wanted, &mut lines)
                .await?;
        }
        // The dump drops each object before creating it: without --clean, make sure that
        // replaces nothing.
        if !opts.clean && !not_yet {
            self.refuse_replacing(&url, &selection, &wanted).await?;
        }

        // A dry run has connected and checked what the restore checks; with --clean, it
        // still connects.
        if opts.dry_run && opts.clean && !not_yet {
            self.relations(&url).await?;
        }
        if opts.dry_run {
            lines.push(format!(
                "would restore {} into {url}{}",
                self.name,
                if opts.clean {
                    " (--clean: replacing the objects it contains)"
                } else {
                    ""
                }
            ));
            return Ok(lines);
        }
        // --clean drops the tables and with them their triggers: the ones made since the
        // backup do not come back, and must be named.
        let triggers_before = if opts.clean && !wanted.is_empty() {
            // First what every restore checks, for its hints (a database that is not there).
            self.relations(&url).await?;
            self.triggers_on(&url, &wanted).await?
        } else {
            Vec::new()
        };
        let selective = !selection.include.is_empty() || !selection.exclude.is_empty();
        let filtered = self.run_client(archive, &url, &selection, selective).await?;
        if selective {
            self.report_selection(&selection, &filtered.filter, &mut lines);
        }
        if !wanted.is_empty() {
            self.check_restored_tables(&url, &wanted, &filtered.filter, &triggers_before, &mut lines)
                .await?;
        }
        Ok(lines)
    }

    /// With `--table`: refuses names that leave nothing or are not in the backup, and says
    /// which tables are restored.
    async fn check_named_tables(
        &self,
        archive: &dyn Archive,
        selection: &Selection,
        wanted: &[String],
        lines: &mut Vec<String>,
    ) -> Result<(), SourceError> {
        if wanted.is_empty() {
            return Err(SourceError::Refused(
                "no table left to restore: every table named with --table is also excluded (--exclude-table, or the backup's exclude_tables without --all-tables)".to_string(),
            ));
        }
        // Usually stops early: the named tables' sections are found long before the end.
        let in_backup = scan_archive(archive, Some(&selection.include)).await?;
        let missing: Vec<&str> = selection
            .include
            .iter()
            .filter(|t| !in_backup.contains(t))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            // The scan read to the end: the list is complete. A schema has hundreds of
            // tables: the closest names and the count, not every name.
            let hints: Vec<String> = missing
                .iter()
                .map(|m| {
                    format!(
                        "{m} ({})",
                        crate::names::closest_hint(m, &in_backup, "tables", "in this backup")
                    )
                })
                .collect();
            return Err(SourceError::Refused(format!(
                "table(s) not in this backup: {}",
                hints.join("; ")
            )));
        }
        lines.push(format!(
            "{}: only table(s) {} (with their triggers, and the views over them that are missing; routines and events are left out)",
            self.name,
            wanted.join(", ")
        ));
        Ok(())
    }

    /// Without --clean: refuses a target that has tables (the whole backup) or the named
    /// tables (`--table`).
    async fn refuse_replacing(
        &self,
        url: &DbUrl,
        selection: &Selection,
        wanted: &[String],
    ) -> Result<(), SourceError> {
        let live = self.relations(url).await?;
        if selection.include.is_empty() {
            if !live.is_empty() {
                return Err(SourceError::Refused(format!(
                    "target database \"{}\" already has {} table(s); restore into an empty database, or pass --clean to drop and replace the objects in the backup, or --table NAME to restore single tables",
                    url.database(),
                    live.len()
                )));
            }
        } else {
            let clash: Vec<&str> = wanted
                .iter()
                .filter(|t| live.iter().any(|(n, _)| n == *t))
                .map(String::as_str)
                .collect();
            if !clash.is_empty() {
                return Err(SourceError::Refused(format!(
                    "target database \"{}\" already has table(s) {}; pass --clean to drop and replace them, or drop them first",
                    url.database(),
                    clash.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Feeds the archive (through the selection's filter when `selective`) to the client;
    /// returns the filtered reader, whose filter says what went through.
    async fn run_client(
        &self,
        archive: &dyn Archive,
        url: &DbUrl,
        selection: &Selection,
        selective: bool,
    ) -> Result<Filtered<Box<dyn AsyncRead + Send + Unpin>>, SourceError> {
        let (tool, path) = self.tool(CLIENT_TOOLS);
        let conn = Connection::new(url, self.password_for(url));
        let mut cmd = self.command(&path, &conn);
        // --binary-mode: the dump's bytes go to the server as they are ('\0' and '\\' in
        // data included); the server's packet limit still applies, the client's is raised.
        cmd.args([
            CONNECT_TIMEOUT,
            "--batch",
            "--binary-mode",
            "--default-character-set=utf8mb4",
            "--max-allowed-packet=1G",
        ])
        .arg(url.database())
        .stdin(Stdio::piped());
        let data = archive.open().await?;
        let mut filtered = Filtered::new(data, Filter::new(selection.clone()));
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(tool, e))?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(format!(
                "{tool} started without pipes"
            )));
        };
        let stderr = drain_stderr(stderr);
        let fed = if selective {
            feed(&mut filtered, stdin, &mut child).await
        } else {
            feed(&mut filtered.inner, stdin, &mut child).await
        };
        // The client was killed before the statement it was reading could run, but the
        // ones before it have run.
        fed.map_err(|e| match e {
            SourceError::Io { context, source } => SourceError::Io {
                context: format!("{PARTLY_RESTORED}; the cause: {context}"),
                source,
            },
            other => other,
        })?;
        let result = wait_child(tool, child, stderr).await;
        drop(conn);
        result.map_err(|e| match e {
            SourceError::Failed {
                tool,
                status,
                stderr,
            } => {
                let hint = if stderr.contains("Unknown database") {
                    format!(
                        "\nhint: create the database first: CREATE DATABASE `{}`",
                        url.database().replace('`', "``")
                    )
                } else if stderr.contains(" at line ") {
                    // A statement of the dump failed: the ones before it have run.
                    format!("\nhint: {PARTLY_RESTORED}")
                } else {
                    String::new()
                };
                SourceError::Failed {
                    tool,
                    status,
                    stderr: format!("{stderr}{hint}"),
                }
            }
            other => other,
        })?;
        Ok(filtered)
    }

    /// With `--exclude-table` only: says what was restored and skipped.
    fn report_selection(&self, selection: &Selection, filter: &Filter, lines: &mut Vec<String>) {
        let report = filter.report();
        if selection.include.is_empty() {
            lines.push(format!(
                "{}: {} table(s); skipped: {}",
                self.name,
                report.tables.len(),
                if report.skipped.is_empty() {
                    "none".to_string()
                } else {
                    report.skipped.join(", ")
                }
            ));
            for t in selection
                .exclude
                .iter()
                .filter(|t| !report.skipped.contains(t))
            {
                tracing::warn!("excluded table {t} is not in this backup");
            }
            if !report.views_left_out.is_empty() {
                lines.push(format!(
                    "{}: left out because they need a table that is not restored: view(s) {}",
                    self.name,
                    report.views_left_out.join(", ")
                ));
            }
        }
    }

    /// With `--table`, after the restore: puts back the views over the tables, and fails as
    /// incomplete on what around them does not work.
    async fn check_restored_tables(
        &self,
        url: &DbUrl,
        wanted: &[String],
        filter: &Filter,
        triggers_before: &[(String, String)],
        lines: &mut Vec<String>,
    ) -> Result<(), SourceError> {
        let mut problems = Vec::new();
        let put_back_note = self
            .put_back_missing_views(url, wanted, filter, &mut problems, lines)
            .await?;
        problems.extend(self.broken_views(url, wanted).await?);
        problems.extend(self.lost_triggers(url, triggers_before).await?);
        problems.extend(self.unenforced_foreign_keys(url, wanted).await?);
        // The dump restores with foreign key checks off, so keys to and from the
        // restored tables are kept but were never checked against the rows around them.
        let broken = self.broken_foreign_keys(url, wanted).await?;
        if !broken.is_empty() {
            problems.push(format!(
                "rows break {} foreign key(s) to or from them:\n{}\nfix or remove those rows (the restore ran with foreign key checks off, as mariadb-dump's output asks)",
                broken.len(),
                broken.join("\n")
            ));
        }
        if !problems.is_empty() {
            for p in &problems {
                tracing::warn!("restore of {} is incomplete: {p}", wanted.join(", "));
            }
            return Err(SourceError::Incomplete(format!(
                "restored table(s) {}{}, but:\n{}",
                wanted.join(", "),
                put_back_note.map(|n| format!(" and {n}")).unwrap_or_default(),
                problems.join("\n")
            )));
        }
        Ok(())
    }

    /// Puts back the backup's views over the restored tables that the target is missing;
    /// returns the note that says which.
    async fn put_back_missing_views(
        &self,
        url: &DbUrl,
        wanted: &[String],
        filter: &Filter,
        problems: &mut Vec<String>,
        lines: &mut Vec<String>,
    ) -> Result<Option<String>, SourceError> {
        let held = filter.held_views();
        if filter.report().views_not_held {
            tracing::warn!(
                "the backup's view definitions exceed {} MiB: views over {} missing from the target are not put back (restore them from the backup by hand)",
                sql::VIEWS_MAX / (1024 * 1024),
                wanted.join(", ")
            );
        }
        let backup_tables: Vec<String> = {
            let r = filter.report();
            r.tables.iter().chain(&r.skipped).cloned().collect()
        };
        let mut left_out = Vec::new();
        let put_back = self
            .put_back_views(url, wanted, &backup_tables, &held, problems, &mut left_out)
            .await?;
        if !left_out.is_empty() {
            lines.push(format!(
                "{}: view(s) {} over the restored table(s) not created: they also read tables or views this database does not have",
                self.name,
                left_out.join(", ")
            ));
        }
        let put_back_note = (!put_back.is_empty()).then(|| {
            format!(
                "put back view(s) {} over the restored table(s), missing from the target (from the backup)",
                put_back.join(", ")
            )
        });
        if let Some(note) = &put_back_note {
            lines.push(format!("{}: {note}", self.name));
        }
        Ok(put_back_note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("mysql://app:s%40cret@db:3306/shop", None).expect("valid");
        assert_eq!(u.database(), "shop");
        assert_eq!(u.password().map(Secret::expose), Some("s@cret"));
        assert!(parse_url("mariadb://app@db/shop", None).is_ok());
        let e = parse_url("postgres://app@db/shop", None).expect_err("scheme");
        assert!(
            e.contains("is not mariadb") && e.contains("mysql://"),
            "{e}"
        );
        let e = parse_url("mysql://app@db:3306", None).expect_err("no database");
        assert!(e.contains("names no database"), "{e}");
        let e = parse_url("mysql://app@db/a/b", None).expect_err("slash");
        assert!(e.contains("\"a/b\" is not a database name"), "{e}");
    }

    #[test]
    fn connection_arguments_never_hold_the_password() {
        let u = parse_url("mysql://app:topsecret@db.example:3307/shop", None).expect("valid");
        let c = Connection::new(&u, u.password());
        let args: Vec<String> = c
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args[0].starts_with("--defaults-extra-file="), "{args:?}");
        assert!(args.contains(&"--protocol=TCP".to_string()));
        assert!(args.contains(&"--host=db.example".to_string()));
        assert!(args.contains(&"--port=3307".to_string()));
        assert!(args.contains(&"--user=app".to_string()));
        assert!(!args.iter().any(|a| a.contains("topsecret")), "{args:?}");
        let path = c._option_file.as_ref().expect("option file").path();
        let body = std::fs::read_to_string(path).expect("read option file");
        assert_eq!(body, "[client]\npassword=\"topsecret\"\n");
        // Named after its writer, so a later start can remove it if this run is killed.
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let writer = format!("stowage-my-{}-", crate::owner::Owner::current().token());
        assert!(name.starts_with(&writer), "{name}");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let kept = path.to_path_buf();
        drop(c);
        assert!(!kept.exists(), "option file left behind");

        let s = parse_url(
            "mysql://app@localhost/shop?socket=/run/mysqld/mysqld.sock",
            None,
        )
        .expect("valid");
        let c = Connection::new(&s, None);
        assert_eq!(
            c.args,
            vec![
                OsString::from("--protocol=SOCKET"),
                "--socket=/run/mysqld/mysqld.sock".into(),
                "--user=app".into(),
            ]
        );
    }

    #[test]
    fn dump_tool_falls_back_to_mysqldump() {
        let dir = tempfile::tempdir().expect("tempdir");
        let source = |bin_dir: &Path| MariaDbSource {
            name: "db".into(),
            url: None,
            bin_dir: Some(bin_dir.to_path_buf()),
            priority: Priority::default(),
            exclude_tables: Vec::new(),
        };
        // Neither there: the new name, for the "not found" message.
        let (tool, path) = source(dir.path()).tool(DUMP_TOOLS);
        assert_eq!(
            (tool, path),
            ("mariadb-dump", dir.path().join("mariadb-dump"))
        );
        std::fs::write(dir.path().join("mysqldump"), "").expect("mysqldump");
        let (tool, path) = source(dir.path()).tool(DUMP_TOOLS);
        assert_eq!((tool, path), ("mysqldump", dir.path().join("mysqldump")));
        std::fs::write(dir.path().join("mariadb-dump"), "").expect("mariadb-dump");
        assert_eq!(source(dir.path()).tool(DUMP_TOOLS).0, "mariadb-dump");
    }

    #[test]
    fn views_over_views_depend_on_the_table() {
        let r = |v: &str, reads: &[&str]| {
            (
                v.to_string(),
                reads.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            )
        };
        let reads = vec![
            r("big", &["paid", "total"]),
            r("other", &["customers"]),
            r("paid", &["orders", "id"]),
            r("selfish", &["selfish"]),
        ];
        assert_eq!(dependents(&["orders".into()], &reads), vec!["big", "paid"]);
        assert!(dependents(&["nothing".into()], &reads).is_empty());
        let t = |ty: &str, coll: &str| (ty.to_string(), coll.to_string());
        assert!(compatible(&t("varchar(10)", "utf8mb4_general_ci"), &t("varchar(50)", "utf8mb4_general_ci")));
        assert!(!compatible(&t("varchar(10)", "utf8mb4_general_ci"), &t("varchar(10)", "latin1_swedish_ci")));
        assert!(!compatible(&t("bigint(20)", ""), &t("int(11)", "")));
        assert!(!compatible(&t("int(10) unsigned", ""), &t("int(11)", "")));
        assert_eq!(client_error("----\nselect 1\n----\n\nERROR 1356 (HY000) at line 1: bad\n"), "ERROR 1356 (HY000) at line 1: bad");
    }

    #[test]
    fn option_values_are_escaped() {
        assert_eq!(option_value(r#"a"b\c#d e'f"#), r#""a\"b\\c#d e'f""#);
        assert_eq!(option_value("x\ny\t"), r#""x\ny\t""#);
    }
}
