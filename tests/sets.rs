//! Backup sets (issue 4), end to end through the real binary: one job with a PostgreSQL
//! source and a `files` source published as one backup, content-addressed blobs uploaded
//! exactly once (counted at moto's side, from its own request log), selective restores, the
//! order that keeps a set coherent while the application writes, mark-and-sweep rotation
//! against a concurrent backup, and failures that leave nothing behind.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use common::{
    Job, JobBuilder, PgServer, PsqlSession, Rng, S3Request, S3Server, list_tree, quote_literal,
    read_tree, run_stowage, seed_sample_db, sha256_hex, spawn_stowage, text, wait_for, write_file,
    write_random_files, zstd_decompress,
};
use serde::Deserialize;

const BUCKET: &str = "backups";
const PREFIX: &str = "nightly";
const JOB: &str = "app";
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long to wait for something another process should do soon (a lock wait, a file).
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Fixture: servers, a temp dir, config files
// ---------------------------------------------------------------------------------------------

/// PostgreSQL (optional), moto with the bucket, and a temp dir holding the local destination,
/// config files and the directories the `files` sources back up.
struct Fixture {
    pg: Option<PgServer>,
    s3: S3Server,
    dir: tempfile::TempDir,
    /// Root of the `local` destination.
    local: PathBuf,
}

/// `app/blobs/ab/<sha>.zst`: the key of a blob relative to a destination's root.
fn blob_key(sha: &str) -> String {
    format!("{JOB}/blobs/{}/{sha}.zst", &sha[..2])
}

/// The zstd-compressed JSON index of a `files` source in one backup.
#[derive(Debug, Deserialize)]
struct Index {
    format: u32,
    source: String,
    root: String,
    include: Vec<String>,
    exclude: Vec<String>,
    files: Vec<IndexEntry>,
}

#[derive(Debug, Deserialize, Clone)]
struct IndexEntry {
    path: String,
    size: u64,
    mode: u32,
    /// Unix time in nanoseconds.
    mtime: i128,
    sha256: String,
    blob: String,
}

impl Index {
    /// JSON Lines: the header (this struct without `files`), then one entry per line.
    fn parse(compressed: &[u8]) -> Index {
        let json = zstd_decompress(compressed);
        let bad = |e: serde_json::Error| -> ! {
            panic!(
                "files index is not the documented JSON Lines: {e}\n{}",
                String::from_utf8_lossy(&json)
            )
        };
        let mut lines = json.split(|b| *b == b'\n').filter(|l| !l.is_empty());
        let header: serde_json::Value =
            serde_json::from_slice(lines.next().unwrap_or_default()).unwrap_or_else(|e| bad(e));
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Index {
            format: header["format"].as_u64().unwrap_or(0) as u32,
            source: header["source"].as_str().unwrap_or_default().to_string(),
            root: header["root"].as_str().unwrap_or_default().to_string(),
            include: strings(&header["include"]),
            exclude: strings(&header["exclude"]),
            files: lines
                .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| bad(e)))
                .collect(),
        }
    }

    fn entry(&self, path: &str) -> &IndexEntry {
        self.files
            .iter()
            .find(|f| f.path == path)
            .unwrap_or_else(|| panic!("{path} not in the index of {}", self.source))
    }

    fn paths(&self) -> BTreeSet<String> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

impl Fixture {
    async fn start(with_pg: bool) -> Fixture {
        let pg = with_pg.then(PgServer::start);
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let dir = tempfile::Builder::new()
            .prefix("stowage-sets-")
            .tempdir()
            .expect("tempdir");
        let local = dir.path().join("dest-local");
        Fixture { pg, s3, dir, local }
    }

    fn pg(&self) -> &PgServer {
        self.pg
            .as_ref()
            .expect("fixture started without PostgreSQL")
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.path(rel);
        std::fs::create_dir_all(&p).expect("mkdir");
        p
    }

    /// A config of job `app` in the fixture's directory (written with `write_as`): `[log]`
    /// at info and both destinations, `local` and `offsite` (the bucket's prefix `nightly`,
    /// parts of 5 MiB), each keeping the last `keep` backups; the sources are the test's.
    fn config(&self, keep: usize) -> JobBuilder {
        let job = Job::config_in(self.dir.path(), JOB)
            .top("[log]\nlevel = \"info\"")
            .local_at("local", &self.local, Some(keep));
        let offsite = format!(
            "{}prefix = \"{PREFIX}\"\npart_size = \"5MiB\"\nretention = {{ keep_last = {keep} }}\n",
            job.s3_keys(&self.s3, BUCKET)
        );
        job.destination("offsite", &offsite)
    }

    /// `stowage run app`, which must succeed; returns the id it published (on `local`).
    fn run_backup(&self, cfg: &Path) -> String {
        let before: BTreeSet<String> = self.local_ids().into_iter().collect();
        let out = run_stowage(cfg, ["run", JOB]);
        assert!(out.status.success(), "run failed:\n{}", text(&out));
        self.new_id(&before, &text(&out))
    }

    /// The one published id that is not in `before` (retention may have removed others).
    fn new_id(&self, before: &BTreeSet<String>, log: &str) -> String {
        let new: Vec<String> = self
            .local_ids()
            .into_iter()
            .filter(|i| !before.contains(i))
            .collect();
        assert_eq!(new.len(), 1, "expected one new backup: {new:?}\n{log}");
        new[0].clone()
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

    fn list(&self, cfg: &Path) -> String {
        let out = run_stowage(cfg, ["list", JOB]);
        assert!(out.status.success(), "list failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    // --- what the destinations hold ---

    /// Published backups on `local` (a directory with a manifest), oldest first.
    fn local_ids(&self) -> Vec<String> {
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

    /// Keys under `<prefix>/app/`, relative to the destination root (`app/...`).
    async fn s3_keys(&self) -> Vec<String> {
        self.s3
            .list_keys(BUCKET, &format!("{PREFIX}/{JOB}/"))
            .await
            .into_iter()
            .map(|k| k[PREFIX.len() + 1..].to_string())
            .collect()
    }

    /// Published backups on `offsite`, oldest first.
    async fn s3_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .s3_keys()
            .await
            .iter()
            .filter_map(|k| {
                let parts: Vec<&str> = k.split('/').collect();
                (parts.len() == 3 && parts[2] == "manifest.json").then(|| parts[1].to_string())
            })
            .collect();
        ids.sort();
        ids
    }

    fn local_blobs(&self) -> BTreeSet<String> {
        list_tree(&self.local.join(JOB).join("blobs"))
            .into_iter()
            .map(|rel| format!("{JOB}/blobs/{rel}"))
            .collect()
    }

    async fn s3_blobs(&self) -> BTreeSet<String> {
        self.s3_keys()
            .await
            .into_iter()
            .filter(|k| k.starts_with(&format!("{JOB}/blobs/")))
            .collect()
    }

    fn local_locks(&self) -> Vec<String> {
        list_tree(&self.local.join(JOB).join("locks"))
    }

    async fn s3_locks(&self) -> Vec<String> {
        self.s3_keys()
            .await
            .into_iter()
            .filter_map(|k| k.strip_prefix(&format!("{JOB}/locks/")).map(str::to_string))
            .collect()
    }

    fn local_index(&self, id: &str, source: &str) -> Index {
        let p = self
            .local
            .join(JOB)
            .join(id)
            .join(format!("{source}.files.json.zst"));
        Index::parse(&std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display())))
    }

    async fn s3_index(&self, id: &str, source: &str) -> Index {
        let key = format!("{PREFIX}/{JOB}/{id}/{source}.files.json.zst");
        Index::parse(&self.s3.get(BUCKET, &key).await)
    }

    /// Blobs referenced by the indexes of the backups published on `local`.
    fn local_referenced(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for id in self.local_ids() {
            let dir = self.local.join(JOB).join(&id);
            for name in list_tree(&dir) {
                if name.ends_with(".files.json.zst") {
                    let idx = Index::parse(&std::fs::read(dir.join(&name)).expect("read index"));
                    out.extend(idx.files.into_iter().map(|f| f.blob));
                }
            }
        }
        out
    }

    /// Blobs referenced by the indexes of the backups published on `offsite`.
    async fn s3_referenced(&self) -> BTreeSet<String> {
        let keys = self.s3_keys().await;
        let mut out = BTreeSet::new();
        for id in self.s3_ids().await {
            for k in keys.iter().filter(|k| {
                k.starts_with(&format!("{JOB}/{id}/")) && k.ends_with(".files.json.zst")
            }) {
                let idx = Index::parse(&self.s3.get(BUCKET, &format!("{PREFIX}/{k}")).await);
                out.extend(idx.files.into_iter().map(|f| f.blob));
            }
        }
        out
    }

    /// On each destination, the blob objects are exactly those the published backups
    /// reference: nothing referenced is missing, nothing unreferenced is left.
    async fn assert_blobs_match_references(&self, when: &str) {
        let (have, refs) = (self.local_blobs(), self.local_referenced());
        assert_eq!(
            have.difference(&refs).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{when}: unreferenced blobs left on local"
        );
        assert_eq!(
            refs.difference(&have).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{when}: referenced blobs missing on local"
        );
        let (have, refs) = (self.s3_blobs().await, self.s3_referenced().await);
        assert_eq!(
            have.difference(&refs).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{when}: unreferenced blobs left on offsite"
        );
        assert_eq!(
            refs.difference(&have).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{when}: referenced blobs missing on offsite"
        );
    }

    /// Every object of both destinations, with its bytes.
    async fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out: BTreeMap<String, Vec<u8>> = read_tree(&self.local)
            .into_iter()
            .map(|(k, v)| (format!("local:{k}"), v))
            .collect();
        for k in self.s3.list_keys(BUCKET, "").await {
            let body = self.s3.get(BUCKET, &k).await;
            out.insert(format!("s3:{k}"), body);
        }
        out
    }

    /// After a failed run: exactly the same objects with the same bytes as `before`, no
    /// `.partial`, no open multipart upload.
    async fn assert_untouched(&self, before: &BTreeMap<String, Vec<u8>>, when: &str) {
        let partials: Vec<String> = list_tree(&self.local)
            .into_iter()
            .filter(|p| p.ends_with(".partial"))
            .collect();
        assert!(
            partials.is_empty(),
            "{when}: .partial files left: {partials:?}"
        );
        assert_eq!(
            self.s3.open_multipart_uploads(BUCKET).await,
            0,
            "{when}: multipart upload left open"
        );
        let after = self.snapshot().await;
        let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&after),
            names(before),
            "{when}: stored objects changed"
        );
        for (k, v) in before {
            assert!(after[k] == *v, "{when}: bytes of {k} changed");
        }
    }
}

/// Requests that upload to a blob key, and the sha256 each names.
fn blob_uploads(reqs: &[S3Request]) -> Vec<(S3Request, String)> {
    reqs.iter()
        .filter(|r| r.is_upload() && r.path.contains("/blobs/"))
        .map(|r| (r.clone(), blob_sha(r)))
        .collect()
}

fn blob_downloads(reqs: &[S3Request]) -> Vec<(S3Request, String)> {
    reqs.iter()
        .filter(|r| r.is_download() && r.path.contains("/blobs/"))
        .map(|r| (r.clone(), blob_sha(r)))
        .collect()
}

/// `/backups/nightly/app/blobs/ab/<sha>.zst` -> `<sha>` (checking the `ab` fan-out dir).
fn blob_sha(r: &S3Request) -> String {
    let key = r
        .key_in(BUCKET)
        .unwrap_or_else(|| panic!("not an object request: {r:?}"));
    let rest = key
        .strip_prefix(&format!("{PREFIX}/{JOB}/blobs/"))
        .unwrap_or_else(|| panic!("blob key outside {PREFIX}/{JOB}/blobs/: {r:?}"));
    let (fan, file) = rest
        .split_once('/')
        .unwrap_or_else(|| panic!("blob key without a fan-out dir: {r:?}"));
    let sha = file
        .strip_suffix(".zst")
        .unwrap_or_else(|| panic!("blob key not .zst: {r:?}"));
    assert!(
        sha.len() == 64 && sha.starts_with(fan),
        "blob key is not <first 2 hex>/<sha256>.zst: {r:?}"
    );
    sha.to_string()
}

/// `(mode & 0o7777, mtime)` of a file.
fn meta(path: &Path) -> (u32, SystemTime) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    (
        m.permissions().mode() & 0o7777,
        m.modified().expect("mtime"),
    )
}

fn set_mtime(path: &Path, t: SystemTime) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Restore-time directories under an orphans root; each must be `%Y%m%dT%H%M%SZ`.
fn orphan_runs(root: &Path) -> Vec<String> {
    let mut runs: Vec<String> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    runs.sort();
    for r in &runs {
        let b = r.as_bytes();
        let ok = b.len() == 16
            && b[8] == b'T'
            && b[15] == b'Z'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
        assert!(
            ok,
            "{}: {r:?} is not a restore time like 20261122T071102Z",
            root.display()
        );
    }
    runs
}

/// Sessions waiting for a lock in `db` (a pg_dump stuck behind a test's LOCK TABLE).
fn lock_waiters(pg: &PgServer, db: &str) -> usize {
    pg.psql(
        "postgres",
        &format!(
            "select count(*) from pg_stat_activity where datname = {} and wait_event_type = 'Lock'",
            quote_literal(db)
        ),
    )
    .parse()
    .expect("count")
}

/// Hold `LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE` in an open transaction: a pg_dump of
/// that database takes its snapshot, then blocks on the table until `release`.
fn hold_lock(pg: &PgServer, db: &str, table: &str) -> PsqlSession {
    let mut s = pg.session(db);
    s.exec(&format!(
        "begin; lock table {table} in access exclusive mode"
    ));
    s
}

fn release(mut lock: PsqlSession) {
    lock.exec("commit");
    lock.close();
}

/// Wait until a pg_dump of `db` run by `child` is blocked on a lock (so every source listed
/// before that postgres source has finished), failing early if `child` exits.
fn wait_for_blocked_dump(pg: &PgServer, db: &str, child: &mut common::Running) {
    wait_for("pg_dump to block on the held lock", WAIT, || {
        if let Some(status) = child.exited() {
            panic!(
                "stowage exited ({status}) before its pg_dump blocked:\n{}",
                child.output_so_far()
            );
        }
        lock_waiters(pg, db) > 0
    });
}

async fn wait_for_s3_key(s3: &S3Server, key: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let full = format!("{PREFIX}/{key}");
        if s3.list_keys(BUCKET, &full).await.contains(&full) {
            return;
        }
        assert!(Instant::now() < deadline, "{key} never appeared on offsite");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Paths `<top>/<nn>/<file>` spread over nested directories.
fn nested_paths(rng: &mut Rng, n: usize, tops: &[&str]) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{}/{:02}/{:04}_{}.bin",
                tops[i % tops.len()],
                (i / tops.len()) % 10,
                i,
                rng.hex(6)
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A Rails-like app: rows naming attachment files
// ---------------------------------------------------------------------------------------------

/// Back up a database whose rows name files plus the files; delete rows and files, add new
/// ones; restore the whole set in place: the database equals the backup except the excluded
/// bookkeeping table, every referenced file is back, later files are moved to orphan_files.
/// Then again from S3 into a fresh database and an empty directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rails_like_set_restores_database_and_files() {
    let fx = Fixture::start(true).await;
    let pg = fx.pg();
    let mut rng = Rng::new(1);
    pg.create_db("app");
    pg.psql(
        "app",
        "create table public.attachments (
             id serial primary key, path text not null unique, sha256 text not null);
         create table public.users (id serial primary key, name text not null);
         insert into public.users (name) select 'user ' || g from generate_series(1, 30) g;
         create table public.bookkeeping (id serial primary key, note text not null);
         insert into public.bookkeeping (note) values ('backup 1 started'), ('backup 1 done');",
    );
    let site = fx.mkdir("site");
    let uploads = fx.mkdir("site/uploads");
    let mut rels = nested_paths(&mut rng, 48, &["photos", "docs", "avatars"]);
    rels.push("photos/été 2024/plage n°1.jpg".to_string());
    rels.push("docs/with space/report (final).pdf".to_string());
    let files = write_random_files(&mut rng, &uploads, rels, 100..20_000);
    // Modes and mtimes are part of what is restored.
    set_mode(&uploads.join("docs/with space/report (final).pdf"), 0o600);
    set_mode(&uploads.join(files.keys().next().expect("a file")), 0o640);
    let old = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    for rel in files.keys().take(10) {
        set_mtime(&uploads.join(rel), old);
    }
    let metas: BTreeMap<String, (u32, SystemTime)> = files
        .keys()
        .map(|rel| (rel.clone(), meta(&uploads.join(rel))))
        .collect();
    // Scratch space the app keeps in the same directory, excluded from the source.
    write_file(&uploads, "tmp/cache_0.bin", b"scratch before");
    let values: Vec<String> = files
        .iter()
        .map(|(rel, data)| {
            format!(
                "({}, {})",
                quote_literal(rel),
                quote_literal(&sha256_hex(data))
            )
        })
        .collect();
    pg.psql(
        "app",
        &format!(
            "insert into public.attachments (path, sha256) values {}",
            values.join(", ")
        ),
    );

    let cfg = fx
        .config(10)
        .job("exclude_tables = [\"bookkeeping\"]")
        .postgres("db", &pg.url("app"))
        .files("uploads", &uploads, "exclude = [\"tmp/**\"]")
        .write_as("stowage.toml");
    let id = fx.run_backup(&cfg);
    let want = pg.table_checksums("app");
    assert_eq!(want.len(), 3, "{want:?}");

    // The published layout: one manifest, the dump and the index; every blob present.
    let listing = list_tree(&fx.local.join(JOB).join(&id));
    for name in ["manifest.json", "db.pgdump.zst", "uploads.files.json.zst"] {
        assert!(
            listing.contains(&name.to_string()),
            "{name} not in {listing:?}"
        );
    }
    let idx = fx.local_index(&id, "uploads");
    assert_eq!(idx.format, 2);
    assert_eq!(idx.source, "uploads");
    assert_eq!(Path::new(&idx.root), uploads.as_path());
    assert!(idx.include.is_empty(), "{:?}", idx.include);
    assert_eq!(idx.exclude, vec!["tmp/**".to_string()]);
    assert_eq!(
        idx.paths(),
        files.keys().cloned().collect::<BTreeSet<_>>(),
        "the index holds every file but the excluded tmp/"
    );
    for (rel, data) in &files {
        let e = idx.entry(rel);
        assert_eq!(e.sha256, sha256_hex(data), "{rel}");
        assert_eq!(e.size, data.len() as u64, "{rel}");
        assert_eq!(e.mode & 0o7777, metas[rel].0, "{rel}");
        let ns = metas[rel]
            .1
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after epoch")
            .as_nanos() as i128;
        assert_eq!(e.mtime, ns, "{rel}");
        assert_eq!(e.blob, blob_key(&e.sha256), "{rel}");
    }
    assert_eq!(fx.s3_index(&id, "uploads").await.paths(), idx.paths());
    let list = fx.list(&cfg);
    for line in list_lines(&list, &id) {
        assert!(
            line.contains("db (postgres, ") && line.contains("uploads (files: 50 files, 50 new"),
            "list shows both sources: {line}"
        );
    }
    fx.assert_blobs_match_references("after the first backup")
        .await;

    // The app goes on: rows and their files deleted, new ones added, other tables changed.
    let all: Vec<String> = files.keys().cloned().collect();
    let deleted = rng.pick(&all, 10);
    for rel in &deleted {
        std::fs::remove_file(uploads.join(rel)).expect("delete");
    }
    let mut added_rels = nested_paths(&mut rng, 3, &["photos", "docs"]);
    added_rels.extend(nested_paths(&mut rng, 3, &["albums/2027/summer"]));
    let added = write_random_files(&mut rng, &uploads, added_rels, 100..5_000);
    let added_values: Vec<String> = added
        .iter()
        .map(|(rel, data)| {
            format!(
                "({}, {})",
                quote_literal(rel),
                quote_literal(&sha256_hex(data))
            )
        })
        .collect();
    let deleted_list: Vec<String> = deleted.iter().map(|r| quote_literal(r)).collect();
    pg.psql(
        "app",
        &format!(
            "delete from public.attachments where path in ({});
             insert into public.attachments (path, sha256) values {};
             update public.users set name = 'renamed' where id <= 3;
             insert into public.bookkeeping (note) values ('backup 2 started');",
            deleted_list.join(", "),
            added_values.join(", ")
        ),
    );
    write_file(&uploads, "tmp/cache_1.bin", b"scratch after");
    let bookkeeping_after = pg.table_checksums("app")["public.bookkeeping"].clone();

    // Restore the whole set in place (database first, then files).
    fx.restore_ok(
        &cfg,
        &[
            "latest",
            "--to",
            &pg.url("app"),
            "--clean",
            "--force-into-source",
        ],
    );

    let got = pg.table_checksums("app");
    for (table, sum) in &want {
        if table == "public.bookkeeping" {
            assert_eq!(
                got[table], bookkeeping_after,
                "the excluded bookkeeping table must keep its post-backup rows"
            );
        } else {
            assert_eq!(&got[table], sum, "{table} differs from the backup");
        }
    }
    assert_eq!(
        pg.psql(
            "app",
            "select nextval('public.bookkeeping_id_seq') > (select max(id) from public.bookkeeping)"
        ),
        "t",
        "the excluded table's sequence must not be rewound to its backup value"
    );
    // Every row's file exists with its content.
    for line in pg
        .psql(
            "app",
            "select path || E'\\t' || sha256 from public.attachments",
        )
        .lines()
    {
        let (rel, sha) = line.split_once('\t').expect("row");
        let data = std::fs::read(uploads.join(rel))
            .unwrap_or_else(|e| panic!("file of row {rel:?} missing after restore: {e}"));
        assert_eq!(sha256_hex(&data), sha, "{rel}");
    }
    let mut tree = read_tree(&uploads);
    assert_eq!(
        tree.remove("tmp/cache_0.bin").as_deref(),
        Some(&b"scratch before"[..]),
        "excluded files are not touched"
    );
    assert_eq!(
        tree.remove("tmp/cache_1.bin").as_deref(),
        Some(&b"scratch after"[..]),
        "excluded files are not orphaned"
    );
    assert!(tree == files, "the directory must equal the backup again");
    for rel in &deleted {
        assert_eq!(meta(&uploads.join(rel)), metas[rel], "mode/mtime of {rel}");
    }
    // The files added after the backup were moved, keeping their relative paths.
    let orphans = site.join("orphan_files");
    let runs = orphan_runs(&orphans);
    assert_eq!(runs.len(), 1, "one restore, one orphan dir: {runs:?}");
    let moved = read_tree(&orphans.join(&runs[0]));
    assert_eq!(
        moved.keys().collect::<Vec<_>>(),
        added.keys().collect::<Vec<_>>(),
        "orphaned files"
    );
    assert!(moved == added, "orphaned files keep their content");

    // From S3 into a fresh database and an empty directory.
    pg.create_db("fresh");
    let fresh_files = fx.mkdir("fresh-site/uploads");
    fx.restore_ok(
        &cfg,
        &[
            &id,
            "--from",
            "offsite",
            "--to",
            &pg.url("fresh"),
            "--files-to",
            fresh_files.to_str().expect("utf-8"),
        ],
    );
    let mut want_fresh = want.clone();
    want_fresh.remove("public.bookkeeping");
    assert_eq!(
        pg.table_checksums("fresh"),
        want_fresh,
        "fresh restore: every table but the excluded bookkeeping"
    );
    assert!(read_tree(&fresh_files) == files, "fresh restore: files");
    for (rel, m) in &metas {
        assert_eq!(meta(&fresh_files.join(rel)), *m, "mode/mtime of {rel}");
    }
    assert!(
        list_tree(&fx.path("fresh-site/orphan_files")).is_empty(),
        "nothing to orphan in an empty directory"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Exactly once, 3. only missing files fetched
// ---------------------------------------------------------------------------------------------

/// 2,000 small random files under `root`.
fn two_thousand_files(rng: &mut Rng, root: &Path) -> BTreeMap<String, Vec<u8>> {
    let rels = nested_paths(rng, 2000, &["a", "b", "c", "d"]);
    write_random_files(rng, root, rels, 1024..4096)
}

/// The lines of `list` for backup `id` (one per destination).
fn list_lines<'a>(list: &'a str, id: &str) -> Vec<&'a str> {
    let lines: Vec<&str> = list.lines().filter(|l| l.contains(id)).collect();
    assert_eq!(lines.len(), 2, "{id} on both destinations:\n{list}");
    lines
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_files_are_uploaded_exactly_once() {
    let fx = Fixture::start(false).await;
    let mut rng = Rng::new(2);
    let uploads = fx.mkdir("uploads");
    let files = two_thousand_files(&mut rng, &uploads);
    let cfg = fx
        .config(10)
        .files("uploads", &uploads, "")
        .write_as("stowage.toml");

    let mark = fx.s3.request_mark();
    let first = fx.run_backup(&cfg);
    let ups = blob_uploads(&fx.s3.requests_since(mark));
    let shas: BTreeSet<String> = files.values().map(|d| sha256_hex(d)).collect();
    assert_eq!(ups.len(), 2000, "first backup: one upload per file");
    assert_eq!(
        ups.iter().map(|(_, s)| s.clone()).collect::<BTreeSet<_>>(),
        shas
    );
    assert_eq!(fx.local_blobs().len(), 2000);

    // Nothing changed: not one blob request that sends content.
    let mark = fx.s3.request_mark();
    let second = fx.run_backup(&cfg);
    let reqs = fx.s3.requests_since(mark);
    let ups = blob_uploads(&reqs);
    assert!(
        ups.is_empty(),
        "unchanged files were uploaded again: {} requests, e.g. {:?}",
        ups.len(),
        ups.first()
    );
    assert!(
        !reqs.is_empty(),
        "no requests logged at all: is moto's request log being read?"
    );
    let list = fx.list(&cfg);
    for line in list_lines(&list, &first) {
        assert!(
            line.contains("2000 files, 2000 new"),
            "first backup: {line}"
        );
    }
    for line in list_lines(&list, &second) {
        assert!(line.contains("2000 files, 0 new"), "second backup: {line}");
    }

    // 10 files get new content: exactly those 10 blobs go up.
    let all: Vec<String> = files.keys().cloned().collect();
    let changed = rng.pick(&all, 10);
    let mut new_shas = BTreeSet::new();
    for rel in &changed {
        let len = rng.range(1024, 4096);
        let data = rng.bytes(len);
        new_shas.insert(sha256_hex(&data));
        write_file(&uploads, rel, &data);
    }
    let mark = fx.s3.request_mark();
    let third = fx.run_backup(&cfg);
    let ups = blob_uploads(&fx.s3.requests_since(mark));
    assert_eq!(
        ups.len(),
        10,
        "10 changed files, 10 blob uploads: {:#?}",
        ups.iter().map(|(r, _)| r).collect::<Vec<_>>()
    );
    assert!(
        ups.iter()
            .all(|(r, _)| r.method == "PUT" && r.status == 200)
    );
    assert_eq!(
        ups.iter().map(|(_, s)| s.clone()).collect::<BTreeSet<_>>(),
        new_shas,
        "the uploaded blobs are the new contents"
    );
    assert_eq!(fx.local_blobs().len(), 2010);
    let list = fx.list(&cfg);
    for line in list_lines(&list, &third) {
        assert!(line.contains("2000 files, 10 new"), "third backup: {line}");
    }

    // "Absent" is per destination: blobs lost on offsite only go up again there, once.
    let now = read_tree(&uploads);
    let lost: Vec<String> = rng
        .pick(&all, 5)
        .iter()
        .filter(|rel| !changed.contains(rel))
        .map(|rel| sha256_hex(&now[rel.as_str()]))
        .collect();
    for sha in &lost {
        fx.s3
            .delete(BUCKET, &format!("{PREFIX}/{}", blob_key(sha)))
            .await;
    }
    let local_before = fx.local_blobs();
    let mark = fx.s3.request_mark();
    fx.run_backup(&cfg);
    let ups = blob_uploads(&fx.s3.requests_since(mark));
    assert_eq!(
        ups.iter().map(|(_, s)| s.clone()).collect::<BTreeSet<_>>(),
        lost.iter().cloned().collect::<BTreeSet<_>>(),
        "the blobs missing on offsite, and only those"
    );
    assert_eq!(ups.len(), lost.len(), "each once");
    assert_eq!(fx.local_blobs(), local_before, "nothing new on local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_fetches_only_missing_files() {
    let fx = Fixture::start(false).await;
    let mut rng = Rng::new(3);
    let site = fx.mkdir("site");
    let uploads = fx.mkdir("site/uploads");
    let files = two_thousand_files(&mut rng, &uploads);
    let cfg = fx
        .config(10)
        .files("uploads", &uploads, "")
        .write_as("stowage.toml");
    fx.run_backup(&cfg);

    let all: Vec<String> = files.keys().cloned().collect();
    let gone = rng.pick(&all, 25);
    for rel in &gone {
        std::fs::remove_file(uploads.join(rel)).expect("delete");
    }
    let want_shas: BTreeSet<String> = gone.iter().map(|r| sha256_hex(&files[r])).collect();

    let mark = fx.s3.request_mark();
    fx.restore_ok(&cfg, &["latest", "--from", "offsite"]);
    let gets = blob_downloads(&fx.s3.requests_since(mark));
    assert_eq!(
        gets.len(),
        25,
        "25 missing files, 25 blob downloads: {:#?}",
        gets.iter().map(|(r, _)| r).collect::<Vec<_>>()
    );
    assert_eq!(
        gets.iter().map(|(_, s)| s.clone()).collect::<BTreeSet<_>>(),
        want_shas
    );
    assert!(
        read_tree(&uploads) == files,
        "every file back with its content"
    );
    assert!(
        list_tree(&site.join("orphan_files")).is_empty(),
        "nothing to orphan"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Selective restore of tables
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selective_table_restore() {
    let fx = Fixture::start(true).await;
    let pg = fx.pg();
    seed_sample_db(pg, "app", 300);
    pg.psql(
        "app",
        "create table public.bookkeeping (id serial primary key, note text not null);
         insert into public.bookkeeping (note) select 'entry ' || g from generate_series(1, 20) g;
         create table public.job_runs (id serial primary key, note text not null default 'run');
         insert into public.job_runs default values;
         insert into public.job_runs default values;
         create function public.orders_touch() returns trigger language plpgsql as
           $$ begin new.note := coalesce(new.note, '') || ' (touched)'; return new; end $$;
         create trigger orders_touch before update on public.orders
           for each row execute function public.orders_touch();",
    );
    // Job-level exclusion plus one of the source's own.
    let cfg = fx
        .config(10)
        .job("exclude_tables = [\"bookkeeping\"]")
        .database(
            "postgres",
            "db",
            &pg.url("app"),
            "exclude_tables = [\"job_runs\"]",
        )
        .write_as("stowage.toml");
    fx.run_backup(&cfg);
    let want = pg.table_checksums("app");
    assert_eq!(want.len(), 5, "{want:?}");
    let without = |drop: &[&str]| -> BTreeMap<String, String> {
        want.iter()
            .filter(|(k, _)| !drop.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };
    let seq_state = pg.psql(
        "app",
        "select last_value, is_called from public.orders_id_seq",
    );

    // Excluded tables are skipped by default.
    pg.create_db("r_default");
    fx.restore_ok(&cfg, &["latest", "--to", &pg.url("r_default")]);
    assert_eq!(
        pg.table_checksums("r_default"),
        without(&["public.bookkeeping", "public.job_runs"]),
        "default restore skips exclude_tables (job and source level)"
    );

    // --all-tables brings them back.
    pg.create_db("r_all");
    fx.restore_ok(&cfg, &["latest", "--to", &pg.url("r_all"), "--all-tables"]);
    assert_eq!(pg.table_checksums("r_all"), want, "--all-tables");

    // --exclude-table on the command line, for a table other tables do not depend on but
    // which has a foreign key of its own.
    pg.create_db("r_excl");
    fx.restore_ok(
        &cfg,
        &[
            "latest",
            "--to",
            &pg.url("r_excl"),
            "--exclude-table",
            "audit.events",
        ],
    );
    assert_eq!(
        pg.table_checksums("r_excl"),
        without(&["public.bookkeeping", "public.job_runs", "audit.events"]),
        "--exclude-table audit.events"
    );

    // --table: one table back into the live database that lost it, others untouched.
    pg.psql(
        "app",
        "drop table public.orders cascade;
         update public.customers set name = 'changed' where id % 7 = 0;
         insert into public.bookkeeping (note) values ('after the backup');",
    );
    let others = pg.table_checksums("app");
    assert!(!others.contains_key("public.orders"));
    let table_out = fx.restore_ok(
        &cfg,
        &["latest", "--to", &pg.url("app"), "--table", "orders"],
    );
    let got = pg.table_checksums("app");
    assert_eq!(
        got.get("public.orders"),
        want.get("public.orders"),
        "orders rows"
    );
    let mut rest = got.clone();
    rest.remove("public.orders");
    assert_eq!(rest, others, "--table orders must not touch other tables");
    let count = |sql: &str| pg.psql("app", sql);
    assert_eq!(
        count(
            "select count(*) from pg_indexes where indexname in ('orders_pkey', 'orders_customer_idx')"
        ),
        "2",
        "indexes of orders"
    );
    // Checked at the end, so that the rest still runs (see /work/cache/sets-bugs.md).
    let fk_restored =
        count("select count(*) from pg_constraint where conname = 'orders_customer_id_fkey'");
    assert_eq!(
        count("select count(*) from pg_trigger where tgname = 'orders_touch'"),
        "1",
        "triggers of orders"
    );
    assert_eq!(
        pg.psql(
            "app",
            "select last_value, is_called from public.orders_id_seq"
        ),
        seq_state,
        "the sequence of orders"
    );

    // The table exists now: --table alone refuses (and changes nothing), --clean replaces it.
    pg.psql(
        "app",
        "update public.orders set status = 'tampered' where id % 5 = 0",
    );
    let tampered = pg.table_checksums("app");
    let out = fx.restore(
        &cfg,
        &["latest", "--to", &pg.url("app"), "--table", "public.orders"],
    );
    assert!(
        !out.status.success(),
        "--table over an existing table must fail without --clean:\n{}",
        text(&out)
    );
    assert_eq!(
        pg.table_checksums("app"),
        tampered,
        "a failed restore changes nothing"
    );
    fx.restore_ok(
        &cfg,
        &[
            "latest",
            "--to",
            &pg.url("app"),
            "--table",
            "public.orders",
            "--clean",
            "--force-into-source",
        ],
    );
    let got = pg.table_checksums("app");
    assert_eq!(got.get("public.orders"), want.get("public.orders"));
    assert_eq!(got.get("public.customers"), others.get("public.customers"));

    assert_eq!(
        fk_restored,
        "1",
        "--table orders into a database that has public.customers must restore the constraint \
         orders_customer_id_fkey (orders -> customers) with the table; it was left out:\n{}",
        text(&table_out)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Coherence: database first, then files, while the app writes
// ---------------------------------------------------------------------------------------------

/// The application's writer: file `w/<n % 16>/f_<n>.bin` first, then row n (autocommit).
struct Writer {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    /// Start writing rows `after + 1`, `after + 2`, ...
    fn start(mut session: PsqlSession, root: PathBuf, after: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(after));
        let (s, c) = (stop.clone(), count.clone());
        let handle = std::thread::spawn(move || {
            let mut rng = Rng::new(after);
            let mut n = after;
            while !s.load(Ordering::SeqCst) {
                n += 1;
                let rel = format!("w/{:02}/f_{n}.bin", n % 16);
                let len = rng.range(256, 4096);
                let data = rng.bytes(len);
                write_file(&root, &rel, &data);
                session.exec(&format!(
                    "insert into public.attachments (n, path, sha256) values ({n}, '{rel}', '{}')",
                    sha256_hex(&data)
                ));
                c.store(n, Ordering::SeqCst);
                // Pace only (about a hundred rows a second), not for correctness.
                std::thread::sleep(Duration::from_millis(8));
            }
            session.close();
        });
        Writer {
            stop,
            count,
            handle: Some(handle),
        }
    }

    /// The last row committed.
    fn count(&self) -> u64 {
        assert!(
            !self.handle.as_ref().is_some_and(|h| h.is_finished())
                || self.stop.load(Ordering::SeqCst),
            "the writer thread died"
        );
        self.count.load(Ordering::SeqCst)
    }

    fn wait_rows(&self, n: u64) {
        wait_for(&format!("the writer to reach {n} rows"), WAIT, || {
            self.count() >= n
        });
    }

    /// Stop; returns the last row committed.
    fn stop(mut self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            h.join().expect("writer thread panicked");
        }
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_then_files_keeps_every_row_with_its_file() {
    let fx = Fixture::start(true).await;
    let pg = fx.pg();
    seed_sample_db(pg, "app", 500);
    pg.psql(
        "app",
        "create table public.attachments (n bigint primary key, path text not null, sha256 text not null);
         create table public.pad (id int);",
    );
    let uploads = fx.mkdir("uploads");
    let cfg = fx
        .config(10)
        .postgres("db", &pg.url("app"))
        .files("uploads", &uploads, "")
        .write_as("stowage.toml");
    let mut last_row = 0;
    for round in 0..3 {
        // The app writes during the whole run (and only then, to keep the tree small). The
        // dump takes its snapshot, then waits on `pad` while the app keeps writing: rows
        // committed meanwhile are not in the dump but their files are on disk for the files
        // phase. A restore may have orphan files, never a row without its file.
        let writer = Writer::start(pg.session("app"), uploads.clone(), last_row);
        writer.wait_rows(last_row + 20);
        let lock = hold_lock(pg, "app", "public.pad");
        let rows_before = writer.count();
        let before: BTreeSet<String> = fx.local_ids().into_iter().collect();
        let mut run = spawn_stowage(&cfg, ["run", JOB]);
        wait_for_blocked_dump(pg, "app", &mut run);
        writer.wait_rows(writer.count() + 20);
        release(lock);
        let out = run.wait(RUN_TIMEOUT);
        last_row = writer.stop();
        assert!(
            out.status.success(),
            "round {round}: run failed:\n{}",
            text(&out)
        );
        let id = fx.new_id(&before, &text(&out));

        let db = format!("coherent_{round}");
        pg.create_db(&db);
        let dir = fx.mkdir(&format!("restored_{round}/uploads"));
        fx.restore_ok(
            &cfg,
            &[
                &id,
                "--to",
                &pg.url(&db),
                "--files-to",
                dir.to_str().expect("utf-8"),
            ],
        );
        let rows = pg.psql(
            &db,
            "select path || E'\\t' || sha256 from public.attachments",
        );
        let mut referenced = BTreeSet::new();
        for line in rows.lines() {
            let (rel, sha) = line.split_once('\t').expect("row");
            let data = std::fs::read(dir.join(rel)).unwrap_or_else(|e| {
                panic!("round {round}: row {rel} restored without its file: {e}")
            });
            assert_eq!(sha256_hex(&data), sha, "round {round}: content of {rel}");
            referenced.insert(rel.to_string());
        }
        assert!(
            referenced.len() as u64 >= rows_before,
            "round {round}: rows committed before the run are in the dump ({} < {rows_before})",
            referenced.len()
        );
        let orphans = list_tree(&dir)
            .into_iter()
            .filter(|p| !referenced.contains(p))
            .count();
        assert!(
            orphans >= 20,
            "round {round}: files written after the dump's snapshot are in the backup \
             (only {orphans} files without a row)"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Rotation: mark and sweep, and a backup written concurrently
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_sweeps_unreferenced_blobs_but_never_those_of_a_running_backup() {
    let fx = Fixture::start(true).await;
    let pg = fx.pg();
    pg.create_db("locked");
    pg.psql(
        "locked",
        "create table public.x (id int primary key); insert into public.x values (1), (2);",
    );
    let mut rng = Rng::new(6);
    let uploads = fx.mkdir("uploads");
    // A: only the files. B: the same job and destinations, files first, then a database.
    let cfg_a = fx
        .config(2)
        .files("uploads", &uploads, "")
        .write_as("a.toml");
    let cfg_b = fx
        .config(2)
        .files("uploads", &uploads, "")
        .postgres("db", &pg.url("locked"))
        .write_as("b.toml");

    // Several runs with files removed and added in between.
    let base = nested_paths(&mut rng, 20, &["base"]);
    let mut present: Vec<String> = write_random_files(&mut rng, &uploads, base, 512..4096)
        .into_keys()
        .collect();
    let mut removed_in_round_1 = Vec::new();
    for round in 0..4usize {
        if round > 0 {
            for rel in rng.pick(&present, 4) {
                let data = std::fs::read(uploads.join(&rel)).expect("read");
                if round == 1 {
                    removed_in_round_1.push(blob_key(&sha256_hex(&data)));
                }
                std::fs::remove_file(uploads.join(&rel)).expect("remove");
                present.retain(|p| *p != rel);
            }
            let rels = nested_paths(&mut rng, 4, &[&format!("round{round}")]);
            present.extend(write_random_files(&mut rng, &uploads, rels, 512..4096).into_keys());
        }
        fx.run_backup(&cfg_a);
        assert_eq!(fx.local_ids().len(), (round + 1).min(2));
        assert_eq!(fx.s3_ids().await, fx.local_ids());
        fx.assert_blobs_match_references(&format!("after run {round}"))
            .await;
    }
    // The files removed before run 1 were only in run 0, which retention has deleted.
    let (local, s3) = (fx.local_blobs(), fx.s3_blobs().await);
    for b in &removed_in_round_1 {
        assert!(!local.contains(b) && !s3.contains(b), "{b} was not swept");
    }

    // Z is backed up by P only; Q no longer has it.
    let z = rng.bytes(3000);
    let z_blob = blob_key(&sha256_hex(&z));
    write_file(&uploads, "keep/z.bin", &z);
    let id_p = fx.run_backup(&cfg_a);
    std::fs::remove_file(uploads.join("keep/z.bin")).expect("remove");
    let id_q = fx.run_backup(&cfg_a);
    assert_eq!(fx.local_ids(), vec![id_p.clone(), id_q.clone()]);

    // B starts with Z back (its blob exists already) and W new; its database phase blocks.
    write_file(&uploads, "keep/z.bin", &z);
    let w = rng.bytes(3000);
    let w_blob = blob_key(&sha256_hex(&w));
    write_file(&uploads, "keep/w.bin", &w);
    let lock = hold_lock(pg, "locked", "public.x");
    let before_b: BTreeSet<String> = fx.local_ids().into_iter().collect();
    let mut b = spawn_stowage(&cfg_b, ["run", JOB]);
    wait_for_blocked_dump(pg, "locked", &mut b);
    // B's files phase is over: W's blob is up on both destinations.
    wait_for("B's new blob on local", WAIT, || {
        fx.local_blobs().contains(&w_blob)
    });
    wait_for_s3_key(&fx.s3, &w_blob).await;
    assert!(
        fx.local_locks().iter().any(|l| l.ends_with(".backup")),
        "B's .backup lock on local: {:?}",
        fx.local_locks()
    );
    assert!(
        fx.s3_locks().await.iter().any(|l| l.ends_with(".backup")),
        "B's .backup lock on offsite: {:?}",
        fx.s3_locks().await
    );

    // A, without Z and W, while B runs: one run of a job at a time (across processes), so
    // A is refused, naming B's process, and touches nothing: its retention cannot delete P
    // and its sweep cannot take Z or W from under B.
    std::fs::remove_file(uploads.join("keep/z.bin")).expect("remove");
    std::fs::remove_file(uploads.join("keep/w.bin")).expect("remove");
    let a_out = run_stowage(&cfg_a, ["run", JOB]);
    let a_log = text(&a_out);
    assert_eq!(
        a_out.status.code(),
        Some(1),
        "run A must be refused:\n{a_log}"
    );
    assert!(
        a_log.contains(&format!(
            "job {JOB} is already running: a backup by stowage on host"
        )) && a_log.contains(&format!("pid {}", b.pid())),
        "A names B's process:\n{a_log}"
    );
    assert_eq!(
        fx.local_ids(),
        vec![id_p.clone(), id_q.clone()],
        "nothing deleted"
    );
    let (local, s3) = (fx.local_blobs(), fx.s3_blobs().await);
    for (what, blob) in [("Z", &z_blob), ("W", &w_blob)] {
        assert!(local.contains(blob), "{what}'s blob gone from local");
        assert!(s3.contains(blob), "{what}'s blob gone from offsite");
    }

    // B publishes; its retention deletes P.
    release(lock);
    let b_out = b.wait(RUN_TIMEOUT);
    assert!(b_out.status.success(), "B failed:\n{}", text(&b_out));
    let ids = fx.local_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&id_q), "{ids:?}");
    let id_b = ids.iter().find(|i| **i != id_q).cloned().expect("B's id");
    assert!(!before_b.contains(&id_b), "{ids:?}");
    assert_eq!(fx.s3_ids().await, ids);
    fx.assert_blobs_match_references("after B published").await;

    // Now A runs: retention deletes Q; Z and W, which only B references, stay.
    let id_a1 = fx.run_backup(&cfg_a);
    assert_eq!(fx.local_ids(), vec![id_b.clone(), id_a1.clone()]);
    assert_eq!(fx.s3_ids().await, fx.local_ids());
    let (local, s3) = (fx.local_blobs(), fx.s3_blobs().await);
    for (what, blob) in [("Z", &z_blob), ("W", &w_blob)] {
        assert!(
            local.contains(blob),
            "{what}'s blob swept from local while B holds it"
        );
        assert!(
            s3.contains(blob),
            "{what}'s blob swept from offsite while B holds it"
        );
    }
    fx.assert_blobs_match_references("after A ran").await;

    // B restores Z and W with their content, from either destination.
    for dest in ["offsite", "local"] {
        let dir = fx.mkdir(&format!("restored-b-{dest}/uploads"));
        fx.restore_ok(
            &cfg_b,
            &[
                &id_b,
                "--from",
                dest,
                "--only",
                "uploads",
                "--files-to",
                dir.to_str().expect("utf-8"),
            ],
        );
        assert!(
            std::fs::read(dir.join("keep/z.bin")).expect("Z restored") == z,
            "Z from {dest}"
        );
        assert!(
            std::fs::read(dir.join("keep/w.bin")).expect("W restored") == w,
            "W from {dest}"
        );
    }

    // A later A: retention deletes B, the sweep removes Z and W.
    fx.run_backup(&cfg_a);
    fx.assert_blobs_match_references("after the last run").await;
    let (local, s3) = (fx.local_blobs(), fx.s3_blobs().await);
    for blob in [&z_blob, &w_blob] {
        assert!(
            !local.contains(blob) && !s3.contains(blob),
            "{blob} not swept"
        );
    }
    assert!(fx.local_locks().is_empty(), "{:?}", fx.local_locks());
    assert!(fx.s3_locks().await.is_empty(), "{:?}", fx.s3_locks().await);

    // The other half of the rule: a backup waits for a sweep in progress (a live sweep lock,
    // as a sweeping stowage holds it on `local`) and goes on once it is gone.
    let sweep_lock = fx.local.join(JOB).join("locks").join(format!(
        "{}.sweep",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
    ));
    std::fs::create_dir_all(sweep_lock.parent().expect("parent")).expect("mkdir");
    std::fs::write(&sweep_lock, "{}").expect("sweep lock");
    let before: BTreeSet<String> = fx.local_ids().into_iter().collect();
    let mut a = spawn_stowage(&cfg_a, ["run", JOB]);
    wait_for("the backup to wait for the sweep", WAIT, || {
        if let Some(status) = a.exited() {
            panic!(
                "the backup did not wait for the sweep ({status}):\n{}",
                a.output_so_far()
            );
        }
        a.output_so_far().contains("waiting for the blob sweep")
    });
    assert_eq!(
        fx.local_ids(),
        before.iter().cloned().collect::<Vec<_>>(),
        "nothing published while the sweep runs"
    );
    std::fs::remove_file(&sweep_lock).expect("end of the sweep");
    let out = a.wait(RUN_TIMEOUT);
    assert!(out.status.success(), "{}", text(&out));
    fx.new_id(&before, &text(&out));
    fx.assert_blobs_match_references("after the run that waited")
        .await;
    assert!(fx.local_locks().is_empty(), "{:?}", fx.local_locks());
}

// ---------------------------------------------------------------------------------------------
// 7. Failure in the files phase
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_in_files_phase_publishes_nothing() {
    let fx = Fixture::start(true).await;
    let pg = fx.pg();
    seed_sample_db(pg, "app", 1000);
    pg.psql("app", "create table public.pad (id int);");
    let mut rng = Rng::new(7);
    let uploads = fx.mkdir("uploads");
    let rels = nested_paths(&mut rng, 30, &["x", "y"]);
    let files = write_random_files(&mut rng, &uploads, rels, 100..8000);
    let cfg = fx
        .config(10)
        .postgres("db", &pg.url("app"))
        .files("uploads", &uploads, "")
        .write_as("stowage.toml");
    let id1 = fx.run_backup(&cfg);
    let id2 = fx.run_backup(&cfg);
    let want = pg.table_checksums("app");
    let before = fx.snapshot().await;

    // 1. The directory does not exist.
    let missing = fx.path("no-such-dir");
    let cfg_missing = fx
        .config(10)
        .postgres("db", &pg.url("app"))
        .files("uploads", &missing, "")
        .write_as("missing.toml");
    let out = run_stowage(&cfg_missing, ["run", JOB]);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("uploads") && log.contains(&missing.display().to_string()),
        "the error names the source and the path:\n{log}"
    );
    fx.assert_untouched(&before, "missing directory").await;

    // 2. The directory goes away while the database is being dumped.
    let lock = hold_lock(pg, "app", "public.pad");
    let mut run = spawn_stowage(&cfg, ["run", JOB]);
    wait_for_blocked_dump(pg, "app", &mut run);
    let away = fx.path("uploads.away");
    std::fs::rename(&uploads, &away).expect("rename");
    release(lock);
    let out = run.wait(RUN_TIMEOUT);
    let log = text(&out);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("uploads") && log.contains(&uploads.display().to_string()),
        "the error names the source and the path:\n{log}"
    );
    fx.assert_untouched(&before, "directory removed after the dump")
        .await;
    std::fs::rename(&away, &uploads).expect("rename back");
    assert_eq!(fx.local_ids(), vec![id1.clone(), id2.clone()]);
    assert_eq!(fx.s3_ids().await, vec![id1.clone(), id2]);

    // The earlier backups still restore, whole or in part.
    pg.create_db("again");
    let dir = fx.mkdir("again/uploads");
    fx.restore_ok(
        &cfg,
        &[
            "latest",
            "--to",
            &pg.url("again"),
            "--files-to",
            dir.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(pg.table_checksums("again"), want);
    assert!(read_tree(&dir) == files);
    let dir = fx.mkdir("first/uploads");
    fx.restore_ok(
        &cfg,
        &[
            &id1,
            "--from",
            "offsite",
            "--only",
            "uploads",
            "--files-to",
            dir.to_str().expect("utf-8"),
        ],
    );
    assert!(read_tree(&dir) == files);
}

// ---------------------------------------------------------------------------------------------
// 8. immutable = true
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_files_with_same_size_and_mtime_are_not_reread() {
    let fx = Fixture::start(false).await;
    let mut rng = Rng::new(8);
    let uploads = fx.mkdir("uploads");
    let rels = nested_paths(&mut rng, 40, &["att"]);
    let files = write_random_files(&mut rng, &uploads, rels, 1000..6000);
    let rels: Vec<String> = files.keys().cloned().collect();
    let cfg = fx
        .config(10)
        .files("uploads", &uploads, "immutable = true")
        .write_as("immutable.toml");
    fx.run_backup(&cfg);

    // f: new content, same size, mtime put back. g: new content of another size.
    let (f, g) = (&rels[3], &rels[17]);
    let f_path = uploads.join(f);
    let (_, f_mtime) = meta(&f_path);
    let f_new = rng.bytes(files[f].len());
    std::fs::write(&f_path, &f_new).expect("write f");
    set_mtime(&f_path, f_mtime);
    assert_eq!(meta(&f_path).1, f_mtime);
    let g_new = rng.bytes(files[g].len() + 100);
    std::fs::write(uploads.join(g), &g_new).expect("write g");

    let mark = fx.s3.request_mark();
    let id = fx.run_backup(&cfg);
    let idx = fx.local_index(&id, "uploads");
    assert_eq!(
        idx.entry(f).sha256,
        sha256_hex(&files[f]),
        "immutable: same size and mtime, so f is not re-read"
    );
    assert_eq!(
        idx.entry(g).sha256,
        sha256_hex(&g_new),
        "g changed size: re-read"
    );
    let ups = blob_uploads(&fx.s3.requests_since(mark));
    assert_eq!(
        ups.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        vec![sha256_hex(&g_new)],
        "only g's new content goes up"
    );

    // Without immutable, f is read and its new content backed up.
    let cfg = fx
        .config(10)
        .files("uploads", &uploads, "immutable = false")
        .write_as("mutable.toml");
    let mark = fx.s3.request_mark();
    let id = fx.run_backup(&cfg);
    let idx = fx.local_index(&id, "uploads");
    assert_eq!(
        idx.entry(f).sha256,
        sha256_hex(&f_new),
        "not immutable: f re-read"
    );
    assert_eq!(idx.entry(g).sha256, sha256_hex(&g_new));
    let ups = blob_uploads(&fx.s3.requests_since(mark));
    assert_eq!(
        ups.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>(),
        vec![sha256_hex(&f_new)]
    );
}

// ---------------------------------------------------------------------------------------------
// 9. --dry-run
// ---------------------------------------------------------------------------------------------

/// Path of a would-line relative to `root` (accepts relative or absolute paths).
fn rel_to(root: &Path, p: &str) -> String {
    let root = format!("{}/", root.display());
    p.strip_prefix(&root).unwrap_or(p).to_string()
}

/// `p/00/a.bin (1.2 KiB)` -> `p/00/a.bin`: fetch/replace lines end with the file's size.
fn strip_size(p: &str) -> &str {
    match p.rsplit_once(" (") {
        Some((path, size)) if size.ends_with(')') => path,
        _ => p,
    }
}

/// Every file under `root` with content, mode and mtime.
fn tree_state(root: &Path) -> BTreeMap<String, (Vec<u8>, u32, SystemTime)> {
    read_tree(root)
        .into_iter()
        .map(|(rel, data)| {
            let (mode, mtime) = meta(&root.join(&rel));
            (rel, (data, mode, mtime))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_changes_nothing() {
    let fx = Fixture::start(false).await;
    let mut rng = Rng::new(9);
    let site = fx.mkdir("site");
    let uploads = fx.mkdir("site/uploads");
    let rels = nested_paths(&mut rng, 30, &["p", "q"]);
    let files = write_random_files(&mut rng, &uploads, rels, 100..4000);
    // Files outside the source's globs are neither backed up nor orphaned.
    write_file(&uploads, "notes/readme.txt", b"not included");
    let cfg = fx
        .config(10)
        .files("uploads", &uploads, "include = [\"**/*.bin\"]")
        .write_as("stowage.toml");
    let id = fx.run_backup(&cfg);
    let idx = fx.local_index(&id, "uploads");
    assert_eq!(idx.include, vec!["**/*.bin".to_string()]);
    assert_eq!(idx.paths(), files.keys().cloned().collect::<BTreeSet<_>>());
    write_file(&uploads, "p/00/later.txt", b"not included either");

    let rels: Vec<String> = files.keys().cloned().collect();
    let picked = rng.pick(&rels, 5);
    let (missing, replaced) = (&picked[..3], &picked[3..]);
    for rel in missing {
        std::fs::remove_file(uploads.join(rel)).expect("delete");
    }
    let mut local_versions = BTreeMap::new();
    for rel in replaced {
        let data = rng.bytes(500);
        write_file(&uploads, rel, &data);
        local_versions.insert(rel.clone(), data);
    }
    let added = write_random_files(
        &mut rng,
        &uploads,
        ["new/a.bin".to_string(), "p/00/extra.bin".to_string()],
        10..100,
    );
    let state = tree_state(&site);

    let out = fx.restore_ok(&cfg, &["latest", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut fetch = BTreeSet::new();
    let mut replace = BTreeSet::new();
    let mut moves = BTreeMap::new();
    let mut other = Vec::new();
    for line in stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(p) = line.strip_prefix("would fetch ") {
            fetch.insert(rel_to(&uploads, strip_size(p)));
        } else if let Some(p) = line.strip_prefix("would replace ") {
            replace.insert(rel_to(&uploads, strip_size(p)));
        } else if let Some(rest) = line.strip_prefix("would move ") {
            let (p, dest) = rest
                .rsplit_once(" to ")
                .unwrap_or_else(|| panic!("no destination in {line:?}"));
            moves.insert(rel_to(&uploads, p), dest.to_string());
        } else {
            other.push(line.to_string());
        }
    }
    let set = |v: &[String]| v.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(fetch, set(missing), "would fetch:\n{stdout}");
    assert_eq!(replace, set(replaced), "would replace:\n{stdout}");
    let orphans = site.join("orphan_files");
    for rel in added.keys() {
        let dest = moves
            .get(rel)
            .unwrap_or_else(|| panic!("no 'would move {rel}' line:\n{stdout}"));
        let dest_rel = rel_to(&orphans, dest);
        let (time, rest) = dest_rel
            .split_once('/')
            .unwrap_or_else(|| panic!("{dest} is not under {}/<time>/", orphans.display()));
        assert!(
            dest.starts_with(&orphans.display().to_string()) && rest == rel,
            "{rel} would go to {dest}"
        );
        assert_eq!(time.len(), 16, "{dest}");
    }
    for rel in moves.keys() {
        assert!(
            added.contains_key(rel) || replace.contains(rel),
            "unexpected 'would move {rel}':\n{stdout}"
        );
    }
    assert!(!other.is_empty(), "no summary line:\n{stdout}");
    assert!(
        tree_state(&site) == state,
        "--dry-run changed the directory"
    );
    assert!(!orphans.exists(), "--dry-run created {}", orphans.display());

    // The real restore does what was announced; here with --orphans-to.
    let aside = fx.path("aside");
    fx.restore_ok(
        &cfg,
        &["latest", "--orphans-to", aside.to_str().expect("utf-8")],
    );
    let mut tree = read_tree(&uploads);
    assert_eq!(
        tree.remove("notes/readme.txt").as_deref(),
        Some(&b"not included"[..])
    );
    assert_eq!(
        tree.remove("p/00/later.txt").as_deref(),
        Some(&b"not included either"[..])
    );
    assert!(tree == files, "directory equals the backup");
    let runs = orphan_runs(&aside);
    assert_eq!(runs.len(), 1, "{runs:?}");
    let moved = read_tree(&aside.join(&runs[0]));
    let mut want_moved = added.clone();
    want_moved.extend(local_versions);
    assert_eq!(
        moved.keys().collect::<Vec<_>>(),
        want_moved.keys().collect::<Vec<_>>(),
        "new files and the local versions of replaced files are moved aside"
    );
    assert!(moved == want_moved);
    assert!(!orphans.exists(), "--orphans-to replaces the default");
}
