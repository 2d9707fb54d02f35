//! PostgreSQL in `mode = "physical"`: base backups with `pg_basebackup` (a tar of the whole
//! data directory on stdout, without WAL), continuous WAL with `pg_receivewal` through a
//! replication slot ([`WalSource`]), and a restore that writes a base backup into an empty
//! data directory with the settings for point-in-time recovery. By hand the archive is
//! `zstd -d < db.tar.zst | tar -x -C DATADIR`, then `recovery.signal` and a
//! `restore_command`.

mod follow;
mod restore;
mod resume;
mod scratch;
mod server;
mod spool;
mod tarball;
pub mod wal;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use tokio::process::Command;
use tokio_util::io::InspectReader;

use super::super::url::{DbUrl, UrlSpec};
use super::super::{
    Archive, Database, Dump, DumpInfo, RestoreOptions, SourceError, drain_stderr,
    wait_child_stderr,
};
use super::RawPostgres;
use crate::engine::{ArchiveCheck, WalPosition, WalSource};
use crate::section::{Priority, Section};

pub use self::restore::restore_command_setting;

/// A replication connection names a user with REPLICATION; the database in the URL is not
/// used by it, so none is required.
const URL: UrlSpec = UrlSpec {
    engine: "postgres",
    schemes: &["postgres", "postgresql"],
    example: "postgres://replicator@host:5432/postgres",
    database_required: false,
};

const DEFAULT_SLOT: &str = "stowage";
const DEFAULT_WAL_FLUSH: Duration = Duration::from_secs(10);
const MIN_WAL_FLUSH: Duration = Duration::from_secs(1);
const MAX_WAL_FLUSH: Duration = Duration::from_secs(600);

/// Keys of the postgres section that only `mode = "physical"` reads.
pub(super) const PHYSICAL_KEYS: &[&str] = &["slot", "wal_flush", "max_slot_wal"];

/// Build the physical source from its section (`mode = "physical"` already read).
pub(super) fn configure(section: &mut Section<'_>, raw: RawPostgres) -> Option<Arc<dyn Database>> {
    let mark = section.mark();
    let url = super::super::section_url(
        section,
        raw.url.as_deref(),
        raw.password_file.as_deref(),
        |u, pw| DbUrl::parse(u, &URL, pw),
        "postgres",
        "required for type = \"postgres\"; e.g. url = \"postgres://replicator@db:5432/postgres\" (a user with REPLICATION)",
    );
    super::super::check_bin_dir(section, raw.bin_dir.as_deref(), "pg_basebackup");
    if raw.exclude_tables.is_some() {
        section.problem(
            "exclude_tables",
            "a physical base backup copies the whole data directory and cannot leave tables out; remove the key or use mode = \"logical\"",
        );
    }
    let slot = raw.slot.unwrap_or_else(|| DEFAULT_SLOT.to_string());
    if let Err(e) = check_slot_name(&slot) {
        section.problem("slot", e);
    }
    let wal_flush = match raw.wal_flush.as_deref().map(parse_wal_flush) {
        None => Some(DEFAULT_WAL_FLUSH),
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            section.problem("wal_flush", e);
            None
        }
    };
    let max_slot_wal = match raw.max_slot_wal.as_deref().map(parse_size) {
        None => None,
        Some(Ok(bytes)) => Some(bytes),
        Some(Err(e)) => {
            section.problem("max_slot_wal", e);
            None
        }
    };
    if section.failed_since(mark) {
        return None;
    }
    Some(Arc::new(PhysicalPostgres {
        name: section.name.clone(),
        url: url?,
        bin_dir: raw.bin_dir,
        priority: section.priority,
        slot,
        wal_flush: wal_flush?,
        max_slot_wal,
        slot_warned: Arc::new(AtomicBool::new(false)),
    }))
}

/// The source a base backup is restored with when the config no longer has it in physical
/// mode. Restoring reads no server: the URL is only a placeholder and is never connected.
pub(super) fn unconfigured(name: &str) -> Option<Arc<dyn Database>> {
    Some(Arc::new(PhysicalPostgres {
        name: name.to_string(),
        url: DbUrl::parse(URL.example, &URL, None).ok()?,
        bin_dir: None,
        priority: Priority::default(),
        slot: DEFAULT_SLOT.to_string(),
        wal_flush: DEFAULT_WAL_FLUSH,
        max_slot_wal: None,
        slot_warned: Arc::new(AtomicBool::new(false)),
    }))
}

/// A replication slot name as the server takes it: lower-case letters, digits and
/// underscores, at most 63 characters.
fn check_slot_name(slot: &str) -> Result<(), String> {
    if slot.is_empty() {
        return Err("the slot name is empty; use e.g. \"stowage\"".to_string());
    }
    if slot.len() > 63 {
        return Err(format!(
            "slot name \"{slot}\" is longer than 63 characters; use a shorter one"
        ));
    }
    if !slot
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "invalid slot name \"{slot}\": PostgreSQL takes only lower-case letters, digits and underscores"
        ));
    }
    Ok(())
}

fn parse_wal_flush(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("invalid duration \"{text}\" ({e}); use e.g. \"10s\""))?;
    if d < MIN_WAL_FLUSH || d > MAX_WAL_FLUSH {
        return Err(format!(
            "\"{text}\" is outside 1s..10min; use e.g. \"10s\" (the most committed data a lost daemon can lose)"
        ));
    }
    Ok(d)
}

/// "10GiB", "512MiB", "1073741824": bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size \"{text}\"; use e.g. \"10GiB\" or \"512MiB\"");
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(mult).ok_or_else(bad)?;
    // Less than one segment would mean the slot can never hold back anything.
    if bytes < wal::SegmentSize::DEFAULT.bytes() {
        return Err(format!(
            "\"{text}\" is less than one WAL segment (16MiB); use e.g. \"10GiB\""
        ));
    }
    Ok(bytes)
}

/// A PostgreSQL source in physical mode.
#[derive(Debug, Clone)]
pub struct PhysicalPostgres {
    name: String,
    url: DbUrl,
    bin_dir: Option<PathBuf>,
    priority: Priority,
    slot: String,
    wal_flush: Duration,
    max_slot_wal: Option<u64>,
    /// Whether the warning that this server cannot report the slot's position was given.
    slot_warned: Arc<AtomicBool>,
}

impl PhysicalPostgres {
    /// The replication slot `pg_receivewal` streams through.
    pub fn slot(&self) -> &str {
        &self.slot
    }

    /// `max_slot_wal`: the most WAL, in bytes, the slot may hold back on the server before
    /// the daemon gives the slot up (dropping it so the server's disk does not fill, at the
    /// price of a gap in the WAL chain that the next base backup closes). Checked before
    /// every start of the receiver.
    pub fn max_slot_wal(&self) -> Option<u64> {
        self.max_slot_wal
    }

    fn tool(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    fn command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.tool(tool));
        super::super::lower_priority(&mut cmd, self.priority);
        // Never prompt: there is no terminal in a container and a prompt would hang forever.
        cmd.arg("--no-password")
            .env("PGAPPNAME", "stowage")
            .env("PGCONNECT_TIMEOUT", "15")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        // The password reaches the tool through its environment, never its command line.
        if let Some(pw) = self.url.password() {
            cmd.env("PGPASSWORD", pw.expose());
        }
        cmd
    }

    fn spawn_err(&self, tool: &str, e: std::io::Error) -> SourceError {
        super::super::spawn_error_in(tool, e, self.bin_dir.as_deref(), "install the PostgreSQL client tools (the server's major version) or set bin_dir")
    }

    /// Start `cmd` (the client tool `tool`) with its stderr read in the background, so a
    /// chatty child never blocks on a full pipe and its message ends up in the error.
    fn spawn_draining(
        &self,
        cmd: &mut Command,
        tool: &str,
    ) -> Result<(tokio::process::Child, tokio::task::JoinHandle<String>), SourceError> {
        let mut child = cmd.spawn().map_err(|e| self.spawn_err(tool, e))?;
        let stderr = child
            .stderr
            .take()
            .map(drain_stderr)
            .ok_or_else(|| SourceError::Protocol(format!("{tool} started without pipes")))?;
        Ok((child, stderr))
    }

    /// `pg_receivewal ARGS -d URL` for a slot (`--create-slot`, `--drop-slot`), run to its
    /// end; `what` names it in the error, which carries its stderr.
    async fn slot_command(&self, args: &[&str], what: &str) -> Result<String, SourceError> {
        let mut cmd = self.command("pg_receivewal");
        cmd.args(args)
            .arg("--slot")
            .arg(&self.slot)
            .arg("-d")
            .arg(self.url.conninfo())
            .stdout(Stdio::null());
        let (child, stderr) = self.spawn_draining(&mut cmd, "pg_receivewal")?;
        wait_child_stderr(what, child, stderr).await
    }
}

#[async_trait]
impl Database for PhysicalPostgres {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn extension(&self) -> &'static str {
        "tar"
    }

    fn format(&self) -> &'static str {
        "pg_basebackup tar (PGDATA with backup_manifest, no WAL)"
    }

    fn describe(&self) -> String {
        format!(
            "postgres physical {} (slot \"{}\"{}, WAL flushed every {})",
            self.url,
            self.slot,
            self.max_slot_wal
                .map(|b| format!(" given up past {}", crate::units::human_bytes(b)))
                .unwrap_or_default(),
            humantime::format_duration(self.wal_flush)
        )
    }

    fn target_example(&self) -> &'static str {
        "/var/lib/postgresql/data (an empty data directory)"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        restore::check_target(target)
    }

    /// The base backup is extracted into a private directory inside the target and moved
    /// into place only after the stream's end (where size and sha256 are checked).
    fn verifies_before_commit(&self) -> bool {
        true
    }

    fn wal_source(&self) -> Option<&dyn WalSource> {
        Some(self)
    }

    /// A scratch data directory and a postgres of its own (`scratch`).
    fn scratch(&self) -> Option<&dyn crate::engine::Scratch> {
        Some(self)
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        let out = Command::new(self.tool("pg_basebackup"))
            .arg("--version")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| self.spawn_err("pg_basebackup", e))?;
        // A pg_basebackup that cannot even report its version will not back up either.
        if !out.status.success() {
            return Err(SourceError::Failed {
                tool: "pg_basebackup --version".to_string(),
                status: super::super::describe_status(out.status),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok((
            "pg_basebackup".to_string(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        ))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        // Names the backup's WAL span in 16 MiB segments: another size would misname it.
        self.check_segment_size().await?;
        // The slot holds the WAL from before the backup's start, whether the receiver is
        // running already or starts after (it then streams from the slot's position).
        self.ensure_slot().await?;
        let mut cmd = self.command("pg_basebackup");
        // One tar of the data directory on stdout, with backup_manifest appended to it by
        // pg_basebackup itself; no WAL (the daemon archives it); an immediate checkpoint
        // so the backup does not wait up to checkpoint_timeout. -v says what it did, but
        // with -X none not where in the WAL: that comes from the manifest (`follow`).
        cmd.args(["-D", "-", "-Ft", "-X", "none", "-c", "fast", "-v"])
            .arg("-d")
            .arg(self.url.conninfo());
        let mut child = cmd
            .spawn()
            .map_err(|e| self.spawn_err("pg_basebackup", e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(SourceError::Protocol(
                "pg_basebackup started without pipes".into(),
            ));
        };
        let stderr = drain_stderr(stderr);
        let name = self.name.clone();
        let tail = Arc::new(Mutex::new(follow::ManifestTail::default()));
        let keep = tail.clone();
        let reader = InspectReader::new(stdout, move |b: &[u8]| {
            if let Ok(mut t) = keep.lock() {
                t.push(b);
            }
        });
        Ok(Dump {
            reader: Box::new(reader),
            finish: async move {
                let text = wait_child_stderr("pg_basebackup", child, stderr).await?;
                let stop_time = chrono::Utc::now();
                tracing::debug!(source = %name, "pg_basebackup: {text}");
                let (server_version, range) = {
                    let t = tail.lock().map_err(|_| {
                        SourceError::Protocol("the base backup's follower failed".into())
                    })?;
                    (t.server_version(), t.wal_range())
                };
                let (timeline, start, stop) = range?;
                Ok(DumpInfo {
                    server_version,
                    objects: None,
                    rows: None,
                    wal: Some(WalPosition {
                        timeline,
                        start_lsn: start.to_string(),
                        stop_lsn: stop.to_string(),
                        stop_time,
                    }),
                })
            }
            .boxed(),
        })
    }

    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        tarball::check(archive.open().await?).await?;
        Ok(Vec::new())
    }

    async fn check_archive(&self, archive: &dyn Archive) -> Result<ArchiveCheck, SourceError> {
        let found = tarball::check(archive.open().await?).await?;
        Ok(ArchiveCheck::Whole(found.to_string()))
    }

    async fn live_objects(&self, _target: Option<&str>) -> Result<Vec<String>, SourceError> {
        Ok(Vec::new())
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        restore::restore(archive, opts).await
    }
}

#[async_trait]
impl WalSource for PhysicalPostgres {
    async fn receive(&self, spool: &Path) -> Result<(), SourceError> {
        self.prepare_receive(spool).await?;
        // After prepare_receive, which may have replaced the slot (max_slot_wal).
        self.ensure_slot().await?;

        let mut cmd = self.command("pg_receivewal");
        // No --synchronous: pg_receivewal then fsyncs a segment only when it is complete,
        // and reports only that as flushed, so the slot holds the server's WAL back to the
        // start of the segment being written. A crash of this machine can lose the spool's
        // unsynced tail, and pg_receivewal restarts a segment from its start, which the
        // server still has. With --synchronous the slot would advance with every message
        // (after an fsync per message: costly at a high WAL rate) while the shipper reads
        // the partial segment from the page cache anyway; it buys nothing for archiving,
        // only synchronous replication, which stowage does not offer.
        cmd.arg("-D")
            .arg(spool)
            .args(["--slot", &self.slot, "--no-loop", "-v"])
            .arg(format!(
                "--status-interval={}",
                self.wal_flush.as_secs().max(1)
            ))
            .arg("-d")
            .arg(self.url.conninfo())
            .stdout(Stdio::null());
        die_with_parent(&mut cmd);
        let (child, stderr) = self.spawn_draining(&mut cmd, "pg_receivewal")?;
        // pg_receivewal ends only when the stream does (--no-loop): the server went away,
        // the slot was dropped, or it was told to stop. Even a clean exit is the end of
        // the stream, which the caller restarts.
        let text = match wait_child_stderr("pg_receivewal", child, stderr).await {
            Ok(text) => text,
            Err(e) => {
                if let SourceError::Failed { stderr, .. } = &e {
                    self.after_failure(spool, stderr).await;
                }
                return Err(e);
            }
        };
        tracing::info!(source = %self.name, "pg_receivewal stopped: {}", text.lines().last().unwrap_or("no output"));
        Ok(())
    }

    fn flush_interval(&self) -> Duration {
        self.wal_flush
    }
}

/// `kill_on_drop` covers a daemon that drops the receiving future; a daemon killed with
/// SIGKILL drops nothing, and an orphaned pg_receivewal would keep streaming into the spool
/// and hold the slot: the next daemon's pg_receivewal would then be refused ("replication
/// slot is active") until the orphan died. The kernel sends SIGTERM to the child when its
/// parent dies (PR_SET_PDEATHSIG). The "parent" is the thread that forked, so this relies
/// on spawning from one of the runtime's worker threads, which live as long as the process.
fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes only
    // async-signal-safe system calls (prctl, getppid, _exit); it touches no shared memory.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl: the signal would never come.
            if libc::getppid() as u32 != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::configure_section;

    fn problems(toml: &str) -> Vec<String> {
        configure_section("postgres", toml).expect_err("invalid")
    }

    #[test]
    fn physical_mode_is_configured() {
        let db = configure_section(
            "postgres",
            "mode = \"physical\"\nurl = \"postgres://replicator@db:5432/postgres\"",
        )
        .expect("valid");
        assert_eq!(db.extension(), "tar");
        assert_eq!(
            db.format(),
            "pg_basebackup tar (PGDATA with backup_manifest, no WAL)"
        );
        assert_eq!(
            db.describe(),
            "postgres physical postgres://replicator@db:5432/postgres (slot \"stowage\", WAL flushed every 10s)"
        );
        let wal = db.wal_source().expect("physical mode archives WAL");
        assert_eq!(wal.flush_interval(), Duration::from_secs(10));

        let db = configure_section(
            "postgres",
            "mode = \"physical\"\nurl = \"postgres://replicator@db\"\nslot = \"pitr_1\"\n\
             wal_flush = \"1s\"",
        )
        .expect("valid: a replication URL needs no database");
        assert_eq!(
            db.wal_source().map(|w| w.flush_interval()),
            Some(Duration::from_secs(1))
        );
        assert!(db.describe().contains("slot \"pitr_1\""));

        for (size, shown) in [("10GiB", "10.0 GiB"), ("512MiB", "512.0 MiB"), ("16777216", "16.0 MiB")] {
            let db = configure_section(
                "postgres",
                &format!("mode = \"physical\"\nurl = \"postgres://replicator@db\"\nmax_slot_wal = \"{size}\""),
            )
            .expect("valid: max_slot_wal is enforced");
            assert!(
                db.describe().contains(&format!("slot \"stowage\" given up past {shown},")),
                "{size}: {}",
                db.describe()
            );
        }
    }

    #[test]
    fn logical_mode_is_unchanged() {
        for mode in ["", "mode = \"logical\"\n"] {
            let db = configure_section(
                "postgres",
                &format!("{mode}url = \"postgres://app@db:5432/app\""),
            )
            .expect("valid");
            assert_eq!(db.extension(), "pgdump");
            assert!(db.wal_source().is_none());
        }
    }

    #[test]
    fn each_bad_key_is_named() {
        let base = "mode = \"physical\"\nurl = \"postgres://replicator@db/postgres\"\n";
        for (extra, expected) in [
            (
                "slot = \"Stowage\"",
                "jobs.app.sources[0].slot: invalid slot name \"Stowage\": PostgreSQL takes only lower-case letters, digits and underscores",
            ),
            (
                "slot = \"\"",
                "jobs.app.sources[0].slot: the slot name is empty; use e.g. \"stowage\"",
            ),
            (
                &format!("slot = \"{}\"", "s".repeat(64)),
                &format!(
                    "jobs.app.sources[0].slot: slot name \"{}\" is longer than 63 characters; use a shorter one",
                    "s".repeat(64)
                ),
            ),
            (
                "wal_flush = \"soon\"",
                "jobs.app.sources[0].wal_flush: invalid duration \"soon\"",
            ),
            (
                "wal_flush = \"500ms\"",
                "jobs.app.sources[0].wal_flush: \"500ms\" is outside 1s..10min; use e.g. \"10s\"",
            ),
            (
                "wal_flush = \"11min\"",
                "jobs.app.sources[0].wal_flush: \"11min\" is outside 1s..10min",
            ),
            (
                "max_slot_wal = \"lots\"",
                "jobs.app.sources[0].max_slot_wal: invalid size \"lots\"; use e.g. \"10GiB\" or \"512MiB\"",
            ),
            (
                "max_slot_wal = \"1MiB\"",
                "jobs.app.sources[0].max_slot_wal: \"1MiB\" is less than one WAL segment (16MiB); use e.g. \"10GiB\"",
            ),
            (
                "exclude_tables = [\"audit\"]",
                "jobs.app.sources[0].exclude_tables: a physical base backup copies the whole data directory and cannot leave tables out; remove the key or use mode = \"logical\"",
            ),
        ] {
            let p = problems(&format!("{base}{extra}"));
            assert_eq!(p.len(), 1, "{extra}: {p:?}");
            assert!(p[0].starts_with(expected), "{extra}: {p:?}");
        }
        let p = problems("mode = \"physical\"");
        assert!(
            p.iter()
                .any(|l| l.starts_with("jobs.app.sources[0].url: required")),
            "{p:?}"
        );
    }

    #[test]
    fn physical_keys_are_refused_in_logical_mode() {
        for key in ["slot = \"s\"", "wal_flush = \"10s\"", "max_slot_wal = \"1GiB\""] {
            let p = problems(&format!("url = \"postgres://app@db/app\"\n{key}"));
            let name = key.split(' ').next().unwrap_or_default();
            assert_eq!(
                p,
                vec![format!(
                    "jobs.app.sources[0].{name}: only used with mode = \"physical\"; remove it or set mode = \"physical\""
                )]
            );
        }
        let p = problems("mode = \"binary\"\nurl = \"postgres://app@db/app\"");
        assert_eq!(
            p,
            vec![
                "jobs.app.sources[0].mode: unknown mode \"binary\"; use \"logical\" (pg_dump) or \"physical\" (pg_basebackup and continuous WAL)"
            ]
        );
    }
}
