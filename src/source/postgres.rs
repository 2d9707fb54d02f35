//! PostgreSQL through its own tools: `pg_dump --format=custom --compress=0` streamed out
//! (stowage compresses; pg_dump's own compression would be redundant work), and
//! `pg_restore` fed from a stream. The archive is a standard custom-format dump, so
//! `zstd -d < db.pgdump.zst | pg_restore -d …` restores it without stowage.

use std::path::PathBuf;
use std::process::Stdio;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::pg_toc::{self, Selection, TableName};
use super::{Archive, Dump, RestoreOptions, Source, SourceError, drain_stderr, wait_child};
use crate::config::{PgUrl, PostgresConfig};

pub struct Postgres {
    cfg: PostgresConfig,
}

impl Postgres {
    pub fn new(cfg: PostgresConfig) -> Self {
        Postgres { cfg }
    }

    fn tool(&self, name: &str) -> PathBuf {
        match &self.cfg.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    fn command(&self, tool: &str, url: &PgUrl) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        super::lower_priority(&mut cmd, self.cfg.priority);
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
                self.cfg
                    .bin_dir
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
            return Err(SourceError::Io("pg_restore started without pipes".into()));
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
                    return Err(SourceError::Io(format!("reading the backup: {e}")));
                }
            }
        }
        drop(stdin);
        drop(data);
        let out = reader
            .await
            .map_err(|e| SourceError::Io(format!("pg_restore output: {e}")))?
            .map_err(|e| SourceError::Io(format!("pg_restore output: {e}")))?;
        wait_child("pg_restore", child, stderr).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Number of user tables in the target database, to refuse restoring over data.
    async fn count_tables(&self, url: &PgUrl) -> Result<u64, SourceError> {
        let mut cmd = self.command("psql", url);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--dbname"])
            .arg(url.conninfo())
            .arg("-c")
            .arg(
                "select count(*) from pg_catalog.pg_class c \
                 join pg_catalog.pg_namespace n on n.oid = c.relnamespace \
                 where c.relkind in ('r','p') \
                 and n.nspname not in ('pg_catalog','information_schema') \
                 and n.nspname not like 'pg_toast%'",
            );
        let out = cmd.output().await.map_err(|e| self.spawn_err("psql", e))?;
        if !out.status.success() {
            return Err(SourceError::Refused(format!(
                "cannot connect to target {url}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim()
            .parse()
            .map_err(|_| SourceError::Io(format!("unexpected psql output: {text:?}")))
    }
}

#[async_trait]
impl Source for Postgres {
    fn name(&self) -> &str {
        &self.cfg.name
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
        let mut cmd = self.command("pg_dump", &self.cfg.url);
        cmd.args(["--format=custom", "--compress=0", "--dbname"])
            .arg(self.cfg.url.conninfo());
        let mut child = cmd.spawn().map_err(|e| self.spawn_err("pg_dump", e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Io("pg_dump started without pipes".into()));
        };
        let stderr = drain_stderr(stderr);
        Ok(Dump {
            reader: Box::new(stdout),
            finish: wait_child("pg_dump", child, stderr).boxed(),
        })
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let url = PgUrl::from_target(&opts.target)
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
            let filtered = pg_toc::filter(&toc, &schema, &selection);
            let unmatched_includes: Vec<&String> = filtered
                .unmatched
                .iter()
                .filter(|u| selection.include.iter().any(|t| t.to_string() == **u))
                .collect();
            if !unmatched_includes.is_empty() || filtered.tables.is_empty() {
                let all = pg_toc::filter(&toc, &schema, &Selection::default());
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
                    self.cfg.name,
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
                    self.cfg.name,
                    filtered.tables.join(", ")
                ));
            }
            if !filtered.dropped.is_empty() {
                lines.push(format!(
                    "{}: left out because they need a table that is not restored: {}",
                    self.cfg.name,
                    filtered.dropped.join("; ")
                ));
            }
            let mut f = tempfile::Builder::new()
                .prefix("stowage-restore-")
                .suffix(".list")
                .tempfile()
                .map_err(|e| SourceError::Io(format!("cannot create the restore list: {e}")))?;
            std::io::Write::write_all(&mut f, filtered.list.as_bytes())
                .map_err(|e| SourceError::Io(format!("cannot write the restore list: {e}")))?;
            list_file = Some(f);
        }
        if opts.dry_run {
            lines.push(format!(
                "would restore {} into {url}{}",
                self.cfg.name,
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
            let n = self.count_tables(&url).await?;
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
            return Err(SourceError::Io("pg_restore started without pipes".into()));
        };
        let stderr = drain_stderr(stderr);
        let mut buf = vec![0u8; 256 * 1024];
        let mut copy_err = None;
        loop {
            let n = match data.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    copy_err = Some(SourceError::Io(format!("reading the backup: {e}")));
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
