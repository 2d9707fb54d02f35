//! Restore drills for PostgreSQL in physical mode. The drill's `to` is a directory; each
//! drill makes a private directory in it (mode 0700, a fresh name) holding the scratch data
//! directory (`data`), the server's socket directory (`run`) and its log. The newest base
//! backup is restored into `data` with recovery to the newest archived WAL (the server's
//! `restore_command` is `stowage wal-fetch`, the path a real recovery takes), then a
//! `postgres` of its own is started on it. Once recovery has ended the drill checks the
//! server replayed at least to the point the drill asked for ([`ScratchSpace::expect_replay`]),
//! counts every table's rows in every database, and runs the checks.
//!
//! The scratch server is walled off from the world and from the source: it listens on no
//! TCP port (only a unix socket inside the private directory, whose `pg_hba.conf` admits
//! only socket connections), never archives, never connects to a primary, and every
//! setting that runs a command or loads a library is cleared on its command line, which
//! wins over the `postgresql.auto.conf` the base backup carries (whoever can run ALTER
//! SYSTEM on the source must not get a command run by the drill). The source's own
//! `postgresql.conf` is not read at all: the server gets an empty one of the drill's.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::process::{Child, Command};

use super::PhysicalPostgres;
use crate::engine::{Scratch, ScratchSpace, SourceError, SpawnReason};
use crate::source::{log_tail as tail, write_private};

const SERVER: &str = "postgres";
const SERVER_HINT: &str = "a physical drill starts its own PostgreSQL server on the restored data directory: install the PostgreSQL server of the source's major version (Debian/Ubuntu: package postgresql-15; Alpine: package postgresql15; the stowage image carries only the client tools) or set bin_dir to the directory holding postgres";
const ROOT_REFUSED: &str = "a physical drill starts a scratch PostgreSQL server, which refuses to run as root, and stowage does not hand the restore (its config, secrets and the server's restore_command) to another user; run the drill as an unprivileged user (the stowage image's default user), e.g. runuser -u postgres -- stowage drill JOB with the config readable by that user";
/// The socket's port number: only names the socket file in the private directory.
const PORT: u16 = 5432;
/// Until the server has replayed the archive and opened (a day of WAL takes a while).
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(6 * 3600);
/// A fast shutdown, before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a postgres of each major version is commonly installed, newest first.
fn usual_places() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for root in ["/usr/lib/postgresql", "/usr/pgsql-", "/usr/local/pgsql"] {
        if root.ends_with('-') {
            for v in (10..=30).rev() {
                dirs.push(PathBuf::from(format!("{root}{v}/bin")));
            }
        } else if root == "/usr/lib/postgresql" {
            for v in (10..=30).rev() {
                dirs.push(PathBuf::from(format!("{root}/{v}/bin")));
            }
        } else {
            dirs.push(PathBuf::from(format!("{root}/bin")));
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The `postgres` programs a drill may start: the one in `bin_dir` only, when set;
/// otherwise each one in the usual places, newest major version first.
fn candidates(bin_dir: Option<&Path>) -> Vec<PathBuf> {
    match bin_dir {
        Some(d) => vec![d.join(SERVER)].into_iter().filter(|p| is_executable(p)).collect(),
        None => usual_places()
            .into_iter()
            .map(|d| d.join(SERVER))
            .filter(|p| is_executable(p))
            .collect(),
    }
}

/// "postgres (PostgreSQL) 15.18 (Debian 15.18-1)" → "15"; "9.6.24" → "9.6".
fn major_of(version_line: &str) -> Option<String> {
    let v = version_line
        .split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))?;
    let mut parts = v.split('.');
    let first = parts.next()?;
    let first: String = first.chars().take_while(char::is_ascii_digit).collect();
    if first.is_empty() {
        return None;
    }
    if first.parse::<u32>().ok()? < 10 {
        let second: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
        return Some(format!("{first}.{second}"));
    }
    Some(first)
}

/// A value in a libpq connection string, quoted.
fn conninfo_value(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A path as one element of a list setting (`unix_socket_directories`) given with `-c`,
/// where the value is taken verbatim: double quotes keep a comma or space in the path.
fn list_quote(v: &str) -> String {
    format!("\"{}\"", v.replace('"', "\"\""))
}

/// What `to` must be for a physical drill: an absolute directory path (the private scratch
/// is made inside it), never a URL. Shared with config validation.
pub fn check_drill_dir(to: &str) -> Result<(), String> {
    if to.contains("://") {
        return Err(format!(
            "\"{}\" is a URL; a physical drill starts its own scratch PostgreSQL server: give a directory for its private scratch data directory, e.g. to = \"/var/tmp\"",
            crate::source::url::redact(to)
        ));
    }
    if !to.starts_with('/') {
        return Err(format!(
            "\"{}\" is not an absolute path; give a directory for the drill's private scratch data directory, e.g. to = \"/var/tmp\"",
            to.escape_debug()
        ));
    }
    if to.contains('\0') {
        return Err(format!("\"{}\" holds a NUL byte", to.escape_debug()));
    }
    Ok(())
}

#[async_trait]
impl Scratch for PhysicalPostgres {
    /// The drill writes only into a directory of its own inside `to`, and `to` itself is
    /// refused when it is a data directory ([`Scratch::space`]); the source's server is
    /// never connected to by the drill.
    fn is_own_database(&self, _target: &str) -> bool {
        false
    }

    fn noun(&self) -> &'static str {
        "server"
    }

    /// Ownership is the data directory's, not something a base backup restores.
    fn restores_without_owners(&self) -> bool {
        false
    }

    fn check_to(&self, to: &str) -> Option<Result<(), String>> {
        Some(check_drill_dir(to))
    }

    async fn space<'a>(&'a self, to: &str) -> Result<Box<dyn ScratchSpace + 'a>, SourceError> {
        check_drill_dir(to).map_err(SourceError::Refused)?;
        if rustix::process::geteuid().is_root() {
            return Err(SourceError::Refused(ROOT_REFUSED.to_string()));
        }
        for marker in ["PG_VERSION", "postmaster.pid"] {
            if std::fs::symlink_metadata(Path::new(to).join(marker)).is_ok() {
                return Err(SourceError::Refused(format!(
                    "{to} holds {marker}: it is a PostgreSQL data directory, which a drill never touches; give a directory for the drill's private scratch data directory, e.g. to = \"/var/tmp\""
                )));
            }
        }
        // Before anything is made: the clearest error when no server can be started.
        let programs = candidates(self.bin_dir.as_deref());
        if programs.is_empty() {
            let place = match &self.bin_dir {
                Some(d) => format!("not found in bin_dir {}", d.display()),
                None => "not found in /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, /usr/local/pgsql/bin or on PATH".to_string(),
            };
            return Err(SourceError::Spawn {
                tool: SERVER.to_string(),
                reason: SpawnReason::missing(format!("{SERVER} {place}; {SERVER_HINT}")),
            });
        }
        let dir = crate::engine::scratch_dir(to)?;
        let data = dir.path().join("data");
        let target = data.to_str().map(str::to_string).ok_or_else(|| {
            SourceError::Refused(format!(
                "{} is not valid UTF-8; give a drill directory whose path is",
                dir.path().display()
            ))
        })?;
        let database = match self.url.database() {
            d if d.is_empty() => "postgres".to_string(),
            d => d,
        };
        Ok(Box::new(PhysicalScratch {
            programs,
            login: self.url.user().unwrap_or_else(|| "postgres".to_string()),
            database,
            dir: Some(dir),
            target,
            server: None,
            goal: None,
            reached: None,
        }))
    }
}

struct PhysicalScratch {
    programs: Vec<PathBuf>,
    /// A role the restored cluster has (the source's replication user), to find its
    /// bootstrap superuser with.
    login: String,
    /// Where the checks run: the database the source's URL names.
    database: String,
    dir: Option<tempfile::TempDir>,
    target: String,
    server: Option<Running>,
    goal: Option<(u64, String)>,
    reached: Option<String>,
}

/// The scratch server, killed when dropped.
struct Running {
    child: Child,
    data: PathBuf,
    psql: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// The cluster's bootstrap superuser, who reads every table.
    superuser: String,
}

impl PhysicalScratch {
    fn dir(&self) -> Result<&Path, SourceError> {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .ok_or_else(|| SourceError::Protocol("the scratch directory is gone".into()))
    }

    /// The server for the restored data directory's major version.
    async fn program(&self, data: &Path) -> Result<PathBuf, SourceError> {
        let want = std::fs::read_to_string(data.join("PG_VERSION"))
            .map_err(|e| {
                SourceError::io(
                    format!(
                        "cannot read {}/PG_VERSION (the restored base backup's)",
                        data.display()
                    ),
                    e,
                )
            })?
            .trim()
            .to_string();
        let mut found = Vec::new();
        for p in &self.programs {
            let out = Command::new(p)
                .arg("--version")
                .stdin(Stdio::null())
                .kill_on_drop(true)
                .output()
                .await;
            let Ok(out) = out else { continue };
            let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if major_of(&line).as_deref() == Some(want.as_str()) {
                return Ok(p.clone());
            }
            found.push(format!("{} ({line})", p.display()));
        }
        Err(SourceError::Spawn {
            tool: SERVER.to_string(),
            reason: SpawnReason::missing(format!(
                "the base backup is of PostgreSQL {want}, and no postgres of that major version was found (found: {}); {SERVER_HINT}",
                found.join(", ")
            )),
        })
    }

    /// Start the server on the restored data directory and wait until its recovery has
    /// ended and it answers; then check how far it replayed.
    async fn start(&mut self) -> Result<(), SourceError> {
        let dir = self.dir()?.to_path_buf();
        let data = PathBuf::from(&self.target);
        let program = self.program(&data).await?;
        let bin = program.parent().map(Path::to_path_buf).unwrap_or_default();
        let psql = if is_executable(&bin.join("psql")) {
            bin.join("psql")
        } else {
            PathBuf::from("psql")
        };
        let socket = dir.join("run");
        std::fs::create_dir(&socket)
            .map_err(|e| SourceError::io(format!("cannot create {}", socket.display()), e))?;
        let conf = dir.join("scratch.conf");
        let hba = dir.join("scratch_hba.conf");
        let ident = dir.join("scratch_ident.conf");
        write_private(&conf, b"# the drill's scratch server: every setting is on its command line\n")?;
        // Only the socket, which only this user can reach (the directory is 0700).
        write_private(&hba, b"local all all trust\n")?;
        write_private(&ident, b"")?;
        let log = dir.join("postgres.log");
        let log_file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&log)
            .map_err(|e| SourceError::io(format!("cannot create {}", log.display()), e))?;
        let path = |p: &Path| p.display().to_string();
        let settings: Vec<(&str, String)> = vec![
            ("config_file", path(&conf)),
            ("hba_file", path(&hba)),
            ("ident_file", path(&ident)),
            ("listen_addresses", String::new()),
            ("port", PORT.to_string()),
            ("unix_socket_directories", list_quote(&path(&socket))),
            ("unix_socket_permissions", "0700".to_string()),
            ("archive_mode", "off".to_string()),
            ("archive_command", String::new()),
            ("archive_cleanup_command", String::new()),
            ("recovery_end_command", String::new()),
            ("ssl", "off".to_string()),
            ("ssl_passphrase_command", String::new()),
            ("shared_preload_libraries", String::new()),
            ("session_preload_libraries", String::new()),
            ("local_preload_libraries", String::new()),
            ("external_pid_file", String::new()),
            ("primary_conninfo", String::new()),
            ("primary_slot_name", String::new()),
            ("hot_standby", "off".to_string()),
            ("logging_collector", "off".to_string()),
            ("log_destination", "stderr".to_string()),
            ("shared_buffers", "128MB".to_string()),
            ("max_connections", "20".to_string()),
            // Thrown away afterwards: nothing it writes needs to survive a crash.
            ("fsync", "off".to_string()),
            ("synchronous_commit", "off".to_string()),
        ];
        let mut cmd = Command::new(&program);
        cmd.arg("-D").arg(&data);
        for (name, value) in settings {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.current_dir(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        // kill_on_drop needs a drop: a stowage killed outright must not leave a server
        // behind. SIGQUIT is PostgreSQL's immediate shutdown: its children end with it.
        let parent = std::process::id();
        // SAFETY: runs in the forked child before exec; prctl, getppid and _exit are
        // async-signal-safe, and nothing shared with the parent is touched.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong, 0, 0, 0);
                if libc::getppid() as u32 != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| crate::source::spawn_error(SERVER, e, SERVER_HINT))?;
        let mut running = Running {
            child,
            data: data.clone(),
            psql,
            socket,
            log,
            superuser: self.login.clone(),
        };
        running.recovered().await?;
        let goal = self.goal.clone();
        match running.check_replay(goal).await {
            Ok(reached) => self.reached = Some(reached),
            Err(e) => {
                running.stop().await;
                return Err(e);
            }
        }
        self.server = Some(running);
        Ok(())
    }

    async fn server(&mut self) -> Result<&mut Running, SourceError> {
        if self.server.is_none() {
            self.start().await?;
        }
        self.server
            .as_mut()
            .ok_or_else(|| SourceError::Protocol("the scratch server is not running".into()))
    }
}

/// What a query gave: rows, or the server's error (the server is still there).
enum Answer {
    Rows(Vec<Vec<String>>),
    Error(String),
}

impl Running {
    /// The end of the server's log.
    fn said(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let t = tail(&String::from_utf8_lossy(&text));
        if t.is_empty() {
            "no output".to_string()
        } else {
            t
        }
    }

    async fn failed(&mut self, why: String) -> SourceError {
        let ended = self.stop().await;
        SourceError::Failed {
            tool: "the scratch postgres".to_string(),
            status: match ended {
                Some(s) => format!("{why}; {s}"),
                None => why,
            },
            stderr: self.said(),
        }
    }

    /// Fast shutdown (SIGINT), then SIGKILL: how it ended, when it did.
    async fn stop(&mut self) -> Option<String> {
        if let Some(pid) = self.child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
        }
        let status = match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = self.child.start_kill();
                tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        status.map(crate::source::describe_status)
    }

    /// One psql session on `database` as `user`: the statements' rows, or the server's
    /// error. Err only when psql could not be run at all.
    async fn query(
        &self,
        user: &str,
        database: &str,
        sql: &[&str],
    ) -> Result<Answer, SourceError> {
        let conninfo = format!(
            "host={} port={PORT} user={} dbname={} connect_timeout=10",
            conninfo_value(&self.socket.display().to_string()),
            conninfo_value(user),
            conninfo_value(database)
        );
        let mut cmd = Command::new(&self.psql);
        // The caller's PG* variables must not point psql anywhere else.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                cmd.env_remove(k);
            }
        }
        cmd.args(["-X", "-q", "-A", "-t", "-F", "\u{1f}", "-R", "\u{1e}"])
            .args(["-v", "ON_ERROR_STOP=1", "--no-password", "--dbname"])
            .arg(conninfo)
            .env("PGAPPNAME", "stowage-drill")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for s in sql {
            cmd.arg("-c").arg(s);
        }
        let out = cmd.output().await.map_err(|e| {
            crate::source::spawn_error(
                "psql",
                e,
                "install the PostgreSQL client tools (the server's major version) or set bin_dir",
            )
        })?;
        if !out.status.success() {
            return Ok(Answer::Error(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ));
        }
        Ok(Answer::Rows(
            String::from_utf8_lossy(&out.stdout)
                .split('\u{1e}')
                .map(|l| l.trim_end_matches('\n'))
                .filter(|l| !l.is_empty())
                .map(|l| l.split('\u{1f}').map(str::to_string).collect())
                .collect(),
        ))
    }

    /// A query that must succeed.
    async fn rows(&mut self, database: &str, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let user = self.superuser.clone();
        match self.query(&user, database, &[sql]).await? {
            Answer::Rows(r) => Ok(r),
            Answer::Error(e) => Err(SourceError::Failed {
                tool: "psql".to_string(),
                status: format!("on the scratch server, database \"{database}\""),
                stderr: e,
            }),
        }
    }

    /// Until recovery has ended and the server accepts connections (with `hot_standby`
    /// off it accepts none before), then find the superuser.
    async fn recovered(&mut self) -> Result<(), SourceError> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(SourceError::Failed {
                    tool: "the scratch postgres".to_string(),
                    status: format!(
                        "exited ({}) before its recovery ended; the WAL could not be replayed to the end of the archive (see its log)",
                        crate::source::describe_status(status)
                    ),
                    stderr: self.said(),
                });
            }
            if t0.elapsed() > RECOVERY_TIMEOUT {
                let why = format!(
                    "still recovering after {} s",
                    RECOVERY_TIMEOUT.as_secs()
                );
                return Err(self.failed(why).await);
            }
            // With hot_standby off the server takes no connection before its recovery has
            // ended; postmaster.pid says "ready" from then on (PostgreSQL's own status line,
            // what pg_ctl waits for), so a failing query after that is a real failure.
            if self.is_ready() {
                return self.find_superuser().await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn is_ready(&self) -> bool {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().nth(7).map(|l| l.trim() == "ready"))
            .unwrap_or(false)
    }

    /// The cluster's bootstrap superuser (who reads every table), asked as the source's
    /// login role (which the copy has) or as "postgres" (the usual bootstrap superuser).
    async fn find_superuser(&mut self) -> Result<(), SourceError> {
        let mut said = Vec::new();
        for login in [self.superuser.clone(), "postgres".to_string()] {
            match self
                .query(
                    &login,
                    "template1",
                    &["select rolname, pg_catalog.pg_is_in_recovery() from pg_catalog.pg_roles where oid = 10"],
                )
                .await?
            {
                Answer::Rows(rows) => match rows.as_slice() {
                    [row] if row.len() == 2 && row[1] == "f" => {
                        self.superuser = row[0].clone();
                        return Ok(());
                    }
                    _ => said.push(format!("as {login}: unexpected answer {rows:?}")),
                },
                Answer::Error(e) => said.push(format!("as {login}: {e}")),
            }
        }
        let why = format!(
            "it says it is ready but does not answer ({})",
            said.join("; ")
        );
        Err(self.failed(why).await)
    }

    /// How far the server replayed, checked against the drill's goal: the point reached,
    /// for the report.
    async fn check_replay(&mut self, goal: Option<(u64, String)>) -> Result<String, SourceError> {
        let rows = self
            .rows(
                "template1",
                "select pg_catalog.pg_last_wal_replay_lsn(), to_char(pg_catalog.pg_last_xact_replay_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')",
            )
            .await?;
        let row = rows.first().cloned().unwrap_or_default();
        let lsn_text = row.first().cloned().unwrap_or_default();
        let replayed = crate::engine::parse_lsn(&lsn_text);
        let commit = row.get(1).filter(|c| !c.is_empty()).cloned();
        let reached = format!(
            "LSN {}{}",
            if lsn_text.is_empty() { "none" } else { &lsn_text },
            match &commit {
                Some(c) => format!(" (last commit replayed at {c})"),
                // After the promotion PostgreSQL may no longer report it.
                None => String::new(),
            }
        );
        if let Some((at_least, what)) = goal {
            match replayed {
                Some(l) if l >= at_least => {}
                _ => {
                    return Err(SourceError::Incomplete(format!(
                        "recovery ended at {reached}, before {} ({what}): WAL the archive holds was not replayed (a gap, or a file recovery could not use; see the scratch server's log: {})",
                        super::wal::Lsn(at_least),
                        self.said()
                    )));
                }
            }
        }
        Ok(reached)
    }
}

#[async_trait]
impl ScratchSpace for PhysicalScratch {
    fn target(&self) -> &str {
        &self.target
    }

    fn expect_replay(&mut self, at_least: u64, what: &str) {
        self.goal = Some((at_least, what.to_string()));
    }

    fn reached(&self) -> Option<String> {
        self.reached.clone()
    }

    async fn ready(&mut self) -> Result<(), SourceError> {
        self.server().await.map(|_| ())
    }

    /// Rows of every table of every database, as "database.schema.table" (a base backup
    /// records no counts; each must be readable).
    async fn row_counts(&mut self) -> Result<BTreeMap<String, u64>, SourceError> {
        let server = self.server().await?;
        let databases = server
            .rows(
                "template1",
                "select datname from pg_catalog.pg_database where datallowconn and not datistemplate order by 1",
            )
            .await?;
        let mut counts = BTreeMap::new();
        for db in databases.iter().filter_map(|r| r.first()) {
            for row in server.rows(db, super::super::COUNT_ROWS).await? {
                let (Some(table), Some(n)) = (row.first(), row.get(1)) else {
                    continue;
                };
                let n = n.trim().parse::<u64>().map_err(|_| {
                    SourceError::Protocol(format!("unexpected row count from psql: {row:?}"))
                })?;
                counts.insert(format!("{db}.{table}"), n);
            }
        }
        Ok(counts)
    }

    async fn check(&mut self, query: &str) -> Result<bool, SourceError> {
        let database = self.database.clone();
        let server = self.server().await?;
        let rows = server.rows(&database, query).await?;
        super::super::check_answer(&rows)
    }

    async fn remove(mut self: Box<Self>) -> Result<(), SourceError> {
        let mut problem = None;
        if let Some(mut s) = self.server.take()
            && s.stop().await.is_none()
        {
            problem = Some(SourceError::Protocol(format!(
                "the scratch postgres (pid {:?}) did not exit after a fast shutdown and SIGKILL",
                s.child.id()
            )));
        }
        if let Some(dir) = self.dir.take() {
            let shown = dir.path().display().to_string();
            tokio::task::spawn_blocking(move || dir.close())
                .await
                .map_err(|e| SourceError::internal("removing the scratch directory", e))?
                .map_err(|e| SourceError::io(format!("cannot remove {shown}"), e))?;
        }
        problem.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_versions_read_as_pg_version_writes_them() {
        for (line, want) in [
            ("postgres (PostgreSQL) 15.18 (Debian 15.18-1.pgdg120+1)", Some("15")),
            ("postgres (PostgreSQL) 17.2", Some("17")),
            ("postgres (PostgreSQL) 9.6.24", Some("9.6")),
            ("postgres (PostgreSQL) 16beta1", Some("16")),
            ("nonsense", None),
        ] {
            assert_eq!(major_of(line).as_deref(), want, "{line}");
        }
    }

    #[test]
    fn a_drill_dir_is_an_absolute_path_not_a_url() {
        assert!(check_drill_dir("/var/tmp").is_ok());
        for (to, want) in [
            (
                "postgres://u:secret@db/app",
                "\"postgres://u:***@db/app\" is a URL; a physical drill starts its own scratch PostgreSQL server",
            ),
            (
                "scratch",
                "\"scratch\" is not an absolute path; give a directory for the drill's private scratch data directory, e.g. to = \"/var/tmp\"",
            ),
        ] {
            let e = check_drill_dir(to).expect_err(to);
            assert!(e.starts_with(want), "{to}: {e}");
        }
    }

    #[test]
    fn conninfo_values_are_quoted() {
        assert_eq!(conninfo_value("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(conninfo_value("o'k\\"), "'o\\'k\\\\'");
    }

    #[tokio::test]
    async fn root_and_data_directories_are_refused_before_anything_is_made() {
        let db = crate::source::configure_section(
            "postgres",
            "mode = \"physical\"\nurl = \"postgres://replicator@db/postgres\"",
        )
        .expect("valid");
        let scratch = db.scratch().expect("physical sources drill");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").expect("write");
        let to = dir.path().to_str().expect("utf-8");
        let e = scratch.space(to).await.err().expect("refused");
        let text = e.to_string();
        if rustix::process::geteuid().is_root() {
            assert!(text.starts_with("a physical drill starts a scratch PostgreSQL server, which refuses to run as root"), "{text}");
        } else {
            assert!(text.contains("holds PG_VERSION: it is a PostgreSQL data directory"), "{text}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("list").collect();
        assert_eq!(left.len(), 1, "nothing was made in {to}");
    }
}
