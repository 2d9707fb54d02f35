//! Hooks: the `before`/`after` commands of a job or a source (`crate::config::Hook`), run
//! around a backup: maintenance mode on and off, a cache flushed, `redis-cli BGSAVE`.
//!
//! A hook is run directly (argv; a shell only with `shell = "…"`), in a process group of its
//! own so that a timeout or a dropped run kills every process it started, with stdin closed
//! and stdout and stderr captured together (the last few KiB: logged, quoted in the error).
//! Its environment is stowage's minus stowage's own `STOWAGE_…` variables (config values,
//! possibly secrets, can be given that way), plus what the run tells it: job, run id, source,
//! outcome, sizes. Never a secret.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::config::Hook;
use crate::source::{describe_status, log_tail};

/// How much of a hook's output is kept: its end, where programs say what went wrong.
const OUTPUT_LIMIT: usize = 4096;
/// After the hook's process exits, how long the output of processes it left running (which
/// hold the pipe open) is still read before it is left behind.
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// Why a hook did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{key}: cannot start `{program}`: {source}{hint}")]
    Spawn {
        key: String,
        program: String,
        /// What to do about it, with its leading "; ".
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{key}: `{command}` failed ({status}){}", quoted(.output))]
    Failed {
        key: String,
        command: String,
        /// "exit code 3", "killed by signal 9".
        status: String,
        output: String,
    },
    #[error(
        "{key}: `{command}` timed out after {} and was killed with the processes it started; raise {key}.timeout or make the command finish sooner{}",
        humantime::format_duration(*.timeout),
        quoted(.output)
    )]
    TimedOut {
        key: String,
        command: String,
        timeout: Duration,
        output: String,
    },
    #[error("{key}: `{command}` was killed: the run was stopped")]
    Cancelled { key: String, command: String },
    #[error("{key}: waiting for `{command}`: {source}")]
    Wait {
        key: String,
        command: String,
        #[source]
        source: std::io::Error,
    },
}

/// The end of a hook's output for an error message, on one line.
fn quoted(output: &str) -> String {
    let tail = log_tail(output);
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.lines().collect::<Vec<_>>().join(" | "))
    }
}

impl HookError {
    /// The error with the end of the hook's output, once it is known.
    fn with_output(mut self, text: String) -> HookError {
        if let HookError::Failed { output, .. } | HookError::TimedOut { output, .. } = &mut self {
            *output = text;
        }
        self
    }

    /// The short form for a summary: "exit code 3", "timed out after 5m".
    pub fn status(&self) -> String {
        match self {
            HookError::Spawn { .. } => "not started".to_string(),
            HookError::Failed { status, .. } => status.clone(),
            HookError::TimedOut { timeout, .. } => {
                format!("timed out after {}", humantime::format_duration(*timeout))
            }
            HookError::Cancelled { .. } => "killed by the stop".to_string(),
            HookError::Wait { .. } => "lost".to_string(),
        }
    }
}

/// A finished hook, as a run's report and summary show it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookReport {
    /// The hook's config key (`jobs.app.before`, `jobs.app.sources[0].after`).
    pub key: String,
    /// "ok", or how it failed ("exit code 3", "timed out after 5m").
    pub status: String,
    pub ok: bool,
    pub duration: Duration,
    /// The failure's message, naming the key and quoting the output's end.
    pub error: Option<String>,
    /// A failed `before` hook with `on_failure = "continue"`: the run went on.
    pub ignored: bool,
}

impl HookReport {
    /// "jobs.app.before ok (0.1s)", "jobs.app.after failed: exit code 3 (0.2s)".
    pub fn describe(&self) -> String {
        format!(
            "{} {}{} ({:.1}s{})",
            self.key,
            if self.ok { "" } else { "failed: " },
            self.status,
            self.duration.as_secs_f64(),
            if self.ignored {
                ", on_failure = continue"
            } else {
                ""
            }
        )
    }
}

/// A hook's result and how long it took.
pub struct Finished {
    pub duration: Duration,
    pub result: Result<(), HookError>,
}

impl Finished {
    pub fn report(&self, hook: &Hook, ignored: bool) -> HookReport {
        HookReport {
            key: hook.key.clone(),
            status: match &self.result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.status(),
            },
            ok: self.result.is_ok(),
            duration: self.duration,
            error: self.result.as_ref().err().map(|e| e.to_string()),
            ignored: ignored && self.result.is_err(),
        }
    }
}

/// Run `hook` with `env` added to its environment, bounded by its timeout; `cancel`, when
/// given, kills it early (a `before` hook of a run that is stopped). Its output is logged.
pub async fn run(
    hook: &Hook,
    env: &[(&'static str, String)],
    cancel: Option<&CancellationToken>,
) -> Finished {
    let t0 = Instant::now();
    let argv = hook.command.argv();
    tracing::info!(
        hook = hook.key.as_str(),
        "hook {}: running `{}`",
        hook.key,
        hook.command.describe()
    );
    let mut output = Tail::default();
    let result = run_child(hook, &argv, env, cancel, &mut output).await;
    let text = output.text();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::info!(hook = hook.key.as_str(), "hook {}: {line}", hook.key);
    }
    Finished {
        duration: t0.elapsed(),
        result: result.map_err(|e| e.with_output(text)),
    }
}

/// Spawn, wait (reading the output as it comes), and kill the group on timeout or cancel.
async fn run_child(
    hook: &Hook,
    argv: &[&str],
    env: &[(&'static str, String)],
    cancel: Option<&CancellationToken>,
    output: &mut Tail,
) -> Result<(), HookError> {
    let key = hook.key.clone();
    let command = hook.command.describe();
    let program = argv.first().copied().unwrap_or_default();
    let spawn_failed = |source: std::io::Error| {
        let hint = if source.kind() == std::io::ErrorKind::NotFound {
            "; install it or give its full path (hooks run without a shell unless shell = \"…\" is set)"
        } else {
            ""
        };
        HookError::Spawn {
            key: key.clone(),
            program: program.to_string(),
            hint: hint.to_string(),
            source,
        }
    };
    if program.is_empty() {
        // Config validation refuses an empty command; a Hook built otherwise gets this.
        return Err(spawn_failed(std::io::ErrorKind::InvalidInput.into()));
    }
    let (write_end, mut pipe) = output_pipe().map_err(spawn_failed)?;
    let mut cmd = command_for(argv, env, write_end).map_err(spawn_failed)?;
    let spawned = cmd.spawn();
    // The command holds the pipe's write end: without dropping it, the output never ends.
    drop(cmd);
    let mut child = spawned.map_err(spawn_failed)?;
    let mut group = Group(child.id().and_then(|p| i32::try_from(p).ok()));
    let deadline = tokio::time::sleep(hook.timeout);
    tokio::pin!(deadline);
    let stopped = async {
        match cancel {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(stopped);
    let mut buf = [0u8; 4096];
    let mut open = true;
    let end = loop {
        tokio::select! {
            s = child.wait() => break End::Exited(s),
            r = pipe.read(&mut buf), if open => match r {
                Ok(0) | Err(_) => open = false,
                Ok(n) => output.push(&buf[..n]),
            },
            _ = &mut deadline => break End::TimedOut,
            _ = &mut stopped => break End::Stopped,
        }
    };
    if let End::TimedOut | End::Stopped = end {
        group.kill();
        let _ = child.wait().await;
    }
    // Processes the hook left running are its business (a daemon it started, say); their
    // output is not waited for past a moment.
    group.disarm();
    if open {
        let _ = tokio::time::timeout(OUTPUT_GRACE, async {
            while let Ok(n) = pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                output.push(&buf[..n]);
            }
        })
        .await;
    }
    let status = match end {
        End::Exited(status) => status,
        End::TimedOut => {
            return Err(HookError::TimedOut {
                key,
                command,
                timeout: hook.timeout,
                output: String::new(),
            });
        }
        End::Stopped => return Err(HookError::Cancelled { key, command }),
    };
    let status = status.map_err(|source| HookError::Wait {
        key: key.clone(),
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(HookError::Failed {
            key,
            command,
            status: describe_status(status),
            output: String::new(),
        })
    }
}

/// How the wait for a hook ended.
enum End {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    Stopped,
}

/// One pipe for stdout and stderr both, so the output keeps its order: the write end for
/// the child, the read end for us.
fn output_pipe() -> std::io::Result<(OwnedFd, tokio::net::unix::pipe::Receiver)> {
    let (tx, rx) = tokio::net::unix::pipe::pipe()?;
    Ok((tx.into_blocking_fd()?, rx))
}

fn command_for(
    argv: &[&str],
    env: &[(&'static str, String)],
    out: OwnedFd,
) -> std::io::Result<tokio::process::Command> {
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .kill_on_drop(true)
        // A group of its own: a timeout kills what the hook started too, and a terminal's
        // Ctrl-C reaches stowage (which stops the run) rather than the hook directly.
        .process_group(0);
    // Config values can come from STOWAGE_… variables (secrets among them): not a hook's.
    // Where the config file is stays, so a hook can run `stowage` itself.
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("STOWAGE_") && name_text != "STOWAGE_CONFIG" {
            cmd.env_remove(name);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    Ok(cmd)
}

/// The hook's process group, killed when dropped (a run dropped past its cleanup time must
/// not leave a hook running) unless disarmed once the hook has exited.
struct Group(Option<i32>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: killpg has no memory effects; a group already gone gives ESRCH.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`OUTPUT_LIMIT`] bytes of the output.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > OUTPUT_LIMIT {
            self.0.drain(..self.0.len() - OUTPUT_LIMIT);
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0).trim().to_string()
    }
}
