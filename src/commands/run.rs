use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, job_named, runtime, shutdown_signal, start};
use crate::logging::Console;
use crate::pipeline::Outcome;

pub fn run(path: &Path, job_name: &str) -> i32 {
    let (config, _guard) = match start(path, Console::Stdout) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let job = match job_named(&config, job_name) {
        Ok(j) => j,
        Err(code) => return code,
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
