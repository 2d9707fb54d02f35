//! `stowage copy` and `stowage forget`, through the real binary against real destinations
//! (local directories, moto) and a real PostgreSQL: what a copy puts on the target is
//! proved by restoring it; what a forget leaves is read from the destination's directory.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{Job, PgServer, Rng, S3Server, list_tree, read_tree, seed_sample_db, write_file};

/// The blob objects under a local destination of job "app".
fn local_blobs(dest: &Path) -> BTreeSet<String> {
    list_tree(&dest.join("app").join("blobs"))
        .into_iter()
        .collect()
}

/// Every object of backup `id` on local destination `dest`, relative to its directory.
fn backup_objects(dest: &Path, id: &str) -> Vec<String> {
    list_tree(&dest.join("app").join(id))
}

/// Flip one byte in the middle of `path`.
fn flip_byte(path: &Path) -> Vec<u8> {
    let original = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut damaged = original.clone();
    let i = damaged.len() / 2;
    damaged[i] ^= 0x40;
    std::fs::write(path, &damaged).expect("write damaged");
    original
}

/// A job with a files source "uploads" (in `tree`) on two local destinations.
fn files_job(tree: &Path) -> Job {
    Job::new("app")
        .local("local", Some(10))
        .local("second", Some(10))
        .files("uploads", tree, "")
        .write()
}

fn seed_tree(dir: &Path) {
    let mut rng = Rng::new(27);
    let rels = (0..12).map(|i| format!("d{}/f{i}.bin", i % 3));
    common::write_random_files(&mut rng, dir, rels, 100..40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_latest_to_s3_then_restore_from_it() {
    let pg = PgServer::start();
    pg.create_db("app");
    seed_sample_db(&pg, "app", 2_000);
    let s3 = S3Server::moto();
    s3.create_bucket("copies").await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let builder = Job::new("app")
        .local("local", Some(10))
        .postgres("db", &pg.url("app"))
        .files("uploads", &tree, "");
    // Backups are taken before the S3 destination is part of the job.
    let first = builder.write_as("first.toml");
    let job = builder.s3("s3dest", &s3, "copies", "").write();
    let out = common::run_stowage(&first, ["run", "app"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let id = job.ids("local")[0].clone();
    assert!(job.ids("s3dest").is_empty());

    // A damaged dump on the source: checked against the manifest as it streams, never
    // completed on the target.
    let dump = backup_objects(&job.path("local"), &id)
        .into_iter()
        .find(|k| k.starts_with("db."))
        .expect("the dump");
    let dump = job.backup_dir("local", &id).join(dump);
    let original = flip_byte(&dump);
    let (code, out) = job.stowage(&["copy", "app", "latest", "--from", "local", "--to", "s3dest"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("backup {id} not copied")), "{out}");
    assert!(job.ids("s3dest").is_empty());
    assert!(
        !s3.list_keys("copies", &format!("app/{id}/"))
            .await
            .iter()
            .any(|k| k.ends_with("manifest.json")),
        "manifest copied"
    );
    std::fs::write(&dump, original).expect("repair");

    let (code, out) = job.stowage(&["copy", "app", "latest", "--from", "local", "--to", "s3dest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("backup {id}: copied local → s3dest")),
        "{out}"
    );
    assert_eq!(job.ids("s3dest"), vec![id.clone()]);
    let keys = s3.list_keys("copies", "app/").await;
    let on_local: BTreeSet<String> = backup_objects(&job.path("local"), &id)
        .into_iter()
        .map(|k| format!("app/{id}/{k}"))
        .collect();
    let on_s3: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with(&format!("app/{id}/")))
        .cloned()
        .collect();
    assert_eq!(on_s3, on_local);
    assert_eq!(
        keys.iter().filter(|k| k.starts_with("app/blobs/")).count(),
        local_blobs(&job.path("local")).len()
    );
    // Copying it again is a no-op.
    let (code, out) = job.stowage(&["copy", "app", &id, "--from", "local", "--to", "s3dest"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("already on s3dest, skipped"), "{out}");

    pg.create_db("app_copy");
    let target = scratch.path().join("restored");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &id,
        "--from",
        "s3dest",
        "--to",
        &pg.url("app_copy"),
        "--files-to",
        target.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pg.table_checksums("app_copy"), pg.table_checksums("app"));
    assert_eq!(read_tree(&target), read_tree(&tree));
}

#[test]
fn copy_all_backfills_a_destination_once_and_shares_blobs() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = files_job(&tree);
    let first = job.backup();
    let first_tree = read_tree(&tree);
    write_file(&tree, "new.txt", b"a file the second backup adds");
    let second = job.backup();
    // The second destination starts empty: a destination just added to the job.
    std::fs::remove_dir_all(job.path("second").join("app")).expect("empty second");
    let local = job.path("local");
    let blobs = local_blobs(&local);

    let (code, out) = job.stowage(&[
        "copy",
        "app",
        "--all",
        "--from",
        "local",
        "--to",
        "second",
        "--dry-run",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("backup {first}: would copy")),
        "{out}"
    );
    assert!(
        out.contains(&format!("backup {second}: would copy")),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(
        list_tree(&job.path("second")).is_empty(),
        "a dry run wrote something"
    );

    let (code, out) = job.stowage(&["copy", "app", "--all", "--from", "local", "--to", "second"]);
    assert_eq!(code, Some(0), "{out}");
    // Oldest first; the second backup reuses every blob the first one copied.
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle} not in:\n{out}"))
    };
    assert!(at(&format!("backup {first}: copied")) < at(&format!("backup {second}: copied")));
    assert!(
        out.contains(&format!("{} blob(s) already there", blobs.len() - 1)),
        "{out}"
    );
    assert_eq!(job.ids("second"), job.ids("local"));
    for id in [&first, &second] {
        assert_eq!(
            backup_objects(&job.path("second"), id),
            backup_objects(&local, id)
        );
    }
    // Each blob once: the same set as the source.
    assert_eq!(local_blobs(&job.path("second")), blobs);

    let (code, out) = job.stowage(&["copy", "app", "--all", "--from", "local", "--to", "second"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("nothing to copy"), "{out}");

    // What was copied restores: the first backup, from the second destination.
    let target = scratch.path().join("restored");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &first,
        "--from",
        "second",
        "--files-to",
        target.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(read_tree(&target), first_tree);
}

#[test]
fn a_damaged_object_is_never_copied() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = files_job(&tree);
    let id = job.backup();
    std::fs::remove_dir_all(job.path("second").join("app")).expect("empty second");
    let local = job.path("local");
    let copy = || job.stowage(&["copy", "app", &id, "--from", "local", "--to", "second"]);
    let nothing_on_second = || {
        assert!(
            !job.manifest_path("second", &id).exists(),
            "manifest copied"
        );
        assert!(backup_objects(&job.path("second"), &id).is_empty());
        assert!(job.ids("second").is_empty());
    };

    // The file index: checked against the manifest's sha256.
    let index = job.backup_dir("local", &id).join("uploads.files.json.zst");
    let original = flip_byte(&index);
    let (code, out) = copy();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains(&format!("backup {id} not copied")), "{out}");
    nothing_on_second();
    std::fs::write(&index, original).expect("repair");

    // A blob: its content checked against the index.
    let blob = local
        .join("app")
        .join("blobs")
        .join(local_blobs(&local).into_iter().next().expect("a blob"));
    let original = flip_byte(&blob);
    let (code, out) = copy();
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is damaged where it is copied from"), "{out}");
    nothing_on_second();
    assert!(
        !list_tree(&job.path("second"))
            .iter()
            .any(|k| k.ends_with(".partial")),
        "temporary files left"
    );
    std::fs::write(&blob, original).expect("repair");

    let (code, out) = copy();
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(job.ids("second"), vec![id]);
}

#[test]
fn forget_deletes_a_backup_and_the_blobs_only_it_used() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    write_file(&tree, "gone.txt", b"only the first backup has this file");
    let job = Job::new("app")
        .local("local", Some(10))
        .files("uploads", &tree, "")
        .write();
    let older = job.backup();
    let local = job.path("local");
    let before = local_blobs(&local);
    std::fs::remove_file(tree.join("gone.txt")).expect("remove");
    write_file(&tree, "kept.txt", b"only the second backup has this file");
    let newer = job.backup();
    let newer_tree = read_tree(&tree);
    let all_blobs = local_blobs(&local);
    assert_eq!(all_blobs.len(), before.len() + 1);

    let (code, out) = job.stowage(&["forget", "app", &older, "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("would delete backup {older} from local")),
        "{out}"
    );
    assert!(out.contains(&format!("app/{older}/manifest.json")), "{out}");
    assert_eq!(job.ids("local"), vec![newer.clone(), older.clone()]);
    assert_eq!(local_blobs(&local), all_blobs);

    // A unique prefix is enough.
    let prefix = &older[..older.len() - 2];
    let (code, out) = job.stowage(&["forget", "app", prefix]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("deleted backup {older} from local")),
        "{out}"
    );
    assert!(out.contains("deleted 1 unreferenced blob(s)"), "{out}");
    assert_eq!(job.ids("local"), vec![newer.clone()]);
    assert!(!job.backup_dir("local", &older).exists());
    let left = local_blobs(&local);
    assert_eq!(left.len(), all_blobs.len() - 1);
    assert!(left.is_subset(&all_blobs));

    // What the remaining backup needs is all there.
    let target = scratch.path().join("restored");
    let (code, out) = job.stowage(&[
        "restore",
        "app",
        &newer,
        "--files-to",
        target.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(read_tree(&target), newer_tree);

    // The newest backup only with --force.
    let (code, out) = job.stowage(&["forget", "app", "latest"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("it is the newest backup on local; the last good backup is never deleted without --force"),
        "{out}"
    );
    assert_eq!(job.ids("local"), vec![newer.clone()]);
    let (code, out) = job.stowage(&["forget", "app", &newer, "--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(job.ids("local").is_empty());
    assert!(local_blobs(&local).is_empty());
}

#[test]
fn a_live_lock_refuses_forget_and_copy() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = files_job(&tree);
    let older = job.backup();
    job.backup();
    std::fs::remove_dir_all(job.path("second").join("app")).expect("empty second");
    // Another process's run, refreshed just now.
    for dest in ["local", "second"] {
        write_file(
            &job.path(dest).join("app").join("locks"),
            "20260101T000000.000Z.backup",
            b"{}",
        );
    }
    let (code, out) = job.stowage(&["forget", "app", &older, "--from", "local"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("job app is busy: a backup since 2026-01-01T00:00:00Z"),
        "{out}"
    );
    assert!(job.manifest_path("local", &older).exists());

    let (code, out) = job.stowage(&["copy", "app", &older, "--from", "local", "--to", "second"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("job app is busy on second"), "{out}");
    assert!(!job.manifest_path("second", &older).exists());
}

#[test]
fn unknown_destinations_name_the_jobs() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = files_job(&tree);
    let id = job.backup();
    for args in [
        vec!["copy", "app", "latest", "--from", "nope", "--to", "second"],
        vec!["copy", "app", "latest", "--from", "local", "--to", "nope"],
        vec!["forget", "app", &id, "--from", "nope"],
    ] {
        let (code, out) = job.stowage(&args);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(
            out.contains(
                "\"nope\" is not a destination of job app; its destinations: local, second"
            ),
            "{args:?}: {out}"
        );
    }
    let (code, out) = job.stowage(&["copy", "app", "latest", "--from", "local", "--to", "local"]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(job.ids("local"), vec![id.clone()]);
    assert_eq!(job.ids("second"), vec![id]);
}

/// On a destination with S3 Object Lock: forget refuses a locked backup before deleting
/// anything anywhere, naming the date; a copy into it keeps the blobs it reuses locked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_lock_refuses_forget_and_covers_a_copy() {
    let s3 = S3Server::moto();
    s3.client()
        .await
        .create_bucket()
        .bucket("locked")
        .object_lock_enabled_for_bucket(true)
        .send()
        .await
        .expect("create a bucket with Object Lock");
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = Job::new("app")
        .local("local", Some(10))
        .s3(
            "vault",
            &s3,
            "locked",
            "object_lock = { mode = \"GOVERNANCE\", days = 2 }\n",
        )
        .files("uploads", &tree, "")
        .write();
    let older = job.backup();
    write_file(&tree, "new.txt", b"the second backup");
    let newer = job.backup();

    let (code, out) = job.stowage(&["forget", "app", &older]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "backup {older} on vault is under object lock until 20"
        )),
        "{out}"
    );
    // Checked before anything was deleted: the local copy is still there.
    assert_eq!(job.ids("local"), vec![newer.clone(), older.clone()]);
    assert_eq!(job.ids("vault"), vec![newer.clone(), older.clone()]);
    let (code, out) = job.stowage(&["forget", "app", &older, "--from", "local"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(job.ids("local"), vec![newer.clone()]);

    // Hidden behind delete markers (the locked versions stay), then copied back from local.
    for key in s3.list_keys("locked", &format!("app/{newer}/")).await {
        s3.delete("locked", &key).await;
    }
    assert_eq!(job.ids("vault"), vec![older.clone()]);
    let (code, out) = job.stowage(&["copy", "app", &newer, "--from", "local", "--to", "vault"]);
    assert_eq!(code, Some(0), "{out}");
    // Every blob of it is still there (its own, and the older backup's it reuses).
    assert!(
        out.contains("0 file blob(s), 0 B; 13 blob(s) already there"),
        "{out}"
    );
    assert_eq!(job.ids("vault"), vec![newer, older]);
}

/// A backup younger than its class's minimum storage duration goes only with --force; a
/// copy from an archive class waits for `stowage retrieve` (exit 4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_classes_hold_forget_and_copy() {
    let s3 = S3Server::moto();
    s3.create_bucket("classes").await;
    let scratch = tempfile::tempdir().expect("tempdir");
    let tree = scratch.path().join("uploads");
    seed_tree(&tree);
    let job = Job::new("app")
        .local("local", Some(10))
        .s3(
            "ia",
            &s3,
            "classes",
            "prefix = \"ia\"\nstorage_class = \"STANDARD_IA\"\n",
        )
        .s3(
            "cold",
            &s3,
            "classes",
            "prefix = \"cold\"\nstorage_class = \"DEEP_ARCHIVE\"\n",
        )
        .files("uploads", &tree, "")
        .write();
    let older = job.backup();
    let newer = job.backup();

    let (code, out) = job.stowage(&["forget", "app", &older, "--from", "ia"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("younger than STANDARD_IA's minimum storage duration of 30 days"),
        "{out}"
    );
    assert_eq!(job.ids("ia"), vec![newer.clone(), older.clone()]);
    let (code, out) = job.stowage(&["forget", "app", &older, "--from", "ia", "--force"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(job.ids("ia"), vec![newer.clone()]);

    std::fs::remove_dir_all(job.path("local").join("app")).expect("empty local");
    let (code, out) = job.stowage(&["copy", "app", &newer, "--from", "cold", "--to", "local"]);
    assert_eq!(code, Some(4), "{out}");
    assert!(
        out.contains(&format!(
            "run `stowage retrieve app {newer} --from cold` first"
        )),
        "{out}"
    );
    assert!(job.ids("local").is_empty());
}
