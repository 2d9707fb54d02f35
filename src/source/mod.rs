//! Sources: the database engines, one folder each, and the files source (a directory tree,
//! handled file by file by the pipeline). The interface every engine implements is in
//! `crate::engine`; this module registers the engines and holds what their child processes
//! share: killed when dropped, stderr drained concurrently (a full stderr pipe would
//! otherwise stall the tool) and quoted in the error when the tool fails.

pub mod files;
pub mod url;

use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin};
use tokio::task::JoinHandle;

pub use crate::engine::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, Scratch, SourceError, SpawnReason,
};

/// Declares each engine's module (its folder) and lists it in `ENGINES`.
macro_rules! engines {
    ($($module:ident::$engine:ident),* $(,)?) => {
        $(pub mod $module;)*
        /// Every database engine, in the order `type` values are listed in messages.
        pub static ENGINES: &[&dyn Engine] = &[$(&$module::$engine),*];
    };
}

// Adding an engine: its folder `src/source/<engine>/` and one line here.
engines! {
    postgres::Postgres,
    mariadb::MariaDb,
    sqlite::Sqlite,
    redis::Redis,
    mongodb::MongoDb,
    command::Command,
}

/// The engine registered for a `type` value (or alias).
pub fn find(kind: &str) -> Option<&'static dyn Engine> {
    ENGINES
        .iter()
        .copied()
        .find(|e| e.kind() == kind || e.aliases().contains(&kind))
}

/// Every registered engine.
pub fn registered() -> &'static [&'static dyn Engine] {
    ENGINES
}

/// Every accepted `type` value of a database source, for messages.
pub fn kinds() -> Vec<&'static str> {
    ENGINES
        .iter()
        .flat_map(|e| std::iter::once(e.kind()).chain(e.aliases().iter().copied()))
        .collect()
}

/// Other engines that take a key, for "only valid for type = …" in a source's section.
pub fn owners_of(field: &str) -> Vec<&'static str> {
    ENGINES
        .iter()
        .filter(|e| e.keys().contains(&field))
        .map(|e| e.kind())
        .collect()
}

/// A source's section given as TOML, configured by the engine its `kind` names, as the
/// config reader would (for engines' unit tests, which cannot name that reader above them):
/// the database, or every problem found.
#[cfg(test)]
pub(crate) fn configure_section(
    kind: &str,
    toml: &str,
) -> Result<std::sync::Arc<dyn Database>, Vec<String>> {
    let values: figment::value::Dict = figment::Figment::from(
        <figment::providers::Toml as figment::providers::Format>::string(toml),
    )
    .extract()
    .map_err(|e| vec![e.to_string()])?;
    let mut problems = Vec::new();
    let mut section = crate::section::Section::new(
        "jobs.app.sources[0]".to_string(),
        "db".to_string(),
        values,
        &mut problems,
        &owners_of,
    );
    let db = find(kind).and_then(|e| e.configure(&mut section));
    match db {
        Some(db) if problems.is_empty() => Ok(db),
        _ => Err(problems),
    }
}

/// The `url` (+ `password_file`) pair of a networked engine's section: the password file
/// is read, the URL parsed by the engine, and a missing or bad URL reported with the
/// engine's example. `None` when there was a problem.
pub(crate) fn section_url<U>(
    section: &mut crate::section::Section<'_>,
    url: Option<&str>,
    password_file: Option<&std::path::Path>,
    parse: impl FnOnce(&str, Option<crate::secret::Secret>) -> Result<U, String>,
    engine: &str,
    required: &str,
) -> Option<U> {
    let password = password_file.and_then(|f| section.secret("password_file", f));
    match url.map(|u| parse(u, password)) {
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            section.problem("url", format!("invalid {engine} URL: {e}"));
            None
        }
        None => {
            section.problem("url", required);
            None
        }
    }
}

/// `bin_dir`, where an engine's tools are instead of PATH, must be a directory.
pub(crate) fn check_bin_dir(
    section: &mut crate::section::Section<'_>,
    dir: Option<&std::path::Path>,
    tool: &str,
) {
    if let Some(dir) = dir
        && !dir.is_dir()
    {
        section.problem(
            "bin_dir",
            format!("{dir:?} is not a directory; remove the key to use {tool} from PATH"),
        );
    }
}

/// The tables a source skips by default on restore: the job's `exclude_tables` followed by
/// the source's own, each name checked by the engine (`check`).
pub(crate) fn table_excludes(
    section: &mut crate::section::Section<'_>,
    own: Option<Vec<String>>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Vec<String> {
    let own = own.unwrap_or_default();
    for (n, t) in own.iter().enumerate() {
        if let Err(e) = check(t) {
            section.problem(&format!("exclude_tables[{n}]"), e);
        }
    }
    let job = section.job_exclude_tables();
    for (n, t) in job.iter().enumerate() {
        if let Err(e) = check(t) {
            section.job_exclude_problem(n, e);
        }
    }
    let mut all = job.clone();
    all.extend(own.into_iter().filter(|t| !job.contains(t)));
    all
}

/// Apply the job's nice/ionice to a child process, in the child between fork and exec.
pub(crate) fn lower_priority(cmd: &mut tokio::process::Command, p: crate::section::Priority) {
    if p == crate::section::Priority::default() {
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
                    crate::section::IoPriority::Idle => (3i64, 0i64),
                    crate::section::IoPriority::BestEffort(l) => (2, i64::from(l)),
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

/// Wait for a tool; its stderr on a clean exit, `Failed` quoting it otherwise.
pub(crate) async fn wait_child_stderr(
    tool: &str,
    mut child: Child,
    stderr: JoinHandle<String>,
) -> Result<String, SourceError> {
    let status: ExitStatus = child
        .wait()
        .await
        .map_err(|e| SourceError::io(format!("waiting for {tool}"), e))?;
    let text = stderr.await.unwrap_or_default();
    if status.success() {
        Ok(text)
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

/// Wait for a tool whose stderr, on success, is worth a warning.
pub(crate) async fn wait_child(
    tool: &str,
    child: Child,
    stderr: JoinHandle<String>,
) -> Result<(), SourceError> {
    let text = wait_child_stderr(tool, child, stderr).await?;
    if !text.is_empty() {
        tracing::warn!(tool, "{}", text);
    }
    Ok(())
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

/// A file only this user can read (created new: never through a link someone left), for
/// the settings of a scratch server.
pub(crate) fn write_private(path: &Path, content: &[u8]) -> Result<(), SourceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(content))
        .map_err(|e| SourceError::io(format!("cannot write {}", path.display()), e))
}

/// The end of a scratch server's log or output, as much as an error quotes (2 KiB).
pub(crate) fn log_tail(text: &str) -> String {
    const LOG_TAIL: usize = 2048;
    let t = text.trim();
    let mut start = t.len().saturating_sub(LOG_TAIL);
    while !t.is_char_boundary(start) {
        start += 1;
    }
    t[start..].to_string()
}

/// The error for a tool that could not be started: "not found" says what to install.
pub(crate) fn spawn_error(tool: &str, e: std::io::Error, install_hint: &str) -> SourceError {
    spawn_error_in(tool, e, None, install_hint)
}

/// [`spawn_error`] for a tool looked up in `bin_dir` when one is configured.
pub(crate) fn spawn_error_in(
    tool: &str,
    e: std::io::Error,
    bin_dir: Option<&Path>,
    install_hint: &str,
) -> SourceError {
    let reason = if e.kind() == std::io::ErrorKind::NotFound {
        let place = bin_dir
            .map(|d| format!("in {}", d.display()))
            .unwrap_or_else(|| "on PATH".to_string());
        SpawnReason::Missing {
            hint: format!("{tool} not found {place}; {install_hint}"),
            source: Some(e),
        }
    } else {
        SpawnReason::Os(e)
    };
    SourceError::Spawn {
        tool: tool.to_string(),
        reason,
    }
}

/// Standard settings for an engine's child process: no terminal input unless piped
/// later, output piped, killed when dropped (a cancelled run must not leave a dump
/// running), and the job's priority.
pub(crate) fn tool_command(
    program: impl AsRef<std::ffi::OsStr>,
    priority: crate::section::Priority,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(program);
    lower_priority(&mut cmd, priority);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A dump tool's stdout.
pub(crate) type DumpReader = Box<dyn AsyncRead + Send + Unpin>;
/// Resolves when the tool exits: `Ok` only for a clean exit.
pub(crate) type ExitFuture = futures::future::BoxFuture<'static, Result<(), SourceError>>;

/// Spawn a dump tool whose stdout is the backup: the reader is its stdout, `finish` its
/// exit status (with stderr quoted on failure).
pub(crate) fn spawn_dump(
    tool: &str,
    mut cmd: tokio::process::Command,
    install_hint: &str,
) -> Result<(DumpReader, ExitFuture), SourceError> {
    use futures::FutureExt;
    let mut child = cmd
        .spawn()
        .map_err(|e| spawn_error(tool, e, install_hint))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SourceError::Protocol(format!(
            "{tool} started without pipes"
        )));
    };
    let stderr = drain_stderr(stderr);
    let tool = tool.to_string();
    Ok((
        Box::new(stdout),
        async move { wait_child(&tool, child, stderr).await }.boxed(),
    ))
}

/// Copy a backup stream into a restore tool's stdin. A read error kills the tool before
/// its stdin is closed, so it can never take a truncated stream for a complete one (and
/// commit it); a tool that stops reading is left to report why through its exit status.
pub(crate) async fn feed(
    data: &mut (dyn AsyncRead + Send + Unpin),
    stdin: ChildStdin,
    child: &mut Child,
) -> Result<(), SourceError> {
    let mut stdin = stdin;
    if let Err(e) = copy_until_closed(data, &mut stdin).await {
        let _ = child.kill().await;
        return Err(SourceError::io("reading the backup", e));
    }
    drop(stdin);
    Ok(())
}

/// Copy `data` into a tool's stdin until `data` ends or the tool stops reading. Only a
/// failed read is an error: a tool may stop early on purpose (pg_restore, once the entries
/// it was told to restore are behind it; its exit status says whether that was success),
/// but a backup that cannot be read, or fails its checksum, must stop the restore.
pub(crate) async fn copy_until_closed(
    data: &mut (impl AsyncRead + Unpin + ?Sized),
    to: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = data.read(&mut buf).await?;
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return Ok(());
        }
    }
}

/// Read `data` to its end, discarding it: a restore tool that stopped reading early leaves
/// the end of the stream unread, and the size and sha256 check of a stored object
/// (`codec::Verify`) speaks only there. `Ok(true)` once the end was reached (and checked),
/// `Ok(false)` when `abort` was set first (the restore has failed anyway: the rest need not
/// be downloaded), an error when reading failed.
pub(crate) async fn read_to_end_unless(
    data: &mut (impl AsyncRead + Unpin + ?Sized),
    abort: &std::sync::atomic::AtomicBool,
) -> std::io::Result<bool> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        if abort.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        if data.read(&mut buf).await? == 0 {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    /// The OS's error is kept as the source, and the message reads as it did when the
    /// reason was only text.
    #[test]
    fn spawn_errors_keep_the_os_error() {
        let e = spawn_error(
            "pg_dump",
            std::io::Error::from(std::io::ErrorKind::NotFound),
            "install it",
        );
        assert_eq!(
            e.to_string(),
            "cannot start pg_dump: pg_dump not found on PATH; install it"
        );
        let io = e
            .source()
            .and_then(|r| r.source())
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .expect("the io::Error is the reason's source");
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);

        let os = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let text = os.to_string();
        let e = spawn_error("pg_dump", os, "install it");
        assert_eq!(e.to_string(), format!("cannot start pg_dump: {text}"));
        assert!(
            e.source()
                .and_then(|r| r.source())
                .is_some_and(|s| s.is::<std::io::Error>())
        );
    }

    /// A lost server reads as the `Failed` it was built as before, with the error as source.
    #[test]
    fn a_lost_server_reads_as_a_failed_one() {
        for ended in [Some("exit code 1".to_string()), None] {
            let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
            let why = format!("INFO keyspace: {io}");
            let failed = SourceError::Failed {
                tool: "redis-server".into(),
                status: match &ended {
                    Some(s) => format!("{why}; {s}"),
                    None => why,
                },
                stderr: "no output".into(),
            };
            let lost = SourceError::Lost(Box::new(crate::engine::ServerLost {
                tool: "redis-server".into(),
                asking: "INFO keyspace".into(),
                source: io,
                ended,
                stderr: "no output".into(),
            }));
            assert_eq!(lost.to_string(), failed.to_string());
            assert!(lost.source().is_some_and(|s| s.is::<std::io::Error>()));
        }
    }

    #[test]
    fn internal_errors_read_as_context_and_source() {
        let bad = hex::decode("zz").expect_err("not hex");
        let text = bad.to_string();
        let e = SourceError::internal("bad hex \"zz\" from the server", bad);
        assert_eq!(
            e.to_string(),
            format!("bad hex \"zz\" from the server: {text}")
        );
        assert!(e.source().is_some_and(|s| s.is::<hex::FromHexError>()));
    }
}
