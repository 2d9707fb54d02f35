use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{
    EXIT_CONFIG, EXIT_FAILED, EXIT_OK, init_logging, load_config, runtime, shutdown_signal,
};
use crate::logging::Console;
use crate::pipeline::Outcome;

pub fn run(path: &Path, job_name: &str) -> i32 {
    let Some(config) = load_config(path) else {
        return EXIT_CONFIG;
    };
    let _guard = match init_logging(&config, Console::Stdout) {
        Ok(g) => g,
        Err(code) => return code,
    };
    let job = match crate::restore::find_job(&config, job_name) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let report = rt.block_on(async {
        let cancel = CancellationToken::new();
        let on_signal = cancel.clone();
        // Ctrl-C or `docker stop` abandons the run cleanly instead of leaving debris.
        tokio::spawn(async move {
            shutdown_signal().await;
            on_signal.cancel();
        });
        crate::notify::started(job).await;
        let report = crate::pipeline::run_job(&config, job, cancel).await;
        crate::notify::finished(job, &report).await;
        report
    });
    if report.outcome == Outcome::Success {
        EXIT_OK
    } else {
        for (what, why) in &report.errors {
            eprintln!("error: {what}: {why}");
        }
        EXIT_FAILED
    }
}
