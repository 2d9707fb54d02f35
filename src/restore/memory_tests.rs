//! Planning and restoring a backup stored on a memory destination, into the fake database:
//! the plan binds each stored source to the job's own configured source, and no byte of a
//! damaged or unreadable copy reaches the database (the fake applies what it reads as it
//! reads it, so the whole object goes through its sha256 check first).

use std::sync::Mutex;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use super::*;
use crate::repo::manifest::FORMAT_VERSION;
use crate::testkit::{FakeDb, Fault, FaultKind, JOB, MemoryStorage, Op, configure};

/// A backup of `stored` sources, written to a memory destination the way a run writes one
/// (objects compressed as the job says, then the manifest); the job configures `configured`.
struct Backup {
    _dir: tempfile::TempDir,
    config: Config,
    st: MemoryStorage,
    manifest: Manifest,
}

fn dump(seed: u8) -> Vec<u8> {
    (0..40_000u32)
        .map(|i| b'a' + ((i.wrapping_mul(31) as u8) ^ seed) % 20)
        .collect()
}

async fn backup(configured: &[FakeDb], stored: &[(&str, Vec<u8>)]) -> Backup {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = configure(dir.path(), &[("one", None)], configured);
    let job = &config.jobs[JOB];
    let st = MemoryStorage::new("one");
    let now = chrono::Utc::now();
    let id = manifest::new_id(now);
    let mut sources = Vec::new();
    for (name, data) in stored {
        let key = crate::repo::Names::new(job, &id).object(name, "fake");
        let mut object = Vec::new();
        codec::compress(
            Box::new(std::io::Cursor::new(data.clone())),
            job.compression,
            job.compression_level,
        )
        .read_to_end(&mut object)
        .await
        .expect("compress");
        sources.push(SourceEntry {
            name: name.to_string(),
            kind: "fake".into(),
            format: "bytes given by a test".into(),
            key: key.clone(),
            size: object.len() as u64,
            raw_size: data.len() as u64,
            sha256: hex::encode(Sha256::digest(&object)),
            tool: Some(crate::testkit::fake_db::TOOL_VERSION.into()),
            ..Default::default()
        });
        st.put_stream_plain(&key, chunks(object))
            .await
            .expect("store the object");
    }
    let m = Manifest {
        format: FORMAT_VERSION,
        job: JOB.into(),
        id: id.clone(),
        started_at: now,
        finished_at: now,
        compression: job.compression,
        encryption: None,
        sources,
        tools: Default::default(),
        auth: None,
        proof: Default::default(),
    };
    let body = manifest::signed(&m, None).expect("manifest");
    let repo = Repository::new(&st, JOB);
    repo.publish_manifest(&id, Bytes::from(body))
        .await
        .expect("store the manifest");
    // Read back as a restore reads it: through the listing and the stored manifest.
    let listing = repo.backups().await.expect("listing");
    let published = listing.published(JOB);
    assert_eq!(published.len(), 1);
    let manifest = repo
        .manifest(&published[0].id)
        .await
        .expect("the stored manifest");
    Backup {
        _dir: dir,
        config,
        st,
        manifest,
    }
}

fn chunks(data: Vec<u8>) -> tokio::sync::mpsc::Receiver<crate::storage::Chunk> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        for c in data.chunks(16 * 1024) {
            let chunk = crate::storage::Chunk::Data(Bytes::copy_from_slice(c));
            if tx.send(chunk).await.is_err() {
                return;
            }
        }
        let _ = tx.send(crate::storage::Chunk::End).await;
    });
    rx
}

fn request(f: impl FnOnce(&mut RestoreRequest)) -> RestoreRequest {
    let mut r = RestoreRequest {
        job: JOB.into(),
        id: "latest".into(),
        ..Default::default()
    };
    f(&mut r);
    r
}

/// Plan, then restore from the memory destination, as `restore_until` does once it has
/// located the backup (no lock: the destination is this test's alone).
async fn restore_from(b: &Backup, req: &RestoreRequest) -> Result<RestoreSummary, RestoreError> {
    let job = find_job(&b.config, &req.job)?;
    let plan = plan(&b.manifest, req, &|e| database_for(job, e))?;
    let packing = Repository::new(&b.st, JOB).packing(
        &b.manifest,
        &packing::Expect::of(job, req.trust_unauthenticated),
        keys_for(job, None)?,
    )?;
    let progress = Mutex::new(Progress::default());
    restore_locked(
        &b.config,
        req,
        job,
        &b.st,
        "one",
        &b.manifest,
        plan,
        &packing,
        &progress,
    )
    .await
}

#[tokio::test]
async fn a_stored_backup_plans_onto_the_jobs_own_sources() {
    let (db, cache) = (FakeDb::new("db", dump(1)), FakeDb::new("cache", dump(2)));
    let b = backup(
        &[db.clone(), cache.clone()],
        &[("db", dump(1)), ("cache", dump(2))],
    )
    .await;
    let job = &b.config.jobs[JOB];
    let req = request(|r| r.to = vec!["cache=c1".into(), "db=d1".into()]);
    let p = plan(&b.manifest, &req, &|e| database_for(job, e)).expect("a plan");
    let steps: Vec<(String, String, String)> = p
        .databases
        .iter()
        .map(|d| {
            (
                d.entry.name.clone(),
                d.target.clone(),
                d.database.describe(),
            )
        })
        .collect();
    // In the backup's order, each with its named target and the job's configured source.
    assert_eq!(
        steps,
        vec![
            ("db".into(), "d1".into(), "fake db".into()),
            ("cache".into(), "c1".into(), "fake cache".into()),
        ]
    );
    assert!(p.files.is_empty());
}

#[tokio::test]
async fn a_source_the_config_dropped_is_refused_unless_left_out() {
    // The backup outlived a config change: "old" is no longer configured, and no
    // registered engine restores "fake" sources by default.
    let db = FakeDb::new("db", dump(1));
    let b = backup(
        std::slice::from_ref(&db),
        &[("db", dump(1)), ("old", dump(3))],
    )
    .await;
    let job = &b.config.jobs[JOB];
    let all = request(|r| r.to = vec!["db=d1".into(), "old=o1".into()]);
    match plan(&b.manifest, &all, &|e| database_for(job, e)) {
        Err(RestoreError::NotFound(e)) => assert!(
            e.contains("source \"old\" of type \"fake\"") && e.contains("by hand"),
            "{e}"
        ),
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("planned a source nothing can restore"),
    }
    let only = request(|r| {
        r.only = vec!["db".into()];
        r.to = vec!["d1".into()];
    });
    let p = plan(&b.manifest, &only, &|e| database_for(job, e)).expect("a plan");
    assert_eq!(p.databases.len(), 1);
    assert_eq!(p.databases[0].entry.name, "db");
}

#[tokio::test]
async fn a_restore_hands_the_database_exactly_the_dumped_bytes() {
    let db = FakeDb::new("db", dump(1));
    let b = backup(std::slice::from_ref(&db), &[("db", dump(1))]).await;
    let summary = restore_from(&b, &request(|r| r.to = vec!["t1".into()]))
        .await
        .expect("restored");
    assert_eq!(summary.manifest.id, b.manifest.id);
    let restored = db.restores();
    assert_eq!(restored.len(), 1);
    assert_eq!(restored[0].options.target, "t1");
    assert!(restored[0].complete);
    assert!(restored[0].data == dump(1), "the restore got other bytes");
    assert!(
        summary
            .lines
            .iter()
            .any(|l| l.contains("restored 40000 bytes into t1")),
        "{:?}",
        summary.lines
    );
}

#[tokio::test]
async fn a_dry_run_restores_nothing() {
    let db = FakeDb::new("db", dump(1));
    let b = backup(std::slice::from_ref(&db), &[("db", dump(1))]).await;
    let summary = restore_from(
        &b,
        &request(|r| {
            r.to = vec!["t1".into()];
            r.dry_run = true;
        }),
    )
    .await
    .expect("a dry run");
    assert!(db.restores().is_empty());
    assert!(
        summary.lines.iter().any(|l| l.contains("would restore")),
        "{:?}",
        summary.lines
    );
}

#[tokio::test]
async fn a_damaged_copy_never_reaches_the_database() {
    let db = FakeDb::new("db", dump(1));
    let b = backup(std::slice::from_ref(&db), &[("db", dump(1))]).await;
    let key = b.manifest.sources[0].key.clone();
    let mut bytes = b.st.object(&key).expect("the object").data.to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    b.st.insert(&key, bytes);
    let e = restore_from(&b, &request(|r| r.to = vec!["t1".into()]))
        .await
        .expect_err("a damaged copy");
    // Not even the part before the damage: the copy was read through its check first.
    assert!(db.restores().is_empty(), "damaged bytes were applied ({e})");
    assert!(matches!(e, RestoreError::NoIntactCopy(_)), "{e}");
}

#[tokio::test]
async fn an_unreadable_copy_never_reaches_the_database() {
    for fault in [
        Fault::on(Op::Get).key("*.fake*").after_bytes(1000),
        Fault::on(Op::Get).key("*.fake*").kind(FaultKind::NotFound),
    ] {
        let db = FakeDb::new("db", dump(1));
        let b = backup(std::slice::from_ref(&db), &[("db", dump(1))]).await;
        b.st.fail(fault.clone());
        let e = restore_from(&b, &request(|r| r.to = vec!["t1".into()]))
            .await
            .expect_err("an unreadable copy");
        assert!(db.restores().is_empty(), "{fault:?}: a restore ran ({e})");
        assert!(
            matches!(
                e,
                RestoreError::NoIntactCopy(_) | RestoreError::Database { .. }
            ),
            "{fault:?}: {e}"
        );
    }
}
