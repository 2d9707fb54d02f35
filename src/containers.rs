//! Containers stopped (or paused) while a job's files sources are read, and started again
//! whatever happens: `[jobs.NAME.containers]` (`crate::config::Containers`), through the
//! Docker Engine API on its unix socket.
//!
//! The containers are those labelled `stowage.stop-during=<stop_during_files>` that are
//! running when the first files source is about to be read. Only they are started (or
//! unpaused) again after the last files source, however the run went: a container the user
//! had stopped stays stopped, and stowage's own container is never touched. An application
//! left stopped is the worst outcome of all, so the way back is tried hard: each start is
//! retried, a failure is logged loudly and fails the run naming the container, and a run
//! dropped while it holds containers (the daemon giving up on it past its shutdown grace)
//! starts them again from its drop, on a thread of its own, bounded by [`DROP_LIMIT`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::{error, info, warn};

use crate::config::{ContainerMode, Containers};

/// The label that picks the containers: `stowage.stop-during=<stop_during_files>`.
pub const LABEL: &str = "stowage.stop-during";
/// Where the Docker socket is when neither `socket` nor `DOCKER_HOST` says.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// A run dropped while it holds containers starts them again within this long: a daemon
/// being stopped by Docker has only a few seconds left before its SIGKILL.
pub const DROP_LIMIT: Duration = Duration::from_secs(10);
/// Every API call but a stop (which waits for the container's own timeout).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Attempts to start (or unpause) a container again, [`RETRY_DELAY`] apart: a busy engine
/// may fail a request that a second one gets through.
const RESUME_ATTEMPTS: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_secs(2);

/// A container as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    /// Its name without Docker's leading "/" (`app-web-1`), or its short id.
    pub name: String,
    /// Docker's state: "running", "paused", "exited", "created", "restarting", ...
    pub state: String,
}

/// The few Docker Engine calls holding containers takes. [`Docker`] makes them through
/// bollard; unit tests of the logic here use a stand-in.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Every container (running or not) carrying `label` (`KEY=VALUE`).
    async fn labelled(&self, label: &str) -> Result<Vec<Container>, bollard::errors::Error>;
    /// `docker stop -t TIMEOUT`.
    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), bollard::errors::Error>;
    async fn start(&self, id: &str) -> Result<(), bollard::errors::Error>;
    async fn pause(&self, id: &str) -> Result<(), bollard::errors::Error>;
    async fn unpause(&self, id: &str) -> Result<(), bollard::errors::Error>;
}

/// Why the containers could not be held; the run then fails before any file is read.
#[derive(Debug, thiserror::Error)]
pub enum ContainersError {
    #[error(
        "{key}: the Docker socket {} does not exist in stowage's container; mount it with `- /var/run/docker.sock:/var/run/docker.sock` under the stowage service's volumes (and group_add the socket's group), or set {key}.socket to where it is",
        .socket.display()
    )]
    NoSocket {
        key: String,
        socket: PathBuf,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "{key}: permission denied on the Docker socket {}: stowage runs as uid {uid}, which needs the socket's group; add `group_add: [\"GID\"]` to the stowage service, GID being `stat -c %g /var/run/docker.sock` on the host",
        .socket.display()
    )]
    Denied {
        key: String,
        socket: PathBuf,
        uid: u32,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{key}: {what} through the Docker socket {}: {cause}", .socket.display())]
    Engine {
        key: String,
        socket: PathBuf,
        /// "listing the containers labelled stowage.stop-during=app".
        what: String,
        /// The innermost error's text, which bollard's own message leaves out.
        cause: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error(
        "{key}: could not {} container {name}: {cause}; nothing was read{}",
        .mode.as_str(),
        not_started(.left)
    )]
    Hold {
        key: String,
        mode: ContainerMode,
        name: String,
        cause: String,
        #[source]
        source: bollard::errors::Error,
        /// The containers already held that could not be started again.
        left: Vec<NotResumed>,
    },
}

/// ", and the containers held so far are running again", or which ones are not.
fn not_started(left: &[NotResumed]) -> String {
    if left.is_empty() {
        ", and the containers held so far are running again".to_string()
    } else {
        format!(
            "; and {}",
            left.iter()
                .map(NotResumed::describe)
                .collect::<Vec<_>>()
                .join("; ")
        )
    }
}

/// A container held for the run that could not be started (or unpaused) again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotResumed {
    pub name: String,
    pub mode: ContainerMode,
    /// The last attempt's error.
    pub cause: String,
}

impl NotResumed {
    /// "could not start container app-web-1 again (…); start it by hand: docker start app-web-1".
    pub fn describe(&self) -> String {
        let verb = resume_verb(self.mode);
        format!(
            "could not {verb} container {} again ({}); {verb} it by hand: docker {verb} {}",
            self.name, self.cause, self.name
        )
    }
}

fn resume_verb(mode: ContainerMode) -> &'static str {
    match mode {
        ContainerMode::Stop => "start",
        ContainerMode::Pause => "unpause",
    }
}

fn held_word(mode: ContainerMode) -> &'static str {
    match mode {
        ContainerMode::Stop => "stopped",
        ContainerMode::Pause => "paused",
    }
}

/// The socket to use: `socket` as configured, else `DOCKER_HOST` when it is `unix://…`,
/// else [`DEFAULT_SOCKET`].
pub fn socket_path(settings: &Containers) -> PathBuf {
    if let Some(s) = &settings.socket {
        return s.clone();
    }
    match std::env::var("DOCKER_HOST") {
        Ok(host) if host.starts_with("unix://") => {
            PathBuf::from(host.trim_start_matches("unix://"))
        }
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// The Docker Engine API over a unix socket, through bollard.
pub struct Docker {
    client: bollard::Docker,
}

impl Docker {
    /// Connects and agrees on an API version (an engine refuses a client newer than
    /// itself, and a recent one a client much older). A stop may take `stop_timeout`.
    pub async fn connect(
        socket: &Path,
        stop_timeout: Duration,
    ) -> Result<Docker, bollard::errors::Error> {
        let path = socket.to_string_lossy();
        let timeout = (stop_timeout + REQUEST_TIMEOUT).as_secs();
        let client =
            bollard::Docker::connect_with_unix(&path, timeout, bollard::API_DEFAULT_VERSION)?;
        // bollard asks for the version under its own API version, which an older engine
        // refuses ("client version 1.53 is too new. Maximum supported API version is
        // 1.41"): then again under the engine's.
        let client = match client.negotiate_version().await {
            Ok(client) => client,
            Err(e) => {
                let Some(version) = refused_version(&e) else {
                    return Err(e);
                };
                bollard::Docker::connect_with_unix(&path, timeout, &version)?
                    .negotiate_version()
                    .await?
            }
        };
        Ok(Docker { client })
    }
}

/// The engine's own API version, when `e` is its refusal of a newer one.
fn refused_version(e: &bollard::errors::Error) -> Option<bollard::ClientVersion> {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 400,
            message,
        } => max_api_version(message),
        _ => None,
    }
}

/// The version in an engine's "… Maximum supported API version is 1.41" refusal.
fn max_api_version(message: &str) -> Option<bollard::ClientVersion> {
    let (_, tail) = message.split_once("Maximum supported API version is ")?;
    let version: String = tail
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let (major, minor) = version.split_once('.')?;
    Some(bollard::ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.trim_end_matches('.').parse().ok()?,
    })
}

#[async_trait::async_trait]
impl Engine for Docker {
    async fn labelled(&self, label: &str) -> Result<Vec<Container>, bollard::errors::Error> {
        let filters =
            std::collections::HashMap::from([("label".to_string(), vec![label.to_string()])]);
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let listed = self.client.list_containers(Some(options)).await?;
        Ok(listed
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id.chars().take(12).collect());
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some(Container { id, name, state })
            })
            .collect())
    }

    async fn stop(&self, id: &str, timeout: Duration) -> Result<(), bollard::errors::Error> {
        // Whole seconds, rounded up: a timeout of 1.5s must not become 1s.
        let secs = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
        let options = bollard::query_parameters::StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        self.client.stop_container(id, Some(options)).await
    }

    async fn start(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.client
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
    }

    async fn pause(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.client.pause_container(id).await
    }

    async fn unpause(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.client.unpause_container(id).await
    }
}

/// What tells stowage's own container: the container ids its cgroup and mounts name, and
/// its hostname (Docker's default hostname is the id's first 12 characters).
#[derive(Debug, Clone, Default)]
pub struct Own {
    ids: Vec<String>,
    hostname: Option<String>,
}

impl Own {
    /// From this process's /proc and hostname; empty outside a container.
    pub fn detect() -> Own {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        Own::from_texts(
            &read("/proc/self/cgroup"),
            &read("/proc/self/mountinfo"),
            read("/proc/sys/kernel/hostname").trim(),
        )
    }

    /// `cgroup`: /proc/self/cgroup (`…/docker/<id>`, `…/docker-<id>.scope`); `mountinfo`:
    /// /proc/self/mountinfo (`/var/lib/docker/containers/<id>/hostname` under cgroup v2,
    /// whose /proc/self/cgroup names no container).
    pub fn from_texts(cgroup: &str, mountinfo: &str, hostname: &str) -> Own {
        let mut ids = hex_ids(cgroup);
        for line in mountinfo.lines().filter(|l| l.contains("/containers/")) {
            ids.extend(hex_ids(line));
        }
        ids.sort();
        ids.dedup();
        let short = hostname.len() == 12 && hostname.chars().all(|c| c.is_ascii_hexdigit());
        Own {
            ids,
            hostname: short.then(|| hostname.to_ascii_lowercase()),
        }
    }

    /// Whether the container with this full id is the one stowage runs in.
    pub fn is(&self, id: &str) -> bool {
        self.ids.iter().any(|o| o == id)
            || self.hostname.as_deref().is_some_and(|h| id.starts_with(h))
    }
}

/// Every run of exactly 64 lowercase hex digits (a container id) in `text`.
fn hex_ids(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit() || c.is_ascii_uppercase())
        .filter(|w| w.len() == 64)
        .map(str::to_string)
        .collect()
}

/// Which labelled containers a run holds: the running ones, but stowage's own; the others
/// are left as they are, each with why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub hold: Vec<Container>,
    pub left: Vec<(Container, &'static str)>,
}

pub fn plan(found: Vec<Container>, own: &Own) -> Plan {
    let mut plan = Plan::default();
    for c in found {
        if own.is(&c.id) {
            plan.left.push((c, "it is stowage's own container"));
        } else if c.state == "running" {
            plan.hold.push(c);
        } else {
            // Stopped or paused by someone else: not ours to start again afterwards.
            plan.left.push((c, "it is not running"));
        }
    }
    plan
}

/// Containers stopped or paused for a run, started or unpaused again by [`Held::release`]
/// or, if the run is dropped first, by the drop.
pub struct Held {
    engine: Arc<dyn Engine>,
    key: String,
    mode: ContainerMode,
    /// Every container a stop or pause was asked of (even one whose request failed: it may
    /// have taken effect), in the order asked.
    held: Vec<Container>,
    since: Instant,
}

/// Connects to the engine of `settings` and holds its labelled containers.
pub async fn hold_for_job(settings: &Containers) -> Result<Held, ContainersError> {
    let socket = socket_path(settings);
    let engine = Docker::connect(&socket, settings.stop_timeout)
        .await
        .map_err(|e| engine_error(settings, &socket, "connecting".to_string(), e))?;
    let label = format!("{LABEL}={}", settings.group);
    let found = engine.labelled(&label).await.map_err(|e| {
        engine_error(
            settings,
            &socket,
            format!("listing the containers labelled {label}"),
            e,
        )
    })?;
    hold(Arc::new(engine), settings, found, &Own::detect()).await
}

/// Holds the containers of `found` that [`plan`] picks: stops or pauses them all at once.
/// When one of them fails, the others are resumed and the error names it.
pub async fn hold(
    engine: Arc<dyn Engine>,
    settings: &Containers,
    found: Vec<Container>,
    own: &Own,
) -> Result<Held, ContainersError> {
    let key = settings.key.as_str();
    let label = format!("{LABEL}={}", settings.group);
    if found.is_empty() {
        warn!(
            "{key}: no container carries the label {label}; the files are read with nothing stopped (label the application's containers, e.g. under labels: in compose.yaml)"
        );
    }
    let plan = plan(found, own);
    for (c, why) in &plan.left {
        info!(
            "{key}: leaving container {} ({}) as it is: {why}",
            c.name, c.state
        );
    }
    let mut held = Held {
        engine,
        key: key.to_string(),
        mode: settings.mode,
        held: plan.hold.clone(),
        since: Instant::now(),
    };
    let engine = held.engine.clone();
    let asked = join_all(plan.hold.iter().map(|c| {
        let engine = engine.clone();
        async move {
            match settings.mode {
                ContainerMode::Stop => engine.stop(&c.id, settings.stop_timeout).await,
                ContainerMode::Pause => engine.pause(&c.id).await,
            }
        }
    }))
    .await;
    let failed = plan
        .hold
        .iter()
        .zip(asked)
        .find_map(|(c, r)| r.err().map(|e| (c, e)));
    if let Some((c, source)) = failed {
        let left = held.resume().await;
        return Err(ContainersError::Hold {
            key: key.to_string(),
            mode: settings.mode,
            name: c.name.clone(),
            cause: innermost(&source),
            source,
            left,
        });
    }
    if !plan.hold.is_empty() {
        info!(
            "{key}: {} {} (labelled {label}) while the files are read",
            held_word(settings.mode),
            names(&plan.hold)
        );
    }
    held.since = Instant::now();
    Ok(held)
}

fn names(cs: &[Container]) -> String {
    cs.iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Held {
    /// The containers held.
    pub fn containers(&self) -> &[Container] {
        &self.held
    }

    /// Starts (or unpauses) every held container again; those that would not, each with
    /// why (also logged, loudly).
    pub async fn release(mut self) -> Vec<NotResumed> {
        self.resume().await
    }

    async fn resume(&mut self) -> Vec<NotResumed> {
        // Kept until done: dropped halfway (the run dropped meanwhile), the drop starts
        // them all again (a container already running again is no harm).
        let held = self.held.clone();
        if held.is_empty() {
            return Vec::new();
        }
        let left = resume_all(self.engine.as_ref(), self.mode, &held).await;
        self.held.clear();
        let key = &self.key;
        let back: Vec<&Container> = held
            .iter()
            .filter(|c| !left.iter().any(|l| l.name == c.name))
            .collect();
        if !back.is_empty() {
            info!(
                "{key}: {} {} again ({} for {:.1}s)",
                match self.mode {
                    ContainerMode::Stop => "started",
                    ContainerMode::Pause => "unpaused",
                },
                back.iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                held_word(self.mode),
                self.since.elapsed().as_secs_f64()
            );
        }
        for l in &left {
            error!("{key}: {}", l.describe());
        }
        left
    }
}

/// A run dropped before it released its containers (the daemon gave up on it): they are
/// started again here, on a thread with a runtime of its own (the run's may be going away),
/// waited for at most [`DROP_LIMIT`].
impl Drop for Held {
    fn drop(&mut self) {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return;
        }
        let (engine, mode, key) = (self.engine.clone(), self.mode, self.key.clone());
        error!(
            "{key}: the run stopped while {} {} {}; {} them again now",
            names(&held),
            if held.len() == 1 { "was" } else { "were" },
            held_word(mode),
            match mode {
                ContainerMode::Stop => "starting",
                ContainerMode::Pause => "unpausing",
            }
        );
        let worker = std::thread::spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    error!(
                        "{key}: cannot start {} again: no runtime ({e}); {} them by hand",
                        names(&held),
                        resume_verb(mode)
                    );
                    return;
                }
            };
            // The timer is made inside the runtime, which it needs.
            let done = runtime.block_on(async {
                tokio::time::timeout(DROP_LIMIT, resume_all(engine.as_ref(), mode, &held)).await
            });
            match done {
                Ok(left) => {
                    for l in left {
                        error!("{key}: {}", l.describe());
                    }
                }
                Err(_) => error!(
                    "{key}: {} not confirmed running again within {}s; check them and {} them by hand: docker {} {}",
                    names(&held),
                    DROP_LIMIT.as_secs(),
                    resume_verb(mode),
                    resume_verb(mode),
                    held.iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
        });
        let _ = worker.join();
    }
}

/// Starts or unpauses every container at once, each retried; what would not come back.
async fn resume_all(
    engine: &dyn Engine,
    mode: ContainerMode,
    held: &[Container],
) -> Vec<NotResumed> {
    let results = join_all(held.iter().map(|c| resume_one(engine, mode, c))).await;
    held.iter()
        .zip(results)
        .filter_map(|(c, r)| {
            r.err().map(|cause| NotResumed {
                name: c.name.clone(),
                mode,
                cause,
            })
        })
        .collect()
}

async fn resume_one(engine: &dyn Engine, mode: ContainerMode, c: &Container) -> Result<(), String> {
    let mut attempt = 1;
    loop {
        let r = match mode {
            ContainerMode::Stop => engine.start(&c.id).await,
            ContainerMode::Pause => engine.unpause(&c.id).await,
        };
        match r {
            Ok(()) => return Ok(()),
            // A pause whose request failed may not have taken: running is what is wanted.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) if mode == ContainerMode::Pause && message.contains("not paused") => {
                return Ok(());
            }
            Err(e) if attempt >= RESUME_ATTEMPTS => return Err(innermost(&e)),
            Err(e) => {
                warn!(
                    "could not {} container {} again (attempt {attempt} of {RESUME_ATTEMPTS}): {}; retrying",
                    resume_verb(mode),
                    c.name,
                    innermost(&e)
                );
                attempt += 1;
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// A failed API call, named after what it meant to a user: the socket missing, not
/// allowed, or the engine's own answer.
fn engine_error(
    settings: &Containers,
    socket: &Path,
    what: String,
    source: bollard::errors::Error,
) -> ContainersError {
    let key = settings.key.clone();
    let socket = socket.to_path_buf();
    if let bollard::errors::Error::SocketNotFoundError(_) = source {
        return ContainersError::NoSocket {
            key,
            socket,
            source,
        };
    }
    match io_kind(&source) {
        Some(std::io::ErrorKind::NotFound) => ContainersError::NoSocket {
            key,
            socket,
            source,
        },
        Some(std::io::ErrorKind::PermissionDenied) => ContainersError::Denied {
            key,
            socket,
            uid: rustix::process::geteuid().as_raw(),
            source,
        },
        _ => ContainersError::Engine {
            key,
            socket,
            what,
            cause: innermost(&source),
            source,
        },
    }
}

/// The kind of the first I/O error in the chain of `e`.
fn io_kind(e: &bollard::errors::Error) -> Option<std::io::ErrorKind> {
    // Transparent: its `source()` is the I/O error's own, not the I/O error.
    if let bollard::errors::Error::IOError { err } = e {
        return Some(err.kind());
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        cur = err.source();
    }
    None
}

/// The innermost error's text: "Connection refused (os error 111)" rather than bollard's
/// "Error in the hyper legacy client: client error (Connect)"; the engine's own message
/// for an API error.
fn innermost(e: &bollard::errors::Error) -> String {
    if let bollard::errors::Error::DockerResponseServerError {
        status_code,
        message,
    } = e
    {
        return format!("the engine answered {status_code}: {message}");
    }
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests;
