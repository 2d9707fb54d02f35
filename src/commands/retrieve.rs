use std::path::Path;

use super::{EXIT_OK, Scope};
use crate::restore::{RestoreError, lifecycle};

/// Request the retrieval of what a restore of the backup needs, and say when to come back.
pub fn run(path: &Path, job: &str, id: &str, scope: &Scope) -> i32 {
    let result = scope.run(path, job, id, |config, req| async move {
        let mut s = crate::restore::survey(&config, &req).await?;
        // By what the store says, not the config: a destination whose storage_class was
        // changed still has its archived objects.
        let settings = s.archive.map(|(_, r)| r).unwrap_or_default();
        let requested =
            lifecycle::request(s.located.storage.as_ref(), &mut s.survey, settings).await?;
        Ok::<_, RestoreError>((s, requested))
    });
    let (s, requested) = match result {
        Ok(r) => r,
        Err(code) => return code,
    };
    let m = &s.located.manifest;
    let dest = &s.located.destination;
    match s.archive {
        None if requested == 0 => println!(
            "backup {} of job {} on {dest}: {dest} is read directly, nothing to retrieve",
            m.id, m.job
        ),
        None => println!(
            "backup {} of job {} on {dest}: requested the retrieval of {requested} archived object(s) now (Standard tier; set storage_class and retrieval on {dest} to choose); {}",
            m.id,
            m.job,
            s.survey.counts()
        ),
        Some((class, r)) => {
            let pending = s.survey.count(lifecycle::State::Pending);
            println!(
                "backup {} of job {} on {dest} ({class}): requested the retrieval of {requested} object(s) now; {}",
                m.id,
                m.job,
                s.survey.counts()
            );
            if pending > 0 {
                println!(
                    "{pending} object(s) pending: {} tier, usually {}; they stay readable for {} days once retrieved. Then: stowage restore {} {} --from {dest} …",
                    r.tier,
                    r.tier.usual_delay(class).unwrap_or("hours"),
                    r.days,
                    m.job,
                    m.id
                );
            } else {
                println!("everything a restore needs is readable now");
            }
        }
    }
    EXIT_OK
}
