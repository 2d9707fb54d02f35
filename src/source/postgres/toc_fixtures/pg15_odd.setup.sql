-- Database behind pg15_odd.list / pg15_odd.sql: rarer objects and awkward names.
create extension postgres_fdw;
create role "Data Team";
create schema "My Schema";

-- names with spaces, a relation name that is a prefix of another, an owner with a space
create table "My Schema"."My" (id int primary key);
create table "My Schema"."My Table" (id int constraint "My Table_pkey" primary key, "my" int references "My Schema"."My"(id));
create index "My Table idx" on "My Schema"."My Table" ("my");
alter table "My Schema"."My Table" owner to "Data Team";
create table public."odd.name" (id int primary key);
create table public."Order" (id int primary key, parent int references public."Order"(id));

-- NOT VALID check constraints (dumped apart), a domain with one, extended statistics
create domain public.posint as integer;
alter domain public.posint add constraint posint_check check (value > 0) not valid;
create table public.t (id int primary key, a int, b public.posint);
alter table public.t add constraint t_a_check check (a > 0) not valid;
create statistics public.t_ab on a, b from public.t;

-- comments on a constraint, an index, a trigger, a policy, a rule
create index t_a_idx on public.t (a);
create function public.noop() returns trigger language plpgsql as $$ begin return new; end $$;
create trigger t_noop before insert on public.t for each row execute function public.noop();
create policy t_all on public.t using (true);
create rule t_rule as on update to public.t where false do instead nothing;
comment on constraint t_pkey on public.t is 'pk';
comment on index public.t_a_idx is 'idx';
comment on trigger t_noop on public.t is 'trg';
comment on policy t_all on public.t is 'pol';
comment on rule t_rule on public.t is 'rule';

-- a function whose SQL-standard body is checked at creation, an inheritance child
create function public.count_t() returns bigint language sql begin atomic select count(*) from public.t; end;
create table public.parent (id int);
create table public.child (extra text) inherits (public.parent);

-- publication, foreign table, event trigger, default privileges
create publication pub for table public.t, public."Order";
create server remote foreign data wrapper postgres_fdw options (dbname 'x');
create foreign table public.ft (id int) server remote;
create function public.on_ddl() returns event_trigger language plpgsql as $$ begin end $$;
create event trigger ddl_log on ddl_command_start execute function public.on_ddl();
alter default privileges in schema public grant select on tables to "Data Team";

insert into "My Schema"."My" values (1), (2);
insert into "My Schema"."My Table" values (10, 1), (20, null);
insert into public."odd.name" values (1);
insert into public."Order" values (1, null), (2, 1);
insert into public.t values (1, 1, 1), (2, 2, 2);
insert into public.parent values (1);
insert into public.child values (2, 'x');
