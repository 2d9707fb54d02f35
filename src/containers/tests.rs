//! The logic of holding containers: which ones, and that exactly those come back, on a
//! stand-in for the engine's few calls (the real engine is tested by tests/docker/run.sh);
//! what a missing or dead socket says, on a real socket path.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const C: &str = "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
const OWN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn container(id: &str, name: &str, state: &str) -> Container {
    Container {
        id: id.to_string(),
        name: name.to_string(),
        state: state.to_string(),
    }
}

fn settings(mode: ContainerMode) -> Containers {
    Containers {
        key: "jobs.app.containers".into(),
        group: "app".into(),
        mode,
        socket: None,
        stop_timeout: Duration::from_secs(5),
    }
}

/// `hold` of `found` in `mode` on a stand-in engine holding just those containers.
async fn hold_on(found: Vec<Container>, mode: ContainerMode) -> (Arc<Stand>, Held) {
    let engine = Stand::new(&found);
    let held = hold(engine.clone(), &settings(mode), found, &Own::default())
        .await
        .expect("held");
    (engine, held)
}

fn api_error(status_code: u16, message: &str) -> bollard::errors::Error {
    bollard::errors::Error::DockerResponseServerError {
        status_code,
        message: message.to_string(),
    }
}

/// The engine's containers by id, their state changed by the calls as Docker's would be,
/// every call recorded; requests can be made to fail.
#[derive(Default)]
struct Stand {
    state: Mutex<BTreeMap<String, String>>,
    calls: Mutex<Vec<String>>,
    /// Id → how many more requests to it fail.
    failing: Mutex<BTreeMap<String, u32>>,
    /// Id → how many more requests to it never answer.
    hanging: Mutex<BTreeMap<String, u32>>,
}

impl Stand {
    fn new(containers: &[Container]) -> Arc<Stand> {
        let s = Stand::default();
        for c in containers {
            s.state
                .lock()
                .expect("lock")
                .insert(c.id.clone(), c.state.clone());
        }
        Arc::new(s)
    }

    fn fail(&self, id: &str, times: u32) {
        self.failing.lock().expect("lock").insert(id.into(), times);
    }

    fn hang(&self, id: &str, times: u32) {
        self.hanging.lock().expect("lock").insert(id.into(), times);
    }

    /// Whether this request to `id` is one that never answers.
    fn hangs(&self, id: &str) -> bool {
        let mut hanging = self.hanging.lock().expect("lock");
        match hanging.get_mut(id) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    fn state(&self, id: &str) -> String {
        self.state.lock().expect("lock")[id].clone()
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn call(&self, what: &str, id: &str, to: &str) -> Result<(), bollard::errors::Error> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("{what} {}", &id[..1]));
        if let Some(n) = self.failing.lock().expect("lock").get_mut(id)
            && *n > 0
        {
            *n -= 1;
            return Err(api_error(500, &format!("cannot {what} {}", &id[..1])));
        }
        self.state
            .lock()
            .expect("lock")
            .insert(id.into(), to.into());
        Ok(())
    }
}

#[async_trait::async_trait]
impl Engine for Stand {
    async fn labelled(&self, _label: &str) -> Result<Vec<Container>, bollard::errors::Error> {
        unreachable!("hold() is given what the engine listed")
    }
    async fn stop(&self, id: &str, _timeout: Duration) -> Result<(), bollard::errors::Error> {
        self.call("stop", id, "exited")
    }
    async fn start(&self, id: &str) -> Result<(), bollard::errors::Error> {
        if self.hangs(id) {
            std::future::pending::<()>().await;
        }
        self.call("start", id, "running")
    }
    async fn pause(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.call("pause", id, "paused")
    }
    async fn unpause(&self, id: &str) -> Result<(), bollard::errors::Error> {
        if self.state(id) != "paused" {
            self.calls
                .lock()
                .expect("lock")
                .push(format!("unpause {}", &id[..1]));
            return Err(api_error(409, &format!("Container {id} is not paused")));
        }
        self.call("unpause", id, "running")
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn only_running_containers_other_than_stowage_are_held() {
    let own = Own::from_texts(&format!("0::/system.slice/docker-{OWN}.scope\n"), "", "box");
    let p = plan(
        vec![
            container(A, "web", "running"),
            container(B, "worker", "exited"),
            container(C, "cron", "paused"),
            container(OWN, "stowage", "running"),
        ],
        &own,
    );
    assert_eq!(p.hold, vec![container(A, "web", "running")]);
    let left: Vec<(&str, &str)> = p
        .left
        .iter()
        .map(|(c, why)| (c.name.as_str(), *why))
        .collect();
    assert_eq!(
        left,
        [
            ("worker", "it is not running"),
            ("cron", "it is not running"),
            ("stowage", "it is stowage's own container"),
        ]
    );
}

#[test]
fn own_container_from_cgroup_mounts_or_hostname() {
    let v1 = Own::from_texts(
        &format!("12:memory:/docker/{OWN}\n0::/\n"),
        "",
        "db.example",
    );
    assert!(v1.is(OWN) && !v1.is(A));
    let mountinfo = format!(
        "612 590 254:1 /var/lib/docker/containers/{OWN}/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n\
         613 590 0:52 / /x rw - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/{B}/diff\n"
    );
    let v2 = Own::from_texts("0::/\n", &mountinfo, "stowage");
    assert!(v2.is(OWN), "the containers/ mount names it");
    assert!(!v2.is(B), "a layer id is not a container");
    let host = Own::from_texts("0::/\n", "", &OWN[..12]);
    assert!(host.is(OWN) && !host.is(A));
    // Outside a container (or with a hostname of its own and cgroup namespaces): nothing.
    let none = Own::from_texts("0::/user.slice\n", "", "myhost");
    assert!(!none.is(OWN) && !none.is(A));
}

#[tokio::test]
async fn exactly_the_containers_that_were_running_are_started_again() {
    let found = vec![
        container(A, "web", "running"),
        container(B, "worker", "exited"),
        container(C, "cron", "running"),
    ];
    let (engine, held) = hold_on(found, ContainerMode::Stop).await;
    assert_eq!(sorted(engine.calls()), ["stop a", "stop c"]);
    assert_eq!(engine.state(A), "exited");
    let names: Vec<&str> = held.containers().iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["web", "cron"]);
    assert!(held.release().await.is_empty());
    assert_eq!(
        sorted(engine.calls()),
        ["start a", "start c", "stop a", "stop c"],
        "the worker the user had stopped is never started"
    );
    assert_eq!(engine.state(A), "running");
    assert_eq!(engine.state(B), "exited");
    assert_eq!(engine.state(C), "running");
}

#[tokio::test]
async fn pause_mode_pauses_and_unpauses() {
    let found = vec![
        container(A, "web", "running"),
        container(C, "cron", "paused"),
    ];
    let (engine, held) = hold_on(found, ContainerMode::Pause).await;
    assert_eq!(engine.state(A), "paused");
    assert!(held.release().await.is_empty());
    assert_eq!(engine.calls(), ["pause a", "unpause a"]);
    assert_eq!(engine.state(A), "running");
    assert_eq!(engine.state(C), "paused", "paused by the user: left paused");
}

#[tokio::test]
async fn no_labelled_container_holds_nothing() {
    let engine = Stand::new(&[]);
    let held = hold(
        engine.clone(),
        &settings(ContainerMode::Stop),
        Vec::new(),
        &Own::default(),
    )
    .await
    .expect("held");
    assert!(held.containers().is_empty());
    assert!(held.release().await.is_empty());
    assert!(engine.calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_stop_fails_and_starts_the_others_again() {
    let found = vec![
        container(A, "web", "running"),
        container(B, "worker", "running"),
    ];
    let engine = Stand::new(&found);
    engine.fail(B, 1);
    let e = hold(
        engine.clone(),
        &settings(ContainerMode::Stop),
        found,
        &Own::default(),
    )
    .await
    .err()
    .expect("a failed stop fails");
    let text = e.to_string();
    assert!(
        text.starts_with("jobs.app.containers: could not stop container worker: the engine answered 500: cannot stop b; nothing was read, and the containers held so far are running again"),
        "{text}"
    );
    assert_eq!(engine.state(A), "running");
    // Its stop may have taken effect: started too (a no-op for a running container).
    assert!(
        engine.calls().contains(&"start b".to_string()),
        "{:?}",
        engine.calls()
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_is_retried_then_reported_by_name() {
    let found = vec![
        container(A, "web", "running"),
        container(B, "worker", "running"),
    ];
    let (engine, held) = hold_on(found, ContainerMode::Stop).await;
    // web fails once (then starts), worker every time.
    engine.fail(A, 1);
    engine.fail(B, 99);
    let left = held.release().await;
    assert_eq!(engine.state(A), "running", "retried");
    assert_eq!(
        left,
        vec![NotResumed {
            name: "worker".into(),
            mode: ContainerMode::Stop,
            cause: "the engine answered 500: cannot start b".into(),
        }]
    );
    assert_eq!(
        left[0].describe(),
        "could not start container worker again (the engine answered 500: cannot start b); start it by hand: docker start worker"
    );
    let starts = engine.calls().iter().filter(|c| *c == "start b").count();
    assert_eq!(starts, RESUME_ATTEMPTS as usize);
}

/// A run dropped while it holds containers (the daemon gave up on it) starts them again
/// from the drop, even from inside the runtime that is dropping it.
#[tokio::test]
async fn a_dropped_run_starts_its_containers_again() {
    for mode in [ContainerMode::Stop, ContainerMode::Pause] {
        let found = vec![container(A, "web", "running")];
        let engine = Stand::new(&found);
        let held = hold(engine.clone(), &settings(mode), found, &Own::default())
            .await
            .expect("held");
        assert_ne!(engine.state(A), "running");
        drop(held);
        assert_eq!(engine.state(A), "running", "{mode:?}");
    }
}

/// A release cut short (the run dropped while it starts the containers again) leaves the
/// drop to start them.
#[tokio::test]
async fn a_release_dropped_halfway_still_starts_them() {
    let found = vec![
        container(A, "web", "running"),
        container(B, "worker", "running"),
    ];
    let (engine, held) = hold_on(found, ContainerMode::Stop).await;
    engine.hang(A, 1);
    let cut = tokio::time::timeout(Duration::from_millis(200), held.release()).await;
    assert!(cut.is_err(), "the release did not hang");
    assert_eq!(engine.state(A), "running");
    assert_eq!(engine.state(B), "running");
}

#[tokio::test]
async fn a_missing_socket_says_how_to_mount_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = settings(ContainerMode::Stop);
    s.socket = Some(dir.path().join("docker.sock"));
    let e = hold_for_job(&s).await.err().expect("no socket");
    assert!(matches!(e, ContainersError::NoSocket { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "jobs.app.containers: the Docker socket {} does not exist in stowage's container; mount it with `- /var/run/docker.sock:/var/run/docker.sock`",
            dir.path().join("docker.sock").display()
        )),
        "{text}"
    );
}

/// A socket file nobody listens on (the engine stopped): the error says what was tried and
/// why it failed, in the operating system's words.
#[tokio::test]
async fn a_dead_socket_names_the_socket_and_the_cause() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let mut s = settings(ContainerMode::Stop);
    s.socket = Some(path.clone());
    let e = hold_for_job(&s).await.err().expect("nobody listens");
    let text = e.to_string();
    assert!(
        text.starts_with(&format!(
            "jobs.app.containers: connecting through the Docker socket {}: ",
            path.display()
        )) && text.contains("refused"),
        "{text}"
    );
}

#[test]
fn permission_denied_says_group_add() {
    let source = bollard::errors::Error::IOError {
        err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    let e = engine_error(
        &settings(ContainerMode::Stop),
        &PathBuf::from("/var/run/docker.sock"),
        "connecting".into(),
        source,
    );
    assert!(
        e.to_string().starts_with(
            &format!("jobs.app.containers: permission denied on the Docker socket /var/run/docker.sock: stowage runs as uid {}, which needs the socket's group; add `group_add: [\"GID\"]`", rustix::process::geteuid().as_raw())
        ),
        "{e}"
    );
}

#[test]
fn socket_from_config_docker_host_or_default() {
    let mut s = settings(ContainerMode::Stop);
    s.socket = Some(PathBuf::from("/run/user/1000/docker.sock"));
    assert_eq!(socket_path(&s), PathBuf::from("/run/user/1000/docker.sock"));
    // DOCKER_HOST is not set by the test harness; whatever it is, a configured path wins.
    s.socket = None;
    let want = match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => PathBuf::from(&h["unix://".len()..]),
        _ => PathBuf::from(DEFAULT_SOCKET),
    };
    assert_eq!(socket_path(&s), want);
}

#[test]
fn an_older_engines_api_version_is_read_from_its_refusal() {
    let v =
        max_api_version("client version 1.53 is too new. Maximum supported API version is 1.41")
            .expect("a version");
    assert_eq!((v.major_version, v.minor_version), (1, 41));
    assert!(max_api_version("page not found").is_none());
    assert!(max_api_version("Maximum supported API version is x").is_none());
}
