//! Issue 28, "encrypted WAL round trip", end to end on a real PostgreSQL 15, moto (S3) and a
//! local destination: a physical job with age recipients and an `auth_key_file` ships its
//! WAL from the daemon while rows with known timestamps and known text are inserted. On both
//! destinations every WAL object (whole segments and the partial) is age-encrypted: the
//! text of a row is in the WAL PostgreSQL wrote and in no stored byte. `restore --time`
//! between two inserts gives exactly the rows before it, the recovering server fetching
//! through `stowage wal-fetch` with the job's identity, and `--copy-wal` decrypts and checks
//! what it copies. Without the identity (none, or a wrong one), a flipped byte, or another
//! segment's valid object in place of one: wal-fetch refuses (255, naming the file),
//! recovery stops there, and no such byte reaches `pg_wal` or `stowage_wal`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use age::secrecy::ExposeSecret;
use common::pitr::{
    Recovered, create_ticks, empty_data_dir, first_wal_file, insert_ticks, midway,
    open_job_to_postgres, open_to_postgres, parse_utc, physical_source, public_stowage,
    recovery_scratch, rfc3339_micros, stowage_public,
};
use common::{Job, PgServer, Rng, S3Server, sha256_hex, toml_str};

const BUCKET: &str = "pitr-age";
const FLUSH_SECS: u64 = 2;
const AGE_HEADER: &[u8] = b"age-encryption.org/v1";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The text of row `id`: found in plaintext WAL, never in a stored object.
fn marker(id: u32) -> String {
    format!("stowage-plaintext-row-{id:04}")
}

/// The WAL segments (24 hex names) in `dir`, if it exists.
fn segments_in(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<String> = rd
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    v.sort();
    v
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("dir").next().is_none()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything the restores and the recovering servers need.
struct Fixture {
    pg: PgServer,
    s3: S3Server,
    job: Job,
    /// The stowage binary where `postgres` can run it (the restore command names it).
    bin: PathBuf,
    /// The job's config without `identity_file`, and with another key's identity.
    no_identity: PathBuf,
    wrong_identity: PathBuf,
    identity: PathBuf,
    ticks: Vec<(u32, String)>,
    scratch: tempfile::TempDir,
    run: PathBuf,
    _public: tempfile::TempDir,
}

impl Fixture {
    /// `stowage --config CONFIG ARGS` with the public binary.
    fn stowage(&self, config: &Path, args: &[&str]) -> (Option<i32>, String) {
        stowage_public(&self.bin, config, args)
    }

    fn wal_fetch(&self, config: &Path, name: &str, to: &Path) -> (Option<i32>, String) {
        let to = to.display().to_string();
        self.stowage(
            config,
            &[
                "wal-fetch",
                "pitr",
                name,
                &to,
                "--source",
                "db",
                "--from",
                "local",
            ],
        )
    }

    /// The instant halfway between insert `a` and the next (1-based ids).
    fn between(&self, a: usize) -> String {
        rfc3339_micros(midway(&self.ticks[a - 1].1, &self.ticks[a].1))
    }

    fn restore(
        &self,
        config: &Path,
        dir: &Path,
        time: &str,
        extra: &[&str],
    ) -> (Option<i32>, String) {
        let mut args = vec![
            "restore",
            "pitr",
            "--time",
            time,
            "--to-dir",
            dir.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        self.stowage(config, &args)
    }

    fn wal_dir(&self) -> PathBuf {
        self.job.path("local").join("pitr/wal/db")
    }

    /// The local object and record of whole WAL file `name`.
    fn object(&self, name: &str) -> PathBuf {
        self.wal_dir().join(format!("{name}.zst.age"))
    }

    fn record(&self, name: &str) -> serde_json::Value {
        let p = self.wal_dir().join("index").join(format!("{name}.json"));
        serde_json::from_slice(&std::fs::read(&p).expect("record")).expect("json")
    }

    /// The first WAL file of the base backup a restore to `target` starts from (the newest
    /// that ended before it: the daemon's catch-up may have taken one beside the test's):
    /// recovery cannot do without it.
    fn first_segment(&self, target: &str) -> String {
        let target = parse_utc(target);
        let wal = self
            .job
            .ids("local")
            .into_iter()
            .filter_map(|id| {
                let wal = self.job.manifest("local", &id)["sources"][0]["wal"].clone();
                let stop = parse_utc(wal["stop_time"].as_str().expect("stop_time"));
                (stop <= target).then_some((id, wal))
            })
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, wal)| wal)
            .expect("a base backup before the target");
        first_wal_file(&wal)
    }
}

/// The job, the daemon shipping while rows 1..=8 are inserted (a segment switch after the
/// 4th), then stopped: its last pass ships the partial segment.
async fn setup() -> Fixture {
    let pg = PgServer::start();
    create_ticks(&pg, ", note text not null");
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;

    let keys = tempfile::tempdir().expect("tempdir");
    open_to_postgres(keys.path());
    let id = age::x25519::Identity::generate();
    let identity = keys.path().join("key.txt");
    std::fs::write(&identity, format!("{}\n", id.to_string().expose_secret())).expect("id");
    let wrong = keys.path().join("wrong-key.txt");
    let other = age::x25519::Identity::generate();
    std::fs::write(&wrong, format!("{}\n", other.to_string().expose_secret())).expect("id");
    let auth = keys.path().join("auth.key");
    std::fs::write(&auth, Rng::new(28).hex(64)).expect("auth key");
    // The recovering server runs wal-fetch as `postgres`: it reads the keys (test only).
    for f in [&identity, &wrong, &auth] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let identity_line = format!(", identity_file = {}", toml_str(identity.display()));
    let job = Job::new("pitr")
        .log()
        .local("local", None)
        .s3("s3", &s3, BUCKET, "")
        .job(&format!(
            "auth_key_file = {}\nencryption = {{ recipients = [\"{}\"]{identity_line} }}",
            toml_str(auth.display()),
            id.to_public()
        ))
        .source(&physical_source(&pg, FLUSH_SECS, ""))
        .write();
    let text = std::fs::read_to_string(&job.config).expect("config");
    assert!(text.contains(&identity_line), "{text}");
    let no_identity = job.path("no-identity.toml");
    std::fs::write(&no_identity, text.replace(&identity_line, "")).expect("config");
    let wrong_identity = job.path("wrong-identity.toml");
    let wrong_line = format!(", identity_file = {}", toml_str(wrong.display()));
    std::fs::write(&wrong_identity, text.replace(&identity_line, &wrong_line)).expect("config");

    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();
    let mut ticks = insert_ticks(&pg, 1..=4, |id| Some(marker(id)));
    pg.psql("app", "select pg_switch_wal()");
    ticks.extend(insert_ticks(&pg, 5..=8, |id| Some(marker(id))));
    std::thread::sleep(Duration::from_secs(FLUSH_SECS * 2 + 2));
    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(30));

    let public = tempfile::tempdir().expect("tempdir");
    let bin = public_stowage(public.path());
    // The recovering server reads the local destination as `postgres`; stowage writes it
    // private to its own user.
    let out = Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(job.path("local"))
        .output()
        .expect("chmod");
    assert!(out.status.success(), "chmod: {out:?}");
    open_job_to_postgres(
        &job,
        &[
            "stowage.toml",
            "no-identity.toml",
            "wrong-identity.toml",
            "s3_secret",
        ],
    );
    let (scratch, run) = recovery_scratch();
    // Kept alive with the fixture: the configs name the key files.
    let keys = keys.keep();
    let _ = keys;
    Fixture {
        pg,
        s3,
        job,
        bin,
        no_identity,
        wrong_identity,
        identity,
        ticks,
        scratch,
        run,
        _public: public,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_wal_round_trip() {
    let f = setup().await;
    stored_wal_is_encrypted(&f).await;
    recovers_to_a_second_with_the_identity(&f);
    refused_without_the_identity(&f);
    a_flipped_byte_stops_recovery(&f);
    another_segments_object_is_refused(&f);
    copy_wal_decrypts_and_checks(&f);
}

/// Every WAL object on both destinations starts with the age header, is neither zstd nor
/// clear, and holds none of the rows' text; the same files fetched hold it.
async fn stored_wal_is_encrypted(f: &Fixture) {
    let local = f.job.path("local");
    let keys = f.s3.list_keys(BUCKET, "pitr/wal/db/").await;
    let objects: Vec<&String> = keys.iter().filter(|k| !k.ends_with(".json")).collect();
    let whole: Vec<&&String> = objects
        .iter()
        .filter(|k| !k.contains("/partial/"))
        .collect();
    let partial: Vec<&&String> = objects.iter().filter(|k| k.contains("/partial/")).collect();
    assert!(whole.len() >= 2, "whole segments shipped: {keys:?}");
    assert_eq!(partial.len(), 1, "one partial object: {keys:?}");
    for key in &objects {
        assert!(key.ends_with(".zst.age"), "{key}");
        for (dest, bytes) in [
            (
                "local",
                std::fs::read(local.join(key)).expect("local object"),
            ),
            ("s3", f.s3.get(BUCKET, key).await),
        ] {
            assert!(bytes.starts_with(AGE_HEADER), "{dest} {key}: no age header");
            assert!(!bytes.starts_with(ZSTD_MAGIC), "{dest} {key}");
            for id in 1..=8 {
                assert!(
                    !contains(&bytes, marker(id).as_bytes()),
                    "{dest} {key}: row {id}'s text is stored in clear"
                );
            }
        }
    }
    let index = f.record(&f.first_segment(&f.between(2)));
    assert_eq!(index["auth"]["scheme"], "hmac-sha256", "{index}");
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.wal_dir().join("partial.json")).expect("pointer"))
            .expect("json");
    assert_eq!(pointer["auth"]["scheme"], "hmac-sha256", "{pointer}");

    // The check above means something: the WAL itself holds every row's text in clear.
    let out = tempfile::tempdir().expect("tempdir");
    let mut clear = Vec::new();
    let mut names: Vec<String> = whole
        .iter()
        .filter_map(|k| k.rsplit('/').next()?.strip_suffix(".zst.age"))
        .map(str::to_string)
        .collect();
    names.push(pointer["name"].as_str().expect("name").to_string());
    for name in &names {
        let to = out.path().join(name);
        let (code, text) = f.wal_fetch(&f.job.config, name, &to);
        assert_eq!(code, Some(0), "wal-fetch {name}: {text}");
        let bytes = std::fs::read(&to).expect("fetched");
        assert!(!bytes.starts_with(AGE_HEADER), "{name} decrypted");
        clear.push(bytes);
    }
    for id in 1..=8 {
        assert!(
            clear.iter().any(|b| contains(b, marker(id).as_bytes())),
            "row {id}'s text in the fetched WAL"
        );
    }
    let partial_clear = clear.last().expect("partial");
    assert!(contains(partial_clear, marker(8).as_bytes()));
    assert_eq!(
        partial_clear.len(),
        16 << 20,
        "the partial is a whole segment's size"
    );
}

/// `restore --time` between the 2nd and 3rd insert, then PostgreSQL fetching through
/// wal-fetch with the job's identity: exactly rows 1 and 2.
fn recovers_to_a_second_with_the_identity(f: &Fixture) {
    let data = empty_data_dir(f.scratch.path(), "data");
    let target = f.between(2);
    let (code, out) = f.restore(&f.job.config, &data, &target, &[]);
    assert_eq!(code, Some(0), "restore --time {target}:\n{out}");
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("wal-fetch"), "{auto}");
    let r = Recovered::start(f.pg.bin_dir(), &data, &f.run);
    assert_eq!(
        r.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2",
        "rows up to {target}:\n{}",
        r.log()
    );
    drop(r);

    // Into the partial segment: rows 1..=6.
    let data = empty_data_dir(f.scratch.path(), "data-partial");
    let target = f.between(6);
    let (code, out) = f.restore(&f.job.config, &data, &target, &[]);
    assert_eq!(code, Some(0), "restore --time {target}:\n{out}");
    let r = Recovered::start(f.pg.bin_dir(), &data, &f.run);
    assert_eq!(
        r.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2,3,4,5,6",
        "rows up to {target}:\n{}",
        r.log()
    );
}

/// No identity, or another key's: the restore and wal-fetch fail, saying so, and nothing
/// is written where PostgreSQL reads WAL.
fn refused_without_the_identity(f: &Fixture) {
    let seg = f.first_segment(&f.between(2));
    let pg_wal = tempfile::tempdir().expect("tempdir");
    let to = pg_wal.path().join("RECOVERYXLOG");
    let (code, out) = f.wal_fetch(&f.no_identity, &seg, &to);
    assert_eq!(code, Some(255), "no identity: {out}");
    assert!(
        out.contains(&seg) && out.contains("identity_file") && !out.contains("damaged"),
        "says the identity is missing, not that the object is damaged: {out}"
    );
    assert!(
        is_empty(pg_wal.path()),
        "nothing written without the identity"
    );
    let (code, out) = f.wal_fetch(&f.wrong_identity, &seg, &to);
    assert_eq!(code, Some(255), "wrong identity: {out}");
    assert!(
        out.contains(&seg) && out.contains("wrong-key.txt") && !out.contains("damaged"),
        "says the identity does not match: {out}"
    );
    assert!(
        is_empty(pg_wal.path()),
        "nothing written with a wrong identity"
    );

    // The restore itself refuses before writing anything.
    let target = f.between(2);
    for config in [&f.no_identity, &f.wrong_identity] {
        let stem = config.file_stem().unwrap_or_default().to_string_lossy();
        let data = empty_data_dir(f.scratch.path(), &format!("refused-{stem}"));
        let (code, out) = f.restore(config, &data, &target, &[]);
        assert_ne!(code, Some(0), "{}: {out}", config.display());
        assert!(out.contains("identity"), "{out}");
        assert!(
            is_empty(&data),
            "{}: the data directory stays empty",
            config.display()
        );
    }

    // --identity would read the base backup, but the recovering server's wal-fetch reads
    // the config, which has no identity: refused before anything is written, naming the
    // key to add.
    let data = empty_data_dir(f.scratch.path(), "identity-flag-only");
    let identity = f.identity.display().to_string();
    let (code, out) = f.restore(&f.no_identity, &data, &target, &["--identity", &identity]);
    assert_ne!(code, Some(0), "restore --identity:\n{out}");
    assert!(
        out.contains("identity_file") && out.contains("--identity"),
        "{out}"
    );
    assert!(is_empty(&data), "the data directory stays empty");
}

/// Flip one byte of `path` in place; the original bytes, to put back.
fn flip(path: &Path) -> Vec<u8> {
    let orig = std::fs::read(path).expect("object");
    let mut bad = orig.clone();
    let at = bad.len() / 2;
    bad[at] ^= 0x40;
    std::fs::write(path, bad).expect("tamper");
    orig
}

/// A byte flipped in the encrypted object of the base backup's first segment on the
/// destination the restore reads: wal-fetch refuses it naming it, recovery stops.
fn a_flipped_byte_stops_recovery(f: &Fixture) {
    let seg = f.first_segment(&f.between(2));
    let object = f.object(&seg);
    let orig = flip(&object);
    let pg_wal = tempfile::tempdir().expect("tempdir");
    let to = pg_wal.path().join("RECOVERYXLOG");
    let (code, out) = f.wal_fetch(&f.job.config, &seg, &to);
    assert_eq!(code, Some(255), "a flipped byte: {out}");
    assert!(out.contains(&seg) && out.contains("damaged"), "{out}");
    assert!(
        is_empty(pg_wal.path()),
        "nothing written from a damaged object"
    );

    let data = empty_data_dir(f.scratch.path(), "tampered");
    let (code, out) = f.restore(&f.job.config, &data, &f.between(2), &[]);
    assert_eq!(code, Some(0), "the base backup is intact:\n{out}");
    assert!(out.contains("from local"), "the restore reads local: {out}");
    let log = Recovered::start_fails(f.pg.bin_dir(), &data, &f.run);
    assert!(
        log.contains(&seg) && log.contains("damaged"),
        "the server's log names the file:\n{log}"
    );
    assert!(
        !segments_in(&data.join("pg_wal")).contains(&seg),
        "the damaged segment never reaches pg_wal"
    );
    std::fs::write(&object, orig).expect("put back");
}

/// Another segment's valid encrypted object in place of one (and then its record too):
/// refused, its sha256 or its record's name do not match.
fn another_segments_object_is_refused(f: &Fixture) {
    let seg = f.first_segment(&f.between(2));
    let other = segments_in(&f.wal_dir())
        .into_iter()
        .chain(
            std::fs::read_dir(f.wal_dir())
                .expect("dir")
                .filter_map(|e| {
                    let n = e.ok()?.file_name().to_string_lossy().into_owned();
                    Some(n.strip_suffix(".zst.age")?.to_string())
                }),
        )
        .find(|n| n.len() == 24 && *n != seg)
        .expect("a second whole segment");
    let object = f.object(&seg);
    let orig = std::fs::read(&object).expect("object");
    std::fs::copy(f.object(&other), &object).expect("swap");
    let pg_wal = tempfile::tempdir().expect("tempdir");
    let to = pg_wal.path().join("RECOVERYXLOG");
    let (code, out) = f.wal_fetch(&f.job.config, &seg, &to);
    assert_eq!(code, Some(255), "a swapped object: {out}");
    assert!(out.contains(&seg), "{out}");
    assert!(
        is_empty(pg_wal.path()),
        "nothing written from a swapped object"
    );

    // The other segment's record beside it: the record names another file.
    let index = f.wal_dir().join("index");
    let record = index.join(format!("{seg}.json"));
    let orig_record = std::fs::read(&record).expect("record");
    std::fs::copy(index.join(format!("{other}.json")), &record).expect("swap record");
    let (code, out) = f.wal_fetch(&f.job.config, &seg, &to);
    assert_eq!(code, Some(255), "a swapped record: {out}");
    assert!(out.contains(&seg) && out.contains(&other), "{out}");
    assert!(is_empty(pg_wal.path()));
    std::fs::write(&record, orig_record).expect("put back");
    std::fs::write(&object, orig).expect("put back");
}

/// `restore --time TARGET --copy-wal` into `data` as root with the harness's binary: the
/// server's restore_command is then a plain copy.
fn copy_wal_as_root(f: &Fixture, target: &str, data: &Path) -> (Option<i32>, String) {
    f.job.stowage(&[
        "restore",
        "pitr",
        "--time",
        target,
        "--copy-wal",
        "--to-dir",
        data.to_str().expect("utf-8"),
    ])
}

/// `--copy-wal` under encryption: every copied file decrypted and checked against its
/// record (clear WAL in `stowage_wal/`), recovery from it gives the rows; a damaged object
/// fails the restore naming it, and is not copied.
fn copy_wal_decrypts_and_checks(f: &Fixture) {
    let data = empty_data_dir(f.scratch.path(), "copied");
    let target = f.between(6);
    let (code, out) = copy_wal_as_root(f, &target, &data);
    assert_eq!(code, Some(0), "restore --copy-wal:\n{out}");
    let copied = data.join("stowage_wal");
    let names = segments_in(&copied);
    assert!(names.len() >= 2, "{names:?}\n{out}");
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.wal_dir().join("partial.json")).expect("pointer"))
            .expect("json");
    for name in &names {
        let bytes = std::fs::read(copied.join(name)).expect("copied");
        assert!(!bytes.starts_with(AGE_HEADER), "{name} is decrypted");
        let record = if pointer["name"] == name.as_str() {
            pointer.clone()
        } else {
            f.record(name)
        };
        assert_eq!(
            Some(sha256_hex(&bytes).as_str()),
            record["raw_sha256"].as_str(),
            "{name} as PostgreSQL wrote it"
        );
    }
    let r = Recovered::start(f.pg.bin_dir(), &data, &f.run);
    assert_eq!(
        r.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2,3,4,5,6",
        "rows up to {target} from the copied WAL:\n{}",
        r.log()
    );
    drop(r);

    // A damaged object: the restore fails naming it and copies nothing of it.
    let seg = f.first_segment(&target);
    let orig = flip(&f.object(&seg));
    let data = empty_data_dir(f.scratch.path(), "copied-damaged");
    let (code, out) = copy_wal_as_root(f, &target, &data);
    assert_ne!(
        code,
        Some(0),
        "a damaged WAL object must fail --copy-wal:\n{out}"
    );
    assert!(out.contains(&seg), "{out}");
    assert!(!segments_in(&data.join("stowage_wal")).contains(&seg));
    std::fs::write(f.object(&seg), orig).expect("put back");

    // --identity with a config that has none: the WAL cannot be decrypted; refused clearly.
    let data = empty_data_dir(f.scratch.path(), "copied-no-identity");
    let identity = f.identity.display().to_string();
    let (code, out) = f.stowage(
        &f.no_identity,
        &[
            "restore",
            "pitr",
            "--time",
            &target,
            "--copy-wal",
            "--identity",
            &identity,
            "--to-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("identity_file"), "{out}");
    assert!(segments_in(&data.join("stowage_wal")).is_empty());
}
