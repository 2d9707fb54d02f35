//! Running the stowage binary: in the foreground with a timeout (`run_stowage*`), in the
//! background with its output readable while it runs (`spawn_stowage*` + `Running`), and
//! reading what it printed (`text`, `parse_listing`, `stowage_says`, `backup_of`).

use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::tools::{collect_into, strip_aws_env};

/// A command's stdout then stderr, for assertions on what a user would see.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Path of the stowage binary: `$STOWAGE_BIN`, else cargo's `CARGO_BIN_EXE_stowage` (set when
/// compiled as an integration test of the stowage crate), else `<target>/<profile>/stowage` next
/// to the test executable's `deps/` dir.
pub fn stowage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("STOWAGE_BIN") {
        return PathBuf::from(p);
    }
    if let Some(p) = option_env!("CARGO_BIN_EXE_stowage") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("stowage"))
        .expect("test executable has no target dir")
}

/// Timeout for `run_stowage*`.
pub const STOWAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// Run `stowage --config <config_path> <args...>` and return its output (status not checked).
/// Inherited `AWS_*` variables are removed; `NO_COLOR=1` is set. Panics after 120 s.
pub fn run_stowage<I, S>(config_path: impl AsRef<Path>, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_stowage_with_env(config_path, args, &[])
}

/// Like `run_stowage`, with extra environment variables (set after the `AWS_*` scrub).
pub fn run_stowage_with_env<I, S>(
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &str)],
) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let envs: Vec<(&str, &OsStr)> = envs.iter().map(|(k, v)| (*k, OsStr::new(v))).collect();
    run_stowage_in(config_path, args, &envs, STOWAGE_TIMEOUT)
}

/// Like `run_stowage_with_env`, with environment values that need not be UTF-8 and a
/// timeout of the caller's.
pub fn run_stowage_in<I, S>(
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &OsStr)],
    timeout: Duration,
) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let bin = stowage_bin();
    let mut cmd = Command::new(&bin);
    cmd.arg("--config").arg(config_path.as_ref()).args(args);
    strip_aws_env(&mut cmd);
    own_state_dir(&mut cmd, config_path.as_ref());
    cmd.env("NO_COLOR", "1");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run_with_timeout(&mut cmd, timeout)
}

/// Run a command with piped stdout/stderr; kill it and panic if it exceeds `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out_pipe = child.stdout.take().expect("stdout");
    let mut err_pipe = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_t = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    match status {
        Some(status) => Output {
            status,
            stdout,
            stderr,
        },
        None => panic!(
            "{cmd:?} timed out after {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Published backup ids per destination, newest first, from `stowage list` output.
pub fn parse_listing(stdout: &str) -> Vec<(String, Vec<String>)> {
    let mut result: Vec<(String, Vec<String>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("destination ") {
            let name = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            result.push((name, Vec::new()));
        } else if let Some(id) = line.split_whitespace().next()
            && id.len() == 20
            && id.ends_with('Z')
            && let Some(last) = result.last_mut()
        {
            last.1.push(id.to_string());
        }
    }
    result
}

/// A background stowage process whose stdout/stderr are collected as they come (so a test can
/// wait for a log line), killed if the test panics before waiting for it.
pub struct Running {
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
    what: String,
}

/// A daemon claims its state directory (one daemon each): tests running in parallel get
/// the config's directory rather than the shared `/tmp`, unless they name one.
pub fn own_state_dir(cmd: &mut Command, config_path: &Path) {
    // Only a test's own scratch directory: a config in tests/fixtures must not get state
    // files written beside it.
    if let Some(dir) = config_path
        .parent()
        .filter(|d| d.starts_with(std::env::temp_dir()))
    {
        cmd.env("STOWAGE_STATE_FILE", dir.join("stowage-state.json"));
    }
}

/// Start `stowage --config <config> <args...>` in the background (same environment as
/// `run_stowage`: no inherited `AWS_*`, `NO_COLOR=1`).
pub fn spawn_stowage<I, S>(config_path: impl AsRef<Path>, args: I) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_stowage_with_env(config_path, args, &[])
}

/// Like `spawn_stowage`, with extra environment variables (e.g. the daemon's
/// `STOWAGE_PID_FILE` / `STOWAGE_STATE_FILE`, so parallel tests do not share them).
pub fn spawn_stowage_with_env<I, S>(
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &OsStr)],
) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    spawn_binary_with_env(stowage_bin(), config_path, args, envs)
}

/// Like `spawn_stowage_with_env`, running the stowage binary at `bin`.
pub fn spawn_binary_with_env<I, S>(
    bin: impl AsRef<OsStr>,
    config_path: impl AsRef<Path>,
    args: I,
    envs: &[(&str, &OsStr)],
) -> Running
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config_path.as_ref()).args(args);
    strip_aws_env(&mut cmd);
    own_state_dir(&mut cmd, config_path.as_ref());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let what = format!("{cmd:?}");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = Arc::new(Mutex::new(Vec::new()));
    let stderr = Arc::new(Mutex::new(Vec::new()));
    let readers = vec![
        collect_into(child.stdout.take().expect("stdout"), stdout.clone()),
        collect_into(child.stderr.take().expect("stderr"), stderr.clone()),
    ];
    Running {
        child: Some(child),
        stdout,
        stderr,
        readers,
        what,
    }
}

impl Running {
    /// The process id (while it has not been waited for).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("running")
    }

    /// Send a signal (`"TERM"`, `"KILL"`, `"HUP"`, ...) with kill(1).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([format!("-{sig}"), self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    /// Wait until the output so far contains `needle`; panics after `timeout` or when the
    /// process exits first.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.output_so_far().contains(needle) {
            assert!(
                self.exited().is_none(),
                "{} exited before printing {needle:?}:\n{}",
                self.what,
                self.output_so_far()
            );
            assert!(
                Instant::now() < deadline,
                "{} printed no {needle:?} within {timeout:?}:\n{}",
                self.what,
                self.output_so_far()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// stdout as far as written (the daemon logs there).
    pub fn stdout_so_far(&self) -> String {
        let out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&out).into_owned()
    }

    /// stdout then stderr, as far as written.
    pub fn output_so_far(&self) -> String {
        let out = self.stdout.lock().unwrap_or_else(|e| e.into_inner());
        let err = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        format!(
            "{}{}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        )
    }

    /// Exit status if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("try_wait"))
    }

    /// Wait for the process (at most `timeout`; then it is killed and this panics).
    pub fn wait(mut self, timeout: Duration) -> Output {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            if Instant::now() >= deadline {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                panic!(
                    "{} did not finish within {timeout:?}\n--- output ---\n{}",
                    self.what,
                    self.output_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let take = |b: &Arc<Mutex<Vec<u8>>>| {
            std::mem::take(&mut *b.lock().unwrap_or_else(|e| e.into_inner()))
        };
        Output {
            status,
            stdout: take(&self.stdout),
            stderr: take(&self.stderr),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Exit code and all output of `stowage --config CONFIG ARGS…`.
pub fn stowage_says(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run_stowage(config, args);
    (out.status.code(), text(&out))
}

/// `stowage run JOB`, which must succeed; the new backup's id (from its summary line).
pub fn backup_of(config: &Path, job: &str) -> String {
    let (code, out) = stowage_says(config, &["run", job]);
    assert_eq!(code, Some(0), "{out}");
    out.split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("backup id")
        .to_string()
}
