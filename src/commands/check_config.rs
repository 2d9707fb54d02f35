use std::fmt::Write as _;
use std::path::Path;

use chrono::Utc;

use super::{EXIT_CONFIG, EXIT_OK, load_config};
use crate::config::{Config, Job, LogConfig, LogFormat, Rotation, SourceConfig};
use crate::crypt::Keys;
use crate::retention::RetentionPolicy;
use crate::schedule::Schedule;

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
    let _ = writeln!(out, "{}", log_line(&config.log));
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
        let _ = writeln!(out, "  {:<12} {}", "", retention(&d.retention));
        if !config
            .jobs
            .values()
            .any(|j| j.destinations.contains(&d.name))
        {
            let _ = writeln!(out, "  {:<12} warning: no job uses this destination", "");
        }
    }
}

/// A destination's `retention`, as the config file writes it.
fn retention(policy: &RetentionPolicy) -> String {
    if policy.is_keep_all() {
        return "retention: none, every backup is kept".to_string();
    }
    // `describe` says `keep_daily=7 max_age=30d`: the keys, in the file's order.
    let rules: Vec<String> = policy
        .describe()
        .split_whitespace()
        .map(|rule| match rule.split_once('=') {
            Some(("max_age", v)) => format!("max_age = \"{v}\""),
            Some((k, v)) => format!("{k} = {v}"),
            None => rule.to_string(),
        })
        .collect();
    format!("retention = {{ {} }}", rules.join(", "))
}

/// The `[log]` settings, in the config file's words.
fn log_line(log: &LogConfig) -> String {
    let format = match log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let files = log.dir.as_ref().map(|d| {
        let rotation = match log.rotation {
            Rotation::Daily => "daily",
            Rotation::Hourly => "hourly",
            Rotation::Never => "never",
        };
        format!(
            ", files in {} (rotation = \"{rotation}\", keep_files = {})",
            d.display(),
            log.keep_files
        )
    });
    format!(
        "log: level = \"{}\", format = \"{format}\"{}",
        log.level,
        files.unwrap_or_default()
    )
}

/// Each job: schedule, sources, destinations, next runs, then what else the daemon does
/// with it (verify, heal, drill) with their next runs, and encryption.
fn jobs(out: &mut String, config: &Config, now: chrono::DateTime<Utc>) {
    let _ = writeln!(out, "jobs:");
    for j in config.jobs.values() {
        let _ = writeln!(
            out,
            "  {:<12} schedule \"{}\" ({}), compression = \"{}\"{}",
            j.name,
            j.schedule.expr(),
            j.schedule.tz(),
            j.compression.as_str(),
            j.compression_level
                .map(|l| format!(", compression_level = {l}"))
                .unwrap_or_default()
        );
        job_sources(out, j);
        let _ = writeln!(
            out,
            "  {:<12} destinations: {}",
            "",
            j.destinations.join(", ")
        );
        let _ = writeln!(
            out,
            "  {:<12} next runs: {}",
            "",
            next_runs(&j.schedule, now, 3)
        );
        job_checks(out, config, j, now);
        job_hooks(out, j);
    }
}

/// The next `n` times `schedule` fires after `now`, in its time zone.
fn next_runs(schedule: &Schedule, now: chrono::DateTime<Utc>, n: usize) -> String {
    let next: Vec<String> = schedule
        .upcoming(now, n)
        .iter()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S %Z").to_string())
        .collect();
    if next.is_empty() {
        "never".to_string()
    } else {
        next.join(", ")
    }
}

/// A job's verify, heal, drill (each with its schedule and next run) and encryption.
fn job_checks(out: &mut String, config: &Config, j: &Job, now: chrono::DateTime<Utc>) {
    let pad = "";
    if let Some(v) = &j.verify {
        let _ = writeln!(
            out,
            "  {pad:<12} verify: schedule \"{}\", read_data = \"{}\"; next run {}",
            v.expr(),
            j.verify_read_data,
            next_runs(v, now, 1)
        );
    }
    if let Some(h) = &j.heal {
        let watch: Vec<String> = h.watch.iter().map(|w| format!("\"{w}\"")).collect();
        let _ = writeln!(
            out,
            "  {pad:<12} heal: source \"{}\", watch = [{}], backups = {}{}, schedule \"{}\"; next run {}",
            h.source,
            watch.join(", "),
            h.backups,
            if h.dry_run { ", dry_run = true" } else { "" },
            h.schedule.expr(),
            next_runs(&h.schedule, now, 1)
        );
    }
    if let Some(d) = &j.drill {
        let _ = writeln!(
            out,
            "  {pad:<12} drill: source \"{}\" into a scratch database, {} check(s), schedule \"{}\"; next run {}",
            d.source,
            d.checks.len(),
            d.schedule.expr(),
            next_runs(&d.schedule, now, 1)
        );
    }
    if let Some(e) = &j.encryption {
        // A mismatch between identity and recipients is one of the warnings above.
        let mismatch = format!("jobs.{}.encryption.identity_file:", j.name);
        let keys = if e.keys.is_none() {
            "no identity here (restore needs --identity)"
        } else if matches!(e.keys.as_deref(), Some(Keys::Passphrase { .. })) {
            "the passphrase reads backups (heal, verify and drills can too)"
        } else if config.warnings.iter().any(|w| w.starts_with(&mismatch)) {
            "identity_file reads none of its backups (see the warning above)"
        } else {
            "identity configured (heal, verify and drills can read backups)"
        };
        let _ = writeln!(
            out,
            "  {pad:<12} encryption: age, {}; {keys}",
            e.sealer.describe()
        );
    }
}

/// A job's hooks, one line each: the program only, as its arguments may hold a secret a
/// pasted check-config output should not.
fn job_hooks(out: &mut String, j: &Job) {
    let all = std::iter::once(&j.hooks).chain(j.source_hooks.values());
    for hook in all
        .flat_map(|h| [h.before.as_ref(), h.after.as_ref()])
        .flatten()
    {
        let program = match &hook.command {
            crate::config::HookCommand::Argv(a) => {
                format!("`{} …`", a.first().map_or("", String::as_str))
            }
            crate::config::HookCommand::Shell(_) => "a shell command".to_string(),
        };
        let continues = hook.key.ends_with(".before")
            && hook.on_failure == crate::config::raw::HookFailure::Continue;
        let _ = writeln!(
            out,
            "  {:<12} hook {}: {program}, timeout = \"{}\"{}",
            "",
            hook.key,
            humantime::format_duration(hook.timeout),
            if continues {
                ", on_failure = \"continue\""
            } else {
                ""
            }
        );
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
