//! Single-table restore on PostgreSQL, one finding per test (issue "table restore and heal
//! that are complete on any schema"): each failed, or reported success while leaving things
//! behind, before the restore used the archives' dependency data.

mod common;

use common::pg_job::{PgJob, diff};

/// Item 1: `--table t --clean` drops what depends on t with it and re-creates it exactly as
/// it was: view options (security_barrier, security_invoker), check options, owner, grants,
/// comments, rules and triggers of the views.
#[test]
fn clean_recreates_dependent_views_exactly() {
    let job = PgJob::start(
        "app",
        &["viewer"],
        "create table t (id int primary key, amount int);
         insert into t select i, i * 10 from generate_series(1, 50) i;
         create view v_barrier with (security_barrier = true) as
             select id, amount from t where amount > 100 with local check option;
         create view v_invoker with (security_invoker = true) as select * from t;
         create view v_over as select * from v_barrier where id > 20 with cascaded check option;
         alter view v_invoker owner to viewer;
         grant select on v_over to viewer;
         comment on view v_barrier is 'the big ones';
         create function v_ins() returns trigger language plpgsql as $$ begin return new; end $$;
         create trigger v_invoker_ins instead of insert on v_invoker for each row execute function v_ins();
         create rule v_barrier_del as on delete to v_barrier do instead nothing;",
    );
    let schema = job.schema();
    job.psql("update t set amount = 0");
    let (code, out) = job.restore(&["--table", "t", "--clean", "--force-into-source"]);
    assert_eq!(code, Some(0), "{out}");
    let now = job.schema();
    assert_eq!(now, schema, "{}", diff(&schema, &now));
    assert_eq!(
        job.psql(
            "select relname || ' ' || array_to_string(array(select unnest(reloptions) order by 1), ',') \
             from pg_class where relname in ('v_barrier', 'v_invoker', 'v_over') order by 1"
        )
        .trim(),
        "v_barrier check_option=local,security_barrier=true\n\
         v_invoker security_invoker=true\n\
         v_over check_option=cascaded"
    );
    assert!(out.contains("re-created as they were"), "{out}");
    assert_eq!(job.psql("select sum(amount) from t").trim(), "12750");
}

/// Item 2: what `DROP TABLE … CASCADE` took (views, a materialized view and its rows, a
/// policy and a rule of another table, a function of the table's row type) comes back with
/// the table; what cannot (a view that also needs a table that is gone, a column of another
/// table of its row type) is named, and the exit code is 1.
#[test]
fn what_cascade_took_comes_back_and_the_rest_is_named() {
    let job = PgJob::start(
        "app",
        &[],
        "create table t (id int primary key, amount int);
         insert into t select i, i from generate_series(1, 30) i;
         create table other (id int primary key, t_id int);
         insert into other values (1, 1), (2, 2);
         create view v as select * from t where id < 10;
         create view vv as select count(*) from v;
         create materialized view mv as select sum(amount) as s from t;
         alter table other enable row level security;
         create policy p on other using (t_id in (select id from t));
         create rule r as on insert to other do also insert into t values (-new.id, 0);
         create function label(t) returns text language sql as 'select $1.id::text';",
    );
    let schema = job.schema();
    let data = job.data();
    job.psql("drop table t cascade");
    let (code, out) = job.restore(&["--table", "t"]);
    assert_eq!(code, Some(0), "{out}");
    let now = job.schema();
    assert_eq!(now, schema, "{}", diff(&schema, &now));
    assert_eq!(job.data(), data);
    assert!(
        out.contains("putting back") && out.contains("view public.vv"),
        "{out}"
    );

    // A view over t and z, with z gone for good; a column of t's row type in table keep.
    job.psql(
        "create table z (id int); create view vz as select t.id from t, z;
         create table keep (id int, snap t); insert into keep values (1, null);",
    );
    job.backup();
    job.psql("drop table z cascade; drop table t cascade");
    let (code, out) = job.restore(&["--table", "t"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("view public.vz: needs table public.z"),
        "{out}"
    );
    assert!(
        out.contains("table public.keep: depends on a restored table and differs"),
        "{out}"
    );
    assert!(out.contains("could not be put back"), "{out}");
    // The table itself and everything else are back.
    assert_eq!(job.psql("select count(*) from t").trim(), "30");
    assert_eq!(job.psql("select count(*) from vv").trim(), "1");
}

/// Item 3: partitioned tables. `--clean` of a table referenced from a partitioned table; a
/// dropped partition comes back attached with its bounds; a dropped partitioned parent comes
/// back with its partitions.
#[test]
fn partitions_come_back_attached_and_with_their_parent() {
    let job = PgJob::start(
        "app",
        &[],
        "create table ref (id int primary key);
         insert into ref select generate_series(1, 10);
         create table p (id int, ref_id int references ref(id), at date not null) partition by range (at);
         create table p1 partition of p for values from ('2025-01-01') to ('2026-01-01');
         create table p2 partition of p for values from ('2026-01-01') to ('2027-01-01') partition by list (id);
         create table p2a partition of p2 for values in (1, 2, 3);
         create table p2z partition of p2 default;
         create index p_at on p (at);
         insert into p select i, i, date '2025-03-01' + i * 20 from generate_series(1, 10) i;",
    );
    let schema = job.schema();
    let data = job.data();
    for (step, table) in [
        ("--clean", "ref"),
        ("drop table p1", "p1"),
        ("drop table p2a", "p2a"),
        ("drop table p2 cascade", "p2"),
        ("drop table p cascade", "p"),
    ] {
        let mut args = vec!["--table", table];
        if step == "--clean" {
            args.extend(["--clean", "--force-into-source"]);
        } else {
            job.psql(step);
        }
        let (code, out) = job.restore(&args);
        assert_eq!(code, Some(0), "{step}: {out}");
        let now = job.schema();
        assert_eq!(now, schema, "{step}: {}", diff(&schema, &now));
        assert_eq!(job.data(), data, "{step}");
    }
}

/// Item 4: a base type whose I/O functions went with `DROP TYPE … CASCADE` comes back with
/// its shell type and functions, in order, before the table that uses it.
#[test]
fn a_base_type_comes_back_with_its_functions() {
    let job = PgJob::start(
        "app",
        &[],
        "create type myint;
         create function myint_in(cstring) returns myint language internal immutable strict as 'int4in';
         create function myint_out(myint) returns cstring language internal immutable strict as 'int4out';
         create type myint (input = myint_in, output = myint_out, like = int4);
         create table t (id int primary key, v myint);
         insert into t select i, (i * 7)::text::myint from generate_series(1, 20) i;",
    );
    let schema = job.schema();
    let data = job.data();
    job.psql("drop type myint cascade; drop table t");
    let (code, out) = job.restore(&["--table", "t"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shell type public myint") || out.contains("shell type public.myint"),
        "{out}"
    );
    let now = job.schema();
    assert_eq!(now, schema, "{}", diff(&schema, &now));
    assert_eq!(job.data(), data);
}

/// Item 6: a table that is not in the backup is answered with the closest names and a
/// count, not every name; a whole-database `--clean` that objects outside the backup block
/// gets a hint that fits a whole restore.
#[test]
fn errors_name_the_closest_tables_and_fit_the_restore() {
    let mut sql = String::from("create table orders (id int primary key);\n");
    for i in 0..40 {
        sql.push_str(&format!("create table t{i} (id int);\n"));
    }
    let job = PgJob::start("app", &[], &sql);
    job.psql("drop table orders");
    let (code, out) = job.restore(&["--table", "ordrs"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "table ordrs is not in this backup (closest: public.orders; 41 tables in this backup)"
        ),
        "{out}"
    );
    assert!(!out.contains("t39"), "every table listed: {out}");

    job.psql("create table orders (id int primary key); create view extra as select * from t1;");
    let (code, out) = job.restore(&["--clean", "--force-into-source"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Objects of the target that are not in this backup depend on objects that --clean replaces"),
        "{out}"
    );
    assert!(!out.contains("stowage does not re-create"), "{out}");
}

/// Item 7: `--create` followed by a failure drops the database it created.
#[test]
fn a_failed_restore_drops_the_database_it_created() {
    let job = PgJob::start("app", &[], "create table orders (id int primary key);");
    let url = job.pg.url("fresh");
    let (code, out) = job.stowage(&[
        "restore", "app", "latest", "--to", &url, "--create", "--table", "ordrs",
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("was dropped again"), "{out}");
    assert_eq!(
        job.pg
            .psql(
                "postgres",
                "select count(*) from pg_database where datname = 'fresh'"
            )
            .trim(),
        "0"
    );
    // And a restore that works keeps it.
    let (code, out) = job.stowage(&["restore", "app", "latest", "--to", &url, "--create"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        job.pg.psql("fresh", "select count(*) from orders").trim(),
        "0"
    );
}
