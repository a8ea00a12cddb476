#!/usr/bin/env bash
# The load generator against wrk, on the same nginx `return 204` server, in
# one run: is livetally-loadtest ever the bottleneck?
#
#   bench/loadtest.sh [BUILD_DIR]          (default: ./build)
#
# nginx (2 workers, its own temporary prefix and config, a free loopback
# port) answers 204 to everything. Then, alternating A B A B so drift of the
# machine hits both alike:
#   A  wrk -t1 -c64 -d10s, sending the same POST /v1/answers request
#   B  livetally-loadtest --max (closed loop, like wrk) -t1 -c64 -d10s
#   C  livetally-loadtest --profile steady at 1.5x the rate wrk reached
#      (open loop: what it can offer when asked for more than the server does)
# and prints the req/s of each round and the ratio loadtest/wrk, with the CPU
# time each tool spent per request (user + system, from /usr/bin/time).
#
# Environment: ROUNDS (2), DURATION (10, seconds), CONNECTIONS (64).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${1:-$src/build}
loadtest=$build/loadtest/livetally-loadtest
event=$src/examples/1d-live.json
rounds=${ROUNDS:-2}
duration=${DURATION:-10}
conns=${CONNECTIONS:-64}

for tool in nginx wrk python3 /usr/bin/time; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$loadtest" ] || { echo "bench: $loadtest not found (build it, or pass the build dir)" >&2; exit 2; }
[ -f "$event" ] || { echo "bench: $event not found" >&2; exit 2; }

tmp=$(mktemp -d /tmp/lt-bench-XXXXXX)
nginx_pid=
cleanup() {
    if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
        kill -TERM "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/logs"
cat >"$tmp/nginx.conf" <<EOF
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $tmp/body;
    proxy_temp_path $tmp/proxy;
    fastcgi_temp_path $tmp/fastcgi;
    uwsgi_temp_path $tmp/uwsgi;
    scgi_temp_path $tmp/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 60s;
    server {
        listen 127.0.0.1:$port;
        location / { return 204; }
    }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' &
nginx_pid=$!
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
    sleep 0.1
done
kill -0 "$nginx_pid" 2>/dev/null || { echo "bench: nginx did not start" >&2; cat "$tmp/logs/error.log" >&2; exit 1; }

# wrk sends what the generator sends: the same method, path, headers and a
# body of the same size, built once (no Lua per request).
cat >"$tmp/post.lua" <<'EOF'
wrk.method = "POST"
wrk.path = "/v1/answers"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"question":1,"answer":2,"age":27,"country":"us"}'
EOF

json_field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }

# CPU seconds (user + system) of the last timed command.
cpu_of() { awk '{ print $1 + $2 }' "$1"; }

# Each run prints "REQ_PER_S CPU_US_PER_REQUEST": the rate, and what one
# request cost the generator itself (steadier than the rate on a busy box).
run_wrk() {
    /usr/bin/time -f "%U %S" -o "$tmp/time" \
        wrk -t1 -c"$conns" -d"${duration}s" -s "$tmp/post.lua" "http://127.0.0.1:$port/" >"$tmp/wrk.out"
    local rps n
    rps=$(awk '/Requests\/sec/ { print $2 }' "$tmp/wrk.out")
    n=$(awk '/requests in/ { print $1 }' "$tmp/wrk.out")
    python3 -c "print('%s %.2f' % ('$rps', $(cpu_of "$tmp/time") * 1e6 / $n))"
}

run_loadtest() {
    /usr/bin/time -f "%U %S" -o "$tmp/time" \
        "$loadtest" --target "http://127.0.0.1:$port" --event "$event" --threads 1 \
        --connections "$conns" --duration "${duration}s" --no-progress --json "$tmp/lt.json" "$@" >/dev/null
    local rps n
    rps=$(json_field "$tmp/lt.json" achieved_rps)
    n=$(json_field "$tmp/lt.json" completed)
    python3 -c "print('%s %.2f' % ('$rps', $(cpu_of "$tmp/time") * 1e6 / max($n, 1)))"
}

echo "nginx return 204 on 127.0.0.1:$port, 2 workers; $conns connections, 1 thread, ${duration}s per run"
wrk_all=()
max_all=()
wrk_cpu=()
max_cpu=()
printf '%-6s %22s %26s %32s\n' round "wrk req/s (cpu us/req)" "loadtest --max req/s (cpu)" "loadtest steady req/s (cpu)"
for r in $(seq "$rounds"); do
    read -r w wc < <(run_wrk)
    read -r m mc < <(run_loadtest --max)
    target=$(python3 -c "print(int(float('$w') * 1.5))")
    read -r s sc < <(run_loadtest --rate "$target")
    wrk_all+=("$w"); wrk_cpu+=("$wc")
    max_all+=("$m"); max_cpu+=("$mc")
    printf '%-6s %14.0f (%5.2f) %18.0f (%5.2f) %15.0f (%5.2f) asked %s/s\n' \
        "$r" "$w" "$wc" "$m" "$mc" "$s" "$sc" "$target"
done
python3 - "${wrk_all[*]}" "${max_all[*]}" "${wrk_cpu[*]}" "${max_cpu[*]}" <<'PY'
import sys
w, m, wc, mc = ([float(x) for x in a.split()] for a in sys.argv[1:5])
mean = lambda v: sum(v) / len(v)
print("mean   wrk %.0f req/s, loadtest --max %.0f req/s: ratio loadtest/wrk %.2f" %
      (mean(w), mean(m), mean(m) / mean(w)))
print("cpu    wrk %.2f us/request, loadtest --max %.2f us/request: ratio %.2f" %
      (mean(wc), mean(mc), mean(mc) / mean(wc)))
PY
