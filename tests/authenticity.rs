//! Whoever can write to a destination (but holds no key of the job) against stowage's
//! readers, with a real PostgreSQL and a local destination:
//! - an encrypted job refuses a backup made clear (manifest without `encryption`, a clear
//!   dump with a matching sha256) in restore, download and verify, naming the backup;
//! - with `auth_key_file`, a manifest edited by hand (the dump swapped for another one,
//!   even one encrypted to the job's public recipient) or written without the key is
//!   refused unless `--trust-unauthenticated`, and a genuine backup restores;
//! - forged newer manifests do not make retention delete real backups.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use age::secrecy::ExposeSecret;
use common::{PgServer, Rng, S3Server, run_stowage, seed_sample_db, sha256_hex, text, toml_str};

/// What the planted dump creates: found in a target, it means stowage applied it.
const PWNED: &str = "pwned";
const BUCKET: &str = "auth";

/// The job's one destination when it is on S3 (moto), with a runtime for the test's own
/// S3 calls.
struct OnS3 {
    server: S3Server,
    rt: tokio::runtime::Runtime,
}

struct Setup {
    pg: PgServer,
    /// The job as configured (with auth_key_file when asked).
    job: common::Job,
    /// The same job without auth_key_file: what wrote backups before the key was set.
    config_without_key: PathBuf,
    /// The job's age recipient: public, so a bucket writer may know it.
    recipient: String,
    /// None: the destination is the local directory `local`.
    s3: Option<OnS3>,
}

impl Setup {
    /// `extra` goes at the end of the config (e.g. a `[jobs.app.heal]` section).
    fn start(auth: bool, retention: &str, extra: &str) -> Setup {
        Setup::start_on(None, auth, retention, extra)
    }

    fn start_on(s3: Option<OnS3>, auth: bool, retention: &str, extra: &str) -> Setup {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", 50);
        pg.psql(
            "app",
            "create table public.ledger (id int primary key, v text); insert into public.ledger values (1, 'real');",
        );
        // The attacker's database, dumped into the planted objects.
        pg.create_db("evil");
        pg.psql(
            "evil",
            &format!(
                "create table public.{PWNED} (id int); insert into public.{PWNED} values (1);
                 create table public.ledger (id int primary key, v text); insert into public.ledger values (1, 'forged');"
            ),
        );
        let fixture = common::Job::new("app");
        let id = age::x25519::Identity::generate();
        let identity = fixture.path("key.txt");
        std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret()))
            .expect("write key.txt");
        let auth_key = fixture.path("stowage_auth_key");
        // What `head -c 32 /dev/urandom | base64` writes: 44 characters.
        std::fs::write(&auth_key, format!("{}=\n", Rng::new(23).hex(43))).expect("write key");
        let recipient = id.to_public().to_string();
        let destination = match &s3 {
            None => format!(
                "type = \"local\"\npath = {}\n",
                toml_str(fixture.path("local").display())
            ),
            Some(s3) => {
                s3.rt.block_on(s3.server.create_bucket(BUCKET));
                format!(
                    "{}region = {}\n",
                    fixture.s3_keys(&s3.server, BUCKET),
                    toml_str(s3.server.region())
                )
            }
        };
        let fixture = fixture
            .destination("dest", &format!("{destination}{retention}\n"))
            .job(&format!(
                "encryption = {{ recipients = [{}], identity_file = {} }}",
                toml_str(&recipient),
                toml_str(identity.display())
            ))
            .postgres("db", &pg.url("app"))
            .section(extra);
        let config_without_key = fixture.write_as("without-key.toml");
        let fixture = if auth {
            fixture.job(&format!("auth_key_file = {}", toml_str(auth_key.display())))
        } else {
            fixture
        };
        let job = fixture.write();
        Setup {
            pg,
            job,
            config_without_key,
            recipient,
            s3,
        }
    }

    fn stowage(&self, args: &[&str]) -> Output {
        run_stowage(&self.job.config, args)
    }

    /// A backup with `config`; its id.
    fn backup_with(&self, config: &Path) -> String {
        let out = run_stowage(config, ["run", "app"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(0), "{said}");
        said.split("id=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("the run names its backup id")
            .to_string()
    }

    fn backup(&self) -> String {
        self.backup_with(&self.job.config)
    }

    fn object(&self, key: &str) -> PathBuf {
        self.job.path("local").join(key)
    }

    fn read(&self, key: &str) -> Vec<u8> {
        match &self.s3 {
            None => std::fs::read(self.object(key)).unwrap_or_else(|e| panic!("{key}: {e}")),
            Some(s3) => s3.rt.block_on(s3.server.get(BUCKET, key)),
        }
    }

    /// What a bucket writer does.
    fn write(&self, key: &str, bytes: &[u8]) {
        match &self.s3 {
            None => {
                let path = self.object(key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(path, bytes).expect("write");
            }
            Some(s3) => s3.rt.block_on(s3.server.put(BUCKET, key, bytes.to_vec())),
        }
    }

    fn remove(&self, key: &str) {
        match &self.s3 {
            None => std::fs::remove_file(self.object(key)).expect("remove"),
            Some(s3) => s3.rt.block_on(s3.server.delete(BUCKET, key)),
        }
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.object(&format!("app/{id}/manifest.json"))
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let bytes = self.read(&format!("app/{id}/manifest.json"));
        serde_json::from_slice(&bytes).expect("manifest is JSON")
    }

    fn write_manifest(&self, id: &str, m: &serde_json::Value) {
        let body = serde_json::to_vec_pretty(m).expect("json");
        self.write(&format!("app/{id}/manifest.json"), &body);
    }

    /// The attacker's pg_dump archive of `evil`, zstd-compressed (as stowage stores it).
    fn evil_dump(&self) -> Vec<u8> {
        let out = Command::new(self.pg.bin("pg_dump"))
            .args(["-Fc", "-d", &self.pg.url("evil")])
            .output()
            .expect("run pg_dump");
        assert!(out.status.success(), "pg_dump: {}", text(&out));
        pipe("zstd", &["-q", "-c"], &out.stdout)
    }

    /// Replace backup `id`'s dump by `bytes` stored at `key`, the manifest updated to
    /// match (sha256, size) as a bucket writer would; `edit` changes it further.
    fn plant(&self, id: &str, key: &str, bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) {
        let mut m = self.manifest(id);
        let old = m["sources"][0]["key"].as_str().expect("key").to_string();
        self.remove(&old);
        self.write(key, bytes);
        let src = &mut m["sources"][0];
        src["key"] = key.into();
        src["sha256"] = sha256_hex(bytes).into();
        src["size"] = bytes.len().into();
        edit(&mut m);
        self.write_manifest(id, &m);
    }

    fn fresh_db(&self, name: &str) -> String {
        self.pg.create_db(name);
        self.pg.url(name)
    }

    fn pwned(&self, db: &str) -> bool {
        self.pg.table_names(db).iter().any(|t| t.contains(PWNED))
    }

    fn assert_restored(&self, db: &str) {
        assert_eq!(
            self.pg.table_checksums(db),
            self.pg.table_checksums("app"),
            "restored tables of {db}"
        );
    }
}

/// `cmd args` with `input` on stdin; its stdout.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(out.status.success(), "{cmd}: {}", text(&out));
    out.stdout
}

fn refused(out: &Output, why: &str, naming: &str) {
    let said = text(out);
    assert_ne!(out.status.code(), Some(0), "accepted: {said}");
    assert!(said.contains(why), "expected \"{why}\" in: {said}");
    assert!(said.contains(naming), "expected \"{naming}\" in: {said}");
}

/// A bucket writer removes `encryption` from a manifest and replaces the dump with a clear
/// one with a matching sha256 and size: restore, download and verify refuse the backup,
/// naming it, and the target gets nothing from it.
#[test]
fn an_encrypted_job_refuses_a_backup_made_clear() {
    made_clear(Setup::start(false, "", ""));
}

/// The same on S3 (moto): the decision sits above the storage layer.
#[test]
fn an_encrypted_job_refuses_a_backup_made_clear_on_s3() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = S3Server::moto();
    made_clear(Setup::start_on(Some(OnS3 { server, rt }), false, "", ""));
}

fn made_clear(s: Setup) {
    // check-config says what a job without auth_key_file risks.
    let out = s.stowage(&["check-config"]);
    assert!(
        text(&out).contains("the job encrypts but has no auth_key_file"),
        "{}",
        text(&out)
    );
    let id = s.backup();
    let key = format!("app/{id}/db.pgdump.zst");
    let dump = s.evil_dump();
    s.plant(&id, &key, &dump, |m| {
        m.as_object_mut().expect("object").remove("encryption");
    });
    let manifest = format!("app/{id}/manifest.json");

    let to = s.fresh_db("restored");
    let out = s.stowage(&["restore", "app", &id, "--to", &to]);
    refused(
        &out,
        "the job is configured to encrypt, and this backup says it is not",
        &manifest,
    );
    assert!(!s.pwned("restored"), "the clear dump was applied");

    let file = s.job.path("db.pgdump");
    let out = s.stowage(&[
        "download",
        "app",
        &id,
        "--only",
        "db",
        "-o",
        file.to_str().expect("utf-8"),
    ]);
    refused(&out, "configured to encrypt", &manifest);
    assert!(!file.exists(), "download wrote the clear dump");

    let out = s.stowage(&["verify", "app", &id]);
    refused(&out, "configured to encrypt", &manifest);
}

/// With auth_key_file: a genuine backup restores; a hand-edited manifest (the dump swapped
/// for one encrypted to the job's public recipient) and one written without the key are
/// refused by restore, download, verify and marked by list; --trust-unauthenticated reads
/// them anyway.
#[test]
fn manifests_are_authenticated_with_the_jobs_key() {
    let s = Setup::start(true, "", "");
    let genuine = s.backup();
    let to = s.fresh_db("genuine");
    let out = s.stowage(&["restore", "app", &genuine, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    s.assert_restored("genuine");
    assert_eq!(s.manifest(&genuine)["auth"]["scheme"], "hmac-sha256");

    // Written before the key was set.
    let old = s.backup_with(&s.config_without_key);
    assert!(s.manifest(&old).get("auth").is_none());

    // Edited by hand: an age file the job's identity opens, so only the MAC tells.
    let victim = s.backup();
    let key = format!("app/{victim}/db.pgdump.zst.age");
    let sealed = pipe("age", &["-r", &s.recipient], &s.evil_dump());
    s.plant(&victim, &key, &sealed, |_| {});
    let manifest = format!("app/{victim}/manifest.json");

    let to = s.fresh_db("forged");
    let out = s.stowage(&["restore", "app", &victim, "--to", &to]);
    refused(&out, "forged or damaged", &manifest);
    assert!(!s.pwned("forged"), "the forged dump was applied");
    let file = s.job.path("db.pgdump");
    let out = s.stowage(&[
        "download",
        "app",
        &victim,
        "--only",
        "db",
        "-o",
        file.to_str().expect("utf-8"),
    ]);
    refused(&out, "forged or damaged", &manifest);
    assert!(!file.exists(), "download wrote the forged dump");
    let out = s.stowage(&["verify", "app", &victim]);
    refused(&out, "forged or damaged", &manifest);
    let out = s.stowage(&["list", "app"]);
    let listed = text(&out);
    let line = |id: &str| {
        listed
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
            .to_string()
    };
    assert!(line(&victim).contains("UNAUTHENTICATED"), "{listed}");
    assert!(line(&old).contains("UNAUTHENTICATED"), "{listed}");
    assert!(!line(&genuine).contains("UNAUTHENTICATED"), "{listed}");

    // The override reads it, and says so.
    let to = s.fresh_db("trusted");
    let out = s.stowage(&[
        "restore",
        "app",
        &victim,
        "--to",
        &to,
        "--trust-unauthenticated",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("--trust-unauthenticated"),
        "no warning: {}",
        text(&out)
    );
    assert!(s.pwned("trusted"));

    // "latest" passes over both to the newest authenticated backup, naming them.
    let to = s.fresh_db("latest");
    let out = s.stowage(&["restore", "app", "latest", "--to", &to]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    for id in [&victim, &old] {
        assert!(
            said.contains(&format!("passing over backup {id}")),
            "{said}"
        );
    }
    assert!(!s.pwned("latest"), "latest restored the forged backup");
    s.assert_restored("latest");

    // A backup from before the key: refused, then restored with the override.
    let to = s.fresh_db("old");
    let out = s.stowage(&["restore", "app", &old, "--to", &to]);
    refused(&out, "carries no MAC", &format!("app/{old}/manifest.json"));
    assert!(s.pg.table_names("old").is_empty(), "restored anyway");
    let out = s.stowage(&["verify", "app", &old]);
    refused(&out, "carries no MAC", &old);
    let out = s.stowage(&[
        "restore",
        "app",
        &old,
        "--to",
        &to,
        "--trust-unauthenticated",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    s.assert_restored("old");
}

/// keep_last = 2 and three forged manifests newer than the real backups: the next run's
/// retention keeps the two newest real backups (and leaves the forged ones alone) instead
/// of counting the forged ones and deleting the real ones.
#[test]
fn retention_ignores_forged_manifests() {
    let s = Setup::start(true, "retention = { keep_last = 2 }", "");
    let first = s.backup();
    let second = s.backup();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let now = chrono::Utc::now();
    let mut forged = Vec::new();
    for ms in [900, 600, 300] {
        let id = (now - chrono::TimeDelta::milliseconds(ms))
            .format("%Y%m%dT%H%M%S%.3fZ")
            .to_string();
        // The real manifest, moved to a newer id: its MAC no longer matches.
        let mut m = s.manifest(&second);
        m["id"] = id.clone().into();
        s.write_manifest(&id, &m);
        forged.push(id);
    }
    let third = s.backup();
    assert!(
        s.manifest_path(&second).exists(),
        "retention deleted a real backup because of forged ones"
    );
    assert!(s.manifest_path(&third).exists());
    assert!(
        !s.manifest_path(&first).exists(),
        "retention no longer prunes: {first} is beyond keep_last = 2"
    );
    for id in &forged {
        assert!(
            s.manifest_path(id).exists(),
            "{id}: left alone, not deleted"
        );
    }
    let to = s.fresh_db("second");
    let out = s.stowage(&["restore", "app", &second, "--to", &to]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    s.assert_restored("second");
}

/// The healer passes over a forged newer backup (its dump swapped for one encrypted to the
/// job's public recipient) and restores the dropped table from the genuine one.
#[test]
fn the_healer_does_not_use_a_forged_backup() {
    let s = Setup::start(true, "", "[jobs.app.heal]\nwatch = [\"public.ledger\"]");
    let genuine = s.backup();
    let victim = s.backup();
    let key = format!("app/{victim}/db.pgdump.zst.age");
    let sealed = pipe("age", &["-r", &s.recipient], &s.evil_dump());
    s.plant(&victim, &key, &sealed, |_| {});
    s.pg.psql("app", "drop table public.ledger");
    let out = s.stowage(&["heal", "app"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains(&genuine), "healed from {genuine}: {said}");
    assert!(
        said.contains(&format!("not using backup {victim}")),
        "the forged backup is named: {said}"
    );
    assert_eq!(
        s.pg.psql("app", "select v from public.ledger where id = 1"),
        "real"
    );
}
