//! Continuous WAL against real destinations (a local directory and moto's S3): files laid in
//! a spool as `pg_receivewal` would (random bytes under segment names; no server needed for
//! shipping) reach both with their records, leave the spool, and `stowage wal-fetch` gives
//! them back byte for byte, plain and encrypted; a damaged object stops recovery (255), a
//! file never shipped is "not available" (1), the partial segment is fetchable, and a
//! destination that fails gets the file once it is back while the spool keeps it.
//! `src/wal/tests.rs` injects failures at exact points on memory destinations.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use common::{Job, Rng, S3Server, sha256_hex, text};
use stowage::storage::Storage;
use stowage::wal::{WalStatus, ship};
use tokio::sync::watch;

const BUCKET: &str = "wal";
const SEG1: &str = "000000010000000000000001";
const SEG2: &str = "000000010000000000000002";
const SEG3: &str = "000000010000000000000003";
const SEG4: &str = "000000010000000000000004";
const HISTORY: &str = "00000002.history";
const SEGMENT: usize = 16 << 20;

/// A job `app` with source `db` shipping to `local` and `s3`, then `job_keys`.
async fn setup(job_keys: &str) -> (S3Server, Job) {
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let job = Job::new("app")
        .local("local", None)
        .s3("s3", &s3, BUCKET, "")
        .job(job_keys)
        .command("db", &["true"])
        .write();
    std::fs::create_dir(job.path("spool")).expect("spool");
    (s3, job)
}

fn segment(seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(SEGMENT / 4)
}

/// Completed files in the spool (not the partial segment).
fn completed(spool: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(spool)
        .expect("read spool")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".partial"))
        .collect();
    v.sort();
    v
}

/// The job's destinations as the daemon would open them.
async fn destinations(job: &Job) -> (stowage::config::Config, Vec<(String, Arc<dyn Storage>)>) {
    let config = stowage::load::load(&job.config).expect("config");
    let opened: Vec<(String, Arc<dyn Storage>)> =
        stowage::storage::open_job(&config, &config.jobs["app"])
            .await
            .into_iter()
            .map(|s| (s.name.to_string(), Arc::from(s.storage)))
            .collect();
    (config, opened)
}

/// Ship until `done` holds of the status (checked every 100 ms), then stop the shipper.
async fn ship_until(job: &Job, done: impl Fn(&WalStatus, &Path) -> bool) -> WalStatus {
    let (config, dests) = destinations(job).await;
    let spool = job.path("spool");
    let (tx, rx) = watch::channel(WalStatus::default());
    let stop = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if done(&rx.borrow(), &spool) {
                break;
            }
        }
    };
    tokio::time::timeout(
        Duration::from_secs(120),
        ship(
            &config.jobs["app"],
            "db",
            &spool,
            || std::future::ready(dests.clone()),
            Duration::from_secs(1),
            &tx,
            stop,
        ),
    )
    .await
    .expect("shipping finishes");
    rx.borrow().clone()
}

/// `stowage wal-fetch app NAME PATH ARGS…`: exit code and output.
fn wal_fetch(job: &Job, name: &str, path: &Path, args: &[&str]) -> (Option<i32>, String) {
    let path = path.display().to_string();
    let mut all = vec!["wal-fetch", "app", name, &path];
    all.extend_from_slice(args);
    let out = job.output(&all);
    (out.status.code(), text(&out))
}

fn local_object(job: &Job, key: &str) -> PathBuf {
    job.path("local").join(key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_ships_to_local_and_s3_and_fetches_back() {
    let (s3, job) = setup("").await;
    let spool = job.path("spool");
    let files: Vec<(&str, Vec<u8>)> = vec![
        (SEG1, segment(1)),
        (SEG2, segment(2)),
        (
            HISTORY,
            b"1\t0/2000000\tno recovery target specified\n".to_vec(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(spool.join(name), bytes).expect("write");
    }
    // The segment being written: a prefix, then zeros to 16 MiB.
    let mut partial = vec![0u8; SEGMENT];
    partial[..100_000].copy_from_slice(&Rng::new(3).bytes(100_000));
    std::fs::write(spool.join(format!("{SEG3}.partial")), &partial).expect("write");

    let status = ship_until(&job, |st, spool| {
        completed(spool).is_empty() && st.partial_shipped_at.is_some()
    })
    .await;
    assert_eq!(status.pending, 0);
    assert_eq!(status.last_error, None);
    assert_eq!(status.last_shipped.as_deref(), Some(SEG2));
    assert!(
        spool.join(format!("{SEG3}.partial")).exists(),
        "the partial stays"
    );

    // Each file and its record on both destinations, read from the stores themselves.
    let s3_keys = s3.list_keys(BUCKET, "app/wal/").await;
    for (name, bytes) in &files {
        let key = format!("app/wal/db/{name}.zst");
        let record_key = format!("app/wal/db/index/{name}.json");
        let local_stored = std::fs::read(local_object(&job, &key)).expect("local object");
        let s3_stored = s3.get(BUCKET, &key).await;
        for (stored, record) in [
            (
                &local_stored,
                std::fs::read(local_object(&job, &record_key)).expect("local record"),
            ),
            (&s3_stored, s3.get(BUCKET, &record_key).await),
        ] {
            let r: serde_json::Value = serde_json::from_slice(&record).expect("json");
            assert_eq!(r["name"], *name);
            assert_eq!(r["key"], key);
            assert_eq!(r["size"], stored.len() as u64);
            assert_eq!(r["sha256"], sha256_hex(stored));
            assert_eq!(r["raw_size"], bytes.len() as u64);
            assert_eq!(r["raw_sha256"], sha256_hex(bytes));
            assert!(r["shipped_at"].is_string());
            assert!(r.get("auth").is_none());
        }
        assert_eq!(common::zstd_decompress(&s3_stored), *bytes);
        assert!(s3_keys.contains(&record_key), "{s3_keys:?}");
    }
    assert!(s3_keys.contains(&"app/wal/db/partial.json".to_string()));

    // A backup listing is not confused by the WAL beside it.
    let (code, out) = job.stowage(&["list", "app"]);
    assert_eq!(code, Some(0), "{out}");

    // wal-fetch gives each back, byte for byte, from either destination.
    let restore = tempfile::tempdir().expect("tempdir");
    for (name, bytes) in &files {
        for from in [&[][..], &["--from", "s3"][..]] {
            let target = restore.path().join("RECOVERYXLOG");
            let (code, out) = wal_fetch(&job, name, &target, from);
            assert_eq!(code, Some(0), "{name} {from:?}: {out}");
            assert_eq!(std::fs::read(&target).expect("fetched"), *bytes, "{name}");
        }
    }
    // The partial segment, whole size, its zero tail included.
    let target = restore.path().join(SEG3);
    let (code, out) = wal_fetch(&job, SEG3, &target, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(&target).expect("fetched"), partial);

    // Never shipped: "not available", quietly.
    for missing in [SEG4, "00000003.history"] {
        let target = restore.path().join("missing");
        let (code, out) = wal_fetch(&job, missing, &target, &[]);
        assert_eq!(code, Some(1), "{missing}: {out}");
        assert!(!out.contains("error"), "{out}");
        assert!(!target.exists());
    }

    // A symlink at the path is replaced, never followed.
    let victim = restore.path().join("victim");
    std::fs::write(&victim, b"keep me").expect("victim");
    let link = restore.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).expect("symlink");
    let (code, out) = wal_fetch(&job, SEG1, &link, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"keep me");
    assert!(!std::fs::symlink_metadata(&link).expect("link").is_symlink());
    assert_eq!(std::fs::read(&link).expect("fetched"), files[0].1);

    // A directory that does not exist: recovery must stop, not skip the file.
    let (code, out) = wal_fetch(
        &job,
        SEG1,
        &restore.path().join("no/such/RECOVERYXLOG"),
        &[],
    );
    assert_eq!(code, Some(255), "{out}");
    assert!(out.contains("does not exist"), "{out}");

    // A damaged stored object: exit 255 naming it and its destination; nothing written.
    let key = format!("app/wal/db/{SEG2}.zst");
    let path = local_object(&job, &key);
    let mut stored = std::fs::read(&path).expect("stored");
    let mid = stored.len() / 2;
    stored[mid] ^= 0x5a;
    std::fs::write(&path, &stored).expect("damage");
    let target = restore.path().join("damaged");
    let (code, out) = wal_fetch(&job, SEG2, &target, &[]);
    assert_eq!(code, Some(255), "{out}");
    assert!(out.contains(&key) && out.contains("local"), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(!target.exists());
    assert!(!restore.path().join("damaged.stowage-tmp").exists());
    // The intact copy on the other destination.
    let (code, out) = wal_fetch(&job, SEG2, &target, &["--from", "s3"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(&target).expect("fetched"), files[1].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_and_authenticated_wal_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let id = age::x25519::Identity::generate();
    let identity = dir.path().join("key.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).expect("id");
    let auth = dir.path().join("auth.key");
    std::fs::write(&auth, Rng::new(9).hex(64)).expect("auth key");
    let (s3, job) = setup(&format!(
        "auth_key_file = {}\nencryption = {{ recipients = [\"{}\"], identity_file = {} }}",
        common::toml_str(auth.display()),
        id.to_public(),
        common::toml_str(identity.display())
    ))
    .await;
    let spool = job.path("spool");
    let bytes = segment(4);
    std::fs::write(spool.join(SEG1), &bytes).expect("write");
    ship_until(&job, |_, spool| completed(spool).is_empty()).await;

    let key = format!("app/wal/db/{SEG1}.zst.age");
    for stored in [
        std::fs::read(local_object(&job, &key)).expect("local"),
        s3.get(BUCKET, &key).await,
    ] {
        assert!(stored.starts_with(b"age-encryption.org/v1"));
    }
    let record = s3
        .get(BUCKET, &format!("app/wal/db/index/{SEG1}.json"))
        .await;
    let r: serde_json::Value = serde_json::from_slice(&record).expect("json");
    assert_eq!(r["auth"]["scheme"], "hmac-sha256");

    let restore = tempfile::tempdir().expect("tempdir");
    let target = restore.path().join("RECOVERYXLOG");
    for from in ["local", "s3"] {
        let (code, out) = wal_fetch(&job, SEG1, &target, &["--from", from]);
        assert_eq!(code, Some(0), "{from}: {out}");
        assert_eq!(std::fs::read(&target).expect("fetched"), bytes);
    }

    // A record edited on the destination fails its MAC: recovery stops.
    let record_path = local_object(&job, &format!("app/wal/db/index/{SEG1}.json"));
    let mut r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).expect("record")).expect("json");
    r["raw_size"] = serde_json::json!(1);
    std::fs::write(&record_path, serde_json::to_vec(&r).expect("json")).expect("edit");
    let (code, out) = wal_fetch(&job, SEG1, &target, &["--from", "local"]);
    assert_eq!(code, Some(255), "{out}");
    assert!(out.contains("forged") && out.contains("local"), "{out}");
}

/// A destination that fails (its directory is a file) gets the file once it is back; the
/// spool keeps it meanwhile, and the destination that works has it at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_fails_gets_the_wal_when_back() {
    let (s3, job) = setup("").await;
    let spool = job.path("spool");
    let local = job.path("local");
    std::fs::write(&local, b"not a directory").expect("block local");
    let bytes = segment(5);
    std::fs::write(spool.join(SEG1), &bytes).expect("write");

    let (config, dests) = destinations(&job).await;
    let (tx, rx) = watch::channel(WalStatus::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shipping = ship(
        &config.jobs["app"],
        "db",
        &spool,
        || std::future::ready(dests.clone()),
        Duration::from_secs(1),
        &tx,
        async {
            let _ = stopped.await;
        },
    );
    let record = format!("app/wal/db/index/{SEG1}.json");
    let checks = async {
        let mut rx1 = rx.clone();
        tokio::time::timeout(
            Duration::from_secs(60),
            rx1.wait_for(|st| st.last_error.is_some()),
        )
        .await
        .expect("a failure reported")
        .expect("status");
        let status = rx.borrow().clone();
        assert_eq!(status.pending, 1, "{status:?}");
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("local")),
            "{status:?}"
        );
        assert!(status.lag(chrono::Utc::now()) > Duration::ZERO);
        assert_eq!(completed(&spool), vec![SEG1], "the spool keeps it");
        assert!(s3.list_keys(BUCKET, "").await.contains(&record));

        std::fs::remove_file(&local).expect("unblock local");
        let mut rx2 = rx.clone();
        tokio::time::timeout(
            Duration::from_secs(60),
            rx2.wait_for(|st| st.pending == 0 && st.last_error.is_none()),
        )
        .await
        .expect("shipped once back")
        .expect("status");
        let _ = stop.send(());
    };
    tokio::join!(shipping, checks);
    assert!(completed(&spool).is_empty());
    let restore = tempfile::tempdir().expect("tempdir");
    let target = restore.path().join("RECOVERYXLOG");
    let (code, out) = wal_fetch(&job, SEG1, &target, &["--from", "local"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(std::fs::read(&target).expect("fetched"), bytes);

    // A destination that cannot be read makes a missing file unknowable: 255, not 1.
    std::fs::remove_dir_all(&local).expect("remove local");
    std::fs::write(&local, b"not a directory").expect("block local");
    let (code, out) = wal_fetch(&job, SEG4, &target, &[]);
    assert_eq!(code, Some(255), "{out}");
    assert!(out.contains("local"), "{out}");
}
