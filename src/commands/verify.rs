use std::path::{Path, PathBuf};

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, with_job};
use crate::logging::Console;
use crate::restore::RestoreError;
use crate::verify::{Options, ReadData, Which};

/// Re-read the chosen backups and say, per backup and destination, whether they are whole
/// and readable: 0 all good, 1 anything missing, corrupt or unreadable, 2 bad usage.
pub fn run(
    path: &Path,
    job_name: &str,
    which: Which,
    from: Option<&str>,
    identity: Option<&PathBuf>,
    opts: Options,
) -> i32 {
    with_job(path, Console::Stderr, job_name, |config, job, rt| {
        let keys = match crate::restore::keys_for(job, identity) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_CONFIG;
            }
        };
        if opts.read_data != ReadData::None && job.encryption.is_some() && keys.is_none() {
            eprintln!(
                "error: --read-data: job \"{}\" is encrypted and there is no key to read its blobs; give --identity FILE (or identity_file in [jobs.{}.encryption])",
                job.name, job.name
            );
            return EXIT_CONFIG;
        }
        let result = rt.block_on(crate::verify::verify_with(
            config, job, &which, from, keys, opts,
        ));
        if let Ok(r) = &result {
            crate::status::post_or_say(&crate::status::Record::verify(r));
        }
        report(result)
    })
}

fn report(result: Result<crate::verify::VerifyReport, RestoreError>) -> i32 {
    match result {
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
    }
}
