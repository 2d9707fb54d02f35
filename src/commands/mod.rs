//! One file per subcommand. Each returns the process exit code; errors a user can fix
//! are printed as one clear message, never a panic or a backtrace.

pub mod check_config;
pub mod copy;
pub mod daemon;
pub mod download;
pub mod drill;
pub mod forget;
pub mod heal;
pub mod health;
pub mod list;
pub mod restore;
pub mod retrieve;
pub mod run;
pub mod status;
pub mod verify;
pub mod wal_fetch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Exit codes: 0 success, 1 the operation failed, 2 bad config or usage, 3 the daemon's
/// stop cut work short (a running backup abandoned, nothing of it published; or retention
/// interrupted after its backup was published), 4 a restore from an archive destination
/// waits for a retrieval (requested; run it again later), or a download or a copy from one
/// waits for a retrieval (see `stowage retrieve`).
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;
pub const EXIT_ABANDONED: i32 = 3;
pub const EXIT_PENDING: i32 = 4;
/// Stopped by SIGINT/SIGTERM (128 + SIGINT, as a shell reports Ctrl-C).
pub const EXIT_INTERRUPTED: i32 = 130;
/// `wal-fetch` failed other than by the file not being shipped: PostgreSQL aborts
/// recovery on an exit code above 125 rather than taking the file as not available.
pub const EXIT_WAL_ABORT: i32 = 255;

#[derive(Debug, Parser)]
#[command(
    name = "stowage",
    version,
    about = "Streaming database backups for docker compose stacks"
)]
pub struct Cli {
    /// Config file (.toml, .yaml or .yml)
    #[arg(
        long,
        short,
        global = true,
        env = "STOWAGE_CONFIG",
        default_value = "/config/stowage.toml"
    )]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process and matched at once: boxing `restore`'s flags would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run every job on its schedule until SIGTERM/SIGINT (the container's command)
    Daemon,
    /// Run one job now, in the foreground; exit 0 only if published everywhere
    Run {
        /// Job name, as in [jobs.NAME]
        job: String,
        /// When another process (the daemon) is running this job, wait for it to finish
        /// instead of refusing
        #[arg(long)]
        wait_lock: bool,
        /// Check every source and destination (reachable, writable) and say what would be
        /// dumped, uploaded and what retention would delete; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// List published backups per destination, newest first
    List {
        /// Only this job
        job: Option<String>,
        /// Only backups that hold this table or collection ("orders" or "public.orders"),
        /// as recorded in their manifests
        #[arg(long, value_name = "OBJECT")]
        holding: Option<String>,
        /// One JSON document on stdout, per job and destination, with stable fields (see
        /// the README's "list --json")
        #[arg(long)]
        json: bool,
    },
    /// Write one database source of a backup as its standard file (the pg_dump -Fc
    /// archive, the SQL text, the .rdb, ...): decrypted, decompressed and checked against
    /// the manifest, for tools outside stowage
    #[command(after_help = "Examples:\n  \
        stowage download app latest --only db -o /restore/app.pgdump\n  \
        pg_restore -d postgres://postgres@db/app_copy /restore/app.pgdump\n  \
        stowage download app 20261122 --only db -o - | pg_restore -l")]
    Download {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest")]
        id: String,
        /// The source to write (a database source; files sources are restored with
        /// `restore --only SOURCE --files-to DIR`)
        #[arg(long, value_name = "SOURCE")]
        only: String,
        /// The file to write ("-": stdout); it appears only once complete and verified,
        /// replacing an existing file
        #[arg(long, short, value_name = "FILE")]
        output: PathBuf,
        /// Destination to read (default: the first of the job's destinations that has the backup)
        #[arg(long)]
        from: Option<String>,
        /// age identity file for an encrypted backup (default: the job's identity_file or
        /// passphrase_file)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Read a backup whose manifest fails the job's auth_key_file (or that is clear
        /// where the job encrypts) anyway: disaster recovery only
        #[arg(long)]
        trust_unauthenticated: bool,
    },
    /// Restore a backup: its database (into --to), then its files (in place, or --files-to)
    #[command(after_help = "Examples:\n  \
        stowage restore app latest --to postgres://postgres@db:5432/app --clean\n  \
        stowage restore app latest --only uploads --dry-run\n  \
        stowage restore app latest --only uploads --path invoices --path \"*.pdf\" --keep-extra\n  \
        stowage restore app 20261122 --only db --to postgres://postgres@db/app --table orders\n  \
        stowage restore app latest --to db=postgres://postgres@db/app --to cache=/restore/dump.rdb\n  \
        stowage restore pitr --time \"2026-12-05 08:14:03+01\" --to-dir /var/lib/postgresql/data")]
    Restore {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest")]
        id: String,
        /// Where a database goes: its URL or file, as the engine takes it; with several
        /// databases, SOURCE=TARGET for each (repeatable)
        #[arg(long, value_name = "[SOURCE=]TARGET")]
        to: Vec<String>,
        /// Destination to restore from (default: the first of the job's destinations that has the backup)
        #[arg(long)]
        from: Option<String>,
        /// Restore only this source (repeatable; default: all, databases first)
        #[arg(long, value_name = "SOURCE")]
        only: Vec<String>,
        /// Drop and replace the backup's objects in a non-empty target
        #[arg(long)]
        clean: bool,
        /// With --clean, allow the target to be the source's own live database (the one
        /// the backup was taken from): its objects are dropped and replaced by the backup's
        #[arg(long, requires = "clean")]
        force_into_source: bool,
        /// Skip ownership and privileges (when the target lacks the original roles)
        #[arg(long)]
        no_owner: bool,
        /// Restore only this table ("name" or "schema.name"; repeatable) into an existing database
        #[arg(long, value_name = "TABLE")]
        table: Vec<String>,
        /// Do not restore this table (repeatable)
        #[arg(long, value_name = "TABLE")]
        exclude_table: Vec<String>,
        /// Also restore the tables the job marks as exclude_tables
        #[arg(long)]
        all_tables: bool,
        /// Restore files into this directory (default: the source's path)
        #[arg(long, value_name = "DIR")]
        files_to: Option<PathBuf>,
        /// Move local files the backup lacks here (default: DIR/../orphan_files)
        #[arg(long, value_name = "DIR")]
        orphans_to: Option<PathBuf>,
        /// Leave local files the backup lacks where they are (default: moved to the
        /// orphans)
        #[arg(long)]
        keep_extra: bool,
        /// Restore only the files this glob matches ("*.jpg", "invoices", "media/2026/**";
        /// repeatable); the rest of the directory is neither restored nor moved
        #[arg(long = "path", value_name = "PATTERN")]
        paths: Vec<String>,
        /// Print what would be fetched, replaced and moved; change nothing
        #[arg(long)]
        dry_run: bool,
        /// From an archive destination (GLACIER, DEEP_ARCHIVE): wait for the retrieval,
        /// then restore (default: request it and exit 4)
        #[arg(long)]
        wait: bool,
        /// Keep the downloaded objects in DIR and read them from there next time, so a
        /// restore can be repeated without another retrieval
        #[arg(long, value_name = "DIR")]
        download_to: Option<PathBuf>,
        /// age identity file for an encrypted backup (default: the job's identity_file or
        /// passphrase_file)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Create the target database when it does not exist
        #[arg(long)]
        create: bool,
        /// When another process is backing up or restoring this job, wait for it to finish
        /// instead of refusing
        #[arg(long)]
        wait_lock: bool,
        /// Restore files with their setuid, setgid and sticky bits (default: dropped)
        #[arg(long)]
        keep_special_modes: bool,
        /// Read a backup whose manifest fails the job's auth_key_file (or that is clear
        /// where the job encrypts) anyway: disaster recovery only
        #[arg(long)]
        trust_unauthenticated: bool,
        /// Physical PostgreSQL: recover to this time, with its offset ("2026-12-05
        /// 08:14:03+01"); the base backup is the newest that ended before it
        #[arg(long, value_name = "TIME", group = "point")]
        time: Option<String>,
        /// Physical PostgreSQL: recover to this LSN ("0/3000060")
        #[arg(long, value_name = "LSN", group = "point")]
        lsn: Option<String>,
        /// Physical PostgreSQL: recover to this restore point (pg_create_restore_point)
        #[arg(long = "name", value_name = "RESTORE_POINT", group = "point")]
        restore_point: Option<String>,
        /// Physical PostgreSQL: replay all archived WAL (the default)
        #[arg(long, group = "point")]
        latest: bool,
        /// Physical PostgreSQL: the data directory to restore into (empty, or with --clean);
        /// the same as --to DIR
        #[arg(long, value_name = "DIR")]
        to_dir: Option<PathBuf>,
        /// Physical PostgreSQL: fetch the WAL now into DIR/stowage_wal (checked) and have
        /// the server copy it from there, for a server that cannot run stowage (a postgres
        /// container); by default the server runs `stowage wal-fetch`
        #[arg(long)]
        copy_wal: bool,
    },
    /// Copy published backups of a job from one of its destinations to another: every
    /// object checked against its manifest on the way, blobs the target has not copied
    /// again, the manifest written last; exit 0 when every requested backup is on the
    /// target
    #[command(after_help = "Examples:\n  \
        stowage copy app latest --from local --to offsite\n  \
        stowage copy app --all --from local --to offsite --dry-run\n  \
        stowage copy app 20261122 --from offsite --to local\n\n\
        Exit codes: 0 every requested backup is on the target, 1 a backup was not copied, \
        2 bad usage, 4 the source is an archive class and its objects wait for \
        `stowage retrieve`")]
    Copy {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest", conflicts_with = "all")]
        id: String,
        /// Every backup on --from that --to lacks, oldest first
        #[arg(long)]
        all: bool,
        /// Destination to copy from (one of the job's)
        #[arg(long)]
        from: String,
        /// Destination to copy to (one of the job's)
        #[arg(long)]
        to: String,
        /// Say which backups, objects and bytes would be copied; change nothing
        #[arg(long)]
        dry_run: bool,
        /// age identity file, to check the file blobs of an encrypted backup (default: the
        /// job's identity_file)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
    },
    /// Delete one backup: its manifest first, then its objects, then the file blobs no
    /// other backup references; refuses the newest backup of a destination without --force
    #[command(after_help = "Examples:\n  \
        stowage forget app 20261122T030000 --dry-run\n  \
        stowage forget app 20261122T030000 --from offsite\n  \
        stowage forget app latest --from local --force\n\n\
        Exit codes: 0 deleted, 1 failed or refused (the job is busy, the backup is under \
        Object Lock), 2 bad usage or refused without --force (the newest backup of a \
        destination, or one younger than its minimum storage duration)")]
    Forget {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest" (then with --force: it is
        /// the newest)
        id: String,
        /// Only this destination (default: every destination of the job that has it)
        #[arg(long)]
        from: Option<String>,
        /// Delete the newest backup of a destination, or one younger than its minimum
        /// storage duration (Object Lock is never overridden)
        #[arg(long)]
        force: bool,
        /// List what would be deleted; change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Where a backup on an archive destination stands: how many objects a restore needs
    /// are exists / available / pending / ready / local
    Status {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        scope: Scope,
        /// List every object with its state
        #[arg(long, short)]
        verbose: bool,
    },
    /// Request the retrieval of the objects a restore of this backup needs from an archive
    /// destination (asking again is harmless)
    Retrieve {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest")]
        id: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Re-read backups and check them against their manifests: sizes, sha256, the dump
    /// through its engine's reader, every blob of a files index; exit 1 if anything is
    /// missing, corrupt or unreadable
    Verify {
        /// Job name
        job: String,
        /// Backup id (or a unique prefix of one), or "latest"
        #[arg(default_value = "latest", conflicts_with = "all")]
        id: String,
        /// Every published backup
        #[arg(long)]
        all: bool,
        /// Only this destination (default: every destination of the job)
        #[arg(long)]
        from: Option<String>,
        /// age identity file, to read encrypted backups through (default: the job's
        /// identity_file; without one, encrypted objects are checked by size and sha256)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Also read back every blob of a files source, decrypted and decompressed as a
        /// restore does, and check its size and sha256 (default: only that it exists)
        #[arg(long)]
        read_data: bool,
        /// Like --read-data, for a random share of the blobs, e.g. 10%
        #[arg(long, value_name = "PERCENT", conflicts_with = "read_data",
              value_parser = crate::verify::ReadData::parse)]
        read_data_subset: Option<crate::verify::ReadData>,
        /// Read a backup whose manifest fails the job's auth_key_file (or that is clear
        /// where the job encrypts) anyway: disaster recovery only
        #[arg(long)]
        trust_unauthenticated: bool,
    },
    /// Restore the newest backup into the job's scratch database ([jobs.NAME.drill]),
    /// compare its tables and row counts with the backup's, run the checks, drop it;
    /// exit 1 if the drill fails
    Drill {
        /// Job name
        job: String,
        /// age identity file for an encrypted backup (default: the job's identity_file)
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Read a backup whose manifest fails the job's auth_key_file (or that is clear
        /// where the job encrypts) anyway: disaster recovery only
        #[arg(long)]
        trust_unauthenticated: bool,
    },
    /// Check the job's watched tables now and restore the missing ones from the newest
    /// backups that hold them ([jobs.NAME.heal]); exit 1 if any could not be restored
    Heal {
        /// Job name
        job: String,
        /// Say what is missing and where it would come from; restore nothing
        #[arg(long)]
        dry_run: bool,
        /// Read a backup whose manifest fails the job's auth_key_file (or that is clear
        /// where the job encrypts) anyway: disaster recovery only
        #[arg(long)]
        trust_unauthenticated: bool,
    },
    /// Validate the config and print a summary; reads nothing but the config
    CheckConfig {
        /// Also connect: every job's sources and destinations reachable (and writable), as
        /// `run --dry-run` checks them
        #[arg(long)]
        connect: bool,
    },
    /// Exit 0 when the config is valid and a daemon is running (for HEALTHCHECK)
    Health,
    /// Fetch one shipped WAL file, checked, for PostgreSQL's restore_command
    /// (`stowage wal-fetch JOB %f %p`); exit 1 when no destination has it, 255 when it is
    /// damaged or a destination cannot be read (PostgreSQL then stops recovery)
    #[command(after_help = "Example (postgresql.conf or recovery settings):\n  \
        restore_command = 'stowage --config /config/stowage.toml wal-fetch pitr %f %p'\n\n\
        Exit codes: 0 written, 1 not shipped to any destination, 255 damaged, unreadable \
        or misconfigured (recovery must stop)")]
    WalFetch {
        /// Job name
        job: String,
        /// The WAL file's name (%f)
        name: String,
        /// Where to write it (%p; relative to the working directory, the data directory)
        path: PathBuf,
        /// Destination to read (default: the first of the job's destinations that has it)
        #[arg(long)]
        from: Option<String>,
        /// The source whose WAL it is (default: the job's WAL source)
        #[arg(long, value_name = "SOURCE")]
        source: Option<String>,
    },
}

/// Which part of a backup `status` and `retrieve` look at: what the same restore would need.
#[derive(Debug, Clone, clap::Args)]
pub struct Scope {
    /// Destination (default: the first of the job's destinations that has the backup)
    #[arg(long)]
    pub from: Option<String>,
    /// Only this source (repeatable; default: all)
    #[arg(long, value_name = "SOURCE")]
    pub only: Vec<String>,
    /// Where files would be restored (default: the source's path): files already there
    /// with the backup's content count as "exists" and are never retrieved
    #[arg(long, value_name = "DIR")]
    pub files_to: Option<PathBuf>,
    /// Objects already downloaded here (restore --download-to) count as "local"
    #[arg(long, value_name = "DIR")]
    pub download_to: Option<PathBuf>,
    /// age identity file, for the index of an encrypted files source
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
}

impl Scope {
    /// Load the config, start logging, and run `f` on the survey request; Err is the exit
    /// code, the error already printed.
    fn run<T, F, Fut>(&self, path: &std::path::Path, job: &str, id: &str, f: F) -> Result<T, i32>
    where
        F: FnOnce(std::sync::Arc<crate::config::Config>, crate::restore::SurveyRequest) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::restore::RestoreError>>,
    {
        let (config, _guard) = start(path, crate::logging::Console::Stderr)?;
        let rt = runtime().ok_or(EXIT_FAILED)?;
        rt.block_on(f(std::sync::Arc::new(config), self.survey(job, id)))
            .map_err(|e| {
                eprintln!("error: {e}");
                match e {
                    crate::restore::RestoreError::Usage(_) => EXIT_CONFIG,
                    _ => EXIT_FAILED,
                }
            })
    }

    fn survey(&self, job: &str, id: &str) -> crate::restore::SurveyRequest {
        crate::restore::SurveyRequest {
            job: job.to_string(),
            id: id.to_string(),
            from: self.from.clone(),
            only: self.only.clone(),
            files_to: self.files_to.clone(),
            download_to: self.download_to.clone(),
            identity: self.identity.clone(),
        }
    }
}

pub fn run(cli: Cli) -> i32 {
    crate::footprint::map_large_blocks();
    match cli.command {
        Command::CheckConfig { connect } => check_config::run(&cli.config, connect),
        Command::Health => health::run(&cli.config),
        Command::Daemon => {
            // The daemon only: a one-off run or restore keeps glibc's arenas (src/footprint.rs).
            crate::footprint::limit_arenas();
            daemon::run(&cli.config)
        }
        Command::Run {
            job, dry_run: true, ..
        } => run::dry_run(&cli.config, &job),
        Command::Run { job, wait_lock, .. } => {
            run::run(&cli.config, &job, crate::pipeline::RunOptions { wait_lock })
        }
        Command::Heal {
            job,
            dry_run,
            trust_unauthenticated,
        } => heal::run(&cli.config, &job, dry_run, trust_unauthenticated),
        Command::List { job, holding, json } => {
            list::run(&cli.config, job.as_deref(), holding.as_deref(), json)
        }
        Command::Download {
            job,
            id,
            only,
            output,
            from,
            identity,
            trust_unauthenticated,
        } => download::run(
            &cli.config,
            download::Request {
                job,
                id,
                only,
                output,
                from,
                identity,
                trust_unauthenticated,
            },
        ),
        command @ Command::Restore { .. } => match restore_request(command) {
            Some(request) => restore::run(&cli.config, request),
            None => EXIT_FAILED,
        },
        Command::Status {
            job,
            id,
            scope,
            verbose,
        } => status::run(&cli.config, &job, &id, &scope, verbose),
        Command::Retrieve { job, id, scope } => retrieve::run(&cli.config, &job, &id, &scope),
        command @ (Command::Verify { .. } | Command::Copy { .. } | Command::Forget { .. }) => {
            curate(&cli.config, command)
        }
        Command::Drill {
            job,
            identity,
            trust_unauthenticated,
        } => drill::run(&cli.config, &job, identity.as_ref(), trust_unauthenticated),
        Command::WalFetch {
            job,
            name,
            path,
            from,
            source,
        } => wal_fetch::run(
            &cli.config,
            &job,
            crate::wal::fetch::Request {
                name,
                path,
                from,
                source,
            },
        ),
    }
}

/// `verify`, `copy` and `forget`: their arguments as the modules below take them.
fn curate(config: &std::path::Path, command: Command) -> i32 {
    match command {
        Command::Verify {
            job,
            id,
            all,
            from,
            identity,
            read_data,
            read_data_subset,
            trust_unauthenticated,
        } => verify::run(
            config,
            &job,
            if all {
                crate::verify::Which::All
            } else {
                crate::verify::Which::One(id)
            },
            from.as_deref(),
            identity.as_ref(),
            crate::verify::Options {
                read_data: match (read_data, read_data_subset) {
                    (true, _) => crate::verify::ReadData::All,
                    (false, Some(share)) => share,
                    (false, None) => crate::verify::ReadData::None,
                },
                trust_unauthenticated,
            },
        ),
        Command::Copy {
            job,
            id,
            all,
            from,
            to,
            dry_run,
            identity,
        } => copy::run(
            config,
            crate::curate::copy::Request {
                job,
                which: if all {
                    crate::curate::copy::Which::All
                } else {
                    crate::curate::copy::Which::One(id)
                },
                from,
                to,
                dry_run,
                identity,
            },
        ),
        Command::Forget {
            job,
            id,
            from,
            force,
            dry_run,
        } => forget::run(
            config,
            crate::curate::forget::Request {
                job,
                id,
                from,
                force,
                dry_run,
            },
        ),
        // `run` hands only the three above here.
        _ => EXIT_CONFIG,
    }
}

/// The request of a `restore` command, as the restore module takes it; `None` for any other
/// command.
fn restore_request(command: Command) -> Option<crate::restore::RestoreRequest> {
    let Command::Restore {
        job,
        id,
        to,
        from,
        only,
        clean,
        force_into_source,
        no_owner,
        table,
        exclude_table,
        all_tables,
        files_to,
        orphans_to,
        keep_extra,
        paths,
        dry_run,
        wait,
        download_to,
        identity,
        create,
        wait_lock,
        keep_special_modes,
        trust_unauthenticated,
        time,
        lsn,
        restore_point,
        latest,
        to_dir,
        copy_wal,
    } = command
    else {
        return None;
    };
    let mut to = to;
    to.extend(to_dir.map(|d| d.display().to_string()));
    Some(crate::restore::RestoreRequest {
        job,
        id,
        to,
        from,
        only,
        clean,
        no_owner,
        tables: table,
        exclude_tables: exclude_table,
        all_tables,
        files_to,
        orphans_to,
        dry_run,
        wait,
        download_to,
        identity,
        wait_lock,
        create,
        keep_special_modes,
        trust_unauthenticated,
        fallback: false,
        point: crate::restore::Point {
            time,
            lsn,
            name: restore_point,
            latest,
        },
        copy_wal,
        force_into_source,
        keep_extra,
        paths,
    })
}

/// Load the config or print why not; `None` means exit with [`EXIT_CONFIG`].
pub(crate) fn load_config(path: &std::path::Path) -> Option<crate::config::Config> {
    match crate::load::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e}");
            None
        }
    }
}

pub(crate) fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("received SIGTERM"),
                    _ = int.recv() => tracing::info!("received SIGINT"),
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Completes on the first SIGTERM or SIGINT, with its name. Sent to the process alone (a
/// supervisor, `kill`), not to its terminal's process group, the tools it runs do not see
/// it: the command must stop them itself.
pub(crate) async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            return tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    "SIGINT"
}

/// SIGTERM/SIGINT (stop) and SIGHUP (reload) as a stream, for the daemon: it needs to see
/// a second stop signal too. Must be called inside the runtime.
pub(crate) fn signals() -> tokio::sync::mpsc::Receiver<crate::daemon::Signal> {
    use crate::daemon::Signal;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                loop {
                    let s = tokio::select! {
                        _ = term.recv() => Signal::Stop("SIGTERM"),
                        _ = int.recv() => Signal::Stop("SIGINT"),
                        _ = hup.recv() => Signal::Reload,
                    };
                    if tx.send(s).await.is_err() {
                        return;
                    }
                }
            }
        }
        while tokio::signal::ctrl_c().await.is_ok() {
            if tx.send(Signal::Stop("interrupt")).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// The config, with logging started: how every command that does work begins. Err is the
/// exit code, the error already printed.
pub(crate) fn start(
    path: &std::path::Path,
    console: crate::logging::Console,
) -> Result<
    (
        crate::config::Config,
        Option<tracing_appender::non_blocking::WorkerGuard>,
    ),
    i32,
> {
    let config = load_config(path).ok_or(EXIT_CONFIG)?;
    let guard = init_logging(&config, console)?;
    Ok((config, guard))
}

/// How a command about one job begins: config, logging, the job named on the command
/// line, a runtime; then `f`, whose exit code is the command's. Each failure before `f` is
/// printed and gives its exit code.
pub(crate) fn with_job(
    path: &std::path::Path,
    console: crate::logging::Console,
    name: &str,
    f: impl FnOnce(&crate::config::Config, &crate::config::Job, &tokio::runtime::Runtime) -> i32,
) -> i32 {
    let (config, _guard) = match start(path, console) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let job = match crate::restore::find_job(&config, name) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    match runtime() {
        Some(rt) => f(&config, job, &rt),
        None => EXIT_FAILED,
    }
}

pub(crate) fn init_logging(
    config: &crate::config::Config,
    console: crate::logging::Console,
) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>, i32> {
    let guard = crate::logging::init(&config.log, console).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_CONFIG
    })?;
    for w in &config.warnings {
        tracing::warn!("config {}: {w}", config.path.display());
    }
    Ok(guard)
}
