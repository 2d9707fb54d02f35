//! `[jobs.NAME.containers]` through the real binary, where no Docker engine answers: the run
//! fails before any file is read, after the sources before the files were dumped and the
//! files source's `before` hook ran, its `after` hook told so, and nothing is published.
//! Holding and releasing containers on a real engine is checked by tests/docker/run.sh;
//! the logic of which containers come back is unit-tested in `src/containers/tests.rs`.

mod common;

use std::path::Path;

use common::{Job, toml_str};

const JOB: &str = "app";

/// A job: a command source `db` (appends `dump-db` to `order`), then a files source `files`
/// over `data/` whose hooks append `files-before` / `files-after:<outcome>`, then
/// `[jobs.app.containers]` with `socket`.
fn job(socket: &Path) -> Job {
    let b = Job::new(JOB).local("local", Some(10));
    let dir = b.dir().to_path_buf();
    std::fs::create_dir_all(dir.join("data")).expect("mkdir");
    std::fs::write(dir.join("data/file"), "content").expect("write");
    let order = dir.join("order");
    let append = |what: &str| {
        format!(
            "[\"sh\", \"-c\", {}]",
            toml_str(format!("echo {what} >> {}", order.display()))
        )
    };
    b.command(
        "db",
        &[
            "sh",
            "-c",
            &format!("echo dump-db >> {}; printf data", order.display()),
        ],
    )
    .files(
        "files",
        &dir.join("data"),
        &format!(
            "before = {}\nafter = {}",
            append("files-before"),
            append("files-after:$STOWAGE_OUTCOME")
        ),
    )
    .section(&format!(
        "[jobs.{JOB}.containers]\nstop_during_files = \"app\"\nsocket = {}\n",
        toml_str(socket.display())
    ))
    .write()
}

/// Fails the way a run whose containers cannot be held must: exit 1 with `want` said, the
/// files never read, the files source's hooks around it, nothing published.
fn fails_before_reading(job: &Job, want: &str) {
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(code, Some(1), "run:\n{out}");
    assert!(out.contains(want), "want {want:?} in:\n{out}");
    assert!(
        !out.contains("stage: files files"),
        "the files were read:\n{out}"
    );
    assert_eq!(
        job.lines_of("order"),
        ["dump-db", "files-before", "files-after:failed"],
        "{out}"
    );
    assert!(job.ids("local").is_empty(), "published:\n{out}");
}

#[test]
fn without_the_socket_the_run_fails_before_reading_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    let job = job(&socket);
    fails_before_reading(
        &job,
        &format!(
            "containers: jobs.app.containers: the Docker socket {} does not exist in stowage's container; mount it with `- /var/run/docker.sock:/var/run/docker.sock`",
            socket.display()
        ),
    );
}

/// A socket file no engine listens on (Docker stopped): the socket and the system's reason.
#[test]
fn with_no_engine_behind_the_socket_the_run_fails_before_reading_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind"));
    let job = job(&socket);
    fails_before_reading(
        &job,
        &format!(
            "containers: jobs.app.containers: connecting through the Docker socket {}: Connection refused",
            socket.display()
        ),
    );
}
