#!/usr/bin/env bash
# livelog benchmarks: CPU stages (criterion) and end-to-end writer → log service.
# Each mode prints its baseline measured in the same run. The rss mode runs in its own
# process because it reports the process's peak RSS (VmHWM). bench/livelog-external.sh
# runs the throughput mode against a service in its own process.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p livelog --bench pipeline -- --warm-up-time 1 --measurement-time 3
cargo bench -p livelog --bench e2e -- throughput
cargo bench -p livelog --bench e2e -- latency
cargo bench -p livelog --bench e2e -- rss
