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
//! Sampled every 10 s: the daemon's memory as a container's figure (see [`CgroupMemory`]:
//! each daemon runs in a memory cgroup of its own when the bench can make one), its
//! anonymous memory (`Anonymous:` of /proc/PID/smaps_rollup: what it holds that no file
//! backs), VmRSS (reported, not a target: it also counts the binary's and libraries'
//! resident code, which is shared page cache), threads, and context switches summed over
//! the threads. Wakeups per minute: the switches over the idle time, counted from the
//! first sample 75 s into it with the idle thread count: by then the daemon has finished
//! with the catch-up backup (its blocking threads exit after 10 s, taking their counters
//! with them; it gives memory back a minute after the work). "After the backup": the first
//! sample 75 s after it fired, past that minute, and the last sample.
//! `STOWAGE_IDLE_OUT` (JSON; default bench/results/<UTC>-idle.json).
//!
//! `STOWAGE_IDLE_BEFORE_BIN=PATH`: also runs each daemon from that binary (named
//! `<name>-before`), side by side in the same run, for a before/after comparison.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{PgServer, Running, S3Server, seed_sample_db};

#[derive(Default, Clone, Copy)]
struct Sample {
    secs: f64,
    rss_kib: u64,
    anon_kib: u64,
    /// The daemon's cgroup figure (see [`CgroupMemory`]), if it has a cgroup of its own.
    cgroup_kib: Option<u64>,
    threads: u64,
    switches: u64,
}

/// A memory cgroup of the daemon's own, read as `docker stats` reads a container's: usage
/// minus inactive file pages (cgroup v2: `memory.current` − `inactive_file` of
/// `memory.stat`; v1: `memory.usage_in_bytes` − `total_inactive_file`). Unlike VmRSS it
/// counts the page cache the daemon brought in (its binary's pages included, once each,
/// however many times they are mapped) as long as it is active, and it is what a
/// container's memory limit weighs.
struct CgroupMemory {
    dir: std::path::PathBuf,
    v2: bool,
}

impl CgroupMemory {
    /// Makes `stowage-idle-<pid>-<name>` under the v2 hierarchy if it has the memory
    /// controller, else under v1's memory hierarchy. `Err`: why there is none.
    fn create(name: &str) -> Result<Self, String> {
        let leaf = format!("stowage-idle-{}-{name}", std::process::id());
        let root = std::path::Path::new("/sys/fs/cgroup");
        let v2_memory = std::fs::read_to_string(root.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let (dir, v2) = if v2_memory {
            // The root hands the memory controller down to its children (a no-op if it does).
            let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
            (root.join(&leaf), true)
        } else if root.join("memory/memory.usage_in_bytes").exists() {
            (root.join("memory").join(&leaf), false)
        } else {
            return Err("no memory controller under /sys/fs/cgroup (v2 or v1)".into());
        };
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let cg = Self { dir, v2 };
        cg.read_kib()
            .map(|_| cg)
            .ok_or_else(|| "its memory files cannot be read".to_string())
    }

    fn read_kib(&self) -> Option<u64> {
        let (usage, inactive) = if self.v2 {
            ("memory.current", "inactive_file")
        } else {
            ("memory.usage_in_bytes", "total_inactive_file")
        };
        let usage: u64 = std::fs::read_to_string(self.dir.join(usage))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(self.dir.join("memory.stat")).ok()?;
        let inactive: u64 = stat.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == inactive).then(|| v.trim().parse().ok())?
        })?;
        Some(usage.saturating_sub(inactive) / 1024)
    }

    /// A wrapper that puts itself in this cgroup, then becomes `bin`: the daemon's first
    /// page is charged to it.
    fn wrapper(
        &self,
        dir: &std::path::Path,
        name: &str,
        bin: &std::path::Path,
    ) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("{name}-in-cgroup.sh"));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho $$ > '{}/cgroup.procs' || exit 125\nexec '{}' \"$@\"\n",
                self.dir.display(),
                bin.display()
            ),
        )
        .expect("write the cgroup wrapper");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }
}

impl Drop for CgroupMemory {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `Anonymous:` of /proc/PID/smaps_rollup (KiB).
fn anonymous_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Anonymous:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
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

fn sample(pid: u32, cgroup: Option<&CgroupMemory>, t0: Instant) -> Sample {
    let (switches, threads) = switches(pid);
    Sample {
        secs: t0.elapsed().as_secs_f64(),
        rss_kib: status_kib(pid, "VmRSS:"),
        anon_kib: anonymous_kib(pid),
        cgroup_kib: cgroup.and_then(CgroupMemory::read_kib),
        threads,
        switches,
    }
}

struct Daemon {
    name: String,
    running: Running,
    cgroup: Option<CgroupMemory>,
    samples: Vec<Sample>,
}

impl Daemon {
    fn sample(&self, t0: Instant) -> Sample {
        sample(self.running.pid(), self.cgroup.as_ref(), t0)
    }
}

/// Writes `path` out and drops its pages from the page cache, so that the daemon that
/// runs it reads them itself, and a cgroup of its own is charged for them, as a container
/// reading its image layer is (the copy's pages would otherwise stay charged to the bench).
fn drop_from_page_cache(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
        // SAFETY: advice on an open file descriptor of ours; no memory is touched.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
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
    let before_bin = std::env::var_os("STOWAGE_IDLE_BEFORE_BIN").map(std::path::PathBuf::from);
    let binaries: Vec<(&str, std::path::PathBuf)> = std::iter::once(("", common::stowage_bin()))
        .chain(before_bin.map(|b| ("-before", b)))
        .collect();
    let s3 = S3Server::moto();
    for (suffix, _) in &binaries {
        s3.create_bucket(&format!("full{suffix}")).await;
        s3.create_bucket(&format!("logdir{suffix}")).await;
    }
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
    let mut ports: Vec<u16> = Vec::new();
    let mut configs = Vec::new();
    for (suffix, bin) in &binaries {
        for _ in 0..2 {
            let p = std::iter::repeat_with(common::free_port)
                .find(|p| !ports.contains(p))
                .expect("a free port");
            ports.push(p);
        }
        let (port, logdir_port) = (ports[ports.len() - 2], ports[ports.len() - 1]);
        let name = |n: &str| format!("{n}{suffix}");
        configs.push((
            name("minimal"),
            format!("{}{}", local(&name("minimal")), job("\"local\"")),
            bin.clone(),
        ));
        configs.push((name("full"), full(&name("full"), port), bin.clone()));
        // The image's config: the full daemon also writing log files.
        configs.push((
            name("logdir"),
            format!(
                "[log]\ndir = \"{}\"\n\n{}",
                dir.path().join(name("logs")).display(),
                full(&name("logdir"), logdir_port)
            ),
            bin.clone(),
        ));
    }
    let mut daemons = Vec::new();
    let mut no_cgroup_said = false;
    for (name, body, source_bin) in configs {
        let cfg = dir.path().join(format!("{name}.toml"));
        std::fs::write(&cfg, body).expect("config");
        // A state directory each: one daemon per state directory (src/instance.rs).
        let own = dir.path().join(format!("{name}-state"));
        std::fs::create_dir_all(&own).expect("state directory");
        let pid = own.join("stowage-daemon.pid");
        let state = own.join("stowage-state.json");
        // Each daemon from its own copy of the binary, as each container has its own image
        // layer (RSS counts only the pages a process maps itself, so sharing one file would
        // not change the figures; the copies keep the set-up like production's).
        let bin = dir.path().join(format!("{name}-stowage"));
        std::fs::copy(&source_bin, &bin).expect("copy the stowage binary");
        drop_from_page_cache(&bin);
        let cgroup = match CgroupMemory::create(&name) {
            Ok(c) => Some(c),
            Err(why) => {
                if !no_cgroup_said {
                    eprintln!(
                        "idle: no cgroup of their own for the daemons ({why}); reporting anonymous memory and VmRSS only"
                    );
                    no_cgroup_said = true;
                }
                None
            }
        };
        let exe = match &cgroup {
            Some(c) => c.wrapper(dir.path(), &name, &bin),
            None => bin.clone(),
        };
        let running = common::spawn_binary_with_env(
            &exe,
            &cfg,
            ["daemon"],
            &[
                ("STOWAGE_PID_FILE", pid.as_os_str()),
                ("STOWAGE_STATE_FILE", state.as_os_str()),
                // As the image sets it (Dockerfile): exited threads' stacks are unmapped, no
                // per-thread cache of freed blocks.
                (
                    "GLIBC_TUNABLES",
                    std::ffi::OsStr::new(
                        "glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0",
                    ),
                ),
            ],
        );
        daemons.push(Daemon {
            name,
            running,
            cgroup,
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
            let s = d.sample(t0);
            d.samples.push(s);
        }
        let now = t0.elapsed();
        if now >= until_fire && before_fire.is_empty() {
            before_fire = daemons.iter().map(|d| d.sample(t0)).collect();
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
        let s = d.sample(t0);
        d.samples.push(s);
    }

    let mut report = serde_json::Map::new();
    report.insert("idle_seconds".into(), until_fire.as_secs().into());
    report.insert("after_seconds".into(), after.into());
    report.insert("scheduled_backup_at".into(), fire_at.to_rfc3339().into());
    println!(
        "{:<15} {:>10} {:>10} {:>10} {:>10} {:>8} {:>12} {:>11} {:>11} {:>12}",
        "daemon",
        "cgroup KiB",
        "anon KiB",
        "RSS KiB",
        "wakes/min",
        "threads",
        "2nd backup",
        "anon after",
        "RSS after",
        "cgroup after"
    );
    let kib = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
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
            "{:<15} {:>10} {:>10} {:>10} {:>10.1} {:>8} {:>12} {:>11} {:>11} {:>12}",
            d.name,
            kib(idle_end.cgroup_kib),
            idle_end.anon_kib,
            idle_end.rss_kib,
            per_min,
            idle_end.threads,
            if backups >= 2 { "taken" } else { "MISSING" },
            after_backup.anon_kib,
            after_backup.rss_kib,
            kib(after_backup.cgroup_kib)
        );
        report.insert(
            d.name.clone(),
            serde_json::json!({
                "cgroup": d.cgroup.as_ref().map(|c| if c.v2 { "v2: memory.current - inactive_file" } else { "v1: memory.usage_in_bytes - total_inactive_file" }),
                "cgroup_kib_idle": idle_end.cgroup_kib,
                "cgroup_kib_after_scheduled_backup": after_backup.cgroup_kib,
                "cgroup_kib_last": last.cgroup_kib,
                "rss_kib_after_catch_up": first.rss_kib,
                "rss_kib_idle": idle_end.rss_kib,
                "anonymous_kib_idle": idle_end.anon_kib,
                "threads_idle": idle_end.threads,
                "wakeups_per_minute": (per_min * 10.0).round() / 10.0,
                "wakeups_counted_from_s": settled.secs.round(),
                "backups_taken": backups,
                "rss_kib_after_scheduled_backup": after_backup.rss_kib,
                "anonymous_kib_after_scheduled_backup": after_backup.anon_kib,
                "after_scheduled_backup_at_s": after_backup.secs.round(),
                "rss_kib_last": last.rss_kib,
                "anonymous_kib_last": last.anon_kib,
                // [s, VmRSS KiB, anonymous KiB, threads, switches, cgroup KiB]
                "samples": d.samples.iter().map(|s| serde_json::json!([
                    s.secs.round(), s.rss_kib, s.anon_kib, s.threads, s.switches, s.cgroup_kib
                ])).collect::<Vec<_>>(),
            }),
        );
    }
    // The targets (issue 25), idle after the scheduled backup: anonymous memory at most
    // 2 MiB; the cgroup figure no higher than the "before" binary's, when one ran.
    let mut checks = Vec::new();
    let after_of = |name: &str| {
        report.get(name).map(|r| {
            (
                r["anonymous_kib_after_scheduled_backup"].as_u64(),
                r["cgroup_kib_after_scheduled_backup"].as_u64(),
            )
        })
    };
    for d in daemons.iter().filter(|d| !d.name.ends_with("-before")) {
        let Some((anon, cgroup)) = after_of(&d.name) else {
            continue;
        };
        let anon_ok = anon.is_some_and(|a| a <= 2048);
        println!(
            "{}: anonymous after the backup {} KiB (target <= 2048): {}",
            d.name,
            kib(anon),
            if anon_ok { "met" } else { "NOT MET" }
        );
        checks.push(serde_json::json!({"daemon": d.name, "check": "anonymous_kib_after <= 2048", "pass": anon_ok}));
        if let Some((_, before)) = after_of(&format!("{}-before", d.name))
            && let (Some(now), Some(before)) = (cgroup, before)
        {
            let ok = now <= before;
            println!(
                "{}: cgroup figure after the backup {now} KiB, before {before} KiB: {}",
                d.name,
                if ok { "not higher" } else { "HIGHER" }
            );
            checks.push(serde_json::json!({"daemon": d.name, "check": "cgroup_kib_after <= before's", "now": now, "before": before, "pass": ok}));
        }
    }
    report.insert("targets".into(), checks.into());
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
