//! `stowage verify` checks what it says: a Redis backup by its RDB checksum (not a
//! failure for having no tables to list), and with `--read-data` (or a scheduled
//! verify's `read_data`) the content of every blob, not only that it exists.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::redis::RedisServer;
use common::{Job, JobBuilder, text, toml_str};

const JOB: &str = "app";

/// A job `app` on one local destination, stored uncompressed (so a test can damage the
/// stored bytes exactly where it means to), with `job_extra` on the job.
fn job(job_extra: &str) -> JobBuilder {
    Job::with_prefix(JOB, "stowage-verify-data-")
        .local("local", None)
        .job("compression = \"none\"")
        .job(job_extra)
}

/// [`job`] with `sources` (whole `[[jobs.app.sources]]` sections).
fn setup(job_extra: &str, sources: &str) -> Job {
    job(job_extra).section(sources).write()
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A backup holding a Redis source verifies (today it fails: nothing to list); one whose
/// RDB had a byte flipped, with the manifest's sha256 recomputed so that only the RDB's
/// own checksum can tell, fails naming the source and the object.
#[test]
fn verify_checks_a_redis_backup_by_its_rdb_checksum() {
    let redis = RedisServer::start();
    {
        let mut c = redis.conn();
        // A value large enough that the middle of the RDB is inside it.
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        c.cmd(&[b"SET", b"big", &big]);
        c.cmd(&[b"HSET", b"h", b"a", b"1"]);
        c.cmd(&[b"SELECT", b"2"]);
        c.cmd(&[b"SET", b"k", b"v"]);
    }
    let setup = setup(
        "",
        &format!(
            "[[jobs.{JOB}.sources]]\ntype = \"redis\"\nname = \"cache\"\nurl = \"{}\"\n",
            redis.url()
        ),
    );
    let id = setup.backup();

    let (code, out) = setup.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("verify {JOB} {id} on local: ok (cache: "))
            && out.contains("sha256 ok, RDB version")
            && out.contains("header, end marker and CRC-64 ok"),
        "{out}"
    );

    // Damage the RDB in its middle; keep the manifest's record of the object in step.
    let manifest = setup.manifest("local", &id);
    let key = manifest["sources"][0]["key"]
        .as_str()
        .expect("key")
        .to_string();
    assert!(key.ends_with("cache.rdb"), "stored uncompressed: {key}");
    let object = setup.path("local").join(&key);
    let mut bytes = std::fs::read(&object).expect("read rdb");
    assert_eq!(&bytes[..5], b"REDIS");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes).expect("write rdb");
    let mut m = manifest;
    m["sources"][0]["sha256"] = sha256_hex(&bytes).into();
    std::fs::write(
        setup.manifest_path("local", &id),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("write manifest");

    let (code, out) = setup.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("verify {JOB} {id} on local: 1 problem(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "cache: {key} is unreadable by redis: the RDB snapshot of cache does not end with the RDB end-of-file opcode and a matching checksum"
        )),
        "{out}"
    );
}

/// A files source whose files `a/1.txt` and `b/same.txt` share one blob.
fn files_setup(job_extra: &str) -> (Job, PathBuf) {
    let job = job(job_extra);
    let uploads = job.path("uploads");
    std::fs::create_dir_all(uploads.join("a")).expect("mkdir");
    std::fs::create_dir_all(uploads.join("b")).expect("mkdir");
    for i in 0..6 {
        std::fs::write(uploads.join(format!("a/{i}.txt")), format!("file {i}\n")).expect("write");
    }
    std::fs::write(uploads.join("b/same.txt"), "file 1\n").expect("write");
    let s = job
        .source(&format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n",
            toml_str(uploads.display())
        ))
        .write();
    (s, uploads)
}

/// The stored blob holding `content` (uncompressed, unencrypted: named by its sha256).
fn blob_of(setup: &Job, content: &[u8]) -> (String, PathBuf) {
    let sha = sha256_hex(content);
    let key = format!("{JOB}/blobs/{}/{sha}", &sha[..2]);
    let path = setup.path("local").join(&key);
    assert!(path.is_file(), "{} is stored", path.display());
    (key, path)
}

/// Plain verify only sees that a blob exists; `--read-data` reads it and names it and
/// every file that uses it.
#[test]
fn read_data_finds_a_corrupt_blob_that_presence_misses() {
    let (setup, _uploads) = files_setup("");
    let id = setup.backup();

    let (code, out) = setup.stowage(&["verify", JOB, "--read-data"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("uploads: index ok, 7 file(s), all 6 blob(s) present, 6 read back intact"),
        "{out}"
    );
    assert!(
        out.contains("blob data: 6 of 6 blob(s) read (") && out.contains("), 0 bad"),
        "{out}"
    );

    // Same name, same length, other content.
    let (key, path) = blob_of(&setup, b"file 1\n");
    std::fs::write(&path, b"FILE 1\n").expect("overwrite blob");

    let (code, out) = setup.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "presence only does not see it: {out}");
    assert!(!out.contains("blob data"), "nothing read: {out}");

    let (code, out) = setup.stowage(&["verify", JOB, "--read-data"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("verify {JOB} {id} on local: 1 problem(s)")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "uploads: blob {key} is corrupt: expected 7 bytes with sha256 {}, got 7 bytes with sha256 {} (used by a/1.txt, b/same.txt)",
            sha256_hex(b"file 1\n"),
            sha256_hex(b"FILE 1\n")
        )),
        "{out}"
    );
    assert!(
        out.contains("6 of 6 blob(s) read") && out.contains("1 bad"),
        "{out}"
    );

    // A share reads that many blobs, rounded up: 10% of 6 is 1.
    let (_, out) = setup.stowage(&["verify", JOB, "--read-data-subset", "10%"]);
    assert!(out.contains("1 of 6 blob(s) read"), "{out}");
    let (code, out) = setup.stowage(&["verify", JOB, "--read-data-subset", "110%"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("\"110%\" is more than 100%"), "{out}");
}

/// Encrypted blobs are read as a restore reads them: decrypted with the identity.
#[test]
fn read_data_decrypts_encrypted_blobs() {
    use age::secrecy::ExposeSecret;
    let keys = tempfile::tempdir().expect("tempdir");
    let id = age::x25519::Identity::generate();
    let identity = keys.path().join("key.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).expect("key");
    let (setup, _uploads) = files_setup(&format!(
        "encryption = {{ recipients = [\"{}\"] }}",
        id.to_public()
    ));
    setup.backup();
    let identity = identity.to_str().expect("utf-8");

    let (code, out) = setup.stowage(&["verify", JOB, "--read-data"]);
    assert_eq!(code, Some(2), "no key: {out}");
    assert!(out.contains("give --identity FILE"), "{out}");

    let (code, out) = setup.stowage(&["verify", JOB, "--read-data", "--identity", identity]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("6 read back intact"), "{out}");

    // Damage one stored (encrypted) blob in its middle.
    let blob = walk(&setup.path("local").join(JOB).join("blobs"))
        .into_iter()
        .next()
        .expect("a blob");
    let mut bytes = std::fs::read(&blob).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&blob, &bytes).expect("write");
    let (code, out) = setup.stowage(&["verify", JOB, "--identity", identity]);
    assert_eq!(code, Some(0), "presence only: {out}");
    let (code, out) = setup.stowage(&["verify", JOB, "--read-data", "--identity", identity]);
    assert_eq!(code, Some(1), "{out}");
    let name = blob
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        out.lines().any(|l| l.contains("uploads: blob ")
            && l.contains(&name)
            && l.contains("(used by a/")),
        "{out}"
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// `[jobs.NAME.verify]` with `read_data`: the daemon's verify reads the blobs, a damaged
/// one makes health unhealthy naming it. The short form `verify = "CRON"` stays valid.
#[test]
fn scheduled_verify_reads_data_as_configured() {
    let port = common::free_port();
    let (setup, _uploads) = files_setup(&format!(
        "\n[jobs.{JOB}.verify]\nschedule = \"*/2 * * * * *\"\nread_data = \"100%\"\n\n[server]\nlisten = \"127.0.0.1:{port}\"\n"
    ));
    setup.backup();
    let (key, path) = blob_of(&setup, b"file 3\n");
    std::fs::write(&path, b"FILE 3\n").expect("overwrite blob");

    let mut daemon = setup.daemon();
    daemon.wait_for_output(
        &format!(
            "verify {JOB}: 1 backup copy(ies) checked, 1 problem(s); blob data: 6 of 6 blob(s) read"
        ),
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
        said.contains(&format!("uploads: blob {key} is corrupt")) && said.contains("a/3.txt"),
        "{said}"
    );
    let mut metrics = String::new();
    common::wait_for("the verify metrics", Duration::from_secs(20), || {
        metrics = common::http_get(port, "/metrics").1;
        metrics.contains("stowage_verify_bad_blobs_total{job=\"app\"}")
    });
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{job=\"app\"}}")))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    // At least one verify ran (each reads all 6 blobs, one bad).
    let read = value("stowage_verify_read_blobs_total");
    assert!(read >= 6.0 && read % 6.0 == 0.0, "{metrics}");
    assert_eq!(
        value("stowage_verify_bad_blobs_total"),
        read / 6.0,
        "{metrics}"
    );
    // 5 intact blobs of 7 bytes each per verify.
    assert_eq!(
        value("stowage_verify_read_blob_bytes_total"),
        35.0 * read / 6.0,
        "{metrics}"
    );
    daemon.signal("TERM");
    let out = daemon.wait(Duration::from_secs(30));
    assert!(out.status.success(), "{}", text(&out));
}

/// `read_data` is checked when the config is loaded, with the key and the fix.
#[test]
fn read_data_config_is_validated() {
    let load = |verify: &str| {
        let (s, _) = files_setup(verify);
        stowage::load::load_with_env(&s.config, false)
    };
    let ok = load("verify = \"0 4 * * *\"").expect("short form");
    assert!(ok.jobs[JOB].verify.is_some());
    assert_eq!(
        ok.jobs[JOB].verify_read_data,
        stowage::verify::ReadData::None
    );
    let ok = load(&format!(
        "\n[jobs.{JOB}.verify]\nschedule = \"0 4 * * *\"\nread_data = \"10%\"\n"
    ))
    .expect("table form");
    assert!(ok.jobs[JOB].verify.is_some());
    assert_eq!(
        ok.jobs[JOB].verify_read_data,
        stowage::verify::ReadData::Share(1000)
    );
    let ok = load("verify = { schedule = \"0 4 * * *\", read_data = \"all\" }").expect("inline");
    assert_eq!(
        ok.jobs[JOB].verify_read_data,
        stowage::verify::ReadData::All
    );

    for (value, says) in [
        ("110%", "\"110%\" is more than 100%"),
        ("ten", "\"ten\" is not a percentage"),
        ("0%", "\"0%\" reads nothing"),
    ] {
        let e = load(&format!(
            "verify = {{ schedule = \"0 4 * * *\", read_data = \"{value}\" }}"
        ))
        .expect_err(value)
        .to_string();
        assert!(
            e.contains(&format!("jobs.{JOB}.verify.read_data: {says}")) && e.contains("\"10%\""),
            "{e}"
        );
    }
    let e = load("verify = { schedule = \"0 4 * * *\", read_dat = \"10%\" }")
        .expect_err("typo")
        .to_string();
    assert!(e.contains("read_dat") && e.contains("read_data"), "{e}");
    // The daemon must be able to read what it is asked to read.
    let recipient = age::x25519::Identity::generate().to_public();
    let e = load(&format!(
        "encryption = {{ recipients = [\"{recipient}\"] }}\nverify = {{ schedule = \"0 4 * * *\", read_data = \"5%\" }}"
    ))
    .expect_err("no identity")
    .to_string();
    assert!(
        e.contains(&format!(
            "jobs.{JOB}.verify.read_data: the job's backups are encrypted"
        )) && e.contains("identity_file"),
        "{e}"
    );
    let e = load("verify = { schedule = \"sundays\" }")
        .expect_err("schedule")
        .to_string();
    assert!(e.contains(&format!("jobs.{JOB}.verify.schedule: ")), "{e}");
}

/// SQLite and command sources verify too (they used to fail for having nothing to list):
/// an SQLite image by its header and page count, a command's output by its sha256; an
/// image cut short, with the manifest kept in step so only the format can tell, fails.
#[test]
fn verify_checks_sqlite_images_and_command_output() {
    let work = tempfile::tempdir().expect("tempdir");
    let db = work.path().join("app.db");
    let c = rusqlite::Connection::open(&db).expect("open sqlite");
    c.execute_batch(
        "create table t(id integer primary key, v text);
         insert into t(v) select hex(randomblob(64)) from (select 1 union all select 2 union all select 3);",
    )
    .expect("fill");
    drop(c);
    let setup = setup(
        "",
        &format!(
            "[[jobs.{JOB}.sources]]\ntype = \"sqlite\"\nname = \"db\"\npath = {db:?}\n\n\
             [[jobs.{JOB}.sources]]\ntype = \"command\"\nname = \"out\"\ndump = [\"sh\", \"-c\", \"echo hello\"]\n"
        ),
    );
    let id = setup.backup();
    let (code, out) = setup.stowage(&["verify", JOB]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("SQLite image: header ok")
            && out.contains("a command's output: checked by its size and sha256"),
        "{out}"
    );

    let manifest = setup.manifest("local", &id);
    let key = manifest["sources"][0]["key"]
        .as_str()
        .expect("key")
        .to_string();
    let object = setup.path("local").join(&key);
    let mut bytes = std::fs::read(&object).expect("read image");
    bytes.truncate(bytes.len() - 100);
    std::fs::write(&object, &bytes).expect("write image");
    let mut m = manifest;
    m["sources"][0]["sha256"] = sha256_hex(&bytes).into();
    m["sources"][0]["size"] = (bytes.len() as u64).into();
    std::fs::write(
        setup.manifest_path("local", &id),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("write manifest");
    let (code, out) = setup.stowage(&["verify", JOB]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a whole number of"), "{out}");
}
