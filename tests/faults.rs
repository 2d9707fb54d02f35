//! Fault injection at the exact points a stop or a crash can hit a run, through a proxy in
//! front of a real S3 server (moto) that holds one chosen request:
//! - during the upload: every byte sent, the store's CompleteMultipartUpload not answered;
//! - during retention: the new backup published, an old one half deleted (its manifest gone,
//!   the DeleteObjects of its data held).
//!
//! At each point: the first SIGTERM (the work finishes within the grace), the grace running
//! out, a second SIGTERM, and SIGKILL followed by a restart. After each the test checks what
//! a user at 3 a.m. relies on: `list` shows only complete backups (every object there, sizes
//! and sha256 as the manifest says), every listed backup restores to the original data, no
//! multipart upload is left open, no `.partial` file, lock or unpublished prefix remains
//! (after the next start, where the fault was a crash).
//!
//! Faults during the dump (SIGTERM, second SIGTERM, SIGKILL, pg_dump killed, PostgreSQL
//! stopped), S3 outages, a full disk and catch-up are in `e2e.rs`; the soak in `soak.rs`.

mod common;

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use common::proxy::{FaultProxy, ProxyRequest};
use common::store::{Listing, Stores};
use common::{Job, JobBuilder, PgServer, Running, S3Server, seed_sample_db, text, toml_str};

const BUCKET: &str = "backups";
const PREFIX: &str = "nightly";
/// Enough rows that the compressed dump spans two 5 MiB parts (a multipart upload).
const ROWS: usize = 40_000;
const EVERY_SECOND: &str = "* * * * * *";
/// A schedule that does not fire during a test, and whose period makes a fresh backup
/// fresh: a daemon started with it only recovers, it runs nothing.
const DAILY: &str = "0 3 * * *";
const WAIT: Duration = Duration::from_secs(90);

struct Stack {
    pg: PgServer,
    s3: S3Server,
    proxy: FaultProxy,
    /// The scratch directory and the config, rewritten by each `configure`.
    job: Job,
    local: PathBuf,
    keep: usize,
    /// The database never changes, so every backup must restore to these checksums.
    want: BTreeMap<String, String>,
    restores: Cell<usize>,
}

/// Job "app": the database to "local" and "offsite" (through the proxy), both keeping
/// `keep`, on `schedule` with this shutdown grace.
fn stack_job(
    config: JobBuilder,
    s3: &S3Server,
    proxy: &FaultProxy,
    pg_url: &str,
    keep: usize,
    schedule: &str,
    grace: &str,
) -> JobBuilder {
    let offsite = format!(
        "prefix = {}\npart_size = \"5MiB\"\nretention = {{ keep_last = {keep} }}\n",
        toml_str(PREFIX),
    );
    config
        .top(&format!(
            "shutdown_grace = {}\n\n[log]\nlevel = \"info\"",
            toml_str(grace)
        ))
        .local("local", Some(keep))
        .s3_at("offsite", s3, BUCKET, &proxy.endpoint(), &offsite)
        .schedule(schedule)
        .job("timezone = \"UTC\"\nretries = 0")
        .postgres("db", pg_url)
}

impl Stack {
    async fn new(keep: usize) -> Stack {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", ROWS);
        let want = pg.table_checksums("app");
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let proxy = FaultProxy::start(&s3.endpoint());
        let config = stack_job(
            Job::new("app"),
            &s3,
            &proxy,
            &pg.url("app"),
            keep,
            DAILY,
            "30s",
        );
        let local = config.path("local");
        let job = config.write();
        Stack {
            pg,
            s3,
            proxy,
            job,
            local,
            keep,
            want,
            restores: Cell::new(0),
        }
    }

    fn configure(&self, schedule: &str, grace: &str) {
        stack_job(
            Job::config_in(self.job.dir.path(), "app"),
            &self.s3,
            &self.proxy,
            &self.pg.url("app"),
            self.keep,
            schedule,
            grace,
        )
        .write_as("stowage.toml");
    }

    fn daemon(&self) -> Running {
        self.job.daemon()
    }

    /// A daemon that runs the job at once (every second, with this grace), stopped in its
    /// tracks at the first request `at` picks: that request is held at the proxy.
    fn daemon_held_at(
        &self,
        grace: &str,
        at: impl Fn(&ProxyRequest) -> bool + Send + Sync + 'static,
    ) -> Running {
        self.configure(EVERY_SECOND, grace);
        self.proxy.hold(at);
        let d = self.daemon();
        self.proxy.wait_held(1, WAIT);
        d
    }

    /// SIGKILL: a crash. The held request never reaches the store.
    fn crash(&self, d: Running) {
        d.signal("KILL");
        let _ = d.wait(WAIT);
        self.proxy.refuse_held();
    }

    /// Stop with a second SIGTERM (after the first one's "waiting" line).
    fn stop_twice(&self, mut d: Running) -> Output {
        d.signal("TERM");
        d.wait_for_output("waiting up to 30s for running backups", WAIT);
        let out = stop(d);
        self.proxy.refuse_held();
        out
    }

    fn backups(&self, n: usize) {
        for _ in 0..n {
            self.job.backup();
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

    /// What `stowage list` shows, per destination, after checking that each listed backup
    /// is whole: every object of its manifest present with the recorded size and sha256.
    async fn sound_listing(&self) -> Listing {
        let out = self.job.output(&["list", "app"]);
        assert!(out.status.success(), "list failed:\n{}", text(&out));
        let listed: Listing = common::parse_listing(&String::from_utf8_lossy(&out.stdout))
            .into_iter()
            .collect();
        self.stores().assert_whole(&listed, true).await;
        listed
    }

    async fn debris(&self) -> Vec<String> {
        self.stores().debris().await
    }

    async fn assert_no_debris(&self) {
        let d = self.debris().await;
        assert!(d.is_empty(), "left behind: {d:#?}");
    }

    /// Restore every listed backup from its destination into a fresh database: each equals
    /// the original.
    fn assert_all_restore(&self, listed: &Listing) {
        for (dest, ids) in listed {
            for id in ids {
                let n = self.restores.get();
                self.restores.set(n + 1);
                let db = format!("restored_{n}");
                self.pg.create_db(&db);
                let out = self.job.output(&[
                    "restore",
                    "app",
                    id,
                    "--from",
                    dest,
                    "--to",
                    &self.pg.url(&db),
                ]);
                assert!(
                    out.status.success(),
                    "restore of {id} from {dest} failed:\n{}",
                    text(&out)
                );
                assert_eq!(
                    self.pg.table_checksums(&db),
                    self.want,
                    "{id} from {dest} restored different data"
                );
                self.pg.drop_db(&db);
            }
        }
    }

    /// After a fault is over: exactly `expect` listed, each whole, nothing left behind, and
    /// every listed backup restores to the original data.
    async fn assert_intact(&self, expect: &Listing) {
        assert_eq!(&self.sound_listing().await, expect);
        self.assert_no_debris().await;
        self.assert_all_restore(expect);
    }

    /// Start the daemon with a schedule that runs nothing, wait until it has logged each of
    /// `expect` (what it recovered), stop it; returns its log.
    fn restart_and_recover(&self, expect: &[&str]) -> String {
        self.configure(DAILY, "30s");
        let mut d = self.daemon();
        for e in expect {
            d.wait_for_output(e, WAIT);
        }
        let out = stop(d);
        let log = text(&out);
        assert_eq!(out.status.code(), Some(0), "{log}");
        for e in expect {
            assert!(log.contains(e), "expected {e:?} in:\n{log}");
        }
        log
    }
}

/// SIGTERM and wait for the exit.
fn stop(d: Running) -> Output {
    d.signal("TERM");
    d.wait(WAIT)
}

fn ids(listed: &Listing, dest: &str) -> Vec<String> {
    listed.get(dest).cloned().unwrap_or_default()
}

fn newest(listed: &Listing) -> BTreeSet<String> {
    listed.values().filter_map(|v| v.first().cloned()).collect()
}

/// The upload of a backup's dump has sent every part; the store has yet to complete it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_upload() {
    let st = Stack::new(3).await;
    st.backups(1);
    let before = st.sound_listing().await;
    assert_eq!(ids(&before, "offsite").len(), 1);

    // 1. The first SIGTERM: the upload completes within the grace and is published.
    let mut d = st.daemon_held_at("30s", |r| r.is_complete_multipart());
    d.signal("TERM");
    d.wait_for_output("waiting up to 30s for running backups", WAIT);
    st.proxy.release();
    let out = d.wait(WAIT);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(log.contains("backup success: job=app"), "{log}");
    let after = st.sound_listing().await;
    for dest in ["local", "offsite"] {
        assert_eq!(ids(&after, dest).len(), 2, "{dest}: {after:?}");
        assert!(ids(&after, dest).ends_with(&ids(&before, dest)));
    }
    st.assert_no_debris().await;
    st.assert_all_restore(&after);

    // 2. The grace runs out while the store holds the completion: abandoned, exit 3.
    let d = st.daemon_held_at("2s", |r| r.is_complete_multipart());
    let out = stop(d);
    st.proxy.refuse_held();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("shutdown grace of 2s is over"), "{log}");
    assert!(log.contains("backup cancelled: job=app"), "{log}");
    assert_eq!(st.sound_listing().await, after, "{log}");
    st.assert_no_debris().await;

    // 3. A second SIGTERM abandons it at once.
    let d = st.daemon_held_at("30s", |r| r.is_complete_multipart());
    let out = st.stop_twice(d);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("SIGTERM again: abandoning"), "{log}");
    assert!(log.contains("backup cancelled: job=app"), "{log}");
    assert_eq!(st.sound_listing().await, after, "{log}");
    st.assert_no_debris().await;
    st.assert_all_restore(&after);
}

/// kill -9 with every part sent and the completion pending: the crash leaves an open
/// multipart upload, a local dump without a manifest and a lock, none of it listed; the
/// next start removes all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_upload_then_restart() {
    let st = Stack::new(3).await;
    st.backups(1);
    let before = st.sound_listing().await;

    let d = st.daemon_held_at("30s", |r| r.is_complete_multipart());
    st.crash(d);

    assert_eq!(
        st.sound_listing().await,
        before,
        "a crashed run is never listed"
    );
    let debris = st.debris().await;
    for what in [
        "local unpublished",
        "local lock",
        "s3 lock",
        "open multipart",
    ] {
        assert!(
            debris.iter().any(|d| d.contains(what)),
            "expected {what} after the crash: {debris:#?}"
        );
    }
    st.assert_all_restore(&before);

    st.restart_and_recover(&[
        "recovered leftovers of interrupted runs",
        "1 open upload(s)",
    ]);
    st.assert_intact(&before).await;
}

/// Retention removes the oldest backup after a new one is published: its manifest first,
/// then its data, whose DeleteObjects the proxy holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_retention() {
    let st = Stack::new(2).await;
    st.backups(2);
    let before = st.sound_listing().await;
    let oldest = ids(&before, "offsite")[1].clone();

    // 1. The first SIGTERM: retention finishes within the grace.
    let target = format!("app/{oldest}/db.");
    let mut d = st.daemon_held_at("30s", move |r| r.deletes(&target));
    d.signal("TERM");
    d.wait_for_output("waiting up to 30s for running backups", WAIT);
    st.proxy.release();
    let out = d.wait(WAIT);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("retention on offsite (keep_last=2): kept 2, removed 1"),
        "{log}"
    );
    let after = st.sound_listing().await;
    for dest in ["local", "offsite"] {
        let now = ids(&after, dest);
        assert_eq!(now.len(), 2, "{dest}: {after:?}");
        assert_eq!(
            now[1],
            ids(&before, dest)[0],
            "{dest}: the newer one is kept"
        );
    }
    st.assert_no_debris().await;
    st.assert_all_restore(&after);

    // 2. A second SIGTERM interrupts retention: the new backup stays published, the old one
    //    is half deleted (no longer listed), exit 3; the next start finishes the job.
    let oldest = ids(&after, "offsite")[1].clone();
    let target = format!("app/{oldest}/db.");
    let d = st.daemon_held_at("30s", move |r| r.deletes(&target));
    let out = st.stop_twice(d);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("backup success: job=app"), "{log}");
    assert!(
        log.contains("retention on offsite interrupted by the stop"),
        "{log}"
    );
    let interrupted = st.sound_listing().await;
    assert_eq!(ids(&interrupted, "offsite").len(), 2, "{interrupted:?}");
    assert!(!ids(&interrupted, "offsite").contains(&oldest));
    assert_eq!(newest(&interrupted).len(), 1, "the new backup is on both");
    assert_eq!(
        st.debris().await,
        vec![format!("s3 unpublished {oldest}")],
        "only the half-deleted backup is left"
    );
    st.assert_all_restore(&interrupted);

    st.restart_and_recover(&["recovered leftovers of interrupted runs", &oldest]);
    assert_eq!(st.sound_listing().await, interrupted);
    st.assert_no_debris().await;
}

/// kill -9 in the middle of retention, then a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_retention_then_restart() {
    let st = Stack::new(2).await;
    st.backups(2);
    let before = st.sound_listing().await;
    let oldest = ids(&before, "offsite")[1].clone();

    let target = format!("app/{oldest}/db.");
    let d = st.daemon_held_at("30s", move |r| r.deletes(&target));
    st.crash(d);

    let crashed = st.sound_listing().await;
    assert_eq!(ids(&crashed, "offsite").len(), 2, "{crashed:?}");
    assert!(!ids(&crashed, "offsite").contains(&oldest));
    assert_eq!(newest(&crashed).len(), 1, "the new backup is on both");
    let debris = st.debris().await;
    assert!(
        debris.contains(&format!("s3 unpublished {oldest}")),
        "{debris:#?}"
    );
    st.assert_all_restore(&crashed);

    st.restart_and_recover(&["recovered leftovers of interrupted runs", &oldest]);
    st.assert_intact(&crashed).await;
}

/// A store that accepts requests and never answers them must not hold a stop: past the
/// grace the run is abandoned, and the daemon exits within its cleanup budget even though
/// the cleanup itself cannot reach the store; the next start removes what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_does_not_hold_the_stop() {
    let st = Stack::new(3).await;
    st.backups(1);
    let before = st.sound_listing().await;

    // From the first part on, every request hangs: the upload, its abort, the cleanup.
    let tripped = std::sync::atomic::AtomicBool::new(false);
    let d = st.daemon_held_at("1s", move |r| {
        use std::sync::atomic::Ordering::SeqCst;
        if r.query.contains("partNumber=") {
            tripped.store(true, SeqCst);
        }
        tripped.load(SeqCst)
    });
    let out = stop(d);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(
        log.contains("did not finish their cleanup within 10s"),
        "{log}"
    );
    st.proxy.refuse_held();
    assert_eq!(st.sound_listing().await, before);

    st.restart_and_recover(&["recovered leftovers of interrupted runs"]);
    st.assert_intact(&before).await;
}

/// Transient 5xx answers are retried per request (each part of the upload on its own): a
/// run through a store failing a third of its requests still publishes a backup that
/// restores. A store that keeps failing fails that destination with one clear line, the
/// local copy is still published, and nothing is left on the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_retried_and_an_outage_fails_cleanly() {
    let st = Stack::new(5).await;
    // The first two attempts of every part and of the completion fail; a fifth of the
    // other requests fail at random.
    let attempts = std::sync::Mutex::new(std::collections::HashMap::<String, usize>::new());
    st.proxy.fail_when(Some(Box::new(move |r| {
        if !r.query.contains("partNumber=") && !r.is_complete_multipart() {
            return false;
        }
        let mut seen = attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(format!("{}?{}", r.path, r.query)).or_default();
        *n += 1;
        *n <= 2
    })));
    st.proxy.fail_randomly(200, 42);
    st.backups(1);
    st.proxy.fail_when(None);
    st.proxy.fail_randomly(0, 1);
    let log = st.proxy.requests();
    let parts: BTreeSet<&str> = log
        .iter()
        .filter(|l| l.request.query.contains("partNumber="))
        .map(|l| l.request.query.as_str())
        .collect();
    assert!(parts.len() >= 2, "not a multipart upload: {parts:?}");
    for p in &parts {
        let tries: Vec<bool> = log
            .iter()
            .filter(|l| l.request.query == *p)
            .map(|l| l.injected)
            .collect();
        // The two injected failures, then (after any random ones) success, within the
        // SDK's 5 attempts.
        assert!(
            tries.len() <= 5 && tries.starts_with(&[true, true]) && tries.last() == Some(&false),
            "part {p}: attempts (injected?) {tries:?}"
        );
    }
    let before = st.sound_listing().await;
    assert_eq!(ids(&before, "offsite").len(), 1);
    st.assert_all_restore(&before);

    st.proxy.set_outage(true);
    let out = st.job.output(&["run", "app"]);
    st.proxy.set_outage(false);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("destination offsite failed: checking bucket: ")
            && log.contains("answered HTTP 503, and again on retries")
            && log.contains("and again on retries; the store is down or overloaded"),
        "{log}"
    );
    assert!(log.contains("backup partial: job=app"), "{log}");
    let after = st.sound_listing().await;
    assert_eq!(ids(&after, "offsite"), ids(&before, "offsite"));
    assert_eq!(ids(&after, "local").len(), 2);
    st.assert_no_debris().await;
}
