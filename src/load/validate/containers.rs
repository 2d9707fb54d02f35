//! `[jobs.NAME.containers]`: Docker containers stopped or paused while the job's files
//! sources are read. Run by `crate::containers`.

use std::path::PathBuf;

use crate::config::{Containers, DEFAULT_CONTAINER_STOP_TIMEOUT, SourceConfig, raw};

/// Docker's stop timeout is whole seconds in an i32; past an hour a stop is not a pause
/// for a backup any more.
const MAX_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

/// The job's containers section, checked against its sources; `None` when absent or broken
/// (reported).
pub(super) fn containers(
    key: &str,
    raw: Option<raw::RawContainers>,
    sources: &[SourceConfig],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Option<Containers> {
    let raw = raw?;
    let ckey = format!("{key}.containers");
    let group = group(&ckey, &raw.stop_during_files, problems);
    let socket = raw
        .socket
        .as_deref()
        .and_then(|s| socket(&ckey, s, problems));
    let stop_timeout = match raw.timeout.as_deref() {
        None => DEFAULT_CONTAINER_STOP_TIMEOUT,
        Some(text) => stop_timeout(&ckey, text, raw.mode, problems),
    };
    files_sources(&ckey, sources, problems, warnings);
    Some(Containers {
        key: ckey,
        group: group?,
        mode: raw.mode,
        socket,
        stop_timeout,
    })
}

/// The label value: plain enough to be written in a compose file and a Docker filter
/// (`label=stowage.stop-during=VALUE`) without quoting.
fn group(ckey: &str, value: &str, problems: &mut Vec<String>) -> Option<String> {
    let fine = !value.is_empty()
        && value.len() <= 128
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if fine {
        Some(value.to_string())
    } else {
        problems.push(format!(
            "{ckey}.stop_during_files: {value:?} is not a usable label value; use letters, digits, '.', '_' or '-' (e.g. \"app\"), and label the containers with stowage.stop-during=app"
        ));
        None
    }
}

/// `socket`: an absolute path, `unix://` allowed in front (as in `DOCKER_HOST`).
fn socket(ckey: &str, text: &str, problems: &mut Vec<String>) -> Option<PathBuf> {
    let path = text.strip_prefix("unix://").unwrap_or(text);
    if text.contains("://") && !text.starts_with("unix://") {
        problems.push(format!(
            "{ckey}.socket: {text:?} is not a unix socket; stowage talks to Docker through its unix socket only: mount it (- /var/run/docker.sock:/var/run/docker.sock) and remove the key, or give its path"
        ));
        return None;
    }
    if !path.starts_with('/') {
        problems.push(format!(
            "{ckey}.socket: {text:?} must be an absolute path, e.g. \"/var/run/docker.sock\""
        ));
        return None;
    }
    Some(PathBuf::from(path))
}

fn stop_timeout(
    ckey: &str,
    text: &str,
    mode: raw::ContainerMode,
    problems: &mut Vec<String>,
) -> std::time::Duration {
    if mode == raw::ContainerMode::Pause {
        problems.push(format!(
            "{ckey}.timeout: only used with mode = \"stop\" (a pause is immediate); remove the key"
        ));
        return DEFAULT_CONTAINER_STOP_TIMEOUT;
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() || d > MAX_STOP_TIMEOUT => {
            problems.push(format!(
                "{ckey}.timeout: \"{text}\" is out of range; use 1s to 1h, e.g. \"1m\" (how long a container gets to stop before Docker kills it)"
            ));
            DEFAULT_CONTAINER_STOP_TIMEOUT
        }
        Ok(d) => d,
        Err(e) => {
            problems.push(format!(
                "{ckey}.timeout: invalid duration \"{text}\" ({e}); use e.g. \"30s\" or \"1m\""
            ));
            DEFAULT_CONTAINER_STOP_TIMEOUT
        }
    }
}

/// Containers are held only around the files sources: a job without one has nothing to
/// hold them for. A database between two files sources is dumped while they are held.
fn files_sources(
    ckey: &str,
    sources: &[SourceConfig],
    problems: &mut Vec<String>,
    warnings: &mut Vec<String>,
) {
    let is_files = |s: &SourceConfig| matches!(s, SourceConfig::Files(_));
    let (Some(first), Some(last)) = (
        sources.iter().position(is_files),
        sources.iter().rposition(is_files),
    ) else {
        problems.push(format!(
            "{ckey}: the job has no files source; containers are stopped only while files sources are read (databases are dumped live, with the application running); add a type = \"files\" source or remove {ckey}"
        ));
        return;
    };
    for s in &sources[first..=last] {
        if !is_files(s) {
            warnings.push(format!(
                "{ckey}: source {} ({}) comes between files sources, so it is dumped while the labelled containers are held; list the files sources next to each other to keep the pause short",
                s.name(),
                s.kind()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::config::{Config, ContainerMode, DEFAULT_CONTAINER_STOP_TIMEOUT};

    /// Loads a config whose job `app` has `sources` (TOML of its sources) and, after them,
    /// `section` (the lines of `[jobs.app.containers]`).
    fn load_with(sources: &str, section: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stowage.toml");
        let text = format!(
            "[destinations.local]\ntype = \"local\"\npath = {:?}\n\n[jobs.app]\nschedule = \"0 2 * * *\"\ndestinations = [\"local\"]\n\n{sources}\n\n[jobs.app.containers]\n{section}\n",
            dir.path().join("backups").display().to_string()
        );
        std::fs::write(&path, text).expect("write");
        crate::load::load_with_env(&path, false).map_err(|e| e.to_string())
    }

    const FILES: &str =
        "[[jobs.app.sources]]\ntype = \"files\"\nname = \"uploads\"\npath = \"/srv/uploads\"\n";
    const DUMP: &str =
        "[[jobs.app.sources]]\ntype = \"command\"\nname = \"dump\"\ndump = [\"true\"]\n";

    fn load(section: &str) -> Result<Config, String> {
        load_with(FILES, section)
    }

    fn problem(sources: &str, section: &str) -> String {
        match load_with(sources, section) {
            Ok(_) => panic!("accepted:\n{section}"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_and_every_key() {
        let config = load("stop_during_files = \"app\"").expect("valid");
        let c = config.jobs["app"].containers.clone().expect("containers");
        assert_eq!(c.key, "jobs.app.containers");
        assert_eq!(c.group, "app");
        assert_eq!(c.mode, ContainerMode::Stop);
        assert_eq!(c.socket, None);
        assert_eq!(c.stop_timeout, DEFAULT_CONTAINER_STOP_TIMEOUT);

        let config = load(
            "stop_during_files = \"web-1.x_y\"\nsocket = \"unix:///run/docker.sock\"\ntimeout = \"90s\"",
        )
        .expect("valid");
        let c = config.jobs["app"].containers.clone().expect("containers");
        assert_eq!(c.group, "web-1.x_y");
        assert_eq!(c.socket, Some(PathBuf::from("/run/docker.sock")));
        assert_eq!(c.stop_timeout, Duration::from_secs(90));

        let config = load("stop_during_files = \"app\"\nmode = \"pause\"\nsocket = \"/d.sock\"")
            .expect("valid");
        let c = config.jobs["app"].containers.clone().expect("containers");
        assert_eq!(c.mode, ContainerMode::Pause);
        assert_eq!(c.socket, Some(PathBuf::from("/d.sock")));
    }

    #[test]
    fn no_section_no_containers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("stowage.toml");
        let text = format!(
            "[destinations.local]\ntype = \"local\"\npath = {:?}\n\n[jobs.app]\nschedule = \"0 2 * * *\"\ndestinations = [\"local\"]\n\n{FILES}",
            dir.path().join("backups").display().to_string()
        );
        std::fs::write(&path, text).expect("write");
        let config = crate::load::load_with_env(&path, false).expect("valid");
        assert!(config.jobs["app"].containers.is_none());
    }

    #[test]
    fn mistakes_name_their_key() {
        for (sources, section, want) in [
            (
                FILES,
                "stop_during_files = \"\"",
                "jobs.app.containers.stop_during_files: \"\" is not a usable label value",
            ),
            (
                FILES,
                "stop_during_files = \"a=b\"",
                "jobs.app.containers.stop_during_files: \"a=b\" is not a usable label value",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\nsocket = \"tcp://docker:2375\"",
                "jobs.app.containers.socket: \"tcp://docker:2375\" is not a unix socket",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\nsocket = \"docker.sock\"",
                "jobs.app.containers.socket: \"docker.sock\" must be an absolute path",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\ntimeout = \"soon\"",
                "jobs.app.containers.timeout: invalid duration \"soon\"",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\ntimeout = \"0s\"",
                "jobs.app.containers.timeout: \"0s\" is out of range",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\ntimeout = \"2h\"",
                "jobs.app.containers.timeout: \"2h\" is out of range",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\nmode = \"pause\"\ntimeout = \"1m\"",
                "jobs.app.containers.timeout: only used with mode = \"stop\"",
            ),
            (
                DUMP,
                "stop_during_files = \"app\"",
                "jobs.app.containers: the job has no files source",
            ),
            // serde's: the key path, the bad value or key.
            (
                FILES,
                "stop_during_files = \"app\"\nmode = \"kill\"",
                "kill",
            ),
            (
                FILES,
                "stop_during_files = \"app\"\nmode = \"kill\"",
                "jobs.app.containers",
            ),
            (FILES, "stop_durring_files = \"app\"", "stop_durring_files"),
            (FILES, "mode = \"stop\"", "stop_during_files"),
        ] {
            let e = problem(sources, section);
            assert!(e.contains(want), "{section}: want {want:?} in:\n{e}");
        }
    }

    #[test]
    fn a_database_between_files_sources_is_a_warning() {
        let sources = format!("{FILES}\n{DUMP}\n{}", FILES.replace("uploads", "media"));
        let config = load_with(&sources, "stop_during_files = \"app\"").expect("valid");
        assert!(
            config.warnings.iter().any(|w| w.contains(
                "jobs.app.containers: source dump (command) comes between files sources"
            )),
            "{:?}",
            config.warnings
        );
        let sources = format!("{DUMP}\n{FILES}");
        let config = load_with(&sources, "stop_during_files = \"app\"").expect("valid");
        assert!(
            !config.warnings.iter().any(|w| w.contains("containers")),
            "{:?}",
            config.warnings
        );
    }
}
