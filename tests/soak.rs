//! Soak: the daemon runs a database + files job every two seconds against real PostgreSQL,
//! a local volume and moto behind a fault proxy, while the test
//! - fails 3 % of S3 requests at random with 503 SlowDown / 500 InternalError,
//! - puts S3 into short outages, kills pg_dump mid-stream,
//! - and, in the second half, kills the daemon (SIGKILL at a random moment) or stops it
//!   (SIGTERM) and starts it again,
//!
//! with the database and the files changing all the time. Every few runs it freezes the
//! daemon (SIGSTOP) and checks that every listed backup is whole and that no backup ever
//! seen published has gone except by retention (keep_last: a backup may only go once that
//! many newer ones are listed). At the end, with the faults off, the next start's recovery
//! and a clean run must leave no debris and no unreferenced blob, and backups restore: the
//! database with every table equal and the growing table a gap-free prefix, the files
//! equal to their index.
//!
//! `STOWAGE_SOAK_RUNS` (default 40 here; `bench/soak.sh` runs 300+), `STOWAGE_SOAK_SEED`,
//! and `STOWAGE_SOAK_OUT` (a JSON file for the RSS curve and the counts).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::proxy::FaultProxy;
use common::store::{Listing, Stores};
use common::{
    Job, JobBuilder, PgServer, PsqlSession, Rng, Running, S3Server, seed_sample_db, text, toml_str,
};

const BUCKET: &str = "backups";
const PREFIX: &str = "soak";
const KEEP_LOCAL: usize = 4;
const KEEP_S3: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Outage,
    KillPgDump,
    KillDaemon,
    StopDaemon,
}

struct Soak {
    pg: PgServer,
    s3: S3Server,
    proxy: FaultProxy,
    /// The scratch directory, and the config of the checks and restores: S3 reached directly.
    job: Job,
    /// The daemon's config: the same job, S3 through the fault proxy.
    proxied: PathBuf,
    local: PathBuf,
    files: PathBuf,
    rng: Rng,
    db: PsqlSession,
    gen_rows: u64,
    file_seq: u64,
    daemon: Option<Running>,
    incarnation: usize,
    parsed: usize,
    started: Instant,
    runs: usize,
    outcomes: BTreeMap<String, usize>,
    events: BTreeMap<String, usize>,
    seen: BTreeMap<String, BTreeSet<String>>,
    checks: usize,
    /// (seconds since start, daemon incarnation, runs so far, RSS KiB)
    rss: Vec<(f64, usize, usize, u64)>,
    last_sample: Instant,
    /// Every table but `gen` as seeded: never written during the soak.
    static_tables: BTreeMap<String, String>,
    /// Every ended incarnation's output, for the lines a failure is about.
    history: String,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Job "app" every two seconds: the database and the files tree to "local" and "offsite",
/// whose bucket is reached at `endpoint` (the S3 server itself, or a proxy in front of it).
fn soak_job(config: JobBuilder, s3: &S3Server, endpoint: &str, pg_url: &str) -> JobBuilder {
    let offsite = format!(
        "prefix = {}\npart_size = \"5MiB\"\nretention = {{ keep_last = {KEEP_S3} }}\n",
        toml_str(PREFIX),
    );
    let files = config.path("uploads");
    config
        .top("shutdown_grace = \"5s\"\n\n[log]\nlevel = \"info\"")
        .local("local", Some(KEEP_LOCAL))
        .s3_at("offsite", s3, BUCKET, endpoint, &offsite)
        .schedule("*/2 * * * * *")
        .job("timezone = \"UTC\"\nretries = 1\nretry_delay = \"1s\"")
        .postgres("db", pg_url)
        .files("uploads", &files, "")
}

fn without_gen(mut t: BTreeMap<String, String>) -> BTreeMap<String, String> {
    t.retain(|k, _| !k.ends_with(".gen") && k != "gen");
    t
}

impl Soak {
    async fn new(seed: u64) -> Soak {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", 2_000);
        let static_tables = without_gen(pg.table_checksums("app"));
        pg.psql("app", "create table gen (n bigint primary key)");
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let proxy = FaultProxy::start(&s3.endpoint());
        let config = Job::new("app");
        let local = config.path("local");
        let files = config.path("uploads");
        let mut rng = Rng::new(seed);
        for i in 0..30 {
            let size = rng.range(512, 16 * 1024);
            common::write_file(&files, &format!("f{i:04}.bin"), &rng.bytes(size));
        }
        // The daemon goes through the fault proxy; the checks read the store directly.
        let proxied = soak_job(
            Job::config_in(config.dir(), "app"),
            &s3,
            &proxy.endpoint(),
            &pg.url("app"),
        )
        .write_as("proxied.toml");
        let job = soak_job(config, &s3, &s3.endpoint(), &pg.url("app")).write();
        let db = pg.session("app");
        Soak {
            pg,
            s3,
            proxy,
            job,
            proxied,
            local,
            files,
            rng,
            db,
            gen_rows: 0,
            file_seq: 1000,
            daemon: None,
            incarnation: 0,
            parsed: 0,
            started: Instant::now(),
            runs: 0,
            outcomes: BTreeMap::new(),
            events: BTreeMap::new(),
            seen: BTreeMap::new(),
            checks: 0,
            rss: Vec::new(),
            last_sample: Instant::now(),
            static_tables,
            history: String::new(),
        }
    }

    fn stores(&self) -> Stores<'_> {
        Stores {
            local: &self.local,
            s3: &self.s3,
            bucket: BUCKET,
            prefix: PREFIX,
            job: "app",
        }
    }

    fn start_daemon(&mut self) {
        assert!(self.daemon.is_none());
        // The job's pid and state files, with the proxied config.
        let envs = self.job.envs();
        let envs: Vec<(&str, &OsStr)> = envs.iter().map(|(k, v)| (*k, v.as_os_str())).collect();
        self.daemon = Some(common::spawn_stowage_with_env(
            &self.proxied,
            ["daemon"],
            &envs,
        ));
        self.incarnation += 1;
        self.parsed = 0;
    }

    fn daemon_pid(&self) -> u32 {
        self.daemon.as_ref().expect("daemon running").pid()
    }

    /// Read the daemon's new summary lines: one per finished run.
    fn parse_output(&mut self) {
        let Some(d) = &self.daemon else { return };
        let out = d.stdout_so_far();
        let new = &out[self.parsed.min(out.len())..];
        // Only whole lines.
        let Some(end) = new.rfind('\n') else { return };
        let lines = new[..end].to_string();
        self.count_summaries(&lines);
        self.parsed += end + 1;
    }

    fn sample(&mut self) {
        if self.last_sample.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last_sample = Instant::now();
        if let Some(kib) = self.daemon.as_ref().and_then(|d| rss_kib(d.pid())) {
            self.rss.push((
                self.started.elapsed().as_secs_f64(),
                self.incarnation,
                self.runs,
                kib,
            ));
        }
    }

    /// The application keeps writing: a row every tick, files added, replaced, removed.
    fn mutate(&mut self) {
        self.gen_rows += 1;
        self.db
            .exec(&format!("insert into gen values ({})", self.gen_rows));
        if !self.gen_rows.is_multiple_of(4) {
            return;
        }
        self.file_seq += 1;
        let size = self.rng.range(512, 16 * 1024);
        let data = self.rng.bytes(size);
        // As an app stores an upload: write aside, rename into place.
        let tmp = self.job.path("incoming.tmp");
        std::fs::write(&tmp, &data).expect("write upload");
        let names: Vec<String> = common::list_tree(&self.files);
        let replace = self.rng.below(2) == 0 && !names.is_empty();
        let target = if replace {
            names[self.rng.below(names.len() as u64) as usize].clone()
        } else {
            format!("f{:04}.bin", self.file_seq)
        };
        std::fs::rename(&tmp, self.files.join(&target)).expect("rename upload");
        if names.len() > 25 {
            let victim = &names[self.rng.below(names.len() as u64) as usize];
            if *victim != target {
                let _ = std::fs::remove_file(self.files.join(victim));
            }
        }
    }

    fn tick(&mut self) {
        self.parse_output();
        self.sample();
        self.mutate();
    }

    /// Freeze the daemon (if it runs), then check every listed backup and the
    /// nothing-lost-but-by-retention rule.
    async fn check(&mut self) {
        let frozen = self.daemon.as_ref().map(|d| d.pid());
        if let Some(pid) = frozen {
            signal(pid, "STOP");
        }
        let out = self.job.output(&["list", "app"]);
        assert!(out.status.success(), "list failed:\n{}", text(&out));
        let listed: Listing = common::parse_listing(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .collect();
        self.stores().assert_whole(&listed, false).await;
        if let Some(pid) = frozen {
            signal(pid, "CONT");
        }
        self.assert_nothing_lost(&listed);
        self.checks += 1;
    }

    fn assert_nothing_lost(&mut self, listed: &Listing) {
        for (dest, ids) in listed {
            self.seen
                .entry(dest.clone())
                .or_default()
                .extend(ids.iter().cloned());
        }
        for (dest, seen) in &self.seen {
            let keep = if dest == "local" { KEEP_LOCAL } else { KEEP_S3 };
            let now = listed.get(dest).cloned().unwrap_or_default();
            for id in seen.iter().filter(|id| !now.contains(id)) {
                let newer = now.iter().filter(|n| n.as_str() > id.as_str()).count();
                assert!(
                    newer >= keep,
                    "{dest}: published backup {id} is gone with only {newer} newer backup(s) listed ({now:?}); retention keeps {keep}\n{}",
                    self.log_tail()
                );
            }
            assert!(
                !seen.is_empty() || now.is_empty(),
                "{dest}: nothing published"
            );
        }
    }

    /// The daemons' log lines that name any of `ids` (with the incarnation markers).
    fn lines_about(&self, ids: &[&str]) -> String {
        self.history
            .lines()
            .filter(|l| l.starts_with("=== ") || ids.iter().any(|id| l.contains(id)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn log_tail(&self) -> String {
        let out = self
            .daemon
            .as_ref()
            .map(|d| d.output_so_far())
            .unwrap_or_default();
        let start = out.len().saturating_sub(6000);
        out[start..].to_string()
    }

    /// Stop the daemon with `sig`; a SIGTERM must end in exit 0 (finished) or 3 (cut short).
    fn stop_daemon(&mut self, sig: &str) {
        self.parse_output();
        let d = self.daemon.take().expect("daemon running");
        d.signal(sig);
        let out = d.wait(Duration::from_secs(60));
        if sig == "TERM" {
            let code = out.status.code();
            assert!(
                matches!(code, Some(0) | Some(3)),
                "daemon exited {code:?} on SIGTERM:\n{}",
                text(&out)
            );
        }
        // Summary lines written before the exit.
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        self.keep_log(&text(&out));
        let offset = self.parsed;
        self.daemon = None;
        self.count_summaries(&log[offset.min(log.len())..]);
    }

    /// Count the runs whose summary lines are in `lines`, and what each published where.
    fn count_summaries(&mut self, lines: &str) {
        for (outcome, id, dests) in lines.lines().filter_map(summary) {
            self.runs += 1;
            *self.outcomes.entry(outcome).or_default() += 1;
            for d in dests {
                self.seen.entry(d).or_default().insert(id.clone());
            }
        }
    }

    /// Every incarnation's output, kept for [`Soak::lines_about`] and appended to
    /// `$STOWAGE_SOAK_LOG` when set.
    fn keep_log(&mut self, output: &str) {
        self.history.push_str(&format!(
            "=== daemon start {} ===\n{output}\n",
            self.incarnation
        ));
        if let Ok(path) = std::env::var("STOWAGE_SOAK_LOG") {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
            {
                let _ = writeln!(f, "=== daemon start {} ===\n{output}", self.incarnation);
            }
        }
    }

    fn kill_pg_dump(&mut self) -> bool {
        let pid = self.daemon_pid();
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            let killed = Command::new("pkill")
                // The dump itself, not the `pg_dump --version` before it.
                .args([
                    "-KILL",
                    "-P",
                    &pid.to_string(),
                    "-f",
                    "pg_dump .*--format=custom",
                ])
                .status()
                .is_ok_and(|s| s.success());
            if killed {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn bump(&mut self, what: &str) {
        *self.events.entry(what.to_string()).or_default() += 1;
    }
}

/// `backup success: job=app id=ID … destinations=local,offsite …` → (outcome, id, destinations).
fn summary(line: &str) -> Option<(String, String, Vec<String>)> {
    let (_, rest) = line.split_once("backup ")?;
    let (outcome, rest) = rest.split_once(": job=app id=")?;
    let id = rest.split_whitespace().next()?.to_string();
    let dests = rest
        .split_once("destinations=")?
        .1
        .split_whitespace()
        .next()?;
    let dests = match dests {
        "none" => Vec::new(),
        d => d.split(',').map(str::to_string).collect(),
    };
    Some((outcome.to_string(), id, dests))
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_injected_s3_errors_and_kills() {
    let target: usize = env_or("STOWAGE_SOAK_RUNS", 40);
    let seed: u64 = env_or("STOWAGE_SOAK_SEED", 20261201);
    eprintln!("soak: {target} runs, seed {seed}");
    let mut s = Soak::new(seed).await;
    s.proxy.fail_randomly(30, seed);
    s.start_daemon();

    let calm = target / 2;
    let deadline = Instant::now() + Duration::from_secs(target as u64 * 8 + 180);
    let mut next_event = s.rng.range(3, 7);
    let mut next_check = 5;
    let mut outage_until: Option<Instant> = None;
    while s.runs < target {
        assert!(
            Instant::now() < deadline,
            "soak stalled at {} runs: {:?}\n{}",
            s.runs,
            s.outcomes,
            s.log_tail()
        );
        s.tick();
        if outage_until.is_some_and(|t| Instant::now() >= t) {
            s.proxy.set_outage(false);
            outage_until = None;
        }
        if s.runs >= next_event && outage_until.is_none() {
            let kinds: &[Event] = if s.runs < calm {
                &[Event::Outage, Event::KillPgDump]
            } else {
                &[
                    Event::Outage,
                    Event::KillPgDump,
                    Event::KillDaemon,
                    Event::StopDaemon,
                ]
            };
            let kind = kinds[s.rng.below(kinds.len() as u64) as usize];
            match kind {
                Event::Outage => {
                    s.proxy.set_outage(true);
                    // Short ones are ridden out by the per-request retries, long ones fail
                    // runs (and their retries) until the store is back.
                    let ms = if s.rng.below(2) == 0 {
                        s.rng.range(1_000, 4_000)
                    } else {
                        s.rng.range(15_000, 30_000)
                    };
                    outage_until = Some(Instant::now() + Duration::from_millis(ms as u64));
                    s.bump("s3 outage");
                }
                Event::KillPgDump => {
                    if s.kill_pg_dump() {
                        s.bump("pg_dump killed");
                    }
                }
                Event::KillDaemon | Event::StopDaemon => {
                    // Anywhere in a run: dump, upload, publish, retention, sweep.
                    std::thread::sleep(Duration::from_millis(s.rng.range(0, 1500) as u64));
                    let sig = if kind == Event::KillDaemon {
                        "KILL"
                    } else {
                        "TERM"
                    };
                    s.stop_daemon(sig);
                    s.bump(if sig == "KILL" {
                        "daemon SIGKILL + restart"
                    } else {
                        "daemon SIGTERM + restart"
                    });
                    s.check().await;
                    s.start_daemon();
                }
            }
            next_event = s.runs + s.rng.range(2, 6);
        }
        if s.runs >= next_check {
            s.check().await;
            next_check = s.runs + 10;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Faults off: stop, let the next start recover, and two clean runs prune and sweep.
    s.stop_daemon("TERM");
    s.proxy.fail_randomly(0, 1);
    s.proxy.set_outage(false);
    s.check().await;
    let before_final = s.outcomes.get("success").copied().unwrap_or(0);
    s.start_daemon();
    let settle = Instant::now() + Duration::from_secs(120);
    while s.outcomes.get("success").copied().unwrap_or(0) < before_final + 2 {
        assert!(
            Instant::now() < settle,
            "no clean run after the faults:\n{}",
            s.log_tail()
        );
        s.parse_output();
        std::thread::sleep(Duration::from_millis(100));
    }
    s.stop_daemon("TERM");
    s.check().await;

    let out = s.job.output(&["list", "app"]);
    let listed: Listing = common::parse_listing(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .collect();
    assert_eq!(
        listed.get("local").map(Vec::len),
        Some(KEEP_LOCAL),
        "{listed:?}"
    );
    assert_eq!(
        listed.get("offsite").map(Vec::len),
        Some(KEEP_S3),
        "{listed:?}"
    );
    let referenced = s.stores().assert_whole(&listed, true).await;
    let debris = s.stores().debris().await;
    let ids: Vec<&str> = debris.iter().filter_map(|d| d.rsplit(' ').next()).collect();
    assert!(
        debris.is_empty(),
        "left behind after recovery: {debris:#?}\nthe daemons' lines about them:\n{}",
        s.lines_about(&ids)
    );
    for dest in ["local", "offsite"] {
        let present = s.stores().blobs(dest).await;
        let refs: BTreeSet<String> = referenced
            .get(dest)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let garbage: Vec<&String> = present.difference(&refs).collect();
        assert!(
            garbage.is_empty(),
            "{dest}: unreferenced blobs after a sweep: {garbage:?}"
        );
    }

    // Restores: the newest and the oldest kept backup from each destination.
    for (dest, ids) in &listed {
        for id in [ids.first(), ids.last()].into_iter().flatten() {
            restore_and_compare(&s, dest, id).await;
        }
    }

    eprintln!("{}", summarize(&s, false));
    if let Ok(path) = std::env::var("STOWAGE_SOAK_OUT") {
        std::fs::write(&path, summarize(&s, true)).expect("write STOWAGE_SOAK_OUT");
    }
    assert!(
        s.outcomes.get("success").copied().unwrap_or(0) > target / 3,
        "{:?}",
        s.outcomes
    );
}

async fn restore_and_compare(s: &Soak, dest: &str, id: &str) {
    let n = format!(
        "r_{}_{}",
        dest,
        id.replace(['.', 'T', 'Z'], "").to_lowercase()
    );
    s.pg.create_db(&n);
    let files_to = s.job.path(format!("restored-{n}"));
    let out = s.job.output(&[
        "restore",
        "app",
        id,
        "--from",
        dest,
        "--to",
        &s.pg.url(&n),
        "--files-to",
        &files_to.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "restore {id} from {dest}:\n{}",
        text(&out)
    );
    assert_eq!(
        without_gen(s.pg.table_checksums(&n)),
        s.static_tables,
        "{id} from {dest}: tables differ"
    );
    let counts =
        s.pg.psql(&n, "select count(*) || ' ' || coalesce(max(n), 0) from gen");
    let mut it = counts.split_whitespace();
    let (count, max): (u64, u64) = (
        it.next().and_then(|v| v.parse().ok()).expect("count"),
        it.next().and_then(|v| v.parse().ok()).expect("max"),
    );
    assert_eq!(
        count, max,
        "{id} from {dest}: gen has gaps ({count} rows, max {max})"
    );
    // The files equal their index.
    let manifest: serde_json::Value = serde_json::from_slice(
        &s.stores()
            .read(dest, &format!("app/{id}/manifest.json"))
            .await,
    )
    .expect("manifest");
    let entry = manifest["sources"]
        .as_array()
        .expect("sources")
        .iter()
        .find(|e| e["name"] == "uploads")
        .expect("uploads source");
    // JSON Lines: a header, then one entry per line.
    let index = common::zstd_decompress(
        &s.stores()
            .read(dest, entry["key"].as_str().expect("key"))
            .await,
    );
    let want: BTreeMap<String, String> = index
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .skip(1)
        .map(|l| {
            let f: serde_json::Value = serde_json::from_slice(l).expect("an index line");
            (
                f["path"].as_str().expect("path").to_string(),
                f["sha256"].as_str().expect("sha").to_string(),
            )
        })
        .collect();
    let got: BTreeMap<String, String> = common::read_tree(&files_to)
        .into_iter()
        .map(|(p, data)| (p, common::sha256_hex(&data)))
        .collect();
    assert_eq!(got, want, "{id} from {dest}: files differ from the index");
    s.pg.drop_db(&n);
}

/// RSS of one daemon process over its runs: the median per 10 runs, and the least-squares
/// slope after the first 10 (warm-up: allocator arenas, the first S3 client, caches).
fn curve(samples: &[&(f64, usize, usize, u64)]) -> serde_json::Value {
    let mut buckets: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for s in samples {
        buckets.entry(s.2 / 10 * 10).or_default().push(s.3);
    }
    let medians: Vec<serde_json::Value> = buckets
        .iter_mut()
        .map(|(runs, v)| {
            v.sort_unstable();
            serde_json::json!([runs, v[v.len() / 2]])
        })
        .collect();
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.2 >= 10)
        .map(|s| (s.2 as f64, s.3 as f64))
        .collect();
    let n = pts.len() as f64;
    let slope = if pts.len() >= 2 {
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let var: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        if var > 0.0 {
            pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / var * 100.0
        } else {
            0.0
        }
    } else {
        0.0
    };
    serde_json::json!({
        "runs": samples.last().map_or(0, |s| s.2),
        "median_kib_per_10_runs": medians,
        "slope_kib_per_100_runs": (slope * 10.0).round() / 10.0,
    })
}

/// The counts and the RSS curve, as JSON.
fn summarize(s: &Soak, with_samples: bool) -> String {
    let first: Vec<&(f64, usize, usize, u64)> = s.rss.iter().filter(|r| r.1 == 1).collect();
    let kib: Vec<u64> = s.rss.iter().map(|r| r.3).collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "runs": s.runs,
        "outcomes": s.outcomes,
        "events": s.events,
        "checks": s.checks,
        "daemon_starts": s.incarnation,
        "requests": s.proxy.requests().len(),
        "injected_s3_errors": s.proxy.injected(),
        "gen_rows_written": s.gen_rows,
        "seconds": s.started.elapsed().as_secs_f64(),
        "rss_kib": {
            "min": kib.iter().min(),
            "max": kib.iter().max(),
            "first_incarnation": curve(&first),
        },
        "rss_samples": if with_samples {
            s.rss.iter().map(|r| serde_json::json!([
                (r.0 * 10.0).round() / 10.0, r.1, r.2, r.3
            ])).collect::<Vec<_>>()
        } else {
            Vec::new()
        },
    }))
    .expect("json")
}
