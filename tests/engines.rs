//! Several engines in one job: PostgreSQL + MariaDB + Redis + SQLite + files, dumped in their
//! listed order and published as ONE backup, restored with one `--to SOURCE=TARGET` per
//! database into fresh targets and compared with the originals. A failure of any one engine
//! fails the whole run: nothing is published and the earlier backup stays byte-identical.

mod common;

use common::text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::mariadb::MariaDbServer;
use common::redis::RedisServer;
use common::{
    Job, PgServer, Rng, read_tree, run_stowage, seed_sample_db, toml_str, write_random_files,
};

fn ok(out: &Output, what: &str) -> String {
    let t = text(out);
    assert!(out.status.success(), "{what} failed:\n{t}");
    t
}

/// Every file under `root` with its bytes, keyed by relative path.
fn snapshot_dir(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for entry in walk(root) {
        let rel = entry
            .strip_prefix(root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        out.insert(rel, std::fs::read(&entry).expect("read"));
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
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

fn sqlite_rows(path: &Path) -> String {
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA integrity_check; SELECT id, name, hex(data) FROM notes ORDER BY id;")
        .output()
        .expect("run sqlite3 (tests/setup.sh installs it)");
    assert!(out.status.success(), "sqlite3: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Stack {
    pg: PgServer,
    maria: MariaDbServer,
    redis: RedisServer,
    dir: tempfile::TempDir,
}

impl Stack {
    fn start() -> Stack {
        let pg = PgServer::start();
        seed_sample_db(&pg, "app", 500);
        let maria = MariaDbServer::start();
        maria.create_db("shop");
        maria.sql(
            "shop",
            "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(100)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
             CREATE TABLE orders (id INT PRIMARY KEY, customer_id INT, total DECIMAL(10,2), note TEXT,
               FOREIGN KEY (customer_id) REFERENCES customers(id)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
             INSERT INTO customers VALUES (1,'ada'),(2,'bob'),(3,'çé 🎉');
             INSERT INTO orders VALUES (10,1,9.99,'first'),(11,2,100.00,NULL),(12,3,0.01,'x');",
        );
        let redis = RedisServer::start();
        redis.cli(&["SET", "session:1", "alice"]);
        redis.cli(&["HSET", "cart:1", "apples", "3", "pears", "1"]);
        redis.cli(&["RPUSH", "queue", "a", "b", "c"]);
        redis.cli(&["EXPIRE", "session:1", "3600"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("notes.db");
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(
                "PRAGMA journal_mode=WAL;
                 CREATE TABLE notes (id INTEGER PRIMARY KEY, name TEXT, data BLOB);
                 INSERT INTO notes VALUES (1, 'a', x'00ff10'), (2, NULL, randomblob(5000)), (3, 'c', NULL);",
            )
            .output()
            .expect("sqlite3");
        assert!(out.status.success(), "{}", text(&out));
        let mut rng = Rng::new(42);
        write_random_files(
            &mut rng,
            &dir.path().join("uploads"),
            (0..20).map(|i| format!("{}/f{i}.bin", i % 3)),
            100..20_000,
        );
        Stack {
            pg,
            maria,
            redis,
            dir,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn config(&self) -> PathBuf {
        Job::config_in(self.dir.path(), "app")
            .local_at("local", &self.path("backups"), None)
            .schedule("@daily")
            .job("catch_up = false")
            .database(
                "postgres",
                "db",
                &self.pg.url("app"),
                &format!("bin_dir = {}\n", toml_str(self.pg.bin_dir().display())),
            )
            .database("mariadb", "shop", &self.maria.url("shop"), "")
            .database("redis", "cache", &self.redis.url(), "")
            .source(&format!(
                "type = \"sqlite\"\nname = \"notes\"\npath = {}\n",
                toml_str(self.path("notes.db").display())
            ))
            .files("uploads", &self.path("uploads"), "")
            .write_as("stowage.toml")
    }

    fn manifests(&self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for m in walk(&self.path("backups/app")) {
            if m.file_name().is_some_and(|n| n == "manifest.json") {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&m).expect("read manifest"))
                        .expect("manifest is JSON");
                out.push(v);
            }
        }
        out
    }
}

#[test]
fn one_job_with_every_engine_restores_each_into_its_own_target() {
    let s = Stack::start();
    let config = s.config();
    ok(&run_stowage(&config, ["check-config"]), "check-config");
    ok(&run_stowage(&config, ["run", "app"]), "run");

    let manifests = s.manifests();
    assert_eq!(manifests.len(), 1, "one backup, one manifest");
    let sources = manifests[0]["sources"].as_array().expect("sources");
    let kinds: Vec<(&str, &str)> = sources
        .iter()
        .map(|x| {
            (
                x["name"].as_str().unwrap_or(""),
                x["type"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("db", "postgres"),
            ("shop", "mariadb"),
            ("cache", "redis"),
            ("notes", "sqlite"),
            ("uploads", "files")
        ],
        "sources in their listed order"
    );
    // Each database records its tool, the server's version and its objects.
    for x in &sources[..4] {
        assert!(x["tool"].as_str().is_some_and(|t| !t.is_empty()), "{x}");
        assert!(
            x["server_version"].as_str().is_some_and(|t| !t.is_empty()),
            "{x}"
        );
    }
    let objects = |i: usize| -> Vec<String> {
        sources[i]["objects"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        objects(1).iter().any(|o| o.ends_with("orders")),
        "{:?}",
        objects(1)
    );
    assert_eq!(objects(3), vec!["notes".to_string()]);

    // `list --holding` answers "which backup has table orders" from the manifests alone.
    let listed = ok(
        &run_stowage(&config, ["list", "app", "--holding", "orders"]),
        "list --holding",
    );
    assert!(listed.contains("shop (mariadb"), "{listed}");
    let none = ok(
        &run_stowage(&config, ["list", "app", "--holding", "no_such_table"]),
        "list --holding",
    );
    assert!(!none.contains("shop (mariadb"), "{none}");

    // Fresh targets for everything.
    s.pg.create_db("app_restored");
    s.maria.create_db("shop_restored");
    let rdb = s.path("restored/dump.rdb");
    std::fs::create_dir_all(rdb.parent().expect("parent")).expect("mkdir");
    let notes = s.path("restored/notes.db");
    let uploads = s.path("restored/uploads");
    let to = |name: &str, target: String| format!("{name}={target}");
    let args = vec![
        "restore".to_string(),
        "app".into(),
        "latest".into(),
        "--to".into(),
        to("db", s.pg.url("app_restored")),
        "--to".into(),
        to("shop", s.maria.url("shop_restored")),
        "--to".into(),
        to("cache", rdb.display().to_string()),
        "--to".into(),
        to("notes", notes.display().to_string()),
        "--files-to".into(),
        uploads.display().to_string(),
    ];

    // A dry run names what each source would do and changes nothing.
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let said = ok(&run_stowage(&config, &dry), "restore --dry-run");
    for name in ["db", "shop", "cache", "notes"] {
        assert!(
            said.contains(name),
            "dry run does not mention {name}:\n{said}"
        );
    }
    assert!(!rdb.exists() && !notes.exists() && !uploads.exists());
    assert!(s.pg.table_names("app_restored").is_empty());

    let out = ok(&run_stowage(&config, &args), "restore");
    assert!(out.contains("restored app backup"), "{out}");
    assert_eq!(
        s.pg.table_checksums("app_restored"),
        s.pg.table_checksums("app")
    );
    assert_eq!(
        s.maria.table_checksums("shop_restored"),
        s.maria.table_checksums("shop")
    );
    let restored_redis = RedisServer::start_with_rdb(&rdb);
    s.redis
        .snapshot()
        .assert_restored_in(&restored_redis.snapshot());
    assert_eq!(sqlite_rows(&notes), sqlite_rows(&s.path("notes.db")));
    assert!(sqlite_rows(&notes).starts_with("ok\n"));
    assert_eq!(read_tree(&uploads), read_tree(&s.path("uploads")));

    // A plain --to is ambiguous with several databases: refused before any work.
    let e = run_stowage(
        &config,
        ["restore", "app", "latest", "--to", &s.pg.url("x")],
    );
    assert_eq!(e.status.code(), Some(2), "{}", text(&e));
    assert!(text(&e).contains("--to SOURCE=TARGET"), "{}", text(&e));
}

#[test]
fn one_engine_failing_fails_the_whole_set() {
    let mut s = Stack::start();
    let config = s.config();
    ok(&run_stowage(&config, ["run", "app"]), "first run");
    let before = snapshot_dir(&s.path("backups"));
    assert_eq!(s.manifests().len(), 1);

    // Redis (the third source) goes away: postgres and mariadb were already dumped, but the
    // set is incomplete, so nothing of this run may be published or left behind.
    s.redis.stop();
    let out = run_stowage(&config, ["run", "app"]);
    assert!(!out.status.success(), "run with redis down succeeded");
    let t = text(&out);
    assert!(t.contains("cache"), "the failing source is named:\n{t}");
    assert_eq!(
        snapshot_dir(&s.path("backups")),
        before,
        "the failed run changed the destination"
    );
    let listed = ok(&run_stowage(&config, ["list", "app"]), "list");
    assert!(listed.contains("(1 backup)"), "{listed}");
}
