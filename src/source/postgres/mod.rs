//! PostgreSQL through its own tools: `pg_dump --format=custom --compress=0` streamed out
//! (stowage compresses; pg_dump's own compression would be redundant work), and
//! `pg_restore` fed from a stream. The archive is a standard custom-format dump, so
//! `zstd -d < db.pgdump.zst | pg_restore -d …` restores it without stowage.

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
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, SourceError, drain_stderr,
    wait_child,
};
use crate::config::{Priority, Section};

const URL: UrlSpec = UrlSpec {
    engine: "postgres",
    schemes: &["postgres", "postgresql"],
    example: "postgres://user@host:5432/dbname",
    database_required: true,
};

/// The archive's header (TOC and schema) comes first in a custom-format dump; keeping this
/// much of the stream lets `pg_restore --list` read what the dump holds without a second
/// pass. A schema bigger than this only loses the object list in the manifest.
const HEADER_KEEP: usize = 4 * 1024 * 1024;

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
}

impl Engine for Postgres {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::config::serde_fields::<RawPostgres>()
    }

    fn has_tables(&self) -> bool {
        true
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawPostgres = section.parse()?;
        let mark = section.mark();
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
        let reason = if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "{tool} not found{}; install the PostgreSQL client tools (at least the server's major version) or set bin_dir",
                self.bin_dir
                    .as_ref()
                    .map(|d| format!(" in {}", d.display()))
                    .unwrap_or_else(|| " on PATH".to_string())
            )
        } else {
            e.to_string()
        };
        SourceError::Spawn {
            tool: tool.to_string(),
            reason,
        }
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
        }
    }

    /// Run `pg_restore ARGS` on a fresh stream of the archive and return its output. Used
    /// for the table of contents and the schema, which pg_restore prints after reading
    /// only the archive's header: it exits early and the rest is never downloaded.
    async fn capture(&self, archive: &dyn Archive, args: &[&str]) -> Result<String, SourceError> {
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
        loop {
            match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    if stdin.write_all(&buf[..n]).await.is_err() {
                        break; // it has read what it needs
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
            .map_err(|e| SourceError::Protocol(format!("pg_restore output: {e}")))?
            .map_err(|e| SourceError::io("reading pg_restore's output", e))?;
        wait_child("pg_restore", child, stderr).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// User tables of a live database ("schema.name"), to refuse restoring over data and
    /// for the healer's presence checks.
    async fn tables_in(&self, url: &DbUrl) -> Result<Vec<String>, SourceError> {
        let mut cmd = self.command("psql", url);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(url.conninfo())
            .arg("-c")
            .arg(
                "select n.nspname || '.' || c.relname from pg_catalog.pg_class c \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind in ('r','p') \
                 and n.nspname not in ('pg_catalog','information_schema') \
                 and n.nspname not like 'pg_toast%' order by 1",
            );
        let out = cmd.output().await.map_err(|e| self.spawn_err("psql", e))?;
        if !out.status.success() {
            return Err(SourceError::Refused(format!(
                "cannot connect to target {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
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

    /// As `pg_dump -t` reads them: unquoted parts fold to lower case.
    fn same_object(&self, a: &str, b: &str) -> bool {
        matches!((TableName::parse(a), TableName::parse(b)), (Ok(x), Ok(y)) if x == y)
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
                let url = parse_target(t).map_err(SourceError::Refused)?;
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
        let url = self.own_url()?;
        let mut cmd = self.command("pg_dump", url);
        cmd.args(["--format=custom", "--compress=0", "--dbname"])
            .arg(url.conninfo());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_dump", e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "pg_dump started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        let header = Arc::new(Mutex::new(Vec::new()));
        let keep = header.clone();
        let reader = InspectReader::new(stdout, move |b: &[u8]| {
            if let Ok(mut h) = keep.lock()
                && h.len() < HEADER_KEEP
            {
                let n = b.len().min(HEADER_KEEP - h.len());
                h.extend_from_slice(&b[..n]);
            }
        });
        // The header is read after the dump, by this source's own pg_restore.
        let me = self.clone();
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                wait_child("pg_dump", child, stderr).await?;
                let header = header
                    .lock()
                    .map(|mut h| std::mem::take(&mut *h))
                    .unwrap_or_default();
                Ok(me.header_info(header).await)
            }
            .boxed(),
        })
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let url = parse_target(&opts.target)
            .map_err(|e| SourceError::Refused(format!("invalid --to URL: {e}")))?;
        let mut lines = Vec::new();
        let parse = |names: &[String]| -> Result<Vec<TableName>, SourceError> {
            names
                .iter()
                .map(|t| TableName::parse(t).map_err(SourceError::Refused))
                .collect()
        };
        let selection = Selection {
            include: parse(&opts.tables)?,
            exclude: parse(&opts.exclude_tables)?,
        };
        let selective = !selection.include.is_empty() || !selection.exclude.is_empty();
        let mut list_file = None;
        if selective {
            // Both read only the archive's header: cheap even for a big dump.
            let toc = self.capture(archive, &["--list"]).await?;
            let schema = self
                .capture(archive, &["--schema-only", "--file=-"])
                .await?;
            let filtered = toc::filter(&toc, &schema, &selection);
            let unmatched_includes: Vec<&String> = filtered
                .unmatched
                .iter()
                .filter(|u| selection.include.iter().any(|t| t.to_string() == **u))
                .collect();
            if !unmatched_includes.is_empty() || filtered.tables.is_empty() {
                let all = toc::filter(&toc, &schema, &Selection::default());
                return Err(SourceError::Refused(format!(
                    "{}; tables in this backup: {}",
                    if unmatched_includes.is_empty() {
                        "no table left to restore".to_string()
                    } else {
                        format!(
                            "table(s) not in this backup: {}",
                            unmatched_includes
                                .iter()
                                .map(|s| s.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    },
                    all.tables.join(", ")
                )));
            }
            for u in filtered
                .unmatched
                .iter()
                .filter(|u| !unmatched_includes.contains(u))
            {
                tracing::warn!("excluded table {u} is not in this backup");
            }
            if selection.include.is_empty() {
                lines.push(format!(
                    "{}: {} table(s); skipped: {}",
                    self.name,
                    filtered.tables.len(),
                    if filtered.skipped.is_empty() {
                        "none".to_string()
                    } else {
                        filtered.skipped.join(", ")
                    }
                ));
            } else {
                lines.push(format!(
                    "{}: only table(s) {}",
                    self.name,
                    filtered.tables.join(", ")
                ));
            }
            if !filtered.dropped.is_empty() {
                lines.push(format!(
                    "{}: left out because they need a table that is not restored: {}",
                    self.name,
                    filtered.dropped.join("; ")
                ));
            }
            let mut f = tempfile::Builder::new()
                .prefix("stowage-restore-")
                .suffix(".list")
                .tempfile()
                .map_err(|e| SourceError::io("cannot create the restore list", e))?;
            std::io::Write::write_all(&mut f, filtered.list.as_bytes())
                .map_err(|e| SourceError::io("cannot write the restore list", e))?;
            list_file = Some(f);
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
        // A whole-database restore goes into an empty database (or replaces with --clean);
        // selected tables go into an existing one, where pg_restore itself refuses to
        // overwrite a table that exists (unless --clean).
        if !opts.clean && selection.include.is_empty() {
            let n = self.tables_in(&url).await?.len();
            if n > 0 {
                return Err(SourceError::Refused(format!(
                    "target database \"{}\" already has {n} table(s); restore into an empty database, or pass --clean to drop and replace the objects in the backup, or --table NAME to restore single tables",
                    url.database()
                )));
            }
        }
        let mut cmd = self.command("pg_restore", &url);
        // One transaction: a restore that fails half-way leaves the target as it was.
        cmd.args(["--exit-on-error", "--single-transaction", "--dbname"])
            .arg(url.conninfo())
            .stdin(Stdio::piped());
        if let Some(f) = &list_file {
            cmd.arg("--use-list").arg(f.path());
        }
        if opts.clean {
            cmd.args(["--clean", "--if-exists"]);
        }
        if opts.no_owner {
            cmd.args(["--no-owner", "--no-privileges"]);
        }
        let mut data = archive.open().await?;
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_restore", e))?;
        let (Some(mut stdin), Some(stderr)) = (child.stdin.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "pg_restore started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        let mut buf = vec![0u8; 256 * 1024];
        let mut copy_err = None;
        loop {
            let n = match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    copy_err = Some(SourceError::io("reading the backup", e));
                    break;
                }
            };
            if stdin.write_all(&buf[..n]).await.is_err() {
                // pg_restore stopped reading: its exit status and stderr say why.
                break;
            }
        }
        if let Some(e) = copy_err {
            // Kill before closing stdin, so pg_restore cannot commit a truncated archive.
            let mut child = child;
            let _ = child.kill().await;
            return Err(e);
        }
        drop(stdin);
        wait_child("pg_restore", child, stderr)
            .await
            .map_err(|e| match e {
                SourceError::Failed {
                    tool,
                    status,
                    stderr,
                } => {
                    let hint = if stderr.contains("role \"") && stderr.contains("does not exist") {
                        "\nhint: the target lacks the backup's roles; retry with --no-owner"
                    } else if stderr.contains("already exists") && !opts.clean {
                        "\nhint: the target already has this object; pass --clean to drop and replace it"
                    } else {
                        ""
                    };
                    SourceError::Failed {
                        tool,
                        status,
                        stderr: format!("{stderr}{hint}"),
                    }
                }
                other => other,
            })?;
        Ok(lines)
    }
}
