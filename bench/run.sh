#!/usr/bin/env bash
# Benchmark: stowage `run` (PostgreSQL → S3) beside its peers on the same database and the
# same S3 server: a raw pg_dump, the floor `pg_dump | zstd -3 | aws s3 cp -`, restic
# (`restic backup --stdin` to an S3 repository) and the classic cron script
# (`pg_dump | gzip > file && aws s3 sync`); then restore speed: `stowage restore` of the backup
# against `pg_restore` (also -j 2, -j 4) of a local file into fresh databases. On a generated
# database of a chosen size. Starts its own PostgreSQL 15 and moto_server on random loopback
# ports and removes everything on exit. See bench/README.md for what is measured and how to
# read it.
#
#   bench/run.sh                      # one size, 1024 MiB, everything
#   bench/run.sh --sizes 256,1024     # several sizes in one invocation
#   bench/run.sh --size-mb 256 --repeat 3 --no-build
#   bench/run.sh --size-mb 10240 --only stowage     # stowage's backup alone (e.g. its RSS at 10 GiB)
#   bench/run.sh --size-mb 1024 --profile BIN       # plus one perf-recorded backup with BIN
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
ALL_KINDS="raw,floor,stowage,restic,cron,gzip,ref,age,restore"
ONLY="$ALL_KINDS"
PROFILE_BIN=""
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
  --only A,B,...     run only these measurements (default: all of them):
                       raw      (a) pg_dump -Fc -Z0 > /dev/null
                       floor    (b) pg_dump -Fc -Z0 | zstd -3 -T1 | aws s3 cp - s3://...
                       stowage  (c) stowage run, zstd
                       restic   (d) pg_dump -Fc -Z0 | restic backup --stdin (S3 repository)
                       cron     (e) pg_dump | gzip > file && aws s3 sync
                       gzip     stowage run, gzip        ref  pg_dump -Fc -Z0 | zstd -3 > /dev/null
                       age      stowage run, zstd + age
                       restore  stowage restore of (c)'s backup vs pg_restore (-j 1/2/4) of a
                                local file, into fresh databases (needs stowage)
  --profile BIN      after the timed runs of each size, one more (untimed) stowage backup as (c)
                     under perf record -g, with BIN (an unstripped build); top symbols to the JSON
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
        --only) ONLY="$2"; shift 2 ;;
        --profile) PROFILE_BIN="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
IFS=',' read -r -a SIZE_LIST <<<"$SIZES"
for s in "${SIZE_LIST[@]}"; do
    [[ "$s" =~ ^[0-9]+$ && "$s" -ge 16 ]] || { echo "invalid size: $s (MiB, at least 16)" >&2; exit 2; }
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --repeat: $REPEAT" >&2; exit 2; }
IFS=',' read -r -a ONLY_LIST <<<"$ONLY"
for k in "${ONLY_LIST[@]}"; do
    [[ ",$ALL_KINDS," == *",$k,"* ]] || { echo "unknown measurement in --only: $k (one of $ALL_KINDS)" >&2; exit 2; }
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
if want restore && ! want stowage; then
    echo "--only restore needs stowage too (it restores the backup (c) made)" >&2; exit 2
fi
if [[ -n "$PROFILE_BIN" ]]; then
    [[ -x "$PROFILE_BIN" ]] || { echo "--profile: $PROFILE_BIN is not an executable" >&2; exit 2; }
fi

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
if want floor && [[ "$HAVE_ZSTD" != 1 ]]; then
    log "installing zstd (for the floor pipeline)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq zstd >/dev/null; } \
        || die "zstd not found and apt-get install zstd failed: the floor measurement needs it"
    HAVE_ZSTD=1
fi
# (d) restic: Debian's package (0.14 on Debian 12).
if want restic && ! command -v restic >/dev/null 2>&1; then
    log "installing restic"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null; } \
        || die "restic not found and apt-get install restic failed: measurement (d) needs it"
fi
if [[ -n "$PROFILE_BIN" ]] && ! command -v perf >/dev/null 2>&1; then
    die "--profile needs perf (apt-get install linux-perf)"
fi
# (f) encrypts to an age X25519 recipient generated here; age-keygen comes with Debian's `age`.
if want age && ! command -v age-keygen >/dev/null 2>&1; then
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
AGE_RECIPIENT=""
if want age; then
    age-keygen -o "$AGE_KEY" 2>/dev/null || die "age-keygen -o $AGE_KEY failed"
    AGE_RECIPIENT="$(age-keygen -y "$AGE_KEY")"
    [[ "$AGE_RECIPIENT" == age1* ]] || die "age-keygen -y gave no age1... recipient: $AGE_RECIPIENT"
fi

# Everything stays on loopback; S3 credentials are dummies (moto does not check them).
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
# stowage runs pg_dump from PATH: make it PostgreSQL 15's, not Debian's version wrapper.
export PATH="$PG_BIN:$PATH"
export PGCONNECT_TIMEOUT=15
# restic: a throwaway repository password; its cache in the temp dir.
export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$WORK/restic-cache"
unset RESTIC_REPOSITORY RESTIC_PASSWORD_FILE RESTIC_PASSWORD_COMMAND

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
# The generated data (also bench/destinations.sh's): bench/sql/.
SCHEMA_SQL="$BENCH/sql/pg_schema.sql"
BATCH_SQL="$BENCH/sql/pg_batch.sql"

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
    local pid="$1" out="$2" own=0 anon=0 kids=0 k v kid kids_list zombie st t ticks=0
    local -a f
    local -A kt=()
    while [[ -e "/proc/$pid/status" ]]; do
        zombie=0
        while read -r k v _; do
            case "$k" in
                State:) [[ "$v" == Z ]] && zombie=1 ;;
                VmHWM:) (( v > own )) && own=$v ;;
                RssAnon:) (( v > anon )) && anon=$v; break ;;
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
    echo "$own $kids $ticks $anon" >"$out"
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
    local d="$1" comp="$2" prefix="$3" url="$4" recipient="${5:-}" t0 t1 rc=0
    write_config "$d/stowage.toml" "$comp" "$prefix" "$url" "$recipient"
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    run_sampled "$d" "$STOWAGE" --config "$d/stowage.toml" run bench || rc=$?
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    if [[ "$rc" != 0 ]]; then
        cat "$d/out.log" >&2
        die "stowage run ($comp${recipient:+ + age}) exited with $rc"
    fi
    s3_total_bytes "$prefix" >"$d/stored"
    local mkey
    mkey=$("$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/$prefix/" --recursive | awk '/manifest\.json$/ {print $4}' | tail -1)
    "$AWS" --endpoint-url "$ENDPOINT" s3 cp "s3://bench/$mkey" "$d/manifest.json" --only-show-errors
    check_stored "$d" "$prefix" "$([[ -n "$recipient" ]] && echo 1 || echo 0)"
}

# measure_floor DIR PREFIX URL: (b) pg_dump -Fc -Z0 | zstd -3 -T1 | aws s3 cp - s3://bench/PREFIX/…
# The least any streaming tool with zstd -3 to this S3 server can take: nothing hashed, nothing
# checked, awscli's own multipart upload (8 MiB parts, 10 threads; --expected-size is only
# needed above 50 GB).
measure_floor() {
    local d="$1" prefix="$2" url="$3" t0 t1
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" \
        | /usr/bin/time -v -o "$d/time-zstd" zstd -3 -T1 -q \
        | /usr/bin/time -v -o "$d/time-aws" "$AWS" s3 cp - "s3://bench/$prefix/db.pgdump.zst" \
            --endpoint-url "$ENDPOINT" --only-show-errors
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    s3_total_bytes "$prefix" >"$d/stored"
}

# measure_restic DIR PREFIX URL: (d) pg_dump -Fc -Z0 | restic backup --stdin into a fresh S3
# repository s3:http://127.0.0.1:PORT/bench/PREFIX/restic (plain HTTP on loopback; `restic
# init`, untimed, first). A fresh repository each time: pg_dump's output is the same every
# run, so a second backup into the same repository would dedupe everything and upload nothing,
# while stowage uploads it whole every time. restic 0.14 makes repository format 2, which
# compresses (zstd, "auto" level) by default.
measure_restic() {
    local d="$1" prefix="$2" url="$3" t0 t1 repo
    repo="s3:$ENDPOINT/bench/$prefix/restic"
    echo "$repo" >"$d/repo"
    restic -r "$repo" init >"$d/init.log" 2>&1 || { cat "$d/init.log" >&2; die "restic init $repo failed"; }
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time-dump" "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" \
        | /usr/bin/time -v -o "$d/time-restic" restic -r "$repo" backup --stdin --stdin-filename db.pgdump \
            --host bench --json >"$d/restic.json" 2>"$d/restic.err" \
        || { cat "$d/restic.err" >&2; die "restic backup failed"; }
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    s3_total_bytes "$prefix/restic" >"$d/stored"
    grep '"message_type":"summary"' "$d/restic.json" >"$d/summary.json" \
        || { cat "$d/restic.json" "$d/restic.err" >&2; die "restic backup printed no summary"; }
}

# run_sampled DIR CMD...: run CMD under GNU time (DIR/time) in the background, sample the peak
# RSS of the process GNU time starts (and of its children) until it exits (DIR/hwm); return its
# exit status. Output to DIR/out.log.
run_sampled() {
    local d="$1" tpid spid="" rc=0
    shift
    /usr/bin/time -v -o "$d/time" "$@" >"$d/out.log" 2>&1 &
    tpid=$!
    for _ in $(seq 1 200); do
        read -r spid _ 2>/dev/null <"/proc/$tpid/task/$tpid/children" || true
        [[ -n "$spid" ]] && break
        kill -0 "$tpid" 2>/dev/null || break
        read -r -t 0.01 -u "$PAUSE_FD" _ || true
    done
    if [[ -n "$spid" ]]; then sample_hwm "$spid" "$d/hwm"; else echo "0 0" >"$d/hwm"; fi
    wait "$tpid" || rc=$?
    return "$rc"
}

# Row counts of the generated tables (a restore must bring them all back).
row_counts() { # url
    psql_q "$1" -At -c "select (select count(*) from events) || ' ' || (select count(*) from customers) || ' ' || (select coalesce(sum(id), 0) from customers)"
}

# measure_restore DIR KIND URL_ADMIN DB SRC_COUNTS CONFIG|DUMPFILE [JOBS]: restore into the
# fresh database DB (created here, untimed, after a CHECKPOINT so no earlier restore's dirty
# pages are flushed on this one's time), then check its row counts against the source's, and
# drop it. KIND stowage: `stowage restore bench latest --to URL` with CONFIG ((c)'s job: it
# streams the backup from S3 into `pg_restore --exit-on-error --single-transaction`). KIND pg:
# `pg_restore [-j JOBS] -d URL DUMPFILE` (the file is read once beforehand, untimed, so it comes
# from the page cache like stowage's comes from moto's memory). KIND pg1tx: as pg with stowage's
# options (--exit-on-error --single-transaction), the like-for-like figure.
measure_restore() {
    local d="$1" kind="$2" admin="$3" db="$4" src="$5" arg="$6" jobs="${7:-1}" url t0 t1 rc=0 got
    url="${admin%/*}/$db"
    psql_q "$admin" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" -c "CHECKPOINT"
    [[ "$kind" == stowage ]] || cat "$arg" >/dev/null
    wait_idle "$d"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    case "$kind" in
        stowage) run_sampled "$d" "$STOWAGE" --config "$arg" restore bench latest --to "$url" || rc=$? ;;
        pg) run_sampled "$d" "$PG_BIN/pg_restore" -j "$jobs" -d "$url" "$arg" || rc=$? ;;
        pg1tx) run_sampled "$d" "$PG_BIN/pg_restore" --exit-on-error --single-transaction -d "$url" "$arg" || rc=$? ;;
    esac
    t1=$(now)
    cpu_after >"$d/cpu1"
    echo "$t0 $t1" >"$d/wall"
    if [[ "$rc" != 0 ]]; then
        cat "$d/out.log" >&2
        die "restore ($kind -j $jobs) into $db exited with $rc"
    fi
    got=$(row_counts "$url")
    echo "$got" >"$d/rows"
    [[ "$got" == "$src" ]] || die "restore ($kind -j $jobs) into $db: rows (events customers sum(customers.id)) $got, source has $src"
    psql_q "$admin" -c "DROP DATABASE $db"
}

# profile_stowage DIR PREFIX URL: one (c) backup with $PROFILE_BIN under perf record -g (not
# timed; separate from the measurements); the report of stowage's own samples, by symbol.
profile_stowage() {
    local d="$1" prefix="$2" url="$3"
    mkdir -p "$d"
    write_config "$d/stowage.toml" zstd "$prefix" "$url"
    wait_idle "$d"
    perf record -q -F 999 -g -o "$d/perf.data" -- "$PROFILE_BIN" --config "$d/stowage.toml" run bench \
        >"$d/stowage.log" 2>&1 || { cat "$d/stowage.log" >&2; die "profiled stowage run failed"; }
    # By thread name: stowage's threads are "stowage" and "tokio-rt-worker"; its children "pg_dump"
    # and "pg_restore" (which reads the archive's header after the dump).
    perf report -i "$d/perf.data" --no-children --sort comm,dso,symbol --stdio -q -g none \
        --percent-limit 0.05 2>/dev/null >"$d/report.txt" || die "perf report failed"
    perf report -i "$d/perf.data" --no-children --sort comm --stdio -q -g none 2>/dev/null >"$d/report-comm.txt" || true
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

    local src_rows="" dumpfile="$WORK/local-${mib}mb.pgdump" kinds=()
    if want restore; then
        src_rows=$(row_counts "$url")
        log "  local pg_dump -Fc -Z0 file for pg_restore (not timed); source rows (events customers sum(id)): $src_rows"
        "$PG_BIN/pg_dump" -Fc -Z0 -d "$url" -f "$dumpfile"
        chmod 644 "$dumpfile"
    fi

    for r in $(seq 1 "$REPEAT"); do
        local p="${mib}mb/r$r" rd="$sd/r$r"
        mkdir -p "$rd"/{raw,floor,zstd,restic,cron,gzip,ref,age} \
            "$rd"/{restore-stowage,restore-pg,restore-pg1tx,restore-pg-j2,restore-pg-j4}
        if want raw; then
            log "  [$r/$REPEAT] (a) raw pg_dump -Fc -Z0 > /dev/null"
            measure_raw "$rd/raw" "$url"
        fi
        if want floor; then
            log "  [$r/$REPEAT] (b) floor: pg_dump -Fc -Z0 | zstd -3 -T1 | aws s3 cp -"
            measure_floor "$rd/floor" "$p/floor" "$url"
        fi
        # (c) and stowage zstd+age back to back, so their ratio compares like with like; their
        # order alternates between repetitions so that neither always goes first.
        local order=()
        want stowage && order+=(zstd)
        want age && { if (( r % 2 == 1 )); then order+=(age); else order=(age "${order[@]}"); fi; }
        for k in "${order[@]}"; do
            if [[ "$k" == zstd ]]; then
                log "  [$r/$REPEAT] (c) stowage run, zstd"
                measure_stowage "$rd/zstd" zstd "$p/stowage-zstd" "$url"
            else
                log "  [$r/$REPEAT] stowage run, zstd + age"
                measure_stowage "$rd/age" zstd "$p/stowage-zstd-age" "$url" "$AGE_RECIPIENT"
            fi
        done
        if want restic; then
            log "  [$r/$REPEAT] (d) restic: pg_dump -Fc -Z0 | restic backup --stdin (S3 repository)"
            measure_restic "$rd/restic" "$p" "$url"
        fi
        if want cron; then
            log "  [$r/$REPEAT] (e) cron script: pg_dump | gzip > file && aws s3 sync"
            measure_cron "$rd/cron" "$p/cron" "$url"
        fi
        if want gzip; then
            log "  [$r/$REPEAT] stowage run, gzip"
            measure_stowage "$rd/gzip" gzip "$p/stowage-gzip" "$url"
        fi
        if want ref && [[ "$HAVE_ZSTD" == 1 ]]; then
            log "  [$r/$REPEAT] reference: pg_dump -Fc -Z0 | zstd -3 > /dev/null"
            measure_ref "$rd/ref" "$url"
        fi
        if want restore; then
            # stowage first in odd repetitions, last in even ones.
            local rorder=(pg pg1tx pg-j2 pg-j4)
            if (( r % 2 == 1 )); then rorder=(stowage "${rorder[@]}"); else rorder+=(stowage); fi
            for k in "${rorder[@]}"; do
                case "$k" in
                    stowage)
                        log "  [$r/$REPEAT] restore: stowage restore bench latest --to <fresh db> (from S3)"
                        measure_restore "$rd/restore-stowage" stowage "$PG_ADMIN" "restore_${mib}_r${r}_stowage" "$src_rows" "$rd/zstd/stowage.toml" ;;
                    pg)
                        log "  [$r/$REPEAT] restore: pg_restore -d <fresh db> local.pgdump"
                        measure_restore "$rd/restore-pg" pg "$PG_ADMIN" "restore_${mib}_r${r}_pg" "$src_rows" "$dumpfile" 1 ;;
                    pg1tx)
                        log "  [$r/$REPEAT] restore: pg_restore --exit-on-error --single-transaction -d <fresh db> local.pgdump"
                        measure_restore "$rd/restore-pg1tx" pg1tx "$PG_ADMIN" "restore_${mib}_r${r}_pg1tx" "$src_rows" "$dumpfile" ;;
                    pg-j*)
                        log "  [$r/$REPEAT] restore: pg_restore -j ${k#pg-j} -d <fresh db> local.pgdump"
                        measure_restore "$rd/restore-$k" pg "$PG_ADMIN" "restore_${mib}_r${r}_pg_j${k#pg-j}" "$src_rows" "$dumpfile" "${k#pg-j}" ;;
                esac
            done
        fi
        # moto keeps objects in memory: free them once measured.
        "$AWS" --endpoint-url "$ENDPOINT" s3 rm "s3://bench/$p/" --recursive --only-show-errors
    done
    rm -f "$dumpfile"
    if [[ -n "$PROFILE_BIN" ]]; then
        log "  profile: one stowage run (c) with $PROFILE_BIN under perf record -g (not timed)"
        profile_stowage "$sd/profile" "${mib}mb/profile" "$url"
        "$AWS" --endpoint-url "$ENDPOINT" s3 rm "s3://bench/${mib}mb/profile/" --recursive --only-show-errors
    fi

    for k in "${ONLY_LIST[@]}"; do
        case "$k" in
            stowage) kinds+=(zstd) ;;
            ref) [[ "$HAVE_ZSTD" == 1 ]] && kinds+=(ref) ;;
            restore) kinds+=(restore-stowage restore-pg restore-pg1tx restore-pg-j2 restore-pg-j4) ;;
            *) kinds+=("$k") ;;
        esac
    done
    local suffix=""
    [[ "$ONLY" == "$ALL_KINDS" ]] || suffix="-only-${ONLY//,/-}"

    local json="$RESULTS_DIR/$STAMP-${mib}mb$suffix.json"
    "$PY" - "$sd" "$mib" "$REPEAT" "$json" "$STOWAGE_SRC" "$HAVE_ZSTD" "$STOWAGE_ID" "$GIT_REV" "${kinds[*]}" \
        "$PROFILE_BIN" "$(restic version 2>/dev/null | awk '{print $2}')" <<'PY'
import json, os, platform, re, sys

sd, mib, repeat, out, stowage = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
have_ref = sys.argv[6] == "1"
stowage_id, git_rev = sys.argv[7], sys.argv[8]
kinds = sys.argv[9].split()
profile_bin, restic_version = sys.argv[10], sys.argv[11]
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

def cpu(t):
    return t["user_s"] + t["sys_s"]

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
        m.update(wall_s=w[1] - w[0], cpu_s=cpu(t),
                 peak_rss_mib=t["max_rss_kb"] / 1024, stored_bytes=None)
    elif kind in ("zstd", "gzip", "age"):
        t = gnu_time(f"{d}/time")
        hwm = [int(x) for x in read(f"{d}/hwm").split()]
        own, kids = hwm[0], hwm[1]
        man = json.loads(read(f"{d}/manifest.json"))
        m.update(wall_s=w[1] - w[0],
                 cpu_s=cpu(t),                     # stowage + its pg_dump child
                 peak_rss_mib=own / 1024,          # stowage's own VmHWM
                 pg_dump_peak_rss_mib=kids / 1024,
                 tree_max_rss_mib=t["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")),
                 dump_bytes=sum(s["raw_size"] for s in man["sources"]))
        if len(hwm) > 2:  # the pg_dump child's ticks as last sampled (<= 0.1 s short)
            m.update(pg_dump_cpu_s=hwm[2] / hz, stowage_own_cpu_s=m["cpu_s"] - hwm[2] / hz)
        if len(hwm) > 3:  # RssAnon's highest sample (every 0.1 s): the part a cgroup keeps
            m["peak_anon_mib"] = hwm[3] / 1024
        m["encryption"] = man.get("encryption")
        m["object_key"] = read(f"{d}/object_key")  # checked by check_stored: .age (f) or not
    elif kind == "ref":
        td, tz = (gnu_time(f"{d}/time-{x}") for x in ("dump", "zstd"))
        m.update(wall_s=w[1] - w[0], cpu_s=sum(cpu(x) for x in (td, tz)),
                 peak_rss_mib=max(td["max_rss_kb"], tz["max_rss_kb"]) / 1024, stored_bytes=None)
    elif kind == "floor":
        td, tz, ta = (gnu_time(f"{d}/time-{x}") for x in ("dump", "zstd", "aws"))
        m.update(wall_s=w[1] - w[0], cpu_s=sum(cpu(x) for x in (td, tz, ta)),
                 pg_dump_cpu_s=cpu(td), zstd_cpu_s=cpu(tz), aws_cpu_s=cpu(ta),
                 peak_rss_mib=max(td["max_rss_kb"], tz["max_rss_kb"], ta["max_rss_kb"]) / 1024,
                 pg_dump_peak_rss_mib=td["max_rss_kb"] / 1024, zstd_peak_rss_mib=tz["max_rss_kb"] / 1024,
                 aws_peak_rss_mib=ta["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")))
    elif kind == "restic":
        td, tr = (gnu_time(f"{d}/time-{x}") for x in ("dump", "restic"))
        summ = json.loads(read(f"{d}/summary.json"))
        m.update(wall_s=w[1] - w[0], cpu_s=cpu(td) + cpu(tr), pg_dump_cpu_s=cpu(td), restic_cpu_s=cpu(tr),
                 peak_rss_mib=max(td["max_rss_kb"], tr["max_rss_kb"]) / 1024,
                 pg_dump_peak_rss_mib=td["max_rss_kb"] / 1024, restic_peak_rss_mib=tr["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")),
                 restic_data_added=summ.get("data_added"),
                 restic_total_bytes_processed=summ.get("total_bytes_processed"),
                 repository=read(f"{d}/repo"))
    elif kind.startswith("restore-"):
        t = gnu_time(f"{d}/time")
        hwm = [int(x) for x in read(f"{d}/hwm").split()]
        m.update(wall_s=w[1] - w[0], cpu_s=cpu(t), stored_bytes=None,
                 tree_max_rss_mib=t["max_rss_kb"] / 1024, rows=read(f"{d}/rows"))
        if kind == "restore-stowage":
            m.update(peak_rss_mib=hwm[0] / 1024, pg_restore_peak_rss_mib=hwm[1] / 1024)
            if len(hwm) > 2:
                m.update(pg_restore_cpu_s=hwm[2] / hz, stowage_own_cpu_s=m["cpu_s"] - hwm[2] / hz)
        else:
            m.update(peak_rss_mib=t["max_rss_kb"] / 1024)
    else:  # cron
        td, tg, ts = (gnu_time(f"{d}/time-{x}") for x in ("dump", "gzip", "sync"))
        m.update(wall_s=w[2] - w[0], dump_gzip_wall_s=w[1] - w[0], sync_wall_s=w[2] - w[1],
                 cpu_s=sum(cpu(x) for x in (td, tg, ts)),
                 peak_rss_mib=max(td["max_rss_kb"], tg["max_rss_kb"], ts["max_rss_kb"]) / 1024,
                 pg_dump_peak_rss_mib=td["max_rss_kb"] / 1024,
                 gzip_peak_rss_mib=tg["max_rss_kb"] / 1024,
                 aws_peak_rss_mib=ts["max_rss_kb"] / 1024,
                 stored_bytes=int(read(f"{d}/stored")))
    return m

cpus = os.cpu_count() or 1
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
    best["min_peak_rss_mib"] = min(x["peak_rss_mib"] for x in runs)
    if all("peak_anon_mib" in x for x in runs):
        best["max_peak_anon_mib"] = max(x["peak_anon_mib"] for x in runs)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.items()}

def wall_ratio(num, den, key="wall_s"):
    """Median over the repetitions of num's wall / den's wall within the same repetition
    (measured seconds apart, so under the same conditions), clean pairs only unless none is.
    With key="cpu_s" (or another figure of both): the same for that figure."""
    pairs = list(zip(RUNS[num], RUNS[den]))
    clean = [(a, b) for a, b in pairs if a["clean"] and b["clean"]] or pairs
    per_run = [a[key] / b[key] for a, b in clean]
    return round(lower_median(per_run), 3), [round(x, 3) for x in per_run]

NAMES = {"raw": "raw_pg_dump", "floor": "floor_zstd_aws", "zstd": "stowage_zstd", "restic": "restic_stdin",
         "cron": "cron_pg_dump_gzip_aws_sync", "gzip": "stowage_gzip", "age": "stowage_zstd_age",
         "ref": "reference_pg_dump_zstd3_devnull",
         "restore-stowage": "restore_stowage", "restore-pg": "restore_pg_restore",
         "restore-pg1tx": "restore_pg_restore_single_transaction",
         "restore-pg-j2": "restore_pg_restore_j2", "restore-pg-j4": "restore_pg_restore_j4"}
m = {NAMES[k]: pick_run(k) for k in kinds}
M = {k: m[NAMES[k]] for k in kinds}  # by short name
has = lambda *ks: all(k in RUNS for k in ks)

ratios, per_run_ratios, targets = {}, {}, {}
def ratio(name, num, den, key="wall_s", target=None):
    if has(num, den):
        ratios[name], per_run_ratios[name] = wall_ratio(num, den, key)
        if target is not None:
            targets[name] = target
for name, num, den, tgt in (("stowage_wall_over_raw_pg_dump", "zstd", "raw", 1.2),
                            ("stowage_wall_over_floor", "zstd", "floor", 1.1),
                            ("stowage_wall_over_restic", "zstd", "restic", 1.0),
                            ("stowage_wall_over_cron", "zstd", "cron", 0.4),
                            ("stowage_gzip_wall_over_cron", "gzip", "cron", None),
                            ("floor_wall_over_raw_pg_dump", "floor", "raw", None),
                            ("restic_wall_over_raw_pg_dump", "restic", "raw", None),
                            ("reference_wall_over_raw_pg_dump", "ref", "raw", None),
                            ("restore_stowage_wall_over_pg_restore", "restore-stowage", "restore-pg", 1.15),
                            ("restore_stowage_wall_over_pg_restore_single_transaction", "restore-stowage", "restore-pg1tx", None),
                            ("restore_pg_restore_j2_wall_over_pg_restore", "restore-pg-j2", "restore-pg", None),
                            ("restore_pg_restore_j4_wall_over_pg_restore", "restore-pg-j4", "restore-pg", None),
                            ("restore_pg_restore_j2_wall_over_single_transaction", "restore-pg-j2", "restore-pg1tx", None)):
    ratio(name, num, den, target=tgt)
ratio("stowage_cpu_over_floor", "zstd", "floor", "cpu_s")
ratio("stowage_cpu_over_restic", "zstd", "restic", "cpu_s")
# stowage zstd+age over stowage zstd: what encryption costs ((c) and it run back to back).
# cpu = user+sys of stowage and its pg_dump child (GNU time); own cpu = without pg_dump.
ratio("stowage_age_wall_over_stowage_zstd", "age", "zstd", target=1.1)
ratio("stowage_age_cpu_over_stowage_zstd", "age", "zstd", "cpu_s", target=1.1)
if has("age", "zstd") and all("stowage_own_cpu_s" in x for k in ("age", "zstd") for x in RUNS[k]):
    ratio("stowage_age_own_cpu_over_stowage_zstd_own_cpu", "age", "zstd", "stowage_own_cpu_s")
if has("zstd"):
    ratios["stowage_peak_rss_mib"] = M["zstd"]["max_peak_rss_mib"]  # worst of all runs
    targets["stowage_peak_rss_mib"] = 64
    # "peak RSS below both": stowage's worst run against the best run of each peer.
    for name, k in (("floor", "floor"), ("restic", "restic")):
        if has(k):
            ratios[f"stowage_peak_rss_over_{name}_peak_rss"] = round(M["zstd"]["max_peak_rss_mib"] / M[k]["min_peak_rss_mib"], 3)
            targets[f"stowage_peak_rss_over_{name}_peak_rss"] = 1.0
if has("age"):
    ratios["stowage_age_peak_rss_mib"] = M["age"]["max_peak_rss_mib"]
STRICT = {"stowage_wall_over_restic", "stowage_peak_rss_over_floor_peak_rss", "stowage_peak_rss_over_restic_peak_rss"}
passed = {k: (ratios[k] < v if k in STRICT else ratios[k] <= v) for k, v in targets.items()}

# How busy the machine was: what the script saw before each measurement and during it.
allruns = [x for k in kinds for x in RUNS[k]]
noise = {"measurements": len(allruns), "clean": sum(x["clean"] for x in allruns),
         "other_cpu_s_total": round(sum(x["other_cpu_s"] for x in allruns), 1),
         "measured_wall_s_total": round(sum(x["wall_s"] for x in allruns), 1),
         "loadavg_before_min_max": [min(x["loadavg_before"] for x in allruns), max(x["loadavg_before"] for x in allruns)],
         "busy_pct_before_median": lower_median([x["other_cpu_busy_pct_before"] for x in allruns]),
         "rule": "a run is clean when other work used <= 5% of the machine's CPU during it"}

db_size = int(read(f"{sd}/db_size"))
dump_bytes = next((M[k]["dump_bytes"] for k in ("zstd", "gzip", "age") if k in M), None)
res = {
    "size_mib_requested": mib,
    "pg_database_size_bytes": db_size,
    "dump_bytes_custom_uncompressed": dump_bytes,
    "repeat": repeat,
    "measured": kinds,
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB},
    "noise": noise,
    "stowage_binary": stowage,
    "stowage_binary_id": stowage_id,
    "git_rev": git_rev,
    "restic_version": restic_version if "restic" in kinds else None,
    "measurements": m,
    "ratios": ratios,
    "per_repetition_ratios": per_run_ratios,
    "targets": targets,
    "pass": passed,
}

# The profile (--profile): perf report lines "  12.34%  comm  dso  [.] symbol".
prof_dir = f"{sd}/profile"
AREAS = [("zstd", lambda s, d: re.search(r"ZSTD|HUF_|FSE_|HIST_|zstd", s)),
         ("sha256", lambda s, d: re.search(r"sha2|sha256|SHA256", s, re.I)),
         ("crc/checksums", lambda s, d: re.search(r"crc|checksum", s, re.I)),
         ("age/chacha20-poly1305", lambda s, d: re.search(r"chacha|poly1305|age::", s, re.I)),
         ("memcpy/memmove/memset", lambda s, d: re.search(r"mem(cpy|move|set)", s)),
         ("allocator", lambda s, d: re.search(r"malloc|free|realloc|_int_|alloc::|__rust_(alloc|dealloc|realloc)|cfree", s)),
         ("HTTP/S3 client (hyper, aws-smithy, aws-sdk, sigv4)", lambda s, d: re.search(r"hyper|h2::|http::|aws_smithy|aws_sdk|aws_sigv4|aws_runtime|rustls|aws_lc", s)),
         ("tokio runtime", lambda s, d: re.search(r"tokio", s)),
         ("kernel (syscalls: pipe reads, socket writes, faults)", lambda s, d: d == "[kernel.kallsyms]"),
         ("libc other", lambda s, d: d.startswith("libc")),
         ("other", lambda s, d: True)]
if profile_bin and os.path.exists(f"{prof_dir}/report.txt"):
    rows = []
    for line in read(f"{prof_dir}/report.txt").splitlines():
        mm = re.match(r"\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if mm:
            rows.append((float(mm[1]), mm[2], mm[3], mm[5].strip()))
    by_comm = {}
    for pct, comm, dso, sym in rows:
        by_comm[comm] = by_comm.get(comm, 0) + pct
    # stowage's children: pg_dump, and pg_restore (it reads the archive's header after the dump)
    own = [r for r in rows if r[1] not in ("pg_dump", "pg_restore", "perf", "perf-exec", "time")]
    own_total = sum(r[0] for r in own) or 1
    areas = {}
    for pct, comm, dso, sym in own:
        name = next(n for n, f in AREAS if f(sym, dso))
        areas[name] = areas.get(name, 0) + pct
    res["profile"] = {
        "binary": profile_bin,
        "how": "perf record -F 999 -g of one stowage run (c), separate from the timed runs; "
               "perf report --no-children --sort comm,dso,symbol (symbols >= 0.05%)",
        "samples_pct_by_thread_name": {k: round(v, 1) for k, v in sorted(by_comm.items(), key=lambda kv: -kv[1])},
        "stowage_own_pct_of_all_samples": round(own_total, 1),
        "stowage_areas_pct_of_stowage": {k: round(100 * v / own_total, 1)
                                          for k, v in sorted(areas.items(), key=lambda kv: -kv[1])},
        "stowage_top_symbols": [{"pct_of_stowage": round(100 * p / own_total, 2), "thread": c, "dso": d, "symbol": s[:160]}
                                for p, c, d, s in sorted(own, key=lambda r: -r[0])[:40]],
    }

with open(out, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")

def mb(b):
    return "-" if b is None else f"{b / MiB:.1f}"
def verdict(k):
    return "ok" if passed[k] else "MISSED"

print()
print(f"== {mib} MiB requested: pg_database_size {db_size / MiB:.0f} MiB"
      + (f", pg_dump -Fc -Z0 output {dump_bytes / MiB:.0f} MiB" if dump_bytes else "")
      + (f", median of the clean runs out of {repeat}" if repeat > 1 else ""))
print(f"{'':40}{'wall s':>8}{'cpu s':>7}{'pg srv':>7}{'moto':>6}{'other':>6}{'peak RSS MiB':>13}{'stored MiB':>11}{'ratio':>6}")
LABELS = [("raw", "(a) raw pg_dump -Fc -Z0 >/dev/null"), ("floor", "(b) floor: pg_dump|zstd -3|aws s3 cp -"),
          ("zstd", "(c) stowage run, zstd"), ("restic", "(d) pg_dump|restic backup --stdin"),
          ("cron", "(e) cron: pg_dump|gzip; aws s3 sync"),
          ("gzip", "    stowage run, gzip"), ("ref", "    ref: pg_dump|zstd -3 >/dev/null"),
          ("age", "    stowage run, zstd + age")]
for k, name in LABELS:
    if k not in M:
        continue
    x = M[k]
    ratio_s = "" if not (x.get("stored_bytes") and dump_bytes) else f"{dump_bytes / x['stored_bytes']:.2f}"
    print(f"{name:40}{x['wall_s']:8.2f}{x['cpu_s']:7.2f}{x['pg_server_cpu_s']:7.2f}{x['moto_cpu_s']:6.2f}"
          f"{x['other_cpu_s']:6.1f}{x['peak_rss_mib']:13.1f}{mb(x['stored_bytes']):>11}{ratio_s:>6}")
print("    cpu s = the measured processes (user+sys); pg srv / moto = the servers' CPU meanwhile;"
      " other = CPU anything else used meanwhile (noise)")
if "floor" in M:
    f_ = M["floor"]
    print(f"    floor detail: cpu pg_dump {f_['pg_dump_cpu_s']:.2f} + zstd {f_['zstd_cpu_s']:.2f} + aws {f_['aws_cpu_s']:.2f} s; "
          f"peak RSS pg_dump {f_['pg_dump_peak_rss_mib']:.1f}, zstd {f_['zstd_peak_rss_mib']:.1f}, aws {f_['aws_peak_rss_mib']:.1f} MiB")
if "restic" in M:
    r_ = M["restic"]
    print(f"    restic detail: cpu pg_dump {r_['pg_dump_cpu_s']:.2f} + restic {r_['restic_cpu_s']:.2f} s; "
          f"peak RSS pg_dump {r_['pg_dump_peak_rss_mib']:.1f}, restic {r_['restic_peak_rss_mib']:.1f} MiB; "
          f"restic {restic_version}, new repository each run")
if "cron" in M:
    cron = M["cron"]
    print(f"    cron detail: pg_dump|gzip {cron['dump_gzip_wall_s']:.2f} s + aws s3 sync {cron['sync_wall_s']:.2f} s; "
          f"peak RSS pg_dump {cron['pg_dump_peak_rss_mib']:.1f}, gzip {cron['gzip_peak_rss_mib']:.1f}, "
          f"aws {cron['aws_peak_rss_mib']:.1f} MiB")
if "zstd" in M:
    z = M["zstd"]
    print(f"    stowage detail: RSS is stowage's own peak (worst run {z['max_peak_rss_mib']:.1f} MiB); its pg_dump child peaked at "
          f"{z['pg_dump_peak_rss_mib']:.1f} MiB; cpu s includes that child"
          + (f" (stowage {z['stowage_own_cpu_s']:.2f} + pg_dump {z['pg_dump_cpu_s']:.2f})" if "stowage_own_cpu_s" in z else ""))
    if "max_peak_anon_mib" in z:
        print(f"    stowage peak anonymous memory (RssAnon, sampled every 0.1 s; the rest of its RSS is the binary's and "
              f"libraries' file pages): worst run {z['max_peak_anon_mib']:.1f} MiB")
if "age" in M and "zstd" in M:
    fa = M["age"]
    print(f"    zstd+age stored {fa['object_key'].rsplit('/', 1)[-1]} (age header and manifest \"encryption\": "
          f"\"{fa['encryption']}\" checked); zstd stored {M['zstd']['object_key'].rsplit('/', 1)[-1]}")
rlabels = [("restore-stowage", "stowage restore (from S3)"), ("restore-pg", "pg_restore -d (local file)"),
           ("restore-pg1tx", "pg_restore --single-transaction"),
           ("restore-pg-j2", "pg_restore -j 2"), ("restore-pg-j4", "pg_restore -j 4")]
if any(k in M for k, _ in rlabels):
    print()
    print(f"{'restore into a fresh database':40}{'wall s':>8}{'cpu s':>7}{'pg srv':>7}{'moto':>6}{'other':>6}{'peak RSS MiB':>13}  rows checked")
    for k, name in rlabels:
        if k in M:
            x = M[k]
            print(f"{name:40}{x['wall_s']:8.2f}{x['cpu_s']:7.2f}{x['pg_server_cpu_s']:7.2f}{x['moto_cpu_s']:6.2f}"
                  f"{x['other_cpu_s']:6.1f}{x['peak_rss_mib']:13.1f}  {x['rows']}")
    print("    peak RSS: stowage's own (its pg_restore child: "
          + (f"{M['restore-stowage']['pg_restore_peak_rss_mib']:.1f} MiB" if "restore-stowage" in M else "-")
          + "); pg_restore: GNU time's max over it and its workers")
print()
if repeat > 1:
    print("    ratios: median of the per-repetition ratios (clean pairs); per repetition in the JSON")
def show(k, text, target):
    if k in ratios:
        extra = f" [{', '.join(f'{v:.2f}' for v in per_run_ratios[k])}]" if repeat > 1 and k in per_run_ratios else ""
        print(f"    {text:44} = {ratios[k]:.2f}{extra}" + (f"  (target {target}: {verdict(k)})" if k in passed else ""))
show("stowage_wall_over_raw_pg_dump", "(c) stowage wall / (a) raw pg_dump wall", "<= 1.2")
show("stowage_wall_over_floor", "(c) stowage wall / (b) floor wall", "<= 1.1")
show("stowage_cpu_over_floor", "(c) stowage cpu / (b) floor cpu", "")
show("stowage_wall_over_restic", "(c) stowage wall / (d) restic wall", "< 1")
show("stowage_cpu_over_restic", "(c) stowage cpu / (d) restic cpu", "")
show("stowage_peak_rss_over_floor_peak_rss", "stowage worst peak RSS / floor's best", "< 1")
show("stowage_peak_rss_over_restic_peak_rss", "stowage worst peak RSS / restic's best", "< 1")
show("stowage_wall_over_cron", "(c) stowage wall / (e) cron wall", "<= 0.4")
show("stowage_gzip_wall_over_cron", "stowage gzip wall / (e) cron wall", "")
show("reference_wall_over_raw_pg_dump", "ref pg_dump|zstd >/dev/null / raw", "")
show("stowage_peak_rss_mib", "stowage peak RSS MiB (worst run)", "<= 64")
show("stowage_age_wall_over_stowage_zstd", "zstd+age / zstd, wall", "<= 1.1")
show("stowage_age_cpu_over_stowage_zstd", "zstd+age / zstd, cpu (pg_dump included)", "<= 1.1")
show("stowage_age_own_cpu_over_stowage_zstd_own_cpu", "zstd+age / zstd, stowage's own cpu", "")
show("restore_stowage_wall_over_pg_restore", "stowage restore / pg_restore (local file)", "<= 1.15")
show("restore_stowage_wall_over_pg_restore_single_transaction", "stowage restore / pg_restore --single-tx", "")
show("restore_pg_restore_j2_wall_over_pg_restore", "pg_restore -j 2 / pg_restore", "")
show("restore_pg_restore_j4_wall_over_pg_restore", "pg_restore -j 4 / pg_restore", "")
if "profile" in res:
    p = res["profile"]
    print()
    print(f"    profile ({profile_bin}): threads {p['samples_pct_by_thread_name']}; stowage's own CPU by area:")
    for k, v in p["stowage_areas_pct_of_stowage"].items():
        print(f"      {v:5.1f}%  {k}")
    print("    top symbols (% of stowage's own samples):")
    for s in p["stowage_top_symbols"][:15]:
        print(f"      {s['pct_of_stowage']:5.2f}%  {s['thread']:16} {s['dso']:18} {s['symbol'][:90]}")
print(f"    noise: {noise['clean']}/{noise['measurements']} runs clean; load average before runs "
      f"{noise['loadavg_before_min_max'][0]}-{noise['loadavg_before_min_max'][1]}; other work used "
      f"{noise['other_cpu_s_total']} CPU-s during {noise['measured_wall_s_total']} s of measurements")
print(f"    results: {out}")
PY
    SUMMARY_FILES+=("$json")
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
print("== summary (wall s per measurement; ratios of (c) stowage zstd; '-' = not measured)")
cols = [("raw", "raw_pg_dump"), ("floor", "floor_zstd_aws"), ("stowage", "stowage_zstd"), ("restic", "restic_stdin"),
        ("cron", "cron_pg_dump_gzip_aws_sync"), ("restore", "restore_stowage"), ("pg_restore", "restore_pg_restore")]
rat = [("/floor", "stowage_wall_over_floor"), ("/restic", "stowage_wall_over_restic"), ("/cron", "stowage_wall_over_cron"),
       ("rst/pg", "restore_stowage_wall_over_pg_restore")]
print(f"{'DB MiB':>7}" + "".join(f"{c:>11}" for c, _ in cols) + "".join(f"{c:>8}" for c, _ in rat) + f"{'RSS MiB':>9}")
for p in sys.argv[1:]:
    r = json.load(open(p))
    m, q = r["measurements"], r["ratios"]
    print(f"{r['pg_database_size_bytes'] / 2**20:7.0f}"
          + "".join(f"{m[k]['wall_s']:11.2f}" if k in m else f"{'-':>11}" for _, k in cols)
          + "".join(f"{q[k]:8.2f}" if k in q else f"{'-':>8}" for _, k in rat)
          + (f"{m['stowage_zstd']['max_peak_rss_mib']:9.1f}" if "stowage_zstd" in m else f"{'-':>9}"))
PY
fi
