#!/usr/bin/env bash
# RSS of an in-process log service while 8 raw TCP peers send GET /stream and never
# read: once on a live stream of 1 MiB lines, once on an archived stream (64 MiB
# inflated). Each case runs in its own process, so one case's freed memory does not
# move the other's baseline. Figures go to bench/RESULTS.md, "Stalled readers".
set -euo pipefail
cd "$(dirname "$0")/.."
for case in measure_stalled_live_tails measure_stalled_archive_tails; do
    cargo test -q -p runlog-service --test stalled_readers -- \
        --ignored --exact "$case" --nocapture 2>&1 | grep -E '^(live|archive)'
done
