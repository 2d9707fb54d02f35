#!/usr/bin/env bash
# The one command that runs stowage's tests on a fresh Debian 12 machine: installs what the
# tests need (PostgreSQL, moto, s3s-fs, zstd; idempotent), then runs the whole suite.
# Extra arguments go to `cargo test` (e.g. `tests/run.sh --test e2e`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup.sh
# Snapshots are compared, never rewritten, outside an explicit review (cargo insta review).
export INSTA_UPDATE="${INSTA_UPDATE:-no}"
exec cargo test --locked "$@"
