//! The optional HTTP listener (`[server] listen = "0.0.0.0:9090"`): `/healthz` (the same
//! verdict as `stowage health`), `/metrics` (Prometheus text format) and `/`, a small
//! read-only status page. Everything it shows comes from the daemon's memory: a scrape
//! never touches a destination.
//!
//! It is often bound to 0.0.0.0, so it expects misbehaving clients: a client has
//! [`HEADER_READ_TIMEOUT`] to send each request's headers (which also closes idle
//! connections), at most [`MAX_CONNECTIONS`] are open (a newcomer replaces the oldest idle
//! one), and with `[server] token_file` the page and the metrics need a bearer token
//! (`/healthz` stays open for container healthchecks).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    job: String,
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestLabels {
    job: String,
    destination: String,
}

/// Per-job counters and gauges, updated after every run.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    last_success: Family<JobLabel, Gauge<f64, AtomicU64>>,
    last_duration: Family<JobLabel, Gauge<f64, AtomicU64>>,
    bytes_in: Family<JobLabel, Counter>,
    bytes_out: Family<DestLabels, Counter>,
    kept: Family<DestLabels, Gauge>,
    heals: Family<RunLabels, Counter>,
    healed_objects: Family<JobLabel, Counter>,
    verifies: Family<RunLabels, Counter>,
    verify_ok: Family<JobLabel, Gauge<f64, AtomicU64>>,
    verify_blobs: Family<JobLabel, Counter>,
    verify_blob_bytes: Family<JobLabel, Counter>,
    verify_bad_blobs: Family<JobLabel, Counter>,
    drills: Family<RunLabels, Counter>,
    drill_ok: Family<JobLabel, Gauge<f64, AtomicU64>>,
    drill_seconds: Family<JobLabel, Gauge<f64, AtomicU64>>,
    wal_lag: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    wal_shipped: Family<SourceLabels, Gauge<f64, AtomicU64>>,
    wal_pending: Family<SourceLabels, Gauge>,
    shrunk: Family<JobLabel, Gauge>,
    rss: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stowage");
        let m = Metrics {
            runs: Family::default(),
            last_success: Family::default(),
            last_duration: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
            kept: Family::default(),
            heals: Family::default(),
            healed_objects: Family::default(),
            verifies: Family::default(),
            verify_ok: Family::default(),
            verify_blobs: Family::default(),
            verify_blob_bytes: Family::default(),
            verify_bad_blobs: Family::default(),
            drills: Family::default(),
            drill_ok: Family::default(),
            drill_seconds: Family::default(),
            wal_lag: Family::default(),
            wal_shipped: Family::default(),
            wal_pending: Family::default(),
            shrunk: Family::default(),
            rss: Gauge::default(),
            registry: Registry::default(),
        };
        m.register_runs(&mut registry);
        m.register_checks(&mut registry);
        m.register_wal(&mut registry);
        Metrics { registry, ..m }
    }

    /// Backups: runs, their sizes, what the destinations hold.
    fn register_runs(&self, registry: &mut Registry) {
        registry.register(
            "runs",
            "Finished runs by outcome (success, partial, failed, cancelled)",
            self.runs.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the job's last run that published on every destination",
            self.last_success.clone(),
        );
        registry.register(
            "last_run_duration_seconds",
            "Duration of the job's last run",
            self.last_duration.clone(),
        );
        registry.register(
            "read_bytes",
            "Bytes the job's sources produced (files: bytes referenced)",
            self.bytes_in.clone(),
        );
        registry.register(
            "stored_bytes",
            "Bytes the job's runs stored per destination (after compression and dedup)",
            self.bytes_out.clone(),
        );
        registry.register(
            "backups",
            "Published backups a destination holds, after the last retention",
            self.kept.clone(),
        );
        registry.register(
            "backup_shrunk",
            "1 when a source of the job's newest backup produced under half the median of the backups before it (a dump that shrank: check the database), else 0",
            self.shrunk.clone(),
        );
    }

    /// The healer, verifies and restore drills.
    fn register_checks(&self, registry: &mut Registry) {
        registry.register(
            "heals",
            "Healer passes by outcome (ok, healed, dry_run, failed, unreachable)",
            self.heals.clone(),
        );
        registry.register(
            "heal_restored_objects",
            "Tables or collections the healer restored",
            self.healed_objects.clone(),
        );
        registry.register(
            "verifies",
            "Scheduled verifies by outcome (ok, failed)",
            self.verifies.clone(),
        );
        registry.register(
            "verify_last_success_timestamp_seconds",
            "Unix time of the job's last scheduled verify that found every copy whole and readable",
            self.verify_ok.clone(),
        );
        registry.register(
            "verify_read_blobs",
            "Blobs whose content scheduled verifies read back and checked (read_data)",
            self.verify_blobs.clone(),
        );
        registry.register(
            "verify_read_blob_bytes",
            "Bytes of intact blob content scheduled verifies read back (read_data)",
            self.verify_blob_bytes.clone(),
        );
        registry.register(
            "verify_bad_blobs",
            "Blobs scheduled verifies found damaged or unreadable (read_data)",
            self.verify_bad_blobs.clone(),
        );
        registry.register(
            "drills",
            "Restore drills by outcome (ok, failed)",
            self.drills.clone(),
        );
        registry.register(
            "drill_last_success_timestamp_seconds",
            "Unix time of the job's last restore drill that passed",
            self.drill_ok.clone(),
        );
        registry.register(
            "drill_duration_seconds",
            "How long the job's last restore drill took to restore and check: the measured recovery time",
            self.drill_seconds.clone(),
        );
    }

    /// Continuous WAL, and the process itself.
    fn register_wal(&self, registry: &mut Registry) {
        registry.register(
            "wal_lag_seconds",
            "Continuous WAL: how long the oldest WAL not yet on every destination has waited (0 when all is shipped)",
            self.wal_lag.clone(),
        );
        registry.register(
            "wal_last_shipped_timestamp_seconds",
            "Continuous WAL: Unix time the last complete WAL file reached every destination",
            self.wal_shipped.clone(),
        );
        registry.register(
            "wal_pending_files",
            "Continuous WAL: completed WAL files in the spool that a destination still lacks",
            self.wal_pending.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory of the stowage process",
            self.rss.clone(),
        );
    }

    /// What finished: the daemon's own, or a command's run by hand ([`status::post`]).
    pub fn record_done(&self, r: &status::Record) {
        match &r.done {
            status::Done::Run {
                run,
                published,
                kept,
                warnings,
            } => self.record_run(&r.job, run, published, kept, warnings),
            status::Done::Heal { heal, restored } => {
                self.heals
                    .get_or_create(&RunLabels {
                        job: r.job.clone(),
                        outcome: heal.outcome.clone(),
                    })
                    .inc();
                self.healed_objects
                    .get_or_create(&JobLabel { job: r.job.clone() })
                    .inc_by(*restored);
            }
            status::Done::Verify { verify, read } => self.record_verify(&r.job, verify, *read),
            status::Done::Drill { drill, duration_s } => {
                self.record_drill(&r.job, drill, *duration_s)
            }
        }
    }

    fn record_run(
        &self,
        job: &str,
        r: &status::RunStatus,
        published: &[String],
        kept: &[(String, usize)],
        warnings: &[String],
    ) {
        let job_l = JobLabel {
            job: job.to_string(),
        };
        self.runs
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: r.outcome.clone(),
            })
            .inc();
        if r.outcome == crate::pipeline::Outcome::Success.as_str() {
            self.last_success
                .get_or_create(&job_l)
                .set(r.finished_at.timestamp_millis() as f64 / 1000.0);
        }
        self.last_duration.get_or_create(&job_l).set(r.duration_s);
        self.bytes_in.get_or_create(&job_l).inc_by(r.bytes_in);
        for dest in published {
            self.bytes_out
                .get_or_create(&DestLabels {
                    job: job.to_string(),
                    destination: dest.clone(),
                })
                .inc_by(r.bytes_out);
        }
        for (dest, n) in kept {
            self.kept
                .get_or_create(&DestLabels {
                    job: job.to_string(),
                    destination: dest.clone(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        if !published.is_empty() {
            self.set_shrunk(job, !warnings.is_empty());
        }
    }

    /// Whether the job's newest backup shrank ([`crate::pipeline::shrink`]).
    fn set_shrunk(&self, job: &str, shrunk: bool) {
        self.shrunk
            .get_or_create(&JobLabel {
                job: job.to_string(),
            })
            .set(i64::from(shrunk));
    }

    /// After a start: the newest published backup found on the job's destinations, so the
    /// staleness alert works before the daemon's first run (never moves the gauge back).
    pub fn seed_last_success(&self, job: &str, newest: chrono::DateTime<Utc>) {
        let g = self.last_success.get_or_create(&JobLabel {
            job: job.to_string(),
        });
        let t = newest.timestamp_millis() as f64 / 1000.0;
        if g.get() < t {
            g.set(t);
        }
    }

    /// What the destinations hold, read after a start, after each run and now and then:
    /// right after a restart and after backups made by `stowage run`.
    pub fn record_history(&self, job: &str, h: &crate::history::JobHistory) {
        for (dest, held) in &h.held {
            if let Ok(n) = held {
                self.kept
                    .get_or_create(&DestLabels {
                        job: job.to_string(),
                        destination: dest.clone(),
                    })
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
        }
        if let Some(t) = h.newest_published {
            self.seed_last_success(job, t);
        }
        if !h.backups.is_empty() {
            self.set_shrunk(job, h.shrunk().is_some());
        }
    }

    fn record_verify(&self, job: &str, v: &status::VerifyStatus, read: (u64, u64, u64)) {
        let job_l = JobLabel {
            job: job.to_string(),
        };
        self.verifies
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: if v.ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
        let (blobs, bytes, bad) = read;
        self.verify_blobs.get_or_create(&job_l).inc_by(blobs);
        self.verify_blob_bytes.get_or_create(&job_l).inc_by(bytes);
        self.verify_bad_blobs.get_or_create(&job_l).inc_by(bad);
        if v.ok {
            self.verify_ok
                .get_or_create(&job_l)
                .set(v.finished_at.timestamp_millis() as f64 / 1000.0);
        }
    }

    fn record_drill(&self, job: &str, d: &status::VerifyStatus, duration_s: f64) {
        let job_l = JobLabel {
            job: job.to_string(),
        };
        self.drills
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: if d.ok { "ok" } else { "failed" }.to_string(),
            })
            .inc();
        self.drill_seconds.get_or_create(&job_l).set(duration_s);
        if d.ok {
            self.drill_ok
                .get_or_create(&job_l)
                .set(d.finished_at.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Each continuously archived source's shipping as the daemon last heard of it, the lag
    /// as of `now` (set when scraped: between two reports it still grows).
    pub fn record_wal(&self, state: &status::State, now: chrono::DateTime<Utc>) {
        for (job, s) in &state.jobs {
            for (source, w) in &s.wal {
                let labels = SourceLabels {
                    job: job.clone(),
                    source: source.clone(),
                };
                self.wal_lag
                    .get_or_create(&labels)
                    .set(w.lag(now).num_milliseconds() as f64 / 1000.0);
                if let Some(t) = w.last_shipped_at {
                    self.wal_shipped
                        .get_or_create(&labels)
                        .set(t.timestamp_millis() as f64 / 1000.0);
                }
                self.wal_pending
                    .get_or_create(&labels)
                    .set(i64::try_from(w.pending).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn render(&self) -> String {
        self.rss.set(i64::try_from(resident_bytes()).unwrap_or(0));
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

fn resident_bytes() -> u64 {
    // statm: size resident shared text lib data dt, in pages.
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// What the handlers read: the daemon's current config, state and metrics.
pub trait View: Send + Sync + 'static {
    fn config(&self) -> Arc<Config>;
    fn state(&self) -> status::State;
    fn metrics(&self) -> &Metrics;
    /// The job's published backups, as its destinations hold them.
    fn history(&self, job: &str) -> crate::history::JobHistory;
    /// Someone read the page or the metrics: the daemon re-reads the destinations if its
    /// copy is getting old. Only then, so that with nobody looking it does not wake for it.
    fn looked_at(&self) {}
}

/// How long a client has to send a request's headers. hyper starts this clock whenever
/// the connection waits for a request, the first or the next one on a kept-alive
/// connection, so it is the idle timeout as well: a connection that sends nothing is
/// closed after this long.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A request whose handler or response has taken longer than this no longer protects its
/// connection from being closed for a newcomer (a client that stopped reading).
const STALLED_REQUEST: Duration = Duration::from_secs(30);
/// At most this many open connections (fewer when the file limit is low: a quarter of it,
/// so that backups always have descriptors left).
pub const MAX_CONNECTIONS: usize = 512;
/// Pending connections the kernel queues before `accept` (capped by net.core.somaxconn).
const BACKLOG: u32 = 4096;

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Milliseconds since `epoch` when its current request began; 0 while it waits for one.
    busy_since: AtomicU64,
    close: CancellationToken,
}

/// The open connections, oldest first. When the table is full, a newcomer takes the place
/// of the oldest connection that is not serving a request (an idle or slow client), so
/// thousands of idle connections can neither exhaust the daemon's file descriptors nor
/// lock out `/healthz`.
struct Conns {
    cap: usize,
    epoch: std::time::Instant,
    open: std::sync::Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Conns {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A place for connection `id`, closing an idle one if the table is full. `None`: every
    /// connection is busy with a request, so the newcomer is refused.
    fn admit(&self, id: u64) -> Option<Arc<Conn>> {
        let now = self.now_ms();
        let stalled = u64::try_from(STALLED_REQUEST.as_millis()).unwrap_or(u64::MAX);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.len() >= self.cap {
            let victim = open
                .iter()
                .find(|(_, c)| {
                    let since = c.busy_since.load(Ordering::Relaxed);
                    since == 0 || now.saturating_sub(since) > stalled
                })
                .map(|(k, _)| *k)?;
            if let Some(c) = open.remove(&victim) {
                c.close.cancel();
            }
        }
        let conn = Arc::new(Conn {
            busy_since: AtomicU64::new(0),
            close: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some(conn)
    }

    fn remove(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// Raise this process's soft limit of open files to its hard limit: the default soft limit
/// (often 1024) is easily reached by a burst of connections beside a running backup.
/// Returns the soft limit in force.
pub fn raise_open_files_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    // None is "unlimited"; rustix also hides that rlim_t is 32 bits on armv7 glibc.
    let lim = getrlimit(Resource::Nofile);
    let current = lim.current.unwrap_or(u64::MAX);
    let below = match (lim.current, lim.maximum) {
        (Some(c), Some(m)) => c < m,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if below {
        let raised = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        // Raising the soft limit up to the hard limit needs no privilege.
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return lim.maximum.unwrap_or(u64::MAX);
        }
    }
    current
}

/// The connection cap for a soft limit of `open_files` descriptors.
pub fn connection_cap(open_files: u64) -> usize {
    usize::try_from(open_files / 4)
        .unwrap_or(usize::MAX)
        .clamp(16, MAX_CONNECTIONS)
}

/// Bind now (so a bad address fails the start with a clear error), serve until `stop`.
/// The HTTP listener could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} (server.listen): {source}")]
pub struct ListenError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

pub async fn start<V: View>(
    addr: SocketAddr,
    view: Arc<V>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, ListenError> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    };
    let listener = socket
        .and_then(|s| {
            s.set_reuseaddr(true)?;
            s.bind(addr)?;
            s.listen(BACKLOG)
        })
        .map_err(|source| ListenError { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(healthz::<V>))
        .route("/metrics", get(metrics::<V>))
        .route("/", get(index::<V>))
        .with_state(view);
    let conns = Arc::new(Conns {
        cap: connection_cap(raise_open_files_limit()),
        epoch: std::time::Instant::now(),
        open: Default::default(),
    });
    tracing::info!(
        "HTTP listener on {addr}: /healthz, /metrics, / (at most {} connections)",
        conns.cap
    );
    Ok(tokio::spawn(accept_loop(listener, app, conns, stop)))
}

/// Accept until `stop`. Nothing a client does ends this loop: a failed accept (out of
/// descriptors, a connection reset before it was taken) is logged and the loop goes on.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    conns: Arc<Conns>,
    stop: CancellationToken,
) {
    let mut next_id = 0u64;
    let mut last_complaint: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!("HTTP listener: cannot accept a connection: {e}");
                    last_complaint = Some(std::time::Instant::now());
                }
                // Out of descriptors: give the open connections time to close.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let Some(conn) = conns.admit(id) else {
            // Every connection is serving a request: this one is closed at once.
            drop(stream);
            continue;
        };
        tokio::spawn(serve_conn(
            stream,
            app.clone(),
            conn,
            conns.clone(),
            id,
            stop.clone(),
        ));
    }
}

async fn serve_conn(
    stream: tokio::net::TcpStream,
    app: Router,
    conn: Arc<Conn>,
    conns: Arc<Conns>,
    id: u64,
    stop: CancellationToken,
) {
    let tower = hyper_util::service::TowerToHyperService::new(app);
    let marks = conn.clone();
    let table = conns.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        marks.busy_since.store(table.now_ms(), Ordering::Relaxed);
        let answer = hyper::service::Service::call(&tower, req);
        let marks = marks.clone();
        async move {
            let r = answer.await;
            marks.busy_since.store(0, Ordering::Relaxed);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let served = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    tokio::select! {
        r = served => {
            if let Err(e) = r {
                tracing::debug!("HTTP connection closed: {e}");
            }
        }
        _ = conn.close.cancelled() => {}
        _ = stop.cancelled() => {}
    }
    conns.remove(id);
}

/// `None` when the request may see `/` and `/metrics`: no token is configured, or the
/// request carries it as `Authorization: Bearer <token>`. Otherwise the 401 to send.
fn refused<V: View>(view: &V, headers: &HeaderMap) -> Option<Response> {
    let config = view.config();
    let token = config.server_token.as_ref()?;
    // The scheme name is case-insensitive (RFC 9110).
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map_or("", |(_, token)| token);
    if same_secret(given.trim().as_bytes(), token.expose().as_bytes()) {
        return None;
    }
    Some(
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"stowage\"")],
            "a bearer token is required (server.token_file)\n",
        )
            .into_response(),
    )
}

/// Equality in time independent of where the inputs differ (and of their lengths: both
/// are hashed first), so response times do not reveal the token.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    let (x, y) = (Sha256::digest(a), Sha256::digest(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

async fn healthz<V: View>(State(view): State<Arc<V>>) -> Response {
    let problems = status::problems(&view.config(), &view.state(), Utc::now());
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy\n{}\n", problems.join("\n")),
        )
            .into_response()
    }
}

async fn metrics<V: View>(State(view): State<Arc<V>>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(view.as_ref(), &headers) {
        return no;
    }
    view.looked_at();
    view.metrics().record_wal(&view.state(), Utc::now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        view.metrics().render(),
    )
        .into_response()
}

async fn index<V: View>(State(view): State<Arc<V>>, headers: HeaderMap) -> Response {
    if let Some(no) = refused(view.as_ref(), &headers) {
        return no;
    }
    view.looked_at();
    let config = view.config();
    let state = view.state();
    let now = Utc::now();
    let problems = status::problems(&config, &state, now);
    let mut jobs = String::new();
    let mut recent = String::new();
    let mut heals = String::new();
    for job in config.jobs.values() {
        let s = state.jobs.get(&job.name).cloned().unwrap_or_default();
        let h = view.history(&job.name);
        jobs.push_str(&job_section(job, &s, &h, now));
        let tz = job.schedule.tz();
        for r in &s.recent {
            recent.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}s</td><td>{}</td></tr>\n",
                esc(&job.name),
                esc(&r.id),
                esc(&r.outcome),
                esc(&local(r.finished_at, tz)),
                r.duration_s,
                esc(&r.errors.join("; "))
            ));
        }
        for x in &s.heals {
            heals.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                esc(&job.name),
                esc(&local(x.finished_at, tz)),
                esc(&x.outcome),
                esc(&x.summary)
            ));
        }
    }
    let health = if problems.is_empty() {
        "<p class=ok>healthy</p>".to_string()
    } else {
        format!(
            "<p class=bad>unhealthy</p><ul>{}</ul>",
            problems
                .iter()
                .map(|p| format!("<li>{}</li>", esc(p)))
                .collect::<String>()
        )
    };
    // The script only marks which plots the browser laid out (for the page's own test and
    // for anyone curious); the page works without it.
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>stowage</title>\
         <meta http-equiv=refresh content=60>\
         <style>body{{font-family:sans-serif;margin:2em;max-width:70em}}td,th{{padding:.2em .8em;text-align:left;vertical-align:top}}\
         .ok{{color:green}}.bad{{color:#b00}}.muted{{color:#666}}section{{border-top:1px solid #ddd;margin-top:1.5em}}</style></head><body>\
         <h1>stowage {}</h1>{health}\
         <p class=muted>as of {} (refreshes every minute)</p>\
         {jobs}\
         <h2>Recent runs (the daemon's and those run by hand beside it)</h2><table><tr><th>job</th><th>id</th><th>outcome</th><th>finished</th><th>duration</th><th>errors</th></tr>\n{recent}</table>\
         <h2>Heals</h2><table><tr><th>job</th><th>finished</th><th>outcome</th><th>summary</th></tr>\n{heals}</table>\
         <p><a href=/metrics>metrics</a> · <a href=/healthz>healthz</a></p>\
         <script>document.body.dataset.plotsRendered=[...document.querySelectorAll('svg.plot')].filter(s=>s.getBBox().width>0).length</script>\
         </body></html>\n",
        env!("CARGO_PKG_VERSION"),
        now.format("%Y-%m-%d %H:%M:%S UTC"),
    ))
    .into_response()
}

/// One job: its state at a glance, in the job's own timezone.
fn job_section(
    job: &crate::config::Job,
    s: &status::JobStatus,
    h: &crate::history::JobHistory,
    now: chrono::DateTime<Utc>,
) -> String {
    let tz = job.schedule.tz();
    let next = job
        .schedule
        .upcoming(now, 1)
        .first()
        .map(|t| local(t.with_timezone(&Utc), tz))
        .unwrap_or_else(|| "never".into());
    let newest_time = h.newest().map(|p| p.time).max(s.newest_backup);
    let newest = match newest_time {
        Some(t) => format!("{} ({})", local(t, tz), ago(now - t)),
        None => "none yet".into(),
    };
    let last = match &s.last_run {
        Some(r) => format!(
            "{} at {} ({:.1}s){}",
            r.outcome,
            local(r.finished_at, tz),
            r.duration_s,
            if r.errors.is_empty() {
                String::new()
            } else {
                format!(": {}", r.errors.join("; "))
            }
        ),
        None => match h.newest() {
            Some(p) => format!("published {} (no run by this daemon since its start)", p.id),
            None => "-".into(),
        },
    };
    // A pass run by hand shows too, scheduled or not.
    let pass = |l: &Option<status::VerifyStatus>, scheduled: Option<String>| match (scheduled, l) {
        (None, None) => "-".to_string(),
        (Some(expr), None) => format!("scheduled ({expr})"),
        (_, Some(l)) => format!(
            "{} at {}: {}",
            if l.ok { "ok" } else { "failed" },
            local(l.finished_at, tz),
            l.summary
        ),
    };
    let verify = pass(
        &s.last_verify,
        job.verify.as_ref().map(|v| v.expr().to_string()),
    );
    let drill = pass(
        &s.last_drill,
        job.drill.as_ref().map(|d| d.schedule.expr().to_string()),
    );
    let heal = match (&job.heal, &s.last_heal) {
        (None, None) => "-".to_string(),
        (Some(x), None) => format!("watching {} ({})", x.source, x.schedule.expr()),
        (_, Some(l)) => format!("{} at {}", l.outcome, local(l.finished_at, tz)),
    };
    let held: Vec<String> = h
        .held
        .iter()
        .map(|(d, n)| match n {
            Ok(n) => format!("{d}: {n} backup{}", if *n == 1 { "" } else { "s" }),
            Err(e) => format!("{d}: cannot list ({e})"),
        })
        .collect();
    let held = if held.is_empty() {
        job.destinations.join(", ")
    } else {
        held.join("; ")
    };
    let shrunk = match h.shrunk() {
        Some(why) => format!("<p class=bad>⚠ {}</p>", esc(&why)),
        None => String::new(),
    };
    let mut last_backups = String::new();
    for p in h.backups.iter().take(5) {
        last_backups.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}s</td></tr>",
            esc(&p.id),
            esc(&local(p.time, tz)),
            crate::units::human_bytes(p.raw),
            crate::units::human_bytes(p.stored),
            p.duration_s
        ));
    }
    let row = |k: &str, v: &str| format!("<tr><th>{k}</th><td>{}</td></tr>", esc(v));
    format!(
        "<section><h2>{name}</h2><p class=muted>times in {tz}</p>{shrunk}\
         <table><tr><td>job</td><td>{name}</td></tr>{}{}{}{}{}{}{}{}{}{wal}</table>\
         {plot}\
         <h3>last backups</h3><table><tr><th>id</th><th>started</th><th>size</th><th>stored</th><th>duration</th></tr>{last_backups}</table></section>",
        row("schedule", &format!("{} ({tz})", job.schedule.expr())),
        row("next run", &next),
        row("newest backup", &newest),
        row("last run", &last),
        row("backups held", &held),
        row("last heal", &heal),
        row("last verify", &verify),
        row("last drill", &drill),
        row(
            "history read",
            &h.refreshed.map_or("not yet".into(), |t| ago(now - t)),
        ),
        name = esc(&job.name),
        plot = crate::history::plot(h),
        wal = wal_rows(job, s, h, now),
    )
}

/// For each continuously archived source of `job`: how its shipping stands and, per
/// destination, the recoverable window (its end moved up to what the shipper stored on
/// every destination since the destinations were last read).
fn wal_rows(
    job: &crate::config::Job,
    s: &status::JobStatus,
    h: &crate::history::JobHistory,
    now: chrono::DateTime<Utc>,
) -> String {
    let tz = job.schedule.tz();
    let at = |t: chrono::DateTime<Utc>| {
        t.with_timezone(tz)
            .format("%Y-%m-%d %H:%M:%S %Z")
            .to_string()
    };
    let mut out = String::new();
    let mut row = |k: String, v: String, class: &str| {
        out.push_str(&format!(
            "<tr><th>{}</th><td{class}>{}</td></tr>",
            esc(&k),
            esc(&v)
        ))
    };
    for db in job.sources.iter().filter_map(|x| x.database()) {
        if db.wal_source().is_none() {
            continue;
        }
        let source = db.name();
        let w = s.wal.get(source).cloned().unwrap_or_default();
        let shipped = match (&w.last_shipped, w.last_shipped_at) {
            (Some(name), Some(t)) => {
                format!("{name} at {} ({} ago)", at(t), crate::history::ago(now - t))
            }
            _ => "none yet".to_string(),
        };
        let partial = w.partial_shipped_at.map_or(String::new(), |t| {
            format!(
                "; the partial segment at {} ({} ago)",
                at(t),
                crate::history::ago(now - t)
            )
        });
        row(
            format!("WAL of {source}"),
            format!("last shipped {shipped}{partial}"),
            "",
        );
        let lag = w.lag(now);
        let lag_class = if w.failing_since.is_some() {
            " class=bad"
        } else {
            ""
        };
        row(
            format!("WAL lag of {source}"),
            format!(
                "{}, {} completed file{} waiting",
                crate::history::ago(lag),
                w.pending,
                if w.pending == 1 { "" } else { "s" }
            ),
            lag_class,
        );
        if let Some(e) = &w.last_error {
            let since = w
                .failing_since
                .map_or(String::new(), |t| format!(" (failing since {})", at(t)));
            row(
                format!("WAL error of {source}"),
                format!("{e}{since}"),
                " class=bad",
            );
        }
        if let Some(e) = &w.receiver_error {
            let since = w
                .receiver_failing_since
                .map_or(String::new(), |t| format!(" (failing since {})", at(t)));
            row(
                format!("WAL receiver of {source}"),
                format!("{e}{since}"),
                " class=bad",
            );
        }
        let live = w.last_shipped_at.max(w.partial_shipped_at);
        for win in h.windows.iter().filter(|x| x.source == source) {
            let mut win = win.clone();
            if let Ok(to) = &mut win.to {
                *to = (*to).max(live);
            }
            row(
                format!("recoverable window of {source} on {}", win.destination),
                win.describe(now, at),
                "",
            );
        }
    }
    out
}

/// "2026-12-02 03:00 CET"
fn local(t: chrono::DateTime<Utc>, tz: &crate::zone::Zone) -> String {
    t.with_timezone(tz).format("%Y-%m-%d %H:%M %Z").to_string()
}

/// "3 h ago", "2 days ago"
fn ago(d: chrono::TimeDelta) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s ago"),
        60..3600 => format!("{} min ago", s / 60),
        3600..86400 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_replaces_the_oldest_idle_connection_never_a_busy_one() {
        let conns = Conns {
            cap: 3,
            epoch: std::time::Instant::now(),
            open: Default::default(),
        };
        let a = conns.admit(1).expect("room");
        let b = conns.admit(2).expect("room");
        let c = conns.admit(3).expect("room");
        a.busy_since.store(conns.now_ms(), Ordering::Relaxed);
        // Full: the oldest idle one (2) makes room.
        let d = conns.admit(4).expect("an idle one makes room");
        assert!(!a.close.is_cancelled() && b.close.is_cancelled() && !c.close.is_cancelled());
        c.busy_since.store(conns.now_ms(), Ordering::Relaxed);
        d.busy_since.store(conns.now_ms(), Ordering::Relaxed);
        // Every connection is serving a request: the newcomer is refused.
        assert!(conns.admit(5).is_none());
        // A request stalled past STALLED_REQUEST no longer protects its connection.
        a.busy_since.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(5));
        let stalled = Conns {
            epoch: conns.epoch - STALLED_REQUEST - Duration::from_secs(1),
            ..conns
        };
        assert!(stalled.admit(6).is_some());
        assert!(a.close.is_cancelled());
    }

    #[test]
    fn the_cap_follows_the_file_limit() {
        assert_eq!(connection_cap(1024), 256);
        assert_eq!(connection_cap(1_048_576), MAX_CONNECTIONS);
        assert_eq!(connection_cap(20), 16);
    }

    #[test]
    fn wal_rows_are_escaped_and_the_window_ends_at_the_last_shipment() {
        let config = crate::testkit::config::load_toml(
            "[destinations.local]\ntype = \"local\"\npath = \"/b\"\n\n[jobs.pitr]\nschedule = \"0 3 * * *\"\ndestinations = [\"local\"]\n\n[[jobs.pitr.sources]]\ntype = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = \"postgres://replicator@db/postgres\"\n",
        );
        let job = &config.jobs["pitr"];
        let now = Utc::now();
        let ago = |s: i64| now - chrono::Duration::seconds(s);
        let mut s = status::JobStatus::default();
        s.wal.insert(
            "db".into(),
            status::WalState {
                last_shipped: Some("000000010000000000000007".into()),
                last_shipped_at: Some(ago(8)),
                pending: 1,
                oldest_unshipped: Some(ago(30)),
                failing_since: Some(ago(20)),
                last_error: Some("cannot ship WAL to <local>: \"denied\"".into()),
                ..Default::default()
            },
        );
        let h = crate::history::JobHistory {
            windows: vec![crate::history::Window {
                destination: "local".into(),
                source: "db".into(),
                from: Some(ago(3600)),
                to: Ok(Some(ago(600))),
            }],
            ..Default::default()
        };
        let html = wal_rows(job, &s, &h, now);
        assert!(
            html.contains("<th>WAL of db</th><td>last shipped 000000010000000000000007 at "),
            "{html}"
        );
        assert!(html.contains("(8 s ago)"), "{html}");
        assert!(
            html.contains("<td class=bad>30 s, 1 completed file waiting</td>"),
            "{html}"
        );
        assert!(
            html.contains("cannot ship WAL to &lt;local&gt;: &quot;denied&quot; (failing since "),
            "{html}"
        );
        assert!(!html.contains("<local>"), "{html}");
        // The destinations were read 10 min ago; the shipper stored more since.
        assert!(
            html.contains("<th>recoverable window of db on local</th><td>from ")
                && html.contains("(newest WAL, 8 s ago)"),
            "{html}"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"abc"));
    }
}
