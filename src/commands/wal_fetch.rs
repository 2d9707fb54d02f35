//! `stowage wal-fetch JOB NAME PATH`: PostgreSQL's `restore_command` (`%f` and `%p`). Its
//! exit code is what the server acts on: 0 the file is in place, 1 no destination has it
//! (the server asks for files past the end of the archive and takes this as "not
//! available"), 255 anything else, which makes the server abort recovery instead of
//! ending it early on damaged or unreadable WAL.

use std::path::Path;

use super::{EXIT_FAILED, EXIT_OK, EXIT_WAL_ABORT};
use crate::logging::Console;
use crate::wal::fetch::{FetchError, Request, fetch};

pub fn run(config_path: &Path, job: &str, req: Request) -> i32 {
    // Every failure before the fetch (an invalid config, an unknown job) must stop
    // recovery too: `with_job`'s usage exit code (2) would read as "not available".
    let Some(mut config) = super::load_config(config_path) else {
        return EXIT_WAL_ABORT;
    };
    // The server runs this as its own user, who may not write the daemon's log files:
    // its stderr goes to the server's log, which is where a failed fetch is looked for.
    config.log.dir = None;
    let _guard = match super::init_logging(&config, Console::Stderr) {
        Ok(g) => g,
        Err(_) => return EXIT_WAL_ABORT,
    };
    let job = match crate::restore::find_job(&config, job) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_WAL_ABORT;
        }
    };
    let Some(rt) = super::runtime() else {
        return EXIT_WAL_ABORT;
    };
    match rt.block_on(fetch(&config, job, &req)) {
        Ok(done) => {
            tracing::debug!(
                job = %job.name,
                "wal-fetch {}: {} bytes from {} ({}{})",
                req.name,
                done.bytes,
                done.destination,
                done.key,
                if done.partial { ", partial segment" } else { "" }
            );
            EXIT_OK
        }
        // The server asks for files that were never shipped: no noise in its log.
        Err(FetchError::NotFound { .. }) => EXIT_FAILED,
        Err(e) => {
            // Each message already quotes its cause: one line, for the server's log.
            eprintln!("error: wal-fetch: {}", e.to_string().replace('\n', " "));
            EXIT_WAL_ABORT
        }
    }
}
