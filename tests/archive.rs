//! Archive storage classes against moto: what goes into the archive class and what stays
//! STANDARD, and retention honouring the class's minimum storage duration.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Job, PgServer, S3Server, read_tree, run_stowage, seed_sample_db, text, toml_str};

const BUCKET: &str = "archive";

/// Job "app": a PostgreSQL database and a directory of files, to S3 destination "cold"
/// (`cold` is its extra keys) and, with `second`, a second S3 destination "hot".
fn setup(pg: &PgServer, s3: &S3Server, cold: &str, second: Option<&str>) -> Job {
    let job = Job::new("app");
    let files = job.path("uploads");
    std::fs::create_dir_all(&files).expect("mkdir");
    std::fs::write(files.join("small.txt"), "a small attachment\n").expect("write");
    // Above the small-file limit (1 MiB): streamed as its own upload.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(files.join("big.bin"), big).expect("write");
    let mut job = job.s3("cold", s3, BUCKET, &format!("prefix = \"cold\"\n{cold}\n"));
    if let Some(extra) = second {
        job = job.s3("hot", s3, BUCKET, &format!("prefix = \"hot\"\n{extra}\n"));
    }
    job.postgres("db", &pg.url("app"))
        .source(&format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n",
            toml_str(files.display())
        ))
        .write()
}

/// PostgreSQL seeded with `rows`, moto with the bucket, and the job's config.
async fn stack(rows: usize, cold: &str, second: Option<&str>) -> (PgServer, S3Server, Job) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", rows);
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let setup = setup(&pg, &s3, cold, second);
    (pg, s3, setup)
}

/// Every object under `prefix` with its storage class (moto names STANDARD explicitly).
async fn classes(s3: &S3Server, prefix: &str) -> BTreeMap<String, String> {
    let client = s3.client().await;
    let out = client
        .list_objects_v2()
        .bucket(BUCKET)
        .prefix(prefix)
        .send()
        .await
        .expect("list");
    out.contents()
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.storage_class()
                    .map(|c| c.as_str().to_string())
                    .unwrap_or_else(|| "STANDARD".into()),
            )
        })
        .collect()
}

fn run_ok(setup: &Job) -> String {
    let out = run_stowage(&setup.config, ["run", "app"]);
    assert!(out.status.success(), "run failed:\n{}", text(&out));
    text(&out)
}

/// Data objects (the dump, file blobs of either size) go into the destination's class;
/// the manifest, the files index and its blob list stay STANDARD, so `list` and a restore's planning
/// never need a retrieval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_in_the_archive_class_manifests_and_indexes_standard() {
    let (_pg, s3, setup) = stack(200, "storage_class = \"DEEP_ARCHIVE\"", None).await;
    run_ok(&setup);

    let objects = classes(&s3, "cold/").await;
    let of = |suffix: &str| -> Vec<(&String, &String)> {
        objects
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .collect()
    };
    let dumps = of(".pgdump.zst");
    let manifests = of("manifest.json");
    let indexes = of(".files.json.zst");
    let refs = of(".blobs.txt.zst");
    let blobs: Vec<(&String, &String)> = objects
        .iter()
        .filter(|(k, _)| k.contains("/blobs/"))
        .collect();
    assert_eq!(
        (dumps.len(), manifests.len(), indexes.len(), blobs.len()),
        (1, 1, 1, 2),
        "{objects:#?}"
    );
    for (k, c) in dumps.iter().chain(&blobs) {
        assert_eq!(c.as_str(), "DEEP_ARCHIVE", "{k}");
    }
    assert_eq!(refs.len(), 1, "{objects:#?}");
    for (k, c) in manifests.iter().chain(&indexes).chain(&refs) {
        assert_eq!(c.as_str(), "STANDARD", "{k}");
    }
    // Listing reads only STANDARD objects: it works without any retrieval.
    let out = run_stowage(&setup.config, ["list", "app"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// keep_last = 1 on DEEP_ARCHIVE keeps every backup younger than 180 days (and says
/// why); with early_delete = true the rule applies as written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_backups_younger_than_the_minimum_storage_duration() {
    let (_pg, s3, setup) = stack(
        50,
        "storage_class = \"DEEP_ARCHIVE\"\nretention = { keep_last = 1 }",
        Some(
            "storage_class = \"DEEP_ARCHIVE\"\nretention = { keep_last = 1 }\nearly_delete = true",
        ),
    )
    .await;
    let mark = s3.request_mark();
    let mut log = String::new();
    for _ in 0..3 {
        log = run_ok(&setup);
    }
    // Runs, retention and the blob sweep read manifests and indexes only: never an
    // archived object (which would need a retrieval).
    let reads: Vec<String> = s3
        .requests_since(mark)
        .into_iter()
        .filter(|r| r.is_download())
        .filter_map(|r| r.key_in(BUCKET).map(str::to_string))
        .collect();
    assert!(
        reads.iter().all(|k| k.ends_with("manifest.json")
            || k.ends_with(".files.json.zst")
            || k.ends_with(".blobs.txt.zst")),
        "{reads:?}"
    );
    let manifests = |prefix: &'static str| {
        let s3 = &s3;
        async move {
            classes(s3, prefix)
                .await
                .into_keys()
                .filter(|k| k.ends_with("manifest.json"))
                .count()
        }
    };
    assert_eq!(manifests("cold/").await, 3, "{log}");
    assert_eq!(manifests("hot/").await, 1, "{log}");
    assert!(
        log.contains("retention on cold: keeping 2 backup(s) the rules would remove: younger than DEEP_ARCHIVE's minimum storage duration of 180 days"),
        "{log}"
    );
}

/// RestoreObject requests moto has answered since `mark`, by key.
fn retrievals_since(s3: &S3Server, mark: usize) -> Vec<String> {
    s3.requests_since(mark)
        .into_iter()
        .filter(|r| r.method == "POST" && r.query.split('&').any(|q| q == "restore"))
        .filter_map(|r| r.key_in(BUCKET).map(str::to_string))
        .collect()
}

/// A restore target: a new database and an empty directory.
fn target(pg: &PgServer, setup: &Job, name: &str) -> (String, PathBuf) {
    pg.create_db(name);
    let dir = setup.path(format!("{name}-files"));
    (pg.url(name), dir)
}

fn assert_restored(pg: &PgServer, setup: &Job, db: &str, files: &Path) {
    assert_eq!(pg.table_checksums(db), pg.table_checksums("app"));
    assert_eq!(read_tree(files), read_tree(&setup.path("uploads")));
}

/// The lifecycle in three restores: the first requests the retrievals and exits 4 with the
/// state counts; `status` shows them pending; once moto completes them the restore goes
/// through and the data is equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_from_deep_archive_requests_then_restores() {
    let (pg, s3, setup) = stack(
        100,
        "storage_class = \"DEEP_ARCHIVE\"\nretrieval = { days = 2, tier = \"Bulk\" }",
        None,
    )
    .await;
    run_ok(&setup);
    let (url, dir) = target(&pg, &setup, "restored");
    let files_to = dir.to_string_lossy().to_string();
    let restore = [
        "restore",
        "app",
        "latest",
        "--to",
        &url,
        "--files-to",
        &files_to,
    ];
    // The dump and two blobs; once requested, each stays pending for one read of its
    // state (`status` below) and is retrieved at the next.
    s3.hold_retrievals(2);

    let mark = s3.request_mark();
    let (code, out) = setup.stowage(&restore);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains("is not retrieved yet: exists 0, available 0, pending 3, ready 0, local 0; requested 3 object(s) now; retrieval takes within 48 hours (Bulk tier)"),
        "{out}"
    );
    assert_eq!(retrievals_since(&s3, mark).len(), 3);
    assert!(
        pg.table_checksums("restored").is_empty(),
        "nothing restored yet"
    );

    let (code, out) = setup.stowage(&["status", "app", "--files-to", &files_to]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(
            "(DEEP_ARCHIVE; retrieval: Bulk tier, usually within 48 hours, readable for 2 days)"
        ),
        "{out}"
    );
    assert!(
        out.contains("  total    exists 0, available 0, pending 3, ready 0, local 0"),
        "{out}"
    );

    // The second read of each object's state finds it retrieved.
    let mark = s3.request_mark();
    let (code, out) = setup.stowage(&restore);
    assert_eq!(code, Some(0), "{out}");
    assert!(retrievals_since(&s3, mark).is_empty(), "asked again: {out}");
    assert_restored(&pg, &setup, "restored", &dir);
}

/// `--wait` polls until the retrieval is done, then restores, in one command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_wait_polls_until_retrieved() {
    let (pg, s3, setup) = stack(100, "storage_class = \"GLACIER\"", None).await;
    run_ok(&setup);
    let (url, dir) = target(&pg, &setup, "restored");
    s3.hold_retrievals(3);
    let (code, out) = setup.stowage(&[
        "restore",
        "app",
        "latest",
        "--to",
        &url,
        "--files-to",
        &dir.to_string_lossy(),
        "--wait",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("waiting for the retrieval from cold: 0 of 3 object(s) restorable"),
        "{out}"
    );
    assert!(out.contains("retrieval from cold complete"), "{out}");
    assert_restored(&pg, &setup, "restored", &dir);
}

/// Files already at the target with the backup's content are "exists" and never
/// retrieved: only the missing file's blob is requested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_already_there_are_not_retrieved() {
    let (_pg, s3, setup) = stack(20, "storage_class = \"DEEP_ARCHIVE\"", None).await;
    // A few more small files: most of them will be at the target already.
    for i in 0..8 {
        std::fs::write(
            setup.path("uploads").join(format!("doc-{i}.txt")),
            format!("document {i}\n"),
        )
        .expect("write");
    }
    run_ok(&setup);
    let dir = setup.path("restore-here");
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (rel, bytes) in read_tree(&setup.path("uploads")) {
        if rel != "doc-3.txt" {
            std::fs::write(dir.join(&rel), bytes).expect("copy");
        }
    }
    let files_to = dir.to_string_lossy().to_string();
    let (code, out) = setup.stowage(&[
        "status",
        "app",
        "--only",
        "uploads",
        "--files-to",
        &files_to,
        "--verbose",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("uploads  exists 9, available 1, pending 0, ready 0, local 0"),
        "{out}"
    );
    let mark = s3.request_mark();
    let (code, out) = setup.stowage(&[
        "restore",
        "app",
        "--only",
        "uploads",
        "--files-to",
        &files_to,
    ]);
    assert_eq!(code, Some(4), "{out}");
    let asked = retrievals_since(&s3, mark);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert!(asked[0].contains("/blobs/"), "{asked:?}");
    // moto completes it at once by default.
    let (code, out) = setup.stowage(&[
        "restore",
        "app",
        "--only",
        "uploads",
        "--files-to",
        &files_to,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(read_tree(&dir), read_tree(&setup.path("uploads")));
}

/// `retrieve` twice is fine (the second asks for nothing new while pending); with
/// `--download-to` a second restore reads the kept copies: no retrieval, no download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrieve_is_idempotent_and_download_to_keeps_copies() {
    let (pg, s3, setup) = stack(50, "storage_class = \"DEEP_ARCHIVE\"", None).await;
    run_ok(&setup);
    s3.hold_retrievals(2);
    let (code, out) = setup.stowage(&["retrieve", "app", "--only", "db"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("requested the retrieval of 1 object(s) now"),
        "{out}"
    );
    assert!(
        out.contains("1 object(s) pending: Standard tier, usually within 12 hours"),
        "{out}"
    );
    let mark = s3.request_mark();
    let (code, out) = setup.stowage(&["retrieve", "app", "--only", "db"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("requested the retrieval of 0 object(s) now"),
        "{out}"
    );
    assert!(retrievals_since(&s3, mark).is_empty());

    let keep = setup.path("kept");
    let keep_s = keep.to_string_lossy().to_string();
    let restore_kept = |url: &str| {
        setup.stowage(&[
            "restore",
            "app",
            "--only",
            "db",
            "--to",
            url,
            "--download-to",
            &keep_s,
        ])
    };
    let (url, _) = target(&pg, &setup, "first");
    let (code, out) = restore_kept(&url);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = setup.stowage(&["status", "app", "--only", "db", "--download-to", &keep_s]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("exists 0, available 0, pending 0, ready 0, local 1"),
        "{out}"
    );

    let (url, _) = target(&pg, &setup, "second");
    let mark = s3.request_mark();
    let (code, out) = restore_kept(&url);
    assert_eq!(code, Some(0), "{out}");
    let since = s3.requests_since(mark);
    assert!(
        !since
            .iter()
            .any(|r| r.method == "POST" && r.query.contains("restore")),
        "{since:?}"
    );
    assert!(
        !since
            .iter()
            .any(|r| r.is_download() && r.path.ends_with(".pgdump.zst")),
        "downloaded again: {since:?}"
    );
    assert_eq!(pg.table_checksums("second"), pg.table_checksums("app"));
}

/// An archived object read without going through the lifecycle (here: the config no
/// longer says the destination is an archive class) is named as not retrieved, with what
/// to run, never blamed on credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unretrieved_object_error_says_what_to_run() {
    let (pg, s3, setup) = stack(20, "storage_class = \"DEEP_ARCHIVE\"", None).await;
    let id_line = run_ok(&setup);
    let body = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace("storage_class = \"DEEP_ARCHIVE\"\n", "");
    std::fs::write(&setup.config, body).expect("write");
    let (url, _) = target(&pg, &setup, "restored");
    let (code, out) = setup.stowage(&["restore", "app", "--only", "db", "--to", &url]);
    assert_eq!(code, Some(1), "{out}");
    assert!(!out.contains("credentials"), "{out}");
    let id = id_line
        .split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("backup id");
    let error = out
        .lines()
        .find(|l| l.starts_with("error:"))
        .expect("an error line")
        .replace(id, "<id>")
        .replace(&s3.endpoint(), "<endpoint>");
    insta::assert_snapshot!(error);

    // What it says to run works, whatever the config says.
    let (code, out) = setup.stowage(&["retrieve", "app", "--only", "db", "--from", "cold"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("requested the retrieval of 1 archived object(s) now"),
        "{out}"
    );
    let (code, out) = setup.stowage(&["restore", "app", "--only", "db", "--to", &url]);
    assert_eq!(code, Some(0), "{out}");
}

/// The README's by-hand recipe for DEEP_ARCHIVE, with the AWS CLI against moto: read the
/// manifest (STANDARD), request the retrieval, check it, download and restore.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_by_hand_restore_from_deep_archive() {
    let (pg, s3, setup) = stack(100, "storage_class = \"DEEP_ARCHIVE\"", None).await;
    let log = run_ok(&setup);
    let id = log
        .split("id=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("backup id");
    pg.create_db("by_hand");
    let aws = common::aws_cli();
    let script = format!(
        r#"set -eu
aws() {{ "$AWS_BIN" --endpoint-url "$ENDPOINT" "$@"; }}
K=cold/app/{id}
aws s3 cp s3://archive/$K/manifest.json - | jq -r '.sources[].key'   # STANDARD: readable now
aws s3api restore-object --bucket archive --key $K/db.pgdump.zst \
  --restore-request '{{"Days": 3, "GlacierJobParameters": {{"Tier": "Bulk"}}}}'
aws s3api head-object --bucket archive --key $K/db.pgdump.zst --query Restore --output text
aws s3 cp s3://archive/$K/db.pgdump.zst - | zstd -d \
  | pg_restore --single-transaction --exit-on-error -d "$URL"
"#
    );
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("AWS_BIN", &aws)
        .env("ENDPOINT", s3.endpoint())
        .env("AWS_ACCESS_KEY_ID", s3.access_key())
        .env("AWS_SECRET_ACCESS_KEY", s3.secret_key())
        .env("AWS_DEFAULT_REGION", s3.region())
        .env("URL", pg.url("by_hand"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                pg.bin_dir().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .expect("bash");
    let said = text(&out);
    assert!(out.status.success(), "{script}\n{said}");
    assert!(
        said.contains("app/") && said.contains("db.pgdump.zst"),
        "{said}"
    );
    assert!(said.contains("ongoing-request=\"false\""), "{said}");
    assert_eq!(pg.table_checksums("by_hand"), pg.table_checksums("app"));
}
