#!/usr/bin/env bash
# jobd developer entry point (the README's two commands).
#
#   deploy/setup.sh run    install missing Debian packages, build, start jobd
#                          in the foreground on its embedded defaults
#   deploy/setup.sh test   install, build, run every test: the normal build,
#                          then a clang build that checks every lock
#                          annotation (-Wthread-safety) and runs the libFuzzer
#                          targets briefly, then the ASan+UBSan build
#                          (JOBD_SANITIZERS=0 skips the last two)
#
# Needs root (or sudo) only to install packages that are missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

packages=(
  build-essential clang-14 libclang-rt-14-dev cmake ninja-build ccache pkg-config
  protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev
  libabsl-dev libspdlog-dev libcli11-dev libjemalloc-dev
  libasio-dev libcurl4-openssl-dev libsqlite3-dev libsystemd-dev libssl-dev
  libtomlplusplus-dev
  openssl systemd python3
  libgtest-dev libgmock-dev libbenchmark-dev
)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
      missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}" >&2
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q \
    --no-install-recommends "${missing[@]}"
}

# build DIR [cmake args...]
build() {
  local dir="$1"
  shift
  # Share the compiler cache between build directories and clones.
  export CCACHE_BASEDIR="$here" CCACHE_NOHASHDIR=1
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  ninja -C "$dir"
}

run_tests() {
  local dir="$1"
  shift
  (cd "$dir" && ctest --output-on-failure --timeout 300 -j2 "$@")
}

case "${1:-}" in
  run)
    install_missing
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    shift
    exec ./build/bin/jobd "$@"
    ;;
  test)
    install_missing
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    run_tests build
    if [ "${JOBD_SANITIZERS:-1}" != 0 ]; then
      # One clang build does two checks: -Wthread-safety on every lock
      # annotation (-Werror; TSan is not usable on Debian's absl/protobuf,
      # README: Development), and the libFuzzer targets, run briefly here on
      # their checked-in corpora (README: Fuzzing).
      CXX=clang++-14 build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DJOBD_SANITIZE=fuzzer -DJOBD_BUILD_TESTS=OFF -DJOBD_BUILD_BENCH=OFF
      echo "clang -Wthread-safety: clean"
      fuzz_out="$(mktemp -d)"
      for target in ipc_frame_fuzz spec_validator_fuzz config_fuzz result_ring_fuzz \
          journal_row_fuzz; do
        mkdir -p "$fuzz_out/$target"
        "./build-fuzz/bin/$target" -max_total_time="${JOBD_FUZZ_SECONDS:-20}" \
          -rss_limit_mb=2048 -print_final_stats=1 \
          "$fuzz_out/$target" "tests/fuzz/corpus/$target" 2>&1 | tail -n 3
        echo "fuzz $target: no crash"
      done
      rm -rf "$fuzz_out"
      # Crash tests want the real signal, not ASan's report.
      export ASAN_OPTIONS=handle_segv=0:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
      build build-asan -DCMAKE_BUILD_TYPE=Debug -DJOBD_SANITIZE=address -DJOBD_BUILD_BENCH=OFF
      run_tests build-asan
    fi
    ;;
  *)
    echo "usage: $0 run [jobd flags...] | test" >&2
    exit 2
    ;;
esac
