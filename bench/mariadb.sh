#!/usr/bin/env bash
# Benchmark: stowage `run` (MariaDB → S3) against a raw mariadb-dump and against the classic
# cron script (`mariadb-dump | gzip > file && aws s3 sync`), on a generated InnoDB database of
# a chosen size. Starts its own MariaDB 10.11 and moto_server on random loopback ports and
# removes everything on exit. The MariaDB counterpart of bench/run.sh (same helpers, same
# noise handling); see bench/README.md, section "MariaDB", for what is measured.
#
#   bench/mariadb.sh                              # 1024 MiB, one repetition
#   bench/mariadb.sh --size-mb 1024 --repeat 3
#   bench/mariadb.sh --size-mb 128 --repeat 1 --no-build --keep-work
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

SIZE_MB=1024
REPEAT=1
BUILD=1
KEEP_WORK=0
IDLE_WAIT=300
IDLE_MAX_PCT=15
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
TOOLS="${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}"
VENV="$TOOLS/venv"

usage() {
    cat <<EOF
usage: bench/mariadb.sh [options]
  --size-mb N        database size in MiB: the InnoDB files of the database on disk (default 1024)
  --repeat N         run every measurement N times; report the median (by wall time) of the runs
                     during which other work used under 5% of the CPU (default 1)
  --stowage PATH     stowage binary to test (default: build and use target/release/stowage)
  --no-build         do not run cargo build --release (uses the existing binary)
  --results-dir DIR  where the JSON results go (default bench/results)
  --idle-wait SECS   before each measurement wait up to SECS (default 300, 0 = never) for the machine's
                     CPU use to drop under 15% (other work on a shared box skews the figures)
  --keep-work        keep the temp dir (logs, configs, GNU time outputs) instead of removing it
env: STOWAGE_MARIADB_BIN (directory of mariadbd, mariadb-install-db, mariadb, mariadb-dump;
     default PATH, /usr/sbin, /usr/bin), STOWAGE_TOOLS (venv for moto/awscli), CARGO_TARGET_DIR
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --size-mb) SIZE_MB="$2"; shift 2 ;;
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
[[ "$SIZE_MB" =~ ^[0-9]+$ && "$SIZE_MB" -ge 16 ]] || { echo "invalid --size-mb: $SIZE_MB (MiB, at least 16)" >&2; exit 2; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --repeat: $REPEAT" >&2; exit 2; }
[[ "$IDLE_WAIT" =~ ^[0-9]+$ ]] || { echo "invalid --idle-wait: $IDLE_WAIT" >&2; exit 2; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------
mariadb_tool() { # name → path (STOWAGE_MARIADB_BIN, PATH, /usr/sbin, /usr/bin), like tests/common/mariadb.rs
    local d
    if [[ -n "${STOWAGE_MARIADB_BIN:-}" ]]; then echo "$STOWAGE_MARIADB_BIN/$1"; return; fi
    if command -v "$1" >/dev/null 2>&1; then command -v "$1"; return; fi
    for d in /usr/sbin /usr/bin; do
        [[ -x "$d/$1" ]] && { echo "$d/$1"; return; }
    done
    echo "$1"
}
MARIADBD="$(mariadb_tool mariadbd)"
INSTALL_DB="$(mariadb_tool mariadb-install-db)"
CLIENT="$(mariadb_tool mariadb)"
DUMP="$(mariadb_tool mariadb-dump)"
for t in "$MARIADBD" "$INSTALL_DB" "$CLIENT" "$DUMP"; do
    [[ -x "$t" ]] || die "$t not found (apt-get install --no-install-recommends mariadb-server mariadb-client, or set STOWAGE_MARIADB_BIN)"
done
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
fi
HAVE_ZSTD=0
command -v zstd >/dev/null 2>&1 && HAVE_ZSTD=1

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
    "$VENV/bin/pip" install -q 'moto[server]==5.1.18' awscli >&2
fi
PY="$VENV/bin/python"
AWS="$VENV/bin/aws"

if [[ -z "$STOWAGE" ]]; then
    STOWAGE="${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage"
fi
if [[ "$BUILD" == 1 ]]; then
    log "cargo build --release --locked (waits if another build holds the lock)"
    (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build --release failed"
fi
[[ -x "$STOWAGE" ]] || die "stowage binary not found at $STOWAGE (build it or pass --stowage)"

# ---------------------------------------------------------------------------------------
# Temp dir and servers (random ports; stopped and removed on exit)
# ---------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench-mariadb.XXXXXX")"
chmod 700 "$WORK"
mkfifo "$WORK/pause"            # `read -t` on it is a sleep that does not fork
exec {PAUSE_FD}<>"$WORK/pause"
MDB="$WORK/mariadb"             # data dir, socket, pid file, log, tmpdir: all of this server's own
MOTO_PID=""
MDB_PID=""

cleanup() {
    local rc=$?
    set +e
    if [[ -n "$MDB_PID" ]]; then
        kill -TERM "$MDB_PID" 2>/dev/null
        for _ in $(seq 1 300); do
            kill -0 "$MDB_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$MDB_PID" 2>/dev/null
        wait "$MDB_PID" 2>/dev/null
    fi
    if [[ -n "$MOTO_PID" ]]; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
    if [[ "$KEEP_WORK" == 1 ]]; then
        rm -rf "$MDB/data" "$MDB/tmp"
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

# Everything stays on loopback; S3 credentials are dummies (moto does not check them).
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
# stowage runs mariadb-dump from PATH: make it the one measured here.
export PATH="$(dirname "$DUMP"):$PATH"
unset MYSQL_PWD MYSQL_HOST MYSQL_TCP_PORT

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Server settings: the buffer pool holds the whole database (so every measurement reads from
# memory, like run.sh's page cache), a redo log big enough that loading is not a checkpoint
# storm; durability otherwise default (innodb_flush_log_at_trx_commit=1, O_DIRECT).
BUFFER_POOL_MB=$(( SIZE_MB * 5 / 4 + 256 ))
mkdir -p "$MDB/tmp"
log "mariadb-install-db ($("$MARIADBD" --version | awk '{print $3}'))"
"$INSTALL_DB" --no-defaults --user=root --datadir="$MDB/data" --auth-root-authentication-method=normal \
    --skip-test-db --tmpdir="$MDB/tmp" >"$WORK/install-db.log" 2>&1 </dev/null \
    || { cat "$WORK/install-db.log" >&2; die "mariadb-install-db failed"; }

MDB_PORT=""
for attempt in 1 2 3 4 5; do
    port="$(free_port)"
    log "starting mariadbd on 127.0.0.1:$port (buffer pool ${BUFFER_POOL_MB} MiB)"
    # --tmpdir: each server its own; a starting server deletes the temporary tables it finds
    # in its tmpdir, which in a shared /tmp would be another server's.
    "$MARIADBD" --no-defaults --user=root --datadir="$MDB/data" --port="$port" --bind-address=127.0.0.1 \
        --socket="$MDB/sock" --pid-file="$MDB/mariadbd.pid" --tmpdir="$MDB/tmp" \
        --innodb-buffer-pool-size="${BUFFER_POOL_MB}M" --innodb-log-file-size=512M \
        --skip-log-bin --max-allowed-packet=64M \
        >"$MDB/mariadbd.log" 2>&1 </dev/null &
    MDB_PID=$!
    for _ in $(seq 1 300); do
        if "$CLIENT" --no-defaults --protocol=TCP --host=127.0.0.1 --port="$port" --user=root \
            -e 'select 1' >/dev/null 2>&1; then
            MDB_PORT="$port"
            break
        fi
        kill -0 "$MDB_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$MDB_PORT" ]] && break
    log "  mariadbd did not come up on $port (attempt $attempt):"
    tail -5 "$MDB/mariadbd.log" >&2
    kill -KILL "$MDB_PID" 2>/dev/null; wait "$MDB_PID" 2>/dev/null || true
    MDB_PID=""
done
[[ -n "$MDB_PORT" ]] || die "mariadbd did not start"

mysql_root() { # db, client args... (SQL on stdin or -e)
    local db="$1"; shift
    "$CLIENT" --no-defaults --protocol=TCP --host=127.0.0.1 --port="$MDB_PORT" --user=root \
        --batch --skip-column-names --default-character-set=utf8mb4 "$@" "$db"
}

# The backup user, with a password: stowage gets it through `password_file`, the raw and cron
# dumps through an option file (the usual ~/.my.cnf of a cron script). Same flags as the engine
# (src/source/mariadb/mod.rs: Connection::new + DUMP_ARGS), so all three dump the same way.
BENCH_PW="$(head -c 18 /dev/urandom | base64 | tr '+/' 'xy')"
printf '%s\n' "$BENCH_PW" >"$WORK/bench.password"
printf '[client]\npassword="%s"\n' "$BENCH_PW" >"$WORK/client.cnf"
chmod 600 "$WORK/bench.password" "$WORK/client.cnf"
mysql_root mysql <<SQL
CREATE DATABASE bench DEFAULT CHARACTER SET utf8mb4;
CREATE USER 'bench'@'127.0.0.1' IDENTIFIED BY '$BENCH_PW';
GRANT SELECT, SHOW VIEW, TRIGGER, LOCK TABLES, EVENT, EXECUTE ON *.* TO 'bench'@'127.0.0.1';
SQL
DB_URL="mysql://bench@127.0.0.1:$MDB_PORT/bench"
DUMP_CMD=("$DUMP" "--defaults-extra-file=$WORK/client.cnf" --protocol=TCP --host=127.0.0.1 "--port=$MDB_PORT"
          --user=bench --single-transaction --routines --triggers --events --hex-blob
          --default-character-set=utf8mb4 --no-tablespaces bench)

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
# Data: realistic random rows (varchar, text, decimal, datetime, blob), ~3x compressible.
# Generated inside the server (Sequence engine + RAND()): no client round trips.
# ---------------------------------------------------------------------------------------
WORDS="account,active,address,after,agent,alpha,amount,apple,archive,backup,balance,basket,batch,before,billing,blue,branch,bucket,cache,card,cart,change,check,client,cloud,code,column,commit,config,coupon,credit,customer,daily,data,debit,delivery,device,discount,domain,draft,email,error,event,export,failed,field,file,filter,first,green,group,guest,handle,header,import,index,invoice,item,label,last,ledger,limit,login,logout,manager,member,merge,message,method,mobile,monthly,network,notice,order,owner,package,page,paid,partner,payment,pending,period,phone,plan,price,product,profile,queue,quota,record,refund,region,report,request,retry,review,route,sale,search,session,shipping,signup,status,stock,store,stream,subscription,summary,support,system,table,task,ticket,token,total,trial,update,upgrade,user,value,vendor,version,view,visit,wallet,warehouse,weekly,yellow"
pick() { # comma-separated values (no quotes or commas inside) → SQL picking one at random per row
    local IFS=','
    local -a a
    read -r -a a <<<"$1"
    echo "ELT(1+FLOOR(RAND()*${#a[@]}),'${1//,/\',\'}')"
}
W="$(pick "$WORDS")"
NOTES="CONCAT_WS(' ',$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W,$W)"

schema_sql() {
    cat <<'SQL'
CREATE TABLE customers (
  id bigint NOT NULL PRIMARY KEY,
  name varchar(100) NOT NULL,
  email varchar(120) NOT NULL,
  country char(2) NOT NULL,
  created_at datetime NOT NULL,
  balance decimal(12,2) NOT NULL,
  plan varchar(16) NOT NULL,
  phone varchar(20),
  address varchar(200),
  newsletter tinyint(1) NOT NULL,
  api_key char(64) NOT NULL,
  avatar blob
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE events (
  id bigint NOT NULL PRIMARY KEY,
  customer_id bigint NOT NULL,
  occurred_at datetime(3) NOT NULL,
  kind varchar(20) NOT NULL,
  amount decimal(12,2),
  session_id char(32) NOT NULL,
  ip varchar(15) NOT NULL,
  user_agent varchar(255) NOT NULL,
  path varchar(255) NOT NULL,
  status smallint NOT NULL,
  latency_ms decimal(8,1) NOT NULL,
  payload text NOT NULL,
  note text,
  KEY events_customer (customer_id, occurred_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE attachments (
  id bigint NOT NULL PRIMARY KEY,
  event_id bigint NOT NULL,
  filename varchar(255) NOT NULL,
  mime varchar(64) NOT NULL,
  sha1 binary(20) NOT NULL,
  uploaded_at datetime NOT NULL,
  body mediumblob NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE VIEW daily_revenue AS
  SELECT DATE(occurred_at) AS day, SUM(amount) AS revenue, COUNT(*) AS purchases
  FROM events WHERE kind = 'purchase' GROUP BY DATE(occurred_at);
CREATE TRIGGER customers_email_lower BEFORE INSERT ON customers
  FOR EACH ROW SET NEW.email = LOWER(NEW.email);
CREATE PROCEDURE customer_events(IN cid bigint)
  SELECT * FROM events WHERE customer_id = cid ORDER BY occurred_at;
SQL
}

# batch_sql FIRST N: events FIRST..FIRST+N-1, one customer per 10 events, one attachment per
# 25 (half text, half random bytes — images, PDFs — which --hex-blob dumps as hex).
batch_sql() {
    local a=$1 b=$(( $1 + $2 - 1 ))
    cat <<SQL
BEGIN;
INSERT INTO events
SELECT seq,
  1 + FLOOR(RAND()*999999),
  TIMESTAMP'2022-01-01 00:00:00' + INTERVAL seq*9 SECOND + INTERVAL FLOOR(RAND()*9000000) MICROSECOND,
  $(pick page_view,page_view,page_view,click,click,login,logout,purchase,refund,signup,search,add_to_cart,checkout,error,api_call),
  IF(RAND() < 0.4, ROUND(RAND()*2000, 2), NULL),
  MD5(RAND()),
  CONCAT('10.', FLOOR(RAND()*256), '.', FLOOR(RAND()*256), '.', FLOOR(RAND()*256)),
  $(pick "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML like Gecko) Chrome/120.0.0.0 Safari/537.36,Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0,Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148 Safari/604.1,curl/8.4.0,okhttp/4.12.0,python-requests/2.31.0"),
  CONCAT('/api/v2/', $W, '/', FLOOR(RAND()*100000), IF(RAND() < 0.3, CONCAT('?q=', $W, '&page=', FLOOR(RAND()*20)), '')),
  ELT(1+FLOOR(RAND()*10), 200,200,200,200,201,204,301,400,404,500),
  ROUND(RAND()*RAND()*900, 1),
  CONCAT('{"trace":"', LEFT(MD5(RAND()), 16), '","tags":["', $W, '","', $W, '"],"ref":"', $W, '","v":', FLOOR(RAND()*10), '}'),
  IF(RAND() < 0.6, SUBSTRING_INDEX($NOTES, ' ', 4 + seq % 13), NULL)
FROM seq_${a}_to_${b};
INSERT INTO customers
SELECT seq,
  CONCAT($(pick Anna,Ben,Carla,David,Emma,Felix,Grace,Hugo,Ines,Jonas,Kate,Liam,Mia,Noah,Olga,Paul,Rosa,Sam,Tara,Victor), ' ',
         $(pick Smith,Muller,Martin,Rossi,Garcia,Kowalski,Jansen,Silva,Novak,Berg,Tanaka,Kumar,Dubois,Weber,Lopez,Moreau), ' ',
         LEFT(MD5(RAND()), 4)),
  CONCAT(LEFT(MD5(RAND()), 10), '@', $W, '.example'),
  $(pick US,DE,FR,GB,NL,ES,IT,PL,SE,JP,BR,IN),
  TIMESTAMP'2018-01-01 00:00:00' + INTERVAL FLOOR(RAND()*2000*86400) SECOND,
  ROUND(RAND()*50000 - 10000, 2),
  $(pick free,free,basic,pro,enterprise),
  CONCAT('+', 1000000000 + FLOOR(RAND()*8999999999)),
  CONCAT(FLOOR(RAND()*999), ' ', $W, ' St, ', LPAD(FLOOR(RAND()*99999), 5, '0')),
  RAND() < 0.3,
  CONCAT(MD5(RAND()), MD5(RAND())),
  IF(RAND() < 0.5, RANDOM_BYTES(64 + FLOOR(RAND()*192)), NULL)
FROM seq_$(( (a + 9) / 10 ))_to_$(( b / 10 ));
INSERT INTO attachments
SELECT seq,
  seq * 25 - FLOOR(RAND()*25),
  CONCAT($W, '-', $W, '-', FLOOR(RAND()*10000), '.', @ext := $(pick txt,json,csv,png,jpg,pdf)),
  CASE @ext WHEN 'txt' THEN 'text/plain' WHEN 'json' THEN 'application/json' WHEN 'csv' THEN 'text/csv'
            WHEN 'png' THEN 'image/png' WHEN 'jpg' THEN 'image/jpeg' ELSE 'application/pdf' END,
  UNHEX(SHA1(RAND())),
  TIMESTAMP'2022-01-01 00:00:00' + INTERVAL seq*225 SECOND,
  IF(@ext IN ('txt','json','csv'), CONCAT_WS('\n', $NOTES, $NOTES, $NOTES, $NOTES, $NOTES, $NOTES, $NOTES, $NOTES),
     RANDOM_BYTES(200 + FLOOR(RAND()*800)))
FROM seq_$(( (a + 24) / 25 ))_to_$(( b / 25 ));
COMMIT;
SQL
}

db_bytes() { # the database's files on disk (.ibd, .frm, …): what --size-mb is about
    du -sb "$MDB/data/bench" | cut -f1
}

run_sql() { # db, SQL on stdin; on failure print only the error (the generated SQL is huge)
    local err
    if ! err=$(mysql_root "$1" 2>&1 >/dev/null); then
        die "SQL failed: ${err:0:1000}"
    fi
}

load_database() { # size_mib
    local target=$(( $1 * 1024 * 1024 )) size base done_rows=0 n bpr t0
    t0=$(date +%s)
    schema_sql | run_sql bench
    base=$(db_bytes)
    size=$base
    # first batch: ~700 bytes on disk per event (customers and attachments included), at most
    # 100k events; later batches from the measured growth
    n=$(( target / 2 / 700 / 25 * 25 ))
    (( n > 100000 )) && n=100000
    (( n < 2500 )) && n=2500
    while (( size < target )); do
        batch_sql $((done_rows + 1)) "$n" | run_sql bench
        done_rows=$((done_rows + n))
        size=$(db_bytes)
        bpr=$(( (size - base) / done_rows ))
        (( bpr > 0 )) || bpr=1
        n=$(( (target - size) / bpr ))
        n=$(( (n / 25 + 1) * 25 ))
        (( n > 300000 )) && n=300000
        (( n < 2500 )) && n=2500
        log "  loaded $done_rows events: $((size / 1048576)) MiB"
    done
    echo "ANALYZE TABLE customers, events, attachments" | run_sql bench
    # Write the dirty pages out now, so InnoDB's page cleaner does not run during the measurements.
    # (innodb_io_capacity's default of 200 pages/s would take minutes for 1 GiB; the defaults
    # are back for the measurements.)
    local defaults dirty
    defaults=$(echo "SELECT @@innodb_io_capacity_max, @@innodb_io_capacity, @@innodb_max_dirty_pages_pct, @@innodb_max_dirty_pages_pct_lwm" | mysql_root mysql)
    echo "SET GLOBAL innodb_io_capacity_max = 100000; SET GLOBAL innodb_io_capacity = 50000;
          SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001; SET GLOBAL innodb_max_dirty_pages_pct = 0" | run_sql mysql
    for _ in $(seq 1 300); do
        dirty=$(echo "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'" | mysql_root mysql | awk '{print $2}')
        (( dirty < 100 )) && break
        sleep 1
    done
    read -r -a defaults <<<"$defaults"
    echo "SET GLOBAL innodb_io_capacity = ${defaults[1]}; SET GLOBAL innodb_io_capacity_max = ${defaults[0]};
          SET GLOBAL innodb_max_dirty_pages_pct = ${defaults[2]}; SET GLOBAL innodb_max_dirty_pages_pct_lwm = ${defaults[3]}" | run_sql mysql
    log "  load took $(( $(date +%s) - t0 )) s ($dirty dirty pages left)"
}

# ---------------------------------------------------------------------------------------
# Measurement helpers (as in bench/run.sh)
# ---------------------------------------------------------------------------------------
now() { date +%s.%N; }

cpu_busy_pct() { # share of all CPUs busy over one second
    local c1 c2 busy1 busy2 tot1 tot2
    read -r -a c1 </proc/stat; sleep 1; read -r -a c2 </proc/stat
    tot1=$(( c1[1]+c1[2]+c1[3]+c1[4]+c1[5]+c1[6]+c1[7]+c1[8] )); busy1=$(( tot1 - c1[4] - c1[5] ))
    tot2=$(( c2[1]+c2[2]+c2[3]+c2[4]+c2[5]+c2[6]+c2[7]+c2[8] )); busy2=$(( tot2 - c2[4] - c2[5] ))
    echo $(( (busy2 - busy1) * 100 / (tot2 - tot1 > 0 ? tot2 - tot1 : 1) ))
}

# Busy CPU ticks of a process so far (all its threads, plus reaped children).
proc_ticks() {
    local st f
    st=$(<"/proc/$1/stat")
    read -r -a f <<<"${st##*) }"
    echo $(( f[11] + f[12] + f[13] + f[14] ))
}
# whole machine, mariadbd (one process: every connection is a thread), moto
cpu_snapshot() {
    local c
    read -r -a c </proc/stat
    echo "$(( c[1] + c[2] + c[3] + c[6] + c[7] + c[8] )) $(proc_ticks "$MDB_PID") $(proc_ticks "$MOTO_PID")"
}
cpu_after() { # let the server finish the connection first
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
    echo "$waited" >"$d/waited"
    cat /proc/loadavg >"$d/loadavg"
}

# Samples VmHWM (peak RSS, kB) of a process and of its children until it exits, every 0.1 s,
# and the CPU ticks of each child as last seen (its mariadb-dump: stowage reaps it, so this is
# the only way to split GNU time's total between stowage and the dump tool; it misses at most
# the child's last 0.1 s). Writes "own_kb children_max_kb children_ticks" to $2, and each
# thread's CPU ticks as last seen ("tid name ticks" lines) to $2.threads: is one thread the
# bottleneck? Builtins only, and the pause is a read with a timeout on a FIFO nobody writes:
# no fork per sample.
sample_hwm() {
    local pid="$1" out="$2" own=0 kids=0 k v kid kids_list zombie st t ticks=0 task tid
    local -a f
    local -A kt=() tt=() tn=()
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
        for task in /proc/"$pid"/task/*; do
            st=""
            read -r st 2>/dev/null <"$task/stat" || true
            [[ -n "$st" ]] || continue
            tid=${task##*/}
            read -r -a f <<<"${st##*) }"
            tt[$tid]=$(( f[11] + f[12] ))
            t=${st#*(}
            t=${t%)*}
            tn[$tid]=${t// /_}
        done
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
    : >"$out.threads"
    for tid in "${!tt[@]}"; do echo "$tid ${tn[$tid]} ${tt[$tid]}" >>"$out.threads"; done
}

write_config() { # file compression prefix
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

[[jobs.bench.sources]]
type = "mariadb"
name = "db"
url = "$DB_URL"
password_file = "$WORK/bench.password"
EOF
}

# measure_raw DIR: mariadb-dump > /dev/null — the floor: reading the database out.
measure_raw() {
    local d="$1" t0 t1
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time" "${DUMP_CMD[@]}" >/dev/null
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
}

# measure_ref DIR: mariadb-dump | zstd -3 > /dev/null — compression alone, nothing uploaded.
measure_ref() {
    local d="$1" t0 t1
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "${DUMP_CMD[@]}" \
        | /usr/bin/time -v -o "$d/time-zstd" zstd -3 -T1 -q >/dev/null
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
}

# measure_stowage DIR COMPRESSION PREFIX
measure_stowage() {
    local d="$1" comp="$2" prefix="$3" t0 t1 tpid spid="" rc=0
    write_config "$d/stowage.toml" "$comp" "$prefix"
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
    if [[ -n "$spid" ]]; then sample_hwm "$spid" "$d/hwm"; else echo "0 0 0" >"$d/hwm"; fi
    wait "$tpid" || rc=$?
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    if [[ "$rc" != 0 ]]; then
        cat "$d/stowage.log" >&2
        die "stowage run ($comp) exited with $rc"
    fi
    s3_total_bytes "$prefix" >"$d/stored"
    local mkey
    mkey=$("$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/$prefix/" --recursive | awk '/manifest\.json$/ {print $4}' | tail -1)
    "$AWS" --endpoint-url "$ENDPOINT" s3 cp "s3://bench/$mkey" "$d/manifest.json" --only-show-errors
}

# measure_cron DIR PREFIX: mariadb-dump | gzip > file, then aws s3 sync.
measure_cron() {
    local d="$1" prefix="$2" out t0 t1 t2
    out="$d/out"
    rm -rf "$out"; mkdir -p "$out"
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "${DUMP_CMD[@]}" \
        | /usr/bin/time -v -o "$d/time-gzip" gzip >"$out/bench-$(date +%Y%m%d-%H%M).sql.gz"
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
# The run
# ---------------------------------------------------------------------------------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS_DIR"
SD="$WORK/results"
mkdir -p "$SD"
log "stowage: $STOWAGE_SRC ($("$STOWAGE" --version 2>/dev/null || echo '?'); sha256 $STOWAGE_ID; tree $GIT_REV)"

log "== $SIZE_MB MiB: generating data"
load_database "$SIZE_MB"
db_bytes >"$SD/db_size"
echo "SELECT SUM(data_length + index_length), SUM(table_rows) FROM information_schema.tables WHERE table_schema = 'bench' AND table_type = 'BASE TABLE'" \
    | mysql_root mysql >"$SD/db_stats"
log "  database files: $(( $(cat "$SD/db_size") / 1048576 )) MiB on disk (data+index per information_schema: $(( $(cut -f1 "$SD/db_stats") / 1048576 )) MiB)"
"$MARIADBD" --version >"$SD/server_version"
"$DUMP" --version >"$SD/dump_version"

log "  warm-up mariadb-dump (not timed)"
"${DUMP_CMD[@]}" | wc -c >"$SD/dump_bytes_warmup"
log "  dump: $(( $(cat "$SD/dump_bytes_warmup") / 1048576 )) MiB of SQL"

for r in $(seq 1 "$REPEAT"); do
    p="${SIZE_MB}mb/r$r"
    mkdir -p "$SD/r$r/raw" "$SD/r$r/zstd" "$SD/r$r/cron" "$SD/r$r/ref"
    log "  [$r/$REPEAT] (a) raw mariadb-dump > /dev/null"
    measure_raw "$SD/r$r/raw"
    log "  [$r/$REPEAT] (b) stowage run, zstd"
    measure_stowage "$SD/r$r/zstd" zstd "$p/stowage-zstd"
    log "  [$r/$REPEAT] (c) cron script: mariadb-dump | gzip > file && aws s3 sync"
    measure_cron "$SD/r$r/cron" "$p/cron"
    if [[ "$HAVE_ZSTD" == 1 ]]; then
        log "  [$r/$REPEAT] (d) reference: mariadb-dump | zstd -3 > /dev/null"
        measure_ref "$SD/r$r/ref"
    fi
    # moto keeps objects in memory: free them once measured.
    "$AWS" --endpoint-url "$ENDPOINT" s3 rm "s3://bench/$p/" --recursive --only-show-errors
done

JSON="$RESULTS_DIR/$STAMP-mariadb-${SIZE_MB}mb.json"
"$PY" - "$SD" "$SIZE_MB" "$REPEAT" "$JSON" "$STOWAGE_SRC" "$HAVE_ZSTD" "$STOWAGE_ID" "$GIT_REV" "$BUFFER_POOL_MB" <<'PY'
import json, os, platform, sys

sd, mib, repeat, out, stowage = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
have_ref = sys.argv[6] == "1"
stowage_id, git_rev, buffer_pool_mb = sys.argv[7], sys.argv[8], int(sys.argv[9])
MiB = 1024 * 1024
hz = os.sysconf("SC_CLK_TCK")

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
         "other_cpu_busy_pct_before": int(read(f"{d}/busy")),
         "idle_waited_s": int(read(f"{d}/waited"))}
    c0 = [int(x) for x in read(f"{d}/cpu0").split()]
    c1 = [int(x) for x in read(f"{d}/cpu1").split()]
    m["machine_cpu_s"], m["server_cpu_s"], m["moto_cpu_s"] = ((b - a) / hz for a, b in zip(c0, c1))
    if kind == "raw":
        t = gnu_time(f"{d}/time")
        assert t["exit"] == 0, f"{d}: mariadb-dump exited {t['exit']}"
        m.update(wall_s=w[1] - w[0], cpu_s=t["user_s"] + t["sys_s"],
                 peak_rss_mib=t["max_rss_kb"] / 1024, stored_bytes=None)
    elif kind == "zstd":
        t = gnu_time(f"{d}/time")
        own, kids, kid_ticks = (int(x) for x in read(f"{d}/hwm").split())
        man = json.loads(read(f"{d}/manifest.json"))
        cpu = t["user_s"] + t["sys_s"]
        m.update(wall_s=w[1] - w[0],
                 cpu_s=cpu,                          # stowage + its mariadb-dump child
                 dump_tool_cpu_s=kid_ticks / hz,     # of it, mariadb-dump (last sample, <= 0.1 s short)
                 stowage_own_cpu_s=cpu - kid_ticks / hz,
                 peak_rss_mib=own / 1024,            # stowage's own VmHWM
                 dump_tool_peak_rss_mib=kids / 1024,
                 threads_cpu_s=sorted(([l.split()[1], int(l.split()[2]) / hz] for l in read(f"{d}/hwm.threads").splitlines()
                                       if int(l.split()[2]) > 0), key=lambda x: -x[1]),
                 tree_max_rss_mib=t["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")),
                 dump_bytes=sum(s["raw_size"] for s in man["sources"]),
                 object_bytes=sum(s["size"] for s in man["sources"]),
                 tools=man.get("tools"))
    elif kind == "ref":
        td, tz = (gnu_time(f"{d}/time-{x}") for x in ("dump", "zstd"))
        m.update(wall_s=w[1] - w[0], cpu_s=sum(x["user_s"] + x["sys_s"] for x in (td, tz)),
                 dump_tool_cpu_s=td["user_s"] + td["sys_s"], zstd_cpu_s=tz["user_s"] + tz["sys_s"],
                 peak_rss_mib=max(td["max_rss_kb"], tz["max_rss_kb"]) / 1024, stored_bytes=None)
    else:  # cron
        td, tg, ts = (gnu_time(f"{d}/time-{x}") for x in ("dump", "gzip", "sync"))
        m.update(wall_s=w[2] - w[0], dump_gzip_wall_s=w[1] - w[0], sync_wall_s=w[2] - w[1],
                 cpu_s=sum(x["user_s"] + x["sys_s"] for x in (td, tg, ts)),
                 dump_tool_cpu_s=td["user_s"] + td["sys_s"], gzip_cpu_s=tg["user_s"] + tg["sys_s"],
                 aws_cpu_s=ts["user_s"] + ts["sys_s"],
                 peak_rss_mib=max(td["max_rss_kb"], tg["max_rss_kb"], ts["max_rss_kb"]) / 1024,
                 dump_tool_peak_rss_mib=td["max_rss_kb"] / 1024,
                 gzip_peak_rss_mib=tg["max_rss_kb"] / 1024,
                 aws_peak_rss_mib=ts["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")))
    return m

cpus = os.cpu_count() or 1
kinds = ["raw", "zstd", "cron"] + (["ref"] if have_ref else [])
RUNS = {}
for kind in kinds:
    RUNS[kind] = [load(kind, r) for r in range(1, repeat + 1)]
    for x in RUNS[kind]:
        mine = x["cpu_s"] + x["server_cpu_s"] + x["moto_cpu_s"]
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
        best["runs"] = [dict({k: round(x[k], 2) for k in ("wall_s", "cpu_s", "server_cpu_s", "moto_cpu_s",
                                                          "other_cpu_s", "peak_rss_mib")}, clean=x["clean"])
                        for x in runs]
    best["clean_runs"] = sum(1 for x in runs if x["clean"])
    best["max_peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.items()}

def wall_ratio(num, den):
    """Median over the repetitions of num's wall / den's wall within the same repetition
    (measured seconds apart, so under the same conditions), clean pairs only unless none is."""
    pairs = list(zip(RUNS[num], RUNS[den]))
    clean = [(a, b) for a, b in pairs if a["clean"] and b["clean"]] or pairs
    per_run = [a["wall_s"] / b["wall_s"] for a, b in clean]
    return round(lower_median(per_run), 3), [round(x, 3) for x in per_run]

m = {"raw_mariadb_dump": pick_run("raw"), "stowage_zstd": pick_run("zstd"),
     "cron_mariadb_dump_gzip_aws_sync": pick_run("cron")}
raw, z, cron = (m[k] for k in ("raw_mariadb_dump", "stowage_zstd", "cron_mariadb_dump_gzip_aws_sync"))
ref = None
if have_ref:
    ref = m["reference_mariadb_dump_zstd3_devnull"] = pick_run("ref")
ratios, per_run_ratios = {}, {}
for name, num, den in (("stowage_wall_over_raw_dump", "zstd", "raw"),
                       ("stowage_wall_over_cron", "zstd", "cron")) + ((("reference_wall_over_raw_dump", "ref", "raw"),) if ref else ()):
    ratios[name], per_run_ratios[name] = wall_ratio(num, den)
ratios["stowage_peak_rss_mib"] = z["max_peak_rss_mib"]  # worst of all runs
targets = {"stowage_wall_over_cron": 0.4, "stowage_peak_rss_mib": 64}
db_size = int(read(f"{sd}/db_size"))
stats = read(f"{sd}/db_stats").split()
res = {
    "engine": "mariadb",
    "size_mib_requested": mib,
    "database_files_bytes": db_size,
    "information_schema_data_index_bytes": int(stats[0]),
    "information_schema_rows_estimate": int(stats[1]),
    "dump_bytes_sql": z["dump_bytes"],
    "repeat": repeat,
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB},
    "server": read(f"{sd}/server_version"),
    "dump_tool": read(f"{sd}/dump_version"),
    "innodb_buffer_pool_mib": buffer_pool_mb,
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
print(f"== MariaDB, {mib} MiB requested: database files {db_size / MiB:.0f} MiB, "
      f"mariadb-dump output {z['dump_bytes'] / MiB:.0f} MiB"
      + (f", median of the clean runs out of {repeat}" if repeat > 1 else ""))
print(f"{'':36}{'wall s':>8}{'cpu s':>7}{'server':>7}{'moto':>6}{'other':>6}{'peak RSS MiB':>13}{'stored MiB':>11}{'ratio':>6}")
rows = [("(a) raw mariadb-dump >/dev/null", raw), ("(b) stowage run, zstd", z),
        ("(c) cron: dump|gzip; aws s3 sync", cron)]
if ref:
    rows.append(("(d) ref: dump|zstd -3 >/dev/null", ref))
for name, x in rows:
    ratio = "" if not x.get("stored_bytes") else f"{z['dump_bytes'] / x['stored_bytes']:.2f}"
    print(f"{name:36}{x['wall_s']:8.2f}{x['cpu_s']:7.2f}{x['server_cpu_s']:7.2f}{x['moto_cpu_s']:6.2f}"
          f"{x['other_cpu_s']:6.1f}{x['peak_rss_mib']:13.1f}{mb(x['stored_bytes']):>11}{ratio:>6}")
print("    cpu s = the measured processes (user+sys); server / moto = mariadbd's and moto's CPU meanwhile;"
      " other = CPU anything else used meanwhile (noise)")
print(f"    cron detail: mariadb-dump|gzip {cron['dump_gzip_wall_s']:.2f} s + aws s3 sync {cron['sync_wall_s']:.2f} s; "
      f"cpu mariadb-dump {cron['dump_tool_cpu_s']:.2f}, gzip {cron['gzip_cpu_s']:.2f}, aws {cron['aws_cpu_s']:.2f} s; "
      f"peak RSS mariadb-dump {cron['dump_tool_peak_rss_mib']:.1f}, gzip {cron['gzip_peak_rss_mib']:.1f}, "
      f"aws {cron['aws_peak_rss_mib']:.1f} MiB")
print(f"    stowage detail: cpu s = stowage {z['stowage_own_cpu_s']:.2f} + its mariadb-dump child {z['dump_tool_cpu_s']:.2f}; "
      f"RSS is stowage's own peak; the child peaked at {z['dump_tool_peak_rss_mib']:.1f} MiB; "
      f"busiest threads (CPU s): " + ", ".join(f"{n} {c:.2f}" for n, c in z["threads_cpu_s"][:3]))
def verdict(k):
    return "ok" if res["pass"][k] else "MISSED"
if repeat > 1:
    print("    wall ratios below: median of the per-repetition ratios (clean pairs), e.g. stowage/cron: "
          + ", ".join(f"{x:.2f}" for x in per_run_ratios["stowage_wall_over_cron"]))
print(f"    stowage wall / raw dump wall = {ratios['stowage_wall_over_raw_dump']:.2f}")
print(f"    stowage wall / cron wall     = {ratios['stowage_wall_over_cron']:.2f}  (target <= 0.4: {verdict('stowage_wall_over_cron')})")
print(f"    stowage peak RSS (worst run) = {ratios['stowage_peak_rss_mib']:.1f} MiB (target <= 64: {verdict('stowage_peak_rss_mib')})")
if ref:
    print(f"    reference: mariadb-dump | zstd -3 > /dev/null takes {ratios['reference_wall_over_raw_dump']:.2f}x the raw dump here (no hashing, no upload)")
print(f"    results: {out}")
PY
