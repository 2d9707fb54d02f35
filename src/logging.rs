//! Logs go to stdout (what `docker logs` shows) and, when `log.dir` is set, to rolling
//! files there as well, for a shared log volume.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation as AppenderRotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::config::{LogConfig, LogFormat, Rotation};

/// Lines queued for the log file's writer thread.
const LOG_QUEUE_LINES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log.level: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    #[error("log.dir: cannot write log files in {dir:?}: {reason}")]
    Dir {
        dir: std::path::PathBuf,
        reason: String,
    },
}

/// Where console output goes: the daemon and `run` log to stdout for `docker logs`;
/// commands whose stdout is their answer (`list`, `check-config`) log to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    Stdout,
    Stderr,
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

pub fn init(cfg: &LogConfig, console: Console) -> Result<Option<WorkerGuard>, LogError> {
    // The scheduler library logs its own housekeeping at INFO ("Job creator created"...);
    // keep it at WARN unless the user's filter names it.
    let directives = if cfg.level.contains("tokio_cron_scheduler") {
        cfg.level.clone()
    } else {
        format!("{},tokio_cron_scheduler=warn", cfg.level)
    };
    let filter = || EnvFilter::try_new(&directives).map_err(LogError::Filter);
    let mut layers: Vec<BoxedLayer> = Vec::new();

    let console_layer: BoxedLayer = match (cfg.format, console) {
        (LogFormat::Json, Console::Stdout) => {
            fmt::layer().json().with_writer(std::io::stdout).boxed()
        }
        (LogFormat::Json, Console::Stderr) => {
            fmt::layer().json().with_writer(std::io::stderr).boxed()
        }
        (LogFormat::Text, Console::Stdout) => fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stdout)
            .boxed(),
        (LogFormat::Text, Console::Stderr) => fmt::layer()
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed(),
    };
    layers.push(console_layer.with_filter(filter()?).boxed());

    let mut guard = None;
    if let Some(dir) = &cfg.dir {
        let rotation = match cfg.rotation {
            Rotation::Daily => AppenderRotation::DAILY,
            Rotation::Hourly => AppenderRotation::HOURLY,
            Rotation::Never => AppenderRotation::NEVER,
        };
        std::fs::create_dir_all(dir).map_err(|e| LogError::Dir {
            dir: dir.clone(),
            reason: crate::units::io_reason(&e),
        })?;
        let appender = Builder::new()
            .rotation(rotation)
            .filename_prefix("stowage")
            .filename_suffix("log")
            .max_log_files(cfg.keep_files)
            .build(dir)
            .map_err(|e| LogError::Dir {
                dir: dir.clone(),
                reason: e.to_string().to_lowercase(),
            })?;
        // Not the default queue of 128,000 lines: it is allocated and touched whole up
        // front, 4 MiB of anonymous memory for the life of the daemon (measured in the
        // container: the largest thing an idle daemon held). 256 lines (8 KiB, also touched
        // whole) is more than a run logs at once; when full, logging waits for the disk
        // rather than drop lines.
        let (writer, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .buffered_lines_limit(LOG_QUEUE_LINES)
            .lossy(false)
            .finish(appender);
        guard = Some(g);
        let file_layer: BoxedLayer = match cfg.format {
            LogFormat::Json => fmt::layer().json().with_writer(writer).boxed(),
            LogFormat::Text => fmt::layer().with_ansi(false).with_writer(writer).boxed(),
        };
        layers.push(file_layer.with_filter(filter()?).boxed());
    }

    // A second init (tests calling commands in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(guard)
}
