use std::path::Path;

use tokio_util::sync::CancellationToken;

use super::{EXIT_FAILED, EXIT_OK, shutdown_signal, with_job};
use crate::logging::Console;
use crate::pipeline::Outcome;

/// `run --dry-run`: check every source and destination, say what the run would do.
pub fn dry_run(path: &Path, job_name: &str) -> i32 {
    with_job(path, Console::Stderr, job_name, |config, job, rt| {
        let checked = rt.block_on(crate::preflight::check_job(config, job));
        println!("dry run of job {job_name}: nothing is dumped, uploaded or deleted");
        for l in &checked.lines {
            println!("{l}");
        }
        for p in &checked.problems {
            println!("problem: {p}");
        }
        if checked.problems.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    })
}

pub fn run(path: &Path, job_name: &str, opts: crate::pipeline::RunOptions) -> i32 {
    with_job(path, Console::Stdout, job_name, |config, job, rt| {
        let report = rt.block_on(async {
            let cancel = CancellationToken::new();
            let on_signal = cancel.clone();
            // Ctrl-C or `docker stop` abandons the run cleanly instead of leaving debris.
            tokio::spawn(async move {
                shutdown_signal().await;
                on_signal.cancel();
            });
            crate::notify::started(job).await;
            let report = crate::pipeline::run_job(config, job, opts, cancel).await;
            let failed_last = crate::notify::failed_last_on_file(&job.name);
            crate::notify::finished(job, &report, failed_last).await;
            report
        });
        crate::status::post_or_say(&crate::status::Record::run(&report));
        if report.outcome == Outcome::Success {
            EXIT_OK
        } else {
            for (what, why) in &report.errors {
                eprintln!("error: {what}: {why}");
            }
            EXIT_FAILED
        }
    })
}
