//! The streamed files index (issue 15, "Scale"), at small sizes against real servers: the
//! index is JSON Lines in path order, written while the files are processed; unchanged
//! trees upload nothing, changed files and new destinations get exactly what they lack;
//! format-1 indexes (one JSON document) still restore; the blob sweep reads blob lists a
//! share of the fan-out directories at a time, and old backups without a blob list by
//! their index. Memory and timings are in `bench/million.sh`, not here.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{
    Job, Rng, S3Request, S3Server, list_tree, read_tree, run_stowage, sha256_hex, text, toml_str,
    write_file, write_random_files, zstd_decompress,
};

const BUCKET: &str = "stream";
const JOB: &str = "app";

struct Fixture {
    s3: S3Server,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let s3 = S3Server::moto();
        s3.create_bucket(BUCKET).await;
        let dir = tempfile::Builder::new()
            .prefix("stowage-stream-")
            .tempdir()
            .expect("tempdir");
        Fixture { s3, dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A config with local destinations `dests` (directories under the temp dir) plus
    /// `s3` when named, and job `app` backing up `uploads`.
    fn config(&self, file: &str, dests: &[&str], retention: &str, extra: &str) -> PathBuf {
        let mut job = Job::config_in(self.dir.path(), JOB);
        for d in dests {
            let keys = if *d == "s3" {
                format!(
                    "{}region = {}\n",
                    job.s3_keys(&self.s3, BUCKET),
                    toml_str(self.s3.region())
                )
            } else {
                format!(
                    "type = \"local\"\npath = {}\n",
                    toml_str(self.path(d).display())
                )
            };
            job = job.destination(d, &format!("{keys}retention = {retention}\n"));
        }
        job.source(&format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n{extra}",
            toml_str(self.path("uploads").display())
        ))
        .write_as(file)
    }

    fn run(&self, cfg: &Path) -> String {
        let out = run_stowage(cfg, ["run", JOB]);
        let said = text(&out);
        assert!(out.status.success(), "run failed:\n{said}");
        said
    }

    /// Published ids on a local destination, oldest first.
    fn ids(&self, dest: &str) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.path(dest).join(JOB))
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

    fn blobs(&self, dest: &str) -> BTreeSet<String> {
        list_tree(&self.path(dest).join(JOB).join("blobs"))
            .into_iter()
            .collect()
    }

    async fn s3_blobs(&self) -> BTreeSet<String> {
        self.s3
            .list_keys(BUCKET, &format!("{JOB}/blobs/"))
            .await
            .into_iter()
            .collect()
    }

    fn manifest(&self, dest: &str, id: &str) -> serde_json::Value {
        let p = self.path(dest).join(JOB).join(id).join("manifest.json");
        serde_json::from_slice(&std::fs::read(&p).expect("manifest")).expect("manifest json")
    }

    fn restore(&self, cfg: &Path, from: &str, to: &Path) -> String {
        let to = to.display().to_string();
        let out = run_stowage(
            cfg,
            [
                "restore",
                JOB,
                "--from",
                from,
                "--files-to",
                to.as_str(),
                "--orphans-to",
                self.path("orphans").display().to_string().as_str(),
            ],
        );
        let said = text(&out);
        assert!(out.status.success(), "restore failed:\n{said}");
        said
    }
}

fn blob_uploads(reqs: &[S3Request]) -> usize {
    reqs.iter()
        .filter(|r| r.is_upload() && r.path.contains("/blobs/"))
        .count()
}

/// Header and entries of a stored (zstd) JSON Lines index.
fn index_lines(compressed: &[u8]) -> (serde_json::Value, Vec<serde_json::Value>) {
    let json = zstd_decompress(compressed);
    let mut lines = json
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice::<serde_json::Value>(l).expect("a JSON line"));
    let header = lines.next().expect("a header line");
    (header, lines.collect())
}

fn zstd_compress(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("zstd")
        .args(["-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    let out = child.wait_with_output().expect("zstd output");
    assert!(out.status.success());
    out.stdout
}

/// 3,000 small files in nested directories, with names that sort differently as whole
/// strings and component by component ("a.b" next to "a/…").
fn tree(rng: &mut Rng, root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut rels = Vec::new();
    for i in 0..3000 {
        let top = ["a", "a.b", "a-c", "b"][i % 4];
        rels.push(format!("{top}/{:02}/{i:04}.bin", (i / 4) % 30));
    }
    rels.push("a0".to_string());
    write_random_files(rng, root, rels, 100..600)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_index_backs_up_and_restores_a_tree_on_local_and_s3() {
    let fx = Fixture::start().await;
    let mut rng = Rng::new(15);
    let uploads = fx.path("uploads");
    let files = tree(&mut rng, &uploads);
    let cfg = fx.config("stowage.toml", &["local", "s3"], "{ keep_last = 10 }", "");

    fx.run(&cfg);
    let first = fx.ids("local").pop().expect("a backup");
    let distinct: BTreeSet<String> = files.values().map(|d| sha256_hex(d)).collect();
    assert_eq!(fx.blobs("local").len(), distinct.len());
    assert_eq!(fx.s3_blobs().await.len(), distinct.len());

    // The index: a header, then one entry per line in path order (component by component).
    let m = fx.manifest("local", &first);
    let entry = &m["sources"][0];
    assert_eq!(entry["format"], "stowage file index (JSON Lines)");
    let key = entry["key"].as_str().expect("index key");
    let stored = std::fs::read(fx.path("local").join(key)).expect("index");
    assert_eq!(
        sha256_hex(&stored),
        entry["sha256"].as_str().expect("sha256"),
        "the manifest's sha256 is the streamed object's"
    );
    assert_eq!(entry["size"].as_u64(), Some(stored.len() as u64));
    let (header, entries) = index_lines(&stored);
    assert_eq!(header["format"], 2);
    assert_eq!(header["source"], "uploads");
    assert!(header.get("files").is_none(), "{header}");
    assert_eq!(
        entry["raw_size"].as_u64(),
        Some(zstd_decompress(&stored).len() as u64)
    );
    let paths: Vec<String> = entries
        .iter()
        .map(|e| e["path"].as_str().expect("path").to_string())
        .collect();
    let mut canonical: Vec<String> = files.keys().cloned().collect();
    canonical.sort_by(|a, b| a.split('/').cmp(b.split('/')));
    assert_eq!(paths, canonical, "entries in path order");
    assert_ne!(
        canonical,
        files.keys().cloned().collect::<Vec<_>>(),
        "the tree tells the orders apart"
    );
    // Every files backup carries its clear blob list.
    let refs = entry["refs"]["key"].as_str().expect("a blob list");
    let listed: BTreeSet<String> = String::from_utf8(zstd_decompress(
        &std::fs::read(fx.path("local").join(refs)).expect("refs"),
    ))
    .expect("text")
    .lines()
    .map(|l| l.rsplit('/').next().unwrap_or_default().to_string())
    .collect();
    assert_eq!(listed.len(), distinct.len());

    // Restored from each destination into an empty directory: the same tree.
    for from in ["local", "s3"] {
        let to = fx.path(&format!("restored-{from}"));
        fx.restore(&cfg, from, &to);
        assert!(read_tree(&to) == files, "restore from {from} differs");
    }

    // Unchanged: no blob goes up anywhere.
    let local_before = fx.blobs("local");
    let mark = fx.s3.request_mark();
    fx.run(&cfg);
    assert_eq!(blob_uploads(&fx.s3.requests_since(mark)), 0);
    assert_eq!(fx.blobs("local"), local_before);
    let second = fx.ids("local").pop().expect("second");
    assert_eq!(
        fx.manifest("local", &second)["sources"][0]["files"]["new_files"],
        0
    );

    // One file changed and two identical new files: two blobs, each uploaded once.
    write_file(&uploads, "a.b/00/0001.bin", b"changed content");
    write_file(&uploads, "new/x.bin", b"same new content");
    write_file(&uploads, "new/y.bin", b"same new content");
    let mark = fx.s3.request_mark();
    fx.run(&cfg);
    assert_eq!(blob_uploads(&fx.s3.requests_since(mark)), 2);
    assert_eq!(fx.blobs("local").len(), local_before.len() + 2);

    // A destination added later receives every blob it lacks (and only once each).
    let later = fx.config(
        "later.toml",
        &["local", "s3", "later"],
        "{ keep_last = 10 }",
        "",
    );
    let mark = fx.s3.request_mark();
    fx.run(&later);
    assert_eq!(blob_uploads(&fx.s3.requests_since(mark)), 0);
    let now: BTreeSet<String> = read_tree(&uploads)
        .values()
        .map(|d| sha256_hex(d))
        .collect();
    let later_blobs = fx.blobs("later");
    assert_eq!(
        later_blobs.len(),
        now.len(),
        "one blob per content of the tree"
    );
    assert!(
        later_blobs.is_subset(&fx.blobs("local")),
        "the same blob names on both"
    );
    let to = fx.path("restored-later");
    fx.restore(&later, "later", &to);
    assert!(
        read_tree(&to) == read_tree(&uploads),
        "restore from later differs"
    );

    // Restoring over a changed tree: only what differs is fetched, orphans are moved.
    write_file(&to, "b/00/0003.bin", b"local edit");
    write_file(&to, "orphan.txt", b"not in the backup");
    std::fs::remove_file(to.join("a/00/0000.bin")).expect("rm");
    let said = fx.restore(&later, "later", &to);
    assert!(
        read_tree(&to) == read_tree(&uploads),
        "second restore differs"
    );
    assert!(
        said.contains("1 fetched, 1 replaced") && said.contains("1 moved to"),
        "{said}"
    );
    assert!(
        list_tree(&fx.path("orphans"))
            .iter()
            .any(|p| p.ends_with("orphan.txt")),
        "{said}"
    );
}

/// A backup written before format 2 (one JSON document, sorted by whole path strings)
/// restores, and serves as the previous index of an `immutable` source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_format_1_index_still_restores() {
    let fx = Fixture::start().await;
    let mut rng = Rng::new(16);
    let uploads = fx.path("uploads");
    let files = tree(&mut rng, &uploads);
    let cfg = fx.config(
        "stowage.toml",
        &["local"],
        "{ keep_last = 10 }",
        "immutable = true",
    );
    fx.run(&cfg);
    let id = fx.ids("local").pop().expect("a backup");

    // Rewrite it as format 1, as stowage wrote it before, and fix the manifest.
    let mpath = fx.path("local").join(JOB).join(&id).join("manifest.json");
    let mut m = fx.manifest("local", &id);
    let key = m["sources"][0]["key"].as_str().expect("key").to_string();
    let (mut header, mut entries) =
        index_lines(&std::fs::read(fx.path("local").join(&key)).expect("index"));
    entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    header["format"] = 1.into();
    header["files"] = serde_json::Value::Array(entries);
    let json = serde_json::to_vec(&header).expect("json");
    let packed = zstd_compress(&json);
    std::fs::write(fx.path("local").join(&key), &packed).expect("write index");
    m["sources"][0]["sha256"] = sha256_hex(&packed).into();
    m["sources"][0]["size"] = packed.len().into();
    m["sources"][0]["raw_size"] = json.len().into();
    std::fs::write(&mpath, serde_json::to_vec(&m).expect("manifest")).expect("manifest");

    let to = fx.path("restored");
    fx.restore(&cfg, "local", &to);
    assert!(read_tree(&to) == files, "a format-1 index restores");

    // As the previous index: nothing changed, nothing new.
    fx.run(&cfg);
    let next = fx.ids("local").pop().expect("next");
    let f = &fx.manifest("local", &next)["sources"][0]["files"];
    assert_eq!(f["count"].as_u64(), Some(files.len() as u64), "{f}");
    assert_eq!(f["new_files"], 0, "{f}");
}

/// Retention removes backups; the sweep deletes the blobs only they referenced and keeps
/// every blob a kept backup references, whether it has a blob list or only an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_keeps_referenced_blobs_and_deletes_the_rest() {
    let fx = Fixture::start().await;
    let mut rng = Rng::new(17);
    let uploads = fx.path("uploads");
    let files = tree(&mut rng, &uploads);
    let cfg = fx.config("stowage.toml", &["local", "s3"], "{ keep_last = 2 }", "");
    fx.run(&cfg);

    // Second backup: 10 files changed. Its blob list is removed (as if written before
    // format 2 for an unencrypted job): the sweep must read its index instead.
    let all: Vec<String> = files.keys().cloned().collect();
    let changed = rng.pick(&all, 10);
    for rel in &changed {
        write_file(&uploads, rel, &rng.bytes(300));
    }
    fx.run(&cfg);
    let second = fx.ids("local").pop().expect("second");
    let mpath = fx
        .path("local")
        .join(JOB)
        .join(&second)
        .join("manifest.json");
    let mut m = fx.manifest("local", &second);
    let refs = m["sources"][0]["refs"]["key"]
        .as_str()
        .expect("refs")
        .to_string();
    std::fs::remove_file(fx.path("local").join(&refs)).expect("rm refs");
    m["sources"][0]
        .as_object_mut()
        .expect("entry")
        .remove("refs");
    std::fs::write(&mpath, serde_json::to_vec(&m).expect("manifest")).expect("manifest");
    fx.s3
        .delete(BUCKET, &format!("{JOB}/{second}/uploads.blobs.txt.zst"))
        .await;
    let s3_manifest = format!("{JOB}/{second}/manifest.json");
    let mut sm: serde_json::Value =
        serde_json::from_slice(&fx.s3.get(BUCKET, &s3_manifest).await).expect("manifest");
    sm["sources"][0]
        .as_object_mut()
        .expect("entry")
        .remove("refs");
    fx.s3
        .put(BUCKET, &s3_manifest, serde_json::to_vec(&sm).expect("json"))
        .await;

    // Third backup: 10 more changed; keep_last = 2 removes the first, whose 10 old
    // contents are now referenced by nobody.
    let changed2 = rng.pick(&all, 10);
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let second_tree = read_tree(&uploads);
    for rel in &changed2 {
        write_file(&uploads, rel, &rng.bytes(300));
    }
    for rel in &changed {
        gone.insert(sha256_hex(&files[rel]));
    }
    let said = fx.run(&cfg);
    assert!(said.contains("blob sweep on local: deleted"), "{said}");
    let third_tree = read_tree(&uploads);
    let want: BTreeSet<String> = second_tree
        .values()
        .chain(third_tree.values())
        .map(|d| sha256_hex(d))
        .collect();
    let local: BTreeSet<String> = fx
        .blobs("local")
        .iter()
        .map(|k| {
            k.rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".zst")
                .to_string()
        })
        .collect();
    let s3: BTreeSet<String> = fx
        .s3_blobs()
        .await
        .iter()
        .map(|k| {
            k.rsplit('/')
                .next()
                .unwrap_or_default()
                .trim_end_matches(".zst")
                .to_string()
        })
        .collect();
    // Contents of the first backup that both others share stay; its own 10 go (unless a
    // changed file happened to get an old content back, which random bytes do not).
    assert_eq!(
        local, want,
        "local keeps exactly what backups 2 and 3 reference"
    );
    assert_eq!(s3, want, "s3 keeps exactly what backups 2 and 3 reference");
    assert!(gone.is_disjoint(&local));

    // Both kept backups still restore.
    let ids = fx.ids("local");
    assert_eq!(ids.len(), 2);
    for (id, tree) in ids.iter().zip([&second_tree, &third_tree]) {
        let to = fx.path(&format!("restored-{id}"));
        let out = run_stowage(
            &cfg,
            [
                "restore",
                JOB,
                id.as_str(),
                "--from",
                "s3",
                "--files-to",
                to.display().to_string().as_str(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
        assert!(read_tree(&to) == *tree, "backup {id} restores");
    }
}
