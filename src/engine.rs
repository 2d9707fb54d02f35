//! The interface between stowage and a database engine. Everything that knows a database
//! (its URL, its tools, its objects) lives in the engine's folder under `src/source/`;
//! config, pipeline, restore, check-config and the manifest only see these traits.
//!
//! # Adding an engine
//! 1. A folder `src/source/<engine>/` with a `mod.rs` holding a unit struct that implements
//!    [`Engine`] (the `type` value(s), section validation) and a type that implements
//!    [`Database`] (dump, restore, objects). Its config section is a serde struct with
//!    `#[serde(deny_unknown_fields)]`, read with [`Section::parse`]: unknown keys then get
//!    "unknown key … did you mean" messages with their full key path.
//! 2. One line in the `engines!` list in `src/source/mod.rs`, which declares the module and
//!    registers the engine in [`crate::source::ENGINES`].
//!
//! Nothing else changes: `type = "<engine>"` is accepted in config, the pipeline streams its
//! dump (compress → fan-out → storages), the manifest records its format, versions and
//! objects, and `restore --to <source>=<target>` hands the stream back to it.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::AsyncRead;

pub use crate::section::Section;

/// One kind of database, registered in [`crate::source::ENGINES`].
pub trait Engine: Send + Sync {
    /// The `type = "..."` value, e.g. "postgres".
    fn kind(&self) -> &'static str;
    /// Other accepted `type` values, e.g. "mysql" for "mariadb".
    fn aliases(&self) -> &'static [&'static str] {
        &[]
    }
    /// The keys its section accepts: `crate::section::serde_fields::<ItsRawConfig>()`.
    fn keys(&self) -> &'static [&'static str];
    /// Whether the engine's objects are tables that `exclude_tables` can name.
    fn has_tables(&self) -> bool {
        false
    }
    /// Validate the source's section (every key but `type` and `name`) and build the
    /// source. Problems go to `section` with their key path; `None` when there were any.
    /// No I/O beyond reading the secret files the section names.
    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>>;
    /// The source to restore a backup with when the job no longer configures a source of
    /// that name (the backup outlived a config change): default tool settings.
    fn unconfigured(&self, name: &str) -> Arc<dyn Database>;
    /// [`Engine::unconfigured`] for a backup of the kind `base_backup` says: an engine with a
    /// physical mode restores its base backups (the manifest records their WAL position)
    /// with that mode, whatever the config says now.
    fn unconfigured_for(&self, name: &str, base_backup: bool) -> Option<Arc<dyn Database>> {
        (!base_backup).then(|| self.unconfigured(name))
    }
}

/// A configured database source: dumps a byte stream and restores from one.
#[async_trait]
pub trait Database: Send + Sync + fmt::Debug {
    fn name(&self) -> &str;
    /// The engine's `type` value.
    fn kind(&self) -> &'static str;
    /// File extension of the uncompressed stream, e.g. "pgdump".
    fn extension(&self) -> &'static str;
    /// What the uncompressed stream is, for the manifest and the README's by-hand restore.
    fn format(&self) -> &'static str;
    /// One line for check-config, e.g. "postgres postgres://app@db:5432/app"; no secrets.
    fn describe(&self) -> String;
    /// What `restore --to` takes for this engine, for messages, e.g. "postgres://USER@HOST:PORT/DB".
    fn target_example(&self) -> &'static str;
    /// Check a restore target before any work is done (syntax only, no I/O).
    fn check_target(&self, target: &str) -> Result<(), String>;
    /// Objects (tables) dumped but skipped by default on restore, recorded in the manifest.
    fn default_excludes(&self) -> Vec<String> {
        Vec::new()
    }
    /// Whether two object names, one given by a user and one from a manifest, name the same
    /// object (an engine with case folding or quoting rules overrides this).
    fn same_object(&self, a: &str, b: &str) -> bool {
        a == b
    }
    /// The source's own database as `restore` takes it for `target` (credentials come from
    /// the source's config), for the healer; `None` when the engine cannot restore into
    /// its own source.
    fn own_target(&self) -> Option<String> {
        None
    }
    /// Whether `--table` / `--exclude-table` mean something for this engine.
    fn selects_objects(&self) -> bool {
        false
    }
    /// Whether a restore applies nothing to the target until the archive stream has been
    /// read to its end (where [`Archive::open`]'s reader checks size and sha256): the engine
    /// stages into a transaction it commits, or a file it renames, only after that end.
    /// When false, `restore` and the healer read the whole stored object through the
    /// sha256 check first (a verify pass: a second read of the object), so that no byte of a
    /// damaged object reaches a live database. An engine that applies statements as they
    /// stream (a DDL that commits by itself, a tool fed on stdin) must keep false.
    /// Restore drills skip the pass: they restore into a scratch database that is dropped
    /// afterwards, and a damaged object fails the drill, which is what a drill is for.
    fn verifies_before_commit(&self) -> bool {
        false
    }
    /// Dump tool name and version, e.g. ("pg_dump", "pg_dump (PostgreSQL) 15.18"). A tool
    /// that cannot report its version will not dump either: that is an error.
    async fn tool_version(&self) -> Result<(String, String), SourceError>;
    /// Start a dump. Read `Dump::reader` to the end, then await `Dump::finish`.
    async fn dump(&self) -> Result<Dump, SourceError>;
    /// A dump that also counts each table's rows in the dump's own snapshot
    /// (`DumpInfo::rows`), for drills to compare a restore with. Engines that cannot count
    /// in the same snapshot dump without counts.
    async fn dump_counting_rows(&self) -> Result<Dump, SourceError> {
        self.dump().await
    }
    /// Restore drills: `None` when the engine cannot run them.
    fn scratch(&self) -> Option<&dyn Scratch> {
        None
    }
    /// Continuous WAL archiving: `None` for every source but PostgreSQL in physical mode.
    fn wal_source(&self) -> Option<&dyn WalSource> {
        None
    }
    /// Objects (tables, collections) the archive holds, read from the archive itself.
    async fn archive_objects(&self, archive: &dyn Archive) -> Result<Vec<String>, SourceError>;
    /// Read a whole stored archive the way this engine's own tools would, for `verify`:
    /// what was found, or why the archive is not whole. By default the objects it lists;
    /// an engine whose archive holds nothing to list but carries its own integrity marks
    /// (an RDB's checksum) says [`ArchiveCheck::Whole`] instead, which is not a failure.
    async fn check_archive(&self, archive: &dyn Archive) -> Result<ArchiveCheck, SourceError> {
        self.archive_objects(archive)
            .await
            .map(ArchiveCheck::Objects)
    }
    /// Objects present in a live database: `target` as given to restore, or the source's
    /// own database when `None`.
    async fn live_objects(&self, target: Option<&str>) -> Result<Vec<String>, SourceError>;
    /// Restore from the archive; returns lines describing what was (or, in a dry run,
    /// would be) restored.
    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError>;
}

/// What [`Database::check_archive`] found in an archive it read to the end.
#[derive(Debug, Clone, PartialEq)]
pub enum ArchiveCheck {
    /// The objects (tables, collections) the engine's reader listed.
    Objects(Vec<String>),
    /// Checked whole by the format's own marks; nothing to list. The phrase says what was
    /// checked, e.g. "RDB version 11: header, end marker and CRC-64 ok".
    Whole(String),
}

/// What an engine learnt while dumping, recorded in the manifest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DumpInfo {
    /// Server version, e.g. "15.18", when the engine can tell.
    pub server_version: Option<String>,
    /// Tables or collections in the dump; `None` when the engine cannot tell.
    pub objects: Option<Vec<String>>,
    /// Rows per table in the dump's snapshot, when asked for and the engine can tell.
    pub rows: Option<std::collections::BTreeMap<String, u64>>,
    /// Where a physical base backup sits in the write-ahead log (PostgreSQL in
    /// `mode = "physical"`): what point-in-time recovery starts from.
    pub wal: Option<WalPosition>,
}

/// The write-ahead log span of a base backup: replay must start at `start_lsn` and reach
/// `stop_lsn` before the copy is consistent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WalPosition {
    pub timeline: u32,
    /// LSNs as PostgreSQL writes them, e.g. "0/2000028".
    pub start_lsn: String,
    pub stop_lsn: String,
    /// When the base backup ended: the earliest time it can recover to.
    pub stop_time: chrono::DateTime<chrono::Utc>,
}

/// A database that archives its write-ahead log continuously (PostgreSQL in physical mode).
/// The daemon runs [`WalSource::receive`] for as long as the job is configured and ships
/// what appears in the spool (`crate::wal`); the engine knows the server and its tools,
/// the shipper knows only files and destinations.
#[async_trait]
pub trait WalSource: Send + Sync {
    /// Receive WAL into `spool` (a directory the daemon owns and keeps across restarts)
    /// until the stream fails: each completed segment appears whole under its final name
    /// (e.g. `000000010000000000000003`, written as `<name>.partial` and renamed once
    /// complete and flushed), the segment being written as `<name>.partial`, timeline
    /// history files as `<8 hex>.history`. Resumes from what the spool holds, and from the
    /// replication slot beyond it. The child process is killed when the future is dropped.
    async fn receive(&self, spool: &std::path::Path) -> Result<(), SourceError>;
    /// How often the segment being written is shipped (`wal_flush`): the most committed
    /// data a lost daemon can lose.
    fn flush_interval(&self) -> std::time::Duration;
}

/// What a point-in-time restore asks of the engine beyond the base backup: where replay
/// stops, and the command the server runs to fetch each WAL file from stowage.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub target: RecoveryTarget,
    /// The `restore_command` for the server, with `%f` and `%p` (built by stowage: its own
    /// binary, config and job), written by the engine with its own quoting.
    pub restore_command: Vec<String>,
}

impl WalPosition {
    /// Whether a recovery to `target` can start from this base backup: the backup became
    /// consistent no later than the target. (Whether the WAL to get there exists is the
    /// archive's question, not the backup's.)
    pub fn precedes(&self, target: &RecoveryTarget) -> bool {
        match target {
            RecoveryTarget::Latest | RecoveryTarget::Name(_) => true,
            RecoveryTarget::Time(t) => self.stop_time <= *t,
            RecoveryTarget::Lsn(l) => match (parse_lsn(&self.stop_lsn), parse_lsn(l)) {
                (Some(stop), Some(l)) => stop <= l,
                _ => false,
            },
        }
    }
}

impl WalPosition {
    /// The WAL file holding `start_lsn`, where replay of this backup begins, for the
    /// default 16 MiB segments (a cluster made with another `--wal-segsize` names its
    /// files differently: `restore --copy-wal` is not for it).
    pub fn first_file(&self) -> Option<String> {
        let lsn = parse_lsn(&self.start_lsn)?;
        Some(format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            lsn >> 32,
            (lsn & 0xFFFF_FFFF) >> 24
        ))
    }
}

/// An LSN as PostgreSQL writes it ("16/B374D848": two hex halves) as one number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let ok = |h: &str| !h.is_empty() && h.len() <= 8 && h.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok(hi) || !ok(lo) {
        return None;
    }
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[derive(Debug, Clone, PartialEq)]
pub enum RecoveryTarget {
    /// Replay everything archived.
    Latest,
    Time(chrono::DateTime<chrono::Utc>),
    /// An LSN as PostgreSQL writes them, e.g. "0/3000060" (checked by the engine).
    Lsn(String),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

/// What a restore drill (`crate::drill`) needs from an engine: a scratch database it
/// creates, restores into through [`Database::restore`], inspects, and drops.
#[async_trait]
pub trait Scratch: Send + Sync {
    /// Whether `target` names the source's own database, which a drill must never touch.
    fn is_own_database(&self, target: &str) -> bool;
    /// Create `target`, empty; what a crashed drill left there is dropped first.
    async fn create(&self, target: &str) -> Result<(), SourceError> {
        Err(unnamed_scratch(target))
    }
    async fn drop(&self, target: &str) -> Result<(), SourceError> {
        Err(unnamed_scratch(target))
    }
    /// Rows per table, named as in the manifest's `objects`.
    async fn row_counts(
        &self,
        target: &str,
    ) -> Result<std::collections::BTreeMap<String, u64>, SourceError> {
        Err(unnamed_scratch(target))
    }
    /// Run a check; true when it returns one row holding true.
    async fn check(&self, target: &str, query: &str) -> Result<bool, SourceError> {
        let _ = query;
        Err(unnamed_scratch(target))
    }
    /// What the scratch is, for messages: "database", "file", "server".
    fn noun(&self) -> &'static str {
        "database"
    }
    /// What a drill counts, for messages: the object and its unit, ("table", "row") by
    /// default, ("database", "key") for Redis.
    fn counted(&self) -> (&'static str, &'static str) {
        ("table", "row")
    }
    /// Whether the drill restores with [`RestoreOptions::no_owner`] (the scratch server may
    /// lack the source's roles); false for an engine where that option means nothing.
    fn restores_without_owners(&self) -> bool {
        true
    }
    /// Whether the drill's `checks` mean something here (they are SQL).
    fn runs_checks(&self) -> bool {
        true
    }
    /// How this engine's drill takes `to`, when not as [`Database::check_target`] does (a
    /// scratch of its own made inside a directory): syntax only, no I/O; `None` to check
    /// `to` as a restore target.
    fn check_to(&self, to: &str) -> Option<Result<(), String>> {
        let _ = to;
        None
    }
    /// The scratch of one drill, made from the drill's `to`. By default a database named by
    /// `to` on the source's server ([`Scratch::create`], then the other methods with `to`);
    /// an engine whose scratch is private to one drill (a temporary directory, a server of
    /// its own) makes it here and removes it when it is removed or dropped.
    async fn space<'a>(&'a self, to: &str) -> Result<Box<dyn ScratchSpace + 'a>, SourceError> {
        self.create(to).await?;
        Ok(Box::new(NamedScratch {
            scratch: self,
            to: to.to_string(),
        }))
    }
}

/// The scratch a drill restores into, inspects and removes (see [`Scratch::space`]).
#[async_trait]
pub trait ScratchSpace: Send + Sync {
    /// The target [`Database::restore`] restores into.
    fn target(&self) -> &str;
    /// Rows (or keys) per object, named as in the manifest's `rows`.
    async fn row_counts(&mut self) -> Result<std::collections::BTreeMap<String, u64>, SourceError>;
    /// Run a check; true when it returns one row holding true.
    async fn check(&mut self, query: &str) -> Result<bool, SourceError>;
    /// Remove the scratch, saying whether that worked.
    async fn remove(self: Box<Self>) -> Result<(), SourceError>;
    /// After the restore, before anything is counted: bring the scratch up (a server of its
    /// own that replays WAL) and check it got where it had to. Nothing to do by default.
    async fn ready(&mut self) -> Result<(), SourceError> {
        Ok(())
    }
    /// A point-in-time drill: the least WAL position (an LSN as a number, see [`parse_lsn`])
    /// the restored server must have replayed once its recovery ends, and what that
    /// position is, for messages (e.g. "the start of WAL file …, the newest shipped when the
    /// drill began"). Ignored by a scratch that replays no WAL.
    fn expect_replay(&mut self, at_least: u64, what: &str) {
        let _ = (at_least, what);
    }
    /// Where the restored copy ended up, for the drill's summary (a point-in-time drill:
    /// the LSN and the last commit replayed); `None` when there is nothing to say.
    fn reached(&self) -> Option<String> {
        None
    }
}

fn unnamed_scratch(target: &str) -> SourceError {
    SourceError::Refused(format!(
        "this engine makes a private scratch for each drill; \"{target}\" is not one it made"
    ))
}

/// A scratch database named by the drill's `to`, made and dropped through [`Scratch`].
struct NamedScratch<'a, S: ?Sized> {
    scratch: &'a S,
    to: String,
}

#[async_trait]
impl<S: Scratch + ?Sized> ScratchSpace for NamedScratch<'_, S> {
    fn target(&self) -> &str {
        &self.to
    }
    async fn row_counts(&mut self) -> Result<std::collections::BTreeMap<String, u64>, SourceError> {
        self.scratch.row_counts(&self.to).await
    }
    async fn check(&mut self, query: &str) -> Result<bool, SourceError> {
        self.scratch.check(&self.to, query).await
    }
    async fn remove(self: Box<Self>) -> Result<(), SourceError> {
        self.scratch.drop(&self.to).await
    }
}

/// A running dump: read `reader` to the end, then await `finish` to learn whether the
/// bytes read are a complete, valid dump (the tool's exit status) and what it held.
pub struct Dump {
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    pub finish: BoxFuture<'static, Result<DumpInfo, SourceError>>,
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Target as given with `--to` (a URL or a path, the engine says which).
    pub target: String,
    /// Replace existing objects instead of refusing a non-empty target.
    pub clean: bool,
    /// Do not restore ownership (needed when the target lacks the original roles).
    pub no_owner: bool,
    /// Restore only these objects ("name" or "schema.name"), into an existing database.
    pub tables: Vec<String>,
    /// Leave these objects out (the request's and, unless `--all-tables`, the backup's
    /// default excludes not named in `tables`).
    pub exclude_tables: Vec<String>,
    /// Say what would be restored; change nothing (but connect and check the target, and
    /// fail where the restore would).
    pub dry_run: bool,
    /// Create the target database when it does not exist (engines with databases).
    pub create: bool,
    /// A point-in-time restore of a physical base backup: where to stop and how the server
    /// fetches WAL. `None` for every other restore.
    pub recovery: Option<Recovery>,
}

/// A stored archive that can be read from its start more than once (selective restore
/// reads the table of contents before the data). Each stream is decompressed and checked.
#[async_trait]
pub trait Archive: Send + Sync {
    async fn open(&self) -> Result<Box<dyn AsyncRead + Send + Unpin>, SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot start {tool}: {reason}")]
    Spawn {
        tool: String,
        #[source]
        reason: SpawnReason,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: String,
        status: String,
        stderr: String,
    },
    /// A server stowage started stopped answering (boxed: it is the largest).
    #[error(transparent)]
    Lost(Box<ServerLost>),
    /// The request cannot be carried out as asked (a non-empty target, an unknown table).
    #[error("{0}")]
    Refused(String),
    /// The same, because of what the database said (`source`): the target is in use.
    #[error("{what} is in use: another process has it open ({source}); {fix}")]
    InUse {
        what: String,
        fix: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The stored backup could not be read (the destination's own error).
    #[error("{place}: {source}")]
    Archive {
        place: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The restore did its main work, but not all of it: what is missing and how to
    /// finish it by hand.
    #[error("{0}")]
    Incomplete(String),
    /// Output of a tool that stowage could not make sense of.
    #[error("{0}")]
    Protocol(String),
    /// Another error met on the way (a task that panicked, bytes that do not decode), with
    /// what stowage was doing.
    #[error("{context}: {source}")]
    Internal {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// This build of stowage lacks something the engine needs (a compile-time option of a
    /// library built into it): the library's own error, and how to build it with it.
    #[error("this stowage was built without {missing} ({source}); {fix}")]
    Build {
        missing: String,
        fix: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A server stowage started stopped answering: what it was asked, the error talking to
/// it, how it ended (when it did once stopped) and what it said.
#[derive(Debug, thiserror::Error)]
#[error(
    "{tool} failed ({asking}: {source}{}): {stderr}",
    .ended.as_ref().map(|s| format!("; {s}")).unwrap_or_default()
)]
pub struct ServerLost {
    pub tool: String,
    pub asking: String,
    #[source]
    pub source: std::io::Error,
    pub ended: Option<String>,
    pub stderr: String,
}

/// Why a tool could not be started. Its text is the whole reason in
/// [`SourceError::Spawn`]'s message; the OS's error, when there was one, is its source.
#[derive(Debug, thiserror::Error)]
pub enum SpawnReason {
    /// The program is not there (the OS said so, or a look at PATH found nothing): what
    /// to install instead of the OS's words.
    #[error("{hint}")]
    Missing {
        hint: String,
        #[source]
        source: Option<std::io::Error>,
    },
    /// The OS refused to start it.
    #[error("{0}")]
    Os(#[source] std::io::Error),
    /// The program's file could not be looked at.
    #[error("cannot read {program}: {source}")]
    Unreadable {
        program: String,
        #[source]
        source: std::io::Error,
    },
}

impl SpawnReason {
    /// A program found missing without asking the OS (a look at PATH, a file that is not
    /// executable): there is no OS error to keep.
    pub fn missing(hint: impl Into<String>) -> SpawnReason {
        SpawnReason::Missing {
            hint: hint.into(),
            source: None,
        }
    }
}

impl SourceError {
    /// Whether the engine refused the request before changing anything (nothing to verify
    /// or retry elsewhere: another copy would be refused the same way).
    pub fn is_refusal(&self) -> bool {
        matches!(self, SourceError::Refused(_) | SourceError::InUse { .. })
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> SourceError {
        SourceError::Io {
            context: context.into(),
            source,
        }
    }

    /// Another error (not an I/O error, see [`SourceError::io`]) with what was being done.
    pub fn internal(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> SourceError {
        SourceError::Internal {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

tokio::task_local! {
    /// Set by an engine at its commit point, for the restore under way in this task (restore
    /// scopes it around each step).
    pub(crate) static COMMITTING: Arc<std::sync::atomic::AtomicBool>;
}

/// An engine that applies all or nothing calls this just before the step that may make its
/// changes stick (sending COMMIT, renaming a file into place, creating a database): an
/// interrupted restore then no longer says that nothing was changed. Outside a restore
/// (a heal, a drill) it does nothing.
pub fn commit_point() {
    let _ = COMMITTING.try_with(|c| c.store(true, std::sync::atomic::Ordering::SeqCst));
}

/// The private directory (mode 0700, a fresh name) in which an engine's drill makes its
/// scratch (a file, a server's data), inside the drill's `to`, which must be a directory.
/// Its name carries the drill's process (`stowage-drill-<pid>-<start>-…`): what a killed
/// drill left in `to` is removed here first, when that process is gone and the directory
/// (never a link) belongs to this user.
pub fn scratch_dir(to: &str) -> Result<tempfile::TempDir, SourceError> {
    const PREFIX: &str = "stowage-drill-";
    if let Ok(entries) = std::fs::read_dir(to) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(PREFIX) else {
                continue;
            };
            let token: String = rest.splitn(3, '-').take(2).collect::<Vec<_>>().join("-");
            let mine = e.metadata().is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                // DirEntry::metadata does not follow a link: a link is never a dir here.
                m.is_dir() && m.uid() == rustix::process::geteuid().as_raw()
            });
            if mine && !crate::owner::token_alive(&token) {
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!(
                        "removed {}, left by a drill that was killed",
                        e.path().display()
                    ),
                    Err(err) => tracing::warn!(
                        "cannot remove {}, left by a killed drill: {err}",
                        e.path().display()
                    ),
                }
            }
        }
    }
    tempfile::Builder::new()
        .prefix(&format!(
            "{PREFIX}{}-",
            crate::owner::Owner::current().token()
        ))
        .tempdir_in(to)
        .map_err(|e| {
            SourceError::io(
                format!("cannot make a private directory in {to} (the drill's `to`: a directory)"),
                e,
            )
        })
}

#[cfg(test)]
mod wal_position_tests {
    use super::{RecoveryTarget, WalPosition, parse_lsn};

    #[test]
    fn lsns_parse_as_postgresql_writes_them() {
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
        for bad in ["", "0", "/1", "1/", "g/1", "1/2/3", "123456789/0", " 0/1"] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_backup_precedes_targets_after_its_end() {
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .expect("time")
                .with_timezone(&chrono::Utc)
        };
        let b = WalPosition {
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            stop_time: at("2026-12-05T08:00:00Z"),
        };
        let cases = [
            (RecoveryTarget::Latest, true),
            (RecoveryTarget::Name("before-upgrade".into()), true),
            (RecoveryTarget::Time(at("2026-12-05T08:00:00Z")), true),
            (RecoveryTarget::Time(at("2026-12-05T07:59:59Z")), false),
            (RecoveryTarget::Lsn("0/2000100".into()), true),
            (RecoveryTarget::Lsn("0/20000FF".into()), false),
            (RecoveryTarget::Lsn("1/0".into()), true),
            (RecoveryTarget::Lsn("nonsense".into()), false),
        ];
        for (target, want) in cases {
            assert_eq!(b.precedes(&target), want, "{target:?}");
        }
        assert_eq!(b.first_file().as_deref(), Some("000000010000000000000002"));
        let later = WalPosition {
            timeline: 3,
            start_lsn: "16/B374D848".into(),
            ..b
        };
        assert_eq!(
            later.first_file().as_deref(),
            Some("0000000300000016000000B3")
        );
    }
}
