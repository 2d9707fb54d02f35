//! age encryption of backups against real stores: every object that holds data is an age
//! file on both destinations, the manifest says so in clear, restores decrypt with the
//! right identity (or the job's passphrase) and refuse a wrong or missing one before the
//! target is touched, unchanged files upload nothing, blob names are keyed when asked, and
//! `verify` reads through the encryption.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use age::secrecy::ExposeSecret;
use common::{
    PgServer, Rng, S3Server, list_tree, read_tree, seed_sample_db, sha256_hex, text, write_file,
    zstd_decompress,
};

const BUCKET: &str = "encrypted";
/// In the database and in the files: found in a stored object, it would mean clear data.
const MARKER: &str = "stowage-secret-marker-42";
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
const ZSTD_MAGIC: &[u8] = &[0x28, 0xB5, 0x2F, 0xFD];

/// Stored objects: (destination, key) -> bytes.
type Stored = BTreeMap<(&'static str, String), Vec<u8>>;

/// Key material written into the setup's directory before the config refers to it.
struct Keys {
    /// The job's recipient (`age1…`).
    recipient: String,
    /// The identity of `recipient`, for decrypting in the test itself.
    id: age::x25519::Identity,
    /// `key.txt`: `id` as an age identity file.
    identity: PathBuf,
    /// An identity file of a key the backups are not encrypted to.
    wrong_identity: PathBuf,
    passphrase: PathBuf,
    blob_key: PathBuf,
}

impl Keys {
    fn write(dir: &Path) -> Keys {
        let id = age::x25519::Identity::generate();
        let identity = dir.join("key.txt");
        std::fs::write(
            &identity,
            format!(
                "# created: by tests/encryption.rs\n# public key: {}\n{}\n",
                id.to_public(),
                id.to_string().expose_secret()
            ),
        )
        .expect("write key.txt");
        let wrong_identity = dir.join("wrong-key.txt");
        std::fs::write(
            &wrong_identity,
            format!(
                "{}\n",
                age::x25519::Identity::generate()
                    .to_string()
                    .expose_secret()
            ),
        )
        .expect("write wrong-key.txt");
        let passphrase = dir.join("passphrase.txt");
        std::fs::write(&passphrase, "correct horse battery staple\n").expect("write passphrase");
        let blob_key = dir.join("blob.key");
        std::fs::write(&blob_key, format!("{}\n", Rng::new(7).hex(64))).expect("write blob key");
        Keys {
            recipient: id.to_public().to_string(),
            id,
            identity,
            wrong_identity,
            passphrase,
            blob_key,
        }
    }
}

/// What the job backs up and how it encrypts.
struct Job {
    /// A files source `uploads` beside the database `db`.
    files: bool,
    /// The inside of the job's `encryption = { … }`.
    encryption: fn(&Keys) -> String,
}

fn to_recipient(k: &Keys) -> String {
    format!("recipients = [\"{}\"]", k.recipient)
}

struct Setup {
    pg: PgServer,
    s3: S3Server,
    job: common::Job,
    keys: Keys,
    /// The files source's tree (empty without one).
    files: BTreeMap<String, Vec<u8>>,
}

impl Setup {
    async fn start(job: Job) -> Setup {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", 100);
        pg.psql(
            "app",
            &format!(
                "create table public.notes (id int primary key, body text not null);
                 insert into public.notes values (1, '{MARKER} in a row');"
            ),
        );
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let fixture = common::Job::new("app");
        let keys = Keys::write(fixture.dir());
        let uploads = fixture.path("uploads");
        let files = if job.files {
            write_uploads(&uploads)
        } else {
            BTreeMap::new()
        };
        let mut fixture = fixture
            .local("local", None)
            .s3("s3", &s3, BUCKET, "")
            .job(&format!("encryption = {{ {} }}", (job.encryption)(&keys)))
            .postgres("db", &pg.url("app"));
        if job.files {
            fixture = fixture.source(&format!(
                "type = \"files\"\nname = \"uploads\"\npath = {}\n",
                common::toml_str(uploads.display())
            ));
        }
        let job = fixture.write();
        Setup {
            pg,
            s3,
            job,
            keys,
            files,
        }
    }

    fn local(&self) -> PathBuf {
        self.job.path("local")
    }

    fn stowage(&self, args: &[&str]) -> Output {
        self.job.output(args)
    }

    /// `stowage run app`; the new backup's id.
    fn backup(&self) -> String {
        let out = self.stowage(&["run", "app"]);
        let said = text(&out);
        assert_eq!(out.status.code(), Some(0), "{said}");
        said.split("id=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .expect("the run names its backup id")
            .to_string()
    }

    /// An empty database to restore into.
    fn fresh_db(&self, name: &str) -> String {
        self.pg.create_db(name);
        assert!(self.pg.table_names(name).is_empty(), "{name} starts empty");
        self.pg.url(name)
    }

    /// Every stored object of the job on both destinations: (destination, key) -> bytes.
    async fn stored(&self) -> Stored {
        let mut all = BTreeMap::new();
        let local = self.local();
        for rel in list_tree(&local) {
            let bytes = std::fs::read(local.join(&rel)).expect("read a local object");
            all.insert(("local", rel), bytes);
        }
        for key in self.s3.list_keys(BUCKET, "").await {
            let bytes = self.s3.get(BUCKET, &key).await;
            all.insert(("s3", key), bytes);
        }
        assert!(
            all.keys().any(|(d, _)| *d == "local") && all.keys().any(|(d, _)| *d == "s3"),
            "objects on both destinations: {:?}",
            all.keys().collect::<Vec<_>>()
        );
        all
    }

    /// The backup's manifest as each destination holds it.
    async fn manifests(&self, id: &str) -> Vec<(&'static str, serde_json::Value)> {
        let key = format!("app/{id}/manifest.json");
        let local = std::fs::read(self.local().join(&key)).expect("local manifest");
        let s3 = self.s3.get(BUCKET, &key).await;
        [("local", local), ("s3", s3)]
            .into_iter()
            .map(|(dest, bytes)| {
                let m = serde_json::from_slice(&bytes)
                    .unwrap_or_else(|e| panic!("the {dest} manifest is clear JSON: {e}"));
                (dest, m)
            })
            .collect()
    }

    /// The restored database and files equal the originals.
    fn assert_restored(&self, db: &str, files_to: Option<&Path>) {
        assert_eq!(
            self.pg.table_checksums(db),
            self.pg.table_checksums("app"),
            "restored tables of {db}"
        );
        assert_eq!(
            self.pg
                .psql(db, "select body from public.notes where id = 1"),
            format!("{MARKER} in a row")
        );
        if let Some(dir) = files_to {
            let got = read_tree(dir);
            assert_eq!(
                got.keys().collect::<Vec<_>>(),
                self.files.keys().collect::<Vec<_>>(),
                "restored paths in {}",
                dir.display()
            );
            assert!(got == self.files, "restored file contents differ");
        }
    }
}

/// A few files that hold the marker in clear, two of them identical (one shared blob), and
/// one large enough to span several age chunks (64 KiB each).
fn write_uploads(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for i in 0..4 {
        files.insert(
            format!("notes/{i}.txt"),
            format!("{MARKER}: note {i}\n").into_bytes(),
        );
    }
    files.insert(
        "notes/copy of 0.txt".to_string(),
        files["notes/0.txt"].clone(),
    );
    let mut big = MARKER.as_bytes().to_vec();
    big.extend(Rng::new(42).bytes(300_000));
    big.extend_from_slice(MARKER.as_bytes());
    files.insert("big.bin".to_string(), big);
    for (rel, data) in &files {
        write_file(root, rel, data);
    }
    files
}

fn distinct_contents(files: &BTreeMap<String, Vec<u8>>) -> BTreeSet<String> {
    files.values().map(|d| sha256_hex(d)).collect()
}

/// Blob objects (`app/blobs/…`) in `stored`: (destination, key) -> bytes.
fn blobs(stored: &Stored) -> Stored {
    stored
        .iter()
        .filter(|((_, key), _)| key.starts_with("app/blobs/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The names blobs are stored under on one destination (the file name before `.zst.age`).
fn blob_names(stored: &Stored, dest: &str) -> BTreeSet<String> {
    blobs(stored)
        .keys()
        .filter(|(d, _)| *d == dest)
        .map(|(_, key)| {
            let file = key.rsplit('/').next().expect("a file name");
            file.strip_suffix(".zst.age")
                .unwrap_or_else(|| panic!("{dest}:{key} is a blob stored as .zst.age"))
                .to_string()
        })
        .collect()
}

/// The files source's entry of a manifest.
fn files_stats(manifest: &serde_json::Value) -> &serde_json::Value {
    manifest["sources"]
        .as_array()
        .expect("manifest sources")
        .iter()
        .find(|s| s["name"] == "uploads")
        .map(|s| &s["files"])
        .expect("an uploads source in the manifest")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backup_round_trip_local_and_s3() {
    let setup = Setup::start(Job {
        files: true,
        encryption: to_recipient,
    })
    .await;
    let id = setup.backup();
    let stored = setup.stored().await;

    // The objects a backup of a db and a files source is made of, on each destination.
    for dest in ["local", "s3"] {
        for key in [
            format!("app/{id}/manifest.json"),
            format!("app/{id}/db.pgdump.zst.age"),
            format!("app/{id}/uploads.files.json.zst.age"),
            format!("app/{id}/uploads.blobs.txt.zst"),
        ] {
            assert!(
                stored.contains_key(&(dest, key.clone())),
                "{dest}:{key} missing; stored: {:?}",
                stored.keys().collect::<Vec<_>>()
            );
        }
        assert_eq!(
            blob_names(&stored, dest).len(),
            distinct_contents(&setup.files).len(),
            "one blob per distinct content on {dest}"
        );
    }

    // Nothing that holds data is readable without the key.
    let mut checked = 0;
    for ((dest, key), bytes) in &stored {
        if key.ends_with("/manifest.json") || key.ends_with(".blobs.txt.zst") {
            continue;
        }
        let at = format!("{dest}:{key}");
        assert!(key.ends_with(".age"), "{at}: not named as an age file");
        assert!(bytes.starts_with(AGE_MAGIC), "{at}: not an age file");
        assert!(!bytes.starts_with(ZSTD_MAGIC), "{at}: clear zstd");
        assert!(
            !contains(bytes, MARKER.as_bytes()),
            "{at}: holds the marker"
        );
        assert!(!contains(bytes, b"PGDMP"), "{at}: holds a pg_dump header");
        checked += 1;
    }
    assert_eq!(checked, 2 * (2 + distinct_contents(&setup.files).len()));

    // ...and with it, the objects are what they were before encryption: the checks above
    // would have seen the marker and the pg_dump header in clear.
    let open = |bytes: &[u8]| {
        zstd_decompress(&age::decrypt(&setup.keys.id, bytes).expect("decrypts with key.txt"))
    };
    let dump = open(&stored[&("local", format!("app/{id}/db.pgdump.zst.age"))]);
    assert!(dump.starts_with(b"PGDMP"), "a pg_dump archive inside");
    assert!(contains(&dump, MARKER.as_bytes()), "the marker row inside");
    let plain_blobs: BTreeSet<Vec<u8>> = blobs(&stored)
        .iter()
        .filter(|((dest, _), _)| *dest == "s3")
        .map(|(_, bytes)| open(bytes))
        .collect();
    let contents: BTreeSet<Vec<u8>> = setup.files.values().cloned().collect();
    assert!(
        plain_blobs == contents,
        "the blobs hold the files' contents"
    );

    // Clear: the manifest says how, and the blob list names exactly the stored blobs.
    for (dest, m) in setup.manifests(&id).await {
        assert_eq!(m["encryption"], "age", "{dest} manifest: {m}");
    }
    let listed: BTreeSet<String> = String::from_utf8(zstd_decompress(
        &stored[&("local", format!("app/{id}/uploads.blobs.txt.zst"))],
    ))
    .expect("a text list")
    .lines()
    .filter(|l| !l.is_empty())
    .map(str::to_string)
    .collect();
    let on_local: BTreeSet<String> = blobs(&stored)
        .keys()
        .filter(|(d, _)| *d == "local")
        .map(|(_, k)| k.clone())
        .collect();
    assert_eq!(
        listed, on_local,
        "uploads.blobs.txt.zst lists the blob keys"
    );

    for dest in ["local", "s3"] {
        let db = format!("restored_from_{dest}");
        let url = setup.fresh_db(&db);
        let files_to = setup.job.path(format!("restored-{dest}/uploads"));
        std::fs::create_dir_all(&files_to).expect("mkdir files_to");
        let out = setup.stowage(&[
            "restore",
            "app",
            &id,
            "--from",
            dest,
            "--to",
            &url,
            "--files-to",
            utf8(&files_to),
            "--identity",
            utf8(&setup.keys.identity),
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "restore from {dest}: {}",
            text(&out)
        );
        setup.assert_restored(&db, Some(&files_to));
    }
}

/// The README's by-hand recipe for an encrypted dump: age, zstd and pg_restore alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_hand_recipe() {
    if Command::new("age").arg("--version").output().is_err() {
        eprintln!("SKIP by_hand_recipe: no `age` binary (tests/setup.sh installs it)");
        return;
    }
    let setup = Setup::start(Job {
        files: false,
        encryption: to_recipient,
    })
    .await;
    let id = setup.backup();
    let object = setup.local().join(format!("app/{id}/db.pgdump.zst.age"));
    let url = setup.fresh_db("by_hand");
    let path = format!(
        "{}:{}",
        setup.pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // No pipefail, as typed at a prompt: the data comparison below is the check.
    let out = Command::new("bash")
        .arg("-c")
        .arg(
            r#"set -eu
age -d -i "$KEY" < "$OBJECT" | zstd -d | pg_restore --single-transaction --exit-on-error --dbname "$URL""#,
        )
        .env("KEY", &setup.keys.identity)
        .env("OBJECT", &object)
        .env("URL", &url)
        .env("PATH", &path)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "by-hand restore: {}", text(&out));
    setup.assert_restored("by_hand", None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_identity_fails_before_touching_target() {
    let setup = Setup::start(Job {
        files: true,
        encryption: to_recipient,
    })
    .await;
    let id = setup.backup();
    let url = setup.fresh_db("target");
    let files_to = setup.job.path("restored/uploads");
    std::fs::create_dir_all(&files_to).expect("mkdir files_to");
    let restore = |identity: Option<&Path>| {
        let mut args = vec![
            "restore",
            "app",
            &id,
            "--from",
            "local",
            "--to",
            &url,
            "--files-to",
            utf8(&files_to),
        ];
        if let Some(key) = identity {
            args.extend(["--identity", utf8(key)]);
        }
        setup.stowage(&args)
    };
    let untouched = |after: &str| {
        assert!(
            setup.pg.table_names("target").is_empty(),
            "{after}: the target got tables: {:?}",
            setup.pg.table_names("target")
        );
        assert!(
            list_tree(&files_to).is_empty(),
            "{after}: files were written: {:?}",
            list_tree(&files_to)
        );
    };

    // No --identity and no identity_file in the job.
    let out = restore(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(stderr.contains("--identity"), "says what to pass: {stderr}");
    untouched("without an identity");

    // A key the backup is not encrypted to.
    let out = restore(Some(&setup.keys.wrong_identity));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stderr.contains("not encrypted to any identity"),
        "names the identity mismatch: {stderr}"
    );
    untouched("with a wrong identity");

    // The same target takes the restore with the right key: the failures were the key's.
    let out = restore(Some(&setup.keys.identity));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    setup.assert_restored("target", Some(&files_to));
}

/// Two runs over the same tree; blob names plain (the content's sha256) or keyed.
async fn unchanged_tree_twice(encryption: fn(&Keys) -> String) -> Setup {
    let setup = Setup::start(Job {
        files: true,
        encryption,
    })
    .await;
    let first = setup.backup();
    let blobs_before = blobs(&setup.stored().await);
    let distinct = distinct_contents(&setup.files).len() as u64;
    for (dest, m) in setup.manifests(&first).await {
        let stats = files_stats(&m);
        assert_eq!(stats["new_files"], distinct, "first run on {dest}: {stats}");
        assert!(
            stats["uploaded"].as_u64().expect("uploaded") > 0,
            "first run uploads on {dest}: {stats}"
        );
    }

    let second = setup.backup();
    assert_ne!(first, second);
    for (dest, m) in setup.manifests(&second).await {
        let stats = files_stats(&m);
        assert_eq!(stats["count"], setup.files.len() as u64, "{dest}: {stats}");
        assert_eq!(stats["new_files"], 0, "second run on {dest}: {stats}");
        assert_eq!(stats["uploaded"], 0, "second run on {dest}: {stats}");
    }
    // Same keys, same bytes: age output is randomized, so a blob written again would differ.
    let blobs_after = blobs(&setup.stored().await);
    assert_eq!(
        blobs_after.keys().collect::<Vec<_>>(),
        blobs_before.keys().collect::<Vec<_>>(),
        "blob objects after the second run"
    );
    for (key, bytes) in &blobs_before {
        assert!(blobs_after[key] == *bytes, "{key:?} was written again");
    }
    setup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_encrypted_files_tree_uploads_no_blob() {
    let plain = unchanged_tree_twice(to_recipient).await;
    let stored = plain.stored().await;
    let shas = distinct_contents(&plain.files);
    for dest in ["local", "s3"] {
        assert_eq!(
            blob_names(&stored, dest),
            shas,
            "without blob_key_file blobs are named by sha256 on {dest}"
        );
    }
    drop(plain);

    let keyed = unchanged_tree_twice(|k| {
        format!(
            "recipients = [\"{}\"], blob_key_file = \"{}\"",
            k.recipient,
            k.blob_key.display()
        )
    })
    .await;
    let stored = keyed.stored().await;
    let shas = distinct_contents(&keyed.files);
    for dest in ["local", "s3"] {
        let names = blob_names(&stored, dest);
        assert_eq!(names.len(), shas.len(), "one blob per content on {dest}");
        for name in &names {
            assert!(
                name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()),
                "{dest}: blob name {name}"
            );
            assert!(
                !shas.contains(name),
                "{dest}: blob {name} is named by its content's sha256 despite blob_key_file"
            );
        }
    }
    assert_eq!(
        blob_names(&stored, "local"),
        blob_names(&stored, "s3"),
        "the same names on both destinations"
    );
}

/// passphrase_file encrypts, and restore reads the same file when no --identity is given.
/// A database only: scrypt costs about a second per object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passphrase_round_trip() {
    let setup = Setup::start(Job {
        files: false,
        encryption: |k| format!("passphrase_file = \"{}\"", k.passphrase.display()),
    })
    .await;
    let id = setup.backup();
    let key = format!("app/{id}/db.pgdump.zst.age");
    let stored = setup.stored().await;
    for dest in ["local", "s3"] {
        let bytes = &stored[&(dest, key.clone())];
        assert!(bytes.starts_with(AGE_MAGIC), "{dest}:{key} is an age file");
        assert!(
            contains(&bytes[..bytes.len().min(512)], b"\n-> scrypt "),
            "{dest}:{key} is encrypted to a passphrase"
        );
        assert!(!contains(bytes, b"PGDMP") && !contains(bytes, MARKER.as_bytes()));
    }
    for (dest, m) in setup.manifests(&id).await {
        assert_eq!(m["encryption"], "age", "{dest} manifest: {m}");
    }
    let passphrase =
        std::fs::read_to_string(&setup.keys.passphrase).expect("read the passphrase file");
    let id_pass = age::scrypt::Identity::new(passphrase.trim_end().to_string().into());
    let plain = age::decrypt(&id_pass, &stored[&("local", key.clone())])
        .expect("the passphrase in the file (without its newline) decrypts it");
    assert!(zstd_decompress(&plain).starts_with(b"PGDMP"));

    for dest in ["local", "s3"] {
        let db = format!("restored_from_{dest}");
        let url = setup.fresh_db(&db);
        let out = setup.stowage(&["restore", "app", &id, "--from", dest, "--to", &url]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "restore from {dest}: {}",
            text(&out)
        );
        setup.assert_restored(&db, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_encrypted() {
    let setup = Setup::start(Job {
        files: true,
        encryption: to_recipient,
    })
    .await;
    let id = setup.backup();
    let identity = utf8(&setup.keys.identity);

    let out = setup.stowage(&["verify", "app", "--identity", identity]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // The daemon's way: identity_file in the job instead of --identity.
    let body = std::fs::read_to_string(&setup.job.config).expect("read config");
    let with_identity = body.replace(
        &format!("recipients = [\"{}\"]", setup.keys.recipient),
        &format!(
            "recipients = [\"{}\"], identity_file = \"{identity}\"",
            setup.keys.recipient
        ),
    );
    assert_ne!(body, with_identity, "the encryption line was found");
    std::fs::write(&setup.job.config, &with_identity).expect("write config");
    let out = setup.stowage(&["verify", "app"]);
    assert_eq!(out.status.code(), Some(0), "identity_file: {}", text(&out));
    std::fs::write(&setup.job.config, &body).expect("write config");

    // verify reads the dump through age, not only its sha256: a wrong key cannot pass.
    let key = format!("app/{id}/db.pgdump.zst.age");
    let wrong = utf8(&setup.keys.wrong_identity);
    let out = setup.stowage(&["verify", "app", "--identity", wrong]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "wrong identity: {said}");
    assert!(said.contains(&key), "names what it cannot read: {said}");

    let path = setup.local().join(&key);
    let mut bytes = std::fs::read(&path).expect("read the local dump");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).expect("write the local dump");
    let out = setup.stowage(&["verify", "app", "--identity", identity]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains(&key), "names the damaged object: {said}");
    assert!(
        said.contains(&format!("verify app {id} on s3: ok")),
        "the S3 copy is fine: {said}"
    );
}
