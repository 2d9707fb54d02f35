//! WAL retention end to end, on a real PostgreSQL and a local destination with
//! `keep_last = 1`: the daemon streams WAL, two base backups are taken with WAL switches
//! between them; once the second backup's retention dropped the first, the WAL before the
//! second backup's first WAL file is gone (records and objects), everything from it on is
//! there, history files stay, a stale partial state goes, and `stowage list` shows the
//! recoverable window.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use common::{Job, PgServer, toml_str};

const FLUSH_SECS: u64 = 2;

/// The first WAL file of a base backup, from its manifest's `wal` (16 MiB segments).
fn first_file(manifest: &serde_json::Value) -> String {
    let wal = &manifest["sources"][0]["wal"];
    let tl = wal["timeline"].as_u64().expect("timeline");
    let lsn = wal["start_lsn"].as_str().expect("start_lsn");
    let (hi, lo) = lsn.split_once('/').expect("lsn");
    let hi = u64::from_str_radix(hi, 16).expect("hi");
    let lo = u64::from_str_radix(lo, 16).expect("lo");
    format!("{tl:08X}{hi:08X}{:08X}", lo >> 24)
}

/// The WAL file names under `dir` (objects, or with `.json` records), sorted.
fn names_in(dir: &Path, strip: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter_map(|n| {
                    n.strip_suffix(strip)
                        .map(str::to_string)
                        .or_else(|| strip.is_empty().then_some(n))
                })
                .map(|n| n.split('.').next().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn wait_for(path: &Path, timeout: Duration) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < timeout,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn segment(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_before_the_oldest_retained_base_backup_goes() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql("app", "create table t (id int primary key)");

    let job = Job::new("pitr")
        .log()
        .local("local", Some(1))
        // Only the backups the test takes.
        .job("catch_up = false")
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"{FLUSH_SECS}s\"\n",
            toml_str(pg.url("postgres"))
        ))
        .write();
    let wal: PathBuf = job.path("local").join("pitr/wal/db");
    let index = wal.join("index");
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));

    let id1 = job.backup();
    let first1 = first_file(&job.manifest("local", &id1));
    let mut last = String::new();
    for i in 0..4 {
        pg.psql("app", &format!("insert into t values ({i})"));
        last = pg
            .psql("app", "select pg_walfile_name(pg_switch_wal())")
            .trim()
            .to_string();
    }
    assert!(segment(&last), "{last:?}");
    wait_for(&index.join(format!("{last}.json")), Duration::from_secs(60));
    wait_for(
        &index.join(format!("{first1}.json")),
        Duration::from_secs(30),
    );

    // A history file (of a timeline this cluster never had) and a stale partial state: the
    // one stays, the other goes.
    std::fs::write(wal.join("00000001.history.zst"), b"x").expect("write");
    std::fs::write(index.join("00000001.history.json"), b"{}").expect("write");
    let stale = wal.join(format!("partial/{first1}.1000.zst"));
    std::fs::create_dir_all(stale.parent().expect("parent")).expect("mkdir");
    std::fs::write(&stale, b"x").expect("write");
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .expect("open")
        .set_modified(SystemTime::now() - Duration::from_secs(2 * 3600))
        .expect("mtime");

    let id2 = job.backup();
    assert_eq!(
        job.ids("local"),
        std::slice::from_ref(&id2),
        "keep_last = 1"
    );
    let first2 = first_file(&job.manifest("local", &id2));
    assert!(first1 < first2, "{first1} < {first2}");
    // pg_basebackup ends its backup with a WAL switch: the first file is shipped soon.
    wait_for(
        &index.join(format!("{first2}.json")),
        Duration::from_secs(60),
    );

    let records = names_in(&index, ".json");
    let objects: Vec<String> = names_in(&wal, "")
        .into_iter()
        .filter(|n| segment(n))
        .collect();
    let log = job.log();
    for n in records.iter().chain(&objects).filter(|n| segment(n)) {
        assert!(
            *n >= first2,
            "{n} is older than {first2}: records {records:?}, objects {objects:?}\n{log}"
        );
    }
    // Everything from the second backup's first file to the last switched one is there.
    let (from, to) = (
        u64::from_str_radix(&first2[16..], 16).expect("hex"),
        u64::from_str_radix(&last[16..], 16).expect("hex"),
    );
    assert!(
        to < from,
        "the second backup starts after the last switch ({last})"
    );
    // Whatever was shipped since the second backup began is all there, gap-free.
    let newest = records
        .iter()
        .filter(|n| segment(n))
        .max()
        .cloned()
        .unwrap_or_default();
    let newest = u64::from_str_radix(newest.get(16..).unwrap_or("0"), 16).expect("hex");
    for seg in from..=newest {
        let name = format!("{}{seg:08X}", &first2[..16]);
        assert!(records.contains(&name), "record {name}: {records:?}\n{log}");
        assert!(objects.contains(&name), "object {name}: {objects:?}\n{log}");
    }
    assert!(!records.contains(&first1), "{records:?}");
    assert!(
        records.contains(&"00000001".to_string()),
        "history record kept"
    );
    assert!(wal.join("00000001.history.zst").exists(), "history kept");
    assert!(!stale.exists(), "the stale partial state is deleted");
    assert!(
        log.contains("WAL retention on local: db: deleted "),
        "one line per destination:\n{log}"
    );

    let (code, out) = job.stowage(&["list", "pitr"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("point-in-time recovery of db on local: from ")
            && out.contains(" (oldest base backup) to ")
            && out.contains(" ago)"),
        "{out}\nrecords {records:?}\nobjects {objects:?}\n{:?}\n{log}",
        names_in(&wal, "")
    );

    daemon.signal("TERM");
    let _ = daemon.wait(Duration::from_secs(20));
}
