//! `type = "mongodb"` end to end against a real mongod started per test (random port, temp
//! dir): a database with a few collections dumped and restored into another database and
//! compared document by document, one collection restored alone, a non-empty target refused
//! and replaced with --clean, a wrong password failing the run without showing it, and the
//! healer putting a dropped collection back.
//!
//! MongoDB is not packaged for Debian 12 and no registry reachable here ships a server or the
//! database tools: where `mongod`, `mongodump` and `mongorestore` are not on PATH these tests
//! say so on stderr and pass. Data goes in with `mongoimport` and is compared with
//! `mongoexport` (same package as mongodump); the password test creates its user with
//! `mongosh`.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Job, JobBuilder, free_port, run_stowage, run_with_timeout, text, toml_str};

const JOB: &str = "app";
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(tool))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Written past the test harness's capture, so that a skip is seen in a plain `cargo test`.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Whether the tools are missing (and the test should return), saying so.
fn skip(extra: &[&str]) -> bool {
    if !["mongod", "mongodump", "mongorestore"]
        .iter()
        .all(|t| on_path(t))
    {
        say(
            "skipped: mongodb tests need mongod, mongodump and mongorestore on PATH (not installable on Debian 12)",
        );
        return true;
    }
    let missing: Vec<&str> = ["mongoimport", "mongoexport"]
        .iter()
        .chain(extra)
        .copied()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        say(&format!(
            "skipped: this mongodb test also needs {} on PATH",
            missing.join(", ")
        ));
        return true;
    }
    false
}

/// A mongod on a random loopback port with its data in a temp dir, killed on drop.
struct Mongod {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Mongod {
    fn start(auth: bool) -> Mongod {
        let dir = tempfile::Builder::new()
            .prefix("stowage-mongod-")
            .tempdir()
            .expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).expect("mkdir");
        let port = free_port();
        let mut cmd = Command::new("mongod");
        cmd.arg("--dbpath")
            .arg(&data)
            .args(["--port", &port.to_string(), "--bind_ip", "127.0.0.1"])
            .arg("--unixSocketPrefix")
            .arg(dir.path())
            .arg("--logpath")
            .arg(dir.path().join("mongod.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if auth {
            cmd.arg("--auth");
        }
        let child = cmd.spawn().expect("spawn mongod");
        let mut m = Mongod { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("mongod exited with {status}:\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "mongod did not start:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mongod.log")).unwrap_or_default()
    }

    fn url(&self, db: &str) -> String {
        format!("mongodb://127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Mongod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tool(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = match stdin {
        None => run_with_timeout(&mut cmd, TOOL_TIMEOUT),
        Some(data) => {
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {program}: {e}"));
            let mut input = child.stdin.take().expect("stdin");
            let data = data.to_vec();
            let writer = std::thread::spawn(move || {
                let _ = input.write_all(&data);
            });
            let out = child.wait_with_output().expect("wait");
            let _ = writer.join();
            out
        }
    };
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        text(&out)
    );
    out
}

/// Insert JSON documents (one per line) into `uri`'s database.
fn import(uri: &str, collection: &str, docs: &[String]) {
    let body = docs.join("\n");
    tool(
        "mongoimport",
        &[
            &format!("--uri={uri}"),
            "--collection",
            collection,
            "--quiet",
        ],
        Some(body.as_bytes()),
    );
}

/// A collection's documents as extended JSON lines, in `_id` order (empty when it is not there).
fn export(uri: &str, collection: &str) -> Vec<String> {
    let out = tool(
        "mongoexport",
        &[
            &format!("--uri={uri}"),
            "--collection",
            collection,
            "--sort",
            "{\"_id\": 1}",
            "--quiet",
        ],
        None,
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

const COLLECTIONS: &[(&str, usize)] = &[("users", 50), ("orders", 400), ("events", 30)];

/// A database with a few collections of varied documents (nested, arrays, dates, decimals).
fn seed(uri: &str) {
    for (c, n) in COLLECTIONS {
        let docs: Vec<String> = (0..*n)
            .map(|i| {
                format!(
                    r#"{{"_id": {i}, "name": "{c}-{i}", "tags": ["a", "b{}"], "nested": {{"x": {}, "price": {{"$numberDecimal": "{}.25"}}}}, "at": {{"$date": "2024-05-{:02}T10:00:00Z"}}}}"#,
                    i % 7,
                    i * 3,
                    i,
                    i % 28 + 1
                )
            })
            .collect();
        import(uri, c, &docs);
    }
}

/// Job `app` backing up the mongodb source `db` at `url` (then `extra` keys) to the local
/// destination `local`.
fn mongodb_job(job: JobBuilder, url: &str, extra: &str) -> JobBuilder {
    job.local("local", Some(10))
        .database("mongodb", "db", url, extra)
}

/// A job of its own (see [`mongodb_job`]).
fn new_job(url: &str, extra: &str) -> Job {
    mongodb_job(Job::with_prefix(JOB, "stowage-mongodb-"), url, extra).write()
}

/// Published backups on `local` (a directory with a manifest), oldest first.
fn ids(job: &Job) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(job.path("local").join(JOB))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("manifest.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

fn run_ok(job: &Job) -> String {
    let before = ids(job);
    let out = job.output(&["run", JOB]);
    assert!(out.status.success(), "run failed:\n{}", text(&out));
    let new: Vec<String> = ids(job)
        .into_iter()
        .filter(|i| !before.contains(i))
        .collect();
    assert_eq!(new.len(), 1, "one new backup:\n{}", text(&out));
    new[0].clone()
}

fn entry(job: &Job, id: &str) -> serde_json::Value {
    job.manifest("local", id)["sources"][0].clone()
}

fn restore(job: &Job, args: &[&str]) -> Output {
    let mut all = vec!["restore", JOB];
    all.extend_from_slice(args);
    job.output(&all)
}

fn assert_same(from: &str, to: &str, collections: &[&str]) {
    for c in collections {
        let a = export(from, c);
        assert!(!a.is_empty(), "{from} {c} is empty");
        assert_eq!(
            a,
            export(to, c),
            "collection {c} differs between {from} and {to}"
        );
    }
}

/// Dump a database of three collections, restore it into another database, compare every
/// document; a second restore into the now non-empty database is refused (or stopped by
/// mongorestore at the first duplicate), and --clean replaces it.
#[test]
fn round_trip_with_a_few_collections() {
    if skip(&[]) {
        return;
    }
    let server = Mongod::start(false);
    let shop = server.url("shop");
    seed(&shop);
    let job = new_job(&shop, "");
    let id = run_ok(&job);
    let e = entry(&job, &id);
    assert_eq!(e["format"], "mongodump archive");
    assert_eq!(
        e["objects"],
        serde_json::json!(["shop.events", "shop.orders", "shop.users"])
    );
    assert!(
        e["server_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{e}"
    );
    assert!(
        e["tool"]
            .as_str()
            .is_some_and(|t| t.starts_with("mongodump version")),
        "{e}"
    );
    assert!(
        job.backup_dir("local", &id)
            .join("db.archive.zst")
            .is_file()
    );

    let copy = server.url("shop_copy");
    let all: Vec<&str> = COLLECTIONS.iter().map(|(c, _)| *c).collect();
    let dry = restore(&job, &["--to", &copy, "--dry-run"]);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(
        text(&dry).contains("3 collection(s) from database shop into shop_copy"),
        "{}",
        text(&dry)
    );
    assert!(
        export(&copy, "users").is_empty(),
        "a dry run changes nothing"
    );

    let r = restore(&job, &["--to", &copy]);
    assert!(r.status.success(), "restore:\n{}", text(&r));
    assert_same(&shop, &copy, &all);

    let again = restore(&job, &["--to", &copy]);
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let why = text(&again);
    assert!(
        why.contains("already has") || why.contains("duplicate key"),
        "a non-empty target is refused:\n{why}"
    );
    let clean = restore(&job, &["--to", &copy, "--clean"]);
    assert!(clean.status.success(), "--clean:\n{}", text(&clean));
    assert_same(&shop, &copy, &all);
}

/// `--table` restores one collection into another database and nothing else; an unknown
/// one names the collections the backup has.
#[test]
fn restores_one_collection() {
    if skip(&[]) {
        return;
    }
    let server = Mongod::start(false);
    let shop = server.url("shop");
    seed(&shop);
    let job = new_job(&shop, "");
    run_ok(&job);
    let only = server.url("only_orders");
    let r = restore(&job, &["--to", &only, "--table", "orders"]);
    assert!(r.status.success(), "restore:\n{}", text(&r));
    assert_same(&shop, &only, &["orders"]);
    assert!(export(&only, "users").is_empty(), "users was not asked for");
    assert!(
        export(&only, "events").is_empty(),
        "events was not asked for"
    );

    let bad = restore(&job, &["--to", &only, "--table", "order"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("not in this backup: order") && text(&bad).contains("shop.orders"),
        "{}",
        text(&bad)
    );
}

/// A wrong password fails the run with the server's answer quoted, publishes nothing, and
/// never shows the password; the right one dumps, and a restore into the same server and
/// user borrows it.
#[test]
fn wrong_password_fails() {
    if skip(&["mongosh"]) {
        return;
    }
    let server = Mongod::start(true);
    // The localhost exception lets the first user be created without logging in.
    tool(
        "mongosh",
        &[
            "--quiet",
            &server.url("admin"),
            "--eval",
            "db.createUser({user: 'backup', pwd: 'right-pw', roles: ['root']})",
        ],
        None,
    );
    let login = |db: &str| {
        format!(
            "mongodb://backup:right-pw@127.0.0.1:{}/{db}?authSource=admin",
            server.port
        )
    };
    seed(&login("shop"));
    let url = format!(
        "mongodb://backup@127.0.0.1:{}/shop?authSource=admin",
        server.port
    );
    let password = |file: &Path| format!("password_file = {}", toml_str(file.display()));
    // The job's own config reads the right password; `wrong.toml` beside it the wrong one.
    let job = Job::with_prefix(JOB, "stowage-mongodb-");
    let (wrong, right) = (job.path("wrong"), job.path("right"));
    let wrong_cfg =
        mongodb_job(Job::config_in(job.dir(), JOB), &url, &password(&wrong)).write_as("wrong.toml");
    let job = mongodb_job(job, &url, &password(&right)).write();
    std::fs::write(&wrong, "Wr0ng-pass\n").expect("write");
    let out = run_stowage(&wrong_cfg, ["run", JOB]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("mongodump failed") && log.contains("Authentication failed"),
        "{log}"
    );
    assert!(
        !log.contains("Wr0ng-pass"),
        "the password is never shown:\n{log}"
    );
    assert!(ids(&job).is_empty(), "nothing published");

    std::fs::write(&right, "right-pw\n").expect("write");
    run_ok(&job);
    let copy = format!(
        "mongodb://backup@127.0.0.1:{}/shop_copy?authSource=admin",
        server.port
    );
    let r = restore(&job, &["--to", &copy]);
    assert!(r.status.success(), "restore:\n{}", text(&r));
    assert!(!text(&r).contains("right-pw"), "{}", text(&r));
    let all: Vec<&str> = COLLECTIONS.iter().map(|(c, _)| *c).collect();
    assert_same(&login("shop"), &login("shop_copy"), &all);
}

/// The healer puts a dropped collection back from the newest backup, and leaves the
/// collections that are there alone.
#[test]
fn heal_puts_a_dropped_collection_back() {
    if skip(&["mongosh"]) {
        return;
    }
    let server = Mongod::start(false);
    let shop = server.url("shop");
    seed(&shop);
    let job = mongodb_job(Job::with_prefix(JOB, "stowage-mongodb-"), &shop, "")
        .heal("watch = [\"orders\", \"users\"]")
        .write();
    run_ok(&job);
    let orders = export(&shop, "orders");
    tool(
        "mongosh",
        &["--quiet", &shop, "--eval", "db.orders.drop()"],
        None,
    );
    assert!(export(&shop, "orders").is_empty());
    let out = job.output(&["heal", JOB]);
    assert!(out.status.success(), "heal:\n{}", text(&out));
    assert!(text(&out).contains("1 missing (orders)"), "{}", text(&out));
    assert_eq!(export(&shop, "orders"), orders);
    let again = job.output(&["heal", JOB]);
    assert!(
        text(&again).contains("all 2 watched object(s) present"),
        "{}",
        text(&again)
    );
}
