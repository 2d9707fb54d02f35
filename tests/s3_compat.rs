//! One S3 suite, run against three independent implementations (moto, SeaweedFS, rclone's
//! `serve s3`): backup and restore of a database, a files source and a streamed command
//! dump; a multipart upload whose parts grow; more than 1,000 blob keys to list; the job
//! lock refusing a second run; a crashed run's open upload and objects recovered by the
//! next daemon start; retention with its blob sweep; verify; `checksums = "when_required"`;
//! wrong credentials; `copy` of a local backup into the store; an archive class on a store
//! without RestoreObject. Every step that stores data is checked by restoring and
//! comparing, not by exit codes alone.
//!
//! What differed between the implementations, and how stowage handles it, is in
//! `src/storage/s3/compat.rs`.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    Job, JobBuilder, PgServer, Rng, S3Server, read_tree, seed_sample_db, sha256_hex, text,
    toml_str, write_file, write_random_files,
};

const BUCKET: &str = "compat";
const PREFIX: &str = "compat";
const JOB: &str = "app";
/// Files in the files source: past S3's 1,000 keys a listing page.
const FILES: usize = 1100;
/// The command source's dump: incompressible, a multipart upload of growing parts (5 MiB,
/// 10 MiB, then the rest, with `max_parts = 4`).
const BIG: usize = 24 << 20;
/// How much of the dump goes out before a gated run waits (a multipart upload is open then).
const BEFORE_GATE: usize = 12 << 20;
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto() {
    suite(&S3Server::moto()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs() {
    suite(&S3Server::seaweedfs()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone() {
    suite(&S3Server::rclone()).await;
}

/// Incompressible bytes from a seed.
fn noise(len: usize) -> Vec<u8> {
    use sha2::Digest;
    let mut out = Vec::with_capacity(len + 32);
    let mut block = sha2::Sha256::digest(b"s3 compat").to_vec();
    while out.len() < len {
        block = sha2::Sha256::digest(&block).to_vec();
        out.extend_from_slice(&block);
    }
    out.truncate(len);
    out
}

/// Keys under `rel` (relative to the destination's prefix) in the bucket.
async fn keys(s3: &S3Server, rel: &str) -> Vec<String> {
    s3.list_keys(BUCKET, &format!("{PREFIX}/{rel}")).await
}

async fn suite(s3: &S3Server) {
    let kind = s3.kind();
    s3.create_bucket(BUCKET).await;
    let pg = PgServer::start();
    seed_sample_db(&pg, JOB, 300);

    let job = Job::new(JOB);
    let uploads = job.path("uploads");
    let mut rng = Rng::new(27);
    let rels: Vec<String> = (0..FILES)
        .map(|i| format!("d{}/f{i:04}.bin", i % 7))
        .collect();
    write_random_files(&mut rng, &uploads, rels.clone(), 64..512);
    let big = noise(BIG);
    let big_file = job.path("big.bin");
    std::fs::write(&big_file, &big).expect("write big.bin");
    let gate = job.path("gate");
    std::fs::write(&gate, "").expect("open the gate");
    let big_out = job.path("big.restored");
    // Without the gate file, the dump stops after BEFORE_GATE bytes until it appears.
    let dump = format!(
        "head -c {BEFORE_GATE} {f}; while [ ! -e {g} ]; do sleep 0.1; done; tail -c +{} {f}",
        BEFORE_GATE + 1,
        f = big_file.display(),
        g = gate.display()
    );
    let job = job
        .s3(
            "offsite",
            s3,
            BUCKET,
            &format!(
                "prefix = {}\npart_size = \"5MiB\"\nmax_parts = 4\nretention = {{ keep_last = 2 }}\n",
                toml_str(PREFIX)
            ),
        )
        .postgres("db", &pg.url(JOB))
        .source(&format!(
            "type = \"command\"\nname = \"big\"\ndump = [\"sh\", \"-c\", {}]\nrestore = [\"sh\", \"-c\", {}]\n",
            toml_str(&dump),
            toml_str(format!("cat > {}", big_out.display()))
        ))
        // Databases (and dumps) first, then the files their rows may name.
        .source(&format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n",
            toml_str(uploads.display())
        ))
        .write();
    let restore_all = |id: &str, db: &str, files_to: &Path| {
        pg.create_db(db);
        let _ = std::fs::remove_file(&big_out);
        let (code, out) = job.stowage(&[
            "restore",
            JOB,
            id,
            "--to",
            &format!("db={}", pg.url(db)),
            "--to",
            "big=-",
            "--files-to",
            files_to.to_str().expect("utf-8"),
        ]);
        assert_eq!(code, Some(0), "{kind}: restore {id}:\n{out}");
    };

    // 0. Wrong credentials are refused, naming the bucket and what to check.
    if s3.checks_signatures() {
        let secret = job.path("s3_secret");
        std::fs::write(&secret, "not-the-secret").expect("write secret");
        let (code, out) = job.stowage(&["run", JOB]);
        assert_eq!(code, Some(1), "{kind}: {out}");
        assert!(
            out.contains(&format!("access denied to bucket \"{BUCKET}\""))
                && out.contains("check the credentials"),
            "{kind}: {out}"
        );
        std::fs::write(&secret, s3.secret_key()).expect("write secret");
    }

    // 1. The first backup is the catch-up run of a daemon's first start, after its check
    //    for leftovers of crashed runs (open uploads included) on a bucket that has had
    //    none. Every source restores as it was; the dump went up in growing parts.
    let mut daemon = job.daemon();
    daemon.wait_for_output(&format!("backup success: job={JOB}"), WAIT);
    daemon.signal("TERM");
    let log = text(&daemon.wait(WAIT));
    assert!(!log.contains("cannot check"), "{kind}: {log}");
    let b1 = job.ids("offsite").first().cloned().expect("b1");
    let want_db = pg.table_checksums(JOB);
    let want_files = read_tree(&uploads);
    let r1 = job.path("r1");
    restore_all(&b1, "r1", &r1);
    assert_eq!(pg.table_checksums("r1"), want_db, "{kind}: database of b1");
    assert!(read_tree(&r1) == want_files, "{kind}: files of b1");
    assert!(
        std::fs::read(&big_out).expect("big restored") == big,
        "{kind}: dump of b1"
    );
    let dump_key = keys(s3, &format!("{JOB}/{b1}/"))
        .await
        .into_iter()
        .find(|k| k.contains("/big."))
        .unwrap_or_else(|| panic!("{kind}: no dump object of b1"));
    let head = s3
        .client()
        .await
        .head_object()
        .bucket(BUCKET)
        .key(&dump_key)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{kind}: head {dump_key}: {e}"));
    assert!(
        head.content_length().unwrap_or(0) >= BIG as i64,
        "{kind}: {dump_key} is {:?} bytes",
        head.content_length()
    );
    // A multipart ETag says its part count (`"…-3"`): 3 parts at 5 MiB, 10 MiB, then the
    // rest, where fixed 5 MiB parts would have needed 5 (and max_parts allows 4).
    let etag = head.e_tag().unwrap_or_default().trim_matches('"');
    if let Some((_, n)) = etag.rsplit_once('-') {
        assert_eq!(n, "3", "{kind}: parts of {dump_key} ({etag})");
    }
    let blobs = keys(s3, &format!("{JOB}/blobs/")).await;
    assert_eq!(blobs.len(), FILES, "{kind}: one blob per file");

    // 2. A run held inside its multipart upload: a second run is refused by the job lock.
    //    Then it is killed; the next daemon start aborts its upload and removes its objects
    //    and its lock.
    std::fs::remove_file(&gate).expect("close the gate");
    let mut held = job.spawn(&["run", JOB], &[]);
    let deadline = Instant::now() + WAIT;
    while s3.open_multipart_uploads(BUCKET).await == 0 {
        assert!(
            held.exited().is_none(),
            "{kind}: the held run ended:\n{}",
            held.output_so_far()
        );
        assert!(
            Instant::now() < deadline,
            "{kind}: no multipart upload opened:\n{}",
            held.output_so_far()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let locks = keys(s3, &format!("{JOB}/locks/")).await;
    assert!(
        locks.iter().any(|k| k.ends_with(".backup")),
        "{kind}: the held run's lock: {locks:?}"
    );
    let (code, out) = job.stowage(&["run", JOB]);
    assert_eq!(
        code,
        Some(1),
        "{kind}: a second run must be refused:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "job {JOB} is already running: a backup by stowage on host"
        )) && out.contains(&format!("pid {}", held.pid())),
        "{kind}: the refusal names the holder:\n{out}"
    );
    held.signal("KILL");
    held.wait(WAIT);
    std::fs::write(&gate, "").expect("open the gate");
    assert_eq!(
        job.ids("offsite"),
        vec![b1.clone()],
        "{kind}: nothing published"
    );
    let mut daemon = job.daemon();
    daemon.wait_for_output("recovered leftovers of interrupted runs on", WAIT);
    daemon.signal("TERM");
    let out = daemon.wait(WAIT);
    let log = text(&out);
    assert!(
        log.contains("1 unpublished backup(s)") && log.contains("1 open upload(s)"),
        "{kind}: {log}"
    );
    assert!(!log.contains("cannot check"), "{kind}: {log}");
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0, "{kind}");
    assert!(
        keys(s3, &format!("{JOB}/locks/")).await.is_empty(),
        "{kind}"
    );
    let left: Vec<String> = keys(s3, &format!("{JOB}/"))
        .await
        .into_iter()
        .filter(|k| !k.contains("/blobs/") && !k.contains(&format!("/{b1}/")))
        .collect();
    assert!(
        left.is_empty(),
        "{kind}: the killed run's objects: {left:?}"
    );

    // 3. 100 files gone, 10 new, rows changed. The blob listing (1,100 keys, two pages)
    //    finds every blob already there: only the 10 new ones go up.
    for rel in &rels[..100] {
        std::fs::remove_file(uploads.join(rel)).expect("remove");
    }
    let new: Vec<String> = (0..10).map(|i| format!("new/n{i}.bin")).collect();
    write_random_files(&mut rng, &uploads, new, 64..512);
    pg.psql(
        JOB,
        "update public.customers set name = name || '2' where id % 3 = 0",
    );
    let b2 = job.backup();
    let files_b2 = read_tree(&uploads);
    let (code, list) = job.stowage(&["list", JOB]);
    assert_eq!(code, Some(0), "{list}");
    let line = list
        .lines()
        .find(|l| l.contains(&b2))
        .unwrap_or_else(|| panic!("{kind}: {b2} listed:\n{list}"));
    assert!(
        line.contains(&format!("{} files, 10 new", FILES - 90)),
        "{kind}: {line}"
    );

    // 4. 5 files rewritten, rows changed again. keep_last = 2 deletes b1; the sweep removes
    //    the 100 blobs only b1 had and keeps the 5 old ones b2 still needs.
    for rel in &rels[200..205] {
        write_file(&uploads, rel, &rng.bytes(300));
    }
    pg.psql(
        JOB,
        "update public.customers set name = name || '3' where id % 5 = 0",
    );
    let b3 = job.backup();
    assert_eq!(job.ids("offsite"), vec![b3.clone(), b2.clone()], "{kind}");
    let blobs = keys(s3, &format!("{JOB}/blobs/")).await;
    assert_eq!(blobs.len(), FILES - 90 + 5, "{kind}: blobs after the sweep");
    let mut referenced: Vec<String> = files_b2
        .values()
        .chain(read_tree(&uploads).values())
        .map(|d| {
            let sha = sha256_hex(d);
            format!("{PREFIX}/{JOB}/blobs/{}/{sha}.zst", &sha[..2])
        })
        .collect();
    referenced.sort();
    referenced.dedup();
    assert!(
        blobs == referenced,
        "{kind}: the blobs are those b2 and b3 use"
    );
    assert!(
        keys(s3, &format!("{JOB}/{b1}/")).await.is_empty(),
        "{kind}: b1 deleted"
    );

    // 5. verify reads both backups whole; the latest restores whole, b2's files as they were.
    let (code, out) = job.stowage(&["verify", JOB, "--all"]);
    assert_eq!(code, Some(0), "{kind}: {out}");
    assert!(
        out.contains("2 backup copy(ies) checked, all whole and readable"),
        "{kind}: {out}"
    );
    assert!(
        out.contains(&format!(
            "uploads: index ok, {n} file(s), all {n} blob(s) present",
            n = FILES - 90
        )),
        "{kind}: {out}"
    );
    let r3 = job.path("r3");
    restore_all(&b3, "r3", &r3);
    assert_eq!(
        pg.table_checksums("r3"),
        pg.table_checksums(JOB),
        "{kind}: database of b3"
    );
    assert!(read_tree(&r3) == read_tree(&uploads), "{kind}: files of b3");
    assert!(
        std::fs::read(&big_out).expect("big restored") == big,
        "{kind}: dump of b3"
    );
    let r2 = job.path("r2");
    let (code, out) = job.stowage(&[
        "restore",
        JOB,
        &b2,
        "--only",
        "uploads",
        "--files-to",
        r2.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{kind}: {out}");
    let got: BTreeMap<String, Vec<u8>> = read_tree(&r2);
    assert!(got == files_b2, "{kind}: files of b2");
    assert!(
        keys(s3, &format!("{JOB}/locks/")).await.is_empty(),
        "{kind}"
    );
    assert_eq!(s3.open_multipart_uploads(BUCKET).await, 0, "{kind}");

    // 6. `checksums = "when_required"` (for stores that refuse the SDK's default request
    //    checksums): puts and a multipart upload without them, read back without them.
    relaxed_checksums(s3, &big_file, &big).await;

    // 7. `copy`: a backup made to a local destination, copied into the store (the dump
    //    in growing parts, the blobs) and restored from there.
    copied_in(s3, &big_file, &big).await;

    // 8. A store without RestoreObject, written with an archive class: a restore fails saying
    //    why, not with a bare HTTP 405.
    if !s3.supports_storage_classes() {
        no_retrieval(s3).await;
    }
}

async fn no_retrieval(s3: &S3Server) {
    let kind = s3.kind();
    let job = Job::new(JOB);
    let out_file = job.path("dump.restored");
    let job = job
        .s3(
            "offsite",
            s3,
            BUCKET,
            "prefix = \"archived\"\nstorage_class = \"GLACIER\"\n",
        )
        .source(&format!(
            "type = \"command\"\nname = \"dump\"\ndump = [\"echo\", \"archived\"]\nrestore = [\"sh\", \"-c\", {}]\n",
            toml_str(format!("cat > {}", out_file.display()))
        ))
        .write();
    let id = job.backup();
    let (code, out) = job.stowage(&["restore", JOB, &id, "--to", "dump=-"]);
    assert_ne!(code, Some(0), "{kind}: {out}");
    assert!(
        out.contains("this store has no RestoreObject: it does not archive"),
        "{kind}: {out}"
    );
    assert!(!out_file.exists(), "{kind}: nothing restored");
}

async fn relaxed_checksums(s3: &S3Server, big_file: &Path, big: &[u8]) {
    let kind = s3.kind();
    let job = Job::new(JOB);
    let files = job.path("files");
    let want = write_random_files(
        &mut Rng::new(6),
        &files,
        (0..3).map(|i| format!("f{i}")),
        100..2000,
    );
    let out_file = job.path("dump.restored");
    let job = job
        .s3(
            "offsite",
            s3,
            BUCKET,
            "prefix = \"relaxed\"\npart_size = \"5MiB\"\nchecksums = \"when_required\"\n",
        )
        .source(&format!(
            "type = \"command\"\nname = \"dump\"\ndump = [\"head\", \"-c\", \"{BEFORE_GATE}\", {}]\nrestore = [\"sh\", \"-c\", {}]\n",
            toml_str(big_file.display()),
            toml_str(format!("cat > {}", out_file.display()))
        ))
        .source(&format!(
            "type = \"files\"\nname = \"files\"\npath = {}\n",
            toml_str(files.display())
        ))
        .write();
    let id = job.backup();
    let to = job.path("restored");
    let (code, out) = job.stowage(&[
        "restore",
        JOB,
        &id,
        "--to",
        "dump=-",
        "--files-to",
        to.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{kind}: {out}");
    assert!(
        std::fs::read(&out_file).expect("dump restored") == big[..BEFORE_GATE],
        "{kind}: the dump, with checksums only where required"
    );
    assert!(
        read_tree(&to) == want,
        "{kind}: the files, with checksums only where required"
    );
    let (code, out) = job.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "{kind}: {out}");
}

/// A backup of a local destination copied into the store with `stowage copy`, then
/// restored from the store: the same dump and files.
async fn copied_in(s3: &S3Server, big_file: &Path, big: &[u8]) {
    let kind = s3.kind();
    let builder = Job::new(JOB);
    let files = builder.path("files");
    let want = write_random_files(
        &mut Rng::new(8),
        &files,
        (0..20).map(|i| format!("d/f{i}")),
        100..4000,
    );
    let out_file = builder.path("dump.restored");
    let with_sources = |b: JobBuilder| {
        b.source(&format!(
            "type = \"command\"\nname = \"dump\"\ndump = [\"head\", \"-c\", \"{BEFORE_GATE}\", {}]\nrestore = [\"sh\", \"-c\", {}]\n",
            toml_str(big_file.display()),
            toml_str(format!("cat > {}", out_file.display()))
        ))
        .source(&format!(
            "type = \"files\"\nname = \"files\"\npath = {}\n",
            toml_str(files.display())
        ))
    };
    let job = with_sources(builder.local("near", None)).write();
    let id = job.backup();
    with_sources(Job::config_in(job.dir.path(), JOB).local("near", None).s3(
        "far",
        s3,
        BUCKET,
        "prefix = \"copied\"\npart_size = \"5MiB\"\n",
    ))
    .write_as("stowage.toml");
    let (code, out) = job.stowage(&["copy", JOB, &id, "--from", "near", "--to", "far"]);
    assert_eq!(code, Some(0), "{kind}: copy:\n{out}");
    assert_eq!(job.ids("far"), vec![id.clone()], "{kind}");
    let to = job.path("restored");
    let (code, out) = job.stowage(&[
        "restore",
        JOB,
        &id,
        "--from",
        "far",
        "--to",
        "dump=-",
        "--files-to",
        to.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{kind}: restore of the copy:\n{out}");
    assert!(
        std::fs::read(&out_file).expect("dump restored") == big[..BEFORE_GATE],
        "{kind}: the copied dump"
    );
    assert!(read_tree(&to) == want, "{kind}: the copied files");
}
