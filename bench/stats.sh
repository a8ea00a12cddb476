#!/usr/bin/env bash
# GET /v1/stats of a 42-question snapshot: livetally-dashboard against nginx
# serving the same bytes from a file (as is, gzip, 304), in one run,
# interleaved (bench/stats.py says what each row is):
#
#   bench/stats.sh [BUILD_DIR]          (default: ./build; use an optimised build)
#
# Environment: ROUNDS (2), DURATION (6, seconds), CONNECTIONS (64).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:-$here/../build}" && pwd)
for tool in nginx wrk memcached python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$build/dashboard/livetally-dashboard" ] || { echo "bench: $build/dashboard/livetally-dashboard not built" >&2; exit 2; }
rounds=${ROUNDS:-2}
duration=${DURATION:-6}
# Every process is stopped by PID by the driver, also on failure; timeout
# bounds the whole run.
exec timeout --signal=TERM $(( rounds * 7 * (duration + 20) + 120 )) \
    python3 "$here/stats.py" --build "$build" --rounds "$rounds" --duration "$duration" \
        --connections "${CONNECTIONS:-64}"
