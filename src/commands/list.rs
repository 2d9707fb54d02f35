use std::fmt::Write as _;
use std::path::Path;

use super::{EXIT_CONFIG, EXIT_FAILED, EXIT_OK, runtime, start};
use crate::config::Config;
use crate::logging::Console;
use crate::manifest::{self, JobListing};
use crate::pipeline::human_bytes;
use crate::storage;

pub fn run(path: &Path, job: Option<&str>, holding: Option<&str>) -> i32 {
    let (config, _guard) = match start(path, Console::Stderr) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(j) = job
        && let Err(e) = crate::restore::find_job(&config, j)
    {
        eprintln!("error: {e}");
        return EXIT_CONFIG;
    }
    let Some(rt) = runtime() else {
        return EXIT_FAILED;
    };
    let (text, failures) = rt.block_on(render(&config, job, holding));
    print!("{text}");
    if failures > 0 { EXIT_FAILED } else { EXIT_OK }
}

/// The listing as text, and how many destinations could not be read. With `holding`, only
/// backups whose manifest lists that table or collection (read from the manifests: nothing
/// is downloaded).
pub async fn render(
    config: &Config,
    only_job: Option<&str>,
    holding: Option<&str>,
) -> (String, usize) {
    let mut out = String::new();
    let mut failures = 0;
    for dest in config.destinations.values() {
        let jobs: Vec<&crate::config::Job> = config
            .jobs
            .values()
            .filter(|j| only_job.is_none_or(|o| o == j.name))
            .filter(|j| j.destinations.contains(&dest.name))
            .collect();
        if jobs.is_empty() {
            continue;
        }
        let st = storage::open(dest).await;
        let _ = writeln!(out, "destination {} ({})", dest.name, st.location());
        for job in jobs {
            let listing = match JobListing::read_backups(st.as_ref(), &job.name).await {
                Ok(l) => l,
                Err(e) => {
                    failures += 1;
                    let _ = writeln!(out, "  job {}: cannot list: {e}", job.name);
                    continue;
                }
            };
            let published = listing.published(&job.name);
            let tz = job.schedule.tz();
            let _ = writeln!(out, "  job {} ({} backups)", job.name, published.len());
            if published.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "    {:<22}  {:<25}  {:>10}  SOURCES",
                "ID",
                format!("TIME ({tz})"),
                "SIZE"
            );
            for p in published {
                let local = p
                    .time
                    .with_timezone(&tz)
                    .format("%Y-%m-%d %H:%M:%S %Z")
                    .to_string();
                match manifest::read_manifest(st.as_ref(), &job.name, &p.id).await {
                    Ok(m) if holding.is_some_and(|h| !holds(&m, h)) => {}
                    Ok(m) => {
                        let mut sources = m
                            .sources
                            .iter()
                            .map(describe_source)
                            .collect::<Vec<_>>()
                            .join(", ");
                        if let Some(scheme) = &m.encryption {
                            sources.push_str(&format!(" [encrypted: {scheme}]"));
                        }
                        let _ = writeln!(
                            out,
                            "    {:<22}  {:<25}  {:>10}  {}",
                            p.id,
                            local,
                            human_bytes(m.stored_size()),
                            sources
                        );
                    }
                    // Retention in a running daemon may delete a backup between the
                    // listing and this read: it is simply gone, not an error.
                    Err(crate::manifest::ManifestError::Storage(
                        crate::storage::StorageError::NotFound(_),
                    )) => {}
                    Err(e) => {
                        failures += 1;
                        let _ = writeln!(
                            out,
                            "    {:<22}  {:<25}  {:>10}  unreadable manifest: {e}",
                            p.id, local, "?"
                        );
                    }
                }
            }
        }
    }
    (out, failures)
}

/// "db (postgres, 1.2 MiB)" or "uploads (files: 2000 files, 10 new, 1.2 MiB of 7.8 MiB uploaded)":
/// for files, how much this backup uploaded against what it references shows the dedup.
fn describe_source(s: &crate::manifest::SourceEntry) -> String {
    match &s.files {
        Some(f) => format!(
            "{} (files: {} files, {} new, {} of {} uploaded)",
            s.name,
            f.count,
            f.new_files,
            human_bytes(f.new_bytes),
            human_bytes(f.bytes)
        ),
        None => match &s.objects {
            Some(o) => format!(
                "{} ({}, {}, {} {})",
                s.name,
                s.kind,
                human_bytes(s.size),
                o.len(),
                if o.len() == 1 { "object" } else { "objects" }
            ),
            None => format!("{} ({}, {})", s.name, s.kind, human_bytes(s.size)),
        },
    }
}

/// Whether a backup holds a table or collection: "orders" matches "orders" and any
/// "<schema or database>.orders"; "public.orders" matches only itself.
fn holds(m: &crate::manifest::Manifest, name: &str) -> bool {
    m.sources.iter().any(|s| {
        s.objects.as_ref().is_some_and(|objs| {
            objs.iter().any(|o| {
                o == name
                    || (!name.contains('.') && o.rsplit_once('.').is_some_and(|(_, t)| t == name))
            })
        })
    })
}
