#!/usr/bin/env bash
# Another account's write latency (PUT /stream of 10 lines every 5 ms) with the
# service quiet, then while one account floods it with stream opens from 64
# connections: once with the default per-account limits, once with service-wide
# limits only (as before per-account limits existed), side by side in one run on
# the memory backend; and whether the quiet account can open a stream afterwards.
# RUNLOG_BENCH_SECS sets each phase's length (default 5); RUNLOG_BENCH_IN_FLIGHT
# another per-account max_in_flight than the default; RUNLOG_BENCH_RELEASE=1 builds
# in release; RUNLOG_BENCH_NEW_STREAMS_MAX_WAIT_MS how long an open past the
# account's burst of new streams may wait for its turn (0: refused at once);
# RUNLOG_BENCH_BACKEND=redis runs each service over a Redis of its own (a real
# redis-server: RUNLOG_TEST_REDIS_SERVER, or `redis-server` on PATH);
# RUNLOG_BENCH_FLOOD=appends floods with appends (64 streams, 100 lines a request)
# instead of opens. Figures go to
# bench/RESULTS.md, "Fairness between accounts".
set -euo pipefail
cd "$(dirname "$0")/.."
profile=()
if [ "${RUNLOG_BENCH_RELEASE:-0}" = 1 ]; then profile=(--release); fi
cargo test -q "${profile[@]}" -p runlog-service --test fairness -- \
    --ignored --exact measure_other_accounts_write_latency_during_a_flood --nocapture 2>&1 |
    grep -E '^fairness'
