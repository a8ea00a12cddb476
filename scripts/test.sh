#!/usr/bin/env bash
# Sets up, builds and runs every test:
#   1. the whole suite (unit + integration) built with gcc;
#   2. the whole suite again built with clang under AddressSanitizer +
#      UndefinedBehaviorSanitizer, with the libFuzzer harnesses (20 s each);
#   3. the unit tests under valgrind (no leaks, no invalid accesses).
# Usage: scripts/test.sh [--quick]     (--quick: step 1 only)
# Integration tests start their own memcached/redis/livetally processes on
# free 127.0.0.1 ports and stop them, also when they fail.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
quick=""
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "test.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

"$root/scripts/setup.sh"
jobs=$(nproc)

# A test that cannot run (a tool missing) reports skipped (exit 77); CI,
# which installs everything, must skip nothing.
run_suite() {
  local dir=$1 log
  log=$(mktemp)
  ctest --test-dir "$dir" --output-on-failure -j"$jobs" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ] && [ "${CI:-}" = "true" ] && grep -q '\*\*\*Skipped' "$log"; then
    echo "CI: tests were skipped (every tool is installed by scripts/setup.sh):"
    grep '\*\*\*Skipped' "$log"
    rc=1
  fi
  rm -f "$log"
  return "$rc"
}

echo "== gcc build + full suite"
CC=gcc BUILD_DIR="$root/build" "$root/scripts/build.sh" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLIVETALLY_SANITIZE=OFF
run_suite "$root/build"
[ -n "$quick" ] && exit 0

echo "== clang + ASan/UBSan build + full suite"
CC=clang BUILD_DIR="$root/build-asan" "$root/scripts/build.sh" -DCMAKE_BUILD_TYPE=Debug -DLIVETALLY_SANITIZE=ON
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
run_suite "$root/build-asan"
unset ASAN_OPTIONS UBSAN_OPTIONS

echo "== unit tests under valgrind"
failed=0
for t in "$root"/build/tests/test_*; do
  [ -x "$t" ] || continue
  if ! valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
       --error-exitcode=1 "$t" >/dev/null 2>"$root/build/valgrind-$(basename "$t").log"; then
    echo "valgrind: $(basename "$t") FAILED"; cat "$root/build/valgrind-$(basename "$t").log"; failed=$((failed+1))
  else
    echo "valgrind: $(basename "$t") clean"
  fi
done
[ "$failed" -eq 0 ] || { echo "valgrind: $failed unit test binaries failed"; exit 1; }
echo "all test stages passed"
