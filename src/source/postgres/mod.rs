//! PostgreSQL through its own tools: `pg_dump --format=custom --compress=0` streamed out
//! (stowage compresses; pg_dump's own compression would be redundant work), and
//! `pg_restore` fed from a stream. The archive is a standard custom-format dump, so
//! `zstd -d < db.pgdump.zst | pg_restore -d …` restores it without stowage.

pub mod deps;
pub mod header;
mod live;
pub mod physical;
mod tables;
pub mod toc;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::FutureExt;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio_util::io::InspectReader;

use self::toc::{Selection, TableName};
use super::url::{DbUrl, UrlSpec};
use super::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, Scratch, SourceError,
    drain_stderr, wait_child,
};
use crate::section::{Priority, Section};

const URL: UrlSpec = UrlSpec {
    engine: "postgres",
    schemes: &["postgres", "postgresql"],
    example: "postgres://user@host:5432/dbname",
    database_required: true,
};

/// `type = "postgres"`.
pub struct Postgres;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPostgres {
    url: Option<String>,
    password_file: Option<PathBuf>,
    /// Directory holding pg_dump/pg_restore/psql; default: found on PATH.
    bin_dir: Option<PathBuf>,
    exclude_tables: Option<Vec<String>>,
    /// "logical" (pg_dump, the default) or "physical" (pg_basebackup and continuous WAL).
    mode: Option<String>,
    /// Physical mode only (`physical::PHYSICAL_KEYS`).
    slot: Option<String>,
    wal_flush: Option<String>,
    max_slot_wal: Option<String>,
}

impl Engine for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawPostgres>()
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawPostgres = section.parse()?;
        match raw.mode.as_deref() {
            None | Some("logical") => {}
            Some("physical") => return physical::configure(section, raw),
            Some(other) => {
                section.problem(
                    "mode",
                    format!("unknown mode \"{other}\"; use \"logical\" (pg_dump) or \"physical\" (pg_basebackup and continuous WAL)"),
                );
                return None;
            }
        }
        let mark = section.mark();
        for (key, given) in physical::PHYSICAL_KEYS.iter().zip([
            raw.slot.is_some(),
            raw.wal_flush.is_some(),
            raw.max_slot_wal.is_some(),
        ]) {
            if given {
                section.problem(
                    key,
                    "only used with mode = \"physical\"; remove it or set mode = \"physical\"",
                );
            }
        }
        let url = super::section_url(
            section,
            raw.url.as_deref(),
            raw.password_file.as_deref(),
            |u, pw| DbUrl::parse(u, &URL, pw),
            "postgres",
            "required for type = \"postgres\"; e.g. url = \"postgres://user@db:5432/app\"",
        );
        super::check_bin_dir(section, raw.bin_dir.as_deref(), "pg_dump");
        let exclude_tables = super::table_excludes(section, raw.exclude_tables, |t| {
            TableName::parse(t).map(|_| ())
        });
        if section.failed_since(mark) {
            return None;
        }
        Some(Arc::new(PostgresSource {
            name: section.name.clone(),
            url: Some(url?),
            bin_dir: raw.bin_dir,
            priority: section.priority,
            exclude_tables,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(PostgresSource {
            name: name.to_string(),
            url: None,
            bin_dir: None,
            priority: Priority::default(),
            exclude_tables: Vec::new(),
        })
    }

    fn unconfigured_for(&self, name: &str, base_backup: bool) -> Option<Arc<dyn Database>> {
        if base_backup {
            physical::unconfigured(name)
        } else {
            Some(self.unconfigured(name))
        }
    }
}

/// A configured PostgreSQL source. `url` is `None` for a source made only to restore.
#[derive(Debug, Clone)]
pub struct PostgresSource {
    name: String,
    url: Option<DbUrl>,
    bin_dir: Option<PathBuf>,
    priority: Priority,
    /// Dumped, but skipped by default on restore (job-level list + this source's own).
    exclude_tables: Vec<String>,
}

impl PostgresSource {
    fn tool(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
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

    fn command(&self, tool: &str, url: &DbUrl) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        super::lower_priority(&mut cmd, self.priority);
        // Never prompt: there is no terminal in a container and a prompt would hang forever.
        cmd.arg("--no-password")
            .env("PGAPPNAME", "stowage")
            .env("PGCONNECT_TIMEOUT", "15")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(pw) = url.password() {
            cmd.env("PGPASSWORD", pw.expose());
        }
        cmd
    }

    fn spawn_err(&self, tool: &str, e: std::io::Error) -> SourceError {
        super::spawn_error_in(tool, e, self.bin_dir.as_deref(), "install the PostgreSQL client tools (at least the server's major version) or set bin_dir")
    }

    /// `pg_dump` of the source; with a counter, in the snapshot its session exported, and
    /// the counts it took in that snapshot go into the dump's info.
    async fn dump_in(&self, counter: Option<RowCounter>) -> Result<Dump, SourceError> {
        let url = self.own_url()?;
        let mut cmd = self.command("pg_dump", url);
        cmd.args(["--format=custom", "--compress=0"]);
        if let Some(c) = &counter {
            cmd.arg(format!("--snapshot={}", c.snapshot));
        }
        cmd.arg("--dbname").arg(url.conninfo());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_dump", e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "pg_dump started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        // The archive's header and table of contents come first in a custom-format dump;
        // keeping them lets `pg_restore --list` read what the dump holds without a second pass.
        let header = Arc::new(Mutex::new(header::HeaderKeep::default()));
        let keep = header.clone();
        let reader = InspectReader::new(stdout, move |b: &[u8]| {
            if let Ok(mut h) = keep.lock() {
                h.push(b);
            }
        });
        // The header is read after the dump, by this source's own pg_restore.
        let me = self.clone();
        let name = self.name.clone();
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                let dumped = wait_child("pg_dump", child, stderr).await;
                // The snapshot's session ends only now: pg_dump has long imported it.
                let rows = match counter {
                    Some(c) => match c.finish().await {
                        Ok(rows) => Some(rows),
                        Err(e) => {
                            tracing::warn!(source = %name, "row counts for the drill failed ({e}); the manifest records none");
                            None
                        }
                    },
                    None => None,
                };
                dumped?;
                let header = header
                    .lock()
                    .map(|mut h| std::mem::take(&mut *h).into_bytes())
                    .unwrap_or_default();
                let mut info = me.header_info(header).await;
                info.rows = rows;
                Ok(info)
            }
            .boxed(),
        })
    }

    /// What a dump's header says: the server version and the tables it holds.
    async fn header_info(&self, header: Vec<u8>) -> DumpInfo {
        let archive = BytesArchive(header);
        let Ok(list) = self.capture(&archive, &["--list"]).await else {
            return DumpInfo::default();
        };
        let server_version = list.lines().find_map(|l| {
            l.strip_prefix(";     Dumped from database version: ")
                .map(|v| v.trim().to_string())
        });
        let objects = match self.capture(&archive, &["--schema-only", "--file=-"]).await {
            Ok(schema) => Some(toc::filter(&list, &schema, &Selection::default()).tables),
            Err(_) => None,
        };
        DumpInfo {
            server_version,
            objects,
            rows: None,
            wal: None,
        }
    }

    /// Run `pg_restore ARGS` on a fresh stream of the archive and return its output. Used
    /// for the table of contents and the schema, which pg_restore prints after reading
    /// only the archive's header: it exits early and the rest is never downloaded.
    async fn capture(&self, archive: &dyn Archive, args: &[&str]) -> Result<String, SourceError> {
        self.capture_counted(archive, args).await.map(|(out, _)| out)
    }

    /// [`Self::capture`], and how many bytes of the archive pg_restore was given before it
    /// stopped reading: at least what it read (the rest sat in the pipe).
    async fn capture_counted(
        &self,
        archive: &dyn Archive,
        args: &[&str],
    ) -> Result<(String, usize), SourceError> {
        let mut cmd = Command::new(self.tool("pg_restore"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut data = archive.open().await?;
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_restore", e))?;
        let (Some(mut stdin), Some(mut stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SourceError::Protocol(
                "pg_restore started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        let reader = tokio::spawn(async move {
            let mut out = Vec::new();
            stdout.read_to_end(&mut out).await.map(|_| out)
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut fed = 0usize;
        loop {
            match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    // Counted write by write: a chunk pg_restore took only part of before it
                    // stopped reading must count what the pipe accepted, or the header kept
                    // from this count (`header_len`) can end short of the table of contents.
                    let mut rest = &buf[..n];
                    let mut gone = false;
                    while !rest.is_empty() {
                        match stdin.write(rest).await {
                            Ok(0) | Err(_) => {
                                gone = true; // it has read what it needs
                                break;
                            }
                            Ok(w) => {
                                fed += w;
                                rest = &rest[w..];
                            }
                        }
                    }
                    if gone {
                        break;
                    }
                }
                Err(e) => {
                    let _ = child.kill().await;
                    return Err(SourceError::io("reading the backup", e));
                }
            }
        }
        drop(stdin);
        drop(data);
        let out = reader
            .await
            .map_err(|e| SourceError::internal("pg_restore output", e))?
            .map_err(|e| SourceError::io("reading pg_restore's output", e))?;
        wait_child("pg_restore", child, stderr).await?;
        Ok((String::from_utf8_lossy(&out).into_owned(), fed))
    }

    /// User tables (and foreign tables) of a live database, as [`TableName::parse`] reads
    /// them back (`app."table with spaces"`), to refuse restoring over data and for the
    /// healer's presence checks.
    async fn tables_in(&self, url: &DbUrl) -> Result<Vec<String>, SourceError> {
        let rows = self
            .query(
                url,
                &["select n.nspname, c.relname from pg_catalog.pg_class c \
                   join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                   where c.relkind in ('r', 'p', 'f') \
                   and n.nspname not in ('pg_catalog', 'information_schema') \
                   and n.nspname not like 'pg_toast%' order by 1, 2"],
            )
            .await
            .map_err(|e| match e {
                SourceError::Failed { stderr, .. } => SourceError::Refused(format!(
                    "cannot connect to target {url}: {}{}",
                    stderr.trim(),
                    connect_hint(&stderr, url)
                )),
                other => other,
            })?;
        Ok(rows
            .into_iter()
            .filter_map(|r| match <[String; 2]>::try_from(r) {
                Ok([schema, name]) => Some(toc::display_rel(&schema, &name)),
                Err(_) => None,
            })
            .collect())
    }
}

/// Exact rows of every user table ("schema.name"), in one statement: each count is run
/// through query_to_xml, so a single snapshot sees them all.
const COUNT_ROWS: &str = "select n.nspname || '.' || c.relname, \
     (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
     from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
     where c.relkind in ('r','p') and n.nspname not in ('pg_catalog','information_schema') \
     and n.nspname not like 'pg_toast%' order by 1";
const COUNT_END: &str = "stowage:counted";

fn parse_counts(lines: &[String]) -> Result<std::collections::BTreeMap<String, u64>, SourceError> {
    lines
        .iter()
        .map(|l| {
            let (t, n) = l.split_once('\u{1f}').ok_or_else(|| {
                SourceError::Protocol(format!("unexpected row count line from psql: {l:?}"))
            })?;
            let n = n.trim().parse::<u64>().map_err(|_| {
                SourceError::Protocol(format!("unexpected row count from psql: {l:?}"))
            })?;
            Ok((t.to_string(), n))
        })
        .collect()
}

/// A psql session that exports its snapshot for pg_dump and counts rows in it while the
/// dump streams; the transaction stays open until the dump is done.
struct RowCounter {
    snapshot: String,
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    counts: tokio::task::JoinHandle<Result<Vec<String>, SourceError>>,
    stderr: tokio::task::JoinHandle<String>,
}

impl RowCounter {
    async fn start(src: &PostgresSource, url: &DbUrl) -> Result<RowCounter, SourceError> {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = src.command("psql", url);
        cmd.args(["-X", "-q", "-A", "-t", "-F", "\u{1f}", "-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(url.conninfo())
            .stdin(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| src.spawn_err("psql", e))?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SourceError::Protocol("psql started without pipes".into()));
        };
        let stderr = drain_stderr(stderr);
        let io = |e| SourceError::io("talking to psql", e);
        stdin
            .write_all(
                format!(
                    "begin isolation level repeatable read, read only;\nselect pg_export_snapshot();\n{COUNT_ROWS};\nselect '{COUNT_END}';\n"
                )
                .as_bytes(),
            )
            .await
            .map_err(io)?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let Some(snapshot) = lines.next_line().await.map_err(io)? else {
            drop(stdin);
            wait_child("psql", child, stderr).await?;
            return Err(SourceError::Protocol("psql exported no snapshot".into()));
        };
        let counts = tokio::spawn(async move {
            let mut out = Vec::new();
            while let Some(l) = lines
                .next_line()
                .await
                .map_err(|e| SourceError::io("reading row counts", e))?
            {
                if l == COUNT_END {
                    return Ok(out);
                }
                out.push(l);
            }
            Err(SourceError::Protocol("psql ended before the row counts".into()))
        });
        Ok(RowCounter {
            snapshot: snapshot.trim().to_string(),
            child,
            stdin,
            counts,
            stderr,
        })
    }

    async fn finish(mut self) -> Result<std::collections::BTreeMap<String, u64>, SourceError> {
        let counted = self.counts.await;
        let _ = self.stdin.write_all(b"commit;\n").await;
        drop(self.stdin);
        wait_child("psql", self.child, self.stderr).await?;
        let lines = counted.map_err(|e| SourceError::internal("row counts", e))??;
        parse_counts(&lines)
    }
}

#[async_trait]
impl Scratch for PostgresSource {
    /// By name alone: the same database reached under another host name must not pass.
    fn is_own_database(&self, target: &str) -> bool {
        match (&self.url, parse_target(target)) {
            (Some(own), Ok(t)) => own.database() == t.database(),
            _ => false,
        }
    }

    async fn create(&self, target: &str) -> Result<(), SourceError> {
        let url = self.scratch_url(target)?;
        let name = quote_ident(&url.database());
        let admin = url.with_database("postgres");
        self.query(
            &admin,
            &[
                &format!("drop database if exists {name} with (force)"),
                &format!("create database {name}"),
            ],
        )
        .await?;
        Ok(())
    }

    async fn drop(&self, target: &str) -> Result<(), SourceError> {
        let url = self.scratch_url(target)?;
        let name = quote_ident(&url.database());
        self.query(
            &url.with_database("postgres"),
            &[&format!("drop database if exists {name} with (force)")],
        )
        .await?;
        Ok(())
    }

    async fn row_counts(
        &self,
        target: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, SourceError> {
        let url = self.scratch_url(target)?;
        let rows = self.query(&url, &[COUNT_ROWS]).await?;
        parse_counts(&rows.into_iter().map(|r| r.join("\u{1f}")).collect::<Vec<_>>())
    }

    async fn check(&self, target: &str, query: &str) -> Result<bool, SourceError> {
        let url = self.scratch_url(target)?;
        let rows = self.query(&url, &[query]).await?;
        check_answer(&rows)
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresSource {
    fn scratch_url(&self, target: &str) -> Result<DbUrl, SourceError> {
        if self.is_own_database(target) {
            return Err(SourceError::Refused(format!(
                "{} is the database of source \"{}\"; a drill only uses a scratch database",
                super::url::redact(target),
                self.name
            )));
        }
        Ok(parse_target(target)
            .map_err(SourceError::Refused)?
            .or_password_of(self.url.as_ref()))
    }
}

/// A dump's header held in memory, read as an archive.
struct BytesArchive(Vec<u8>);

#[async_trait]
impl Archive for BytesArchive {
    async fn open(&self) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, SourceError> {
        Ok(Box::new(std::io::Cursor::new(self.0.clone())))
    }
}

fn parse_target(target: &str) -> Result<DbUrl, String> {
    DbUrl::parse(target, &URL, None)
}

#[async_trait]
impl Database for PostgresSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn extension(&self) -> &'static str {
        "pgdump"
    }

    fn format(&self) -> &'static str {
        "pg_dump custom"
    }

    fn describe(&self) -> String {
        match &self.url {
            Some(u) => format!("postgres {u}"),
            None => "postgres".to_string(),
        }
    }

    fn target_example(&self) -> &'static str {
        "postgres://USER@HOST:PORT/DB"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        parse_target(target).map(|_| ())
    }

    fn default_excludes(&self) -> Vec<String> {
        self.exclude_tables.clone()
    }

    fn selects_objects(&self) -> bool {
        true
    }

    /// As `pg_dump -t` reads them: unquoted parts fold to lower case, and a name without
    /// a schema names the table of that name in any schema.
    fn same_object(&self, a: &str, b: &str) -> bool {
        match (TableName::parse(a), TableName::parse(b)) {
            (Ok(x), Ok(y)) => {
                x.name == y.name
                    && (x.schema.is_none() || y.schema.is_none() || x.schema == y.schema)
            }
            _ => false,
        }
    }

    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        let list = self.capture(archive, &["--list"]).await?;
        let schema = self
            .capture(archive, &["--schema-only", "--file=-"])
            .await?;
        Ok(toc::filter(&list, &schema, &Selection::default()).tables)
    }

    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError> {
        match target {
            Some(t) => {
                let url = parse_target(t)
                    .map_err(SourceError::Refused)?
                    .or_password_of(self.url.as_ref());
                self.tables_in(&url).await
            }
            None => self.tables_in(self.own_url()?).await,
        }
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        let out = Command::new(self.tool("pg_dump"))
            .arg("--version")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.spawn_err("pg_dump", e))?;
        // A pg_dump that cannot even report its version (wrong architecture, missing
        // libpq, killed) will not dump either: say so now, not as an empty version.
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: "pg_dump --version".to_string(),
                status: super::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok((
            "pg_dump".to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        self.dump_in(None).await
    }

    async fn dump_counting_rows(&self) -> Result<Dump, SourceError> {
        let url = self.own_url()?;
        match RowCounter::start(self, url).await {
            Ok(counter) => self.dump_in(Some(counter)).await,
            Err(e) => {
                tracing::warn!(source = %self.name, "cannot count rows for the drill ({e}); dumping without counts");
                self.dump_in(None).await
            }
        }
    }

    fn scratch(&self) -> Option<&dyn Scratch> {
        Some(self)
    }

    fn own_target(&self) -> Option<String> {
        self.url.as_ref().map(|u| u.to_string())
    }

    /// Every restore path is `apply_verified`: pg_restore's SQL goes into one psql
    /// transaction, and COMMIT is let through only after the archive was read to its end
    /// (where its size and sha256 are checked); a whole restore's script is held back by its
    /// last 64 KiB, which hold its only COMMIT.
    fn verifies_before_commit(&self) -> bool {
        true
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let url = parse_target(&opts.target)
            .map_err(|e| SourceError::Refused(format!("invalid --to URL: {e}")))?
            .or_password_of(self.url.as_ref());
        let mut lines = Vec::new();
        let created = if opts.create {
            self.ensure_database(&url, opts, &mut lines).await?
        } else {
            false
        };
        let restored = self
            .restore_into(archive, opts, &url, created, &mut lines)
            .await;
        match restored {
            Err(e) if created && !opts.dry_run && !matches!(e, SourceError::Incomplete(_)) => {
                // --create made an empty database for this restore: a failed restore must
                // not leave it behind (a later --create would then find it and skip it).
                let admin = url.with_database("postgres");
                let dropped = self
                    .query(
                        &admin,
                        &[&format!(
                            "drop database if exists {}",
                            quote_ident(&url.database())
                        )],
                    )
                    .await;
                let note = match dropped {
                    Ok(_) => format!(
                        "\n(database \"{}\", created by --create, was dropped again)",
                        url.database()
                    ),
                    Err(d) => format!(
                        "\nwarning: database \"{}\" was created by --create and could not be dropped again: {d}",
                        url.database()
                    ),
                };
                Err(match e {
                    SourceError::Refused(why) => SourceError::Refused(format!("{why}{note}")),
                    other => hinted(other, |_| note),
                })
            }
            Err(e) => Err(e),
            Ok(()) => Ok(lines),
        }
    }
}

impl PostgresSource {
    async fn restore_into(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
        url: &DbUrl,
        created: bool,
        lines: &mut Vec<String>,
    ) -> Result<(), SourceError> {
        let url = url.clone();
        let parse = |names: &[String]| -> Result<Vec<TableName>, SourceError> {
            names
                .iter()
                .map(|t| TableName::parse(t).map_err(SourceError::Refused))
                .collect()
        };
        let selection = Selection {
            include: parse(&opts.tables)?,
            exclude: parse(&opts.exclude_tables)?,
            bring: Vec::new(),
        };
        let selective = !selection.include.is_empty() || !selection.exclude.is_empty();
        if !selective {
            lines.extend(self.restore_whole(archive, opts, &url, created).await?);
            return Ok(());
        }
        // Both read only the archive's header: cheap even for a big dump. `--verbose` adds
        // each entry's dependencies (comment lines to `pg_restore -L`).
        let (toc, header_len) = self
            .capture_counted(archive, &["--list", "--verbose"])
            .await?;
        let schema = self
            .capture(archive, &["--schema-only", "--file=-"])
            .await?;
        let filtered = toc::filter(&toc, &schema, &selection);
        let mut selective = tables::Selective {
            src: self,
            archive,
            opts,
            url: &url,
            created,
            toc,
            schema,
            header_len,
            selection,
            filtered,
        };
        selective.refuse_unmatched()?;
        let tables_only = !selective.selection.include.is_empty();
        if !tables_only {
            return selective.restore_excluding(lines).await;
        }
        selective.restore_tables(lines).await
    }
}

/// How much of the generator's output is held back until the archive has been checked.
/// pg_restore writes `COMMIT` only after its last entry, followed by nothing but its footer
/// (a three-line comment and `\unrestrict <key>`, under 200 bytes in PostgreSQL 15), so
/// holding back the last 64 KiB keeps its `COMMIT` from psql until the check has passed.
const HOLD_BACK: usize = 64 * 1024;

/// Copy `from` to `to` except the last `hold` bytes, which are returned.
async fn hold_back_copy(
    from: &mut (impl tokio::io::AsyncRead + Unpin),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
    hold: usize,
) -> std::io::Result<Vec<u8>> {
    let mut held: Vec<u8> = Vec::with_capacity(2 * hold);
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return Ok(held);
        }
        held.extend_from_slice(&buf[..n]);
        if held.len() > hold {
            let cut = held.len() - hold;
            to.write_all(&held[..cut]).await?;
            held.drain(..cut);
        }
    }
}

/// The `pg_restore -L` list, in a private temp file removed when dropped.
fn list_file(list: &str) -> Result<tempfile::NamedTempFile, SourceError> {
    let mut f = tempfile::Builder::new()
        .prefix("stowage-restore-")
        .suffix(".list")
        .tempfile()
        .map_err(|e| SourceError::io("cannot create the restore list", e))?;
    std::io::Write::write_all(&mut f, list.as_bytes())
        .map_err(|e| SourceError::io("cannot write the restore list", e))?;
    Ok(f)
}

/// `value` as an SQL string literal that means the same whatever the session's
/// `standard_conforming_strings` (a role or database can turn it off with `ALTER … SET`,
/// and then a backslash in `'…'` escapes the closing quote): an escape string with both
/// backslashes and quotes doubled.
fn sql_literal(value: &str) -> String {
    format!("E'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// What to do when psql could not connect, from what it said; empty when unknown.
fn connect_hint(stderr: &str, url: &DbUrl) -> String {
    if stderr.contains("no password supplied") || stderr.contains("password authentication failed")
    {
        format!(
            "\nhint: give the password of user \"{}\": in the URL (postgres://USER:PASSWORD@HOST/DB), in PGPASSWORD, or in ~/.pgpass; a target that names the job source's user (or no user) uses the source's password_file",
            url.user().unwrap_or_default()
        )
    } else if stderr.contains(&format!("database \"{}\" does not exist", url.database())) {
        format!(
            "\nhint: create it first (psql -c 'create database \"{db}\"'), or add --create to let restore create it",
            db = url.database()
        )
    } else if stderr.contains("Connection refused") || stderr.contains("could not translate host name") {
        "\nhint: check that the server is running and that the host and port in the URL are right".to_string()
    } else {
        String::new()
    }
}

fn with_connect_hint(e: SourceError, url: &DbUrl) -> SourceError {
    hinted(e, |stderr| connect_hint(stderr, url))
}

/// A tool's failure with what to do about it (from what it said) appended.
fn hinted(e: SourceError, hint: impl FnOnce(&str) -> String) -> SourceError {
    match e {
        SourceError::Failed {
            tool,
            status,
            stderr,
        } => {
            let hint = hint(&stderr);
            SourceError::Failed {
                tool,
                status,
                stderr: format!("{stderr}{hint}"),
            }
        }
        other => other,
    }
}

/// Hints for what pg_restore or psql said, appended to their error.
fn restore_hint(stderr: &str, clean: bool, whole: bool) -> &'static str {
    if stderr.contains("role \"") && stderr.contains("does not exist") {
        "\nhint: the target lacks the backup's roles; retry with --no-owner"
    } else if stderr.contains("because other objects depend on it") && whole {
        "\nhint: nothing was changed. Objects of the target that are not in this backup depend on objects that --clean replaces (the DETAIL above names them): drop them first, or restore into a new, empty database (--create with another name)"
    } else if stderr.contains("because other objects depend on it") {
        "\nhint: nothing was changed. Something in the target depends on an object the restore replaces (the DETAIL above names it): drop it first, or restore the whole backup into an empty database"
    } else if stderr.contains("violates foreign key constraint") {
        "\nhint: nothing was changed. Rows of another table point at rows that this backup's copy of the table lacks: restore that table too (one more --table), or remove those rows first"
    } else if stderr.contains("does not exist") {
        "\nhint: nothing was changed. The target lacks something these tables need: restore it too with --table, or restore the whole backup into an empty database"
    } else if stderr.contains("already exists") && !clean {
        "\nhint: the target already has this object; pass --clean to drop and replace it"
    } else {
        ""
    }
}

impl PostgresSource {
    fn would(&self, opts: &RestoreOptions, url: &DbUrl) -> String {
        format!(
            "would restore {} into {url}{}",
            self.name,
            if opts.clean {
                " (--clean: replacing the objects it contains)"
            } else {
                ""
            }
        )
    }

    async fn restore_whole(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
        url: &DbUrl,
        created: bool,
    ) -> Result<Vec<String>, SourceError> {
        // A dry run connects and checks what the restore would check.
        if !created {
            self.check_empty(opts, url).await?;
        }
        if opts.dry_run {
            return Ok(vec![self.would(opts, url)]);
        }
        self.apply_verified(archive, opts, url, None, None, 0).await?;
        Ok(Vec::new())
    }

    /// `--create`: create the target database when it does not exist. True when it was
    /// (or, in a dry run, would be) created: it is empty.
    async fn ensure_database(
        &self,
        url: &DbUrl,
        opts: &RestoreOptions,
        lines: &mut Vec<String>,
    ) -> Result<bool, SourceError> {
        let name = url.database();
        let admin = url.with_database("postgres");
        let exists = self
            .query(
                &admin,
                &[&format!(
                    "select 1 from pg_catalog.pg_database where datname = {}",
                    sql_literal(&name)
                )],
            )
            .await
            .map_err(|e| with_connect_hint(e, &admin))?;
        if !exists.is_empty() {
            return Ok(false);
        }
        if opts.dry_run {
            lines.push(format!("would create database \"{name}\" (--create)"));
            return Ok(true);
        }
        // A new, empty database stays if the restore is then stopped.
        crate::engine::commit_point();
        self.query(&admin, &[&format!("create database {}", quote_ident(&name))])
            .await
            .map_err(|e| with_connect_hint(e, &admin))?;
        lines.push(format!("created database \"{name}\""));
        Ok(true)
    }

    /// A whole-database restore goes into an empty database, or replaces with --clean
    /// (whose dry run says how many tables are there now).
    async fn check_empty(&self, opts: &RestoreOptions, url: &DbUrl) -> Result<(), SourceError> {
        if opts.clean {
            if opts.dry_run {
                self.tables_in(url).await?;
            }
            return Ok(());
        }
        let n = self.tables_in(url).await?.len();
        if n > 0 {
            return Err(SourceError::Refused(format!(
                "target database \"{}\" already has {n} table(s); restore into an empty database, or pass --clean to drop and replace the objects in the backup, or --table NAME to restore single tables",
                url.database()
            )));
        }
        Ok(())
    }

    /// Restore through `pg_restore -f -` (the SQL of the listed entries, or of all) piped
    /// into one psql transaction that is committed only once the archive has been read to
    /// its end and its size and sha256 checked: no byte of a corrupt or truncated object is
    /// ever committed, not even one that comes before the damage.
    ///
    /// - `wrap` given (selected tables): its `before` (our own `BEGIN`, and with `--clean`
    ///   the `DROP TABLE … CASCADE` of the replaced tables), the archive's SQL, then its
    ///   `after` (the live dependents re-created, `COMMIT`). The generator runs without
    ///   `--single-transaction`: such a list holds no large objects, the only entries for
    ///   which pg_restore writes a `BEGIN`/`COMMIT` of its own.
    /// - `None` (the whole archive, or all but excluded tables): the generator runs with
    ///   `--single-transaction`, so its script is its fixed preamble, `BEGIN`, every entry,
    ///   `COMMIT`, and a footer of a few hundred bytes (without it, large objects come in a
    ///   `BEGIN`/`COMMIT` pair of their own that would commit half the restore). Its `COMMIT`
    ///   cannot reach psql before the check: see [`HOLD_BACK`].
    ///
    /// Any failure (psql's, pg_restore's, the check's) ends psql's input without `COMMIT`:
    /// the server rolls everything back. Returns the first `keep` bytes of the archive, as
    /// read and checked in this pass.
    async fn apply_verified(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
        url: &DbUrl,
        list: Option<&std::path::Path>,
        wrap: Option<(&str, &str)>,
        keep: usize,
    ) -> Result<Vec<u8>, SourceError> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut sqlgen = self.command("pg_restore", url);
        sqlgen.arg("--file=-").stdin(Stdio::piped());
        if let Some(list) = list {
            sqlgen.arg("--use-list").arg(list);
        }
        if wrap.is_none() {
            sqlgen.arg("--single-transaction");
            // Selected tables are dropped by the caller's own statement (with CASCADE).
            if opts.clean {
                sqlgen.args(["--clean", "--if-exists"]);
            }
        }
        if opts.no_owner {
            sqlgen.args(["--no-owner", "--no-privileges"]);
        }
        let mut psql = self.command("psql", url);
        psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(url.conninfo())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        let data = archive.open().await?;
        let prefix = Arc::new(Mutex::new(Vec::new()));
        let kept = prefix.clone();
        let mut data = InspectReader::new(data, move |b: &[u8]| {
            if let Ok(mut p) = kept.lock()
                && p.len() < keep
            {
                let n = b.len().min(keep - p.len());
                p.extend_from_slice(&b[..n]);
            }
        });
        let mut sqlgen = sqlgen.spawn().map_err(|e| self.spawn_err("pg_restore", e))?;
        let mut psql = psql.spawn().map_err(|e| self.spawn_err("psql", e))?;
        let (Some(mut sqlgen_in), Some(mut sqlgen_out), Some(sqlgen_err)) =
            (sqlgen.stdin.take(), sqlgen.stdout.take(), sqlgen.stderr.take())
        else {
            return Err(SourceError::Protocol(
                "pg_restore started without pipes".into(),
            ));
        };
        let (Some(mut sql_in), Some(sql_err)) = (psql.stdin.take(), psql.stderr.take()) else {
            return Err(SourceError::Protocol("psql started without pipes".into()));
        };
        let sqlgen_err = drain_stderr(sqlgen_err);
        let sql_err = drain_stderr(sql_err);
        let (before, after) = wrap.unwrap_or(("", ""));
        // Set when the restore has failed anyway: reading the rest of the archive would
        // only waste a download.
        let abort = AtomicBool::new(false);
        let fed = async {
            let copied = super::copy_until_closed(&mut data, &mut sqlgen_in).await;
            drop(sqlgen_in);
            copied?;
            // pg_restore stops reading once its listed entries are done; the size and
            // sha256 check speaks only at the end of the stream: read the rest.
            super::read_to_end_unless(&mut data, &abort).await
        };
        let pump = async {
            let pumped = async {
                sql_in.write_all(before.as_bytes()).await?;
                hold_back_copy(&mut sqlgen_out, &mut sql_in, HOLD_BACK).await
            }
            .await;
            if pumped.is_err() {
                // psql stopped (its stderr says why): stop the generator too, or it would
                // wait forever for us to read its output.
                let _ = sqlgen.start_kill();
            }
            let generated = wait_child("pg_restore", sqlgen, sqlgen_err).await;
            if pumped.is_err() || generated.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            (pumped, generated)
        };
        let (fed, (pumped, generated)) = tokio::join!(fed, pump);
        if let (Ok(true), Ok(held), Ok(())) = (&fed, &pumped, &generated) {
            crate::engine::commit_point();
            // Checked: the rest of the SQL (with pg_restore's COMMIT) and our own.
            // A failed write shows in psql's exit status below.
            let _ = async {
                sql_in.write_all(held).await?;
                sql_in.write_all(after.as_bytes()).await
            }
            .await;
        }
        // Without COMMIT, psql's end of input rolls the transaction back.
        drop(sql_in);
        let applied = wait_child("psql", psql, sql_err).await;
        // A backup that could not be read or failed its check comes first: pg_restore and
        // psql failing on its truncated stream is only a consequence.
        if let Err(e) = fed {
            return Err(SourceError::io(
                "the backup could not be read to its end and checked, so nothing was committed (the target is unchanged)",
                e,
            ));
        }
        if let Err(e) = applied {
            return Err(with_hint(e, opts.clean, wrap.is_none()));
        }
        generated.map_err(|e| with_hint(e, opts.clean, wrap.is_none()))?;
        if let Err(e) = pumped {
            return Err(SourceError::io("feeding psql", e));
        }
        let header = prefix
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        Ok(header)
    }

    /// Run one query with psql and return its rows, fields split on U+001F.
    async fn query(&self, url: &DbUrl, sql: &[&str]) -> Result<Vec<Vec<String>>, SourceError> {
        let mut cmd = self.command("psql", url);
        // Unit and record separators: values (a view's definition) may hold newlines.
        cmd.args(["-X", "-q", "-A", "-t", "-F", "\u{1f}", "-R", "\u{1e}"])
            .args(["-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(url.conninfo());
        for s in sql {
            cmd.arg("-c").arg(s);
        }
        let out = cmd.output().await.map_err(|e| self.spawn_err("psql", e))?;
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: "psql".to_string(),
                status: super::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .split('\u{1e}')
            .map(|l| l.trim_end_matches('\n'))
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\u{1f}').map(str::to_string).collect())
            .collect())
    }

    /// Which of `needs` the target lacks.
    async fn missing_in(
        &self,
        url: &DbUrl,
        needs: &[toc::Needed],
    ) -> Result<Vec<toc::Needed>, SourceError> {
        let checks: Vec<String> = needs
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let present = match n.desc.as_str() {
                    "SEQUENCE" | "TABLE" => format!("to_regclass({}) is not null", sql_literal(&n.qualified())),
                    "TYPE" | "DOMAIN" => {
                        format!("to_regtype({}) is not null", sql_literal(&n.qualified()))
                    }
                    _ => format!(
                        "exists (select 1 from pg_catalog.pg_proc p join pg_catalog.pg_namespace s on s.oid = p.pronamespace where s.nspname = {} and p.proname = {})",
                        sql_literal(&n.schema),
                        sql_literal(&n.name)
                    ),
                };
                format!("({i}, {present})")
            })
            .collect();
        let sql = format!(
            "select i from (values {}) as x(i, present) where not present",
            checks.join(", ")
        );
        let rows = self.query(url, &[&sql]).await?;
        Ok(rows
            .iter()
            .filter_map(|r| r.first()?.parse::<usize>().ok())
            .filter_map(|i| needs.get(i).cloned())
            .collect())
    }

    /// After restoring tables: add back the archive's foreign keys of other tables that point
    /// at them, where that table exists and lacks the key (a `DROP TABLE … CASCADE` removed
    /// it). Each is applied by pg_restore itself from its TOC entry alone (`-L` with that
    /// one line), from `header`, the archive's header as read and checked by the restore:
    /// what runs is exactly pg_dump's statement for that key. Each on its own, in its own
    /// transaction: the restored tables and the other keys stay whatever happens. Returns
    /// the keys added and, for each that could not be, the reason and the statement.
    async fn readd_foreign_keys(
        &self,
        url: &DbUrl,
        fks: &[toc::ForeignKey],
        header: Vec<u8>,
    ) -> Result<(Vec<String>, Vec<String>), SourceError> {
        let (mut added, mut failed) = (Vec::new(), Vec::new());
        if fks.is_empty() {
            return Ok((added, failed));
        }
        let live = self.tables_in(url).await?;
        let existing = self
            .query(
                url,
                &["select n.nspname, r.relname, c.conname from pg_catalog.pg_constraint c \
                   join pg_catalog.pg_class r on r.oid = c.conrelid \
                   join pg_catalog.pg_namespace n on n.oid = r.relnamespace where c.contype = 'f'"],
            )
            .await?;
        let header = BytesArchive(header);
        // The entries were picked from a table of contents read before the restore; the
        // one applied must be the same line in the archive that was checked (a store
        // whose object changed between the two reads must not pick another entry).
        let checked_toc = match self.capture(&header, &["--list"]).await {
            Ok(toc) => toc,
            Err(e) => {
                failed.push(format!(
                    "- the foreign keys of other tables that point at the restored table(s): cannot read the table of contents of the backup as checked: {e}"
                ));
                return Ok((added, failed));
            }
        };
        for fk in fks {
            let table_there = live.contains(&toc::display_rel(&fk.schema, &fk.table_name));
            let key_there = existing
                .iter()
                .any(|r| r[..] == [fk.schema.clone(), fk.table_name.clone(), fk.name.clone()]);
            if !table_there || key_there {
                continue;
            }
            let label = format!("{} on {}", fk.name, fk.table);
            if !checked_toc.lines().any(|l| l == fk.entry) {
                failed.push(format!(
                    "- {label}: its entry {:?} is not in the table of contents of the backup as checked; restore it again, or add the key by hand",
                    fk.entry
                ));
                continue;
            }
            let list = list_file(&format!("{}\n", fk.entry))?;
            match self.restore_entries(&header, url, list.path()).await {
                Ok(()) => added.push(label),
                Err(SourceError::Failed { stderr, .. }) => {
                    let why = stderr
                        .lines()
                        .find(|l| l.contains("ERROR:") || l.contains("error:"))
                        .unwrap_or(stderr.as_str())
                        .trim()
                        .to_string();
                    let statement = self
                        .capture(&header, &["--file=-", "--use-list", &list.path().to_string_lossy()])
                        .await
                        .map(|sql| shown_statement(&sql))
                        .unwrap_or_else(|e| format!("(pg_restore could not print it: {e})"));
                    failed.push(format!("- {label}: {why}\n  {statement}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((added, failed))
    }

    /// `pg_restore -L list` of `archive` straight into the target, in one transaction.
    async fn restore_entries(
        &self,
        archive: &dyn Archive,
        url: &DbUrl,
        list: &std::path::Path,
    ) -> Result<(), SourceError> {
        let mut cmd = self.command("pg_restore", url);
        cmd.args(["--exit-on-error", "--single-transaction", "--use-list"])
            .arg(list)
            .arg("--dbname")
            .arg(url.conninfo())
            .stdin(Stdio::piped());
        let mut data = archive.open().await?;
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_restore", e))?;
        let (Some(stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "pg_restore started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        super::feed(&mut data, stdin, &mut child).await?;
        wait_child("pg_restore", child, stderr).await
    }
}

/// The statement(s) of `pg_restore -f -` output for messages, on one line: without its
/// comments, session settings and psql meta-commands. For display only; what runs is
/// always pg_restore's own output.
fn shown_statement(sql: &str) -> String {
    sql.lines()
        .map(str::trim)
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("--")
                || l.starts_with('\\')
                || l.starts_with("SET ")
                || l.starts_with("SELECT pg_catalog.set_config("))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn with_hint(e: SourceError, clean: bool, whole: bool) -> SourceError {
    hinted(e, |stderr| restore_hint(stderr, clean, whole).to_string())
}


/// A drill check's answer as psql gives it: one row, one boolean.
pub(crate) fn check_answer(rows: &[Vec<String>]) -> Result<bool, SourceError> {
    match rows {
        [row] if row.len() == 1 => match row[0].as_str() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(SourceError::Refused(format!(
                "the check returned {other:?}, not a boolean; write it to return true or false, e.g. select count(*) > 0 from orders"
            ))),
        },
        _ => Err(SourceError::Refused(format!(
            "the check returned {} row(s); it must return one boolean, e.g. select count(*) > 0 from orders",
            rows.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_mean_the_same_with_or_without_standard_strings() {
        assert_eq!(sql_literal("plain"), "E'plain'");
        assert_eq!(sql_literal("it's"), "E'it''s'");
        // A trailing backslash would escape the closing quote in a plain '…' literal when
        // standard_conforming_strings is off.
        assert_eq!(sql_literal("f\\"), "E'f\\\\'");
        assert_eq!(sql_literal("a\\'); drop table t; --"), "E'a\\\\''); drop table t; --'");
    }

    #[tokio::test]
    async fn hold_back_copy_keeps_the_tail() {
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        for hold in [0, 1, 10, 64 * 1024, 2_000_000] {
            let mut out = Vec::new();
            let held = hold_back_copy(&mut std::io::Cursor::new(data.clone()), &mut out, hold)
                .await
                .expect("copy");
            let cut = data.len().saturating_sub(hold);
            assert_eq!(out, data[..cut], "hold {hold}");
            assert_eq!(held, data[cut..], "hold {hold}");
        }
    }

    #[test]
    fn shown_statement_is_the_statement() {
        let sql = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc\n\nSET statement_timeout = 0;\n\
                   SELECT pg_catalog.set_config('search_path', '', false);\n\n\
                   --\n-- Name: c c_fkey; Type: FK CONSTRAINT; Schema: public; Owner: o\n--\n\n\
                   ALTER TABLE ONLY public.c\n    ADD CONSTRAINT c_fkey FOREIGN KEY (p) REFERENCES public.p(id);\n\n\
                   \\unrestrict abc\n";
        assert_eq!(
            shown_statement(sql),
            "ALTER TABLE ONLY public.c ADD CONSTRAINT c_fkey FOREIGN KEY (p) REFERENCES public.p(id);"
        );
    }
}
