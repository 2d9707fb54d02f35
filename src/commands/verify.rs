use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, with_job};
use crate::logging::Console;
use crate::restore::RestoreError;
use crate::verify::Which;

/// Re-read the chosen backups and say, per backup and destination, whether they are whole
/// and readable: 0 all good, 1 anything missing, corrupt or unreadable, 2 bad usage.
pub fn run(path: &Path, job_name: &str, which: Which, from: Option<&str>) -> i32 {
    with_job(path, Console::Stderr, job_name, |config, job, rt| match rt
        .block_on(crate::verify::verify(config, job, &which, from))
    {
        Ok(report) => {
            for line in report.lines() {
                println!("{line}");
            }
            println!("{}", report.summary());
            if report.problems() == 0 {
                EXIT_OK
            } else {
                EXIT_FAILED
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                RestoreError::Usage(_) => EXIT_CONFIG,
                _ => EXIT_FAILED,
            }
        }
    })
}
