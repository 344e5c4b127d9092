#!/usr/bin/env bash
# Runs every benchmark of bench/README.md once, one after another, with the
# commands its sections give, and keeps each one's output in a directory:
# the figures of one commit, measured the same day in the same session
# (this machine is noisy: compare within a run, not across days).
#
#   bench/run_all.sh [BUILD_DIR] [OUT_DIR]    # defaults: build, /tmp/jobd-bench-<time>
#
# As root, each benchmark runs at nice -20 in its own autogroup (what the
# README's figures "with the bench's CPU share" mean); otherwise as is.
# Needs a built tree (ninja -C BUILD_DIR; the Python benchmarks use build/)
# and, for cluster_bench, redis-server.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
out=${2:-/tmp/jobd-bench-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
cd "$root" || exit 1

{
  echo "commit $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (with local changes)')"
  echo "date $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "cpu $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs), $(nproc) CPUs"
  echo "load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/machine.txt"

boost() {
  if [ "$(id -u)" = 0 ]; then
    setsid -w sh -c 'echo -20 > /proc/self/autogroup; exec "$@"' sh "$@"
  else
    "$@"
  fi
}

failed=0
run() {  # run NAME COMMAND...
  local name=$1
  shift
  echo "== $name: $*  ($(date -u +%H:%M:%S))"
  if boost "$@" > "$out/$name.log" 2>&1; then
    tail -n 40 "$out/$name.log"
  else
    echo "!! $name failed (exit $?); see $out/$name.log"
    tail -n 20 "$out/$name.log"
    failed=$((failed + 1))
  fi
}

b=$build/bin
run stream            "$b/jobd_bench"
run stream-8-workers  "$b/jobd_bench" --workers 8 --repeat 1
run metrics           "$b/jobd_bench" --metrics --jobs 300000 --repeat 5
run dashboard         "$b/jobd_bench" --dashboard --jobs 400000 --repeat 3
run keys              "$b/jobd_bench" --keys --jobs 200000 --repeat 3
run fair              "$b/jobd_bench" --fair --repeat 3
run chain             "$b/jobd_bench" --chain --jobs 20000 --repeat 3
run pool              "$b/pool_bench"
run plugin            "$b/pool_bench" --only plugin
run reactor           "$b/reactor_bench"
run memory            "$b/memory_bench"
run waiting-queued    "$b/waiting_bench" --mode queued
run waiting-waiting   "$b/waiting_bench" --mode waiting --spread 20
run waiting-restart   "$b/waiting_bench" --mode restart
run command           "$b/command_bench" --rounds 400
run cluster           "$b/cluster_bench" --through-packs 1,8,32,128
run py-client         /usr/bin/python3 bench/py_client_bench.py
run py-tasks          /usr/bin/python3 bench/py_tasks_bench.py

echo "== done: $failed failed; logs in $out"
exit $((failed > 0))
