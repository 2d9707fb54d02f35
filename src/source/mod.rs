//! Sources produce a backup as a byte stream and restore from one. Each source runs an
//! external tool (pg_dump, pg_restore) as a child process: killed when dropped, its stderr
//! drained concurrently (a full stderr pipe would otherwise stall the tool) and quoted in
//! the error when it fails.

pub mod files;
pub mod pg_toc;
pub mod postgres;

use std::process::ExitStatus;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr};
use tokio::task::JoinHandle;

use crate::config::PostgresConfig;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot start {tool}: {reason}")]
    Spawn { tool: String, reason: String },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Io(String),
}

/// A running dump: read `reader` to the end, then await `finish` to learn whether the
/// bytes read are a complete, valid dump (the tool's exit status).
pub struct Dump {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub finish: BoxFuture<'static, Result<(), SourceError>>,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Target (a postgres URL for database sources).
    pub target: String,
    /// Replace existing objects instead of refusing a non-empty target.
    pub clean: bool,
    /// Do not restore ownership (needed when the target lacks the original roles).
    pub no_owner: bool,
    /// Restore only these tables ("name" or "schema.name"), into an existing database.
    pub tables: Vec<String>,
    /// Leave these tables out.
    pub exclude_tables: Vec<String>,
    /// Say what would be restored; change nothing.
    pub dry_run: bool,
}

/// A stored archive that can be read from its start more than once (selective restore
/// reads the table of contents before the data). Each stream is decompressed and checked.
#[async_trait]
pub trait Archive: Send + Sync {
    async fn open(&self) -> Result<Box<dyn AsyncRead + Send + Unpin>, SourceError>;
}

#[async_trait]
pub trait Source: Send + Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> &'static str;
    /// File extension of the uncompressed stream, e.g. "pgdump".
    fn extension(&self) -> &'static str;
    /// What the uncompressed stream is, for the manifest and the README's by-hand restore.
    fn format(&self) -> &'static str;
    /// Tool name and version, recorded in the manifest.
    async fn tool_version(&self) -> Result<(String, String), SourceError>;
    async fn dump(&self) -> Result<Dump, SourceError>;
    /// Restore from the archive; returns lines describing what was (or, in a dry run,
    /// would be) restored.
    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError>;
}

/// Database sources stream; a files source is handled file by file by the pipeline.
pub fn postgres(cfg: &PostgresConfig) -> Box<dyn Source> {
    Box::new(postgres::Postgres::new(cfg.clone()))
}

/// Apply the job's nice/ionice to a child process, in the child between fork and exec.
pub(crate) fn lower_priority(cmd: &mut tokio::process::Command, p: crate::config::Priority) {
    if p == crate::config::Priority::default() {
        return;
    }
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls; it touches no memory shared with the parent.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(n) = p.nice {
                libc::setpriority(libc::PRIO_PROCESS, 0, n);
            }
            if let Some(io) = p.io {
                // ioprio_set(IOPRIO_WHO_PROCESS, 0, class << 13 | level)
                let (class, level) = match io {
                    crate::config::IoPriority::Idle => (3i64, 0i64),
                    crate::config::IoPriority::BestEffort(l) => (2, i64::from(l)),
                };
                libc::syscall(libc::SYS_ioprio_set, 1i64, 0i64, (class << 13) | level);
            }
            // Best effort: a refused priority change must not stop the backup.
            Ok(())
        });
    }
}

/// Keep the last `STDERR_LIMIT` bytes of a child's stderr: the end of it is where tools
/// say why they failed, and an unbounded buffer could grow without limit.
const STDERR_LIMIT: usize = 16 * 1024;

pub(crate) fn drain_stderr(stderr: ChildStderr) -> JoinHandle<String> {
    tokio::spawn(async move {
        let mut stderr = stderr;
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > STDERR_LIMIT {
                        kept.drain(..kept.len() - STDERR_LIMIT);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    })
}

pub(crate) async fn wait_child(
    tool: &str,
    mut child: Child,
    stderr: JoinHandle<String>,
) -> Result<(), SourceError> {
    let status: ExitStatus = child
        .wait()
        .await
        .map_err(|e| SourceError::Io(format!("waiting for {tool}: {e}")))?;
    let text = stderr.await.unwrap_or_default();
    if status.success() {
        if !text.is_empty() {
            tracing::warn!(tool, "{}", text);
        }
        Ok(())
    } else {
        Err(SourceError::Failed {
            tool: tool.to_string(),
            status: describe_status(status),
            stderr: if text.is_empty() {
                "no error output".to_string()
            } else {
                text
            },
        })
    }
}

pub(crate) fn describe_status(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exit code {c}"),
        None => "unknown exit status".to_string(),
    }
}
