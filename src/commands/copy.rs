//! `stowage copy`: published backups of a job from one of its destinations to another
//! (see `crate::curate::copy`): 0 when every requested backup is on the target at the
//! end, 4 when the only failures wait for a retrieval from an archive class, 1 otherwise,
//! 2 for bad usage.

use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, EXIT_PENDING, with_job};
use crate::curate::copy::{CopyStart, Done, Request, Tally};
use crate::logging::Console;
use crate::units::human_bytes;

pub fn run(path: &Path, req: Request) -> i32 {
    with_job(path, Console::Stderr, &req.job, |config, job, rt| {
        let cancel = tokio_util::sync::CancellationToken::new();
        let result = rt.block_on(async {
            // A signal stops the backup under way (what it wrote is removed, its lock
            // released) and the ones after it.
            let stop = cancel.clone();
            let watcher = tokio::spawn(async move {
                super::shutdown_signal().await;
                stop.cancel();
            });
            let r = crate::curate::copy::copy(config, job, &req, &cancel).await;
            watcher.abort();
            r
        });
        let copied = match result {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return match e {
                    CopyStart::Usage(_) => EXIT_CONFIG,
                    _ => EXIT_FAILED,
                };
            }
        };
        let verb = if req.dry_run { "would copy" } else { "copied" };
        if copied.backups.is_empty() {
            println!(
                "{} holds every backup of job {} that {} has: nothing to copy",
                copied.to, job.name, copied.from
            );
        }
        let (mut failed, mut pending) = (0usize, 0usize);
        let mut total = Tally::default();
        for (id, done) in &copied.backups {
            match done {
                Ok(Done::Present) => println!("backup {id}: already on {}, skipped", copied.to),
                Ok(Done::Copied(t)) => {
                    println!(
                        "backup {id}: {verb} {} → {}: {}",
                        copied.from,
                        copied.to,
                        describe(t, req.dry_run)
                    );
                    total.objects += t.objects;
                    total.bytes += t.bytes;
                    total.blobs += t.blobs;
                    total.blob_bytes += t.blob_bytes;
                    total.blobs_present += t.blobs_present;
                }
                Err(e) if e.is_pending() => {
                    pending += 1;
                    eprintln!("retrieval pending: backup {id}: {e}");
                }
                Err(e) => {
                    failed += 1;
                    eprintln!("error: backup {id} not copied: {e}");
                }
            }
        }
        if req.dry_run {
            println!("dry run: nothing was changed");
        }
        if copied.backups.len() > 1 {
            println!(
                "{} backup(s): {}{}",
                copied.backups.len(),
                describe(&total, req.dry_run),
                if failed + pending > 0 {
                    format!("; {} not copied", failed + pending)
                } else {
                    String::new()
                }
            );
        }
        if cancel.is_cancelled() {
            eprintln!(
                "error: copy interrupted; backups not listed above as copied are not on {}",
                req.to
            );
            return super::EXIT_INTERRUPTED;
        }
        match (failed, pending) {
            (0, 0) => EXIT_OK,
            (0, _) => EXIT_PENDING,
            _ => EXIT_FAILED,
        }
    })
}

/// "3 object(s), 1.2 MiB; 10 blob(s), 3.4 MiB; 5 blob(s) already there"
fn describe(t: &Tally, dry_run: bool) -> String {
    format!(
        "{} object(s), {}; {} file blob(s), {}{}; {} blob(s) already there",
        t.objects,
        human_bytes(t.bytes),
        t.blobs,
        human_bytes(t.blob_bytes),
        if dry_run { " of content" } else { "" },
        t.blobs_present
    )
}
