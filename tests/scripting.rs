//! Scripting against a real PostgreSQL: `list --json` checked field by field against the
//! manifests on disk (and `--holding`, an unreadable destination, an unreadable manifest);
//! `download` output restored with plain `pg_restore`, `-o -` equal to `-o FILE`, a failed
//! download leaving the old file alone, encrypted backups and archive tiers.

mod common;

use std::path::Path;

use age::secrecy::ExposeSecret;
use chrono::{DateTime, Utc};
use common::{
    Job, JobBuilder, PgServer, S3Server, backup_of, seed_sample_db, sha256_hex, text, toml_str,
};
use serde_json::Value;

/// PostgreSQL with the sample database "app" and a files tree; job "app" backs both up.
struct Setup {
    pg: PgServer,
    job: Job,
}

impl Setup {
    /// Job "app" writing to local destinations "local" then "mirror".
    fn start() -> Setup {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", 200);
        let config = Job::new("app");
        let uploads = config.path("uploads");
        std::fs::create_dir_all(&uploads).expect("mkdir");
        for i in 0..3 {
            std::fs::write(uploads.join(format!("file-{i}.txt")), format!("file {i}\n"))
                .expect("write");
        }
        let job = app_sources(local_and_mirror(config), &pg).write();
        Setup { pg, job }
    }

    /// Write the config again, over the one the job's commands read: job "app" with its
    /// sources, to the destinations (and after the sections) that `dests` adds.
    fn rewrite(&self, dests: impl FnOnce(JobBuilder) -> JobBuilder) {
        let config = dests(Job::config_in(self.job.dir.path(), "app"));
        let written = app_sources(config, &self.pg).write_as("stowage.toml");
        assert_eq!(written, self.job.config);
    }

    /// `list ARGS --json`: exit code and the parsed document (stdout only).
    fn list_json(&self, args: &[&str]) -> (Option<i32>, Value, String) {
        let mut all = vec!["list"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = self.job.output(&all);
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("list --json is not JSON ({e}):\n{}", text(&out)));
        (out.status.code(), doc, text(&out))
    }
}

/// Local destinations "local" then "mirror" in the job's directory, both written to.
fn local_and_mirror(config: JobBuilder) -> JobBuilder {
    config.local("local", None).local("mirror", None)
}

/// Job "app"'s sources: the database "db" and the files tree "uploads".
fn app_sources(config: JobBuilder, pg: &PgServer) -> JobBuilder {
    let uploads = format!(
        "type = \"files\"\nname = \"uploads\"\npath = {}\n",
        toml_str(config.path("uploads").display())
    );
    config.postgres("db", &pg.url("app")).source(&uploads)
}

fn time(v: &Value) -> DateTime<Utc> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a string: {v}"));
    assert!(s.ends_with('Z'), "not UTC: {s}");
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

/// One backup of `list --json` against its manifest on disk and the stored objects.
fn check_backup(job: &Job, dest: &str, b: &Value) {
    let id = b["id"].as_str().expect("id");
    let m = job.manifest(dest, id);
    assert_eq!(b["error"], Value::Null, "{b}");
    // The id is the start time, to the millisecond.
    assert_eq!(
        time(&b["time"]).format("%Y%m%dT%H%M%S%.3fZ").to_string(),
        id
    );
    assert_eq!(time(&b["started_at"]), time(&m["started_at"]));
    assert_eq!(time(&b["finished_at"]), time(&m["finished_at"]));
    assert_eq!(b["compression"], m["compression"]);
    assert_eq!(b["encrypted"], false);
    assert_eq!(b["encryption"], Value::Null);
    assert_eq!(b["tools"], m["tools"]);
    let (ms, bs) = (
        m["sources"].as_array().expect("sources"),
        b["sources"].as_array().expect("sources"),
    );
    assert_eq!(bs.len(), ms.len());
    let mut stored = 0;
    let mut raw = 0;
    for (s, ms) in bs.iter().zip(ms) {
        for field in [
            "name", "type", "format", "key", "size", "raw_size", "sha256",
        ] {
            assert_eq!(s[field], ms[field], "{field} of {s}");
        }
        // The stored object is what the listing says.
        let bytes = std::fs::read(job.path(dest).join(s["key"].as_str().expect("key")))
            .expect("stored object");
        assert_eq!(s["size"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(s["sha256"].as_str(), Some(sha256_hex(&bytes).as_str()));
        stored += s["size"].as_u64().expect("size");
        match s["type"].as_str() {
            Some("files") => {
                let f = &s["files"];
                assert_eq!(f["count"], 3);
                for (ours, theirs) in [
                    ("count", "count"),
                    ("bytes", "bytes"),
                    ("new_files", "new_files"),
                    ("new_bytes", "new_bytes"),
                    ("uploaded_bytes", "uploaded"),
                ] {
                    assert_eq!(f[ours], ms["files"][theirs], "{ours}");
                }
                assert_eq!(s["objects"], Value::Null);
                stored += f["uploaded_bytes"].as_u64().expect("uploaded");
                raw += f["bytes"].as_u64().expect("bytes");
            }
            Some("postgres") => {
                assert_eq!(s["files"], Value::Null);
                assert_eq!(s["objects"], ms["objects"]);
                assert!(
                    s["objects"]
                        .as_array()
                        .expect("objects")
                        .contains(&Value::from("public.orders")),
                    "{s}"
                );
                assert_eq!(s["server_version"], ms["server_version"]);
                assert_eq!(s["tool"], ms["tool"]);
                assert_eq!(s["rows"], ms["rows"]);
                raw += s["raw_size"].as_u64().expect("raw");
            }
            other => panic!("unexpected source type {other:?}"),
        }
    }
    assert_eq!(b["stored_bytes"].as_u64(), Some(stored));
    assert_eq!(b["raw_bytes"].as_u64(), Some(raw));
}

fn ids(d: &Value) -> Vec<&str> {
    d["backups"]
        .as_array()
        .expect("backups")
        .iter()
        .map(|b| b["id"].as_str().expect("id"))
        .collect()
}

#[test]
fn list_json_matches_the_manifests() {
    let setup = Setup::start();
    let first = setup.job.backup();
    let listed = text(&setup.job.output(&["list", "app"]));
    assert!(listed.contains("job app (1 backup)"), "{listed}");
    assert!(
        listed.contains("uploads (files: 3 files, 3 new"),
        "{listed}"
    );
    // Only the second backup holds table "notes".
    setup.pg.psql(
        "app",
        "create table public.notes (id int primary key, body text); insert into public.notes values (1, 'x');",
    );
    let second = setup.job.backup();

    let (code, doc, out) = setup.list_json(&["app"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["holding"], Value::Null);
    let jobs = doc["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["job"], "app");
    assert_eq!(jobs[0]["timezone"], "UTC");
    let dests = jobs[0]["destinations"].as_array().expect("destinations");
    let names: Vec<&str> = dests
        .iter()
        .map(|d| d["destination"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["local", "mirror"]);
    for d in dests {
        let name = d["destination"].as_str().expect("name");
        assert_eq!(d["error"], Value::Null);
        assert_eq!(
            d["location"].as_str(),
            Some(setup.job.path(name).display().to_string().as_str())
        );
        // Newest first, like the text listing.
        assert_eq!(ids(d), [second.as_str(), first.as_str()]);
        for b in d["backups"].as_array().expect("backups") {
            check_backup(&setup.job, name, b);
        }
    }

    // --holding: the same filter as the text listing.
    let (code, held, out) = setup.list_json(&["app", "--holding", "notes"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(held["holding"], "notes");
    for d in held["jobs"][0]["destinations"].as_array().expect("dests") {
        assert_eq!(ids(d), [second.as_str()]);
        assert_eq!(
            d["backups"][0],
            dests
                .iter()
                .find(|x| x["destination"] == d["destination"])
                .expect("same destination")["backups"][0]
        );
    }
    let (_, held, _) = setup.list_json(&["app", "--holding", "public.orders"]);
    assert_eq!(
        ids(&held["jobs"][0]["destinations"][0]),
        [second.as_str(), first.as_str()]
    );
    let listed = text(&setup.job.output(&["list", "app", "--holding", "notes"]));
    assert!(
        listed.contains("job app (2 backups, 1 holding notes)"),
        "{listed}"
    );
    // Without a job: every job.
    let (code, all, out) = setup.list_json(&[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(all["jobs"], doc["jobs"]);

    // A destination that cannot be read: its error in the document, exit 1; the others
    // are listed as before.
    let broken = setup.job.path("not-a-directory");
    std::fs::write(&broken, "x").expect("write");
    setup.rewrite(|config| local_and_mirror(config).local_at("broken", &broken, None));
    let (code, doc, out) = setup.list_json(&["app"]);
    assert_eq!(code, Some(1), "{out}");
    let dests = doc["jobs"][0]["destinations"].as_array().expect("dests");
    assert_eq!(dests.len(), 3);
    assert_eq!(dests[2]["destination"], "broken");
    assert!(
        dests[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot list")),
        "{}",
        dests[2]
    );
    assert_eq!(dests[2]["backups"], Value::Array(Vec::new()));
    assert_eq!(ids(&dests[0]), [second.as_str(), first.as_str()]);
    assert!(
        out.contains("error: job app on destination broken: cannot list"),
        "{out}"
    );

    // An unreadable manifest: that backup carries its error and nothing else; exit 1.
    setup.rewrite(local_and_mirror);
    std::fs::write(setup.job.manifest_path("mirror", &first), "{ not json").expect("write");
    let (code, doc, out) = setup.list_json(&["app"]);
    assert_eq!(code, Some(1), "{out}");
    let mirror = &doc["jobs"][0]["destinations"][1];
    assert_eq!(mirror["error"], Value::Null);
    assert_eq!(ids(mirror), [second.as_str(), first.as_str()]);
    let bad = &mirror["backups"][1];
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("not valid")),
        "{bad}"
    );
    let mut keys: Vec<&String> = bad.as_object().expect("object").keys().collect();
    keys.sort();
    assert_eq!(keys, ["error", "id", "time"]);
    check_backup(&setup.job, "mirror", &mirror["backups"][0]);
}

fn pg_restore(pg: &PgServer, db: &str, file: &Path) {
    let out = std::process::Command::new(pg.bin("pg_restore"))
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg("-d")
        .arg(pg.url(db))
        .arg(file)
        .output()
        .expect("pg_restore");
    assert!(out.status.success(), "pg_restore: {}", text(&out));
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path, bytes).expect("write");
}

/// Every entry of a directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn download_writes_the_plain_dump() {
    let setup = Setup::start();
    let id = setup.job.backup();
    let m = setup.job.manifest("local", &id);
    let db = &m["sources"][0];
    assert_eq!(db["name"], "db");
    let out_dir = setup.job.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let file = out_dir.join("app.pgdump");
    let f = file.display().to_string();

    let out = setup
        .job
        .output(&["download", "app", "latest", "--only", "db", "-o", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("backup {id} of job app from local")),
        "{}",
        text(&out)
    );
    let dump = std::fs::read(&file).expect("downloaded");
    assert!(dump.starts_with(b"PGDMP"), "a pg_dump custom archive");
    assert_eq!(Some(dump.len() as u64), db["raw_size"].as_u64());
    assert_eq!(entries(&out_dir), ["app.pgdump"], "no temporary file left");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o077, 0, "readable by others: {mode:o}");
    }

    // Plain pg_restore, no stowage: the same tables and rows.
    setup.pg.create_db("copy");
    pg_restore(&setup.pg, "copy", &file);
    assert_eq!(
        setup.pg.table_checksums("copy"),
        setup.pg.table_checksums("app")
    );

    // -o -: the same bytes on stdout, the summary on stderr; an id prefix and --from.
    let prefix = &id[..13];
    let out = setup.job.output(&[
        "download", "app", prefix, "--only", "db", "--from", "mirror", "-o", "-",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == dump, "stdout differs from the -o FILE bytes");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("wrote stdout: source db"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A files source is not one file: refused, pointing at restore --files-to.
    let x = out_dir.join("x").display().to_string();
    let out = setup
        .job
        .output(&["download", "app", "--only", "uploads", "-o", &x]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("restore app {id} --only uploads --files-to DIR")),
        "{}",
        text(&out)
    );
    let out = setup
        .job
        .output(&["download", "app", "--only", "nope", "-o", &x]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no source \"nope\"; its sources: db, uploads"),
        "{}",
        text(&out)
    );
    let d = out_dir.display().to_string();
    let out = setup
        .job
        .output(&["download", "app", "--only", "db", "-o", &d]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
    assert_eq!(entries(&out_dir), ["app.pgdump"]);

    // A corrupt stored object: exit 1, the existing file untouched, no partial file; a
    // new path is not created at all.
    flip_a_byte(
        &setup
            .job
            .path("local")
            .join(db["key"].as_str().expect("key")),
    );
    let out = setup.job.output(&[
        "download", "app", &id, "--only", "db", "--from", "local", "-o", &f,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("error: download failed: "),
        "{}",
        text(&out)
    );
    assert!(
        std::fs::read(&file).expect("old file") == dump,
        "old file changed"
    );
    assert_eq!(entries(&out_dir), ["app.pgdump"], "a partial file was left");
    let fresh = out_dir.join("fresh.pgdump");
    let out = setup.job.output(&[
        "download",
        "app",
        &id,
        "--only",
        "db",
        "--from",
        "local",
        "-o",
        &fresh.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(entries(&out_dir), ["app.pgdump"], "a partial file was left");
    let out = setup.job.output(&[
        "download", "app", &id, "--only", "db", "--from", "local", "-o", "-",
    ]);
    assert_eq!(out.status.code(), Some(1), "-o - after corruption");
    // The intact copy on the mirror still downloads.
    let out = setup.job.output(&[
        "download", "app", &id, "--only", "db", "--from", "mirror", "-o", &f,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::read(&file).expect("file") == dump);
}

/// An encrypted job: download decrypts with --identity (or the job's identity_file), and
/// a wrong or missing identity fails before any file appears.
#[test]
fn download_decrypts() {
    let key = age::x25519::Identity::generate();
    let setup = Setup::start();
    let identity = setup.job.path("key.txt");
    std::fs::write(&identity, format!("{}\n", key.to_string().expose_secret())).expect("key");
    let wrong = setup.job.path("wrong.txt");
    std::fs::write(
        &wrong,
        format!(
            "{}\n",
            age::x25519::Identity::generate()
                .to_string()
                .expose_secret()
        ),
    )
    .expect("key");
    // A second job beside "app", writing to "local" only: the builder writes one job.
    let sealed = |identity_file: &str| {
        format!(
            "\n[jobs.sealed]\nschedule = \"0 3 * * *\"\ndestinations = [\"local\"]\n\
             encryption = {{ recipients = [\"{}\"]{identity_file} }}\n\n\
             [[jobs.sealed.sources]]\ntype = \"postgres\"\nname = \"db\"\nurl = \"{}\"\n",
            key.to_public(),
            setup.pg.url("app")
        )
    };
    setup.rewrite(|config| local_and_mirror(config).section(&sealed("")));
    let id = backup_of(&setup.job.config, "sealed");
    let (code, doc, out) = setup.list_json(&["sealed"]);
    assert_eq!(code, Some(0), "{out}");
    let b = &doc["jobs"][0]["destinations"][0]["backups"][0];
    assert_eq!(b["id"].as_str(), Some(id.as_str()));
    assert_eq!(
        (&b["encrypted"], &b["encryption"]),
        (&true.into(), &"age".into())
    );

    let out_dir = setup.job.path("out");
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let file = out_dir.join("sealed.pgdump");
    let f = file.display().to_string();
    let out = setup
        .job
        .output(&["download", "sealed", "--only", "db", "-o", &f]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out = setup.job.output(&[
        "download",
        "sealed",
        "--only",
        "db",
        "-o",
        &f,
        "--identity",
        &wrong.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot decrypt"), "{}", text(&out));
    assert!(entries(&out_dir).is_empty(), "{:?}", entries(&out_dir));

    let out = setup.job.output(&[
        "download",
        "sealed",
        "--only",
        "db",
        "-o",
        &f,
        "--identity",
        &identity.display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let dump = std::fs::read(&file).expect("downloaded");
    assert!(dump.starts_with(b"PGDMP"));
    setup.pg.create_db("copy");
    pg_restore(&setup.pg, "copy", &file);
    assert_eq!(
        setup.pg.table_checksums("copy"),
        setup.pg.table_checksums("app")
    );

    // The job's identity_file serves as well.
    let identity_file = format!(", identity_file = \"{}\"", identity.display());
    setup.rewrite(|config| local_and_mirror(config).section(&sealed(&identity_file)));
    let out = setup
        .job
        .output(&["download", "sealed", &id, "--only", "db", "-o", "-"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(out.stdout == dump);
}

/// From an archive tier, the dump waits for a retrieval: exit 4 pointing at
/// `stowage retrieve`; once retrieved, the download works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_from_an_archive_tier_waits_for_a_retrieval() {
    let s3 = S3Server::moto();
    s3.create_bucket("cold").await;
    let setup = Setup::start();
    // "local" and "mirror" stay defined; the job writes to "cold" only.
    let idle: String = ["local", "mirror"]
        .iter()
        .map(|d| {
            format!(
                "[destinations.{d}]\ntype = \"local\"\npath = {}\n\n",
                toml_str(setup.job.path(d).display())
            )
        })
        .collect();
    setup.rewrite(|config| {
        config
            .s3("cold", &s3, "cold", "storage_class = \"DEEP_ARCHIVE\"\n")
            .section(&idle)
    });
    let id = setup.job.backup();
    let file = setup.job.path("app.pgdump");
    let f = file.display().to_string();
    let out = setup
        .job
        .output(&["download", "app", "--only", "db", "-o", &f]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("stowage retrieve app {id} --from cold --only db")),
        "{}",
        text(&out)
    );
    assert!(!file.exists());

    let out = setup.job.output(&["retrieve", "app", &id, "--only", "db"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = setup
        .job
        .output(&["download", "app", &id, "--only", "db", "-o", &f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(std::fs::read(&file).expect("file").starts_with(b"PGDMP"));
}
