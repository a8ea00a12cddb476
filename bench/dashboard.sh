#!/usr/bin/env bash
# /v1/stats latency while Server-Sent Events clients are connected.
#
# Starts livetally (embedded store, --interval 1000) from the build, opens
# N stream clients that read every snapshot pushed to them, checks that the
# server counts them, then runs wrk on GET /v1/stats and prints its latency
# percentiles. Target: p99 under 10 ms with 200 streams.
#
# Usage: bench/dashboard.sh [--streams N] [--duration S] [--connections C]
#   (defaults 200, 10, 16; the build is $BUILD_DIR or build/, see scripts/build.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build}
streams=200
duration=10
connections=16
while [ $# -gt 0 ]; do
  case "$1" in
    --streams) streams="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dashboard.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
bin="$build/livetally/livetally"
[ -x "$bin" ] || { echo "dashboard.sh: $bin is missing: run scripts/build.sh first" >&2; exit 1; }
command -v wrk >/dev/null || { echo "dashboard.sh: wrk is missing: run scripts/setup.sh" >&2; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
lt_pid=""
holder_pid=""
cleanup() {
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null && wait "$holder_pid" 2>/dev/null || true
  [ -n "$lt_pid" ] && kill "$lt_pid" 2>/dev/null && wait "$lt_pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" --event "$root/examples/1d-live.json" --listen "127.0.0.1:$port" --interval 1000 \
  --max-streams $((streams + 100)) --log-level warn &
lt_pid=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq 1 200); do
  printf '{"question":1,"answer":%d,"age":%d,"country":"%s"}' $((i % 4)) $((14 + i % 50)) \
    "$(echo us gb ie de fr | cut -d' ' -f$((i % 5 + 1)))" |
    curl -fs -o /dev/null -H 'Content-Type: application/json' --data-binary @- \
      "http://127.0.0.1:$port/v1/answers"
done

# The stream clients: connect, then read whatever arrives until SIGTERM.
cat > "$tmp/holder.py" <<'PY'
import selectors, signal, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
sel = selectors.DefaultSelector()
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"GET /v1/stats/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    socks.append(s)
received = [0]
events = [0]
def stop(*_):
    print("stream clients: %d connected, %d events, %.1f MB received" %
          (n, events[0], received[0] / 1e6), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    for key, _ in sel.select(timeout=1):
        data = key.fileobj.recv(1 << 20)
        received[0] += len(data)
        events[0] += data.count(b"event: stats")
PY
python3 "$tmp/holder.py" "$port" "$streams" &
holder_pid=$!
connected=0
for _ in $(seq 100); do
  connected=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '$1 == "livetally_dashboard_streams" {print $2}')
  [ "${connected:-0}" -ge "$streams" ] && break
  sleep 0.1
done
echo "== $connected stream clients connected; wrk -t1 -c$connections -d${duration}s GET /v1/stats"
wrk -t1 -c"$connections" -d"${duration}s" --latency "http://127.0.0.1:$port/v1/stats" | tee "$tmp/wrk.txt"
p99=$(awk '$1 == "99%" {print $2}' "$tmp/wrk.txt")
rps=$(awk '$1 == "Requests/sec:" {print $2}' "$tmp/wrk.txt")
streams_after=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '$1 == "livetally_dashboard_streams" {print $2}')
kill "$holder_pid"; wait "$holder_pid" || true; holder_pid=""
echo "result: /v1/stats p99 $p99 at $rps req/s with $streams_after of $streams stream clients connected (target p99 < 10ms)"
