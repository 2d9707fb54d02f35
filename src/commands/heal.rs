use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, with_job};
use crate::heal::HealOutcome;
use crate::logging::Console;

/// One pass of the job's healer: 0 when nothing is missing or all of it was restored (or,
/// with --dry-run, can be), 1 when something could not be (even if the rest was: the
/// summary names only what failed under "cannot heal") or the database is unreachable, 2
/// for bad config.
pub fn run(path: &Path, job_name: &str, dry_run: bool, trust_unauthenticated: bool) -> i32 {
    with_job(path, Console::Stderr, job_name, |config, job, rt| {
        if job.heal.is_none() {
            eprintln!(
                "error: job \"{job_name}\" has no healer; add a [jobs.{job_name}.heal] section to {} with the tables to watch (README: Healer)",
                config.path.display()
            );
            return EXIT_CONFIG;
        }
        let report = rt.block_on(async {
            let report = crate::heal::heal(config, job, dry_run, trust_unauthenticated).await;
            crate::notify::healed(job, &report).await;
            report
        });
        // A dry run changes nothing and is not a pass of the healer.
        if !dry_run {
            crate::status::post_or_say(&crate::status::Record::heal(&report));
        }
        println!("{}", report.summary());
        match report.outcome {
            HealOutcome::Ok | HealOutcome::Healed | HealOutcome::DryRun => EXIT_OK,
            HealOutcome::Partial | HealOutcome::Failed | HealOutcome::Unreachable => EXIT_FAILED,
        }
    })
}
