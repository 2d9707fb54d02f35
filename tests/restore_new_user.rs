//! Issue 29, what a new user tripped on in `restore`, through the real binary on real files
//! and a real PostgreSQL server: `--clean` into the very database the backup came from is
//! refused without `--force-into-source`; several databases without `--to` are all named
//! at once; a files restore can leave what the backup lacks in place (`--keep-extra`) and
//! restore only some paths (`--path`), still never writing outside its target nor through
//! a link. Each test fails on the code before the change.

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;

use common::{Job, JobBuilder, PgServer, list_tree, toml_str, write_file};
use rusqlite::Connection;

const JOB: &str = "app";

fn restore(job: &Job, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["restore", JOB, "latest"];
    all.extend_from_slice(args);
    job.stowage(&all)
}

/// A SQLite database at `path` with table `t` holding `rows` rows.
fn sqlite_db(path: &Path, rows: i64) {
    let c = Connection::open(path).expect("open sqlite");
    c.execute_batch("create table if not exists t (id integer primary key)")
        .expect("create");
    c.execute("delete from t", []).expect("delete");
    for i in 0..rows {
        c.execute("insert into t values (?1)", [i]).expect("insert");
    }
}

fn rows(path: &Path) -> i64 {
    Connection::open(path)
        .expect("open sqlite")
        .query_row("select count(*) from t", [], |r| r.get(0))
        .expect("count")
}

fn sqlite_source(job: JobBuilder, name: &str, path: &Path) -> JobBuilder {
    job.source(&format!(
        "type = \"sqlite\"\nname = {}\npath = {}\n",
        toml_str(name),
        toml_str(path.display())
    ))
}

/// `--clean` into the source's own file, however the path is spelt, is refused with what
/// would happen and how to go on, and changes nothing; `--force-into-source` does it; a
/// `--clean` into another file is not affected.
#[test]
fn clean_into_the_sqlite_source_needs_force_into_source() {
    let builder = Job::new(JOB).local("local", Some(5));
    let db = builder.path("app.db");
    let job = sqlite_source(builder, "db", &db).write();
    sqlite_db(&db, 3);
    job.backup();
    sqlite_db(&db, 7);

    let same = job.path("./sub/../app.db");
    std::fs::create_dir(job.path("sub")).expect("sub");
    symlink(&db, job.path("link.db")).expect("link");
    for to in [db.clone(), same, job.path("link.db")] {
        let to = to.display().to_string();
        for extra in [&[][..], &["--dry-run"][..]] {
            let mut args = vec!["--to", to.as_str(), "--clean"];
            args.extend_from_slice(extra);
            let (code, out) = restore(&job, &args);
            assert_eq!(code, Some(2), "{to} {extra:?}:\n{out}");
            assert!(
                out.contains("live database of source \"db\"")
                    && out.contains("--force-into-source")
                    && out.contains("replaced by the backup's")
                    && out.contains("give another --to"),
                "{out}"
            );
            assert_eq!(rows(&db), 7, "a refused restore changed the source");
        }
    }
    // Without --clean nothing is dropped: the non-empty file is refused as before.
    let to = db.display().to_string();
    let (code, out) = restore(&job, &["--to", &to]);
    assert_ne!(code, Some(0), "{out}");
    assert!(!out.contains("--force-into-source"), "{out}");

    let other = job.path("other.db");
    sqlite_db(&other, 9);
    let other_s = other.display().to_string();
    let (code, out) = restore(&job, &["--to", &other_s, "--clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&other), 3);

    let (code, out) = restore(&job, &["--to", &to, "--clean", "--force-into-source"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&db), 3);
}

/// Two databases and no `--to`: one error names both, with the flags to give.
#[test]
fn every_database_without_a_target_is_named_at_once() {
    let builder = Job::new(JOB).local("local", Some(5));
    let (a, b) = (builder.path("a.db"), builder.path("b.db"));
    let uploads = builder.path("uploads");
    let job = sqlite_source(sqlite_source(builder, "db", &a), "cache", &b)
        .files("uploads", &uploads, "")
        .write();
    sqlite_db(&a, 1);
    sqlite_db(&b, 2);
    write_file(&uploads, "f", b"f");
    job.backup();

    let (code, out) = restore(&job, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("2 database sources with no target")
            && out.contains("\"db\" (sqlite)")
            && out.contains("\"cache\" (sqlite)")
            && out.contains("--to db=/PATH/TO/FILE.db --to cache=/PATH/TO/FILE.db")
            && out.contains("--only uploads"),
        "{out}"
    );
    // One named: the other is the one left.
    let to = job.path("a2.db").display().to_string();
    let (code, out) = restore(&job, &["--to", &format!("db={to}")]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("\"cache\" (sqlite)")
            && !out.contains("\"db\" (sqlite)")
            && out.contains("--to cache=TARGET"),
        "{out}"
    );
}

/// A PostgreSQL target is the source when it reaches the same server and database, whatever
/// its host name for this machine, user or spelling; another database on that server is not.
#[test]
fn clean_into_the_postgres_source_is_recognised_by_server_and_database() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key); insert into t select generate_series(1, 3)",
    );
    let job = Job::new(JOB)
        .local("local", Some(5))
        .postgres("db", &pg.url("app"))
        .write();
    job.backup();
    pg.psql("app", "insert into t values (4)");
    let count = || pg.psql("app", "select count(*) from t").trim().to_string();

    let port = pg.port();
    for to in [
        format!("postgres://other@localhost:{port}/app"),
        format!("postgresql://postgres@127.0.0.1:{port}/app?sslmode=disable"),
        format!("postgres://postgres@db.invalid/x?host=127.0.0.1&port={port}&dbname=app"),
    ] {
        let (code, out) = restore(&job, &["--to", &to, "--clean", "--table", "t"]);
        assert_eq!(code, Some(2), "{to}:\n{out}");
        assert!(
            out.contains("live database of source \"db\"")
                && out.contains("the live tables t are dropped")
                && out.contains("--force-into-source"),
            "{out}"
        );
    }
    assert_eq!(count(), "4", "a refused restore changed the source");

    // Another database on the same server is not the source.
    let copy = pg.url("app_copy");
    let (code, out) = restore(&job, &["--to", &copy, "--create", "--clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(pg.psql("app_copy", "select count(*) from t").trim(), "3");

    let own = pg.url("app");
    let (code, out) = restore(&job, &["--to", &own, "--clean", "--force-into-source"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(count(), "3");
}

/// A files job `app` backing up `uploads`.
fn uploads_job() -> Job {
    let builder = Job::new(JOB).local("local", Some(5));
    let uploads = builder.path("uploads");
    builder.files("uploads", &uploads, "").write()
}

fn read(job: &Job, rel: &str) -> Option<Vec<u8>> {
    std::fs::read(job.path("uploads").join(rel)).ok()
}

/// Every file under orphan_files/, relative to its run directory.
fn orphans(job: &Job) -> Vec<String> {
    let Ok(runs) = std::fs::read_dir(job.path("orphan_files")) else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for run in runs.flatten() {
        all.extend(list_tree(&run.path()));
    }
    all.sort();
    all
}

/// `--keep-extra`: files written since the backup stay where they are; what the backup has
/// is restored (the old version of a replaced file is still kept aside).
#[test]
fn keep_extra_leaves_new_files_in_place() {
    let job = uploads_job();
    let up = job.path("uploads");
    write_file(&up, "a.txt", b"a from the backup");
    write_file(&up, "docs/b.txt", b"b from the backup");
    job.backup();
    write_file(&up, "a.txt", b"a changed");
    write_file(&up, "new.txt", b"written since");
    write_file(&up, "docs/new/c.txt", b"written since");
    std::fs::remove_file(up.join("docs/b.txt")).expect("rm b");

    let (code, out) = restore(&job, &["--keep-extra", "--dry-run"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("would keep new.txt"), "{out}");
    assert!(orphans(&job).is_empty());

    let (code, out) = restore(&job, &["--keep-extra"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        read(&job, "a.txt").as_deref(),
        Some(&b"a from the backup"[..])
    );
    assert_eq!(
        read(&job, "docs/b.txt").as_deref(),
        Some(&b"b from the backup"[..])
    );
    assert_eq!(
        read(&job, "new.txt").as_deref(),
        Some(&b"written since"[..])
    );
    assert_eq!(
        read(&job, "docs/new/c.txt").as_deref(),
        Some(&b"written since"[..])
    );
    assert_eq!(orphans(&job), vec!["a.txt".to_string()], "{out}");
    assert!(
        out.contains("2 files the backup lacks left in place"),
        "{out}"
    );
}

/// `--path`: only what the patterns match is restored or moved; the rest of the tree is
/// left exactly as it is. A pattern that matches nothing fails before anything changes and
/// names the nearest paths.
#[test]
fn path_restores_only_what_the_patterns_match() {
    let job = uploads_job();
    let up = job.path("uploads");
    write_file(&up, "docs/x.txt", b"x from the backup");
    write_file(&up, "docs/y.txt", b"y from the backup");
    write_file(&up, "media/p.jpg", b"p from the backup");
    write_file(&up, "notes.md", b"notes from the backup");
    job.backup();
    write_file(&up, "docs/x.txt", b"x changed");
    std::fs::remove_file(up.join("docs/y.txt")).expect("rm y");
    write_file(&up, "docs/new.txt", b"new doc");
    write_file(&up, "media/p.jpg", b"p changed");
    write_file(&up, "media/new.jpg", b"new picture");
    std::fs::remove_file(up.join("notes.md")).expect("rm notes");

    let before = common::read_tree(&up);
    let (code, out) = restore(&job, &["--path", "doc", "--path", "*.jpg"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--path \"doc\" matches nothing") && out.contains("near: docs"),
        "{out}"
    );
    assert!(!out.contains("\"*.jpg\" matches nothing"), "{out}");
    assert_eq!(
        common::read_tree(&up),
        before,
        "a refused restore changed files"
    );

    let (code, out) = restore(&job, &["--path", "docs"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        read(&job, "docs/x.txt").as_deref(),
        Some(&b"x from the backup"[..])
    );
    assert_eq!(
        read(&job, "docs/y.txt").as_deref(),
        Some(&b"y from the backup"[..])
    );
    assert_eq!(
        read(&job, "docs/new.txt"),
        None,
        "docs/new.txt was not moved"
    );
    // Outside the pattern: neither restored nor moved.
    assert_eq!(
        read(&job, "media/p.jpg").as_deref(),
        Some(&b"p changed"[..])
    );
    assert_eq!(
        read(&job, "media/new.jpg").as_deref(),
        Some(&b"new picture"[..])
    );
    assert_eq!(read(&job, "notes.md"), None);
    assert_eq!(
        orphans(&job),
        vec!["docs/new.txt".to_string(), "docs/x.txt".to_string()],
        "{out}"
    );

    // Anchored glob with --keep-extra: the new picture stays, the old one comes back.
    let (code, out) = restore(&job, &["--path", "media/*.jpg", "--keep-extra"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        read(&job, "media/p.jpg").as_deref(),
        Some(&b"p from the backup"[..])
    );
    assert_eq!(
        read(&job, "media/new.jpg").as_deref(),
        Some(&b"new picture"[..])
    );
    assert_eq!(read(&job, "notes.md"), None);
}

/// `--path` keeps the trust boundary: a link planted where the backup has the selected
/// directory is moved aside, never written through; a link outside the patterns is left
/// alone and not followed either.
#[test]
fn path_never_writes_through_a_link() {
    let job = uploads_job();
    let up = job.path("uploads");
    write_file(&up, "docs/x.txt", b"x from the backup");
    write_file(&up, "media/p.jpg", b"p from the backup");
    job.backup();
    std::fs::create_dir(job.path("outside")).expect("outside");
    std::fs::remove_dir_all(up.join("docs")).expect("rm docs");
    symlink(job.path("outside"), up.join("docs")).expect("link docs");
    std::fs::remove_dir_all(up.join("media")).expect("rm media");
    symlink(job.path("outside"), up.join("media")).expect("link media");

    let (code, out) = restore(&job, &["--path", "docs/**", "--keep-extra"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        list_tree(&job.path("outside")),
        Vec::<String>::new(),
        "the restore wrote through a link:\n{out}"
    );
    let docs = std::fs::symlink_metadata(up.join("docs")).expect("docs");
    assert!(docs.is_dir(), "docs is not a real directory");
    assert_eq!(
        read(&job, "docs/x.txt").as_deref(),
        Some(&b"x from the backup"[..])
    );
    let media = std::fs::symlink_metadata(up.join("media")).expect("media");
    assert!(
        media.file_type().is_symlink(),
        "media outside --path was touched"
    );
    assert!(out.contains("moved docs (a symbolic link"), "{out}");
}

/// A `--path` that matches nothing stops the whole set before its database is restored:
/// "nothing was restored" is true.
#[test]
fn a_pattern_that_matches_nothing_stops_before_the_database() {
    let builder = Job::new(JOB).local("local", Some(5));
    let (db, uploads) = (builder.path("app.db"), builder.path("uploads"));
    let job = sqlite_source(builder, "db", &db)
        .files("uploads", &uploads, "")
        .write();
    sqlite_db(&db, 2);
    write_file(&uploads, "docs/x.txt", b"x");
    job.backup();

    let copy = job.path("copy.db");
    let to = copy.display().to_string();
    let (code, out) = restore(&job, &["--to", &to, "--path", "nope"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--path \"nope\" matches nothing"), "{out}");
    assert!(
        !copy.exists(),
        "the database was restored before the files failed:\n{out}"
    );

    let (code, out) = restore(&job, &["--to", &to, "--path", "docs"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&copy), 2);
}

/// A source file that is gone holds nothing `--clean` could drop: restoring it back is not
/// refused.
#[test]
fn a_missing_sqlite_source_is_restored_without_force() {
    let builder = Job::new(JOB).local("local", Some(5));
    let db = builder.path("app.db");
    let job = sqlite_source(builder, "db", &db).write();
    sqlite_db(&db, 4);
    job.backup();
    std::fs::remove_file(&db).expect("rm");
    let to = db.display().to_string();
    let (code, out) = restore(&job, &["--to", &to, "--clean"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&db), 4);
}
