//! The redis engine end to end through the real binary and real redis-servers: the RDB
//! snapshot is backed up (`redis-cli --rdb -`), restored as a file, and a new server
//! started on that file holds every key with its type, value and TTL. Failures publish
//! nothing; restore never leaves a partial file or touches the old one when it fails.

mod common;

use common::text;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::redis::{RedisOptions, RedisServer, Resp};
use common::{
    Job, Rng, free_port, list_tree, read_tree, run_stowage, sha256_hex, spawn_stowage, toml_str,
};

const JOB: &str = "app";

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

/// A temp dir with a local destination and config files for job `app`.
struct Setup {
    dir: tempfile::TempDir,
    local: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("stowage-redis-test-")
            .tempdir()
            .expect("tempdir");
        let local = dir.path().join("dest");
        Setup { dir, local }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// A 0600 secret file holding `value` and a newline.
    fn secret(&self, rel: &str, value: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::write(&p, format!("{value}\n")).expect("secret");
        p
    }

    /// A config whose job `app` backs up one redis source `cache` to `local`.
    fn config(
        &self,
        file: &str,
        url: &str,
        password_file: Option<&Path>,
        job_extra: &str,
    ) -> PathBuf {
        let pw = password_file
            .map(|p| format!("password_file = {}\n", toml_str(p.display())))
            .unwrap_or_default();
        Job::config_in(self.dir.path(), JOB)
            .top("[log]\nlevel = \"info\"")
            .local_at("local", &self.local, Some(10))
            .job(job_extra)
            .database("redis", "cache", url, &pw)
            .write_as(file)
    }

    /// Published backups, oldest first.
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
    fn backup(&self, cfg: &Path) -> String {
        let before = self.ids();
        let out = run_stowage(cfg, ["run", JOB]);
        assert!(out.status.success(), "run failed:\n{}", text(&out));
        let new: Vec<String> = self
            .ids()
            .into_iter()
            .filter(|i| !before.contains(i))
            .collect();
        assert_eq!(new.len(), 1, "expected one new backup:\n{}", text(&out));
        new[0].clone()
    }

    fn manifest_path(&self, id: &str) -> PathBuf {
        self.local.join(JOB).join(id).join("manifest.json")
    }

    fn manifest(&self, id: &str) -> serde_json::Value {
        let bytes = std::fs::read(self.manifest_path(id)).expect("manifest");
        serde_json::from_slice(&bytes).expect("manifest JSON")
    }

    /// The stored object of source `cache` (as stored, compressed or not).
    fn object_path(&self, id: &str) -> PathBuf {
        let key = self.manifest(id)["sources"][0]["key"]
            .as_str()
            .expect("key")
            .to_string();
        self.local.join(key)
    }

    /// The RDB as stored in backup `id` (zstd, the default compression).
    fn archive(&self, id: &str) -> Vec<u8> {
        common::zstd_decompress(&std::fs::read(self.object_path(id)).expect("object"))
    }

    fn restore(&self, cfg: &Path, args: &[&str]) -> Output {
        let mut all = vec!["restore", JOB];
        all.extend_from_slice(args);
        run_stowage(cfg, all)
    }

    fn restore_ok(&self, cfg: &Path, args: &[&str]) -> Output {
        let out = self.restore(cfg, args);
        assert!(
            out.status.success(),
            "restore {args:?} failed:\n{}",
            text(&out)
        );
        out
    }
}

/// Keys of every type and encoding in db0 and db3: binary keys and values (NUL, CR LF,
/// 0xFF, a 1 MiB random string that spans many read chunks), empty and integer strings,
/// small (listpack/intset) and big (quicklist/hashtable/skiplist) collections, a stream
/// with a consumer group and pending entries, and TTLs set by EX, PX and PEXPIRE.
fn seed(redis: &RedisServer) {
    let mut rng = Rng::new(7);
    let mut c = redis.conn();
    let big = rng.bytes(1024 * 1024);
    c.cmd(&[b"SET", b"plain", b"hello"]);
    c.cmd(&[b"SET", b"bin\x00key\xff\r\n", &big]);
    c.cmd(&[b"SET", b"empty", b""]);
    c.cmd(&[b"SET", b"int", b"12345"]);
    c.cmd(&[b"SET", b"ttl:ex", b"expires", b"EX", b"1000"]);
    c.cmd(&[b"SET", b"ttl:px", b"\r\n\x00", b"PX", b"5000000"]);
    c.cmd(&[b"RPUSH", b"list:small", b"a", b"\x00\xff", b"", b"c"]);
    for i in 0..1000 {
        c.cmd(&[b"RPUSH", b"list:big", format!("element-{i}").as_bytes()]);
    }
    c.cmd(&[b"SADD", b"set:ints", b"1", b"2", b"300000"]);
    c.cmd(&[b"SADD", b"set:strs", b"x", b"\xfe\xff", b"line\nbreak"]);
    for i in 0..600 {
        c.cmd(&[b"SADD", b"set:big", format!("m{i}").as_bytes()]);
    }
    c.cmd(&[
        b"ZADD",
        b"zset:small",
        b"1",
        b"a",
        b"2.5",
        b"b",
        b"-3",
        b"\x00c",
    ]);
    for i in 0..300 {
        c.cmd(&[
            b"ZADD",
            b"zset:big",
            format!("{}", i * 7 % 101).as_bytes(),
            format!("z{i}").as_bytes(),
        ]);
    }
    c.cmd(&[
        b"HSET",
        b"hash:small",
        b"f1",
        b"v1",
        b"f\x002",
        &rng.bytes(100),
    ]);
    c.cmd(&[b"PEXPIRE", b"hash:small", b"7000000"]);
    for i in 0..500 {
        c.cmd(&[
            b"HSET",
            b"hash:big",
            format!("f{i}").as_bytes(),
            &rng.bytes(20),
        ]);
    }
    for i in 0..5 {
        c.cmd(&[
            b"XADD",
            b"stream",
            b"*",
            b"n",
            i.to_string().as_bytes(),
            b"bin",
            b"\x00\x01",
        ]);
    }
    c.cmd(&[b"XGROUP", b"CREATE", b"stream", b"workers", b"0"]);
    c.cmd(&[
        b"XREADGROUP",
        b"GROUP",
        b"workers",
        b"w1",
        b"COUNT",
        b"2",
        b"STREAMS",
        b"stream",
        b">",
    ]);
    c.cmd(&[b"SELECT", b"3"]);
    c.cmd(&[b"SET", b"db3:string", &rng.bytes(300), b"EX", b"2000"]);
    c.cmd(&[b"RPUSH", b"db3:list", b"one", b"two"]);
    c.cmd(&[b"SET", b"plain", b"same name, other database"]);
}

/// A few keys, for tests about something else than the format.
fn seed_small(redis: &RedisServer, marker: &str) {
    let mut c = redis.conn();
    c.cmd(&[b"SET", b"marker", marker.as_bytes()]);
    c.cmd(&[b"HSET", b"h", b"a", b"1"]);
    c.cmd(&[b"SELECT", b"2"]);
    c.cmd(&[b"SET", b"k", b"v", b"EX", b"600"]);
}

/// Running redis-cli processes: (arguments, environment), NUL-separated as in /proc.
fn redis_cli_processes() -> Vec<(String, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let dir = entry.path();
        let Ok(cmdline) = std::fs::read(dir.join("cmdline")) else {
            continue;
        };
        let args = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if args
            .split(' ')
            .next()
            .is_some_and(|a| a.ends_with("redis-cli"))
        {
            let env = std::fs::read(dir.join("environ")).unwrap_or_default();
            found.push((args, String::from_utf8_lossy(&env).replace('\0', " ")));
        }
    }
    found
}

/// Whether `redis-check-rdb` accepts a file (it verifies the checksum too).
fn assert_rdb_ok(path: &Path) {
    let out = Command::new("redis-check-rdb")
        .arg(path)
        .output()
        .expect("run redis-check-rdb");
    assert!(
        out.status.success() && text(&out).contains("RDB looks OK"),
        "redis-check-rdb {}:\n{}",
        path.display(),
        text(&out)
    );
}

#[test]
fn round_trip_keeps_every_type_binary_values_and_ttls() {
    let redis = RedisServer::start();
    seed(&redis);
    let original = redis.snapshot();
    assert_eq!(original.databases(), ["db0", "db3"]);
    assert!(original.keys.values().filter(|e| e.pttl.is_some()).count() >= 4);

    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "");
    let before = std::time::Instant::now();
    let id = setup.backup(&cfg);
    let took = before.elapsed();

    // The manifest says what the backup is.
    let m = setup.manifest(&id);
    let s = &m["sources"][0];
    let cli_version = String::from_utf8_lossy(
        &Command::new("redis-cli")
            .arg("--version")
            .output()
            .expect("redis-cli --version")
            .stdout,
    )
    .trim()
    .to_string();
    assert_eq!(s["type"], "redis", "{m:#}");
    assert_eq!(s["format"], "Redis RDB", "{m:#}");
    assert_eq!(s["key"], format!("{JOB}/{id}/cache.rdb.zst"), "{m:#}");
    assert_eq!(
        s["server_version"].as_str(),
        redis.info_field("server", "redis_version").as_deref(),
        "{m:#}"
    );
    assert_eq!(s["objects"], serde_json::json!(["db0", "db3"]), "{m:#}");
    assert_eq!(s["tool"], cli_version.as_str(), "{m:#}");
    assert_eq!(m["tools"]["redis-cli"], cli_version.as_str(), "{m:#}");

    // The archive is exactly an RDB file: no diskless EOF mark after its checksum.
    let rdb = setup.archive(&id);
    assert_eq!(s["raw_size"], rdb.len() as u64);
    assert!(rdb.starts_with(b"REDIS00"), "{:?}", &rdb[..9]);
    assert_eq!(
        rdb[rdb.len() - 9],
        0xFF,
        "ends with the EOF opcode and checksum"
    );
    assert!(rdb.len() > 1024 * 1024);

    let target = setup.mkdir("restored").join("dump.rdb");
    let out = setup.restore_ok(&cfg, &["--to", target.to_str().expect("utf-8")]);
    assert!(text(&out).contains("RDB version"), "{}", text(&out));
    assert_eq!(std::fs::read(&target).expect("restored file"), rdb);
    assert_rdb_ok(&target);
    assert_eq!(list_tree(target.parent().expect("dir")), ["dump.rdb"]);

    let restored = RedisServer::start_with_rdb(&target);
    original.assert_restored_in(&restored.snapshot());
    eprintln!(
        "backup of {} keys ({} RDB bytes) took {took:?}",
        original.keys.len(),
        rdb.len()
    );
}

/// With `repl-diskless-sync no` the server saves the snapshot to its disk first and sends
/// it with its length (no EOF mark): the archive is the same kind of clean RDB.
#[test]
fn disk_based_replication_gives_the_same_clean_rdb() {
    let redis = RedisServer::start_with(RedisOptions {
        args: vec!["--repl-diskless-sync".into(), "no".into()],
        ..Default::default()
    });
    seed_small(&redis, "disk");
    let original = redis.snapshot();
    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "");
    let id = setup.backup(&cfg);
    let rdb = setup.archive(&id);
    assert!(rdb.starts_with(b"REDIS00"));
    assert_eq!(rdb[rdb.len() - 9], 0xFF);
    // The side effect users should know of: the server wrote its own dump file to serve
    // the snapshot.
    assert!(
        redis.rdb_path().is_file(),
        "server saved no {:?}",
        redis.rdb_path()
    );

    let target = setup.mkdir("restored").join("dump.rdb");
    setup.restore_ok(&cfg, &["--to", target.to_str().expect("utf-8")]);
    assert_rdb_ok(&target);
    let restored = RedisServer::start_with_rdb(&target);
    original.assert_restored_in(&restored.snapshot());
}

#[test]
fn passwords_acl_users_and_wrong_passwords() {
    let redis = RedisServer::start_with_password("default-secret-pw");
    seed_small(&redis, "auth");
    let original = redis.snapshot();
    redis.cmd(&[
        b"ACL",
        b"SETUSER",
        b"backup",
        b"on",
        b">backup-secret-pw",
        b"+sync",
        b"+replconf",
        b"+info",
    ]);
    redis.cmd(&[
        b"ACL",
        b"SETUSER",
        b"syncer",
        b"on",
        b">syncer-secret-pw",
        b"+sync",
        b"+replconf",
    ]);
    let setup = Setup::new();

    // The default user, with password_file.
    let pw = setup.secret("default_pw", "default-secret-pw");
    let cfg = setup.config("default.toml", &redis.url(), Some(&pw), "");
    // Slowed down (200 ms per key) so that redis-cli can be seen while it runs: the
    // password is in its environment, never in its arguments.
    redis.cmd(&[b"CONFIG", b"SET", b"rdb-key-save-delay", b"200000"]);
    let running = spawn_stowage(&cfg, ["run", JOB]);
    let ours = format!("-p {} ", redis.port());
    let mut dump = None;
    common::wait_for("redis-cli --rdb to run", Duration::from_secs(30), || {
        for (args, env) in redis_cli_processes() {
            assert!(!args.contains("default-secret-pw"), "{args}");
            if args.contains(&ours) && args.contains("--rdb") && !env.is_empty() {
                dump = Some(env);
            }
        }
        dump.is_some()
    });
    assert!(
        dump.is_some_and(|env| env.contains("REDISCLI_AUTH=default-secret-pw ")),
        "the password reaches redis-cli through its environment"
    );
    let out = running.wait(Duration::from_secs(60));
    redis.cmd(&[b"CONFIG", b"SET", b"rdb-key-save-delay", b"0"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("default-secret-pw"));

    // An ACL user with only what a backup needs: SYNC, REPLCONF, INFO.
    let url = format!("redis://backup@127.0.0.1:{}", redis.port());
    let bpw = setup.secret("backup_pw", "backup-secret-pw");
    let cfg_acl = setup.config("acl.toml", &url, Some(&bpw), "");
    let id = setup.backup(&cfg_acl);
    let m = setup.manifest(&id);
    assert_eq!(
        m["sources"][0]["objects"],
        serde_json::json!(["db0", "db2"]),
        "{m:#}"
    );
    let target = setup.mkdir("restored").join("dump.rdb");
    setup.restore_ok(&cfg_acl, &["--to", target.to_str().expect("utf-8")]);
    let restored = RedisServer::start_with_rdb(&target);
    original.assert_restored_in(&restored.snapshot());

    // A user without INFO still gets a backup, without the server version and databases.
    let url = format!("redis://syncer@127.0.0.1:{}", redis.port());
    let spw = setup.secret("syncer_pw", "syncer-secret-pw");
    let cfg_sync = setup.config("sync.toml", &url, Some(&spw), "");
    let before = setup.ids();
    let out = run_stowage(&cfg_sync, ["run", JOB]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("INFO is not allowed"), "{}", text(&out));
    let id = setup
        .ids()
        .into_iter()
        .find(|i| !before.contains(i))
        .expect("new backup");
    let s = &setup.manifest(&id)["sources"][0];
    assert!(
        s.get("objects").is_none() && s.get("server_version").is_none(),
        "{s:#}"
    );
    assert!(setup.archive(&id).starts_with(b"REDIS00"));

    // A wrong password, and none at all: the run fails with the server's answer, publishes
    // nothing and leaves the earlier backups byte for byte as they were.
    let published = read_tree(&setup.local);
    let wrong = setup.secret("wrong_pw", "not-the-password");
    for (file, pw, expect) in [
        ("wrong.toml", Some(wrong.as_path()), "WRONGPASS"),
        ("nopw.toml", None, "NOAUTH"),
    ] {
        let cfg_bad = setup.config(file, &redis.url(), pw, "");
        let out = run_stowage(&cfg_bad, ["run", JOB]);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(text(&out).contains(expect), "{expect}:\n{}", text(&out));
        assert!(!text(&out).contains("not-the-password"), "{}", text(&out));
        assert_eq!(
            read_tree(&setup.local),
            published,
            "{file} changed the destination"
        );
    }
}

#[test]
fn unreachable_or_stopped_server_publishes_nothing() {
    let setup = Setup::new();

    let port = free_port();
    let cfg = setup.config("gone.toml", &format!("redis://127.0.0.1:{port}"), None, "");
    let out = run_stowage(&cfg, ["run", JOB]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("cannot connect to redis at 127.0.0.1:{port}"))
            && text(&out).contains("refused"),
        "{}",
        text(&out)
    );
    assert!(setup.ids().is_empty());

    // A snapshot slowed down to ~6 s (20 ms per key), and the server killed while it streams.
    let mut redis = RedisServer::start();
    let mut c = redis.conn();
    let mut rng = Rng::new(3);
    for i in 0..300 {
        c.cmd(&[b"SET", format!("key{i}").as_bytes(), &rng.bytes(2000)]);
    }
    c.cmd(&[b"CONFIG", b"SET", b"rdb-key-save-delay", b"20000"]);
    let cfg = setup.config("killed.toml", &redis.url(), None, "");
    let running = spawn_stowage(&cfg, ["run", JOB]);
    common::wait_for("the snapshot to start", Duration::from_secs(30), || {
        redis
            .info_field("persistence", "rdb_bgsave_in_progress")
            .as_deref()
            == Some("1")
    });
    std::thread::sleep(Duration::from_millis(500));
    redis.kill();
    let out = running.wait(Duration::from_secs(60));
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("redis-cli --rdb failed") && text(&out).contains("I/O Error"),
        "{}",
        text(&out)
    );
    assert!(setup.ids().is_empty());
    let left: Vec<String> = list_tree(&setup.local)
        .into_iter()
        .filter(|f| !f.contains("/locks/"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn restore_refuses_a_file_without_clean_and_replaces_it_with_clean() {
    let redis = RedisServer::start();
    seed_small(&redis, "restore");
    let original = redis.snapshot();
    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "");
    let id = setup.backup(&cfg);
    let rdb = setup.archive(&id);

    let dir = setup.mkdir("data");
    let target = dir.join("dump.rdb");
    let t = target.to_str().expect("utf-8");
    std::fs::write(&target, b"an older snapshot").expect("old file");

    let out = setup.restore(&cfg, &["--to", t]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already exists") && text(&out).contains("--clean"),
        "{}",
        text(&out)
    );
    let out = setup.restore_ok(
        &cfg,
        &["--to", &format!("cache={t}"), "--clean", "--dry-run"],
    );
    assert!(
        text(&out).contains(&format!("would write the RDB snapshot of cache to {t}")),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&target).expect("old"), b"an older snapshot");

    // Targets that are not a file path say what to do instead.
    let out = setup.restore(&cfg, &["--to", &redis.url()]);
    assert!(!out.status.success());
    assert!(text(&out).contains("only when it starts"), "{}", text(&out));
    let out = setup.restore(&cfg, &["--to", dir.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is a directory"), "{}", text(&out));
    let missing = dir.join("nope").join("dump.rdb");
    let out = setup.restore(&cfg, &["--to", missing.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert_eq!(list_tree(&dir), ["dump.rdb"]);

    // The replacement keeps the old file's mode; an append-only file beside it (which a
    // server with appendonly yes would load instead) is pointed out.
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::fs::create_dir(dir.join("appendonlydir")).expect("aof dir");
    let out = setup.restore_ok(&cfg, &["--to", t, "--clean"]);
    assert!(
        text(&out).contains("holds an append-only file"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read(&target).expect("restored"), rdb);
    assert_eq!(list_tree(&dir), ["dump.rdb"], "no temporary file left");
    assert_eq!(mode(&target), 0o640);

    // An existing empty file is no data to lose.
    let empty = setup.mkdir("empty").join("dump.rdb");
    std::fs::write(&empty, b"").expect("empty file");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let out = setup.restore_ok(&cfg, &["--to", empty.to_str().expect("utf-8")]);
    assert!(!text(&out).contains("append-only"), "{}", text(&out));
    assert_eq!(mode(&empty), 0o640, "an empty file's mode is kept too");
    let new = setup.mkdir("new").join("dump.rdb");
    setup.restore_ok(&cfg, &["--to", new.to_str().expect("utf-8")]);
    assert_eq!(mode(&new), 0o600, "a new file is private");
    let restored = RedisServer::start_with_rdb(&empty);
    original.assert_restored_in(&restored.snapshot());
}

/// Archives that are damaged, or that hold something Redis would refuse to load even though
/// their sha256 matches the manifest (not an RDB, cut short, a flipped bit that only the
/// RDB's own CRC-64 shows): the restore fails and the old file stays as it was, with no
/// partial file beside it.
#[test]
fn bad_archives_leave_the_old_file_untouched() {
    let redis = RedisServer::start();
    seed_small(&redis, "bad");
    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "compression = \"none\"");
    let id = setup.backup(&cfg);
    let object = setup.object_path(&id);
    let good = std::fs::read(&object).expect("object");
    assert!(good.starts_with(b"REDIS00"), "stored uncompressed");

    let dir = setup.mkdir("data");
    let target = dir.join("dump.rdb");
    let t = target.to_str().expect("utf-8");
    std::fs::write(&target, b"the old snapshot").expect("old file");

    // Damaged in storage: the checksum catches it at the end of the stream.
    let mut damaged = good.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0x55;
    std::fs::write(&object, &damaged).expect("damage");
    let out = setup.restore(&cfg, &["--to", t, "--clean"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("sha256"), "{}", text(&out));
    assert_eq!(std::fs::read(&target).expect("old"), b"the old snapshot");
    assert_eq!(list_tree(&dir), ["dump.rdb"]);

    // Stored with a matching checksum, but not what Redis can load.
    let manifest = std::fs::read(setup.manifest_path(&id)).expect("manifest");
    let mut incomplete = good.clone();
    incomplete.truncate(good.len() - 20);
    let mut flipped = good.clone();
    flipped[mid] ^= 0x01;
    for (what, bytes, expect) in [
        (
            "foreign",
            b"PGDMP\x01\x0e\x00 not redis at all".to_vec(),
            "not an RDB snapshot",
        ),
        ("incomplete", incomplete, "incomplete or damaged"),
        ("flipped bit", flipped, "incomplete or damaged"),
    ] {
        std::fs::write(&object, &bytes).expect("replace object");
        let mut m: serde_json::Value = serde_json::from_slice(&manifest).expect("json");
        m["sources"][0]["sha256"] = sha256_hex(&bytes).into();
        m["sources"][0]["size"] = (bytes.len() as u64).into();
        m["sources"][0]["raw_size"] = (bytes.len() as u64).into();
        std::fs::write(
            setup.manifest_path(&id),
            serde_json::to_vec(&m).expect("json"),
        )
        .expect("manifest");
        let out = setup.restore(&cfg, &["--to", t, "--clean"]);
        assert!(!out.status.success(), "{what}: {}", text(&out));
        assert!(text(&out).contains(expect), "{what}: {}", text(&out));
        assert_eq!(
            std::fs::read(&target).expect("old"),
            b"the old snapshot",
            "{what}"
        );
        assert_eq!(list_tree(&dir), ["dump.rdb"], "{what}");
    }
}

/// The README's procedure for a compose stack: stop Redis (which saves its damaged state
/// on the way down, as a stock server does), restore the backup over its dump file with
/// --clean, start Redis again: the data is back as it was at the backup.
#[test]
fn compose_procedure_stop_restore_start() {
    let mut redis = RedisServer::start_with(RedisOptions {
        args: vec!["--save".into(), "3600 1 300 100 60 10000".into()],
        ..Default::default()
    });
    seed(&redis);
    let original = redis.snapshot();
    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "");
    setup.backup(&cfg);

    // The accident.
    redis.cmd(&[b"FLUSHALL"]);
    redis.cmd(&[b"SET", b"after-the-accident", b"1"]);
    redis.stop();
    let saved = redis.rdb_path();
    assert!(std::fs::metadata(&saved).expect("saved on stop").len() > 0);
    let t = saved.to_str().expect("utf-8").to_string();

    let out = setup.restore(&cfg, &["--to", &format!("cache={t}")]);
    assert!(
        !out.status.success(),
        "refuses without --clean: {}",
        text(&out)
    );
    setup.restore_ok(&cfg, &["--to", &format!("cache={t}"), "--clean"]);
    redis.restart();
    let back = redis.snapshot();
    assert!(!back.keys.contains_key(&(0, b"after-the-accident".to_vec())));
    original.assert_restored_in(&back);
    assert_eq!(
        redis.cmd(&[b"DBSIZE"]),
        Resp::Int(original.keys.iter().filter(|((db, _), _)| *db == 0).count() as i64)
    );
}

/// A server with appendonly yes loads its AOF and ignores dump.rdb: restored under an
/// existing AOF the backup is silently not used, and with the AOF moved away the server
/// starts empty (and saves that over the restored file). The README's procedure: move the
/// AOF aside, start once with appendonly no (loads the RDB), CONFIG SET appendonly yes
/// (writes a new AOF from it), restart as configured.
#[test]
fn appendonly_server_procedure() {
    let aof = ["--appendonly", "yes", "--save", "3600 1"];
    let mut redis = RedisServer::start_with(RedisOptions {
        args: aof.iter().map(|a| a.to_string()).collect(),
        ..Default::default()
    });
    seed_small(&redis, "aof");
    let original = redis.snapshot();
    let setup = Setup::new();
    let cfg = setup.config("stowage.toml", &redis.url(), None, "");
    setup.backup(&cfg);
    redis.cmd(&[b"FLUSHALL"]);
    redis.cmd(&[b"SET", b"after-the-accident", b"1"]);
    redis.stop();
    let target = format!("cache={}", redis.rdb_path().display());
    let aof_dir = redis.dir().join("appendonlydir");
    assert!(aof_dir.is_dir());

    // The pitfall: the AOF wins.
    let out = setup.restore_ok(&cfg, &["--to", &target, "--clean"]);
    assert!(
        text(&out).contains("holds an append-only file"),
        "{}",
        text(&out)
    );
    redis.restart();
    assert!(
        redis
            .snapshot()
            .keys
            .contains_key(&(0, b"after-the-accident".to_vec()))
    );
    redis.stop();

    // The procedure.
    setup.restore_ok(&cfg, &["--to", &target, "--clean"]);
    std::fs::rename(&aof_dir, redis.dir().join("appendonlydir.before-restore")).expect("mv");
    redis.restart_with(&["--appendonly", "no"]);
    redis.cmd(&[b"CONFIG", b"SET", b"appendonly", b"yes"]);
    common::wait_for("the new AOF", Duration::from_secs(30), || {
        redis
            .info_field("persistence", "aof_rewrite_in_progress")
            .as_deref()
            == Some("0")
            && redis
                .info_field("persistence", "aof_rewrite_scheduled")
                .as_deref()
                == Some("0")
            && redis.info_field("persistence", "aof_enabled").as_deref() == Some("1")
    });
    redis.stop();
    redis.restart_with(&aof);
    assert_eq!(
        redis.info_field("persistence", "aof_enabled").as_deref(),
        Some("1")
    );
    original.assert_restored_in(&redis.snapshot());
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let setup = Setup::new();
    let pw = setup.secret("pw", "x");
    for (url, pw, expect) in [
        (
            "redis://cache:6379/3",
            None,
            "\"/3\" selects one logical database",
        ),
        (
            "rediss://cache:6380",
            None,
            "TLS (rediss://) is not supported",
        ),
        ("postgres://cache", None, "is not redis"),
        (
            "redis://backup@cache:6379",
            None,
            "jobs.app.sources[0].password_file: required with a user",
        ),
        (
            "redis://cache?db=1",
            Some(pw.as_path()),
            "are not supported",
        ),
    ] {
        let cfg = setup.config("bad.toml", url, pw, "");
        let out = run_stowage(&cfg, ["check-config"]);
        assert!(!out.status.success(), "{url}: {}", text(&out));
        assert!(text(&out).contains(expect), "{url}: {}", text(&out));
    }
    let cfg = setup.config("good.toml", "redis://cache:6379", Some(&pw), "");
    let out = run_stowage(&cfg, ["check-config"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("redis redis://cache:6379"),
        "{}",
        text(&out)
    );
    let body = std::fs::read_to_string(&cfg).expect("cfg") + "bin_dir = \"/usr/bin\"\n";
    std::fs::write(&cfg, body).expect("cfg");
    let out = run_stowage(&cfg, ["check-config"]);
    assert!(
        text(&out).contains("jobs.app.sources[0].bin_dir: only valid for type = \"postgres\""),
        "{}",
        text(&out)
    );
}
