#!/usr/bin/env bash
# The configurations a live night runs (answers with user ids, replicas=2,
# Redis, Redis Cluster) against the anonymous replicas=1 path and nginx
# `return 204`, in one run, interleaved (bench/livenight.py says what each
# row is and what is measured):
#
#   bench/livenight.sh [BUILD_DIR]          (default: ./build; use an optimised build)
#
# Environment: ROUNDS (2), DURATION (8, seconds), CONNECTIONS (64), HALF_DURATION (5), ROWS
# (comma-separated row names, default all).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
for tool in nginx wrk memcached redis-server redis-cli python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$build/ingest/livetally-ingest" ] || { echo "bench: $build/ingest/livetally-ingest not built" >&2; exit 2; }
rounds=${ROUNDS:-2}
duration=${DURATION:-8}
# Every process is stopped by PID by the driver, also on failure; timeout
# bounds the whole run.
exec timeout --signal=TERM $(( rounds * 7 * (duration + 20) + 7 * 70 + 120 )) \
    python3 "$here/livenight.py" --build "$build" --rounds "$rounds" --duration "$duration" \
        --connections "${CONNECTIONS:-64}" --rows "${ROWS:-}" --half-duration "${HALF_DURATION:-5}"
