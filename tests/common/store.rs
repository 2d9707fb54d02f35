//! What a job's destinations hold, read straight from the local directory and the S3
//! server (never through stowage): whether each listed backup is whole, what debris runs
//! left, which blobs no backup references. Destination "local" is the directory; any other
//! name is the S3 bucket + prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use super::S3Server;

/// Backup ids per destination, newest first (as `parse_listing` gives them).
pub type Listing = BTreeMap<String, Vec<String>>;

pub struct Stores<'a> {
    pub local: &'a Path,
    pub s3: &'a S3Server,
    pub bucket: &'a str,
    pub prefix: &'a str,
    pub job: &'a str,
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect()
}

impl Stores<'_> {
    fn s3_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// An object's bytes; panics if it is missing.
    pub async fn read(&self, dest: &str, key: &str) -> Vec<u8> {
        if dest == "local" {
            std::fs::read(self.local.join(key))
                .unwrap_or_else(|e| panic!("local: {key} is referenced but unreadable: {e}"))
        } else {
            self.s3.get(self.bucket, &self.s3_key(key)).await
        }
    }

    /// Blob keys present on `dest` (relative to the destination's root).
    pub async fn blobs(&self, dest: &str) -> BTreeSet<String> {
        let dir = format!("{}/blobs/", self.job);
        if dest == "local" {
            files_under(&self.local.join(&dir))
                .into_iter()
                .filter_map(|p| {
                    p.strip_prefix(self.local)
                        .ok()
                        .map(|r| r.to_string_lossy().into_owned())
                })
                .filter(|k| !k.ends_with(".partial"))
                .collect()
        } else {
            let strip = self.s3_key("").len();
            self.s3
                .list_keys(self.bucket, &self.s3_key(&dir))
                .await
                .into_iter()
                .map(|k| k[strip..].to_string())
                .collect()
        }
    }

    /// Check that every listed backup is whole: each object of its manifest present with
    /// the recorded size and sha256; for a files source, its index decodes and every blob
    /// it names exists (and, with `hash_blobs`, decompresses to the content's sha256).
    /// Returns the blobs the listed backups reference, per destination.
    pub async fn assert_whole(&self, listed: &Listing, hash_blobs: bool) -> Listing {
        let mut referenced = Listing::new();
        for (dest, ids) in listed {
            let present = self.blobs(dest).await;
            let refs = referenced.entry(dest.clone()).or_default();
            for id in ids {
                let manifest = self
                    .read(dest, &format!("{}/{id}/manifest.json", self.job))
                    .await;
                let m: serde_json::Value = serde_json::from_slice(&manifest)
                    .unwrap_or_else(|e| panic!("{dest}: manifest of {id}: {e}"));
                let sources = m["sources"].as_array().expect("sources");
                assert!(!sources.is_empty(), "{dest}: {id} has no sources");
                for s in sources {
                    let key = s["key"].as_str().expect("key");
                    let body = self.read(dest, key).await;
                    assert_eq!(
                        body.len() as u64,
                        s["size"].as_u64().expect("size"),
                        "{dest}: {key} of {id} is not the size its manifest records"
                    );
                    assert_eq!(
                        super::sha256_hex(&body),
                        s["sha256"].as_str().expect("sha256"),
                        "{dest}: {key} of {id} does not hash to its manifest's sha256"
                    );
                    if s.get("files").is_none_or(|f| f.is_null()) {
                        continue;
                    }
                    // JSON Lines: a header, then one entry per line.
                    let text = super::zstd_decompress(&body);
                    let entries: Vec<serde_json::Value> = text
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .skip(1)
                        .map(|l| {
                            serde_json::from_slice(l)
                                .unwrap_or_else(|e| panic!("{dest}: index {key} of {id}: {e}"))
                        })
                        .collect();
                    for f in &entries {
                        let blob = f["blob"].as_str().expect("blob").to_string();
                        assert!(
                            present.contains(&blob),
                            "{dest}: backup {id} references blob {blob} ({}), which is gone",
                            f["path"]
                        );
                        if hash_blobs {
                            let raw = super::zstd_decompress(&self.read(dest, &blob).await);
                            assert_eq!(
                                super::sha256_hex(&raw),
                                f["sha256"].as_str().expect("sha256"),
                                "{dest}: blob {blob} does not hold {}",
                                f["path"]
                            );
                        }
                        refs.push(blob);
                    }
                }
            }
            refs.sort();
            refs.dedup();
        }
        referenced
    }

    /// What runs must not leave once they are over (or the next start has recovered):
    /// backup prefixes without a manifest, `.partial` files, locks, open multipart uploads.
    pub async fn debris(&self) -> Vec<String> {
        let mut out = Vec::new();
        let job = self.local.join(self.job);
        for e in std::fs::read_dir(&job).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "locks" {
                for l in std::fs::read_dir(e.path()).into_iter().flatten().flatten() {
                    out.push(format!("local lock {}", l.path().display()));
                }
            } else if name != "blobs" && !e.path().join("manifest.json").exists() {
                out.push(format!("local unpublished {name}"));
            }
        }
        for p in files_under(self.local) {
            if p.to_string_lossy().ends_with(".partial") {
                out.push(format!("local partial {}", p.display()));
            }
        }
        let job_prefix = self.s3_key(&format!("{}/", self.job));
        let keys = self.s3.list_keys(self.bucket, &job_prefix).await;
        let mut prefixes: BTreeMap<String, bool> = BTreeMap::new();
        for k in &keys {
            let rest = &k[job_prefix.len()..];
            let (first, tail) = rest.split_once('/').unwrap_or((rest, ""));
            match first {
                "locks" => out.push(format!("s3 lock {k}")),
                "blobs" => {}
                _ => *prefixes.entry(first.to_string()).or_default() |= tail == "manifest.json",
            }
        }
        for (p, has_manifest) in prefixes {
            if !has_manifest {
                out.push(format!("s3 unpublished {p}"));
            }
        }
        let open = self.s3.open_multipart_uploads(self.bucket).await;
        if open > 0 {
            out.push(format!("s3 {open} open multipart upload(s)"));
        }
        out
    }
}
