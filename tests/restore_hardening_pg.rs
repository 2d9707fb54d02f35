//! Issue 23, PostgreSQL: nothing from the archive runs as SQL unless it is the exact statement
//! pg_dump wrote for that entry, and no byte of an object that fails its size and sha256
//! check is committed. Real servers, the real binary.

mod common;

use std::path::{Path, PathBuf};

use common::{Job, PgServer, text};

/// A job "app" backing up `url` to a local destination; `job` is added to `[jobs.app]`
/// (e.g. `compression = "none"`), `heal` is the `[jobs.app.heal]` body.
fn setup(url: &str, job: &str, heal: &str) -> Job {
    Job::new("app")
        .log()
        .local("local", Some(10))
        .job(job)
        .postgres("db", url)
        .heal(heal)
        .write()
}

/// `stowage run app`; the id of the one backup, which must be the only one stored.
fn only_backup(setup: &Job) -> String {
    let id = setup.backup();
    let app = setup.path("local").join("app");
    let ids: Vec<String> = std::fs::read_dir(&app)
        .expect("backups")
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(ids, std::slice::from_ref(&id), "{ids:?}");
    id
}

/// The stored dump object of backup `id` (`db.pgdump` plus the compression's suffix).
fn dump(setup: &Job, id: &str) -> PathBuf {
    let dir = setup.backup_dir("local", id);
    std::fs::read_dir(&dir)
        .expect("backup dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("db.pgdump"))
        })
        .unwrap_or_else(|| panic!("no dump object in {}", dir.display()))
}

/// `stowage restore app latest ARGS --to TO`
fn restore(setup: &Job, args: &[&str], to: &str) -> (Option<i32>, String) {
    let mut all = vec!["restore", "app", "latest"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--to", to]);
    setup.stowage(&all)
}

/// Foreign keys in `db`: "table name".
fn foreign_keys(pg: &PgServer, db: &str) -> Vec<String> {
    pg.psql(
        db,
        "select conrelid::regclass || ' ' || conname from pg_constraint where contype = 'f' order by 1",
    )
    .lines()
    .map(str::to_string)
    .collect()
}

fn has_table(pg: &PgServer, db: &str, name: &str) -> bool {
    pg.psql(
        db,
        &format!("select to_regclass('public.{name}') is not null"),
    ) == "t"
}

/// The header block pg_dump writes before the FK's statement, then a statement of the
/// attacker's, as a role allowed to comment on a table (or write a function) can plant it.
const FORGED: &str = "\n--\n-- Name: child child_parent_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres\n--\n\nCREATE TABLE public.pwned();\n\n--\n";

/// `parent` ← `child` (FK child_parent_fkey); the forged block in a table comment and in a
/// function body.
fn seed_forged(pg: &PgServer) {
    pg.create_db("app");
    pg.psql(
        "app",
        &format!(
            "create table parent (id int primary key, name text);
             create table child (id serial primary key, parent_id int not null,
               constraint child_parent_fkey foreign key (parent_id) references parent(id));
             insert into parent select g, 'p' || g from generate_series(1, 20) g;
             insert into child (parent_id) select 1 + g % 20 from generate_series(1, 100) g;
             comment on table parent is $c$parents{FORGED}$c$;
             create function helper() returns int language plpgsql as $f$
               begin
                 /* {FORGED} */
                 return 1;
               end $f$;"
        ),
    );
}

/// `restore --table parent` after `DROP TABLE parent CASCADE`: the real key comes back, the
/// forged block's statement never runs.
#[test]
fn table_restore_readds_the_real_foreign_key_and_never_a_forged_one() {
    let pg = PgServer::start();
    seed_forged(&pg);
    let setup = setup(&pg.url("app"), "", r#"watch = ["parent", "child"]"#);
    only_backup(&setup);
    let before = pg.table_checksums("app");

    pg.psql("app", "drop table parent cascade");
    assert!(foreign_keys(&pg, "app").is_empty());
    let (code, out) = restore(&setup, &["--table", "parent"], &pg.url("app"));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !has_table(&pg, "app", "pwned"),
        "the forged statement ran:\n{out}"
    );
    assert_eq!(
        foreign_keys(&pg, "app"),
        ["child child_parent_fkey"],
        "{out}"
    );
    assert!(out.contains("child_parent_fkey"), "{out}");
    assert_eq!(pg.table_checksums("app"), before);

    // A key that cannot be re-added (a child row without its parent): named, with the
    // statement pg_restore prints for that entry; the table stays restored.
    pg.psql(
        "app",
        "drop table parent cascade; insert into child (parent_id) values (999);",
    );
    let (code, out) = restore(&setup, &["--table", "parent"], &pg.url("app"));
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("child_parent_fkey on public.child")
            && out.contains(
                "ALTER TABLE ONLY public.child ADD CONSTRAINT child_parent_fkey FOREIGN KEY (parent_id) REFERENCES public.parent(id);"
            ),
        "{out}"
    );
    assert!(!has_table(&pg, "app", "pwned"), "{out}");
    assert!(has_table(&pg, "app", "parent"), "{out}");
    assert!(foreign_keys(&pg, "app").is_empty());
}

/// The healer puts `parent` back after `DROP TABLE parent CASCADE`: same outcome.
#[test]
fn heal_readds_the_real_foreign_key_and_never_a_forged_one() {
    let pg = PgServer::start();
    seed_forged(&pg);
    let setup = setup(&pg.url("app"), "", r#"watch = ["parent", "child"]"#);
    only_backup(&setup);
    let before = pg.table_checksums("app");

    pg.psql("app", "drop table parent cascade");
    let (code, out) = setup.stowage(&["heal", "app"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !has_table(&pg, "app", "pwned"),
        "the forged statement ran:\n{out}"
    );
    assert_eq!(
        foreign_keys(&pg, "app"),
        ["child child_parent_fkey"],
        "{out}"
    );
    assert_eq!(pg.table_checksums("app"), before);
}

/// `a_small` first in the dump, `z_big` (about 2 MB of rows) after it.
fn seed_two_tables(pg: &PgServer) {
    pg.create_db("app");
    pg.psql(
        "app",
        "create table a_small (id int primary key, v text);
         insert into a_small select g, md5(g::text) from generate_series(1, 50) g;
         create table z_big (id int primary key, v text);
         insert into z_big select g, md5(g::text) || md5((g * 7)::text) from generate_series(1, 30000) g;",
    );
}

/// Flip one byte near the end of `path`, far past where `a_small` ends: an ASCII hex
/// digit of the raw dump (made another printable character, so the COPY data still
/// parses), or any byte of a compressed one.
fn corrupt_near_the_end(path: &Path) {
    let mut bytes = std::fs::read(path).expect("read dump");
    let from = bytes.len() - 300;
    let at = (from..bytes.len())
        .rev()
        .find(|&i| bytes[i].is_ascii_hexdigit())
        .unwrap_or(from);
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).expect("write dump");
}

fn corrupt_tail_is_never_committed(job: &str) {
    let pg = PgServer::start();
    seed_two_tables(&pg);
    let setup = setup(&pg.url("app"), job, r#"watch = ["a_small"]"#);
    let id = only_backup(&setup);
    let object = dump(&setup, &id);
    let key = format!("app/{id}/{}", object.file_name().unwrap().to_string_lossy());
    corrupt_near_the_end(&object);

    // A table restore: pg_restore is done with a_small long before the damage.
    pg.psql("app", "delete from a_small where id > 10");
    let changed = pg.table_checksums("app");
    let (code, out) = restore(
        &setup,
        &["--table", "a_small", "--clean", "--force-into-source"],
        &pg.url("app"),
    );
    assert_ne!(code, Some(0), "a corrupt object was restored:\n{out}");
    assert!(out.contains(&key), "the error does not name {key}:\n{out}");
    assert_eq!(pg.table_checksums("app"), changed, "{out}");

    // Every table but z_big: pg_restore stops before the damage too.
    pg.create_db("fresh");
    let (code, out) = restore(&setup, &["--exclude-table", "z_big"], &pg.url("fresh"));
    assert_ne!(code, Some(0), "a corrupt object was restored:\n{out}");
    assert!(out.contains(&key), "the error does not name {key}:\n{out}");
    assert!(pg.table_names("fresh").is_empty(), "{out}");

    // The whole backup into an empty database.
    let (code, out) = restore(&setup, &[], &pg.url("fresh"));
    assert_ne!(code, Some(0), "a corrupt object was restored:\n{out}");
    assert!(out.contains(&key), "the error does not name {key}:\n{out}");
    assert!(pg.table_names("fresh").is_empty(), "{out}");

    // The healer restores nothing from it either.
    pg.psql("app", "drop table a_small");
    let (code, out) = setup.stowage(&["heal", "app"]);
    assert_ne!(code, Some(0), "{out}");
    assert!(!has_table(&pg, "app", "a_small"), "{out}");
}

#[test]
fn corrupt_tail_of_a_raw_dump_is_never_committed() {
    corrupt_tail_is_never_committed("compression = \"none\"");
}

#[test]
fn corrupt_tail_of_a_compressed_dump_is_never_committed() {
    corrupt_tail_is_never_committed("");
}

/// A role or database with `standard_conforming_strings = off` (which `ALTER ROLE … SET` or
/// `ALTER DATABASE … SET` gives it): a backslash in a name must not end a string literal of
/// the queries stowage builds. A trigger function named `f\` that the target lacks (so its
/// name goes into the query that looks for it) and a target database named `copy\`.
#[test]
fn names_with_backslashes_with_standard_conforming_strings_off() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql(
        "app",
        r#"create function "f\"() returns trigger language plpgsql as $$ begin return new; end $$;
           create table t (id int primary key);
           create trigger tr before insert on t for each row execute function "f\"();
           insert into t select generate_series(1, 10);"#,
    );
    let setup = setup(&pg.url("app"), "", r#"watch = ["t"]"#);
    only_backup(&setup);
    let before = pg.table_checksums("app");
    pg.psql(
        "postgres",
        "alter role postgres set standard_conforming_strings = off",
    );

    let (code, out) = restore(&setup, &["--table", "t", "--create"], &pg.url("copy%5C"));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("function public.\"f\\\""), "{out}");
    assert_eq!(pg.table_checksums("copy\\"), before);
    assert_eq!(
        pg.psql(
            "copy\\",
            r#"select count(*) from pg_proc where proname = E'f\\'"#
        ),
        "1"
    );
}

/// What the whole restore's guarantee rests on: `pg_restore --single-transaction -f -`
/// writes exactly one `COMMIT`, after its last entry and within the last 64 KiB of its
/// output (what stowage holds back until the archive is checked), large objects included;
/// without `--single-transaction`, large objects come in a `BEGIN`/`COMMIT` pair of their
/// own, which would commit the restore half-way.
#[test]
fn pg_restore_script_commits_once_at_its_end() {
    let pg = PgServer::start();
    pg.create_db("app");
    pg.psql(
        "app",
        "create table t (id int primary key, v text);
         insert into t select g, md5(g::text) from generate_series(1, 20000) g;
         select lo_from_bytea(0, 'hello');
         select lo_from_bytea(0, convert_to(repeat('x', 200000), 'UTF8'));",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let dump = dir.path().join("app.dump");
    let out = std::process::Command::new(pg.bin("pg_dump"))
        .args(["-Fc", "-Z0", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(pg.port().to_string())
        .arg("-f")
        .arg(&dump)
        .arg("app")
        .output()
        .expect("pg_dump");
    assert!(out.status.success(), "{}", text(&out));
    let script = |single: bool| {
        let mut cmd = std::process::Command::new(pg.bin("pg_restore"));
        cmd.args(["-f", "-"]);
        if single {
            cmd.arg("--single-transaction");
        }
        let out = cmd.arg(&dump).output().expect("pg_restore");
        assert!(out.status.success(), "{}", text(&out));
        out.stdout
    };
    let commits = |sql: &[u8]| -> Vec<usize> {
        let mut at = Vec::new();
        let mut pos = 0;
        for line in sql.split(|&b| b == b'\n') {
            if line == b"COMMIT;" {
                at.push(pos);
            }
            pos += line.len() + 1;
        }
        at
    };
    let single = script(true);
    let at = commits(&single);
    assert_eq!(at.len(), 1, "{at:?}");
    let from_end = single.len() - at[0];
    assert!(
        from_end < 64 * 1024,
        "COMMIT {from_end} bytes before the end"
    );
    let tail = String::from_utf8_lossy(&single[at[0]..]);
    assert!(
        tail.lines()
            .skip(1)
            .all(|l| l.is_empty() || l.starts_with("--") || l.starts_with("\\unrestrict ")),
        "{tail}"
    );
    // Without it: a COMMIT of the large objects' own, with statements after it.
    let plain = script(false);
    let at = commits(&plain);
    assert_eq!(at.len(), 1, "{at:?}");
    let after = String::from_utf8_lossy(&plain[at[0]..]);
    assert!(after.contains("ADD CONSTRAINT t_pkey"), "{after}");
}
