//! PostgreSQL in `mode = "physical"`, the engine side of point-in-time recovery, with a real
//! server: a base backup through `stowage run` records its WAL span in the manifest; it is
//! verified whole and restored into a data directory that `pg_verifybackup` accepts; a
//! non-empty directory is refused without `--clean`; a tar with an entry that escapes the
//! target or a link is refused; and `pg_receivewal` fills a spool through the slot.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::tools::is_root;
use common::{Job, PgServer, toml_str};
use stowage::engine::{Archive, Database, RestoreOptions, SourceError};
use stowage::source::postgres::physical::wal::{Lsn, SegmentSize, WalFile, classify};

/// A job `pitr` backing up `pg` in physical mode to local destination `local`.
fn physical_job(pg: &PgServer) -> Job {
    Job::new("pitr")
        .local("local", None)
        .job("compression = \"zstd\"")
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nbin_dir = {}\nslot = \"stowage_test\"\nwal_flush = \"1s\"",
            toml_str(pg.url("postgres")),
            toml_str(pg.bin_dir().display())
        ))
        .write()
}

/// An empty directory the server's user owns (as root, restores give it the files).
fn data_dir_for_postgres() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("stowage-pitr-")
        .tempdir()
        .expect("tempdir");
    if is_root() {
        let out = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path())
            .output()
            .expect("chown");
        assert!(out.status.success());
    }
    dir
}

fn verifybackup(pg: &PgServer, dir: &Path) -> (bool, String) {
    let out = Command::new(pg.bin("pg_verifybackup"))
        .arg("-n")
        .arg(dir)
        .output()
        .expect("run pg_verifybackup");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_base_backup_records_its_wal_span_and_restores_into_a_data_directory() {
    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "create table t (id int primary key, note text); insert into t select g, 'row ' || g from generate_series(1, 1000) g;",
    );
    assert_eq!(pg.psql("postgres", "show wal_level").trim(), "replica");
    let job = physical_job(&pg);

    // (a) the run publishes a tar whose manifest has the WAL span.
    let id = job.backup();
    let manifest = job.manifest("local", &id);
    let source = &manifest["sources"][0];
    assert_eq!(source["type"], "postgres");
    assert_eq!(source["server_version"], "15");
    assert_eq!(
        source["format"],
        "pg_basebackup tar (PGDATA with backup_manifest, no WAL)"
    );
    assert!(
        source["key"].as_str().unwrap_or_default().contains(".tar"),
        "{source}"
    );
    let wal = &source["wal"];
    let start = Lsn::parse(wal["start_lsn"].as_str().expect("start_lsn")).expect("an LSN");
    let stop = Lsn::parse(wal["stop_lsn"].as_str().expect("stop_lsn")).expect("an LSN");
    assert!(start <= stop, "{wal}");
    assert_eq!(wal["timeline"], 1, "{wal}");
    assert!(wal["stop_time"].is_string(), "{wal}");
    // The span is the server's own: pg_stat_archiver-independent, the checkpoint the backup
    // started from lies at or after its start.
    let current = Lsn::parse(pg.psql("postgres", "select pg_current_wal_lsn()").trim()).unwrap();
    assert!(stop <= current, "{stop} > {current}");

    // verify reads the tar through and finds it whole.
    let (code, out) = job.stowage(&["verify", "pitr", "--read-data"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("PostgreSQL 15 data directory") && out.contains("backup_manifest checksum ok"),
        "verify did not read the tar:\n{out}"
    );

    // (b) restore into an empty directory: a data directory pg_verifybackup accepts
    // (without WAL, which -X none leaves out; it ignores the recovery settings).
    let target = data_dir_for_postgres();
    let data = target.path().join("data");
    std::fs::create_dir(&data).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&data, Some(uid_of_postgres()), None).unwrap();
    }
    let to = data.to_str().unwrap();
    let (code, out) = job.stowage(&["restore", "pitr", &id, "--to", to]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("extracted the base backup into"), "{out}");
    // Without --time/--lsn/--name a physical restore replays all archived WAL: a base
    // backup taken with -X none is not consistent alone.
    assert!(
        out.contains("recovery_target_timeline = 'latest'") && out.contains("wal-fetch pitr %f %p"),
        "{out}"
    );
    let (ok, text) = verifybackup(&pg, &data);
    assert!(
        ok,
        "pg_verifybackup refused the restored directory:\n{text}"
    );
    assert!(data.join("pg_wal/archive_status").is_dir());
    assert!(data.join("recovery.signal").exists());
    let label = std::fs::read_to_string(data.join("backup_label")).unwrap();
    assert!(
        label.contains(&format!("START WAL LOCATION: {start} ")),
        "{label}"
    );
    if is_root() {
        let pg_uid = uid_of_postgres();
        for p in ["PG_VERSION", "global/pg_control", "pg_wal", "base"] {
            assert_eq!(
                std::fs::metadata(data.join(p)).unwrap().uid(),
                pg_uid,
                "{p} not given to postgres"
            );
        }
    }

    // (c) the directory is no longer empty: refused without --clean, changed not at all.
    let before = std::fs::read(data.join("global/pg_control")).unwrap();
    let (code, out) = job.stowage(&["restore", "pitr", &id, "--to", to]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("is not empty"), "{out}");
    assert!(out.contains("--clean"), "{out}");
    assert_eq!(
        std::fs::read(data.join("global/pg_control")).unwrap(),
        before
    );

    // --clean deletes the contents, never what a link in it points to.
    let outside = target.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();
    let (code, out) = job.stowage(&["restore", "pitr", &id, "--to", to, "--clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(--clean)"), "{out}");
    assert_eq!(std::fs::read(outside.join("keep")).unwrap(), b"keep");
    assert!(std::fs::symlink_metadata(data.join("link")).is_err());
    let (ok, text) = verifybackup(&pg, &data);
    assert!(ok, "after --clean:\n{text}");
}

fn uid_of_postgres() -> u32 {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("uid")
}

/// The job's configured physical source, as the daemon and restore get it.
fn physical_source(job: &Job) -> Arc<dyn Database> {
    let config = stowage::load::load(&job.config).expect("config loads");
    let job = config.jobs.get("pitr").expect("job pitr");
    job.sources
        .iter()
        .find_map(stowage::config::SourceConfig::database)
        .cloned()
        .expect("a database source")
}

struct Bytes(Vec<u8>);

#[async_trait::async_trait]
impl Archive for Bytes {
    async fn open(&self) -> Result<Box<dyn tokio::io::AsyncRead + Send + Unpin>, SourceError> {
        Ok(Box::new(std::io::Cursor::new(self.0.clone())))
    }
}

fn pg_like_tar(extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("PG_VERSION", &b"15\n"[..]),
        ("backup_label", b"START WAL LOCATION: 0/2000028\n"),
        ("global/pg_control", b"control"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        b.append_data(&mut h, name, data).unwrap();
    }
    extra(&mut b);
    // A manifest as PostgreSQL writes it: its SHA-256 covers every line but the last.
    let mut manifest = String::from(
        "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [\n{ \"Path\": \"PG_VERSION\", \"Size\": 3 }\n],\n",
    );
    let sum = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(manifest.as_bytes()))
    };
    manifest.push_str(&format!("\"Manifest-Checksum\": \"{sum}\"}}\n"));
    let mut h = tar::Header::new_ustar();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o600);
    b.append_data(&mut h, "backup_manifest", manifest.as_bytes())
        .unwrap();
    b.into_inner().unwrap()
}

/// A header written raw: the tar crate's builder refuses ".." in names.
fn raw(b: &mut tar::Builder<Vec<u8>>, name: &str, kind: tar::EntryType, link: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(if kind == tar::EntryType::Regular {
        4
    } else {
        0
    });
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_cksum();
    let data: &[u8] = if kind == tar::EntryType::Regular {
        b"evil"
    } else {
        b""
    };
    b.append(&h, data).unwrap();
}

/// (d) a tar that escapes the target or holds a link is refused, naming the entry, and
/// writes nothing outside the target.
#[tokio::test]
async fn escaping_entries_and_links_are_refused() {
    let pg = PgServer::start();
    let job = physical_job(&pg);
    let db = physical_source(&job);
    for (name, kind, link, why) in [
        (
            "../x",
            tar::EntryType::Regular,
            "",
            "entry \"../x\" is a path with \"..\"",
        ),
        (
            "base/../../x",
            tar::EntryType::Regular,
            "",
            "entry \"base/../../x\" is a path with \"..\"",
        ),
        (
            "/tmp/x",
            tar::EntryType::Regular,
            "",
            "entry \"/tmp/x\" is an absolute path",
        ),
        (
            "x",
            tar::EntryType::Symlink,
            "/etc",
            "entry \"x\" is a link",
        ),
        (
            "global/y",
            tar::EntryType::Link,
            "PG_VERSION",
            "entry \"global/y\" is a link",
        ),
    ] {
        let parent = tempfile::tempdir().unwrap();
        let target = parent.path().join("data");
        let archive = Bytes(pg_like_tar(|b| raw(b, name, kind, link)));
        let opts = RestoreOptions {
            target: target.to_str().unwrap().to_string(),
            ..Default::default()
        };
        let e = db.restore(&archive, &opts).await.expect_err(name);
        assert!(e.to_string().contains(why), "{name}: {e}");
        assert!(!parent.path().join("x").exists(), "{name} escaped");
        let e = db.check_archive(&archive).await.expect_err(name);
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
    // The same tar without the bad entry restores.
    let parent = tempfile::tempdir().unwrap();
    let target = parent.path().join("data");
    let opts = RestoreOptions {
        target: target.to_str().unwrap().to_string(),
        ..Default::default()
    };
    let lines = db
        .restore(&Bytes(pg_like_tar(|_| {})), &opts)
        .await
        .expect("restored");
    assert!(lines.iter().any(|l| l.contains("extracted")), "{lines:?}");
}

/// The WAL source: the slot is created, and pg_receivewal streams into the spool until
/// it is stopped (dropping the future kills it).
#[tokio::test]
async fn wal_is_received_into_the_spool_through_the_slot() {
    let pg = PgServer::start();
    let job = physical_job(&pg);
    let db = physical_source(&job);
    let wal = db.wal_source().expect("physical mode has a WAL source");
    assert_eq!(wal.flush_interval(), std::time::Duration::from_secs(1));
    let spool = tempfile::tempdir().unwrap();
    // Boxed, not pinned on the stack: dropping it below must drop the future itself.
    let mut receiving = Box::pin(wal.receive(spool.path()));
    // Let it start, then switch segments so one completes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut complete = None;
    while complete.is_none() && std::time::Instant::now() < deadline {
        tokio::select! {
            r = &mut receiving => panic!("pg_receivewal stopped: {r:?}"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
        pg.psql(
            "postgres",
            "create table if not exists w (x int); insert into w values (1); select pg_switch_wal();",
        );
        complete = std::fs::read_dir(spool.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|n| matches!(classify(n, SegmentSize::DEFAULT), WalFile::Segment { .. }));
    }
    assert!(complete.is_some(), "no complete segment in the spool");
    let slot = pg.psql(
        "postgres",
        "select slot_type || ' ' || active from pg_replication_slots where slot_name = 'stowage_test'",
    );
    assert_eq!(slot.trim(), "physical true");
    drop(receiving);
    // kill_on_drop: the slot is released once pg_receivewal is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let active = pg.psql(
            "postgres",
            "select active from pg_replication_slots where slot_name = 'stowage_test'",
        );
        if active.trim() == "f" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot still active");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// `pg_ctl ARGS` on a data directory, as `postgres` when we are root.
fn pg_ctl(pg: &PgServer, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg.bin("pg_ctl"));
        c
    } else {
        Command::new(pg.bin("pg_ctl"))
    };
    cmd.args(args).output().expect("run pg_ctl")
}

/// The whole engine side of a point-in-time restore: a base backup, WAL received through
/// the slot, a restore to a named restore point with a `restore_command` (quoted by the
/// engine) that copies from the spool, and a server started on the result that replays to
/// exactly that point.
#[tokio::test]
async fn a_restore_with_recovery_settings_replays_to_the_target() {
    use stowage::engine::{Recovery, RecoveryTarget};
    use stowage::source::postgres::physical::wal::segment_of;
    use tokio::io::AsyncReadExt;

    let pg = PgServer::start();
    pg.psql(
        "postgres",
        "create table t (id int primary key); insert into t select generate_series(1, 100);",
    );
    let job = physical_job(&pg);
    let db = physical_source(&job);
    let work = data_dir_for_postgres();
    // A name with a space and a quote: the restore_command's quoting is exercised for real.
    let spool = work.path().join("spool 'wal'");
    std::fs::create_dir(&spool).unwrap();
    let receiver = {
        let db = db.clone();
        let spool = spool.clone();
        tokio::spawn(async move { db.wal_source().expect("wal").receive(&spool).await })
    };

    let mut dump = db.dump().await.expect("dump starts");
    let mut tar = Vec::new();
    dump.reader.read_to_end(&mut tar).await.expect("read dump");
    let info = dump.finish.await.expect("dump finishes");
    let wal = info.wal.expect("the WAL span");

    pg.psql(
        "postgres",
        "insert into t select generate_series(101, 200);",
    );
    let point = pg.psql("postgres", "select pg_create_restore_point('before more')");
    let point = Lsn::parse(point.trim()).expect("an LSN");
    pg.psql(
        "postgres",
        "insert into t select generate_series(201, 300);",
    );
    pg.psql("postgres", "select pg_switch_wal()");
    let needed = segment_of(point, wal.timeline, SegmentSize::DEFAULT);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !spool.join(&needed).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "segment {needed} never reached the spool"
        );
        assert!(!receiver.is_finished(), "pg_receivewal stopped");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    receiver.abort();
    if is_root() {
        let out = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&spool)
            .output()
            .unwrap();
        assert!(out.status.success());
    }

    let data = work.path().join("data");
    let recovery = Recovery {
        target: RecoveryTarget::Name("before more".into()),
        restore_command: vec![
            "sh".into(),
            "-c".into(),
            "exec cp \"$0/$1\" \"$2\"".into(),
            spool.to_str().unwrap().into(),
            "%f".into(),
            "%p".into(),
        ],
    };
    let opts = RestoreOptions {
        target: data.to_str().unwrap().to_string(),
        recovery: Some(recovery),
        ..Default::default()
    };
    if is_root() {
        std::fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(uid_of_postgres()), None).unwrap();
    }
    let lines = db.restore(&Bytes(tar), &opts).await.expect("restored");
    let all = lines.join("\n");
    assert!(
        all.contains("recovery_target_name = 'before more'"),
        "{all}"
    );
    assert!(all.contains("next: start PostgreSQL on"), "{all}");
    assert!(data.join("recovery.signal").is_file());

    let port = common::tools::free_port().to_string();
    let opts = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c archive_mode=off",
        work.path().display()
    );
    let log = work.path().join("restored.log");
    let out = pg_ctl(
        &pg,
        &[
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-t",
            "120",
            "-o",
            &opts,
            "start",
        ],
    );
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "the restored server did not start: {}\n{log_text}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pg_ctl -w returns once read-only connections are accepted (hot standby); the
    // promotion at the target follows.
    let query = || {
        Command::new(pg.bin("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
            ])
            .args([
                "-d",
                "postgres",
                "-c",
                "select count(*), max(id), pg_is_in_recovery() from t",
            ])
            .output()
            .expect("psql")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut count = query();
    while String::from_utf8_lossy(&count.stdout)
        .trim()
        .ends_with("|t")
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        count = query();
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = pg_ctl(
        &pg,
        &[
            "-D",
            data.to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        "200|200|f",
        "{}\n{log_text}",
        String::from_utf8_lossy(&count.stderr)
    );
    assert!(
        log_text.contains("recovery stopping at restore point \"before more\""),
        "{log_text}"
    );
}
