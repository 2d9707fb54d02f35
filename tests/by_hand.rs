//! The README's "By hand, without stowage" recipes, run as written: a backup set taken by
//! stowage must be restorable with zstd, jq and pg_restore alone. No `pipefail`, as in an
//! interactive shell: `pg_restore -l` stops reading after the header, so zstd gets SIGPIPE;
//! every result is checked by comparing data instead.

mod common;

use std::path::Path;
use std::process::Command;

use common::mariadb::MariaDbServer;
use common::{Job, PgServer, run_stowage, seed_sample_db};

fn write_tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for i in 0..40u32 {
        let rel = format!("{}/{:02}/file {i}.bin", 2020 + i % 3, i % 7);
        // Deterministic, not very compressible, distinct per file (and two identical ones).
        let seed = if i == 39 { 38 } else { i };
        let data: Vec<u8> = (0..(1000 + seed * 997))
            .map(|k| (k.wrapping_mul(2_654_435_761u32.wrapping_add(seed)) >> 13) as u8)
            .collect();
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &data).expect("write");
        files.push((rel, data));
    }
    files
}

fn bash(script: &str, envs: &[(&str, &str)]) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -eu\n{script}"))
        .envs(envs.iter().copied())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "script failed:\n{script}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readme_by_hand_restore_of_a_backup_set() {
    let pg = PgServer::start();
    seed_sample_db(&pg, "app", 2_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let uploads = dir.path().join("uploads");
    let files = write_tree(&uploads);
    let root = dir.path().join("backups");
    let config = Job::config_in(dir.path(), "replay")
        .local_at("local", &root, None)
        .postgres("db", &pg.url("app"))
        .files("uploads", &uploads, "")
        .write_as("stowage.toml");
    let out = run_stowage(&config, ["run", "replay"]);
    assert!(out.status.success(), "{}", describe(&out));

    let ids: Vec<String> = std::fs::read_dir(root.join("replay"))
        .expect("job dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("20"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let b = root.join("replay").join(&ids[0]);

    // Database, as in the README (pg_restore of the server's own version).
    pg.create_db("by_hand");
    let path = format!(
        "{}:{}",
        pg.bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let target = pg.url("by_hand");
    bash(
        r#"zstd -d < $B/db.pgdump.zst \
  | pg_restore --single-transaction --exit-on-error -d "$URL""#,
        &[
            ("B", &b.display().to_string()),
            ("URL", &target),
            ("PATH", &path),
        ],
    );
    assert_eq!(pg.table_checksums("by_hand"), pg.table_checksums("app"));

    // Skipping a table by hand: edit the list, restore through it.
    pg.create_db("by_hand_list");
    bash(
        r#"zstd -d < $B/db.pgdump.zst | pg_restore -l | grep -v events > $W/list.txt
zstd -d < $B/db.pgdump.zst | pg_restore -L $W/list.txt --single-transaction -d "$URL""#,
        &[
            ("B", &b.display().to_string()),
            ("W", &dir.path().display().to_string()),
            ("URL", &pg.url("by_hand_list")),
            ("PATH", &path),
        ],
    );
    let mut expected = pg.table_checksums("app");
    assert!(expected.remove("audit.events").is_some(), "{expected:?}");
    assert_eq!(pg.table_checksums("by_hand_list"), expected);

    // Files, as in the README.
    let dest = dir.path().join("restored");
    bash(
        r#"zstd -dc $B/uploads.files.json.zst | jq -r 'select(.blob) | [.blob, .path] | @tsv' |
  while IFS=$'\t' read -r blob path; do
    mkdir -p "$DEST/$(dirname "$path")" && zstd -dc "$ROOT/$blob" > "$DEST/$path"
  done"#,
        &[
            ("B", &b.display().to_string()),
            ("ROOT", &root.display().to_string()),
            ("DEST", &dest.display().to_string()),
        ],
    );
    for (rel, data) in &files {
        let got = std::fs::read(dest.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(got == *data, "{rel}: content differs");
    }
    // Identical files share one blob.
    let blobs = walk_count(&root.join("replay/blobs"));
    assert_eq!(blobs, files.len() - 1);
}

/// The README's MariaDB recipe: `mariadb -e 'CREATE DATABASE …'`, then the decompressed
/// dump into the `mariadb` client, as written (with the test server's host, port and user
/// in place of the README's `-h shop-db -u root -p`).
#[test]
fn readme_by_hand_restore_of_a_mariadb_backup() {
    let maria = MariaDbServer::start();
    maria.create_db("shop");
    maria.sql(
        "shop",
        "CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50), img BLOB) DEFAULT CHARSET=utf8mb4;
         INSERT INTO items VALUES (1, 'tea ☕', x'00ff7f80'), (2, NULL, NULL), (3, 'x', '');
         CREATE VIEW named AS SELECT id, name FROM items WHERE name IS NOT NULL;",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("backups");
    let config = Job::config_in(dir.path(), "shop")
        .local_at("local", &root, None)
        .schedule("@daily")
        .job("catch_up = false")
        .database("mariadb", "shop", &maria.url("shop"), "")
        .write_as("stowage.toml");
    let out = run_stowage(&config, ["run", "shop"]);
    assert!(out.status.success(), "backup failed: {}", describe(&out));
    let b = std::fs::read_dir(root.join("shop"))
        .expect("job dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("manifest.json").exists())
        .expect("a published backup");
    let login = format!("-h 127.0.0.1 -P {} -u root", maria.port());
    bash(
        &format!(
            "mariadb {login} -e 'CREATE DATABASE shop_restored'
             zstd -d < $B/shop.sql.zst | mariadb {login} shop_restored"
        ),
        &[("B", &b.display().to_string())],
    );
    assert_eq!(
        maria.table_checksums("shop_restored"),
        maria.table_checksums("shop")
    );
    assert_eq!(maria.view_names("shop_restored"), vec!["named".to_string()]);
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn walk_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            n += walk_count(&p);
        } else {
            n += 1;
        }
    }
    n
}
