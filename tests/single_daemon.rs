//! One daemon per config and per state directory (issue 25): a second daemon is refused
//! at start naming the first one's pid, the first keeps its pid file and stays healthy,
//! and a daemon killed outright does not block the next start.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Job, Running, run_stowage_with_env, text};

fn command_config(dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(format!("backups-{name}"));
    Job::config_in(dir, "app")
        .schedule("0 0 4 * * *")
        .local_at("local", &dest, None)
        .source(
            "type = \"command\"\nname = \"data\"\ndump = [\"sh\", \"-c\", \"echo some data\"]\n",
        )
        .write_as(&format!("{name}.toml"))
}

fn daemon(config: &Path, state: &Path) -> Running {
    common::spawn_stowage_with_env(
        config,
        ["daemon"],
        &[("STOWAGE_STATE_FILE", state.as_os_str())],
    )
}

fn started(d: &mut Running) {
    d.wait_for_output("job(s) from", Duration::from_secs(30));
}

/// The second daemon exits by itself, quickly, with a failure; its output.
fn refused(mut second: Running) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while second.exited().is_none() {
        assert!(
            Instant::now() < deadline,
            "a second daemon was not refused: still running after 10 s:\n{}",
            second.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = second.wait(Duration::from_secs(5));
    assert!(
        !out.status.success(),
        "refused daemon exits 0: {}",
        text(&out)
    );
    text(&out)
}

fn health(config: &Path, state: &Path) -> String {
    let state = state.to_str().expect("utf8");
    text(&run_stowage_with_env(
        config,
        ["health"],
        &[("STOWAGE_STATE_FILE", state)],
    ))
}

fn assert_first_is_seen(config: &Path, state: &Path, first: u32) {
    let h = health(config, state);
    assert!(
        !h.contains("no running daemon") && !h.contains("is not running"),
        "health no longer sees the first daemon: {h}"
    );
    assert!(
        h.contains(&format!("pid {first}")) || h.starts_with("unhealthy: job"),
        "{h}"
    );
}

/// Two configs, one state directory: the second daemon is refused naming the holder's pid
/// and the directory; the first one's pid file (now in the state directory by default)
/// stays, and `stowage health` still sees it.
#[test]
fn a_second_daemon_on_the_same_state_directory_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let states = dir.path().join("state");
    std::fs::create_dir(&states).expect("state dir");
    let state = states.join("stowage-state.json");
    let (a, b) = (
        command_config(dir.path(), "a"),
        command_config(dir.path(), "b"),
    );
    let mut first = daemon(&a, &state);
    started(&mut first);
    let pid_file = states.join("stowage-daemon.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .unwrap_or_else(|e| panic!(
                "default pid file {} in the state directory: {e}",
                pid_file.display()
            ))
            .trim(),
        first.pid().to_string()
    );

    let out = refused(daemon(&b, &state));
    assert!(
        out.contains(&format!("pid {}", first.pid()))
            && out.contains("state directory")
            && out.contains(&states.display().to_string()),
        "the refusal names the holder's pid and the directory: {out}"
    );
    assert!(first.exited().is_none(), "the first daemon still runs");
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .expect("pid file kept")
            .trim(),
        first.pid().to_string()
    );
    assert_first_is_seen(&a, &state, first.pid());
    first.signal("TERM");
    let out = first.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}

/// One config, two state directories: refused too (every backup would run twice).
#[test]
fn a_second_daemon_on_the_same_config_is_refused_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = command_config(dir.path(), "a");
    let (s1, s2) = (dir.path().join("s1"), dir.path().join("s2"));
    std::fs::create_dir(&s1).expect("s1");
    std::fs::create_dir(&s2).expect("s2");
    let (state1, state2) = (s1.join("state.json"), s2.join("state.json"));
    let mut first = daemon(&config, &state1);
    started(&mut first);
    let out = refused(daemon(&config, &state2));
    assert!(
        out.contains(&format!("pid {}", first.pid()))
            && out.contains("config")
            && out.contains(&config.display().to_string()),
        "the refusal names the holder's pid and the config: {out}"
    );
    assert!(first.exited().is_none(), "the first daemon still runs");
    assert_first_is_seen(&config, &state1, first.pid());
}

/// The lock dies with its holder: after SIGKILL (no clean-up ran, the pid and lock files
/// are still there) the next daemon starts, and health names the new one.
#[test]
fn a_daemon_killed_outright_does_not_block_the_next_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = command_config(dir.path(), "a");
    let state = dir.path().join("stowage-state.json");
    let mut first = daemon(&config, &state);
    started(&mut first);
    first.signal("KILL");
    let _ = first.wait(Duration::from_secs(10));
    assert!(dir.path().join("stowage-daemon.lock").exists());
    let mut second = daemon(&config, &state);
    started(&mut second);
    std::thread::sleep(Duration::from_millis(500));
    assert!(second.exited().is_none(), "{}", second.output_so_far());
    assert_first_is_seen(&config, &state, second.pid());
}
