#!/usr/bin/env bash
# livetally-ingest against nginx `return 204`, in one run, on this machine.
#
#   bench/ingest.sh [BUILD_DIR]          (default: ./build; use an optimised build)
#
# Starts nginx (2 workers, its own temporary prefix and config), two
# memcached servers and three livetally-ingest processes (--threads 2 each):
#   ingest      coalescing group commit on the two memcached (the defaults)
#   flushN      the same with --flush-ms N (FLUSH_MS, default 2): batches
#               gather N ms while the store is idle, so fewer, larger ones
#   nocoalesce  the same with --no-coalesce (every answer's 4 increments sent)
#   memory      --backend memory: (the embedded store, no network hop)
# and drives each with the same wrk POST load (-t1 -cCONNECTIONS -dDURATION,
# keep-alive, valid answers with varied questions, options, ages and
# countries, formatted once in wrk's init), alternating the servers round by
# round (nginx, ingest, nocoalesce, memory, nginx, ingest, ...) so drift of
# the machine hits all alike. Prints requests/s, p99, non-2xx responses, the
# ratio to nginx, and for memcached runs the store operations per
# acknowledged answer: memcached `stats` deltas (incr_hits + incr_misses +
# curr_items: a meta `ma` that creates its counter counts only as a new
# item) over the 202s of /metrics.
#
# A closed loop of C connections can never put more than about C / threads
# answers in a batch, so the store operations per answer also get a run at
# WIDE connections (default 1000: phones in a burst are many more).
#
# Then: a latency run at 50% of the best ingest rate, open loop
# (livetally-loadtest --rate, if built; else wrk -c8 closed loop), and the
# RSS of the ingest holding 10,000 idle connections (fresh, and after one
# answer each).
#
# Environment: ROUNDS (2), DURATION (10, seconds), CONNECTIONS (64), FLUSH_MS (2), WIDE (1000),
# QUESTIONS ("1": the answers go to question 1, as in a show where one
# question is open at a time; "all": spread over the event's five questions).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${1:-$src/build}
ingest_bin=$build/ingest/livetally-ingest
loadtest_bin=$build/loadtest/livetally-loadtest
rounds=${ROUNDS:-2}
duration=${DURATION:-10}
conns=${CONNECTIONS:-64}
flush_ms=${FLUSH_MS:-2}
wide=${WIDE:-1000}
questions=${QUESTIONS:-1}

for tool in nginx wrk memcached python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$ingest_bin" ] || { echo "bench: $ingest_bin not found (build it, or pass the build dir)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/lt-bench-ingest-XXXXXX)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # port pid what
    local i
    for i in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 0.2)" 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    echo "bench: $3 did not start" >&2
    exit 1
}

# ---- servers -------------------------------------------------------------
nginx_port=$(free_port)
mkdir -p "$tmp/logs"
cat >"$tmp/nginx.conf" <<EOF
worker_processes 2;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log warn;
events { worker_connections 16384; }
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
        listen 127.0.0.1:$nginx_port;
        location / { return 204; }
    }
}
EOF
nginx -p "$tmp" -c "$tmp/nginx.conf" -g 'daemon off;' &
pids+=($!)
wait_port "$nginx_port" "$!" nginx

mc_ports=()
for _ in 1 2; do
    p=$(free_port)
    memcached -u root -l 127.0.0.1 -p "$p" -U 0 -t 2 -m 256 -c 4096 &
    pids+=($!)
    wait_port "$p" "$!" memcached
    mc_ports+=("$p")
done
backend="memcached://127.0.0.1:${mc_ports[0]},127.0.0.1:${mc_ports[1]}"

# The example event with every question open from start-up.
event=$tmp/event.json
python3 - "$src/examples/1d-live.json" "$event" <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
for q in ev["questions"]:
    q["open"] = True
json.dump(ev, open(sys.argv[2], "w"))
EOF

declare -A port
start_ingest() { # name args...
    local name=$1
    shift
    local p
    p=$(free_port)
    "$ingest_bin" --event "$event" --listen "127.0.0.1:$p" --threads 2 --log-level warn "$@" \
        >"$tmp/logs/$name.log" 2>&1 &
    pids+=($!)
    wait_port "$p" "$!" "livetally-ingest ($name)"
    port[$name]=$p
    eval "pid_$name=$!"
}
start_ingest ingest --backend "$backend"
start_ingest flush --backend "$backend" --flush-ms "$flush_ms"
start_ingest nocoalesce --backend "$backend" --no-coalesce
start_ingest memory --backend memory:
port[nginx]=$nginx_port

# ---- the load --------------------------------------------------------------
python3 - "$event" "$questions" >"$tmp/post.lua" <<'EOF'
import json, random, sys
ev = json.load(open(sys.argv[1]))
if sys.argv[2] != "all":
    ids = {int(x) for x in sys.argv[2].split(",")}
    ev["questions"] = [q for q in ev["questions"] if q["id"] in ids]
rng = random.Random(1)
countries = ["us"] * 6 + ["gb"] * 4 + ["uk", "ie", "fr", "de", "br", "jp", "in", "es", "it",
                                       "nl", "se", "mx", "ca", "au", "zz"]
bodies = []
for _ in range(4096):
    q = rng.choice(ev["questions"])
    b = {"question": q["id"], "answer": rng.randrange(len(q["options"])),
         "age": rng.randint(8, 80)}
    if rng.random() < 0.9:
        b["country"] = rng.choice(countries)
    bodies.append(json.dumps(b, separators=(",", ":")))
print("-- Requests formatted once: per-request formatting in Lua would make wrk the bottleneck.")
print("local bodies = {")
for b in bodies:
    print("  %s," % json.dumps(b))
print("}")
print("""local reqs = {}
local n = 0
function init(args)
  local h = {["Content-Type"] = "application/json"}
  for i, b in ipairs(bodies) do
    reqs[i] = wrk.format("POST", "/v1/answers", h, b)
  end
  n = #reqs
end
local i = 0
function request()
  i = i + 1
  if i > n then i = 1 end
  return reqs[i]
end""")
EOF

# Prints "rps p99_ms non2xx" of one wrk run.
run_wrk() { # port connections
    wrk -t1 -c"$2" -d"${duration}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$1/" \
        >"$tmp/wrk.out" 2>&1
    python3 - "$tmp/wrk.out" <<'EOF'
import re, sys
t = open(sys.argv[1]).read()
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", t, re.M)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
n = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", t)
e = re.search(r"Socket errors:.*", t)
print("%.0f %.3f %d %s" % (rps, p99, int(n.group(1)) if n else 0, "err" if e else "ok"))
EOF
}

mc_ops() { # the increments both memcached servers have applied
    python3 - "${mc_ports[@]}" <<'EOF'
import socket, sys
total = 0
for p in sys.argv[1:]:
    s = socket.create_connection(("127.0.0.1", int(p)))
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        buf += s.recv(65536)
    st = dict(l.split()[1:3] for l in buf.decode().split("\r\n") if l.startswith("STAT "))
    total += int(st["incr_hits"]) + int(st["incr_misses"]) + int(st["curr_items"])
print(total)
EOF
}

metric() { # port name
    python3 - "$1" "$2" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
buf = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    buf += c
for line in buf.decode().split("\n"):
    if line.startswith(sys.argv[2] + " "):
        print(int(float(line.split()[1])))
        break
else:
    print(0)
EOF
}

variants=(nginx ingest flush nocoalesce memory)
is_mc() { [ "$1" = ingest ] || [ "$1" = flush ] || [ "$1" = nocoalesce ]; }
label() { [ "$1" = flush ] && echo "flush${flush_ms}ms" || echo "$1"; }
declare -A sum_rps best_rps
results=$tmp/results
: >"$results"
echo "livetally-ingest vs nginx return 204: wrk -t1 -c$conns -d${duration}s, $rounds rounds, $(nproc) CPUs, answers to question(s) $questions"
echo "build: $build"
printf '%-6s %-11s %10s %9s %8s %9s %14s %9s %13s\n' round server "req/s" "p99 ms" non-2xx \
    "vs nginx" "store ops/ack" "keys/ack" "answers/batch"
for r in $(seq "$rounds"); do
    nginx_rps=
    for v in "${variants[@]}"; do
        ops0=0 acks0=0 keys0=0 batches0=0
        if is_mc "$v"; then
            ops0=$(mc_ops)
            acks0=$(metric "${port[$v]}" livetally_ingest_answers_acknowledged_total)
            keys0=$(metric "${port[$v]}" livetally_ingest_batch_keys_total)
            batches0=$(metric "${port[$v]}" livetally_ingest_batches_total)
        fi
        read -r rps p99 non2xx errs < <(run_wrk "${port[$v]}" "$conns")
        opa=- kpa=- apb=-
        if is_mc "$v"; then
            sleep 0.3 # the last published figures (every 250 ms)
            ops1=$(mc_ops)
            acks1=$(metric "${port[$v]}" livetally_ingest_answers_acknowledged_total)
            keys1=$(metric "${port[$v]}" livetally_ingest_batch_keys_total)
            opa=$(python3 -c "print('%.4f' % (($ops1 - $ops0) / max(1, $acks1 - $acks0)))")
            kpa=$(python3 -c "print('%.4f' % (($keys1 - $keys0) / max(1, $acks1 - $acks0)))")
            batches1=$(metric "${port[$v]}" livetally_ingest_batches_total)
            apb=$(python3 -c "print('%.1f' % (($acks1 - $acks0) / max(1, $batches1 - $batches0)))")
        fi
        [ "$v" = nginx ] && nginx_rps=$rps
        ratio=$(python3 -c "print('%.2f' % ($rps / $nginx_rps))")
        printf '%-6s %-11s %10s %9s %8s %9s %14s %9s %13s%s\n' "$r" "$(label "$v")" "$rps" "$p99" \
            "$non2xx" "$ratio" "$opa" "$kpa" "$apb" "$([ "$errs" = ok ] || echo '  (socket errors)')"
        echo "$(label "$v") $rps $p99 $non2xx $opa" >>"$results"
    done
done
python3 - "$results" <<'EOF'
import collections, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    v, rps, p99, non2xx, opa = line.split()
    rows[v].append((float(rps), float(p99), int(non2xx), opa))
mean = {v: sum(r[0] for r in rs) / len(rs) for v, rs in rows.items()}
print("mean:")
for v, rs in rows.items():
    ops = [float(r[3]) for r in rs if r[3] != "-"]
    print("  %-11s %8.0f req/s  p99 %6.2f ms (worst)  %5.2fx nginx%s" % (
        v, mean[v], max(r[1] for r in rs), mean[v] / mean["nginx"],
        "  store ops/ack %.4f" % (sum(ops) / len(ops)) if ops else ""))
EOF
best=$(python3 - "$results" <<'EOF'
import sys
print(int(max(float(l.split()[1]) for l in open(sys.argv[1]) if l.split()[0] == "ingest")))
EOF
)

# ---- many connections: how large batches get ------------------------------
echo "wide load: wrk -t1 -c$wide -d${duration}s (one run each)"
for v in nginx ingest; do
    ops0=0 acks0=0 batches0=0
    if is_mc "$v"; then
        ops0=$(mc_ops)
        acks0=$(metric "${port[$v]}" livetally_ingest_answers_acknowledged_total)
        batches0=$(metric "${port[$v]}" livetally_ingest_batches_total)
    fi
    read -r rps p99 non2xx errs < <(run_wrk "${port[$v]}" "$wide")
    extra=
    if is_mc "$v"; then
        sleep 0.3
        ops1=$(mc_ops)
        acks1=$(metric "${port[$v]}" livetally_ingest_answers_acknowledged_total)
        batches1=$(metric "${port[$v]}" livetally_ingest_batches_total)
        extra=$(python3 -c "print('  store ops/ack %.4f, answers/batch %.1f' % (($ops1 - $ops0) / max(1, $acks1 - $acks0), ($acks1 - $acks0) / max(1, $batches1 - $batches0)))")
    fi
    printf '  %-10s %8s req/s  p99 %8s ms  non-2xx %s%s%s\n' "$v" "$rps" "$p99" "$non2xx" "$extra" \
        "$([ "$errs" = ok ] || echo '  (socket errors)')"
done

# ---- latency at half the maximum rate -------------------------------------
half=$((best / 2))
if [ -x "$loadtest_bin" ]; then
    echo "latency at 50% of the best ingest rate: livetally-loadtest --rate $half (open loop, -c$conns, ${duration}s)"
    "$loadtest_bin" --target "http://127.0.0.1:${port[ingest]}" --event "$event" --rate "$half" \
        --threads 1 --connections "$conns" --duration "${duration}s" --no-progress \
        --json "$tmp/half.json" >/dev/null 2>&1 || true
    python3 - "$tmp/half.json" <<'EOF'
import json, sys
try:
    j = json.load(open(sys.argv[1]))
except Exception as e:
    print("  loadtest gave no figures (%s)" % e)
    sys.exit(0)
l = j.get("latency_ms", {})
print("  achieved %.0f req/s, acknowledged %s, errors %s; latency ms p50 %s p90 %s p99 %s p99.9 %s max %s"
      % (j.get("achieved_rps", 0), j.get("acknowledged"), j.get("errors"), l.get("p50"),
         l.get("p90"), l.get("p99"), l.get("p999"), l.get("max")))
EOF
else
    echo "latency: livetally-loadtest not built; closed loop wrk -c8 instead"
    read -r rps p99 non2xx errs < <(run_wrk "${port[ingest]}" 8)
    echo "  wrk -c8: $rps req/s, p99 $p99 ms"
fi

# ---- 10,000 idle connections -------------------------------------------------
echo "RSS of livetally-ingest (--threads 2, memcached) holding 10,000 idle connections:"
python3 - "${port[ingest]}" "$pid_ingest" <<'EOF'
import resource, socket, sys, time
port, pid = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 10500), hard))

def status(field):
    for line in open("/proc/%d/status" % pid):
        if line.startswith(field + ":"):
            return int(line.split()[1])

body = b'{"question":1,"answer":2,"age":27,"country":"us"}'
req = (b"POST /v1/answers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
before = status("VmRSS")
t0 = time.monotonic()
socks = []
try:
    for i in range(10000):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
except OSError as e:
    print("  could open only %d connections: %s" % (len(socks), e))
time.sleep(0.5)
idle = status("VmRSS")
print("  %d fresh connections (nothing sent): RSS %d -> %d KiB (+%.1f KiB each), opened in %.1fs"
      % (len(socks), before, idle, (idle - before) / max(1, len(socks)), time.monotonic() - t0))
ok = 0
for s in socks:
    s.sendall(req)
for s in socks:
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = s.recv(4096)
        if not c:
            break
        buf += c
    ok += buf.startswith(b"HTTP/1.1 202")
time.sleep(0.5)
after = status("VmRSS")
print("  after one answer each (keep-alive, %d x 202): RSS %d KiB (+%.1f KiB each over the start); peak (VmHWM) %d KiB"
      % (ok, after, (after - before) / max(1, len(socks)), status("VmHWM")))
for s in socks:
    s.close()
EOF
echo "done"
