#!/usr/bin/env bash
# Viewer and terminal-reader benchmarks on a 1 000 000-line archive:
#  - headless Chromium: time to first line, to the last line (#L1000000), JS heap,
#    scrolling frame times, search — against a plain fetch() of the same archive;
#  - the same size cut into 10 000 sections: folded by outcome, first failure, scrolling
#    folded and expanded, expand/collapse all, search into a folded section;
#  - `runlog logs` (NDJSON and text) against curl of the same archive.
# Needs chromium, chromium-driver and curl (scripts/test installs the first two).
set -euo pipefail
cd "$(dirname "$0")/.."
export RUNLOG_TEST_ARTIFACTS="${RUNLOG_TEST_ARTIFACTS:-$(pwd)/target/test-artifacts}"
mkdir -p "$RUNLOG_TEST_ARTIFACTS"
cargo test --release -p runlog-service --test viewer_bench -- --ignored --nocapture --test-threads=1
cargo test --release -p runlog-cli --test logs_bench -- --ignored --nocapture
