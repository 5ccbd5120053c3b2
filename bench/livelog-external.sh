#!/usr/bin/env bash
# Writer → log service throughput with the service in its own process: the release
# `runlog` binary on a loopback port, the writer in the benchmark process, as an
# engine and a service run in production (bench/livelog.sh runs both in one process).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p runlog-cli
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
target/release/runlog service --addr "127.0.0.1:$port" --data-dir "$dir" --bench-discard \
  >"$dir/service.log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(target/release/runlog token --data-dir "$dir" --account bench --scope write --ttl 1h)
E2E_SERVICE_URL="http://127.0.0.1:$port" E2E_TOKEN="$token" \
  cargo bench -p livelog --bench e2e -- throughput
