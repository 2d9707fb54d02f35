use std::path::Path;

use chrono::Utc;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, load_config};

/// For the container's HEALTHCHECK: the config is valid, the daemon is alive, and every
/// job's newest backup is fresh (within `max_staleness`) and its last run succeeded.
pub fn run(path: &Path) -> i32 {
    let Some(config) = load_config(path) else {
        return EXIT_CONFIG;
    };
    let pid_file = crate::daemon::pid_file();
    // The daemon's lock is the surer sign: the kernel drops it when the daemon dies, and no
    // other process can take it while it runs.
    let locked = crate::instance::holder();
    let pid = match locked
        .map(|p| Ok(p.to_string()))
        .unwrap_or_else(|| std::fs::read_to_string(&pid_file))
    {
        Ok(p) => p.trim().to_string(),
        Err(e) => {
            eprintln!(
                "unhealthy: no running daemon ({} unreadable: {})",
                pid_file.display(),
                crate::units::io_reason(&e)
            );
            return EXIT_FAILED;
        }
    };
    let alive = pid.parse::<u32>().is_ok()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("stowage"))
            .unwrap_or(false);
    if !alive {
        eprintln!(
            "unhealthy: the daemon (pid {pid} in {}) is not running",
            pid_file.display()
        );
        return EXIT_FAILED;
    }
    let state = match crate::status::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("unhealthy: daemon running (pid {pid}) but its state is unknown: {e}");
            return EXIT_FAILED;
        }
    };
    let problems = crate::status::problems(&config, &state, Utc::now());
    // Said, healthy or not, without changing the verdict: a dump that shrank is a backup
    // that worked, of data that may be gone.
    for w in crate::status::warnings(&config, &state) {
        println!("warning: {w}");
    }
    if problems.is_empty() {
        println!(
            "healthy: daemon running (pid {pid}), {} job(s) fresh",
            config.jobs.len()
        );
        EXIT_OK
    } else {
        for p in &problems {
            eprintln!("unhealthy: {p}");
        }
        EXIT_FAILED
    }
}
