#!/usr/bin/env bash
# Benchmark (issue 15, "Scale"): a files source of 1,000,000 small files backed up and
# restored with the release binary, peak RSS and wall time of each step:
#
#   generate   1000 directories × 1000 files, distinct contents of a few hundred bytes
#   first      stowage run: every content uploaded as a blob
#   unchanged  stowage run again: must upload nothing (blob objects counted before/after)
#   restore    stowage restore into an empty directory
#   compare    sha256 of every restored file, sorted by path, hashed; compared with the same
#              hash of the generated tree (taken before the first backup; the source is
#              removed before the restore so that two trees, not three, must fit in memory
#              when --work is a tmpfs)
#
# The destination is a LOCAL directory: moto answers ~1,000 requests a second at best, so a
# million blob PUTs would measure moto, not stowage (the S3 path is covered at small sizes
# by tests/stream_index.rs). Peak RSS is GNU time's "Maximum resident set size" of the
# stowage process; wall time is GNU time's "Elapsed".
#
#   bench/million.sh                          # 1,000,000 files under $TMPDIR (or --work)
#   bench/million.sh --dirs 20 --per-dir 100  # smoke test: 2,000 files
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

DIRS=1000
PER_DIR=1000
BUILD=1
KEEP_WORK=0
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
WORK_PARENT="${TMPDIR:-/tmp}"
LIMIT_MIB=64

usage() {
    cat <<EOF
usage: bench/million.sh [options]
  --dirs N           directories (default 1000)
  --per-dir N        files in each (default 1000)
  --work DIR         where the tree, the destination and the restore go (default \$TMPDIR or /tmp).
                     The local destination and the restore fsync every file: on this VM's disk
                     that is ~8 ms a file (hours for 1M); a tmpfs (/dev/shm) takes fsync out of
                     the figures and needs ~10 GiB for 1M files (two trees at a time)
  --stowage PATH     stowage binary to test (default: build and use target/release/stowage)
  --no-build         do not run cargo build --release --locked (uses the existing binary)
  --results-dir DIR  where the JSON goes (default bench/results)
  --keep-work        keep the work directory (trees, destination, logs, GNU time outputs)
EOF
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dirs) DIRS="$2"; shift 2 ;;
        --per-dir) PER_DIR="$2"; shift 2 ;;
        --work) WORK_PARENT="$2"; shift 2 ;;
        --stowage) STOWAGE="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --keep-work) KEEP_WORK=1; shift ;;
        --results-dir) RESULTS_DIR="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
[[ "$DIRS" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --dirs: $DIRS" >&2; exit 2; }
[[ "$PER_DIR" =~ ^[1-9][0-9]*$ ]] || { echo "invalid --per-dir: $PER_DIR" >&2; exit 2; }
NFILES=$((DIRS * PER_DIR))

log() { printf '[bench-million %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x /usr/bin/time ]] || { log "installing GNU time"; apt-get install -y -qq time >/dev/null; }
command -v python3 >/dev/null || die "python3 is needed to generate the tree"

if [[ -z "$STOWAGE" ]]; then
    TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
    if [[ "$BUILD" == 1 ]]; then
        log "building the release binary"
        (cd "$ROOT" && cargo build --release --locked --quiet)
    fi
    STOWAGE="$TARGET/release/stowage"
fi
[[ -x "$STOWAGE" ]] || die "no stowage binary at $STOWAGE"

mkdir -p "$WORK_PARENT" "$RESULTS_DIR"
WORK="$(mktemp -d "$WORK_PARENT/stowage-million.XXXXXX")"
cleanup() {
    if [[ "$KEEP_WORK" == 1 ]]; then
        log "work kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
SRC="$WORK/tree"
DEST="$WORK/dest"
RESTORED="$WORK/restored"
CONFIG="$WORK/stowage.toml"
FS="$(df -T "$WORK" | awk 'NR==2 {print $2}')"

cat >"$CONFIG" <<EOF
[log]
level = "warn"

[destinations.local]
type = "local"
path = "$DEST"
retention = { keep_last = 10 }

[jobs.million]
schedule = "0 3 * * *"
destinations = ["local"]
compression = "zstd"

[[jobs.million.sources]]
type = "files"
name = "tree"
path = "$SRC"
EOF

# step NAME CMD...: run CMD under GNU time into $WORK/NAME.{time,log}.
step() {
    local name="$1" rc=0
    shift
    log "$name: $*"
    /usr/bin/time -v -o "$WORK/$name.time" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    if [[ "$rc" != 0 ]]; then
        tail -n 40 "$WORK/$name.log" >&2
        die "$name exited with $rc"
    fi
}

blob_count() { find "$DEST/million/blobs" -type f 2>/dev/null | wc -l; }

step generate python3 - "$SRC" "$DIRS" "$PER_DIR" <<'PY'
import hashlib, os, sys
root, dirs, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for d in range(dirs):
    dd = os.path.join(root, f"d{d:04}")
    os.makedirs(dd, exist_ok=True)
    for f in range(per):
        seed = hashlib.sha256(f"{d}/{f}".encode()).hexdigest()
        # A few hundred bytes, distinct per file, text-like (compresses somewhat).
        body = (f"file {d}/{f} {seed}\n" * (2 + (d * per + f) % 6)).encode()
        with open(os.path.join(dd, f"f{f:04}.txt"), "wb") as fh:
            fh.write(body)
PY
SRC_BYTES=$(du -sb --apparent-size "$SRC" | cut -f1)

tree_hash() {
    (cd "$1" && find . -type f -print0 | sort -z | xargs -0 -P2 -n 2000 sha256sum | sort -k2 | sha256sum | cut -d' ' -f1)
}
# Hashed now, so the source can go before the restore: three trees of a million files do
# not fit in a tmpfs next to everything else.
HASH_SRC=$(tree_hash "$SRC")
COUNT_SRC=$(find "$SRC" -type f | wc -l)

step first "$STOWAGE" --config "$CONFIG" run million
BLOBS_FIRST=$(blob_count)
step unchanged "$STOWAGE" --config "$CONFIG" run million
BLOBS_SECOND=$(blob_count)
rm -rf "$SRC"
mkdir -p "$RESTORED"
step restore "$STOWAGE" --config "$CONFIG" restore million latest --files-to "$RESTORED" \
    --orphans-to "$WORK/orphans"

COUNT_RESTORED=$(find "$RESTORED" -type f | wc -l)
[[ "$COUNT_RESTORED" == "$COUNT_SRC" ]] || die "restored $COUNT_RESTORED files of $COUNT_SRC"
step compare bash -c "cd '$RESTORED' && find . -type f -print0 | sort -z | xargs -0 -P2 -n 2000 sha256sum | sort -k2 | sha256sum | cut -d' ' -f1 > '$WORK/restored.sha256'"
HASH_RESTORED=$(cat "$WORK/restored.sha256")
[[ "$HASH_SRC" == "$HASH_RESTORED" ]] || die "restored tree differs (sha256 of the trees: $HASH_SRC vs $HASH_RESTORED)"
INDEX_BYTES=$(find "$DEST/million" -name 'tree.files.json.zst' -printf '%s\n' | tail -n1)

OUT="$RESULTS_DIR/million-$(date -u +%Y%m%dT%H%M%SZ).json"
python3 - "$WORK" "$OUT" "$NFILES" "$SRC_BYTES" "$BLOBS_FIRST" "$BLOBS_SECOND" "$FS" \
    "$HASH_SRC" "$INDEX_BYTES" "$LIMIT_MIB" "$STOWAGE" <<'PY'
import json, os, platform, re, subprocess, sys
work, out, nfiles, src_bytes, b1, b2, fs, tree_hash, index_bytes, limit, binary = sys.argv[1:12]

def gnu_time(name):
    t = open(os.path.join(work, name + ".time")).read()
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    user = float(re.search(r"User time \(seconds\): (\S+)", t).group(1))
    system = float(re.search(r"System time \(seconds\): (\S+)", t).group(1))
    return {"wall_s": round(secs, 2), "cpu_s": round(user + system, 2),
            "peak_rss_kib": rss, "peak_rss_mib": round(rss / 1024, 1)}

steps = {n: gnu_time(n) for n in ["generate", "first", "unchanged", "restore", "compare"]}
limit_kib = int(limit) * 1024
result = {
    "benchmark": "million",
    "files": int(nfiles),
    "tree_bytes": int(src_bytes),
    "filesystem": fs,
    "destination": "local directory (moto too slow for 1M objects)",
    "blobs_after_first": int(b1),
    "blobs_after_unchanged": int(b2),
    "unchanged_uploaded_blobs": int(b2) - int(b1),
    "index_bytes": int(index_bytes or 0),
    "tree_sha256": tree_hash,
    "restored_identical": True,
    "steps": steps,
    "peak_rss_limit_mib": int(limit),
    "within_limit": all(steps[s]["peak_rss_kib"] <= limit_kib for s in ["first", "unchanged", "restore"]),
    "stowage": subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip(),
    "host": {"cpus": os.cpu_count(), "kernel": platform.release()},
}
json.dump(result, open(out, "w"), indent=2)
print(json.dumps(result, indent=2))
PY
log "result: $OUT"
(( BLOBS_SECOND == BLOBS_FIRST )) || die "the unchanged backup uploaded $((BLOBS_SECOND - BLOBS_FIRST)) blob(s)"
