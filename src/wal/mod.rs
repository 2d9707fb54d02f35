//! Continuous WAL shipping: what an engine's `WalSource` leaves in a spool directory goes,
//! compressed and encrypted the job's way, to every destination of the job, each file with
//! its record (`repo::wal`); a file leaves the spool only once every destination has it.
//! `fetch` reads it back for PostgreSQL's `restore_command`. Engine-agnostic: files and
//! destinations only.
//!
//! Spool contents (as `pg_receivewal` writes them): completed segments under their 24-hex
//! names (they appear by rename, whole and flushed), the segment being written as
//! `<name>.partial`, timeline history files `<8 hex>.history`; anything else is ignored.

pub mod chain;
pub mod fetch;
pub mod keep;
pub mod run;

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::codec::Reader;
use crate::config::Job;
use crate::dirwatch::{DirWatch, WatchFlags};
use crate::repo::Form;
use crate::repo::wal::{self, WalError, WalNames, WalRecord, is_wal_name};
use crate::storage::{Chunk, Storage, StorageError};
use crate::units::human_bytes;

/// The job's destinations, opened, in the job's order: (name, storage).
pub type Destinations = [(String, Arc<dyn Storage>)];

/// The job's destinations as `ship`'s `open` returns them.
pub type Opened = Vec<(String, Arc<dyn Storage>)>;

/// After this long with everything shipped and the spool unchanged, the shipper closes its
/// destinations (an S3 client holds its TLS roots, connection pool and configuration:
/// ~0.5 MiB of heap that an idle daemon should not carry) and opens them again on the next
/// change. Longer than `wal_flush`, so a database written every few seconds keeps its
/// connections; shorter than the daemon's wait before it gives memory back (`footprint`),
/// so what is closed is returned then.
const KEEP_OPEN: Duration = Duration::from_secs(30);

/// How shipping stands, for the status page and `stowage_wal_lag_seconds`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalStatus {
    /// The last WAL file stored on every destination, and when.
    pub last_shipped: Option<String>,
    pub last_shipped_at: Option<DateTime<Utc>>,
    /// When the partial segment was last stored on every destination.
    pub partial_shipped_at: Option<DateTime<Utc>>,
    /// Completed files in the spool that some destination still lacks.
    pub pending: usize,
    /// The last failure, until a pass ships everything (`None` then).
    pub last_error: Option<String>,
    /// When the oldest data not yet on every destination was written (the mtime of the
    /// oldest pending file, or of a changed partial segment not yet shipped).
    pub oldest_unshipped: Option<DateTime<Utc>>,
    /// Why the receiver last stopped, while it keeps failing (cleared once a receiver has
    /// run a minute): a stopped receiver ships nothing and would look like an idle database.
    pub receiver_error: Option<String>,
    /// Since when the receiver has kept failing.
    pub receiver_failing_since: Option<DateTime<Utc>>,
    /// When the pass under way began (none between passes). The shipper reports only when
    /// it works, and sleeps while the spool does not change: a pass that never ends is how
    /// a stuck shipper shows.
    pub passing_since: Option<DateTime<Utc>>,
}

impl WalStatus {
    /// How far shipping is behind at `now`: zero when nothing waits.
    pub fn lag(&self, now: DateTime<Utc>) -> Duration {
        self.oldest_unshipped
            .and_then(|t| (now - t).to_std().ok())
            .unwrap_or_default()
    }
}

/// Ship `source`'s WAL from `spool` to `destinations` until `shutdown` completes, then make
/// one last pass (the partial segment included) and return. Completed files are scanned
/// for every second while some are pending, every `flush` otherwise; the partial segment
/// is shipped every `flush` when its content changed. `status` is updated after each pass.
/// Dropping the future is safe at any point: what was not shipped stays in the spool, and
/// shipping a file again after a restart only rewrites the same object and record.
pub async fn ship<F: Future<Output = Opened>>(
    job: &Job,
    source: &str,
    spool: &Path,
    open: impl Fn() -> F,
    flush: Duration,
    status: &watch::Sender<WalStatus>,
    shutdown: impl Future<Output = ()>,
) {
    let shipper = Shipper::new(job, source, spool, open().await, flush);
    keep_shipping(shipper, open, status, shutdown).await;
}

/// `ship` with a `shipper` made.
async fn keep_shipping<F: Future<Output = Opened>>(
    mut shipper: Shipper<'_>,
    open: impl Fn() -> F,
    status: &watch::Sender<WalStatus>,
    shutdown: impl Future<Output = ()>,
) {
    let (job, source, flush) = (shipper.job, shipper.source, shipper.flush);
    let spool = shipper.spool.clone();
    // Made before the first pass: what changes during a pass is seen after it.
    // What a writer does; not the shipper's own reads and deletes.
    let mut changes = DirWatch::new(
        &spool,
        WatchFlags::CREATE
            | WatchFlags::MODIFY
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::MOVED_TO
            | WatchFlags::ATTRIB,
    );
    tokio::pin!(shutdown);
    let mut failures: u32 = 0;
    'shipping: loop {
        let outcome = tokio::select! {
            o = async {
                shipper.reopen(&open).await;
                shipper.pass(false, status).await
            } => o,
            () = &mut shutdown => break,
        };
        shipper.publish(status, &outcome);
        let wait = if outcome.failed {
            // A destination that is down is asked again, less and less often.
            failures = failures.saturating_add(1);
            Duration::from_secs(1 << failures.min(5).saturating_sub(1))
                .min(flush.max(Duration::from_secs(1)))
        } else {
            failures = 0;
            if outcome.pending > 0 {
                Duration::from_secs(1)
            } else {
                flush
            }
        };
        // All shipped: nothing to do until the receiver writes again. Then a flush
        // interval more, so the segment under way ships at most every `wal_flush`.
        if outcome.settled
            && !outcome.failed
            && outcome.pending == 0
            && let Some(c) = changes.as_mut()
        {
            let quiet = tokio::time::sleep(shipper.keep_open);
            tokio::pin!(quiet);
            loop {
                tokio::select! {
                    r = c.changed() => {
                        if let Err(e) = r {
                            warn!(job = %job.name, source, "cannot watch the WAL spool {} any more ({e}); looking every {} s", spool.display(), flush.as_secs());
                            changes = None;
                        }
                        break;
                    }
                    () = &mut quiet, if shipper.is_open() => shipper.close(),
                    () = &mut shutdown => break 'shipping,
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = &mut shutdown => break,
        }
    }
    shipper.reopen(&open).await;
    let outcome = shipper.pass(true, status).await;
    shipper.publish(status, &outcome);
}

/// What one pass left.
#[derive(Debug, Default)]
struct Outcome {
    /// The segment under way was looked at (or there is none): with nothing failed or
    /// pending, everything the spool holds is shipped.
    settled: bool,
    pending: usize,
    failed: bool,
    oldest: Option<SystemTime>,
    error: Option<String>,
    shipped: Option<(String, DateTime<Utc>)>,
    partial_shipped: Option<DateTime<Utc>>,
}

impl Outcome {
    fn fail(&mut self, message: String) {
        self.failed = true;
        self.error = Some(message);
    }

    fn unshipped(&mut self, t: SystemTime) {
        self.oldest = Some(self.oldest.map_or(t, |o| o.min(t)));
    }
}

/// The partial segment as last shipped to each destination.
#[derive(Debug, Default, Clone)]
struct PartialOn {
    /// (segment name, raw sha256) stored there.
    content: Option<(String, String)>,
    /// The object `partial.json` names there, deleted once a newer one is pointed at.
    key: Option<String>,
    /// Whether leftovers of earlier processes were looked for there.
    swept: bool,
}

struct Shipper<'a> {
    job: &'a Job,
    source: &'a str,
    spool: PathBuf,
    /// Empty while closed (`close`): `reopen` before a pass.
    destinations: Arc<Destinations>,
    closed: bool,
    /// `KEEP_OPEN`, shorter in tests.
    keep_open: Duration,
    flush: Duration,
    /// Completed file → which destinations (by index) hold it with its record.
    done: HashMap<String, Vec<bool>>,
    partial: Vec<PartialOn>,
    /// (name, size, mtime) of the partial file when it was last found shipped everywhere,
    /// so an unchanged file is not read again.
    partial_seen: Option<(String, u64, SystemTime)>,
    last_partial: Option<Instant>,
    status: WalStatus,
}

/// A WAL file read once and stored: its sizes and digests.
struct Stored {
    size: u64,
    sha256: String,
    raw_size: u64,
    raw_sha256: String,
}

/// Why a WAL file is not (yet) on every destination; shown on the status page as its text.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error("cannot read {path} in the WAL spool: {reason}")]
    Spool {
        path: String,
        reason: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot ship WAL {name} to {destination}: {source}")]
    File {
        name: String,
        destination: String,
        #[source]
        source: WalError,
    },
    #[error("cannot ship the partial WAL segment {name} to {destination}: {source}")]
    Partial {
        name: String,
        destination: String,
        #[source]
        source: WalError,
    },
}

impl ShipError {
    fn spool(path: &Path, source: std::io::Error) -> ShipError {
        ShipError::Spool {
            path: path.display().to_string(),
            reason: crate::units::io_reason(&source),
            source,
        }
    }
}

/// What a record written after its object names: a whole file, or the partial segment's
/// last shipped state (`partial.json`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum RecordOf {
    File,
    Partial,
}

impl Stored {
    /// The record of WAL file `name` stored as this under `key`.
    fn record(self, name: &str, key: &str, shipped_at: DateTime<Utc>) -> WalRecord {
        WalRecord {
            name: name.to_string(),
            key: key.to_string(),
            size: self.size,
            sha256: self.sha256,
            raw_size: self.raw_size,
            raw_sha256: self.raw_sha256,
            shipped_at,
            auth: None,
        }
    }
}

impl<'a> Shipper<'a> {
    fn new(
        job: &'a Job,
        source: &'a str,
        spool: &Path,
        destinations: Opened,
        flush: Duration,
    ) -> Shipper<'a> {
        Shipper {
            job,
            source,
            spool: spool.to_path_buf(),
            partial: vec![PartialOn::default(); destinations.len()],
            destinations: destinations.into(),
            closed: false,
            keep_open: KEEP_OPEN,
            flush,
            done: HashMap::new(),
            partial_seen: None,
            last_partial: None,
            status: WalStatus::default(),
        }
    }

    fn is_open(&self) -> bool {
        !self.closed
    }

    /// Drop the destinations' clients; what was shipped where is kept.
    fn close(&mut self) {
        self.destinations = Arc::from(Vec::new());
        self.closed = true;
        debug!(job = %self.job.name, source = self.source, "the WAL spool is quiet: destinations closed");
    }

    async fn reopen<F: Future<Output = Opened>>(&mut self, open: &impl Fn() -> F) {
        if !self.closed {
            return;
        }
        let destinations = open().await;
        // The same job gives the same destinations in the same order; should it not, what
        // is known per destination no longer is.
        if destinations.len() != self.partial.len() {
            self.done.clear();
            self.partial = vec![PartialOn::default(); destinations.len()];
        }
        self.destinations = destinations.into();
        self.closed = false;
        debug!(job = %self.job.name, source = self.source, "WAL to ship: destinations opened again");
    }

    fn names(&self) -> WalNames<'a> {
        WalNames::new(&self.job.name, self.source)
    }

    fn publish(&mut self, status: &watch::Sender<WalStatus>, o: &Outcome) {
        if let Some((name, at)) = &o.shipped {
            self.status.last_shipped = Some(name.clone());
            self.status.last_shipped_at = Some(*at);
        }
        if o.partial_shipped.is_some() {
            self.status.partial_shipped_at = o.partial_shipped;
        }
        self.status.pending = o.pending;
        self.status.oldest_unshipped = o.oldest.map(DateTime::<Utc>::from);
        if o.failed {
            self.status.last_error.clone_from(&o.error);
        } else {
            self.status.last_error = None;
        }
        // The receiver's fields are the receiver's (`run`): keep them.
        status.send_modify(|s| {
            let receiver = (s.receiver_error.take(), s.receiver_failing_since.take());
            *s = self.status.clone();
            (s.receiver_error, s.receiver_failing_since) = receiver;
            s.passing_since = None;
        });
    }

    /// Ship every completed file, then the partial segment when it is due (or `force`).
    async fn pass(&mut self, force: bool, status: &watch::Sender<WalStatus>) -> Outcome {
        status.send_modify(|s| s.passing_since = Some(Utc::now()));
        let mut out = Outcome::default();
        if self.destinations.is_empty() {
            // "On every destination" would hold of every file: never empty the spool so.
            out.fail(format!(
                "job {} has no destination open to ship WAL to; the spool keeps it",
                self.job.name
            ));
            return out;
        }
        let (completed, partial) = match self.scan().await {
            Ok(found) => found,
            Err(e) => {
                let m = format!(
                    "cannot read the WAL spool {}: {}",
                    self.spool.display(),
                    crate::units::io_reason(&e)
                );
                warn!(job = %self.job.name, source = self.source, "{m}");
                out.fail(m);
                return out;
            }
        };
        // What left the spool by other means is no longer tracked.
        self.done.retain(|name, _| completed.contains(name));
        self.announce_backlog(status, &completed).await;
        for name in &completed {
            let path = self.spool.join(name);
            match self.ship_file(name, &path).await {
                Ok(()) => {
                    if let Err(e) = tokio::fs::remove_file(&path).await {
                        let m = format!(
                            "shipped {name} but cannot remove it from the spool: {}",
                            crate::units::io_reason(&e)
                        );
                        warn!(job = %self.job.name, source = self.source, "{m}");
                        out.fail(m);
                    } else {
                        self.done.remove(name);
                        out.shipped = Some((name.clone(), Utc::now()));
                    }
                }
                Err(e) => {
                    out.pending += 1;
                    if let Ok(t) = mtime(&path).await {
                        out.unshipped(t);
                    }
                    out.fail(e.to_string());
                }
            }
        }
        let due = force || self.last_partial.is_none_or(|t| t.elapsed() >= self.flush);
        out.settled = partial.is_none() || due;
        if let (Some(name), true) = (partial, due) {
            self.last_partial = Some(Instant::now());
            self.ship_partial(&name, &mut out).await;
        }
        out
    }

    /// Before shipping what a pass found: how many completed files wait, and since when.
    /// A shipper that falls behind the write rate then shows as lag while it works, not
    /// only one whose destination fails (the pass's end says what is left).
    async fn announce_backlog(&self, status: &watch::Sender<WalStatus>, completed: &[String]) {
        if completed.is_empty() {
            return;
        }
        let mut oldest: Option<SystemTime> = None;
        for name in completed {
            if let Ok(t) = mtime(&self.spool.join(name)).await {
                oldest = Some(oldest.map_or(t, |o| o.min(t)));
            }
        }
        let oldest = oldest.map(DateTime::<Utc>::from);
        status.send_modify(|s| {
            s.pending = completed.len();
            s.oldest_unshipped = match (s.oldest_unshipped, oldest) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        });
    }

    /// Completed files in shipping order (history files first: a restore needs a timeline's
    /// history before its segments), and the segment being written.
    async fn scan(&self) -> std::io::Result<(Vec<String>, Option<String>)> {
        let mut dir = tokio::fs::read_dir(&self.spool).await?;
        let mut completed = Vec::new();
        let mut partial: Option<String> = None;
        while let Some(entry) = dir.next_entry().await? {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !entry.file_type().await.is_ok_and(|t| t.is_file()) {
                continue;
            }
            if let Some(seg) = name.strip_suffix(".partial") {
                if seg.len() == 24 && is_wal_name(seg) && partial.as_deref() < Some(seg) {
                    partial = Some(seg.to_string());
                }
            } else if is_wal_name(&name) {
                completed.push(name);
            }
        }
        completed.sort_by(|a, b| {
            (!a.ends_with(".history"), a.as_str()).cmp(&(!b.ends_with(".history"), b.as_str()))
        });
        Ok((completed, partial))
    }

    /// Store one completed file on every destination that lacks it: `Ok` once all hold
    /// it; otherwise why not (a destination that failed, each warned about, or the file
    /// could not be read).
    async fn ship_file(&mut self, name: &str, path: &Path) -> Result<(), ShipError> {
        let n = self.destinations.len();
        if !self.done.contains_key(name) {
            let already = self.already_shipped(name, path).await;
            self.done.insert(name.to_string(), already);
        }
        let have = self
            .done
            .get(name)
            .cloned()
            .unwrap_or_else(|| vec![false; n]);
        let targets: Vec<usize> = (0..n).filter(|i| !have[*i]).collect();
        if targets.is_empty() {
            return Ok(());
        }
        let form = Form::of(self.job);
        let key = self.names().object(name, form);
        let unreadable = |e: std::io::Error| {
            let e = ShipError::spool(path, e);
            warn!(job = %self.job.name, source = self.source, "{e}; tried again on the next pass");
            e
        };
        let file = tokio::fs::File::open(path).await.map_err(unreadable)?;
        let (stored, results) = self.upload(Box::new(file), &key, &targets).await;
        let record = stored.map_err(unreadable)?.record(name, &key, Utc::now());
        let mut failure = None;
        for (&i, result) in targets.iter().zip(results) {
            match self.write_record(i, result, &record, RecordOf::File).await {
                Ok(()) => {
                    if let Some(v) = self.done.get_mut(name) {
                        v[i] = true;
                    }
                }
                Err(source) => {
                    let dest = &self.destinations[i].0;
                    let e = ShipError::File {
                        name: name.to_string(),
                        destination: dest.clone(),
                        source,
                    };
                    warn!(
                        job = %self.job.name,
                        source = self.source,
                        destination = %dest,
                        "{e}; it stays in the spool and is sent again"
                    );
                    failure = Some(e);
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        info!(
            job = %self.job.name,
            source = self.source,
            "shipped WAL {name} to {n} destination(s): {} stored as {}",
            human_bytes(record.raw_size),
            human_bytes(record.size)
        );
        Ok(())
    }

    /// Once destination `i` took the object (`uploaded`), the record that makes it
    /// fetchable; the object's failure or the record's, with its kind and source.
    async fn write_record(
        &self,
        i: usize,
        uploaded: Result<(), StorageError>,
        record: &WalRecord,
        of: RecordOf,
    ) -> Result<(), WalError> {
        uploaded?;
        let st = self.destinations[i].1.as_ref();
        let (job, auth) = (&self.job.name, self.job.auth_key.as_deref());
        match of {
            RecordOf::File => wal::write_record(st, job, self.source, record, auth).await,
            RecordOf::Partial => wal::write_pointer(st, job, self.source, record, auth).await,
        }
    }

    /// Which destinations already hold `name` with the spool file's content: what an
    /// earlier process shipped before it could empty the spool. Sending it again would
    /// rewrite the object (under encryption, with other bytes) before its record, and a
    /// fetch in between would find them apart.
    async fn already_shipped(&self, name: &str, path: &Path) -> Vec<bool> {
        let mut have = vec![false; self.destinations.len()];
        let expect = crate::repo::packing::Expect::of(self.job, false);
        let mut records = Vec::new();
        for (i, (_, storage)) in self.destinations.iter().enumerate() {
            let st = storage.as_ref();
            // Mostly none (a new file): one small read per destination, no hashing.
            if let Ok(Some(v)) =
                wal::read_record(st, &self.job.name, self.source, name, &expect).await
            {
                records.push((i, v.record));
            }
        }
        if records.is_empty() {
            return have;
        }
        let Ok((raw_sha256, raw_size)) = hash_file(path).await else {
            return have;
        };
        for (i, r) in records {
            if r.raw_sha256 != raw_sha256 || r.raw_size != raw_size {
                continue;
            }
            // The record is written after its object; the object must still be whole.
            let listed = self.destinations[i]
                .1
                .list(&r.key)
                .await
                .unwrap_or_default();
            have[i] = listed.iter().any(|o| o.key == r.key && o.size == r.size);
        }
        have
    }

    /// Ship the segment being written where its content changed since it was last stored
    /// there: a new object, the pointer to it, then the object it replaces is deleted.
    async fn ship_partial(&mut self, name: &str, out: &mut Outcome) {
        let path = self.spool.join(format!("{name}.partial"));
        let (targets, modified) = match self.partial_targets(name, &path).await {
            Ok(Some(due)) => due,
            Ok(None) => return,
            Err(e) => return out.fail(e.to_string()),
        };
        self.partial_seen = None;
        let shipped_at = Utc::now();
        let key = self
            .names()
            .partial(name, shipped_at.timestamp_millis(), Form::of(self.job));
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => return out.fail(ShipError::spool(&path, e).to_string()),
        };
        let (stored, results) = self.upload(Box::new(file), &key, &targets).await;
        let record = match stored {
            Ok(s) => s.record(name, &key, shipped_at),
            Err(e) => {
                out.fail(ShipError::spool(&path, e).to_string());
                out.unshipped(modified);
                return;
            }
        };
        let mut all = true;
        for (&i, result) in targets.iter().zip(results) {
            match self
                .write_record(i, result, &record, RecordOf::Partial)
                .await
            {
                Ok(()) => self.replaced_partial(i, &record).await,
                Err(source) => {
                    all = false;
                    let dest = &self.destinations[i].0;
                    let e = ShipError::Partial {
                        name: name.to_string(),
                        destination: dest.clone(),
                        source,
                    };
                    warn!(job = %self.job.name, source = self.source, destination = %dest, "{e}");
                    out.fail(e.to_string());
                }
            }
        }
        if all {
            out.partial_shipped = Some(shipped_at);
        } else {
            out.unshipped(modified);
        }
    }

    /// The destinations where the partial segment `name` (at `path`) is not stored as it
    /// now reads, and its mtime; `None` when there is nothing to ship (gone since the
    /// scan, or shipped everywhere as it is).
    async fn partial_targets(
        &mut self,
        name: &str,
        path: &Path,
    ) -> Result<Option<(Vec<usize>, SystemTime)>, ShipError> {
        let Ok(meta) = tokio::fs::metadata(path).await else {
            // Renamed into a completed segment since the scan: shipped as one next pass.
            return Ok(None);
        };
        let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let seen = (name.to_string(), meta.len(), modified);
        if self.partial_seen.as_ref() == Some(&seen) {
            return Ok(None);
        }
        let raw_sha = match hash_file(path).await {
            Ok((h, _)) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ShipError::spool(path, e)),
        };
        let content = Some((name.to_string(), raw_sha));
        let targets: Vec<usize> = (0..self.destinations.len())
            .filter(|i| self.partial[*i].content != content)
            .collect();
        if targets.is_empty() {
            // A write within the clock's resolution of this read could leave the same
            // mtime behind: trust the mtime only once it is a second old.
            if SystemTime::now()
                .duration_since(modified)
                .is_ok_and(|age| age > Duration::from_secs(1))
            {
                self.partial_seen = Some(seen);
            }
            return Ok(None);
        }
        Ok(Some((targets, modified)))
    }

    /// Destination `i` now points at `record`'s partial object: the one it replaces, and
    /// on first use those earlier processes left behind, are deleted (a failure is only
    /// warned about: a leftover costs space, not correctness).
    async fn replaced_partial(&mut self, i: usize, record: &WalRecord) {
        let (dest, storage) = &self.destinations[i];
        let st = storage.as_ref();
        let partial_prefix = self.names().partial_prefix();
        let on = &mut self.partial[i];
        on.content = Some((record.name.clone(), record.raw_sha256.clone()));
        let mut stale: Vec<String> = on.key.replace(record.key.clone()).into_iter().collect();
        if !on.swept {
            // Objects earlier processes shipped and did not get to delete.
            match st.list(&partial_prefix).await {
                Ok(objs) => {
                    on.swept = true;
                    stale.extend(objs.into_iter().map(|o| o.key));
                }
                Err(e) => warn!(
                    job = %self.job.name,
                    source = self.source,
                    destination = %dest,
                    "cannot list old partial WAL objects on {dest}: {e}; tried again with the next one"
                ),
            }
        }
        stale.retain(|k| *k != record.key);
        stale.sort();
        stale.dedup();
        if !stale.is_empty()
            && let Err(e) = st.delete(&stale).await
        {
            warn!(
                job = %self.job.name,
                source = self.source,
                destination = %dest,
                "cannot delete the replaced partial WAL object on {dest}: {e}"
            );
        }
    }

    /// Read `raw` once, compressed and encrypted the job's way, into `key` on each of
    /// `targets` at once; the stored bytes are hashed on the way. Memory stays bounded by
    /// the channels (a few 256 KiB chunks per destination). Returns what was stored (or why
    /// `raw` could not be read: then every upload is abandoned) and each target's outcome.
    async fn upload(
        &self,
        raw: Reader,
        key: &str,
        targets: &[usize],
    ) -> (std::io::Result<Stored>, Vec<Result<(), StorageError>>) {
        let raw_digest = Arc::new(Mutex::new((Sha256::new(), 0u64)));
        let hashed: Reader = Box::new(Hashing {
            inner: raw,
            digest: raw_digest.clone(),
        });
        let mut packed =
            crate::codec::compress(hashed, self.job.compression, self.job.compression_level);
        if let Some(enc) = &self.job.encryption {
            packed = crate::crypt::seal(packed, enc.sealer.clone());
        }
        let mut senders = Vec::new();
        let mut puts = Vec::new();
        for &i in targets {
            let (tx, rx) = mpsc::channel::<Chunk>(4);
            senders.push(Some(tx));
            let storage = self.destinations[i].1.clone();
            let key = key.to_string();
            puts.push(async move { storage.put_stream(&key, rx).await.map(|_| ()) });
        }
        let feed = async move {
            let mut digest = Sha256::new();
            let mut size = 0u64;
            loop {
                let mut buf = BytesMut::with_capacity(256 * 1024);
                if packed.read_buf(&mut buf).await? == 0 {
                    break;
                }
                let chunk = buf.freeze();
                digest.update(&chunk);
                size += chunk.len() as u64;
                for slot in senders.iter_mut() {
                    // A destination that failed dropped its receiver; the others go on.
                    if let Some(tx) = slot
                        && tx.send(Chunk::Data(chunk.clone())).await.is_err()
                    {
                        *slot = None;
                    }
                }
            }
            for tx in senders.iter().flatten() {
                let _ = tx.send(Chunk::End).await;
            }
            Ok::<_, std::io::Error>((hex::encode(digest.finalize()), size))
        };
        let (fed, results) = tokio::join!(feed, futures::future::join_all(puts));
        let stored = fed.map(|(sha256, size)| {
            let (d, raw_size) = raw_digest
                .lock()
                .map(|g| (g.0.clone(), g.1))
                .unwrap_or_else(|e| {
                    let g = e.into_inner();
                    (g.0.clone(), g.1)
                });
            Stored {
                size,
                sha256,
                raw_size,
                raw_sha256: hex::encode(d.finalize()),
            }
        });
        (stored, results)
    }
}

async fn mtime(path: &Path) -> std::io::Result<SystemTime> {
    tokio::fs::metadata(path).await?.modified()
}

/// A file's sha256 and size.
async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut digest = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        digest.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(digest.finalize()), size))
}

/// Passes bytes through, counting and hashing them into `digest`.
struct Hashing {
    inner: Reader,
    digest: Arc<Mutex<(Sha256, u64)>>,
}

impl AsyncRead for Hashing {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            let mut d = this.digest.lock().unwrap_or_else(|e| e.into_inner());
            d.0.update(new);
            d.1 += new.len() as u64;
        }
        r
    }
}

#[cfg(test)]
mod tests;
