//! The failure rules of a run (see the top of `mod.rs`), checked on in-memory destinations
//! and a fake database: what a run leaves on each destination when each stage fails, and
//! what retention removes. The integration tests run the same paths against real servers.

use tokio::io::AsyncReadExt;

use super::*;
use crate::repo::locks::LockKind;
use crate::testkit::{FakeDb, Fault, FaultKind, JOB, MemoryStorage, Op, configure, open};

const SOURCE: &str = "db";

/// One job on memory destinations, run as often as a test likes.
struct Setup {
    _dir: tempfile::TempDir,
    config: Config,
    db: FakeDb,
    stores: Vec<(String, MemoryStorage)>,
}

impl Setup {
    fn new(destinations: &[(&str, Option<&str>)]) -> Setup {
        Setup::with(destinations, MemoryStorage::new)
    }

    /// Destinations made by `store` (e.g. [`MemoryStorage::multipart`]).
    fn with(destinations: &[(&str, Option<&str>)], store: fn(&str) -> MemoryStorage) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = FakeDb::new(SOURCE, dump_bytes(600 * 1024, 1));
        let config = configure(dir.path(), destinations, std::slice::from_ref(&db));
        let stores = destinations
            .iter()
            .map(|(n, _)| (n.to_string(), store(n)))
            .collect();
        Setup {
            _dir: dir,
            config,
            db,
            stores,
        }
    }

    fn job(&self) -> &Job {
        &self.config.jobs[JOB]
    }

    fn store(&self, name: &str) -> &MemoryStorage {
        let (_, st) = self
            .stores
            .iter()
            .find(|(n, _)| n == name)
            .expect("a destination of the test");
        st
    }

    async fn run(&self) -> RunReport {
        self.run_until(CancellationToken::new()).await
    }

    async fn run_until(&self, cancel: CancellationToken) -> RunReport {
        let opened = open(&self.config, &self.stores);
        let report = run_job_on(
            self.job(),
            std::future::ready(opened),
            RunOptions::default(),
            cancel,
        )
        .await;
        // Ids are the start time to the millisecond: the next run must get another.
        tokio::time::sleep(Duration::from_millis(3)).await;
        report
    }
}

/// Bytes that do not compress to nothing, different per `seed`.
fn dump_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct values: compressible, but not to a handful of bytes.
            b'a' + (x % 16) as u8
        })
        .collect()
}

fn object_key(id: &str, job: &Job) -> String {
    crate::repo::Names::new(job, id).object(SOURCE, "fake")
}

/// Published backup ids on a destination, oldest first.
fn published(st: &MemoryStorage) -> Vec<String> {
    let mut ids: Vec<String> = st
        .keys()
        .iter()
        .filter_map(|k| k.strip_suffix("/manifest.json"))
        .filter_map(|k| k.strip_prefix("app/"))
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// What is stored, without the objects of `ids` (to compare what a run added).
fn keys_besides(st: &MemoryStorage, ids: &[&str]) -> Vec<String> {
    st.keys()
        .into_iter()
        .filter(|k| !ids.iter().any(|id| k.starts_with(&format!("{JOB}/{id}/"))))
        .collect()
}

/// The backup `id` on `st` is whole: its manifest (written as a record) names the object,
/// whose stored size and sha256 match it and which decompresses to `data`.
async fn assert_backup(st: &MemoryStorage, job: &Job, id: &str, data: &[u8]) {
    let mk = manifest::manifest_key(JOB, id);
    let m = st
        .object(&mk)
        .unwrap_or_else(|| panic!("no manifest {mk}: {:?}", st.keys()));
    assert_eq!(m.written_by, Some(crate::testkit::Op::PutRecord), "{mk}");
    let manifest = Manifest::parse(&m.data).expect("a manifest");
    assert_eq!(manifest.id, id);
    assert_eq!(manifest.sources.len(), 1);
    let entry = &manifest.sources[0];
    assert_eq!(entry.key, object_key(id, job));
    assert_eq!(
        entry.tool.as_deref(),
        Some(crate::testkit::fake_db::TOOL_VERSION)
    );
    let stored = st
        .object(&entry.key)
        .expect("the object the manifest names");
    assert_eq!(stored.data.len() as u64, entry.size, "{}", entry.key);
    assert_eq!(hex::encode(Sha256::digest(&stored.data)), entry.sha256);
    assert_eq!(entry.raw_size, data.len() as u64);
    let mut plain = Vec::new();
    codec::decompress(Box::new(std::io::Cursor::new(stored.data)), job.compression)
        .read_to_end(&mut plain)
        .await
        .expect("decompresses");
    assert!(plain == data, "the object does not hold the dump");
}

/// Nothing of a run is left over on `st` beyond whole backups: no lock, no upload in flight.
fn assert_no_debris(st: &MemoryStorage) {
    assert!(
        st.in_flight().is_empty(),
        "uploads in flight: {:?}",
        st.in_flight()
    );
    let locks: Vec<String> = st
        .keys()
        .into_iter()
        .filter(|k| k.contains("/locks/"))
        .collect();
    assert!(locks.is_empty(), "locks left: {locks:?}");
    let published = published(st);
    let stray: Vec<String> = st
        .keys()
        .into_iter()
        .filter(|k| {
            !published
                .iter()
                .any(|id| k.starts_with(&format!("{JOB}/{id}/")))
        })
        .collect();
    assert!(
        stray.is_empty(),
        "objects of no published backup: {stray:?}"
    );
}

#[tokio::test]
async fn a_good_run_publishes_a_matching_object_and_manifest_everywhere() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Success, "{:?}", r.errors);
    assert_eq!(r.published, vec!["one".to_string(), "two".to_string()]);
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.bytes_in, 600 * 1024);
    let data = dump_bytes(600 * 1024, 1);
    for (_, st) in &s.stores {
        assert_eq!(published(st), vec![r.id.clone()]);
        assert_backup(st, s.job(), &r.id, &data).await;
        assert_no_debris(st);
        // The backup is its object and its manifest, nothing else.
        assert_eq!(st.keys().len(), 2, "{:?}", st.keys());
    }
    assert_eq!(s.db.dumps(), 1);
}

/// A failed source: nothing published anywhere, the run's object never completed (the
/// uploads were abandoned, not completed and then removed), nothing left, and the earlier
/// backup exactly as it was.
async fn assert_failed_source_left_nothing(
    s: &Setup,
    r: &RunReport,
    earlier: &str,
    before: &[(String, Vec<String>)],
) {
    assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.errors);
    assert!(r.published.is_empty());
    assert!(
        r.errors.iter().any(|(what, _)| what == "source db"),
        "{:?}",
        r.errors
    );
    let data = dump_bytes(600 * 1024, 1);
    for ((name, st), (_, keys)) in s.stores.iter().zip(before) {
        assert_eq!(&st.keys(), keys, "{name} changed");
        assert_eq!(published(st), vec![earlier.to_string()], "{name}");
        assert_backup(st, s.job(), earlier, &data).await;
        assert_no_debris(st);
        let ours = object_key(&r.id, s.job());
        assert!(
            !st.writes().contains(&ours),
            "{name}: the failed dump's object was completed: {:?}",
            st.writes()
        );
    }
}

fn snapshot(s: &Setup) -> Vec<(String, Vec<String>)> {
    s.stores
        .iter()
        .map(|(n, st)| (n.clone(), st.keys()))
        .collect()
}

#[tokio::test]
async fn a_dump_that_breaks_off_mid_stream_publishes_nothing() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    let first = s.run().await;
    assert_eq!(first.outcome, Outcome::Success, "{:?}", first.errors);
    let before = snapshot(&s);
    s.db.break_after(Some(300 * 1024));
    let r = s.run().await;
    assert_failed_source_left_nothing(&s, &r, &first.id, &before).await;
    assert!(
        r.errors
            .iter()
            .any(|(_, why)| why.contains("reading the dump")),
        "{:?}",
        r.errors
    );
}

#[tokio::test]
async fn a_dump_tool_failing_after_all_its_output_publishes_nothing() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    let first = s.run().await;
    assert_eq!(first.outcome, Outcome::Success, "{:?}", first.errors);
    let before = snapshot(&s);
    s.db.fail_finish(true);
    let r = s.run().await;
    assert_failed_source_left_nothing(&s, &r, &first.id, &before).await;
    assert!(
        r.errors
            .iter()
            .any(|(_, why)| why.contains("exit status: 1")),
        "{:?}",
        r.errors
    );
}

#[tokio::test]
async fn a_dump_tool_that_cannot_start_dumps_nothing() {
    let s = Setup::new(&[("one", None)]);
    s.db.fail_version(true);
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(s.db.dumps(), 0);
    assert!(
        s.store("one").keys().is_empty(),
        "{:?}",
        s.store("one").keys()
    );
}

#[tokio::test]
async fn an_upload_failing_mid_stream_loses_only_its_destination() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    s.store("two")
        .fail(Fault::on(Op::PutStream).key("*.fake*").after_bytes(1000));
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Partial, "{:?}", r.errors);
    assert_eq!(r.published, vec!["one".to_string()]);
    assert!(
        r.errors
            .iter()
            .any(|(what, why)| what == "two" && why.contains("injected fault")),
        "{:?}",
        r.errors
    );
    assert_backup(s.store("one"), s.job(), &r.id, &dump_bytes(600 * 1024, 1)).await;
    assert_no_debris(s.store("one"));
    let two = s.store("two");
    assert!(two.keys().is_empty(), "{:?}", two.keys());
    assert!(two.in_flight().is_empty());
}

#[tokio::test]
async fn a_destination_failing_preflight_is_left_out_before_the_dump() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    s.store("one")
        .fail(Fault::on(Op::Preflight).kind(FaultKind::Denied));
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Partial, "{:?}", r.errors);
    assert_eq!(r.published, vec!["two".to_string()]);
    let one = s.store("one");
    assert!(
        one.writes().is_empty(),
        "written after a failed preflight: {:?}",
        one.writes()
    );
    assert_eq!(one.calls(Op::PutStream), 0);
    assert_backup(s.store("two"), s.job(), &r.id, &dump_bytes(600 * 1024, 1)).await;
}

#[tokio::test]
async fn every_destination_failing_preflight_dumps_nothing() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    for (_, st) in &s.stores {
        st.fail(Fault::on(Op::Preflight).kind(FaultKind::Unreachable));
    }
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.errors);
    assert!(
        r.errors
            .iter()
            .any(|(what, why)| what == "destinations" && why == "no destination is usable"),
        "{:?}",
        r.errors
    );
    assert_eq!(s.db.dumps(), 0);
}

#[tokio::test]
async fn a_manifest_that_cannot_be_written_leaves_no_backup_there() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    s.store("two").fail(Fault::on_puts().key("*/manifest.json"));
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Partial, "{:?}", r.errors);
    assert_eq!(r.published, vec!["one".to_string()]);
    let two = s.store("two");
    // The object had landed; with no manifest it is removed again.
    assert!(two.writes().contains(&object_key(&r.id, s.job())));
    assert!(two.keys().is_empty(), "{:?}", two.keys());
    assert_backup(s.store("one"), s.job(), &r.id, &dump_bytes(600 * 1024, 1)).await;
}

#[tokio::test]
async fn a_job_another_run_holds_is_not_dumped() {
    let s = Setup::new(&[("one", None), ("two", None)]);
    let other = manifest::new_id(Utc::now() - chrono::TimeDelta::minutes(1));
    let lock = locks::lock_key(JOB, &other, LockKind::Backup);
    // A live lock (just written) whose holder cannot be told: it counts.
    s.store("two").insert(&lock, &b"{}"[..]);
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.errors);
    assert!(
        r.errors
            .iter()
            .any(|(_, why)| why.contains("is already running")),
        "{:?}",
        r.errors
    );
    assert_eq!(s.db.dumps(), 0);
    assert_eq!(s.store("two").keys(), vec![lock]);
    assert!(
        s.store("one").keys().is_empty(),
        "{:?}",
        s.store("one").keys()
    );
}

/// The job's lock cannot be written on `failing`: the run stops before the dump, and
/// leaves no lock anywhere.
async fn lock_refused_on(failing: &str) {
    let s = Setup::new(&[("one", None), ("two", None)]);
    s.store(failing).fail(
        Fault::on(Op::PutBytes)
            .key("app/locks/*")
            .kind(FaultKind::Denied),
    );
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Failed, "{:?}", r.errors);
    assert!(
        r.errors
            .iter()
            .any(|(_, why)| why.contains("cannot take the lock of job app")),
        "{:?}",
        r.errors
    );
    assert_eq!(s.db.dumps(), 0);
    for (name, st) in &s.stores {
        assert!(st.keys().is_empty(), "{name}: {:?}", st.keys());
    }
}

#[tokio::test]
async fn a_lock_that_cannot_be_written_stops_the_run_before_the_dump() {
    lock_refused_on("one").await;
}

/// A lock left on the destinations before the one that refused it would stay until dead
/// (`locks::LOCK_DEAD`), refusing other processes' runs of the job until then: the run
/// never marked them locked, so `locks::claim_job` itself takes them back.
#[tokio::test]
async fn a_lock_refused_on_a_later_destination_leaves_no_lock_on_the_earlier() {
    lock_refused_on("two").await;
}

#[tokio::test]
async fn retention_keeps_the_newest_keep_last_and_removes_the_rest_whole() {
    let s = Setup::new(&[("pruned", Some("keep_last = 2")), ("all", None)]);
    let mut ids = Vec::new();
    for seed in 1..=4 {
        s.db.set_data(dump_bytes(50 * 1024, seed));
        let r = s.run().await;
        assert_eq!(r.outcome, Outcome::Success, "{:?}", r.errors);
        ids.push(r.id);
    }
    let pruned = s.store("pruned");
    assert_eq!(published(pruned), ids[2..].to_vec());
    for gone in &ids[..2] {
        let left: Vec<String> = pruned
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&format!("{JOB}/{gone}/")))
            .collect();
        assert!(
            left.is_empty(),
            "backup {gone} pruned only in part: {left:?}"
        );
    }
    for (id, seed) in ids[2..].iter().zip(3..) {
        assert_backup(pruned, s.job(), id, &dump_bytes(50 * 1024, seed)).await;
    }
    assert_no_debris(pruned);
    assert_eq!(published(s.store("all")), ids);
}

#[tokio::test]
async fn a_failed_run_never_costs_the_last_good_backup() {
    let s = Setup::new(&[
        ("one", Some("keep_last = 1")),
        ("two", Some("keep_last = 1")),
    ]);
    let good = s.run().await;
    assert_eq!(good.outcome, Outcome::Success, "{:?}", good.errors);

    // The source fails: no destination prunes.
    s.db.fail_finish(true);
    let failed = s.run().await;
    assert_eq!(failed.outcome, Outcome::Failed);
    for (name, st) in &s.stores {
        assert_eq!(published(st), vec![good.id.clone()], "{name}");
    }

    // Destination two fails: one publishes the new backup and prunes the old; two keeps
    // its only backup.
    s.db.fail_finish(false);
    s.store("two")
        .fail(Fault::on(Op::PutStream).key("*.fake*").after_bytes(1000));
    let partial = s.run().await;
    assert_eq!(partial.outcome, Outcome::Partial, "{:?}", partial.errors);
    assert_eq!(published(s.store("one")), vec![partial.id.clone()]);
    assert_eq!(published(s.store("two")), vec![good.id.clone()]);
    assert_backup(
        s.store("two"),
        s.job(),
        &good.id,
        &dump_bytes(600 * 1024, 1),
    )
    .await;
    assert_eq!(
        keys_besides(s.store("two"), &[&good.id]),
        Vec::<String>::new()
    );
}

/// Where the run did not publish, retention does not run: a destination whose upload failed
/// keeps backups its rules would now remove (max_age), until a run publishes there again.
/// (keep_last could not show it: `retention::decide` always keeps the newest backup, and
/// without a new one a count rule has nothing more to remove.)
#[tokio::test]
async fn retention_runs_only_where_the_run_published() {
    let s = Setup::new(&[
        ("one", Some("max_age = \"1s\"")),
        ("two", Some("max_age = \"1s\"")),
    ]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = s.run().await;
        assert_eq!(r.outcome, Outcome::Success, "{:?}", r.errors);
        ids.push(r.id);
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    s.store("two")
        .fail(Fault::on(Op::PutStream).key("*.fake*").after_bytes(1000));
    let r = s.run().await;
    assert_eq!(r.outcome, Outcome::Partial, "{:?}", r.errors);
    assert_eq!(published(s.store("one")), vec![r.id.clone()]);
    assert_eq!(published(s.store("two")), ids);
    assert_no_debris(s.store("two"));
}

/// A stop while the dump streams: the run is cancelled, the uploads abandoned (nothing in
/// flight is left, on a store where that would be an open multipart upload), nothing
/// published, and the earlier backup untouched.
#[tokio::test]
async fn a_stop_mid_dump_abandons_every_upload() {
    let s = Setup::with(&[("one", None), ("two", None)], MemoryStorage::multipart);
    let first = s.run().await;
    assert_eq!(first.outcome, Outcome::Success, "{:?}", first.errors);
    let before = snapshot(&s);
    s.db.stall_after(Some(300 * 1024));
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let one = s.store("one").clone();
    tokio::spawn(async move {
        // Once the dump is under way (its upload is in flight), stop.
        while one.in_flight().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.cancel();
    });
    let r = tokio::time::timeout(Duration::from_secs(20), s.run_until(cancel))
        .await
        .expect("the run stops");
    assert_eq!(r.outcome, Outcome::Cancelled, "{:?}", r.errors);
    assert!(r.published.is_empty());
    for ((name, st), (_, keys)) in s.stores.iter().zip(&before) {
        assert_eq!(&st.keys(), keys, "{name} changed");
        assert_no_debris(st);
        assert!(!st.writes().contains(&object_key(&r.id, s.job())), "{name}");
    }
}
