#!/usr/bin/env bash
# Builds the release binaries and runs the benchmark: the csms server on a
# fresh database and a trivial server, side by side, measured by the same
# load generator (see "Performance" in README.md for what each figure means).
#
#   bench/ocpp_load.sh                                   # SQLite, full size
#   bench/ocpp_load.sh --quick                           # a few seconds
#   bench/ocpp_load.sh --postgres postgres://USER@HOST:5432/postgres --json bench.json
#
# Every argument goes to `csms-sim bench` (`csms-sim bench --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --quiet
exec ./target/release/csms-sim bench "$@"
