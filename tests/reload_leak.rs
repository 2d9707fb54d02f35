//! SIGHUP does not leak (issue 25): a hundred reloads leave the daemon's task count, its
//! anonymous memory and its open files where they were, and the job then fires once per
//! slot of the new schedule.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{Job, Running, run_stowage, text, toml_str};

fn write_config(path: &Path, dest: &Path, fired: &Path, schedule: &str) {
    let dir = path.parent().expect("config in a directory");
    let file = path
        .file_name()
        .expect("config file name")
        .to_string_lossy();
    let dump = format!("date +%s.%N >> {}; echo some data", fired.display());
    Job::config_in(dir, "app")
        .top("[log]\nlevel = \"debug\"")
        .schedule(schedule)
        .local_at("local", dest, Some(3))
        .source(&format!(
            "type = \"command\"\nname = \"data\"\ndump = [\"sh\", \"-c\", {}]\n",
            toml_str(dump)
        ))
        .write_as(&file);
}

fn anonymous_kib(pid: u32) -> u64 {
    let rollup =
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("Anonymous: line")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd dir")
        .count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .count()
}

/// The task count the daemon logged after its `n`th reload.
fn tasks_after(d: &Running, n: usize) -> usize {
    let out = d.stdout_so_far();
    out.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("SIGHUP: ")?;
            rest.split_once(" task(s) alive after the reload")?
                .0
                .parse::<usize>()
                .ok()
        })
        .nth(n - 1)
        .expect("task count logged")
}

fn reloads(d: &Running) -> usize {
    d.stdout_so_far()
        .matches("task(s) alive after the reload")
        .count()
}

/// Send SIGHUP and wait until the daemon has reloaded (signals sent faster would merge).
fn reload(d: &Running) {
    let n = reloads(d);
    d.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reloads(d) <= n {
        assert!(
            Instant::now() < deadline,
            "no reload logged:\n{}",
            d.output_so_far()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_hundred_reloads_leak_no_tasks_memory_or_files_and_the_new_schedule_fires_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, dest, fired) = (
        dir.path().join("stowage.toml"),
        dir.path().join("backups"),
        dir.path().join("fired"),
    );
    // Nothing due during the reloads: what is measured is the reload alone.
    write_config(&config, &dest, &fired, "0 0 4 * * *");
    let out = run_stowage(&config, ["run", "app"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::remove_file(&fired).expect("first backup's mark");
    let state = dir.path().join("state.json");
    let mut d = common::spawn_stowage_with_env(
        &config,
        ["daemon"],
        &[("STOWAGE_STATE_FILE", state.as_os_str())],
    );
    d.wait_for_output("next run of app", Duration::from_secs(30));
    let pid = d.pid();
    // Warm-up: the first reloads allocate what every later one reuses (buffers, the
    // scheduler's first channels); the baseline is taken after them.
    for _ in 0..10 {
        reload(&d);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (tasks0, anon0, fds0, threads0) = (
        tasks_after(&d, 10),
        anonymous_kib(pid),
        open_fds(pid),
        threads(pid),
    );
    for _ in 0..100 {
        reload(&d);
    }
    std::thread::sleep(Duration::from_millis(500));
    let (tasks1, anon1, fds1, threads1) = (
        tasks_after(&d, 110),
        anonymous_kib(pid),
        open_fds(pid),
        threads(pid),
    );
    eprintln!(
        "100 reloads: tasks {tasks0} -> {tasks1}, anonymous {anon0} -> {anon1} KiB, fds {fds0} -> {fds1}, threads {threads0} -> {threads1}"
    );
    // Tasks and files are counted exactly: each reload that left one behind would add 100.
    assert!(
        tasks1 <= tasks0 + 2,
        "tasks grew over 100 reloads: {tasks0} -> {tasks1}"
    );
    assert!(fds1 <= fds0 + 2, "open files grew: {fds0} -> {fds1}");
    // Memory is noisier (allocator caches, a log line's buffers): 1 MiB over 100 reloads is
    // 10 KiB each, less than one leaked scheduler (its channels alone are more).
    assert!(
        anon1 <= anon0 + 1024,
        "anonymous memory grew over 100 reloads: {anon0} -> {anon1} KiB"
    );

    // The new schedule, every 3 s: each slot fires once, at its mark.
    write_config(&config, &dest, &fired, "*/3 * * * * *");
    reload(&d);
    std::thread::sleep(Duration::from_secs(10));
    let marks: Vec<f64> = std::fs::read_to_string(&fired)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        marks.len() >= 2,
        "the new schedule fired {} time(s) in 10 s: {marks:?}\n{}",
        marks.len(),
        d.output_so_far()
    );
    let slots: Vec<i64> = marks.iter().map(|m| (m.floor() as i64) / 3).collect();
    let mut unique = slots.clone();
    unique.dedup();
    assert_eq!(unique, slots, "a slot fired more than once: {marks:?}");
    for m in &marks {
        // The dump starts within a second and a half of its 3-second mark.
        let off = m - (m / 3.0).floor() * 3.0;
        assert!(
            off < 1.5,
            "fired off schedule at {m} ({off:.2} s past a mark)"
        );
    }
    d.signal("TERM");
    let out = d.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}
