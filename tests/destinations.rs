//! The destinations reached through OpenDAL, each against a real server: WebDAV (`rclone
//! serve webdav`) and Azure Blob Storage (Azurite). One suite per destination: backup of a
//! PostgreSQL database and a files source, `check-config --connect`, restore compared with
//! the source, verify, list, a drill, a heal of a dropped table, retention over further backups, a corrupted object found by verify
//! (WebDAV, whose objects are files on the server), `copy --all` to a local destination
//! restored from there, and a refused login that publishes nothing and leaves earlier
//! backups alone.

mod common;

use std::path::Path;

use common::servers::dav::{self, Served};
use common::{
    Job, JobBuilder, PgServer, list_tree, read_tree, seed_sample_db, toml_str, write_file,
};

const ROWS: usize = 300;

/// A job backing up `app` and an uploads directory to `remote` (`body`, keep_last = 2).
fn job(pg: &PgServer, body: &str) -> Job {
    let job = Job::new("app");
    let files = job.path("uploads");
    write_file(&files, "a/small.txt", b"a small attachment\n");
    // Above the small-file limit (1 MiB): streamed as its own upload.
    let big: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    write_file(&files, "b/big.bin", &big);
    sources(job, pg, body, &files).write()
}

fn sources(job: JobBuilder, pg: &PgServer, body: &str, files: &Path) -> JobBuilder {
    job.destination(
        "remote",
        &format!("{body}retention = {{ keep_last = 2 }}\n"),
    )
    .postgres("db", &pg.url("app"))
    .source(&format!(
        "type = \"files\"\nname = \"uploads\"\npath = {}\n",
        toml_str(files.display())
    ))
    .drill(&format!(
        "schedule = \"0 5 * * 0\"\nto = {}\nchecks = [\"select count(*) > 0 from orders\"]\n",
        toml_str(pg.url("stowage_drill"))
    ))
    .heal("schedule = \"0 * * * *\"\nwatch = [\"orders\", \"public.customers\"]\n")
}

/// `copy --all` from the destination into a local one the job gains, then a restore from
/// that copy: the same tables and files.
fn copied_back(pg: &PgServer, job: &Job, body: &str, newest: &[String]) {
    sources(
        Job::config_in(job.dir.path(), "app"),
        pg,
        body,
        &job.path("uploads"),
    )
    .local_at("spare", &job.path("spare"), None)
    .write_as("stowage.toml");
    let (code, out) = job.stowage(&["copy", "app", "--all", "--from", "remote", "--to", "spare"]);
    assert_eq!(code, Some(0), "copy --all:\n{out}");
    assert_eq!(job.ids("spare"), newest, "every backup of remote, copied");
    pg.create_db("copied");
    let into = job.path("copied-uploads");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &newest[0],
        "--from",
        "spare",
        "--to",
        &pg.url("copied"),
        "--files-to",
        into.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore of the copy:\n{out}");
    assert_eq!(pg.table_checksums("copied"), pg.table_checksums("app"));
    assert!(
        read_tree(&into) == read_tree(&job.path("uploads")),
        "the copy's files differ: {:?}",
        list_tree(&into)
    );
}

/// The whole suite against the destination `body` describes. `on_disk`: where the server
/// keeps the objects as files (the destination's root), for the corruption check.
fn suite(pg: &PgServer, body: &str, server: &Served, on_disk: Option<&Path>) {
    let job = job(pg, body);
    let first = job.backup();
    assert_eq!(
        job.ids("remote"),
        std::slice::from_ref(&first),
        "{}",
        server.log()
    );

    let (code, out) = job.stowage(&["check-config", "--connect"]);
    assert_eq!(code, Some(0), "check-config --connect:\n{out}");
    assert!(out.contains("remote"), "{out}");

    // Restore into a fresh database and an empty directory: the same data.
    pg.create_db("restored");
    let into = job.path("restored-uploads");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &first,
        "--to",
        &pg.url("restored"),
        "--files-to",
        into.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore:\n{out}\n{}", server.log());
    assert_eq!(pg.table_checksums("restored"), pg.table_checksums("app"));
    assert!(
        read_tree(&into) == read_tree(&job.path("uploads")),
        "restored files differ: {:?}",
        list_tree(&into)
    );

    let (code, out) = job.stowage(&["verify", "app", "--all"]);
    assert_eq!(code, Some(0), "verify:\n{out}");

    let (code, out) = job.stowage(&["list", "app"]);
    assert_eq!(code, Some(0), "list:\n{out}");
    assert!(out.contains(&first), "list shows {first}:\n{out}");
    let (code, out) = job.stowage(&["drill", "app"]);
    assert_eq!(code, Some(0), "drill:\n{out}");
    assert!(
        out.contains(&format!(
            "drill app: ok, backup {first} from remote restored and checked"
        )),
        "{out}"
    );
    // A dropped table comes back from this destination.
    let before = pg.table_checksums("app");
    pg.psql("app", "drop table public.orders cascade");
    let (code, out) = job.stowage(&["heal", "app"]);
    assert_eq!(code, Some(0), "heal:\n{out}");
    assert!(
        out.contains(&format!("restored public.orders from {first} on remote")),
        "{out}"
    );
    assert_eq!(pg.table_checksums("app"), before, "rows after the heal");

    // Retention: after two more backups only the newest two are left, and the blob of a
    // file only the first one held is swept with it.
    write_file(&job.path("uploads"), "c/new.txt", b"written later\n");
    std::fs::remove_file(job.path("uploads/a/small.txt")).expect("remove");
    let second = job.backup();
    let third = job.backup();
    assert_eq!(job.ids("remote"), [third.clone(), second.clone()]);
    let (code, out) = job.stowage(&["verify", "app", "--all"]);
    assert_eq!(
        code,
        Some(0),
        "verify after retention and the sweep:\n{out}"
    );
    copied_back(pg, &job, body, &[third.clone(), second.clone()]);

    if let Some(root) = on_disk {
        let stored = list_tree(root);
        assert!(
            !stored.iter().any(|k| k.contains(&first)),
            "the first backup's objects are gone: {stored:#?}"
        );
        assert!(
            !stored.iter().any(|k| k.ends_with(".partial")),
            "no temporary upload is left: {stored:#?}"
        );
        let blobs = stored.iter().filter(|k| k.contains("/blobs/")).count();
        assert_eq!(
            blobs, 2,
            "big.bin and new.txt; small.txt's blob swept: {stored:#?}"
        );
        // A flipped byte in the newest dump is found by verify, naming the object.
        let dump = stored
            .iter()
            .find(|k| k.contains(&third) && k.ends_with(".pgdump.zst"))
            .unwrap_or_else(|| panic!("no dump of {third} in {stored:#?}"));
        let path = root.join(dump);
        let mut data = std::fs::read(&path).expect("read dump");
        let mid = data.len() / 2;
        data[mid] ^= 0x40;
        std::fs::write(&path, data).expect("write dump");
        let (code, out) = job.stowage(&["verify", "app", &third]);
        assert_ne!(
            code,
            Some(0),
            "verify must fail on a corrupted object:\n{out}"
        );
        assert!(out.contains(dump.as_str()), "verify names {dump}:\n{out}");
    }
}

/// The same job with credentials the server refuses: the run fails saying so, nothing is
/// published, and the backups already there are untouched.
fn refused(pg: &PgServer, good: &str, bad: &str, hint: &str) {
    let ok = job(pg, good);
    let kept = ok.backup();
    let job = job(pg, bad);
    let (code, out) = job.stowage(&["run", "app"]);
    assert_ne!(code, Some(0), "a refused login must fail the run:\n{out}");
    assert!(
        out.contains(hint),
        "the error says what to check ({hint}):\n{out}"
    );
    assert_eq!(ok.ids("remote"), [kept], "earlier backups untouched");
}

#[test]
fn webdav_round_trip_retention_verify() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", ROWS);
    let server = dav::webdav();
    let body = dav::webdav_destination(&server, "backups");
    suite(
        &pg,
        &body,
        &server,
        Some(&server.data_dir().join("backups")),
    );

    let bad_pw = server.write_secret("wrong", "not-the-password");
    let bad = body.replace(
        &toml_str(server.data_dir().with_file_name("dav_password").display()),
        &toml_str(bad_pw.display()),
    );
    assert_ne!(bad, body, "the wrong password file is in the config");
    let other = dav::webdav_destination(&server, "other");
    refused(
        &pg,
        &other,
        &bad.replace("/backups", "/other"),
        "check username and password_file",
    );
}

#[test]
fn azblob_round_trip_retention_verify() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", ROWS);
    let server = dav::azurite();
    dav::create_container(&server, "backups");
    let body = dav::azblob_destination(&server, "backups");
    suite(&pg, &body, &server, None);

    // A valid key (base64) that is not the account's.
    let wrong = server.write_secret("wrong_key", "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXkK");
    let bad = body.replace(
        &toml_str(server.data_dir().with_file_name("azure_key").display()),
        &toml_str(wrong.display()),
    );
    assert_ne!(bad, body, "the wrong key file is in the config");
    dav::create_container(&server, "other");
    refused(
        &pg,
        &body.replace("\"backups\"", "\"other\""),
        &bad.replace("\"backups\"", "\"other\""),
        "check the destination's credentials",
    );
}
