use std::path::Path;
use std::sync::Arc;

use super::{EXIT_ABANDONED, EXIT_FAILED, EXIT_OK, signals, start};
use crate::daemon::Stopped;
use crate::logging::Console;

pub fn run(path: &Path) -> i32 {
    let (config, _guard) = match start(path, Console::Stdout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Before anything else starts: a refused daemon must not touch the running one's
    // listener, pid file or state.
    let _claim = match crate::instance::claim(&config.path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return EXIT_FAILED;
        }
    };
    // One thread: the daemon only schedules, serves and reads the history here; each run
    // and pass gets a runtime of its own that ends with it (`daemon::on_own_runtime`).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    // Boxed: `block_on` and the layers under it take the future by value, each copying it
    // into a stack frame of its own, and the daemon's whole state machine is large; the main
    // thread's stack would keep every page those copies touched for the daemon's life.
    let stopped = rt.block_on(Box::pin(async {
        crate::daemon::run(Arc::new(config), signals()).await
    }));
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
