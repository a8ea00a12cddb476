#!/usr/bin/env bash
# The store's hot paths on each backend, next to redis-benchmark, in one run:
#
#   bench/store.sh [BUILD_DIR]          (default: ./build; needs bench/store_bench built)
#
# Starts on free loopback ports: 2 memcached, 2 redis-server, a Redis Cluster
# of 3 masters (redis-cli --cluster create), nothing written to disk. Then,
# ROUNDS times, alternating so drift of the machine hits all alike:
#   R  redis-benchmark -P 64 INCRBY on one of the redis servers (the reference)
#   M  store_bench on memcached://  (2 nodes)
#   P  store_bench on redis://      (2 nodes)
#   C  store_bench on redis-cluster:// (3 masters)
# store_bench writes batches of BATCH distinct counters (what one ingest
# flush sends) and reads them back 1000 keys at a time (what the aggregator
# does), each for RUN_SECONDS. Prints every round, then the best of each and
# the ratios to redis-benchmark's pipelined INCRBY.
#
# Environment: ROUNDS (2), RUN_SECONDS (4), BATCH (4096), KEYS (100000),
# REPLICAS (unset; e.g. 2: also runs redis:// and memcached:// with
# ?replicas=2 on 3 nodes).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${1:-$src/build}
bench=$build/bench/store_bench
rounds=${ROUNDS:-2}
seconds=${RUN_SECONDS:-4}
batch=${BATCH:-4096}
keys=${KEYS:-100000}

for tool in memcached redis-server redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$bench" ] || { echo "bench: $bench not built (cmake --build $build --target store_bench)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/lt-bench-store-XXXXXX)
pids=()
cleanup() {
    for p in ${pids[@]+"${pids[@]}"}; do kill -9 "$p" 2>/dev/null || true; done
    for p in ${pids[@]+"${pids[@]}"}; do wait "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "bench: nothing listens on port $1" >&2
    exit 1
}

# The starters run in this shell (not in $(...)): pids must reach cleanup.
# Each sets $port.
start_memcached() {
    port=$(free_port)
    memcached -u root -l 127.0.0.1 -p "$port" -U 0 -t 2 -m 512 >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$port"
}

start_redis() { # [cluster]
    port=$(free_port)
    local args=(--port "$port" --bind 127.0.0.1 --save "" --appendonly no)
    if [ "${1:-}" = cluster ]; then
        mkdir -p "$tmp/$port"
        args+=(--cluster-enabled yes --cluster-config-file nodes.conf --dir "$tmp/$port"
               --cluster-port "$(free_port)")
    fi
    redis-server "${args[@]}" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$port"
}

start_memcached; mc1=$port
start_memcached; mc2=$port
start_memcached; mc3=$port
start_redis; rd1=$port
start_redis; rd2=$port
start_redis; rd3=$port
start_redis cluster; cl1=$port
start_redis cluster; cl2=$port
start_redis cluster; cl3=$port
redis-cli --cluster create "127.0.0.1:$cl1" "127.0.0.1:$cl2" "127.0.0.1:$cl3" --cluster-yes \
    >/dev/null 2>&1
for _ in $(seq 200); do
    ok=0
    for p in $cl1 $cl2 $cl3; do
        redis-cli -p "$p" cluster info | grep -q cluster_state:ok && ok=$((ok + 1))
    done
    [ "$ok" = 3 ] && break
    sleep 0.1
done

declare -A url=(
    [memcached]="memcached://127.0.0.1:$mc1,127.0.0.1:$mc2"
    [redis]="redis://127.0.0.1:$rd1,127.0.0.1:$rd2"
    [redis-cluster]="redis-cluster://127.0.0.1:$cl1,127.0.0.1:$cl2,127.0.0.1:$cl3"
)
order=(memcached redis redis-cluster)
if [ -n "${REPLICAS:-}" ]; then
    url[memcached-r$REPLICAS]="memcached://127.0.0.1:$mc1,127.0.0.1:$mc2,127.0.0.1:$mc3?replicas=$REPLICAS"
    url[redis-r$REPLICAS]="redis://127.0.0.1:$rd1,127.0.0.1:$rd2,127.0.0.1:$rd3?replicas=$REPLICAS"
    order+=("memcached-r$REPLICAS" "redis-r$REPLICAS")
fi

declare -A best_incr best_mget
best_ref=0
max() { python3 -c "print(max(float('$1'), float('$2')))"; }

echo "machine: $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg); batch=$batch keys=$keys seconds=$seconds"
for round in $(seq "$rounds"); do
    ref=$(redis-benchmark -p "$rd3" -P 64 -n 2000000 -r 100000 --csv INCRBY 'k:__rand_int__' 1 |
          awk -F'"' '/INCRBY/ {print $4}')
    printf 'round %d  redis-benchmark -P 64 INCRBY        %10.0f ops/s\n' "$round" "$ref"
    best_ref=$(max "$best_ref" "$ref")
    redis-cli -p "$rd3" flushall >/dev/null
    for name in "${order[@]}"; do
        line=$("$bench" --backend "${url[$name]}" --seconds "$seconds" --batch "$batch" \
               --keys "$keys")
        incr=$(sed -n 's/.*incr_items_per_s=\([0-9]*\).*/\1/p' <<<"$line")
        mget=$(sed -n 's/.*mget_keys_per_s=\([0-9]*\).*/\1/p' <<<"$line")
        printf 'round %d  %-16s incr %10.0f items/s   mget %10.0f keys/s\n' "$round" "$name" \
            "$incr" "$mget"
        best_incr[$name]=$(max "${best_incr[$name]:-0}" "$incr")
        best_mget[$name]=$(max "${best_mget[$name]:-0}" "$mget")
    done
done

echo
echo "best of $rounds (reference: redis-benchmark -P 64 INCRBY on one server: $(printf '%.0f' "$best_ref") ops/s)"
for name in "${order[@]}"; do
    python3 - "$name" "${best_incr[$name]}" "${best_mget[$name]}" "$best_ref" <<'EOF'
import sys
name, incr, mget, ref = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print("%-16s incr %10.0f items/s = %.2fx redis-benchmark INCRBY   mget %10.0f keys/s (target 1M: %s)"
      % (name, incr, incr / ref, mget, "ok" if mget >= 1e6 else "below"))
EOF
done
echo "target: redis pool incr >= 0.7x redis-benchmark INCRBY"
