use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_PENDING, runtime, start};
use crate::logging::Console;
use crate::restore::{RestoreError, RestoreRequest};

pub fn run(path: &Path, req: RestoreRequest) -> i32 {
    let (config, _guard) = match start(path, Console::Stderr) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    // The handlers are in place before the restore starts: from then on a stop signal
    // stops it cleanly instead of killing the process mid-way.
    let result = rt.block_on(async {
        let stop = super::stop_signal();
        crate::restore::restore_until(&config, &req, stop).await
    });
    // Work still finishing in the background (a killed tool being reaped) must not keep an
    // interrupted restore from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(summary) => {
            for line in &summary.lines {
                println!("{line}");
            }
            if !req.dry_run {
                println!(
                    "restored {} backup {} from {}",
                    summary.manifest.job, summary.manifest.id, summary.destination
                );
            }
            EXIT_OK
        }
        Err(RestoreError::RetrievalPending(why)) => {
            eprintln!("retrieval pending: {why}");
            EXIT_PENDING
        }
        // The objects asked for are back, but something that went with them is not: not
        // a failure to retry blindly, not a success either.
        Err(
            e @ RestoreError::Database {
                source: crate::engine::SourceError::Incomplete(_),
                ..
            },
        ) => {
            eprintln!("restored, incomplete: {e}");
            EXIT_FAILED
        }
        Err(RestoreError::Interrupted(why)) => {
            eprintln!("error: {why}");
            EXIT_INTERRUPTED
        }
        Err(e) => {
            eprintln!("error: restore failed: {e}");
            match e {
                RestoreError::Usage(_) => EXIT_CONFIG,
                _ => EXIT_FAILED,
            }
        }
    }
}
