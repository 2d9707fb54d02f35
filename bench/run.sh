#!/usr/bin/env bash
# Benchmark: stowage `run` (PostgreSQL → S3) against a raw pg_dump and against the classic
# cron script (`pg_dump | gzip > file && aws s3 sync`), on a generated database of a chosen
# size. Starts its own PostgreSQL 15 and moto_server on random loopback ports and removes
# everything on exit. See bench/README.md for what is measured and how to read it.
#
#   bench/run.sh                      # one size, 1024 MiB
#   bench/run.sh --sizes 256,1024     # several sizes in one invocation
#   bench/run.sh --size-mb 256 --repeat 3 --no-build
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

SIZES="1024"
REPEAT=1
BUILD=1
KEEP_WORK=0
IDLE_WAIT=300
IDLE_MAX_PCT=15
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TOOLS="${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}"
VENV="$TOOLS/venv"

usage() {
    cat <<EOF
usage: bench/run.sh [options]
  --size-mb N        database size in MiB (default 1024)
  --sizes A,B,...    run the whole benchmark at each size (e.g. 256,1024)
  --repeat N         run every measurement N times; report the median (by wall time) of the runs
                     during which other work used under 5% of the CPU (default 1)
  --stowage PATH     stowage binary to test (default: build and use target/release/stowage)
  --no-build         do not run cargo build --release (uses the existing binary)
  --results-dir DIR  where the JSON results go (default bench/results)
  --idle-wait SECS   before each measurement wait up to SECS (default 300, 0 = never) for the machine's
                     CPU use to drop under 15% (other work on a shared box skews the figures)
  --keep-work        keep the temp dir (logs, configs, GNU time outputs) instead of removing it
env: PG_BIN (default /usr/lib/postgresql/15/bin), STOWAGE_TOOLS (venv for moto/awscli)
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mb) SIZES="$2"; shift 2 ;;
        --sizes) SIZES="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --stowage) STOWAGE="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep-work) KEEP_WORK=1; shift ;;
        --idle-wait) IDLE_WAIT="$2"; shift 2 ;;
        --results-dir) RESULTS_DIR="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
IFS=',' read -r -a SIZE_LIST <<<"$SIZES"
for s in "${SIZE_LIST[@]}"; do
    [[ "$s" =~ ^[0-9]+$ && "$s" -ge 16 ]] || { echo "invalid size: $s (MiB, at least 16)" >&2; exit 2; }
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --repeat: $REPEAT" >&2; exit 2; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_dump" ]] \
    || die "PostgreSQL 15 not found in $PG_BIN (apt-get install postgresql, or set PG_BIN)"
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
fi
HAVE_ZSTD=0
command -v zstd >/dev/null 2>&1 && HAVE_ZSTD=1
# (f) encrypts to an age X25519 recipient generated here; age-keygen comes with Debian's `age`.
if ! command -v age-keygen >/dev/null 2>&1; then
    log "installing age (for age-keygen)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >/dev/null; } \
        || die "age-keygen not found and apt-get install age failed: measurement (f) needs it"
fi
id postgres >/dev/null 2>&1 || die "no postgres user (initdb refuses to run as root)"

if [[ ! -x "$VENV/bin/moto_server" || ! -x "$VENV/bin/aws" ]]; then
    if [[ -f "$ROOT/tests/setup.sh" ]]; then
        log "setting up moto/awscli with tests/setup.sh"
        STOWAGE_TOOLS="$TOOLS" bash "$ROOT/tests/setup.sh" >&2
    fi
fi
if [[ ! -x "$VENV/bin/moto_server" || ! -x "$VENV/bin/aws" ]]; then
    log "creating $VENV with moto[server] and awscli"
    mkdir -p "$TOOLS"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >&2
    "$VENV/bin/pip" install -q 'moto[server]' awscli >&2
fi
PY="$VENV/bin/python"
AWS="$VENV/bin/aws"

if [[ -z "$STOWAGE" ]]; then
    STOWAGE="${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage"
fi
if [[ "$BUILD" == 1 ]]; then
    log "cargo build --release (waits if another build holds the lock)"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release failed"
fi
[[ -x "$STOWAGE" ]] || die "stowage binary not found at $STOWAGE (build it or pass --stowage)"

# ---------------------------------------------------------------------------------------
# Temp dir and servers (random ports; stopped and removed on exit)
# ---------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench.XXXXXX")"
chmod 755 "$WORK"
mkfifo "$WORK/pause"            # `read -t` on it is a sleep that does not fork
exec {PAUSE_FD}<>"$WORK/pause"
PGDATA="$WORK/pgdata"
MOTO_PID=""
PG_STARTED=0

cleanup() {
    local rc=$?
    set +e
    if [[ "$PG_STARTED" == 1 ]]; then
        runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
    fi
    if [[ -n "$MOTO_PID" ]]; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
    if [[ "$KEEP_WORK" == 1 ]]; then
        rm -rf "$PGDATA"
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: a concurrent `cargo build` must not swap the binary between measurements.
cp "$STOWAGE" "$WORK/stowage"
STOWAGE_SRC="$STOWAGE"
STOWAGE="$WORK/stowage"
# What was measured: the binary's hash and build time, and the commit of the tree (+dirty src).
STOWAGE_ID="$(sha256sum "$STOWAGE" | cut -c1-16) built $(date -u -r "$STOWAGE_SRC" +%Y-%m-%dT%H:%M:%SZ)"
if GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; then
    git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
else
    GIT_REV="unknown"
fi

# (f) stowage zstd+age: a throwaway age X25519 key pair in the temp dir; the job gets only the
# recipient (public key), like a real backup host.
AGE_KEY="$WORK/age-key.txt"
age-keygen -o "$AGE_KEY" 2>/dev/null || die "age-keygen -o $AGE_KEY failed"
AGE_RECIPIENT="$(age-keygen -y "$AGE_KEY")"
[[ "$AGE_RECIPIENT" == age1* ]] || die "age-keygen -y gave no age1... recipient: $AGE_RECIPIENT"

# Everything stays on loopback; S3 credentials are dummies (moto does not check them).
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
# stowage runs pg_dump from PATH: make it PostgreSQL 15's, not Debian's version wrapper.
export PATH="$PG_BIN:$PATH"
export PGCONNECT_TIMEOUT=15

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PG_PORT="$(free_port)"
log "starting PostgreSQL ($("$PG_BIN/postgres" --version | awk '{print $3}')) on 127.0.0.1:$PG_PORT"
mkdir -p "$PGDATA"
chown postgres: "$PGDATA"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
# Default durability (fsync on); a bigger max_wal_size only spares the load from checkpoint storms.
PG_STARTED=1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_wal_size=4GB" start >/dev/null \
    || { cat "$PGDATA/server.log" >&2; die "PostgreSQL did not start"; }
PG_ADMIN="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
read -r PG_PID <"$PGDATA/postmaster.pid"

MOTO_PORT="$(free_port)"
log "starting moto_server on 127.0.0.1:$MOTO_PORT"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do
    if "$PY" -c "import urllib.request,sys; urllib.request.urlopen('$ENDPOINT/', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$WORK/moto.log" >&2; die "moto_server exited"; }
    sleep 0.2
done
"$AWS" --endpoint-url "$ENDPOINT" s3 mb s3://bench >/dev/null

s3_total_bytes() { # prefix → sum of object sizes under s3://bench/prefix/
    "$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/$1/" --recursive --summarize \
        | awk '/Total Size:/ {print $3}'
}

# ---------------------------------------------------------------------------------------
# Data: realistic random rows (text, jsonb, numeric, timestamps), ~3x compressible
# ---------------------------------------------------------------------------------------
SCHEMA_SQL="$WORK/schema.sql"
BATCH_SQL="$WORK/batch.sql"
cat >"$SCHEMA_SQL" <<'SQL'
CREATE TABLE customers (
  id bigint PRIMARY KEY,
  name text NOT NULL,
  email text NOT NULL,
  country char(2) NOT NULL,
  created_at timestamptz NOT NULL,
  balance numeric(12,2) NOT NULL,
  profile jsonb
);
CREATE TABLE events (
  id bigint PRIMARY KEY,
  customer_id bigint NOT NULL,
  occurred_at timestamptz NOT NULL,
  kind text NOT NULL,
  amount numeric(12,2),
  session_id text NOT NULL,
  payload jsonb NOT NULL,
  note text
);
CREATE FUNCTION bench_words() RETURNS text[] IMMUTABLE LANGUAGE sql AS $$
  SELECT '{account,active,address,after,agent,alpha,amount,apple,archive,backup,balance,basket,batch,before,billing,blue,branch,bucket,cache,card,cart,change,check,client,cloud,code,column,commit,config,coupon,credit,customer,daily,data,debit,delivery,device,discount,domain,draft,email,error,event,export,failed,field,file,filter,first,green,group,guest,handle,header,import,index,invoice,item,label,last,ledger,limit,login,logout,manager,member,merge,message,method,mobile,monthly,network,notice,order,owner,package,page,paid,partner,payment,pending,period,phone,plan,price,product,profile,queue,quota,record,refund,region,report,request,retry,review,route,sale,search,session,shipping,signup,status,stock,store,stream,subscription,summary,support,system,table,task,ticket,token,total,trial,update,upgrade,user,value,vendor,version,view,visit,wallet,warehouse,weekly,yellow}'::text[]
$$;
SQL
cat >"$BATCH_SQL" <<'SQL'
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
SQL

psql_q() { # url, psql args...
    local url="$1"; shift
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$url" "$@"
}

load_database() { # size_mib url
    local target=$(( $1 * 1024 * 1024 )) url="$2" size base done_rows=0 n bpr t0
    t0=$(date +%s)
    psql_q "$url" -f "$SCHEMA_SQL"
    base=$(psql_q "$url" -At -c "select pg_database_size(current_database())")
    size=$base
    # first batch: ~500 bytes a row, at most 100k rows; later batches from the measured size
    n=$(( target / 2 / 500 / 10 * 10 ))
    (( n > 100000 )) && n=100000
    (( n < 2000 )) && n=2000
    while (( size < target )); do
        psql_q "$url" -v first=$((done_rows + 1)) -v n=$n -f "$BATCH_SQL"
        done_rows=$((done_rows + n))
        size=$(psql_q "$url" -At -c "select pg_database_size(current_database())")
        bpr=$(( (size - base) / done_rows ))
        (( bpr > 0 )) || bpr=1
        n=$(( (target - size) / bpr ))
        n=$(( (n / 10 + 1) * 10 ))
        (( n > 500000 )) && n=500000
        (( n < 2000 )) && n=2000
        log "  loaded $done_rows events: $((size / 1048576)) MiB"
    done
    psql_q "$url" -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
    log "  load took $(( $(date +%s) - t0 )) s"
}

# ---------------------------------------------------------------------------------------
# Measurement helpers
# ---------------------------------------------------------------------------------------
now() { date +%s.%N; }

cpu_busy_pct() { # share of all CPUs busy over one second
    local c1 c2 busy1 busy2 tot1 tot2
    read -r -a c1 </proc/stat; sleep 1; read -r -a c2 </proc/stat
    tot1=$(( c1[1]+c1[2]+c1[3]+c1[4]+c1[5]+c1[6]+c1[7]+c1[8] )); busy1=$(( tot1 - c1[4] - c1[5] ))
    tot2=$(( c2[1]+c2[2]+c2[3]+c2[4]+c2[5]+c2[6]+c2[7]+c2[8] )); busy2=$(( tot2 - c2[4] - c2[5] ))
    echo $(( (busy2 - busy1) * 100 / (tot2 - tot1 > 0 ? tot2 - tot1 : 1) ))
}

# Busy CPU ticks so far: whole machine, PostgreSQL server (postmaster + reaped backends), moto.
proc_ticks() {
    local st f
    st=$(<"/proc/$1/stat")
    read -r -a f <<<"${st##*) }"
    echo $(( f[11] + f[12] + f[13] + f[14] ))
}
cpu_snapshot() {
    local c
    read -r -a c </proc/stat
    echo "$(( c[1] + c[2] + c[3] + c[6] + c[7] + c[8] )) $(proc_ticks "$PG_PID") $(proc_ticks "$MOTO_PID")"
}
cpu_after() { # let the server reap the backend first
    sleep 0.3
    cpu_snapshot
}

# wait_idle DIR: wait (bounded) for other work on the machine to calm down; record what we saw.
wait_idle() {
    local d="$1" busy waited=0
    busy=$(cpu_busy_pct)
    while (( busy > IDLE_MAX_PCT && waited < IDLE_WAIT )); do
        (( waited == 0 )) && log "    machine is ${busy}% busy; waiting (up to ${IDLE_WAIT}s) for it to calm down"
        sleep 4
        waited=$(( waited + 5 ))
        busy=$(cpu_busy_pct)
    done
    echo "$busy" >"$d/busy"
    cat /proc/loadavg >"$d/loadavg"
}

# Samples VmHWM (peak RSS, kB) of a process and of its children until it exits, every 0.1 s,
# and the CPU ticks (user+sys) of each child as last seen (stowage's pg_dump: stowage reaps it,
# so this is the only way to split GNU time's total; it misses at most the child's last 0.1 s).
# Writes "own_kb children_max_kb children_ticks" to $2. Builtins only, and the pause is a read with a
# timeout on a FIFO nobody writes: no fork per sample, so it steals next to no CPU from
# what it measures.
sample_hwm() {
    local pid="$1" out="$2" own=0 kids=0 k v kid kids_list zombie st t ticks=0
    local -a f
    local -A kt=()
    while [[ -e "/proc/$pid/status" ]]; do
        zombie=0
        while read -r k v _; do
            case "$k" in
                State:) [[ "$v" == Z ]] && zombie=1 ;;
                VmHWM:) (( v > own )) && own=$v; break ;;
            esac
        done 2>/dev/null <"/proc/$pid/status" || true
        (( zombie )) && break
        kids_list=""
        read -r kids_list 2>/dev/null <"/proc/$pid/task/$pid/children" || true
        for kid in $kids_list; do
            while read -r k v _; do
                if [[ "$k" == "VmHWM:" ]]; then (( v > kids )) && kids=$v; break; fi
            done 2>/dev/null <"/proc/$kid/status" || true
            st=""
            read -r st 2>/dev/null <"/proc/$kid/stat" || true
            if [[ -n "$st" ]]; then
                read -r -a f <<<"${st##*) }"
                kt[$kid]=$(( f[11] + f[12] ))
            fi
        done
        read -r -t 0.1 -u "$PAUSE_FD" _ || true
    done
    for t in "${kt[@]}"; do ticks=$(( ticks + t )); done
    echo "$own $kids $ticks" >"$out"
}

write_config() { # file compression prefix url [age-recipient: adds encryption to the job]
    local enc=""
    [[ -n "${5:-}" ]] && enc="encryption = { recipients = [\"$5\"] }"
    cat >"$1" <<EOF
[log]
level = "info"

[destinations.s3]
type = "s3"
bucket = "bench"
prefix = "$3"
endpoint = "$ENDPOINT"
force_path_style = true

[jobs.bench]
schedule = "@daily"
compression = "$2"
destinations = ["s3"]
$enc

[[jobs.bench.sources]]
type = "postgres"
name = "db"
url = "$4"
EOF
}

# measure_raw DIR URL
measure_raw() {
    local d="$1" url="$2" t0 t1
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time" "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" >/dev/null
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
}

# measure_ref DIR URL: pg_dump -Fc -Z0 | zstd -3 > /dev/null — compression alone, nothing
# uploaded: what any streaming tool has to pay on top of (a) on this machine.
measure_ref() {
    local d="$1" url="$2" t0 t1
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" \
        | /usr/bin/time -v -o "$d/time-zstd" zstd -3 -T1 -q >/dev/null
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
}

# check_stored DIR PREFIX ENCRYPTED(0|1): after a stowage measurement (untimed), make sure the
# backup is what the measurement claims: with encryption, the dump object's key ends in
# .pgdump.zst.age (and no plain .pgdump.zst is there), the manifest says "encryption": "age" and
# the object starts with age's magic line (first bytes fetched with a ranged GET); without, the
# key has no .age and the manifest no encryption. Dies otherwise, so (f) can never silently
# measure a plain run (or (b) an encrypted one). Writes the key checked to DIR/object_key.
check_stored() {
    local d="$1" prefix="$2" enc="$3" comp keys key ext
    comp=$(awk -F'"' '/^compression = / {print $2; exit}' "$d/stowage.toml")
    case "$comp" in zstd) ext=".zst" ;; gzip) ext=".gz" ;; *) ext="" ;; esac
    keys=$("$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/$prefix/" --recursive | awk '{print $4}')
    if [[ "$enc" == 1 ]]; then
        key=$(grep -E "/db\.pgdump${ext//./\\.}\.age\$" <<<"$keys" | tail -1 || true)
        [[ -n "$key" ]] || { printf '%s\n' "$keys" >&2; die "(f) encrypted run stored no */db.pgdump$ext.age object under $prefix: it was not encrypted"; }
        ! grep -qE "\.pgdump${ext//./\\.}\$" <<<"$keys" \
            || { printf '%s\n' "$keys" >&2; die "(f) encrypted run also stored a plain .pgdump$ext object under $prefix"; }
        "$AWS" --endpoint-url "$ENDPOINT" s3api get-object --bucket bench --key "$key" \
            --range bytes=0-63 "$d/object_head" >/dev/null
        [[ "$(head -c 21 "$d/object_head")" == "age-encryption.org/v1" ]] \
            || die "(f) object $key does not start with age's header (age-encryption.org/v1): not an age file"
        "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m.get("encryption") != "age")' "$d/manifest.json" \
            || die "(f) manifest of $prefix does not say \"encryption\": \"age\""
    else
        key=$(grep -E "/db\.pgdump${ext//./\\.}\$" <<<"$keys" | tail -1 || true)
        [[ -n "$key" ]] || { printf '%s\n' "$keys" >&2; die "stowage run stored no */db.pgdump$ext object under $prefix"; }
        "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1])); sys.exit(m.get("encryption") is not None)' "$d/manifest.json" \
            || die "manifest of the plain run $prefix says it is encrypted"
    fi
    echo "$key" >"$d/object_key"
}

# measure_stowage DIR COMPRESSION PREFIX URL [AGE-RECIPIENT]
measure_stowage() {
    local d="$1" comp="$2" prefix="$3" url="$4" recipient="${5:-}" t0 t1 tpid spid="" rc=0
    write_config "$d/stowage.toml" "$comp" "$prefix" "$url" "$recipient"
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time" "$STOWAGE" --config "$d/stowage.toml" run bench >"$d/stowage.log" 2>&1 &
    tpid=$!
    for _ in $(seq 1 200); do
        read -r spid _ 2>/dev/null <"/proc/$tpid/task/$tpid/children" || true
        [[ -n "$spid" ]] && break
        kill -0 "$tpid" 2>/dev/null || break
        read -r -t 0.01 -u "$PAUSE_FD" _ || true
    done
    if [[ -n "$spid" ]]; then sample_hwm "$spid" "$d/hwm"; else echo "0 0" >"$d/hwm"; fi
    wait "$tpid" || rc=$?
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    if [[ "$rc" != 0 ]]; then
        cat "$d/stowage.log" >&2
        die "stowage run ($comp${recipient:+ + age}) exited with $rc"
    fi
    s3_total_bytes "$prefix" >"$d/stored"
    local mkey
    mkey=$("$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/$prefix/" --recursive | awk '/manifest\.json$/ {print $4}' | tail -1)
    "$AWS" --endpoint-url "$ENDPOINT" s3 cp "s3://bench/$mkey" "$d/manifest.json" --only-show-errors
    check_stored "$d" "$prefix" "$([[ -n "$recipient" ]] && echo 1 || echo 0)"
}

# measure_cron DIR PREFIX URL: pg_dump (plain) | gzip > file, then aws s3 sync.
measure_cron() {
    local d="$1" prefix="$2" url="$3" out t0 t1 t2
    out="$d/out"
    rm -rf "$out"; mkdir -p "$out"
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "$PG_BIN/pg_dump" -d "$url" \
        | /usr/bin/time -v -o "$d/time-gzip" gzip >"$out/benchdb-$(date +%Y%m%d-%H%M).psql.gz"
    t1=$(now)
    /usr/bin/time -v -o "$d/time-sync" "$AWS" s3 sync "$out" "s3://bench/$prefix" \
        --endpoint-url "$ENDPOINT" --only-show-errors
    t2=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1 $t2" >"$d/wall"
    rm -rf "$out"
    s3_total_bytes "$prefix" >"$d/stored"
}

# ---------------------------------------------------------------------------------------
# One size
# ---------------------------------------------------------------------------------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS_DIR"
SUMMARY_FILES=()

run_size() {
    local mib="$1" db="bench_${1}mb" url sd r
    url="postgres://postgres@127.0.0.1:$PG_PORT/$db"
    sd="$WORK/size-$mib"
    mkdir -p "$sd"
    log "== $mib MiB: generating data"
    psql_q "$PG_ADMIN" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    load_database "$mib" "$url"
    psql_q "$url" -At -c "select pg_database_size(current_database())" >"$sd/db_size"
    log "  pg_database_size = $(( $(cat "$sd/db_size") / 1048576 )) MiB"

    log "  warm-up pg_dump (not timed)"
    "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" >/dev/null

    for r in $(seq 1 "$REPEAT"); do
        local p="${mib}mb/r$r"
        mkdir -p "$sd/r$r/raw" "$sd/r$r/ref" "$sd/r$r/zstd" "$sd/r$r/cron" "$sd/r$r/gzip" "$sd/r$r/age"
        log "  [$r/$REPEAT] (a) raw pg_dump -Fc -Z0 > /dev/null"
        measure_raw "$sd/r$r/raw" "$url"
        # (b) and (f) back to back, so their ratio compares like with like; their order
        # alternates between repetitions so that neither always goes first.
        if (( r % 2 == 1 )); then
            log "  [$r/$REPEAT] (b) stowage run, zstd"
            measure_stowage "$sd/r$r/zstd" zstd "$p/stowage-zstd" "$url"
            log "  [$r/$REPEAT] (f) stowage run, zstd + age"
            measure_stowage "$sd/r$r/age" zstd "$p/stowage-zstd-age" "$url" "$AGE_RECIPIENT"
        else
            log "  [$r/$REPEAT] (f) stowage run, zstd + age"
            measure_stowage "$sd/r$r/age" zstd "$p/stowage-zstd-age" "$url" "$AGE_RECIPIENT"
            log "  [$r/$REPEAT] (b) stowage run, zstd"
            measure_stowage "$sd/r$r/zstd" zstd "$p/stowage-zstd" "$url"
        fi
        log "  [$r/$REPEAT] (c) cron script: pg_dump | gzip > file && aws s3 sync"
        measure_cron "$sd/r$r/cron" "$p/cron" "$url"
        log "  [$r/$REPEAT] (d) stowage run, gzip"
        measure_stowage "$sd/r$r/gzip" gzip "$p/stowage-gzip" "$url"
        if [[ "$HAVE_ZSTD" == 1 ]]; then
            log "  [$r/$REPEAT] (e) reference: pg_dump -Fc -Z0 | zstd -3 > /dev/null"
            measure_ref "$sd/r$r/ref" "$url"
        fi
        # moto keeps objects in memory: free them once measured.
        "$AWS" --endpoint-url "$ENDPOINT" s3 rm "s3://bench/$p/" --recursive --only-show-errors
    done

    local json="$RESULTS_DIR/$STAMP-${mib}mb.json"
    "$PY" - "$sd" "$mib" "$REPEAT" "$json" "$STOWAGE_SRC" "$HAVE_ZSTD" "$STOWAGE_ID" "$GIT_REV" <<'PY'
import json, os, platform, sys

sd, mib, repeat, out, stowage = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
have_ref = sys.argv[6] == "1"
stowage_id, git_rev = sys.argv[7], sys.argv[8]
MiB = 1024 * 1024

def read(path):
    with open(path) as f:
        return f.read().strip()

def gnu_time(path):
    t = {}
    for line in read(path).splitlines():
        k, _, v = line.strip().rpartition(": ")
        t[k] = v
    return {
        "user_s": float(t["User time (seconds)"]),
        "sys_s": float(t["System time (seconds)"]),
        "max_rss_kb": int(t["Maximum resident set size (kbytes)"]),
        "exit": int(t.get("Exit status", "0")),
    }

def load(kind, r):
    d = f"{sd}/r{r}/{kind}"
    w = [float(x) for x in read(f"{d}/wall").split()]
    m = {"loadavg_before": float(read(f"{d}/loadavg").split()[0]),
         "other_cpu_busy_pct_before": int(read(f"{d}/busy"))}
    c0 = [int(x) for x in read(f"{d}/cpu0").split()]
    c1 = [int(x) for x in read(f"{d}/cpu1").split()]
    hz = os.sysconf("SC_CLK_TCK")
    m["machine_cpu_s"], m["pg_server_cpu_s"], m["moto_cpu_s"] = ((b - a) / hz for a, b in zip(c0, c1))
    if kind == "raw":
        t = gnu_time(f"{d}/time")
        m.update(wall_s=w[1] - w[0], cpu_s=t["user_s"] + t["sys_s"],
                 peak_rss_mib=t["max_rss_kb"] / 1024, stored_bytes=None)
    elif kind in ("zstd", "gzip", "age"):
        t = gnu_time(f"{d}/time")
        hwm = [int(x) for x in read(f"{d}/hwm").split()]
        own, kids = hwm[0], hwm[1]
        man = json.loads(read(f"{d}/manifest.json"))
        m.update(wall_s=w[1] - w[0],
                 cpu_s=t["user_s"] + t["sys_s"],  # stowage + its pg_dump child
                 peak_rss_mib=own / 1024,          # stowage's own VmHWM
                 pg_dump_peak_rss_mib=kids / 1024,
                 tree_max_rss_mib=t["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")),
                 dump_bytes=sum(s["raw_size"] for s in man["sources"]))
        if len(hwm) > 2:  # the pg_dump child's ticks as last sampled (<= 0.1 s short)
            hz = os.sysconf("SC_CLK_TCK")
            m.update(pg_dump_cpu_s=hwm[2] / hz, stowage_own_cpu_s=m["cpu_s"] - hwm[2] / hz)
        m["encryption"] = man.get("encryption")
        m["object_key"] = read(f"{d}/object_key")  # checked by check_stored: .age (f) or not
    elif kind == "ref":
        td, tz = (gnu_time(f"{d}/time-{x}") for x in ("dump", "zstd"))
        m.update(wall_s=w[1] - w[0], cpu_s=sum(x["user_s"] + x["sys_s"] for x in (td, tz)),
                 peak_rss_mib=max(td["max_rss_kb"], tz["max_rss_kb"]) / 1024, stored_bytes=None)
    else:  # cron
        td, tg, ts = (gnu_time(f"{d}/time-{x}") for x in ("dump", "gzip", "sync"))
        m.update(wall_s=w[2] - w[0], dump_gzip_wall_s=w[1] - w[0], sync_wall_s=w[2] - w[1],
                 cpu_s=sum(x["user_s"] + x["sys_s"] for x in (td, tg, ts)),
                 peak_rss_mib=max(td["max_rss_kb"], tg["max_rss_kb"], ts["max_rss_kb"]) / 1024,
                 pg_dump_peak_rss_mib=td["max_rss_kb"] / 1024,
                 gzip_peak_rss_mib=tg["max_rss_kb"] / 1024,
                 aws_peak_rss_mib=ts["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")))
    return m

cpus = os.cpu_count() or 1
kinds = ["raw", "zstd", "cron", "gzip", "age"] + (["ref"] if have_ref else [])
RUNS = {}
for kind in kinds:
    RUNS[kind] = [load(kind, r) for r in range(1, repeat + 1)]
    for x in RUNS[kind]:
        mine = x["cpu_s"] + x["pg_server_cpu_s"] + x["moto_cpu_s"]
        x["other_cpu_s"] = max(0.0, x["machine_cpu_s"] - mine)
        x["clean"] = x["other_cpu_s"] <= 0.05 * cpus * (x["wall_s"] + 0.3)

def lower_median(v):
    v = sorted(v)
    return v[(len(v) - 1) // 2]

def pick_run(kind):
    """All runs of one measurement. Runs during which other work on the machine used more
    than 5% of its CPU are set aside (unless all were); of the rest the median by wall time
    is reported (the lower one for an even count)."""
    runs = RUNS[kind]
    pool = [i for i, x in enumerate(runs) if x["clean"]] or list(range(len(runs)))
    i = sorted(pool, key=lambda i: runs[i]["wall_s"])[(len(pool) - 1) // 2]
    best = dict(runs[i])
    if repeat > 1:
        best["selected_run"] = i + 1
        best["runs"] = [dict({k: round(x[k], 2) for k in ("wall_s", "cpu_s", "pg_server_cpu_s", "moto_cpu_s",
                                                          "other_cpu_s", "peak_rss_mib")}, clean=x["clean"])
                        for x in runs]
    best["max_peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.items()}

def wall_ratio(num, den, key="wall_s"):
    """Median over the repetitions of num's wall / den's wall within the same repetition
    (measured seconds apart, so under the same conditions), clean pairs only unless none is.
    With key="cpu_s" (or another figure of both): the same for that figure."""
    pairs = list(zip(RUNS[num], RUNS[den]))
    clean = [(a, b) for a, b in pairs if a["clean"] and b["clean"]] or pairs
    per_run = [a[key] / b[key] for a, b in clean]
    return round(lower_median(per_run), 3), [round(x, 3) for x in per_run]

m = {"raw_pg_dump": pick_run("raw"), "stowage_zstd": pick_run("zstd"),
     "cron_pg_dump_gzip_aws_sync": pick_run("cron"), "stowage_gzip": pick_run("gzip"),
     "stowage_zstd_age": pick_run("age")}
raw, z, cron, g, fa = (m[k] for k in ("raw_pg_dump", "stowage_zstd", "cron_pg_dump_gzip_aws_sync", "stowage_gzip",
                                      "stowage_zstd_age"))
ref = None
if have_ref:
    ref = m["reference_pg_dump_zstd3_devnull"] = pick_run("ref")
ratios, per_run_ratios = {}, {}
for name, num, den in (("stowage_wall_over_raw_pg_dump", "zstd", "raw"),
                       ("stowage_wall_over_cron", "zstd", "cron"),
                       ("stowage_gzip_wall_over_cron", "gzip", "cron")) + ((("reference_wall_over_raw_pg_dump", "ref", "raw"),) if ref else ()):
    ratios[name], per_run_ratios[name] = wall_ratio(num, den)
# (f)/(b): what encryption costs, within each repetition ((b) and (f) run back to back).
# cpu = user+sys of stowage and its pg_dump child (GNU time); own cpu = without pg_dump.
ratios["stowage_age_wall_over_stowage_zstd"], per_run_ratios["stowage_age_wall_over_stowage_zstd"] = \
    wall_ratio("age", "zstd")
ratios["stowage_age_cpu_over_stowage_zstd"], per_run_ratios["stowage_age_cpu_over_stowage_zstd"] = \
    wall_ratio("age", "zstd", "cpu_s")
if all("stowage_own_cpu_s" in x for k in ("age", "zstd") for x in RUNS[k]):
    ratios["stowage_age_own_cpu_over_stowage_zstd_own_cpu"], \
        per_run_ratios["stowage_age_own_cpu_over_stowage_zstd_own_cpu"] = wall_ratio("age", "zstd", "stowage_own_cpu_s")
ratios["stowage_peak_rss_mib"] = z["max_peak_rss_mib"]  # worst of all runs
ratios["stowage_age_peak_rss_mib"] = fa["max_peak_rss_mib"]
targets = {"stowage_wall_over_raw_pg_dump": 1.2, "stowage_wall_over_cron": 0.4, "stowage_peak_rss_mib": 64,
           "stowage_age_wall_over_stowage_zstd": 1.1, "stowage_age_cpu_over_stowage_zstd": 1.1}
db_size = int(read(f"{sd}/db_size"))
res = {
    "size_mib_requested": mib,
    "pg_database_size_bytes": db_size,
    "dump_bytes_custom_uncompressed": z["dump_bytes"],
    "repeat": repeat,
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB},
    "stowage_binary": stowage,
    "stowage_binary_id": stowage_id,
    "git_rev": git_rev,
    "measurements": m,
    "ratios": ratios,
    "per_repetition_ratios": per_run_ratios,
    "targets": targets,
    "pass": {k: ratios[k] <= v for k, v in targets.items()},
}
with open(out, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")

def mb(b):
    return "-" if b is None else f"{b / MiB:.1f}"

print()
print(f"== {mib} MiB requested: pg_database_size {db_size / MiB:.0f} MiB, "
      f"pg_dump -Fc -Z0 output {z['dump_bytes'] / MiB:.0f} MiB"
      + (f", median of the clean runs out of {repeat}" if repeat > 1 else ""))
print(f"{'':34}{'wall s':>8}{'cpu s':>7}{'pg srv':>7}{'moto':>6}{'other':>6}{'peak RSS MiB':>13}{'stored MiB':>11}{'ratio':>6}")
rows = [("(a) raw pg_dump -Fc -Z0 >/dev/null", raw), ("(b) stowage run, zstd", z),
        ("(c) cron: pg_dump|gzip; aws sync", cron), ("(d) stowage run, gzip", g)]
if ref:
    rows.append(("(e) ref: pg_dump|zstd -3 >/dev/null", ref))
rows.append(("(f) stowage run, zstd + age", fa))
for name, x in rows:
    ratio = "" if not x.get("stored_bytes") else f"{z['dump_bytes'] / x['stored_bytes']:.2f}"
    print(f"{name:34}{x['wall_s']:8.2f}{x['cpu_s']:7.2f}{x['pg_server_cpu_s']:7.2f}{x['moto_cpu_s']:6.2f}"
          f"{x['other_cpu_s']:6.1f}{x['peak_rss_mib']:13.1f}{mb(x['stored_bytes']):>11}{ratio:>6}")
print("    cpu s = the measured processes (user+sys); pg srv / moto = the servers' CPU meanwhile;"
      " other = CPU anything else used meanwhile (noise)")
print(f"    cron detail: pg_dump|gzip {cron['dump_gzip_wall_s']:.2f} s + aws s3 sync {cron['sync_wall_s']:.2f} s; "
      f"peak RSS pg_dump {cron['pg_dump_peak_rss_mib']:.1f}, gzip {cron['gzip_peak_rss_mib']:.1f}, "
      f"aws {cron['aws_peak_rss_mib']:.1f} MiB")
print(f"    stowage detail: RSS is stowage's own peak; its pg_dump child peaked at "
      f"{z['pg_dump_peak_rss_mib']:.1f} MiB (zstd) / {g['pg_dump_peak_rss_mib']:.1f} MiB (gzip); "
      f"cpu s includes that child")
if "stowage_own_cpu_s" in z and "stowage_own_cpu_s" in fa:
    print(f"    stowage cpu s split: zstd {z['stowage_own_cpu_s']:.2f} + pg_dump {z['pg_dump_cpu_s']:.2f}; "
          f"zstd+age {fa['stowage_own_cpu_s']:.2f} + pg_dump {fa['pg_dump_cpu_s']:.2f} "
          f"(pg_dump's ticks as last sampled, <= 0.1 s short)")
print(f"    (f) stored {fa['object_key'].rsplit('/', 1)[-1]} (age header and manifest \"encryption\": "
      f"\"{fa['encryption']}\" checked); (b) stored {z['object_key'].rsplit('/', 1)[-1]}")
def verdict(k):
    return "ok" if res["pass"][k] else "MISSED"
if repeat > 1:
    print("    wall ratios below: median of the per-repetition ratios (clean pairs), e.g. stowage/raw: "
          + ", ".join(f"{x:.2f}" for x in per_run_ratios["stowage_wall_over_raw_pg_dump"]))
print(f"    stowage wall / raw pg_dump wall = {ratios['stowage_wall_over_raw_pg_dump']:.2f}  (target <= 1.2: {verdict('stowage_wall_over_raw_pg_dump')})")
print(f"    stowage wall / cron wall        = {ratios['stowage_wall_over_cron']:.2f}  (target <= 0.4: {verdict('stowage_wall_over_cron')});"
      f" with gzip: {ratios['stowage_gzip_wall_over_cron']:.2f}")
print(f"    stowage peak RSS (worst run)    = {ratios['stowage_peak_rss_mib']:.1f} MiB (target <= 64: {verdict('stowage_peak_rss_mib')})")
if repeat > 1:
    print("    (f)/(b) per repetition: wall " + ", ".join(f"{x:.2f}" for x in per_run_ratios["stowage_age_wall_over_stowage_zstd"])
          + "; cpu " + ", ".join(f"{x:.2f}" for x in per_run_ratios["stowage_age_cpu_over_stowage_zstd"]))
print(f"    (f) zstd+age / (b) zstd, wall   = {ratios['stowage_age_wall_over_stowage_zstd']:.2f}  "
      f"(target <= 1.1: {verdict('stowage_age_wall_over_stowage_zstd')})")
print(f"    (f) zstd+age / (b) zstd, cpu    = {ratios['stowage_age_cpu_over_stowage_zstd']:.2f}  "
      f"(target <= 1.1: {verdict('stowage_age_cpu_over_stowage_zstd')}; user+sys, pg_dump child included)"
      + (f"; stowage's own cpu only: {ratios['stowage_age_own_cpu_over_stowage_zstd_own_cpu']:.2f}"
         if "stowage_age_own_cpu_over_stowage_zstd_own_cpu" in ratios else ""))
print(f"    (f) zstd+age peak RSS (worst run) = {ratios['stowage_age_peak_rss_mib']:.1f} MiB "
      f"(zstd: {ratios['stowage_peak_rss_mib']:.1f} MiB); stored {fa['stored_bytes'] / MiB:.1f} MiB vs {z['stored_bytes'] / MiB:.1f} MiB")
if ref:
    print(f"    reference: pg_dump | zstd -3 > /dev/null takes {ratios['reference_wall_over_raw_pg_dump']:.2f}x raw pg_dump here (no hashing, no upload)")
print(f"    results: {out}")
PY
    SUMMARY_FILES+=("$RESULTS_DIR/$STAMP-${mib}mb.json")
    psql_q "$PG_ADMIN" -c "DROP DATABASE $db"
}

log "stowage: $STOWAGE_SRC ($("$STOWAGE" --version 2>/dev/null || echo '?'); sha256 $STOWAGE_ID; tree $GIT_REV)"
for mib in "${SIZE_LIST[@]}"; do
    run_size "$mib"
done

if (( ${#SUMMARY_FILES[@]} > 1 )); then
    "$PY" - "${SUMMARY_FILES[@]}" <<'PY'
import json, sys
print()
print("== summary (stowage zstd; age wall/cpu = (f) zstd+age over (b) zstd)")
print(f"{'DB MiB':>7}{'raw s':>8}{'stowage s':>10}{'cron s':>8}{'/raw':>6}{'/cron':>7}{'RSS MiB':>9}{'stored MiB':>11}"
      f"{'+age s':>8}{'age wall':>9}{'age cpu':>8}")
for p in sys.argv[1:]:
    r = json.load(open(p))
    m = r["measurements"]
    print(f"{r['pg_database_size_bytes'] / 2**20:7.0f}{m['raw_pg_dump']['wall_s']:8.2f}{m['stowage_zstd']['wall_s']:10.2f}"
          f"{m['cron_pg_dump_gzip_aws_sync']['wall_s']:8.2f}{r['ratios']['stowage_wall_over_raw_pg_dump']:6.2f}"
          f"{r['ratios']['stowage_wall_over_cron']:7.2f}{m['stowage_zstd']['max_peak_rss_mib']:9.1f}"
          f"{m['stowage_zstd']['stored_bytes'] / 2**20:11.1f}"
          f"{m['stowage_zstd_age']['wall_s']:8.2f}{r['ratios']['stowage_age_wall_over_stowage_zstd']:9.2f}"
          f"{r['ratios']['stowage_age_cpu_over_stowage_zstd']:8.2f}")
PY
fi
