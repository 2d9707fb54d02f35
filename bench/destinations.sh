#!/usr/bin/env bash
# Benchmark (issue 27): one `stowage run` of a PostgreSQL job to SFTP (OpenSSH's sshd), WebDAV
# (`rclone serve webdav`) and Azure Blob (Azurite), each beside the by-hand floor for that
# protocol on the same server in the same run:
#   sftp    pg_dump -Fc -Z0 | zstd -3 -T1 | ssh host 'cat > f'
#   webdav  pg_dump -Fc -Z0 | zstd -3 -T1 | curl -T - URL
#   azblob  pg_dump -Fc -Z0 | zstd -3 -T1 | split -b 8M --filter 'curl Put Block (SAS)', then
#           curl Put Block List
# Reports wall time, stowage/floor and peak RSS (GNU time). Starts PostgreSQL 15, sshd, rclone
# and Azurite on random loopback ports; removes everything on exit. See bench/README.md,
# section "Destinations".
#
#   bench/destinations.sh                              # 1024 MiB, all three, builds first
#   bench/destinations.sh --size-mb 64 --no-build      # smoke test
#   bench/destinations.sh --only azblob --repeat 3
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

SIZE_MB=1024
REPEAT=1
BUILD=1
KEEP_WORK=0
ONLY="sftp,webdav,azblob"
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TOOLS="${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}"
AZURITE="${STOWAGE_AZURITE_BLOB:-$TOOLS/npm/node_modules/.bin/azurite-blob}"
RCLONE="${STOWAGE_RCLONE:-rclone}"

usage() {
    cat <<EOF
usage: bench/destinations.sh [options]
  --size-mb N        database size in MiB of pg_database_size (default 1024)
  --repeat N         measure floor and stowage N times each, alternating; report the fastest
                     of each (default 1)
  --only A,B         destinations to measure: sftp, webdav, azblob (default all three)
  --stowage PATH     stowage binary (default: build and use target/release/stowage)
  --no-build         do not run cargo build --release
  --results-dir DIR  where the JSON results go (default bench/results)
  --keep-work        keep the temp dir (logs, configs) instead of removing it
env: PG_BIN, STOWAGE_TOOLS (where tests/setup.sh put Azurite), STOWAGE_AZURITE_BLOB,
     STOWAGE_RCLONE, CARGO_TARGET_DIR
EOF
}

while (($#)); do
    case "$1" in
        --size-mb) SIZE_MB="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --stowage) STOWAGE="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --results-dir) RESULTS_DIR="$2"; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_dump" ]] \
    || die "PostgreSQL 15 not found in $PG_BIN (apt-get install postgresql, or set PG_BIN)"
for tool in zstd curl /usr/bin/time ssh-keygen /usr/sbin/sshd python3; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run tests/setup.sh first"
done
want webdav && { command -v "$RCLONE" >/dev/null 2>&1 || die "rclone not found: run tests/setup.sh first"; }
want azblob && { [[ -x "$AZURITE" ]] || die "Azurite not found at $AZURITE: run tests/setup.sh first"; }
id postgres >/dev/null 2>&1 || die "no postgres user (initdb refuses to run as root)"

if [[ -z "$STOWAGE" ]]; then
    STOWAGE="${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage"
fi
if [[ "$BUILD" == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet --locked) || die "cargo build --release failed"
fi
[[ -x "$STOWAGE" ]] || die "stowage binary not found at $STOWAGE (build it or pass --stowage)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench-dest.XXXXXX")"
chmod 755 "$WORK"
PGDATA="$WORK/pgdata"
PG_STARTED=0
PIDS=()

cleanup() {
    local rc=$? pid
    set +e
    [[ "$PG_STARTED" == 1 ]] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
    for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    if [[ "$KEEP_WORK" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cp "$STOWAGE" "$WORK/stowage"
STOWAGE_ID="$(sha256sum "$WORK/stowage" | cut -c1-16)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
STOWAGE="$WORK/stowage"
export PATH="$PG_BIN:$PATH" NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port pid what
    local _
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "$2" 2>/dev/null || die "$3 exited; see $WORK/$3.log"
        sleep 0.1
    done
    die "$3 did not listen on port $1"
}
# A server in its own process group, so the cleanup takes its children too.
serve() { # name command...
    local name="$1"; shift
    setsid "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
}

# ---------------------------------------------------------------------------------------
# PostgreSQL with the generated data of bench/run.sh
# ---------------------------------------------------------------------------------------
PG_PORT="$(free_port)"
mkdir -p "$PGDATA" && chown postgres: "$PGDATA"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
PG_STARTED=1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_wal_size=4GB" start >/dev/null \
    || { cat "$PGDATA/server.log" >&2; die "PostgreSQL did not start"; }
DB="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
psql_q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

log "generating ~$SIZE_MB MiB (the data of bench/run.sh)"
psql_q -f "$BENCH/sql/pg_schema.sql"
rows=0
while (( $(psql_q -At -c "select pg_database_size(current_database())") < SIZE_MB * 1048576 )); do
    psql_q -v first=$((rows + 1)) -v n=100000 -f "$BENCH/sql/pg_batch.sql"
    rows=$((rows + 100000))
done
psql_q -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
DB_BYTES=$(psql_q -At -c "select pg_database_size(current_database())")
log "database: $((DB_BYTES / 1048576)) MiB, $rows events; one warm-up dump"
pg_dump -Fc -Z0 -d "$DB" >/dev/null

# ---------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------
if want sftp; then
    mkdir -p "$WORK/ssh" "$WORK/sftp/floor" /run/sshd
    ssh-keygen -q -t ed25519 -N "" -f "$WORK/ssh/host_key"
    ssh-keygen -q -t ed25519 -N "" -f "$WORK/ssh/client_key"
    cp "$WORK/ssh/client_key.pub" "$WORK/ssh/authorized_keys"
    SSH_PORT="$(free_port)"
    cat >"$WORK/ssh/sshd_config" <<EOF
ListenAddress 127.0.0.1
HostKey $WORK/ssh/host_key
PidFile $WORK/ssh/sshd.pid
AuthorizedKeysFile $WORK/ssh/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers $(id -un)
UsePAM no
Subsystem sftp internal-sftp
EOF
    serve sshd /usr/sbin/sshd -D -e -f "$WORK/ssh/sshd_config" -p "$SSH_PORT"
    wait_port "$SSH_PORT" "${PIDS[-1]}" sshd
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 "$WORK/ssh/host_key.pub")" >"$WORK/ssh/known_hosts"
    log "sshd ($(ssh -V 2>&1 | cut -d, -f1)) on 127.0.0.1:$SSH_PORT"
fi
if want webdav; then
    DAV_PORT="$(free_port)"
    mkdir -p "$WORK/dav"
    echo -n "bench-password" >"$WORK/dav_password"
    serve webdav "$RCLONE" serve webdav "$WORK/dav" --addr "127.0.0.1:$DAV_PORT" \
        --user bench --pass bench-password --config /dev/null
    wait_port "$DAV_PORT" "${PIDS[-1]}" webdav
    log "rclone $("$RCLONE" version | awk 'NR==1{print $2}') serve webdav on 127.0.0.1:$DAV_PORT"
fi
if want azblob; then
    AZ_PORT="$(free_port)"
    mkdir -p "$WORK/azurite"
    serve azurite "$AZURITE" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --location "$WORK/azurite" \
        --skipApiVersionCheck --loose --silent
    wait_port "$AZ_PORT" "${PIDS[-1]}" azurite
    AZ_URL="http://127.0.0.1:$AZ_PORT/devstoreaccount1"
    # An account SAS (the storage format of version 2019-12-12) signed with Azurite's
    # well-known key: what the floor and stowage both authenticate with.
    SAS="$(python3 - <<'PY'
import base64, hashlib, hmac, urllib.parse
key = base64.b64decode("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
f = dict(sp="rwdlac", ss="b", srt="sco", st="2020-01-01T00:00:00Z", se="2099-01-01T00:00:00Z", spr="http,https", sv="2019-12-12")
s = "\n".join(["devstoreaccount1", f["sp"], f["ss"], f["srt"], f["st"], f["se"], "", f["spr"], f["sv"], ""])
f["sig"] = base64.b64encode(hmac.new(key, s.encode(), hashlib.sha256).digest()).decode()
print(urllib.parse.urlencode(f))
PY
)"
    echo -n "$SAS" >"$WORK/azure_sas"
    curl -sSf -X PUT -H "Content-Length: 0" "$AZ_URL/bench?restype=container&$SAS" >/dev/null \
        || die "creating container bench on Azurite failed"
    log "Azurite $("$AZURITE" --version 2>/dev/null || echo '?') on 127.0.0.1:$AZ_PORT"
fi

# ---------------------------------------------------------------------------------------
# Measurements
# ---------------------------------------------------------------------------------------
dump() { pg_dump -Fc -Z0 -d "$DB"; }

floor_sftp() {
    dump | zstd -3 -T1 -q | ssh -F /dev/null -i "$WORK/ssh/client_key" -p "$SSH_PORT" \
        -o UserKnownHostsFile="$WORK/ssh/known_hosts" -o StrictHostKeyChecking=yes -o BatchMode=yes \
        "$(id -un)@127.0.0.1" "cat > '$WORK/sftp/floor/db.pgdump.zst'"
}
floor_webdav() {
    dump | zstd -3 -T1 -q | curl -sSf -u bench:bench-password -T - "http://127.0.0.1:$DAV_PORT/floor.pgdump.zst"
}
# Each 8 MiB piece is one Put Block (one curl, sequential), then one Put Block List naming
# them in order.
floor_azblob() {
    local blob="$AZ_URL/bench/floor.pgdump.zst" ids="$WORK/azure_blocks"
    : >"$ids"
    export AZ_BLOB="$blob" SAS AZ_IDS="$ids"
    dump | zstd -3 -T1 -q | split -b 8388608 -a 6 -d - b --filter '
        id=$(printf %s "$FILE" | base64 -w0)
        curl -sSf -X PUT -H "Content-Type: application/octet-stream" --data-binary @- \
            "$AZ_BLOB?comp=block&blockid=$(printf %s "$id" | sed "s/+/%2B/g; s/\//%2F/g; s/=/%3D/g")&$SAS" \
            && echo "$id" >>"$AZ_IDS"'
    { echo '<?xml version="1.0" encoding="utf-8"?><BlockList>'
      sed 's|.*|<Latest>&</Latest>|' "$ids"
      echo '</BlockList>'
    } | curl -sSf -X PUT --data-binary @- "$blob?comp=blocklist&$SAS" >/dev/null
}

destination_toml() {
    case "$1" in
        sftp) cat <<EOF
type = "sftp"
host = "127.0.0.1"
port = $SSH_PORT
user = "$(id -un)"
key_file = "$WORK/ssh/client_key"
known_hosts = "$WORK/ssh/known_hosts"
path = "$WORK/sftp/stowage"
EOF
        ;;
        webdav) cat <<EOF
type = "webdav"
url = "http://127.0.0.1:$DAV_PORT/stowage"
username = "bench"
password_file = "$WORK/dav_password"
EOF
        ;;
        azblob) cat <<EOF
type = "azblob"
account_name = "devstoreaccount1"
container = "bench"
prefix = "stowage"
endpoint = "$AZ_URL"
sas_token_file = "$WORK/azure_sas"
EOF
        ;;
    esac
}

run_stowage() { # kind n
    local cfg="$WORK/$1-$2.toml"
    { echo "[destinations.$1]"; destination_toml "$1"
      printf '\n[jobs.bench]\nschedule = "@daily"\ncompression = "zstd"\ndestinations = ["%s"]\n' "$1"
      printf '\n[[jobs.bench.sources]]\ntype = "postgres"\nname = "db"\nurl = "%s"\n' "$DB"
    } >"$cfg"
    "$STOWAGE" --config "$cfg" run bench
}

# timed LABEL FUNC ARGS...: wall seconds and peak RSS (KiB; GNU time's figure is the largest
# single process of the tree: stowage itself, or zstd/ssh/curl for a floor).
export -f dump floor_sftp floor_webdav floor_azblob destination_toml run_stowage
export WORK DB STOWAGE SSH_PORT DAV_PORT AZ_URL SAS
timed() {
    local label="$1"; shift
    sync
    /usr/bin/time -f "%e %M" -o "$WORK/$label.time" bash -c '"$@"' _ "$@" \
        >"$WORK/$label.log" 2>&1 || { cat "$WORK/$label.log" >&2; die "$label failed"; }
    tail -1 "$WORK/$label.time"
}
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

RESULTS=()
for kind in sftp webdav azblob; do
    want "$kind" || continue
    best_floor="" best_stowage="" rss_stowage=0
    for n in $(seq 1 "$REPEAT"); do
        read -r wall _ < <(timed "floor-$kind-$n" "floor_$kind")
        log "$kind floor #$n: ${wall}s"
        [[ -z "$best_floor" ]] || lt "$wall" "$best_floor" && best_floor=$wall
        read -r wall rss < <(timed "stowage-$kind-$n" run_stowage "$kind" "$n")
        log "$kind stowage #$n: ${wall}s, peak RSS $((rss / 1024)) MiB"
        [[ -z "$best_stowage" ]] || lt "$wall" "$best_stowage" && best_stowage=$wall
        (( rss > rss_stowage )) && rss_stowage=$rss
    done
    ratio=$(awk -v a="$best_stowage" -v b="$best_floor" 'BEGIN { printf "%.3f", a / b }')
    log "$kind: floor ${best_floor}s, stowage ${best_stowage}s, ratio $ratio, peak RSS $((rss_stowage / 1024)) MiB"
    RESULTS+=("\"$kind\": {\"floor_s\": $best_floor, \"stowage_s\": $best_stowage, \"ratio\": $ratio, \"stowage_peak_rss_kib\": $rss_stowage}")
done

mkdir -p "$RESULTS_DIR"
out="$RESULTS_DIR/destinations-$(date -u +%Y%m%dT%H%M%SZ).json"
{
    printf '{"commit": "%s", "binary": "%s", "db_bytes": %s, "repeat": %s, "loadavg": "%s",\n' \
        "$GIT_REV" "$STOWAGE_ID" "$DB_BYTES" "$REPEAT" "$(cut -d' ' -f1-3 /proc/loadavg)"
    (IFS=,; printf ' %s}\n' "${RESULTS[*]}")
} >"$out"
log "results: $out"
cat "$out"
