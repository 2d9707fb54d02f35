use std::path::Path;
use std::sync::Arc;

use super::{
    EXIT_ABANDONED, EXIT_CONFIG, EXIT_FAILED, EXIT_OK, init_logging, load_config, runtime, signals,
};
use crate::daemon::Stopped;
use crate::logging::Console;

pub fn run(path: &Path) -> i32 {
    let Some(config) = load_config(path) else {
        return EXIT_CONFIG;
    };
    let _guard = match init_logging(&config, Console::Stdout) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let stopped = rt.block_on(async { crate::daemon::run(Arc::new(config), signals()).await });
    // Tasks still hanging on an unresponsive store (past the cleanup budget) are dropped,
    // which kills their child processes; nothing may keep the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match stopped {
        Ok(Stopped::Clean) => EXIT_OK,
        Ok(Stopped::Abandoned) => EXIT_ABANDONED,
        Err(e) => {
            tracing::error!("{e}");
            EXIT_FAILED
        }
    }
}
