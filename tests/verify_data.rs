//! `stowage verify` checks what it says: a Redis backup by its RDB checksum (not a
//! failure for having no tables to list), and with `--read-data` (or a scheduled
//! verify's `read_data`) the content of every blob, not only that it exists.

mod common;

use std::path::PathBuf;

use common::redis::RedisServer;

const JOB: &str = "app";

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

    fn backup(&self) -> String {
        common::backup_of(&self.config, JOB)
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.local().join(JOB).join(id).join("manifest.json")
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.manifest_path(id)).expect("read")).expect("json")
    }
}

/// A job `app` on one local destination, stored uncompressed (so a test can damage the
/// stored bytes exactly where it means to), with `job_extra` on the job and `sources`.
fn setup(job_extra: &str, sources: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("stowage-verify-data-")
        .tempdir()
        .expect("tempdir");
    let config = dir.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            r#"[destinations.local]
type = "local"
path = "{local}"

[jobs.{JOB}]
schedule = "0 3 * * *"
destinations = ["local"]
compression = "none"
{job_extra}

{sources}
"#,
            local = dir.path().join("local").display(),
        ),
    )
    .expect("config");
    Setup { dir, config }
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
    let manifest = setup.manifest(&id);
    let key = manifest["sources"][0]["key"]
        .as_str()
        .expect("key")
        .to_string();
    assert!(key.ends_with("cache.rdb"), "stored uncompressed: {key}");
    let object = setup.local().join(&key);
    let mut bytes = std::fs::read(&object).expect("read rdb");
    assert_eq!(&bytes[..5], b"REDIS");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&object, &bytes).expect("write rdb");
    let mut m = manifest;
    m["sources"][0]["sha256"] = sha256_hex(&bytes).into();
    std::fs::write(
        setup.manifest_path(&id),
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
