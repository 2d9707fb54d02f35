//! The sqlite engine end to end, through the real binary, on real SQLite files: round trips
//! compared row by row, snapshots taken while another process writes (WAL and
//! rollback-journal mode) checked against an invariant every transaction keeps, restores
//! that refuse or replace, failures that leave everything as it was, and the README's
//! by-hand restore with the zstd and sqlite3 command-line tools.

mod common;

use common::text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{Job, read_tree, run_stowage, sha256_hex, toml_str, zstd_decompress};
use rusqlite::Connection;
use rusqlite::types::ValueRef;

const JOB: &str = "app";

/// A temp dir with a local destination and a config whose job `app` backs up one sqlite
/// source `db`.
struct Fixture {
    dir: tempfile::TempDir,
    local: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("stowage-sqlite-")
            .tempdir()
            .expect("tempdir");
        let local = dir.path().join("dest-local");
        Fixture { dir, local }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A config backing up the database at `db` (written as given, even if invalid).
    fn config(&self, file: &str, db: &str) -> PathBuf {
        Job::config_in(self.dir.path(), JOB)
            .top("[log]\nlevel = \"info\"")
            .local_at("local", &self.local, Some(10))
            .source(&format!(
                "type = \"sqlite\"\nname = \"db\"\npath = {}\n",
                toml_str(db)
            ))
            .write_as(file)
    }

    /// Published backups on `local`, oldest first.
    fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.local.join(JOB))
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

    /// `stowage run app`, which must succeed; the id it published.
    fn backup(&self, cfg: &Path) -> (String, Output) {
        let before = self.ids();
        let out = run_stowage(cfg, ["run", JOB]);
        assert!(out.status.success(), "run failed:\n{}", text(&out));
        let new: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|i| !before.contains(i))
            .collect();
        assert_eq!(new.len(), 1, "one new backup expected:\n{}", text(&out));
        (new[0].clone(), out)
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let raw = std::fs::read(self.local.join(JOB).join(id).join("manifest.json"))
            .expect("manifest.json");
        serde_json::from_slice(&raw).expect("manifest JSON")
    }

    /// The stored archive of source `db` in backup `id`.
    fn archive(&self, id: &str) -> PathBuf {
        self.local.join(JOB).join(id).join("db.sqlite.zst")
    }

    fn restore(&self, cfg: &Path, args: &[&str]) -> Output {
        let mut all = vec!["restore", JOB];
        all.extend_from_slice(args);
        run_stowage(cfg, all)
    }
}

/// Every row of every user table, each value tagged with its type, rows sorted: two
/// databases hold the same data exactly when these are equal.
fn contents(path: &Path) -> BTreeMap<String, Vec<Vec<String>>> {
    let conn = Connection::open(path).expect("open");
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    let mut all = BTreeMap::new();
    for t in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{}\"", t.replace('"', "\"\"")))
            .expect("select");
        let n = stmt.column_count();
        let mut rows: Vec<Vec<String>> = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => "null".to_string(),
                            ValueRef::Integer(v) => format!("int {v}"),
                            ValueRef::Real(v) => format!("real {v:?}"),
                            ValueRef::Text(v) => format!("text {}", String::from_utf8_lossy(v)),
                            ValueRef::Blob(v) => format!("blob {}", hex::encode(v)),
                        })
                    })
                    .collect()
            })
            .and_then(|rows| rows.collect())
            .expect("rows");
        rows.sort();
        all.insert(t, rows);
    }
    all
}

fn integrity(path: &Path) -> String {
    Connection::open(path)
        .expect("open")
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check")
}

/// Tables with text, integers, reals, NULLs and blobs (some with zero bytes, some larger
/// than a page), a WITHOUT ROWID table, a quoted name, an index, a view and a trigger.
fn sample(path: &Path, wal: bool, rows: usize) {
    let conn = Connection::open(path).expect("create");
    conn.execute_batch(if wal {
        "PRAGMA journal_mode = WAL;"
    } else {
        "PRAGMA journal_mode = DELETE;"
    })
    .expect("journal mode");
    conn.execute_batch(
        r#"
        BEGIN;
        CREATE TABLE people(id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT, photo BLOB, score REAL);
        CREATE INDEX people_name ON people(name);
        CREATE TABLE "order items"(sku TEXT PRIMARY KEY, qty INTEGER, meta BLOB) WITHOUT ROWID;
        CREATE TABLE audit(at INTEGER, what TEXT);
        CREATE TRIGGER people_audit AFTER INSERT ON people BEGIN
            INSERT INTO audit VALUES (new.id, 'insert ' || new.name);
        END;
        CREATE VIEW named AS SELECT name FROM people WHERE note IS NOT NULL;
        "#,
    )
    .expect("schema");
    for i in 0..rows {
        let note = (i % 3 != 0).then(|| format!("note {i} ✓ «ünïcode»"));
        let photo: Option<Vec<u8>> = match i % 4 {
            0 => None,
            1 => Some(vec![0u8; 17]),
            2 => Some((0..6000).map(|b| (b * 7 + i) as u8).collect()),
            _ => Some(Vec::new()),
        };
        let score = (i % 5 != 0).then_some(i as f64 / 7.0);
        conn.execute(
            "INSERT INTO people(name, note, photo, score) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![format!("person {i}"), note, photo, score],
        )
        .expect("people");
        conn.execute(
            "INSERT INTO \"order items\" VALUES (?1, ?2, randomblob(?3))",
            rusqlite::params![
                format!("sku-{i:05}"),
                (i % 2 == 0).then_some(i as i64),
                (i % 300) as i64
            ],
        )
        .expect("order items");
    }
    conn.execute_batch("COMMIT").expect("commit");
}

fn sqlite3_available() -> bool {
    Command::new("sqlite3").arg("-version").output().is_ok()
}

/// The sqlite3 command-line tool with a database open, as an application that keeps it
/// open between statements.
struct SqliteShell {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl SqliteShell {
    fn open(path: &Path) -> SqliteShell {
        assert!(
            sqlite3_available(),
            "the sqlite3 command-line tool is needed (apt-get install sqlite3)"
        );
        let mut child = Command::new("sqlite3")
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sqlite3");
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        SqliteShell {
            child,
            stdin,
            stdout,
        }
    }

    /// Run SQL and wait until the tool has done it.
    fn run(&mut self, sql: &str) {
        use std::io::{BufRead, Write};
        let stdin = self.stdin.as_mut().expect("open");
        writeln!(stdin, "{sql}\nSELECT 'done-' || 42;").expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        while !line.contains("done-42") {
            line.clear();
            let n = self.stdout.read_line(&mut line).expect("read");
            assert!(n > 0, "sqlite3 exited");
        }
    }

    fn close(&mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait");
        assert!(status.success());
    }
}

impl Drop for SqliteShell {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[test]
fn round_trip_manifest_and_by_hand_restore() {
    let fx = Fixture::new();
    let db = fx.path("app.db");
    sample(&db, false, 1500);
    let original = std::fs::read(&db).expect("read db");
    assert!(original.len() > 2 << 20, "more than a few batches of pages");
    let cfg = fx.config("stowage.toml", &db.display().to_string());

    let check = run_stowage(&cfg, ["check-config"]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains(&format!("sqlite {}", db.display())),
        "{}",
        text(&check)
    );

    let (id, _) = fx.backup(&cfg);
    let m = fx.manifest(&id);
    let src = &m["sources"][0];
    assert_eq!(src["type"], "sqlite", "{m:#}");
    assert_eq!(src["format"], "SQLite database file");
    assert_eq!(src["key"], format!("{JOB}/{id}/db.sqlite.zst"));
    assert_eq!(src["raw_size"], original.len() as u64);
    assert_eq!(src["server_version"], rusqlite::version(), "{m:#}");
    assert_eq!(src["tool"], rusqlite::version());
    assert_eq!(m["tools"]["sqlite"], rusqlite::version());
    assert_eq!(
        src["objects"],
        serde_json::json!(["audit", "order items", "people"]),
        "{m:#}"
    );
    let stored = std::fs::read(fx.archive(&id)).expect("archive");
    assert_eq!(src["sha256"], sha256_hex(&stored));
    // A database nobody writes to is dumped byte for byte as it is on disk.
    assert!(
        zstd_decompress(&stored) == original,
        "the image differs from the file"
    );

    // Dry run: says what it would do, writes nothing.
    let target = fx.path("restored/app.db");
    std::fs::create_dir(fx.path("restored")).expect("mkdir");
    let out = fx.restore(&cfg, &["--to", &target.display().to_string(), "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("would restore db into"),
        "{}",
        text(&out)
    );
    assert_eq!(read_tree(&fx.path("restored")).len(), 0);

    let out = fx.restore(&cfg, &["--to", &target.display().to_string()]);
    assert!(out.status.success(), "restore failed:\n{}", text(&out));
    assert!(
        text(&out).contains("PRAGMA integrity_check: ok"),
        "{}",
        text(&out)
    );
    assert_eq!(integrity(&target), "ok");
    assert_eq!(contents(&target), contents(&db));
    // The view, index and trigger came along.
    let conn = Connection::open(&target).expect("open");
    let objects: Vec<String> = conn
        .prepare("SELECT type || ' ' || name FROM sqlite_schema ORDER BY 1")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("schema");
    for o in ["index people_name", "trigger people_audit", "view named"] {
        assert!(objects.iter().any(|x| x == o), "{o} missing: {objects:?}");
    }
    drop(conn);
    let left: Vec<String> = read_tree(&fx.path("restored")).into_keys().collect();
    assert_eq!(left, ["app.db"], "nothing but the database is left");

    // `--table` cannot apply to a whole-file backup.
    let out = fx.restore(
        &cfg,
        &[
            "--to",
            &fx.path("other.db").display().to_string(),
            "--table",
            "people",
        ],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("restored whole"), "{}", text(&out));

    // By hand, as the module documentation says.
    let by_hand = fx.path("by-hand.db");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "zstd -d < '{}' > '{}'",
            fx.archive(&id).display(),
            by_hand.display()
        ))
        .status()
        .expect("zstd");
    assert!(status.success());
    assert!(
        sqlite3_available(),
        "the sqlite3 command-line tool is needed (apt-get install sqlite3)"
    );
    let out = Command::new("sqlite3")
        .arg(&by_hand)
        .arg("PRAGMA integrity_check")
        .output()
        .expect("sqlite3");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ok",
        "{}",
        text(&out)
    );
    assert_eq!(contents(&by_hand), contents(&db));
}

/// Another process (here a thread: SQLite's locks work between connections of one process
/// as between processes) commits transactions as fast as it can; each inserts a row into
/// `a` and adds one to `b.counter`, so any consistent state has count(a) = counter.
struct Writer {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(path: &Path, wal: bool) -> Writer {
        let conn = Connection::open(path).expect("open");
        conn.execute_batch(if wal {
            "PRAGMA journal_mode = WAL;"
        } else {
            "PRAGMA journal_mode = DELETE;"
        })
        .expect("mode");
        conn.execute_batch(
            "CREATE TABLE a(id INTEGER PRIMARY KEY, payload BLOB);
             CREATE TABLE b(id INTEGER PRIMARY KEY, counter INTEGER NOT NULL);
             INSERT INTO b VALUES (1, 0);",
        )
        .expect("schema");
        // A database big enough that the dump takes a while.
        conn.execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 6000)
             INSERT INTO a(payload) SELECT randomblob(3000) FROM n;
             UPDATE b SET counter = counter + 6000;
             COMMIT;",
        )
        .expect("seed");
        // In rollback mode the dump holds the file: the writer waits for it.
        conn.busy_timeout(Duration::from_secs(60)).expect("timeout");
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let (s, c) = (stop.clone(), commits.clone());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                conn.execute_batch(
                    "BEGIN IMMEDIATE;
                     INSERT INTO a(payload) VALUES (randomblob(2000));
                     UPDATE b SET counter = counter + 1 WHERE id = 1;
                     COMMIT;",
                )
                .expect("writer transaction");
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        Writer {
            stop,
            commits,
            handle: Some(handle),
        }
    }

    fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread");
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// (count(a), b.counter) of a database.
fn invariant(path: &Path) -> (i64, i64) {
    let conn = Connection::open(path).expect("open");
    conn.query_row(
        "SELECT (SELECT count(*) FROM a), (SELECT counter FROM b WHERE id = 1)",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .expect("invariant")
}

fn snapshot_while_writing(wal: bool) {
    let fx = Fixture::new();
    let db = fx.path("busy.db");
    let mut writer = Writer::start(&db, wal);
    let cfg = fx.config("stowage.toml", &db.display().to_string());
    wait_until("the writer commits", || writer.commits() > 50);
    let before = writer.commits();
    let t0 = Instant::now();
    let (id, _) = fx.backup(&cfg);
    let took = t0.elapsed();
    let after = writer.commits();
    writer.stop();
    assert!(
        after > before,
        "the writer committed during the run ({before} → {after})"
    );

    let target = fx.path("restored.db");
    let restore = fx.restore(&cfg, &["--to", &target.display().to_string()]);
    assert!(
        restore.status.success(),
        "restore failed:\n{}",
        text(&restore)
    );
    assert_eq!(integrity(&target), "ok");
    let (rows, counter) = invariant(&target);
    assert_eq!(
        rows, counter,
        "a consistent snapshot has as many rows as the counter says"
    );
    let seeded = 6000;
    let committed = (rows - seeded) as u64;
    assert!(
        committed >= before && committed <= after,
        "the snapshot is one of the states the run saw: {committed} commits, {before} before the run, {after} after"
    );
    let raw = fx.manifest(&id)["sources"][0]["raw_size"]
        .as_u64()
        .expect("raw_size");
    eprintln!(
        "{} mode: dumped {raw} bytes in a {took:?} run while the writer committed {} transactions; the snapshot holds {committed} of the writer's commits ({before} before the run)",
        if wal { "WAL" } else { "rollback-journal" },
        after - before
    );
    assert_eq!(
        fx.manifest(&id)["sources"][0]["objects"],
        serde_json::json!(["a", "b"])
    );
}

#[test]
fn snapshot_while_writing_wal() {
    snapshot_while_writing(true);
}

#[test]
fn snapshot_while_writing_rollback_journal() {
    snapshot_while_writing(false);
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Names of partial files a restore may have left in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    read_tree(dir)
        .into_keys()
        .filter(|n| n.contains("stowage-partial"))
        .collect()
}

#[test]
fn restore_refuses_replaces_and_fails_cleanly() {
    let fx = Fixture::new();
    let db = fx.path("app.db");
    sample(&db, true, 800);
    let cfg = fx.config("stowage.toml", &db.display().to_string());
    let (id, _) = fx.backup(&cfg);
    let want = contents(&db);

    // An existing database elsewhere, with other content.
    std::fs::create_dir(fx.path("live")).expect("mkdir");
    let target = fx.path("live/app.db");
    let to = target.display().to_string();
    {
        let c = Connection::open(&target).expect("create");
        c.execute_batch("CREATE TABLE other(x); INSERT INTO other VALUES ('old');")
            .expect("old");
    }
    let old = std::fs::read(&target).expect("old bytes");

    let out = fx.restore(&cfg, &["--to", &to]);
    assert!(!out.status.success(), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains(&to) && msg.contains("--clean"), "{msg}");
    assert_eq!(std::fs::read(&target).expect("read"), old);

    // Open in WAL mode by an application (another process: this one must not hold SQLite
    // locks on a file it also reads, closing any descriptor drops a process's POSIX locks):
    // not replaced, even with --clean.
    let mut app = SqliteShell::open(&target);
    app.run("PRAGMA journal_mode = WAL; INSERT INTO other VALUES ('app');");
    let held = std::fs::read(&target).expect("read");
    let out = fx.restore(&cfg, &["--to", &to, "--clean"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("in use") && text(&out).contains(&to),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&target).expect("read"), held);
    app.close();
    let old = std::fs::read(&target).expect("old bytes");

    // A corrupted archive: the restore fails part way, the old file stays as it was and no
    // partial file is left.
    let archive = fx.archive(&id);
    let good = std::fs::read(&archive).expect("archive");
    let mut bad = good.clone();
    let at = bad.len() - 200;
    bad[at] ^= 0x55;
    std::fs::write(&archive, &bad).expect("corrupt");
    let out = fx.restore(&cfg, &["--to", &to, "--clean"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&target).expect("read"), old);
    assert_eq!(partials(&fx.path("live")), Vec::<String>::new());
    std::fs::write(&archive, &good).expect("repair");

    // A target directory that does not exist.
    let out = fx.restore(
        &cfg,
        &["--to", &fx.path("nowhere/app.db").display().to_string()],
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("nowhere"), "{}", text(&out));

    // --dry-run with --clean: says it would replace, changes nothing.
    let out = fx.restore(&cfg, &["--to", &to, "--clean", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("replacing the existing file"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&target).expect("read"), old);

    // --clean replaces it whole; a stale -shm left by the old database is harmless.
    std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o640))
        .expect("chmod");
    let out = fx.restore(&cfg, &["--to", &to, "--clean"]);
    assert!(out.status.success(), "restore failed:\n{}", text(&out));
    assert_eq!(integrity(&target), "ok");
    assert_eq!(contents(&target), want);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&target).expect("stat").permissions(),
    );
    assert_eq!(mode & 0o777, 0o640, "the old file's mode is kept");
    assert_eq!(partials(&fx.path("live")), Vec::<String>::new());
    // The restored database is usable by an application: it writes and reads back.
    let app = Connection::open(&target).expect("app");
    app.execute("INSERT INTO audit VALUES (1, 'after restore')", [])
        .expect("write");
    drop(app);
    assert_eq!(integrity(&target), "ok");
}

#[test]
fn failed_dumps_publish_nothing() {
    let fx = Fixture::new();
    let db = fx.path("app.db");
    sample(&db, false, 200);
    let cfg = fx.config("stowage.toml", &db.display().to_string());
    let (id, _) = fx.backup(&cfg);
    let published = read_tree(&fx.local.join(JOB).join(&id));

    let junk = fx.path("junk.db");
    std::fs::write(&junk, vec![b'#'; 10_000]).expect("junk");
    let empty = fx.path("empty.db");
    std::fs::write(&empty, b"").expect("empty");
    let cases = [
        (fx.path("missing.db"), "No such file"),
        (junk, "not a database"),
        (empty, "empty"),
        (fx.local.clone(), "not a file"),
    ];
    for (n, (path, expected)) in cases.iter().enumerate() {
        let bad = fx.config(&format!("bad{n}.toml"), &path.display().to_string());
        let out = run_stowage(&bad, ["run", JOB]);
        assert!(
            !out.status.success(),
            "{path:?} was backed up:\n{}",
            text(&out)
        );
        let msg = text(&out);
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(expected),
            "{path:?}: {msg}"
        );
        assert_eq!(
            fx.ids(),
            std::slice::from_ref(&id),
            "nothing new is published"
        );
        assert_eq!(read_tree(&fx.local.join(JOB).join(&id)), published);
    }
    let leftovers: Vec<String> = read_tree(&fx.local)
        .into_keys()
        .filter(|k| !k.starts_with(&format!("{JOB}/{id}/")))
        .collect();
    assert!(
        leftovers.iter().all(|k| !k.contains("db.sqlite")),
        "no partial archive: {leftovers:?}"
    );
}

#[test]
fn config_problems_name_the_key() {
    let fx = Fixture::new();
    for (path, expected) in [
        ("data/app.db", "not an absolute path"),
        ("/data/", "names a directory"),
    ] {
        let cfg = fx.config("bad.toml", path);
        let out = run_stowage(&cfg, ["check-config"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        let msg = text(&out);
        assert!(
            msg.contains("jobs.app.sources[0].path")
                && msg.contains(expected)
                && msg.contains(path),
            "{msg}"
        );
    }
    for (source, expected) in [
        (
            "",
            "jobs.app.sources[0].path: required for type = \"sqlite\"",
        ),
        (
            "url = \"sqlite:///x.db\"\n",
            "jobs.app.sources[0].url: only valid for type = \"postgres\"",
        ),
    ] {
        let cfg = fx.path("other.toml");
        std::fs::write(
            &cfg,
            format!(
                "[destinations.local]\ntype = \"local\"\npath = {:?}\nretention = {{ keep_last = 1 }}\n\n[jobs.app]\nschedule = \"0 3 * * *\"\ndestinations = [\"local\"]\n\n[[jobs.app.sources]]\ntype = \"sqlite\"\nname = \"db\"\n{source}",
                fx.local.display().to_string()
            ),
        )
        .expect("config");
        let out = run_stowage(&cfg, ["check-config"]);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(expected), "{}", text(&out));
    }
}
