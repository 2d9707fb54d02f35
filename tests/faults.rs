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
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::{PgServer, Running, S3Server, run_stowage, seed_sample_db};

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
    dir: tempfile::TempDir,
    config: PathBuf,
    local: PathBuf,
    keep: usize,
    /// The database never changes, so every backup must restore to these checksums.
    want: BTreeMap<String, String>,
    restores: Cell<usize>,
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Stack {
    async fn new(keep: usize) -> Stack {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", ROWS);
        let want = pg.table_checksums("app");
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let proxy = FaultProxy::start(&s3.endpoint());
        let dir = tempfile::tempdir().expect("tempdir");
        let local = dir.path().join("local");
        let st = Stack {
            config: dir.path().join("stowage.toml"),
            pg,
            s3,
            proxy,
            dir,
            local,
            keep,
            want,
            restores: Cell::new(0),
        };
        st.configure(DAILY, "30s");
        st
    }

    fn configure(&self, schedule: &str, grace: &str) {
        let secret = self.dir.path().join("s3_secret");
        std::fs::write(&secret, self.s3.secret_key()).expect("secret");
        let body = format!(
            r#"
shutdown_grace = "{grace}"

[log]
level = "info"

[destinations.local]
type = "local"
path = "{local}"
retention = {{ keep_last = {keep} }}

[destinations.offsite]
type = "s3"
bucket = "{BUCKET}"
prefix = "{PREFIX}"
endpoint = "{endpoint}"
force_path_style = true
access_key_id = "{key}"
secret_access_key_file = "{secret}"
part_size = "5MiB"
retention = {{ keep_last = {keep} }}

[jobs.app]
schedule = "{schedule}"
timezone = "UTC"
retries = 0
destinations = ["local", "offsite"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "{pg}"
"#,
            local = self.local.display(),
            keep = self.keep,
            endpoint = self.proxy.endpoint(),
            key = self.s3.access_key(),
            secret = secret.display(),
            pg = self.pg.url("app"),
        );
        std::fs::write(&self.config, body).expect("config");
    }

    fn daemon(&self) -> Running {
        let pid = self.dir.path().join("stowage.pid");
        let state = self.dir.path().join("state.json");
        common::spawn_stowage_with_env(
            &self.config,
            ["daemon"],
            &[
                ("STOWAGE_PID_FILE", pid.as_os_str()),
                ("STOWAGE_STATE_FILE", state.as_os_str()),
            ],
        )
    }

    fn backups(&self, n: usize) {
        for _ in 0..n {
            let out = run_stowage(&self.config, ["run", "app"]);
            assert!(out.status.success(), "run failed:\n{}", text(&out));
        }
    }

    /// What `stowage list` shows, per destination, after checking that each listed backup
    /// is whole: every object of its manifest present with the recorded size and sha256.
    async fn sound_listing(&self) -> BTreeMap<String, Vec<String>> {
        let out = run_stowage(&self.config, ["list", "app"]);
        assert!(out.status.success(), "list failed:\n{}", text(&out));
        let listed: BTreeMap<String, Vec<String>> =
            common::parse_listing(&String::from_utf8_lossy(&out.stdout))
                .into_iter()
                .collect();
        for (dest, ids) in &listed {
            for id in ids {
                let manifest = self.read(dest, &format!("app/{id}/manifest.json")).await;
                let m: serde_json::Value = serde_json::from_slice(&manifest)
                    .unwrap_or_else(|e| panic!("{dest}: manifest of {id}: {e}"));
                let sources = m["sources"].as_array().expect("sources");
                assert!(!sources.is_empty(), "{dest}: {id} has no sources");
                for s in sources {
                    let key = s["key"].as_str().expect("key");
                    let body = self.read(dest, key).await;
                    assert_eq!(
                        body.len() as u64,
                        s["size"].as_u64().expect("size"),
                        "{dest}: {key} is not the size its manifest records"
                    );
                    assert_eq!(
                        common::sha256_hex(&body),
                        s["sha256"].as_str().expect("sha256"),
                        "{dest}: {key} does not hash to its manifest's sha256"
                    );
                }
            }
        }
        listed
    }

    async fn read(&self, dest: &str, key: &str) -> Vec<u8> {
        match dest {
            "local" => std::fs::read(self.local.join(key))
                .unwrap_or_else(|e| panic!("local: {key} is listed but unreadable: {e}")),
            "offsite" => self.s3.get(BUCKET, &format!("{PREFIX}/{key}")).await,
            other => panic!("unknown destination {other}"),
        }
    }

    /// Backup prefixes on each destination that have no manifest (a failed or crashed run's
    /// debris), and whatever else a run must not leave: `.partial` files, locks, open
    /// multipart uploads.
    async fn debris(&self) -> Vec<String> {
        let mut out = Vec::new();
        let job = self.local.join("app");
        for e in std::fs::read_dir(&job).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "locks" {
                for l in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    out.push(format!("local lock {}", l.path().display()));
                }
            } else if !e.path().join("manifest.json").exists() {
                out.push(format!("local unpublished {name}"));
            }
        }
        for p in files_under(&self.local) {
            if p.to_string_lossy().ends_with(".partial") {
                out.push(format!("local partial {}", p.display()));
            }
        }
        let keys = self.s3.list_keys(BUCKET, &format!("{PREFIX}/app/")).await;
        let mut prefixes: BTreeMap<String, bool> = BTreeMap::new();
        for k in &keys {
            let rest = &k[format!("{PREFIX}/app/").len()..];
            let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
            if first == "locks" {
                out.push(format!("s3 lock {k}"));
                continue;
            }
            *prefixes.entry(first.to_string()).or_default() |= tail == "manifest.json";
        }
        for (p, has_manifest) in prefixes {
            if !has_manifest {
                out.push(format!("s3 unpublished {p}"));
            }
        }
        let open = self.s3.open_multipart_uploads(BUCKET).await;
        if open > 0 {
            out.push(format!("s3 {open} open multipart upload(s)"));
        }
        out
    }

    async fn assert_no_debris(&self) {
        let d = self.debris().await;
        assert!(d.is_empty(), "left behind: {d:#?}");
    }

    /// Restore every listed backup from its destination into a fresh database: each equals
    /// the original.
    fn assert_all_restore(&self, listed: &BTreeMap<String, Vec<String>>) {
        for (dest, ids) in listed {
            for id in ids {
                let n = self.restores.get();
                self.restores.set(n + 1);
                let db = format!("restored_{n}");
                self.pg.create_db(&db);
                let out = run_stowage(
                    &self.config,
                    [
                        "restore",
                        "app",
                        id,
                        "--from",
                        dest,
                        "--to",
                        &self.pg.url(&db),
                    ],
                );
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

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

/// SIGTERM and wait for the exit.
fn stop(d: Running) -> Output {
    d.signal("TERM");
    d.wait(WAIT)
}

fn ids(listed: &BTreeMap<String, Vec<String>>, dest: &str) -> Vec<String> {
    listed.get(dest).cloned().unwrap_or_default()
}

fn newest(listed: &BTreeMap<String, Vec<String>>) -> BTreeSet<String> {
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
    st.configure(EVERY_SECOND, "30s");
    st.proxy.hold(|r| r.is_complete_multipart());
    let mut d = st.daemon();
    st.proxy.wait_held(1, WAIT);
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
    st.configure(EVERY_SECOND, "2s");
    st.proxy.hold(|r| r.is_complete_multipart());
    let d = st.daemon();
    st.proxy.wait_held(1, WAIT);
    let out = stop(d);
    st.proxy.refuse_held();
    let log = text(&out);
    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("shutdown grace of 2s is over"), "{log}");
    assert!(log.contains("backup cancelled: job=app"), "{log}");
    assert_eq!(st.sound_listing().await, after, "{log}");
    st.assert_no_debris().await;

    // 3. A second SIGTERM abandons it at once.
    st.configure(EVERY_SECOND, "30s");
    st.proxy.hold(|r| r.is_complete_multipart());
    let mut d = st.daemon();
    st.proxy.wait_held(1, WAIT);
    d.signal("TERM");
    d.wait_for_output("waiting up to 30s for running backups", WAIT);
    let out = stop(d);
    st.proxy.refuse_held();
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

    st.configure(EVERY_SECOND, "30s");
    st.proxy.hold(|r| r.is_complete_multipart());
    let d = st.daemon();
    st.proxy.wait_held(1, WAIT);
    d.signal("KILL");
    let _ = d.wait(WAIT);
    st.proxy.refuse_held();

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
    assert_eq!(st.sound_listing().await, before);
    st.assert_no_debris().await;
    st.assert_all_restore(&before);
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
    st.configure(EVERY_SECOND, "30s");
    let target = format!("app/{oldest}/db.");
    st.proxy.hold(move |r| r.deletes(&target));
    let mut d = st.daemon();
    st.proxy.wait_held(1, WAIT);
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
    st.proxy.hold(move |r| r.deletes(&target));
    let mut d = st.daemon();
    st.proxy.wait_held(1, WAIT);
    d.signal("TERM");
    d.wait_for_output("waiting up to 30s for running backups", WAIT);
    let out = stop(d);
    st.proxy.refuse_held();
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

    st.configure(EVERY_SECOND, "30s");
    let target = format!("app/{oldest}/db.");
    st.proxy.hold(move |r| r.deletes(&target));
    let d = st.daemon();
    st.proxy.wait_held(1, WAIT);
    d.signal("KILL");
    let _ = d.wait(WAIT);
    st.proxy.refuse_held();

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
    assert_eq!(st.sound_listing().await, crashed);
    st.assert_no_debris().await;
    st.assert_all_restore(&crashed);
}

/// A store that accepts requests and never answers them must not hold a stop: past the
/// grace the run is abandoned, and the daemon exits within its cleanup budget even though
/// the cleanup itself cannot reach the store; the next start removes what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_does_not_hold_the_stop() {
    let st = Stack::new(3).await;
    st.backups(1);
    let before = st.sound_listing().await;

    st.configure(EVERY_SECOND, "1s");
    // From the first part on, every request hangs: the upload, its abort, the cleanup.
    let tripped = std::sync::atomic::AtomicBool::new(false);
    st.proxy.hold(move |r| {
        use std::sync::atomic::Ordering::SeqCst;
        if r.query.contains("partNumber=") {
            tripped.store(true, SeqCst);
        }
        tripped.load(SeqCst)
    });
    let d = st.daemon();
    st.proxy.wait_held(1, WAIT);
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
    assert_eq!(st.sound_listing().await, before);
    st.assert_no_debris().await;
    st.assert_all_restore(&before);
}
