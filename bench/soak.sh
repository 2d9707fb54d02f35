#!/usr/bin/env bash
# The long soak: tests/soak.rs on a release build with many runs (default 300), its counts
# and RSS curve written to bench/results/<UTC>-soak-<runs>.json. See bench/README.md.
#
#   bench/soak.sh                  # 300 runs, a seed from the clock
#   bench/soak.sh --runs 600 --seed 7
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=300
SEED="$(date +%s)"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS="$2"; shift 2 ;;
        --seed) SEED="$2"; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "bench/soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

bash tests/setup.sh >/dev/null
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="bench/results/$stamp-soak-$RUNS.json"
log="${STOWAGE_SOAK_LOG:-${TMPDIR:-/tmp}/stowage-soak-$stamp.log}"
echo "soak: $RUNS runs, seed $SEED; daemon output in $log" >&2
STOWAGE_SOAK_RUNS="$RUNS" STOWAGE_SOAK_SEED="$SEED" STOWAGE_SOAK_OUT="$out" \
    STOWAGE_SOAK_LOG="$log" \
    cargo test --release --locked --test soak -- --nocapture --test-threads 1
echo "soak: results in $out" >&2
