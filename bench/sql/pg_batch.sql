-- events :first .. :first + :n - 1, and one customer per ten events
INSERT INTO events
SELECT g,
       1 + (random()*999999)::int,
       timestamptz '2022-01-01' + g * interval '9 seconds' + random() * interval '9 seconds',
       (ARRAY['page_view','click','login','logout','purchase','refund','signup','search','add_to_cart','checkout','error','api_call'])[1 + (g*7 + (random()*3)::int) % 12],
       CASE WHEN random() < 0.4 THEN round((random()*2000)::numeric, 2) END,
       md5(random()::text),
       jsonb_build_object(
         'ip', format('10.%s.%s.%s', (random()*255)::int, (random()*255)::int, (random()*255)::int),
         'ua', (ARRAY['Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0','Mozilla/5.0 (Windows NT 10.0; Win64; x64) Firefox/121.0','Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) Safari/604.1','curl/8.4.0','okhttp/4.12.0','python-requests/2.31.0'])[1 + (random()*5)::int],
         'path', '/api/v2/' || w[1 + (random()*(cardinality(w)-1))::int] || '/' || (random()*100000)::int,
         'status', (ARRAY[200,200,200,200,201,204,301,400,404,500])[1 + (random()*9)::int],
         'latency_ms', round((random()*random()*900)::numeric, 1),
         'trace', substr(md5(random()::text), 1, 16),
         'tags', jsonb_build_array(w[1 + (random()*(cardinality(w)-1))::int], w[1 + (random()*(cardinality(w)-1))::int])
       ),
       CASE WHEN random() < 0.6 THEN
         (SELECT string_agg(w[1 + (random()*(cardinality(w)-1))::int + 0*i], ' ') FROM generate_series(1, 4 + (g % 13)) i)
       END
FROM generate_series(:first::bigint, :first::bigint + :n - 1) g, bench_words() w;
INSERT INTO customers
SELECT g,
       initcap(w[1 + (random()*(cardinality(w)-1))::int]) || ' ' || initcap(w[1 + (random()*(cardinality(w)-1))::int]) || ' ' || substr(md5(random()::text), 1, 6),
       substr(md5(random()::text), 1, 10) || '@' || w[1 + (random()*(cardinality(w)-1))::int] || '.example',
       (ARRAY['US','DE','FR','GB','NL','ES','IT','PL','SE','JP','BR','IN'])[1 + (random()*11)::int],
       timestamptz '2018-01-01' + random() * interval '2000 days',
       round((random()*50000 - 10000)::numeric, 2),
       jsonb_build_object(
         'newsletter', random() < 0.3,
         'plan', (ARRAY['free','basic','pro','enterprise'])[1 + (random()*3)::int],
         'phone', '+' || (1000000000 + (random()*8999999999)::bigint)::text,
         'address', jsonb_build_object('street', (random()*999)::int || ' ' || initcap(w[1 + (random()*(cardinality(w)-1))::int]) || ' St', 'zip', lpad(((random()*99999)::int)::text, 5, '0')),
         'api_key', md5(random()::text) || md5(random()::text)
       )
FROM generate_series(:first::bigint / 10, (:first::bigint + :n - 1) / 10 - 1) g, bench_words() w
ON CONFLICT DO NOTHING;
