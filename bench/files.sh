#!/usr/bin/env bash
# Benchmark: stowage's `files` source on an unchanged tree, against `aws s3 sync` of the same
# tree to the same S3 server (moto on loopback), all in one run. Generates a seeded tree of
# random (incompressible) files, then, per repetition:
#
#   stowage, immutable = false:  first backup (everything uploaded), then a backup of the
#                                unchanged tree with the tree in the page cache (warm) and
#                                one with it evicted (cold)
#   stowage, immutable = true:   the same (size+mtime match the previous backup: nothing read)
#   aws s3 sync:                 initial sync, then a re-sync of the unchanged tree, warm and cold
#
# and counts, from moto's request log, the requests each one sent (by method; PUT/POST to
# `/blobs/` = file content uploaded). Each contender gets its own bucket, emptied after its
# cycle. See bench/README.md ("Files source") for how to read the figures.
#
#   bench/files.sh                                        # 10,000 files, ~1 GiB, 3 repetitions
#   bench/files.sh --files 500 --total-mib 50 --repeat 1  # smoke test
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

NFILES=10000
TOTAL_MIB=1024
SEED=42
REPEAT=3
BUILD=1
KEEP_WORK=0
IDLE_WAIT=120
IDLE_MAX_PCT=15
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
TOOLS="${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}"
VENV="$TOOLS/venv"

usage() {
    cat <<EOF
usage: bench/files.sh [options]
  --files N          number of files in the generated tree (default 10000)
  --total-mib M      their total size in MiB (default 1024)
  --seed S           seed of the generator (default 42): same seed, same tree (names, sizes, bytes, mtimes)
  --repeat N         repeat the whole cycle (first + second backups, initial sync + re-sync) N times,
                     each into a fresh prefix; medians are reported (default 3)
  --stowage PATH     stowage binary to test (default: build and use target/release/stowage)
  --no-build         do not run cargo build --release --locked (uses the existing binary)
  --results-dir DIR  where the JSON goes (default bench/results)
  --idle-wait SECS   before each measurement wait up to SECS (default 120, 0 = never) for the machine's
                     CPU use to drop under ${IDLE_MAX_PCT}%
  --keep-work        keep the temp dir (tree, moto log, configs, stowage logs, GNU time outputs)
env: STOWAGE_TOOLS (venv with the pinned moto and awscli, see tests/setup.sh), TMPDIR
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --files) NFILES="$2"; shift 2 ;;
        --total-mib) TOTAL_MIB="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
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
[[ "$NFILES" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --files: $NFILES" >&2; exit 2; }
[[ "$TOTAL_MIB" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --total-mib: $TOTAL_MIB" >&2; exit 2; }
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "invalid --seed: $SEED" >&2; exit 2; }
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --repeat: $REPEAT" >&2; exit 2; }
[[ "$IDLE_WAIT" =~ ^[0-9]+$ ]] || { echo "invalid --idle-wait: $IDLE_WAIT" >&2; exit 2; }
(( TOTAL_MIB * 1024 / NFILES >= 4 )) || { echo "--total-mib too small for --files (need >= 4 KiB a file)" >&2; exit 2; }

log() { printf '[bench-files %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools: GNU time (apt, only when missing), the pinned moto + awscli venv, the binary
# ---------------------------------------------------------------------------------------
if [[ ! -x /usr/bin/time ]]; then
    log "installing GNU time"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null \
        || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null; }
fi
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is missing and could not be installed"

if [[ ! -x "$VENV/bin/moto_server" || ! -x "$VENV/bin/aws" ]]; then
    [[ -f "$ROOT/tests/setup.sh" ]] || die "no moto/awscli in $VENV and no tests/setup.sh to make them"
    log "setting up moto/awscli with tests/setup.sh"
    STOWAGE_TOOLS="$TOOLS" bash "$ROOT/tests/setup.sh" >&2
fi
[[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/aws" ]] || die "moto_server/aws not found in $VENV"
PY="$VENV/bin/python"
AWS="$VENV/bin/aws"

if [[ -z "$STOWAGE" ]]; then
    STOWAGE="${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage"
fi
if [[ "$BUILD" == 1 ]]; then
    log "cargo build --release --locked (waits if another build holds the lock)"
    (cd "$ROOT" && cargo build --release --locked --quiet) || die "cargo build --release --locked failed"
fi
[[ -x "$STOWAGE" ]] || die "stowage binary not found at $STOWAGE (build it or pass --stowage)"

# ---------------------------------------------------------------------------------------
# Temp dir, cleanup
# ---------------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench-files.XXXXXX")"
MOTO_PID=""
cleanup() {
    local rc=$?
    set +e
    if [[ -n "$MOTO_PID" ]]; then
        kill "$MOTO_PID" 2>/dev/null
        wait "$MOTO_PID" 2>/dev/null
    fi
    if [[ "$KEEP_WORK" == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'exit 143' HUP

# A private copy: a concurrent `cargo build` must not swap the binary between measurements.
cp "$STOWAGE" "$WORK/stowage"
STOWAGE_SRC="$STOWAGE"
STOWAGE="$WORK/stowage"
STOWAGE_ID="$(sha256sum "$STOWAGE" | cut -c1-16) built $(date -u -r "$STOWAGE_SRC" +%Y-%m-%dT%H:%M:%SZ)"
if GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"; then
    git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
else
    GIT_REV="unknown"
fi
UPTIME_START="$(uptime)"
log "stowage: $STOWAGE_SRC ($("$STOWAGE" --version 2>/dev/null || echo '?'); sha256 $STOWAGE_ID; tree $GIT_REV)"
log "load: $UPTIME_START"

# Everything stays on loopback; S3 credentials are dummies (moto does not check them).
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true

# ---------------------------------------------------------------------------------------
# 1. The tree: seeded, random bytes, nested directories, fixed mtimes
# ---------------------------------------------------------------------------------------
TREE="$WORK/tree"
log "generating $NFILES files, $TOTAL_MIB MiB in total (seed $SEED) in $TREE"
"$PY" - "$TREE" "$NFILES" "$TOTAL_MIB" "$SEED" >"$WORK/tree.json" <<'PY'
import json, os, random, sys, time

root, n, total_mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
KiB, MiB = 1024, 1024 * 1024
total = total_mib * MiB
t0 = time.time()
rng = random.Random(seed)
# 0.5% of the files (at least one) are 1-4 MiB (above stowage's 1 MiB "small file" limit, so
# they take the streamed path); the rest draw 20-200 KiB and are scaled to hit the total.
n_big = max(1, n // 200) if n >= 20 else 0
big = [rng.randint(1 * MiB, 4 * MiB) for _ in range(n_big)]
if sum(big) > total // 4:
    big = [b * (total // 4) // sum(big) for b in big]
small = [rng.randint(20 * KiB, 200 * KiB) for _ in range(n - n_big)]
scale = (total - sum(big)) / max(1, sum(small))
small = [max(1, int(s * scale)) for s in small]
sizes = small + big
sizes[0] += total - sum(sizes)          # exact total
order = list(range(n))
rng.shuffle(order)                      # big files land in random directories
dirs = [f"d{a:02d}/s{b:02d}" for a in range(10) for b in range(10)]   # 100 leaf directories
for d in dirs:
    os.makedirs(os.path.join(root, d), exist_ok=True)
base_mtime = 1_700_000_000
for i, k in enumerate(order):
    p = os.path.join(root, dirs[i % len(dirs)], f"f{i:06d}.bin")
    with open(p, "wb") as f:
        f.write(rng.randbytes(sizes[k]))
    os.utime(p, ns=((base_mtime + i) * 10**9,) * 2)
s = sorted(sizes)
print(f"  {n} files, {sum(sizes) / MiB:.1f} MiB, sizes {s[0] // KiB}..{s[(n - 1) // 2] // KiB}..{s[-1] // KiB} KiB"
      f" (min..median..max), {sum(1 for x in sizes if x > MiB)} over 1 MiB, in {time.time() - t0:.1f} s", file=sys.stderr)
json.dump({"files": n, "bytes": sum(sizes), "dirs": len(dirs), "seed": seed,
           "size_min": s[0], "size_median": s[(n - 1) // 2], "size_max": s[-1],
           "files_over_1mib": sum(1 for x in sizes if x > MiB),
           "generate_s": round(time.time() - t0, 2)}, sys.stdout)
PY

# ---------------------------------------------------------------------------------------
# 2. moto (pinned, from the venv) on a random loopback port; its request log goes to a file
# ---------------------------------------------------------------------------------------
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
MOTO_PORT="$(free_port)"
MOTO_LOG="$WORK/moto.log"
log "starting moto_server ($("$VENV/bin/pip" show moto 2>/dev/null | awk '/^Version:/ {print $2}')) on 127.0.0.1:$MOTO_PORT"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$MOTO_LOG" 2>&1 &
MOTO_PID=$!
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do
    if "$PY" -c "import urllib.request; urllib.request.urlopen('$ENDPOINT/', timeout=1)" 2>/dev/null; then
        break
    fi
    kill -0 "$MOTO_PID" 2>/dev/null || { cat "$MOTO_LOG" >&2; die "moto_server exited"; }
    sleep 0.2
done
# One bucket per contender: moto lists a prefix by scanning (and sorting) every key of the
# bucket, so a listing would otherwise get slower with the other contenders' objects.
for b in stowage-mutable stowage-immutable sync; do
    "$AWS" --endpoint-url "$ENDPOINT" s3 mb "s3://$b" >/dev/null
done
AWS_VERSION="$("$AWS" --version 2>&1 | awk '{print $1}')"
printf 'test\n' >"$WORK/secret"
chmod 600 "$WORK/secret"

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
proc_ticks() {
    local st f
    st=$(<"/proc/$1/stat")
    read -r -a f <<<"${st##*) }"
    echo $(( f[11] + f[12] + f[13] + f[14] ))
}
cpu_snapshot() { # busy ticks of the whole machine, moto's ticks
    local c
    read -r -a c </proc/stat
    echo "$(( c[1] + c[2] + c[3] + c[6] + c[7] + c[8] )) $(proc_ticks "$MOTO_PID")"
}
wait_idle() { # DIR: wait (bounded) for other work to calm down; record what we saw
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
log_size() { stat -c %s "$MOTO_LOG"; }

# tree_cache MODE OUT: put the tree's content in the page cache (warm: read every file once)
# or take it out (cold: posix_fadvise DONTNEED on every file; only this tree's pages, nothing
# else on the machine), then write {"prep_s", "resident_bytes"} (fincore) to OUT.
tree_cache() {
    "$PY" - "$TREE" "$1" >"$2" <<'PY'
import json, os, subprocess, sys, time
root, mode = sys.argv[1], sys.argv[2]
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
t0 = time.time()
if mode == "warm":
    for p in files:
        with open(p, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass
elif mode == "cold":
    os.sync()
    for p in files:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
prep = time.time() - t0
resident = None
try:
    resident = 0
    for i in range(0, len(files), 2000):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "RES", *files[i:i + 2000]],
                             check=True, capture_output=True, text=True).stdout
        resident += sum(int(x) for x in out.split())
except (OSError, subprocess.CalledProcessError, ValueError):
    resident = None
json.dump({"mode": mode, "prep_s": round(prep, 2), "resident_bytes": resident}, sys.stdout)
PY
}

# measure DIR CACHE CMD...: wait for a quiet machine, put the tree's content in the page cache
# or take it out (CACHE = warm|cold), then run CMD under GNU time; record wall, CPU and
# moto's request-log window. Warm-up comes after the wait: this VM pages out memory nobody
# touched for ~30 s (DAMON), page cache included.
measure() {
    local d="$1" cache="$2" t0 t1 rc=0
    shift 2
    mkdir -p "$d"
    wait_idle "$d"
    tree_cache "$cache" "$d/cache.json"
    kill -0 "$MOTO_PID" 2>/dev/null || die "moto_server is gone (see $MOTO_LOG)"
    log_size >"$d/log0"
    cpu_snapshot >"$d/cpu0"
    t0=$(now)
    /usr/bin/time -v -o "$d/time" "$@" >"$d/out.log" 2>&1 || rc=$?
    t1=$(now)
    sleep 0.3    # moto logs a request as it answers it; let the last lines land
    cpu_snapshot >"$d/cpu1"
    log_size >"$d/log1"
    echo "$t0 $t1" >"$d/wall"
    if [[ "$rc" != 0 ]]; then
        tail -n 40 "$d/out.log" >&2
        die "command exited with $rc: $*"
    fi
}

# s3_summary BUCKET PREFIX OUT: "objects bytes" under s3://BUCKET/PREFIX/ (outside any measurement)
s3_summary() {
    "$PY" - "$ENDPOINT" "$1" "$2/" >"$3" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
n = size = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2], Prefix=sys.argv[3]):
    for o in page.get("Contents", []):
        n += 1
        size += o["Size"]
print(n, size)
PY
}

# s3_clear BUCKET: delete everything in it (moto keeps objects in memory). Lists first, then
# deletes in batches: `aws s3 rm --recursive` deletes while it pages, and moto's listing
# then fails with a 500 (KeyError on a key deleted under its iteration).
s3_clear() {
    "$PY" - "$ENDPOINT" "$1" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2])
        for o in page.get("Contents", [])]
for i in range(0, len(keys), 1000):
    r = s3.delete_objects(Bucket=sys.argv[2], Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
    if r.get("Errors"):
        sys.exit(f"delete_objects: {r['Errors'][:3]}")
PY
}

write_config() { # file bucket prefix immutable
    cat >"$1" <<EOF
[log]
level = "info"

[destinations.s3]
type = "s3"
bucket = "$2"
prefix = "$3"
endpoint = "$ENDPOINT"
force_path_style = true
access_key_id = "test"
secret_access_key_file = "$WORK/secret"
retention = { keep_last = 100 }

[jobs.media]
schedule = "0 3 * * *"
destinations = ["s3"]

[[jobs.media.sources]]
type = "files"
name = "media"
path = "$TREE"
immutable = $4
EOF
}

# stowage_cycle DIR BUCKET PREFIX IMMUTABLE: first backup, then the second one of the unchanged tree
stowage_cycle() {
    local d="$1" bucket="$2" prefix="$3" imm="$4"
    mkdir -p "$d"
    write_config "$d/stowage.toml" "$bucket" "$prefix" "$imm"
    "$STOWAGE" --config "$d/stowage.toml" check-config >"$d/check-config.log" 2>&1 \
        || { cat "$d/check-config.log" >&2; die "check-config failed"; }
    log "  [$r/$REPEAT] stowage, immutable = $imm: first backup"
    measure "$d/first" warm "$STOWAGE" --config "$d/stowage.toml" run media
    s3_summary "$bucket" "$prefix/media/blobs" "$d/blobs-after-first"
    log "  [$r/$REPEAT] stowage, immutable = $imm: second backup, unchanged tree, warm page cache"
    measure "$d/second-warm" warm "$STOWAGE" --config "$d/stowage.toml" run media
    s3_summary "$bucket" "$prefix/media/blobs" "$d/blobs-after-second-warm"
    log "  [$r/$REPEAT] stowage, immutable = $imm: another backup, unchanged tree, cold page cache"
    measure "$d/second-cold" cold "$STOWAGE" --config "$d/stowage.toml" run media
    s3_summary "$bucket" "$prefix/media/blobs" "$d/blobs-after-second-cold"
    s3_clear "$bucket"
}

# sync_cycle DIR BUCKET PREFIX: aws s3 sync of the tree, then again (unchanged)
sync_cycle() {
    local d="$1" bucket="$2" prefix="$3"
    mkdir -p "$d"
    log "  [$r/$REPEAT] aws s3 sync: initial"
    measure "$d/first" warm "$AWS" s3 sync "$TREE" "s3://$bucket/$prefix" --endpoint-url "$ENDPOINT" --only-show-errors
    s3_summary "$bucket" "$prefix" "$d/objects-after-first"
    log "  [$r/$REPEAT] aws s3 sync: re-sync, unchanged tree, warm page cache"
    measure "$d/second-warm" warm "$AWS" s3 sync "$TREE" "s3://$bucket/$prefix" --endpoint-url "$ENDPOINT" --only-show-errors
    s3_summary "$bucket" "$prefix" "$d/objects-after-second-warm"
    log "  [$r/$REPEAT] aws s3 sync: re-sync, unchanged tree, cold page cache"
    measure "$d/second-cold" cold "$AWS" s3 sync "$TREE" "s3://$bucket/$prefix" --endpoint-url "$ENDPOINT" --only-show-errors
    s3_summary "$bucket" "$prefix" "$d/objects-after-second-cold"
    s3_clear "$bucket"
}

# ---------------------------------------------------------------------------------------
# 3./4. The measurements, N repetitions; every cycle starts with an empty bucket
# ---------------------------------------------------------------------------------------
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$RESULTS_DIR"
for r in $(seq 1 "$REPEAT"); do
    rd="$WORK/r$r"
    stowage_cycle "$rd/mutable" stowage-mutable "r$r" false
    stowage_cycle "$rd/immutable" stowage-immutable "r$r" true
    sync_cycle "$rd/sync" sync "r$r"
done
UPTIME_END="$(uptime)"
log "load: $UPTIME_END"

# ---------------------------------------------------------------------------------------
# 5. Report
# ---------------------------------------------------------------------------------------
JSON="$RESULTS_DIR/$STAMP-files-${NFILES}f-${TOTAL_MIB}mib.json"
"$PY" - "$WORK" "$REPEAT" "$JSON" "$MOTO_LOG" "$STOWAGE_SRC" "$STOWAGE_ID" "$GIT_REV" \
    "$UPTIME_START" "$UPTIME_END" "$AWS_VERSION" <<'PY'
import json, os, platform, re, sys
from collections import Counter
from datetime import datetime, timezone

work, repeat, out, moto_log = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
stowage, stowage_id, git_rev, up0, up1, aws_version = sys.argv[5:11]
MiB = 1024 * 1024
HZ = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1
REQ = re.compile(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) ')
LOGLINE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z)\s+(\w+)\s+\S+: (.*)$")

def read(p):
    with open(p) as f:
        return f.read().strip()

def gnu_time(p):
    t = {}
    for line in read(p).splitlines():
        k, _, v = line.strip().rpartition(": ")
        t[k] = v
    return {"cpu_s": float(t["User time (seconds)"]) + float(t["System time (seconds)"]),
            "peak_rss_mib": int(t["Maximum resident set size (kbytes)"]) / 1024,
            # "File system inputs" are 512-byte blocks read from the disk (page cache misses)
            "disk_read_mib": int(t["File system inputs"]) * 512 / MiB}

with open(moto_log, "rb") as f:
    LOG = f.read()

def requests(d):
    a, b = int(read(f"{d}/log0")), int(read(f"{d}/log1"))
    methods, statuses = Counter(), Counter()
    blob_writes = blob_reads = lists = 0
    for line in LOG[a:b].decode("utf-8", "replace").splitlines():
        m = REQ.search(line)
        if not m:
            continue
        meth, path, status = m.groups()
        methods[meth] += 1
        statuses[status] += 1
        key, _, query = path.partition("?")
        if "/blobs/" in key:
            if meth in ("PUT", "POST"):
                blob_writes += 1
            elif meth in ("GET", "HEAD"):
                blob_reads += 1
        if meth == "GET" and key.strip("/").count("/") == 0 and "list-type" in query:
            lists += 1
    return {"total": sum(methods.values()), "by_method": dict(sorted(methods.items())),
            "by_status": dict(sorted(statuses.items())), "content_puts_to_blobs": blob_writes,
            "blob_gets_heads": blob_reads, "list_object_pages": lists}

def summary(p):
    o, s = read(p).split()
    return {"objects": int(o), "bytes": int(s)}

def load(d):
    w0, w1 = (float(x) for x in read(f"{d}/wall").split())
    c0 = [int(x) for x in read(f"{d}/cpu0").split()]
    c1 = [int(x) for x in read(f"{d}/cpu1").split()]
    machine, moto = ((b - a) / HZ for a, b in zip(c0, c1))
    t = gnu_time(f"{d}/time")
    cache = json.loads(read(f"{d}/cache.json"))
    m = {"wall_s": w1 - w0, "cpu_s": t["cpu_s"], "moto_cpu_s": moto, "peak_rss_mib": t["peak_rss_mib"],
         "disk_read_mib": t["disk_read_mib"], "page_cache": cache["mode"],
         "tree_resident_mib_before": None if cache["resident_bytes"] is None else cache["resident_bytes"] / MiB,
         "cache_prep_s": cache["prep_s"],
         "loadavg_before": float(read(f"{d}/loadavg").split()[0]),
         "other_cpu_busy_pct_before": int(read(f"{d}/busy")),
         "requests": requests(d)}
    m["other_cpu_s"] = max(0.0, machine - t["cpu_s"] - moto)
    m["clean"] = m["other_cpu_s"] <= 0.05 * CPUS * (m["wall_s"] + 0.3)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", l).strip() for l in read(f"{d}/out.log").splitlines()]
    summ = [l for l in lines if "backup success" in l]
    if summ:
        m["stowage_summary"] = summ[-1]
        # stowage's own log, as seconds since the command was started: where the time went
        stages = []
        for l in lines:
            g = LOGLINE.match(l)
            if g:
                ts = datetime.strptime(g.group(1)[:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
                ts = ts.replace(tzinfo=timezone.utc).timestamp()
                msg = re.split(r" job=", g.group(3))[0]
                stages.append([round(ts - w0, 3), g.group(2), msg[:120]])
        m["stowage_log"] = stages
    return m

KINDS = ("mutable", "immutable")
STATES = ("warm", "cold")
RUNS = {}
for r in range(1, repeat + 1):
    for kind in KINDS:
        d = f"{work}/r{r}/{kind}"
        first = load(f"{d}/first")
        first["blobs_stored"] = b1 = summary(f"{d}/blobs-after-first")
        RUNS.setdefault(f"stowage_{kind}_first", []).append(first)
        prev = b1
        for st in STATES:
            x = load(f"{d}/second-{st}")
            b = summary(f"{d}/blobs-after-second-{st}")
            x["blobs_added"] = {"objects": b["objects"] - prev["objects"], "bytes": b["bytes"] - prev["bytes"]}
            prev = b
            RUNS.setdefault(f"stowage_{kind}_second_{st}", []).append(x)
    d = f"{work}/r{r}/sync"
    first = load(f"{d}/first")
    first["objects_stored"] = prev = summary(f"{d}/objects-after-first")
    RUNS.setdefault("aws_sync_initial", []).append(first)
    for st in STATES:
        x = load(f"{d}/second-{st}")
        o = summary(f"{d}/objects-after-second-{st}")
        x["objects_added"] = {"objects": o["objects"] - prev["objects"], "bytes": o["bytes"] - prev["bytes"]}
        prev = o
        RUNS.setdefault(f"aws_sync_resync_{st}", []).append(x)

def lower_median(v):
    v = sorted(v)
    return v[(len(v) - 1) // 2]

def pick(kind):
    """The median run by wall time among the clean ones (other work used < 5% of the CPU
    meanwhile), or among all if none was clean; every run is listed too."""
    runs = RUNS[kind]
    pool = [i for i, x in enumerate(runs) if x["clean"]] or list(range(len(runs)))
    i = sorted(pool, key=lambda i: runs[i]["wall_s"])[(len(pool) - 1) // 2]
    best = dict(runs[i])
    best["selected_run"] = i + 1
    best["max_peak_rss_mib"] = max(x["peak_rss_mib"] for x in runs)
    best["median_wall_s_all_runs"] = lower_median([x["wall_s"] for x in runs])
    best["runs"] = [{"wall_s": round(x["wall_s"], 3), "cpu_s": round(x["cpu_s"], 2),
                     "moto_cpu_s": round(x["moto_cpu_s"], 2), "other_cpu_s": round(x["other_cpu_s"], 2),
                     "peak_rss_mib": round(x["peak_rss_mib"], 1), "disk_read_mib": round(x["disk_read_mib"], 1),
                     "requests": x["requests"]["total"],
                     "content_puts_to_blobs": x["requests"]["content_puts_to_blobs"],
                     "loadavg_before": x["loadavg_before"], "clean": x["clean"]} for x in runs]
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in best.items()}

def ratio(num, den):
    """Median over the repetitions of num's wall / den's wall within the same repetition
    (measured a minute or two apart), clean pairs only unless none is."""
    pairs = list(zip(RUNS[num], RUNS[den]))
    clean = [(a, b) for a, b in pairs if a["clean"] and b["clean"]] or pairs
    per = [a["wall_s"] / b["wall_s"] for a, b in clean]
    return round(lower_median(per), 3), [round(x, 3) for x in per]

M = {k: pick(k) for k in RUNS}
ratios, per_rep = {}, {}
for kind in KINDS:
    for st in STATES:
        for den, dn in ((f"aws_sync_resync_{st}", "resync"), ("aws_sync_initial", "initial_sync")):
            k = f"stowage_{kind}_second_{st}_over_{dn}"
            ratios[k], per_rep[k] = ratio(f"stowage_{kind}_second_{st}", den)
    k = f"stowage_{kind}_first_over_initial_sync"
    ratios[k], per_rep[k] = ratio(f"stowage_{kind}_first", "aws_sync_initial")

passes = {}
for kind in KINDS:
    for st in STATES:
        runs = RUNS[f"stowage_{kind}_second_{st}"]
        passes[f"immutable_{str(kind == 'immutable').lower()}_{st}"] = {
            "zero_content_bytes_sent": all(x["requests"]["content_puts_to_blobs"] == 0
                                           and x["blobs_added"]["bytes"] == 0 for x in runs),
            "time_le_half_of_resync": ratios[f"stowage_{kind}_second_{st}_over_resync"] <= 0.5,
            "time_le_half_of_initial_sync": ratios[f"stowage_{kind}_second_{st}_over_initial_sync"] <= 0.5,
        }
tree = json.loads(read(f"{work}/tree.json"))
res = {
    "benchmark": "files source: backup of an unchanged tree vs aws s3 sync re-sync (bench/files.sh)",
    "tree": tree,
    "repeat": repeat,
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "mem_mib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MiB,
                "uptime_start": up0, "uptime_end": up1},
    "stowage_binary": stowage, "stowage_binary_id": stowage_id, "git_rev": git_rev,
    "aws": aws_version,
    "measurements": M,
    "ratios": ratios,
    "per_repetition_ratios": per_rep,
    "targets": {"content_bytes_sent_second_backup": 0, "stowage_second_over_sync_time": 0.5},
    "pass": passes,
}
with open(out, "w") as f:
    json.dump(res, f, indent=1)
    f.write("\n")

def fmt_methods(x):
    return " ".join(f"{k}:{v}" for k, v in x["requests"]["by_method"].items()) or "-"

print()
print(f"== {tree['files']} files, {tree['bytes'] / MiB:.0f} MiB (seed {tree['seed']}), "
      f"{'median of the clean runs out of ' + str(repeat) if repeat > 1 else '1 run'}; "
      f"stowage {stowage_id}, tree {git_rev}; {aws_version}")
print(f"{'':44}{'wall s':>8}{'cpu s':>7}{'moto s':>7}{'other':>6}{'RSS MiB':>8}{'disk MiB':>9}{'reqs':>6}"
      f"{'blob PUT':>9}  requests by method")
rows = [("stowage immutable=false: first backup", "stowage_mutable_first"),
        ("stowage immutable=false: SECOND, warm cache", "stowage_mutable_second_warm"),
        ("stowage immutable=false: SECOND, cold cache", "stowage_mutable_second_cold"),
        ("stowage immutable=true:  first backup", "stowage_immutable_first"),
        ("stowage immutable=true:  SECOND, warm cache", "stowage_immutable_second_warm"),
        ("stowage immutable=true:  SECOND, cold cache", "stowage_immutable_second_cold"),
        ("aws s3 sync: initial", "aws_sync_initial"),
        ("aws s3 sync: RE-SYNC, warm cache", "aws_sync_resync_warm"),
        ("aws s3 sync: RE-SYNC, cold cache", "aws_sync_resync_cold")]
for name, k in rows:
    x = M[k]
    bp = x["requests"]["content_puts_to_blobs"] if k.startswith("stowage") else "-"
    print(f"{name:44}{x['wall_s']:8.2f}{x['cpu_s']:7.2f}{x['moto_cpu_s']:7.2f}{x['other_cpu_s']:6.1f}"
          f"{x['peak_rss_mib']:8.1f}{x['disk_read_mib']:9.0f}{x['requests']['total']:6d}{bp!s:>9}  {fmt_methods(x)}")
print("    cpu s = the measured process (user+sys); moto s = moto's CPU meanwhile; other = CPU anything else used;")
print("    disk MiB = read from the disk (page cache misses; GNU time's file system inputs)")
for k in [k for _, k in rows if "second" in k or "resync" in k]:
    runs = RUNS[k]
    extra = ""
    if k.startswith("stowage"):
        extra = ("; blob PUTs " + ", ".join(str(x["requests"]["content_puts_to_blobs"]) for x in runs)
                 + "; blob bytes added " + ", ".join(str(x["blobs_added"]["bytes"]) for x in runs))
    else:
        extra = "; objects added " + ", ".join(str(x["objects_added"]["objects"]) for x in runs)
    print(f"    {k}: wall per run " + ", ".join(f"{x['wall_s']:.2f}" for x in runs) + extra)
print()
print(f"{'ratio (median of the per-repetition ratios)':56}{'immutable=false':>16}{'immutable=true':>16}")
for label, suffix in (("second backup / aws re-sync, both warm cache", "second_warm_over_resync"),
                      ("second backup / aws re-sync, both cold cache", "second_cold_over_resync"),
                      ("second backup (warm) / aws initial sync", "second_warm_over_initial_sync"),
                      ("second backup (cold) / aws initial sync", "second_cold_over_initial_sync"),
                      ("first backup / aws initial sync", "first_over_initial_sync")):
    print(f"{label:56}{ratios['stowage_mutable_' + suffix]:16.3f}{ratios['stowage_immutable_' + suffix]:16.3f}")
print()
for kind in ("false", "true"):
    for st in STATES:
        p = passes[f"immutable_{kind}_{st}"]
        r = ratios[f"stowage_{'immutable' if kind == 'true' else 'mutable'}_second_{st}_over_resync"]
        print(f"    target, immutable={kind:5}, {st} cache: 0 content bytes sent: "
              f"{'yes' if p['zero_content_bytes_sent'] else 'NO'}; <= 0.5x the re-sync's time: "
              f"{'MET' if p['time_le_half_of_resync'] else 'MISSED'} ({r:.2f}x)")
print(f"    load: start {up0.split('load average:')[-1].strip()}, end {up1.split('load average:')[-1].strip()}")
print(f"    results: {out}")
PY
