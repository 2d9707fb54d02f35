//! S3 Object Lock on a destination, against moto: every data object and manifest is
//! written with a retain-until date, a locked version cannot be deleted with the job's
//! own credentials, retention plans around the lock, and `check-config --connect`
//! refuses a bucket without Object Lock.

mod common;

use chrono::{DateTime, TimeDelta, Utc};
use common::{
    Job, PgServer, Rng, S3Server, read_tree, run_stowage, seed_sample_db, text, toml_str,
};

const BUCKET: &str = "locked";
const JOB_PREFIX: &str = "vault/app/";

fn run_ok(setup: &Job) -> String {
    let (code, out) = setup.stowage(&["run", "app"]);
    assert_eq!(code, Some(0), "run failed:\n{out}");
    out
}

/// Job "app" to S3 destination "vault" (with `extra` keys): a PostgreSQL database (with
/// `pg`) and a directory with a small file and one of 6 MiB (random, so it stays above the
/// 5 MiB part size and goes up as a multipart upload).
fn setup(pg: Option<&PgServer>, s3: &S3Server, bucket: &str, extra: &str) -> Job {
    let job = Job::new("app");
    let files = job.path("uploads");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(files.join("small.txt"), "a small attachment\n").expect("write");
    std::fs::write(files.join("big.bin"), Rng::new(23).bytes(6 << 20)).expect("write");
    let mut job = job
        .s3(
            "vault",
            s3,
            bucket,
            &format!("prefix = \"vault\"\npart_size = \"5MiB\"\n{extra}\n"),
        )
        .files("uploads", &files, "");
    if let Some(pg) = pg {
        job = job.postgres("db", &pg.url("app"));
    }
    job.write()
}

async fn create_locked_bucket(s3: &S3Server, name: &str) {
    s3.client()
        .await
        .create_bucket()
        .bucket(name)
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .unwrap_or_else(|e| panic!("create_bucket {name} with Object Lock: {e:?}"));
}

/// Mode and retain-until date HeadObject reports (GetObjectRetention is broken on moto).
async fn lock_of(s3: &S3Server, key: &str) -> (Option<String>, Option<DateTime<Utc>>) {
    lock_of_version(s3, key, None).await
}

async fn lock_of_version(
    s3: &S3Server,
    key: &str,
    version: Option<&str>,
) -> (Option<String>, Option<DateTime<Utc>>) {
    let head = s3
        .client()
        .await
        .head_object()
        .bucket(BUCKET)
        .key(key)
        .set_version_id(version.map(str::to_string))
        .send()
        .await
        .unwrap_or_else(|e| panic!("head {key}: {e:?}"));
    (
        head.object_lock_mode().map(|m| m.as_str().to_string()),
        head.object_lock_retain_until_date()
            .and_then(|t| DateTime::from_timestamp(t.secs(), 0)),
    )
}

async fn keys(s3: &S3Server, suffix: &str) -> Vec<String> {
    s3.list_keys(BUCKET, JOB_PREFIX)
        .await
        .into_iter()
        .filter(|k| k.ends_with(suffix))
        .collect()
}

fn assert_about(until: Option<DateTime<Utc>>, want: DateTime<Utc>, key: &str) {
    let until = until.unwrap_or_else(|| panic!("{key}: no retain-until date"));
    let off = (until - want).num_seconds().abs();
    assert!(
        off < 120,
        "{key}: retain-until {until}, expected about {want}"
    );
}

/// A backup to an Object Lock destination: the dump, the file index and its blobs (the
/// 6 MiB one a multipart upload) and the manifest carry the mode and a retain-until date
/// `days` ahead; a DeleteObject of the dump's version with the job's own credentials is
/// refused, and the backup still restores equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_objects_are_locked_and_a_locked_dump_survives_a_delete() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 200);
    let s3 = S3Server::moto();
    create_locked_bucket(&s3, BUCKET).await;
    let setup = setup(
        Some(&pg),
        &s3,
        BUCKET,
        "object_lock = { mode = \"GOVERNANCE\", days = 3 }",
    );
    let before = Utc::now();
    run_ok(&setup);
    let want = before + TimeDelta::days(3);

    let dumps = keys(&s3, ".pgdump.zst").await;
    let manifests = keys(&s3, "manifest.json").await;
    let indexes = keys(&s3, ".files.json.zst").await;
    let blobs: Vec<String> = s3.list_keys(BUCKET, &format!("{JOB_PREFIX}blobs/")).await;
    assert_eq!(
        (dumps.len(), manifests.len(), indexes.len(), blobs.len()),
        (1, 1, 1, 2),
        "{:?}",
        s3.list_keys(BUCKET, "").await
    );
    for key in dumps.iter().chain(&manifests).chain(&indexes).chain(&blobs) {
        let (mode, until) = lock_of(&s3, key).await;
        assert_eq!(mode.as_deref(), Some("GOVERNANCE"), "{key}");
        assert_about(until, want, key);
    }
    // The run's own lock object is not Object-Locked: it is gone, and no version of it
    // is held.
    let locks = format!("{JOB_PREFIX}locks/");
    assert!(s3.list_keys(BUCKET, &locks).await.is_empty());
    let held = s3
        .client()
        .await
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(&locks)
        .send()
        .await
        .expect("list versions");
    for v in held.versions() {
        let (mode, _) = lock_of_version(&s3, v.key().unwrap_or_default(), v.version_id()).await;
        assert_eq!(mode, None, "{v:?}");
    }

    // Whoever holds the job's credentials cannot delete the dump's version.
    let client = s3.client_with_credentials(s3.access_key(), s3.secret_key());
    let dump = &dumps[0];
    let versions = client
        .list_object_versions()
        .bucket(BUCKET)
        .prefix(dump)
        .send()
        .await
        .expect("list versions");
    let version = versions
        .versions()
        .first()
        .and_then(|v| v.version_id())
        .expect("a version id")
        .to_string();
    let err = client
        .delete_object()
        .bucket(BUCKET)
        .key(dump)
        .version_id(&version)
        .send()
        .await
        .expect_err("deleting a locked version must fail");
    let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&err).map(str::to_string);
    assert_eq!(code.as_deref(), Some("AccessDenied"), "{err:?}");

    // Still there, and it restores equal.
    let db = "restored";
    pg.create_db(db);
    let files_to = setup.path("restored-files");
    let (code, out) = setup.stowage(&[
        "restore",
        "app",
        "latest",
        "--to",
        &pg.url(db),
        "--files-to",
        &files_to.to_string_lossy(),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pg.table_checksums(db), pg.table_checksums("app"));
    assert_eq!(read_tree(&files_to), read_tree(&setup.path("uploads")));
}

/// keep_last = 1 after two backups keeps the older one, whose lock has not passed, and
/// says so (run log and `run --dry-run`); the blobs the second backup reuses are locked
/// as long as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_a_locked_backup_and_says_why() {
    let s3 = S3Server::moto();
    create_locked_bucket(&s3, BUCKET).await;
    let setup = setup(
        None,
        &s3,
        BUCKET,
        "object_lock = { mode = \"COMPLIANCE\", days = 2 }\nretention = { keep_last = 1 }",
    );
    run_ok(&setup);
    let first = keys(&s3, "manifest.json").await;
    assert_eq!(first.len(), 1, "{first:?}");
    let (_, first_until) = lock_of(&s3, &first[0]).await;
    let blobs = s3.list_keys(BUCKET, &format!("{JOB_PREFIX}blobs/")).await;
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    // Retain-until dates are whole seconds: the second backup's must be a later one.
    std::thread::sleep(std::time::Duration::from_millis(1100));

    let log = run_ok(&setup);
    let manifests = keys(&s3, "manifest.json").await;
    assert_eq!(manifests.len(), 2, "the locked backup was removed:\n{log}");
    let old_id = first[0]
        .strip_prefix(JOB_PREFIX)
        .and_then(|k| k.strip_suffix("/manifest.json"))
        .expect("backup id")
        .to_string();
    assert!(
        log.contains(&format!(
            "retention on vault: keeping backup {old_id} the rules would remove: locked until"
        )),
        "{log}"
    );
    // The blobs are the first backup's, referenced again: locked as long as the second.
    for b in &blobs {
        let (mode, until) = lock_of(&s3, b).await;
        assert_eq!(mode.as_deref(), Some("COMPLIANCE"), "{b}");
        assert!(until > first_until, "{b}: {until:?} <= {first_until:?}");
    }

    let (code, out) = setup.stowage(&["run", "app", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would then delete nothing"), "{out}");
    let until = first_until
        .expect("locked")
        .format("%Y-%m-%d %H:%M:%S UTC")
        .to_string();
    assert!(
        out.contains(&format!("{old_id} (kept: locked until {until})")),
        "{out}"
    );
}

/// `check-config --connect` fails on a bucket without Object Lock when `object_lock` is
/// set, and says so; on a bucket with it, it passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_connect_needs_object_lock_on_the_bucket() {
    let s3 = S3Server::moto();
    s3.create_bucket("plain").await;
    create_locked_bucket(&s3, BUCKET).await;
    let lock = "object_lock = { mode = \"GOVERNANCE\", days = 7 }";

    let plain = setup(None, &s3, "plain", lock);
    let (code, out) = plain.stowage(&["check-config", "--connect"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "destination vault (s3://plain/vault): object_lock is set, but the bucket does not have Object Lock enabled"
        ),
        "{out}"
    );
    // A run fails too, rather than write unlocked backups.
    let (code, out) = plain.stowage(&["run", "app"]);
    assert_ne!(code, Some(0), "{out}");

    let locked = setup(None, &s3, BUCKET, lock);
    let (code, out) = locked.stowage(&["check-config", "--connect"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "Object Lock enabled; objects are written locked in GOVERNANCE mode for 7 day(s)"
        ),
        "{out}"
    );
}

/// Bad `object_lock` settings are refused at load, naming the key.
#[test]
fn object_lock_settings_are_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `dest`: the keys of destination "vault".
    let check = |dest: &str| -> (Option<i32>, String) {
        let cfg = Job::config_in(dir.path(), "app")
            .destination("vault", dest)
            .files("f", dir.path(), "")
            .write_as("stowage.toml");
        let out = run_stowage(&cfg, ["check-config"]);
        (out.status.code(), text(&out))
    };
    let s3 = |lock: &str| format!("type = \"s3\"\nbucket = \"locked\"\nobject_lock = {lock}\n");
    let table = [
        (
            s3("{ mode = \"LEGAL\", days = 7 }"),
            "destinations.vault.object_lock.mode: unknown mode \"LEGAL\"; expected \"GOVERNANCE\" or \"COMPLIANCE\"",
        ),
        (
            s3("{ mode = \"COMPLIANCE\", days = 0 }"),
            "destinations.vault.object_lock.days: 0 locks nothing",
        ),
        (
            s3("{ days = 7 }"),
            "destinations.vault.object_lock.mode: required",
        ),
        (
            s3("{ mode = \"GOVERNANCE\" }"),
            "destinations.vault.object_lock.days: required",
        ),
        (
            format!(
                "type = \"local\"\npath = {}\nobject_lock = {{ mode = \"GOVERNANCE\", days = 7 }}\n",
                toml_str(dir.path().display())
            ),
            "destinations.vault.object_lock: only valid for type = \"s3\"",
        ),
    ];
    for (dest, want) in table {
        let (code, out) = check(&dest);
        assert_ne!(code, Some(0), "{dest}\n{out}");
        assert!(out.contains(want), "{dest}\nwant: {want}\n{out}");
    }
    let (code, out) = check(&s3("{ mode = \"GOVERNANCE\", days = 7 }"));
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
    // Locked longer than retention keeps: said, not refused.
    let (code, out) = check(&format!(
        "{}retention = {{ keep_last = 2 }}\n",
        s3("{ mode = \"GOVERNANCE\", days = 30 }")
    ));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("warning: destinations.vault.object_lock: every backup is locked for 30 days, but retention (keep_last=2) keeps backups only about 2 days"),
        "{out}"
    );
}
