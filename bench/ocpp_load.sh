#!/usr/bin/env bash
# Measures the OCPP server: throughput and latency percentiles under a fixed
# message mix, and memory per connected charger. Builds the release binaries,
# starts `csms` on a fresh database (SQLite, or the PostgreSQL URL given as
# the first argument), drives it with `csms-sim`, and prints the figures.
#
#   bench/ocpp_load.sh                                  # SQLite
#   bench/ocpp_load.sh postgres://postgres@127.0.0.1/bench
#   CONNECTIONS=500 DURATION=30s CHARGERS=5000 bench/ocpp_load.sh
#
# Every request loop is bounded (DURATION) and only loopback is used.
set -euo pipefail
cd "$(dirname "$0")/.."
connections=${CONNECTIONS:-200}
duration=${DURATION:-20s}
chargers=${CHARGERS:-2000}
port=${PORT:-18900}

cargo build --release --workspace --quiet
work=$(mktemp -d)
database=${1:-"sqlite://$work/bench.db"}
ulimit -n 65536 2>/dev/null || true

./target/release/csms --listen "127.0.0.1:$port" --database-url "$database" \
  --jwt-secret bench-secret-bench-secret 2>"$work/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
until curl -sf "http://127.0.0.1:$port/health" >/dev/null; do sleep 0.2; done
rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }

echo "== throughput and latency: $connections connections, $duration, default mix"
./target/release/csms-sim load --url "ws://127.0.0.1:$port/ocpp" --connections "$connections" --duration "$duration"

echo
echo "== memory per connected charger: $chargers idle chargers"
before=$(rss)
./target/release/csms-sim fleet --url "ws://127.0.0.1:$port/ocpp" --chargers "$chargers" --connectors 1 \
  --session-probability 0 --duration 20s --source-addrs 127.0.0.1-127.0.0.4 >"$work/fleet.log" 2>&1 &
fleet=$!
sleep 15
during=$(rss)
wait $fleet || true
echo "server RSS before: ${before} KiB, with $chargers chargers connected: ${during} KiB"
echo "per connection: $(( (during - before) * 1024 / chargers )) bytes"
