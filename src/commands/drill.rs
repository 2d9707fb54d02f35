use std::path::{Path, PathBuf};

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, with_job};
use crate::logging::Console;

/// Run the job's restore drill now: 0 passed, 1 failed, 2 bad usage (no drill configured,
/// an unreadable --identity).
pub fn run(
    path: &Path,
    job_name: &str,
    identity: Option<&PathBuf>,
    trust_unauthenticated: bool,
) -> i32 {
    with_job(path, Console::Stderr, job_name, |config, job, rt| {
        if job.drill.is_none() {
            eprintln!(
                "error: job \"{job_name}\" has no drill; add a [jobs.{job_name}.drill] section with schedule and to (see README, \"Restore drills\")"
            );
            return EXIT_CONFIG;
        }
        let keys = match crate::restore::keys_for(job, identity) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_CONFIG;
            }
        };
        let report = rt.block_on(crate::drill::drill(
            config,
            job,
            keys,
            trust_unauthenticated,
        ));
        crate::status::post_or_say(&crate::status::Record::drill(&report));
        for line in &report.ok {
            println!("  ok: {line}");
        }
        for line in &report.problems {
            println!("  problem: {line}");
        }
        println!("{}", report.summary());
        if report.passed() {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    })
}
