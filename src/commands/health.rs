use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, load_config};

/// For the container's HEALTHCHECK: the config is valid and the daemon is alive.
/// (Backup freshness joins this check in a later release.)
pub fn run(path: &Path) -> i32 {
    if load_config(path).is_none() {
        return EXIT_CONFIG;
    }
    let pid_file = crate::daemon::pid_file();
    let pid = match std::fs::read_to_string(&pid_file) {
        Ok(p) => p.trim().to_string(),
        Err(e) => {
            eprintln!(
                "unhealthy: no running daemon ({} unreadable: {})",
                pid_file.display(),
                crate::config::io_reason(&e)
            );
            return EXIT_FAILED;
        }
    };
    let alive = pid.parse::<u32>().is_ok()
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("stowage"))
            .unwrap_or(false);
    if alive {
        println!("healthy: config ok, daemon running (pid {pid})");
        EXIT_OK
    } else {
        eprintln!(
            "unhealthy: the daemon (pid {pid} in {}) is not running",
            pid_file.display()
        );
        EXIT_FAILED
    }
}
