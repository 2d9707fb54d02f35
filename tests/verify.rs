//! `stowage verify` against real stores: good backups pass; a flipped byte, a deleted
//! object, a missing blob and a dump the engine cannot read are each named, exit 1.

mod common;

use std::path::{Path, PathBuf};

use std::time::Duration;

use common::{Job, PgServer, Receiver, S3Server, seed_sample_db, text, toml_str};

const BUCKET: &str = "verify";

async fn stack() -> (PgServer, S3Server, Job) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 100);
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let job = Job::new("app");
    let uploads = job.path("uploads");
    std::fs::create_dir_all(uploads.join("a")).expect("mkdir");
    for i in 0..5 {
        std::fs::write(
            uploads.join(format!("a/file-{i}.txt")),
            format!("file {i}\n"),
        )
        .expect("write");
    }
    let setup = job
        .local("local", None)
        .s3("offsite", &s3, BUCKET, "")
        .postgres("db", &pg.url("app"))
        .source(&format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n",
            toml_str(uploads.display())
        ))
        .write();
    (pg, s3, setup)
}

fn dump_path(setup: &Job, id: &str) -> PathBuf {
    setup.backup_dir("local", id).join("db.pgdump.zst")
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_what_is_wrong() {
    let (_pg, s3, setup) = stack().await;
    let first = setup.backup();
    let second = setup.backup();

    // Good backups: every copy is whole and readable.
    let (code, out) = setup.stowage(&["verify", "app", "--all"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("verify app: 4 backup copy(ies) checked, all whole and readable"),
        "{out}"
    );
    assert!(
        out.contains(&format!("verify app {second} on offsite: ok (db: ")),
        "{out}"
    );
    assert!(
        out.contains("sha256 ok, postgres reads it (3 table(s)"),
        "{out}"
    );
    assert!(
        out.contains("uploads: index ok, 5 file(s), all 5 blob(s) present"),
        "{out}"
    );

    // One flipped byte in a local dump: named, exit 1; the other copies are fine.
    flip_a_byte(&dump_path(&setup, &first));
    let (code, out) = setup.stowage(&["verify", "app", &first]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("verify app {first} on local: 1 problem(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "db: app/{first}/db.pgdump.zst is corrupt: expected"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("verify app {first} on offsite: ok")),
        "{out}"
    );

    // Objects deleted from S3: the dump and one blob, each named.
    let keys = s3.list_keys(BUCKET, "app/").await;
    let blob = keys
        .iter()
        .find(|k| k.contains("/blobs/"))
        .expect("a blob")
        .clone();
    let client = s3.client().await;
    for key in [format!("app/{second}/db.pgdump.zst"), blob.clone()] {
        client
            .delete_object()
            .bucket(BUCKET)
            .key(&key)
            .send()
            .await
            .expect("delete");
    }
    let (code, out) = setup.stowage(&["verify", "app", &second, "--from", "offsite"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("db: app/{second}/db.pgdump.zst is missing")),
        "{out}"
    );
    assert!(
        out.contains(&format!("uploads: blob {blob} is missing (file a/file-")),
        "{out}"
    );
    assert!(!out.contains("on local"), "--from offsite only: {out}");
}

/// A dump whose bytes match its manifest but that the engine cannot read (here: written
/// as valid zstd of something that is not a pg_dump archive, manifest updated to match).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reads_the_dump_with_the_engine() {
    let (_pg, _s3, setup) = stack().await;
    let id = setup.backup();
    let dump = dump_path(&setup, &id);
    let junk = {
        use std::io::Write;
        let mut child = std::process::Command::new("zstd")
            .args(["-q", "-c"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("zstd");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"PGDMP but not really an archive")
            .expect("write");
        let out = child.wait_with_output().expect("zstd");
        assert!(out.status.success());
        out.stdout
    };
    std::fs::write(&dump, &junk).expect("write");
    let manifest_path = setup.manifest_path("local", &id);
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).expect("read")).expect("json");
    let sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&junk))
    };
    for s in m["sources"].as_array_mut().expect("sources") {
        if s["name"] == "db" {
            s["sha256"] = sha.clone().into();
            s["size"] = junk.len().into();
        }
    }
    std::fs::write(&manifest_path, serde_json::to_vec(&m).expect("json")).expect("write");
    let (code, out) = setup.stowage(&["verify", "app", "--from", "local"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "db: app/{id}/db.pgdump.zst is unreadable by postgres: pg_restore"
        )),
        "{out}"
    );
}

/// `verify = "…"` on a job: the daemon verifies the newest backup on its schedule; a
/// problem makes health unhealthy, naming it, and is sent to the job's webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_verify_reports_to_health_and_webhook() {
    let (_pg, _s3, setup) = stack().await;
    let rx = Receiver::start();
    let body = std::fs::read_to_string(&setup.config)
        .expect("read")
        .replace(
            "destinations = [\"local\", \"offsite\"]",
            "destinations = [\"local\", \"offsite\"]\nverify = \"*/2 * * * * *\"",
        );
    std::fs::write(
        &setup.config,
        format!(
            "{body}\n[[jobs.app.notify]]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\n",
            rx.port
        ),
    )
    .expect("write");
    let id = setup.backup();
    flip_a_byte(&dump_path(&setup, &id));

    let mut daemon = setup.daemon();
    daemon.wait_for_output(
        "verify app: 2 backup copy(ies) checked, 1 problem(s)",
        Duration::from_secs(60),
    );
    let health = || setup.stowage(&["health"]);
    common::wait_for(
        "unhealthy after the verify",
        Duration::from_secs(20),
        || health().0 == Some(1),
    );
    let (_, said) = health();
    assert!(
        said.contains("verify at")
            && said.contains(&format!("db: app/{id}/db.pgdump.zst is corrupt")),
        "{said}"
    );
    let mut hooks = Vec::new();
    common::wait_for("the webhook", Duration::from_secs(20), || {
        hooks.extend(rx.take());
        hooks
            .iter()
            .any(|(_, path, body)| path == "/hook" && body.contains("\"event\":\"verify\""))
    });
    let (_, _, body) = hooks
        .iter()
        .find(|(_, _, b)| b.contains("\"event\":\"verify\""))
        .expect("verify webhook");
    assert!(
        body.contains("\"outcome\":\"failed\"") && body.contains("is corrupt"),
        "{body}"
    );
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}
