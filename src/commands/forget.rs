//! `stowage forget`: delete one backup from a destination, or from every destination of
//! the job that has it (see `crate::curate::forget`): 0 deleted, 2 bad usage or refused
//! without `--force` (the newest backup of a destination, or one under its minimum
//! storage duration), 1 anything else (busy job, Object Lock, a destination failing).

use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, with_job};
use crate::curate::forget::{ForgetError, Request};
use crate::logging::Console;
use crate::repo::blobs::SweepOutcome;
use crate::units::human_bytes;

pub fn run(path: &Path, req: Request) -> i32 {
    with_job(path, Console::Stderr, &req.job, |config, job, rt| {
        let outcome = match rt.block_on(crate::curate::forget::forget(config, job, &req)) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return match e {
                    ForgetError::Usage(_) | ForgetError::NeedsForce(_) => EXIT_CONFIG,
                    _ => EXIT_FAILED,
                };
            }
        };
        let mut code = EXIT_OK;
        for d in &outcome.destinations {
            if outcome.dry_run {
                println!(
                    "would delete backup {} from {}: {} object(s), {} (manifest first):",
                    outcome.id,
                    d.destination,
                    d.keys.len(),
                    human_bytes(d.bytes)
                );
                for k in &d.keys {
                    println!("  {k}");
                }
                if job.has_files() {
                    println!(
                        "  then the file blobs no other backup on {} references",
                        d.destination
                    );
                }
                continue;
            }
            println!(
                "deleted backup {} from {}: {} object(s), {}",
                outcome.id,
                d.destination,
                d.keys.len(),
                human_bytes(d.bytes)
            );
            match &d.sweep {
                None => {}
                Some(Ok(SweepOutcome::Swept {
                    deleted,
                    kept,
                    left,
                })) => println!(
                    "blob sweep on {}: deleted {deleted} unreferenced blob(s), kept {kept}{}",
                    d.destination,
                    if *left > 0 {
                        format!(", {left} left for the next sweep (time budget)")
                    } else {
                        String::new()
                    }
                ),
                Some(Ok(SweepOutcome::Postponed { by })) => println!(
                    "blob sweep on {} postponed: backup {by} of this job is in progress; its next retention removes the unreferenced blobs",
                    d.destination
                ),
                Some(Err(e)) => {
                    eprintln!(
                        "error: blob sweep on {} failed: {e}; the backup is deleted, unreferenced blobs stay until the next sweep",
                        d.destination
                    );
                    code = EXIT_FAILED;
                }
            }
        }
        if outcome.dry_run {
            println!("dry run: nothing was changed");
        }
        code
    })
}
