#!/usr/bin/env bash
# What one answer per user costs: livetally-ingest throughput with every
# answer carrying a user id vs none, in one run, on this machine.
#
#   bench/fans.sh [BUILD_DIR]          (default: ./build; use an optimised build)
#
# Starts two memcached servers and one livetally-ingest (--threads 2) on
# them, with every question of the example event open, and drives it with
# wrk (-t1 -cCONNECTIONS -dDURATION, keep-alive), alternating round by round:
#   anonymous   valid answers without a user (varied questions, options,
#               ages, countries: 4096 bodies formatted once in wrk's init)
#   users       the same bodies, each with a user id never used before
#               (a new prefix per round), so every answer is a first answer:
#               one marker add plus, for a right answer, the user's two
#               counters. The requests are formatted in wrk's init, as many
#               as the round can send (from the anonymous rate), so no Lua
#               runs per request.
# Prints requests/s, p99, non-2xx, the ratio users/anonymous, and the store
# operations per acknowledged answer from the ingest's /metrics: increments
# written (livetally_ingest_batch_keys_total) + markers added
# (livetally_ingest_user_markers_total), over the 202s; and memcached's own
# counts (increments + new items, from `stats`: every marker here is new)
# over the 202s as a cross-check.
#
# Environment: ROUNDS (2), DURATION (10, seconds), CONNECTIONS (64), NODES (2
# memcached servers), REPLICAS (1; 2 with NODES=3 is the live-night pool: the
# memcached column then counts every replica's commands).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=${1:-$src/build}
ingest_bin=$build/ingest/livetally-ingest
rounds=${ROUNDS:-2}
duration=${DURATION:-10}
conns=${CONNECTIONS:-64}
nodes=${NODES:-2}
replicas=${REPLICAS:-1}

for tool in wrk memcached python3; do
    command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is not installed" >&2; exit 2; }
done
[ -x "$ingest_bin" ] || { echo "bench: $ingest_bin not found (build it, or pass the build dir)" >&2; exit 2; }

tmp=$(mktemp -d /tmp/lt-bench-fans-XXXXXX)
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
mkdir -p "$tmp/logs"
mc_ports=()
for _ in $(seq "$nodes"); do
    p=$(free_port)
    memcached -u root -l 127.0.0.1 -p "$p" -U 0 -t 2 -m 1024 -c 4096 &
    pids+=($!)
    wait_port "$p" "$!" memcached
    mc_ports+=("$p")
done
backend="memcached://$(printf '127.0.0.1:%s,' "${mc_ports[@]}" | sed 's/,$//')?replicas=$replicas"

event=$tmp/event.json
python3 - "$src/examples/1d-live.json" "$event" <<'EOF'
import json, sys
ev = json.load(open(sys.argv[1]))
for q in ev["questions"]:
    q["open"] = True
json.dump(ev, open(sys.argv[2], "w"))
EOF

port=$(free_port)
"$ingest_bin" --event "$event" --backend "$backend" --listen "127.0.0.1:$port" --threads 2 \
    --log-level warn >"$tmp/logs/ingest.log" 2>&1 &
pids+=($!)
wait_port "$port" "$!" livetally-ingest

# ---- the load --------------------------------------------------------------
# One script for both: with a prefix argument, every request gets a user id
# "<prefix><i>" (i = 1..count, so each user answers once).
python3 - "$event" >"$tmp/post.lua" <<'EOF'
import json, random, sys
ev = json.load(open(sys.argv[1]))
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
    bodies.append(json.dumps(b, separators=(",", ":"))[:-1])  # without the closing brace
print("-- Requests formatted once: per-request formatting in Lua would make wrk the bottleneck.")
print("local bodies = {")
for b in bodies:
    print("  %s," % json.dumps(b))
print("}")
print("""local reqs = {}
local n = 0
function init(args)
  local h = {["Content-Type"] = "application/json"}
  local prefix = args[1]
  if prefix == nil then
    for i, b in ipairs(bodies) do
      reqs[i] = wrk.format("POST", "/v1/answers", h, b .. "}")
    end
  else
    local count = tonumber(args[2])
    for i = 1, count do
      local b = bodies[(i - 1) % #bodies + 1]
      reqs[i] = wrk.format("POST", "/v1/answers", h, b .. ',"user":"' .. prefix .. i .. '"}')
    end
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

# Prints "rps p99_ms non2xx ok|err" of one wrk run; extra arguments go to the script.
run_wrk() {
    wrk -t1 -c"$conns" -d"${duration}s" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/" \
        -- "$@" >"$tmp/wrk.out" 2>&1
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

metrics() { # prints acked keys markers dups
    python3 - "$port" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
buf = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    buf += c
want = ["livetally_ingest_answers_acknowledged_total", "livetally_ingest_batch_keys_total",
        "livetally_ingest_user_markers_total", "livetally_ingest_answers_duplicate_total"]
vals = {}
for line in buf.decode().split("\n"):
    parts = line.split()
    if len(parts) == 2 and parts[0] in want:
        vals[parts[0]] = int(float(parts[1]))
print(" ".join(str(vals.get(w, 0)) for w in want))
EOF
}

mc_cmds() { # increments and new items (counters, markers) of every memcached server
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
    # An "ma" that creates its counter counts only as a new item; an "ms"
    # (a marker's add) that creates it as a set and a new item: increments
    # plus new items count each once.
    total += int(st["incr_hits"]) + int(st["incr_misses"]) + int(st["total_items"])
print(total)
EOF
}

results=$tmp/results
: >"$results"
echo "livetally-ingest, answers with a user id vs without: wrk -t1 -c$conns -d${duration}s, $rounds rounds, $(nproc) CPUs"
echo "store: $nodes memcached, replicas=$replicas"
echo "build: $build"
printf '%-6s %-10s %10s %9s %8s %9s %14s %14s\n' round answers "req/s" "p99 ms" non-2xx \
    "vs anon" "store ops/ack" "memcached/ack"
anon_best=0
for r in $(seq "$rounds"); do
    for v in anonymous users; do
        args=()
        if [ "$v" = users ]; then
            # as many distinct users as the round can send (x1.5 the anonymous rate)
            count=$(python3 -c "print(int(max($anon_best, 20000) * $duration * 1.5))")
            args=("r$r-" "$count")
        fi
        read -r a0 k0 m0 d0 < <(metrics)
        c0=$(mc_cmds)
        read -r rps p99 non2xx errs < <(run_wrk "${args[@]}")
        sleep 0.3 # the last published figures (every 250 ms)
        read -r a1 k1 m1 d1 < <(metrics)
        c1=$(mc_cmds)
        acks=$((a1 - a0))
        opa=$(python3 -c "print('%.3f' % (($k1 - $k0 + $m1 - $m0) / max(1, $acks)))")
        mpa=$(python3 -c "print('%.3f' % (($c1 - $c0) / max(1, $acks)))")
        if [ "$v" = anonymous ]; then
            anon_rps=$rps
            anon_best=$(python3 -c "print(max($anon_best, $rps))")
        fi
        ratio=$(python3 -c "print('%.2f' % ($rps / $anon_rps))")
        printf '%-6s %-10s %10s %9s %8s %9s %14s %14s%s\n' "$r" "$v" "$rps" "$p99" "$non2xx" \
            "$ratio" "$opa" "$mpa" "$([ "$errs" = ok ] || echo '  (socket errors)')"
        [ "$non2xx" = 0 ] || echo "       ($((d1 - d0)) of the non-2xx were duplicates: the users ran out)"
        echo "$v $rps $p99 $non2xx $opa $mpa" >>"$results"
    done
done
python3 - "$results" <<'EOF'
import collections, sys
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    v, rps, p99, non2xx, opa, mpa = line.split()
    rows[v].append((float(rps), float(p99), int(non2xx), float(opa), float(mpa)))
mean = {v: sum(r[0] for r in rs) / len(rs) for v, rs in rows.items()}
print("mean:")
for v, rs in rows.items():
    print("  %-10s %8.0f req/s  p99 %6.2f ms (worst)  store ops/ack %.3f  memcached commands/ack %.3f"
          % (v, mean[v], max(r[1] for r in rs), sum(r[3] for r in rs) / len(rs),
             sum(r[4] for r in rs) / len(rs)))
ratio = mean["users"] / mean["anonymous"]
print("users / anonymous: %.2fx (target >= 0.6x)" % ratio)
EOF
echo "done"
