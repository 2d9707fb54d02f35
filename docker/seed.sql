-- A tiny "app" for the example stack: rows that a backup must bring back.
create table customers (
    id serial primary key,
    name text not null,
    email text unique not null,
    created_at timestamptz not null default now()
);
create table orders (
    id bigserial primary key,
    customer_id int not null references customers(id),
    total numeric(10,2) not null,
    items jsonb not null default '[]'
);
insert into customers (name, email)
select 'customer ' || g, 'c' || g || '@example.org' from generate_series(1, 500) g;
insert into orders (customer_id, total, items)
select 1 + (g % 500), round((random() * 200)::numeric, 2),
       jsonb_build_array(jsonb_build_object('sku', md5(g::text), 'qty', 1 + g % 3))
from generate_series(1, 2000) g;
