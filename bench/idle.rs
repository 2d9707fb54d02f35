//! Idle footprint of the daemon: memory and wakeups once it has nothing to do, and again
//! after a scheduled backup.
//!
//! `cargo bench --bench idle` (release build; see bench/README.md). Starts its own
//! PostgreSQL and moto (the test harness's, `tests/common`), then three daemons side by side:
//! - **minimal**: one job, a local destination, no HTTP listener;
//! - **full**: the same job to a local and an S3 destination, with `[server] listen`;
//! - **logdir**: the full one also writing log files (`[log] dir`, as the image's config).
//!
//! Each takes its catch-up backup at start (so its idle state is the one after real work),
//! then idles for `STOWAGE_IDLE_SECS` (default 600); the job's schedule (a daily time, UTC)
//! is set to the first whole minute after that, so each then takes a scheduled backup and
//! idles `STOWAGE_AFTER_SECS` more (default 180): memory must return to the idle figure.
//! Sampled every 10 s: RSS (and its anonymous part), threads, and context switches summed
//! over the threads. Wakeups per minute: the switches over the idle time, counted from the
//! first sample 75 s into it with the idle thread count: by then the daemon has finished
//! with the catch-up backup (its blocking threads exit after 10 s, taking their counters
//! with them; it gives memory back a minute after the work). "After the backup": the first
//! sample 75 s after it fired, past that minute, and the last sample.
//! `STOWAGE_IDLE_OUT` (JSON; default bench/results/<UTC>-idle.json).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{PgServer, Running, S3Server, seed_sample_db};

#[derive(Default, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    anon_kib: u64,
    threads: u64,
    switches: u64,
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Voluntary + involuntary context switches of every thread: each is the thread going to
/// sleep or being put to sleep, so a thread that wakes up N times switches about N times.
fn switches(pid: u32) -> (u64, u64) {
    let mut total = 0;
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        threads += 1;
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in status.lines() {
            if let Some(v) = l
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| l.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    (total, threads)
}

fn sample(pid: u32, t0: Instant) -> Sample {
    let (switches, threads) = switches(pid);
    Sample {
        secs: t0.elapsed().as_secs_f64(),
        rss_kib: status_kib(pid, "VmRSS:"),
        anon_kib: status_kib(pid, "RssAnon:"),
        threads,
        switches,
    }
}

struct Daemon {
    name: &'static str,
    running: Running,
    samples: Vec<Sample>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let idle: u64 = std::env::var("STOWAGE_IDLE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    let after: u64 = std::env::var("STOWAGE_AFTER_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180);
    // Set-up and the catch-up backups take well under two minutes here.
    let fire_at = {
        let t = chrono::Utc::now() + chrono::TimeDelta::seconds(120 + idle as i64);
        let t = t + chrono::TimeDelta::seconds(60 - i64::from(chrono::Timelike::second(&t)));
        chrono::DurationRound::duration_trunc(t, chrono::TimeDelta::minutes(1)).expect("minute")
    };
    let schedule = format!(
        "{} {} * * *",
        chrono::Timelike::minute(&fire_at),
        chrono::Timelike::hour(&fire_at)
    );
    eprintln!("idle: the scheduled backup fires at {fire_at} (\"{schedule}\" UTC)");
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 20_000);
    let s3 = S3Server::moto();
    s3.create_bucket("full").await;
    s3.create_bucket("logdir").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, s3.secret_key()).expect("secret");
    let job = |dests: &str| {
        format!(
            r#"
[jobs.app]
schedule = "{schedule}"
timezone = "UTC"
destinations = [{dests}]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "{}"
"#,
            pg.url("app"),
        )
    };
    let local = |name: &str| {
        format!(
            "[destinations.local]\ntype = \"local\"\npath = \"{}\"\nretention = {{ keep_last = 7 }}\n",
            dir.path().join(name).display()
        )
    };
    let port = common::free_port();
    // Each daemon to destinations of its own: two at once on one would wait for each
    // other's lock.
    let full = |name: &str, port: u16| {
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{}\n[destinations.offsite]\ntype = \"s3\"\nbucket = \"{name}\"\nendpoint = \"{}\"\nforce_path_style = true\naccess_key_id = \"{}\"\nsecret_access_key_file = \"{}\"\nretention = {{ keep_daily = 7 }}\n{}",
            local(name),
            s3.endpoint(),
            s3.access_key(),
            secret.display(),
            job("\"local\", \"offsite\"")
        )
    };
    let logdir_port = std::iter::repeat_with(common::free_port)
        .find(|p| *p != port)
        .expect("a second free port");
    let configs = [
        (
            "minimal",
            format!("{}{}", local("minimal"), job("\"local\"")),
        ),
        ("full", full("full", port)),
        // The image's config: the full daemon also writing log files.
        (
            "logdir",
            format!(
                "[log]\ndir = \"{}\"\n\n{}",
                dir.path().join("logs").display(),
                full("logdir", logdir_port)
            ),
        ),
    ];
    let mut daemons = Vec::new();
    for (name, body) in configs {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, body).expect("config");
        let pid = dir.path().join(format!("{name}.pid"));
        let state = dir.path().join(format!("{name}.state"));
        // Each daemon from its own copy of the binary, as each container has its own image
        // layer (RSS counts only the pages a process maps itself, so sharing one file would
        // not change the figures; the copies keep the set-up like production's).
        let bin = dir.path().join(format!("{name}-stowage"));
        std::fs::copy(common::stowage_bin(), &bin).expect("copy the stowage binary");
        let running = common::spawn_binary_with_env(
            &bin,
            &cfg,
            ["daemon"],
            &[
                ("STOWAGE_PID_FILE", pid.as_os_str()),
                ("STOWAGE_STATE_FILE", state.as_os_str()),
            ],
        );
        daemons.push(Daemon {
            name,
            running,
            samples: Vec::new(),
        });
    }
    for d in &mut daemons {
        d.running
            .wait_for_output("backup success: job=app", Duration::from_secs(120));
    }
    eprintln!(
        "idle: the daemons took their catch-up backup; idling until {fire_at}, then {after} s more"
    );
    let t0 = Instant::now();
    let until_fire = (fire_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default()
        .saturating_sub(Duration::from_secs(5));
    let end = until_fire + Duration::from_secs(5 + after);
    let mut before_fire: Vec<Sample> = Vec::new();
    while t0.elapsed() < end {
        for d in &mut daemons {
            d.samples.push(sample(d.running.pid(), t0));
        }
        let now = t0.elapsed();
        if now >= until_fire && before_fire.is_empty() {
            before_fire = daemons
                .iter()
                .map(|d| sample(d.running.pid(), t0))
                .collect();
        }
        // Every 10 s, and once exactly 5 s before the scheduled backup: the idle figures
        // end there, before the backup wakes anything.
        let step = if now < until_fire {
            (until_fire - now).min(Duration::from_secs(10))
        } else {
            Duration::from_secs(10)
        };
        std::thread::sleep(step);
    }
    for d in &mut daemons {
        d.samples.push(sample(d.running.pid(), t0));
    }

    let mut report = serde_json::Map::new();
    report.insert("idle_seconds".into(), until_fire.as_secs().into());
    report.insert("after_seconds".into(), after.into());
    report.insert("scheduled_backup_at".into(), fire_at.to_rfc3339().into());
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>8} {:>12} {:>11} {:>11}",
        "daemon",
        "RSS KiB",
        "anon KiB",
        "wakes/min",
        "threads",
        "2nd backup",
        "RSS after",
        "anon after"
    );
    for (i, d) in daemons.iter().enumerate() {
        let first = d.samples.first().copied().unwrap_or_default();
        let last = d.samples.last().copied().unwrap_or_default();
        let idle_end = before_fire.get(i).copied().unwrap_or(last);
        let settled = d
            .samples
            .iter()
            .find(|s| s.secs >= 75.0 && s.threads == idle_end.threads)
            .copied()
            .unwrap_or(first);
        let minutes = (idle_end.secs - settled.secs) / 60.0;
        let per_min = if minutes > 0.0 {
            idle_end.switches.saturating_sub(settled.switches) as f64 / minutes
        } else {
            0.0
        };
        let fired = until_fire.as_secs_f64() + 5.0;
        let after_backup = d
            .samples
            .iter()
            .find(|s| s.secs >= fired + 75.0)
            .copied()
            .unwrap_or(last);
        let backups = d
            .running
            .output_so_far()
            .matches("backup success: job=app")
            .count();
        println!(
            "{:<8} {:>10} {:>10} {:>10.1} {:>8} {:>12} {:>11} {:>11}",
            d.name,
            idle_end.rss_kib,
            idle_end.anon_kib,
            per_min,
            idle_end.threads,
            if backups >= 2 { "taken" } else { "MISSING" },
            after_backup.rss_kib,
            after_backup.anon_kib
        );
        report.insert(
            d.name.into(),
            serde_json::json!({
                "rss_kib_after_catch_up": first.rss_kib,
                "rss_kib_idle": idle_end.rss_kib,
                "rss_anon_kib_idle": idle_end.anon_kib,
                "threads_idle": idle_end.threads,
                "wakeups_per_minute": (per_min * 10.0).round() / 10.0,
                "wakeups_counted_from_s": settled.secs.round(),
                "backups_taken": backups,
                "rss_kib_after_scheduled_backup": after_backup.rss_kib,
                "rss_anon_kib_after_scheduled_backup": after_backup.anon_kib,
                "after_scheduled_backup_at_s": after_backup.secs.round(),
                "rss_kib_last": last.rss_kib,
                "rss_anon_kib_last": last.anon_kib,
                "samples": d.samples.iter().map(|s| serde_json::json!([
                    s.secs.round(), s.rss_kib, s.anon_kib, s.threads, s.switches
                ])).collect::<Vec<_>>(),
            }),
        );
    }
    let out = std::env::var("STOWAGE_IDLE_OUT").unwrap_or_else(|_| {
        format!(
            "{}/bench/results/{}-idle.json",
            env!("CARGO_MANIFEST_DIR"),
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        )
    });
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&serde_json::Value::Object(report)).expect("json"),
    )
    .expect("write results");
    eprintln!("idle: results in {out}");
    for d in daemons {
        d.running.signal("TERM");
        let _ = d.running.wait(Duration::from_secs(60));
    }
}
