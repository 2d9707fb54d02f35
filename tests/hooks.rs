//! `before`/`after` hooks of a job and of its sources, through the real binary with `command`
//! sources and a local destination: the order they run in and the environment they see, a
//! failing `before` (nothing published, `after` still told the run failed), `on_failure =
//! "continue"`, a timeout that kills the hook with what it started, a stop during a hook,
//! `shell` against argv, and hooks of one source only. Config mistakes are unit-tested in
//! `src/load/validate/hooks.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Job, JobBuilder, read_tree, toml_str};

const JOB: &str = "app";

/// A TOML array of strings.
fn argv(args: &[&str]) -> String {
    format!(
        "[{}]",
        args.iter().map(toml_str).collect::<Vec<_>>().join(", ")
    )
}

/// A hook that appends `tag` to the file `order` and writes the `STOWAGE_…` variables it
/// sees to `<tag>.env`, as argv (`sh -c` given explicitly).
fn recorder(dir: &Path, tag: &str) -> String {
    let script = format!(
        "echo {tag} >> {order}; env | grep '^STOWAGE_' | sort > {env}",
        order = dir.join("order").display(),
        env = dir.join(format!("{tag}.env")).display()
    );
    argv(&["sh", "-c", &script])
}

/// A `command` source `name` that appends `dump-<name>` to `order` and outputs some bytes.
fn source(dir: &Path, name: &str, extra: &str) -> String {
    let script = format!(
        "echo dump-{name} >> {}; printf 'data of {name}'",
        dir.join("order").display()
    );
    format!(
        "type = \"command\"\nname = {}\ndump = {}\n{extra}\n",
        toml_str(name),
        argv(&["sh", "-c", &script])
    )
}

fn builder() -> JobBuilder {
    Job::new(JOB).local("local", Some(10))
}

fn read_env(path: PathBuf) -> BTreeMap<String, String> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Job hooks around the whole run, source hooks around their source only, in that order,
/// each told the job, the run's id and what it is; `after` hooks also the outcome and sizes.
/// Stowage's own `STOWAGE_…` variables (the harness sets two) do not reach them.
#[test]
fn hooks_run_in_order_with_their_environment() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let job = b
        .job(&format!(
            "before = {}\nafter = {}",
            recorder(&dir, "job-before"),
            recorder(&dir, "job-after")
        ))
        .source(&source(
            &dir,
            "a",
            &format!(
                "before = {}\nafter = {{ command = {}, timeout = \"30s\" }}",
                recorder(&dir, "a-before"),
                recorder(&dir, "a-after")
            ),
        ))
        .source(&source(&dir, "b", ""))
        .write();
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(code, Some(0), "run:\n{out}");
    let ids = job.ids("local");
    assert_eq!(ids.len(), 1, "{out}");
    let id = ids[0].as_str();
    assert_eq!(
        job.lines_of("order"),
        [
            "job-before",
            "a-before",
            "dump-a",
            "a-after",
            "dump-b",
            "job-after"
        ],
        "{out}"
    );
    let common = [("STOWAGE_JOB", JOB), ("STOWAGE_RUN_ID", id)];
    let with = |more: &[(&str, &str)]| env_of(&[&common[..], more].concat());
    assert_eq!(
        read_env(job.path("job-before.env")),
        with(&[("STOWAGE_HOOK", "before")])
    );
    assert_eq!(
        read_env(job.path("a-before.env")),
        with(&[("STOWAGE_HOOK", "before"), ("STOWAGE_SOURCE", "a")])
    );
    let a_after = read_env(job.path("a-after.env"));
    let manifest = job.manifest("local", id);
    let a = &manifest["sources"][0];
    let a_size = a["size"].as_u64().expect("size").to_string();
    assert_eq!(
        a_after,
        with(&[
            ("STOWAGE_HOOK", "after"),
            ("STOWAGE_SOURCE", "a"),
            ("STOWAGE_OUTCOME", "success"),
            ("STOWAGE_BYTES_IN", "9"),
            ("STOWAGE_BYTES_OUT", &a_size),
        ])
    );
    let b_size = manifest["sources"][1]["size"].as_u64().expect("size");
    let total_out = (a["size"].as_u64().expect("size") + b_size).to_string();
    assert_eq!(
        read_env(job.path("job-after.env")),
        with(&[
            ("STOWAGE_HOOK", "after"),
            ("STOWAGE_OUTCOME", "success"),
            ("STOWAGE_BYTES_IN", "18"),
            ("STOWAGE_BYTES_OUT", &total_out),
        ])
    );
    assert!(
        out.contains(&format!("hooks of backup {id}: jobs.app.before ok"))
            && out.contains("jobs.app.sources[0].before ok")
            && out.contains("jobs.app.sources[0].after ok")
            && out.contains("jobs.app.after ok"),
        "the summary lists every hook:\n{out}"
    );
}

/// A failing `before` fails the run before any source is dumped: nothing is published, the
/// earlier backup stays byte for byte, the error names the hook and quotes its output, and
/// `after` still runs, told the run failed.
#[test]
fn a_failing_before_fails_the_run_and_after_still_runs() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let plain = b.source(&source(&dir, "a", "")).write();
    plain.backup();
    let before_ids = plain.ids("local");
    let before_tree = read_tree(&plain.path("local"));
    std::fs::remove_file(plain.path("order")).expect("rm order");

    let config = std::fs::read_to_string(&plain.config).expect("config");
    let hooked = config.replace(
        "[[jobs.app.sources]]",
        &format!(
            "before = {}\nafter = {}\n\n[[jobs.app.sources]]",
            argv(&["sh", "-c", "echo maintenance refused >&2; exit 3"]),
            recorder(&dir, "job-after")
        ),
    );
    std::fs::write(&plain.config, hooked).expect("write config");
    let (code, out) = plain.stowage(&["run", JOB]);
    assert_eq!(code, Some(1), "the run must fail:\n{out}");
    assert!(
        out.contains("jobs.app.before: `sh -c \"echo maintenance refused >&2; exit 3\"` failed (exit code 3): maintenance refused"),
        "the error names the hook, its status and output:\n{out}"
    );
    assert_eq!(
        plain.lines_of("order"),
        ["job-after"],
        "no source dumped:\n{out}"
    );
    assert_eq!(plain.ids("local"), before_ids, "nothing published:\n{out}");
    assert!(
        read_tree(&plain.path("local")) == before_tree,
        "the destination is as it was:\n{out}"
    );
    let after = read_env(plain.path("job-after.env"));
    assert_eq!(
        after.get("STOWAGE_OUTCOME").map(String::as_str),
        Some("failed")
    );
    assert_eq!(
        after.get("STOWAGE_BYTES_OUT").map(String::as_str),
        Some("0")
    );
    assert!(
        out.contains("jobs.app.before failed: exit code 3") && out.contains("jobs.app.after ok"),
        "the summary shows both hooks:\n{out}"
    );
}

/// `on_failure = "continue"`: the run goes on and succeeds, and the summary says the hook
/// failed. A failing `after` never changes a successful run's outcome either.
#[test]
fn failures_that_do_not_fail_the_run() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let job = b
        .job("before = { command = [\"false\"], on_failure = \"continue\" }\nafter = [\"sh\", \"-c\", \"echo cache not flushed; exit 7\"]")
        .source(&source(&dir, "a", ""))
        .write();
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(code, Some(0), "the run succeeds:\n{out}");
    assert_eq!(job.ids("local").len(), 1, "{out}");
    assert!(out.contains("backup success:"), "outcome success:\n{out}");
    assert!(
        out.contains("jobs.app.before failed: exit code 1 (")
            && out.contains("on_failure = continue")
            && out.contains("jobs.app.after failed: exit code 7"),
        "the summary says which hooks failed:\n{out}"
    );
    assert!(
        out.contains("cache not flushed"),
        "the after hook's output is logged:\n{out}"
    );
    // Both are warnings of the run (which notifications send), on its summary line.
    let summary = out
        .lines()
        .find(|l| l.contains("backup success:"))
        .unwrap_or_default();
    assert!(
        summary.contains("warning: hook jobs.app.before")
            && summary.contains("; hook jobs.app.after"),
        "the failed hooks are the run's warnings:\n{summary}"
    );
}

/// Whether process `pid` is gone (a zombie counts: it runs nothing).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// A hook past its timeout is killed with the processes it started (here a background
/// `sleep`), soon after the timeout, and the run fails saying so.
#[test]
fn a_timeout_kills_the_hook_and_its_children() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let pid_file = dir.join("bg.pid");
    let job = b
        .job(&format!(
            "before = {{ shell = {}, timeout = \"1s\" }}",
            toml_str(format!(
                "sleep 100 & echo $! > {}; sleep 100",
                pid_file.display()
            ))
        ))
        .source(&source(&dir, "a", ""))
        .write();
    let t0 = Instant::now();
    let (code, out) = job.stowage(&["run", JOB]);
    let took = t0.elapsed();
    assert_eq!(code, Some(1), "the run fails:\n{out}");
    assert!(
        took < Duration::from_secs(15),
        "the hook was killed after its 1 s timeout, not waited for ({took:?}):\n{out}"
    );
    assert!(
        out.contains("jobs.app.before: `sh -c \"sleep 100 &")
            && out.contains("timed out after 1s and was killed")
            && out.contains("raise jobs.app.before.timeout"),
        "the error names the hook, the key and the timeout:\n{out}"
    );
    let pid = std::fs::read_to_string(&pid_file).expect("pid of the background sleep");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(gone(pid), "the hook's background child {pid} still runs");
    assert!(job.lines_of("order").is_empty(), "no source dumped:\n{out}");
}

/// argv hooks reach the program as given: no `$` expansion, `;` is an argument. `shell`
/// runs its line with `sh -c`. The output of both is logged.
#[test]
fn argv_is_not_a_shell_and_shell_is() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let marker = dir.join("injected");
    let job = b
        .job(&format!(
            "before = {}\nafter = {{ shell = {} }}",
            argv(&[
                "printf",
                "arg=%s\\n",
                "$STOWAGE_JOB",
                &format!("x; touch {}", marker.display())
            ]),
            toml_str("echo \"job is $STOWAGE_JOB\"; echo \"outcome $STOWAGE_OUTCOME\"")
        ))
        .source(&source(&dir, "a", ""))
        .write();
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(code, Some(0), "run:\n{out}");
    assert!(
        out.contains("hook jobs.app.before: arg=$STOWAGE_JOB")
            && out.contains(&format!(
                "hook jobs.app.before: arg=x; touch {}",
                marker.display()
            )),
        "argv reaches printf untouched:\n{out}"
    );
    assert!(!marker.exists(), "no shell ran the `;`");
    assert!(
        out.contains("hook jobs.app.after: job is app")
            && out.contains("hook jobs.app.after: outcome success"),
        "shell expands and runs both commands:\n{out}"
    );
}

/// A failing source `before` fails that source as a failed dump would: it is not dumped,
/// nothing is published, its `after` runs told it failed, and the next source never starts.
#[test]
fn a_failing_source_before_fails_the_source() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let job = b
        .source(&source(
            &dir,
            "a",
            &format!(
                "before = [\"false\"]\nafter = {}",
                recorder(&dir, "a-after")
            ),
        ))
        .source(&source(&dir, "b", ""))
        .write();
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(code, Some(1), "the run fails:\n{out}");
    assert!(
        out.contains("source a failed: jobs.app.sources[0].before: `false` failed (exit code 1)"),
        "the source's error names its hook:\n{out}"
    );
    assert_eq!(job.lines_of("order"), ["a-after"], "nothing dumped:\n{out}");
    assert!(job.ids("local").is_empty(), "nothing published:\n{out}");
    assert_eq!(
        read_env(job.path("a-after.env"))
            .get("STOWAGE_OUTCOME")
            .map(String::as_str),
        Some("failed")
    );
}

/// A stop during a `before` hook kills it (and what it started) at once; the run is
/// abandoned, and the `after` hook still runs, told the run was cancelled.
#[test]
fn a_stop_kills_before_and_still_runs_after() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let pid_file = dir.join("bg.pid");
    let job = b
        .job(&format!(
            "before = {{ shell = {} }}\nafter = {}",
            toml_str(format!(
                "sleep 100 & echo $! > {}; echo waiting; wait",
                pid_file.display()
            )),
            recorder(&dir, "job-after")
        ))
        .source(&source(&dir, "a", ""))
        .write();
    let mut running = job.spawn(&["run", JOB], &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pid_file.exists() {
        assert!(Instant::now() < deadline, "{}", running.output_so_far());
        std::thread::sleep(Duration::from_millis(20));
    }
    running.wait_for_output("backup started", Duration::from_secs(30));
    running.signal("TERM");
    let out = running.wait(Duration::from_secs(30));
    let text = common::text(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let pid = std::fs::read_to_string(&pid_file).expect("pid");
    let pid = pid.trim();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        gone(pid),
        "the before hook's child {pid} still runs:\n{text}"
    );
    assert_eq!(job.lines_of("order"), ["job-after"], "{text}");
    assert_eq!(
        read_env(job.path("job-after.env"))
            .get("STOWAGE_OUTCOME")
            .map(String::as_str),
        Some("cancelled"),
        "{text}"
    );
    assert!(job.ids("local").is_empty(), "{text}");
}

/// `check-config` lists each hook with its program and timeout, not its arguments (a token
/// on a hook's command line must not end up in a pasted check-config output).
#[test]
fn check_config_lists_hooks_without_their_arguments() {
    let b = builder();
    let dir = b.dir().to_path_buf();
    let job = b
        .job("before = { command = [\"curl\", \"-H\", \"Authorization: Bearer s3cr3t\"], timeout = \"30s\", on_failure = \"continue\" }\nafter = { shell = \"echo s3cr3t\" }")
        .source(&source(&dir, "a", "before = [\"true\"]"))
        .write();
    let (code, out) = job.stowage(&["check-config"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "hook jobs.app.before: `curl …`, timeout = \"30s\", on_failure = \"continue\""
        ) && out.contains("hook jobs.app.after: a shell command, timeout = \"5m\"")
            && out.contains("hook jobs.app.sources[0].before: `true …`"),
        "every hook is listed:\n{out}"
    );
    assert!(!out.contains("s3cr3t"), "no argument is shown:\n{out}");
}
