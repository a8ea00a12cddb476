#!/usr/bin/env bash
# Sets up, builds and runs a short live concert on the embedded store:
# starts livetally, opens three questions one after the other through the
# admin API, sends a few thousand answers, closes them, prints the
# statistics and the dashboard URL.
# Usage: scripts/demo.sh [--port N] [--keep]   (--keep: serve until Ctrl-C)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
port=8080
keep=""
[ -t 0 ] && keep=1
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-keep) keep=""; shift ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

"$root/scripts/setup.sh"
echo "== building"
BUILD_DIR="$root/build" "$root/scripts/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null

# A busy port (another demo, a web server) is not an error: take a free one.
if (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid" || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$tmp/admin.token"

"$root/build/livetally/livetally" --event "$root/examples/1d-live.json" \
  --listen "127.0.0.1:$port" --admin-token-file "$tmp/admin.token" --interval 500 \
  --log-level warn &
pid=$!
for _ in $(seq 50); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "== livetally is serving on http://127.0.0.1:$port (embedded store); the concert starts"
status=0
python3 "$root/scripts/concert.py" --url "http://127.0.0.1:$port" \
  --event "$root/examples/1d-live.json" --token-file "$tmp/admin.token" || status=$?
echo
echo "dashboard: http://127.0.0.1:$port/   (JSON: http://127.0.0.1:$port/v1/stats)"
if [ -n "$keep" ]; then
  echo "serving until Ctrl-C"
  wait "$pid" || true
fi
exit $status
