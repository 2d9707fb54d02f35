use std::path::Path;

use super::{EXIT_OK, Scope};

/// Where a backup stands in the retrieval lifecycle, per source and in total.
pub fn run(path: &Path, job: &str, id: &str, scope: &Scope, verbose: bool) -> i32 {
    let s = match scope.run(path, job, id, |config, req| async move {
        crate::restore::survey(&config, &req).await
    }) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let m = &s.located.manifest;
    println!(
        "backup {} of job {} on {} ({})",
        m.id,
        m.job,
        s.located.destination,
        match s.archive {
            Some((class, r)) => format!(
                "{class}; retrieval: {} tier, usually {}, readable for {} days",
                r.tier,
                r.tier.usual_delay(class).unwrap_or("hours"),
                r.days
            ),
            None => "read directly, nothing to retrieve".to_string(),
        }
    );
    let width = s
        .survey
        .per_source()
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(0)
        .max(5);
    for (source, counts) in s.survey.per_source() {
        println!("  {source:<width$}  {counts}");
        if verbose {
            for o in s.survey.objects.iter().filter(|o| o.source == source) {
                println!("  {:<width$}    {:<9}  {}", "", o.state.as_str(), o.name);
            }
        }
    }
    println!("  {:<width$}  {}", "total", s.survey.counts());
    EXIT_OK
}
