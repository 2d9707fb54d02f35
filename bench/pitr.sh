#!/usr/bin/env bash
# Benchmark (issue 28, point-in-time recovery for PostgreSQL): the three performance targets of
# a `mode = "physical"` source, each against a baseline measured in the same run:
#   base   base backup of the generated database (bench/sql) to S3 (moto) by `stowage run`,
#          beside the floor `pg_basebackup -D - -Ft -X none -c fast | zstd -3 -T1 | aws s3 cp -`
#          (the same options stowage passes); fastest of --runs each, stowage's peak RSS
#   idle   a daemon streaming WAL (pg_receivewal child) from an idle server, beside the same
#          daemon with a logical source (no stream), side by side: RSS, anonymous memory,
#          CPU time and wakeups over --idle-secs
#   ship   the streaming daemon (the same one) under a sustained write load producing at
#          least --wal-rate MiB/s of WAL for --load-secs (COPY of bench/sql rows, paced by
#          pg_current_wal_lsn): WAL produced and shipped per second, each segment's lag (when
#          the server finished it → its record's shipped_at on S3), stowage_wal_lag_seconds
#          from /metrics, and how long after the load everything written is on S3
# Starts PostgreSQL 15 and moto_server on random loopback ports; removes everything on exit.
# See bench/README.md, section "Point-in-time recovery (issue 28)".
#
#   bench/pitr.sh                                   # 1024 MiB, 3 runs, builds first
#   bench/pitr.sh --size-mb 64 --runs 1 --no-build  # smoke test (~5 min)
#   bench/pitr.sh --only ship --load-secs 120
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BENCH="$ROOT/bench"

SIZE_MB=1024
RUNS=3
LOAD_SECS=60
WAL_RATE=16
WAL_FLUSH=10
IDLE_SECS=60
SETTLE_SECS=75
IDLE_WAIT=60
IDLE_MAX_PCT=15
BUILD=1
KEEP_WORK=0
ONLY="base,idle,ship"
STOWAGE="${STOWAGE:-}"
RESULTS_DIR="$BENCH/results"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
TOOLS="${STOWAGE_TOOLS:-$HOME/.cache/stowage-tools}"
VENV="$TOOLS/venv"

usage() {
    cat <<EOF
usage: bench/pitr.sh [options]
  --size-mb N        database size in MiB of pg_database_size (default 1024)
  --runs N           base backups: floor and stowage N times each, alternating; the fastest
                     of each is reported, and stowage's highest peak RSS (default 3)
  --load-secs S      ship: how long the write load lasts (default 60)
  --wal-rate R       ship: MiB of WAL a second the load produces at least (default 16)
  --wal-flush S      the source's wal_flush in seconds (default 10, stowage's default)
  --idle-secs S      idle: the measured window (default 60)
  --settle-secs S    idle: wait this long after the daemons start before measuring (default 75,
                     as bench/idle.rs: the start's work and the heap trim a minute later are over)
  --idle-wait S      before each timed base backup wait up to S (default 60, 0 = never) for the
                     machine's CPU use to drop under ${IDLE_MAX_PCT}%
  --only A,B         base, idle, ship (default all; ship reuses idle's streaming daemon)
  --stowage PATH     stowage binary (default: build and use \$CARGO_TARGET_DIR/release/stowage)
  --no-build         do not run cargo build --release
  --results-dir DIR  where the JSON goes (default bench/results): pitr-<UTC>.json
  --keep-work        keep the temp dir (logs, configs, samples) instead of removing it
env: PG_BIN (default /usr/lib/postgresql/15/bin), STOWAGE_TOOLS (venv for moto/awscli), CARGO_TARGET_DIR
EOF
}

while (($#)); do
    case "$1" in
        --size-mb) SIZE_MB="$2"; shift 2 ;;
        --runs) RUNS="$2"; shift 2 ;;
        --load-secs) LOAD_SECS="$2"; shift 2 ;;
        --wal-rate) WAL_RATE="$2"; shift 2 ;;
        --wal-flush) WAL_FLUSH="$2"; shift 2 ;;
        --idle-secs) IDLE_SECS="$2"; shift 2 ;;
        --settle-secs) SETTLE_SECS="$2"; shift 2 ;;
        --idle-wait) IDLE_WAIT="$2"; shift 2 ;;
        --only) ONLY="$2"; shift 2 ;;
        --stowage) STOWAGE="$2"; BUILD=0; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --results-dir) RESULTS_DIR="$2"; shift 2 ;;
        --keep-work) KEEP_WORK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
    esac
done
for v in SIZE_MB RUNS LOAD_SECS WAL_RATE WAL_FLUSH IDLE_SECS SETTLE_SECS IDLE_WAIT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || { echo "invalid ${v,,}: ${!v} (a whole number)" >&2; exit 2; }
done
(( SIZE_MB >= 16 && RUNS >= 1 && LOAD_SECS >= 10 && WAL_RATE >= 1 && WAL_FLUSH >= 1 && IDLE_SECS >= 10 )) \
    || { echo "out of range: --size-mb ≥ 16, --runs ≥ 1, --load-secs ≥ 10, --wal-rate ≥ 1, --wal-flush ≥ 1, --idle-secs ≥ 10" >&2; exit 2; }
IFS=',' read -r -a ONLY_LIST <<<"$ONLY"
for k in "${ONLY_LIST[@]}"; do
    [[ ",base,idle,ship," == *",$k,"* ]] || { echo "unknown part in --only: $k (base, idle, ship)" >&2; exit 2; }
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }

log() { printf '[pitr %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------
# Tools (as bench/run.sh: moto and awscli v1 from the venv, GNU time, zstd)
# ---------------------------------------------------------------------------------------
[[ -x "$PG_BIN/initdb" && -x "$PG_BIN/pg_basebackup" && -x "$PG_BIN/pg_receivewal" ]] \
    || die "PostgreSQL 15 not found in $PG_BIN (apt-get install postgresql, or set PG_BIN)"
for tool in zstd curl /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run tests/setup.sh first (or apt-get install it)"
done
id postgres >/dev/null 2>&1 || die "no postgres user (initdb refuses to run as root)"
if [[ ! -x "$VENV/bin/moto_server" || ! -x "$VENV/bin/aws" ]] && [[ -f "$ROOT/tests/setup.sh" ]]; then
    log "setting up moto/awscli with tests/setup.sh"
    STOWAGE_TOOLS="$TOOLS" bash "$ROOT/tests/setup.sh" >&2
fi
[[ -x "$VENV/bin/moto_server" && -x "$VENV/bin/aws" ]] || die "moto_server/aws not in $VENV: run tests/setup.sh"
PY="$VENV/bin/python"
AWS="$VENV/bin/aws"
"$PY" -c 'import boto3' 2>/dev/null || die "boto3 not in $VENV (moto[server] brings it): run tests/setup.sh"

if [[ -z "$STOWAGE" ]]; then
    STOWAGE="${CARGO_TARGET_DIR:-$ROOT/target}/release/stowage"
fi
if [[ "$BUILD" == 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet --locked) || die "cargo build --release failed"
fi
[[ -x "$STOWAGE" ]] || die "stowage binary not found at $STOWAGE (build it or pass --stowage)"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-bench-pitr.XXXXXX")"
chmod 755 "$WORK"
PGDATA="$WORK/pgdata"
PG_STARTED=0
PIDS=()

cleanup() {
    local rc=$? pid
    set +e
    for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
    [[ "$PG_STARTED" == 1 ]] && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null 2>&1
    if [[ "$KEEP_WORK" == 1 ]]; then rm -rf "$PGDATA"; log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A private copy: a concurrent build must not swap the binary between measurements.
cp "$STOWAGE" "$WORK/stowage"
STOWAGE_ID="$(sha256sum "$WORK/stowage" | cut -c1-16) built $(date -u -r "$STOWAGE" +%Y-%m-%dT%H:%M:%SZ)"
GIT_REV="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || GIT_REV="$GIT_REV+dirty"
STOWAGE="$WORK/stowage"

# The sampling, polling and reporting (Python from the venv, for boto3).
cat >"$WORK/pitr_tool.py" <<'PY'
"""Helpers of bench/pitr.sh (written into its temp dir): idle sampling, the daemon monitor,
the catch-up poll, reading the WAL records back, and the report."""
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request

SEG = 16 * 1024 * 1024
TICK = os.sysconf("SC_CLK_TCK")


def s3(endpoint):
    import boto3
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def seg_name(segno, tli=1):
    return f"{tli:08X}{segno // 256:08X}{segno % 256:08X}"


def segno_of(name):
    return int(name[8:16], 16) * 256 + int(name[16:24], 16)


def is_segment(name):
    return len(name) == 24 and all(c in "0123456789ABCDEF" for c in name)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def children(pid):
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in read(f"/proc/{pid}/task/{task}/children").split()]
    except OSError:
        pass
    return out


def proc(pid):
    """VmRSS, VmHWM, RssAnon, smaps Anonymous (KiB), threads, context switches summed over the
    threads, user+sys ticks; None once gone."""
    st = read(f"/proc/{pid}/stat")
    if not st:
        return None
    f = st.rsplit(")", 1)[1].split()
    d = {"pid": pid, "comm": st.split("(", 1)[1].rsplit(")", 1)[0], "ticks": int(f[11]) + int(f[12])}
    for line in read(f"/proc/{pid}/status").splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM", "RssAnon", "Threads"):
            d[k] = int(v.split()[0])
    for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Anonymous:"):
            d["anon"] = int(line.split()[1])
    sw = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            for line in read(f"/proc/{pid}/task/{task}/status").splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    sw += int(line.split()[1])
    except OSError:
        pass
    d["switches"] = sw
    return d


def server_wal():
    """The server's WAL position in bytes (BENCH_PSQL, BENCH_DB), or None."""
    psql, db = os.environ.get("BENCH_PSQL"), os.environ.get("BENCH_DB")
    if not psql or not db:
        return None
    r = subprocess.run([psql, "-X", "-A", "-t", "-d", db, "-c",
                        "select (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"],
                       capture_output=True, text=True)
    return int(r.stdout.strip()) if r.returncode == 0 and r.stdout.strip().isdigit() else None


def cmd_idle(out, settle, secs, *named):
    """Samples each daemon and its children every 10 s over `secs`, after `settle`."""
    settle, secs = float(settle), float(secs)
    pids = dict(n.split("=") for n in named)
    time.sleep(settle)
    wal_before = server_wal()
    t0 = time.time()
    samples = {n: [] for n in pids}
    while True:
        now = time.time() - t0
        for n, pid in pids.items():
            own = proc(int(pid))
            kids = [k for k in (proc(c) for c in children(int(pid))) if k]
            samples[n].append({"t": round(now, 2), "own": own, "children": kids})
        if now >= secs:
            break
        time.sleep(min(10.0, secs - now))
    wal_after = server_wal()
    res = {}
    if wal_before is not None and wal_after is not None:
        # "The stream's own wakeups excepted while WAL flows": whether any did.
        res["server_wal_bytes_in_window"] = wal_after - wal_before
        print(f"  idle: the server wrote {wal_after - wal_before} bytes of WAL in the window", file=sys.stderr)
    for n, ss in samples.items():
        a, b = ss[0], ss[-1]
        if not a["own"] or not b["own"]:
            sys.exit(f"daemon {n} exited during the idle measurement")
        span = b["t"] - a["t"]
        kids_a = {k["pid"]: k for k in a["children"]}
        kids_b = {k["pid"]: k for k in b["children"]}
        same = set(kids_a) & set(kids_b)
        r = {
            "window_s": round(span, 1),
            "vmrss_kib": b["own"]["VmRSS"],
            "anonymous_kib": b["own"].get("anon"),
            "max_anonymous_kib": max(s["own"].get("anon", 0) for s in ss),
            "threads": b["own"]["Threads"],
            "cpu_s": round((b["own"]["ticks"] - a["own"]["ticks"]) / TICK, 3),
            "wakeups_per_min": round((b["own"]["switches"] - a["own"]["switches"]) * 60 / span, 1),
            "children": [
                {
                    "comm": kids_b[p]["comm"],
                    "vmrss_kib": kids_b[p]["VmRSS"],
                    "anonymous_kib": kids_b[p].get("anon"),
                    "cpu_s": round((kids_b[p]["ticks"] - kids_a[p]["ticks"]) / TICK, 3),
                    "wakeups_per_min": round((kids_b[p]["switches"] - kids_a[p]["switches"]) * 60 / span, 1),
                }
                for p in sorted(same)
            ],
            "children_restarted": sorted(set(kids_a) ^ set(kids_b)),
        }
        res[n] = r
        print(f"  idle {n}: VmRSS {r['vmrss_kib']} KiB, anonymous {r['anonymous_kib']} KiB, "
              f"{r['threads']} threads, cpu {r['cpu_s']} s in {span:.0f} s, {r['wakeups_per_min']} wakeups/min; "
              + "; ".join(f"child {c['comm']}: VmRSS {c['vmrss_kib']} KiB, cpu {c['cpu_s']} s, "
                          f"{c['wakeups_per_min']} wakeups/min" for c in r["children"]), file=sys.stderr)
    with open(out, "w") as f:
        json.dump({"settle_s": settle, "summary": res, "samples": samples}, f)


def metrics(url):
    vals = {}
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            text = r.read().decode()
    except Exception as e:  # a slow answer is recorded, not fatal
        return {"error": str(e)}
    for line in text.splitlines():
        for name in ("stowage_wal_lag_seconds", "stowage_wal_pending_files",
                     "stowage_wal_last_shipped_timestamp_seconds"):
            if line.startswith(name + "{"):
                vals[name] = float(line.rsplit(" ", 1)[1])
    return vals


def cmd_monitor(out, runfile, pid, url):
    pid = int(pid)
    kid_ticks = {}
    with open(out, "w") as f:
        while os.path.exists(runfile):
            t = time.time()
            own = proc(pid)
            for c in children(pid):
                p = proc(c)
                if p:
                    kid_ticks[c] = (p["comm"], p["ticks"], p.get("VmHWM", 0))
            m = metrics(url)
            f.write(json.dumps({"t": t, "own": own, "kids": kid_ticks, "m": m}) + "\n")
            f.flush()
            time.sleep(max(0.0, 0.5 - (time.time() - t)))


def list_keys(c, prefix):
    keys, token = [], None
    while True:
        kw = {"Bucket": "bench", "Prefix": prefix}
        if token:
            kw["ContinuationToken"] = token
        r = c.list_objects_v2(**kw)
        keys += [(o["Key"], o["Size"]) for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return keys
        token = r["NextContinuationToken"]


def get_json(c, key):
    return json.loads(c.get_object(Bucket="bench", Key=key)["Body"].read())


def cmd_catchup(out, endpoint, root, path, tend, lend, pg_wal, timeout):
    """Polls until all WAL the load wrote (positions below lend) is on S3: every completed
    segment before the last one has its record, and the last one has its record too or the
    partial segment shipped holds the server's bytes up to lend."""
    c = s3(endpoint)
    prefix = f"{root}/{path}"
    tend, lend, timeout = int(tend) / 1e6, int(lend), float(timeout)
    last = (lend - 1) // SEG
    off = lend - last * SEG
    with open(os.path.join(pg_wal, seg_name(last)), "rb") as f:
        server = f.read(off)
    checked, res = set(), None
    first = None
    while time.time() < tend + timeout:
        names = {k.rsplit("/", 1)[1][:-5] for k, _ in list_keys(c, prefix + "/index/")}
        seg_names = {n for n in names if is_segment(n)}
        done = seg_names and min(segno_of(n) for n in seg_names) <= last and all(
            seg_name(s) in names for s in range(min(segno_of(n) for n in seg_names), last))
        if done and seg_name(last) in names:
            res = {"how": "segment", "record": get_json(c, f"{prefix}/index/{seg_name(last)}.json")}
        elif done:
            try:
                p = get_json(c, f"{prefix}/partial.json")
            except Exception:
                p = None
            if p and p.get("name") == seg_name(last) and p["key"] not in checked:
                checked.add(p["key"])
                try:  # keys in records are relative to the destination's root
                    body = c.get_object(Bucket="bench", Key=f"{root}/{p['key']}")["Body"].read()
                except c.exceptions.NoSuchKey:  # replaced by a newer one meanwhile
                    continue
                raw = subprocess.run(["zstd", "-dcq"], input=body, capture_output=True, check=True).stdout
                if raw[:off] == server:
                    res = {"how": "partial", "record": p}
        if res:
            now = time.time()
            shipped = res["record"]["shipped_at"]
            res.update({"detected_s_after_load": round(now - tend, 2), "last_segment": seg_name(last),
                        "bytes_into_it": off, "partials_compared": len(checked)})
            print(f"  caught up ({res['how']} {seg_name(last)} shipped at {shipped}), seen "
                  f"{res['detected_s_after_load']} s after the load ended", file=sys.stderr)
            break
        first = first or time.time()
        time.sleep(0.25)
    if not res:
        res = {"how": None, "detected_s_after_load": None, "last_segment": seg_name(last),
               "partials_compared": len(checked), "timeout_s": timeout}
        print(f"  NOT caught up {timeout:.0f} s after the load ended", file=sys.stderr)
    with open(out, "w") as f:
        json.dump(res, f)


def cmd_records(out, endpoint, root, path):
    c = s3(endpoint)
    prefix = f"{root}/{path}"
    recs = [get_json(c, k) for k, _ in list_keys(c, prefix + "/index/")]
    objects = list_keys(c, prefix + "/")
    with open(out, "w") as f:
        json.dump({"records": recs, "objects": objects}, f)


def iso(ts):
    from datetime import datetime
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def gnu_time(path):
    wall, rss, user, sys_ = read(path).strip().splitlines()[-1].split()
    return {"wall_s": float(wall), "peak_rss_kib": int(rss), "cpu_s": round(float(user) + float(sys_), 2)}


def slope(xs, ys):
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def report_base(work, runs):
    floor, stow = [], []
    for n in range(1, runs + 1):
        for lst, kind in ((floor, "floor"), (stow, "stowage")):
            m = gnu_time(f"{work}/base-{kind}-{n}.time")
            busy, *load = read(f"{work}/base-{kind}-{n}.busy").split()
            m.update({"run": n, "machine_busy_pct_before": int(busy), "loadavg_before": " ".join(load)})
            lst.append(m)
    bf = min(floor, key=lambda m: m["wall_s"])
    bs = min(stow, key=lambda m: m["wall_s"])
    stored_floor = sum(int(l.split()[2]) for l in read(f"{work}/base-floor-1.ls").splitlines())
    tars = [int(l.split()[2]) for l in read(f"{work}/base-stowage-1.ls").splitlines() if "/db.tar" in l]
    man = json.loads(read(f"{work}/base-manifest.json") or "{}")
    ratio = round(bs["wall_s"] / bf["wall_s"], 3)
    out = {
        "floor": "pg_basebackup -D - -Ft -X none -c fast | zstd -3 -T1 | aws s3 cp - (awscli v1, moto)",
        "floor_runs": floor, "stowage_runs": stow,
        "floor_best_wall_s": bf["wall_s"], "stowage_best_wall_s": bs["wall_s"],
        "stowage_wall_over_floor": ratio,
        "stowage_cpu_over_floor_cpu_fastest_runs": round(bs["cpu_s"] / bf["cpu_s"], 3),
        "stowage_peak_rss_mib_worst": round(max(m["peak_rss_kib"] for m in stow) / 1024, 1),
        "floor_stored_bytes": stored_floor, "stowage_stored_bytes": tars[0] if tars else None,
        "manifest_sources": man.get("sources"),
        "target": "stowage_wall_over_floor <= 1.1", "pass": ratio <= 1.1,
    }
    print(f"base backup: floor {bf['wall_s']} s, stowage {bs['wall_s']} s (fastest of {runs}): "
          f"ratio {ratio} (target ≤ 1.1: {'met' if out['pass'] else 'NOT MET'}); stowage peak RSS "
          f"{out['stowage_peak_rss_mib_worst']} MiB (worst run); cpu {bs['cpu_s']} vs {bf['cpu_s']} s", file=sys.stderr)
    return out


def report_ship(work, rate, flush, load_secs):
    t0, l0, tend, lend, copies = (int(x) for x in read(f"{work}/load.txt").split())
    t0, tend = t0 / 1e6, tend / 1e6
    samples = []
    for line in read(f"{work}/lsn.log").splitlines():
        p = line.split()
        if len(p) == 2:
            try:
                samples.append((float(p[0]), int(p[1])))
            except ValueError:
                pass
    samples.sort()

    def crossed(pos):  # when the server's WAL position reached pos (linear between samples)
        for (ta, la), (tb, lb) in zip(samples, samples[1:]):
            if la < pos <= lb:
                return ta + (pos - la) / (lb - la) * (tb - ta)
        return None

    recs = json.loads(read(f"{work}/records.json"))["records"]
    objects = json.loads(read(f"{work}/records.json"))["objects"]
    segs = []
    for r in recs:
        if not is_segment(r["name"]):
            continue
        end = (segno_of(r["name"]) + 1) * SEG
        if not (l0 < end <= lend):
            continue
        done = crossed(end)
        if done is None:
            continue
        sh = iso(r["shipped_at"])
        segs.append({"name": r["name"], "completed": round(done - t0, 3), "shipped": round(sh - t0, 3),
                     "lag_s": round(sh - done, 3), "raw": r["raw_size"], "stored": r["size"]})
    segs.sort(key=lambda s: s["name"])
    dur = tend - t0
    produced = (lend - l0) / dur / 2**20
    in_load = [s for s in segs if s["shipped"] <= dur]
    lags = [s["lag_s"] for s in segs]
    half = dur / 2
    first = [s["lag_s"] for s in segs if s["completed"] < half]
    second = [s["lag_s"] for s in segs if s["completed"] >= half]
    trend = slope([s["completed"] for s in segs], lags) if len(segs) > 2 else None
    gaps = [b["shipped"] - a["shipped"] for a, b in zip(segs, segs[1:]) if 0 < b["shipped"] - a["shipped"] < 1.5]
    per_seg = statistics.median(gaps) if gaps else None
    mon = [json.loads(l) for l in read(f"{work}/monitor.jsonl").splitlines() if l.strip()]
    lag_m = [(m["t"] - t0, m["m"].get("stowage_wal_lag_seconds")) for m in mon if "stowage_wal_lag_seconds" in m["m"]]
    pend_m = [m["m"].get("stowage_wal_pending_files", 0) for m in mon]
    during = [m for m in mon if t0 <= m["t"] <= tend]
    own = [m["own"] for m in mon if m["own"]]
    cpu = kids = None
    if during and during[0]["own"] and during[-1]["own"]:
        cpu = round((during[-1]["own"]["ticks"] - during[0]["own"]["ticks"]) / TICK, 2)
        ka, kb = during[0]["kids"], during[-1]["kids"]
        kids = round(sum(kb[p][1] - ka.get(p, [0, 0])[1] for p in kb) / TICK, 2)
    cu = json.loads(read(f"{work}/catchup.json") or "{}")
    catch = cu.get("detected_s_after_load")
    stored = sum(s["stored"] for s in segs)
    raw = sum(s["raw"] for s in segs)
    growth = trend * dur if trend is not None else None
    bounded = growth is not None and growth < flush
    caught = catch is not None and catch <= 3 * flush
    out = {
        "load": f"COPY of bench/sql rows (events, {copies} COPYs) paced to >= {rate} MiB/s of WAL by pg_current_wal_lsn",
        "load_s": round(dur, 2), "wal_produced_mib": round((lend - l0) / 2**20, 1),
        "wal_produced_mib_per_s": round(produced, 2), "reached_rate": produced >= rate,
        "segments_of_the_load": len(segs),
        "segments_shipped_during_load": len(in_load),
        "wal_shipped_during_load_mib_per_s": round(len(in_load) * 16 / dur, 2),
        "ship_time_per_segment_s_median": round(per_seg, 3) if per_seg else None,
        "ship_capacity_mib_per_s": round(16 / per_seg, 1) if per_seg else None,
        "stored_over_raw": round(stored / raw, 3) if raw else None,
        "segment_lag_s": {"max": max(lags) if lags else None, "median": statistics.median(lags) if lags else None,
                          "max_first_half": max(first) if first else None,
                          "max_second_half": max(second) if second else None,
                          "trend_s_per_s": round(trend, 4) if trend is not None else None,
                          "trend_over_load_s": round(growth, 2) if growth is not None else None},
        "metric_wal_lag_seconds_max_during_load": max((v for t, v in lag_m if 0 <= t <= dur), default=None),
        "metric_wal_lag_seconds_max_after_load": max((v for t, v in lag_m if t > dur), default=None),
        "metric_wal_pending_files_max": max(pend_m, default=None),
        "metric_scrape_errors": sum(1 for m in mon if "error" in m["m"]),
        "daemon_peak_rss_mib": round(max(o.get("VmHWM", 0) for o in own) / 1024, 1) if own else None,
        "daemon_max_anonymous_mib": round(max(o.get("anon", 0) for o in own) / 1024, 1) if own else None,
        "daemon_cpu_s_during_load": cpu, "pg_receivewal_cpu_s_during_load": kids,
        "catch_up": cu,
        "caught_up_s_after_load": catch,
        "targets": {"bounded": f"trend of the per-segment lag over the load < wal_flush ({flush} s)",
                    "catch_up": f"everything written on S3 <= 3 x wal_flush ({3 * flush} s) after the load"},
        "pass": {"bounded": bounded, "catch_up": caught},
        "segments": segs,
        "metric_lag_samples": [(round(t, 1), v) for t, v in lag_m],
        "objects_under_wal": len(objects),
    }
    sl = out["segment_lag_s"]
    print(f"WAL shipping: produced {out['wal_produced_mib_per_s']} MiB/s for {out['load_s']} s "
          f"({out['wal_produced_mib']} MiB, {len(segs)} segments); shipped during the load "
          f"{out['wal_shipped_during_load_mib_per_s']} MiB/s; per segment {out['ship_time_per_segment_s_median']} s "
          f"(capacity ~{out['ship_capacity_mib_per_s']} MiB/s); stored/raw {out['stored_over_raw']}", file=sys.stderr)
    print(f"  segment lag: max {sl['max']} s (first half {sl['max_first_half']}, second half {sl['max_second_half']}), "
          f"median {sl['median']} s, trend {sl['trend_s_per_s']} s/s = {sl['trend_over_load_s']} s over the load "
          f"(bounded: {'met' if bounded else 'NOT MET'}); caught up {catch} s after the load "
          f"(≤ {3 * flush} s: {'met' if caught else 'NOT MET'})", file=sys.stderr)
    print(f"  stowage_wal_lag_seconds max {out['metric_wal_lag_seconds_max_during_load']} during, "
          f"{out['metric_wal_lag_seconds_max_after_load']} after; pending max {out['metric_wal_pending_files_max']}; "
          f"daemon peak RSS {out['daemon_peak_rss_mib']} MiB, cpu {cpu} s (+ pg_receivewal {kids} s)", file=sys.stderr)
    return out


def report_idle(work):
    d = json.loads(read(f"{work}/idle.json"))["summary"]
    s, b = d["stream"], d["baseline"]
    kid = s["children"][0] if s["children"] else {}
    out = {
        "stream": s, "baseline": b,
        "server_wal_bytes_in_window": d.get("server_wal_bytes_in_window"),
        "stream_minus_baseline": {
            "vmrss_kib": s["vmrss_kib"] - b["vmrss_kib"],
            "anonymous_kib": (s["anonymous_kib"] or 0) - (b["anonymous_kib"] or 0),
            "cpu_s": round(s["cpu_s"] - b["cpu_s"], 3),
            "wakeups_per_min": round(s["wakeups_per_min"] - b["wakeups_per_min"], 1),
            "threads": s["threads"] - b["threads"],
        },
        "stream_with_child": {
            "vmrss_kib": s["vmrss_kib"] + kid.get("vmrss_kib", 0),
            "cpu_s": round(s["cpu_s"] + kid.get("cpu_s", 0), 3),
            "wakeups_per_min": round(s["wakeups_per_min"] + kid.get("wakeups_per_min", 0), 1),
        },
        "documented_idle_targets": "bench/idle.rs: anonymous <= 2048 KiB idle after a backup, 0 wakeups/min",
        "pass": {"anonymous_le_2mib": (s["anonymous_kib"] or 0) <= 2048, "zero_wakeups": s["wakeups_per_min"] == 0},
    }
    dd = out["stream_minus_baseline"]
    print(f"idle with a stream: daemon VmRSS {s['vmrss_kib']} KiB, anonymous {s['anonymous_kib']} KiB, "
          f"{s['wakeups_per_min']} wakeups/min, cpu {s['cpu_s']} s in {s['window_s']} s; over the logical daemon: "
          f"{dd['vmrss_kib']:+} KiB RSS, {dd['anonymous_kib']:+} KiB anonymous, {dd['wakeups_per_min']:+} wakeups/min, "
          f"{dd['cpu_s']:+} s cpu; pg_receivewal: VmRSS {kid.get('vmrss_kib')} KiB, "
          f"{kid.get('wakeups_per_min')} wakeups/min, cpu {kid.get('cpu_s')} s", file=sys.stderr)
    return out


def cmd_report(out, work, only, runs, rate, flush, load_secs, rev, binary, db_bytes, cluster_bytes, size_mb,
               chunk_bytes, nchunks):
    only = only.split(",")
    res = {
        "commit": rev, "binary": binary, "size_mb": int(size_mb), "db_bytes": int(db_bytes),
        "cluster_bytes": int(cluster_bytes), "runs": int(runs), "wal_rate_mib_s": int(rate),
        "wal_flush_s": int(flush), "load_secs": int(load_secs), "load_chunks": int(nchunks),
        "load_chunk_bytes": int(chunk_bytes), "loadavg_end": read("/proc/loadavg").strip(),
        "nproc": os.cpu_count(),
    }
    if "base" in only:
        res["base_backup"] = report_base(work, int(runs))
    if "idle" in only:
        res["idle_with_stream"] = report_idle(work)
    if "ship" in only:
        res["wal_shipping"] = report_ship(work, int(rate), int(flush), int(load_secs))
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"idle": cmd_idle, "monitor": cmd_monitor, "catchup": cmd_catchup, "records": cmd_records,
     "report": cmd_report}[cmd](*args)
PY

export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy AWS_PROFILE AWS_SESSION_TOKEN
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
# stowage runs pg_basebackup and pg_receivewal from PATH: PostgreSQL 15's, not Debian's wrapper.
export PATH="$PG_BIN:$PATH" PGCONNECT_TIMEOUT=15

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
# A server or daemon in its own process group, so the cleanup takes its children too.
serve() { # name command...
    local name="$1"; shift
    setsid "$@" >"$WORK/$name.log" 2>&1 </dev/null &
    PIDS+=($!)
}

# ---------------------------------------------------------------------------------------
# PostgreSQL (as bench/run.sh, default durability, but max_wal_size=256MB: the ship part writes
# ~1 GiB of WAL, and this box's disk is shared and nearly full; the replication lines
# initdb writes into pg_hba.conf allow pg_basebackup and pg_receivewal from 127.0.0.1) and moto
# ---------------------------------------------------------------------------------------
PG_PORT="$(free_port)"
mkdir -p "$PGDATA" && chown postgres: "$PGDATA"
runuser -u postgres -- "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust >"$WORK/initdb.log" 2>&1 \
    || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
PG_STARTED=1
runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/server.log" -w -t 60 \
    -o "-p $PG_PORT -k $PGDATA -c listen_addresses=127.0.0.1 -c max_wal_size=256MB" start >/dev/null \
    || { cat "$PGDATA/server.log" >&2; die "PostgreSQL did not start"; }
DB="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
psql_q() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }
log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"

MOTO_PORT="$(free_port)"
# moto spills every object and part above 5 MiB to a temp file; this box's disk is shared and
# nearly full, its memory is not: keep them in memory (each backup is removed once measured).
serve moto env MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=$((1024 * 1048576)) "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
ENDPOINT="http://127.0.0.1:$MOTO_PORT"
for _ in $(seq 1 100); do
    "$PY" -c "import urllib.request; urllib.request.urlopen('$ENDPOINT/', timeout=1)" 2>/dev/null && break
    kill -0 "${PIDS[-1]}" 2>/dev/null || { cat "$WORK/moto.log" >&2; die "moto_server exited"; }
    sleep 0.2
done
"$AWS" --endpoint-url "$ENDPOINT" s3 mb s3://bench >/dev/null
log "moto_server on 127.0.0.1:$MOTO_PORT"

# ---------------------------------------------------------------------------------------
# Data: the rows of bench/run.sh (bench/sql/, ~3.4x compressible)
# ---------------------------------------------------------------------------------------
log "generating ~$SIZE_MB MiB (the data of bench/run.sh)"
psql_q -f "$BENCH/sql/pg_schema.sql"
ROWS=0
while (( $(psql_q -At -c "select pg_database_size(current_database())") < SIZE_MB * 1048576 )); do
    psql_q -v first=$((ROWS + 1)) -v n=100000 -f "$BENCH/sql/pg_batch.sql"
    ROWS=$((ROWS + 100000))
done
psql_q -c "VACUUM (ANALYZE)" -c "CHECKPOINT"
DB_BYTES=$(psql_q -At -c "select pg_database_size(current_database())")
CLUSTER_BYTES=$(psql_q -At -c "select sum(pg_database_size(oid)) from pg_database")
log "database: $((DB_BYTES / 1048576)) MiB, $ROWS events (cluster $((CLUSTER_BYTES / 1048576)) MiB)"

# The write load's rows, made now so that nothing but the load itself writes during the idle
# and ship measurements: up to 32 files of 5,000 events each (COPY text, ~3 MiB), copied in
# turn into a table of one text column, each line one row (parsing jsonb would cost the
# server more CPU than this 2-core box has to spare for 16 MiB/s; the WAL carries the same
# bytes of realistic rows either way).
CHUNKS="$WORK/chunks"
mkdir -p "$CHUNKS" && chown postgres: "$CHUNKS"
CHUNK_ROWS=5000
NCHUNKS=$(( ROWS / CHUNK_ROWS ))
(( NCHUNKS > 32 )) && NCHUNKS=32
(( NCHUNKS >= 1 )) || die "too few rows for the write load"
for ((k = 0; k < NCHUNKS; k++)); do
    psql_q -c "COPY (SELECT * FROM events WHERE id > $((k * CHUNK_ROWS)) AND id <= $(((k + 1) * CHUNK_ROWS))) TO '$CHUNKS/$k.copy'"
done
psql_q -c "CREATE TABLE wal_load (line text)"
CHUNK_BYTES=$(du -cb "$CHUNKS"/*.copy | awk 'END {print $1}')

# ---------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------
s3_destination() { # prefix
    cat <<EOF
[destinations.s3]
type = "s3"
bucket = "bench"
prefix = "$1"
endpoint = "$ENDPOINT"
force_path_style = true
EOF
}
write_config() { # file prefix mode(physical|logical) [listen port]
    {
        printf '[log]\nlevel = "info"\n\n'
        if [[ -n "${4:-}" ]]; then printf '[server]\nlisten = "127.0.0.1:%s"\n\n' "$4"; fi
        s3_destination "$2"
        printf '\n[jobs.pitr]\nschedule = "@daily"\ncatch_up = false\ncompression = "zstd"\ndestinations = ["s3"]\n'
        printf '\n[[jobs.pitr.sources]]\ntype = "postgres"\nname = "db"\nurl = "%s"\n' "$DB"
        if [[ "$3" == physical ]]; then printf 'mode = "physical"\nslot = "stowage"\nwal_flush = "%ss"\n' "$WAL_FLUSH"; fi
    } >"$1"
}

cpu_busy_pct() { # share of all CPUs busy over one second
    local c1 c2 busy1 busy2 tot1 tot2
    read -r -a c1 </proc/stat; sleep 1; read -r -a c2 </proc/stat
    tot1=$(( c1[1]+c1[2]+c1[3]+c1[4]+c1[5]+c1[6]+c1[7]+c1[8] )); busy1=$(( tot1 - c1[4] - c1[5] ))
    tot2=$(( c2[1]+c2[2]+c2[3]+c2[4]+c2[5]+c2[6]+c2[7]+c2[8] )); busy2=$(( tot2 - c2[4] - c2[5] ))
    echo $(( (busy2 - busy1) * 100 / (tot2 - tot1 > 0 ? tot2 - tot1 : 1) ))
}
wait_idle() { # label: wait (bounded) for other work to calm down; record what was seen
    local busy waited=0
    busy=$(cpu_busy_pct)
    while (( busy > IDLE_MAX_PCT && waited < IDLE_WAIT )); do
        (( waited == 0 )) && log "    machine is ${busy}% busy; waiting (up to ${IDLE_WAIT}s)"
        sleep 4
        waited=$(( waited + 5 ))
        busy=$(cpu_busy_pct)
    done
    echo "$busy $(cut -d' ' -f1-3 /proc/loadavg)" >"$WORK/$1.busy"
}

# ---------------------------------------------------------------------------------------
# base: floor and stowage, alternating; GNU time's wall, user+sys (the whole tree) and peak
# RSS (the largest single process: stowage itself, or aws for the floor)
# ---------------------------------------------------------------------------------------
floor_base() { # n
    pg_basebackup -d "$DB" -D - -Ft -X none -c fast | zstd -3 -T1 -q \
        | "$AWS" s3 cp - "s3://bench/floor/$1/base.tar.zst" --endpoint-url "$ENDPOINT" --only-show-errors
}
stowage_base() {
    STOWAGE_STATE_FILE="$WORK/base-state/stowage-state.json" STOWAGE_PID_FILE="$WORK/base-state/stowage.pid" \
        "$STOWAGE" --config "$WORK/base.toml" run pitr
}
export -f floor_base stowage_base
export DB ENDPOINT AWS STOWAGE WORK
timed() { # label func args...
    local label="$1"; shift
    wait_idle "$label"
    sync
    /usr/bin/time -f "%e %M %U %S" -o "$WORK/$label.time" bash -c '"$@"' _ "$@" \
        >"$WORK/$label.log" 2>&1 || { cat "$WORK/$label.log" >&2; die "$label failed"; }
    read -r wall rss _ <"$WORK/$label.time"
}

if want base; then
    write_config "$WORK/base.toml" base physical
    mkdir -p "$WORK/base-state"
    log "base: one untimed pg_basebackup to warm the page cache"
    pg_basebackup -d "$DB" -D - -Ft -X none -c fast >/dev/null
    for n in $(seq 1 "$RUNS"); do
        timed "base-floor-$n" floor_base "$n"
        log "base floor #$n: ${wall}s (pg_basebackup | zstd -3 | aws s3 cp -)"
        "$AWS" --endpoint-url "$ENDPOINT" s3 ls "s3://bench/floor/$n/" --recursive >"$WORK/base-floor-$n.ls"
        "$AWS" --endpoint-url "$ENDPOINT" s3 rm "s3://bench/floor/$n/" --recursive --only-show-errors
        timed "base-stowage-$n" stowage_base
        log "base stowage #$n: ${wall}s, peak RSS $((rss / 1024)) MiB"
        "$AWS" --endpoint-url "$ENDPOINT" s3 ls s3://bench/base/ --recursive >"$WORK/base-stowage-$n.ls"
        if [[ "$n" == 1 ]]; then
            mkey=$(awk '/manifest\.json$/ {print $4}' "$WORK/base-stowage-1.ls" | tail -1)
            [[ -n "$mkey" ]] || die "the stowage base backup published no manifest"
            "$AWS" --endpoint-url "$ENDPOINT" s3 cp "s3://bench/$mkey" "$WORK/base-manifest.json" --only-show-errors
        fi
        "$AWS" --endpoint-url "$ENDPOINT" s3 rm s3://bench/base/ --recursive --only-show-errors
    done
fi

# The idle and ship parts do not depend on the database's size (the load's rows are in the
# chunk files): give its disk space back for the ~1 GiB of WAL the load writes.
if want base && { want idle || want ship; }; then
    psql_q -c "DROP TABLE events, customers" -c "CHECKPOINT"
fi

# ---------------------------------------------------------------------------------------
# idle: the streaming daemon and a logical one, started together on the idle server
# ---------------------------------------------------------------------------------------
start_daemon() { # name config
    mkdir -p "$WORK/$1-state"
    serve "daemon-$1" env STOWAGE_STATE_FILE="$WORK/$1-state/stowage-state.json" \
        STOWAGE_PID_FILE="$WORK/$1-state/stowage.pid" STOWAGE_WAL_DIR="$WORK/$1-state/wal" \
        GLIBC_TUNABLES=glibc.pthread.stack_cache_size=0:glibc.malloc.tcache_count=0 NO_COLOR=1 \
        "$STOWAGE" --config "$2" daemon
    echo "${PIDS[-1]}" >"$WORK/daemon-$1.pid"
}
# setsid execs env, env execs stowage: the pid serve saw is the daemon's. Not reaped until
# the end, so an exited one is a zombie, which kill -0 would still find.
alive() {
    local st
    read -r st 2>/dev/null <"/proc/$1/stat" || return 1
    st="${st##*) }"
    [[ "${st%% *}" != Z ]]
}
wait_log() { # name pattern secs
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$WORK/daemon-$1.log" 2>/dev/null && return 0
        alive "$(cat "$WORK/daemon-$1.pid")" || { cat "$WORK/daemon-$1.log" >&2; die "daemon $1 exited"; }
        sleep 0.1
    done
    cat "$WORK/daemon-$1.log" >&2
    die "daemon $1 did not log \"$2\" within $3 s"
}
stop_daemon() { # name
    local pid
    pid=$(cat "$WORK/daemon-$1.pid")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 600); do alive "$pid" || return 0; sleep 0.1; done
    log "daemon $1 did not stop within 60 s of SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

METRICS_PORT="$(free_port)"
BASELINE_PORT="$(free_port)"
STREAM_STARTED=0
start_stream() {
    write_config "$WORK/stream.toml" stream physical "$METRICS_PORT"
    start_daemon stream "$WORK/stream.toml"
    wait_log stream "receiving WAL" 60
    STREAM_STARTED=1
}

if want idle; then
    # An idle window needs an idle server. After the data load, autovacuum goes on writing
    # WAL for minutes (catalogs of every database, one database a minute), and the timed
    # checkpoint writes WAL five minutes after the last one. Vacuum every database now, then
    # checkpoint: the next timed one falls past the window (--settle-secs + --idle-secs < 300).
    for d in template1 postgres; do
        "$PG_BIN/vacuumdb" -q -z -h 127.0.0.1 -p "$PG_PORT" -U postgres -d "$d"
    done
    psql_q -c "CHECKPOINT"
    write_config "$WORK/baseline.toml" baseline logical "$BASELINE_PORT"
    start_stream
    start_daemon baseline "$WORK/baseline.toml"
    log "idle: a streaming daemon and a logical one started; settling ${SETTLE_SECS}s, then measuring ${IDLE_SECS}s"
    BENCH_PSQL="$PG_BIN/psql" BENCH_DB="$DB" "$PY" "$WORK/pitr_tool.py" idle "$WORK/idle.json" "$SETTLE_SECS" "$IDLE_SECS" \
        "stream=$(cat "$WORK/daemon-stream.pid")" "baseline=$(cat "$WORK/daemon-baseline.pid")"
    stop_daemon baseline
fi

# ---------------------------------------------------------------------------------------
# ship: the write load, paced by pg_current_wal_lsn, with the streaming daemon shipping
# ---------------------------------------------------------------------------------------
if want ship; then
    [[ "$STREAM_STARTED" == 1 ]] || start_stream
    # Both sampled through the whole load and the catch-up: the server's WAL position (psql's
    # \watch, one process) and the daemon's /metrics and /proc (one Python process).
    echo "select extract(epoch from clock_timestamp())::numeric(20,6) || ' ' || (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint \\watch 0.2" >"$WORK/lsn.sql"
    serve lsn "$PG_BIN/psql" -X -At -d "$DB" -f "$WORK/lsn.sql"
    LSN_PID="${PIDS[-1]}"
    touch "$WORK/monitor.run"
    serve monitor "$PY" "$WORK/pitr_tool.py" monitor "$WORK/monitor.jsonl" "$WORK/monitor.run" \
        "$(cat "$WORK/daemon-stream.pid")" "http://127.0.0.1:$METRICS_PORT/metrics"
    sleep 2

    # One psql session runs the COPYs and reports the position after each.
    coproc LOADER { "$PG_BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -d "$DB" 2>&1; }
    lsn_now() {
        echo "select (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint;" >&"${LOADER[1]}"
        read -r -t 120 -u "${LOADER[0]}" LSN || die "the load's psql session did not answer"
        [[ "$LSN" =~ ^[0-9]+$ ]] || die "the load's psql session said: $LSN"
    }
    # Paced 5 % above the rate asked for, so that the rate reached, measured from the first
    # to the last position, is at least that (the last COPY ends a little behind the pace).
    rate_bps=$(( WAL_RATE * 1048576 * 105 / 100 ))
    dur_us=$(( LOAD_SECS * 1000000 ))
    log "ship: COPY load at ≥ $WAL_RATE MiB/s of WAL for ${LOAD_SECS}s (wal_flush ${WAL_FLUSH}s)"
    lsn_now
    L0=$LSN
    T0=${EPOCHREALTIME/./}
    k=0 copies=0
    while :; do
        now=${EPOCHREALTIME/./}
        el=$(( now - T0 ))
        (( el < dur_us )) || break
        target=$(( L0 + rate_bps * el / 1000000 ))
        if (( LSN < target )); then
            echo "COPY wal_load FROM '$CHUNKS/$k.copy' (FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02');" >&"${LOADER[1]}"
            lsn_now
            k=$(( (k + 1) % NCHUNKS )); copies=$((copies + 1))
            # Keep the table small (the disk): its WAL is what is measured, not its size.
            if (( k == 0 )); then
                echo "TRUNCATE wal_load;" >&"${LOADER[1]}"
            fi
        else
            # Ahead of the pace: wait until it catches up with what was written (≤ 0.2 s).
            wait_us=$(( (LSN - target) * 1000000 / rate_bps ))
            (( wait_us > 200000 )) && wait_us=200000
            sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
        fi
    done
    TEND=${EPOCHREALTIME/./}
    lsn_now
    LEND=$LSN
    echo '\q' >&"${LOADER[1]}"
    wait "$LOADER_PID" 2>/dev/null || true
    log "ship: load done, $(( (LEND - L0) / 1048576 )) MiB of WAL in $(( (TEND - T0) / 1000 )) ms ($copies COPYs); waiting for the daemon to catch up"
    echo "$T0 $L0 $TEND $LEND $copies" >"$WORK/load.txt"
    "$PY" "$WORK/pitr_tool.py" catchup "$WORK/catchup.json" "$ENDPOINT" stream "pitr/wal/db" \
        "$TEND" "$LEND" "$PGDATA/pg_wal" $(( WAL_FLUSH * 6 + 60 ))
    sleep 2
    rm -f "$WORK/monitor.run"
    kill -TERM "$LSN_PID" 2>/dev/null || true
    sleep 1.5
    # Every segment's record, read now (listing and reading during the load would cost moto CPU).
    "$PY" "$WORK/pitr_tool.py" records "$WORK/records.json" "$ENDPOINT" stream "pitr/wal/db"
fi
if [[ "$STREAM_STARTED" == 1 ]]; then stop_daemon stream; fi

# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------
mkdir -p "$RESULTS_DIR"
OUT="$RESULTS_DIR/pitr-$(date -u +%Y%m%dT%H%M%SZ).json"
"$PY" "$WORK/pitr_tool.py" report "$OUT" "$WORK" "$ONLY" "$RUNS" "$WAL_RATE" "$WAL_FLUSH" "$LOAD_SECS" \
    "$GIT_REV" "$STOWAGE_ID" "$DB_BYTES" "$CLUSTER_BYTES" "$SIZE_MB" "$CHUNK_BYTES" "$NCHUNKS"
log "results: $OUT"
