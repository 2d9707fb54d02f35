//! `before`/`after` of a job and of each of its sources: the command (an argv run directly,
//! or a line for `sh -c` when asked for with `shell`), its timeout and, for `before`, whether
//! its failure stops the run. Run by `crate::hook`.

use std::collections::BTreeMap;

use crate::config::{DEFAULT_HOOK_TIMEOUT, Hook, HookCommand, Hooks, raw};

/// The job's own hooks (`KEY.before`, `KEY.after`).
pub(super) fn hooks(
    key: &str,
    before: Option<raw::RawHook>,
    after: Option<raw::RawHook>,
    problems: &mut Vec<String>,
) -> Hooks {
    Hooks {
        before: before.and_then(|h| hook(format!("{key}.before"), h, true, problems)),
        after: after.and_then(|h| hook(format!("{key}.after"), h, false, problems)),
    }
}

/// Each source's hooks, taken out of its raw section, by source name (sources without
/// hooks are left out).
pub(super) fn source_hooks(
    key: &str,
    sources: &mut [raw::RawSource],
    problems: &mut Vec<String>,
) -> BTreeMap<String, Hooks> {
    let mut all = BTreeMap::new();
    for (i, s) in sources.iter_mut().enumerate() {
        let skey = format!("{key}.sources[{i}]");
        let h = hooks(&skey, s.before.take(), s.after.take(), problems);
        if h != Hooks::default() {
            all.insert(s.name.clone(), h);
        }
    }
    all
}

/// One hook; `None` when it has no runnable command (reported).
fn hook(hkey: String, raw: raw::RawHook, before: bool, problems: &mut Vec<String>) -> Option<Hook> {
    let (command, timeout, on_failure) = match raw {
        raw::RawHook::Argv(argv) => (argv_command(&hkey, argv, problems), None, None),
        raw::RawHook::Table(t) => {
            let command = match (t.command, t.shell) {
                (Some(argv), None) => argv_command(&format!("{hkey}.command"), argv, problems),
                (None, Some(line)) => shell_command(&hkey, line, problems),
                (Some(_), Some(_)) => {
                    problems.push(format!(
                        "{hkey}: both command and shell are set; keep command = [\"program\", \"arg\"] to run a program directly, or shell = \"…\" for a shell command line"
                    ));
                    None
                }
                (None, None) => {
                    problems.push(format!(
                        "{hkey}: no command; add command = [\"program\", \"arg\"] (run directly) or shell = \"…\" (run with sh -c)"
                    ));
                    None
                }
            };
            (command, t.timeout, t.on_failure)
        }
    };
    let timeout = timeout
        .map(|text| hook_timeout(&hkey, &text, problems))
        .unwrap_or(DEFAULT_HOOK_TIMEOUT);
    if !before && on_failure.is_some() {
        problems.push(format!(
            "{hkey}.on_failure: only valid for a before hook (an after hook's failure is reported and never changes the run's outcome); remove the key"
        ));
    }
    Some(Hook {
        key: hkey,
        command: command?,
        timeout,
        on_failure: on_failure.unwrap_or_default(),
    })
}

fn argv_command(akey: &str, argv: Vec<String>, problems: &mut Vec<String>) -> Option<HookCommand> {
    match argv.first() {
        None => problems.push(format!(
            "{akey}: the command is empty; give the program and its arguments, e.g. [\"redis-cli\", \"BGSAVE\"]"
        )),
        Some(p) if p.trim().is_empty() => problems.push(format!(
            "{akey}[0]: the program name is empty; give the program first, e.g. [\"redis-cli\", \"BGSAVE\"]"
        )),
        Some(_) => {}
    }
    for (n, a) in argv.iter().enumerate() {
        if a.contains('\0') {
            problems.push(format!(
                "{akey}[{n}]: {a:?} contains a NUL byte, which no program argument can hold; remove it"
            ));
        }
    }
    let runnable = argv.first().is_some_and(|p| !p.trim().is_empty())
        && argv.iter().all(|a| !a.contains('\0'));
    runnable.then_some(HookCommand::Argv(argv))
}

fn shell_command(hkey: &str, line: String, problems: &mut Vec<String>) -> Option<HookCommand> {
    if line.trim().is_empty() {
        problems.push(format!(
            "{hkey}.shell: the command line is empty; give one, e.g. shell = \"redis-cli BGSAVE && sleep 1\""
        ));
        None
    } else if line.contains('\0') {
        problems.push(format!(
            "{hkey}.shell: the command line contains a NUL byte, which no program argument can hold; remove it"
        ));
        None
    } else {
        Some(HookCommand::Shell(line))
    }
}

fn hook_timeout(hkey: &str, text: &str, problems: &mut Vec<String>) -> std::time::Duration {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            problems.push(format!(
                "{hkey}.timeout: \"{text}\" must be longer than 0; use e.g. \"30s\" or \"5m\""
            ));
            DEFAULT_HOOK_TIMEOUT
        }
        Ok(d) => d,
        Err(e) => {
            problems.push(format!(
                "{hkey}.timeout: invalid duration \"{text}\" ({e}); use e.g. \"30s\" or \"5m\""
            ));
            DEFAULT_HOOK_TIMEOUT
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, DEFAULT_HOOK_TIMEOUT, HookCommand, HookFailure};

    /// Loads a config whose job `app` (one `command` source `dump`) has `job_keys` in
    /// `[jobs.app]` and `source_keys` in its source.
    fn load(job_keys: &str, source_keys: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stowage.toml");
        let text = format!(
            "[destinations.local]\ntype = \"local\"\npath = {:?}\n\n[jobs.app]\nschedule = \"0 2 * * *\"\ndestinations = [\"local\"]\n{job_keys}\n\n[[jobs.app.sources]]\ntype = \"command\"\nname = \"dump\"\ndump = [\"true\"]\n{source_keys}\n",
            dir.path().join("backups").display().to_string()
        );
        std::fs::write(&path, text).expect("write");
        crate::load::load_with_env(&path, false).map_err(|e| e.to_string())
    }

    fn problem(job_keys: &str, source_keys: &str) -> String {
        match load(job_keys, source_keys) {
            Ok(_) => panic!("accepted:\n{job_keys}\n{source_keys}"),
            Err(e) => e,
        }
    }

    #[test]
    fn shorthand_and_table_forms() {
        let config = load(
            "before = [\"redis-cli\", \"BGSAVE\"]\nafter = { shell = \"echo done; true\", timeout = \"30s\" }",
            "before = { command = [\"sync\"], on_failure = \"continue\", timeout = \"2m\" }",
        )
        .expect("valid");
        let job = &config.jobs["app"];
        let before = job.hooks.before.as_ref().expect("before");
        assert_eq!(before.key, "jobs.app.before");
        assert_eq!(
            before.command,
            HookCommand::Argv(vec!["redis-cli".into(), "BGSAVE".into()])
        );
        assert_eq!(before.timeout, DEFAULT_HOOK_TIMEOUT);
        assert_eq!(before.on_failure, HookFailure::Fail);
        let after = job.hooks.after.as_ref().expect("after");
        assert_eq!(after.command, HookCommand::Shell("echo done; true".into()));
        assert_eq!(after.command.argv(), ["sh", "-c", "echo done; true"]);
        assert_eq!(after.timeout, Duration::from_secs(30));
        let source = &job.source_hooks["dump"];
        let sb = source.before.as_ref().expect("source before");
        assert_eq!(sb.key, "jobs.app.sources[0].before");
        assert_eq!(sb.on_failure, HookFailure::Continue);
        assert_eq!(sb.timeout, Duration::from_secs(120));
        assert!(source.after.is_none());
    }

    #[test]
    fn a_table_section_works_too() {
        let config = load(
            "[jobs.app.before]\ncommand = [\"true\"]\ntimeout = \"1s\"",
            "",
        );
        // `[jobs.app.before]` closes `[jobs.app]`: the source follows as its own array.
        let job = &config.expect("valid").jobs["app"];
        assert_eq!(
            job.hooks.before.as_ref().map(|h| h.timeout),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn no_hooks_is_the_default() {
        let job = &load("", "").expect("valid").jobs["app"];
        assert!(job.hooks.before.is_none() && job.hooks.after.is_none());
        assert!(job.source_hooks.is_empty());
    }

    #[test]
    fn mistakes_name_their_key() {
        for (job_keys, source_keys, want) in [
            ("before = []", "", "jobs.app.before: the command is empty"),
            (
                "after = { command = [] }",
                "",
                "jobs.app.after.command: the command is empty",
            ),
            (
                "before = [\"\", \"x\"]",
                "",
                "jobs.app.before[0]: the program name is empty",
            ),
            (
                "before = { command = [\"a\"], shell = \"b\" }",
                "",
                "jobs.app.before: both command and shell are set",
            ),
            (
                "before = { timeout = \"1m\" }",
                "",
                "jobs.app.before: no command; add command",
            ),
            (
                "before = { shell = \" \" }",
                "",
                "jobs.app.before.shell: the command line is empty",
            ),
            (
                "before = { shell = \"x\", timeout = \"soon\" }",
                "",
                "jobs.app.before.timeout: invalid duration \"soon\"",
            ),
            (
                "before = { shell = \"x\", timeout = \"0s\" }",
                "",
                "jobs.app.before.timeout: \"0s\" must be longer than 0",
            ),
            (
                "after = { shell = \"x\", on_failure = \"continue\" }",
                "",
                "jobs.app.after.on_failure: only valid for a before hook",
            ),
            (
                "before = { shell = \"x\", tiemout = \"1s\" }",
                "",
                "tiemout",
            ),
            (
                "before = { shell = \"x\", on_failure = \"ignore\" }",
                "",
                "ignore",
            ),
            ("before = \"redis-cli BGSAVE\"", "", "a list of arguments"),
            (
                "",
                "after = []",
                "jobs.app.sources[0].after: the command is empty",
            ),
            ("", "before = { shell = \"x\", sheel = \"y\" }", "sheel"),
        ] {
            let e = problem(job_keys, source_keys);
            assert!(
                e.contains(want),
                "{job_keys} / {source_keys}: want {want:?} in:\n{e}"
            );
        }
    }

    /// serde's own errors (unknown key, bad value, wrong type) name the hook's full key,
    /// on a job and on a source, whose other keys go to its engine.
    #[test]
    fn serde_errors_carry_the_key() {
        for (job_keys, source_keys, want) in [
            (
                "before = { shell = \"x\", tiemout = \"1s\" }",
                "",
                "jobs.app.before",
            ),
            (
                "",
                "before = { shell = \"x\", sheel = \"y\" }",
                "jobs.app.sources[0].before",
            ),
            ("", "after = \"x\"", "jobs.app.sources[0].after"),
            (
                "",
                "before = { shell = \"x\", on_failure = \"nope\" }",
                "jobs.app.sources[0].before",
            ),
        ] {
            let e = problem(job_keys, source_keys);
            assert!(
                e.contains(want),
                "{job_keys} / {source_keys}: want {want:?} in:\n{e}"
            );
        }
    }
}
