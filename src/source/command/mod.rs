//! Any program whose standard output is the backup, like restic's `--stdin-from-command`:
//!
//! ```toml
//! [[jobs.app.sources]]
//! type = "command"
//! name = "ldap"
//! dump = ["slapcat", "-n", "1"]                 # stdout is the backup
//! restore = ["slapadd", "-n", "1"]              # optional: gets it back on stdin
//! extension = "ldif"                            # default "bin"
//! format = "slapcat LDIF"                       # default "command output"
//! ```
//!
//! The argv is executed directly, never through a shell: a pipeline is written as
//! `["sh", "-c", "…"]`. A program named without a '/' is looked up on PATH when the job runs
//! (the config is valid without it; the run says "not found on PATH"). The dump is a backup
//! only if the program exits 0: a non-zero exit or a signal fails the run, quotes the
//! program's stderr, and publishes nothing.
//!
//! Restore: `--to` is required like for every database source, and any value is accepted
//! (`--to -` when the restore command knows its own target). The command gets it as the
//! environment variable `STOWAGE_RESTORE_TARGET`, and every `{target}` inside its arguments is
//! replaced by it; `--clean` sets `STOWAGE_RESTORE_CLEAN=1`. `--no-owner` means nothing here.
//!
//! `{target}` is text pasted into an argument, and an argument may be a shell script
//! (`["sh", "-c", "tool --db {target}"]`) or another program's option list: a target
//! holding shell syntax (`x; touch /tmp/pwned`) would run as code there. So a target that
//! replaces `{target}` may only hold letters, digits and `_-./=:,+@%`, and must not
//! start with '-' (an option) unless it is exactly "-"; any other target is refused before
//! anything runs. `STOWAGE_RESTORE_TARGET` carries any value safely: a script reads it as
//! `"$STOWAGE_RESTORE_TARGET"` (quoted), which the shell never parses as code.
//! A source without `restore` refuses and says how to restore by hand: decompress the object
//! and pipe it into the tool.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use figment::value::Value;
use futures::FutureExt;
use serde::Deserialize;

use super::{
    Archive, Database, Dump, DumpInfo, Engine, RestoreOptions, SourceError, SpawnReason, drain_stderr, feed,
    spawn_dump, spawn_error, tool_command, wait_child,
};
use crate::section::{Priority, Section};

const DEFAULT_EXTENSION: &str = "bin";
const DEFAULT_FORMAT: &str = "command output";
/// Replaced by the restore target in the restore command's arguments.
const TARGET_PLACEHOLDER: &str = "{target}";
const INSTALL_HINT: &str = "install it in the image, or give its absolute path";
/// Messages quote the command; a long `sh -c` script is cut to this many characters.
const SHOWN_CHARS: usize = 160;

/// `type = "command"`.
pub struct Command;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommand {
    /// Taken as raw values so that a string or a number gets a message about argv, not
    /// serde's "invalid type".
    dump: Option<Value>,
    restore: Option<Value>,
    extension: Option<String>,
    format: Option<String>,
}

impl Engine for Command {
    fn kind(&self) -> &'static str {
        "command"
    }

    fn keys(&self) -> &'static [&'static str] {
        crate::section::serde_fields::<RawCommand>()
    }

    fn configure(&self, section: &mut Section<'_>) -> Option<Arc<dyn Database>> {
        let raw: RawCommand = section.parse()?;
        let mark = section.mark();
        let dump = match &raw.dump {
            Some(v) => argv(section, "dump", v),
            None => {
                section.problem(
                    "dump",
                    "required for type = \"command\"; e.g. dump = [\"slapcat\", \"-n\", \"1\"] (its standard output is the backup)",
                );
                None
            }
        };
        let restore = raw
            .restore
            .as_ref()
            .and_then(|v| argv(section, "restore", v));
        let extension = match raw.extension.as_deref() {
            None => DEFAULT_EXTENSION,
            Some(e) => match check_extension(e) {
                Ok(()) => intern(e),
                Err(why) => {
                    section.problem("extension", format!("\"{e}\" {why}"));
                    DEFAULT_EXTENSION
                }
            },
        };
        let format = match raw.format.as_deref() {
            None => DEFAULT_FORMAT,
            Some(f) if f.trim().is_empty() => {
                section.problem(
                    "format",
                    "is empty; describe the output, e.g. format = \"slapcat LDIF\", or remove the key",
                );
                DEFAULT_FORMAT
            }
            Some(f) if f.chars().any(char::is_control) || f.chars().count() > 200 => {
                section.problem(
                    "format",
                    "must be one line of at most 200 characters (it is shown in the manifest and in listings)",
                );
                DEFAULT_FORMAT
            }
            Some(f) => intern(f),
        };
        if section.failed_since(mark) {
            return None;
        }
        Some(Arc::new(CommandSource {
            name: section.name.clone(),
            dump: dump?,
            restore,
            extension,
            format,
            priority: section.priority,
        }))
    }

    fn unconfigured(&self, name: &str) -> Arc<dyn Database> {
        Arc::new(CommandSource {
            name: name.to_string(),
            dump: Vec::new(),
            restore: None,
            extension: DEFAULT_EXTENSION,
            format: DEFAULT_FORMAT,
            priority: Priority::default(),
        })
    }
}

/// Check an argv key: a non-empty array of strings whose first is a program.
fn argv(section: &mut Section<'_>, key: &str, value: &Value) -> Option<Vec<String>> {
    let example = if key == "dump" {
        "dump = [\"slapcat\", \"-n\", \"1\"]"
    } else {
        "restore = [\"slapadd\", \"-n\", \"1\"]"
    };
    let items = match value {
        Value::Array(_, items) => items,
        Value::String(_, s) => {
            section.problem(
                key,
                format!(
                    "\"{s}\" is a string, but the command is not run through a shell; give the program and its arguments as an array, e.g. {example}, or [\"sh\", \"-c\", \"…\"] for a pipeline"
                ),
            );
            return None;
        }
        other => {
            section.problem(
                key,
                format!(
                    "expected an array of strings (the program and its arguments), found {}; e.g. {example}",
                    describe_value(other)
                ),
            );
            return None;
        }
    };
    if items.is_empty() {
        section.problem(
            key,
            format!(
                "is empty; give the program and its arguments, e.g. {example}{}",
                if key == "restore" {
                    ", or remove the key"
                } else {
                    ""
                }
            ),
        );
        return None;
    }
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        let k = format!("{key}[{i}]");
        match item {
            Value::String(_, s) if s.contains('\0') => {
                section.problem(&k, "contains a NUL character, which no argument can hold");
                ok = false;
            }
            Value::String(_, s) => out.push(s.clone()),
            Value::Num(..) | Value::Bool(..) => {
                let text = value_text(item);
                section.problem(
                    &k,
                    format!(
                        "{text} is {}; every argument is a string: write \"{text}\"",
                        describe_value(item)
                    ),
                );
                ok = false;
            }
            other => {
                section.problem(
                    &k,
                    format!(
                        "expected a string (one argument), found {}",
                        describe_value(other)
                    ),
                );
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let program = &out[0];
    if program.trim().is_empty() {
        section.problem(
            &format!("{key}[0]"),
            "is empty; the first element is the program to run, e.g. \"pg_dumpall\" or \"/usr/local/bin/dump.sh\"",
        );
        return None;
    }
    if program.contains('/') && !Path::new(program).is_absolute() {
        section.problem(
            &format!("{key}[0]"),
            format!(
                "\"{program}\" is a relative path; give an absolute path, or a program name without '/' to look it up on PATH"
            ),
        );
        return None;
    }
    Some(out)
}

fn describe_value(v: &Value) -> &'static str {
    match v {
        Value::String(..) => "a string",
        Value::Char(..) => "a character",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::Bool(_, b) => b.to_string(),
        Value::Num(_, n) => {
            if let Some(i) = n.to_i128() {
                i.to_string()
            } else if let Some(u) = n.to_u128() {
                u.to_string()
            } else if let Some(f) = n.to_f64() {
                f.to_string()
            } else {
                "the value".to_string()
            }
        }
        _ => "the value".to_string(),
    }
}

/// The extension becomes part of the object key (`<source>.<extension>.zst`).
fn check_extension(e: &str) -> Result<(), &'static str> {
    if e.is_empty() {
        return Err("is empty; e.g. extension = \"ldif\", or remove the key for \"bin\"");
    }
    if e.len() > 32 {
        return Err("is longer than 32 characters");
    }
    if e.starts_with('.') || e.ends_with('.') || e.contains("..") {
        return Err("must not start or end with '.' (write \"tar\", not \".tar\")");
    }
    if !e
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
    {
        return Err(
            "may only hold letters, digits, '.', '-' and '_' (it is part of the object's name)",
        );
    }
    Ok(())
}

/// [`Database::extension`] and [`Database::format`] return `&'static str`, and these come
/// from the config. Each distinct value is leaked once, so config reloads do not grow memory.
fn intern(s: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = seen.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_string().into_boxed_str());
    seen.insert(v);
    v
}

/// An argv as a shell would show it, for messages; long ones are cut.
fn render(argv: &[String]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./=:,+@%^".contains(c))
    };
    let text = argv
        .iter()
        .map(|a| {
            if plain(a) {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    if text.chars().count() > SHOWN_CHARS {
        let cut: String = text.chars().take(SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Where `program` would be executed from: itself when it holds a '/', else the first
/// executable file of that name on `path` (a PATH value).
fn resolve_program(
    program: &str,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, SpawnReason> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(SpawnReason::Missing {
                hint: format!("{program} does not exist; {INSTALL_HINT}"),
                source: Some(e),
            }),
            Err(e) => Err(SpawnReason::Unreadable {
                program: program.to_string(),
                source: e,
            }),
            Ok(_) if !executable(&p) => Err(SpawnReason::missing(format!(
                "{program} is not an executable file (chmod +x, or run it through an interpreter such as [\"sh\", \"{program}\"])"
            ))),
            Ok(_) => Ok(p),
        };
    }
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.iter()
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(program))
        .find(|p| executable(p))
        .ok_or_else(|| {
            SpawnReason::missing(format!(
                "{program} not found on PATH ({}); {INSTALL_HINT}",
                path.map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "PATH is not set".to_string())
            ))
        })
}

/// A configured command source. `dump` is empty for a source made only to restore.
#[derive(Debug)]
pub struct CommandSource {
    name: String,
    dump: Vec<String>,
    restore: Option<Vec<String>>,
    extension: &'static str,
    format: &'static str,
    priority: Priority,
}

impl CommandSource {
    fn by_hand(&self) -> String {
        format!(
            "restore it by hand: decompress the object {name}.{ext}.zst (or .gz) of the backup and pipe it into your tool, e.g. `zstd -dc {name}.{ext}.zst | TOOL` (`stowage list` shows the backups; a local destination holds them under JOB/ID/)",
            name = self.name,
            ext = self.extension
        )
    }

    fn no_restore(&self) -> SourceError {
        if self.dump.is_empty() {
            SourceError::Refused(format!(
                "source \"{}\" (type \"command\") is no longer in the config, so stowage does not know its restore command; add it back with restore = [\"TOOL\", …], or {}",
                self.name,
                self.by_hand()
            ))
        } else {
            SourceError::Refused(format!(
                "source \"{}\" (type \"command\") has no restore command; add restore = [\"TOOL\", …] (it gets the backup on its standard input), or {}",
                self.name,
                self.by_hand()
            ))
        }
    }
}

#[async_trait]
impl Database for CommandSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "command"
    }

    fn extension(&self) -> &'static str {
        self.extension
    }

    fn format(&self) -> &'static str {
        self.format
    }

    fn describe(&self) -> String {
        if self.dump.is_empty() {
            return "command".to_string();
        }
        format!(
            "command `{}`{}",
            render(&self.dump),
            match &self.restore {
                Some(r) => format!(", restore `{}`", render(r)),
                None => ", no restore command".to_string(),
            }
        )
    }

    fn target_example(&self) -> &'static str {
        "- (or any text: the restore command gets it as STOWAGE_RESTORE_TARGET and {target})"
    }

    fn check_target(&self, target: &str) -> Result<(), String> {
        // The target means whatever the user's restore command makes of it; only a target
        // pasted into its arguments must be inert there.
        match &self.restore {
            Some(argv) if substitutes(argv) => check_substituted(target),
            _ => Ok(()),
        }
    }

    async fn tool_version(&self) -> Result<(String, String), SourceError> {
        // Most programs have no --version (and some would start working on one): the program
        // that will run is recorded instead, and a missing one fails here, before any upload.
        let Some(program) = self.dump.first() else {
            return Err(SourceError::Refused(format!(
                "source \"{}\" has no dump command",
                self.name
            )));
        };
        let path = std::env::var_os("PATH");
        let resolved =
            resolve_program(program, path.as_deref()).map_err(|reason| SourceError::Spawn {
                tool: program.clone(),
                reason,
            })?;
        Ok((program.clone(), resolved.display().to_string()))
    }

    async fn dump(&self) -> Result<Dump, SourceError> {
        let Some((program, args)) = self.dump.split_first() else {
            return Err(SourceError::Refused(format!(
                "source \"{}\" has no dump command",
                self.name
            )));
        };
        let mut cmd = tool_command(program, self.priority);
        cmd.args(args);
        let tool = format!("dump command `{}`", render(&self.dump));
        let (reader, finish) = spawn_dump(&tool, cmd, INSTALL_HINT)?;
        Ok(Dump {
            reader,
            finish: async move {
                finish.await?;
                Ok(DumpInfo::default())
            }
            .boxed(),
        })
    }

    /// Verify: a command's output has no format stowage knows; its size and sha256 (checked
    /// before an engine is asked) are all there is to check.
    async fn check_archive(
        &self,
        _archive: &dyn Archive,
    ) -> Result<crate::engine::ArchiveCheck, SourceError> {
        Ok(crate::engine::ArchiveCheck::Whole(
            "a command's output: checked by its size and sha256".to_string(),
        ))
    }

    async fn archive_objects(&self, _archive: &dyn Archive) -> Result<Vec<String>, SourceError> {
        Err(SourceError::Refused(format!(
            "source \"{}\" is a command's output, which stowage cannot look into",
            self.name
        )))
    }

    async fn live_objects(&self, _target: Option<&str>) -> Result<Vec<String>, SourceError> {
        Err(SourceError::Refused(format!(
            "source \"{}\" is a command's output, which has no objects stowage can list",
            self.name
        )))
    }

    async fn restore(
        &self,
        archive: &dyn Archive,
        opts: &RestoreOptions,
    ) -> Result<Vec<String>, SourceError> {
        let Some(restore) = &self.restore else {
            return Err(self.no_restore());
        };
        let Some((program, args)) = restore.split_first() else {
            return Err(self.no_restore());
        };
        if substitutes(restore) {
            check_substituted(&opts.target).map_err(|why| {
                SourceError::Refused(format!(
                    "source \"{}\": --to {why}",
                    self.name
                ))
            })?;
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace(TARGET_PLACEHOLDER, &opts.target))
            .collect();
        // The target may be a URL with a password: never shown.
        let shown = super::url::redact(&render(
            &std::iter::once(program.clone())
                .chain(args.iter().cloned())
                .collect::<Vec<_>>(),
        ));
        if opts.dry_run {
            return Ok(vec![format!(
                "would run `{shown}` with backup {} on its standard input (STOWAGE_RESTORE_TARGET={}{})",
                self.name,
                super::url::redact(&opts.target),
                if opts.clean {
                    ", STOWAGE_RESTORE_CLEAN=1"
                } else {
                    ""
                }
            )]);
        }
        let tool = format!("restore command `{shown}`");
        let mut cmd = tool_command(program, self.priority);
        cmd.args(&args)
            .env("STOWAGE_RESTORE_TARGET", &opts.target)
            .stdin(Stdio::piped());
        if opts.clean {
            cmd.env("STOWAGE_RESTORE_CLEAN", "1");
        } else {
            cmd.env_remove("STOWAGE_RESTORE_CLEAN");
        }
        let mut data = archive.open().await?;
        let mut child = cmd
            .spawn()
            .map_err(|e| spawn_error(&tool, e, INSTALL_HINT))?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(SourceError::Protocol(format!(
                "{tool} started without pipes"
            )));
        };
        let stderr = drain_stderr(stderr);
        // Its stdout is read too: a chatty command must never stall on a full pipe.
        let stdout = drain_output(stdout);
        feed(data.as_mut(), stdin, &mut child).await?;
        wait_child(&tool, child, stderr).await?;
        let said = stdout.await.unwrap_or_default();
        let mut lines = Vec::new();
        if !said.is_empty() {
            tracing::info!(source = %self.name, "{tool} said: {said}");
            lines.push(format!("{}: {tool} said: {said}", self.name));
        }
        Ok(lines)
    }
}

/// Whether the restore command's arguments take the target in place of `{target}`.
fn substitutes(argv: &[String]) -> bool {
    argv.iter().skip(1).any(|a| a.contains(TARGET_PLACEHOLDER))
}

/// Refuse a target that could mean more than text where it replaces `{target}`: shell
/// syntax (quotes, `;`, `$`, `|`, `&`, spaces, newlines, globs, `~`…) in a `sh -c` script,
/// or an option (a leading '-') to the program. Quoting it instead would be right for a
/// shell script and wrong for a plain argument (the quotes would become part of it), and
/// stowage cannot tell which an argument is.
fn check_substituted(target: &str) -> Result<(), String> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./=:,+@%".contains(c);
    let bad: Option<char> = target.chars().find(|c| !safe(*c));
    let leading = (target.len() > 1 && target.starts_with('-')) || target.starts_with('=');
    if bad.is_none() && !leading {
        return Ok(());
    }
    Err(format!(
        "\"{}\" is pasted into the restore command in place of {TARGET_PLACEHOLDER}, where {} could run as shell code or act as an option; a target there may only hold letters, digits and _-./=:,+@% (and not start with '-' or '='). Pass such a target through the environment instead: the command gets it as STOWAGE_RESTORE_TARGET (in a script: \"$STOWAGE_RESTORE_TARGET\", quoted)",
        target.escape_debug(),
        match bad {
            Some(c) => format!("{:?}", c),
            None => "its first character".to_string(),
        }
    ))
}

/// The last 16 KiB of a child's stdout (the same bound as its stderr).
fn drain_output(stdout: tokio::process::ChildStdout) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        const LIMIT: usize = 16 * 1024;
        let mut stdout = stdout;
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stdout.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > LIMIT {
                        kept.drain(..kept.len() - LIMIT);
                    }
                }
            }
        }
        String::from_utf8_lossy(&kept).trim().to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_a_shell() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            render(&a(&["tar", "-C", "/data", "-cf", "-", "."])),
            "tar -C /data -cf - ."
        );
        assert_eq!(
            render(&a(&["sh", "-c", "echo 'hi' | gzip"])),
            "sh -c 'echo '\\''hi'\\'' | gzip'"
        );
        assert_eq!(render(&a(&["printf", ""])), "printf ''");
        let long = render(&a(&["sh", "-c", &"x".repeat(500)]));
        assert!(
            long.ends_with('…') && long.chars().count() == SHOWN_CHARS + 1,
            "{long}"
        );
    }

    #[test]
    fn substituted_targets_hold_no_shell_syntax() {
        for ok in ["-", "", "db1", "/data/app.ldif", "ldap://h:389/dc=x,dc=y", "a+b@c%d"] {
            assert_eq!(check_substituted(ok), Ok(()), "{ok}");
        }
        for bad in [
            "x; touch /tmp/pwned",
            "$(id)",
            "`id`",
            "a|b",
            "a&b",
            "a b",
            "a\nb",
            "'",
            "\"",
            "*",
            "~root",
            "--exec=sh",
            "=ls",
            "é",
        ] {
            let e = check_substituted(bad).expect_err(bad);
            assert!(e.contains("STOWAGE_RESTORE_TARGET"), "{e}");
        }
    }

    #[test]
    fn extensions_are_safe_in_object_keys() {
        for ok in ["bin", "tar", "sql.gz", "ldif", "my-dump_1"] {
            assert_eq!(check_extension(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".tar",
            "tar.",
            "a..b",
            "a/b",
            "a b",
            "ä",
            &"x".repeat(33),
        ] {
            assert!(check_extension(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interned_values_are_shared() {
        let a = intern("slapcat LDIF");
        let b = intern(&String::from("slapcat LDIF"));
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn programs_are_found_like_exec_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tool = dir.path().join("mytool");
        std::fs::write(&tool, "#!/bin/sh\n").expect("write");
        let not_exec = dir.path().join("plain");
        std::fs::write(&not_exec, "").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).expect("path");
        assert_eq!(
            resolve_program("mytool", Some(&path)).expect("found"),
            tool
        );
        let e = resolve_program("plain", Some(&path)).expect_err("not executable").to_string();
        assert!(
            e.contains("plain not found on PATH") && e.contains("/nonexistent"),
            "{e}"
        );
        let e = resolve_program("mytool", None).expect_err("no PATH").to_string();
        assert!(e.contains("PATH is not set"), "{e}");
        let abs = tool.display().to_string();
        assert_eq!(resolve_program(&abs, None).expect("found"), tool);
        let e = resolve_program(&not_exec.display().to_string(), None).expect_err("not exec").to_string();
        assert!(e.contains("is not an executable file"), "{e}");
        let e = resolve_program("/nonexistent/x", None).expect_err("missing").to_string();
        assert!(e.contains("/nonexistent/x does not exist"), "{e}");
    }
}
