//! Point-in-time recovery end to end, on a real PostgreSQL and a real S3 server (moto): the
//! daemon streams WAL while a job takes a base backup with `pg_basebackup`; rows are
//! inserted one a second; `stowage restore --time` between two inserts gives exactly the
//! rows before it, and `--latest` after the daemon was killed with SIGKILL loses at most
//! `wal_flush` of committed writes. The recovering server fetches WAL through `stowage
//! wal-fetch` (its `restore_command`), as a user's would.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Job, PgServer, S3Server, free_port, toml_str};

const BUCKET: &str = "pitr";
const FLUSH_SECS: u64 = 2;

/// A directory the `postgres` user can enter (tests run as root in temp dirs of mode 0700).
fn open_to_postgres(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn chown_postgres(path: &Path) {
    let out = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(path)
        .output()
        .expect("chown");
    assert!(out.status.success(), "chown: {out:?}");
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A PostgreSQL server on a restored data directory, stopped on drop.
struct Recovered {
    pg_bin: PathBuf,
    data: PathBuf,
    socket: PathBuf,
    port: u16,
}

impl Recovered {
    fn pg(&self, tool: &str) -> Command {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.pg_bin.join(tool));
            c
        } else {
            Command::new(self.pg_bin.join(tool))
        };
        c.current_dir("/");
        c
    }

    /// Starts it; PostgreSQL replays WAL through the restore command, then promotes.
    fn start(pg_bin: &Path, data: &Path, socket: &Path) -> Recovered {
        let r = Recovered {
            pg_bin: pg_bin.to_path_buf(),
            data: data.to_path_buf(),
            socket: socket.to_path_buf(),
            port: free_port(),
        };
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            r.port,
            socket.display()
        );
        let log = r.log_path();
        let out = r
            .pg("pg_ctl")
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "120", "-o", &opts, "start"])
            .output()
            .expect("pg_ctl");
        assert!(
            out.status.success(),
            "the restored data directory does not start: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // Recovery ends with a promotion; until then the server answers read-only.
        let deadline = Instant::now() + Duration::from_secs(120);
        while r.sql("select pg_is_in_recovery()") != "f" {
            assert!(
                Instant::now() < deadline,
                "still recovering after 120 s:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        r
    }

    fn sql(&self, query: &str) -> String {
        let out = self
            .pg("psql")
            .args(["-X", "-A", "-t", "-h"])
            .arg(&self.socket)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "app",
                "-c",
                query,
            ])
            .output()
            .expect("psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log_path(&self) -> PathBuf {
        let name = self.data.file_name().unwrap_or_default().to_string_lossy();
        self.socket.join(format!("{name}.log"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Recovered {
    fn drop(&mut self) {
        let _ = self
            .pg("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// The stowage binary where the `postgres` user can run it: the restore command written
/// into the data directory is this binary's path.
fn public_stowage(dir: &Path) -> PathBuf {
    let to = dir.join("stowage");
    std::fs::copy(common::stowage_bin(), &to).expect("copy stowage");
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    to
}

/// `stowage ARGS` with the public binary (same environment rules as the test harness).
fn stowage_public(bin: &Path, config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin);
    cmd.arg("--config").arg(config).args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("NO_COLOR", "1");
    let out = common::run_with_timeout(&mut cmd, Duration::from_secs(300));
    (out.status.code(), common::text(&out))
}

/// Rows of `ticks` as (id, inserted at), inserted one at a time about a second apart.
fn insert_ticks(pg: &PgServer, ids: std::ops::RangeInclusive<u32>) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for id in ids {
        let at = pg.psql(
            "app",
            &format!(
                "insert into ticks (id) values ({id}) returning to_char(at at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
            ),
        );
        out.push((id, at.lines().next().unwrap_or_default().trim().to_string()));
        std::thread::sleep(Duration::from_millis(1000));
    }
    out
}

fn parse_utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&chrono::Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_to_a_second_between_two_inserts_and_to_the_latest_after_sigkill() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table ticks (id int primary key, at timestamptz not null default clock_timestamp())",
    );
    let s3 = S3Server::moto();
    s3.create_bucket(BUCKET).await;

    let job = Job::new("pitr")
        .log()
        .s3("s3", &s3, BUCKET, "")
        .local("local", None)
        .source(&format!(
            "type = \"postgres\"\nname = \"db\"\nmode = \"physical\"\nurl = {}\nslot = \"stowage\"\nwal_flush = \"{FLUSH_SECS}s\"\n",
            toml_str(pg.url("postgres"))
        ))
        .write();
    let mut daemon = job.daemon();
    daemon.wait_for_output("receiving WAL", Duration::from_secs(60));
    job.backup();

    let ticks = insert_ticks(&pg, 1..=10);
    // The last insert reaches the destination within one wal_flush (and a scan).
    std::thread::sleep(Duration::from_secs(FLUSH_SECS * 2 + 2));
    daemon.signal("KILL");
    let _ = daemon.wait(Duration::from_secs(10));

    // Everything the recovering server runs must be readable by `postgres`.
    let public = tempfile::tempdir().expect("tempdir");
    open_to_postgres(public.path());
    let bin = public_stowage(public.path());
    open_to_postgres(job.dir.path());
    for f in ["stowage.toml", "s3_secret"] {
        std::fs::set_permissions(job.path(f), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
    }

    // Between the 5th and the 6th insert: exactly five rows.
    let (t5, t6) = (parse_utc(&ticks[4].1), parse_utc(&ticks[5].1));
    let target = t5 + (t6 - t5) / 2;
    let target = target.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let scratch = tempfile::tempdir().expect("tempdir");
    open_to_postgres(scratch.path());
    // The recovered servers' sockets and logs.
    let run = scratch.path().join("run");
    std::fs::create_dir(&run).expect("mkdir");
    chown_postgres(&run);
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&data);
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            "pitr",
            "--time",
            &target,
            "--to-dir",
            data.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(0), "restore --time {target}:\n{out}");
    // The daemon's catch-up may have taken a base backup too: either precedes the target.
    assert!(
        out.contains("restored pitr backup "),
        "the base backup is named:\n{out}"
    );
    let recovered = Recovered::start(pg.bin_dir(), &data, &run);
    assert_eq!(
        recovered.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2,3,4,5",
        "rows up to {target}:\n{}",
        recovered.log()
    );
    drop(recovered);

    // --latest: every committed insert (the last one more than wal_flush before the kill).
    let latest = scratch.path().join("latest");
    std::fs::create_dir(&latest).expect("mkdir");
    std::fs::set_permissions(&latest, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&latest);
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            "pitr",
            "--latest",
            "--to-dir",
            latest.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, Some(0), "restore --latest:\n{out}");
    let recovered = Recovered::start(pg.bin_dir(), &latest, &run);
    assert_eq!(
        recovered.sql("select count(*) from ticks"),
        "10",
        "every committed row:\n{}",
        recovered.log()
    );

    drop(recovered);

    // --copy-wal: the WAL fetched into the data directory, for a server without stowage
    // (here: the restore runs as root with the harness's binary, which postgres cannot run).
    let (t8, t9) = (parse_utc(&ticks[7].1), parse_utc(&ticks[8].1));
    let target = (t8 + (t9 - t8) / 2).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let copied = scratch.path().join("copied");
    std::fs::create_dir(&copied).expect("mkdir");
    std::fs::set_permissions(&copied, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    chown_postgres(&copied);
    let (code, out) = job.stowage(&[
        "restore",
        "pitr",
        "--time",
        &target,
        "--copy-wal",
        "--to-dir",
        copied.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "restore --copy-wal:\n{out}");
    assert!(out.contains("WAL file(s)"), "{out}");
    let auto = std::fs::read_to_string(copied.join("postgresql.auto.conf")).expect("auto.conf");
    assert!(auto.contains("stowage_wal/"), "{auto}");
    let recovered = Recovered::start(pg.bin_dir(), &copied, &run);
    assert_eq!(
        recovered.sql("select max(id) from ticks"),
        "8",
        "rows up to {target} from copied WAL:\n{}",
        recovered.log()
    );
    drop(recovered);

    // The README's recipe by hand, from the local destination's files: no stowage at all.
    let (t2, t3) = (parse_utc(&ticks[1].1), parse_utc(&ticks[2].1));
    let target = t2 + (t3 - t2) / 2;
    let by_hand = scratch.path().join("by-hand");
    by_hand_recovery(&job, target, &by_hand, &run);
    let recovered = Recovered::start(pg.bin_dir(), &by_hand, &run);
    assert_eq!(
        recovered.sql("select string_agg(id::text, ',' order by id) from ticks"),
        "1,2",
        "rows up to {target} recovered by hand:\n{}",
        recovered.log()
    );
    drop(recovered);

    // A non-empty directory is refused without --clean, and nothing in it is touched.
    let (code, out) = stowage_public(
        &bin,
        &job.config,
        &[
            "restore",
            "pitr",
            "--latest",
            "--to-dir",
            latest.to_str().expect("utf-8"),
        ],
    );
    assert_ne!(
        code,
        Some(0),
        "a non-empty data directory must be refused:\n{out}"
    );
    assert!(out.contains("--clean"), "the refusal says how:\n{out}");
}

fn sh(script: &str) {
    let out = Command::new("sh")
        .args(["-ec", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{script}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// README "Point-in-time recovery", "By hand, without stowage", step by step, with shell
/// tools on the local destination's files.
fn by_hand_recovery(job: &Job, target: chrono::DateTime<chrono::Utc>, data: &Path, run: &Path) {
    let root = job.path("local").join("pitr");
    // 1. The newest base backup that ended before the target.
    let mut chosen = None;
    for id in job.ids("local") {
        let m = job.manifest("local", &id);
        let wal = m["sources"][0]["wal"].clone();
        let stop = parse_utc(wal["stop_time"].as_str().expect("stop_time"));
        if stop <= target {
            chosen = Some((id, wal));
            break;
        }
    }
    let (id, wal) = chosen.expect("a base backup before the target");
    // 2. Unpack it.
    std::fs::create_dir(data).expect("mkdir");
    sh(&format!(
        "zstd -dc '{}' | tar -x -C '{}'",
        root.join(&id).join("db.tar.zst").display(),
        data.display()
    ));
    chown_postgres(data);
    std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    // 3. The WAL from the base backup's first file on, each checked against its record.
    let (hi, lo) = wal["start_lsn"]
        .as_str()
        .and_then(|l| l.split_once('/'))
        .expect("start_lsn");
    let first = format!(
        "{:08X}{:08X}{:08X}",
        wal["timeline"].as_u64().expect("timeline"),
        u64::from_str_radix(hi, 16).expect("hex"),
        u64::from_str_radix(lo, 16).expect("hex") >> 24
    );
    let wal_dir = run.join("by-hand-wal");
    std::fs::create_dir(&wal_dir).expect("mkdir");
    let shipped = root.join("wal").join("db");
    let mut copied = 0;
    for entry in std::fs::read_dir(&shipped).expect("wal dir") {
        let path = entry.expect("entry").path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let Some(name) = file.strip_suffix(".zst") else {
            continue;
        };
        if !(name.ends_with(".history") || name >= first.as_str()) {
            continue;
        }
        let out = wal_dir.join(name);
        sh(&format!(
            "zstd -q -d -c '{}' > '{}'",
            path.display(),
            out.display()
        ));
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(shipped.join("index").join(format!("{name}.json"))).expect("record"),
        )
        .expect("json");
        let sum = Command::new("sha256sum")
            .arg(&out)
            .output()
            .expect("sha256sum");
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(
            sum.split_whitespace().next(),
            record["raw_sha256"].as_str(),
            "{name}"
        );
        copied += 1;
    }
    assert!(copied > 0, "no WAL from {first} in {}", shipped.display());
    let pointer: serde_json::Value =
        serde_json::from_slice(&std::fs::read(shipped.join("partial.json")).expect("partial.json"))
            .expect("json");
    let partial_name = pointer["name"].as_str().expect("name");
    if !wal_dir.join(partial_name).exists() {
        let key = pointer["key"].as_str().expect("key");
        sh(&format!(
            "zstd -q -d -c '{}' > '{}'",
            job.path("local").join(key).display(),
            wal_dir.join(partial_name).display()
        ));
    }
    chown_postgres(&wal_dir);
    // 4. Recovery settings.
    std::fs::write(data.join("recovery.signal"), "").expect("recovery.signal");
    let mut auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).expect("auto.conf");
    auto.push_str(&format!(
        "restore_command = 'cp {}/%f %p'\nrecovery_target_time = '{}'\nrecovery_target_action = 'promote'\nrecovery_target_timeline = 'latest'\n",
        wal_dir.display(),
        target.format("%Y-%m-%d %H:%M:%S%.6f+00")
    ));
    std::fs::write(data.join("postgresql.auto.conf"), auto).expect("auto.conf");
    chown_postgres(data);
}
