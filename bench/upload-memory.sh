#!/usr/bin/env bash
# Peak RSS of an in-process log service while a ~200 MB plain NDJSON archive is
# uploaded (POST /blob, no gzip: what lite-engine sends), over its idle RSS. The body
# is generated as it is sent. Figures go to bench/RESULTS.md, "Archive uploads".
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test -q -p runlog-service --test upload_memory -- \
    --ignored --exact measure_200_mb_plain_upload --nocapture 2>&1 | grep -E '^plain upload'
