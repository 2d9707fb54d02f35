#!/usr/bin/env bash
# Cross-compile stowage for 32-bit ARM (armv7-unknown-linux-gnueabihf: Raspberry Pi 2/3) and
# smoke-test the ARM binary under qemu-user on this (x86-64 Debian 12) machine:
#
#   1. the binary is an ARM EABI5 executable; its size, unstripped and stripped (copy);
#   2. `stowage --version` prints "stowage <Cargo.toml version>";
#   3. `stowage check-config` accepts a small config (and rejects a broken one with exit 2);
#   4. one real backup + restore against the test PostgreSQL and S3 servers: the e2e tests
#      round_trip_moto and round_trip_s3s_fs_checks_signatures (tests/e2e.rs), run with
#      STOWAGE_BIN pointing at a wrapper that starts the ARM binary under qemu-arm-static.
#      The ARM binary's children (pg_dump, pg_restore, psql) are host binaries and run natively.
#
# Usage: bash tests/armv7.sh          (root, or a user with sudo, for the apt packages)
# Idempotent: installs the rust target, the cross toolchain and qemu only when missing, and
# the test servers through tests/setup.sh. A cold cross release build takes ~5-6 min.
# Uses $CARGO_TARGET_DIR, default $HOME/.cache/stowage-ci/target (as .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=armv7-unknown-linux-gnueabihf
TRIPLE=arm-linux-gnueabihf
SYSROOT=/usr/$TRIPLE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/stowage-ci/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER=$TRIPLE-gcc
export CC_armv7_unknown_linux_gnueabihf=$TRIPLE-gcc
export AR_armv7_unknown_linux_gnueabihf=$TRIPLE-ar

START=$SECONDS
STEP_START=$SECONDS
STEP_NAME=""
TIMINGS=()
step() {
    end_step
    STEP_NAME="$1"
    STEP_START=$SECONDS
    echo "== $1"
}
end_step() {
    if [ -n "$STEP_NAME" ]; then
        local took=$((SECONDS - STEP_START))
        echo "   ($STEP_NAME: ${took}s)"
        TIMINGS+=("$(printf '%5ss  %s' "$took" "$STEP_NAME")")
    fi
    STEP_NAME=""
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
WORK="$(mktemp -d "${TMPDIR:-/tmp}/stowage-armv7.XXXXXX")"
cleanup() { rm -rf "$WORK"; }
trap 'rc=$?; cleanup; [ $rc -eq 0 ] || echo "FAIL: tests/armv7.sh exited with $rc during step: ${STEP_NAME:-?}" >&2' EXIT

if [ "$(id -u)" -eq 0 ]; then
    as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1; then
    as_root() { sudo "$@"; }
else
    as_root() { fail "need root for: $* (run as root or install sudo)"; }
fi

# -------------------------------------------------------------------------------------------
step "rust target $TARGET"
if rustup target list --installed | grep -qx "$TARGET"; then
    echo "already installed"
else
    rustup target add "$TARGET"
fi
cargo --version

# -------------------------------------------------------------------------------------------
step "system packages (cross gcc, armhf libc, qemu-user, file)"
missing=()
command -v $TRIPLE-gcc >/dev/null 2>&1 || missing+=(gcc-$TRIPLE)
command -v $TRIPLE-strip >/dev/null 2>&1 || missing+=(binutils-$TRIPLE)
[ -e "$SYSROOT/include/stdio.h" ] && [ -e "$SYSROOT/lib/crt1.o" ] || missing+=(libc6-dev-armhf-cross)
[ -e "$SYSROOT/lib/ld-linux-armhf.so.3" ] || missing+=(libc6-armhf-cross)
command -v qemu-arm-static >/dev/null 2>&1 || missing+=(qemu-user-static)
command -v file >/dev/null 2>&1 || missing+=(file)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "nothing to install"
else
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update
    as_root apt-get install -y --no-install-recommends "${missing[@]}"
fi
$TRIPLE-gcc --version | head -n1
qemu-arm-static --version | head -n1

# -------------------------------------------------------------------------------------------
step "test servers (tests/setup.sh)"
bash tests/setup.sh

# -------------------------------------------------------------------------------------------
step "cross build: cargo build --release --locked --target $TARGET"
echo "CARGO_TARGET_DIR=$CARGO_TARGET_DIR"
cargo build --release --locked --target "$TARGET"
BIN="$CARGO_TARGET_DIR/$TARGET/release/stowage"
[ -x "$BIN" ] || fail "no binary at $BIN"

# -------------------------------------------------------------------------------------------
step "binary"
desc="$(file -b "$BIN")"
echo "$BIN: $desc"
case "$desc" in
    *"ELF 32-bit LSB"*"ARM, EABI5"*) ;;
    *) fail "not a 32-bit ARM EABI5 ELF: $desc" ;;
esac
STRIPPED="$CARGO_TARGET_DIR/$TARGET/release/stowage.stripped"
$TRIPLE-strip -o "$STRIPPED" "$BIN"
size_bin=$(stat -c %s "$BIN")
size_stripped=$(stat -c %s "$STRIPPED")
printf 'size: %s bytes as built, %s bytes after %s-strip (%s)\n' "$size_bin" "$size_stripped" "$TRIPLE" "$STRIPPED"
[ "$size_bin" -ne "$size_stripped" ] || echo "(same size: the release profile already strips)"

# The ARM binary under qemu-user; children it spawns (pg_dump...) are host binaries and run natively.
QEMU=(qemu-arm-static -L "$SYSROOT")
WRAPPER="$WORK/stowage-armv7"
CALLS="$WORK/wrapper-calls"
cat >"$WRAPPER" <<EOF
#!/bin/sh
echo "\$*" >>'$CALLS'
exec qemu-arm-static -L '$SYSROOT' '$BIN' "\$@"
EOF
chmod +x "$WRAPPER"

# -------------------------------------------------------------------------------------------
step "--version under qemu"
want_version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n1)"
[ -n "$want_version" ] || fail "no version in Cargo.toml"
got="$("${QEMU[@]}" "$BIN" --version)"
echo "$got"
[ "$got" = "stowage $want_version" ] || fail "--version printed '$got', want 'stowage $want_version'"

# -------------------------------------------------------------------------------------------
step "check-config under qemu"
cat >"$WORK/stowage.toml" <<EOF
[log]
level = "info"

[destinations.local]
type = "local"
path = "$WORK/backups"
retention = { keep_last = 5 }

[destinations.offsite]
type = "s3"
bucket = "backups"
prefix = "nightly"
region = "eu-west-1"
endpoint = "http://127.0.0.1:9"
force_path_style = true

[jobs.app]
schedule = "0 3 * * *"
timezone = "Europe/Stockholm"
compression = "zstd"
destinations = ["local", "offsite"]

[[jobs.app.sources]]
type = "postgres"
name = "db"
url = "postgres://app@127.0.0.1:5432/app"
EOF
out="$("${QEMU[@]}" "$BIN" --config "$WORK/stowage.toml" check-config 2>&1)" \
    || fail "check-config failed:
$out"
echo "$out"
grep -q ": ok" <<<"$out" || fail "check-config output has no ': ok'"
grep -q "next runs: .* CE" <<<"$out" || fail "check-config output has no next runs in Europe/Stockholm time"
# A broken value is refused with exit 2 (tz database and error path work on ARM too).
set +e
bad="$(STOWAGE_JOBS__APP__TIMEZONE=Mars/Olympus_Mons "${QEMU[@]}" "$BIN" --config "$WORK/stowage.toml" check-config 2>&1)"
rc=$?
set -e
[ "$rc" -eq 2 ] || fail "bad timezone: want exit 2, got $rc:
$bad"
grep -q "jobs.app.timezone" <<<"$bad" || fail "bad timezone error does not name jobs.app.timezone:
$bad"
echo "bad timezone refused (exit 2): $(grep "jobs.app.timezone" <<<"$bad")"

# -------------------------------------------------------------------------------------------
step "backup + restore under qemu (e2e round_trip_moto, round_trip_s3s_fs_checks_signatures)"
log="$WORK/e2e.log"
set +e
STOWAGE_BIN="$WRAPPER" cargo test --locked --test e2e -- --exact --test-threads=1 \
    round_trip_moto round_trip_s3s_fs_checks_signatures 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e
[ "$rc" -eq 0 ] || fail "e2e round trips with the ARM binary failed (exit $rc)"
grep -q "test result: ok. 2 passed" "$log" || fail "expected exactly 2 e2e tests to run and pass"
# The tests really ran the ARM binary (STOWAGE_BIN honoured): run, list and restore went through it.
for cmd in " run app" " list app" " restore app"; do
    grep -q -- "$cmd" "$CALLS" 2>/dev/null || fail "the e2e tests never ran '${cmd# }' through $WRAPPER"
done
echo "ARM binary invocations by the e2e tests: $(wc -l <"$CALLS")"

end_step
echo "== summary ($TARGET)"
printf 'binary: %s bytes as built, %s bytes stripped\n' "$size_bin" "$size_stripped"
printf '%s\n' "${TIMINGS[@]}"
printf '%5ss  total\n' "$((SECONDS - START))"
echo "OK"
