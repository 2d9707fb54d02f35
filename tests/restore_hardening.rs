//! The restore path as a trust boundary (issue 23), through the real binary against real
//! servers: no byte of a damaged object reaches a live database (MariaDB is checked whole
//! before its first statement runs; SQLite and Redis stage a file they rename only after the
//! stream checked out), a damaged or missing object on one destination is read from another
//! destination that holds it intact (or, with `--from`, that destination is named), text
//! inside a dump never opens a section of a MariaDB per-table restore, and a restore target
//! never runs as shell code in a command source's restore command.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::mariadb::MariaDbServer;
use common::{Job, text, toml_str};

/// A job `app` writing to local destinations `destinations` (in the job's order, each at
/// `path(name)`), with the given sources (TOML bodies of `[[jobs.app.sources]]`).
fn job_with(destinations: &[&str], sources: &[String]) -> Job {
    let mut job = Job::with_prefix("app", "stowage-hardening-").top("[log]\nlevel = \"info\"");
    for d in destinations {
        job = job.local(d, Some(10));
    }
    for s in sources {
        job = job.source(s);
    }
    job.write()
}

/// What these tests do with the job: run it, restore it, damage what it stored.
trait Hardening {
    fn run(&self);
    fn restore(&self, args: &[&str]) -> Output;
    fn restore_ok(&self, args: &[&str]) -> String;
    fn restore_fails(&self, args: &[&str]) -> String;
    fn object(&self, dest: &str) -> PathBuf;
    fn damage(&self, dest: &str);
}

impl Hardening for Job {
    fn run(&self) {
        let out = self.output(&["run", "app"]);
        assert!(out.status.success(), "run failed:\n{}", text(&out));
    }

    fn restore(&self, args: &[&str]) -> Output {
        let mut all = vec!["restore", "app"];
        all.extend_from_slice(args);
        self.output(&all)
    }

    fn restore_ok(&self, args: &[&str]) -> String {
        let out = self.restore(args);
        assert!(out.status.success(), "restore {args:?}:\n{}", text(&out));
        text(&out)
    }

    fn restore_fails(&self, args: &[&str]) -> String {
        let out = self.restore(args);
        let t = text(&out);
        assert!(!out.status.success(), "restore {args:?} should fail:\n{t}");
        t
    }

    /// The stored object of source `db` on destination `dest` (the one backup there).
    fn object(&self, dest: &str) -> PathBuf {
        let job = self.path(dest).join("app");
        for e in std::fs::read_dir(&job).expect("job dir").flatten() {
            if !e.path().join("manifest.json").is_file() {
                continue;
            }
            for f in std::fs::read_dir(e.path()).expect("backup dir").flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with("db.") {
                    return f.path();
                }
            }
        }
        panic!("no object of source db under {}", job.display());
    }

    /// Flip a byte near the end of the object: past every table of the dump but the last.
    fn damage(&self, dest: &str) {
        let path = self.object(dest);
        let mut bytes = std::fs::read(&path).expect("read object");
        let at = bytes.len() - 20;
        bytes[at] ^= 0x5a;
        std::fs::write(&path, bytes).expect("write object");
    }
}

fn mariadb_source(db: &MariaDbServer, name: &str) -> String {
    format!(
        "type = \"mariadb\"\nname = \"db\"\nurl = {}\n",
        toml_str(db.url(name))
    )
}

/// `a_orders` comes first in the dump (tables are dumped by name), `z_big` fills the rest,
/// so that a byte damaged near the end lies well past where `a_orders` ends.
fn seed_mariadb(db: &MariaDbServer, name: &str) {
    db.create_db(name);
    db.sql(
        name,
        "create table a_orders (id int primary key, item varchar(50)) engine=innodb;
         insert into a_orders values (1, 'one'), (2, 'two'), (3, 'three');
         create table z_big (id int primary key, v varchar(200)) engine=innodb;
         insert into z_big select seq, concat('row ', seq, ' ', md5(seq)) from seq_1_to_20000;",
    );
}

/// A target that already holds something: a restore that fails must leave it exactly so.
fn seed_target(db: &MariaDbServer, name: &str) -> BTreeMap<String, String> {
    db.create_db(name);
    db.sql(
        name,
        "create table a_orders (id int primary key, item varchar(50)) engine=innodb;
         insert into a_orders values (7, 'old');
         create table keep_me (id int) engine=innodb;
         insert into keep_me values (1), (2);",
    );
    db.table_checksums(name)
}

/// MariaDB applies each statement as it reads it (DDL commits by itself): a damaged object
/// must be refused before the first one, whole or per table, even when the damage lies
/// past the selected table's end.
#[test]
fn mariadb_restore_of_a_damaged_object_changes_nothing() {
    let db = MariaDbServer::start();
    seed_mariadb(&db, "src");
    let before = seed_target(&db, "dst");
    let setup = job_with(&["first"], &[mariadb_source(&db, "src")]);
    setup.run();
    setup.damage("first");
    let target = db.url("dst");

    let t = setup.restore_fails(&["--to", &target, "--clean"]);
    assert_eq!(
        db.table_checksums("dst"),
        before,
        "whole restore changed the target:\n{t}"
    );
    assert!(t.contains("corrupt"), "{t}");
    assert!(t.contains("no other destination"), "{t}");

    let t = setup.restore_fails(&["--to", &target, "--clean", "--table", "a_orders"]);
    assert_eq!(
        db.table_checksums("dst"),
        before,
        "--table restore changed the target:\n{t}"
    );
    assert!(t.contains("corrupt"), "{t}");
}

/// Two destinations, the first's object damaged (then missing): without `--from` the
/// restore reads the second's intact copy by itself; with `--from first` it fails, names
/// the second, and changes nothing.
#[test]
fn mariadb_restore_reads_an_intact_copy_from_another_destination() {
    let db = MariaDbServer::start();
    seed_mariadb(&db, "src");
    let source = db.table_checksums("src");
    let before = seed_target(&db, "dst");
    let setup = job_with(&["first", "second"], &[mariadb_source(&db, "src")]);
    setup.run();
    setup.damage("first");
    let target = db.url("dst");

    let t = setup.restore_fails(&["--from", "first", "--to", &target, "--clean"]);
    assert_eq!(db.table_checksums("dst"), before, "{t}");
    assert!(
        t.contains("destination second holds an intact copy") && t.contains("--from second"),
        "{t}"
    );

    let t = setup.restore_ok(&["--to", &target, "--clean"]);
    assert!(t.contains("read from second"), "{t}");
    let after = db.table_checksums("dst");
    assert_eq!(after["a_orders"], source["a_orders"]);
    assert_eq!(after["z_big"], source["z_big"]);

    // Missing altogether on the first: the same.
    std::fs::remove_file(setup.object("first")).expect("remove object");
    db.create_db("dst2");
    let t = setup.restore_ok(&["--to", &db.url("dst2"), "--table", "a_orders"]);
    assert!(t.contains("read from second"), "{t}");
    assert_eq!(
        db.table_checksums("dst2")["a_orders"],
        source["a_orders"],
        "{t}"
    );
}

/// SQLite writes a temporary file and renames it only after the stream checked out
/// (`verifies_before_commit`): a damaged object leaves the target as it was, and the
/// restore then goes on from the destination whose copy is intact.
#[test]
fn sqlite_restore_falls_back_after_a_damaged_stream_and_never_touches_the_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("app.db");
    {
        let c = rusqlite::Connection::open(&src).expect("open");
        c.execute_batch(
            "create table t (id integer primary key, v text);
             with recursive n(i) as (select 1 union all select i + 1 from n where i < 20000)
             insert into t select i, hex(randomblob(40)) from n;",
        )
        .expect("seed");
    }
    let rows = |p: &Path| -> Vec<(i64, String)> {
        let c = rusqlite::Connection::open(p).expect("open");
        let mut s = c
            .prepare("select id, v from t order by id")
            .expect("prepare");
        s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .map(|r| r.expect("row"))
            .collect()
    };
    let want = rows(&src);
    let setup = job_with(
        &["first", "second"],
        &[format!(
            "type = \"sqlite\"\nname = \"db\"\npath = {}\n",
            toml_str(src.display())
        )],
    );
    setup.run();
    setup.damage("first");

    let existing = setup.path("existing.db");
    rusqlite::Connection::open(&existing)
        .and_then(|c| c.execute_batch("create table old (x); insert into old values (1);"))
        .expect("existing database");
    let old = std::fs::read(&existing).expect("read");
    let t = setup.restore_fails(&[
        "--from",
        "first",
        "--to",
        &existing.display().to_string(),
        "--clean",
    ]);
    assert!(t.contains("--from second"), "{t}");
    assert_eq!(std::fs::read(&existing).expect("read"), old);

    let restored = setup.path("restored.db");
    let t = setup.restore_ok(&["--to", &restored.display().to_string()]);
    assert!(t.contains("read from second"), "{t}");
    assert_eq!(rows(&restored), want);
}

/// A role that may create a trigger (here on a table that is not restored) writes, inside
/// a string of its body, a line that looks like the section header of the table being
/// restored, followed by a statement. A restore of that table runs only the table's own
/// statements.
#[test]
fn mariadb_text_inside_a_dump_never_opens_a_section() {
    let db = MariaDbServer::start();
    seed_mariadb(&db, "src");
    // For `--table a_orders`: the header of the wanted table, in z_big's trigger and in
    // z_big's comment.
    db.sql(
        "src",
        "create trigger z_forge before insert on z_big for each row set @note = \
         '\nDELIMITER ;\n-- Table structure for table `a_orders`\nCREATE TABLE pwned (x int);\n'",
    );
    db.sql(
        "src",
        "alter table z_big comment = '\n-- Table structure for table `a_orders`\nCREATE TABLE pwned3 (x int);\n'",
    );
    let source = db.table_checksums("src");
    let setup = job_with(&["first"], &[mariadb_source(&db, "src")]);
    setup.run();

    let no_pwned = |d: &str, t: &str| {
        let names = db.table_names(d);
        assert!(
            !names.iter().any(|n| n.starts_with("pwned")),
            "{d}: {names:?}\n{t}"
        );
    };
    db.create_db("one");
    let out = setup.restore(&["--to", &db.url("one"), "--table", "a_orders"]);
    no_pwned("one", &text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.table_names("one"), vec!["a_orders".to_string()]);
    assert_eq!(db.table_checksums("one")["a_orders"], source["a_orders"]);

    // For `--exclude-table a_orders`: a header that needs no table name, in a trigger of the
    // table left out.
    db.sql(
        "src",
        "create trigger a_forge before insert on a_orders for each row set @note = \
         '\nDELIMITER ;\n-- Dumping routines for database x\nCREATE TABLE pwned2 (x int);\n'",
    );
    setup.run();
    db.create_db("most");
    let out = setup.restore(&["--to", &db.url("most"), "--exclude-table", "a_orders"]);
    no_pwned("most", &text(&out));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(db.table_names("most"), vec!["z_big".to_string()]);
    no_pwned("src", "");
    // The whole backup still restores, trigger and comment included, as text.
    db.create_db("whole");
    setup.restore_ok(&["--to", &db.url("whole")]);
    assert_eq!(db.table_checksums("whole"), source);
    assert!(
        !db.table_names("whole")
            .iter()
            .any(|n| n.starts_with("pwned"))
    );
}

/// `{target}` pasted into a `sh -c` script must not run what the target says;
/// `STOWAGE_RESTORE_TARGET` carries any target as plain text.
#[test]
fn command_restore_target_never_runs_as_shell_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pwned = dir.path().join("pwned");
    let setup = job_with(
        &["first"],
        &[
            "type = \"command\"\nname = \"db\"\ndump = [\"sh\", \"-c\", \"printf payload\"]\n\
             restore = [\"sh\", \"-c\", \"cat > /dev/null; echo restoring into {target}\"]\n"
                .to_string(),
        ],
    );
    setup.run();
    let evil = format!("x; touch {}", pwned.display());
    let t = setup.restore_fails(&["--to", &evil]);
    assert!(!pwned.exists(), "the target ran as shell code:\n{t}");
    assert!(t.contains("STOWAGE_RESTORE_TARGET"), "{t}");
    let t = setup.restore_fails(&["--to", "$(touch pwned)", "--dry-run"]);
    assert!(t.contains("STOWAGE_RESTORE_TARGET"), "{t}");
    setup.restore_ok(&["--to", "db1"]);

    // The documented way: the environment, quoted in the script.
    let env_setup = job_with(
        &["first"],
        &[
            "type = \"command\"\nname = \"db\"\ndump = [\"sh\", \"-c\", \"printf payload\"]\n\
             restore = [\"sh\", \"-c\", \"cat > \\\"$STOWAGE_RESTORE_TARGET\\\"\"]\n"
                .to_string(),
        ],
    );
    env_setup.run();
    let odd = dir.path().join("a b; $(touch pwned) `id`");
    env_setup.restore_ok(&["--to", &odd.display().to_string()]);
    assert_eq!(std::fs::read(&odd).expect("restored file"), b"payload");
    assert!(!pwned.exists());
}

/// A files tree whose blobs on the first destination are damaged or gone: without
/// `--from` the restore goes on from the second destination and puts back every file;
/// with `--from first` it stops and names the second.
#[test]
fn files_restore_goes_on_from_a_destination_holding_every_blob() {
    let dir = tempfile::tempdir().expect("tempdir");
    let uploads = dir.path().join("uploads");
    std::fs::create_dir(&uploads).expect("mkdir");
    for i in 0..40 {
        std::fs::write(
            uploads.join(format!("f{i:02}.txt")),
            format!("file {i} ").repeat(200 + i),
        )
        .expect("write");
    }
    let setup = job_with(
        &["first", "second"],
        &[format!(
            "type = \"files\"\nname = \"uploads\"\npath = {}\n",
            toml_str(uploads.display())
        )],
    );
    setup.run();
    let root = setup.path("first/app/blobs");
    let mut blobs: Vec<PathBuf> = common::list_tree(&root)
        .into_iter()
        .map(|rel| root.join(rel))
        .collect();
    blobs.sort();
    assert_eq!(blobs.len(), 40, "{blobs:?}");
    let mut bytes = std::fs::read(&blobs[10]).expect("read blob");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&blobs[10], bytes).expect("write blob");
    std::fs::remove_file(&blobs[30]).expect("remove blob");

    let out1 = dir.path().join("out1");
    let t = setup.restore_fails(&["--from", "first", "--files-to", &out1.display().to_string()]);
    assert!(t.contains("--from second"), "{t}");

    let out2 = dir.path().join("out2");
    let t = setup.restore_ok(&["--files-to", &out2.display().to_string()]);
    assert_eq!(common::read_tree(&out2), common::read_tree(&uploads), "{t}");
    assert!(t.contains("finished from second"), "{t}");
}

/// Redis: the RDB file is renamed into place only after the stream checked out; a damaged
/// object leaves no file, and without `--from` the intact copy is read instead.
#[test]
fn redis_restore_reads_an_intact_copy_from_another_destination() {
    let redis = common::redis::RedisServer::start();
    {
        let mut c = redis.conn();
        for i in 0..2000 {
            c.cmd(&[
                b"SET",
                format!("key{i}").as_bytes(),
                format!("value {i} {}", "x".repeat(i % 97)).as_bytes(),
            ]);
        }
    }
    let setup = job_with(
        &["first", "second"],
        &[format!(
            "type = \"redis\"\nname = \"db\"\nurl = {}\n",
            toml_str(redis.url())
        )],
    );
    setup.run();
    let intact = common::zstd_decompress(&std::fs::read(setup.object("second")).expect("read"));
    setup.damage("first");

    let rdb = setup.path("restored.rdb");
    let t = setup.restore_fails(&["--from", "first", "--to", &rdb.display().to_string()]);
    assert!(!rdb.exists(), "{t}");
    assert!(t.contains("--from second"), "{t}");

    let t = setup.restore_ok(&["--to", &rdb.display().to_string()]);
    assert_eq!(std::fs::read(&rdb).expect("restored"), intact, "{t}");
    assert!(t.contains("read from second"), "{t}");
}

/// The healer restores into production: a damaged copy on the destination it prefers is
/// never applied (MariaDB: checked whole first), and the intact copy on the other
/// destination is read instead.
#[test]
fn healer_never_applies_a_damaged_copy_and_reads_the_intact_one() {
    let db = MariaDbServer::start();
    seed_mariadb(&db, "app");
    let before = db.table_checksums("app");
    let setup = job_with(
        &["first", "second"],
        &[format!(
            "{}\n[jobs.app.heal]\nwatch = [\"a_orders\", \"z_big\"]\n",
            mariadb_source(&db, "app")
        )],
    );
    setup.run();
    setup.damage("first");
    db.sql("app", "drop table a_orders");
    let out = setup.output(&["heal", "app"]);
    let t = text(&out);
    assert_eq!(db.table_checksums("app"), before, "{t}");
    assert!(out.status.success(), "{t}");
    assert!(t.contains("second"), "{t}");
}
