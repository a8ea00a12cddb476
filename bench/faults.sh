#!/usr/bin/env bash
# The live-night fleet on a healthy network vs with one slow and one flaky
# store link (issue 12, finding 3), same clients, interleaved rounds:
#
#   bench/faults.sh [BUILD_DIR]          (default: ./build)
#
# Each round starts, on free 127.0.0.1 ports, 3 memcached (or redis-server)
# with replicas=2, 2 livetally-ingest (--threads 1), livetally-aggregate and
# livetally-dashboard, and CLIENTS client threads sending answers with user
# ids (a 503 is retried with the same body) for RUN_SECONDS; then stops them all
# by PID. Rounds alternate A B A B: A healthy, B with node 2 behind a proxy
# adding DELAY_MS each way and node 3 behind one cutting a random connection
# every CUT_EVERY_S on average (tests/integration/faultproxy.py: no netem on
# this kernel). Prints answers/s (202s over the run, its drain included) of
# every round, the means and the ratio B/A.
#
# Environment: KIND (memcached|redis), ROUNDS (2), RUN_SECONDS (8), CLIENTS (8),
# DELAY_MS (20), CUT_EVERY_S (1.5), CUT_MODE (rst, or silent: the cut
# connection is black-holed instead of reset), OPTIONS (more backend URL options, e.g.
# '&replica_lag_ms=0' for the behaviour before the lag budget).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
kind=${KIND:-memcached}
server=memcached
[ "$kind" = redis ] && server=redis-server

for tool in "$server" python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
for b in ingest/livetally-ingest aggregate/livetally-aggregate dashboard/livetally-dashboard; do
    [ -x "$build/$b" ] || { echo "bench: $build/$b not built" >&2; exit 2; }
done

# The runner stops every process it started by PID, also on failure or
# Ctrl-C (tests/integration/ltutil.py); timeout bounds the whole run.
rounds=${ROUNDS:-2}
seconds=${RUN_SECONDS:-8}
exec timeout --signal=TERM $(( rounds * 2 * (seconds + 60) + 60 )) \
    env LIVETALLY_BIN="$build" LIVETALLY_SRC="$src" \
    python3 "$src/tests/integration/test_store_slow_replica.py" --bench --kind "$kind" \
        --rounds "$rounds" --seconds "$seconds" --clients "${CLIENTS:-8}" \
        --delay-ms "${DELAY_MS:-20}" --cut-every-s "${CUT_EVERY_S:-1.5}" --cut-mode "${CUT_MODE:-rst}" \
        --options "${OPTIONS:-}"
