//! `stowage verify` against real stores: good backups pass; a flipped byte, a deleted
//! object, a missing blob and a dump the engine cannot read are each named, exit 1.

mod common;

use std::path::{Path, PathBuf};

use std::time::Duration;

use common::{PgServer, Receiver, S3Server, seed_sample_db, text};

const BUCKET: &str = "verify";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn local(&self) -> PathBuf {
        self.dir.path().join("local")
    }

    fn stowage(&self, args: &[&str]) -> (Option<i32>, String) {
        common::stowage_says(&self.config, args)
    }

    /// `stowage run app`; the new backup's id.
    fn backup(&self) -> String {
        common::backup_of(&self.config, "app")
    }
}

async fn stack() -> (PgServer, S3Server, Setup) {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 100);
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let uploads = dir.path().join("uploads");
    std::fs::create_dir_all(uploads.join("a")).expect("mkdir");
    for i in 0..5 {
        std::fs::write(
            uploads.join(format!("a/file-{i}.txt")),
            format!("file {i}\n"),
        )
        .expect("write");
    }
    let secret = dir.path().join("s3_secret");
    std::fs::write(&secret, s3.secret_key()).expect("secret");
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[destinations.local]
type = "local"
path = "{local}"

[destinations.offsite]
type = "s3"
bucket = "{BUCKET}"
endpoint = "{endpoint}"
force_path_style = true
access_key_id = "{key}"
secret_access_key_file = "{secret}"
region = "{region}"

[jobs.app]
schedule = "0 3 * * *"
destinations = ["local", "offsite"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "{url}"

[[jobs.app.sources]]
type = "files"
name = "uploads"
path = "{uploads}"
"#,
            local = dir.path().join("local").display(),
            endpoint = s3.endpoint(),
            key = s3.access_key(),
            secret = secret.display(),
            region = s3.region(),
            url = pg.url("app"),
            uploads = uploads.display(),
        ),
    )
    .expect("config");
    (pg, s3, Setup { dir, config })
}

fn dump_path(setup: &Setup, id: &str) -> PathBuf {
    setup.local().join("app").join(id).join("db.pgdump.zst")
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
    let manifest_path = setup.local().join("app").join(&id).join("manifest.json");
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

    let pid = setup.dir.path().join("stowage.pid");
    let state = setup.dir.path().join("state.json");
    let envs = [
        ("STOWAGE_PID_FILE", pid.as_os_str()),
        ("STOWAGE_STATE_FILE", state.as_os_str()),
    ];
    let mut daemon = common::spawn_stowage_with_env(&setup.config, ["daemon"], &envs);
    daemon.wait_for_output(
        "verify app: 2 backup copy(ies) checked, 1 problem(s)",
        Duration::from_secs(60),
    );
    let str_envs: Vec<(&str, &str)> = envs
        .iter()
        .map(|(k, v)| (*k, v.to_str().expect("utf-8 path")))
        .collect();
    let health = || {
        let out = common::run_stowage_with_env(&setup.config, ["health"], &str_envs);
        (out.status.code(), text(&out))
    };
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
