//! Seeded test data and file trees: a small PRNG, writing and reading trees, hashes, zstd.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use sha2::Digest;

use super::tools::{SETUP_HINT, describe};

/// Small deterministic PRNG (splitmix64): reproducible test data without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next_u64() % n
    }

    /// Uniform in `lo..hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        assert!(lo < hi, "empty range {lo}..{hi}");
        lo + self.below((hi - lo) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `n` lowercase hex characters.
    pub fn hex(&mut self, n: usize) -> String {
        let mut s = hex::encode(self.bytes(n.div_ceil(2)));
        s.truncate(n);
        s
    }

    /// `k` distinct elements of `items`, in a random order.
    pub fn pick<T: Clone>(&mut self, items: &[T], k: usize) -> Vec<T> {
        assert!(k <= items.len(), "cannot pick {k} of {}", items.len());
        let mut idx: Vec<usize> = (0..items.len()).collect();
        for i in 0..k {
            let j = i + self.below((idx.len() - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx[..k].iter().map(|&i| items[i].clone()).collect()
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// Write `data` at `root/rel` (parents created).
pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
    }
    std::fs::write(&p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

/// Write one random file (size in `sizes`) per relative path; returns path -> content.
pub fn write_random_files(
    rng: &mut Rng,
    root: &Path,
    rels: impl IntoIterator<Item = String>,
    sizes: std::ops::Range<usize>,
) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for rel in rels {
        let len = rng.range(sizes.start, sizes.end);
        let data = rng.bytes(len);
        write_file(root, &rel, &data);
        out.insert(rel, data);
    }
    out
}

/// Every regular file under `root`, recursively, as `/`-separated relative paths, sorted.
/// A missing `root` is empty.
pub fn list_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let rel = p.strip_prefix(root).expect("under root");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
    }
    out.sort();
    out
}

/// Contents of every regular file under `root` (see `list_tree`).
pub fn read_tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    list_tree(root)
        .into_iter()
        .map(|rel| {
            let data = std::fs::read(root.join(&rel))
                .unwrap_or_else(|e| panic!("read {}/{rel}: {e}", root.display()));
            (rel, data)
        })
        .collect()
}

/// Decompress a zstd frame with the `zstd` CLI (installed by tests/setup.sh).
pub fn zstd_decompress(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn zstd: {e}; {SETUP_HINT}"));
    let mut stdin = child.stdin.take().expect("zstd stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for zstd");
    let _ = writer.join();
    assert!(out.status.success(), "zstd -d failed: {}", describe(&out));
    out.stdout
}
