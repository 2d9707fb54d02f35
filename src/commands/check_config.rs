use std::fmt::Write as _;
use std::path::Path;

use chrono::Utc;

use super::{EXIT_CONFIG, EXIT_OK, load_config};
use crate::config::{Config, Job, SourceConfig};

pub fn run(path: &Path, connect: bool) -> i32 {
    let Some(config) = load_config(path) else {
        return EXIT_CONFIG;
    };
    print!("{}", summary(&config, Utc::now()));
    if !connect {
        return EXIT_OK;
    }
    let Some(rt) = super::runtime() else {
        return super::EXIT_FAILED;
    };
    let mut problems = 0;
    for job in config.jobs.values() {
        let checked = rt.block_on(crate::preflight::check_job(&config, job));
        println!("job {}:", job.name);
        for l in &checked.lines {
            println!("  {l}");
        }
        for p in &checked.problems {
            println!("  problem: {p}");
        }
        problems += checked.problems.len();
    }
    if problems == 0 {
        println!("connect: every source and destination answered");
        EXIT_OK
    } else {
        println!("connect: {problems} problem(s)");
        super::EXIT_FAILED
    }
}

/// One screen: what will run, when, and where it goes. No secrets: passwords are split
/// out of URLs at load time and secret files are named, never read out.
pub fn summary(config: &Config, now: chrono::DateTime<Utc>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "config {}: ok", config.path.display());
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(
        out,
        "log: level {}, format {:?}{}",
        config.log.level,
        config.log.format,
        config
            .log
            .dir
            .as_ref()
            .map(|d| format!(
                ", files in {} ({:?}, keep {})",
                d.display(),
                config.log.rotation,
                config.log.keep_files
            ))
            .unwrap_or_default()
    );
    destinations(&mut out, config);
    jobs(&mut out, config, now);
    out
}

/// Each destination: where it is, its retention, and whether any job uses it.
fn destinations(out: &mut String, config: &Config) {
    let _ = writeln!(out, "destinations:");
    for d in config.destinations.values() {
        let what = d.settings.describe();
        let _ = writeln!(out, "  {:<12} {what}", d.name);
        let _ = writeln!(out, "  {:<12} retention: {}", "", d.retention.describe());
        if !config
            .jobs
            .values()
            .any(|j| j.destinations.contains(&d.name))
        {
            let _ = writeln!(out, "  {:<12} warning: no job uses this destination", "");
        }
    }
}

/// Each job: schedule, sources, destinations, next runs, encryption and drill.
fn jobs(out: &mut String, config: &Config, now: chrono::DateTime<Utc>) {
    let _ = writeln!(out, "jobs:");
    for j in config.jobs.values() {
        let _ = writeln!(
            out,
            "  {:<12} schedule \"{}\" ({}), compression {:?}",
            j.name,
            j.schedule.expr(),
            j.schedule.tz(),
            j.compression
        );
        job_sources(out, j);
        let _ = writeln!(
            out,
            "  {:<12} destinations: {}",
            "",
            j.destinations.join(", ")
        );
        let next: Vec<String> = j
            .schedule
            .upcoming(now, 3)
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
            .collect();
        let _ = writeln!(out, "  {:<12} next runs: {}", "", next.join(", "));
        if let Some(e) = &j.encryption {
            let _ = writeln!(
                out,
                "  {:<12} encryption: age, {}; {}",
                "",
                e.sealer.describe(),
                if e.keys.is_some() {
                    "identity configured (heal, verify and drills can read backups)"
                } else {
                    "no identity here (restore needs --identity)"
                }
            );
        }
        if let Some(d) = &j.drill {
            let _ = writeln!(
                out,
                "  {:<12} drill: {} into a scratch database ({}), {} check(s)",
                "",
                d.source,
                d.schedule.expr(),
                d.checks.len()
            );
        }
    }
}

/// A job's sources, one line each (with what a restore skips by default).
fn job_sources(out: &mut String, j: &Job) {
    for s in &j.sources {
        match s {
            SourceConfig::Database(d) => {
                let _ = writeln!(out, "  {:<12} source {} ({})", "", s.name(), d.describe());
                let excluded = d.default_excludes();
                if !excluded.is_empty() {
                    let _ = writeln!(
                        out,
                        "  {:<12}   skipped on restore by default: {}",
                        "",
                        excluded.join(", ")
                    );
                }
            }
            SourceConfig::Files(f) => {
                let _ = writeln!(
                    out,
                    "  {:<12} source {} (files {}{}{}{})",
                    "",
                    s.name(),
                    f.path.display(),
                    if f.include.is_empty() {
                        String::new()
                    } else {
                        format!(", include {}", f.include.join(" "))
                    },
                    if f.exclude.is_empty() {
                        String::new()
                    } else {
                        format!(", exclude {}", f.exclude.join(" "))
                    },
                    if f.immutable { ", immutable" } else { "" }
                );
            }
        }
    }
}
