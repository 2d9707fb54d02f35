//! The daemon's continuous archiving of one source: the engine's receiver writing into a
//! spool, and the shipper emptying it to every destination, side by side. A receiver that
//! stops (the server restarted, the network dropped) is started again with backoff; the
//! spool and the replication slot carry it over without a gap.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::WalStatus;
use crate::config::{Config, SourceConfig};
use crate::engine::Database;
use crate::storage::{self, Storage};

/// A source the daemon archives continuously.
pub struct Stream {
    pub job: String,
    pub source: String,
    pub db: Arc<dyn Database>,
}

/// Every continuously archived source of `config`, in job and source order.
pub fn streams(config: &Config) -> Vec<Stream> {
    let mut out = Vec::new();
    for (name, job) in &config.jobs {
        for source in &job.sources {
            if let SourceConfig::Database(db) = source
                && db.wal_source().is_some()
            {
                out.push(Stream {
                    job: name.clone(),
                    source: db.name().to_string(),
                    db: db.clone(),
                });
            }
        }
    }
    out
}

/// Where the WAL of every source waits to be shipped: `$STOWAGE_WAL_DIR`, else `wal/` in
/// the daemon's state directory `state_dir`. It must survive restarts (the receiver resumes from it)
/// and hold a few segments of 16 MiB: in the image, a volume (the state directory is
/// `/tmp`, a small tmpfs).
pub fn spool_root(state_dir: &Path) -> PathBuf {
    match std::env::var_os("STOWAGE_WAL_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => state_dir.join("wal"),
    }
}

/// One source's spool under `root`.
pub fn spool_dir(root: &Path, job: &str, source: &str) -> PathBuf {
    root.join(job).join(source)
}

/// A receiver that has run this long is taken as healthy: its failures are forgotten.
const HEALTHY: Duration = Duration::from_secs(60);

/// A failed receiver waits this long before the next start: 1, 2, 4 … 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs((1u64 << failures.min(6)).min(60))
}

/// Receive and ship `stream` until `stop`; then one last shipping pass.
pub async fn run(
    config: Arc<Config>,
    stream: Stream,
    spool: PathBuf,
    status: watch::Sender<WalStatus>,
    stop: CancellationToken,
) {
    let Some(job) = config.jobs.get(&stream.job) else {
        return;
    };
    let Some(ws) = stream.db.wal_source() else {
        return;
    };
    let (job_name, source) = (&stream.job, &stream.source);
    if let Err(e) = make_spool(&spool) {
        error!(
            job = %job_name,
            "cannot archive WAL of {job_name}/{source}: cannot create the spool {}: {e}; check the state directory's permissions",
            spool.display()
        );
        return;
    }
    // Opened for each stretch of shipping, closed while the database is quiet (`ship`).
    let open = || {
        let config = config.clone();
        let job_name = job_name.clone();
        async move {
            let Some(job) = config.jobs.get(&job_name) else {
                return super::Opened::new();
            };
            storage::open_job(&config, job)
                .await
                .into_iter()
                .map(|js| (js.name.to_string(), Arc::<dyn Storage>::from(js.storage)))
                .collect()
        }
    };
    let receive = async {
        let mut failures = 0u32;
        loop {
            info!(
                job = %job_name,
                "receiving WAL of {job_name}/{source} into {}",
                spool.display()
            );
            let started = Instant::now();
            let receiving = ws.receive(&spool);
            tokio::pin!(receiving);
            let healthy = tokio::time::sleep(HEALTHY);
            tokio::pin!(healthy);
            let mut cleared = false;
            let outcome = loop {
                tokio::select! {
                    r = &mut receiving => break r,
                    () = &mut healthy, if !cleared => {
                        cleared = true;
                        status.send_if_modified(|s| {
                            let was = s.receiver_error.is_some();
                            s.receiver_error = None;
                            s.receiver_failing_since = None;
                            was
                        });
                    }
                    () = stop.cancelled() => return,
                }
            };
            // A receiver that ran a while was healthy: start counting again.
            if started.elapsed() > HEALTHY {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            let wait = backoff(failures);
            let why = match &outcome {
                Err(e) => e.to_string(),
                Ok(()) => "the stream ended".to_string(),
            };
            status.send_modify(|s| {
                s.receiver_error = Some(format!("the WAL receiver stopped: {why}"));
                s.receiver_failing_since
                    .get_or_insert_with(chrono::Utc::now);
            });
            match outcome {
                Err(e) => warn!(
                    job = %job_name,
                    "WAL receiver of {job_name}/{source} stopped: {e}; starting again in {} s",
                    wait.as_secs()
                ),
                Ok(()) => warn!(
                    job = %job_name,
                    "WAL receiver of {job_name}/{source} ended; starting again in {} s",
                    wait.as_secs()
                ),
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stop.cancelled() => return,
            }
        }
    };
    let ship = super::ship(
        job,
        source,
        &spool,
        open,
        ws.flush_interval(),
        &status,
        stop.cancelled(),
    );
    tokio::join!(receive, ship);
}

fn make_spool(spool: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(spool)?;
    // WAL holds every row written: the daemon's eyes only.
    std::fs::set_permissions(spool, std::fs::Permissions::from_mode(0o700))
}

#[cfg(test)]
mod tests {
    use super::{backoff, spool_dir};
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn receivers_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=8).map(|f| backoff(f).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(0), Duration::from_secs(1));
    }

    #[test]
    fn each_source_has_its_own_spool() {
        assert_eq!(
            spool_dir(Path::new("/var/lib/stowage/wal"), "pitr", "db"),
            Path::new("/var/lib/stowage/wal/pitr/db")
        );
    }
}
